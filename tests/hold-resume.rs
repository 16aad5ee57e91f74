//! Re-INVITE in an answered call: hold (a=sendonly) takes the leg out of the room both ways, and
//! the bridge answers recvonly; resume restores it; a codec change (PCMU to PCMA) is honoured.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use common::*;

#[test]
fn hold_resume_and_codec_change_by_reinvite() {
    let service = Service::start(Options::default());
    let mut a = Uac::new(service.sip, "1000");
    let mut b = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    let b_pt = Arc::new(AtomicU8::new(0));
    let media_a = a.start_media(440.0, Duration::from_millis(6000));
    let media_b = b.start_media_with(1100.0, Duration::from_millis(6000), b_pt.clone());
    let ms = Duration::from_millis;

    // 0-1.5 s: both talk. Then B holds.
    std::thread::sleep(ms(1500));
    let hold = b
        .offer("0", "a=rtpmap:0 PCMU/8000\r\n")
        .replace("a=sendrecv", "a=sendonly");
    let (status, answer) = b.reinvite(&hold);
    assert_eq!(status, 200);
    assert!(answer.contains("a=recvonly"), "{answer}");
    // 1.5-3 s held. Then B resumes, offering only PCMA.
    std::thread::sleep(ms(1500));
    let pcma = b.offer("8", "a=rtpmap:8 PCMA/8000\r\n");
    let (status, answer) = b.reinvite(&pcma);
    assert_eq!(status, 200);
    assert!(
        answer.contains("m=audio")
            && answer.contains(" RTP/AVP 8")
            && answer.contains("a=sendrecv"),
        "{answer}"
    );
    b_pt.store(8, Ordering::SeqCst);

    let heard_a = media_a.finish();
    let heard_b = media_b.finish();
    // Before hold: each hears the other.
    assert!(tone_db(&heard_b.window(ms(500), ms(1400)), 440.0) > 50.0);
    assert!(tone_db(&heard_a.window(ms(500), ms(1400)), 1100.0) > 50.0);
    // On hold: B receives nothing, A no longer hears B.
    assert_eq!(
        heard_b.payload_types(ms(1800), ms(2900)).len(),
        0,
        "no RTP to a held leg"
    );
    assert!(
        tone_db(&heard_a.window(ms(1800), ms(2900)), 1100.0) < 20.0,
        "a held leg is not heard"
    );
    // Resumed on PCMA: B receives PCMA and hears A; A hears B again.
    let late = heard_b.payload_types(ms(3500), ms(5800));
    assert!(
        !late.is_empty() && late.iter().all(|pt| *pt == 8),
        "PCMA after the codec change: {late:?}"
    );
    assert!(tone_db(&heard_b.window(ms(3500), ms(5800)), 440.0) > 50.0);
    assert!(tone_db(&heard_a.window(ms(3500), ms(5800)), 1100.0) > 50.0);
    let (_, room) = service.http("GET", "/v1/rooms/1000", "");
    let codecs: Vec<&str> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["codec"].as_str().unwrap())
        .collect();
    assert!(codecs.contains(&"PCMA"), "{room}");
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
}
