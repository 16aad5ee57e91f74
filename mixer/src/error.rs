//! The mixer's errors.

/// What can go wrong in the mixer's audio processing.
#[derive(Debug, thiserror::Error)]
pub enum MixerError {
    /// A frame was not a whole number of 10 ms blocks.
    #[error("frame of {0} samples is not a whole number of 10 ms blocks")]
    FrameSize(usize),
    /// An audio processing library refused a frame.
    #[error("audio processing failed: {0}")]
    Processing(String),
    /// The configured echo canceller was not built into this binary.
    #[error("echo canceller backend {0:?} is not built in (cargo feature webrtc-aec)")]
    BackendMissing(&'static str),
    /// A codec could not be set up.
    #[error(transparent)]
    Media(#[from] roundtable_media::MediaError),
}
