//! The overload policy of a mixer thread (pure): when ticks run long or late, shed voice
//! processing in a fixed order ([`Degradation`]), one stage at a time; give it back one stage
//! at a time once ticks have been cheap for a while.
//!
//! - Overloaded: three ticks in a row cost more than 75 % of the 20 ms budget (a tick's cost
//!   is the CPU time its thread used: time preempted is no work that shedding saves), or ticks
//!   started more than 10 ms late for half a second in a row (a thread that cannot keep up; a
//!   single stall of the process, which shedding work would not cure, does not count). Each
//!   overload drops one more stage, at most one stage per second (so each step can take effect
//!   before the next).
//! - Recovered: a stage comes back after 10 s in a row of ticks whose cost, plus what dropping
//!   that stage saved (measured on the tick after the step, at most a whole tick), stays under
//!   60 % of the budget; so a stage that would overload the thread again stays off. The saving measured counts
//!   half for every 10 s the thread has not been overloaded since (the load it was measured
//!   under may have left: calls end), so a stage is retried eventually; if it overloads the
//!   thread again it is shed again within three ticks, and its saving measured afresh.
//! - Past the last stage nothing more can be shed: late ticks are made up or skipped, and
//!   counted, by the thread.

use std::time::{Duration, Instant};

use crate::controls::Degradation;
use crate::pool::TICK;

/// Tick cost that counts as overload.
pub const HOT: Duration = Duration::from_millis(15);
/// Lateness that counts as overload.
pub const LATE: Duration = Duration::from_millis(10);
/// Tick cost, with the stage added back, under which a stage may be restored.
pub const RESTORE: Duration = Duration::from_millis(12);
const HOT_TICKS: u32 = 3;
const LATE_TICKS: u32 = 25;
const STEP_GAP: Duration = Duration::from_secs(1);
const COOL_FOR: Duration = Duration::from_secs(10);
/// How often the saving of the stage last dropped is halved while the thread is not
/// overloaded.
const SAVING_HALF_LIFE: Duration = Duration::from_secs(10);

/// One mixer thread's degradation state.
#[derive(Debug, Clone, Default)]
pub struct Governor {
    level: Degradation,
    hot: u32,
    late: u32,
    cool_since: Option<Instant>,
    last_step: Option<Instant>,
    /// What dropping each stage saved per tick.
    saved: [Duration; Degradation::ALL.len()],
    /// The stage just dropped and the tick cost before, to measure the saving next tick.
    measuring: Option<(Degradation, Duration)>,
    /// When the current stage's saving was last measured or halved.
    saving_since: Option<Instant>,
}

impl Governor {
    /// The current stage.
    pub fn level(&self) -> Degradation {
        self.level
    }

