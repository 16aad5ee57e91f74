//! The end of a recording: its closed files in the spool become stored objects plus a signed
//! manifest. Also the start-up pass that finds recordings a crash left open and finishes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roundtable_media::frames::MixFrame;
use roundtable_storage::{ObjectKey, ObjectStore};

use crate::ledger::{self, Entry, Event};
use crate::manifest::{Fingerprint, LegRecord, Manifest, ObjectRecord, Retention, Signer};
use crate::spec::{Mode, Spec};
use crate::spool::SpoolAccount;
use crate::time::rfc3339;
use crate::track::Track;
use crate::upload::{S3Uploader, UploadState};
use crate::writer::{Closed, LEDGER_FILE};
use crate::{RecordError, Recording};

/// The manifest's object name in a recording's folder.
pub const MANIFEST: &str = "manifest.json";

/// Where recordings go.
pub enum Target {
    /// The spool is the store's folder: closing a recording leaves its files in place.
    Local,
    /// Parts stream to S3 while the call runs; closing completes the uploads.
    S3(S3Uploader),
}

/// Starts recordings and turns closed ones into stored, signed recordings.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    target: Target,
    spool: PathBuf,
    prefix: String,
    signer: Arc<Signer>,
    retention: Retention,
    account: Arc<SpoolAccount>,
    /// `testing.spool_fsync_delay_ms`, given to every recording it starts.
    fsync_delay: std::time::Duration,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("backend", &self.store.backend())
            .field("spool", &self.spool)
            .finish()
    }
}

/// A recording stored for good: its signed manifest, and the manifest object's key, size and
/// SHA-256 as they are in the store.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The manifest.
    pub manifest: Manifest,
    /// The manifest object's fingerprint.
    pub object: crate::manifest::ObjectRecord,
}

