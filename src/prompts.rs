//! The lobby's and rooms' prompts: the WAVs `scripts/make-prompts.sh` generates (8 kHz, built
//! into the binary), decoded and resampled once to the rooms' rate, with a tone pattern for any
//! prompt that is missing or unreadable; and the rooms' tones (join, leave, hold).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roundtable_media::resample::{Resampler, frame_len};

use roundtable_conference::lobby::Prompt;

/// The rate the prompt WAVs are made at.
const PROMPT_RATE: u32 = 8000;

/// Every prompt, ready to hand to the mixer.
#[derive(Debug, Clone)]
pub struct Prompts {
    samples: HashMap<Prompt, Arc<[i16]>>,
    rate: u32,
}

fn embedded(prompt: Prompt) -> &'static [u8] {
    match prompt {
        Prompt::Welcome => include_bytes!("../prompts/welcome.wav"),
        Prompt::EnterPin => include_bytes!("../prompts/enter-pin.wav"),
        Prompt::InvalidRoom => include_bytes!("../prompts/invalid-room.wav"),
        Prompt::WrongPin => include_bytes!("../prompts/wrong-pin.wav"),
        Prompt::Joining => include_bytes!("../prompts/joining.wav"),
        Prompt::Goodbye => include_bytes!("../prompts/goodbye.wav"),
        Prompt::Alone => include_bytes!("../prompts/alone.wav"),
        Prompt::Recording => include_bytes!("../prompts/recording.wav"),
    }
}

/// Decodes an 8 kHz mono 16-bit WAV; anything else is refused.
fn decode(bytes: &[u8]) -> Option<Vec<i16>> {
    let reader = hound::WavReader::new(bytes).ok()?;
    let spec = reader.spec();
    if spec.sample_rate != PROMPT_RATE || spec.channels != 1 || spec.bits_per_sample != 16 {
        return None;
    }
    let samples: Result<Vec<i16>, _> = reader.into_samples::<i16>().collect();
    samples.ok().filter(|s| !s.is_empty())
}

/// Reads a prompt WAV an operator supplies (8 kHz, mono, 16-bit), for config validation.
pub fn load_wav(path: &std::path::Path) -> Result<Arc<[i16]>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&bytes).map(Arc::from).ok_or_else(|| {
        format!(
            "{}: not an 8 kHz mono 16-bit PCM WAV with audio",
            path.display()
        )
    })
}

/// Brings 8 kHz samples to `rate`, dropping the resampler's delay so the prompt starts at once.
fn resample(samples: &[i16], rate: u32) -> Option<Vec<i16>> {
    let mut resampler = Resampler::new(PROMPT_RATE, rate).ok()?;
    let (inp, out) = (frame_len(PROMPT_RATE), frame_len(rate));
    let mut padded = samples.to_vec();
    // Whole frames, plus one more to flush the delay out.
    padded.resize(samples.len().div_ceil(inp) * inp + inp, 0);
    let mut result = Vec::with_capacity(padded.len() / inp * out);
    let mut frame = vec![0i16; out];
    for chunk in padded.chunks(inp) {
        resampler.process(chunk, &mut frame);
        result.extend_from_slice(&frame);
    }
    let delay = resampler.delay();
    let wanted = samples.len() * rate as usize / PROMPT_RATE as usize;
    Some(result[delay..(delay + wanted).min(result.len())].to_vec())
}

/// A tone pattern standing in for a missing prompt: (frequency, milliseconds) pairs, 0 Hz = pause.
fn tones(prompt: Prompt, rate: u32) -> Arc<[i16]> {
    let pattern: &[(f64, u32)] = match prompt {
        Prompt::Welcome => &[(440.0, 300), (0.0, 100), (660.0, 300)],
        Prompt::EnterPin => &[
            (660.0, 150),
            (0.0, 100),
            (660.0, 150),
            (0.0, 100),
            (660.0, 150),
        ],
        Prompt::InvalidRoom | Prompt::WrongPin => &[(300.0, 600)],
        Prompt::Joining => &[(660.0, 200), (880.0, 200)],
        Prompt::Goodbye => &[(880.0, 200), (660.0, 200), (440.0, 300)],
        Prompt::Alone => &[(440.0, 200), (0.0, 200), (440.0, 200)],
        Prompt::Recording => &[(1400.0, 400), (0.0, 200), (1400.0, 400)],
    };
    pattern_samples(pattern, rate, 8000.0)
}

