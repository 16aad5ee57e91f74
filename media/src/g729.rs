//! G.729 Annex A through bcg729 (Belledonne Communications, linked statically), with Annex B's
//! silence frames understood: RTP payload type 18, 8 kHz, 10 ms frames of 10 bytes, two per
//! 20 ms packet (RFC 3551 4.5.6). A packet may end with a 2-byte SID frame (comfort noise
//! parameters), or hold only one; between SIDs the sender sends nothing and the decoder makes
//! comfort noise. We send without silence suppression (every packet two speech frames), which
//! any G.729 receiver takes.

use std::ptr::NonNull;

use crate::error::MediaError;

/// Samples in one G.729 frame (10 ms at 8 kHz).
const FRAME: usize = 80;
/// Bytes of one speech frame.
const SPEECH_BYTES: usize = 10;
/// Bytes of one SID frame (Annex B, octet-aligned).
const SID_BYTES: usize = 2;

#[repr(C)]
struct EncoderContext {
    _private: [u8; 0],
}

#[repr(C)]
struct DecoderContext {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn initBcg729EncoderChannel(enable_vad: u8) -> *mut EncoderContext;
    fn closeBcg729EncoderChannel(context: *mut EncoderContext);
    fn bcg729Encoder(
        context: *mut EncoderContext,
        input: *const i16,
        bitstream: *mut u8,
        length: *mut u8,
    );
    fn initBcg729DecoderChannel() -> *mut DecoderContext;
    fn closeBcg729DecoderChannel(context: *mut DecoderContext);
    fn bcg729Decoder(
        context: *mut DecoderContext,
        bitstream: *const u8,
        length: u8,
        frame_erasure: u8,
        sid_frame: u8,
        rfc3389_payload: u8,
        signal: *mut i16,
    );
}

/// A G.729 encoder of 20 ms frames (two G.729 frames).
pub struct G729Encoder {
    context: NonNull<EncoderContext>,
}

// SAFETY: the context is plain heap state owned by this value alone; bcg729 keeps no thread
// affinity or shared state, so it may move to another thread.
unsafe impl Send for G729Encoder {}

impl G729Encoder {
    /// A new encoder (voice activity detection off: every frame is speech).
    pub fn new() -> Result<G729Encoder, MediaError> {
        // SAFETY: plain constructor; a null return is handled.
        let context = unsafe { initBcg729EncoderChannel(0) };
        NonNull::new(context)
            .map(|context| G729Encoder { context })
            .ok_or(MediaError::Codec("G.729 encoder"))
    }

    /// Encodes 160 samples (20 ms at 8 kHz) into `out` (20 bytes).
    pub fn encode(&mut self, frame: &[i16], out: &mut Vec<u8>) {
        out.clear();
        for half in frame.chunks_exact(FRAME).take(2) {
            let mut bits = [0u8; SPEECH_BYTES];
            let mut length = 0u8;
            // SAFETY: `half` holds 80 samples, `bits` room for the 10 bytes of a speech frame
            // (the most bcg729 writes), `length` a valid out-pointer; the context is live.
            unsafe {
                bcg729Encoder(
                    self.context.as_ptr(),
                    half.as_ptr(),
                    bits.as_mut_ptr(),
                    &mut length,
                );
            }
            out.extend_from_slice(&bits[..usize::from(length).min(SPEECH_BYTES)]);
        }
    }
}

impl Drop for G729Encoder {
    fn drop(&mut self) {
        // SAFETY: the context came from initBcg729EncoderChannel and is closed once.
        unsafe { closeBcg729EncoderChannel(self.context.as_ptr()) }
    }
}

/// A G.729 (Annex A, with Annex B SID frames) decoder of 20 ms packets.
pub struct G729Decoder {
    context: NonNull<DecoderContext>,
}

// SAFETY: as for the encoder.
unsafe impl Send for G729Decoder {}

