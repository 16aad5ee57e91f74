//! What can be switched in the mixer: the service's audio features, each leg's controls, and
//! the overload degradation stages.

use crate::echo::{AecMode, EchoBackend};

/// The audio features every room starts with (`[audio]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    /// Echo cancellation unless a room or leg says otherwise.
    pub aec: AecMode,
    /// Which echo canceller.
    pub aec_backend: EchoBackend,
    /// Noise suppression on the mixed talkers.
    pub noise_suppression: bool,
    /// Level control on the mixed talkers.
    pub agc: bool,
    /// A limiter on every output and on the recording mix (off: plain 16-bit saturation).
    pub limiter: bool,
    /// Most talkers mixed at once, the loudest first (0: every talker).
    pub top_k: usize,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            aec: AecMode::Auto,
            aec_backend: EchoBackend::Sonora,
            noise_suppression: true,
            agc: true,
            limiter: true,
            top_k: 4,
        }
    }
}

impl AudioConfig {
    /// Every feature off and every talker mixed: a steady tone passes untouched (tests).
    pub fn plain() -> AudioConfig {
        AudioConfig {
            aec: AecMode::Off,
            noise_suppression: false,
            agc: false,
            limiter: false,
            top_k: 0,
            ..Default::default()
        }
    }
}

/// One leg's controls (API and DTMF). `None` fields follow the room and service.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LegControls {
    /// Its input is dropped: nobody hears it.
    pub muted: bool,
    /// It hears nothing (silence is still sent, to keep its RTP flowing).
    pub deaf: bool,
    /// Gain on what it says, in dB.
    pub input_gain_db: f32,
    /// Gain on what it hears, in dB.
    pub output_gain_db: f32,
    /// Echo cancellation for this leg.
    pub aec: Option<AecMode>,
    /// Noise suppression for this leg.
    pub noise_suppression: Option<bool>,
    /// Level control for this leg.
    pub agc: Option<bool>,
}

/// How far a mixer thread has shed work to keep its ticks on time, in the fixed order the
/// stages are dropped. Each stage includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub enum Degradation {
    /// Everything runs.
    #[default]
    Full,
    /// Noise suppression is skipped.
    NoNoiseSuppression,
    /// Echo cancellation is skipped on legs in `auto` mode.
    NoAutoAec,
    /// Echo cancellation is skipped on every leg, `on` included.
    NoAec,
}

impl Degradation {
    /// Every stage, in order.
    pub const ALL: [Degradation; 4] = [
        Degradation::Full,
        Degradation::NoNoiseSuppression,
        Degradation::NoAutoAec,
        Degradation::NoAec,
    ];

    /// The metrics and API name.
    pub fn name(self) -> &'static str {
        match self {
            Degradation::Full => "full",
            Degradation::NoNoiseSuppression => "no_noise_suppression",
            Degradation::NoAutoAec => "no_auto_aec",
            Degradation::NoAec => "no_aec",
        }
    }

    /// The next stage down, if any.
    pub fn worse(self) -> Option<Degradation> {
        Self::ALL.get(self as usize + 1).copied()
    }

    /// The next stage up, if any.
    pub fn better(self) -> Option<Degradation> {
        (self as usize).checked_sub(1).map(|i| Self::ALL[i])
    }
}
