//! SIP INVITE parse throughput: a typical softphone INVITE with SDP, parsed and validated.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roundtable_sip::message::{Framing, Message};
use roundtable_sip::sdp::Offer;

const HEADERS: &str = "INVITE sip:1000@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1000@192.0.2.10>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.20:5060>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, INFO\r\n\
Supported: replaces, timer\r\n\
User-Agent: Example Softphone 1.0\r\n\
Content-Type: application/sdp\r\n\
";

const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.20\r\n\
s=-\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n";

/// The INVITE with a correct Content-Length.
fn invite() -> String {
    format!("{HEADERS}Content-Length: {}\r\n\r\n{SDP}", SDP.len())
}

fn sip_parse(c: &mut Criterion) {
    let invite = invite();
    let bytes = invite.as_bytes();
    let mut group = c.benchmark_group("sip_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("invite", |b| {
        b.iter(|| {
            let (m, _) = Message::parse(std::hint::black_box(bytes), Framing::Datagram)
                .expect("valid INVITE");
            m.validate_request().expect("valid INVITE");
            std::hint::black_box(m);
        })
    });
    group.bench_function("invite_parse_serialize", |b| {
        b.iter(|| {
            let (m, _) = Message::parse(std::hint::black_box(bytes), Framing::Datagram)
                .expect("valid INVITE");
            std::hint::black_box(m.to_bytes());
        })
    });
    group.bench_function("invite_with_sdp_answer", |b| {
        b.iter(|| {
            let (m, _) = Message::parse(std::hint::black_box(bytes), Framing::Datagram)
                .expect("valid INVITE");
            m.validate_request().expect("valid INVITE");
            let answer = Offer::parse(&m.body, roundtable_sip::sdp::SrtpPolicy::Optional)
                .expect("valid SDP")
                .answer(&[
                    roundtable_sip::sdp::AudioCodec::Pcmu,
                    roundtable_sip::sdp::AudioCodec::Pcma,
                ])
                .expect("common codec");
            std::hint::black_box(answer);
        })
    });
    group.finish();
}

criterion_group!(benches, sip_parse);
criterion_main!(benches);
