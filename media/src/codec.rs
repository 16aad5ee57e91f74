//! The audio codecs a leg can speak (PCMU, PCMA, G.722, Opus), each as a per-leg decoder and
//! encoder of 20 ms frames.
//!
//! A decoder produces frames at its codec's own rate (8 kHz for G.711, 16 kHz for G.722) except
//! Opus, which libopus decodes and encodes directly at the room's rate (8, 16 or 48 kHz), so
//! Opus legs need no resampler. Lost frames are concealed by Opus itself (PLC, or FEC from the
//! next packet) and by [`crate::plc::Concealer`] for the others.

use audio_codec::{Decoder as _, Encoder as _};

use crate::error::MediaError;
use crate::g711;
use crate::g729::{G729Decoder, G729Encoder};
use crate::plc::Concealer;
use crate::resample::frame_len;

/// A codec the bridge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 mu-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722 (16 kHz audio, but an 8000 Hz RTP clock by RFC 3551's historical error), type 9.
    G722,
    /// Opus (RFC 7587: `opus/48000/2` in SDP, mono here), a dynamic payload type.
    Opus,
    /// G.729 Annex A (Annex B silence frames understood), static payload type 18.
    G729,
}

impl Codec {
    /// Every codec, in our order of preference (G.729 is not in `media.codecs` by default).
    pub const ALL: [Codec; 5] = [
        Codec::Opus,
        Codec::G722,
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G729,
    ];

    /// The name used in configuration and in the API (`opus`, `g722`, `pcmu`, `pcma`, `g729`).
    pub fn config_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::G722 => "g722",
            Codec::Opus => "opus",
            Codec::G729 => "g729",
        }
    }

    /// Reads a configuration name, case-insensitively.
    pub fn from_config_name(name: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.config_name().eq_ignore_ascii_case(name))
    }

    /// The SDP encoding name.
    pub fn sdp_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
            Codec::G729 => "G729",
        }
    }

    /// The RTP clock rate (what timestamps count and SDP's rtpmap says).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::G729 => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The static payload type, for the codecs that have one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::G729 => Some(18),
            Codec::Opus => None,
        }
    }

    /// Whether legs of this codec can be served one shared encoding of the room's mix. A
    /// talker switches to its own encoder while it talks (it must not hear itself); G.711
    /// does not notice, G.722 and Opus decoders recover within milliseconds, but G.729's
    /// predictive state makes a fifth of a second of noise at every such switch, so each G.729
    /// leg keeps its own encoder.
    pub fn shares_encoding(self) -> bool {
        self != Codec::G729
    }

    /// RTP timestamp units per 20 ms frame.
    pub fn timestamp_step(self) -> u32 {
        self.clock_rate() / 50
    }

    /// The rate of the audio a leg's decoder produces and encoder takes, given the room's rate.
    pub fn audio_rate(self, room_rate: u32) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G729 => 8000,
            Codec::G722 => 16000,
            Codec::Opus => room_rate,
        }
    }
}

/// Opus encoder options taken from the peer's `a=fmtp` (RFC 7587 7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpusOptions {
    /// The peer decodes in-band FEC (`useinbandfec=1`): send it.
    pub fec: bool,
    /// The peer prefers discontinuous transmission (`usedtx=1`).
    pub dtx: bool,
}

/// What one leg negotiated: the codec, its payload type in this call, and Opus options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegCodec {
    /// The codec.
    pub codec: Codec,
    /// Its RTP payload type in this call (dynamic for Opus).
    pub payload_type: u8,
    /// How to encode Opus for this peer.
    pub opus: OpusOptions,
}

impl LegCodec {
    /// A codec at its static payload type (or 111 for Opus), default options.
    pub fn plain(codec: Codec) -> LegCodec {
        LegCodec {
            codec,
            payload_type: codec.static_payload_type().unwrap_or(111),
            opus: OpusOptions::default(),
        }
    }
}

enum DecoderKind {
    G711(G711Law),
    G722(Box<audio_codec::g722::G722Decoder>),
    Opus(opus::Decoder),
    G729(G729Decoder),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G711Law {
    Ulaw,
    Alaw,
}

/// Turns one leg's payloads into 20 ms frames of audio, concealing losses.
pub struct Decoder {
    codec: Codec,
    kind: DecoderKind,
    frame: usize,
    plc: Option<Concealer>,
    scratch: Vec<i16>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decoder({:?}, {} samples)", self.codec, self.frame)
    }
}

