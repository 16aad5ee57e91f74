//! DTMF in a room: RFC 4733 key presses (each sent as begin, update and three end packets) and
//! SIP INFO reach `GET /v1/events` as one `dtmf` event per key, in order; the keys' tones are
//! nowhere in what the other participant hears or in the room's recording.

mod common;

use std::time::Duration;

use common::*;

/// The DTMF row and column frequencies.
const DTMF_HZ: [f64; 7] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0];

#[test]
fn keys_become_events_and_never_sound() {
    let toml = "[recording]\nauto_start = true";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let (mut presser, mut listener) =
        (Uac::new(service.sip, "1000"), Uac::new(service.sip, "1000"));
    assert_eq!(presser.call(), 200);
    assert_eq!(listener.call(), 200);
    service.wait_participants("1000", 2);
    let (_, room) = service.http("GET", "/v1/rooms/1000", "");
    let presser_id = room["participants"][0]["id"].as_str().unwrap().to_string();

    let listen = listener.start_media(0.0, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(500));
    presser.send_dtmf("19#");
    assert_eq!(presser.send_info('*'), 200);
    std::thread::sleep(Duration::from_millis(500));

    // One event per key, in order, from the presser; the long poll returns at once when events
    // are there.
    let (status, page) = service.http("GET", "/v1/events?room=1000&wait_s=5", "");
    assert_eq!(status, 200);
    let events = page["events"].as_array().unwrap();
    let digits: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "dtmf")
        .map(|e| e["digit"].as_str().unwrap())
        .collect();
    assert_eq!(digits, ["1", "9", "#", "*"], "{page}");
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "dtmf")
            .all(|e| e["participant"] == presser_id.as_str())
    );
    let joined = events
        .iter()
        .filter(|e| e["type"] == "participant_joined")
        .count();
    assert_eq!(joined, 2, "{page}");
    assert!(events.iter().any(|e| e["type"] == "recording_started"));
    let next = page["next"].as_str().unwrap().to_string();
    let (_, empty) = service.http("GET", &format!("/v1/events?after={next}"), "");
    assert!(
        empty["events"].as_array().unwrap().is_empty(),
        "the cursor moves past what was read"
    );
    assert!(service.metrics().contains("roundtable_dtmf_digits_total 4"));

    // The listener heard silence, not the keys.
    let heard = listen.finish();
    let window = heard.window(Duration::from_millis(400), Duration::from_millis(3500));
    assert!(window.len() > 8000, "audio arrived");
    for hz in DTMF_HZ {
        let db = tone_db(&window, hz);
        assert!(db < 0.0, "{hz} Hz in what the listener heard at {db:.1} dB");
    }
    assert_eq!(presser.hangup(), 200);
    assert_eq!(listener.hangup(), 200);
    service.wait_participants("1000", 0);

    // Nor is any key in the recording.
    let wav = if service.wait_for_log("recording finished room=1000", Duration::from_secs(5)) {
        files_under(&service.storage())
            .into_iter()
            .find(|p| p.ends_with("mix.wav"))
    } else {
        None
    };
    let (spec, samples) = read_wav(&wav.expect("recording finished"));
    assert!(samples.len() as u32 > spec.sample_rate * 2);
    for hz in DTMF_HZ {
        let db = tone_db_at(&samples, hz, f64::from(spec.sample_rate));
        assert!(db < 0.0, "{hz} Hz in the recording at {db:.1} dB");
    }
    let (_, page) = service.http(
        "GET",
        &format!(
            "/v1/events?after={next}&room=1000&types=participant_left,recording_stopped,room_ended"
        ),
        "",
    );
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "participant_left",
            "participant_left",
            "recording_stopped",
            "room_ended"
        ],
        "{page}"
    );
}
