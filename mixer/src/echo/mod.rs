//! Echo cancellation per leg: the reference is exactly the frame the bridge sent to that leg,
//! so a speakerphone or a PSTN hybrid that returns the room to itself is cleaned before its
//! audio is mixed.
//!
//! - [`EchoCanceller`]: the one interface the room uses, with two backends: sonora (a Rust port
//!   of WebRTC's AEC3; the default) and, with the `webrtc-aec` cargo feature, the C library
//!   webrtc-audio-processing 0.5.
//! - [`detector`]: a cheap test of whether a leg echoes at all, which `auto` mode uses to turn
//!   cancellation on only where it is needed.

pub mod detector;
mod sonora_backend;
#[cfg(feature = "webrtc-aec")]
mod webrtc_backend;

use crate::MixerError;

/// Removes from a leg's input the echo of what it was sent.
///
/// Feed every frame sent to the leg with [`EchoCanceller::render`] and every frame received
/// from it with [`EchoCanceller::capture`], both 20 ms at the leg's processing rate (its
/// codec's, at most the room's), in the order they happen.
pub trait EchoCanceller: Send {
    /// The frame just sent to the leg.
    fn render(&mut self, sent: &[i16]) -> Result<(), MixerError>;
    /// The leg's input frame, cleaned in place.
    fn capture(&mut self, input: &mut [i16]) -> Result<(), MixerError>;
}

/// Whether a leg gets echo cancellation (`audio.aec`, per room, per leg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AecMode {
    /// Never.
    Off,
    /// Always.
    On,
    /// Only while the echo detector finds the leg echoing.
    #[default]
    Auto,
}

impl AecMode {
    /// Parses `off`, `on` or `auto`.
    pub fn parse(name: &str) -> Option<AecMode> {
        match name {
            "off" => Some(AecMode::Off),
            "on" => Some(AecMode::On),
            "auto" => Some(AecMode::Auto),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            AecMode::Off => "off",
            AecMode::On => "on",
            AecMode::Auto => "auto",
        }
    }
}

/// Which implementation cancels echo (`audio.aec_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchoBackend {
    /// sonora: WebRTC AEC3 in Rust.
    #[default]
    Sonora,
    /// webrtc-audio-processing 0.5 (the C library); needs the `webrtc-aec` feature.
    WebRtc,
}

impl EchoBackend {
    /// Parses `sonora` or `webrtc`.
    pub fn parse(name: &str) -> Option<EchoBackend> {
        match name {
            "sonora" => Some(EchoBackend::Sonora),
            "webrtc" => Some(EchoBackend::WebRtc),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            EchoBackend::Sonora => "sonora",
            EchoBackend::WebRtc => "webrtc",
        }
    }

    /// Whether this build includes the backend.
    pub fn available(self) -> bool {
        match self {
            EchoBackend::Sonora => true,
            EchoBackend::WebRtc => cfg!(feature = "webrtc-aec"),
        }
    }
}

/// A new canceller for one leg at its processing `rate` (8000, 16000 or 48000 Hz).
pub fn canceller(backend: EchoBackend, rate: u32) -> Result<Box<dyn EchoCanceller>, MixerError> {
    match backend {
        EchoBackend::Sonora => Ok(Box::new(sonora_backend::SonoraCanceller::new(rate))),
        #[cfg(feature = "webrtc-aec")]
        EchoBackend::WebRtc => Ok(Box::new(webrtc_backend::WebRtcCanceller::new(rate)?)),
        #[cfg(not(feature = "webrtc-aec"))]
        EchoBackend::WebRtc => Err(MixerError::BackendMissing("webrtc")),
    }
}

#[cfg(test)]
mod tests;
