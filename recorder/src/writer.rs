//! The recorder thread: takes the room's frames from the mixer and what happens in the room
//! from the bridge, and writes the tracks and the ledger into the spool, making them durable
//! (fsync) once a second of audio.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use roundtable_media::frames::{FrameSource, MixFrame};

use crate::ledger::{Entry, Event};
use crate::spec::Spec;
use crate::spool::{Progress, SpoolAccount};
use crate::track::{Lost, Track};

/// Frames between checkpoints (1 s): the most a crash can lose.
pub const CHECKPOINT_FRAMES: u64 = 50;

/// The ledger file next to a recording's audio while it runs.
pub const LEDGER_FILE: &str = "ledger.jsonl";

/// What the bridge tells a running recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// A leg joined the room.
    Joined {
        /// Leg id.
        leg: String,
        /// Caller URI.
        from: String,
        /// Codec name.
        codec: String,
    },
    /// A leg left.
    Left {
        /// Leg id.
        leg: String,
    },
    /// A leg's mute changed.
    Muted {
        /// Leg id.
        leg: String,
        /// Now muted.
        muted: bool,
    },
    /// A leg's relations changed (`None`: everyone).
    Relations {
        /// Leg id.
        leg: String,
        /// The legs it hears.
        hears: Option<Vec<String>>,
        /// The legs that hear it.
        heard_by: Option<Vec<String>>,
    },
    /// The room's hold changed.
    Hold(bool),
    /// Write silence from now on.
    Pause,
    /// Write audio again.
    Resume,
    /// A leg was played the recording notice.
    ConsentNotice {
        /// Leg id.
        leg: String,
    },
    /// An operator action through the API.
    Action {
        /// What.
        action: String,
        /// The caller's address.
        by: String,
    },
}

/// A recording whose files are complete in the spool.
#[derive(Debug, Clone)]
pub struct Closed {
    /// What it was.
    pub spec: Spec,
    /// Frames in every track.
    pub frames: u64,
    /// Frames written as silence because audio never reached the recorder or the disk.
    pub gap_frames: u64,
    /// The whole ledger.
    pub ledger: Vec<Entry>,
}

/// The ledger file, appended with positioned writes so a failed write can be retried whole.
#[derive(Debug)]
struct LedgerFile {
    file: File,
    on_disk: u64,
    pending: String,
}

impl LedgerFile {
    fn create(path: &Path) -> std::io::Result<LedgerFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(LedgerFile {
            file,
            on_disk: 0,
            pending: String::new(),
        })
    }

    fn append(&mut self, entry: &Entry) {
        self.pending
            .push_str(&serde_json::to_string(entry).expect("ledger entries serialize"));
        self.pending.push('\n');
    }

    /// Writes and syncs what is pending; on failure keeps it for the next try.
    fn sync(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            if let Err(e) = self
                .file
                .write_all_at(self.pending.as_bytes(), self.on_disk)
            {
                let _ = self.file.set_len(self.on_disk);
                return Err(e);
            }
            self.on_disk += self.pending.len() as u64;
            self.pending.clear();
        }
        self.file.sync_data()
    }
}

/// A leg's track and what the ledger needs to know about it.
#[derive(Debug, Default)]
struct LegTrack {
    /// Open while the leg is in the room.
    track: Option<Track>,
    /// Where its file is.
    path: PathBuf,
    /// Bytes of its timeline when it was closed (`None`: it never got a file).
    closed_len: Option<u64>,
    /// A run of frames that did not arrive: (first frame, concealed).
    missing: Option<(u64, bool)>,
}

/// The recorder thread's state.
pub(crate) struct Writer {
    spec: Spec,
    dir: PathBuf,
    mix: Option<Track>,
    legs: BTreeMap<String, LegTrack>,
    ledger: LedgerFile,
    entries: Vec<Entry>,
    frames: u64,
    next_tick: Option<u64>,
    paused: bool,
    gap_frames: u64,
    new_files: bool,
    last_checkpoint: Instant,
    account: Arc<SpoolAccount>,
    progress: Arc<Progress>,
    accounted: u64,
}

