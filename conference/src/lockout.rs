//! Brute-force protection for PINs across calls (`[sip.lockout]`): failures are counted per
//! source address and per room within a window; reaching `max_failures` locks that address or
//! room out for a back-off that doubles with each further lockout.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// `[sip.lockout]`: brute-force protection of PINs across calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failures per source address or per room within `window` that trigger a lockout.
    pub max_failures: usize,
    /// The counting window.
    pub window: Duration,
    /// The first lockout's length; each further lockout doubles it.
    pub backoff: Duration,
}

/// Most addresses or rooms tracked; beyond it, entries without a lockout are forgotten first.
const MAX_TRACKED: usize = 100_000;

/// What a lockout applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One caller address.
    Source,
    /// One room.
    Room,
}

impl Scope {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Source => "source",
            Scope::Room => "room",
        }
    }
}

#[derive(Debug, Default)]
struct Failures {
    recent: VecDeque<Instant>,
    locked_until: Option<Instant>,
    lockouts: u32,
}

/// Failure counts and lockouts, keyed by address and by room.
#[derive(Debug)]
pub struct LockoutTracker {
    config: Lockout,
    sources: HashMap<IpAddr, Failures>,
    rooms: HashMap<String, Failures>,
}

impl LockoutTracker {
    /// An empty tracker.
    pub fn new(config: Lockout) -> LockoutTracker {
        LockoutTracker {
            config,
            sources: HashMap::new(),
            rooms: HashMap::new(),
        }
    }

    /// Whether calls from `source` are refused now.
    pub fn source_locked(&self, source: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|f| f.locked_until.is_some_and(|t| now < t))
    }

    /// Whether PIN attempts against `room` are refused now.
    pub fn room_locked(&self, room: &str, now: Instant) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|f| f.locked_until.is_some_and(|t| now < t))
    }

    /// Counts a failure; returns the scopes that became locked out by it.
    pub fn record(&mut self, source: IpAddr, room: Option<&str>, now: Instant) -> Vec<Scope> {
        let mut locked = Vec::new();
        if count(&mut self.sources, source, self.config, now) {
            locked.push(Scope::Source);
        }
        if let Some(room) = room
            && count(&mut self.rooms, room.to_string(), self.config, now)
        {
            locked.push(Scope::Room);
        }
        locked
    }
}

fn count<K: Hash + Eq>(
    map: &mut HashMap<K, Failures>,
    key: K,
    config: Lockout,
    now: Instant,
) -> bool {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, f| f.locked_until.is_some_and(|t| now < t));
    }
    let f = map.entry(key).or_default();
    while f
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > config.window)
    {
        f.recent.pop_front();
    }
    f.recent.push_back(now);
    if f.recent.len() < config.max_failures {
        return false;
    }
    f.recent.clear();
    let backoff = config.backoff.saturating_mul(1 << f.lockouts.min(16));
    f.lockouts += 1;
    f.locked_until = Some(now + backoff);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_backs_off_longer_each_time() {
        let config = Lockout {
            max_failures: 3,
            window: Duration::from_secs(300),
            backoff: Duration::from_secs(30),
        };
        let mut t = LockoutTracker::new(config);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(t.record(ip, Some("4242"), t0).is_empty());
        assert!(t.record(ip, None, t0).is_empty());
        assert_eq!(t.record(ip, Some("4242"), t0), [Scope::Source]);
        assert!(t.source_locked(ip, t0 + Duration::from_secs(29)));
        assert!(!t.source_locked(ip, t0 + Duration::from_secs(31)));
        assert!(!t.room_locked("4242", t0), "the room had only two failures");
        let t1 = t0 + Duration::from_secs(40);
        for _ in 0..3 {
            t.record(ip, None, t1);
        }
        assert!(
            t.source_locked(ip, t1 + Duration::from_secs(59)),
            "second lockout lasts 60 s"
        );
        // Failures outside the window do not add up.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        t.record(other, None, t0);
        t.record(other, None, t0 + Duration::from_secs(301));
        assert!(
            t.record(other, None, t0 + Duration::from_secs(302))
                .is_empty()
        );
    }
}
