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
use crate::rooms::{BookChange, RoomBookError};

/// A change waiting for (or in) its write, with where its API caller hears back.
pub(super) enum BookWrite {
    /// `PUT`: answered with the room as it then is.
    Put(
        RoomId,
        RoomSpec,
        oneshot::Sender<Result<RoomDetail, ControlError>>,
    ),
    /// `DELETE`.
    Delete(RoomId, oneshot::Sender<Result<(), ControlError>>),
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
        room: RoomId,
        spec: RoomSpec,
        reply: oneshot::Sender<Result<RoomDetail, ControlError>>,
    ) {
        match spec.problem(self.config.media.max_legs_per_room) {
            None => self.queue_book(BookWrite::Put(room, spec, reply)),
            Some((field, reason)) => {
                let _ = reply.send(Err(ControlError::Invalid(format!("{field}: {reason}"))));
            }
        }
    }

    /// `DELETE /v1/rooms/{room}`.
    pub(super) fn delete_room(
        &mut self,
        room: RoomId,
        reply: oneshot::Sender<Result<(), ControlError>>,
    ) {
        self.queue_book(BookWrite::Delete(room, reply));
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
                BookWrite::Delete(id, _) if self.book.is_configured_only(id.as_str()) => Some(
                    ControlError::Conflict("the room is defined in the configuration file"),
                ),
                BookWrite::Delete(id, _) if !self.book.is_api_defined(id.as_str()) => {
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
                if self.core.room(&room).is_some() {
                    let mode = self.book.settings(room.as_str()).aec.map(aec_mode);
                    let command = MixerCommand::SetRoomAec {
                        room: room.key(),
                        mode,
                    };
                    self.send_room(&room, command);
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
