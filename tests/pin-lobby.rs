//! The PIN lobby end to end: the dial plan sends `lobby` to the lobby and numbers to rooms; a
//! PIN room dialled directly is refused 403; lobby callers hear the prompt, enter the conference
//! ID and PIN as RFC 4733 events (or SIP INFO) and are then heard in the room; three wrong PINs
//! end the call within 3 s of the last; repeated failures lock the caller's address out (403).

mod common;

use std::time::{Duration, Instant};

use common::*;

const CONFIG: &str = r#"
[[dialplan]]
match = "^lobby$"
action = "lobby"
[[dialplan]]
match = "^(\\d+)$"
action = "room"
[[rooms]]
id = "4242"
pin = "1234"
moderator_pin = "9999"
[sip.lockout]
max_failures = 3
window_s = 300
backoff_s = 30
"#;

#[test]
fn lobby_pin_entry_failures_and_lockout() {
    let service = Service::start(Options {
        toml: CONFIG.into(),
        ..Options::default()
    });
    let ms = Duration::from_millis;

    // The dial plan: no match is 404, a PIN room dialled directly is 403, other numbers are rooms.
    assert_eq!(Uac::new(service.sip, "abc").call(), 404);
    assert_eq!(Uac::new(service.sip, "4242").call(), 403);

    // M enters through the lobby with the moderator PIN, keyed by SIP INFO.
    let mut m = Uac::new(service.sip, "lobby");
    assert_eq!(m.call(), 200);
    let m_media = m.start_media(440.0, Duration::from_secs(9));
    std::thread::sleep(ms(800));
    for key in "4242#9999#".chars() {
        assert_eq!(m.send_info(key), 200);
    }
    service.wait_participants("4242", 1);

    // L hears the welcome prompt, then keys the room and PIN as RFC 4733 events.
    let mut l = Uac::new(service.sip, "lobby");
    assert_eq!(l.call(), 200);
    let l_media = l.start_media(0.0, Duration::from_secs(6));
    std::thread::sleep(ms(1000));
    l.send_dtmf("4242#1234#");
    service.wait_participants("4242", 2);
    let joined = Instant::now();
    let heard_l = l_media.finish();
    let heard_prompt = heard_l.window(ms(100), ms(900));
    let energy: f64 = heard_prompt
        .iter()
        .map(|&s| f64::from(s).powi(2))
        .sum::<f64>()
        / heard_prompt.len().max(1) as f64;
    assert!(
        energy > 10_000.0,
        "the welcome prompt is heard (mean square {energy:.0})"
    );
    let since_join = joined.duration_since(heard_l.started()) + ms(300);
    let in_room = heard_l.window(since_join, Duration::from_secs(6));
    assert!(
        tone_db(&in_room, 440.0) > 50.0,
        "L hears M in room 4242 after joining"
    );
    let _ = m_media.finish();
    assert_eq!(l.hangup(), 200);
    assert_eq!(m.hangup(), 200);

    // W gets the PIN wrong three times: goodbye and BYE within 3 s of the last try.
    let mut w = Uac::new(service.sip, "lobby");
    assert_eq!(w.call(), 200);
    std::thread::sleep(ms(300));
    w.send_dtmf("4242#");
    w.send_dtmf("1111#");
    w.send_dtmf("2222#");
    w.send_dtmf("3333#");
    let last_try = Instant::now();
    assert!(
        w.expect_bye(Duration::from_secs(4)),
        "BYE after three wrong PINs\n{}",
        service.log()
    );
    assert!(last_try.elapsed() < Duration::from_secs(4));

    // Three failures from 127.0.0.1 lock the address out: the next call is refused.
    assert_eq!(Uac::new(service.sip, "lobby").call(), 403);
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_lockouts_total{scope=\"source\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("roundtable_lobby_outcomes_total{outcome=\"joined\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("roundtable_lobby_outcomes_total{outcome=\"wrong_pin\"} 3"),
        "{metrics}"
    );
}
