//! The media capability's error type.

use thiserror::Error;

/// Why media input was refused (every such case is counted and the packet dropped), or why a
/// leg's media could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MediaError {
    /// Shorter than its headers say.
    #[error("truncated RTP packet")]
    Truncated,
    /// RTP version other than 2.
    #[error("RTP version is not 2")]
    BadVersion,
    /// An RTCP packet arrived on the RTP port.
    #[error("RTCP packet on the RTP port")]
    RtcpOnRtpPort,
    /// Padding length zero or beyond the payload.
    #[error("bad RTP padding")]
    BadPadding,
    /// A payload type that was not negotiated.
    #[error("payload type {0} not negotiated")]
    UnexpectedPayloadType(u8),
    /// A packet from an SSRC other than the one we locked onto.
    #[error("unexpected SSRC {0:#x}")]
    UnexpectedSsrc(u32),
    /// The port range has no free pair left.
    #[error("RTP port range exhausted")]
    PortsExhausted,
    /// RTP from another address than the latched one while that one is alive.
    #[error("RTP from an unlatched address")]
    Hijack,
    /// SRTP: a packet failed authentication or replay checks, or a key was unusable.
    #[error("SRTP: {0}")]
    Srtp(&'static str),
    /// An RTCP packet that does not parse.
    #[error("malformed RTCP packet")]
    BadRtcp,
    /// A resampler could not be built for a pair of rates.
    #[error("resampler: {0}")]
    Resampler(&'static str),
    /// A codec could not be set up, or a payload could not be decoded.
    #[error("codec: {0}")]
    Codec(&'static str),
}
