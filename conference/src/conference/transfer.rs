//! Moving a participant from one room to another (the API's move, a REFER into another room):
//! it leaves its room as far as the room is concerned (ledger, event, policy) and enters the
//! other as a join does, while its call and media stay up; the mixer detaches its media and
//! adds it to the other room.

use super::{Conference, Event, Place, RoomDirectory};
use crate::{ConferenceError, LegId, RoomId};

impl Conference {
    /// Moves `leg` from `room` to `to`, which takes it as it would take a caller (created if
    /// nobody is in it; refused when full or locked). Moving to its own room changes nothing.
    /// Its moderator role and mute carry over; its relations (whisper, hears) do not.
    pub fn move_leg(
        &mut self,
        room: &RoomId,
        leg: LegId,
        to: &RoomId,
        directory: &dyn RoomDirectory,
    ) -> Result<(), ConferenceError> {
        let from = self
            .rooms
            .get_key_value(room)
            .map(|(id, _)| id.clone())
            .ok_or(ConferenceError::RoomNotFound)?;
        let in_room =
            matches!(self.legs.get(&leg).map(|l| &l.place), Some(Place::Room(r)) if *r == from);
        if !in_room {
            return Err(ConferenceError::LegNotFound);
        }
        if *to == from {
            return Ok(());
        }
        self.room_open_to(to, directory)
            .map_err(ConferenceError::Refused)?;
        let moderator = self.legs.get(&leg).is_some_and(|l| l.moderator);
        let event = Event::Moved {
            leg,
            to: to.clone(),
        };
        let emptied = self.depart_room(leg, &from, event);
        self.enter_room(leg, to.clone(), moderator, directory, Some(from.clone()));
        // Relations name legs of the room it left.
        self.change_relations(to, leg, Default::default());
        if emptied {
            // After the move: the leg's media leaves the old mixer room first.
            self.close_room(&from);
        }
        Ok(())
    }
}
