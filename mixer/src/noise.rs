//! Noise suppression per leg: WebRTC's suppressor (through sonora), which learns the noise
//! spectrum and attenuates it under and between words.
//!
//! The room runs it only on the talkers it mixes (at most `top_k`), so a big room pays for it on
//! a handful of legs, not all of them.

use sonora::config::{NoiseSuppression, NoiseSuppressionLevel};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::MixerError;

/// One leg's noise suppressor at the room's rate.
pub struct NoiseSuppressor {
    apm: AudioProcessing,
    chunk: usize,
    out: Vec<i16>,
}

impl std::fmt::Debug for NoiseSuppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSuppressor").field("chunk", &self.chunk).finish_non_exhaustive()
    }
}

impl NoiseSuppressor {
    /// A suppressor for 20 ms frames at `rate` (8000, 16000 or 48000).
    pub fn new(rate: u32) -> NoiseSuppressor {
        let config = Config {
            noise_suppression: Some(NoiseSuppression { level: NoiseSuppressionLevel::High, ..Default::default() }),
            ..Default::default()
        };
        let stream = StreamConfig::new(rate, 1);
        let apm = AudioProcessing::builder().config(config).capture_config(stream).render_config(stream).build();
        let chunk = rate as usize / 100;
        NoiseSuppressor { apm, chunk, out: vec![0; chunk] }
    }

    /// Suppresses noise in a 20 ms frame in place (two 10 ms steps).
    pub fn process(&mut self, frame: &mut [i16]) -> Result<(), MixerError> {
        for part in frame.chunks_mut(self.chunk) {
            if part.len() != self.chunk {
                return Err(MixerError::FrameSize(part.len()));
            }
            self.apm.process_capture_i16(part, &mut self.out).map_err(|e| MixerError::Processing(format!("{e:?}")))?;
            part.copy_from_slice(&self.out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_audio::{Noise, speech};
    use crate::vad::level_db;

    #[test]
    fn steady_noise_under_speech_drops_by_10_db() {
        let speech = speech(0);
        let mut noise = Noise::new(7);
        let mut ns = NoiseSuppressor::new(16000);
        // Noise alone for 2 s, then speech over the same noise. The noise is measured in the
        // pauses of the speech (from 60 ms after a word ends), the speech where it is loud.
        let (mut noise_in, mut noise_out, mut speech_in, mut speech_out) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let mut quiet_run = 0;
        let power = |x: &[i16]| x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
        for f in 0..100 + speech.len() / 320 {
            let clean: Vec<i16> = if f < 100 { vec![0; 320] } else { speech[(f - 100) * 320..(f - 99) * 320].to_vec() };
            let mut frame: Vec<i16> = clean.iter().map(|&s| s.saturating_add(noise.sample(600.0))).collect();
            let before = frame.clone();
            ns.process(&mut frame).unwrap();
            quiet_run = if level_db(&clean) < -70.0 { quiet_run + 1 } else { 0 };
            if f < 100 {
                continue;
            }
            if quiet_run > 3 {
                noise_in += power(&before);
                noise_out += power(&frame);
            } else if level_db(&clean) > -30.0 {
                speech_in += power(&clean);
                speech_out += power(&frame);
            }
        }
        let reduction = 10.0 * (noise_in / noise_out).log10();
        let speech_change = 10.0 * (speech_out / speech_in).log10();
        println!("noise in pauses reduced by {reduction:.1} dB, speech changed by {speech_change:.1} dB");
        assert!(reduction >= 10.0, "noise reduced by {reduction:.1} dB");
        assert!(speech_change.abs() < 3.0, "speech level changed by {speech_change:.1} dB");
    }
}
