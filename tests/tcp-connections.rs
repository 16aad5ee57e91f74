//! SIP over TCP connections: an idle connection without calls is closed after
//! `sip.tcp_idle_timeout_s` (a CRLF keep-alive gets its pong first), a connection that carries a
//! call stays open, and when the caller's connection is gone the bridge opens a new one to the
//! caller's Contact to deliver its BYE.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Reads one SIP message from a TCP stream within 5 s.
fn read_message(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    read_stream_message(stream, pending)
}

/// Whether the peer closes `stream` within `within` (reads nothing but EOF).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn service() -> Service {
    Service::start(Options {
        toml: "[sip]\ntcp_idle_timeout_s = 1\n".into(),
        ..Options::default()
    })
}

#[test]
fn idle_connection_without_calls_is_closed_after_answering_a_keepalive() {
    let service = service();
    let mut stream = TcpStream::connect(service.sip).unwrap();
    let local = stream.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:1000@{} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-idle-1\r\nMax-Forwards: 70\r\n\
         From: <sip:idle@127.0.0.1>;tag=i1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: idle-1\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        service.sip
    );
    stream.write_all(options.as_bytes()).unwrap();
    let mut pending = Vec::new();
    let answer = read_message(&mut stream, &mut pending).expect("OPTIONS answered");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    // RFC 5626 keep-alive: a double CRLF gets a single CRLF back.
    stream.write_all(b"\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");
    let started = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)),
        "idle connection closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the idle timeout"
    );
}

#[test]
fn bye_reaches_the_caller_over_a_new_connection_when_its_own_is_gone() {
    let service = service();
    let contact = TcpListener::bind("127.0.0.1:0").unwrap();
    let contact_addr = contact.local_addr().unwrap();
    let mut stream = TcpStream::connect(service.sip).unwrap();
    let local = stream.local_addr().unwrap();
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sdp = format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
        rtp.local_addr().unwrap().port()
    );
    let invite = format!(
        "INVITE sip:1000@{sip} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-out-1\r\nMax-Forwards: 70\r\n\
         From: <sip:out@127.0.0.1>;tag=o1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: outbound-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:out@{contact_addr};transport=tcp>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        sip = service.sip
    );
    stream.write_all(invite.as_bytes()).unwrap();
    let mut pending = Vec::new();
    let ok = (0..5)
        .filter_map(|_| read_message(&mut stream, &mut pending))
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("200 OK");
    let to = ok
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .unwrap()
        .to_string();
    let ack = format!(
        "ACK sip:roundtable@{sip};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-out-2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:out@127.0.0.1>;tag=o1\r\nTo: {to}\r\nCall-ID: outbound-1\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        sip = service.sip
    );
    stream.write_all(ack.as_bytes()).unwrap();
    service.wait_participants("1000", 1);
    // The call keeps its connection open past the idle timeout.
    assert!(
        !closed_within(&mut stream, Duration::from_millis(2500)),
        "a connection carrying a call stays open"
    );
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));

    let (_, room) = service.http("GET", "/v1/rooms/1000", "");
    let leg = room["participants"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        service
            .http("DELETE", &format!("/v1/rooms/1000/participants/{leg}"), "")
            .0,
        204
    );

    contact.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut incoming = loop {
        match contact.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!(
                "the bridge did not connect to the Contact: {e}\n{}",
                service.log()
            ),
        }
    };
    incoming.set_nonblocking(false).unwrap();
    let mut pending = Vec::new();
    let bye = read_message(&mut incoming, &mut pending).expect("BYE over the new connection");
    assert!(
        bye.starts_with(&format!("BYE sip:out@{contact_addr};transport=tcp SIP/2.0")),
        "{bye}"
    );
    assert!(bye.contains("Call-ID: outbound-1"), "{bye}");
    let header = |name: &str| {
        bye.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .to_string()
    };
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header("Via"),
        header("From"),
        header("To"),
        header("Call-ID"),
        header("CSeq")
    );
    incoming.write_all(ok.as_bytes()).unwrap();
    service.wait_participants("1000", 0);
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_sip_requests_sent_total{method=\"BYE\"} 1"),
        "{metrics}"
    );
}
