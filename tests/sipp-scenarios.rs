//! Real SIPp calls against the running service: a call the caller ends with BYE, an OPTIONS
//! ping, a call that never ACKs (the bridge sends BYE after 64*T1 = 32 s), and a kick through the
//! REST API (the caller receives BYE).

mod common;

use std::time::Duration;

use common::*;

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn call_ended_by_caller_bye() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let child = sipp(
        &service,
        &scenario("basic_call.xml"),
        "1000",
        work.path(),
        &[],
    );
    service.wait_participants("1000", 1);
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    service.wait_participants("1000", 0);
    let metrics = service.metrics();
    assert_eq!(
        metric(&metrics, "roundtable_sip_requests_total{method=\"BYE\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "roundtable_active_calls"), 0.0);
}

#[test]
fn options_ping_is_answered() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let child = sipp(&service, &scenario("options.xml"), "1000", work.path(), &[]);
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    assert_eq!(
        metric(
            &service.metrics(),
            "roundtable_sip_requests_total{method=\"OPTIONS\"}"
        ),
        1.0
    );
}

#[test]
fn call_without_ack_gets_bye() {
    if !sipp_available() {
        return;
    }
    // 64*T1 = 3.2 s with T1 = 50 ms; SIPp sends no RTP either, so keep inactivity out of the way.
    let toml = "[sip]\ntimer_t1_ms = 50\n[media]\ninactivity_timeout_s = 60";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let child = sipp(&service, &scenario("no_ack.xml"), "1000", work.path(), &[]);
    assert_eq!(
        wait_sipp(child, Duration::from_secs(50)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    service.wait_participants("1000", 0);
    assert!(
        service.log().contains("reason=\"no ACK\""),
        "{}",
        service.log()
    );
    let metrics = service.metrics();
    assert_eq!(
        metric(&metrics, "roundtable_sip_timeouts_total{kind=\"ack\"}"),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "roundtable_sip_retransmissions_total{kind=\"2xx\"}"
        ) >= 5.0,
        "{metrics}"
    );
}

#[test]
fn kick_through_the_api_sends_bye() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let child = sipp(
        &service,
        &scenario("wait_for_bye.xml"),
        "1000",
        work.path(),
        &[],
    );
    service.wait_participants("1000", 1);
    let (_, room) = service.http("GET", "/v1/rooms/1000", "");
    let leg = room["participants"][0]["id"]
        .as_str()
        .expect("leg id")
        .to_string();
    let (status, _) = service.http("DELETE", &format!("/v1/rooms/1000/participants/{leg}"), "");
    assert_eq!(status, 204);
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    assert_eq!(
        service.http("GET", "/v1/rooms/1000", "").0,
        404,
        "the room closed with its last leg"
    );
    assert_eq!(
        service
            .http("DELETE", &format!("/v1/rooms/1000/participants/{leg}"), "")
            .0,
        404
    );
}

#[test]
fn call_over_tcp() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let child = sipp(
        &service,
        &scenario("basic_call.xml"),
        "tcp-room",
        work.path(),
        &["-t", "t1"],
    );
    service.wait_participants("tcp-room", 1);
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    service.wait_participants("tcp-room", 0);
}

