//! Retries with exponential backoff and full jitter behind a circuit breaker, sans-IO: the
//! caller asks when it may try next and reports how it went, passing `now`.
//!
//! Policy: after [`OPEN_AFTER`] failures in a row the breaker opens for [`OPEN_FOR`]: nobody
//! calls the store; then one probe goes through (half-open); its success closes the breaker,
//! its failure opens it again. Between tries of one operation the wait doubles from
//! [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], each wait drawn uniformly from zero to that bound.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that open the breaker.
pub const OPEN_AFTER: u32 = 5;
/// How long it stays open before a probe.
pub const OPEN_FOR: Duration = Duration::from_secs(10);
/// The first backoff bound.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The largest backoff bound.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The breaker's state, as the `roundtable_storage_breaker_state` metric shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through (0).
    Closed,
    /// Calls wait (1).
    Open,
    /// One probe is allowed (2).
    HalfOpen,
}

impl BreakerState {
    /// The metric's value.
    pub fn value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    seed: u64,
}

/// A circuit breaker shared by every upload to one store.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

impl Default for Breaker {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Breaker {
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probing: false,
                seed,
            }),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go now; `Err(until)` says when to ask again. In half-open state
    /// only one caller gets through.
    pub fn admit(&self, now: Instant) -> Result<(), Instant> {
        let mut inner = self.lock();
        match inner.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until),
            Some(_) if inner.probing => Err(now + Duration::from_millis(500)),
            Some(_) => {
                inner.probing = true;
                Ok(())
            }
        }
    }

    /// Reports a call's outcome.
    pub fn record(&self, ok: bool, now: Instant) {
        let mut inner = self.lock();
        inner.probing = false;
        if ok {
            inner.failures = 0;
            inner.open_until = None;
        } else {
            inner.failures += 1;
            if inner.failures >= OPEN_AFTER || inner.open_until.is_some() {
                inner.open_until = Some(now + OPEN_FOR);
            }
        }
    }

    /// The wait before try `attempt` (0 = the first retry): uniform in [0, bound].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = FIRST_BACKOFF
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_BACKOFF);
        let mut inner = self.lock();
        // xorshift64: jitter needs no cryptographic randomness.
        let mut x = inner.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        inner.seed = x;
        bound.mul_f64((x % 10_000) as f64 / 10_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_probes_once_and_closes() {
        let b = Breaker::default();
        let t = Instant::now();
        for _ in 0..OPEN_AFTER - 1 {
            b.record(false, t);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        b.record(false, t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(b.admit(t), Err(t + OPEN_FOR));
        let later = t + OPEN_FOR;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.admit(later).is_ok());
        assert!(b.admit(later).is_err(), "one probe at a time");
        b.record(false, later);
        assert_eq!(
            b.state(later),
            BreakerState::Open,
            "a failed probe opens it again"
        );
        let again = later + OPEN_FOR;
        assert!(b.admit(again).is_ok());
        b.record(true, again);
        assert_eq!(b.state(again), BreakerState::Closed);
        assert!(b.admit(again).is_ok());
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let b = Breaker::default();
        let waits: Vec<Duration> = (0..200).map(|_| b.backoff(0)).collect();
        assert!(waits.iter().all(|w| *w <= FIRST_BACKOFF));
        assert!(
            waits.iter().any(|w| *w < FIRST_BACKOFF / 2)
                && waits.iter().any(|w| *w > FIRST_BACKOFF / 2),
            "jittered"
        );
        assert!((0..200).map(|_| b.backoff(30)).all(|w| w <= MAX_BACKOFF));
        assert!(
            (0..200)
                .map(|_| b.backoff(3))
                .any(|w| w > FIRST_BACKOFF * 2)
        );
    }
}