/// Creates the recording's folder, ledger and (for the mix) first track: errors here mean the
/// recording did not start.
pub(crate) fn open(
    spec: Spec,
    account: Arc<SpoolAccount>,
    progress: Arc<Progress>,
) -> std::io::Result<Writer> {
    let dir = spec.dir();
    if dir.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", dir.display()),
        ));
    }
    std::fs::create_dir_all(&dir)?;
    let mut ledger = LedgerFile::create(&dir.join(LEDGER_FILE))?;
    let mix = if spec.mode.mix() {
        Some(Track::create(&dir.join("mix.wav"), spec.rate, 0)?)
    } else {
        None
    };
    let started = Entry {
        t_ms: 0,
        event: Event::Started {
            room: spec.room.clone(),
            id: spec.id(),
            start_unix_ms: spec.start_unix_ms,
            rate: spec.rate,
            mode: spec.mode.as_str().into(),
        },
    };
    ledger.append(&started);
    if !spec.fsync_delay.is_zero() {
        std::thread::sleep(spec.fsync_delay);
    }
    ledger.sync()?;
    sync_dir(&dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(Writer {
        spec,
        dir,
        mix,
        legs: BTreeMap::new(),
        ledger,
        entries: vec![started],
        frames: 0,
        next_tick: None,
        paused: false,
        gap_frames: 0,
        new_files: false,
        last_checkpoint: Instant::now(),
        account,
        progress,
        accounted: 0,
    })
}

