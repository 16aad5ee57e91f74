//! Whom a leg hears and who hears it (a supervisor coaching an agent: heard by the agent only).
//! The core checks that a relation names other legs of the same room, keeps them per leg, tells
//! the mixer, the recording's ledger and the event stream of each change, and drops a leg from
//! the others' relations when it leaves the room (a whisper to someone gone is heard by nobody,
//! not by the room).

use roundtable_media::relations::{Audience, Relations};

use super::{Action, Conference, Event, RecordNote};
use crate::{ConferenceError, LegId, RoomId};

impl Conference {
    /// Sets whom `leg` of `room` hears and who hears it. Every leg named must be another leg of
    /// the room.
    pub fn set_relations(
        &mut self,
        room: &RoomId,
        leg: LegId,
        relations: Relations,
    ) -> Result<(), ConferenceError> {
        let (id, up) = self
            .rooms
            .get_key_value(room)
            .ok_or(ConferenceError::RoomNotFound)?;
        if !up.members.contains(&leg) {
            return Err(ConferenceError::LegNotFound);
        }
        for audience in [&relations.hears, &relations.heard_by] {
            if let Audience::Only(legs) = audience
                && let Some(&stranger) = legs.iter().find(|l| **l == leg || !up.members.contains(l))
            {
                return Err(ConferenceError::NotInRoom(stranger));
            }
        }
        let room = id.clone();
        self.change_relations(&room, leg, relations);
        Ok(())
    }

    /// A leg's relations (everyone, for a leg not in a room).
    pub fn relations(&self, leg: LegId) -> Relations {
        self.legs
            .get(&leg)
            .map(|l| l.relations.clone())
            .unwrap_or_default()
    }

    /// Stores `relations` for `leg` of `room` and tells the mixer, the ledger and the events,
    /// if they changed.
    pub(super) fn change_relations(&mut self, room: &RoomId, leg: LegId, relations: Relations) {
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        if entry.relations == relations {
            return;
        }
        entry.relations = relations.clone();
        self.actions.push_back(Action::Relations {
            room: room.clone(),
            leg,
            relations: relations.clone(),
        });
        self.note(room, RecordNote::Relations(leg, relations.clone()));
        self.event(room, Event::Relations { leg, relations });
    }

    /// `gone` left `room`: the members whose relations name it drop it.
    pub(super) fn forget_in_relations(&mut self, room: &RoomId, gone: LegId) {
        let members: Vec<LegId> = match self.rooms.get(room) {
            Some(up) => up.members.iter().copied().filter(|m| *m != gone).collect(),
            None => return,
        };
        for member in members {
            let Some(current) = self.legs.get(&member).map(|l| &l.relations) else {
                continue;
            };
            let without = |audience: &Audience| match audience {
                Audience::Only(legs) => {
                    Audience::Only(legs.iter().copied().filter(|l| *l != gone).collect())
                }
                Audience::All => Audience::All,
            };
            let pruned = Relations {
                hears: without(&current.hears),
                heard_by: without(&current.heard_by),
            };
            self.change_relations(room, member, pruned);
        }
    }
}
