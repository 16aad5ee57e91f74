//! Compliance recording on the local store, end to end: four callers joining and leaving at
//! different times get one track each, every track exactly as long as the mix and each caller's
//! tone at the same frames in its track as in the mix; a pause is silence in every track and in
//! the ledger with who asked; everyone hears the recording notice and the manifest says so; the
//! signed manifest verifies, and the CLI finds a changed byte. Then a `kill -9` mid-recording:
//! the next start closes the recording at its last durable second, says so in the ledger, and
//! `verify` passes. A spool quota smaller than a call refuses new recordings but cuts none, and
//! a disk that stops taking writes leaves gaps in the ledger, not a dead service.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const FRAME_MS: u64 = 20;

/// The frames (20 ms) of a track in which `freq` stands out (within 10 dB of the loudest).
fn tone_frames(samples: &[i16], rate: u32, freq: f64) -> Vec<usize> {
    let n = rate as usize / 50;
    let levels: Vec<f64> = samples
        .chunks(n)
        .map(|c| tone_db_at(c, freq, f64::from(rate)))
        .collect();
    let loudest = levels.iter().copied().fold(f64::MIN, f64::max);
    levels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l > loudest - 10.0 && **l > 20.0)
        .map(|(i, _)| i)
        .collect()
}

fn span(frames: &[usize]) -> (usize, usize) {
    (
        *frames.first().expect("tone present"),
        *frames.last().expect("tone present"),
    )
}

