//! Whisper and coach: a supervisor patched `whisper_to` an agent is heard by the agent only,
//! while it still hears the room, and the room still encodes once for everyone else (asserted
//! on `roundtable_mixer_encodes_last_tick`); `hears` narrows what a participant hears;
//! relations show in the participant, in events, and bad ones get 400. Asserted on the tones
//! each caller hears. A recording's ledger notes every relation, and its mix carries the whisper
//! only with `recording.include_whispers`.

mod common;

use std::time::Duration;

use common::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The participant ids of `room`, in joining order.
fn ids(service: &Service, room: &str) -> Vec<String> {
    let (_, detail) = service.http("GET", &format!("/v1/rooms/{room}"), "");
    detail["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_coach_whispers_to_the_agent_only_and_hears_the_room() {
    let service = Service::start(Options::default());
    let mut customer = Uac::new(service.sip, "desk");
    let mut agent = Uac::new(service.sip, "desk");
    let mut coach = Uac::new(service.sip, "desk");
    for caller in [&mut customer, &mut agent, &mut coach] {
        assert_eq!(caller.call(), 200);
    }
    service.wait_participants("desk", 3);
    let [_customer_id, agent_id, coach_id] =
        <[String; 3]>::try_from(ids(&service, "desk")).unwrap();
    let patch = |body: String| {
        service.http(
            "PATCH",
            &format!("/v1/rooms/desk/participants/{coach_id}"),
            &body,
        )
    };
    // Bad relations: a leg not in the room, a word that is not "all", both forms at once.
    for body in [
        r#"{"whisper_to": "999"}"#.to_string(),
        r#"{"hears": "some"}"#.to_string(),
        format!(r#"{{"whisper_to": "{agent_id}", "heard_by": ["{agent_id}"]}}"#),
        format!(r#"{{"whisper_to": "{coach_id}"}}"#),
    ] {
        let (status, answer) = patch(body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, coached) = patch(format!(r#"{{"whisper_to": "{agent_id}"}}"#));
    assert_eq!(status, 200, "{coached}");
    assert_eq!(coached["audio"]["heard_by"][0], agent_id.as_str());
    assert_eq!(coached["audio"]["hears"], "all");

    let customer_media = customer.start_media(440.0, Duration::from_secs(4));
    let agent_media = agent.start_media(0.0, Duration::from_secs(4));
    let coach_media = coach.start_media(1000.0, Duration::from_secs(4));
    // Encode-once for the others: the customer (a talker, N-1 of its own), one shared frame
    // (the coach hears the room's sum), and the agent's own mix: 3 frames a tick.
    std::thread::sleep(ms(2000));
    let encodes: Vec<f64> = (0..5)
        .map(|_| {
            std::thread::sleep(ms(100));
            service
                .metrics()
                .lines()
                .filter(|l| l.starts_with("roundtable_mixer_encodes_last_tick{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect();
    assert!(
        encodes.iter().filter(|&&n| n == 3.0).count() >= 4,
        "frames encoded per tick: {encodes:?}"
    );
    let (heard_customer, heard_agent, heard_coach) = (
        customer_media.finish(),
        agent_media.finish(),
        coach_media.finish(),
    );
    let window = |heard: &Heard| heard.window(ms(1500), ms(3800));
    let agent_hears = window(&heard_agent);
    assert!(
        tone_db(&agent_hears, 1000.0) > 40.0,
        "the agent hears the coach"
    );
    assert!(tone_db(&agent_hears, 440.0) > 40.0, "and the customer");
    let customer_hears = window(&heard_customer);
    assert!(
        tone_db(&customer_hears, 1000.0) < 20.0,
        "the customer does not hear the coach: {:.1} dB",
        tone_db(&customer_hears, 1000.0)
    );
    assert!(
        tone_db(&window(&heard_coach), 440.0) > 40.0,
        "the coach hears the customer"
    );

    // The relation is an event; cleared with null, the coach is heard by all again.
    let (_, events) = service.http("GET", "/v1/events?room=desk", "");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "participant_relations" && e["participant"] == coach_id.as_str()),
        "{events}"
    );
    let (status, cleared) = patch(r#"{"whisper_to": null}"#.into());
    assert_eq!(status, 200);
    assert_eq!(cleared["audio"]["heard_by"], "all");
    let customer_media = customer.start_media(0.0, Duration::from_secs(3));
    let coach_media = coach.start_media(1000.0, Duration::from_secs(3));
    let heard = customer_media.finish();
    drop(coach_media);
    assert!(
        tone_db(&heard.window(ms(1000), ms(2800)), 1000.0) > 40.0,
        "after the whisper ends the customer hears the coach"
    );
    for caller in [&mut customer, &mut agent, &mut coach] {
        assert_eq!(caller.hangup(), 200);
    }
}

/// Records room `room` of `service` while a coach whispers 1000 Hz to an agent and a customer
/// says 440 Hz; returns the mix (16 kHz) and the manifest's ledger.
fn record_a_whisper(service: &Service, room: &str) -> (Vec<i16>, Vec<serde_json::Value>) {
    let mut customer = Uac::new(service.sip, room);
    let mut agent = Uac::new(service.sip, room);
    let mut coach = Uac::new(service.sip, room);
    for caller in [&mut customer, &mut agent, &mut coach] {
        assert_eq!(caller.call(), 200);
    }
    service.wait_participants(room, 3);
    let [_, agent_id, coach_id] = <[String; 3]>::try_from(ids(service, room)).unwrap();
    let (status, _) = service.http(
        "POST",
        &format!("/v1/rooms/{room}/recording"),
        r#"{"action":"start","mode":"mixed"}"#,
    );
    assert_eq!(status, 200);
    let (status, _) = service.http(
        "PATCH",
        &format!("/v1/rooms/{room}/participants/{coach_id}"),
        &format!(r#"{{"whisper_to": "{agent_id}"}}"#),
    );
    assert_eq!(status, 200);
    let customer_media = customer.start_media(440.0, Duration::from_secs(3));
    let coach_media = coach.start_media(1000.0, Duration::from_secs(3));
    drop((customer_media.finish(), coach_media.finish()));
    for caller in [&mut customer, &mut agent, &mut coach] {
        assert_eq!(caller.hangup(), 200);
    }
    let manifest = service.finished_recording(room, Duration::from_secs(60));
    let id = manifest["id"].as_str().unwrap();
    let (_, mix) = read_wav(
        &service
            .storage()
            .join("recordings")
            .join(id)
            .join("mix.wav"),
    );
    (mix, manifest["ledger"].as_array().unwrap().clone())
}

#[test]
fn the_recording_notes_relations_and_carries_whispers_only_when_asked() {
    for include in [false, true] {
        let service = Service::start(Options {
            toml: format!("[recording]\ninclude_whispers = {include}\n"),
            ..Options::default()
        });
        let (mix, ledger) = record_a_whisper(&service, "coached");
        let middle = &mix[mix.len() / 3..2 * mix.len() / 3];
        assert!(
            tone_db_at(middle, 440.0, 16000.0) > 40.0,
            "the customer is recorded"
        );
        let whisper = tone_db_at(middle, 1000.0, 16000.0);
        if include {
            assert!(whisper > 40.0, "include_whispers: {whisper:.1} dB");
        } else {
            assert!(whisper < 20.0, "the whisper is left out: {whisper:.1} dB");
        }
        let relations = ledger
            .iter()
            .find(|e| e["event"] == "relations")
            .unwrap_or_else(|| panic!("no relations line: {ledger:?}"));
        assert_eq!(relations["hears"], serde_json::Value::Null, "{relations}");
        assert_eq!(
            relations["heard_by"].as_array().unwrap().len(),
            1,
            "{relations}"
        );
    }
}