impl Archive {
    /// An archive writing into `store`, with recordings spooled under `spool` (for the local
    /// backend, the store's own folder: the spooled files are the objects).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        target: Target,
        spool: PathBuf,
        prefix: String,
        signer: Arc<Signer>,
        retention: Retention,
        account: Arc<SpoolAccount>,
    ) -> Archive {
        Archive {
            store,
            target,
            spool,
            prefix,
            signer,
            retention,
            account,
            fsync_delay: std::time::Duration::ZERO,
        }
    }

    /// Sets the test hook that delays each new recording's first fsync (see [`Spec::fsync_delay`]).
    pub fn with_fsync_delay(self, fsync_delay: std::time::Duration) -> Archive {
        Archive {
            fsync_delay,
            ..self
        }
    }

    /// The store's key prefix (`""` or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The signing key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The S3 uploader, when the store is S3.
    pub fn uploader(&self) -> Option<&S3Uploader> {
        match &self.target {
            Target::S3(uploader) => Some(uploader),
            Target::Local => None,
        }
    }

    /// Starts a recording of `spec` (its `spool` is replaced by this archive's) fed by `frames`;
    /// with S3, also the thread that streams its parts while it runs.
    pub fn start(
        self: &Arc<Self>,
        spec: Spec,
        frames: std::sync::mpsc::Receiver<MixFrame>,
    ) -> Result<Recording, RecordError> {
        let spec = Spec {
            spool: self.spool.clone(),
            fsync_delay: self.fsync_delay,
            ..spec
        };
        let mut recording = Recording::start(spec.clone(), frames, self.account.clone())?;
        if matches!(self.target, Target::S3(_)) {
            let archive = self.clone();
            let progress = recording.progress().clone();
            let thread = std::thread::Builder::new()
                .name("uploader".into())
                .spawn(move || {
                    let Target::S3(uploader) = &archive.target else {
                        return Ok(());
                    };
                    let key_base = format!("{}{}", archive.prefix, spec.folder());
                    uploader.stream(&spec.dir(), &key_base, &progress, &archive.account)
                })
                .map_err(|_| RecordError::Thread)?;
            recording.set_uploader(thread);
        }
        Ok(recording)
    }

    /// The spool root.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// The spool's bookkeeping.
    pub fn account(&self) -> &Arc<SpoolAccount> {
        &self.account
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Stores a closed recording: fingerprints its objects, signs and writes its manifest, and
    /// lets its spool space go. Returns the manifest and the manifest object's own fingerprint
    /// (for the `recording_sealed` event).
    pub fn finish(&self, closed: Closed) -> Result<Sealed, RecordError> {
        let dir = closed.spec.dir();
        let folder = closed.spec.folder();
        let names = object_names(&dir)?;
        if let Target::S3(uploader) = &self.target {
            uploader.complete(
                &dir,
                &format!("{}{folder}", self.prefix),
                &names,
                &self.account,
            )?;
        }
        let mut objects = Vec::new();
        let mut spooled = 0;
        for name in names {
            let path = dir.join(&name);
            let file = std::fs::File::open(&path).map_err(|e| RecordError::io(&path, e))?;
            let key = format!("{}{folder}/{name}", self.prefix);
            let record =
                Fingerprint::of_reader(key, std::io::BufReader::with_capacity(256 * 1024, file))
                    .map_err(|e| RecordError::io(&path, e))?;
            spooled += record.size;
            objects.push(record);
        }
        let mut ledger = closed.ledger;
        ledger.retain(|e| e.event != Event::Checkpoint);
        ledger.push(Entry {
            t_ms: closed.frames * 20,
            event: Event::Upload {
                outcome: "complete".into(),
            },
        });
        let mut manifest = build(
            &closed.spec,
            closed.frames,
            objects,
            ledger,
            self.retention.clone(),
        );
        self.signer.sign(&mut manifest);
        let key = ObjectKey::new(format!("{}{folder}/{MANIFEST}", self.prefix))?;
        let text = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        let object = Fingerprint::of_reader(key.as_str().to_string(), &text[..])
            .map_err(|e| RecordError::io(&dir, e))?;
        match &self.target {
            Target::Local => {
                self.store.put(&key, &text)?;
                // The ledger is in the manifest now.
                let ledger_file = dir.join(LEDGER_FILE);
                std::fs::remove_file(&ledger_file).map_err(|e| RecordError::io(&ledger_file, e))?;
                self.account.release(spooled);
            }
            Target::S3(uploader) => {
                uploader.put(&key, &text)?;
                // Parts released their spool space as they went up.
                std::fs::remove_dir_all(&dir).map_err(|e| RecordError::io(&dir, e))?;
                if let Some(room) = dir.parent() {
                    let _ = std::fs::remove_dir(room); // Only if empty.
                }
            }
        }
        Ok(Sealed { manifest, object })
    }

    /// Finds recordings the last run left open (a ledger and no manifest), closes their files
    /// at the last whole frame every open track has, marks what was lost, and finishes them.
    pub fn recover(&self) -> Vec<(PathBuf, Result<Sealed, RecordError>)> {
        let mut done = Vec::new();
        for dir in open_recordings(&self.spool.join("recordings")) {
            let result = recover_files(&dir, &self.spool).and_then(|closed| {
                tracing::warn!(recording = %closed.spec.id(), ms = closed.frames * 20, "recovered a recording left open by the last run");
                self.finish(closed)
            });
            done.push((dir, result));
        }
        done
    }

    /// Counts what unfinished recordings hold in the spool and have not uploaded (at start-up,
    /// before recovery), and says which uploads and key folders they own.
    pub fn account_existing(&self) -> SpoolInventory {
        let mut inventory = SpoolInventory::default();
        let recordings = self.spool.join("recordings");
        for dir in open_recordings(&recordings) {
            if let Ok(names) = object_names(&dir) {
                let bytes: u64 = names
                    .iter()
                    .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
                    .map(|m| m.len())
                    .sum();
                let state = UploadState::load(&dir);
                self.account.add(bytes.saturating_sub(state.uploaded()));
                inventory
                    .upload_ids
                    .extend(state.objects.values().map(|o| o.upload_id.clone()));
            }
            if let Some(folder) = dir.strip_prefix(&self.spool).ok().and_then(|f| f.to_str()) {
                inventory
                    .key_folders
                    .push(format!("{}{folder}/", self.prefix));
            }
        }
        inventory
    }
}

/// What the spool held at start-up.
#[derive(Debug, Default, Clone)]
pub struct SpoolInventory {
    /// Multipart uploads its recordings started (completed by recovery).
    pub upload_ids: Vec<String>,
    /// Its recordings' key folders (`<prefix>recordings/<room>/<start>/`): an upload there that
    /// is not in `upload_ids` was started by a run killed before it noted it.
    pub key_folders: Vec<String>,
}

/// The audio objects in a recording folder: `mix.wav` and `legs/*.wav`, in that order.
fn object_names(dir: &Path) -> Result<Vec<String>, RecordError> {
    let mut names = Vec::new();
    if dir.join("mix.wav").is_file() {
        names.push("mix.wav".to_string());
    }
    let legs = dir.join("legs");
    if legs.is_dir() {
        let mut tracks: Vec<String> = std::fs::read_dir(&legs)
            .map_err(|e| RecordError::io(&legs, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".wav"))
            .collect();
        tracks.sort_by_key(|n| (n.len(), n.clone()));
        names.extend(tracks.into_iter().map(|n| format!("legs/{n}")));
    }
    Ok(names)
}

/// Recording folders (`recordings/<room>/<start>/`) with a ledger but no manifest.
fn open_recordings(recordings: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rooms) = std::fs::read_dir(recordings) else {
        return found;
    };
    for room in rooms.filter_map(|e| e.ok()) {
        let Ok(starts) = std::fs::read_dir(room.path()) else {
            continue;
        };
        for start in starts.filter_map(|e| e.ok()) {
            let dir = start.path();
            if dir.join(LEDGER_FILE).is_file() && !dir.join(MANIFEST).exists() {
                found.push(dir);
            }
        }
    }
    found.sort();
    found
}

