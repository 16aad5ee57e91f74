//! The REST API against a running service: room list and detail, recording start/stop with
//! conflicts, malformed bodies, unknown rooms and legs, and the bearer token.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn rooms_participants_and_recording_control() {
    let service = Service::start(Options::default());
    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    let media = a.start_media(440.0, Duration::from_millis(1500));

    let (status, rooms) = service.http("GET", "/v1/rooms", "");
    assert_eq!(status, 200);
    assert_eq!(
        rooms,
        serde_json::json!({"rooms": [{"id": "1000", "participants": 1, "recording": false}]})
    );

    let (status, start) = service.http("POST", "/v1/rooms/1000/recording", r#"{"action":"start"}"#);
    assert_eq!((status, start["recording"].as_bool()), (200, Some(true)));
    assert_eq!(
        service
            .http("POST", "/v1/rooms/1000/recording", r#"{"action":"start"}"#)
            .0,
        409
    );
    let _ = media.finish();

    let (_, room) = service.http("GET", "/v1/rooms/1000", "");
    let p = &room["participants"][0];
    assert_eq!(p["from"], "sip:tester@127.0.0.1");
    assert_eq!(p["codec"], "PCMU");
    assert!(p["joined_at"].as_str().unwrap().ends_with('Z'));
    assert!(p["packets_in"].as_u64().unwrap() >= 50, "{room}");
    assert!(p["packets_out"].as_u64().unwrap() >= 50, "{room}");

    let (status, stop) = service.http("POST", "/v1/rooms/1000/recording", r#"{"action":"stop"}"#);
    assert_eq!((status, stop["recording"].as_bool()), (200, Some(false)));
    let (status, err) = service.http("POST", "/v1/rooms/1000/recording", r#"{"action":"stop"}"#);
    assert_eq!(status, 409);
    assert!(err["error"].is_string());

    for body in ["", "{", r#"{"action":"rewind"}"#] {
        let (status, err) = service.http("POST", "/v1/rooms/1000/recording", body);
        assert_eq!(status, 400, "{body}");
        assert!(err["error"].is_string());
    }
    assert_eq!(service.http("GET", "/v1/rooms/9999", "").0, 404);
    assert_eq!(
        service
            .http("POST", "/v1/rooms/9999/recording", r#"{"action":"start"}"#)
            .0,
        404
    );
    assert_eq!(
        service
            .http("DELETE", "/v1/rooms/1000/participants/424242", "")
            .0,
        404
    );
    assert_eq!(a.hangup(), 200);

    let wavs: Vec<_> = files_under(&service.storage())
        .into_iter()
        .filter(|p| p.ends_with("mix.wav"))
        .collect();
    assert_eq!(wavs.len(), 1, "the API-started recording exists");
    let name = wavs[0].to_string_lossy().to_string();
    assert!(
        name.contains("/recordings/1000/") && name.contains('T') && name.contains("Z/mix.wav"),
        "{name}"
    );
}

#[test]
fn bearer_token_guards_v1_and_never_reaches_the_logs() {
    let secret = "tok-3f9a7c-do-not-log";
    let service = Service::start(Options {
        env: vec![("ROUNDTABLE_API__TOKEN".into(), secret.into())],
        ..Options::default()
    });
    assert_eq!(
        service.try_http("GET", "/v1/rooms", "", None).unwrap().0,
        401
    );
    assert_eq!(
        service
            .try_http("GET", "/v1/rooms", "", Some("wrong"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        service
            .try_http("GET", "/v1/rooms", "", Some(secret))
            .unwrap()
            .0,
        200
    );
    assert_eq!(service.try_http("GET", "/health", "", None).unwrap().0, 401);
    assert_eq!(
        service
            .try_http("GET", "/health", "", Some(secret))
            .unwrap()
            .0,
        200
    );
    assert_eq!(service.try_http("GET", "/live", "", None).unwrap().0, 200);
    assert_eq!(
        service.try_http("GET", "/metrics", "", None).unwrap().0,
        401,
        "with a token, the metrics need it too"
    );
    let (status, metrics) = service
        .try_http("GET", "/metrics", "", Some(secret))
        .unwrap();
    assert_eq!(status, 200);
    for name in [
        "roundtable_active_calls",
        "roundtable_rooms",
        "roundtable_mixer_tick_lateness_seconds_bucket",
        "roundtable_recordings_active",
        "roundtable_rtp_packets_in_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(!service.log().contains(secret));
}

#[test]
fn rooms_defined_through_the_api_survive_restarts() {
    let mut service = Service::start(Options::default());
    let (status, room) = service.http("PUT", "/v1/rooms/555", r#"{"pin":"4321"}"#);
    assert_eq!(
        (status, room["participants"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(
        service.http("PUT", "/v1/rooms/556", r#"{"pin":"43x1"}"#).0,
        400
    );
    assert_eq!(service.http("PUT", "/v1/rooms/a%20b", "{}").0, 400);
    assert_eq!(service.http("PUT", "/v1/rooms/open", "{}").0, 200);
    let (_, rooms) = service.http("GET", "/v1/rooms", "");
    assert_eq!(
        rooms["rooms"][0],
        serde_json::json!({"id": "555", "participants": 0, "recording": false})
    );
    // A PIN room is entered through the lobby only.
    assert_eq!(Uac::new(service.sip, "555").call(), 403);
    let mut open = Uac::new(service.sip, "open");
    assert_eq!(open.call(), 200);
    assert_eq!(open.hangup(), 200);
    let saved = std::fs::read_to_string(service.storage().join("rooms.json")).unwrap();
    assert!(saved.contains("555"));

    service.restart();
    let (_, rooms) = service.http("GET", "/v1/rooms", "");
    let ids: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["555", "open"], "both survive the restart");
    assert_eq!(Uac::new(service.sip, "555").call(), 403);
    assert_eq!(service.http("DELETE", "/v1/rooms/555", "").0, 204);
    assert_eq!(service.http("DELETE", "/v1/rooms/555", "").0, 404);
    assert_eq!(service.http("GET", "/v1/rooms/555", "").0, 404);
}
