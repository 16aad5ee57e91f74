//! A 2:1 / 1:2 half-band FIR (pure), for the default case of G.711 legs in 16 kHz rooms.
//!
//! A half-band low-pass (cutoff at a quarter of the high rate) has every other tap zero but the
//! centre one, so each output costs half the taps and one of the two phases is a plain copy.
//! Kaiser-windowed sinc, 63 taps (32 non-zero besides the centre), beta 7.9: about 80 dB of
//! stop band from 4.65 kHz at 16 kHz, pass band flat to 3.35 kHz (the telephone band). Delay:
//! 31 samples at the high rate (1.9 ms).

use crate::sample::to_i16;

/// Non-zero taps on each side of the centre.
const SIDE: usize = 16;
/// Kaiser window shape for about 80 dB of stop band.
const BETA: f64 = 7.86;

/// Modified Bessel function of the first kind, order 0 (series; ample for the window).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term) = (1.0, 1.0);
    for k in 1..50 {
        term *= (x / 2.0) / k as f64;
        sum += term * term;
    }
    sum
}

/// The half-band filter's taps at odd offsets -(2*SIDE-1)..=(2*SIDE-1), in order; the centre
/// tap is 0.5 and even offsets are 0.
fn odd_taps() -> [f32; 2 * SIDE] {
    let half_span = (2 * SIDE) as f64;
    let mut taps = [0f32; 2 * SIDE];
    for (k, tap) in taps.iter_mut().enumerate() {
        let offset = 2.0 * (k as f64 - SIDE as f64) + 1.0;
        let x = offset / 2.0;
        let sinc = (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x);
        let ratio = offset / half_span;
        let window = bessel_i0(BETA * (1.0 - ratio * ratio).max(0.0).sqrt()) / bessel_i0(BETA);
        *tap = (0.5 * sinc * window) as f32;
    }
    taps
}

/// One direction of 2:1 conversion of 20 ms frames.
#[derive(Debug, Clone)]
pub(super) struct HalfBand {
    up: bool,
    /// Odd-offset taps, reversed so each output is a plain dot product over a window.
    taps: [f32; 2 * SIDE],
    /// Upsampling: the input (history, then the frame). Downsampling: its even samples.
    even: Vec<f32>,
    /// Downsampling: the input's odd samples (history, then the frame's).
    odd: Vec<f32>,
    /// Filter outputs of the frame being converted.
    acc: Vec<f32>,
}

/// Outputs filtered together (see `HalfBand::filter`).
const BLOCK: usize = 16;

/// Input samples kept from one frame to the next (per stream).
const HISTORY: usize = 2 * SIDE - 1;

impl HalfBand {
    /// Doubles the rate (`up`) or halves it.
    pub(super) fn new(up: bool) -> HalfBand {
        let mut taps = odd_taps();
        taps.reverse();
        if up {
            // Zero-stuffing halves the level; the filter makes it up.
            taps.iter_mut().for_each(|t| *t *= 2.0);
        }
        HalfBand {
            up,
            taps,
            even: vec![0.0; HISTORY],
            odd: vec![0.0; HISTORY],
            acc: Vec::new(),
        }
    }

    /// The delay in output samples.
    pub(super) fn delay(&self) -> usize {
        if self.up { 2 * SIDE - 1 } else { SIDE - 1 }
    }

    /// Converts one frame (`output` is twice or half `input`'s length).
    pub(super) fn process(&mut self, input: &[i16], output: &mut [i16]) {
        if self.up {
            self.upsample(input, output);
        } else {
            self.downsample(input, output);
        }
    }

    /// Filters the `outputs` windows of `input` (each `2 * SIDE` long, one sample apart) into
    /// `acc`, [`BLOCK`] outputs at a time: their sums stay in registers (eight SIMD vectors,
    /// independent, so the adds pipeline) through all the taps. A dot product per output would
    /// be one chain of dependent adds that the compiler may not reorder.
    fn filter(taps: &[f32; 2 * SIDE], input: &[f32], outputs: usize, acc: &mut Vec<f32>) {
        acc.clear();
        acc.resize(outputs, 0.0);
        let blocked = outputs - outputs % BLOCK;
        for (b, out) in acc[..blocked].chunks_exact_mut(BLOCK).enumerate() {
            let mut lanes = [0f32; BLOCK];
            for (t, &tap) in taps.iter().enumerate() {
                let start = BLOCK * b + t;
                let Ok(x) = <&[f32; BLOCK]>::try_from(&input[start..start + BLOCK]) else {
                    continue;
                };
                for i in 0..BLOCK {
                    lanes[i] += tap * x[i];
                }
            }
            out.copy_from_slice(&lanes);
        }
        for (m, out) in acc.iter_mut().enumerate().skip(blocked) {
            *out = taps.iter().zip(&input[m..]).map(|(t, x)| t * x).sum();
        }
    }

