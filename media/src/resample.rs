//! Sample-rate conversion of 20 ms frames between a leg's codec rate and its room's rate.
//!
//! Telephony rates (8, 16, 48 kHz) are fixed and locked to each other, so synchronous
//! resamplers fit: exact ratio, no drift. 8 <-> 16 kHz (G.711 legs in the default 16 kHz rooms,
//! the common case) uses a half-band FIR ([`halfband`], about 80 dB, five times cheaper); the
//! other pairs rubato's `Fft` (>100 dB). Each direction of each leg owns one; equal rates pass
//! through untouched.

mod halfband;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::error::MediaError;

/// Samples in a 20 ms frame at `rate` Hz.
pub fn frame_len(rate: u32) -> usize {
    rate as usize / 50
}

/// FFT blocks per 20 ms frame.
const SUB_CHUNKS: usize = 4;

/// Converts 20 ms frames from one rate to another.
pub struct Resampler {
    /// Both converters are boxed: they are large, and a leg holds resamplers it may never use
    /// (a G.711 leg in a room mixing at 8 kHz), whose bytes would otherwise sit between the
    /// state it uses every tick.
    fft: Option<Box<Fft<f32>>>,
    halfband: Option<Box<halfband::HalfBand>>,
    input: Vec<f32>,
    output: Vec<f32>,
    /// Where [`Resampler::skip`] puts output nobody reads (FFT path only).
    unused: Vec<i16>,
    from: u32,
    to: u32,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resampler({} -> {} Hz)", self.from, self.to)
    }
}

impl Resampler {
    /// A resampler of 20 ms frames from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Resampler, MediaError> {
        let (in_len, out_len) = (frame_len(from), frame_len(to));
        let halfband = match (from, to) {
            (8000, 16000) => Some(Box::new(halfband::HalfBand::new(true))),
            (16000, 8000) => Some(Box::new(halfband::HalfBand::new(false))),
            _ => None,
        };
        let fft = if from == to || halfband.is_some() {
            None
        } else {
            // Four FFT blocks per 20 ms frame: the delay is half a block (2.5 ms of output)
            // rather than half a frame. Fixed input with a block that divides the frame makes
            // every call produce exactly one output frame.
            let fft = Fft::new_custom(
                from as usize,
                to as usize,
                in_len,
                SUB_CHUNKS,
                1,
                rubato::WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .map_err(|_| MediaError::Resampler("unsupported pair of rates"))?;
            if fft.input_frames_next() != in_len || fft.output_frames_next() != out_len {
                return Err(MediaError::Resampler("the rates do not fit 20 ms frames"));
            }
            Some(Box::new(fft))
        };
        Ok(Resampler {
            fft,
            halfband,
            input: vec![0.0; in_len],
            output: vec![0.0; out_len],
            unused: Vec::new(),
            from,
            to,
        })
    }

    /// The input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// The output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// The delay this resampler adds, in output samples.
    pub fn delay(&self) -> usize {
        match (&self.halfband, &self.fft) {
            (Some(h), _) => h.delay(),
            (None, Some(f)) => f.output_delay(),
            (None, None) => 0,
        }
    }

    /// Takes one frame without producing its output (nobody needs it this tick): the filter's
    /// history stays continuous, so the next [`Resampler::process`] is exact. Only the
    /// half-band path saves work; the FFT path converts anyway.
    pub fn skip(&mut self, input: &[i16]) {
        if let Some(halfband) = self.halfband.as_mut() {
            if input.len() == frame_len(self.from) {
                halfband.skip(input);
            }
            return;
        }
        if self.fft.is_some() {
            // The FFT path keeps state inside rubato: convert, into a buffer kept for this.
            let mut unused = std::mem::take(&mut self.unused);
            unused.resize(frame_len(self.to), 0);
            self.process(input, &mut unused);
            self.unused = unused;
        }
    }

