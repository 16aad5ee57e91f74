//! Dial-out against SIPp callees (`POST /v1/rooms/{room}/participants`): answered after 180
//! and 183 (the callee hears the room, N-1, asserted on its audio), busy (486 in the events),
//! no answer (CANCEL at the timeout, failed as 480 No Answer), a 302 followed to a second
//! callee, bad requests refused with the right status while the service keeps serving, the
//! dial-out limits (429), and RFC 3263 routing through a real DNS server (dnsmasq): SRV order,
//! A fallback, and failover to the next SRV target from a 503 and from a silent target at its
//! timeout.

mod common;
#[path = "common/dns.rs"]
mod dns;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dns::{Dns, Record};
use roundtable_sip::endpoint::Transport;
use roundtable_sip::locate::{LocateError, Locator, Target};

/// Listens on `rtp` for 2 s and asserts that the callee hears the caller's 440 Hz.
fn assert_hears_440(rtp: &UdpSocket, failure: &str) {
    let heard = listen_pcmu(rtp, Duration::from_secs(2));
    assert!(
        heard.len() > 8000,
        "{failure}: only {} samples",
        heard.len()
    );
    let tail = &heard[heard.len() / 2..];
    assert!(
        tone_db_at(tail, 440.0, 8000.0) > -30.0,
        "{failure} (rms {})",
        rms(tail)
    );
}

/// Removes a dialled participant of `room` through the API (204) and waits for its SIPp callee
/// to end well (BYE answered); `what` prefixes the failure.
fn remove_and_wait(
    service: &Service,
    room: &str,
    participant: &serde_json::Value,
    sipp: std::process::Child,
    work: &std::path::Path,
    what: &str,
) {
    let leg = participant["id"].as_str().unwrap();
    let (status, _) = service.http(
        "DELETE",
        &format!("/v1/rooms/{room}/participants/{leg}"),
        "",
    );
    assert_eq!(status, 204);
    assert_eq!(
        wait_sipp(sipp, Duration::from_secs(10)),
        Some(0),
        "{what}{}",
        sipp_logs(work)
    );
}

/// Waits (at most `within`) for a `participant_state` event of `state` in `room`; returns it.
fn wait_state(service: &Service, room: &str, state: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (_, page) = service.http("GET", &format!("/v1/events?room={room}"), "");
        let found = page["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["type"] == "participant_state" && e["state"] == state)
                .cloned()
        });
        if let Some(event) = found {
            return event;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, page) = service.http("GET", &format!("/v1/events?room={room}"), "");
    panic!("no {state} state in {room}: {page}\n{}", service.log_tail());
}

fn dial(service: &Service, room: &str, body: &str) -> (u16, serde_json::Value) {
    service.http("POST", &format!("/v1/rooms/{room}/participants"), body)
}

