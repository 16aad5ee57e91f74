//! SIGTERM: new INVITEs get 503 and /ready turns 503 while the drain runs; after
//! `shutdown.drain_s` the remaining legs get BYE, the recording is complete on disk, and the
//! process exits 0 within drain_s + 10 s.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigterm_drains_then_hangs_up_and_finalizes_the_recording() {
    let mut service = Service::start(Options {
        toml: "[recording]\nauto_start = true\n[shutdown]\ndrain_s = 2".into(),
        ..Options::default()
    });
    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    let media = a.start_media(440.0, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1000));

    let pid = service.pid();
    let started = Instant::now();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        service.http("GET", "/ready", "").0,
        503,
        "not ready while draining"
    );
    assert_eq!(
        service.http("GET", "/health", "").0,
        200,
        "still alive while draining"
    );
    let mut late = Uac::new(service.sip, "1000");
    assert_eq!(late.call(), 503, "new calls refused while draining");

    assert!(
        a.expect_bye(Duration::from_secs(6)),
        "the remaining leg receives BYE\n{}",
        service.log()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "BYE came only after drain_s"
    );
    let status = service
        .terminate(Duration::from_secs(12))
        .expect("exits within drain_s + 10 s");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        service.log()
    );
    let _ = media.finish();

    let wavs: Vec<_> = files_under(&service.storage())
        .into_iter()
        .filter(|p| p.ends_with("mix.wav"))
        .collect();
    assert_eq!(wavs.len(), 1);
    let (spec, samples) = read_wav(&wavs[0]);
    let seconds = samples.len() as f64 / f64::from(spec.sample_rate);
    assert!(
        (2.5..5.0).contains(&seconds),
        "recording of {seconds} s covers the call"
    );
}
