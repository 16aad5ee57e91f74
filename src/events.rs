//! The bridge's event log: what happened in rooms (participants joining and leaving, DTMF keys,
//! recordings starting and stopping), numbered, kept in a bounded ring, and read by the API
//! with a cursor (`GET /v1/events?after=N`), so a client that polls never misses an event that
//! is still in the ring and learns when it fell behind.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tokio::sync::watch;

/// Events kept; older ones are dropped (a reader behind by more is told how many it missed).
pub const CAPACITY: usize = 10_000;

/// Most events returned by one read.
pub const PAGE: usize = 500;

/// One page of events after a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The events, oldest first, each a JSON object with `id`, `at`, `type` and `room`.
    pub events: Vec<Value>,
    /// The cursor to pass next (the last event's id, or the one given).
    pub next: u64,
    /// Events after the cursor that were already dropped from the ring.
    pub missed: u64,
}

/// The log: a ring of events and a watch channel announcing the newest id.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<VecDeque<(u64, Value)>>,
    latest: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            ring: Mutex::new(VecDeque::new()),
            latest: watch::channel(0).0,
        }
    }
}

impl EventLog {
    /// Appends an event of `kind` in `room` at wall-clock time `at` (RFC 3339), with `fields`.
    pub fn push(&self, kind: &str, room: &str, at: String, fields: Map<String, Value>) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let id = ring.back().map_or(1, |(id, _)| id + 1);
        let mut event = Map::new();
        event.insert("id".into(), id.into());
        event.insert("at".into(), at.into());
        event.insert("type".into(), kind.into());
        event.insert("room".into(), room.into());
        event.extend(fields);
        ring.push_back((id, Value::Object(event)));
        if ring.len() > CAPACITY {
            ring.pop_front();
        }
        drop(ring);
        self.latest.send_replace(id);
    }

    /// Events with an id above `after`, optionally of one room, at most [`PAGE`].
    pub fn since(&self, after: u64, room: Option<&str>) -> Page {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = ring.front().map_or(after + 1, |(id, _)| *id);
        let missed = oldest.saturating_sub(after + 1);
        let mut next = after;
        let mut events = Vec::new();
        for (id, event) in ring.iter().filter(|(id, _)| *id > after) {
            next = *id;
            if room.is_none_or(|r| event["room"] == r) {
                events.push(event.clone());
                if events.len() == PAGE {
                    break;
                }
            }
        }
        Page {
            events,
            next,
            missed,
        }
    }

    /// A receiver that changes whenever an event is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
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

    #[test]
    fn cursor_room_filter_and_overflow() {
        let log = EventLog::default();
        let changes = log.subscribe();
        log.push("dtmf", "1000", "t".into(), fields("5"));
        log.push("dtmf", "2000", "t".into(), fields("6"));
        assert!(changes.has_changed().unwrap());
        let page = log.since(0, None);
        assert_eq!((page.events.len(), page.next, page.missed), (2, 2, 0));
        assert_eq!(page.events[0]["digit"], "5");
        assert_eq!(page.events[1]["id"], 2);
        let only = log.since(0, Some("2000"));
        assert_eq!(
            (only.events.len(), only.next),
            (1, 2),
            "the cursor passes filtered events too"
        );
        assert!(log.since(2, None).events.is_empty());
        for _ in 0..CAPACITY {
            log.push("dtmf", "1000", "t".into(), Map::new());
        }
        let behind = log.since(0, None);
        assert_eq!(
            behind.missed, 2,
            "the two first events fell out of the ring"
        );
        assert_eq!(behind.events.len(), PAGE);
    }
}
