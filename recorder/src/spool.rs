//! The spool's bookkeeping: how many bytes wait in it (bounded by `storage.spool_quota_mib`),
//! and how far each running recording's objects are durable there (what an uploader may send).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Share of the quota past which new recordings are refused (running ones go on).
pub const REFUSE_AT: f64 = 0.8;

/// Bytes in the spool that are not yet safe in the store, against a quota.
#[derive(Debug)]
pub struct SpoolAccount {
    used: AtomicU64,
    written: AtomicU64,
    failed_writes: AtomicU64,
    quota: u64,
}

impl SpoolAccount {
    /// An empty spool with `quota` bytes.
    pub fn new(quota: u64) -> SpoolAccount {
        SpoolAccount {
            used: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed_writes: AtomicU64::new(0),
            quota,
        }
    }

    /// Bytes now held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The quota in bytes.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Bytes ever counted in (written by recorders, or found at start-up).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Spool writes that failed (a full disk): their audio became a gap.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    pub(crate) fn write_failed(&self) {
        self.failed_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts bytes written.
    pub fn add(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts bytes that left the spool (uploaded, or kept as the final local object).
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Whether a new recording may start: below [`REFUSE_AT`] of the quota.
    pub fn accepts_new(&self) -> bool {
        (self.used() as f64) < self.quota as f64 * REFUSE_AT
    }
}

/// How far a running recording's objects are durable in the spool.
#[derive(Debug, Default)]
pub struct Progress {
    sizes: Mutex<BTreeMap<String, u64>>,
    closed: AtomicBool,
}

impl Progress {
    /// Durable bytes of each object (`mix.wav`, `legs/7.wav`), header included.
    pub fn sizes(&self) -> BTreeMap<String, u64> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the recording is closed (every object complete).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn update(&self, sizes: BTreeMap<String, u64>) {
        let mut known = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        for (object, size) in sizes {
            known.insert(object, size);
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}
