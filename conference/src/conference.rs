//! The conference core: which legs are in which rooms and lobbies, and what follows from each
//! join, leave, key press and command. One task owns it by `&mut`; it does no IO and reads no
//! clock.
//!
//! # How to drive it
//! - Input: [`Conference::handle_call`] (a call arrived; decides at once whether it may come
//!   in), [`Conference::handle_media_ready`] (its media was set up: it joins its room or the
//!   lobby), [`Conference::handle_digit`], [`Conference::handle_ended`], the commands
//!   ([`Conference::kick`], [`Conference::set_locked`], [`Conference::set_muted`],
//!   [`Conference::hang_up_all`]) and [`Conference::handle_timeout`] at
//!   [`Conference::poll_timeout`].
//! - Output: after each input, drain [`Conference::poll_action`] and carry the actions out in
//!   order (mixer commands, hang-ups, recording notes, events).
//!
//! Room definitions (PINs, sizes, policies) are read through a [`RoomDirectory`] given with
//! each input that needs them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::lobby::{self, Lobby, Prompt, RoomAccess};
use crate::lockout::{Lockout, LockoutTracker};
use crate::policy::{PolicyAction, PolicySettings, RoomPolicy};
use crate::{ConferenceError, LegId, RoomId, Secret};
use roundtable_media::relations::Relations;

mod actions;
mod dialout;
mod relations;
mod transfer;
pub use actions::{Action, DialState, Event, RecordNote, Sound, Tally};
pub use dialout::{DialLimits, DialOut, DialRefusal, DialView};

/// What the core reads of a room's definition (the service's room book answers).
pub trait RoomDirectory {
    /// Whether `room` is defined (configuration or API), so it can be entered while empty.
    fn defined(&self, room: &RoomId) -> bool;
    /// The rules of `room`, defined or not.
    fn rules(&self, room: &RoomId) -> RoomRules;
}

/// The part of a room's settings the core decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRules {
    /// The PIN, if the room has one.
    pub pin: Option<Secret>,
    /// The moderator PIN, if the room has one.
    pub moderator_pin: Option<Secret>,
    /// Participants before new callers are refused.
    pub max_participants: usize,
    /// Record from the first join.
    pub record: bool,
    /// Echo cancellation in the room (`None`: `audio.aec`).
    pub aec: Option<crate::settings::AecSetting>,
    /// Tones, prompts and moderator rules.
    pub policy: PolicySettings,
}

impl RoomRules {
    /// Whether the room is entered through the PIN lobby only.
    pub fn has_pin(&self) -> bool {
        self.pin.is_some() || self.moderator_pin.is_some()
    }
}

/// Service-wide limits of the core.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls at once (`sip.max_calls`), lobby and rooms together.
    pub max_calls: usize,
    /// PIN brute-force protection.
    pub lockout: Lockout,
    /// How long the lobby's goodbye prompt plays, so its hang-up follows it.
    pub goodbye_length: Duration,
    /// How many calls the conference places, at once and per second.
    pub dial_outs: DialLimits,
}

/// Where the dial plan sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Straight into a room.
    Room {
        /// The room.
        room: RoomId,
        /// Joins as a moderator.
        moderator: bool,
    },
    /// Into the PIN lobby.
    Lobby,
}

/// Why a call may not come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The service is starting or draining.
    #[error("not taking calls")]
    NotAccepting,
    /// The caller's address is locked out after wrong PINs.
    #[error("caller locked out")]
    LockedOut,
    /// `sip.max_calls` calls are up.
    #[error("sip.max_calls reached")]
    MaxCalls,
    /// The room has `max_participants`.
    #[error("room full")]
    RoomFull,
    /// The room is locked.
    #[error("room locked")]
    RoomLocked,
}

