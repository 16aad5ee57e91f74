//! Sounds a room plays (pure): prompts to one leg, the hold sound and announcements to all.
//!
//! Sounds are kept at the room's rate (`audio.rate`), but a room mixes at its legs' highest
//! codec rate (see [`crate::room`]): a room of telephone callers mixes at 8 kHz. A sound is
//! therefore converted frame by frame to whatever rate its output asks for.

use std::sync::Arc;

use roundtable_media::resample::{Resampler, frame_len};

/// A sound played from a position, looped or once.
#[derive(Debug)]
pub(crate) struct Playing {
    samples: Arc<[i16]>,
    /// The samples' rate (the room's).
    rate: u32,
    position: usize,
    /// This frame at the sound's rate, and its converter to the output's rate, once needed.
    convert: Option<(Resampler, Vec<i16>)>,
}

impl Playing {
    /// Plays `samples` (at `rate` Hz) from their start.
    pub(crate) fn new(samples: Arc<[i16]>, rate: u32) -> Playing {
        Playing {
            samples,
            rate,
            position: 0,
            convert: None,
        }
    }

    /// Whether these are the samples playing (the same sound, not merely equal samples).
    pub(crate) fn plays(&self, samples: &Arc<[i16]>) -> bool {
        Arc::ptr_eq(&self.samples, samples)
    }

    /// Writes the sound's next frame into `out` (20 ms at the output's rate, found from its
    /// length); returns false when a one-shot sound ended with this frame or before.
    pub(crate) fn next_into(&mut self, out: &mut [i16], looped: bool) -> bool {
        if out.len() == frame_len(self.rate) {
            return Self::read_from(&self.samples, &mut self.position, out, looped);
        }
        let to = out.len() as u32 * 50;
        let (resampler, frame) = match &mut self.convert {
            Some((resampler, frame)) if resampler.to_rate() == to => (resampler, frame),
            slot => match Resampler::new(self.rate, to) {
                Ok(resampler) => {
                    let (resampler, frame) =
                        slot.insert((resampler, vec![0; frame_len(self.rate)]));
                    (resampler, frame)
                }
                Err(_) => {
                    // Not a pair of telephony rates: nothing sensible to play.
                    out.fill(0);
                    return false;
                }
            },
        };
        let more = Self::read_from(&self.samples, &mut self.position, frame, looped);
        resampler.process(frame, out);
        more
    }

    /// Writes the next `out.len()` samples from `position` (wrapping when looped, else silence
    /// past the end).
    fn read_from(samples: &[i16], position: &mut usize, out: &mut [i16], looped: bool) -> bool {
        let len = samples.len();
        if len == 0 {
            out.fill(0);
            return false;
        }
        for o in out.iter_mut() {
            if *position >= len {
                if !looped {
                    *o = 0;
                    continue;
                }
                *position = 0;
            }
            *o = samples[*position];
            *position += 1;
        }
        looped || *position < len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Arc<[i16]> {
        (0..n).map(|i| i as i16).collect()
    }

    #[test]
    fn a_one_shot_sound_plays_once_then_ends() {
        let mut sound = Playing::new(ramp(500), 16000);
        let mut out = vec![0; 320];
        assert!(sound.next_into(&mut out, false));
        assert_eq!(out[..3], [0, 1, 2]);
        assert!(!sound.next_into(&mut out, false), "its last frame ends it");
        assert_eq!(out[179], 499);
        assert!(
            out[180..].iter().all(|&s| s == 0),
            "the rest of the last frame is silence"
        );
    }

    #[test]
    fn a_looped_sound_starts_over() {
        let mut sound = Playing::new(ramp(200), 16000);
        let mut out = vec![0; 320];
        assert!(sound.next_into(&mut out, true));
        assert_eq!((out[199], out[200]), (199, 0));
    }

    #[test]
    fn a_sound_at_the_rooms_rate_plays_at_the_mixs_rate() {
        // A 1 kHz tone at 16 kHz, asked for in 8 kHz frames: the tone comes out at 8 kHz.
        let tone: Arc<[i16]> = (0..16000)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(n) / 16000.0).sin())
                    as i16
            })
            .collect();
        let mut sound = Playing::new(tone, 16000);
        let mut all = Vec::new();
        let mut out = vec![0; 160];
        for _ in 0..25 {
            sound.next_into(&mut out, false);
            all.extend_from_slice(&out);
        }
        let tail = &all[800..];
        let rms =
            (tail.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / tail.len() as f64).sqrt();
        assert!((rms - 8000.0 / 2f64.sqrt()).abs() < 300.0, "rms {rms}");
        // A sinusoid at 1 kHz sampled at 8 kHz repeats every 8 samples.
        for i in 800..all.len() - 8 {
            assert!(
                (i32::from(all[i]) - i32::from(all[i + 8])).abs() < 200,
                "sample {i}"
            );
        }
    }
}