impl Decoder {
    /// A decoder for `codec` in a room running at `room_rate`.
    pub fn new(codec: Codec, room_rate: u32) -> Result<Decoder, MediaError> {
        let rate = codec.audio_rate(room_rate);
        let kind = match codec {
            Codec::Pcmu => DecoderKind::G711(G711Law::Ulaw),
            Codec::Pcma => DecoderKind::G711(G711Law::Alaw),
            Codec::G722 => DecoderKind::G722(Box::new(audio_codec::g722::G722Decoder::new())),
            Codec::Opus => DecoderKind::Opus(
                opus::Decoder::new(rate, opus::Channels::Mono)
                    .map_err(|_| MediaError::Codec("opus decoder"))?,
            ),
            Codec::G729 => DecoderKind::G729(G729Decoder::new()?),
        };
        // Opus and G.729 conceal losses themselves.
        let plc = (!matches!(codec, Codec::Opus | Codec::G729)).then(|| Concealer::new(rate));
        // Opus packets may hold up to 120 ms.
        let scratch = vec![0; frame_len(rate) * 6];
        Ok(Decoder {
            codec,
            kind,
            frame: frame_len(rate),
            plc,
            scratch,
        })
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Samples per frame this decoder produces.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Decodes one packet's payload into `out` (one frame). A payload that is short, long or
    /// undecodable still yields a full frame (padded with silence or concealed) and an error
    /// to count.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<(), MediaError> {
        let out = &mut out[..self.frame];
        let result = match &mut self.kind {
            DecoderKind::G711(law) => {
                g711::decode_frame(*law == G711Law::Alaw, payload, out);
                Ok(())
            }
            DecoderKind::G722(decoder) => match decoder.decode_into(payload, &mut self.scratch) {
                Ok(n) => {
                    let n = n.min(self.frame);
                    out[..n].copy_from_slice(&self.scratch[..n]);
                    out[n..].fill(0);
                    Ok(())
                }
                Err(_) => Err(MediaError::Codec("undecodable G.722 payload")),
            },
            DecoderKind::Opus(decoder) => match decoder.decode(payload, &mut self.scratch, false) {
                Ok(n) if n > 0 => {
                    // A packet longer than 20 ms keeps its first 20 ms (we answer ptime 20).
                    let n = n.min(self.frame);
                    out[..n].copy_from_slice(&self.scratch[..n]);
                    out[n..].fill(0);
                    Ok(())
                }
                _ => {
                    let _ = decoder.decode(&[], out, false);
                    Err(MediaError::Codec("undecodable Opus payload"))
                }
            },
            DecoderKind::G729(decoder) => decoder.decode(payload, out),
        };
        match (&mut self.plc, &result) {
            (Some(plc), Ok(())) => plc.good(out),
            (Some(plc), Err(_)) => plc.conceal(out),
            (None, _) => {}
        }
        result
    }

    /// Fills `out` for a lost packet: Opus from the FEC data in `next` (the packet after the
    /// lost one) when given and present, else by concealment. Returns whether FEC recovered it.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> bool {
        let out = &mut out[..self.frame];
        match &mut self.kind {
            DecoderKind::Opus(decoder) => {
                if let Some(next) = next
                    && matches!(decoder.decode(next, out, true), Ok(n) if n == self.frame)
                {
                    return true;
                }
                if decoder.decode(&[], out, false).is_err() {
                    out.fill(0);
                }
                false
            }
            DecoderKind::G729(decoder) => {
                decoder.conceal(out);
                false
            }
            _ => {
                match &mut self.plc {
                    Some(plc) => plc.conceal(out),
                    None => out.fill(0),
                }
                false
            }
        }
    }
}

enum EncoderKind {
    G711(G711Law),
    G722(Box<audio_codec::g722::G722Encoder>),
    Opus(opus::Encoder),
    G729(G729Encoder),
}

/// Turns 20 ms frames into one leg's payloads.
pub struct Encoder {
    codec: Codec,
    kind: EncoderKind,
    frame: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({:?}, {} samples)", self.codec, self.frame)
    }
}

/// Largest payload we produce (an Opus packet is far below this at our bit rates).
const MAX_PAYLOAD: usize = 1500;

