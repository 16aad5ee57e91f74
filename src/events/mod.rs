//! The bridge's events: what happened in rooms (participants joining and leaving, DTMF keys,
//! recordings starting and stopping, trunks registering), numbered, journaled to disk and kept
//! in a bounded ring in memory. Readers (the long poll, the WebSocket) ask with a cursor and
//! never miss an event the journal still holds; one that fell behind is told exactly how many
//! it missed.
//!
//! An event counts as emitted once the journal has fsynced it: [`EventLog::push`] hands it to
//! the journal's thread, which writes and fsyncs in batches and then publishes it to readers.
//! Nobody who pushes waits for the disk.
//!
//! A cursor is `<journal id>:<sequence>` ([`EventLog::cursor`]); a bare number (the first API's
//! cursors) is a sequence number of this journal. Sequence numbers go on across restarts.

mod journal;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Map, Value};
use thiserror::Error;
use tokio::sync::watch;

pub use journal::{Bounds, Journal, PruneHook, segment_events};

/// Events kept in memory; older ones are read back from the journal.
pub const CAPACITY: usize = 10_000;

/// Most events returned by one read.
pub const PAGE: usize = 500;

/// Events handed to the journal but not yet written beyond which new ones are published without
/// waiting for it (counted): a stuck disk must not stop the events.
const MAX_UNWRITTEN: u64 = 100_000;

/// Why a read was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    /// Not `<journal>:<sequence>` or a number.
    #[error("{0:?} is not an event cursor")]
    BadCursor(String),
    /// The journal could not be read back.
    #[error("event journal: {0}")]
    Journal(String),
}

/// One page of events after a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The events, oldest first, each a JSON object with `id`, `cursor`, `at`, `type` and
    /// `room`.
    pub events: Vec<Value>,
    /// The cursor to pass next.
    pub next: String,
    /// Its sequence number.
    pub next_seq: u64,
    /// Events after the cursor that are gone (beyond the journal's bounds).
    pub missed: u64,
    /// Events after `next` already published (the page was full): read again at once.
    pub behind: u64,
}

/// What a reader wants.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Only these rooms' (empty: all).
    pub rooms: &'a [&'a str],
    /// Only these types (empty: all).
    pub types: &'a [String],
}

impl Filter<'_> {
    /// Whether `event` is one this reader wants.
    pub fn wants(&self, event: &Value) -> bool {
        (self.rooms.is_empty() || self.rooms.iter().any(|r| event["room"] == *r))
            && (self.types.is_empty() || self.types.iter().any(|t| event["type"] == t.as_str()))
    }
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<(u64, Value)>,
    /// The last sequence number given.
    last: u64,
}

/// The log: the ring, the journal's thread, and a watch channel announcing the newest event
/// readers may see.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<Ring>,
    /// The newest event written to the journal (or published without it).
    published: watch::Sender<u64>,
    journal_id: String,
    /// Where the journal is, for reads behind the ring; `None`: in memory only.
    dir: Option<PathBuf>,
    /// The oldest event the journal still holds.
    oldest: Arc<AtomicU64>,
    writer: Option<mpsc::Sender<(u64, String)>>,
    /// Events handed to the journal and not yet written.
    unwritten: Arc<AtomicU64>,
    /// `roundtable_events_unjournaled_total`: events published without being journaled (a
    /// stuck or failing disk).
    unjournaled: prometheus::IntCounter,
}

impl Default for EventLog {
    /// A log in memory only (tests).
    fn default() -> Self {
        EventLog {
            ring: Mutex::default(),
            published: watch::channel(0).0,
            journal_id: "mem".into(),
            dir: None,
            oldest: Arc::new(AtomicU64::new(1)),
            writer: None,
            unwritten: Arc::default(),
            unjournaled: unjournaled_counter(),
        }
    }
}

/// The counter of events published without the journal.
pub fn unjournaled_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new(
        "roundtable_events_unjournaled_total",
        "Events published without reaching the event journal (a failing or stuck disk)",
    )
    .expect("a valid metric name")
}

