//! Calls the conference places into a room (the API's dial-out): admitted like a caller, then
//! dialing, ringing, answered (the leg joins its room once its media is set up, as an answered
//! caller does), or failed. Nobody answering within the call's timeout cancels it.
//!
//! ```text
//!  dial_out --> Dialing --progress--> Ringing --answered--> Pending --media ready--> Room
//!                  \________________________\--failed / timeout / kick--> gone
//! ```

use std::time::{Duration, Instant};

use super::{Action, Conference, Departure, Destination, DialState, Event, Leg, Place};
use super::{Refusal, RoomDirectory, RoomId};
use crate::LegId;

/// How many calls the conference places (`sip.max_dialouts`, `sip.dialout_cps`): a runaway
/// API client must not exhaust a trunk's channels or trip its call-rate guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialLimits {
    /// Calls we placed that are up at once (dialing, ringing or in a room).
    pub max_concurrent: usize,
    /// Calls placed per second, at most (a bucket of this many, refilled at this rate).
    pub per_second: u32,
}

/// The dial-out rate: a token bucket holding up to `per_second` calls, refilled at
/// `per_second` a second.
#[derive(Debug)]
pub(super) struct DialRate {
    per_second: u32,
    /// Calls that may go now, in thousandths (whole integers keep it exact).
    milli_tokens: u64,
    last: Option<Instant>,
}

impl DialRate {
    pub(super) fn new(per_second: u32) -> DialRate {
        DialRate {
            per_second,
            milli_tokens: u64::from(per_second) * 1000,
            last: None,
        }
    }

    /// Takes one call's token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let full = u64::from(self.per_second) * 1000;
        if let Some(last) = self.last {
            let elapsed_us = now.saturating_duration_since(last).as_micros();
            let refill = elapsed_us.saturating_mul(u128::from(self.per_second)) / 1000;
            self.milli_tokens = full.min(
                self.milli_tokens
                    .saturating_add(refill.min(u128::from(full)) as u64),
            );
        }
        self.last = Some(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Ok(());
        }
        let missing_us = (1000 - self.milli_tokens) * 1000 / u64::from(self.per_second.max(1));
        Err(Duration::from_micros(missing_us.max(1)))
    }
}

/// Why a call may not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialRefusal {
    /// As a caller would be refused (draining, `max_calls`, the room full or locked).
    #[error(transparent)]
    Admission(#[from] Refusal),
    /// `sip.max_dialouts` calls we placed are up.
    #[error("sip.max_dialouts calls placed are up")]
    MaxDialOuts,
    /// `sip.dialout_cps` calls were placed in the last second; one more may go after `retry`.
    #[error("sip.dialout_cps calls were placed in the last second")]
    Rate {
        /// When the next call may be placed.
        retry: Duration,
    },
}

/// A call to place into a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOut {
    /// The room it joins once answered (created then if nobody is in it).
    pub room: RoomId,
    /// Joins as a moderator.
    pub moderator: bool,
    /// Joins muted.
    pub muted: bool,
    /// How long it may ring before it is cancelled.
    pub timeout: Duration,
}

/// Why we gave up on a call before its final response came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GaveUp {
    /// Nobody answered within the timeout.
    Timeout,
    /// Removed through the API.
    Cancelled,
}

/// A call we place, until it is answered or fails.
#[derive(Debug)]
pub(super) struct Dialing {
    room: RoomId,
    moderator: bool,
    ringing: bool,
    deadline: Instant,
    gave_up: Option<GaveUp>,
}

impl Dialing {
    /// When it is cancelled for want of an answer (none once given up on).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.gave_up.is_none().then_some(self.deadline)
    }
}

/// A call we place that has not joined its room yet, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialView {
    /// The leg.
    pub leg: LegId,
    /// Dialing, ringing, or answered (its media being set up).
    pub state: DialState,
    /// Will join as a moderator.
    pub moderator: bool,
    /// Will join muted.
    pub muted: bool,
}

impl Conference {
    /// Places a call into `dial.room`: admitted as a caller would be (accepting, `max_calls`,
    /// the room's size and lock), then dialing. The driver sends the INVITE and reports back
    /// with [`Conference::handle_dial_progress`], [`Conference::handle_dial_answered`] and
    /// [`Conference::handle_dial_failed`].
    pub fn dial_out(
        &mut self,
        now: Instant,
        dial: DialOut,
        directory: &dyn RoomDirectory,
    ) -> Result<LegId, DialRefusal> {
        let now = self.advance(now);
        self.admit(Some(&dial.room), directory)?;
        let placed = self.legs.values().filter(|l| l.outbound).count();
        if placed >= self.limits.dial_outs.max_concurrent {
            return Err(DialRefusal::MaxDialOuts);
        }
        self.dial_rate
            .take(now)
            .map_err(|retry| DialRefusal::Rate { retry })?;
        let dialing = Dialing {
            room: dial.room.clone(),
            moderator: dial.moderator,
            ringing: false,
            deadline: now + dial.timeout,
            gave_up: None,
        };
        let leg = self.add_leg(Leg {
            source: std::net::IpAddr::from([0, 0, 0, 0]),
            place: Place::Dialing(dialing),
            moderator: dial.moderator,
            muted: dial.muted,
            star: false,
            outbound: true,
            relations: Default::default(),
        });
        let state = DialState::Dialing;
        self.event(&dial.room, Event::DialState { leg, state });
        Ok(leg)
    }

