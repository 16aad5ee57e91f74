//! The recording archive as configured: the store (a local folder or S3), the spool, the
//! signing key and the upload pipeline's shared state; plus the start-up pass that finishes
//! what the last run left in the spool, and the metrics sampler.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use roundtable_recorder::breaker::Breaker;
use roundtable_recorder::manifest::{Retention, SignatureError};
use roundtable_recorder::upload::{S3Uploader, UploadCounters};
use roundtable_recorder::{Archive, Sealed, Signer, SpoolAccount, Target};
use roundtable_storage::s3::S3Store;
use roundtable_storage::{LocalStore, ObjectStore, StorageError};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::StorageMetrics;

/// Why the archive could not be opened.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The signing key is unusable.
    #[error("recording.signing_key: {0}")]
    Key(#[from] SignatureError),
    /// The store is unusable.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// The archive and the handles the service keeps on it.
pub struct Storage {
    /// Starts and stores recordings.
    pub archive: Arc<Archive>,
    /// Set at shutdown: uploads stop retrying (they resume at the next start).
    pub stop: Arc<AtomicBool>,
    /// Upload counters.
    pub counters: Arc<UploadCounters>,
}

/// The configured store and its key prefix, for reading recordings back (the CLI).
pub fn open_store(config: &Config) -> Result<(Arc<dyn ObjectStore>, String), StorageError> {
    Ok(match &config.storage.s3 {
        None => (
            Arc::new(LocalStore::new(&config.storage.path)),
            String::new(),
        ),
        Some(s3) => (Arc::new(S3Store::new(s3.clone())?), s3.prefix.clone()),
    })
}

/// Opens the configured archive. The signing key is generated when missing only if
/// `create_key` (the service does; the CLI does not).
pub fn open(config: &Config, create_key: bool) -> Result<Storage, ArchiveError> {
    let signer = Arc::new(Signer::load(&config.recording.signing_key, create_key)?);
    let account = Arc::new(SpoolAccount::new(config.storage.spool_quota));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(UploadCounters::default());
    let archive = match &config.storage.s3 {
        None => {
            let store = Arc::new(LocalStore::new(&config.storage.path));
            let retention = Retention {
                backend: "local".into(),
                ..Retention::default()
            };
            Archive::new(
                store,
                Target::Local,
                config.storage.path.clone(),
                String::new(),
                signer,
                retention,
                account,
            )
        }
        Some(s3) => {
            let store = Arc::new(S3Store::new(s3.clone())?);
            let retention = Retention {
                backend: "s3".into(),
                sse: s3.sse.clone(),
                object_lock_mode: s3.object_lock_mode.clone(),
                retention_days: s3.retention_days,
            };
            let uploader = S3Uploader::new(
                store.clone(),
                Arc::new(Breaker::default()),
                stop.clone(),
                counters.clone(),
            );
            let spool: PathBuf = config.storage.path.join("spool");
            Archive::new(
                store,
                Target::S3(uploader),
                spool,
                s3.prefix.clone(),
                signer,
                retention,
                account,
            )
        }
    };
    Ok(Storage {
        archive: Arc::new(archive.with_fsync_delay(config.testing.spool_fsync_delay)),
        stop,
        counters,
    })
}

/// The events of a recording stored for good: `recording_uploaded` (its audio objects are in
/// the store), then `recording_sealed` (its signed manifest is: its key, size and SHA-256).
pub fn sealed_events(sealed: &Sealed) -> [(&'static str, serde_json::Value); 2] {
    let manifest = &sealed.manifest;
    [
        (
            "recording_uploaded",
            serde_json::json!({
                "recording": manifest.id,
                "objects": manifest.objects.len(),
                "bytes": manifest.objects.iter().map(|o| o.size).sum::<u64>(),
            }),
        ),
        (
            "recording_sealed",
            serde_json::json!({
                "recording": manifest.id,
                "duration_ms": manifest.duration_ms,
                "manifest": {
                    "key": sealed.object.key,
                    "size": sealed.object.size,
                    "sha256": sealed.object.sha256,
                },
            }),
        ),
    ]
}

/// Finishes the recordings the last run left in the spool (closing crashed ones at their last
/// durable frame; each stored one is announced as [`sealed_events`] say) and, with S3, aborts
/// day-old multipart uploads nobody knows of. Blocking.
pub fn recover(archive: &Archive, events: &crate::events::EventLog) {
    let started = Instant::now();
    let inventory = archive.account_existing();
    for (dir, result) in archive.recover() {
        match result {
            Ok(sealed) => {
                let manifest = &sealed.manifest;
                info!(recording = %manifest.id, duration_ms = manifest.duration_ms, "recovered recording stored");
                for (kind, fields) in sealed_events(&sealed) {
                    crate::events::push_json(
                        events,
                        kind,
                        &manifest.room,
                        std::time::SystemTime::now(),
                        fields,
                    );
                }
            }
            Err(error) => {
                error!(dir = %dir.display(), %error, "recovered recording not stored; retried at the next start")
            }
        }
    }
    if let Some(uploader) = archive.uploader() {
        match uploader.abort_orphans(&format!("{}recordings/", archive.prefix()), &inventory) {
            Ok(0) => {}
            Ok(n) => warn!(aborted = n, "aborted orphaned multipart uploads"),
            Err(error) => {
                info!(%error, "orphaned multipart uploads not checked (the server does not list uploads)")
            }
        }
    }
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recording recovery done"
    );
}

/// Copies the archive's state into `metrics` once a second, logging when the spool crosses
/// 80 % of its quota; ends when `stop` is set.
pub fn sample_metrics(storage: &Storage, metrics: StorageMetrics) {
    let (archive, counters) = (storage.archive.clone(), storage.counters.clone());
    let stop = storage.stop.clone();
    let spawned = std::thread::Builder::new()
        .name("storage-metrics".into())
        .spawn(move || {
            let account = archive.account();
            metrics.spool_quota_bytes.set(account.quota() as i64);
            let mut alerting = false;
            while !stop.load(Ordering::Relaxed) {
                metrics.spool_bytes.set(account.used() as i64);
                mirror(&metrics.spool_written_bytes, account.written());
                mirror(&metrics.spool_write_failures, account.failed_writes());
                mirror(
                    &metrics.upload_errors,
                    counters.errors.load(Ordering::Relaxed),
                );
                mirror(
                    &metrics.upload_bytes,
                    counters.bytes.load(Ordering::Relaxed),
                );
                let alert = !account.accepts_new();
                if alert != alerting {
                    alerting = alert;
                    if alert {
                        error!(
                            used = account.used(),
                            quota = account.quota(),
                            "recording spool over 80% of its quota: new recordings are refused"
                        );
                    } else {
                        info!(
                            used = account.used(),
                            "recording spool back under 80% of its quota"
                        );
                    }
                }
                metrics.spool_alert.set(i64::from(alert));
                if let Some(uploader) = archive.uploader() {
                    metrics
                        .breaker_state
                        .set(uploader.breaker().state(Instant::now()).value());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    if let Err(error) = spawned {
        warn!(%error, "storage metrics thread not started");
    }
}

/// Brings a Prometheus counter up to a running total kept elsewhere.
fn mirror(counter: &prometheus::IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Checks the store answers (startup and `check-config`).
pub fn check(storage: &Storage) -> Result<(), StorageError> {
    storage.archive.store().check_writable()
}
