//! Room and participant controls end to end: waiting for the moderator (hold tone only until a
//! moderator PIN joins), join tones, mute and deaf through the API and mute by `*6`, locking
//! (new callers get 403), and ending the conference when the moderator leaves.

mod common;

use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[[dialplan]]
match = "^lobby$"
action = "lobby"
[[dialplan]]
match = "^boss-(\\d+)$"
action = "room"
moderator = true
[[dialplan]]
match = "^(\\d+)$"
action = "room"
[[rooms]]
id = "4242"
pin = "1234"
moderator_pin = "9999"
wait_for_moderator = true
join_leave_tones = true
[[rooms]]
id = "5000"
end_with_moderator = true
"#;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_room_waits_for_its_moderator() {
    let service = Service::start(Options {
        toml: CONFIG.into(),
        ..Options::default()
    });
    // A and B enter with the member PIN: on hold, they hear the hold chime, not each other.
    let mut a = Uac::new(service.sip, "lobby");
    let mut b = Uac::new(service.sip, "lobby");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    let a_media = a.start_media(440.0, Duration::from_secs(12));
    let b_media = b.start_media(1000.0, Duration::from_secs(12));
    std::thread::sleep(ms(300));
    a.send_dtmf("4242#1234#");
    b.send_dtmf("4242#1234#");
    service.wait_participants("4242", 2);
    let (_, room) = service.http("GET", "/v1/rooms/4242", "");
    assert_eq!(room["waiting_for_moderator"], true, "{room}");
    std::thread::sleep(ms(4000));
    // M enters with the moderator PIN: the room mixes.
    let mut m = Uac::new(service.sip, "lobby");
    assert_eq!(m.call(), 200);
    let m_media = m.start_media(0.0, Duration::from_secs(8));
    std::thread::sleep(ms(300));
    m.send_dtmf("4242#9999#");
    service.wait_participants("4242", 3);
    let joined = a_media.started.elapsed();
    let (_, room) = service.http("GET", "/v1/rooms/4242", "");
    assert_eq!(room["waiting_for_moderator"], false, "{room}");
    assert!(
        room["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["moderator"] == true),
        "{room}"
    );
    let (heard_a, heard_b, _) = (a_media.finish(), b_media.finish(), m_media.finish());
    // Before the moderator: B does not hear A; the hold chime (523/659 Hz) plays.
    let waiting = heard_b.window(ms(2500), ms(6000));
    assert!(
        tone_db(&waiting, 440.0) < 20.0,
        "B heard A while waiting: {:.1} dB",
        tone_db(&waiting, 440.0)
    );
    assert!(
        tone_db(&waiting, 523.0).max(tone_db(&waiting, 659.0)) > 20.0,
        "B hears the hold chime"
    );
    // After: A and B hear each other.
    let after = joined + ms(1000);
    assert!(
        tone_db(&heard_b.window(after, after + ms(3000)), 440.0) > 40.0,
        "B hears A once the moderator is in"
    );
    assert!(
        tone_db(&heard_a.window(after, after + ms(3000)), 1000.0) > 40.0,
        "A hears B once the moderator is in"
    );
    let (_, events) = service.http("GET", "/v1/events?room=4242", "");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"waiting_for_moderator") && kinds.contains(&"moderator_arrived"),
        "{kinds:?}"
    );
    for c in [&mut a, &mut b, &mut m] {
        assert_eq!(c.hangup(), 200);
    }
}

#[test]
fn mute_deaf_lock_and_the_end_of_the_conference() {
    let service = Service::start(Options {
        toml: CONFIG.into(),
        ..Options::default()
    });
    let mut boss = Uac::new(service.sip, "boss-5000");
    let mut a = Uac::new(service.sip, "5000");
    let mut b = Uac::new(service.sip, "5000");
    for c in [&mut boss, &mut a, &mut b] {
        assert_eq!(c.call(), 200);
    }
    service.wait_participants("5000", 3);
    let (_, room) = service.http("GET", "/v1/rooms/5000", "");
    let ids: Vec<String> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let (a_id, b_id) = (&ids[1], &ids[2]);
    let boss_media = boss.start_media(0.0, Duration::from_secs(9));
    let a_media = a.start_media(440.0, Duration::from_secs(9));
    let b_media = b.start_media(1000.0, Duration::from_secs(9));
    // 0-2 s: everyone hears everyone. 2-4 s: A muted through the API. 4-6 s: A unmuted, B deaf.
    // 6-8 s: B undeafened, A mutes itself with *6.
    std::thread::sleep(ms(2000));
    let (status, p) = service.http(
        "PATCH",
        &format!("/v1/rooms/5000/participants/{a_id}"),
        r#"{"muted":true}"#,
    );
    assert_eq!(
        (status, p["audio"]["muted"].as_bool()),
        (200, Some(true)),
        "{p}"
    );
    std::thread::sleep(ms(2000));
    service.http(
        "PATCH",
        &format!("/v1/rooms/5000/participants/{a_id}"),
        r#"{"muted":false}"#,
    );
    service.http(
        "PATCH",
        &format!("/v1/rooms/5000/participants/{b_id}"),
        r#"{"deaf":true}"#,
    );
    std::thread::sleep(ms(2000));
    service.http(
        "PATCH",
        &format!("/v1/rooms/5000/participants/{b_id}"),
        r#"{"deaf":false}"#,
    );
    a.send_dtmf("*6");
    std::thread::sleep(ms(500));
    let (_, room) = service.http("GET", "/v1/rooms/5000", "");
    let a_state = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == a_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(a_state["audio"]["muted"], true, "*6 muted A: {a_state}");
    let (heard_boss, _heard_a, heard_b) = (boss_media.finish(), a_media.finish(), b_media.finish());
    let level =
        |h: &Heard, from: u64, freq: f64| tone_db(&h.window(ms(from), ms(from + 1200)), freq);
    assert!(
        level(&heard_boss, 700, 440.0) > 40.0,
        "A heard before the mute"
    );
    assert!(
        level(&heard_boss, 2600, 440.0) < 20.0,
        "A not heard while muted: {:.1}",
        level(&heard_boss, 2600, 440.0)
    );
    assert!(level(&heard_boss, 2600, 1000.0) > 40.0, "B still heard");
    assert!(
        level(&heard_boss, 4600, 440.0) > 40.0,
        "A heard again after unmute"
    );
    assert!(
        level(&heard_b, 4600, 440.0) < 20.0,
        "deaf B hears nothing: {:.1}",
        level(&heard_b, 4600, 440.0)
    );
    assert!(
        level(&heard_boss, 7400, 440.0) < 20.0,
        "A muted itself with *6"
    );

    // Locked: a new caller gets 403, and gets in again once unlocked.
    let (status, room) = service.http("PATCH", "/v1/rooms/5000", r#"{"locked":true}"#);
    assert_eq!((status, room["locked"].as_bool()), (200, Some(true)));
    assert_eq!(Uac::new(service.sip, "5000").call(), 403);
    service.http("PATCH", "/v1/rooms/5000", r#"{"locked":false}"#);
    let mut late = Uac::new(service.sip, "5000");
    assert_eq!(late.call(), 200);

    // The moderator leaves: everyone else gets BYE (end_with_moderator).
    assert_eq!(boss.hangup(), 200);
    for c in [&a, &b, &late] {
        assert!(
            c.expect_bye(Duration::from_secs(3)),
            "BYE after the moderator left\n{}",
            service.log()
        );
    }
}