/// Closes the files of a recording found open: cuts every track to the shortest whole-frame
/// length among the tracks still open at the crash, pads the others, and ends the ledger. A
/// recording that was closed (its ledger ends with `stopped`) is taken as it is.
fn recover_files(dir: &Path, spool: &Path) -> Result<Closed, RecordError> {
    let ledger_path = dir.join(LEDGER_FILE);
    let text =
        std::fs::read_to_string(&ledger_path).map_err(|e| RecordError::io(&ledger_path, e))?;
    let mut entries = ledger::parse(&text).map_err(|reason| RecordError::Ledger {
        path: ledger_path.clone(),
        reason,
    })?;
    let Some(Entry {
        event:
            Event::Started {
                room,
                id,
                start_unix_ms,
                rate,
                mode,
            },
        ..
    }) = entries.first().cloned()
    else {
        return Err(RecordError::Ledger {
            path: ledger_path,
            reason: "does not begin with `started`".into(),
        });
    };
    let start = id.rsplit('/').next().unwrap_or_default().to_string();
    let mode = Mode::parse(&mode).ok_or_else(|| RecordError::Ledger {
        path: ledger_path.clone(),
        reason: format!("unknown mode {mode:?}"),
    })?;
    let spec = Spec {
        room,
        start,
        start_unix_ms,
        rate,
        mode,
        spool: spool.to_path_buf(),
        fsync_delay: std::time::Duration::ZERO,
    };
    if let Some(stopped) = entries.iter().rev().find(|e| e.event == Event::Stopped) {
        return Ok(Closed {
            spec,
            frames: stopped.t_ms / 20,
            gap_frames: 0,
            ledger: entries,
        });
    }
    let mut left = std::collections::BTreeSet::new();
    for entry in &entries {
        if let Event::Left { leg } = &entry.event {
            left.insert(leg.clone());
        }
    }
    let checkpoint = entries
        .iter()
        .rev()
        .find(|e| e.event == Event::Checkpoint)
        .map_or(0, |e| e.t_ms / 20);
    let mut lengths = BTreeMap::new();
    for name in object_names(dir)? {
        let path = dir.join(&name);
        let len = std::fs::metadata(&path)
            .map_err(|e| RecordError::io(&path, e))?
            .len();
        lengths.insert(name, Track::frames_in(len, rate));
    }
    let open = lengths.iter().filter(|(name, _)| {
        name.strip_prefix("legs/")
            .and_then(|n| n.strip_suffix(".wav"))
            .is_none_or(|leg| !left.contains(leg))
    });
    let frames = open.map(|(_, &f)| f).min().unwrap_or(checkpoint);
    for (name, &have) in &lengths {
        let path = dir.join(name);
        let mut track =
            Track::reopen(&path, rate, have.min(frames)).map_err(|e| RecordError::io(&path, e))?;
        track.finish(frames).map_err(|_| {
            RecordError::io(&path, std::io::Error::other("could not complete the track"))
        })?;
    }
    let t = frames * 20;
    entries.push(Entry {
        t_ms: t,
        event: Event::Lost {
            at_most_ms: 1000,
            reason: "the process ended without closing the recording; recovered at the next start"
                .into(),
        },
    });
    entries.push(Entry {
        t_ms: t,
        event: Event::Stopped,
    });
    Ok(Closed {
        spec,
        frames,
        gap_frames: 0,
        ledger: entries,
    })
}

/// Assembles a recording's (unsigned) manifest.
fn build(
    spec: &Spec,
    frames: u64,
    objects: Vec<ObjectRecord>,
    ledger: Vec<Entry>,
    retention: Retention,
) -> Manifest {
    let duration_ms = frames * 20;
    let mut legs: Vec<LegRecord> = Vec::new();
    for entry in &ledger {
        match &entry.event {
            Event::Joined { leg, from, codec } if !legs.iter().any(|l| &l.id == leg) => {
                legs.push(LegRecord {
                    id: leg.clone(),
                    from: from.clone(),
                    codec: codec.clone(),
                    joined_ms: entry.t_ms,
                    left_ms: duration_ms,
                    consent_notice: false,
                })
            }
            Event::Left { leg } => {
                if let Some(l) = legs.iter_mut().find(|l| &l.id == leg) {
                    l.left_ms = entry.t_ms;
                }
            }
            Event::ConsentNotice { leg } => {
                if let Some(l) = legs.iter_mut().find(|l| &l.id == leg) {
                    l.consent_notice = true;
                }
            }
            _ => {}
        }
    }
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(spec.start_unix_ms);
    Manifest {
        version: 1,
        id: spec.id(),
        room: spec.room.clone(),
        start: rfc3339(start),
        end: rfc3339(start + std::time::Duration::from_millis(duration_ms)),
        duration_ms,
        rate: spec.rate,
        mode: spec.mode.as_str().into(),
        legs,
        objects,
        ledger,
        retention,
        signature: None,
    }
}
