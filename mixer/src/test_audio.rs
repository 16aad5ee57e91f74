//! Test signals: recorded speech fixtures and seeded noise.

/// Fixture speech `which` (0 or 1), 16 kHz, about 10 s, peaks at -6 dBFS.
pub fn speech(which: usize) -> Vec<i16> {
    let name = ["speech-a.wav", "speech-b.wav"][which];
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut reader = hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(reader.spec().sample_rate, 16000);
    reader
        .samples::<i16>()
        .map(|s| s.expect("fixture sample"))
        .collect()
}

/// Seeded white noise.
pub struct Noise(u64);

impl Noise {
    /// A generator with its own sequence.
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// One sample, uniform within +-`amplitude`.
    pub fn sample(&mut self, amplitude: f32) -> i16 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        (unit * amplitude) as i16
    }
}
