//! Transfers and moves: `POST /v1/rooms/{room}/participants/{leg}/move` takes a live leg to
//! another room (its audio follows it, asserted on tones), with clear statuses for bad moves; an
//! in-dialog REFER into another of our rooms does the same and NOTIFYs the caller; a REFER out
//! of the bridge is declined (603) by default, a malformed one gets 400; with
//! `sip.allow_refer_out` the target is dialled into the caller's room, with NOTIFYs of its
//! progress.

mod common;

use std::time::Duration;

use common::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The id of the one participant of `room`.
fn only_participant(service: &Service, room: &str) -> String {
    let (_, detail) = service.http("GET", &format!("/v1/rooms/{room}"), "");
    detail["participants"][0]["id"]
        .as_str()
        .expect("a participant")
        .to_string()
}

#[test]
fn a_moved_participant_hears_its_new_room_and_no_longer_the_old_one() {
    let service = Service::start(Options {
        toml: "[[rooms]]\nid = \"tiny\"\nmax_participants = 1\n".into(),
        ..Options::default()
    });
    // C first, alone in "east", so that it is the room's first participant.
    let mut c = Uac::new(service.sip, "east");
    assert_eq!(c.call(), 200);
    let c_id = only_participant(&service, "east");
    let mut a = Uac::new(service.sip, "east");
    let mut b = Uac::new(service.sip, "west");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    service.wait_participants("east", 2);
    let a_media = a.start_media(440.0, Duration::from_secs(7));
    let b_media = b.start_media(1000.0, Duration::from_secs(7));
    let c_media = c.start_media(0.0, Duration::from_secs(7));
    std::thread::sleep(ms(2500));

    // Bad moves first: the service answers and nothing changes.
    for (path, body, status) in [
        (
            format!("/v1/rooms/east/participants/{c_id}/move"),
            r#"{"room":"bad room"}"#,
            400,
        ),
        (
            "/v1/rooms/east/participants/999/move".to_string(),
            r#"{"room":"west"}"#,
            404,
        ),
        (
            format!("/v1/rooms/nowhere/participants/{c_id}/move"),
            r#"{"room":"west"}"#,
            404,
        ),
        (
            format!("/v1/rooms/east/participants/{c_id}/move"),
            r#"{"to":"west"}"#,
            400,
        ),
    ] {
        let (got, answer) = service.http("POST", &path, body);
        assert_eq!(got, status, "{path} {body}: {answer}");
    }
    let mut tiny = Uac::new(service.sip, "tiny");
    assert_eq!(tiny.call(), 200);
    let (got, answer) = service.http(
        "POST",
        &format!("/v1/rooms/east/participants/{c_id}/move"),
        r#"{"room":"tiny"}"#,
    );
    assert_eq!(got, 409, "a full room refuses: {answer}");

    let moved_at = c_media.started.elapsed();
    let (got, moved) = service.http(
        "POST",
        &format!("/v1/rooms/east/participants/{c_id}/move"),
        r#"{"room":"west"}"#,
    );
    assert_eq!(got, 200, "{moved}");
    assert_eq!(moved["id"], c_id.as_str());
    service.wait_participants("west", 2);
    service.wait_participants("east", 1);
    let (heard_c, _, _) = (c_media.finish(), a_media.finish(), b_media.finish());
    let before = heard_c.window(moved_at - ms(1500), moved_at);
    assert!(tone_db(&before, 440.0) > 40.0, "C heard A before the move");
    assert!(tone_db(&before, 1000.0) < 20.0, "C did not hear B before");
    let after = heard_c.window(moved_at + ms(1000), moved_at + ms(3500));
    assert!(
        tone_db(&after, 1000.0) > 40.0,
        "C hears B after the move: {:.1} dB",
        tone_db(&after, 1000.0)
    );
    assert!(
        tone_db(&after, 440.0) < 20.0,
        "C no longer hears A: {:.1} dB",
        tone_db(&after, 440.0)
    );
    let (_, events) = service.http("GET", "/v1/events?room=east", "");
    let moved_event = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "participant_moved")
        .cloned()
        .expect("a participant_moved event");
    assert_eq!(moved_event["participant"], c_id.as_str());
    assert_eq!(moved_event["to"], "west");
    assert_eq!(c.hangup(), 200, "its call stayed up");
    assert_eq!(tiny.hangup(), 200);
}