/// Tone pairs (frequency, milliseconds; 0 Hz = pause) as samples, with 5 ms fades so that no
/// tone clicks.
fn pattern_samples(pattern: &[(f64, u32)], rate: u32, amplitude: f64) -> Arc<[i16]> {
    let mut out = Vec::new();
    for &(freq, ms) in pattern {
        let len = ms * rate / 1000;
        let fade = (rate / 200).min(len / 2).max(1);
        for n in 0..len {
            let t = f64::from(n) / f64::from(rate);
            let envelope = f64::from(n.min(len - 1 - n).min(fade)) / f64::from(fade);
            out.push((amplitude * envelope * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16);
        }
    }
    Arc::from(out)
}

/// The rooms' tones, at the rooms' rate (about -20 dBFS, under speech).
#[derive(Debug, Clone)]
pub struct Tones {
    /// Someone joined: rising.
    pub join: Arc<[i16]>,
    /// Someone left: falling.
    pub leave: Arc<[i16]>,
    /// Waiting for the moderator: a soft two-note chime every 3 s, looped.
    pub hold: Arc<[i16]>,
}

impl Tones {
    /// The tones at `rate`.
    pub fn new(rate: u32) -> Tones {
        let amplitude = 3300.0;
        Tones {
            join: pattern_samples(&[(600.0, 120), (900.0, 160)], rate, amplitude),
            leave: pattern_samples(&[(900.0, 120), (600.0, 160)], rate, amplitude),
            hold: pattern_samples(
                &[(523.0, 250), (659.0, 350), (0.0, 2400)],
                rate,
                amplitude * 0.7,
            ),
        }
    }
}

impl Prompts {
    /// Loads every prompt (built-in WAV, else tones) at the rooms' `rate`; `recording` (8 kHz
    /// samples) replaces the shipped recording notice.
    pub fn load(rate: u32, recording: Option<&[i16]>) -> Prompts {
        let samples = Prompt::ALL
            .iter()
            .map(|&p| {
                let source = match (p, recording) {
                    (Prompt::Recording, Some(custom)) => Some(custom.to_vec()),
                    _ => decode(embedded(p)),
                };
                let wav = source.and_then(|s| resample(&s, rate)).map(Arc::from);
                (p, wav.unwrap_or_else(|| tones(p, rate)))
            })
            .collect();
        Prompts { samples, rate }
    }

    /// The samples of a prompt, at the rooms' rate.
    pub fn samples(&self, prompt: Prompt) -> Arc<[i16]> {
        self.samples
            .get(&prompt)
            .cloned()
            .unwrap_or_else(|| tones(prompt, self.rate))
    }

    /// How long a prompt plays.
    pub fn length(&self, prompt: Prompt) -> Duration {
        Duration::from_millis(self.samples(prompt).len() as u64 * 1000 / u64::from(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_decode_and_goodbye_is_short() {
        let narrow = Prompts::load(8000, None);
        let wide = Prompts::load(16000, None);
        for p in Prompt::ALL {
            assert!(decode(embedded(p)).is_some(), "{p:?} decodes");
            assert_eq!(
                wide.samples(p).len(),
                narrow.samples(p).len() * 2,
                "{p:?} at 16 kHz"
            );
            assert_eq!(wide.length(p), narrow.length(p));
        }
        assert!(
            narrow.length(Prompt::Goodbye) < Duration::from_millis(2500),
            "BYE within 3 s"
        );
        assert!(decode(b"not a wav").is_none());
        assert!(tones(Prompt::Welcome, 8000).len() > 4000);
    }
}
