//! Room definitions made through the API (`PUT` and `DELETE /v1/rooms/{room}`): checked on the
//! bridge task, written to `rooms.json` in the blocking pool one change at a time (in order, so
//! the file always ends with the latest), and applied once written, so that memory and disk
//! agree and the task never waits on the disk.

use roundtable_api::{ControlError, RoomDetail, RoomSpec};
use roundtable_conference::RoomId;
use roundtable_mixer::pool::Command as MixerCommand;
use tokio::sync::oneshot;
use tracing::info;

use super::{Bridge, Command, aec_mode};
use crate::config::{RoomConfig, Secret, pin_problem};
use crate::rooms::{BookChange, RoomBookError};

/// A change waiting for (or in) its write, with where its API caller hears back.
pub(super) enum BookWrite {
    /// `PUT`: answered with the room as it then is.
    Put(
        String,
        RoomConfig,
        oneshot::Sender<Result<RoomDetail, ControlError>>,
    ),
    /// `DELETE`.
    Delete(String, oneshot::Sender<Result<(), ControlError>>),
}

impl BookWrite {
    fn change(&self) -> BookChange {
        match self {
            BookWrite::Put(room, config, _) => BookChange::Put(room.clone(), config.clone()),
            BookWrite::Delete(room, _) => BookChange::Delete(room.clone()),
        }
    }

    fn fail(self, error: ControlError) {
        match self {
            BookWrite::Put(.., reply) => {
                let _ = reply.send(Err(error));
            }
            BookWrite::Delete(_, reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Bridge {
    /// `PUT /v1/rooms/{room}`: the definition is checked now and takes effect once written.
    pub(super) fn put_room(
        &mut self,
        room: &str,
        spec: RoomSpec,
        reply: oneshot::Sender<Result<RoomDetail, ControlError>>,
    ) {
        match self.room_config(room, spec) {
            Ok((id, config)) => self.queue_book(BookWrite::Put(id.to_string(), config, reply)),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// `DELETE /v1/rooms/{room}`.
    pub(super) fn delete_room(
        &mut self,
        room: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    ) {
        self.queue_book(BookWrite::Delete(room, reply));
    }

    /// A room definition from the API's body, checked.
    fn room_config(
        &self,
        room: &str,
        spec: RoomSpec,
    ) -> Result<(RoomId, RoomConfig), ControlError> {
        let id = RoomId::parse(room).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let pin = |p: Option<String>| -> Result<Option<Secret>, ControlError> {
            match p.as_deref().and_then(pin_problem) {
                Some(reason) => Err(ControlError::Invalid(reason.into())),
                None => Ok(p.map(Secret::new)),
            }
        };
        let cap = self.config.max_legs_per_room;
        let max_participants = match spec.max_participants {
            Some(n) if n == 0 || n as usize > cap => {
                return Err(ControlError::Invalid(format!(
                    "max_participants is 1 to {cap} (media.max_legs_per_room)"
                )));
            }
            n => n.map(|n| n as usize),
        };
        let config = RoomConfig {
            pin: pin(spec.pin)?,
            moderator_pin: pin(spec.moderator_pin)?,
            max_participants,
            record: spec.record,
            aec: spec.aec.map(aec_mode),
            join_leave_tones: spec.join_leave_tones,
            alone_prompt: spec.alone_prompt,
            wait_for_moderator: spec.wait_for_moderator,
            end_with_moderator: spec.end_with_moderator,
        };
        Ok((id, config))
    }

    fn queue_book(&mut self, write: BookWrite) {
        self.book_writes.push_back(write);
        if self.book_writes.len() == 1 {
            self.next_book_write();
        }
    }

    /// Starts writing the first waiting change (checked against the book as it is now).
    fn next_book_write(&mut self) {
        while let Some(write) = self.book_writes.front() {
            let refusal = match write {
                BookWrite::Delete(id, _) if self.book.is_configured_only(id) => Some(
                    ControlError::Conflict("the room is defined in the configuration file"),
                ),
                BookWrite::Delete(id, _) if !self.book.is_api_defined(id) => {
                    Some(ControlError::RoomNotFound)
                }
                _ => None,
            };
            let file = match refusal {
                Some(error) => Err(error),
                None => self
                    .book
                    .file_after(&write.change())
                    .map_err(|e| ControlError::Unavailable(e.to_string())),
            };
            match file {
                Ok(file) => {
                    let handle = self.handle.clone();
                    tokio::task::spawn_blocking(move || {
                        handle.send(Command::BookWritten(file.write()));
                    });
                    return;
                }
                Err(error) => {
                    if let Some(write) = self.book_writes.pop_front() {
                        write.fail(error);
                    }
                }
            }
        }
    }

    /// The first waiting change's file is written (or not): it takes effect, and the next
    /// change's write starts.
    pub(super) fn book_written(&mut self, written: Result<(), RoomBookError>) {
        let Some(write) = self.book_writes.pop_front() else {
            return;
        };
        if let Err(error) = written {
            tracing::error!(%error, "room definitions not saved");
            write.fail(ControlError::Unavailable(error.to_string()));
            return self.next_book_write();
        }
        self.book.apply(write.change());
        match write {
            BookWrite::Put(room, _, reply) => {
                info!(room = %room, "room defined through the API");
                if let Ok(id) = RoomId::parse(&room)
                    && self.core.room(&room).is_some()
                {
                    let mode = self.book.settings(&room).aec;
                    let command = MixerCommand::SetRoomAec {
                        room: id.key(),
                        mode,
                    };
                    self.send_room(&id, command);
                }
                let _ = reply.send(self.room_detail(&room).ok_or(ControlError::RoomNotFound));
            }
            BookWrite::Delete(room, reply) => {
                info!(room = %room, "room definition removed through the API");
                let _ = reply.send(Ok(()));
            }
        }
        self.next_book_write();
    }
}
