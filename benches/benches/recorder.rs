//! Recorder costs: CPU per recorded leg in tracks mode (the recorder thread writing the mix and
//! one WAV per leg into the spool, fsyncing every second), and upload throughput to an S3
//! server on loopback (s3s-fs in-process) in the pipeline's 5 MiB parts. A plain `main` printing
//! a table; `cargo bench --bench recorder` runs it at full size, `cargo test` in a few frames.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use roundtable_media::frames::LegId;
use roundtable_media::frames::{FrameSource, LegFrame, MixFrame};
use roundtable_recorder::{Mode, Recording, Spec, SpoolAccount};
use roundtable_storage::ObjectKey;
use roundtable_storage::s3::{S3Config, S3Store};

/// CPU seconds this process used so far (user + system, from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// Records `legs` legs plus the mix for `frames` frames at `rate`, as fast as the recorder takes
/// them; returns (CPU s, wall s, bytes written).
fn record(rate: u32, legs: u64, frames: u64) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        room: "bench".into(),
        start: "20261122T000000Z".into(),
        start_unix_ms: 0,
        rate,
        mode: Mode::Both,
        spool: dir.path().into(),
        fsync_delay: std::time::Duration::ZERO,
    };
    let (tx, rx) = sync_channel(64);
    let n = rate as usize / 50;
    let samples: Box<[i16]> = (0..n)
        .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
        .collect();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let recording = Recording::start(spec, rx, Arc::new(SpoolAccount::new(u64::MAX))).unwrap();
    for tick in 0..frames {
        let legs = (0..legs)
            .map(|l| LegFrame {
                leg: LegId(l + 1),
                source: FrameSource::Received,
                samples: samples.clone(),
            })
            .collect();
        tx.send(MixFrame {
            tick,
            samples: samples.clone(),
            legs,
        })
        .unwrap();
    }
    drop(tx);
    let closed = recording.join().unwrap();
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    assert_eq!(closed.frames, frames);
    let bytes = (legs + 1) * (44 + frames * n as u64 * 2);
    (cpu, wall, bytes)
}

/// Uploads `parts` parts of 5 MiB as one multipart upload; returns (wall s, bytes).
fn upload(parts: i32) -> (f64, u64) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bench")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder =
        s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root.path()).unwrap());
    builder.set_auth(s3s::auth::SimpleAuth::from_single("bench", "bench-secret"));
    let service = builder.build();
    runtime.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    let store = S3Store::new(S3Config {
        endpoint: format!("http://{addr}"),
        region: "us-east-1".into(),
        bucket: "bench".into(),
        path_style: true,
        access_key: "bench".into(),
        secret_key: "bench-secret".into(),
        part_size: 5 << 20,
        ..S3Config::default()
    })
    .unwrap();
    let key = ObjectKey::new("recordings/bench/1/mix.wav").unwrap();
    let part: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let id = store.create_multipart(&key).unwrap();
    let etags: Vec<(i32, String)> = (1..=parts)
        .map(|n| (n, store.upload_part(&key, &id, n, part.clone()).unwrap()))
        .collect();
    store.complete_multipart(&key, &id, &etags).unwrap();
    let wall = started.elapsed().as_secs_f64();
    drop(store);
    runtime.shutdown_timeout(Duration::from_secs(1));
    (wall, parts as u64 * part.len() as u64)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = if full { 60 } else { 1 };
    println!("recorder, tracks mode ({seconds} s of audio per run, fsync every second)");
    println!("rate  | legs | CPU us per leg-second | wall x real time | MB/s to the spool");
    for rate in [16000u32, 48000] {
        for legs in [10u64, 100] {
            let (cpu, wall, bytes) = record(rate, legs, seconds * 50);
            let leg_seconds = (legs + 1) as f64 * seconds as f64;
            println!(
                "{rate:5} | {legs:4} | {:21.1} | {:16.1} | {:.1}",
                cpu * 1e6 / leg_seconds,
                seconds as f64 / wall,
                bytes as f64 / wall / 1e6
            );
        }
    }
    let parts = if full { 20 } else { 2 };
    let (wall, bytes) = upload(parts);
    println!(
        "upload to s3s-fs on loopback: {parts} parts of 5 MiB in {wall:.2} s = {:.1} MB/s",
        bytes as f64 / wall / 1e6
    );
}
