//! Voice activity per leg (pure): is this leg talking, and how loud is it?
//!
//! An energy detector against a tracked noise floor, cheap enough to run on every leg of a big
//! room every tick. A frame is speech when it is 10 dB above the leg's noise floor and above
//! -55 dBFS. The floor starts at -45 dBFS, follows drops at once, rises by 0.3 dB per frame and
//! never goes above -45 dBFS: steady noise below that is learnt (and never mixed), while a steady
//! tone or loud speech keeps counting as speech.
//!
//! Two states come out of it:
//! - `active`, for mixing: on at the first speech frame, off after 300 ms without speech;
//! - `talking`, for events: on after 60 ms of speech in a row, off after 800 ms without speech.

/// Level of digital silence, the floor of every level here.
pub const SILENCE_DB: f32 = -96.0;
const FLOOR_MAX_DB: f32 = -45.0;
const FLOOR_RISE_DB: f32 = 0.3;
const ABOVE_FLOOR_DB: f32 = 10.0;
const MIN_SPEECH_DB: f32 = -55.0;
/// Frames of silence before a leg stops being mixed (300 ms).
const HANGOVER: u32 = 15;
/// Speech frames in a row that start a talking event (60 ms).
const ONSET: u32 = 3;
/// Silent frames that end a talking event (800 ms).
const RELEASE: u32 = 40;

/// The level of a frame in dBFS (full-scale sine at about -3 dB).
pub fn level_db(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return SILENCE_DB;
    }
    // Exact in integers (a square fits an i32, a frame's sum an i64), which also vectorises.
    let energy = frame
        .iter()
        .map(|&s| i64::from(i32::from(s) * i32::from(s)))
        .sum::<i64>() as f64
        / frame.len() as f64;
    if energy < 1e-3 {
        return SILENCE_DB;
    }
    (10.0 * (energy / (32768.0 * 32768.0)).log10()).max(f64::from(SILENCE_DB)) as f32
}

/// A change of a leg's talking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Talk {
    /// The leg started talking.
    Started,
    /// The leg stopped talking.
    Stopped,
}

/// One leg's voice activity state.
#[derive(Debug, Clone)]
pub struct VoiceDetector {
    floor_db: f32,
    level_db: f32,
    speech_run: u32,
    silence_run: u32,
    speech: bool,
    active: bool,
    talking: bool,
}

impl Default for VoiceDetector {
    fn default() -> Self {
        VoiceDetector {
            floor_db: FLOOR_MAX_DB,
            level_db: SILENCE_DB,
            speech_run: 0,
            silence_run: u32::MAX / 2,
            speech: false,
            active: false,
            talking: false,
        }
    }
}

impl VoiceDetector {
    /// Takes one frame's level (from [`level_db`]) and returns a talking change, if any.
    pub fn update(&mut self, level_db: f32) -> Option<Talk> {
        let speech = level_db > (self.floor_db + ABOVE_FLOOR_DB).max(MIN_SPEECH_DB);
        self.speech = speech;
        if level_db < self.floor_db {
            self.floor_db = level_db.max(SILENCE_DB);
        } else {
            self.floor_db = (self.floor_db + FLOOR_RISE_DB)
                .min(level_db)
                .min(FLOOR_MAX_DB);
        }
        if speech {
            self.speech_run += 1;
            self.silence_run = 0;
            self.level_db = if self.active {
                0.7 * self.level_db + 0.3 * level_db
            } else {
                level_db
            };
        } else {
            self.speech_run = 0;
            self.silence_run = self.silence_run.saturating_add(1);
            self.level_db = (self.level_db - 0.5).max(SILENCE_DB);
        }
        self.active = self.silence_run <= HANGOVER;
        if !self.talking && self.speech_run >= ONSET {
            self.talking = true;
            return Some(Talk::Started);
        }
        if self.talking && self.silence_run >= RELEASE {
            self.talking = false;
            return Some(Talk::Stopped);
        }
        None
    }

    /// Whether the last frame was speech.
    pub fn speech(&self) -> bool {
        self.speech
    }

    /// Whether the leg is speaking or was within the hangover: it may be mixed.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether the leg is talking (the state events report).
    pub fn talking(&self) -> bool {
        self.talking
    }

    /// The smoothed level of its recent speech, in dBFS.
    pub fn speech_level_db(&self) -> f32 {
        self.level_db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(amplitude: f64, n0: usize) -> Vec<i16> {
        (0..320)
            .map(|i| (amplitude * (0.3 * (n0 + i) as f64).sin()) as i16)
            .collect()
    }

    #[test]
    fn levels() {
        assert_eq!(level_db(&[0; 320]), SILENCE_DB);
        let full = level_db(&frame(32767.0, 0));
        assert!((full + 3.0).abs() < 0.2, "{full}");
    }

    #[test]
    fn speech_starts_and_stops_talking_with_hangover() {
        let mut vad = VoiceDetector::default();
        let mut changes = Vec::new();
        for i in 0..50 {
            changes.extend(vad.update(level_db(&frame(30.0, i * 320))).map(|c| (i, c)));
        }
        assert!(
            !vad.active() && changes.is_empty(),
            "quiet noise is not speech"
        );
        for i in 50..100 {
            changes.extend(
                vad.update(level_db(&frame(8000.0, i * 320)))
                    .map(|c| (i, c)),
            );
            assert!(vad.active(), "speech is mixed from its first frame");
        }
        for i in 100..200 {
            changes.extend(vad.update(level_db(&frame(30.0, i * 320))).map(|c| (i, c)));
            assert_eq!(vad.active(), i < 100 + HANGOVER as usize, "hangover at {i}");
        }
        assert_eq!(changes, [(52, Talk::Started), (139, Talk::Stopped)]);
    }

    #[test]
    fn a_steady_tone_stays_speech_but_steady_noise_is_learnt() {
        let mut vad = VoiceDetector::default();
        for i in 0..2000 {
            vad.update(level_db(&frame(3000.0, i * 320)));
        }
        assert!(
            vad.talking() && vad.active(),
            "a steady -23 dBFS tone counts as speech"
        );
        let mut vad = VoiceDetector::default();
        for i in 0..2000 {
            vad.update(level_db(&frame(250.0, i * 320)));
        }
        assert!(
            !vad.active(),
            "steady -45 dBFS noise is learnt as the floor"
        );
    }
}