/// Why a leg left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The caller hung up.
    Hangup,
    /// The caller cancelled before the answer.
    Cancelled,
    /// Our answer was never acknowledged.
    NoAck,
    /// The session timer ran out.
    SessionExpired,
    /// The caller stopped answering.
    Unreachable,
    /// Its RTP stopped.
    RtpInactive,
    /// Its RTP socket failed.
    RtpError,
    /// Removed through the API.
    Kicked,
    /// The last moderator left a room that ends with its moderator.
    ModeratorLeft,
    /// The room filled up while the caller came from the lobby.
    RoomFull,
    /// The room was locked while the caller came from the lobby.
    RoomLocked,
    /// Too many wrong entries in the lobby.
    LobbyFailed,
    /// The service stopped.
    Shutdown,
    /// Refused before it was answered (its media could not be set up, or its room filled).
    Refused,
    /// A call we placed did not connect (its failure is in its `DialState`).
    DialFailed,
}

impl Departure {
    /// How logs and events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Departure::Hangup => "caller hung up",
            Departure::Cancelled => "cancelled",
            Departure::NoAck => "no ACK",
            Departure::SessionExpired => "session expired",
            Departure::Unreachable => "peer unreachable",
            Departure::RtpInactive => "rtp inactivity",
            Departure::RtpError => "rtp socket error",
            Departure::Kicked => "kicked",
            Departure::ModeratorLeft => "moderator left",
            Departure::RoomFull => "room full",
            Departure::RoomLocked => "room locked",
            Departure::LobbyFailed => "lobby: too many wrong entries",
            Departure::Shutdown => "shutdown",
            Departure::Refused => "refused",
            Departure::DialFailed => "dial-out failed",
        }
    }

    /// Whether the far end is still there and must be sent BYE.
    fn ours(self) -> bool {
        !matches!(
            self,
            Departure::Hangup
                | Departure::Cancelled
                | Departure::NoAck
                | Departure::SessionExpired
                | Departure::Unreachable
                | Departure::Refused
                | Departure::DialFailed
        )
    }
}

/// Where a leg is.
#[derive(Debug)]
enum Place {
    /// A call we place, not answered yet.
    Dialing(dialout::Dialing),
    /// Admitted; its media is being set up.
    Pending(Destination),
    /// In the PIN lobby, in its private mixer room (the lobby is out of its slot only while
    /// it runs).
    Lobby(Option<Box<Lobby>>),
    /// In a room.
    Room(RoomId),
}

/// One leg as the core sees it.
#[derive(Debug)]
struct Leg {
    source: IpAddr,
    place: Place,
    moderator: bool,
    muted: bool,
    /// The previous key was `*` (key commands are `*` then a digit).
    star: bool,
    /// A call we placed (its state changes are events).
    outbound: bool,
    /// Whom it hears and who hears it, besides everyone.
    relations: Relations,
}

/// One room that is up.
#[derive(Debug)]
struct Room {
    members: BTreeSet<LegId>,
    policy: RoomPolicy,
    locked: bool,
}

/// A leg in a room, as the API lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The leg.
    pub leg: LegId,
    /// Joined with the moderator PIN or through a moderator dial-plan rule.
    pub moderator: bool,
    /// Muted.
    pub muted: bool,
}

/// A room that is up, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// The room.
    pub id: RoomId,
    /// New callers are refused.
    pub locked: bool,
    /// Nobody is mixed until a moderator joins.
    pub waiting_for_moderator: bool,
    /// Its legs, in joining order.
    pub members: Vec<Member>,
}

/// The conference core. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Conference {
    limits: Limits,
    accepting: bool,
    legs: HashMap<LegId, Leg>,
    rooms: HashMap<RoomId, Room>,
    lockout: LockoutTracker,
    dial_rate: dialout::DialRate,
    next_leg: u64,
    actions: VecDeque<Action>,
    last_now: Option<Instant>,
}

impl Conference {
    /// A conference with no calls, not yet accepting them.
    pub fn new(limits: Limits) -> Conference {
        Conference {
            limits,
            accepting: false,
            legs: HashMap::new(),
            rooms: HashMap::new(),
            lockout: LockoutTracker::new(limits.lockout),
            dial_rate: dialout::DialRate::new(limits.dial_outs.per_second),
            next_leg: 0,
            actions: VecDeque::new(),
            last_now: None,
        }
    }

