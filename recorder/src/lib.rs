//! Roundtable's compliance recorder.
//!
//! A recording runs on its own thread ([`Recording`]), fed by the mixer through a bounded
//! channel of frames (the room's mix and, for per-leg tracks, every leg's input) and by the
//! bridge with what happens in the room ([`Control`]). It writes WAV tracks and a ledger into
//! the spool (`storage.path`), fsyncing them once a second, so a crash loses at most the last
//! second. When it closes, the [`Archive`] stores the objects with a signed [`Manifest`]; at
//! start-up the archive finishes whatever a crash left open.
//!
//! Every track of a recording has the same length: the recording's timeline starts at its
//! first frame and runs at 20 ms per mixer tick; a leg's track is silent before it joined,
//! after it left, while it was muted and while the recording was paused, and frames the mixer
//! could not deliver are silence in every track, marked in the ledger.
#![deny(missing_docs)]

pub mod archive;
pub mod breaker;
pub mod ledger;
pub mod manifest;
pub mod spec;
pub mod spool;
pub mod time;
mod track;
pub mod upload;
pub mod wav;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use roundtable_media::frames::MixFrame;
use roundtable_storage::{LIST_PAGE_MAX, ObjectKey, ObjectStore, StorageError};
use thiserror::Error;

pub use archive::{Archive, MANIFEST, Sealed, Target};
pub use manifest::{Manifest, Signer};
pub use spec::{Mode, Spec};
pub use spool::{Progress, SpoolAccount};
pub use writer::{CHECKPOINT_FRAMES, Closed, Control};

/// Why recording, archiving or verifying failed.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A spool file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A recording with this name exists already.
    #[error("recording {0} exists")]
    Exists(String),
    /// A ledger cannot be read back.
    #[error("ledger {path}: {reason}")]
    Ledger {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest cannot be read or its signature fails.
    #[error("manifest {key}: {reason}")]
    Manifest {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An object differs from its manifest.
    #[error("{key}: {mismatch}")]
    Mismatch {
        /// The object.
        key: String,
        /// How.
        mismatch: manifest::Mismatch,
    },
    /// Uploading did not finish.
    #[error(transparent)]
    Upload(#[from] upload::UploadError),
    /// The recorder thread could not start or panicked.
    #[error("recorder thread failed")]
    Thread,
}

impl RecordError {
    fn io(path: &Path, source: std::io::Error) -> RecordError {
        RecordError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A running recording; join it after the mixer dropped its end of the frame channel.
#[derive(Debug)]
pub struct Recording {
    id: String,
    controls: Sender<Control>,
    progress: Arc<Progress>,
    thread: JoinHandle<Closed>,
    uploader: Option<JoinHandle<Result<(), upload::UploadError>>>,
}

impl Recording {
    /// Creates the recording's spool folder, ledger and tracks, and starts the thread that
    /// writes `frames` into them. Fails if the folder exists ([`RecordError::Exists`]).
    pub fn start(
        spec: Spec,
        frames: Receiver<MixFrame>,
        account: Arc<SpoolAccount>,
    ) -> Result<Recording, RecordError> {
        let id = spec.id();
        let dir = spec.dir();
        let progress = Arc::new(Progress::default());
        let writer = writer::open(spec, account, progress.clone()).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => RecordError::Exists(id.clone()),
            _ => RecordError::io(&dir, e),
        })?;
        let (controls, control_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(frames, control_rx))
            .map_err(|_| RecordError::Thread)?;
        Ok(Recording {
            id,
            controls,
            progress,
            thread,
            uploader: None,
        })
    }

    /// `<room>/<start>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Tells the recording what happened in the room (it lands in the ledger, and pauses and
    /// resumes the audio).
    pub fn control(&self, control: Control) {
        let _ = self.controls.send(control);
    }

    /// How far its objects are durable in the spool.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    fn set_uploader(&mut self, thread: JoinHandle<Result<(), upload::UploadError>>) {
        self.uploader = Some(thread);
    }

    /// Waits for the thread to close the files (the mixer must have dropped its sender), and
    /// for the parts streaming to the store while it ran.
    pub fn join(self) -> Result<Closed, RecordError> {
        let closed = self.thread.join().map_err(|_| RecordError::Thread)?;
        if let Some(uploader) = self.uploader {
            uploader.join().map_err(|_| RecordError::Thread)??;
        }
        Ok(closed)
    }
}

/// The manifest of recording `id` (`<room>/<start>`) in `store`, signature checked (against
/// `trusted`, a hex public key, when given).
pub fn read_manifest(
    store: &dyn ObjectStore,
    prefix: &str,
    id: &str,
    trusted: Option<&str>,
) -> Result<Manifest, RecordError> {
    let key = ObjectKey::new(format!("{prefix}recordings/{id}/{MANIFEST}"))?;
    let manifest_error = |reason: String| RecordError::Manifest {
        key: key.to_string(),
        reason,
    };
    let mut reader = store.open(&key)?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut reader.body, &mut text)
        .map_err(|e| manifest_error(e.to_string()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| manifest_error(e.to_string()))?;
    manifest
        .verify_signature(trusted)
        .map_err(|e| manifest_error(e.to_string()))?;
    // The signature covers what the fields say; the bytes must also be exactly what was
    // written, so that nothing (an extra field in a ledger entry) was slipped in around them.
    if serde_json::to_vec_pretty(&manifest).ok().as_deref() != Some(text.as_slice()) {
        return Err(manifest_error(
            "the manifest was altered (its bytes are not the signed document's)".into(),
        ));
    }
    Ok(manifest)
}

/// Re-reads every object of a manifest and checks its size, hash and chain; `progress` is told
/// the bytes read so far. Returns the first mismatch.
pub fn verify_objects(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    mut progress: impl FnMut(u64),
) -> Result<(), RecordError> {
    let mut total = 0;
    for record in &manifest.objects {
        let key = ObjectKey::new(record.key.clone())?;
        let reader = store.open(&key)?;
        let mut counting = CountingReader {
            inner: reader.body,
            count: &mut |n| {
                total += n;
                progress(total);
            },
        };
        let found =
            manifest::Fingerprint::of_reader(record.key.clone(), &mut counting).map_err(|e| {
                RecordError::Manifest {
                    key: record.key.clone(),
                    reason: format!("reading failed: {e}"),
                }
            })?;
        record
            .compare(&found)
            .map_err(|mismatch| RecordError::Mismatch {
                key: record.key.clone(),
                mismatch,
            })?;
    }
    Ok(())
}

/// Ids (`<room>/<start>`) of the finished recordings in `store`, oldest folder name first per
/// room (page after page; for the command line).
pub fn list_recordings(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>, RecordError> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let page = list_recordings_page(
            store,
            prefix,
            None,
            all.last().map(String::as_str),
            LIST_PAGE_MAX,
            &|_| true,
        )?;
        all.extend(page.ids);
        if page.next.is_none() {
            return Ok(all);
        }
    }
}

