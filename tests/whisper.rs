//! Whisper and coach: a supervisor patched `whisper_to` an agent is heard by the agent only,
//! while it still hears the room; `hears` narrows what a participant hears; relations show in
//! the participant, in events, and bad ones get 400. Asserted on the tones each caller hears.

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
