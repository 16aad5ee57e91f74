//! The probes tell the truth: `/live` turns 503 while a mixer thread stalls (the `[testing]`
//! hook) and back; `/health` and `/health/detailed` name every component, each also a metric.
//! (The spool alert's `/ready` is in `recording-tracks.rs`; a storage outage's `degraded` with
//! `/ready` still 200 is in `recording-s3.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::*;

fn status_of(service: &Service, path: &str) -> (u16, serde_json::Value) {
    let (status, text) = service.try_http("GET", path, "", None).unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[test]
fn live_turns_503_while_a_mixer_thread_stalls_and_back() {
    let service = Service::start(Options {
        toml: "[testing]\nmixer_stall_ms = 6000\n[audio]\nmixer_threads = 2\n".into(),
        ..Options::default()
    });
    assert!(
        service.log().contains("testing.mixer_stall_ms"),
        "the hook is warned about"
    );
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = status_of(&service, "/live");
        if status == 503 || started.elapsed() > Duration::from_secs(4) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("mixer threads [0]"),
        "{body}"
    );
    // The monitor's report says the same within a second or two.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, health) = status_of(&service, "/health");
        if status == 503 {
            assert_eq!(health["status"], "unhealthy");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never unhealthy: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&service, "/live").0 != 200 {
        assert!(Instant::now() < deadline, "never live again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        status_of(&service, "/ready").0,
        200,
        "readiness is not liveness"
    );
}

#[test]
fn health_names_every_component_with_its_value_and_metric() {
    // A test machine busy with other tests may tick late or run short of disk: those
    // thresholds are set out of reach, so that "ok" is about the components being there.
    let service = Service::start(Options {
        toml: "[health]\ntick_lateness_ms = 10000\ndisk_free_min_mib = 0\n".into(),
        ..Options::default()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (status, health) = status_of(&service, "/health/detailed");
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    let names: Vec<&str> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sip_listeners",
            "mixer_threads",
            "tick_lateness",
            "voice_processing",
            "storage",
            "spool",
            "disk_free",
            "descriptors",
            "uploads",
            "event_journal",
            "webhooks",
            "trunks"
        ]
    );
    let descriptors = &health["components"][7];
    assert!(
        descriptors["value"].as_f64().unwrap() > 5.0,
        "{descriptors}"
    );
    assert!(
        descriptors["threshold"].as_f64().unwrap() >= 1024.0,
        "{descriptors}"
    );
    for path in ["/health", "/healthz"] {
        let (status, body) = status_of(&service, path);
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ok")),
            "{body}"
        );
        assert_eq!(body["reasons"], serde_json::json!([]));
    }
    assert_eq!(status_of(&service, "/live").0, 200);
    let metrics = service.metrics();
    for name in names {
        assert!(
            metrics.contains(&format!("roundtable_health_component{{name=\"{name}\"}} 0")),
            "{name}: {metrics}"
        );
    }
    // The storage probe ran at start (local storage) and left nothing behind.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, health) = status_of(&service, "/health/detailed");
        if health["components"][4]["value"].is_number() {
            break;
        }
        assert!(Instant::now() < deadline, "storage never probed: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!service.storage().join("health/probe").exists());
}