    fn dialing_mut(&mut self, leg: LegId) -> Option<&mut Dialing> {
        match &mut self.legs.get_mut(&leg)?.place {
            Place::Dialing(dialing) => Some(dialing),
            _ => None,
        }
    }

    /// A provisional response (ringing) to a call we place.
    pub fn handle_dial_progress(&mut self, now: Instant, leg: LegId) {
        self.advance(now);
        let Some(dialing) = self.dialing_mut(leg) else {
            return;
        };
        if dialing.ringing || dialing.gave_up.is_some() {
            return;
        }
        dialing.ringing = true;
        let room = dialing.room.clone();
        let state = DialState::Ringing;
        self.event(&room, Event::DialState { leg, state });
    }

    /// A call we place was answered: its media is set up next, then
    /// [`Conference::handle_media_ready`] puts it in its room.
    pub fn handle_dial_answered(&mut self, now: Instant, leg: LegId) {
        self.advance(now);
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        let Place::Dialing(dialing) = &entry.place else {
            return;
        };
        if dialing.gave_up.is_some() {
            return; // The SIP side ends a call answered after its CANCEL.
        }
        let room = dialing.room.clone();
        let destination = Destination::Room {
            room: room.clone(),
            moderator: dialing.moderator,
        };
        entry.place = Place::Pending(destination);
        let state = DialState::Answered;
        self.event(&room, Event::DialState { leg, state });
    }

    /// A call we place got a final failure (`code`, `reason`), or was cancelled by us.
    pub fn handle_dial_failed(&mut self, now: Instant, leg: LegId, code: u16, reason: &str) {
        self.advance(now);
        let Some(dialing) = self.dialing_mut(leg) else {
            return;
        };
        let (state, why) = match dialing.gave_up {
            Some(GaveUp::Timeout) => (
                DialState::Failed {
                    code: 480,
                    reason: "No Answer".into(),
                },
                Departure::DialFailed,
            ),
            Some(GaveUp::Cancelled) => (DialState::Ended, Departure::Kicked),
            None => (
                DialState::Failed {
                    code,
                    reason: reason.to_string(),
                },
                Departure::DialFailed,
            ),
        };
        let room = dialing.room.clone();
        self.event(&room, Event::DialState { leg, state });
        self.leave(leg, why);
    }

    /// Cancels the calls that rang past their timeout.
    pub(super) fn dial_timeouts(&mut self, now: Instant) {
        let mut due: Vec<LegId> = self
            .legs
            .iter()
            .filter_map(|(id, leg)| match &leg.place {
                Place::Dialing(d) if d.deadline().is_some_and(|at| at <= now) => Some(*id),
                _ => None,
            })
            .collect();
        due.sort();
        for leg in due {
            if let Some(dialing) = self.dialing_mut(leg) {
                dialing.gave_up = Some(GaveUp::Timeout);
                self.actions.push_back(Action::Hangup(leg));
            }
        }
    }

    /// Cancels a call we place into `room` (the API's kick of a leg still ringing); `false` if
    /// `leg` is not one.
    pub(super) fn cancel_dial(&mut self, room: &RoomId, leg: LegId) -> bool {
        match self.dialing_mut(leg) {
            Some(dialing) if dialing.room == *room => {
                if dialing.gave_up.is_none() {
                    dialing.gave_up = Some(GaveUp::Cancelled);
                    self.actions.push_back(Action::Hangup(leg));
                }
                true
            }
            _ => false,
        }
    }

    /// The calls placed into `room` that have not joined it yet.
    pub fn dial_outs(&self, room: &RoomId) -> Vec<DialView> {
        let mut views: Vec<DialView> = self
            .legs
            .iter()
            .filter_map(|(id, leg)| {
                let (target, state) = match &leg.place {
                    Place::Dialing(d) => (
                        &d.room,
                        if d.ringing {
                            DialState::Ringing
                        } else {
                            DialState::Dialing
                        },
                    ),
                    Place::Pending(Destination::Room { room, .. }) if leg.outbound => {
                        (room, DialState::Answered)
                    }
                    _ => return None,
                };
                (target == room).then_some(DialView {
                    leg: *id,
                    state,
                    moderator: leg.moderator,
                    muted: leg.muted,
                })
            })
            .collect();
        views.sort_by_key(|v| v.leg);
        views
    }

    /// The room a call we place will join (while dialing, or answered and not in it yet).
    pub fn dial_outs_room(&self, leg: LegId) -> Option<&RoomId> {
        let entry = self.legs.get(&leg)?;
        match &entry.place {
            Place::Dialing(d) => Some(&d.room),
            Place::Pending(Destination::Room { room, .. }) if entry.outbound => Some(room),
            _ => None,
        }
    }

    /// Whether `leg` is a call we place that is still wanted (not answered, not given up on):
    /// a redirect may be followed for it.
    pub fn still_dialing(&self, leg: LegId) -> bool {
        matches!(&self.legs.get(&leg).map(|l| &l.place), Some(Place::Dialing(d)) if d.gave_up.is_none())
    }
}
