//! Roundtable's mixer.
//!
//! - [`mix`]: the N-1 mixing step (pure).
//! - [`room`]: the room core: legs, jitter buffers, codecs, voice processing, talker selection
//!   and one tick (pure).
//! - [`vad`], [`agc`], [`noise`], [`echo`], [`limiter`]: the per-leg and per-output audio stages.
//! - [`pool`]: the real-time mixer threads that tick rooms every 20 ms.
//! - [`metrics`]: tick lateness and loss metrics.
//! - [`babble`]: speech-like signals of independent talkers, for tests and load tools (pure).
#![deny(missing_docs)]

pub mod agc;
pub mod babble;
pub mod controls;
pub mod echo;
mod error;
pub mod governor;
mod leg;
pub mod limiter;
pub mod metrics;
pub mod mix;
pub mod noise;
pub mod pool;
pub mod room;
mod sound;
#[cfg(test)]
mod test_audio;
pub mod vad;

pub use controls::{AudioConfig, Degradation, LegControls};
pub use echo::{AecMode, EchoBackend};
pub use error::MixerError;
pub use room::{LegId, LegStatus, Room, RoomConfig, RoomEvent};
pub use roundtable_media::relations::{Audience, Relations};
