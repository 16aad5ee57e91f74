//! RFC 3261 timers, in one table keyed by kind (section 17 and table 4).

use std::time::Duration;

/// Base timer values. Tests shorten them through configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// How long a message can stay in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Every timer the endpoint runs, by its RFC 3261 letter where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// INVITE client: retransmit the request (UDP); doubles without the T2 cap.
    A,
    /// INVITE client: transaction timeout.
    B,
    /// INVITE client: absorb retransmitted non-2xx finals (and ACK them again).
    D,
    /// INVITE client (RFC 6026): absorb retransmitted 2xx finals (and ACK them again).
    M,
    /// INVITE server: retransmit a non-2xx final response (UDP).
    G,
    /// INVITE server: give up waiting for the ACK of a non-2xx final response.
    H,
    /// INVITE server: absorb ACK retransmissions after Confirmed.
    I,
    /// Non-INVITE server: absorb request retransmissions after the final response.
    J,
    /// Non-INVITE client: retransmit the request (UDP).
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// Non-INVITE client: absorb response retransmissions.
    K,
    /// UAS core: retransmit a 2xx to INVITE until the ACK (RFC 3261 13.3.1.4).
    Retransmit2xx,
    /// UAS core: no ACK for our 2xx within 64*T1: the dialog ends with BYE.
    AckTimeout,
    /// Not RFC 3261: the configured delay between 180 Ringing and 200 OK.
    AnswerDelay,
}

impl TimerConfig {
    /// The interval for `kind`; `attempt` counts earlier firings of a retransmit timer, so that
    /// the interval doubles up to T2. `reliable` transports skip retransmission and absorption.
    pub fn duration(&self, kind: TimerKind, attempt: u32, reliable: bool) -> Option<Duration> {
        let backoff = || self.t1.saturating_mul(1 << attempt.min(16)).min(self.t2);
        match kind {
            TimerKind::A if reliable => None,
            TimerKind::A => Some(self.t1.saturating_mul(1 << attempt.min(16))),
            TimerKind::D if reliable => Some(Duration::ZERO),
            TimerKind::D => Some((self.t1 * 64).max(Duration::from_secs(32))),
            TimerKind::B | TimerKind::M => Some(self.t1 * 64),
            TimerKind::G | TimerKind::E | TimerKind::Retransmit2xx if reliable => None,
            TimerKind::G | TimerKind::E | TimerKind::Retransmit2xx => Some(backoff()),
            TimerKind::H | TimerKind::F | TimerKind::AckTimeout => Some(self.t1 * 64),
            TimerKind::I | TimerKind::K if reliable => Some(Duration::ZERO),
            TimerKind::I | TimerKind::K => Some(self.t4),
            TimerKind::J if reliable => Some(Duration::ZERO),
            TimerKind::J => Some(self.t1 * 64),
            // Configured per endpoint, not derived from T1.
            TimerKind::AnswerDelay => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_interval_doubles_to_t2() {
        let c = TimerConfig::default();
        let got: Vec<_> = (0..6)
            .map(|a| c.duration(TimerKind::G, a, false).unwrap())
            .collect();
        let ms: Vec<u128> = got.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(c.duration(TimerKind::E, 0, true), None);
        assert_eq!(
            c.duration(TimerKind::AckTimeout, 0, true),
            Some(Duration::from_secs(32))
        );
    }
}
