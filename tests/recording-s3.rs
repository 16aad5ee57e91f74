//! Compliance recording to S3 (s3s-fs, in-process on loopback, SigV4 checked), end to end:
//! parts go up while the call runs and the finished object is a valid WAV of the call's
//! length; a 30 s outage mid-call loses nothing; a `kill -9` mid-recording is finished by the
//! next start; a shutdown during an outage closes the recording in the spool and the next start
//! uploads it; and `roundtable recordings verify` passes against the bucket.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::time::{Duration, Instant};

use common::*;
use roundtable_storage::ObjectStore;
use roundtable_storage::s3::{S3Config, S3Store};
use s3::S3Server;

/// A client of the test server, to look at what the service uploaded.
fn client(server: &S3Server) -> S3Store {
    S3Store::new(S3Config {
        endpoint: format!("http://{}", server.addr),
        region: "us-east-1".into(),
        bucket: s3::BUCKET.into(),
        path_style: true,
        access_key: s3::ACCESS_KEY.into(),
        secret_key: s3::SECRET_KEY.into(),
        part_size: 5 << 20,
        ..S3Config::default()
    })
    .unwrap()
}

/// The recording's spool folder (while it runs) and its upload state.
fn upload_state(service: &Service, room: &str) -> Option<(String, serde_json::Value)> {
    let room_dir = service.storage().join("spool/recordings").join(room);
    let start = std::fs::read_dir(&room_dir)
        .ok()?
        .flatten()
        .next()?
        .file_name()
        .into_string()
        .ok()?;
    let text = std::fs::read_to_string(room_dir.join(&start).join("upload.json")).ok()?;
    Some((format!("{room}/{start}"), serde_json::from_str(&text).ok()?))
}

/// The 440 Hz level of every second of `samples` (at `rate`).
fn levels_per_second(samples: &[i16], rate: u32) -> Vec<f64> {
    samples
        .chunks(rate as usize)
        .map(|c| tone_db_at(c, 440.0, f64::from(rate)))
        .collect()
}

fn service_on(server: &S3Server, extra: &str) -> Service {
    let toml = format!("{}[recording]\nauto_start = true\n{extra}", server.toml(5));
    Service::start(Options {
        toml,
        ..Options::default()
    })
}

