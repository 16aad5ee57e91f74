//! One registration with a registrar (a SIP trunk's), as a sans-IO state machine: when to send
//! the next REGISTER and for how long, what each outcome does, and the circuit breaker.
//!
//! ```text
//!  Due(now) --send--> Waiting --granted N s--> Registered, refresh at 40-60 % of N
//!     ^                  | 423 Min-Expires M > asked: ask M, send again at once
//!     |                  | failure: Backoff base * 2^(n-1), jittered to 50-100 %, at most max
//!     +---- timer -------+ `threshold` failures in a row: breaker Open for `open_for`,
//!                          then one probe (HalfOpen): granted closes it, a failure reopens it
//! ```
//!
//! The driver calls [`Registration::handle_timeout`] at [`Registration::poll_timeout`]; a
//! [`Send`] it returns is a REGISTER to send (the driver resolves the registrar and reports what
//! happened through [`Registration::handle_outcome`], a failure to reach it as a 503).

use std::time::{Duration, Instant};

use crate::endpoint::RegisterOutcome;

/// How a registration behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// Seconds asked for in each REGISTER (raised by a 423's Min-Expires).
    pub expires: u32,
    /// The first retry's delay after a failure; doubled for each further one.
    pub backoff_base: Duration,
    /// The longest delay between retries.
    pub backoff_max: Duration,
    /// Failures in a row that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before its one probe.
    pub breaker_open_for: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            expires: 3600,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            breaker_threshold: 5,
            breaker_open_for: Duration::from_secs(60),
        }
    }
}

/// The circuit breaker around a registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Requests go as scheduled.
    Closed,
    /// Too many failures in a row: nothing goes until the probe.
    Open,
    /// The one probe is out.
    HalfOpen,
}

impl Breaker {
    /// 0 closed, 1 open, 2 half-open: the `roundtable_trunk_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            Breaker::Closed => 0,
            Breaker::Open => 1,
            Breaker::HalfOpen => 2,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open => "open",
            Breaker::HalfOpen => "half_open",
        }
    }
}

/// A REGISTER to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// Its CSeq number.
    pub cseq: u32,
    /// Seconds to ask for (0 removes the binding).
    pub expires: u32,
}

/// Where the registration stands, for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// A binding is in place (granted and not yet expired).
    pub registered: bool,
    /// When the binding lapses unless refreshed.
    pub expires_at: Option<Instant>,
    /// The last failure (`"503 Service Unavailable"`), cleared by the next success.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// The breaker.
    pub breaker: Breaker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The next REGISTER goes at this time.
    Due(Instant),
    /// A REGISTER is out.
    Waiting,
    /// Unregistered on purpose: nothing more goes.
    Stopped,
}

/// One registration's state.
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    phase: Phase,
    /// Seconds asked for: the configured expiry, raised by 423s.
    asking: u32,
    cseq: u32,
    /// The binding's end, when granted.
    expires_at: Option<Instant>,
    failures: u32,
    breaker: Breaker,
    last_error: Option<String>,
    /// Jitter source (xorshift).
    rng: u64,
    /// Unregistering: the next REGISTER asks for 0, and nothing follows it.
    stopping: bool,
    /// The REGISTER out asks for 0.
    removing: bool,
}

impl Registration {
    /// A registration whose first REGISTER is due at `now`. `seed` varies the jitter.
    pub fn new(now: Instant, config: RegistrationConfig, seed: u64) -> Registration {
        Registration {
            config,
            phase: Phase::Due(now),
            asking: config.expires.max(1),
            cseq: 0,
            expires_at: None,
            failures: 0,
            breaker: Breaker::Closed,
            last_error: None,
            rng: seed | 1,
            stopping: false,
            removing: false,
        }
    }

