//! Roundtable's SIP capability.
//!
//! - [`message`]: parse and print SIP messages (pure).
//! - [`sdp`]: SDP offer/answer for G.711 audio (pure).
//! - [`timer`]: RFC 3261 timers in one table.
//! - [`session_timer`]: RFC 4028 session timers, UAS side (pure).
//! - [`admission`]: source allow-list and per-source rate limits (pure).
//! - [`digest`]: digest authentication of callers, SHA-256 and MD5 (pure).
//! - [`endpoint`]: the sans-IO user agent core (transactions and dialogs).
//! - [`registration`]: when to REGISTER with a registrar, backoff and circuit breaker (pure).
//! - [`locate`]: where a request to a URI goes (RFC 3263: SRV, A/AAAA through DNS).
//! - [`transport`]: the tokio driver: UDP, TCP and TLS sockets around an [`endpoint::Endpoint`].
//! - [`metrics`]: Prometheus counters for SIP traffic.
#![deny(missing_docs)]

pub mod admission;
pub mod digest;
pub mod endpoint;
pub mod error;
pub mod locate;
pub mod message;
pub mod metrics;
pub mod registration;
pub mod sdp;
pub mod session_timer;
pub mod timer;
pub mod transport;

pub use error::{ParseError, Rejection};