impl EventLog {
    /// Opens the journal in `dir` (within `bounds`) and starts its thread; the ring holds the journal's newest events, and numbering goes on after them.
    /// `unjournaled` counts events published without it; `before_prune` sees every segment
    /// before it goes.
    pub fn open(
        dir: &Path,
        bounds: Bounds,
        unjournaled: prometheus::IntCounter,
        before_prune: Option<PruneHook>,
    ) -> std::io::Result<Arc<EventLog>> {
        let opened = Journal::open(dir, bounds, CAPACITY)?;
        let mut journal = opened.journal;
        if let Some(hook) = before_prune {
            journal.set_prune_hook(hook);
        }
        let last = journal.last();
        let (tx, rx) = mpsc::channel();
        let log = EventLog {
            ring: Mutex::new(Ring {
                events: opened.tail.into(),
                last,
            }),
            published: watch::channel(last).0,
            journal_id: journal.id().to_string(),
            dir: Some(dir.to_path_buf()),
            oldest: Arc::new(AtomicU64::new(journal.oldest())),
            writer: Some(tx),
            unwritten: Arc::default(),
            unjournaled,
        };
        let writer = JournalWriter {
            journal,
            published: log.published.clone(),
            oldest: log.oldest.clone(),
            unwritten: log.unwritten.clone(),
            unjournaled: log.unjournaled.clone(),
        };
        std::thread::Builder::new()
            .name("event-journal".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Arc::new(log))
    }

    /// The cursor of event `seq` of this journal.
    pub fn cursor(&self, seq: u64) -> String {
        format!("{}:{seq}", self.journal_id)
    }

    /// Appends an event of `kind` in `room` at wall-clock time `at` (RFC 3339), with `fields`.
    /// Readers see it once the journal has it.
    pub fn push(&self, kind: &str, room: &str, at: String, fields: Map<String, Value>) {
        debug_assert!(
            roundtable_api::EVENT_TYPES.contains(&kind) || cfg!(test),
            "{kind} is missing from roundtable_api::EVENT_TYPES"
        );
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.last += 1;
        let id = ring.last;
        let mut event = Map::new();
        event.insert("id".into(), id.into());
        event.insert("cursor".into(), self.cursor(id).into());
        event.insert("at".into(), at.into());
        event.insert("type".into(), kind.into());
        event.insert("room".into(), room.into());
        event.extend(fields);
        let event = Value::Object(event);
        let line = self.writer.as_ref().map(|_| event.to_string());
        ring.events.push_back((id, event));
        if ring.events.len() > CAPACITY {
            ring.events.pop_front();
        }
        drop(ring);
        let queued = match (&self.writer, line) {
            (Some(writer), Some(line))
                if self.unwritten.load(Ordering::Relaxed) < MAX_UNWRITTEN =>
            {
                self.unwritten.fetch_add(1, Ordering::Relaxed);
                writer.send((id, line)).is_ok()
            }
            (Some(_), _) => {
                self.unjournaled.inc();
                false
            }
            (None, _) => false,
        };
        if !queued {
            publish_up_to(&self.published, id);
        }
    }

    /// Events after `cursor` that `filter` wants, at most [`PAGE`]. A cursor behind the ring
    /// reads the journal: blocking, call it off the async threads (or try
    /// [`EventLog::since_in_memory`] first).
    pub fn since(&self, cursor: &str, filter: &Filter<'_>) -> Result<Page, EventError> {
        match self.read(cursor, filter, true) {
            Some(page) => page,
            None => Err(EventError::Journal("the journal was not read".into())),
        }
    }

    /// [`EventLog::since`] when the ring holds what follows `cursor` (no IO: fine on an async
    /// thread); `None` when the journal must be read.
    pub fn since_in_memory(
        &self,
        cursor: &str,
        filter: &Filter<'_>,
    ) -> Option<Result<Page, EventError>> {
        self.read(cursor, filter, false)
    }