#[test]
fn a_refer_into_another_room_moves_the_caller_and_notifies_it() {
    let service = Service::start(Options::default());
    let mut c = Uac::new(service.sip, "north");
    assert_eq!(c.call(), 200);
    let mut a = Uac::new(service.sip, "north");
    let mut b = Uac::new(service.sip, "south");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    service.wait_participants("north", 2);
    let a_media = a.start_media(440.0, Duration::from_secs(7));
    let b_media = b.start_media(1000.0, Duration::from_secs(7));
    let c_media = c.start_media(0.0, Duration::from_secs(7));
    std::thread::sleep(ms(2000));

    // Bad REFERs are refused and the call goes on: a malformed Refer-To (400), a transfer out
    // of the bridge (603 without sip.allow_refer_out).
    assert_eq!(c.refer("<mailto:alice@example.com>"), 400);
    assert_eq!(c.refer("<sip:alice@192.0.2.10>"), 603);

    let moved_at = c_media.started.elapsed();
    assert_eq!(c.refer(&format!("<sip:south@{}>", service.sip)), 202);
    let notify = c
        .expect_request("NOTIFY", Duration::from_secs(2))
        .expect("a NOTIFY of the outcome");
    assert_eq!(notify.header("Event").as_deref(), Some("refer"));
    assert!(
        notify
            .header("Subscription-State")
            .is_some_and(|s| s.starts_with("terminated")),
        "{}",
        notify.0
    );
    assert!(notify.body().starts_with("SIP/2.0 200 OK"), "{}", notify.0);
    service.wait_participants("south", 2);
    let (heard_c, _, _) = (c_media.finish(), a_media.finish(), b_media.finish());
    let after = heard_c.window(moved_at + ms(1000), moved_at + ms(3500));
    assert!(
        tone_db(&after, 1000.0) > 40.0,
        "C hears B after the REFER: {:.1} dB",
        tone_db(&after, 1000.0)
    );
    assert!(tone_db(&after, 440.0) < 20.0, "C no longer hears A");
    let (status, _) = service.http("GET", "/health", "");
    assert_eq!(status, 200);
    assert_eq!(c.hangup(), 200, "its call stayed up");
}

#[test]
fn with_refer_out_allowed_the_target_is_dialled_into_the_room_with_progress_notified() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options {
        toml: "[sip]\nallow_refer_out = true\n".into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let mut a = Uac::new(service.sip, "lake");
    assert_eq!(a.call(), 200);
    let a_media = a.start_media(440.0, Duration::from_secs(6));
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let callee = sipp_callee(
        "uas_answer.xml",
        port,
        work.path(),
        &[("RTP_PORT", rtp.local_addr().unwrap().port().to_string())],
    );
    assert_eq!(a.refer(&format!("<sip:outside@127.0.0.1:{port}>")), 202);
    let mut progress = Vec::new();
    for _ in 0..3 {
        let Some(notify) = a.expect_request("NOTIFY", Duration::from_secs(5)) else {
            break;
        };
        progress.push(notify.body().lines().next().unwrap_or_default().to_string());
    }
    assert_eq!(
        progress,
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK"
        ],
        "{}",
        service.log_tail()
    );
    service.wait_participants("lake", 2);
    // The dialled callee hears the room.
    let heard = listen_pcmu(&rtp, Duration::from_secs(2));
    assert!(
        tone_db_at(&heard[heard.len() / 2..], 440.0, 8000.0) > 40.0,
        "the dialled target hears the room"
    );
    drop(a_media);
    assert_eq!(a.hangup(), 200);
    // The dialled target stays in the room after the caller that asked leaves.
    service.wait_participants("lake", 1);
    let target = only_participant(&service, "lake");
    let (status, _) = service.http(
        "DELETE",
        &format!("/v1/rooms/lake/participants/{target}"),
        "",
    );
    assert_eq!(status, 204);
    assert_eq!(
        wait_sipp(callee, Duration::from_secs(10)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
}