    /// Converts one frame: `input` holds `from / 50` samples, `output` receives `to / 50`.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) {
        if let Some(halfband) = self.halfband.as_mut() {
            let (n, m) = (frame_len(self.from), frame_len(self.to));
            if input.len() == n && output.len() == m {
                halfband.process(input, output);
            } else {
                output.fill(0);
            }
            return;
        }
        let Some(fft) = self.fft.as_mut() else {
            let n = input.len().min(output.len());
            output[..n].copy_from_slice(&input[..n]);
            output[n..].fill(0);
            return;
        };
        for (f, &s) in self.input.iter_mut().zip(input) {
            *f = f32::from(s) / 32768.0;
        }
        let frames_in = self.input.len();
        let frames_out = self.output.len();
        let written = match (
            InterleavedSlice::new(&self.input[..], 1, frames_in),
            InterleavedSlice::new_mut(&mut self.output[..], 1, frames_out),
        ) {
            (Ok(inp), Ok(mut out)) => fft
                .process_into_buffer(&inp, &mut out, None)
                .map_or(0, |(_, n)| n),
            _ => 0,
        };
        for (o, &f) in output
            .iter_mut()
            .zip(&self.output[..written.min(frames_out)])
        {
            *o = crate::sample::to_i16(f * 32768.0);
        }
        let written = written.min(output.len());
        output[written..].fill(0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn tone(rate: u32, freq: f64, frames: usize) -> Vec<i16> {
        (0..frame_len(rate) * frames)
            .map(|n| {
                (10000.0 * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    /// SNR in dB of a steady tone: least-squares fit of a sine and cosine at `freq`, the rest
    /// is noise (independent of the delay).
    pub(crate) fn tone_snr(samples: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (n, &y) in samples.iter().enumerate() {
            let (s, c, y) = ((w * n as f64).sin(), (w * n as f64).cos(), f64::from(y));
            ss += s * s;
            sc += s * c;
            cc += c * c;
            ys += y * s;
            yc += y * c;
        }
        let det = ss * cc - sc * sc;
        let (a, b) = ((ys * cc - yc * sc) / det, (yc * ss - ys * sc) / det);
        let (mut signal, mut noise) = (0.0, 0.0);
        for (n, &y) in samples.iter().enumerate() {
            let fit = a * (w * n as f64).sin() + b * (w * n as f64).cos();
            signal += fit * fit;
            noise += (f64::from(y) - fit).powi(2);
        }
        10.0 * (signal / noise.max(1e-9)).log10()
    }

    /// Runs `input` through `from -> to -> from` frame by frame; returns the steady part.
    fn round_trip(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let (mut up, mut down) = (
            Resampler::new(from, to).unwrap(),
            Resampler::new(to, from).unwrap(),
        );
        let (mut mid, mut out) = (vec![0i16; frame_len(to)], vec![0i16; frame_len(from)]);
        let mut result = Vec::new();
        for frame in input.chunks(frame_len(from)) {
            up.process(frame, &mut mid);
            down.process(&mid, &mut out);
            result.extend_from_slice(&out);
        }
        result.split_off(frame_len(from) * 5)
    }

    #[test]
    fn round_trips_keep_a_tone_clean() {
        for (from, to, freq) in [
            (8000, 16000, 1000.0),
            (8000, 16000, 3000.0),
            (16000, 8000, 3000.0),
            (48000, 16000, 1000.0),
            (8000, 48000, 440.0),
            (16000, 48000, 3000.0),
        ] {
            let out = round_trip(from, to, &tone(from, freq, 50));
            let snr = tone_snr(&out, from, freq);
            eprintln!("{from} -> {to} -> {from} Hz, {freq} Hz tone: SNR {snr:.1} dB");
            assert!(
                snr > 60.0,
                "{from} -> {to} -> {from} Hz at {freq} Hz: SNR {snr:.1} dB"
            );
        }
    }

    #[test]
    fn equal_rates_pass_through_and_frames_have_the_right_length() {
        let mut same = Resampler::new(16000, 16000).unwrap();
        assert_eq!(same.delay(), 0);
        let input = tone(16000, 500.0, 1);
        let mut out = vec![0i16; 320];
        same.process(&input, &mut out);
        assert_eq!(out, input);
        let up = Resampler::new(8000, 16000).unwrap();
        eprintln!("8 -> 16 kHz delay: {} samples", up.delay());
        assert!(up.delay() <= 160, "delay {} samples at 16 kHz", up.delay());
    }

    #[test]
    fn downsampling_removes_what_the_lower_rate_cannot_carry() {
        // A 6 kHz tone at 16 kHz has no place at 8 kHz (Nyquist 4 kHz): it must not alias to 2 kHz.
        let mut down = Resampler::new(16000, 8000).unwrap();
        let input = tone(16000, 6000.0, 20);
        let mut out = vec![0i16; 160];
        let mut energy = 0.0;
        for (i, frame) in input.chunks(320).enumerate() {
            down.process(frame, &mut out);
            if i >= 5 {
                energy += out.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
            }
        }
        let rms = (energy / (15.0 * 160.0)).sqrt();
        assert!(
            rms < 10.0,
            "aliased energy rms {rms:.1} (input amplitude 10000)"
        );
    }
}
