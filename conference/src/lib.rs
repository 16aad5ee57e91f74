//! Roundtable's conference core: who is in which room, and what that decides. Sans-IO: no
//! sockets, no clock, no tokio; callers pass `now` and carry out what it returns.
//!
//! - [`conference`]: the core: rooms, legs, lobbies and what each input decides.
//! - [`ids`]: [`RoomId`] and [`LegId`], parsed once; [`Secret`].
//! - [`lobby`]: one caller's PIN lobby (conference id, PIN, retries, goodbye).
//! - [`lockout`]: brute-force protection of PINs across calls.
//! - [`policy`]: what a room does as people join and leave (tones, prompts, moderators).
//! - [`settings`]: a room's settings as written (`[room]`, `[[rooms]]`, `rooms.json`, the API).
#![deny(missing_docs)]

pub mod conference;
pub mod ids;
pub mod lobby;
pub mod lockout;
pub mod policy;
pub mod settings;

pub use conference::Conference;
pub use ids::{LegId, RoomId, Secret};

/// What the conference core refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConferenceError {
    /// Not `[A-Za-z0-9_.-]{1,64}`.
    #[error("a room id is [A-Za-z0-9_.-]{{1,64}}")]
    InvalidRoomId,
    /// No such room is up.
    #[error("room not found")]
    RoomNotFound,
    /// No such participant in the room.
    #[error("participant not found")]
    LegNotFound,
    /// The room a participant is moved to does not take it (full or locked).
    #[error("{0}")]
    Refused(conference::Refusal),
    /// A relation names a leg that is not in the room (or the leg itself).
    #[error("participant {0} is not another participant of the room")]
    NotInRoom(LegId),
}
