//! Babble: speech-like test signals (pure), for load tools and tests that need many talkers who
//! are independent of each other. Recordings cannot give that: a load of hundreds of talkers
//! would replay the same words, and correlated talkers look like echo.
//!
//! A voice is low-passed noise in syllables of 80-400 ms at -30 to -12 dBFS, with 20 ms rises
//! and falls, pauses of 60-500 ms and now and then a longer one: speech's level envelope, which
//! is what voice activity, echo detection and noise suppression look at.

/// `frames` 20 ms frames at `rate` Hz of voice `seed`.
pub fn babble(seed: u64, rate: u32, frames: usize) -> Vec<Vec<i16>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let ms = |m: f64| (m * f64::from(rate) / 1000.0) as usize;
    let frame = rate as usize / 50;
    // The low-pass pole, for a speech-like tilt above about 1 kHz whatever the rate.
    let pole = 1.0 - (-2.0 * std::f64::consts::PI * 1000.0 / f64::from(rate)).exp();
    let mut samples = Vec::with_capacity(frame * frames);
    let mut low = 0.0;
    while samples.len() < frame * frames {
        let syllable = ms(80.0 + random() * 320.0).max(2);
        let gain = 32768.0 * 10f64.powf((-30.0 + random() * 18.0) / 20.0) * 1.7;
        let ramp_len = ms(20.0).max(1) as f64;
        for n in 0..syllable {
            let ramp = (n.min(syllable - 1 - n) as f64 / ramp_len).min(1.0);
            low += pole * ((random() * 2.0 - 1.0) - low);
            samples.push((low * gain * ramp) as i16);
        }
        let pause = if random() < 0.1 {
            ms(500.0 + random() * 1000.0)
        } else {
            ms(60.0 + random() * 440.0)
        };
        samples.extend(std::iter::repeat_n(0i16, pause));
    }
    samples
        .chunks_exact(frame)
        .take(frames)
        .map(<[i16]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::level_db;

    #[test]
    fn voices_differ_and_pause_like_speech() {
        let a = babble(1, 16000, 500);
        let b = babble(2, 16000, 500);
        assert_eq!((a.len(), a[0].len()), (500, 320));
        assert_ne!(a, b);
        let loud = a.iter().filter(|f| level_db(f) > -40.0).count();
        assert!((150..450).contains(&loud), "{loud} of 500 frames sound");
        assert!(a.iter().flatten().all(|s| s.unsigned_abs() < 32000));
    }
}
