//! Every codec end to end: three callers per room, one room per codec (PCMU, PCMA, G.722,
//! Opus), each caller sending its own tone; everyone hears the other two and not itself. Then a
//! mixed room with one caller per codec, where everyone hears everyone else.

mod common;

use std::time::Duration;

use common::*;

/// A tone must stand this far above the noise floor to count as heard.
const HEARD_DB: f64 = 20.0;

struct Caller {
    name: String,
    uac: Uac,
    tone: f64,
    codec: Codec,
}

/// Calls `room` with one caller per (codec, tone), streams 3 s of tones, and checks that each
/// hears every other tone and its own at least 30 dB below the weakest of them.
fn room_of(service: &Service, room: &str, callers: &[(Codec, f64)]) {
    let mut parties: Vec<Caller> = callers
        .iter()
        .map(|&(codec, tone)| Caller {
            name: format!("{room}/{}/{tone}", codec.config_name()),
            uac: Uac::new(service.sip, room),
            tone,
            codec,
        })
        .collect();
    for p in &mut parties {
        assert_eq!(p.uac.call_codec(p.codec), 200, "{} answered", p.name);
        let answer = p.uac.last_response.clone().unwrap();
        let pt = payload_type(p.codec);
        assert!(
            answer.body().contains("m=audio ")
                && answer.body().contains(&format!("a=rtpmap:{pt} ")),
            "{}",
            answer.body()
        );
    }
    service.wait_participants(room, callers.len());
    let media: Vec<Media> = parties
        .iter()
        .map(|p| {
            p.uac
                .start_media_codec(p.tone, Duration::from_secs(3), p.codec)
        })
        .collect();
    let heard: Vec<Heard> = media.into_iter().map(Media::finish).collect();
    for (p, h) in parties.iter().zip(&heard) {
        let window = h.window(Duration::from_millis(1000), Duration::from_millis(2800));
        assert!(
            window.len() as u32 > h.rate,
            "{} received audio: {} samples",
            p.name,
            window.len()
        );
        let rate = f64::from(h.rate);
        let own = tone_db_at(&window, p.tone, rate);
        let mut weakest = f64::MAX;
        for other in parties.iter().filter(|o| o.tone != p.tone) {
            let db = tone_db_at(&window, other.tone, rate);
            assert!(
                db > HEARD_DB,
                "{} hears {} at {db:.1} dB",
                p.name,
                other.name
            );
            weakest = weakest.min(db);
        }
        eprintln!("{}: others from {weakest:.1} dB, own {own:.1} dB", p.name);
        assert!(
            weakest - own >= 30.0,
            "{}: own tone at {own:.1} dB, others from {weakest:.1} dB",
            p.name
        );
    }
    for p in &mut parties {
        assert_eq!(p.uac.hangup(), 200);
    }
}

#[test]
fn three_callers_per_codec() {
    let service = Service::start(Options {
        rtp_pairs: 40,
        ..Options::default()
    });
    std::thread::scope(|scope| {
        for (room, codec) in [
            ("pcmu", Codec::Pcmu),
            ("pcma", Codec::Pcma),
            ("g722", Codec::G722),
            ("opus", Codec::Opus),
        ] {
            let service = &service;
            scope.spawn(move || {
                room_of(
                    service,
                    room,
                    &[(codec, 440.0), (codec, 1000.0), (codec, 1700.0)],
                )
            });
        }
    });
}

#[test]
fn mixed_codec_room() {
    let service = Service::start(Options::default());
    room_of(
        &service,
        "mixed",
        &[
            (Codec::Pcmu, 440.0),
            (Codec::Pcma, 770.0),
            (Codec::G722, 1200.0),
            (Codec::Opus, 1900.0),
        ],
    );
}
