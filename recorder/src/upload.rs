//! Streaming a recording to S3 while the call runs, and completing it after.
//!
//! Each object (`mix.wav`, `legs/7.wav`) is one multipart upload, started with the recording.
//! A part goes up as soon as `part_size` bytes of it are durable in the spool; the first part
//! carries the header as it was then (provisional). When the recording closes, the tail goes up
//! as the last part and part 1 is sent again, now with the final sizes in its header, before
//! the upload is completed: the finished object is a valid WAV at the cost of one part.
//!
//! What was uploaded is kept in `upload.json` next to the spool files (rewritten atomically
//! after every part), so a restart continues where the last run stopped. Every S3 call goes
//! through the shared [`Breaker`]; a failed call is retried with backoff until it succeeds or
//! the service shuts down ([`UploadError::Stopped`]; the next start resumes it).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use roundtable_storage::s3::S3Store;
use roundtable_storage::{ObjectKey, StorageError, write_atomically};
use serde::{Deserialize, Serialize};

use crate::breaker::Breaker;
use crate::spool::{Progress, SpoolAccount};

/// The upload state file in a recording's spool folder.
pub const UPLOAD_FILE: &str = "upload.json";

/// Why an upload did not finish.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The service is shutting down; the next start resumes the upload.
    #[error("stopped by shutdown; the upload resumes at the next start")]
    Stopped,
    /// A spool file could not be read.
    #[error("spool {path}: {source}")]
    Spool {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store refused something retrying cannot fix.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What was uploaded of one object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ObjectUpload {
    /// Its key.
    pub key: String,
    /// The multipart upload.
    pub upload_id: String,
    /// Parts sent: (number, ETag, bytes).
    pub parts: Vec<(i32, String, u64)>,
    /// Part 1 was sent again with the final header.
    pub sealed: bool,
    /// The upload was completed.
    pub completed: bool,
}

impl ObjectUpload {
    fn uploaded(&self) -> u64 {
        self.parts.iter().map(|p| p.2).sum()
    }
}

/// `upload.json`: every object's upload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UploadState {
    /// By object name (`mix.wav`).
    pub objects: BTreeMap<String, ObjectUpload>,
}