#[test]
fn four_legs_get_aligned_tracks_and_a_verifiable_manifest() {
    let toml = "[recording]\nauto_start = true\nmode = \"both\"\nconsent_notice = true";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let tones = [300.0, 500.0, 700.0, 900.0];
    // Leg i joins at i s; legs 0-3 leave at 7, 6, 5 and 4 s (leg 3 is in for 1 s).
    let started = Instant::now();
    let mut talking = Vec::new();
    for (i, tone) in tones.iter().enumerate() {
        let at = started + Duration::from_secs(i as u64);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let mut uac = Uac::new(service.sip, "1000");
        assert_eq!(uac.call(), 200);
        let media = uac.start_media(*tone, Duration::from_secs(7 - 2 * i as u64));
        talking.push((uac, media));
    }
    // A pause through the API from 4.4 s to 4.8 s.
    std::thread::sleep(
        (started + Duration::from_millis(4400)).saturating_duration_since(Instant::now()),
    );
    assert_eq!(
        service
            .http("POST", "/v1/rooms/1000/recording", r#"{"action":"pause"}"#)
            .0,
        200
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        service
            .http("POST", "/v1/rooms/1000/recording", r#"{"action":"resume"}"#)
            .0,
        200
    );
    // Everyone hangs up once their tone ended (leg 3 first).
    let mut heard = Vec::new();
    for (mut uac, media) in talking.into_iter().rev() {
        heard.push(media.finish());
        assert_eq!(uac.hangup(), 200);
    }
    heard.reverse();
    let manifest = service.finished_recording("1000", Duration::from_secs(60));
    let id = manifest["id"].as_str().unwrap().to_string();
    let dir: PathBuf = service.storage().join("recordings").join(&id);

    // Every track is as long as the mix.
    let (spec, mix) = read_wav(&dir.join("mix.wav"));
    assert_eq!(spec.sample_rate, 16000);
    let legs = manifest["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 4, "{manifest}");
    assert_eq!(
        mix.len() as u64,
        manifest["duration_ms"].as_u64().unwrap() * 16
    );
    for (i, leg) in legs.iter().enumerate() {
        let (_, track) = read_wav(&dir.join(format!("legs/{}.wav", leg["id"].as_str().unwrap())));
        assert_eq!(
            track.len(),
            mix.len(),
            "leg {i}'s track is as long as the mix"
        );
        // Its tone sits at the same frames as in the mix, starts after it joined (by at most
        // the jitter buffer and a frame), and nothing of it is before or after.
        let (first, last) = span(&tone_frames(&track, 16000, tones[i]));
        let in_mix = tone_frames(&mix, 16000, tones[i]);
        let (mix_first, mix_last) = span(&in_mix);
        assert!(
            first.abs_diff(mix_first) <= 1 && last.abs_diff(mix_last) <= 1,
            "leg {i}: track {first}-{last}, mix {mix_first}-{mix_last}"
        );
        let joined = leg["joined_ms"].as_u64().unwrap() / FRAME_MS;
        let left = leg["left_ms"].as_u64().unwrap() / FRAME_MS;
        assert!(
            (joined as usize..=joined as usize + 5).contains(&first),
            "leg {i} tone from frame {first}, joined at {joined}"
        );
        assert!(
            last as u64 <= left,
            "leg {i} tone until frame {last}, left at {left}"
        );
        assert_eq!(leg["consent_notice"], true, "leg {i} heard the notice");
        // The others' tones are not in its track.
        for (j, other) in tones.iter().enumerate().filter(|(j, _)| *j != i) {
            let db = tone_db_at(&track, *other, 16000.0);
            assert!(
                db < tone_db_at(&track, tones[i], 16000.0) - 30.0,
                "leg {j}'s tone in leg {i}'s track at {db:.1} dB"
            );
        }
    }
    // The pause is silence everywhere, and in the ledger with who asked.
    let ledger = manifest["ledger"].as_array().unwrap();
    let paused = ledger
        .iter()
        .find(|e| e["event"] == "paused")
        .expect("pause in the ledger")["t_ms"]
        .as_u64()
        .unwrap();
    let resumed = ledger
        .iter()
        .find(|e| e["event"] == "resumed")
        .expect("resume in the ledger")["t_ms"]
        .as_u64()
        .unwrap();
    assert!(
        (300..=500).contains(&(resumed - paused)),
        "paused {paused}..{resumed} ms"
    );
    assert!(
        ledger.iter().any(|e| e["event"] == "action"
            && e["action"] == "pause"
            && e["by"].as_str().unwrap().starts_with("127.0.0.1:")),
        "{ledger:?}"
    );
    let quiet = &mix[(paused as usize + 40) * 16..(resumed as usize - 20) * 16];
    assert!(quiet.iter().all(|&s| s == 0), "silence while paused");
    // The first caller heard the notice before anyone else was in the room.
    let notice = heard[0].window(Duration::from_millis(200), Duration::from_millis(900));
    let rms = (notice.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
        / notice.len().max(1) as f64)
        .sqrt();
    assert!(rms > 300.0, "recording notice heard at RMS {rms:.0}");

    // The CLI verifies it, and finds one changed byte.
    let (code, out, err) = service.cli(&["recordings", "verify", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK "), "{out}");
    let (code, out, _) = service.cli(&["recordings", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id), "{out}");
    let (code, key, _) = service.cli(&["recordings", "pubkey"]);
    assert_eq!((code, key.trim().len()), (0, 64));
    assert_eq!(
        manifest["signature"]["public_key"].as_str(),
        Some(key.trim())
    );
    let leg_path = dir.join(format!("legs/{}.wav", legs[1]["id"].as_str().unwrap()));
    let mut bytes = std::fs::read(&leg_path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&leg_path, bytes).unwrap();
    let (code, _, err) = service.cli(&["recordings", "verify", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("FAILED") && err.contains("legs/") && err.contains("chain link 0"),
        "{err}"
    );
    // Rewriting the manifest's hashes to match the edit breaks its signature instead.
    let manifest_path = dir.join("manifest.json");
    let mut doctored: roundtable_recorder::Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let record = doctored
        .objects
        .iter_mut()
        .find(|o| leg_path.ends_with(&o.key))
        .expect("the edited object");
    *record = roundtable_recorder::manifest::Fingerprint::of_reader(
        record.key.clone(),
        std::fs::File::open(&leg_path).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&doctored).unwrap(),
    )
    .unwrap();
    let (code, _, err) = service.cli(&["recordings", "verify", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("signature"), "{err}");
}

#[test]
fn a_full_spool_alerts_and_refuses_new_recordings_but_never_cuts_one() {
    // 1 MiB of spool; a 48 kHz recording with one track spools 192 kB/s: past 80 % in 4.4 s.
    let toml = "[storage]\nspool_quota_mib = 1\n[audio]\nrate = 48000\n[recording]\nauto_start = true\nmode = \"both\"";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let mut first = Uac::new(service.sip, "6000");
    assert_eq!(first.call(), 200);
    let talk = first.start_media(440.0, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(7));
    let metrics = service.metrics();
    assert!(metrics.contains("roundtable_spool_alert 1"), "{metrics}");
    assert!(
        service.log().contains("over 80% of its quota"),
        "alert logged"
    );
    // Not ready for new calls while the alert is on; health says why.
    let (status, ready) = service.http("GET", "/ready", "");
    assert_eq!(
        (status, ready["status"].as_str()),
        (503, Some("unready")),
        "{ready}"
    );
    assert!(
        ready["reasons"][0].as_str().unwrap().starts_with("spool"),
        "{ready}"
    );
    // A new room's auto-start and an API start are refused; the call itself goes on.
    let mut second = Uac::new(service.sip, "6001");
    assert_eq!(second.call(), 200);
    let (status, body) = service.http("POST", "/v1/rooms/6001/recording", r#"{"action":"start"}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("quota"), "{body}");
    assert!(
        service
            .metrics()
            .contains("roundtable_recordings_refused_total 2"),
        "{}",
        service.metrics()
    );
    assert_eq!(second.hangup(), 200);
    let _ = talk.finish();
    assert_eq!(first.hangup(), 200);
    let manifest = service.finished_recording("6000", Duration::from_secs(60));
    let duration = manifest["duration_ms"].as_u64().unwrap();
    assert!(
        duration >= 9_500,
        "the running recording was not cut: {duration} ms"
    );
    assert!(
        !manifest["ledger"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "gap"),
        "{manifest}"
    );
    // Stored, the recording leaves the spool: the alert clears.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !service.metrics().contains("roundtable_spool_alert 0") {
        assert!(Instant::now() < deadline, "alert never cleared");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(service.http("GET", "/ready", "").0, 200, "ready again");
    assert_eq!(
        service.http("GET", "/v1/recordings?room=6001", "").1["recordings"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn kill_9_mid_recording_is_closed_at_the_next_start() {
    let toml = "[recording]\nauto_start = true\nmode = \"both\"";
    let mut service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let mut uac = Uac::new(service.sip, "2000");
    assert_eq!(uac.call(), 200);
    let media = uac.start_media(440.0, Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(3500));
    let killed = Instant::now();
    service.kill9();
    drop(media);
    let spool = service.storage().join("recordings/2000");
    assert!(
        files_under(&spool)
            .iter()
            .any(|p| p.ends_with("ledger.jsonl")),
        "left open in the spool"
    );
    service.start_again();
    let manifest = service.finished_recording("2000", Duration::from_secs(60));
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "recovered within 60 s of the restart"
    );
    let duration = manifest["duration_ms"].as_u64().unwrap();
    // Audio up to the last fsync (once a second) survived: 2.5-3.5 s of the 3.5 s recorded.
    assert!((2400..=3600).contains(&duration), "recovered {duration} ms");
    let lost = manifest["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "lost")
        .expect("the loss is in the ledger");
    assert_eq!(lost["t_ms"].as_u64(), Some(duration));
    assert_eq!(lost["at_most_ms"].as_u64(), Some(1000));
    let id = manifest["id"].as_str().unwrap();
    let (_, mix) = read_wav(
        &service
            .storage()
            .join("recordings")
            .join(id)
            .join("mix.wav"),
    );
    assert_eq!(mix.len() as u64, duration * 16);
    assert!(
        tone_db_at(&mix[16000..32000], 440.0, 16000.0) > 40.0,
        "the tone survived"
    );
    let (code, out, err) = service.cli(&["recordings", "verify", id]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_full_disk_becomes_gaps_in_the_ledger_and_the_service_lives_on() {
    // Files stop growing at 160 KiB (ulimit -f): the 16 kHz mix (32 kB/s) fills that in 5 s.
    let toml = "[recording]\nauto_start = true\n[log]\nlevel = \"info\"";
    let service = Service::start(Options {
        toml: toml.into(),
        file_size_limit_kib: Some(160),
        ..Options::default()
    });
    let mut uac = Uac::new(service.sip, "7000");
    assert_eq!(uac.call(), 200);
    let _ = uac.start_media(440.0, Duration::from_secs(9)).finish();
    assert_eq!(uac.hangup(), 200);
    let manifest = service.finished_recording("7000", Duration::from_secs(30));
    let gaps: Vec<&serde_json::Value> = manifest["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "gap")
        .collect();
    assert!(!gaps.is_empty(), "{manifest}");
    assert!(
        gaps.iter()
            .all(|g| g["reason"].as_str().unwrap().contains("failed")),
        "{gaps:?}"
    );
    let metrics = service.metrics();
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("roundtable_spool_write_failures_total"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    assert!(failures > 0.0, "{metrics}");
    assert_eq!(
        service.try_http("GET", "/health", "", None).unwrap().0,
        200,
        "alive"
    );
    // What reached the disk is a valid WAV holding the first seconds, and verifies.
    let id = manifest["id"].as_str().unwrap();
    let (_, mix) = read_wav(
        &service
            .storage()
            .join("recordings")
            .join(id)
            .join("mix.wav"),
    );
    assert!(mix.len() >= 16000 * 4, "{} samples kept", mix.len());
    let (code, out, err) = service.cli(&["recordings", "verify", id]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_recording_started_through_the_api_notifies_everyone_present() {
    let toml = "[recording]\nconsent_notice = true";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let (mut a, mut b) = (Uac::new(service.sip, "8000"), Uac::new(service.sip, "8000"));
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    let (heard_a, heard_b) = (
        a.start_media(0.0, Duration::from_secs(4)),
        b.start_media(0.0, Duration::from_secs(4)),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let (status, room) = service.http(
        "POST",
        "/v1/rooms/8000/recording",
        r#"{"action":"start","mode":"tracks"}"#,
    );
    assert_eq!(status, 200, "{room}");
    assert_eq!(
        room["recording_id"]
            .as_str()
            .map(|id| id.starts_with("8000/")),
        Some(true),
        "{room}"
    );
    // A mute through the API lands in the ledger.
    let muted = room["participants"][0]["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2000));
    let path = format!("/v1/rooms/8000/participants/{muted}");
    assert_eq!(service.http("PATCH", &path, r#"{"muted":true}"#).0, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        service
            .http("POST", "/v1/rooms/8000/recording", r#"{"action":"stop"}"#)
            .0,
        200
    );
    // Nobody talks: what each hears after the start is the notice.
    for (name, heard) in [("a", heard_a.finish()), ("b", heard_b.finish())] {
        let before = heard.window(Duration::from_millis(200), Duration::from_millis(900));
        let after = heard.window(Duration::from_millis(1300), Duration::from_millis(2300));
        assert!(
            rms(&before) < 50.0 && rms(&after) > 300.0,
            "{name}: RMS {:.0} before, {:.0} after the start",
            rms(&before),
            rms(&after)
        );
    }
    let manifest = service.finished_recording("8000", Duration::from_secs(30));
    let legs = manifest["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "{manifest}");
    assert!(
        legs.iter().all(|l| l["consent_notice"] == true),
        "{manifest}"
    );
    assert_eq!(manifest["mode"], "tracks");
    assert!(
        manifest["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["key"].as_str().unwrap().contains("/legs/")),
        "tracks only"
    );
    let actions: Vec<&str> = manifest["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "action")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["start tracks", "stop"]);
    let mute = manifest["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "muted")
        .expect("the mute is in the ledger");
    assert_eq!(
        (mute["leg"].as_str(), mute["muted"].as_bool()),
        (Some(muted.as_str()), Some(true))
    );
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
}
