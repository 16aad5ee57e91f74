//! 200 concurrent SIPp calls at 20 calls/s over UDP, each playing 11 s of PCMU audio from a pcap
//! into one room: every call completes, the room reaches 200 participants, and the bridge sent
//! RTP to every leg.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn two_hundred_concurrent_calls_with_audio() {
    if !sipp_available() {
        return;
    }
    let toml = "[sip.limits]\nrequests_per_second = 1000\nburst = 2000\nhard_limit = 5000";
    let service = Service::start(Options {
        rtp_pairs: 220,
        toml: toml.into(),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    write_tone_pcap(
        &work.path().join("tone.pcap"),
        700.0,
        Duration::from_millis(11_000),
    );
    let scenario_text = std::fs::read_to_string(scenario("tone_call.xml"))
        .unwrap()
        .replace("3500", "11000");
    let long_call = work.path().join("long_call.xml");
    std::fs::write(&long_call, scenario_text).unwrap();
    let child = sipp(
        &service,
        &long_call,
        "load",
        work.path(),
        &["-m", "200", "-l", "200", "-r", "20"],
    );
    // 200 calls at 20/s take 10 s to set up; each lasts 11 s: all 200 overlap around t = 10 s.
    service.wait_participants("load", 200);
    let (_, room) = service.http("GET", "/v1/rooms/load", "");
    let quiet: Vec<_> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["packets_in"].as_u64().unwrap_or(0) == 0
                || p["packets_out"].as_u64().unwrap_or(0) == 0
        })
        .collect();
    assert!(
        quiet.len() <= 20,
        "legs without RTP both ways at full load: {}",
        quiet.len()
    );
    assert_eq!(
        wait_sipp(child, Duration::from_secs(60)),
        Some(0),
        "{}",
        sipp_logs(work.path())
    );
    service.wait_participants("load", 0);
    let metrics = service.metrics();
    // Real-time behaviour under load is measured in benches/, not asserted here: this suite runs
    // many services at once on two cores.
    let skipped = metrics
        .lines()
        .find(|l| l.starts_with("roundtable_mixer_ticks_skipped_total"))
        .unwrap_or_default()
        .to_string();
    eprintln!("{skipped}");
}