/// One page of recording ids ([`list_recordings_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingPage {
    /// Ids (`<room>/<start>`), in order.
    pub ids: Vec<String>,
    /// The id to list after for the next page, when more follow.
    pub next: Option<String>,
}

/// At most `limit` ids of finished recordings (of `room` only, when given) that come after the
/// id `after` and that `keep` accepts, in id order. The store is read a page of keys at a
/// time, from `after` on, until the page is full: the recordings before `after` are not read
/// again (a `keep` that few accept can still make one call read far).
pub fn list_recordings_page(
    store: &dyn ObjectStore,
    prefix: &str,
    room: Option<&str>,
    after: Option<&str>,
    limit: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Result<RecordingPage, RecordError> {
    let base = format!("{prefix}recordings/");
    let scope = match room {
        Some(room) => format!("{base}{room}/"),
        None => base.clone(),
    };
    let manifest = format!("/{MANIFEST}");
    let mut key_after = after.map(|id| format!("{base}{id}{manifest}"));
    let mut page = RecordingPage::default();
    loop {
        let objects = store.list_page(&scope, key_after.as_deref(), LIST_PAGE_MAX)?;
        for object in &objects.objects {
            let id = object
                .key
                .as_str()
                .strip_prefix(&base)
                .and_then(|k| k.strip_suffix(&manifest));
            let Some(id) = id.filter(|id| id.split('/').count() == 2 && keep(id)) else {
                continue;
            };
            if page.ids.len() == limit {
                page.next = page.ids.last().cloned();
                return Ok(page);
            }
            page.ids.push(id.to_string());
        }
        if !objects.more {
            return Ok(page);
        }
        key_after = objects.objects.last().map(|o| o.key.to_string());
    }
}

struct CountingReader<'a, R> {
    inner: R,
    count: &'a mut dyn FnMut(u64),
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.count)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
