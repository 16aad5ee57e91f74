//! Roundtable's media capability.
//!
//! - [`rtp`]: RTP parse (validated) and our sender state (pure).
//! - [`codec`]: PCMU, PCMA, G.722, Opus and G.729 decoders and encoders of 20 ms frames.
//! - [`g711`]: mu-law and A-law tables (pure).
//! - [`g729`]: G.729 Annex A (and Annex B's SID frames) through bcg729, linked statically.
//! - [`plc`]: loss concealment for codecs without their own (pure).
//! - [`latch`]: symmetric RTP with a guard against hijacking (pure).
//! - [`jitter`]: reordering jitter buffer (pure).
//! - [`dtmf`]: RFC 4733 events and SIP INFO bodies to key presses (pure).
//! - [`frames`]: the frames a room hands its listeners, the recorder among them (pure data).
//! - [`ports`]: RTP port pair allocator (pure).
//! - [`relations`]: who hears whom besides everyone (whisper, coach), shared by the conference
//!   core and the mixer (pure data).
//! - [`quality`]: a leg's receive quality, and the E-model: loss and delay to R and MOS (pure).
//! - [`resample`]: 20 ms frames between codec and room rates.
//! - [`sample`]: float to 16-bit sample rounding (pure).
//! - [`rtcp`]: RTCP reports, sent and read (pure).
//! - [`srtp`]: SDES keys and SRTP/SRTCP contexts.
//! - `socket` (feature `driver`, on by default): binding a leg's ports; its RTP intake (read
//!   by the mixer thread) and its RTCP task.
//! - [`udp`]: batched, kernel-timestamped UDP reads and batched sends.
//! - [`metrics`]: Prometheus counters.
#![deny(missing_docs)]

pub mod codec;
pub mod dtmf;
pub mod error;
pub mod frames;
pub mod g711;
// bcg729's C functions, each call with its SAFETY comment.
#[allow(unsafe_code)]
pub mod g729;
pub mod jitter;
pub mod latch;
pub mod metrics;
pub mod plc;
pub mod ports;
pub mod quality;
pub mod relations;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod sample;
#[cfg(feature = "driver")]
pub mod socket;
pub mod srtp;
// Batched and connected UDP calls the standard library does not offer (recvmmsg, sendmmsg,
// SO_TIMESTAMPNS, a second socket on a bound port): raw system calls, each with its SAFETY
// comment.
#[allow(unsafe_code)]
pub mod udp;

pub use error::MediaError;
