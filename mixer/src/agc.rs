//! Level control per leg (pure): brings each talker's speech towards one level, so a quiet
//! caller on a poor line and a loud one on a headset sound alike.
//!
//! It learns the leg's speech level only from frames the voice detector calls speech (so noise
//! and silence are never pumped up), and moves its gain towards `target - level` by at most
//! 10 dB per second, within -10..+20 dB. The gain is ramped across each frame, so it never
//! steps.

use roundtable_media::sample::to_i16;

/// The speech level every leg is brought to, in dBFS.
pub const TARGET_DB: f32 = -22.0;
const MAX_GAIN_DB: f32 = 20.0;
const MIN_GAIN_DB: f32 = -10.0;
/// Largest gain change per 20 ms frame (10 dB/s).
const SLEW_DB: f32 = 0.2;
/// Weight of a new speech frame in the level estimate (about a 0.5 s memory).
const LEVEL_WEIGHT: f32 = 0.04;

/// One leg's level controller.
#[derive(Debug, Clone)]
pub struct LevelControl {
    level_db: Option<f32>,
    gain_db: f32,
}

impl Default for LevelControl {
    fn default() -> Self {
        LevelControl {
            level_db: None,
            gain_db: 0.0,
        }
    }
}

impl LevelControl {
    /// The gain it applies now, in dB.
    pub fn gain_db(&self) -> f32 {
        self.gain_db
    }

    /// Learns from a frame of `level_db` (before this stage) when `speech`, then applies the
    /// (ramped) gain to `frame` in place.
    pub fn process(&mut self, frame: &mut [i16], level_db: f32, speech: bool) {
        if speech {
            let level = match self.level_db {
                None => level_db,
                Some(l) => l + (level_db - l) * LEVEL_WEIGHT,
            };
            self.level_db = Some(level);
        }
        let start = self.gain_db;
        if let Some(level) = self.level_db {
            let wanted = (TARGET_DB - level).clamp(MIN_GAIN_DB, MAX_GAIN_DB);
            self.gain_db += (wanted - start).clamp(-SLEW_DB, SLEW_DB);
        }
        if start == 0.0 && self.gain_db == 0.0 {
            return;
        }
        let (from, to) = (db_to_gain(start), db_to_gain(self.gain_db));
        let step = (to - from) / frame.len().max(1) as f32;
        for (i, s) in frame.iter_mut().enumerate() {
            *s = to_i16(f32::from(*s) * (from + step * i as f32));
        }
    }
}

/// A dB value as a linear factor.
pub fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::level_db;

    /// Syllable-like bursts of a two-tone signal at `rms_db` dBFS.
    fn talker(rms_db: f32, index: usize) -> Vec<i16> {
        let amplitude = db_to_gain(rms_db) * 32768.0;
        let on = (index / 10) % 3 != 2;
        (0..320)
            .map(|i| {
                let t = (index * 320 + i) as f32 / 16000.0;
                let x = ((std::f32::consts::TAU * 180.0 * t).sin()
                    + (std::f32::consts::TAU * 730.0 * t).sin())
                    * amplitude;
                if on { x as i16 } else { 0 }
            })
            .collect()
    }

    #[test]
    fn a_quiet_talker_is_brought_near_the_target() {
        let mut agc = LevelControl::default();
        let mut last = Vec::new();
        for i in 0..250 {
            let mut frame = talker(-35.0, i);
            let level = level_db(&frame);
            agc.process(&mut frame, level, level > -60.0);
            if i >= 200 && level > -60.0 {
                last.push(level_db(&frame));
            }
        }
        let out = last.iter().sum::<f32>() / last.len() as f32;
        assert!(
            (out - TARGET_DB).abs() < 6.0,
            "output {out:.1} dBFS, target {TARGET_DB}"
        );
    }

    #[test]
    fn silence_does_not_move_the_gain() {
        let mut agc = LevelControl::default();
        for _ in 0..100 {
            let mut frame = vec![3i16; 320];
            let level = level_db(&frame);
            agc.process(&mut frame, level, false);
            assert_eq!(frame, vec![3i16; 320]);
        }
        assert_eq!(agc.gain_db(), 0.0);
    }
}