#[test]
fn cancel_before_answer_gets_487() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options {
        toml: "[sip]\nanswer_delay_ms = 3000".into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let child = sipp(&service, &scenario("cancel.xml"), "1000", work.path(), &[]);
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    service.wait_participants("1000", 0);
    let metrics = service.metrics();
    assert_eq!(
        metric(&metrics, "roundtable_sip_responses_total{code=\"487\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "roundtable_sip_responses_total{code=\"200\"}"),
        1.0,
        "only the CANCEL got 200"
    );
}

#[test]
fn hold_and_resume_by_reinvite() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let child = sipp(
        &service,
        &scenario("reinvite_hold.xml"),
        "1000",
        work.path(),
        &[],
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    assert_eq!(
        service.log().matches("re-offer answered").count(),
        2,
        "{}",
        service.log()
    );
}

#[test]
fn session_timer_refresh_then_expiry() {
    if !sipp_available() {
        return;
    }
    // Min-SE shortened to 12 s, so the timers run in seconds. SIPp sends no RTP: keep the
    // inactivity timeout out of the way.
    let toml = "[sip]\nmin_session_expires_s = 12\n[media]\ninactivity_timeout_s = 60";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let child = sipp(
        &service,
        &scenario("session_timer.xml"),
        "1000",
        work.path(),
        &["-timeout", "30s"],
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(30)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    let took = started.elapsed();
    // Refresh at 3 s; BYE at 3 + (12 - 12/3) = 11 s, not at 8 s as without the refresh.
    assert!(
        took >= Duration::from_millis(10_500) && took <= Duration::from_secs(13),
        "BYE after {took:?}"
    );
    assert!(
        service.log().contains("reason=\"session expired\""),
        "{}",
        service.log()
    );
}

/// The bridge refreshes a caller that does not support session timers (`refresher=uas`, 12 s
/// with the test's Min-SE): by re-INVITE when the caller does not allow UPDATE.
#[test]
fn session_refreshed_by_the_bridge_with_reinvite() {
    if !sipp_available() {
        return;
    }
    let toml = "[sip]\nsession_expires_s = 12\nmin_session_expires_s = 12\n[media]\ninactivity_timeout_s = 60";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let child = sipp(
        &service,
        &scenario("session_refresh_reinvite.xml"),
        "1000",
        work.path(),
        &["-timeout", "20s"],
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    let took = started.elapsed();
    // At half the interval.
    assert!(
        took >= Duration::from_millis(5_500) && took <= Duration::from_secs(8),
        "refresh after {took:?}"
    );
    let metrics = service.metrics();
    assert_eq!(
        metric(
            &metrics,
            "roundtable_sip_requests_sent_total{method=\"INVITE\"}"
        ),
        1.0,
        "{metrics}"
    );
    service.wait_participants("1000", 0);
}

/// A refresh the caller never answers (UPDATE over TCP, so not retransmitted) ends the call with
/// BYE after Timer F (64*T1, T1 shortened to 20 ms here), before the session would expire.
#[test]
fn missed_bridge_refresh_ends_the_call() {
    if !sipp_available() {
        return;
    }
    let toml = "[sip]\nsession_expires_s = 20\nmin_session_expires_s = 20\ntimer_t1_ms = 20\n[media]\ninactivity_timeout_s = 60";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let child = sipp(
        &service,
        &scenario("session_refresh_missed.xml"),
        "1000",
        work.path(),
        &["-t", "t1", "-timeout", "30s"],
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(30)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    let took = started.elapsed();
    // UPDATE at 10 s, BYE 1.28 s later (the session would expire at 20 - 20/3 = 14 s).
    assert!(
        took >= Duration::from_millis(10_500) && took <= Duration::from_millis(13_500),
        "BYE after {took:?}"
    );
    assert!(
        service.log().contains("reason=\"peer unreachable\""),
        "{}",
        service.log()
    );
    let metrics = service.metrics();
    assert_eq!(
        metric(&metrics, "roundtable_sip_timeouts_total{kind=\"UPDATE\"}"),
        1.0,
        "{metrics}"
    );
}

#[test]
fn digest_challenge_and_success() {
    if !sipp_available() {
        return;
    }
    // Debian's SIPp answers MD5 challenges only; SHA-256 is covered with the test caller below.
    let toml = "[sip.auth]\nrequired = true\nrealm = \"roundtable\"\nalgorithms = [\"MD5\"]\n\
                users = [{ name = \"alice\", password = \"s3cret\" }]";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let child = sipp(
        &service,
        &scenario("digest_call.xml"),
        "1000",
        work.path(),
        &[],
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    let metrics = service.metrics();
    assert_eq!(
        metric(&metrics, "roundtable_sip_responses_total{code=\"401\"}"),
        1.0,
        "{metrics}"
    );
}

#[test]
fn digest_sha256_by_the_test_caller() {
    let toml = "[sip.auth]\nrequired = true\nrealm = \"roundtable\"\nusers = [{ name = \"alice\", password = \"s3cret\" }]";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let mut caller = Uac::new(service.sip, "1000");
    assert_eq!(caller.call(), 401);
    let challenges: Vec<String> = caller
        .last_response
        .clone()
        .unwrap()
        .0
        .lines()
        .filter_map(|l| l.strip_prefix("WWW-Authenticate: ").map(str::to_string))
        .collect();
    assert!(
        challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5"),
        "{challenges:?}"
    );
    let user = roundtable_sip::digest::User {
        name: "alice".into(),
        password: "s3cret".into(),
    };
    let uri = format!("sip:1000@{}", service.sip);
    let wrong = roundtable_sip::digest::User {
        name: "alice".into(),
        password: "nope".into(),
    };
    let mut intruder = Uac::new(service.sip, "1000");
    intruder.extra_headers = format!(
        "Authorization: {}\r\n",
        roundtable_sip::digest::answer(&challenges[0], "INVITE", &uri, &wrong, "c1").unwrap()
    );
    assert_eq!(intruder.call(), 401, "a wrong password is challenged again");
    let mut authed = Uac::new(service.sip, "1000");
    authed.extra_headers = format!(
        "Authorization: {}\r\n",
        roundtable_sip::digest::answer(&challenges[0], "INVITE", &uri, &user, "c2").unwrap()
    );
    assert_eq!(authed.call(), 200);
    assert_eq!(authed.hangup(), 200);
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_sip_refused_total{verdict=\"auth_failed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn bye_for_an_unknown_dialog_gets_481() {
    if !sipp_available() {
        return;
    }
    let service = Service::start(Options::default());
    let work = tempfile::tempdir().unwrap();
    let child = sipp(
        &service,
        &scenario("bye_unknown_dialog.xml"),
        "1000",
        work.path(),
        &[],
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(20)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    assert_eq!(
        metric(
            &service.metrics(),
            "roundtable_sip_responses_total{code=\"481\"}"
        ),
        1.0
    );
}
