//! G.711 mu-law and A-law (ITU-T G.711), written from the segment definitions.
//!
//! Decoding uses 256-entry tables built at compile time; encoding computes the segment with one
//! leading-zero count, which is as fast as a table and needs no 64 KiB of cache.

/// mu-law encoder bias (33 in 14-bit units, 132 in 16-bit units).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude mu-law represents before the bias is added.
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample as mu-law.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    let value = i32::from(sample);
    let (sign, magnitude) = if value < 0 {
        (0x80, -value)
    } else {
        (0x00, value)
    };
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // `biased` lies in [0x84, 0x7FFF]: its top bit is bit 7..=14, i.e. segment 0..=7.
    let segment = (31 - biased.leading_zeros() as i32) - 7;
    let mantissa = (biased >> (segment + 3)) & 0x0F;
    !((sign | (segment << 4) | mantissa) as u8)
}

/// Decodes one mu-law byte to 16-bit linear.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Encodes one 16-bit linear sample as A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    let value = i32::from(sample);
    // 13-bit magnitude; negative values are offset by one so that -1 maps like +0.
    let (sign, magnitude) = if value >= 0 {
        (0x80, value >> 3)
    } else {
        (0x00, (-value - 1) >> 3)
    };
    let code = if magnitude < 32 {
        magnitude >> 1
    } else {
        let segment = (31 - magnitude.leading_zeros() as i32) - 4;
        (segment << 4) | ((magnitude >> segment) & 0x0F)
    };
    ((sign | code) as u8) ^ 0x55
}

/// Decodes one A-law byte to 16-bit linear.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

const fn ulaw_decode_slow(code: u8) -> i16 {
    let code = !code;
    let segment = ((code >> 4) & 0x07) as i32;
    let mantissa = (code & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_decode_slow(code: u8) -> i16 {
    let code = code ^ 0x55;
    let segment = ((code >> 4) & 0x07) as i32;
    let mantissa = (code & 0x0F) as i32;
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_slow(i as u8)
        } else {
            ulaw_decode_slow(i as u8)
        };
        i += 1;
    }
    table
}

/// Decodes a whole payload into `out` (the rest of `out`, if the payload is short, is
/// silence): one table for the frame rather than a choice of law per sample.
pub fn decode_frame(alaw: bool, payload: &[u8], out: &mut [i16]) {
    let table = if alaw { &ALAW_TABLE } else { &ULAW_TABLE };
    let n = payload.len().min(out.len());
    for (o, &code) in out[..n].iter_mut().zip(&payload[..n]) {
        *o = table[usize::from(code)];
    }
    out[n..].fill(0);
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    fn snr_db(encode: fn(i16) -> u8, decode: fn(u8) -> i16) -> f64 {
        let (mut signal, mut noise) = (0f64, 0f64);
        for n in 0..8000 {
            let x = (10000.0
                * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0 + 0.3).sin())
                as i16;
            let y = decode(encode(x));
            signal += f64::from(x).powi(2);
            noise += (f64::from(x) - f64::from(y)).powi(2);
        }
        10.0 * (signal / noise).log10()
    }

    #[test]
    fn both_laws_have_telephone_quality_snr() {
        // G.711 gives about 38 dB SNR for a full-scale tone.
        assert!(snr_db(ulaw_encode, ulaw_decode) > 35.0);
        assert!(snr_db(alaw_encode, alaw_decode) > 35.0);
    }

    #[test]
    fn decode_encode_is_identity_on_codes() {
        for code in 0..=255u8 {
            assert_eq!(
                ulaw_decode(ulaw_encode(ulaw_decode(code))),
                ulaw_decode(code),
                "mu {code}"
            );
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A {code}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
    }

    #[test]
    fn a_frame_decodes_code_by_code_and_a_short_payload_ends_in_silence() {
        let payload: Vec<u8> = (0..=255).collect();
        for alaw in [false, true] {
            let decode = if alaw { alaw_decode } else { ulaw_decode };
            let mut out = vec![7i16; 300];
            decode_frame(alaw, &payload, &mut out);
            assert!(payload.iter().zip(&out).all(|(&c, &s)| decode(c) == s));
            assert!(out[256..].iter().all(|&s| s == 0));
        }
    }
}
