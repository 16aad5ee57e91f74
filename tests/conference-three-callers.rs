//! Three callers in one room, each sending a different tone (two test callers and SIPp playing a
//! pcap): each test caller hears the other two tones and its own at least 30 dB below them; a
//! caller in another room hears none of them; the room's recording grows while the call runs,
//! lasts from first join to last leave within 100 ms, and holds the tones.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TONE_A: f64 = 440.0;
const TONE_B: f64 = 1100.0;
const TONE_SIPP: f64 = 700.0;
const TONE_D: f64 = 1700.0;
/// Goertzel power in dB of a tone clearly present (a 6000-amplitude tone is about 69 dB).
const HEARD_DB: f64 = 50.0;

#[test]
fn three_callers_hear_each_other_and_the_room_is_recorded() {
    let sipp_ok = sipp_available();
    let service = Service::start(Options {
        toml: "[recording]\nauto_start = true".into(),
        ..Options::default()
    });

    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200, "{}", service.log());
    let first_join = Instant::now();
    let mut b = Uac::new(service.sip, "1000");
    assert_eq!(b.call(), 200);
    let mut d = Uac::new(service.sip, "2000");
    assert_eq!(d.call(), 200);

    let media_a = a.start_media(TONE_A, Duration::from_secs(5));
    let media_b = b.start_media(TONE_B, Duration::from_secs(5));
    let media_d = d.start_media(TONE_D, Duration::from_secs(5));
    let streams_started = media_a.started;

    let workdir = tempfile::tempdir().unwrap();
    let sipp_child = sipp_ok.then(|| {
        write_tone_pcap(
            &workdir.path().join("tone.pcap"),
            TONE_SIPP,
            Duration::from_millis(3400),
        );
        sipp(
            &service,
            &scenario("tone_call.xml"),
            "1000",
            workdir.path(),
            &[],
        )
    });

    // Mid-call: the recording exists on disk and is a readable, growing WAV.
    std::thread::sleep(Duration::from_millis(2500));
    let recordings = service.storage().join("recordings/1000");
    let live: Vec<_> = files_under(&recordings)
        .into_iter()
        .filter(|p| p.ends_with("mix.wav"))
        .collect();
    assert_eq!(
        live.len(),
        1,
        "one recording of room 1000 while the call runs"
    );
    let (_, samples_mid_call) = read_wav(&live[0]);
    assert!(
        samples_mid_call.len() >= 16000,
        "at least 1 s recorded mid-call, got {}",
        samples_mid_call.len()
    );

    let heard_a = media_a.finish();
    let heard_b = media_b.finish();
    let heard_d = media_d.finish();
    if let Some(child) = sipp_child {
        let code = wait_sipp(child, Duration::from_secs(20));
        assert_eq!(
            code,
            Some(0),
            "SIPp call failed:\n{}",
            sipp_logs(workdir.path())
        );
    }

    // 1.2 s .. 3.2 s after the streams started: everyone (SIPp too) is talking.
    let window = |h: &Heard| h.window(Duration::from_millis(1200), Duration::from_millis(3200));
    let (wa, wb, wd) = (window(&heard_a), window(&heard_b), window(&heard_d));
    assert!(
        wa.len() > 8000 && wb.len() > 8000,
        "callers received audio: {} {}",
        wa.len(),
        wb.len()
    );

    let others_a = if sipp_ok {
        vec![TONE_B, TONE_SIPP]
    } else {
        vec![TONE_B]
    };
    let others_b = if sipp_ok {
        vec![TONE_A, TONE_SIPP]
    } else {
        vec![TONE_A]
    };
    for (name, heard, own, others) in [("A", &wa, TONE_A, &others_a), ("B", &wb, TONE_B, &others_b)]
    {
        let own_db = tone_db(heard, own);
        for &other in others {
            let other_db = tone_db(heard, other);
            assert!(
                other_db > HEARD_DB,
                "{name} hears {other} Hz at {other_db:.1} dB"
            );
            assert!(
                other_db - own_db >= 30.0,
                "{name}: own {own} Hz at {own_db:.1} dB, not 30 dB below {other} Hz at {other_db:.1} dB"
            );
        }
    }
    for tone in [TONE_A, TONE_B, TONE_SIPP, TONE_D] {
        let db = tone_db(&wd, tone);
        assert!(
            db < 0.0,
            "the caller in room 2000 hears {tone} Hz at {db:.1} dB"
        );
    }

    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
    let last_leave = Instant::now();
    assert_eq!(d.hangup(), 200);
    service.wait_participants("1000", 0);

    // The recording is finalized once the room empties: wait (bounded) for the log line.
    service.wait_for_log("recording finished room=1000", Duration::from_secs(5));
    let (spec, samples) = read_wav(&live[0]);
    // The room mixes (and records) at audio.rate, 16 kHz by default.
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 16000, 16)
    );
    let rate = f64::from(spec.sample_rate);
    let recorded = Duration::from_secs_f64(samples.len() as f64 / rate);
    let expected = last_leave - first_join;
    let diff = recorded.as_secs_f64() - expected.as_secs_f64();
    assert!(
        diff.abs() <= 0.1,
        "recording lasts {recorded:?}, room lasted {expected:?}"
    );

    // The recording holds the tones while everyone talked.
    let offset = ((streams_started - first_join).as_secs_f64() + 1.5) * rate;
    let middle = &samples[offset as usize..offset as usize + rate as usize];
    let mut tones = vec![TONE_A, TONE_B];
    if sipp_ok {
        tones.push(TONE_SIPP);
    }
    let mut weakest = f64::MAX;
    for tone in tones {
        let db = tone_db_at(middle, tone, rate);
        assert!(db > HEARD_DB, "recording holds {tone} Hz at {db:.1} dB");
        weakest = weakest.min(db);
    }
    // What remains at room 2000's frequency is G.711 quantisation noise of room 1000's own mix.
    let leak = tone_db_at(middle, TONE_D, rate);
    assert!(
        weakest - leak >= 40.0,
        "room 2000's tone in room 1000's recording at {leak:.1} dB"
    );
}
