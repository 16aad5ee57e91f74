//! Audio over a bad network, through a loopback impairer between one caller and the bridge: at
//! 5 % random loss, 2 % duplication and about 40 ms of jitter (RFC 3550; uniform 0-120 ms extra
//! delay, which also reorders) the caller's tone still reaches the room, losses are concealed and
//! counted, duplicates counted, and the adaptive jitter buffer grows above 60 ms, then falls
//! below 40 ms within 10 s once the network calms down. An Opus caller with in-band FEC has its
//! isolated losses rebuilt, not concealed.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The receive figures of the room's first participant (the impaired caller, which joins
/// first) from `GET /v1/rooms/{room}`.
fn receive(service: &Service, room: &str) -> serde_json::Value {
    let (_, detail) = service.http("GET", &format!("/v1/rooms/{room}"), "");
    detail["participants"][0]["receive"].clone()
}

#[test]
fn tones_survive_loss_and_jitter_and_the_buffer_adapts() {
    let service = Service::start(Options::default());
    let (mut impaired, mut clean) = (Uac::new(service.sip, "1000"), Uac::new(service.sip, "1000"));
    assert_eq!(impaired.call(), 200);
    assert_eq!(clean.call(), 200);
    let bridge_rtp = impaired.remote_rtp.unwrap();
    let impairer = Impairer::start(impaired.rtp.local_addr().unwrap(), bridge_rtp, 42);
    impaired.remote_rtp = Some(impairer.addr());
    impairer.set(Impairment {
        loss: 0.05,
        jitter_ms: 120.0,
        duplicate: 0.02,
        ..Impairment::default()
    });

    let talk = impaired.start_media(440.0, Duration::from_secs(22));
    let listen = clean.start_media(0.0, Duration::from_secs(22));
    // Under loss and jitter for 8 s: the buffer grows.
    let mut deepest = 0.0f64;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        let r = receive(&service, "1000");
        deepest = deepest.max(r["buffer_ms"].as_f64().unwrap_or(0.0));
    }
    let stressed = receive(&service, "1000");
    assert!(
        deepest > 60.0,
        "buffer under 40 ms jitter reached {deepest} ms: {stressed}"
    );
    let jitter = stressed["jitter_ms"].as_f64().unwrap();
    assert!(
        (25.0..60.0).contains(&jitter),
        "RFC 3550 jitter {jitter} ms: {stressed}"
    );
    let (lost, concealed) = (
        stressed["lost"].as_u64().unwrap(),
        stressed["concealed"].as_u64().unwrap(),
    );
    assert!(lost >= 8, "about 5 % of ~400 packets lost: {stressed}");
    assert!(concealed >= lost, "every loss concealed: {stressed}");
    assert!(
        stressed["duplicated"].as_u64().unwrap() >= 2,
        "duplicates counted, not played twice: {stressed}"
    );

    // The network calms down: within 10 s the buffer is back below 40 ms.
    impairer.set(Impairment::default());
    let calmed = Instant::now();
    let mut shallow_after = None;
    while calmed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        if receive(&service, "1000")["buffer_ms"]
            .as_f64()
            .unwrap_or(1e9)
            < 40.0
        {
            shallow_after = Some(calmed.elapsed());
            break;
        }
    }
    assert!(
        shallow_after.is_some(),
        "buffer still deep 10 s after the jitter stopped: {}",
        receive(&service, "1000")
    );

    let _ = talk.finish();
    let heard = listen.finish();
    // The clean caller heard the tone throughout the impaired stretch (1-8 s).
    let window = heard.window(Duration::from_millis(1000), Duration::from_millis(8000));
    let db = tone_db(&window, 440.0);
    assert!(db > 20.0, "440 Hz through loss and jitter at {db:.1} dB");
    assert_eq!(impaired.hangup(), 200);
    assert_eq!(clean.hangup(), 200);
}

#[test]
fn opus_fec_rebuilds_isolated_losses() {
    let service = Service::start(Options::default());
    let (mut impaired, mut clean) = (Uac::new(service.sip, "2000"), Uac::new(service.sip, "2000"));
    assert_eq!(impaired.call_codec(Codec::Opus), 200);
    assert_eq!(clean.call(), 200);
    let impairer = Impairer::start(
        impaired.rtp.local_addr().unwrap(),
        impaired.remote_rtp.unwrap(),
        7,
    );
    impaired.remote_rtp = Some(impairer.addr());
    impairer.set(Impairment {
        drop_every: 17,
        ..Impairment::default()
    });
    let talk = impaired.start_media_codec(440.0, Duration::from_secs(5), Codec::Opus);
    let listen = clean.start_media(0.0, Duration::from_secs(5));
    // Read while the stream still runs (its end would count as an underrun).
    std::thread::sleep(Duration::from_millis(4500));
    let r = receive(&service, "2000");
    let _ = talk.finish();
    let heard = listen.finish();
    let (lost, fec, concealed) = (
        r["lost"].as_u64().unwrap(),
        r["fec_recovered"].as_u64().unwrap(),
        r["concealed"].as_u64().unwrap(),
    );
    assert!(lost >= 8, "every 17th of ~200 packets dropped: {r}");
    assert!(fec >= lost - 1, "FEC rebuilt the isolated losses: {r}");
    assert!(concealed <= 1, "nothing left to conceal: {r}");
    let window = heard.window(Duration::from_millis(1000), Duration::from_millis(4500));
    assert!(tone_db(&window, 440.0) > 20.0);
    assert_eq!(impaired.hangup(), 200);
    assert_eq!(clean.hangup(), 200);
}
