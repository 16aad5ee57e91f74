//! Wall-clock time for recording names and API timestamps, read through [`WallClock`] so tests
//! can fix it. Monotonic time never comes from here.

use std::time::SystemTime;

/// A source of UTC wall-clock time.
pub trait WallClock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

pub use roundtable_recorder::time::{iso_basic, parse_rfc3339, rfc3339};