/// Makes a folder's entries (new files) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Writer {
    fn t_ms(&self) -> u64 {
        self.frames * 20
    }

    fn log(&mut self, t_ms: u64, event: Event) {
        let entry = Entry { t_ms, event };
        self.ledger.append(&entry);
        // Checkpoints matter only on disk (recovery); the manifest leaves them out.
        if entry.event != Event::Checkpoint {
            self.entries.push(entry);
        }
    }

    /// Runs until the mixer drops its end of `frames`.
    pub(crate) fn run(mut self, frames: Receiver<MixFrame>, controls: Receiver<Control>) -> Closed {
        loop {
            match frames.recv_timeout(Duration::from_millis(200)) {
                Ok(frame) => {
                    self.apply(&controls);
                    self.write(frame);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.apply(&controls);
                    // No frames (a stalled mixer): still make the ledger durable each second.
                    if self.last_checkpoint.elapsed() >= Duration::from_secs(1) {
                        self.checkpoint();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.apply(&controls);
        self.close()
    }

    fn apply(&mut self, controls: &Receiver<Control>) {
        while let Ok(control) = controls.try_recv() {
            let t = self.t_ms();
            let event = match control {
                Control::Joined { leg, from, codec } => Event::Joined { leg, from, codec },
                Control::Left { leg } => {
                    self.close_leg(&leg);
                    Event::Left { leg }
                }
                Control::Muted { leg, muted } => Event::Muted { leg, muted },
                Control::Relations {
                    leg,
                    hears,
                    heard_by,
                } => Event::Relations {
                    leg,
                    hears,
                    heard_by,
                },
                Control::Hold(on) => Event::Hold { on },
                Control::Pause if !self.paused => {
                    self.paused = true;
                    Event::Paused
                }
                Control::Resume if self.paused => {
                    self.paused = false;
                    Event::Resumed
                }
                Control::Pause | Control::Resume => continue,
                Control::ConsentNotice { leg } => Event::ConsentNotice { leg },
                Control::Action { action, by } => Event::Action { action, by },
            };
            self.log(t, event);
        }
    }

    fn write(&mut self, frame: MixFrame) {
        if let Some(expected) = self.next_tick {
            if frame.tick < expected {
                return;
            }
            let missing = frame.tick - expected;
            if missing > 0 {
                let t = self.t_ms();
                self.log(
                    t,
                    Event::Gap {
                        ms: missing * 20,
                        reason: "the mixer's frames did not reach the recorder".into(),
                    },
                );
                self.gap_frames += missing;
                self.silence_all(missing);
            }
        }
        self.next_tick = Some(frame.tick + 1);
        if let Some(mix) = &mut self.mix {
            if self.paused {
                mix.silence(1)
            } else {
                mix.push(&frame.samples)
            }
        }
        if self.spec.mode.tracks() {
            self.write_legs(&frame);
        }
        self.frames += 1;
        if self.frames.is_multiple_of(CHECKPOINT_FRAMES) {
            self.checkpoint();
        }
    }

    fn write_legs(&mut self, frame: &MixFrame) {
        let frames = self.frames;
        let mut seen = 0;
        for leg_frame in &frame.legs {
            let id = leg_frame.leg.to_string();
            if !self.legs.contains_key(&id) {
                let path = self.dir.join("legs").join(format!("{id}.wav"));
                match Track::create(&path, self.spec.rate, frames) {
                    Ok(track) => {
                        self.new_files = true;
                        self.legs.insert(
                            id.clone(),
                            LegTrack {
                                track: Some(track),
                                path,
                                closed_len: None,
                                missing: None,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, path = %path.display(), "leg track not created");
                        // Remember the leg so it is not retried every frame; its track stays
                        // absent and the gap is in the ledger.
                        self.legs.insert(
                            id.clone(),
                            LegTrack {
                                track: None,
                                path,
                                closed_len: None,
                                missing: None,
                            },
                        );
                        self.log(
                            frames * 20,
                            Event::Gap {
                                ms: 0,
                                reason: format!("track of leg {id} not created: {error}"),
                            },
                        );
                        continue;
                    }
                }
            }
            let paused = self.paused;
            let Some(leg) = self.legs.get_mut(&id) else {
                continue;
            };
            let Some(track) = leg.track.as_mut() else {
                continue;
            };
            seen += 1;
            if paused {
                track.silence(1)
            } else {
                track.push(&leg_frame.samples)
            }
            let arrived = leg_frame.source == FrameSource::Received;
            let concealed = leg_frame.source == FrameSource::Concealed;
            let ended = match (&leg.missing, arrived) {
                (None, false) => {
                    leg.missing = Some((frames, concealed));
                    None
                }
                (Some((start, was)), _) if arrived || *was != concealed => {
                    let ended = (*start, *was);
                    leg.missing = if arrived {
                        None
                    } else {
                        Some((frames, concealed))
                    };
                    Some(ended)
                }
                _ => None,
            };
            if let Some((start, concealed)) = ended {
                self.log(
                    start * 20,
                    Event::Missing {
                        leg: id,
                        ms: (frames - start) * 20,
                        concealed,
                    },
                );
            }
        }
        // Open tracks the mixer did not send this tick (a leg between leaving the room and
        // the bridge saying so) get silence, so every track stays on the timeline.
        if seen < self.legs.values().filter(|l| l.track.is_some()).count() {
            for leg in self.legs.values_mut() {
                if let Some(track) = leg.track.as_mut().filter(|t| t.frames() == frames) {
                    track.silence(1);
                }
            }
        }
    }

    fn silence_all(&mut self, frames: u64) {
        if let Some(mix) = &mut self.mix {
            mix.silence(frames);
        }
        for track in self.legs.values_mut().filter_map(|l| l.track.as_mut()) {
            track.silence(frames);
        }
        self.frames += frames;
    }

    fn close_leg(&mut self, id: &str) {
        self.end_missing_span(id);
        let Some(leg) = self.legs.get_mut(id) else {
            return;
        };
        if let Some(mut track) = leg.track.take() {
            let lost = track.flush();
            let _ = track.sync();
            leg.closed_len = Some(track.len());
            if let Err(lost) = lost {
                self.log_lost(id, lost);
            }
        }
    }

    /// Logs a run of missing frames a leg was in when it left or the recording closed.
    fn end_missing_span(&mut self, id: &str) {
        let frames = self.frames;
        if let Some((start, concealed)) = self.legs.get_mut(id).and_then(|l| l.missing.take()) {
            self.log(
                start * 20,
                Event::Missing {
                    leg: id.to_string(),
                    ms: (frames - start) * 20,
                    concealed,
                },
            );
        }
    }

    fn log_lost(&mut self, object: &str, lost: Lost) {
        self.account.write_failed();
        self.gap_frames += lost.frames;
        self.log(
            lost.from * 20,
            Event::Gap {
                ms: lost.frames * 20,
                reason: format!("writing {object} to the spool failed (disk full?)"),
            },
        );
        tracing::error!(recording = %self.spec.id(), object, ms = lost.frames * 20, "spool write failed: audio lost");
    }

    /// Flushes and syncs every open track, then the ledger with a checkpoint.
    fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        let mut failures = Vec::new();
        if let Some(mix) = &mut self.mix {
            if let Err(lost) = mix.flush() {
                failures.push(("mix.wav".to_string(), lost));
            }
            let _ = mix.sync();
        }
        for (id, leg) in &mut self.legs {
            if let Some(track) = &mut leg.track {
                if let Err(lost) = track.flush() {
                    failures.push((format!("legs/{id}.wav"), lost));
                }
                let _ = track.sync();
            }
        }
        for (object, lost) in failures {
            self.log_lost(&object, lost);
        }
        if std::mem::take(&mut self.new_files) {
            let _ = sync_dir(&self.dir.join("legs"));
            let _ = sync_dir(&self.dir);
        }
        let t = self.t_ms();
        self.log(t, Event::Checkpoint);
        if let Err(error) = self.ledger.sync() {
            tracing::error!(recording = %self.spec.id(), %error, "ledger write failed; retrying at the next checkpoint");
        }
        self.publish();
    }

    /// Tells the upload side how far each object is durable, and the spool how big it is.
    fn publish(&mut self) {
        let mut sizes = BTreeMap::new();
        if let Some(mix) = &self.mix {
            sizes.insert("mix.wav".to_string(), mix.len());
        }
        for (id, leg) in &self.legs {
            if let Some(track) = &leg.track {
                sizes.insert(format!("legs/{id}.wav"), track.len());
            }
        }
        let total: u64 = sizes.values().sum::<u64>() + self.closed_bytes();
        self.account.add(total.saturating_sub(self.accounted));
        self.accounted = self.accounted.max(total);
        self.progress.update(sizes);
    }

    fn closed_bytes(&self) -> u64 {
        self.legs
            .values()
            .filter(|l| l.track.is_none())
            .filter_map(|l| l.closed_len)
            .sum()
    }

    fn close(mut self) -> Closed {
        let (frames, rate) = (self.frames, self.spec.rate);
        let mut failures = Vec::new();
        if let Some(mix) = &mut self.mix
            && let Err(lost) = mix.finish(frames)
        {
            failures.push(("mix.wav".to_string(), lost));
        }
        // Every track is padded with silence to the recording's length; those of legs that
        // left are reopened for it.
        let ids: Vec<String> = self.legs.keys().cloned().collect();
        for id in &ids {
            self.end_missing_span(id);
            let Some(leg) = self.legs.get_mut(id) else {
                continue;
            };
            let track = match (leg.track.take(), leg.closed_len) {
                (Some(track), _) => Ok(track),
                (None, Some(len)) => Track::reopen(&leg.path, rate, Track::frames_in(len, rate))
                    .map_err(|_| Lost {
                        from: frames,
                        frames: 0,
                    }),
                (None, None) => continue,
            };
            match track.and_then(|mut t| t.finish(frames).map(|()| t)) {
                Ok(track) => leg.closed_len = Some(track.len()),
                Err(lost) => failures.push((format!("legs/{id}.wav"), lost)),
            }
        }
        for (object, lost) in failures {
            self.log_lost(&object, lost);
        }
        self.log(self.t_ms(), Event::Stopped);
        if let Err(error) = self.ledger.sync() {
            tracing::error!(recording = %self.spec.id(), %error, "ledger not closed");
        }
        let _ = sync_dir(&self.dir);
        self.publish();
        self.progress.close();
        Closed {
            spec: self.spec,
            frames,
            gap_frames: self.gap_frames,
            ledger: self.entries,
        }
    }
}