    fn read(
        &self,
        cursor: &str,
        filter: &Filter<'_>,
        may_read_journal: bool,
    ) -> Option<Result<Page, EventError>> {
        let after = match self.parse_cursor(cursor) {
            Ok(after) => after,
            Err(e) => return Some(Err(e)),
        };
        let published = *self.published.borrow();
        let mut next = after.min(published);
        let mut events = Vec::new();
        let mut take = |id: u64, event: &Value| {
            next = id;
            if filter.wants(event) {
                events.push(event.clone());
            }
            events.len() < PAGE
        };
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring_oldest = ring.events.front().map_or(ring.last + 1, |(id, _)| *id);
        let missed = if after + 1 >= ring_oldest || self.dir.is_none() {
            for (id, event) in ring.events.iter().filter(|(id, _)| *id > after) {
                if *id > published || !take(*id, event) {
                    break;
                }
            }
            ring_oldest.saturating_sub(after + 1)
        } else if !may_read_journal {
            return None;
        } else {
            drop(ring);
            let dir = self.dir.as_deref().unwrap_or(Path::new("."));
            let from_disk = match journal::read_dir_after(dir, after, published, PAGE * 4) {
                Ok(events) => events,
                Err(e) => return Some(Err(EventError::Journal(e.to_string()))),
            };
            for (id, event) in &from_disk {
                if !take(*id, event) {
                    break;
                }
            }
            self.oldest
                .load(Ordering::Relaxed)
                .saturating_sub(after + 1)
        };
        Some(Ok(Page {
            events,
            next: self.cursor(next),
            next_seq: next,
            missed,
            behind: published.saturating_sub(next),
        }))
    }

    /// This journal's id (cursors begin with it).
    pub fn journal_id(&self) -> &str {
        &self.journal_id
    }

    /// The newest event readers may see.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// The sequence number a cursor stands for: one of this journal's, a bare number, or (a
    /// cursor of another journal: a wiped store) the beginning.
    pub fn parse_cursor(&self, cursor: &str) -> Result<u64, EventError> {
        let bad = || EventError::BadCursor(cursor.to_string());
        match cursor.split_once(':') {
            None if cursor.is_empty() => Ok(0),
            None => cursor.parse().map_err(|_| bad()),
            Some((journal, seq)) => {
                let seq: u64 = seq.parse().map_err(|_| bad())?;
                let valid =
                    !journal.is_empty() && journal.bytes().all(|b| b.is_ascii_alphanumeric());
                match (valid, journal == self.journal_id) {
                    (false, _) => Err(bad()),
                    (true, true) => Ok(seq),
                    (true, false) => Ok(0),
                }
            }
        }
    }