    /// Takes one tick's cost and lateness at `now`; returns the new stage when it changed.
    pub fn observe(
        &mut self,
        now: Instant,
        cost: Duration,
        lateness: Duration,
    ) -> Option<Degradation> {
        if let Some((stage, before)) = self.measuring.take() {
            // No stage saves more than a whole tick: a longer tick before the step was a
            // stall of the thread as well, which must not keep the stage off for longer.
            self.saved[stage as usize] = before.saturating_sub(cost).min(TICK);
        }
        self.hot = if cost > HOT { self.hot + 1 } else { 0 };
        self.late = if lateness > LATE { self.late + 1 } else { 0 };
        let overloaded = cost > HOT || lateness > LATE;
        let stepped_recently = self
            .last_step
            .is_some_and(|t| now.saturating_duration_since(t) < STEP_GAP);
        if overloaded {
            self.cool_since = None;
            self.saving_since = Some(now);
            if (self.hot >= HOT_TICKS || self.late >= LATE_TICKS) && !stepped_recently {
                let worse = self.level.worse()?;
                self.level = worse;
                self.last_step = Some(now);
                self.hot = 0;
                self.late = 0;
                self.measuring = Some((worse, cost));
                self.saving_since = Some(now);
                return Some(worse);
            }
            return None;
        }
        let since = *self.saving_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= SAVING_HALF_LIFE {
            self.saved[self.level as usize] /= 2;
            self.saving_since = Some(now);
        }
        if cost + self.saved[self.level as usize] >= RESTORE {
            self.cool_since = None;
            return None;
        }
        let since = *self.cool_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= COOL_FOR {
            let better = self.level.better()?;
            self.level = better;
            self.last_step = Some(now);
            self.cool_since = Some(now);
            self.saving_since = Some(now);
            return Some(better);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's tick cost at each stage: 1 ms base, 4 ms of noise suppression, 3 ms of
    /// `auto` echo cancellation and 2 ms of forced echo cancellation, plus an injected slow
    /// stage.
    fn cost(level: Degradation, slow: Duration) -> Duration {
        let mut ms = 1;
        if level < Degradation::NoNoiseSuppression {
            ms += 4;
        }
        if level < Degradation::NoAutoAec {
            ms += 3;
        }
        if level < Degradation::NoAec {
            ms += 2;
        }
        Duration::from_millis(ms) + slow
    }

    #[test]
    fn an_injected_slow_stage_sheds_work_in_order_and_recovers() {
        let start = Instant::now();
        let mut governor = Governor::default();
        let mut steps = Vec::new();
        for tick in 0..3000u64 {
            let now = start + Duration::from_millis(20 * tick);
            // A slow stage of 10 ms from 2 s to 20 s.
            let slow = if (100..1000).contains(&tick) {
                Duration::from_millis(10)
            } else {
                Duration::ZERO
            };
            let cost = cost(governor.level(), slow);
            if let Some(level) = governor.observe(now, cost, Duration::ZERO) {
                steps.push((tick, level));
            }
        }
        let levels: Vec<Degradation> = steps.iter().map(|s| s.1).collect();
        assert_eq!(
            levels,
            [
                Degradation::NoNoiseSuppression, // 20 ms: overload
                Degradation::NoAutoAec,          // 16 ms: still overloaded one second later
                Degradation::NoNoiseSuppression, // slow stage gone at 20 s: 3 + 3 ms for 10 s
                Degradation::Full,               // 6 + 4 ms for 10 s
            ],
            "{steps:?}"
        );
        assert_eq!(steps[0].0, 102, "three hot ticks");
        assert_eq!(steps[1].0, 152, "one second later");
        assert_eq!((steps[2].0, steps[3].0), (1500, 2000), "{steps:?}");
    }

    #[test]
    fn an_expensive_stage_is_retried_once_its_saving_has_aged() {
        let start = Instant::now();
        let mut governor = Governor::default();
        let mut steps = Vec::new();
        for tick in 0..2000u64 {
            let now = start + Duration::from_millis(20 * tick);
            // Noise suppression costs 16 ms while the first rooms are there (1 s), then nothing.
            let ns = if tick < 50 {
                Duration::from_millis(16)
            } else {
                Duration::ZERO
            };
            let cost = Duration::from_millis(1)
                + if governor.level() == Degradation::Full {
                    ns
                } else {
                    Duration::ZERO
                };
            if let Some(level) = governor.observe(now, cost, Duration::ZERO) {
                steps.push((tick, level));
            }
        }
        // Shed after three hot ticks; the 16 ms saving keeps it off until it has halved (10 s),
        // then 10 s of cool ticks bring it back.
        assert_eq!(
            steps,
            [
                (2, Degradation::NoNoiseSuppression),
                (1002, Degradation::Full)
            ],
            "{steps:?}"
        );
    }

    #[test]
    fn a_single_stall_sheds_nothing() {
        let start = Instant::now();
        let mut governor = Governor::default();
        for tick in 0..100u64 {
            let now = start + Duration::from_millis(20 * tick);
            // A 60 ms stall at tick 50: three ticks run late back to back, then it caught up.
            let late = if (50..53).contains(&tick) {
                Duration::from_millis(60 - 20 * (tick - 50))
            } else {
                Duration::ZERO
            };
            assert_eq!(governor.observe(now, Duration::from_millis(2), late), None);
        }
    }

    #[test]
    fn lateness_alone_counts_as_overload_and_the_last_stage_holds() {
        let start = Instant::now();
        let mut governor = Governor::default();
        let mut changes = 0;
        for tick in 0..1000u64 {
            let now = start + Duration::from_millis(20 * tick);
            changes += governor
                .observe(now, Duration::from_millis(1), Duration::from_millis(30))
                .is_some() as u32;
        }
        assert_eq!(governor.level(), Degradation::NoAec);
        assert_eq!(changes, 3);
    }
}