#[test]
fn an_answered_callee_hears_the_room() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    // A caller already in the room, speaking 440 Hz.
    let mut caller = Uac::new(service.sip, "3000");
    assert_eq!(caller.call(), 200);
    let talk = caller.start_media(440.0, Duration::from_secs(6));
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let sipp = sipp_callee(
        "uas_answer.xml",
        port,
        work.path(),
        &[("RTP_PORT", rtp.local_addr().unwrap().port().to_string())],
    );
    let (status, participant) = dial(
        &service,
        "3000",
        &format!(r#"{{"to": "sip:callee@127.0.0.1:{port}", "display_name": "Conference"}}"#),
    );
    assert_eq!(status, 202, "{participant}");
    assert_eq!(participant["state"], "dialing");
    let leg = participant["id"].as_str().unwrap().to_string();
    wait_state(&service, "3000", "ringing", Duration::from_secs(5));
    wait_state(&service, "3000", "answered", Duration::from_secs(5));
    service.wait_participants("3000", 2);
    // The callee hears the room: the caller's tone.
    assert_hears_440(&rtp, "the callee does not hear the caller's 440 Hz");
    // Removing it through the API ends it with BYE.
    let (status, _) = service.http("DELETE", &format!("/v1/rooms/3000/participants/{leg}"), "");
    assert_eq!(status, 204);
    assert_eq!(
        wait_sipp(sipp, Duration::from_secs(10)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    drop(talk);
    assert_eq!(caller.hangup(), 200);
}

#[test]
fn a_dial_out_over_tcp_opens_a_connection_and_the_callee_hears_the_room() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let mut caller = Uac::new(service.sip, "3007");
    assert_eq!(caller.call(), 200);
    let talk = caller.start_media(440.0, Duration::from_secs(6));
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let sipp = sipp_callee_over(
        "t1",
        "uas_answer.xml",
        port,
        work.path(),
        &[("RTP_PORT", rtp.local_addr().unwrap().port().to_string())],
    );
    std::thread::sleep(Duration::from_millis(300)); // SIPp listening
    let (status, participant) = dial(
        &service,
        "3007",
        &format!(r#"{{"to": "sip:callee@127.0.0.1:{port};transport=tcp"}}"#),
    );
    assert_eq!(status, 202, "{participant}");
    wait_state(&service, "3007", "answered", Duration::from_secs(10));
    service.wait_participants("3007", 2);
    assert_hears_440(&rtp, "the TCP callee does not hear the caller");
    remove_and_wait(
        &service,
        "3007",
        &participant,
        sipp,
        work.path(),
        "BYE over the same connection: ",
    );
    drop(talk);
    assert_eq!(caller.hangup(), 200);
}

#[test]
fn a_tel_number_through_a_trunk_answers_its_407_with_the_trunk_credentials() {
    if !sipp_available() {
        return;
    }
    let port = free_port();
    let service = Service::start(Options {
        toml: format!(
            "[[trunks]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{port}\"\n\
             username = \"trunkuser\"\npassword = \"trunkpw\"\nregister = false\n"
        ),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let mut caller = Uac::new(service.sip, "3010");
    assert_eq!(caller.call(), 200);
    let talk = caller.start_media(440.0, Duration::from_secs(6));
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sipp = sipp_callee(
        "uas_challenge.xml",
        port,
        work.path(),
        &[("RTP_PORT", rtp.local_addr().unwrap().port().to_string())],
    );
    let (status, participant) = dial(
        &service,
        "3010",
        r#"{"to": "tel:+15551234567", "trunk": "carrier"}"#,
    );
    assert_eq!(status, 202, "{participant}");
    wait_state(&service, "3010", "answered", Duration::from_secs(10));
    service.wait_participants("3010", 2);
    assert_hears_440(&rtp, "the callee does not hear the room");
    assert!(
        !service.log().contains("trunkpw"),
        "credentials are never logged"
    );
    remove_and_wait(&service, "3010", &participant, sipp, work.path(), "");
    drop(talk);
    assert_eq!(caller.hangup(), 200);
}

#[test]
fn a_busy_callee_fails_with_486() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let sipp = sipp_callee("uas_busy.xml", port, work.path(), &[]);
    let (status, participant) = dial(
        &service,
        "3001",
        &format!(r#"{{"to": "sip:busy@127.0.0.1:{port}"}}"#),
    );
    assert_eq!(status, 202, "{participant}");
    let event = wait_state(&service, "3001", "failed", Duration::from_secs(5));
    assert_eq!(event["failure"]["code"], 486, "{event}");
    assert_eq!(event["failure"]["reason"], "Busy Here", "{event}");
    assert_eq!(
        wait_sipp(sipp, Duration::from_secs(10)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    let (status, _) = service.http("GET", "/v1/rooms/3001", "");
    assert_eq!(status, 404, "a failed dial-out leaves no room behind");
}

#[test]
fn nobody_answering_is_cancelled_at_the_timeout() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let sipp = sipp_callee("uas_no_answer.xml", port, work.path(), &[]);
    let (status, _) = dial(
        &service,
        "3002",
        &format!(r#"{{"to": "sip:nobody@127.0.0.1:{port}", "timeout_s": 2}}"#),
    );
    assert_eq!(status, 202);
    wait_state(&service, "3002", "ringing", Duration::from_secs(5));
    let (_, room) = service.http("GET", "/v1/rooms/3002", "");
    assert_eq!(room["participants"][0]["state"], "ringing", "{room}");
    let event = wait_state(&service, "3002", "failed", Duration::from_secs(8));
    assert_eq!(event["failure"]["code"], 480, "{event}");
    assert_eq!(
        wait_sipp(sipp, Duration::from_secs(10)),
        Some(0),
        "the CANCEL, 487 and ACK went as SIPp expects: {}",
        sipp_logs(work.path())
    );
}

#[test]
fn a_302_is_followed_to_the_new_target() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (free_port(), free_port());
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let answering = sipp_callee(
        "uas_answer.xml",
        second,
        work.path(),
        &[("RTP_PORT", rtp.local_addr().unwrap().port().to_string())],
    );
    let moving = sipp_callee(
        "uas_redirect.xml",
        first,
        work.path(),
        &[("TARGET_PORT", second.to_string())],
    );
    let (status, participant) = dial(
        &service,
        "3003",
        &format!(r#"{{"to": "sip:moved@127.0.0.1:{first}"}}"#),
    );
    assert_eq!(status, 202, "{participant}");
    wait_state(&service, "3003", "answered", Duration::from_secs(5));
    service.wait_participants("3003", 1);
    assert_eq!(wait_sipp(moving, Duration::from_secs(10)), Some(0));
    remove_and_wait(&service, "3003", &participant, answering, work.path(), "");
}

#[test]
fn bad_dial_requests_get_clear_statuses() {
    let service = Service::start(Options::default());
    for (body, status) in [
        (r#"{"to": "sip:"}"#, 400),
        (r#"{"to": "sip:alice@exa mple.com"}"#, 400),
        (r#"{"to": "sip:alice@example.com:99999"}"#, 400),
        (r#"{"to": "sip:alice@example.com;transport=sctp"}"#, 400),
        (r#"{"to": "nonsense"}"#, 400),
        (r#"{"to": "tel:+15551234567"}"#, 400),
        (r#"{"to": "tel:+15551234567", "trunk": "nope"}"#, 404),
        (r#"{"to": "sip:a@127.0.0.1", "timeout_s": 9999}"#, 400),
        ("not json", 400),
    ] {
        let (got, answer) = dial(&service, "3004", body);
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (status, _) = service.http("GET", "/health", "");
    assert_eq!(status, 200, "the service keeps serving");
}

#[test]
fn dial_outs_over_the_limits_get_429() {
    let service = Service::start(Options {
        // T1 of 50 ms: a call nobody answers times out (64*T1) 3.2 s after its CANCEL.
        toml: "[sip]\nmax_dialouts = 2\ndialout_cps = 1\ntimer_t1_ms = 50\n".into(),
        ..Options::default()
    });
    // A callee that never answers keeps each call dialing.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!(r#"{{"to": "sip:quiet@{}"}}"#, silent.local_addr().unwrap());
    let (status, first) = dial(&service, "3005", &to);
    assert_eq!(status, 202, "{first}");
    let (status, answer) = dial(&service, "3005", &to);
    assert_eq!(status, 429, "one per second: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("dialout_cps"));
    std::thread::sleep(Duration::from_millis(1100));
    let (status, second) = dial(&service, "3005", &to);
    assert_eq!(status, 202, "{second}");
    std::thread::sleep(Duration::from_millis(1100));
    let (status, answer) = dial(&service, "3005", &to);
    assert_eq!(status, 429, "two placed calls are up: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("max_dialouts"));
    // Hanging one up frees a place (once its INVITE transaction ends).
    let leg = first["id"].as_str().unwrap();
    let (status, _) = service.http("DELETE", &format!("/v1/rooms/3005/participants/{leg}"), "");
    assert_eq!(status, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (status, _) = dial(&service, "3005", &to);
        if status == 202 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 202, "{}", service.log_tail());
}

fn srv<'a>(service: &'a str, target: &'a str, port: u16, priority: u16) -> Record<'a> {
    Record::Srv {
        service,
        target,
        port,
        priority,
        weight: 0,
    }
}

#[test]
fn sip_uris_are_located_through_srv_and_address_records() {
    let Some(dnsmasq) = dns::dnsmasq() else {
        return;
    };
    let dns = Dns::start(
        dnsmasq,
        free_port(),
        &[
            srv("_sip._udp.example.test", "second.example.test", 5072, 20),
            srv("_sip._udp.example.test", "first.example.test", 5071, 10),
            srv("_sip._tcp.tcp.example.test", "first.example.test", 5073, 10),
            Record::Host("first.example.test", "127.0.0.1"),
            Record::Host("second.example.test", "127.0.0.2"),
            Record::Host("plain.example.test", "127.0.0.3"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let locator = runtime.block_on(async { Locator::new(&[dns.addr]) });
    assert_eq!(locator.problem(), None);
    let locate = |uri: &str| runtime.block_on(locator.locate(uri));
    let target = |addr: &str, transport| Target {
        addr: addr.parse().unwrap(),
        transport,
    };
    assert_eq!(
        locate("sip:alice@example.test").unwrap(),
        [
            target("127.0.0.1:5071", Transport::Udp),
            target("127.0.0.2:5072", Transport::Udp)
        ],
        "SRV, by priority"
    );
    assert_eq!(
        locate("sip:bob@tcp.example.test").unwrap(),
        [target("127.0.0.1:5073", Transport::Tcp)],
        "no UDP service: TCP's"
    );
    assert_eq!(
        locate("sip:carol@plain.example.test").unwrap(),
        [target("127.0.0.3:5060", Transport::Udp)],
        "no SRV: the host's address at 5060"
    );
    assert_eq!(
        locate("sip:dave@plain.example.test:5099;transport=tcp").unwrap(),
        [target("127.0.0.3:5099", Transport::Tcp)],
        "a port: no SRV"
    );
    assert!(matches!(
        locate("sip:eve@nowhere.example.test"),
        Err(LocateError::Dns { .. })
    ));
}

/// A DNS server giving `example.test` two SIP targets over UDP on 127.0.0.1, `first` (priority
/// 10) and `second` (20), and a service asking it (with `toml` added).
fn two_srv_targets(dnsmasq: &str, first: u16, second: u16, toml: &str) -> (Dns, Service) {
    let dns = Dns::start(
        dnsmasq,
        free_port(),
        &[
            srv("_sip._udp.example.test", "first.example.test", first, 10),
            srv("_sip._udp.example.test", "second.example.test", second, 20),
            Record::Host("first.example.test", "127.0.0.1"),
            Record::Host("second.example.test", "127.0.0.1"),
        ],
    );
    let service = Service::start(Options {
        toml: format!("[sip]\ndns_servers = [\"{}\"]\n{toml}", dns.addr),
        ..Options::default()
    });
    (dns, service)
}

#[test]
fn a_dial_out_fails_over_from_a_silent_target_at_its_timeout() {
    let Some(dnsmasq) = dns::dnsmasq().filter(|_| sipp_available()) else {
        return;
    };
    let (first, second) = (free_port(), free_port());
    // T1 of 50 ms: Timer B gives up on the silent first target after 3.2 s.
    let (_dns, service) = two_srv_targets(dnsmasq, first, second, "timer_t1_ms = 50\n");
    let silent = UdpSocket::bind(("127.0.0.1", first)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let answering = sipp_callee(
        "uas_answer.xml",
        second,
        work.path(),
        &[("RTP_PORT", "9".into())],
    );
    let started = Instant::now();
    let (status, participant) = dial(&service, "3011", r#"{"to": "sip:callee@example.test"}"#);
    assert_eq!(status, 202, "{participant}");
    let mut buf = [0u8; 4096];
    let first_invite = silent
        .recv(&mut buf)
        .map(|n| buf[..n].starts_with(b"INVITE "));
    assert_eq!(
        first_invite.ok(),
        Some(true),
        "the first target got the INVITE"
    );
    wait_state(&service, "3011", "answered", Duration::from_secs(10));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "failed over only after Timer B: {:?}",
        started.elapsed()
    );
    remove_and_wait(&service, "3011", &participant, answering, work.path(), "");
}

#[test]
fn a_dial_out_fails_over_from_a_503_to_the_next_srv_target() {
    let Some(dnsmasq) = dns::dnsmasq().filter(|_| sipp_available()) else {
        return;
    };
    let (first, second) = (free_port(), free_port());
    let (_dns, service) = two_srv_targets(dnsmasq, first, second, "");
    let work = tempfile::tempdir().unwrap();
    let refusing = sipp_callee("uas_unavailable.xml", first, work.path(), &[]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let answering = sipp_callee(
        "uas_answer.xml",
        second,
        work.path(),
        &[("RTP_PORT", rtp.local_addr().unwrap().port().to_string())],
    );
    let mut caller = Uac::new(service.sip, "3006");
    assert_eq!(caller.call(), 200);
    let talk = caller.start_media(440.0, Duration::from_secs(6));
    let (status, participant) = dial(&service, "3006", r#"{"to": "sip:callee@example.test"}"#);
    assert_eq!(status, 202, "{participant}");
    wait_state(&service, "3006", "answered", Duration::from_secs(10));
    assert_eq!(
        wait_sipp(refusing, Duration::from_secs(5)),
        Some(0),
        "the first target got the INVITE and its ACK: {}",
        sipp_logs(work.path())
    );
    service.wait_participants("3006", 2);
    assert_hears_440(&rtp, "the second target's callee does not hear the room");
    remove_and_wait(&service, "3006", &participant, answering, work.path(), "");
    drop(talk);
    assert_eq!(caller.hangup(), 200);
}

/// What a TLS callee saw of a call: the INVITE and the BYE.
struct TlsCallSeen {
    invite: SipText,
    bye: SipText,
}

/// A SIP callee over TLS (Debian's SIPp has no TLS): accepts one connection with the
/// certificate for 127.0.0.1, answers the INVITE with PCMU to `rtp_port`, reads the ACK, and
/// answers the BYE. Returns its port and what it saw (or why it stopped).
fn tls_callee(
    certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    rtp_port: u16,
) -> (u16, std::thread::JoinHandle<Result<TlsCallSeen, String>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let socket = loop {
            match listener.accept() {
                Ok((socket, _)) => break socket,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("no connection: {e}")),
            }
        };
        socket.set_nonblocking(false).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let connection = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, socket);
        let mut pending = Vec::new();
        let mut next = |tls: &mut rustls::StreamOwned<_, _>| {
            read_stream_message(tls, &mut pending)
                .map(SipText)
                .ok_or("connection closed or silent")
        };
        let invite = next(&mut tls)?;
        if invite.method() != Some("INVITE") {
            return Err(format!("expected an INVITE: {}", invite.0));
        }
        let header = |name: &str| invite.header(name).unwrap_or_default();
        let sdp = format!(
            "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        );
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=tls-callee\r\nCall-ID: {}\r\n\
             CSeq: {}\r\nContact: <sips:callee@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            header("Via"),
            header("From"),
            header("To"),
            header("Call-ID"),
            header("CSeq"),
            sdp.len()
        );
        tls.write_all(ok.as_bytes()).map_err(|e| e.to_string())?;
        let ack = next(&mut tls)?;
        if ack.method() != Some("ACK") {
            return Err(format!("expected the ACK: {}", ack.0));
        }
        let bye = loop {
            match next(&mut tls) {
                Ok(m) if m.method() == Some("BYE") => break m,
                Ok(_) => continue,
                Err(_) if Instant::now() < deadline => continue,
                Err(e) => return Err(format!("no BYE: {e}")),
            }
        };
        let reply = |name: &str| bye.header(name).unwrap_or_default();
        let done = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
             Content-Length: 0\r\n\r\n",
            reply("Via"),
            reply("From"),
            reply("To"),
            reply("Call-ID"),
            reply("CSeq")
        );
        tls.write_all(done.as_bytes()).map_err(|e| e.to_string())?;
        Ok(TlsCallSeen { invite, bye })
    });
    (port, thread)
}

#[test]
fn a_dial_out_over_tls_checks_the_certificate_against_sip_tls_ca() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let service = Service::start(Options {
        toml: format!("[sip]\ntls_ca = {:?}\n", ca.display().to_string()),
        ..Options::default()
    });
    let mut caller = Uac::new(service.sip, "3008");
    assert_eq!(caller.call(), 200);
    let talk = caller.start_media(440.0, Duration::from_secs(6));
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (port, callee) = tls_callee(&certified, rtp.local_addr().unwrap().port());
    let (status, participant) = dial(
        &service,
        "3008",
        &format!(r#"{{"to": "sips:callee@127.0.0.1:{port}"}}"#),
    );
    assert_eq!(status, 202, "{participant}");
    wait_state(&service, "3008", "answered", Duration::from_secs(10));
    service.wait_participants("3008", 2);
    assert_hears_440(&rtp, "the TLS callee does not hear the caller");
    let leg = participant["id"].as_str().unwrap();
    let (status, _) = service.http("DELETE", &format!("/v1/rooms/3008/participants/{leg}"), "");
    assert_eq!(status, 204);
    let seen = callee
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
    let via = seen.invite.header("Via").unwrap();
    assert!(via.starts_with("SIP/2.0/TLS 127.0.0.1:"), "{via}");
    let contact = seen.invite.header("Contact").unwrap();
    assert!(contact.contains("sips:"), "{contact}");
    assert!(
        seen.bye.0.starts_with("BYE sips:callee@127.0.0.1"),
        "{}",
        seen.bye.0
    );
    drop(talk);
    assert_eq!(caller.hangup(), 200);
}

#[test]
fn a_dial_out_over_tls_to_an_untrusted_certificate_fails() {
    // The callee's self-signed certificate is in no trust store the service uses.
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let service = Service::start(Options {
        toml: format!("[sip]\ntls_ca = {:?}\n", ca.display().to_string()),
        ..Options::default()
    });
    let (port, callee) = tls_callee(&certified, 9);
    let (status, participant) = dial(
        &service,
        "3009",
        &format!(r#"{{"to": "sips:callee@127.0.0.1:{port}"}}"#),
    );
    assert_eq!(status, 202, "{participant}");
    let failed = wait_state(&service, "3009", "failed", Duration::from_secs(10));
    assert_eq!(failed["failure"]["code"], 503, "{failed}");
    let reason = failed["failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("TLS handshake"), "{reason}");
    assert!(callee.join().unwrap().is_err(), "no INVITE reached it");
}