    /// A receiver that changes whenever events are published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Waits (at most `limit`) until every event pushed so far is in the journal: at shutdown.
    pub fn flush(&self, limit: Duration) {
        let last = self.ring.lock().unwrap_or_else(|p| p.into_inner()).last;
        let deadline = std::time::Instant::now() + limit;
        while *self.published.borrow() < last && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Lets readers see every event up to `seq` (never moving back: a batch written late does not
/// hide events already published without the journal).
fn publish_up_to(published: &watch::Sender<u64>, seq: u64) {
    published.send_if_modified(|p| {
        let newer = seq > *p;
        *p = (*p).max(seq);
        newer
    });
}

/// Pushes an event whose fields are a JSON object (anything else adds none), stamped `at`.
pub fn push_json(log: &EventLog, kind: &str, room: &str, at: std::time::SystemTime, fields: Value) {
    let fields = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    log.push(kind, room, crate::time::rfc3339(at), fields);
}

/// The journal's thread: writes what is pushed in batches, fsyncs, then publishes.
struct JournalWriter {
    journal: Journal,
    published: watch::Sender<u64>,
    oldest: Arc<AtomicU64>,
    unwritten: Arc<AtomicU64>,
    unjournaled: prometheus::IntCounter,
}

impl JournalWriter {
    fn run(mut self, rx: &mpsc::Receiver<(u64, String)>) {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.clear();
            batch.push(first);
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.journal.append(&batch) {
                // The events stay live for readers; only their durability is lost.
                tracing::error!(%error, events = batch.len(), "event journal: write failed");
                self.unjournaled.inc_by(batch.len() as u64);
            }
            self.oldest.store(self.journal.oldest(), Ordering::Relaxed);
            self.unwritten
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            publish_up_to(&self.published, batch[batch.len() - 1].0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(digit: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("digit".into(), digit.into());
        m
    }

    fn all() -> Filter<'static> {
        Filter::default()
    }

    #[test]
    fn cursor_room_filter_and_overflow() {
        let log = EventLog::default();
        let changes = log.subscribe();
        log.push("dtmf", "1000", "t".into(), fields("5"));
        log.push("dtmf", "2000", "t".into(), fields("6"));
        assert!(changes.has_changed().unwrap());
        let page = log.since("0", &all()).unwrap();
        assert_eq!(
            (page.events.len(), page.next.as_str(), page.missed),
            (2, "mem:2", 0)
        );
        assert_eq!(page.events[0]["digit"], "5");
        assert_eq!(page.events[1]["id"], 2);
        assert_eq!(page.events[1]["cursor"], "mem:2");
        let only = log
            .since(
                "",
                &Filter {
                    rooms: &["2000"],
                    types: &[],
                },
            )
            .unwrap();
        assert_eq!(
            (only.events.len(), only.next.as_str()),
            (1, "mem:2"),
            "the cursor passes filtered events too"
        );
        let types = ["participant_joined".to_string()];
        let none = log
            .since(
                "mem:0",
                &Filter {
                    rooms: &[],
                    types: &types,
                },
            )
            .unwrap();
        assert!(none.events.is_empty());
        assert!(log.since("mem:2", &all()).unwrap().events.is_empty());
        for bad in ["x", "mem:x", ":3", "a-b:3"] {
            assert!(log.since(bad, &all()).is_err(), "{bad}");
        }
        for _ in 0..CAPACITY {
            log.push("dtmf", "1000", "t".into(), Map::new());
        }
        let behind = log.since("0", &all()).unwrap();
        assert_eq!(
            behind.missed, 2,
            "the two first events fell out of the ring"
        );
        assert_eq!(behind.events.len(), PAGE);
    }

    fn wait_published(log: &EventLog, seq: u64) {
        let mut changes = log.subscribe();
        for _ in 0..200 {
            if *changes.borrow_and_update() >= seq {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("event {seq} never published");
    }

    fn open(dir: &Path) -> Arc<EventLog> {
        EventLog::open(
            dir,
            Bounds::new(1 << 30, Duration::from_secs(86_400)),
            unjournaled_counter(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn journaled_events_survive_a_restart_and_old_cursors_read_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        for i in 0..(CAPACITY + 20) {
            log.push("dtmf", "1000", "t".into(), fields(&i.to_string()));
        }
        wait_published(&log, (CAPACITY + 20) as u64);
        let first = log.cursor(0);
        drop(log);
        let log = open(dir.path());
        assert!(
            log.since_in_memory(&first, &all()).is_none(),
            "behind the ring: only the journal has them"
        );
        let recent = log.cursor((CAPACITY + 10) as u64);
        assert_eq!(
            log.since_in_memory(&recent, &all())
                .unwrap()
                .unwrap()
                .events
                .len(),
            10,
            "the ring answers without IO"
        );
        let page = log.since(&first, &all()).unwrap();
        assert_eq!(page.missed, 0);
        assert_eq!(page.events.len(), PAGE);
        assert_eq!(page.events[0]["digit"], "0", "read back from the journal");
        log.push("dtmf", "1000", "t".into(), fields("new"));
        wait_published(&log, (CAPACITY + 21) as u64);
        let latest = log
            .since(&log.cursor((CAPACITY + 20) as u64), &all())
            .unwrap();
        assert_eq!(latest.events.len(), 1);
        assert_eq!(latest.events[0]["id"], CAPACITY + 21, "numbering goes on");
        let other = log.since("ffff:5", &all()).unwrap();
        assert_eq!(
            other.events[0]["id"], 1,
            "another journal's cursor starts over"
        );
    }
}
