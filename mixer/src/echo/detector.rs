//! Does a leg echo? (pure) The test `auto` mode runs on every leg, so that big rooms pay for
//! echo cancellation only on the legs that send the room back.
//!
//! It keeps the last 3 s of two level envelopes (10 ms blocks, in dB): what the leg was sent
//! and what it sent back, before any cancellation. Every 0.5 s (from 1.5 s of history on) it
//! correlates the received envelope with the sent one delayed by 0 to 500 ms. The best delay
//! is kept too: it is the echo path's bulk delay, which a canceller with a short reach needs.
//! An echo path (network, phone, room) changes levels and colour but keeps the envelope's
//! shape, so a leg echoes when the best correlation passes 0.5 twice in a row at the same
//! delay (within 20 ms: two unrelated talkers can correlate by chance, but at a new delay each
//! time); it stops echoing after 10 s of evaluations below that, counted only while it was sent
//! something to echo. Levels in dB make the test blind to the echo's attenuation. Cost: about
//! 15 k multiply-adds per leg per 0.5 s over linear copies of the rings, staggered by a per-leg
//! phase so that a thousand legs do not evaluate on the same tick.

use crate::vad::level_db;

/// Envelope blocks correlated at most (3 s).
const WINDOW: usize = 300;
/// Envelope blocks correlated at least (1 s).
const MIN_WINDOW: usize = 100;
/// Largest delay tried, in blocks (500 ms).
const MAX_LAG: usize = 50;
/// Blocks each envelope's ring holds.
const RING: usize = WINDOW + MAX_LAG;
/// Blocks between evaluations (0.5 s).
const EVERY: u64 = 50;
/// Lowest level counted, so digital silence does not dominate the statistics.
const FLOOR_DB: f32 = -80.0;
/// Correlation that counts as echo.
const THRESHOLD: f32 = 0.5;
/// Positive evaluations in a row, at the same delay, that turn echo on.
const ON_AFTER: u32 = 2;
/// Sent onsets a window needs before their echo is judged.
const MIN_ONSETS: u32 = 6;
/// The share of sent onsets an echo must repeat at its delay.
const MIN_ONSETS_ECHOED: f32 = 0.6;
/// How far (blocks) the delay of positive evaluations in a row may wander (20 ms).
const LAG_TOLERANCE: usize = 2;
/// Negative evaluations in a row (with something sent) that turn it off.
const OFF_AFTER: u32 = 20;
/// Spread in dB the sent envelope needs over the window to be worth testing.
const MIN_SENT_SPREAD_DB: f32 = 6.0;
/// Spread in dB the heard envelope needs over the window to hold an echo at all.
const MIN_HEARD_SPREAD_DB: f32 = 6.0;
/// Level steps (of at least [`STEP_DB`] between blocks) the sent envelope needs: speech has
/// dozens in a few seconds; a tone that starts (and the answer that starts with it) has one,
/// which would otherwise correlate perfectly.
const MIN_SENT_STEPS: usize = 20;
const STEP_DB: f32 = 3.0;

/// One leg's echo detector.
#[derive(Debug, Clone)]
pub struct EchoDetector {
    sent: Vec<f32>,
    heard: Vec<f32>,
    /// Blocks written so far (the rings' write position).
    blocks: u64,
    phase: u64,
    echo: bool,
    positives: u32,
    negatives: u32,
    score: f32,
    /// The delay (blocks) of the best correlation, when it counted as echo.
    lag: Option<usize>,
    /// The delay of the last positive evaluation, while positives run in a row.
    positive_lag: Option<usize>,
}

impl EchoDetector {
    /// A detector evaluating at block offset `phase` (spreads the work over ticks).
    pub fn new(phase: u64) -> EchoDetector {
        EchoDetector {
            sent: vec![FLOOR_DB; RING],
            heard: vec![FLOOR_DB; RING],
            blocks: 0,
            phase: phase % EVERY,
            echo: false,
            positives: 0,
            negatives: 0,
            score: 0.0,
            lag: None,
            positive_lag: None,
        }
    }