#[test]
fn parts_stream_during_a_70_s_call_and_the_object_is_a_valid_wav() {
    let bucket = tempfile::tempdir().unwrap();
    let server = S3Server::start(bucket.path());
    let service = service_on(&server, "[audio]\nrate = 48000");
    let mut uac = Uac::new(service.sip, "4800");
    assert_eq!(uac.call(), 200);
    let began = Instant::now();
    let media = uac.start_media(440.0, Duration::from_secs(70));
    // 5 MiB of 48 kHz mix is 54.6 s: the first part is on the server well before the end.
    std::thread::sleep(Duration::from_secs(62));
    let (id, state) = upload_state(&service, "4800").expect("an upload in the spool");
    let object = &state["objects"]["mix.wav"];
    let key = roundtable_storage::ObjectKey::new(object["key"].as_str().unwrap()).unwrap();
    let parts = client(&server)
        .list_parts(&key, object["upload_id"].as_str().unwrap())
        .unwrap();
    assert!(
        parts.iter().any(|p| p.0 == 1 && p.2 == 5 << 20),
        "part 1 (5 MiB) uploaded mid-call: {parts:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(70),
        "checked while the call runs"
    );
    let _ = media.finish();
    assert_eq!(uac.hangup(), 200);
    let call = began.elapsed();

    let manifest = service.finished_recording("4800", Duration::from_secs(30));
    assert_eq!(manifest["id"].as_str(), Some(id.as_str()));
    let mix = server.object_path(&format!("recordings/{id}/mix.wav"));
    let (spec, samples) = read_wav(&mix);
    assert_eq!(spec.sample_rate, 48000);
    let seconds = samples.len() as f64 / 48000.0;
    assert!(
        (seconds - call.as_secs_f64()).abs() < 0.5,
        "object holds {seconds:.2} s of a {call:?} call"
    );
    assert_eq!(
        std::fs::metadata(&mix).unwrap().len(),
        44 + samples.len() as u64 * 2,
        "the header's sizes match the object"
    );
    assert_eq!(
        manifest["objects"][0]["size"].as_u64(),
        Some(44 + samples.len() as u64 * 2)
    );
    // The tone is there from start to end.
    let levels = levels_per_second(&samples, 48000);
    assert!(
        levels[1..levels.len() - 1].iter().all(|l| *l > 40.0),
        "{levels:?}"
    );
    assert!(
        !service
            .storage()
            .join("spool/recordings/4800")
            .join(id.split('/').nth(1).unwrap())
            .exists(),
        "spool cleaned"
    );
    let (code, out, err) = service.cli(&["recordings", "verify", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = service.cli(&[
        "recordings",
        "get",
        &id,
        "--out",
        bucket.path().join("download").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(bucket.path().join("download").join(&id).join("mix.wav")).unwrap(),
        std::fs::read(&mix).unwrap()
    );
}

#[test]
fn a_30_s_outage_mid_call_loses_nothing() {
    let bucket = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(bucket.path());
    let service = service_on(
        &server,
        "[audio]\nrate = 48000\n[health]\nstorage_probe_s = 5",
    );
    let mut uac = Uac::new(service.sip, "4801");
    assert_eq!(uac.call(), 200);
    let began = Instant::now();
    let media = uac.start_media(440.0, Duration::from_secs(70));
    // Down from 30 s to 60 s: the first part (ready at about 55 s) has to wait.
    std::thread::sleep(Duration::from_secs(30));
    server.stop();
    std::thread::sleep(Duration::from_secs(20));
    // The storage probe has failed: degraded, storage named, and still ready for calls.
    let (status, health) = service.http("GET", "/health/detailed", "");
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("degraded")),
        "{health}"
    );
    let storage = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "storage")
        .cloned()
        .unwrap();
    assert_eq!(storage["status"], "degraded", "{storage}");
    assert_eq!(
        service.http("GET", "/ready", "").0,
        200,
        "storage down is not unready"
    );
    assert!(
        service.http("GET", "/health", "").1["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("storage: "))
    );
    std::thread::sleep(Duration::from_secs(10));
    server.resume();
    let _ = media.finish();
    assert_eq!(uac.hangup(), 200);
    let call = began.elapsed();
    let manifest = service.finished_recording("4801", Duration::from_secs(60));
    let ledger = manifest["ledger"].as_array().unwrap();
    assert!(
        !ledger
            .iter()
            .any(|e| e["event"] == "gap" || e["event"] == "lost"),
        "{ledger:?}"
    );
    let id = manifest["id"].as_str().unwrap();
    let (_, samples) = read_wav(&server.object_path(&format!("recordings/{id}/mix.wav")));
    let seconds = samples.len() as f64 / 48000.0;
    assert!(
        (seconds - call.as_secs_f64()).abs() < 0.5,
        "{seconds:.2} s of a {call:?} call"
    );
    let levels = levels_per_second(&samples, 48000);
    assert!(
        levels[1..levels.len() - 1].iter().all(|l| *l > 40.0),
        "no gap: {levels:?}"
    );
    // The probe succeeds again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while service.http("GET", "/health/detailed", "").1["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "storage" && c["status"] != "ok")
    {
        assert!(Instant::now() < deadline, "storage never healthy again");
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_health_component{name=\"storage\"} 0"),
        "{metrics}"
    );
    let errors: f64 = metrics
        .lines()
        .find(|l| l.starts_with("roundtable_upload_errors_total"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    assert!(errors > 0.0, "the outage was seen: {metrics}");
    assert!(
        metrics.contains("roundtable_storage_breaker_state 0"),
        "breaker closed again"
    );
    let (code, out, err) = service.cli(&["recordings", "verify", id]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn kill_9_mid_recording_is_uploaded_at_the_next_start() {
    let bucket = tempfile::tempdir().unwrap();
    let server = S3Server::start(bucket.path());
    let mut service = service_on(&server, "[recording]\nmode = \"both\"");
    let mut uac = Uac::new(service.sip, "4802");
    assert_eq!(uac.call(), 200);
    let media = uac.start_media(440.0, Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(4500));
    service.kill9();
    drop(media);
    service.start_again();
    let manifest = service.finished_recording("4802", Duration::from_secs(60));
    let duration = manifest["duration_ms"].as_u64().unwrap();
    assert!(
        (3400..=4600).contains(&duration),
        "recovered {duration} ms of 4.5 s"
    );
    let lost = manifest["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "lost")
        .expect("loss in the ledger");
    assert_eq!(lost["at_most_ms"].as_u64(), Some(1000));
    let id = manifest["id"].as_str().unwrap();
    for object in manifest["objects"].as_array().unwrap() {
        let (_, samples) = read_wav(&server.object_path(object["key"].as_str().unwrap()));
        assert_eq!(samples.len() as u64, duration * 16, "{object}");
    }
    let (code, out, err) = service.cli(&["recordings", "verify", id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        client(&server)
            .list(&format!("recordings/{id}/"))
            .unwrap()
            .len()
            >= 3,
        "mix, one track, manifest"
    );
}

#[test]
fn shutdown_during_an_outage_closes_the_recording_and_the_next_start_uploads_it() {
    let bucket = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(bucket.path());
    let mut service = service_on(&server, "");
    let mut uac = Uac::new(service.sip, "4803");
    assert_eq!(uac.call(), 200);
    let media = uac.start_media(440.0, Duration::from_secs(6));
    std::thread::sleep(Duration::from_secs(2));
    server.stop();
    std::thread::sleep(Duration::from_secs(1));
    // SIGTERM: the call gets BYE, the recording closes in the spool, the upload gives up.
    let status = service.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit during the outage\n{}",
        service.log()
    );
    drop(media);
    assert!(
        service.log().contains("resumes at the next start"),
        "{}",
        service.log()
    );
    let ledger = files_under(&service.storage().join("spool/recordings/4803"))
        .into_iter()
        .find(|p| p.ends_with("ledger.jsonl"))
        .expect("spooled");
    assert!(
        std::fs::read_to_string(ledger)
            .unwrap()
            .contains("\"stopped\""),
        "ledger closed"
    );
    server.resume();
    service.start_again();
    let manifest = service.finished_recording("4803", Duration::from_secs(60));
    let duration = manifest["duration_ms"].as_u64().unwrap();
    assert!(
        (2500..=4000).contains(&duration),
        "{duration} ms recorded before the shutdown"
    );
    assert!(
        !manifest["ledger"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "lost" || e["event"] == "gap"),
        "{manifest}"
    );
    let (code, out, err) = service.cli(&["recordings", "verify", manifest["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `GET /v1/recordings` pages through the bucket: `start-after` and `max-keys` against a real
/// S3 server, and the API's `limit` / `after` / `next` on a service recording to it.
#[test]
fn recordings_are_listed_a_page_at_a_time() {
    let bucket = tempfile::tempdir().unwrap();
    let server = S3Server::start(bucket.path());
    let store = client(&server);
    let ids = [
        "4900/20261122T090000Z",
        "4900/20261122T100000Z",
        "4901/20261122T090000Z",
    ];
    for id in ids {
        for object in ["legs/1.wav", "manifest.json", "mix.wav"] {
            store
                .put(
                    &roundtable_storage::ObjectKey::new(format!("recordings/{id}/{object}"))
                        .unwrap(),
                    b"{}",
                )
                .unwrap();
        }
    }
    let page = store
        .list_page(
            "recordings/",
            Some("recordings/4900/20261122T090000Z/manifest.json"),
            2,
        )
        .unwrap();
    let keys: Vec<String> = page.objects.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "recordings/4900/20261122T090000Z/mix.wav",
            "recordings/4900/20261122T100000Z/legs/1.wav"
        ]
    );
    assert!(page.more);
    assert_eq!(store.list("recordings/").unwrap().len(), 9);

    let service = service_on(&server, "");
    let (status, first) = service.http("GET", "/v1/recordings?limit=2", "");
    assert_eq!(status, 200, "{first}");
    let listed: Vec<&str> = first["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids[..2]);
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = service.http("GET", &format!("/v1/recordings?limit=2&after={next}"), "");
    assert_eq!(second["recordings"][0]["id"].as_str(), Some(ids[2]));
    assert!(second["next"].is_null(), "{second}");
    let (_, room) = service.http("GET", "/v1/recordings?room=4900&since=20261122T093000Z", "");
    assert_eq!(room["recordings"].as_array().unwrap().len(), 1, "{room}");
    assert_eq!(service.http("GET", "/v1/recordings?limit=0", "").0, 400);
}
