//! Abuse: a flood above the rate limit from one address gets 503s and then silence while a call
//! from another address proceeds; an address outside `sip.allow` is refused with 403; a trusted
//! proxy (`sip.trusted_proxies`) places 300 calls at 100 a second while an untrusted flood is
//! still throttled.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

fn options(branch: &str, local: std::net::SocketAddr, server: std::net::SocketAddr) -> String {
    format!(
        "OPTIONS sip:ping@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@127.0.0.2>;tag=f\r\nTo: <sip:ping@{server}>\r\n\
         Call-ID: flood-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn flood_is_throttled_then_dropped_while_others_call() {
    let toml = "[sip.limits]\nrequests_per_second = 20\nburst = 20\nhard_limit = 40";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let flood = UdpSocket::bind("127.0.0.2:0").unwrap();
    flood
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let local = flood.local_addr().unwrap();
    for i in 0..100 {
        flood
            .send_to(
                options(&i.to_string(), local, service.sip).as_bytes(),
                service.sip,
            )
            .unwrap();
    }
    // A caller from another address is not affected.
    let mut caller = Uac::new(service.sip, "1000");
    assert_eq!(caller.call(), 200);
    assert_eq!(caller.hangup(), 200);

    let (mut ok, mut busy) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok((n, _)) = flood.recv_from(&mut buf) {
            match SipText(String::from_utf8_lossy(&buf[..n]).to_string()).status() {
                Some(200) => ok += 1,
                Some(503) => busy += 1,
                _ => {}
            }
        }
    }
    // The bucket refills at 20/s while the flood is sent, so a slow machine may admit one or two
    // more than the burst.
    assert!((20..=23).contains(&ok), "the burst is served: {ok}");
    assert!(
        (17..=20).contains(&busy),
        "then 503 up to the hard limit of 40 a second: {busy}"
    );
    let metrics = service.metrics();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        value("roundtable_sip_refused_total{verdict=\"throttled\"}"),
        busy as u64,
        "{metrics}"
    );
    assert_eq!(
        value("roundtable_sip_refused_total{verdict=\"dropped\"}"),
        100 - ok as u64 - busy as u64,
        "{metrics}"
    );
}

#[test]
fn address_outside_the_allow_list_is_refused() {
    let service = Service::start(Options {
        toml: "[sip]\nallow = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    });
    let mut outsider = Uac::new_from(service.sip, "1000", "127.0.0.3");
    assert_eq!(outsider.call(), 403);
    let mut insider = Uac::new(service.sip, "1000");
    assert_eq!(insider.call(), 200);
    assert_eq!(insider.hangup(), 200);
    assert!(
        service
            .metrics()
            .contains("roundtable_sip_refused_total{verdict=\"forbidden\"}")
    );
}

#[test]
fn a_trusted_proxy_places_300_calls_at_100_a_second_while_a_flood_is_still_throttled() {
    if !sipp_available() {
        return;
    }
    // The per-source limits stay at their defaults (50/s, burst 200): 300 calls of INVITE, ACK
    // and BYE in three seconds from one address would pass them by far (without the trusted
    // network, SIPp's calls fail).
    let service = Service::start(Options {
        toml: "[sip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n".into(),
        rtp_pairs: 250,
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let calls = sipp(
        &service,
        &scenario("basic_call.xml"),
        "1000",
        work.path(),
        &["-r", "100", "-m", "300", "-l", "300", "-timeout", "60s"],
    );
    // Meanwhile an untrusted address floods: 600 requests in about a second (paced, and their
    // answers read as they come, so that no socket buffer drops them first), past its burst of
    // 200 and 50/s.
    std::thread::sleep(Duration::from_millis(500));
    let flood = UdpSocket::bind("127.0.0.2:0").unwrap();
    flood.set_nonblocking(true).unwrap();
    let local = flood.local_addr().unwrap();
    let mut busy = 0;
    let mut buf = [0u8; 4096];
    let mut count_503s = |flood: &UdpSocket| {
        while let Ok((n, _)) = flood.recv_from(&mut buf) {
            if SipText(String::from_utf8_lossy(&buf[..n]).to_string()).status() == Some(503) {
                busy += 1;
            }
        }
    };
    for i in 0..600 {
        let request = options(&format!("t{i}"), local, service.sip);
        flood.send_to(request.as_bytes(), service.sip).unwrap();
        std::thread::sleep(Duration::from_micros(1500));
        count_503s(&flood);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        count_503s(&flood);
    }
    assert_eq!(
        wait_sipp(calls, Duration::from_secs(60)),
        Some(0),
        "every trusted call succeeds: {}",
        sipp_logs(work.path())
    );
    assert!(busy > 100, "the untrusted flood is throttled: {busy} 503s");
    let metrics = service.metrics();
    assert!(
        !metrics.contains("roundtable_calls_rejected_total{"),
        "no call refused: {metrics}"
    );
    let throttled: u64 = metrics
        .lines()
        .find(|l| l.starts_with("roundtable_sip_refused_total{verdict=\"throttled\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(throttled, busy, "only the flood was throttled: {metrics}");
}
