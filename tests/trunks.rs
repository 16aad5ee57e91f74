//! SIP trunks against a real registrar (Kamailio from Debian, on loopback, digest auth from its
//! config): the bridge registers (a 423 raises the interval), refreshes, and a call placed
//! through Kamailio to a DID reaches the room the dial plan maps it to. With Kamailio stopped,
//! the backoff and the breaker show in `GET /v1/trunks` and the metrics; restarted, the bridge
//! registers again; at shutdown it removes its binding.

mod common;
#[path = "common/kamailio.rs"]
mod kamailio;

use std::time::{Duration, Instant};

use common::*;
use kamailio::{Kamailio, kamailio_available};

/// The trunk's entry in `GET /v1/trunks`.
fn trunk(service: &Service) -> serde_json::Value {
    let (status, body) = service.http("GET", "/v1/trunks", "");
    assert_eq!(status, 200, "{body}");
    body["trunks"][0].clone()
}

/// Waits (at most `within`) until `check` holds for the trunk's entry; returns it.
fn wait_trunk(
    service: &Service,
    within: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let entry = trunk(service);
        if check(&entry) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "the trunk never got {what}: {entry}\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the metric line starting `series`.
fn metric(service: &Service, series: &str) -> Option<f64> {
    service.metrics().lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[test]
fn a_trunk_registers_refreshes_routes_its_did_and_recovers_from_an_outage() {
    if !kamailio_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut registrar = Kamailio::start(
        "registrar.cfg",
        port,
        &[
            ("USERNAME", "roundtable".into()),
            ("PASSWORD", "s3cret".into()),
            ("MIN_EXPIRES", "20".into()),
        ],
        dir.path(),
    );
    // T1 of 50 ms: a REGISTER nobody answers times out (64*T1) in 3.2 s.
    let toml = format!(
        "[sip]\ntimer_t1_ms = 50\n\
         [[trunks]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{port}\"\nusername = \"roundtable\"\n\
         password = \"s3cret\"\nexpires_s = 10\nretry_min_s = 1\nretry_max_s = 2\n\
         breaker_failures = 2\nbreaker_open_s = 2\n\
         [[dialplan]]\nmatch = \"^555(\\\\d+)$\"\naction = \"room\"\n"
    );
    let service = Service::start(Options {
        toml,
        ..Options::default()
    });

    // Registered: asked 10 s, refused with 423 (Min-Expires 20), asked 20 s, each time
    // answering Kamailio's digest challenge.
    let entry = wait_trunk(&service, Duration::from_secs(10), "registered", |t| {
        t["registered"] == true
    });
    assert!(entry["expires_at"].is_string(), "{entry}");
    assert_eq!(entry["breaker"], "closed");
    let (_, events) = service.http("GET", "/v1/events", "");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "trunk_registration"
                && e["trunk"] == "carrier"
                && e["registered"] == true),
        "a trunk_registration event: {events}"
    );
    let log = registrar.log();
    assert!(
        log.contains("expires=10 auth=roundtable"),
        "the first authenticated REGISTER asks 10 s:\n{log}"
    );
    assert!(
        log.contains("expires=20 auth=roundtable"),
        "after the 423 it asks Min-Expires:\n{log}"
    );
    assert!(!log.contains("s3cret"), "no password on the wire");
    assert!(
        !service.log().contains("s3cret"),
        "credentials are never logged"
    );
    assert_eq!(
        metric(&service, "roundtable_trunk_registered{trunk=\"carrier\"}"),
        Some(1.0)
    );
    // Refreshed at 40-60 % of the 20 s granted.
    assert!(
        registrar.wait_for_log("expires=20 auth=roundtable", 2, Duration::from_secs(15)),
        "no refresh:\n{}",
        registrar.log()
    );

    // A call to the DID through Kamailio lands in room 1000 (dial plan ^555(\d+)$).
    let mut caller = Uac::new(format!("127.0.0.1:{port}").parse().unwrap(), "5551000");
    assert_eq!(caller.call(), 200, "{}", registrar.log());
    service.wait_participants("1000", 1);
    assert_eq!(caller.hangup(), 200);

    // Kamailio gone: refreshes time out, back off, and open the breaker.
    registrar.stop();
    let entry = wait_trunk(&service, Duration::from_secs(40), "an open breaker", |t| {
        t["breaker"] == "open"
    });
    assert!(entry["failures"].as_u64().unwrap() >= 2, "{entry}");
    let (_, events) = service.http("GET", "/v1/events", "");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "trunk_registration" && e["breaker"] == "open"),
        "{events}"
    );
    assert_eq!(entry["last_error"], "408 Request Timeout");
    assert_eq!(
        metric(
            &service,
            "roundtable_trunk_breaker_state{trunk=\"carrier\"}"
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &service,
            "roundtable_trunk_register_failures_total{reason=\"408\",trunk=\"carrier\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{}",
        service.metrics()
    );

    // Back: the breaker's probe registers again and closes it.
    registrar.restart();
    let entry = wait_trunk(&service, Duration::from_secs(20), "registered again", |t| {
        t["registered"] == true && t["breaker"] == "closed" && t["failures"] == 0
    });
    assert_eq!(entry["last_error"], serde_json::Value::Null);
    assert_eq!(
        metric(&service, "roundtable_trunk_registered{trunk=\"carrier\"}"),
        Some(1.0)
    );

    // At shutdown the binding is removed: a REGISTER with Expires: 0.
    let mut service = service;
    assert!(service.terminate(Duration::from_secs(15)).is_some());
    assert!(
        registrar.wait_for_log("expires=0 auth=roundtable", 1, Duration::from_secs(5)),
        "no unREGISTER at shutdown:\n{}",
        registrar.log()
    );
}
