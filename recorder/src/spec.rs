//! What a recording is before it starts: its id, mode, rate and spool folder.

use std::path::PathBuf;

/// What a recording writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The room's mix, mono (`mix.wav`).
    #[default]
    Mixed,
    /// One track per leg (`legs/<leg>.wav`), time-aligned.
    Tracks,
    /// Both.
    Both,
}

impl Mode {
    /// Its name in config, API and manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mixed => "mixed",
            Mode::Tracks => "tracks",
            Mode::Both => "both",
        }
    }

    /// Parses `mixed`, `tracks` or `both`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "mixed" => Some(Mode::Mixed),
            "tracks" => Some(Mode::Tracks),
            "both" => Some(Mode::Both),
            _ => None,
        }
    }

    /// Whether the room's mix is written.
    pub fn mix(self) -> bool {
        self != Mode::Tracks
    }

    /// Whether each leg gets a track.
    pub fn tracks(self) -> bool {
        self != Mode::Mixed
    }
}

/// A recording about to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The room.
    pub room: String,
    /// The folder name under the room: the UTC start to the second (`20261122T093000Z`),
    /// suffixed `-2`, `-3`... when the room started twice in one second.
    pub start: String,
    /// Wall-clock start, Unix milliseconds.
    pub start_unix_ms: u64,
    /// Sample rate of every track.
    pub rate: u32,
    /// What to write.
    pub mode: Mode,
    /// The spool root (the recording's files go under `recordings/<room>/<start>/` in it).
    pub spool: PathBuf,
    /// A test hook (`testing.spool_fsync_delay_ms`): a pause before the new folder's fsync, to
    /// show that a slow disk delays nobody but the recording. Zero in production.
    pub fsync_delay: std::time::Duration,
}

impl Spec {
    /// `<room>/<start>`: the recording's id in the API and CLI.
    pub fn id(&self) -> String {
        format!("{}/{}", self.room, self.start)
    }

    /// The folder of the recording's files, relative to the spool and to the store's prefix.
    pub fn folder(&self) -> String {
        format!("recordings/{}/{}", self.room, self.start)
    }

    /// The recording's folder in the spool.
    pub fn dir(&self) -> PathBuf {
        self.spool.join(self.folder())
    }
}
