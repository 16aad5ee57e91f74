//! The SIP capability's error types.

use thiserror::Error;

/// Why bytes could not be parsed as a SIP message. Such input is dropped and counted unless a
/// response can be addressed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Stream framing: the message is not complete yet; read more.
    #[error("incomplete message")]
    Incomplete,
    /// Nothing but empty lines.
    #[error("empty message")]
    EmptyMessage,
    /// A datagram without the blank line that ends the header section.
    #[error("no end of header section")]
    NoHeaderEnd,
    /// Larger than [`crate::message::MAX_MESSAGE_LEN`].
    #[error("message too large")]
    TooLarge,
    /// Header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// Request or status line does not follow the grammar.
    #[error("malformed start line")]
    BadStartLine,
    /// A header line without a name or colon, or a value that does not parse.
    #[error("malformed header field")]
    BadHeader,
    /// Content-Length is not a non-negative integer.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// More than one Content-Length (RFC 4475 mcl01).
    #[error("more than one Content-Length")]
    MultipleContentLength,
    /// Stream framing needs a Content-Length.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is larger than the datagram's body (RFC 4475 clerr).
    #[error("Content-Length {declared} exceeds the {available} body bytes received")]
    BodyShorterThanContentLength {
        /// What the header said.
        declared: usize,
        /// What the datagram carried.
        available: usize,
    },
    /// A URI that is not `sip:`/`sips:` or lacks a host.
    #[error("malformed SIP URI")]
    BadUri,
    /// The SDP body does not follow RFC 4566.
    #[error("malformed SDP: {0}")]
    BadSdp(&'static str),
}

/// A request that parsed but breaks a rule: answer it with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{code} {reason}")]
pub struct Rejection {
    /// SIP status code.
    pub code: u16,
    /// Reason phrase for the status line.
    pub reason: &'static str,
}

impl Rejection {
    /// A rejection with this status line.
    pub const fn new(code: u16, reason: &'static str) -> Rejection {
        Rejection { code, reason }
    }
}