    /// When [`Registration::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Due(at) => Some(at),
            Phase::Waiting | Phase::Stopped => None,
        }
    }

    /// Time passed: the REGISTER to send now, if one is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Send> {
        match self.phase {
            Phase::Due(at) if at <= now => {}
            _ => return None,
        }
        if self.breaker == Breaker::Open {
            self.breaker = Breaker::HalfOpen;
        }
        self.phase = Phase::Waiting;
        self.cseq += 1;
        self.removing = self.stopping;
        Some(Send {
            cseq: self.cseq,
            expires: if self.stopping { 0 } else { self.asking },
        })
    }

    /// The REGISTER out ended (`cseq`: the number it last used, after a challenge).
    pub fn handle_outcome(&mut self, now: Instant, cseq: u32, outcome: &RegisterOutcome) {
        if self.phase != Phase::Waiting {
            return;
        }
        self.cseq = self.cseq.max(cseq);
        if self.stopping {
            match outcome {
                RegisterOutcome::Granted { expires } if *expires > 0 && !self.removing => {
                    // A refresh that was out when we stopped renewed the binding: remove it.
                    self.expires_at = Some(now + Duration::from_secs(u64::from(*expires)));
                    self.phase = Phase::Due(now);
                }
                _ => {
                    self.phase = Phase::Stopped;
                    self.expires_at = None;
                }
            }
            return;
        }
        match outcome {
            RegisterOutcome::Granted { expires: 0 } => {
                // A 2xx that keeps no binding is no registration.
                self.fail(now, "200 without a binding for our Contact".into());
            }
            RegisterOutcome::Granted { expires } => {
                let granted = Duration::from_secs(u64::from(*expires));
                self.expires_at = Some(now + granted);
                self.failures = 0;
                self.breaker = Breaker::Closed;
                self.last_error = None;
                // 50 % of the grant, give or take 10 % of it.
                let fraction = 0.4 + 0.2 * self.random_unit();
                self.phase = Phase::Due(now + granted.mul_f64(fraction));
            }
            RegisterOutcome::Failed {
                code: 423,
                min_expires: Some(min),
                ..
            } if *min > self.asking => {
                self.asking = *min;
                self.last_error = Some(format!("423 Interval Too Brief (Min-Expires {min})"));
                self.phase = Phase::Due(now);
            }
            RegisterOutcome::Failed { code, reason, .. } => {
                self.fail(now, format!("{code} {reason}"));
            }
        }
    }

    /// Removes the binding: the next REGISTER (at once, unless one is out) asks for 0, and
    /// nothing goes after it.
    pub fn stop(&mut self, now: Instant) {
        self.stopping = true;
        if matches!(self.phase, Phase::Due(_)) {
            self.phase = if self.expires_at.is_some_and(|at| at > now) {
                Phase::Due(now)
            } else {
                Phase::Stopped
            };
        }
    }

    /// Where it stands at `now`.
    pub fn status(&self, now: Instant) -> Status {
        let live = self.expires_at.filter(|at| *at > now);
        Status {
            registered: live.is_some(),
            expires_at: live,
            last_error: self.last_error.clone(),
            failures: self.failures,
            breaker: self.breaker,
        }
    }

    /// The seconds asked for now (the configuration's, or a 423's higher minimum).
    pub fn asking(&self) -> u32 {
        self.asking
    }

    fn fail(&mut self, now: Instant, error: String) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        let delay = if self.breaker == Breaker::HalfOpen
            || self.failures >= self.config.breaker_threshold
        {
            self.breaker = Breaker::Open;
            self.config.breaker_open_for
        } else {
            let doublings = (self.failures - 1).min(20);
            let full = self
                .config
                .backoff_base
                .saturating_mul(1 << doublings)
                .min(self.config.backoff_max);
            full.mul_f64(0.5 + 0.5 * self.random_unit())
        };
        self.phase = Phase::Due(now + delay);
    }

    /// A number in [0, 1).
    fn random_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RegistrationConfig {
        RegistrationConfig {
            expires: 600,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(30),
            breaker_threshold: 3,
            breaker_open_for: Duration::from_secs(60),
        }
    }

    fn granted(expires: u32) -> RegisterOutcome {
        RegisterOutcome::Granted { expires }
    }

    fn failed(code: u16) -> RegisterOutcome {
        RegisterOutcome::Failed {
            code,
            reason: "Service Unavailable".into(),
            min_expires: None,
        }
    }

    #[test]
    fn registers_at_once_and_refreshes_at_half_the_grant_give_or_take_ten_percent() {
        let t0 = Instant::now();
        for seed in 1..50 {
            let mut reg = Registration::new(t0, config(), seed);
            assert_eq!(reg.poll_timeout(), Some(t0));
            let send = reg.handle_timeout(t0).expect("due at once");
            assert_eq!(
                send,
                Send {
                    cseq: 1,
                    expires: 600
                }
            );
            assert_eq!(reg.poll_timeout(), None, "waiting for the answer");
            reg.handle_outcome(t0, 2, &granted(300));
            let status = reg.status(t0);
            assert!(status.registered);
            assert_eq!(status.expires_at, Some(t0 + Duration::from_secs(300)));
            let refresh = reg.poll_timeout().unwrap() - t0;
            assert!(
                (Duration::from_secs(120)..=Duration::from_secs(180)).contains(&refresh),
                "{refresh:?}"
            );
            let next = reg.handle_timeout(t0 + refresh).unwrap();
            assert_eq!(next.cseq, 3, "above the challenged REGISTER's CSeq");
        }
    }

    #[test]
    fn a_423_raises_the_interval_and_asks_again_at_once() {
        let t0 = Instant::now();
        let mut reg = Registration::new(t0, config(), 7);
        reg.handle_timeout(t0).unwrap();
        let too_brief = RegisterOutcome::Failed {
            code: 423,
            reason: "Interval Too Brief".into(),
            min_expires: Some(1800),
        };
        reg.handle_outcome(t0, 1, &too_brief);
        assert_eq!(reg.poll_timeout(), Some(t0));
        assert_eq!(reg.handle_timeout(t0).unwrap().expires, 1800);
        assert_eq!(reg.status(t0).failures, 0, "not a failure");
        // A registrar asking for less than we already ask is broken: a failure.
        let odd = RegisterOutcome::Failed {
            code: 423,
            reason: "Interval Too Brief".into(),
            min_expires: Some(60),
        };
        reg.handle_outcome(t0, 2, &odd);
        assert_eq!(reg.status(t0).failures, 1);
    }

    #[test]
    fn failures_back_off_exponentially_then_open_the_breaker_for_one_probe() {
        let t0 = Instant::now();
        let mut reg = Registration::new(t0, config(), 3);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..3 {
            reg.handle_timeout(now).unwrap();
            reg.handle_outcome(now, 0, &failed(503));
            let next = reg.poll_timeout().unwrap();
            delays.push(next - now);
            now = next;
        }
        // 2 s then 4 s, each jittered to 50-100 %; the third failure opens the breaker.
        assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&delays[0]));
        assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&delays[1]));
        assert_eq!(delays[2], Duration::from_secs(60));
        let status = reg.status(now);
        assert_eq!(status.breaker, Breaker::Open);
        assert_eq!(
            status.last_error.as_deref(),
            Some("503 Service Unavailable")
        );
        assert!(!status.registered);
        // The probe: half-open while out; a failure reopens it for another minute.
        reg.handle_timeout(now).unwrap();
        assert_eq!(reg.status(now).breaker, Breaker::HalfOpen);
        reg.handle_outcome(now, 0, &failed(408));
        assert_eq!(reg.status(now).breaker, Breaker::Open);
        assert_eq!(reg.poll_timeout(), Some(now + Duration::from_secs(60)));
        // A probe that succeeds closes it.
        now += Duration::from_secs(60);
        reg.handle_timeout(now).unwrap();
        reg.handle_outcome(now, 0, &granted(600));
        let status = reg.status(now);
        assert_eq!(status.breaker, Breaker::Closed);
        assert_eq!(status.failures, 0);
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn backoff_never_exceeds_the_maximum() {
        let t0 = Instant::now();
        let mut reg = Registration::new(
            t0,
            RegistrationConfig {
                breaker_threshold: 100,
                ..config()
            },
            11,
        );
        let mut now = t0;
        for _ in 0..60 {
            reg.handle_timeout(now).unwrap();
            reg.handle_outcome(now, 0, &failed(500));
            let next = reg.poll_timeout().unwrap();
            assert!(next - now <= Duration::from_secs(30));
            now = next;
        }
    }

    #[test]
    fn a_binding_outlives_failed_refreshes_until_it_expires() {
        let t0 = Instant::now();
        let mut reg = Registration::new(t0, config(), 5);
        reg.handle_timeout(t0).unwrap();
        reg.handle_outcome(t0, 1, &granted(100));
        let refresh = reg.poll_timeout().unwrap();
        reg.handle_timeout(refresh).unwrap();
        reg.handle_outcome(refresh, 2, &failed(503));
        assert!(reg.status(refresh).registered, "still bound");
        assert!(!reg.status(t0 + Duration::from_secs(100)).registered);
    }

    #[test]
    fn stopping_sends_expires_zero_once_and_then_nothing() {
        let t0 = Instant::now();
        let mut reg = Registration::new(t0, config(), 9);
        reg.handle_timeout(t0).unwrap();
        reg.handle_outcome(t0, 1, &granted(600));
        reg.stop(t0);
        assert_eq!(reg.handle_timeout(t0).unwrap().expires, 0);
        reg.handle_outcome(t0, 2, &granted(0));
        assert_eq!(reg.poll_timeout(), None);
        assert!(!reg.status(t0).registered);
    }

    #[test]
    fn stopping_while_a_refresh_is_out_removes_the_binding_after_it() {
        let t0 = Instant::now();
        let mut reg = Registration::new(t0, config(), 21);
        reg.handle_timeout(t0).unwrap();
        reg.stop(t0);
        assert_eq!(reg.poll_timeout(), None, "waits for the REGISTER out");
        reg.handle_outcome(t0, 1, &granted(600));
        assert_eq!(
            reg.handle_timeout(t0).unwrap().expires,
            0,
            "then removes it"
        );
        reg.handle_outcome(t0, 2, &granted(0));
        assert_eq!(reg.poll_timeout(), None);
    }

    #[test]
    fn late_or_duplicate_outcomes_change_nothing() {
        let t0 = Instant::now();
        let mut reg = Registration::new(t0, config(), 13);
        reg.handle_outcome(t0, 5, &granted(600));
        assert!(!reg.status(t0).registered, "nothing was out");
        reg.handle_timeout(t0).unwrap();
        reg.handle_outcome(t0, 1, &granted(600));
        let due = reg.poll_timeout();
        reg.handle_outcome(t0, 1, &failed(503));
        assert_eq!(reg.poll_timeout(), due);
        assert_eq!(reg.status(t0).failures, 0);
    }
}