    /// Whether the leg echoes, as last decided.
    pub fn echo(&self) -> bool {
        self.echo
    }

    /// The best correlation of the last evaluation (0 when there was nothing to test).
    pub fn score(&self) -> f32 {
        self.score
    }

    /// The echo path's delay found by the last evaluation, in ms, if it found echo.
    pub fn delay_ms(&self) -> Option<u32> {
        self.lag.map(|blocks| blocks as u32 * 10)
    }

    /// Takes one tick: what the leg sent (before any cancellation) and what it was sent, both
    /// 20 ms (each at any rate: only their levels count). Returns the new decision when it
    /// changed.
    pub fn observe(&mut self, received: &[i16], sent: &[i16]) -> Option<bool> {
        self.observe_levels(half_levels(received), half_levels(sent))
    }

    /// [`EchoDetector::observe`] with both frames' [`half_levels`] already measured: a shared
    /// output's frame goes to many legs and is measured once for all of them, and a leg's input
    /// is measured before cancellation changes it.
    pub fn observe_levels(&mut self, heard: [f32; 2], sent: [f32; 2]) -> Option<bool> {
        let mut changed = None;
        for half in 0..2 {
            // A constant divisor: a multiplication, not a division, per block.
            let slot = (self.blocks % RING as u64) as usize;
            self.heard[slot] = heard[half];
            self.sent[slot] = sent[half];
            self.blocks += 1;
            if self.blocks >= (MIN_WINDOW + MAX_LAG) as u64 && self.blocks % EVERY == self.phase {
                changed = changed.or(self.evaluate());
            }
        }
        changed
    }

    fn evaluate(&mut self) -> Option<bool> {
        let newest = ((self.blocks - 1) % RING as u64) as usize;
        let window = (self.blocks as usize - MAX_LAG).min(WINDOW);
        // Both envelopes newest first, out of their rings: the loops below then run over plain
        // slices (no index arithmetic per element), which the compiler vectorises.
        let mut sent = [0f32; RING];
        let mut heard = [0f32; WINDOW];
        for (s, &x) in sent
            .iter_mut()
            .zip(newest_first(&self.sent, newest))
            .take(window + MAX_LAG)
        {
            *s = x;
        }
        for (h, &x) in heard
            .iter_mut()
            .zip(newest_first(&self.heard, newest))
            .take(window)
        {
            *h = x;
        }
        let sent = &sent[..window + MAX_LAG];
        let heard = &heard[..window];
        let (lo, hi) = sent
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        let steps = sent
            .windows(2)
            .filter(|w| (w[0] - w[1]).abs() >= STEP_DB)
            .count();
        if hi - lo < MIN_SENT_SPREAD_DB || steps < MIN_SENT_STEPS {
            self.score = 0.0;
            return None; // Nothing was sent worth echoing: no evidence either way.
        }
        let (quiet, loud) = heard
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &h| (lo.min(h), hi.max(h)));
        if loud - quiet < MIN_HEARD_SPREAD_DB {
            // Sent something worth echoing, heard nothing that varies: evidence of no echo
            // (most listeners, most of the time), without the correlation's cost.
            return self.judge(0.0, 0);
        }
        // Sums in f64: a flat envelope's variance is a small difference of large sums.
        let n = window as f64;
        let sy: f64 = heard.iter().map(|&y| f64::from(y)).sum();
        let syy: f64 = heard.iter().map(|&y| f64::from(y) * f64::from(y)).sum();
        // The sent envelope's sums over each lag's window slide by one block per lag.
        let mut sx: f64 = sent[..window].iter().map(|&x| f64::from(x)).sum();
        let mut sxx: f64 = sent[..window]
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        let mut best = f32::MIN;
        let mut best_lag = 0;
        for lag in 0..=MAX_LAG {
            if lag > 0 {
                let (gone, come) = (f64::from(sent[lag - 1]), f64::from(sent[lag + window - 1]));
                sx += come - gone;
                sxx += come * come - gone * gone;
            }
            let sxy = f64::from(dot(&sent[lag..lag + window], heard));
            let cov = sxy - sx * sy / n;
            let var = (sxx - sx * sx / n) * (syy - sy * sy / n);
            let correlation = (cov / var.sqrt()) as f32;
            if var > 1e-3 && correlation > best {
                best = correlation;
                best_lag = lag;
            }
        }
        // Correlation alone is weak evidence: two talkers' on/off envelopes correlate by chance
        // over a few seconds. An echo also repeats what was sent onset by onset, at the delay.
        let echoed = onsets_echoed(sent, heard, best_lag);
        self.judge(
            if echoed >= MIN_ONSETS_ECHOED {
                best.max(0.0)
            } else {
                best.clamp(0.0, THRESHOLD)
            },
            best_lag,
        )
    }

    /// Takes an evaluation's `score` (at delay `best_lag`): updates the runs of positive and
    /// negative evaluations and returns the new decision when it changed.
    fn judge(&mut self, score: f32, best_lag: usize) -> Option<bool> {
        self.score = score;
        self.lag = (self.score > THRESHOLD).then_some(best_lag);
        if self.score > THRESHOLD {
            self.negatives = 0;
            // A real echo path keeps its delay; unrelated speech peaks at a new lag each time.
            let steady = self
                .positive_lag
                .is_some_and(|previous| previous.abs_diff(best_lag) <= LAG_TOLERANCE);
            self.positives = if steady { self.positives + 1 } else { 1 };
            self.positive_lag = Some(best_lag);
            if !self.echo && self.positives >= ON_AFTER {
                self.echo = true;
                return Some(true);
            }
        } else {
            self.positives = 0;
            self.positive_lag = None;
            self.negatives += 1;
            if self.echo && self.negatives >= OFF_AFTER {
                self.echo = false;
                return Some(false);
            }
        }
        None
    }
}