impl Encoder {
    /// An encoder for `codec` in a room running at `room_rate`.
    pub fn new(codec: Codec, room_rate: u32, opus: OpusOptions) -> Result<Encoder, MediaError> {
        let rate = codec.audio_rate(room_rate);
        let kind = match codec {
            Codec::Pcmu => EncoderKind::G711(G711Law::Ulaw),
            Codec::Pcma => EncoderKind::G711(G711Law::Alaw),
            Codec::G722 => EncoderKind::G722(Box::new(audio_codec::g722::G722Encoder::new())),
            Codec::Opus => {
                let error = |_| MediaError::Codec("opus encoder");
                let mut encoder =
                    opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)
                        .map_err(error)?;
                encoder.set_inband_fec(opus.fec).map_err(error)?;
                if opus.fec {
                    // FEC is only spent when the encoder expects loss.
                    encoder.set_packet_loss_perc(10).map_err(error)?;
                }
                encoder.set_dtx(opus.dtx).map_err(error)?;
                // Speech at wideband quality; complexity 5 halves the cost of the default 10
                // for a difference few listeners hear on voice.
                encoder
                    .set_bitrate(opus::Bitrate::Bits(32_000))
                    .map_err(error)?;
                encoder.set_complexity(5).map_err(error)?;
                EncoderKind::Opus(encoder)
            }
            Codec::G729 => EncoderKind::G729(G729Encoder::new()?),
        };
        Ok(Encoder {
            codec,
            kind,
            frame: frame_len(rate),
        })
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Samples per frame this encoder takes.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Encodes one frame into `out` (replacing its contents).
    pub fn encode(&mut self, frame: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        let frame = &frame[..self.frame];
        out.clear();
        match &mut self.kind {
            EncoderKind::G711(G711Law::Ulaw) => {
                out.extend(frame.iter().map(|&s| g711::ulaw_encode(s)))
            }
            EncoderKind::G711(G711Law::Alaw) => {
                out.extend(frame.iter().map(|&s| g711::alaw_encode(s)))
            }
            EncoderKind::G722(encoder) => {
                out.resize(frame.len() / 2, 0);
                let n = encoder
                    .encode_into(frame, out)
                    .map_err(|_| MediaError::Codec("G.722 encode"))?;
                out.truncate(n);
            }
            EncoderKind::Opus(encoder) => {
                out.resize(MAX_PAYLOAD, 0);
                let n = encoder
                    .encode(frame, out)
                    .map_err(|_| MediaError::Codec("Opus encode"))?;
                out.truncate(n);
            }
            EncoderKind::G729(encoder) => encoder.encode(frame, out),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::tests::tone_snr;

    fn tone(rate: u32, freq: f64, frames: usize) -> Vec<i16> {
        (0..frame_len(rate) * frames)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    /// Encodes and decodes a tone frame by frame; returns the decoded audio after 10 frames.
    fn through(codec: Codec, room_rate: u32, freq: f64) -> (Vec<i16>, usize) {
        let mut encoder = Encoder::new(codec, room_rate, OpusOptions::default()).unwrap();
        let mut decoder = Decoder::new(codec, room_rate).unwrap();
        let rate = codec.audio_rate(room_rate);
        let input = tone(rate, freq, 50);
        let (mut payload, mut out, mut all, mut bytes) =
            (Vec::new(), vec![0i16; frame_len(rate)], Vec::new(), 0);
        for frame in input.chunks(frame_len(rate)) {
            encoder.encode(frame, &mut payload).unwrap();
            bytes = payload.len();
            decoder.decode(&payload, &mut out).unwrap();
            all.extend_from_slice(&out);
        }
        (all.split_off(frame_len(rate) * 10), bytes)
    }

    #[test]
    fn every_codec_carries_a_tone() {
        for (codec, room_rate, min_snr, bytes) in [
            (Codec::Pcmu, 16000, 30.0, 160),
            (Codec::Pcma, 16000, 30.0, 160),
            (Codec::G722, 16000, 25.0, 160),
            (Codec::G729, 16000, 20.0, 20),
            (Codec::Opus, 16000, 25.0, 0),
            (Codec::Opus, 48000, 25.0, 0),
            (Codec::Opus, 8000, 25.0, 0),
        ] {
            let rate = codec.audio_rate(room_rate);
            let (out, size) = through(codec, room_rate, 1000.0);
            let snr = tone_snr(&out, rate, 1000.0);
            eprintln!("{codec:?} at {rate} Hz: SNR {snr:.1} dB, {size} bytes per frame");
            assert!(snr > min_snr, "{codec:?} at {rate} Hz: SNR {snr:.1} dB");
            if bytes > 0 {
                assert_eq!(size, bytes, "{codec:?}");
            }
        }
    }

    #[test]
    fn g722_carries_what_g711_cannot() {
        // 6 kHz is above G.711's 4 kHz band but inside G.722's 7 kHz one.
        let (out, _) = through(Codec::G722, 16000, 6000.0);
        let rms =
            (out.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / out.len() as f64).sqrt();
        assert!(rms > 3000.0, "6 kHz through G.722: rms {rms:.0} of 5657");
    }

    #[test]
    fn bad_payloads_still_give_a_frame_and_an_error() {
        let mut opus = Decoder::new(Codec::Opus, 16000).unwrap();
        let mut out = vec![1i16; 320];
        assert!(opus.decode(&[0xff; 3], &mut out).is_err());
        let mut g711 = Decoder::new(Codec::Pcmu, 16000).unwrap();
        let mut out = vec![1i16; 160];
        assert!(
            g711.decode(&[0xff; 10], &mut out).is_ok(),
            "short G.711 is padded"
        );
        assert!(out[10..].iter().all(|&s| s == 0));
    }

    #[test]
    fn opus_fec_recovers_a_lost_frame() {
        let rate = 16000;
        let mut encoder = Encoder::new(
            Codec::Opus,
            rate,
            OpusOptions {
                fec: true,
                dtx: false,
            },
        )
        .unwrap();
        let mut decoder = Decoder::new(Codec::Opus, rate).unwrap();
        let input = tone(rate, 440.0, 30);
        let packets: Vec<Vec<u8>> = input
            .chunks(320)
            .map(|frame| {
                let mut p = Vec::new();
                encoder.encode(frame, &mut p).unwrap();
                p
            })
            .collect();
        let mut out = vec![0i16; 320];
        for p in &packets[..20] {
            decoder.decode(p, &mut out).unwrap();
        }
        // Packet 20 is lost: its audio comes from packet 21's FEC.
        assert!(decoder.conceal(Some(&packets[21]), &mut out), "FEC present");
        let rms = (out.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 320.0).sqrt();
        assert!(rms > 2000.0, "recovered audio rms {rms:.0}");
    }
}
