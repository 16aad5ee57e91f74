//! A peak limiter (pure) for every output of the mixer: a sum of loud talkers is turned down
//! smoothly to a ceiling instead of being hard-clipped.
//!
//! The frame is cut into 20 sub-blocks (1 ms each). The gain at each sub-block boundary is at
//! most the gain both neighbouring sub-blocks need to stay under the ceiling, and it recovers
//! towards 1 with a 60 ms time constant. Inside a sub-block the gain moves linearly between its
//! two boundary values, both of which are at most what the sub-block needs, so no sample ever
//! exceeds the ceiling and there is no added delay. The only discontinuity is at a frame's first
//! boundary when a peak starts in its very first millisecond.

use roundtable_media::sample::to_i16;

/// Sub-blocks per frame.
const BLOCKS: usize = 20;
/// The ceiling: -1 dBFS.
pub const CEILING: f32 = 29_204.0;
/// How much of the distance to unity gain is recovered per sub-block (1 - e^(-1/60)).
const RELEASE: f32 = 0.0165;

/// A gain this close to 1 is taken as 1 (0.001 dB).
const UNITY: f32 = 0.9999;

/// The largest magnitude in `samples`, in eight independent lanes (so it vectorises).
fn peak(samples: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let blocks = samples.chunks_exact(8);
    let tail = blocks.remainder().iter().fold(0f32, |m, x| m.max(x.abs()));
    for block in blocks {
        for i in 0..8 {
            lanes[i] = lanes[i].max(block[i].abs());
        }
    }
    lanes.iter().fold(tail, |m, &x| m.max(x))
}

/// One output's limiter state.
#[derive(Debug, Clone)]
pub struct Limiter {
    enabled: bool,
    gain: f32,
}

impl Limiter {
    /// A limiter at unity gain; a disabled one only saturates to 16 bits.
    pub fn new(enabled: bool) -> Limiter {
        Limiter { enabled, gain: 1.0 }
    }

    /// The gain at the end of the last frame (1.0 when nothing was limited).
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Writes `input` (16-bit scale, any magnitude) limited to the ceiling into `out`.
    pub fn process(&mut self, input: &[f32], out: &mut [i16]) {
        if !self.enabled {
            for (o, &x) in out.iter_mut().zip(input) {
                *o = x as i16; // `as` saturates
            }
            return;
        }
        let len = input.len().min(out.len());
        let block = len / BLOCKS;
        if block == 0 {
            for (o, &x) in out.iter_mut().zip(input) {
                *o = x.clamp(-CEILING, CEILING) as i16;
            }
            return;
        }
        if self.gain == 1.0 && peak(&input[..len]) <= CEILING {
            // Nothing to limit (most frames): a plain conversion.
            for (o, &x) in out[..len].iter_mut().zip(input) {
                *o = to_i16(x);
            }
            return;
        }
        let mut need = [1.0f32; BLOCKS];
        for (k, n) in need.iter_mut().enumerate() {
            let peak = peak(&input[k * block..(k + 1) * block]);
            if peak > CEILING {
                *n = CEILING / peak;
            }
        }
        let mut bounds = [1.0f32; BLOCKS + 1];
        bounds[0] = self.gain.min(need[0]);
        for k in 1..=BLOCKS {
            let target = if k < BLOCKS {
                need[k - 1].min(need[k])
            } else {
                need[BLOCKS - 1]
            };
            let released = bounds[k - 1] + (1.0 - bounds[k - 1]) * RELEASE;
            // Within 0.001 dB of unity is unity (the release alone would never get there).
            let released = if released > UNITY { 1.0 } else { released };
            bounds[k] = target.min(released);
        }
        for k in 0..BLOCKS {
            let (start, end) = (bounds[k], bounds[k + 1]);
            let step = (end - start) / block as f32;
            let range = k * block..(k + 1) * block;
            for (j, (o, &x)) in out[range.clone()].iter_mut().zip(&input[range]).enumerate() {
                *o = to_i16(x * (start + step * j as f32));
            }
        }
        // Samples past the last whole sub-block (frames not divisible by 20) use the last gain.
        for (o, &x) in out[BLOCKS * block..len]
            .iter_mut()
            .zip(&input[BLOCKS * block..len])
        {
            *o = to_i16((x * bounds[BLOCKS]).clamp(-CEILING, CEILING));
        }
        self.gain = bounds[BLOCKS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amplitude: f32, freq: f32, n0: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| amplitude * (std::f32::consts::TAU * freq * (n0 + i) as f32 / 16000.0).sin())
            .collect()
    }

    #[test]
    fn quiet_signals_pass_untouched() {
        let mut limiter = Limiter::new(true);
        let input = sine(10_000.0, 440.0, 0, 320);
        let mut out = vec![0i16; 320];
        limiter.process(&input, &mut out);
        for (o, x) in out.iter().zip(&input) {
            assert_eq!(*o, x.round() as i16);
        }
        assert_eq!(limiter.gain(), 1.0);
    }

    #[test]
    fn ten_full_scale_talkers_stay_under_the_ceiling_near_it() {
        let mut limiter = Limiter::new(true);
        let freqs = [
            220.0, 330.0, 440.0, 550.0, 660.0, 770.0, 880.0, 990.0, 1100.0, 1210.0,
        ];
        let mut peak = 0i32;
        for frame in 0..100 {
            let mut sum = vec![0.0f32; 320];
            for f in freqs {
                for (s, x) in sum.iter_mut().zip(sine(32767.0, f, frame * 320, 320)) {
                    *s += x;
                }
            }
            let mut out = vec![0i16; 320];
            limiter.process(&sum, &mut out);
            for &o in &out {
                assert!(
                    f32::from(o).abs() <= CEILING + 1.0,
                    "sample {o} above the ceiling"
                );
                if frame >= 50 {
                    peak = peak.max(i32::from(o).abs());
                }
            }
        }
        let db = 20.0 * (peak as f32 / CEILING).log10();
        assert!(db > -3.0, "peak level {db:.1} dB from the ceiling");
    }

    #[test]
    fn gain_recovers_after_a_burst() {
        let mut limiter = Limiter::new(true);
        let mut out = vec![0i16; 320];
        limiter.process(&sine(120_000.0, 500.0, 0, 320), &mut out);
        assert!(limiter.gain() < 0.3);
        for frame in 0..25 {
            limiter.process(&sine(1000.0, 500.0, frame * 320, 320), &mut out);
        }
        assert!(limiter.gain() > 0.99, "{}", limiter.gain());
    }

    #[test]
    fn disabled_only_saturates() {
        let mut limiter = Limiter::new(false);
        let mut out = vec![0i16; 2];
        limiter.process(&[50_000.0, -100.0], &mut out);
        assert_eq!(out, [32767, -100]);
    }
}
