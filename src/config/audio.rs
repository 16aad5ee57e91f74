//! `[audio]`: every room's rate, the voice processing legs start with, and the mixer threads.

use roundtable_mixer::{AecMode, EchoBackend};
use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudio {
    rate: i64,
    aec: String,
    aec_backend: String,
    noise_suppression: bool,
    agc: bool,
    limiter: bool,
    top_k: i64,
    mixer_threads: i64,
}

/// `[audio]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    /// `audio.rate`: every room's internal rate (and its recordings' rate).
    pub rate: u32,
    /// The voice processing every room starts with.
    pub processing: roundtable_mixer::AudioConfig,
    /// `audio.mixer_threads`: mixer threads (0 in the file: one per core).
    pub mixer_threads: usize,
}

impl AudioConfig {
    /// Checks `[audio]`.
    pub(super) fn validate(raw: RawAudio) -> Result<AudioConfig, ConfigError> {
        let rate = match raw.rate {
            8000 | 16000 | 48000 => raw.rate as u32,
            other => {
                return Err(ConfigError::new(
                    "audio.rate",
                    format!("{other} is not 8000, 16000 or 48000"),
                ));
            }
        };
        let mixer_threads = match raw.mixer_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n @ 1..=256 => n as usize,
            other => {
                return Err(ConfigError::new(
                    "audio.mixer_threads",
                    format!("{other} is not 0 (one per core) to 256"),
                ));
            }
        };
        Ok(AudioConfig {
            rate,
            processing: processing(&raw)?,
            mixer_threads,
        })
    }
}

/// The voice processing switches.
fn processing(raw: &RawAudio) -> Result<roundtable_mixer::AudioConfig, ConfigError> {
    let aec = AecMode::parse(&raw.aec).ok_or_else(|| {
        ConfigError::new("audio.aec", format!("{:?} is not off, on or auto", raw.aec))
    })?;
    let aec_backend = EchoBackend::parse(&raw.aec_backend).ok_or_else(|| {
        ConfigError::new(
            "audio.aec_backend",
            format!("{:?} is not sonora or webrtc", raw.aec_backend),
        )
    })?;
    if !aec_backend.available() {
        return Err(ConfigError::new(
            "audio.aec_backend",
            format!(
                "{:?} is not built into this binary (build with --features webrtc-aec)",
                raw.aec_backend
            ),
        ));
    }
    let top_k = match raw.top_k {
        k @ 0..=64 => k as usize,
        other => {
            return Err(ConfigError::new(
                "audio.top_k",
                format!("{other} is not 0 (every talker) to 64"),
            ));
        }
    };
    Ok(roundtable_mixer::AudioConfig {
        aec,
        aec_backend,
        noise_suppression: raw.noise_suppression,
        agc: raw.agc,
        limiter: raw.limiter,
        top_k,
    })
}
