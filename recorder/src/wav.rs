//! The 44-byte header of a mono 16-bit PCM WAV file, written by us so that a streaming writer can
//! put a provisional header first and patch the sizes in when the length is known.

/// Bytes before the samples.
pub const HEADER_LEN: u64 = 44;

/// The header of a mono 16-bit PCM WAV at `rate` Hz with `data_len` bytes of samples.
pub fn header(rate: u32, data_len: u64) -> [u8; 44] {
    // WAV sizes are 32-bit; a longer file (over 12 hours at 48 kHz) keeps the maximum, which
    // readers treat as "to the end of the file".
    let data = u32::try_from(data_len).unwrap_or(u32::MAX - 36);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// The sample rate and data length a header of ours declares, or `None` if it is not one.
pub fn parse_header(h: &[u8]) -> Option<(u32, u32)> {
    if h.len() < 44 || &h[0..4] != b"RIFF" || &h[8..16] != b"WAVEfmt " || &h[36..40] != b"data" {
        return None;
    }
    let rate = u32::from_le_bytes(h[24..28].try_into().ok()?);
    let data = u32::from_le_bytes(h[40..44].try_into().ok()?);
    Some((rate, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hound_reads_our_header() {
        let mut bytes = header(16000, 8).to_vec();
        bytes.extend_from_slice(&[1, 0, 2, 0, 3, 0, 4, 0]);
        let reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(reader.spec().sample_rate, 16000);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(samples, [1, 2, 3, 4]);
        assert_eq!(parse_header(&bytes), Some((16000, 8)));
        assert_eq!(parse_header(b"RIFF"), None);
    }
}