/// A ring's blocks newest first, `newest` being the slot written last.
fn newest_first(ring: &[f32], newest: usize) -> impl Iterator<Item = &f32> {
    ring[..=newest]
        .iter()
        .rev()
        .chain(ring[newest + 1..].iter().rev())
}

/// The levels (dBFS, floored) of a 20 ms frame's two 10 ms halves: the detector's envelope
/// blocks.
pub fn half_levels(frame: &[i16]) -> [f32; 2] {
    let (first, second) = frame.split_at(frame.len() / 2);
    [
        level_db(first).max(FLOOR_DB),
        level_db(&second[..first.len()]).max(FLOOR_DB),
    ]
}

/// The share of the sent envelope's onsets (the first block of a rise of [`STEP_DB`] or more
/// from one block to the next) that the heard envelope repeats `lag` blocks later, within a block; both envelopes
/// newest first. Too few onsets to judge count as none repeated.
fn onsets_echoed(sent: &[f32], heard: &[f32], lag: usize) -> f32 {
    let step = |env: &[f32], ago: usize| ago + 1 < env.len() && env[ago] - env[ago + 1] >= STEP_DB;
    // The first block of a rise (a syllable's rise can take a few blocks).
    let rise = |env: &[f32], ago: usize| step(env, ago) && !step(env, ago + 1);
    let (mut onsets, mut echoed) = (0u32, 0u32);
    for ago in 1..heard.len().saturating_sub(1) {
        if !rise(sent, ago + lag) {
            continue;
        }
        onsets += 1;
        if (ago - 1..=ago + 1).any(|a| rise(heard, a)) {
            echoed += 1;
        }
    }
    if onsets < MIN_ONSETS {
        0.0
    } else {
        echoed as f32 / onsets as f32
    }
}

/// The dot product of two equally long slices in eight independent lanes (a single running
/// sum is a chain of dependent adds that the compiler may not reorder, so it would not
/// vectorise).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (x_blocks, y_blocks) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = x_blocks
        .remainder()
        .iter()
        .zip(y_blocks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in x_blocks.zip(y_blocks) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
