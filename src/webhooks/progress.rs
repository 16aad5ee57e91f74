//! Where each endpoint stands, and the dead letters.
//!
//! An endpoint's cursor (`<storage.path>/webhooks/<name>.cursor`, `<journal id>:<seq>`) is the
//! last event it received or that went to its dead letters. Its delivery task moves it; so does
//! the journal's pruner, when events it never received must go before it gets them. It is
//! saved within a second of moving (at most once a second) and at shutdown, so after a kill -9 an
//! endpoint may receive the last second's events twice: delivery is at least once, and
//! `webhook-id` lets a receiver drop a repeat.
//!
//! Dead letters (`<storage.path>/webhooks/dead-letters.jsonl`) are one JSON object a line:
//! `at`, `endpoint`, `reason` (`rejected`, `expired`, `outbox_full`, `lost`), `status`,
//! `attempts`, `error` and the `event`; each is fsynced before the cursor passes its event.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use roundtable_api::{WebhookEndpoint, WebhookState};
use serde_json::Value;

use crate::events::{EventLog, Filter};

/// One endpoint's position and counters, shared by its delivery task, the journal's pruner
/// and the listing.
#[derive(Debug)]
pub struct Progress {
    /// The endpoint's name.
    pub name: String,
    types: Vec<String>,
    rooms: Vec<String>,
    /// The last event received or dead-lettered.
    seq: AtomicU64,
    path: PathBuf,
    journal_id: String,
    /// The last position saved; the lock makes one save at a time.
    saved: Mutex<u64>,
    delivered: AtomicU64,
    dead: AtomicU64,
    /// Failed attempts in a row.
    failures: AtomicU32,
    gone: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Progress {
    /// The position of `endpoint` kept in `dir`: the saved one, or (none saved: a new
    /// endpoint) `start`, saved at once. A cursor of another journal (the store was wiped)
    /// starts at its beginning; an unreadable one too, with a warning (a repeat is better than
    /// a loss).
    pub fn open(
        dir: &Path,
        endpoint: &WebhookEndpoint,
        journal_id: &str,
        start: u64,
    ) -> io::Result<Progress> {
        let path = dir.join(format!("{}.cursor", endpoint.name));
        let (seq, fresh) = match std::fs::read_to_string(&path) {
            Ok(text) => match text.trim().split_once(':') {
                Some((id, seq)) if id == journal_id => match seq.parse() {
                    Ok(seq) => (seq, false),
                    Err(_) => {
                        tracing::warn!(path = %path.display(), "unreadable webhook cursor: resending what the journal holds");
                        (0, false)
                    }
                },
                _ => (0, false),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (start, true),
            Err(e) => return Err(e),
        };
        let progress = Progress {
            name: endpoint.name.clone(),
            types: endpoint.events.clone(),
            rooms: endpoint
                .rooms
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            seq: AtomicU64::new(seq),
            path,
            journal_id: journal_id.to_string(),
            saved: Mutex::new(if fresh { u64::MAX } else { seq }),
            delivered: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            last_error: Mutex::new(None),
        };
        if fresh {
            progress.save()?;
        }
        Ok(progress)
    }

    /// Whether the endpoint wants `event`.
    pub fn wants(&self, event: &Value) -> bool {
        let rooms: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
        Filter {
            rooms: &rooms,
            types: &self.types,
        }
        .wants(event)
    }

    /// The events after the endpoint's position that it wants, as `read` gets them from the
    /// log: [`EventLog::since`] (blocking) or [`EventLog::since_in_memory`].
    pub fn next_page<T>(
        &self,
        log: &EventLog,
        read: impl FnOnce(&EventLog, &str, &Filter<'_>) -> T,
    ) -> T {
        let rooms: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
        let filter = Filter {
            rooms: &rooms,
            types: &self.types,
        };
        read(log, &log.cursor(self.seq()), &filter)
    }

    /// The last event received or dead-lettered.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Moves the position to `seq` (never back).
    pub fn advance(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Event `seq` was delivered.
    pub fn delivered(&self, seq: u64) {
        self.advance(seq);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// An attempt failed (`why`): the failures in a row, this one counted.
    pub fn failed(&self, why: &str) -> u32 {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The endpoint answered (a 4xx): it is up, whatever it thought of the event.
    pub fn answered(&self, why: String) {
        self.failures.store(0, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// The endpoint answered 410.
    pub fn set_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    /// How its deliveries go.
    pub fn state(&self) -> WebhookState {
        let failures = self.failures.load(Ordering::Relaxed);
        if self.gone.load(Ordering::Relaxed) {
            WebhookState::Gone
        } else if super::retry::breaker_open(failures) {
            WebhookState::Open
        } else if failures > 0 {
            WebhookState::Retrying
        } else {
            WebhookState::Delivering
        }
    }

    /// Events delivered since the start.
    pub fn delivered_count(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Events dead-lettered since the start.
    pub fn dead_count(&self) -> u64 {
        self.dead.load(Ordering::Relaxed)
    }

    /// `n` more events went to dead letters.
    pub fn add_dead(&self, n: u64) {
        self.dead.fetch_add(n, Ordering::Relaxed);
    }

    /// The last failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the position moved since it was last saved.
    pub fn unsaved(&self) -> bool {
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) != self.seq()
    }

    /// Writes the position if it moved (blocking; a rename, so a crash leaves the old or the
    /// new one).
    pub fn save(&self) -> io::Result<()> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq();
        if *saved == seq {
            return Ok(());
        }
        let tmp = self.path.with_extension("cursor.tmp");
        std::fs::write(&tmp, format!("{}:{seq}\n", self.journal_id))?;
        std::fs::rename(&tmp, &self.path)?;
        *saved = seq;
        Ok(())
    }

    /// Forgets the position (the endpoint was removed).
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The dead-letter file, appended and fsynced line by line.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetters {
    /// The file `dead-letters.jsonl` in `dir` (made at the first dead letter).
    pub fn new(dir: &Path) -> DeadLetters {
        DeadLetters {
            path: dir.join("dead-letters.jsonl"),
            file: Mutex::new(None),
        }
    }

    /// Appends `letters` and fsyncs them (blocking).
    pub fn write(&self, letters: &[Value]) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            *file = Some(opened);
        }
        let mut buffer = Vec::new();
        for letter in letters {
            buffer.extend_from_slice(letter.to_string().as_bytes());
            buffer.push(b'\n');
        }
        let open = file.as_mut().ok_or_else(|| io::Error::other("not open"))?;
        let written = open.write_all(&buffer).and_then(|()| open.sync_data());
        if written.is_err() {
            // Reopened next time: a failed write may have left the offset anywhere.
            *file = None;
        }
        written
    }
}

/// One dead letter.
pub fn letter(
    endpoint: &str,
    reason: &str,
    status: Option<u16>,
    attempts: u32,
    error: Option<&str>,
    event: &Value,
) -> Value {
    serde_json::json!({
        "at": crate::time::rfc3339(std::time::SystemTime::now()),
        "endpoint": endpoint,
        "reason": reason,
        "status": status,
        "attempts": attempts,
        "error": error,
        "event": event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str) -> WebhookEndpoint {
        roundtable_api::WebhookSpec {
            name: name.into(),
            url: "http://127.0.0.1:9/".into(),
            events: "dtmf".into(),
            rooms: "1000".into(),
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            timeout_s: 5,
        }
        .check()
        .unwrap()
    }

    #[test]
    fn a_position_survives_reopening_and_another_journal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let crm = endpoint("crm");
        let p = Progress::open(dir.path(), &crm, "j1", 40).unwrap();
        assert_eq!(p.seq(), 40, "a new endpoint starts at the newest event");
        p.advance(45);
        p.advance(44);
        assert_eq!(p.seq(), 45, "never back");
        p.save().unwrap();
        assert_eq!(
            Progress::open(dir.path(), &crm, "j1", 99).unwrap().seq(),
            45
        );
        assert_eq!(
            Progress::open(dir.path(), &crm, "j2", 99).unwrap().seq(),
            0,
            "a wiped journal: everything it holds"
        );
        std::fs::write(dir.path().join("crm.cursor"), "j1:x").unwrap();
        assert_eq!(Progress::open(dir.path(), &crm, "j1", 99).unwrap().seq(), 0);
        p.remove().unwrap();
        assert!(!dir.path().join("crm.cursor").exists());
    }

    #[test]
    fn filters_failures_and_states() {
        let dir = tempfile::tempdir().unwrap();
        let p = Progress::open(dir.path(), &endpoint("crm"), "j1", 0).unwrap();
        assert!(p.wants(&serde_json::json!({"type":"dtmf","room":"1000"})));
        assert!(!p.wants(&serde_json::json!({"type":"dtmf","room":"2000"})));
        assert!(!p.wants(&serde_json::json!({"type":"room_created","room":"1000"})));
        assert_eq!(p.state(), WebhookState::Delivering);
        assert_eq!(p.failed("answered 500"), 1);
        assert_eq!(p.state(), WebhookState::Retrying);
        for _ in 0..4 {
            p.failed("answered 500");
        }
        assert_eq!(p.state(), WebhookState::Open);
        assert_eq!(p.last_error().as_deref(), Some("answered 500"));
        p.delivered(3);
        assert_eq!(
            (p.state(), p.seq(), p.delivered_count()),
            (WebhookState::Delivering, 3, 1)
        );
        p.set_gone();
        assert_eq!(p.state(), WebhookState::Gone);
    }

    #[test]
    fn dead_letters_append_lines() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path());
        let event = serde_json::json!({"id": 7, "type": "dtmf"});
        letters
            .write(&[letter("crm", "rejected", Some(400), 1, None, &event)])
            .unwrap();
        letters
            .write(&[letter("crm", "expired", None, 9, Some("timeout"), &event)])
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["status"], 400);
        assert_eq!(lines[1]["reason"], "expired");
        assert_eq!(lines[1]["event"]["id"], 7);
    }
}
