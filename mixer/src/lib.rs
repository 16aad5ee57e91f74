//! Roundtable's mixer.
//!
//! - [`mix`]: the N-1 mixing step (pure).
//! - [`room`]: the room core: legs, jitter buffers, codecs, one tick (pure).
//! - [`pool`]: the real-time mixer threads that tick rooms every 20 ms.
//! - [`metrics`]: tick lateness and loss metrics.
#![deny(missing_docs)]

pub mod metrics;
pub mod mix;
pub mod pool;
pub mod room;

pub use room::{LegId, Room, RoomConfig};
