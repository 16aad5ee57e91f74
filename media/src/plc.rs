//! Packet loss concealment for codecs without their own (G.711, G.722), in the manner of ITU-T
//! G.711 Appendix I: a lost frame is filled by repeating the last pitch period of the audio
//! before it, fading out after 10 ms and silent after 60 ms; the first good frame after a loss
//! is cross-faded in from the concealed signal, so neither edge clicks.

/// Shortest and longest pitch period searched, in milliseconds (400 Hz down to 66 Hz).
const MIN_PITCH_MS: f32 = 2.5;
const MAX_PITCH_MS: f32 = 15.0;
/// Full-level concealment before the fade starts, and the point where it reaches silence.
const FULL_MS: usize = 10;
const SILENT_MS: usize = 60;
/// Cross-fade into the first good frame after a loss.
const MERGE_MS: usize = 4;

/// Remembers recent audio of one stream and makes up frames that were lost.
#[derive(Debug)]
pub struct Concealer {
    rate: usize,
    /// The last `MAX_PITCH_MS * 2` of audio, oldest first.
    history: Vec<f32>,
    /// One pitch period being repeated while concealing, and where in it we are.
    period: Vec<f32>,
    position: usize,
    /// Samples concealed in the current loss.
    concealed: usize,
}

impl Concealer {
    /// A concealer for audio at `rate` Hz.
    pub fn new(rate: u32) -> Concealer {
        let rate = rate as usize;
        Concealer {
            rate,
            history: vec![0.0; rate * 2 * MAX_PITCH_MS as usize / 1000],
            period: Vec::new(),
            position: 0,
            concealed: 0,
        }
    }

    /// Samples concealed in the loss under way (0 when the last frame was good).
    pub fn concealed(&self) -> usize {
        self.concealed
    }

    /// Records a good frame; after a loss, first cross-fades it in from the concealment.
    pub fn good(&mut self, frame: &mut [i16]) {
        if self.concealed > 0 && !self.period.is_empty() {
            let merge = (self.rate * MERGE_MS / 1000).min(frame.len());
            let gain = self.gain();
            for (i, sample) in frame.iter_mut().take(merge).enumerate() {
                let t = (i + 1) as f32 / (merge + 1) as f32;
                let made_up = self.next_concealed() * gain;
                *sample = clamp(made_up * (1.0 - t) + f32::from(*sample) * t);
            }
        }
        self.concealed = 0;
        self.period.clear();
        self.remember(frame);
    }

    /// Fills `frame` for a lost packet.
    pub fn conceal(&mut self, frame: &mut [i16]) {
        if self.concealed == 0 {
            let pitch = self.pitch();
            let start = self.history.len() - pitch;
            self.period = self.history[start..].to_vec();
            self.position = 0;
        }
        for sample in frame.iter_mut() {
            let gain = self.gain();
            *sample = clamp(self.next_concealed() * gain);
            self.concealed += 1;
        }
        self.remember(frame);
    }

    /// The level of concealed audio now: 1 for the first 10 ms, then falling linearly to 0 at
    /// 60 ms.
    fn gain(&self) -> f32 {
        let full = self.rate * FULL_MS / 1000;
        let silent = self.rate * SILENT_MS / 1000;
        match self.concealed {
            n if n < full => 1.0,
            n if n >= silent => 0.0,
            n => 1.0 - (n - full) as f32 / (silent - full) as f32,
        }
    }

    fn next_concealed(&mut self) -> f32 {
        if self.period.is_empty() {
            return 0.0;
        }
        let value = self.period[self.position % self.period.len()];
        self.position += 1;
        value
    }

    fn remember(&mut self, frame: &[i16]) {
        let keep = self.history.len();
        if frame.len() >= keep {
            for (h, &s) in self.history.iter_mut().zip(&frame[frame.len() - keep..]) {
                *h = f32::from(s);
            }
        } else {
            // The old samples' order matters, what moves into the tail does not (overwritten).
            self.history.copy_within(frame.len().., 0);
            for (h, &s) in self.history[keep - frame.len()..].iter_mut().zip(frame) {
                *h = f32::from(s);
            }
        }
    }

    /// The pitch period (in samples) that best predicts the end of the history from the audio
    /// one period earlier: normalised autocorrelation over the last `MAX_PITCH_MS`.
    fn pitch(&self) -> usize {
        let min = (self.rate as f32 * MIN_PITCH_MS / 1000.0) as usize;
        let max = (self.rate as f32 * MAX_PITCH_MS / 1000.0) as usize;
        let window = max;
        let end = self.history.len();
        let target = &self.history[end - window..];
        let mut best = (max, f32::MIN);
        for lag in min..=max {
            let earlier = &self.history[end - window - lag..end - lag];
            let (mut dot, mut energy) = (0.0f32, 1e-3f32);
            for (a, b) in target.iter().zip(earlier) {
                dot += a * b;
                energy += b * b;
            }
            let score = dot / energy.sqrt();
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }
}

fn clamp(x: f32) -> i16 {
    crate::sample::to_i16(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, start: usize, len: usize) -> Vec<i16> {
        (start..start + len)
            .map(|n| {
                (8000.0 * (2.0 * std::f32::consts::PI * freq * n as f32 / rate as f32).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn a_lost_frame_of_a_tone_continues_the_tone_then_fades() {
        let mut plc = Concealer::new(8000);
        for i in 0..5 {
            let mut frame = tone(8000, 200.0, i * 160, 160);
            plc.good(&mut frame);
        }
        let mut lost = vec![0i16; 160];
        plc.conceal(&mut lost);
        let expected = tone(8000, 200.0, 5 * 160, 160);
        // The first 10 ms match the tone closely (the period repeats exactly).
        let error: f32 = lost[..80]
            .iter()
            .zip(&expected[..80])
            .map(|(a, b)| (f32::from(*a) - f32::from(*b)).abs())
            .sum::<f32>()
            / 80.0;
        assert!(error < 400.0, "mean error {error} on an amplitude of 8000");
        // Then it fades: 60 ms into a loss it is silent.
        for _ in 0..2 {
            plc.conceal(&mut lost);
        }
        assert!(lost[159].abs() < 100, "{}", lost[159]);
        assert_eq!(plc.concealed(), 480);
        // The next good frame resets it.
        let mut frame = tone(8000, 200.0, 8 * 160, 160);
        plc.good(&mut frame);
        assert_eq!(plc.concealed(), 0);
    }

    #[test]
    fn silence_conceals_as_silence() {
        let mut plc = Concealer::new(16000);
        let mut frame = vec![0i16; 320];
        plc.good(&mut frame);
        plc.conceal(&mut frame);
        assert!(frame.iter().all(|&s| s == 0));
    }
}
