//! Moving a live participant to another room: the API's move and, from the caller's side, an
//! in-dialog REFER naming one of our rooms. The core decides; the mixer detaches the leg's
//! media and adds it to the other room (its call stays up).

use roundtable_api::{ControlError, Participant};
use roundtable_conference::RoomId;

use super::Bridge;
use super::api::{core_error, parse_leg};

impl Bridge {
    /// `POST /v1/rooms/{room}/participants/{leg}/move` with `{"room": to}`: the participant as
    /// it is in `to`.
    pub(super) fn move_participant(
        &mut self,
        room: &str,
        leg: &str,
        to: &str,
    ) -> Result<Participant, ControlError> {
        let to = RoomId::parse(to).map_err(|e| ControlError::Invalid(format!("room: {e}")))?;
        let id = parse_leg(leg)?;
        self.core
            .move_leg(room, id, &to, &self.book)
            .map_err(core_error)?;
        self.carry_out();
        let moderator = self
            .core
            .room(to.as_str())
            .and_then(|view| {
                view.members
                    .iter()
                    .find(|m| m.leg == id)
                    .map(|m| m.moderator)
            })
            .ok_or(ControlError::LegNotFound)?;
        let entry = self.legs.get(&id).ok_or(ControlError::LegNotFound)?;
        Ok(self.participant(id, moderator, entry, self.room_aec(to.as_str())))
    }
}
