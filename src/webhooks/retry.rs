//! What to do after a delivery attempt, without any IO: the verdict on an answer (or its
//! absence), the wait before the next attempt (exponential backoff with full jitter), and the
//! breaker's state.

use std::time::Duration;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered with this status (and `Retry-After`, in seconds, if it gave one).
    Answered {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, as delta-seconds.
        retry_after: Option<u64>,
    },
    /// No answer within the endpoint's timeout.
    TimedOut,
    /// No connection, or it broke: this says why.
    Failed(String),
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 410: the endpoint wants no more; it is removed.
    Gone,
    /// Another 4xx (or a redirect, which is not followed): the event goes to dead letters now.
    Rejected(u16),
    /// 5xx, 408, 429, a timeout or a broken connection: try again later (no sooner than
    /// `not_before` when the endpoint said so).
    Retry {
        /// Why, for the endpoint's `last_error`.
        why: String,
        /// The endpoint's `Retry-After`.
        not_before: Option<Duration>,
    },
}

/// The verdict on an attempt.
pub fn judge(attempt: &Attempt) -> Verdict {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(status) => Verdict::Delivered,
        Attempt::Answered { status: 410, .. } => Verdict::Gone,
        Attempt::Answered {
            status,
            retry_after,
        } if *status >= 500 || *status == 408 || *status == 429 => Verdict::Retry {
            why: format!("answered {status}"),
            not_before: retry_after.map(Duration::from_secs),
        },
        Attempt::Answered { status, .. } => Verdict::Rejected(*status),
        Attempt::TimedOut => Verdict::Retry {
            why: "no answer within timeout_s".into(),
            not_before: None,
        },
        Attempt::Failed(why) => Verdict::Retry {
            why: why.clone(),
            not_before: None,
        },
    }
}

/// The shortest backoff ceiling: the first retry waits up to this long.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);

/// Failures in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 5;

/// The wait before the next attempt after `failures` failures in a row (1 after the first):
/// a uniformly random share (`random` in 0..=1) of `min(cap, base * 2^(failures-1))`, which
/// spreads the retries of many bridges to one receiver ("full jitter"). The endpoint's
/// `Retry-After` sets a floor, the cap still bounds it.
pub fn backoff(
    failures: u32,
    random: f64,
    cap: Duration,
    not_before: Option<Duration>,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(cap.max(BACKOFF_BASE));
    let wait = ceiling.mul_f64(random.clamp(0.0, 1.0));
    match not_before {
        Some(floor) => wait.max(floor.min(cap)),
        None => wait,
    }
}

/// The breaker: closed while attempts succeed; open after [`BREAKER_FAILURES`] in a row, when
/// the endpoint is tried once per backoff period (the head event's retry is the probe) and the
/// other endpoints go on undisturbed; closed again by the first success.
pub fn breaker_open(failures: u32) -> bool {
    failures >= BREAKER_FAILURES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn answers_are_judged_as_standard_webhook_senders_do() {
        assert_eq!(judge(&answered(200)), Verdict::Delivered);
        assert_eq!(judge(&answered(204)), Verdict::Delivered);
        assert_eq!(judge(&answered(410)), Verdict::Gone);
        for status in [301, 400, 401, 403, 404, 413, 422] {
            assert_eq!(judge(&answered(status)), Verdict::Rejected(status));
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(judge(&answered(status)), Verdict::Retry { .. }),
                "{status}"
            );
        }
        assert!(matches!(judge(&Attempt::TimedOut), Verdict::Retry { .. }));
        let limited = Attempt::Answered {
            status: 429,
            retry_after: Some(7),
        };
        assert_eq!(
            judge(&limited),
            Verdict::Retry {
                why: "answered 429".into(),
                not_before: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(1, 1.0, cap, None), Duration::from_millis(500));
        assert_eq!(backoff(2, 1.0, cap, None), Duration::from_secs(1));
        assert_eq!(backoff(5, 1.0, cap, None), Duration::from_secs(8));
        assert_eq!(backoff(40, 1.0, cap, None), cap, "capped");
        assert_eq!(backoff(40, 0.0, cap, None), Duration::ZERO, "full jitter");
        assert_eq!(backoff(5, 0.5, cap, None), Duration::from_secs(4));
        assert_eq!(
            backoff(1, 0.0, cap, Some(Duration::from_secs(30))),
            Duration::from_secs(30),
            "Retry-After is a floor"
        );
        assert_eq!(
            backoff(1, 0.0, cap, Some(Duration::from_secs(86_400))),
            cap,
            "bounded by the cap"
        );
        assert!(!breaker_open(4) && breaker_open(5));
    }
}
