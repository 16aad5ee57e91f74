//! Hostile and broken input while a call is up: truncated messages, a wrong Content-Length,
//! binary garbage (UDP and TCP), the RFC 4475 torture messages, INVITEs with no SDP or only
//! unsupported codecs, bad room names, unknown methods and RTP garbage. Each gets the right
//! response or a silent drop, is counted, and the call already up keeps its audio.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

fn send_and_status(uac: &Uac, bytes: &[u8]) -> Option<u16> {
    uac.send_raw(bytes);
    uac.final_response(Duration::from_millis(400))
        .and_then(|m| m.status())
}

#[test]
fn bad_input_is_refused_and_calls_keep_working() {
    let service = Service::start(Options::default());
    let mut a = Uac::new(service.sip, "1000");
    let mut b = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    let media_a = a.start_media(440.0, Duration::from_secs(4));
    let media_b = b.start_media(0.0, Duration::from_secs(4));

    let probe = Uac::new(service.sip, "1000");
    let good = probe.invite_text(&probe.offer("0", ""), "z9hG4bK-bad-1");
    // Truncated in the middle of the headers: unparsable, unanswerable, dropped.
    assert_eq!(send_and_status(&probe, &good.as_bytes()[..60]), None);
    // Content-Length larger than the body: 400 (RFC 4475 clerr).
    let long = good.replace("Content-Length: ", "Content-Length: 9");
    assert_eq!(send_and_status(&probe, long.as_bytes()), Some(400));
    // Binary garbage: dropped.
    assert_eq!(
        send_and_status(&probe, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 0xff]),
        None
    );
    // No SDP, unsupported codec: 488.
    let no_sdp = Uac::new(service.sip, "1000");
    let text = no_sdp
        .invite_text("", "z9hG4bK-bad-2")
        .replace("Content-Type: application/sdp\r\n", "");
    assert_eq!(send_and_status(&no_sdp, text.as_bytes()), Some(488));
    let mut g729 = Uac::new(service.sip, "1000");
    let offer = g729.offer("18", "a=rtpmap:18 G729/8000\r\n");
    assert_eq!(g729.call_with(&offer), 488);
    // A room name outside [A-Za-z0-9_.-]{1,64}: 404.
    let mut bad_room = Uac::new(service.sip, "a%2Fb");
    assert_eq!(bad_room.call(), 404);
    let mut long_room = Uac::new(service.sip, &"x".repeat(65));
    assert_eq!(long_room.call(), 404);
    // Unknown method: 501; BYE for no dialog: 481.
    let foo = good
        .replace("INVITE sip:", "FOO sip:")
        .replace("1 INVITE", "1 FOO")
        .replace("z9hG4bK-bad-1", "z9hG4bK-bad-3");
    assert_eq!(send_and_status(&probe, foo.as_bytes()), Some(501));
    let bye = good
        .replace("INVITE sip:", "BYE sip:")
        .replace("1 INVITE", "1 BYE")
        .replace("z9hG4bK-bad-1", "z9hG4bK-bad-4");
    let bye = bye
        .replace("To: <sip:1000@", "To: <sip:x@")
        .replace(">\r\nCall-ID", ">;tag=nope\r\nCall-ID");
    assert_eq!(send_and_status(&probe, bye.as_bytes()), Some(481));

    // Every RFC 4475 torture message, over UDP: nothing may take the service down.
    let torture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sip-torture/rfc4475");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0;
    for entry in std::fs::read_dir(&torture)
        .expect("testdata/sip-torture present")
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).unwrap();
        socket.send_to(&bytes, service.sip).unwrap();
        sent += 1;
    }
    assert!(sent >= 40);
    // Garbage over TCP: the connection is closed, the service goes on.
    let mut tcp = TcpStream::connect(service.sip).unwrap();
    tcp.write_all(b"INVITE sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n")
        .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(std::io::Read::read(&mut tcp, &mut buf), Ok(0) | Err(_)),
        "connection closed"
    );
    // RTP garbage to the bridge's RTP port of caller A.
    let rtp_target = a.remote_rtp.unwrap();
    for junk in [
        &[0u8; 3][..],
        &[0x40; 40][..],
        &[0x80, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2][..],
    ] {
        socket.send_to(junk, rtp_target).unwrap();
    }

    let heard_b = media_b.finish();
    let _ = media_a.finish();
    let tail = heard_b.window(Duration::from_millis(2500), Duration::from_millis(3800));
    assert!(
        tone_db(&tail, 440.0) > 50.0,
        "B still hears A after the barrage"
    );
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);

    let metrics = service.metrics();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(value("roundtable_sip_dropped_total") >= 2.0, "{metrics}");
    assert!(
        value("roundtable_sip_responses_total{code=\"400\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("roundtable_sip_requests_total{method=\"other\"}") >= 1.0,
        "{metrics}"
    );
    assert!(value("roundtable_rtp_invalid_total") >= 3.0, "{metrics}");
    assert!(value("roundtable_calls_rejected_total") >= 3.0, "{metrics}");
    assert_eq!(service.http("GET", "/health", "").0, 200);
}