impl UploadState {
    /// Reads a folder's state (empty if there is none).
    pub fn load(dir: &Path) -> UploadState {
        std::fs::read(dir.join(UPLOAD_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<(), UploadError> {
        write_atomically(
            &dir.join(UPLOAD_FILE),
            &serde_json::to_vec(self).expect("upload state serializes"),
        )
        .map_err(UploadError::from)
    }

    /// Bytes already sent (their spool space is released).
    pub fn uploaded(&self) -> u64 {
        self.objects.values().map(ObjectUpload::uploaded).sum()
    }
}

/// Counters the service exports.
#[derive(Debug, Default)]
pub struct UploadCounters {
    /// S3 calls that failed (each retry counts).
    pub errors: AtomicU64,
    /// Bytes sent (parts, re-sent part 1 and manifests).
    pub bytes: AtomicU64,
}

/// Uploads recordings to one bucket.
#[derive(Debug)]
pub struct S3Uploader {
    store: Arc<S3Store>,
    breaker: Arc<Breaker>,
    stop: Arc<AtomicBool>,
    counters: Arc<UploadCounters>,
}

impl S3Uploader {
    /// An uploader to `store`; setting `stop` ends every retry loop.
    pub fn new(
        store: Arc<S3Store>,
        breaker: Arc<Breaker>,
        stop: Arc<AtomicBool>,
        counters: Arc<UploadCounters>,
    ) -> S3Uploader {
        S3Uploader {
            store,
            breaker,
            stop,
            counters,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S3Store> {
        &self.store
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Runs `op` until it succeeds, through the breaker, with backoff between tries.
    fn call<T>(
        &self,
        mut op: impl FnMut(&S3Store) -> Result<T, StorageError>,
    ) -> Result<T, UploadError> {
        let mut attempt = 0;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(UploadError::Stopped);
            }
            if let Err(until) = self.breaker.admit(Instant::now()) {
                self.sleep(until.saturating_duration_since(Instant::now()));
                continue;
            }
            match op(&self.store) {
                Ok(value) => {
                    self.breaker.record(true, Instant::now());
                    return Ok(value);
                }
                Err(error) => {
                    self.breaker.record(false, Instant::now());
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, attempt, "S3 call failed; retrying");
                    self.sleep(self.breaker.backoff(attempt));
                    attempt += 1;
                }
            }
        }
    }

    /// Sleeps up to `d`, waking early on shutdown.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Stores a small object (a manifest), retrying like every other call.
    pub(crate) fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), UploadError> {
        use roundtable_storage::ObjectStore;
        self.call(|s| s.put(key, bytes))?;
        self.counters
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Streams a running recording's full parts until it closes (or shutdown).
    pub(crate) fn stream(
        &self,
        dir: &Path,
        key_base: &str,
        progress: &Progress,
        account: &SpoolAccount,
    ) -> Result<(), UploadError> {
        let mut state = UploadState::load(dir);
        loop {
            let closed = progress.is_closed();
            for (name, durable) in progress.sizes() {
                self.send_parts(dir, key_base, &name, durable, false, &mut state, account)?;
            }
            if closed {
                return Ok(());
            }
            self.sleep(Duration::from_millis(500));
            if self.stop.load(Ordering::Relaxed) {
                return Err(UploadError::Stopped);
            }
        }
    }

    /// Sends whatever is left of a closed recording's objects and completes their uploads.
    pub(crate) fn complete(
        &self,
        dir: &Path,
        key_base: &str,
        names: &[String],
        account: &SpoolAccount,
    ) -> Result<(), UploadError> {
        let mut state = UploadState::load(dir);
        for name in names {
            let path = dir.join(name);
            let size = std::fs::metadata(&path)
                .map_err(|source| UploadError::Spool {
                    path: path.clone(),
                    source,
                })?
                .len();
            self.send_parts(dir, key_base, name, size, true, &mut state, account)?;
            let upload = state.objects.get(name).cloned().unwrap_or_default();
            let key = ObjectKey::new(upload.key.clone())?;
            if upload.completed {
                // A run stopped after completing it may not have set its retention.
                self.call(|s| s.apply_retention(&key))?;
                continue;
            }
            if !upload.sealed && upload.parts.len() > 1 {
                let first = upload.parts[0].2;
                let bytes = read_at(&path, 0, first)?;
                let etag =
                    self.call(|s| s.upload_part(&key, &upload.upload_id, 1, bytes.clone()))?;
                self.counters.bytes.fetch_add(first, Ordering::Relaxed);
                let entry = state.objects.get_mut(name).expect("present");
                entry.parts[0].1 = etag;
                entry.sealed = true;
                state.save(dir)?;
            }
            let upload = state.objects.get(name).cloned().unwrap_or_default();
            let parts: Vec<(i32, String)> =
                upload.parts.iter().map(|p| (p.0, p.1.clone())).collect();
            self.call(|s| s.complete_multipart(&key, &upload.upload_id, &parts))?;
            state.objects.get_mut(name).expect("present").completed = true;
            state.save(dir)?;
            self.call(|s| s.apply_retention(&key))?;
        }
        Ok(())
    }

    /// Sends the parts of `name` that are ready: full parts while it runs, everything at the end.
    // The object's place (folder, key, name), its progress and the spool's account are all
    // needed and belong to different owners.
    #[allow(clippy::too_many_arguments)]
    fn send_parts(
        &self,
        dir: &Path,
        key_base: &str,
        name: &str,
        durable: u64,
        last: bool,
        state: &mut UploadState,
        account: &SpoolAccount,
    ) -> Result<(), UploadError> {
        let part_size = self.store.config().part_size;
        if !state.objects.contains_key(name) {
            let key = ObjectKey::new(format!("{key_base}/{name}"))?;
            let upload_id = self.call(|s| s.create_multipart(&key))?;
            state.objects.insert(
                name.to_string(),
                ObjectUpload {
                    key: key.to_string(),
                    upload_id,
                    ..ObjectUpload::default()
                },
            );
            state.save(dir)?;
        }
        loop {
            let upload = &state.objects[name];
            if upload.completed {
                return Ok(());
            }
            let sent = upload.uploaded();
            let ready = durable.saturating_sub(sent);
            let size = if ready >= part_size {
                part_size
            } else if last && ready > 0 {
                ready
            } else {
                return Ok(());
            };
            let number = upload.parts.len() as i32 + 1;
            let (key, upload_id) = (
                ObjectKey::new(upload.key.clone())?,
                upload.upload_id.clone(),
            );
            let bytes = read_at(&dir.join(name), sent, size)?;
            let etag = self.call(|s| s.upload_part(&key, &upload_id, number, bytes.clone()))?;
            self.counters.bytes.fetch_add(size, Ordering::Relaxed);
            state
                .objects
                .get_mut(name)
                .expect("present")
                .parts
                .push((number, etag, size));
            state.save(dir)?;
            account.release(size);
        }
    }

    /// Aborts multipart uploads under `prefix` that the spool does not know of: those in the
    /// folder of a recording this spool holds (a run killed between starting the upload and
    /// noting it), and any that began more than a day ago (younger ones elsewhere may belong to
    /// another instance's running call).
    pub fn abort_orphans(
        &self,
        prefix: &str,
        inventory: &crate::archive::SpoolInventory,
    ) -> Result<usize, StorageError> {
        let uploads = self.store.list_multipart_uploads(prefix)?;
        let mut aborted = 0;
        for (key, upload_id, initiated) in uploads {
            let old = initiated
                .is_some_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(86_400));
            let ours = inventory
                .key_folders
                .iter()
                .any(|f| key.starts_with(f.as_str()));
            if inventory.upload_ids.contains(&upload_id) || !(old || ours) {
                continue;
            }
            if let Ok(k) = ObjectKey::new(key.clone()) {
                self.store.abort_multipart(&k, &upload_id)?;
                tracing::warn!(key, upload_id, "aborted an orphaned multipart upload");
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, UploadError> {
    let spool = |source| UploadError::Spool {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(spool)?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, offset).map_err(spool)?;
    Ok(bytes)
}