/// What one 10 ms slot of a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot<'a> {
    Speech(&'a [u8]),
    Sid(&'a [u8]),
    /// Nothing sent: the decoder conceals after speech, or makes comfort noise after a SID.
    Nothing,
}

/// Splits a payload into its two 10 ms slots; `None` for a length no G.729 packet of at most
/// 20 ms has (speech frames of 10 bytes, then at most one SID of 2).
fn slots(payload: &[u8]) -> Option<[Slot<'_>; 2]> {
    use Slot::{Nothing, Sid, Speech};
    let (a, b) = (SPEECH_BYTES, 2 * SPEECH_BYTES);
    Some(match payload.len() {
        0 => [Nothing, Nothing],
        SID_BYTES => [Sid(payload), Nothing],
        SPEECH_BYTES => [Speech(payload), Nothing],
        12 => [Speech(&payload[..a]), Sid(&payload[a..])],
        20 => [Speech(&payload[..a]), Speech(&payload[a..b])],
        _ => return None,
    })
}

impl G729Decoder {
    /// A new decoder.
    pub fn new() -> Result<G729Decoder, MediaError> {
        // SAFETY: plain constructor; a null return is handled.
        let context = unsafe { initBcg729DecoderChannel() };
        NonNull::new(context)
            .map(|context| G729Decoder { context })
            .ok_or(MediaError::Codec("G.729 decoder"))
    }

    /// Decodes one packet's payload into `out` (160 samples). A payload of a length G.729 does
    /// not have is concealed and reported.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<(), MediaError> {
        match slots(payload) {
            Some(slots) => {
                for (slot, half) in slots.iter().zip(out.chunks_exact_mut(FRAME)) {
                    self.decode_slot(*slot, half);
                }
                Ok(())
            }
            None => {
                self.conceal(out);
                Err(MediaError::Codec("G.729 payload of an odd length"))
            }
        }
    }

    /// Fills `out` (160 samples) for a lost packet: concealment after speech, comfort noise
    /// after a SID.
    pub fn conceal(&mut self, out: &mut [i16]) {
        for half in out.chunks_exact_mut(FRAME).take(2) {
            self.decode_slot(Slot::Nothing, half);
        }
    }

    fn decode_slot(&mut self, slot: Slot<'_>, out: &mut [i16]) {
        debug_assert_eq!(out.len(), FRAME);
        let (bits, erasure, sid): (&[u8], u8, u8) = match slot {
            Slot::Speech(bits) => (bits, 0, 0),
            Slot::Sid(bits) => (bits, 0, 1),
            Slot::Nothing => (&[], 1, 0),
        };
        // bcg729 reads up to 10 bytes whatever the length says: give it a full buffer.
        let mut padded = [0u8; SPEECH_BYTES];
        padded[..bits.len()].copy_from_slice(bits);
        // SAFETY: `padded` holds 10 bytes, `out` 80 samples; the context is live.
        unsafe {
            bcg729Decoder(
                self.context.as_ptr(),
                padded.as_ptr(),
                bits.len() as u8,
                erasure,
                sid,
                0,
                out.as_mut_ptr(),
            );
        }
    }
}

impl Drop for G729Decoder {
    fn drop(&mut self) {
        // SAFETY: the context came from initBcg729DecoderChannel and is closed once.
        unsafe { closeBcg729DecoderChannel(self.context.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_lengths_map_to_speech_sid_and_nothing() {
        assert_eq!(slots(&[]), Some([Slot::Nothing, Slot::Nothing]));
        assert!(matches!(
            slots(&[0; 2]),
            Some([Slot::Sid(_), Slot::Nothing])
        ));
        assert!(matches!(
            slots(&[0; 12]),
            Some([Slot::Speech(_), Slot::Sid(_)])
        ));
        assert!(matches!(
            slots(&[0; 20]),
            Some([Slot::Speech(_), Slot::Speech(_)])
        ));
        for odd in [1, 3, 11, 13, 21, 30] {
            assert_eq!(slots(&vec![0; odd]), None, "{odd} bytes");
        }
    }

    #[test]
    fn odd_payloads_are_concealed_and_reported() {
        let mut decoder = G729Decoder::new().unwrap();
        let mut out = [7i16; 160];
        assert!(decoder.decode(&[0; 7], &mut out).is_err());
        let mut encoder = G729Encoder::new().unwrap();
        let mut payload = Vec::new();
        encoder.encode(&[0; 160], &mut payload);
        assert_eq!(payload.len(), 20);
        assert!(decoder.decode(&payload, &mut out).is_ok());
    }
}