    /// Start (true) or stop (draining) taking calls.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Legs up or being set up.
    pub fn active_legs(&self) -> usize {
        self.legs.len()
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Conference::handle_timeout`] is next due (a lobby's entry or goodbye).
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Lobby callers are few next to room legs; a scan of them is cheap.
        self.legs
            .values()
            .filter_map(|leg| match &leg.place {
                Place::Lobby(Some(lobby)) => lobby.poll_timeout(),
                Place::Dialing(dialing) => dialing.deadline(),
                _ => None,
            })
            .min()
    }

    /// `now`, never earlier than a `now` already seen.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| last.max(now));
        self.last_now = Some(now);
        now
    }

    /// A call arrived from `source` for `destination`: admitted as a new leg (its media is to
    /// be set up, then [`Conference::handle_media_ready`]), or refused.
    pub fn handle_call(
        &mut self,
        now: Instant,
        source: IpAddr,
        destination: Destination,
        directory: &dyn RoomDirectory,
    ) -> Result<LegId, Refusal> {
        let now = self.advance(now);
        // A draining service refuses with NotAccepting (in `admit`) before any lockout.
        if self.accepting && self.lockout.source_locked(source, now) {
            return Err(Refusal::LockedOut);
        }
        let room = match &destination {
            Destination::Room { room, .. } => Some(room),
            Destination::Lobby => None,
        };
        self.admit(room, directory)?;
        Ok(self.add_leg(Leg {
            source,
            place: Place::Pending(destination),
            moderator: false,
            muted: false,
            star: false,
            outbound: false,
            relations: Relations::default(),
        }))
    }

    /// Whether one more leg may come in now (into `room`, if it goes straight there).
    fn admit(&self, room: Option<&RoomId>, directory: &dyn RoomDirectory) -> Result<(), Refusal> {
        if !self.accepting {
            return Err(Refusal::NotAccepting);
        }
        if self.legs.len() >= self.limits.max_calls {
            return Err(Refusal::MaxCalls);
        }
        match room {
            Some(room) => self.room_open_to(room, directory),
            None => Ok(()),
        }
    }

    /// Files a new leg under the next id.
    fn add_leg(&mut self, leg: Leg) -> LegId {
        self.next_leg += 1;
        let id = LegId(self.next_leg);
        self.legs.insert(id, leg);
        id
    }

    /// Whether one more caller may enter `room` now.
    fn room_open_to(&self, room: &RoomId, directory: &dyn RoomDirectory) -> Result<(), Refusal> {
        let Some(up) = self.rooms.get(room) else {
            return Ok(());
        };
        if up.members.len() >= directory.rules(room).max_participants {
            return Err(Refusal::RoomFull);
        }
        if up.locked {
            return Err(Refusal::RoomLocked);
        }
        Ok(())
    }

    /// A pending leg's media is ready: it joins its room (checked again: the room may have
    /// filled or locked meanwhile) or starts the lobby. On `Err` the leg is gone and the call
    /// is to be refused (a call we placed, already answered, gets a hang-up action instead).
    pub fn handle_media_ready(
        &mut self,
        now: Instant,
        leg: LegId,
        directory: &dyn RoomDirectory,
    ) -> Result<(), Refusal> {
        let now = self.advance(now);
        let Some(entry) = self.legs.get(&leg) else {
            return Ok(()); // Ended while its media was set up.
        };
        let Place::Pending(destination) = &entry.place else {
            return Ok(());
        };
        let outbound = entry.outbound;
        match destination.clone() {
            Destination::Room { room, moderator } => {
                if let Err(refusal) = self.room_open_to(&room, directory) {
                    let why = match refusal {
                        Refusal::RoomFull if outbound => Departure::RoomFull,
                        _ if outbound => Departure::RoomLocked,
                        _ => Departure::Refused,
                    };
                    self.leave(leg, why);
                    return Err(refusal);
                }
                self.enter_room(leg, room, moderator, directory, None);
            }
            Destination::Lobby => {
                let private = RoomId::lobby(leg);
                self.actions.push_back(Action::OpenRoom(private.clone()));
                self.actions
                    .push_back(Action::AddLeg { room: private, leg });
                let lobby = Lobby::new(now, self.limits.goodbye_length);
                if let Some(entry) = self.legs.get_mut(&leg) {
                    entry.place = Place::Lobby(Some(Box::new(lobby)));
                }
                // The welcome prompt.
                self.drive_lobby(now, leg, directory, |_, _| {});
            }
        }
        Ok(())
    }

    /// Puts `leg` into `room` (opening it if needed), moving its media from `from` if given.
    fn enter_room(
        &mut self,
        leg: LegId,
        room: RoomId,
        moderator: bool,
        directory: &dyn RoomDirectory,
        from: Option<RoomId>,
    ) {
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        entry.place = Place::Room(room.clone());
        entry.moderator = moderator;
        let muted = entry.muted;
        let is_new = !self.rooms.contains_key(&room);
        let rules = directory.rules(&room);
        if is_new {
            self.rooms.insert(
                room.clone(),
                Room {
                    members: BTreeSet::new(),
                    policy: RoomPolicy::new(rules.policy),
                    locked: false,
                },
            );
            self.actions.push_back(Action::OpenRoom(room.clone()));
        }
        let fresh = from.is_none();
        self.actions.push_back(match from {
            Some(from) => Action::MoveLeg {
                leg,
                from,
                to: room.clone(),
            },
            None => Action::AddLeg {
                room: room.clone(),
                leg,
            },
        });
        let Some(up) = self.rooms.get_mut(&room) else {
            return; // Inserted above.
        };
        up.members.insert(leg);
        let policy = up.policy.joined(leg, moderator);
        self.apply_policy(&room, policy);
        self.note(&room, RecordNote::Joined(leg));
        if muted {
            if fresh {
                // A new mixer leg starts unmuted (a moved one keeps its controls).
                self.actions.push_back(Action::Mute {
                    room: room.clone(),
                    leg,
                    muted: true,
                });
            }
            self.note(&room, RecordNote::Muted(leg, true));
        }
        self.event(&room, Event::Joined { leg, moderator });
        if is_new && rules.record {
            self.actions.push_back(Action::AutoRecord(room));
        }
    }

    fn note(&mut self, room: &RoomId, note: RecordNote) {
        self.actions.push_back(Action::Record {
            room: room.clone(),
            note,
        });
    }

    fn event(&mut self, room: &RoomId, event: Event) {
        self.actions.push_back(Action::Event {
            room: room.clone(),
            event,
        });
    }

    /// Carries out a room policy's decisions.
    fn apply_policy(&mut self, room: &RoomId, decisions: Vec<PolicyAction>) {
        for decision in decisions {
            let action = match decision {
                PolicyAction::JoinTone => Action::Announce {
                    room: room.clone(),
                    sound: Sound::JoinTone,
                },
                PolicyAction::LeaveTone => Action::Announce {
                    room: room.clone(),
                    sound: Sound::LeaveTone,
                },
                PolicyAction::Hold(on) => {
                    self.note(room, RecordNote::Hold(on));
                    self.event(room, Event::WaitingForModerator(on));
                    Action::Hold {
                        room: room.clone(),
                        on,
                    }
                }
                PolicyAction::Alone(leg) => Action::Play {
                    room: room.clone(),
                    leg,
                    sound: Sound::Prompt(Prompt::Alone),
                },
                PolicyAction::NotAlone(leg) => Action::StopSound {
                    room: room.clone(),
                    leg,
                    only: Some(Sound::Prompt(Prompt::Alone)),
                },
                PolicyAction::End => {
                    let others: Vec<LegId> = self
                        .rooms
                        .get(room)
                        .map(|r| r.members.iter().copied().collect())
                        .unwrap_or_default();
                    for other in others {
                        self.leave(other, Departure::ModeratorLeft);
                    }
                    continue;
                }
            };
            self.actions.push_back(action);
        }
    }

    /// A key press (RFC 4733 or INFO) from a leg.
    pub fn handle_digit(
        &mut self,
        now: Instant,
        leg: LegId,
        digit: char,
        directory: &dyn RoomDirectory,
    ) {
        let now = self.advance(now);
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        self.actions.push_back(Action::Tally(Tally::Digit));
        match &mut entry.place {
            Place::Pending(_) | Place::Dialing(_) => {}
            Place::Lobby(_) => self.drive_lobby(now, leg, directory, |lobby, view| {
                lobby.handle_digit(now, digit, view)
            }),
            Place::Room(room) => {
                let room = room.clone();
                let star = std::mem::replace(&mut entry.star, digit == '*');
                let (moderator, muted) = (entry.moderator, entry.muted);
                self.event(&room, Event::Dtmf { leg, digit });
                match (star, digit) {
                    // *6 mutes or unmutes oneself.
                    (true, '6') => {
                        let _ = self.set_muted(leg, !muted);
                    }
                    // *5 (moderators) locks or unlocks the room.
                    (true, '5') if moderator => {
                        let locked = self.rooms.get(&room).is_some_and(|r| r.locked);
                        let _ = self.set_locked(&room, !locked);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Runs one step of a lobby caller's lobby, then carries out what it decided.
    fn drive_lobby(
        &mut self,
        now: Instant,
        leg: LegId,
        directory: &dyn RoomDirectory,
        step: impl FnOnce(&mut Lobby, &mut dyn lobby::Directory),
    ) {
        // The lobby is taken out while it runs (its slot stays, so the leg is still in the
        // lobby for a leave), and put back unless the leg moved on.
        let Some(Leg {
            source,
            place: Place::Lobby(slot),
            ..
        }) = self.legs.get_mut(&leg)
        else {
            return;
        };
        let (source, Some(mut lobby)) = (*source, slot.take()) else {
            return;
        };
        let mut view = LobbyView {
            rooms: &self.rooms,
            directory,
            lockout: &mut self.lockout,
            source,
            now,
            tallies: Vec::new(),
        };
        step(&mut lobby, &mut view);
        let tallies = view.tallies;
        self.actions.extend(tallies.into_iter().map(Action::Tally));
        self.lobby_actions(leg, &RoomId::lobby(leg), &mut lobby, directory);
        if let Some(Leg {
            place: Place::Lobby(slot),
            ..
        }) = self.legs.get_mut(&leg)
        {
            *slot = Some(lobby);
        }
    }

    /// Carries out a lobby's actions for `leg` (in mixer room `private`).
    fn lobby_actions(
        &mut self,
        leg: LegId,
        private: &RoomId,
        lobby: &mut Lobby,
        directory: &dyn RoomDirectory,
    ) {
        while let Some(action) = lobby.poll_action() {
            match action {
                lobby::Action::Play(prompt) => self.actions.push_back(Action::Play {
                    room: private.clone(),
                    leg,
                    sound: Sound::Prompt(prompt),
                }),
                lobby::Action::StopPrompt => self.actions.push_back(Action::StopSound {
                    room: private.clone(),
                    leg,
                    only: None,
                }),
                lobby::Action::Join { room, moderator } => {
                    self.actions.push_back(Action::Tally(Tally::LobbyJoined));
                    let Ok(room) = RoomId::parse(&room) else {
                        // The lobby only joins rooms the directory knows, which are valid ids.
                        self.leave(leg, Departure::LobbyFailed);
                        return;
                    };
                    match self.room_open_to(&room, directory) {
                        Ok(()) => {
                            self.enter_room(leg, room, moderator, directory, Some(private.clone()))
                        }
                        Err(refusal) => {
                            let why = if refusal == Refusal::RoomLocked {
                                Departure::RoomLocked
                            } else {
                                Departure::RoomFull
                            };
                            self.leave(leg, why);
                        }
                    }
                    return;
                }
                lobby::Action::Hangup => {
                    self.actions.push_back(Action::Tally(Tally::LobbyHungUp));
                    self.leave(leg, Departure::LobbyFailed);
                    return;
                }
            }
        }
    }

    /// Lobby deadlines that passed.
    pub fn handle_timeout(&mut self, now: Instant, directory: &dyn RoomDirectory) {
        let now = self.advance(now);
        let due: Vec<LegId> = self
            .legs
            .iter()
            .filter_map(|(id, leg)| match &leg.place {
                Place::Lobby(Some(lobby)) if lobby.poll_timeout().is_some_and(|t| t <= now) => {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for leg in due {
            self.drive_lobby(now, leg, directory, |lobby, view| {
                lobby.handle_timeout(now, view)
            });
        }
        self.dial_timeouts(now);
    }

    /// The call of `leg` ended from its side (or its media failed).
    pub fn handle_ended(&mut self, now: Instant, leg: LegId, why: Departure) {
        self.advance(now);
        self.leave(leg, why);
    }

    /// Removes a leg from wherever it is, with everything that follows. Idempotent.
    fn leave(&mut self, leg: LegId, why: Departure) {
        let Some(entry) = self.legs.remove(&leg) else {
            return;
        };
        if why.ours() {
            self.actions.push_back(Action::Hangup(leg));
        }
        match entry.place {
            Place::Pending(_) | Place::Dialing(_) => {}
            Place::Lobby(_) => {
                let private = RoomId::lobby(leg);
                self.actions.push_back(Action::RemoveLeg {
                    room: private.clone(),
                    leg,
                });
                self.actions.push_back(Action::CloseRoom(private));
            }
            Place::Room(room) => {
                self.actions.push_back(Action::RemoveLeg {
                    room: room.clone(),
                    leg,
                });
                if self.depart_room(leg, &room, Event::Left { leg, why }) {
                    self.close_room(&room);
                }
                if entry.outbound {
                    let state = DialState::Ended;
                    self.event(&room, Event::DialState { leg, state });
                }
            }
        }
        self.actions.push_back(Action::Ended { leg, why });
    }

    /// Takes `leg` out of `room`'s members (ledger note, `event`, the room's policy); true when
    /// the room is left empty (the caller closes it with [`Conference::close_room`] once the
    /// leg's media is out of it).
    fn depart_room(&mut self, leg: LegId, room: &RoomId, event: Event) -> bool {
        self.note(room, RecordNote::Left(leg));
        self.event(room, event);
        self.forget_in_relations(room, leg);
        let decisions = match self.rooms.get_mut(room) {
            Some(up) => {
                up.members.remove(&leg);
                up.policy.left(leg)
            }
            None => Vec::new(),
        };
        self.apply_policy(room, decisions);
        self.rooms.get(room).is_some_and(|r| r.members.is_empty())
    }

    /// Forgets an empty room and closes its mixer room (its recording ends).
    fn close_room(&mut self, room: &RoomId) {
        self.rooms.remove(room);
        self.actions.push_back(Action::CloseRoom(room.clone()));
    }

    /// Removes a participant (the API's kick); a call still ringing is cancelled.
    pub fn kick(&mut self, room: &RoomId, leg: LegId) -> Result<(), ConferenceError> {
        if self.cancel_dial(room, leg) {
            return Ok(());
        }
        let up = self.rooms.get(room).ok_or(ConferenceError::RoomNotFound)?;
        if !up.members.contains(&leg) {
            return Err(ConferenceError::LegNotFound);
        }
        self.leave(leg, Departure::Kicked);
        Ok(())
    }

    /// Hangs up every leg (shutdown).
    pub fn hang_up_all(&mut self) {
        let mut legs: Vec<LegId> = self.legs.keys().copied().collect();
        legs.sort();
        for leg in legs {
            self.leave(leg, Departure::Shutdown);
        }
    }

    /// Locks or unlocks a room that is up.
    pub fn set_locked(&mut self, room: &RoomId, locked: bool) -> Result<(), ConferenceError> {
        let (id, up) = self
            .rooms
            .get_key_value(room)
            .ok_or(ConferenceError::RoomNotFound)?;
        if up.locked != locked {
            let id = id.clone();
            if let Some(up) = self.rooms.get_mut(room) {
                up.locked = locked;
            }
            self.event(&id, Event::Locked(locked));
        }
        Ok(())
    }

    /// Mutes or unmutes a leg in a room (the API, or its own `*6`).
    pub fn set_muted(&mut self, leg: LegId, muted: bool) -> Result<(), ConferenceError> {
        let entry = self
            .legs
            .get_mut(&leg)
            .ok_or(ConferenceError::LegNotFound)?;
        let Place::Room(room) = &entry.place else {
            return Err(ConferenceError::LegNotFound);
        };
        let room = room.clone();
        if std::mem::replace(&mut entry.muted, muted) != muted {
            self.actions.push_back(Action::Mute {
                room: room.clone(),
                leg,
                muted,
            });
            self.note(&room, RecordNote::Muted(leg, muted));
        }
        Ok(())
    }

    /// The room a leg is in (not the lobby's).
    pub fn room_of(&self, leg: LegId) -> Option<&RoomId> {
        match &self.legs.get(&leg)?.place {
            Place::Room(room) => Some(room),
            _ => None,
        }
    }

    /// A room that is up.
    pub fn room(&self, room: &RoomId) -> Option<RoomView> {
        let (id, up) = self.rooms.get_key_value(room)?;
        let members = up
            .members
            .iter()
            .filter_map(|leg| {
                let entry = self.legs.get(leg)?;
                Some(Member {
                    leg: *leg,
                    moderator: entry.moderator,
                    muted: entry.muted,
                })
            })
            .collect();
        Some(RoomView {
            id: id.clone(),
            locked: up.locked,
            waiting_for_moderator: up.policy.on_hold(),
            members,
        })
    }

    /// Every room that is up, with its number of participants.
    pub fn rooms(&self) -> impl Iterator<Item = (&RoomId, usize)> {
        self.rooms.iter().map(|(id, up)| (id, up.members.len()))
    }
}

/// The lobby's view of rooms and lockouts for one caller.
struct LobbyView<'a> {
    rooms: &'a HashMap<RoomId, Room>,
    directory: &'a dyn RoomDirectory,
    lockout: &'a mut LockoutTracker,
    source: IpAddr,
    now: Instant,
    tallies: Vec<Tally>,
}

impl lobby::Directory for LobbyView<'_> {
    fn room(&self, id: &str) -> Option<RoomAccess> {
        // Defined rooms, and rooms that are up, can be entered from the lobby.
        let id = RoomId::parse(id).ok()?;
        if !self.directory.defined(&id) && !self.rooms.contains_key(&id) {
            return None;
        }
        let rules = self.directory.rules(&id);
        let expose = |p: Option<Secret>| p.map(|s| s.expose().to_string());
        Some(RoomAccess {
            pin: expose(rules.pin),
            moderator_pin: expose(rules.moderator_pin),
        })
    }

    fn locked_out(&self, room: &str) -> bool {
        self.lockout.room_locked(room, self.now)
            || self.lockout.source_locked(self.source, self.now)
    }

    fn record_failure(&mut self, room: Option<&str>) {
        self.tallies.push(if room.is_some() {
            Tally::WrongPin
        } else {
            Tally::InvalidRoom
        });
        for scope in self.lockout.record(self.source, room, self.now) {
            self.tallies.push(Tally::Lockout {
                scope,
                source: self.source,
                room: room.map(str::to_string),
            });
        }
    }
}

#[cfg(test)]
mod tests;
