//! A slow disk delays nobody but the recording: with the test hook
//! `testing.spool_fsync_delay_ms = 2000`, a room that auto-records still answers its caller at
//! once, and OPTIONS and the API stay answered within 100 ms while the recording's spool is
//! being opened. The service warns at start that a test hook is set.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

/// Sends an OPTIONS from `socket` and returns how long its 200 took.
fn options_round_trip(socket: &UdpSocket, server: std::net::SocketAddr, n: usize) -> Duration {
    let local = socket.local_addr().unwrap();
    let request = format!(
        "OPTIONS sip:ping@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-slow-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:ping@{server}>\r\n\
         Call-ID: slow-disk-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = Instant::now();
    socket.send_to(request.as_bytes(), server).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = socket
            .recv_from(&mut buf)
            .expect("OPTIONS answered within the socket timeout");
        let text = String::from_utf8_lossy(&buf[..len]);
        if text.contains(&format!("Call-ID: slow-disk-{n}")) {
            assert!(text.starts_with("SIP/2.0 200"), "{text}");
            return sent.elapsed();
        }
    }
}

#[test]
fn slow_spool_fsync_delays_neither_sip_nor_the_api() {
    let service = Service::start(Options {
        toml: "[recording]\nauto_start = true\n[testing]\nspool_fsync_delay_ms = 2000\n".into(),
        ..Options::default()
    });
    assert!(
        service.wait_for_log("test hooks are set", Duration::from_secs(2)),
        "the service warns that a test hook is set:\n{}",
        service.log_tail()
    );

    let mut caller = Uac::new(service.sip, "slowdisk");
    let dialled = Instant::now();
    assert_eq!(caller.call(), 200);
    assert!(
        dialled.elapsed() < Duration::from_millis(1000),
        "the caller is answered without waiting for the recording's spool ({:?})",
        dialled.elapsed()
    );

    // While the spool is being opened (2 s), SIP and the API answer at once.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    let mut saw_starting = false;
    while dialled.elapsed() < Duration::from_millis(1800) {
        slowest = slowest.max(options_round_trip(&probe, service.sip, probes));
        let asked = Instant::now();
        let (status, room) = service.http("GET", "/v1/rooms/slowdisk", "");
        slowest = slowest.max(asked.elapsed());
        assert_eq!(status, 200, "{room}");
        saw_starting |= room["recording_id"].is_null();
        probes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probes >= 10, "only {probes} probes");
    assert!(
        slowest < Duration::from_millis(100),
        "slowest OPTIONS or API answer while the spool fsync waited: {slowest:?}"
    );
    assert!(
        saw_starting,
        "the recording was still being opened during the probes"
    );

    // Then the recording runs, and holds the call's audio.
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        let (_, room) = service.http("GET", "/v1/rooms/slowdisk", "");
        if let Some(id) = room["recording_id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the recording never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(id.starts_with("slowdisk/"), "{id}");
    let media = caller.start_media(440.0, Duration::from_millis(600));
    media.finish();
    assert_eq!(caller.hangup(), 200);
    let manifest = service.finished_recording("slowdisk", Duration::from_secs(10));
    assert!(
        manifest["duration_ms"].as_u64().unwrap_or(0) > 0,
        "{manifest}"
    );
}