    /// Takes a frame into the history without filtering it.
    pub(super) fn skip(&mut self, input: &[i16]) {
        self.append(input);
        self.keep_history();
    }

    /// Appends a frame's input: all of it (upsampling), or its even and odd samples apart.
    fn append(&mut self, input: &[i16]) {
        if self.up {
            self.even.extend(input.iter().map(|&s| f32::from(s)));
        } else {
            for pair in input.chunks_exact(2) {
                self.even.push(f32::from(pair[0]));
                self.odd.push(f32::from(pair[1]));
            }
        }
    }

    /// Drops all but the last [`HISTORY`] input samples of each stream.
    fn keep_history(&mut self) {
        for stream in [&mut self.even, &mut self.odd] {
            let used = stream.len().saturating_sub(HISTORY);
            stream.drain(..used);
        }
    }

    fn upsample(&mut self, input: &[i16], output: &mut [i16]) {
        self.append(input);
        let pairs = output.len() / 2;
        Self::filter(&self.taps, &self.even, pairs, &mut self.acc);
        for (m, pair) in output.chunks_exact_mut(2).enumerate() {
            pair[0] = to_i16(self.acc[m]);
            // The other phase is the centre tap alone: the input, delayed.
            pair[1] = self.even[m + SIDE] as i16;
        }
        self.keep_history();
    }

    fn downsample(&mut self, input: &[i16], output: &mut [i16]) {
        self.append(input);
        Self::filter(&self.taps, &self.even, output.len(), &mut self.acc);
        for (m, out) in output.iter_mut().enumerate() {
            let centre = 0.5 * self.odd[m + SIDE - 1];
            *out = to_i16(self.acc[m] + centre);
        }
        self.keep_history();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: f64, freq: f64, len: usize, n0: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (10000.0 * (std::f64::consts::TAU * freq * (n0 + n) as f64 / rate).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn the_telephone_band_keeps_its_level_both_ways() {
        for freq in [300.0, 1000.0, 3000.0] {
            let (mut up, mut down) = (HalfBand::new(true), HalfBand::new(false));
            let (mut wide, mut narrow) = (vec![0i16; 320], vec![0i16; 160]);
            let (mut level_wide, mut level_narrow) = (0.0, 0.0);
            for f in 0..20 {
                let input = tone(8000.0, freq, 160, f * 160);
                up.process(&input, &mut wide);
                down.process(&wide, &mut narrow);
                if f >= 5 {
                    level_wide += rms(&wide) / 15.0;
                    level_narrow += rms(&narrow) / 15.0;
                }
            }
            let expected = 10000.0 / 2f64.sqrt();
            for level in [level_wide, level_narrow] {
                let db = 20.0 * (level / expected).log10();
                assert!(db.abs() < 0.1, "{freq} Hz: {db:.2} dB");
            }
        }
    }

    #[test]
    fn a_skipped_frame_leaves_the_next_one_exact() {
        for up in [true, false] {
            let (rate, len, out_len) = if up {
                (8000.0, 160, 320)
            } else {
                (16000.0, 320, 160)
            };
            let (mut full, mut skipping) = (HalfBand::new(up), HalfBand::new(up));
            let (mut a, mut b) = (vec![0i16; out_len], vec![0i16; out_len]);
            for f in 0..4 {
                let input = tone(rate, 700.0, len, f * len);
                full.process(&input, &mut a);
                if f == 2 {
                    skipping.skip(&input);
                } else {
                    skipping.process(&input, &mut b);
                }
            }
            assert_eq!(a, b, "up {up}");
        }
    }

    #[test]
    fn dc_passes_and_both_phases_agree() {
        let mut up = HalfBand::new(true);
        let mut out = vec![0i16; 320];
        for _ in 0..3 {
            up.process(&[1000; 160], &mut out);
        }
        assert!(
            out.iter().all(|&s| (s - 1000).abs() <= 1),
            "{:?}",
            &out[..8]
        );
    }
}
