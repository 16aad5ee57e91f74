//! Transactions per second through the sans-IO endpoint core: each iteration is a whole call,
//! INVITE (100 + 200) -> ACK -> BYE (200), i.e. three server transactions and one dialog, with
//! every output drained as a driver would.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roundtable_sip::endpoint::{Endpoint, EndpointConfig, Event, FlowId, Output, Peer, Transport};

fn request(method: &str, call: u64, cseq: u32, to_tag: Option<&str>, body: &str) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:1000@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK{call}-{method};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f{call}\r\nTo: <sip:1000@192.0.2.10>{to_tag}\r\n\
         Call-ID: bench-{call}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@192.0.2.20>\r\n{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn transactions(c: &mut Criterion) {
    let sdp = "v=0\r\no=a 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let peer = Peer {
        transport: Transport::Udp,
        remote: "192.0.2.20:5060".parse().unwrap(),
        local: "192.0.2.10:5060".parse().unwrap(),
        flow: FlowId(0),
    };
    let mut ep = Endpoint::new(EndpointConfig {
        seed: Some(1),
        ..EndpointConfig::default()
    });
    let mut now = Instant::now();
    let mut call_no = 0u64;
    let mut group = c.benchmark_group("sip_endpoint");
    group.throughput(Throughput::Elements(3));
    group.bench_function("call_invite_ack_bye", |b| {
        b.iter(|| {
            call_no += 1;
            now += Duration::from_millis(1);
            ep.handle_message(now, peer, &request("INVITE", call_no, 1, None, sdp));
            let mut call = None;
            while let Some(out) = ep.poll_output() {
                if let Output::Event(Event::IncomingCall(c)) = out {
                    call = Some(c.call);
                }
            }
            ep.accept(now, call.expect("offered"), b"v=0\r\n".to_vec());
            let mut tag = String::new();
            while let Some(out) = ep.poll_output() {
                if let Output::Transmit(t) = out {
                    let text = String::from_utf8_lossy(&t.bytes);
                    if let Some(i) = text.find(">;tag=") {
                        tag = text[i + 6..]
                            .split("\r\n")
                            .next()
                            .unwrap_or_default()
                            .to_string();
                    }
                }
            }
            ep.handle_message(now, peer, &request("ACK", call_no, 1, Some(&tag), ""));
            ep.handle_message(now, peer, &request("BYE", call_no, 2, Some(&tag), ""));
            while ep.poll_output().is_some() {}
            // Let Timer J expire now and then so the tables stay at a steady size.
            if call_no.is_multiple_of(1024) {
                now += Duration::from_secs(40);
                ep.handle_timeout(now);
                while ep.poll_output().is_some() {}
            }
        })
    });
    group.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
