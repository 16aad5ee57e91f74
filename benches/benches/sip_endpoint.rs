//! Transactions per second through the sans-IO endpoint core: each iteration is a whole call,
//! INVITE (100 + 200) -> ACK -> BYE (200), i.e. three server transactions and one dialog, with
//! every output drained as a driver would.
//!
//! `with_dialogs/N` runs the same call over TCP while N other calls are up, and after every input
//! asks for the next deadline and runs the timers due, as the driver's loop does: the cost per
//! transaction should not grow with N (issue 17 asks for at most 20 % more from 100 to 50,000).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roundtable_sip::admission::RateLimits;
use roundtable_sip::endpoint::{Endpoint, EndpointConfig, Event, FlowId, Output, Peer, Transport};

const SDP: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn request(
    transport: Transport,
    method: &str,
    call: u64,
    cseq: u32,
    to_tag: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let via = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    };
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:1000@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/{via} 192.0.2.20:5060;branch=z9hG4bK{call}-{method};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f{call}\r\nTo: <sip:1000@192.0.2.10>{to_tag}\r\n\
         Call-ID: bench-{call}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@192.0.2.20>\r\n{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The caller: over UDP, or over one TCP connection (no retransmissions, and server
/// transactions end as soon as they answer: only the calls' dialogs stay).
fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        remote: "192.0.2.20:5060".parse().unwrap(),
        local: "192.0.2.10:5060".parse().unwrap(),
        flow: FlowId(1),
    }
}

/// With `drive`, what the driver does after each input: asks for the next deadline, and runs
/// the timers that are due.
fn drive(ep: &mut Endpoint, now: Instant, drive: bool) {
    if drive && ep.poll_timeout().is_some_and(|at| at <= now) {
        ep.handle_timeout(now);
        while ep.poll_output().is_some() {}
    }
}

/// Calls INVITE, accepts and ACKs call `call_no`; returns the dialog's local tag.
fn answer(
    ep: &mut Endpoint,
    now: Instant,
    transport: Transport,
    call_no: u64,
    poll: bool,
) -> String {
    let peer = peer(transport);
    ep.handle_message(
        now,
        peer,
        &request(transport, "INVITE", call_no, 1, None, SDP),
    );
    let mut call = None;
    let mut other = Vec::new();
    while let Some(out) = ep.poll_output() {
        match out {
            Output::Event(Event::IncomingCall(c)) => call = Some(c.call),
            Output::Transmit(t) => other.push(String::from_utf8_lossy(&t.bytes).into_owned()),
            _ => {}
        }
    }
    let call = call.unwrap_or_else(|| panic!("call {call_no} not offered: {other:?}"));
    drive(ep, now, poll);
    ep.accept(now, call, b"v=0\r\n".to_vec());
    let mut tag = String::new();
    while let Some(out) = ep.poll_output() {
        if let Output::Transmit(t) = out {
            // Our tag, from the To header of the 200 (the From header carries the caller's).
            let text = String::from_utf8_lossy(&t.bytes);
            let to = text.lines().find(|l| l.starts_with("To: "));
            if let Some(found) = to.and_then(|l| l.split(";tag=").nth(1)) {
                tag = found.to_string();
            }
        }
    }
    drive(ep, now, poll);
    ep.handle_message(
        now,
        peer,
        &request(transport, "ACK", call_no, 1, Some(&tag), ""),
    );
    drive(ep, now, poll);
    tag
}

/// Hangs call `call_no` up from the caller's side.
fn bye(ep: &mut Endpoint, now: Instant, transport: Transport, call_no: u64, tag: &str, poll: bool) {
    let bye = request(transport, "BYE", call_no, 2, Some(tag), "");
    ep.handle_message(now, peer(transport), &bye);
    let mut answered = false;
    while let Some(out) = ep.poll_output() {
        if let Output::Transmit(t) = out {
            answered |= t.bytes.starts_with(b"SIP/2.0 200 OK");
        }
    }
    assert!(answered, "the BYE of call {call_no} was not answered 200");
    drive(ep, now, poll);
}

/// The endpoint as the bench drives it: one caller address sends every call, so the per-source
/// rate limits (which would answer 503 after a burst of 200) are lifted.
fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        seed: Some(1),
        limits: RateLimits {
            requests_per_second: 1e9,
            burst: 1e9,
            hard_limit: u32::MAX,
        },
        max_transactions: 200_000,
        ..EndpointConfig::default()
    })
}

fn transactions(c: &mut Criterion) {
    let mut ep = endpoint();
    let mut now = Instant::now();
    let mut call_no = 0u64;
    let mut group = c.benchmark_group("sip_endpoint");
    group.throughput(Throughput::Elements(3));
    group.bench_function("call_invite_ack_bye", |b| {
        b.iter(|| {
            call_no += 1;
            now += Duration::from_millis(1);
            let tag = answer(&mut ep, now, Transport::Udp, call_no, false);
            bye(&mut ep, now, Transport::Udp, call_no, &tag, false);
            // Let Timer J expire now and then so the tables stay at a steady size.
            if call_no.is_multiple_of(1024) {
                now += Duration::from_secs(40);
                ep.handle_timeout(now);
                while ep.poll_output().is_some() {}
            }
        })
    });
    // Under `cargo test` (no --bench), each bench runs once: the large set-ups are left out.
    let sizes: &[u64] = if std::env::args().any(|a| a == "--bench") {
        &[100, 10_000, 50_000]
    } else {
        &[100]
    };
    for &dialogs in sizes {
        let mut ep = endpoint();
        let mut now = Instant::now();
        for call_no in 0..dialogs {
            answer(&mut ep, now, Transport::Tcp, call_no, false);
        }
        ep.handle_timeout(now);
        while ep.poll_output().is_some() {}
        // Only the calls' session timers remain, a quarter of an hour out.
        assert_eq!(
            ep.active_calls() as u64,
            dialogs,
            "calls up after the set-up"
        );
        let mut call_no = dialogs;
        group.bench_with_input(
            BenchmarkId::new("with_dialogs", dialogs),
            &dialogs,
            |b, _| {
                b.iter(|| {
                    call_no += 1;
                    now += Duration::from_millis(1);
                    let tag = answer(&mut ep, now, Transport::Tcp, call_no, true);
                    bye(&mut ep, now, Transport::Tcp, call_no, &tag, true);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
