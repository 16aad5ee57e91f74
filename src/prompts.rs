//! The lobby's prompts: the WAVs `scripts/make-prompts.sh` generates (built into the binary),
//! decoded once to 8 kHz samples, with a tone pattern for any prompt that is missing or unreadable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::lobby::Prompt;

/// Every prompt, ready to hand to the mixer.
#[derive(Debug, Clone)]
pub struct Prompts {
    samples: HashMap<Prompt, Arc<[i16]>>,
}

fn embedded(prompt: Prompt) -> &'static [u8] {
    match prompt {
        Prompt::Welcome => include_bytes!("../prompts/welcome.wav"),
        Prompt::EnterPin => include_bytes!("../prompts/enter-pin.wav"),
        Prompt::InvalidRoom => include_bytes!("../prompts/invalid-room.wav"),
        Prompt::WrongPin => include_bytes!("../prompts/wrong-pin.wav"),
        Prompt::Joining => include_bytes!("../prompts/joining.wav"),
        Prompt::Goodbye => include_bytes!("../prompts/goodbye.wav"),
    }
}

/// Decodes an 8 kHz mono 16-bit WAV; anything else is refused (the mixer plays raw 8 kHz).
fn decode(bytes: &[u8]) -> Option<Arc<[i16]>> {
    let reader = hound::WavReader::new(bytes).ok()?;
    let spec = reader.spec();
    if spec.sample_rate != 8000 || spec.channels != 1 || spec.bits_per_sample != 16 {
        return None;
    }
    let samples: Result<Vec<i16>, _> = reader.into_samples::<i16>().collect();
    samples.ok().filter(|s| !s.is_empty()).map(Arc::from)
}

/// A tone pattern standing in for a missing prompt: (frequency, milliseconds) pairs, 0 Hz = pause.
fn tones(prompt: Prompt) -> Arc<[i16]> {
    let pattern: &[(f64, u32)] = match prompt {
        Prompt::Welcome => &[(440.0, 300), (0.0, 100), (660.0, 300)],
        Prompt::EnterPin => &[(660.0, 150), (0.0, 100), (660.0, 150), (0.0, 100), (660.0, 150)],
        Prompt::InvalidRoom | Prompt::WrongPin => &[(300.0, 600)],
        Prompt::Joining => &[(660.0, 200), (880.0, 200)],
        Prompt::Goodbye => &[(880.0, 200), (660.0, 200), (440.0, 300)],
    };
    let mut out = Vec::new();
    for &(freq, ms) in pattern {
        for n in 0..ms * 8 {
            let t = f64::from(n) / 8000.0;
            out.push((8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16);
        }
    }
    Arc::from(out)
}

impl Prompts {
    /// Loads every prompt (built-in WAV, else tones).
    pub fn load() -> Prompts {
        let samples = Prompt::ALL
            .iter()
            .map(|&p| (p, decode(embedded(p)).unwrap_or_else(|| tones(p))))
            .collect();
        Prompts { samples }
    }

    /// The samples of a prompt.
    pub fn samples(&self, prompt: Prompt) -> Arc<[i16]> {
        self.samples.get(&prompt).cloned().unwrap_or_else(|| tones(prompt))
    }

    /// How long a prompt plays.
    pub fn length(&self, prompt: Prompt) -> Duration {
        Duration::from_millis(self.samples(prompt).len() as u64 / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_decode_and_goodbye_is_short() {
        let prompts = Prompts::load();
        for p in Prompt::ALL {
            assert!(decode(embedded(p)).is_some(), "{p:?} decodes");
        }
        assert!(prompts.length(Prompt::Goodbye) < Duration::from_millis(2500), "BYE within 3 s");
        assert!(decode(b"not a wav").is_none());
        assert!(tones(Prompt::Welcome).len() > 4000);
    }
}
