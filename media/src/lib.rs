//! Roundtable's media capability.
//!
//! - [`rtp`]: RTP parse (validated) and our sender state (pure).
//! - [`g711`]: mu-law and A-law codecs (pure).
//! - [`jitter`]: reordering jitter buffer (pure).
//! - [`dtmf`]: RFC 4733 events and SIP INFO bodies to key presses (pure).
//! - [`ports`]: RTP port pair allocator (pure).
//! - [`socket`]: binding a leg's ports and its tokio receive task.
//! - [`metrics`]: Prometheus counters.
#![deny(missing_docs)]

pub mod dtmf;
pub mod error;
pub mod g711;
pub mod jitter;
pub mod metrics;
pub mod ports;
pub mod rtp;
pub mod socket;

pub use error::MediaError;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// One 20 ms frame of 16-bit linear audio at 8 kHz.
pub type Frame = [i16; FRAME_SAMPLES];

/// The G.711 variant a leg speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    /// mu-law (PCMU, payload type 0).
    Ulaw,
    /// A-law (PCMA, payload type 8).
    Alaw,
}

impl G711 {
    /// Decodes a payload into `out`; short payloads leave the rest silent.
    pub fn decode(self, payload: &[u8], out: &mut Frame) {
        out.fill(0);
        for (o, &b) in out.iter_mut().zip(payload) {
            *o = match self {
                G711::Ulaw => g711::ulaw_decode(b),
                G711::Alaw => g711::alaw_decode(b),
            };
        }
    }

    /// Encodes a frame into `out` (resized to one byte per sample).
    pub fn encode(self, frame: &Frame, out: &mut Vec<u8>) {
        out.clear();
        match self {
            G711::Ulaw => out.extend(frame.iter().map(|&s| g711::ulaw_encode(s))),
            G711::Alaw => out.extend(frame.iter().map(|&s| g711::alaw_encode(s))),
        }
    }

    /// The static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Ulaw => 0,
            G711::Alaw => 8,
        }
    }
}
