//! `[recording]`: what rooms record and how recordings are signed and announced.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecording {
    auto_start: bool,
    mode: String,
    signing_key: String,
    consent_notice: bool,
    consent_prompt: String,
    include_whispers: bool,
}

/// `[recording]`, checked.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// `recording.auto_start`: record every room from its first join.
    pub auto_start: bool,
    /// `recording.mode`.
    pub mode: roundtable_recorder::Mode,
    /// `recording.signing_key`, or `signing-key.pk8` in `storage.path` (generated if missing).
    pub signing_key: PathBuf,
    /// `recording.consent_notice`: everyone in a recorded room hears the recording notice.
    pub consent_notice: bool,
    /// `recording.include_whispers`: the mixed recording carries what participants heard by
    /// only some said (a coach's whisper).
    pub include_whispers: bool,
    /// `recording.consent_prompt`: the notice's samples (8 kHz) if not the shipped one.
    pub consent_prompt: Option<Arc<[i16]>>,
}

impl RecordingConfig {
    /// Checks `[recording]`; the signing key defaults to a file in `storage_path`.
    pub(super) fn validate(
        raw: RawRecording,
        storage_path: &Path,
    ) -> Result<RecordingConfig, ConfigError> {
        let mode = roundtable_recorder::Mode::parse(&raw.mode).ok_or_else(|| {
            ConfigError::new(
                "recording.mode",
                format!("{:?} is not mixed, tracks or both", raw.mode),
            )
        })?;
        let signing_key = match raw.signing_key.as_str() {
            "" => storage_path.join("signing-key.pk8"),
            path => PathBuf::from(path),
        };
        let consent_prompt = match raw.consent_prompt.as_str() {
            "" => None,
            path => Some(
                crate::prompts::load_wav(Path::new(path))
                    .map_err(|reason| ConfigError::new("recording.consent_prompt", reason))?,
            ),
        };
        Ok(RecordingConfig {
            auto_start: raw.auto_start,
            mode,
            signing_key,
            consent_notice: raw.consent_notice,
            include_whispers: raw.include_whispers,
            consent_prompt,
        })
    }
}
