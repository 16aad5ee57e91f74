//! What the conference core asks its driver to do: the [`Action`]s and what they carry.

use std::net::IpAddr;

use roundtable_media::relations::Relations;

use super::Departure;
use crate::lobby::Prompt;
use crate::lockout::Scope;
use crate::{LegId, RoomId};

/// A sound the mixer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    /// A recorded prompt.
    Prompt(Prompt),
    /// The rising join tone.
    JoinTone,
    /// The falling leave tone.
    LeaveTone,
}

/// What a room's recording is told, so its ledger says who was in it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordNote {
    /// The leg joined (or was in the room when the recording started).
    Joined(LegId),
    /// The leg left.
    Left(LegId),
    /// The leg was muted or unmuted.
    Muted(LegId, bool),
    /// The room went on hold (waiting for its moderator) or off it.
    Hold(bool),
    /// The leg's relations changed (whom it hears, who hears it).
    Relations(LegId, Relations),
}

/// What happened, for the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A leg joined a room.
    Joined {
        /// The leg.
        leg: LegId,
        /// As a moderator.
        moderator: bool,
    },
    /// A leg left a room.
    Left {
        /// The leg.
        leg: LegId,
        /// Why.
        why: Departure,
    },
    /// A leg left this room for another (an API move or a REFER); it joins `to` next.
    Moved {
        /// The leg.
        leg: LegId,
        /// The room it went to.
        to: RoomId,
    },
    /// A leg's relations changed (whom it hears, who hears it).
    Relations {
        /// The leg.
        leg: LegId,
        /// Its relations now.
        relations: Relations,
    },
    /// A key press in a room.
    Dtmf {
        /// The leg.
        leg: LegId,
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
    },
    /// The room was locked (true) or unlocked.
    Locked(bool),
    /// The room waits for its moderator (true), or one arrived.
    WaitingForModerator(bool),
    /// A leg we called changed state.
    DialState {
        /// The leg.
        leg: LegId,
        /// Its new state.
        state: DialState,
    },
}

/// Where a call the conference placed stands, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialState {
    /// The INVITE is out.
    Dialing,
    /// The callee's phone rings (a 18x arrived).
    Ringing,
    /// The callee answered; the leg joins its room.
    Answered,
    /// It never connected: the final response's code and reason (480 "No Answer" when
    /// nobody answered within the timeout).
    Failed {
        /// The SIP code.
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// It connected and is over, or was cancelled before the answer.
    Ended,
}

impl DialState {
    /// The API's name of the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            DialState::Dialing => "dialing",
            DialState::Ringing => "ringing",
            DialState::Answered => "answered",
            DialState::Failed { .. } => "failed",
            DialState::Ended => "ended",
        }
    }
}

/// Counted outcomes, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// A lobby caller typed an unknown conference id.
    InvalidRoom,
    /// A lobby caller typed a wrong PIN.
    WrongPin,
    /// A lobby caller joined a room.
    LobbyJoined,
    /// The lobby hung up on a caller after too many wrong entries.
    LobbyHungUp,
    /// A caller address or a room got locked out.
    Lockout {
        /// Which.
        scope: Scope,
        /// The caller's address.
        source: IpAddr,
        /// The room, for a room lockout or a wrong PIN against one.
        room: Option<String>,
    },
    /// A key press arrived.
    Digit,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a mixer room (on a thread of the driver's choice) before its first leg.
    OpenRoom(RoomId),
    /// Close a mixer room after its last leg (its recording ends).
    CloseRoom(RoomId),
    /// Put a leg's media into a mixer room: a lobby caller's private room, or its room.
    AddLeg {
        /// The mixer room.
        room: RoomId,
        /// The leg.
        leg: LegId,
    },
    /// Move a leg's media between mixer rooms (lobby to room).
    MoveLeg {
        /// The leg.
        leg: LegId,
        /// Where it is.
        from: RoomId,
        /// Where it goes.
        to: RoomId,
    },
    /// Take a leg out of its mixer room: it has left.
    RemoveLeg {
        /// The mixer room.
        room: RoomId,
        /// The leg.
        leg: LegId,
    },
    /// Play a sound to one leg, over what it hears.
    Play {
        /// The mixer room.
        room: RoomId,
        /// The leg.
        leg: LegId,
        /// What.
        sound: Sound,
    },
    /// Stop a leg's sound: `only` that one if it still plays, else any.
    StopSound {
        /// The mixer room.
        room: RoomId,
        /// The leg.
        leg: LegId,
        /// Only this one.
        only: Option<Sound>,
    },
    /// Play a sound to everyone in a room.
    Announce {
        /// The room.
        room: RoomId,
        /// What.
        sound: Sound,
    },
    /// Put the room on hold with the hold sound (true), or take it off.
    Hold {
        /// The room.
        room: RoomId,
        /// On or off.
        on: bool,
    },
    /// Set whom a leg hears and who hears it.
    Relations {
        /// The room.
        room: RoomId,
        /// The leg.
        leg: LegId,
        /// Its relations.
        relations: Relations,
    },
    /// Mute or unmute a leg (a key command).
    Mute {
        /// The room.
        room: RoomId,
        /// The leg.
        leg: LegId,
        /// Muted or not.
        muted: bool,
    },
    /// Start the room's recording (it records from its first join).
    AutoRecord(RoomId),
    /// Tell the room's recording, if one runs.
    Record {
        /// The room.
        room: RoomId,
        /// What.
        note: RecordNote,
    },
    /// Send BYE (or refuse the pending INVITE): the leg has already left the core.
    Hangup(LegId),
    /// The leg is gone from the core: release its media and counters.
    Ended {
        /// The leg.
        leg: LegId,
        /// Why.
        why: Departure,
    },
    /// Append to the event stream.
    Event {
        /// The room.
        room: RoomId,
        /// What.
        event: Event,
    },
    /// Count (and log) an outcome.
    Tally(Tally),
}
