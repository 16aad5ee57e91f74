//! The bridge's recording side: starting, pausing and stopping a room's recording, telling it
//! who joined, left, was muted and heard the notice, finishing it into the store, and reading
//! finished recordings back for the API.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::UNIX_EPOCH;

use roundtable_api::{
    ControlError, Download, RecordingAction, RecordingMode, RecordingQuery, RecordingRequest,
    RecordingSummary, RecordingsPage, RoomDetail,
};
use roundtable_conference::conference::RecordNote;
use roundtable_conference::lobby::Prompt;
use roundtable_conference::{LegId, RoomId};
use roundtable_media::frames::MixFrame;
use roundtable_mixer::pool::{Command, RECORDER_QUEUE};
use roundtable_recorder::upload::UploadError;
use roundtable_recorder::{Archive, Control as RecordControl, Mode, RecordError, Recording, Spec};
use roundtable_storage::{ObjectKey, StorageError};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::{Bridge, Command as BridgeCommand};
use crate::time;

/// A room's running recording.
pub(super) struct ActiveRecording {
    pub(super) recording: Recording,
    pub(super) paused: bool,
}

/// Where a `POST /v1/rooms/{room}/recording` hears back.
pub(super) type RoomReply = oneshot::Sender<Result<RoomDetail, ControlError>>;

/// A recording start's outcome from the blocking pool, and what it was asked with.
pub struct Opened {
    room: RoomId,
    /// The second it started (its folder, without a `-2` suffix).
    start: String,
    mode: Mode,
    by: Option<String>,
    reply: Option<RoomReply>,
    /// The running recording and the mixer's end of its frame queue, or why it did not start.
    opened: Result<(Recording, SyncSender<MixFrame>), String>,
}

/// Opens a recording of `spec` under the first of `folders` not taken in the spool (blocking:
/// creates and fsyncs its folder and files).
fn open_recording(
    archive: &Arc<Archive>,
    spec: Spec,
    folders: Vec<String>,
) -> Result<(Recording, SyncSender<MixFrame>), String> {
    for folder in folders {
        let (tx, rx) = std::sync::mpsc::sync_channel(RECORDER_QUEUE);
        let spec = Spec {
            start: folder,
            ..spec.clone()
        };
        match archive.start(spec, rx) {
            Ok(recording) => return Ok((recording, tx)),
            Err(RecordError::Exists(_)) => continue,
            Err(error) => return Err(format!("recording not started: {error}")),
        }
    }
    Err("no free recording name".into())
}

fn mode_of(mode: RecordingMode) -> Mode {
    match mode {
        RecordingMode::Mixed => Mode::Mixed,
        RecordingMode::Tracks => Mode::Tracks,
        RecordingMode::Both => Mode::Both,
    }
}

/// An instant as the folder names write it (`20261122T093000Z`), from RFC 3339 or that form.
fn basic_instant(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .take_while(|c| *c != '.' && *c != 'Z' && *c != '+')
        .filter(|c| c.is_ascii_digit())
        .collect();
    (digits.len() == 14).then(|| format!("{}T{}Z", &digits[..8], &digits[8..]))
}

impl Bridge {
    /// Starts recording `room`; `by` is the API caller. The checks run here; the spool folder,
    /// its files and their fsyncs in the blocking pool, whose result comes back as
    /// [`BridgeCommand::RecordingOpened`] ([`Bridge::recording_opened`]). `reply`, if any, hears
    /// then.
    pub(super) fn start_recording(
        &mut self,
        room: &RoomId,
        mode: Mode,
        by: Option<String>,
        reply: Option<RoomReply>,
    ) {
        if let Err(error) = self.check_start(room) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error));
            }
            return;
        }
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.recording_starting = true;
        }
        let now = self.clock.now();
        let start = time::iso_basic(now);
        let start_unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // A room recorded twice in one second gets `-2`, `-3`... (the spool folder, and this
        // process's memory of names it used, tell which are taken).
        let folders: Vec<String> = (1..=20)
            .map(|attempt| match attempt {
                1 => start.clone(),
                n => format!("{start}-{n}"),
            })
            .filter(|folder| !self.recent_recordings.contains(&format!("{room}/{folder}")))
            .collect();
        let spec = Spec {
            room: room.to_string(),
            start: String::new(),
            start_unix_ms,
            rate: self.config.audio.rate,
            mode,
            spool: Default::default(),
            fsync_delay: Default::default(),
        };
        let (archive, handle, room) = (
            self.handle.archive.clone(),
            self.handle.clone(),
            room.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let opened = open_recording(&archive, spec, folders);
            handle.send(BridgeCommand::RecordingOpened(Box::new(Opened {
                room,
                start,
                mode,
                by,
                reply,
                opened,
            })));
        });
    }

    /// Why `room` cannot start recording now, if it cannot.
    fn check_start(&self, room: &RoomId) -> Result<(), ControlError> {
        let entry = self.rooms.get(room).ok_or(ControlError::RoomNotFound)?;
        if entry.recording.is_some() || entry.recording_starting {
            return Err(ControlError::Conflict("room is already being recorded"));
        }
        let account = self.handle.archive.account();
        if !account.accepts_new() {
            self.metrics.recordings_refused.inc();
            error!(room = %room, used = account.used(), quota = account.quota(), "recording refused: the spool is over 80% of storage.spool_quota_mib");
            return Err(ControlError::Unavailable(
                "recording refused: the recording spool is over 80% of its quota".into(),
            ));
        }
        Ok(())
    }

    /// A recording's spool is open (or could not be): the mixer starts feeding it, and everyone
    /// in the room is noted in it. A room that closed meanwhile gets its (empty) recording
    /// stored all the same.
    pub(super) fn recording_opened(&mut self, opened: Opened) {
        let Opened {
            room,
            start,
            mode,
            by,
            reply,
            opened,
        } = opened;
        let answer = |result: Result<(), ControlError>, bridge: &Bridge| {
            if let Some(reply) = reply {
                let detail = result
                    .and_then(|()| bridge.room_detail(&room).ok_or(ControlError::RoomNotFound));
                let _ = reply.send(detail);
            }
        };
        let waiting = self
            .rooms
            .get_mut(&room)
            .filter(|entry| entry.recording_starting);
        let Some(entry) = waiting else {
            if let Ok((recording, _)) = opened {
                // The room is gone: its recording closes at once (its frame sender dropped).
                self.metrics.recordings_active.inc();
                let active = ActiveRecording {
                    recording,
                    paused: false,
                };
                self.finish_recording(room.clone(), active);
            }
            return answer(Err(ControlError::RoomNotFound), self);
        };
        entry.recording_starting = false;
        let (recording, sink) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                self.metrics.recording_failures.inc();
                warn!(room = %room, %error, "recording not started");
                return answer(Err(ControlError::Unavailable(error)), self);
            }
        };
        let id = recording.id().to_string();
        // Names of earlier seconds cannot be asked for again.
        self.recent_recordings
            .retain(|id| id.rsplit('/').next().is_some_and(|f| f.starts_with(&start)));
        self.recent_recordings.insert(id.clone());
        info!(room = %room, recording = %id, mode = mode.as_str(), "recording started");
        self.event(
            "recording_started",
            &room,
            serde_json::json!({"recording": id, "mode": mode.as_str()}),
        );
        if let Some(by) = by {
            recording.control(RecordControl::Action {
                action: format!("start {}", mode.as_str()),
                by,
            });
        }
        if let Some(entry) = self.rooms.get_mut(&room) {
            entry.recording = Some(ActiveRecording {
                recording,
                paused: false,
            });
        }
        let start = Command::StartRecording {
            room: room.key(),
            sink,
            tracks: mode.tracks(),
            whispers: self.config.recording.include_whispers,
        };
        self.send_room(&room, start);
        self.metrics.recordings_active.inc();
        // Everyone already in the room is in the recording, and hears the notice.
        let members: Vec<LegId> = self
            .core
            .room(&room)
            .map(|view| view.members.iter().map(|m| m.leg).collect())
            .unwrap_or_default();
        for leg in members {
            self.record_note(&room, RecordNote::Joined(leg));
            if self.legs.get(&leg).is_some_and(|l| l.controls.muted) {
                self.record_note(&room, RecordNote::Muted(leg, true));
            }
        }
        answer(Ok(()), self);
    }

    /// Tells a room's recording, if one runs, what the core noted; a leg that joins a recorded
    /// room hears the notice.
    pub(super) fn record_note(&mut self, room: &RoomId, note: RecordNote) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let Some(active) = &entry.recording else {
            return;
        };
        let recording = &active.recording;
        match note {
            RecordNote::Joined(leg) => {
                let Some(entry) = self.legs.get(&leg) else {
                    return;
                };
                recording.control(RecordControl::Joined {
                    leg: leg.to_string(),
                    from: entry.from.clone(),
                    codec: entry.codec.name().to_string(),
                });
                if self.config.recording.consent_notice {
                    recording.control(RecordControl::ConsentNotice {
                        leg: leg.to_string(),
                    });
                    let samples = self.prompts.samples(Prompt::Recording);
                    self.send_room(
                        room,
                        Command::Play {
                            room: room.key(),
                            leg,
                            samples,
                        },
                    );
                }
            }
            RecordNote::Left(leg) => recording.control(RecordControl::Left {
                leg: leg.to_string(),
            }),
            RecordNote::Muted(leg, muted) => recording.control(RecordControl::Muted {
                leg: leg.to_string(),
                muted,
            }),
            RecordNote::Hold(on) => recording.control(RecordControl::Hold(on)),
            RecordNote::Relations(leg, relations) => {
                let ids = |audience: &roundtable_mixer::Audience| match audience {
                    roundtable_mixer::Audience::All => None,
                    roundtable_mixer::Audience::Only(legs) => {
                        Some(legs.iter().map(ToString::to_string).collect())
                    }
                };
                recording.control(RecordControl::Relations {
                    leg: leg.to_string(),
                    hears: ids(&relations.hears),
                    heard_by: ids(&relations.heard_by),
                });
            }
        }
    }

    /// Waits for a stopped recording's files to close and stores it (off the caller's thread):
    /// `recording_uploaded` and `recording_sealed` once it is in the store for good,
    /// `recording_failed` if it cannot be (it stays in the spool and is retried at the next
    /// start).
    pub(super) fn finish_recording(&self, room: RoomId, recording: ActiveRecording) {
        let id = recording.recording.id().to_string();
        self.event(
            "recording_stopped",
            &room,
            serde_json::json!({"recording": id}),
        );
        let gauge = self.metrics.recordings_active.clone();
        let failures = self.metrics.recording_failures.clone();
        let archive = self.handle.archive.clone();
        let events = self.handle.events.clone();
        let clock = self.clock.clone();
        self.handle.tasks.spawn_blocking(move || {
            let push = |kind: &str, fields: serde_json::Value| {
                crate::events::push_json(&events, kind, room.as_str(), clock.now(), fields);
            };
            match recording.recording.join().and_then(|closed| archive.finish(closed)) {
                Ok(sealed) => {
                    for (kind, fields) in crate::archive::sealed_events(&sealed) {
                        push(kind, fields);
                    }
                    info!(
                        room = %room,
                        recording = %sealed.manifest.id,
                        duration_ms = sealed.manifest.duration_ms,
                        objects = sealed.manifest.objects.len(),
                        "recording finished"
                    );
                }
                Err(RecordError::Upload(UploadError::Stopped)) => {
                    info!(recording = %id, "recording closed in the spool; its upload resumes at the next start");
                }
                Err(error) => {
                    failures.inc();
                    error!(recording = %id, %error, "recording not stored; it stays in the spool and is retried at the next start");
                    push(
                        "recording_failed",
                        serde_json::json!({"recording": id, "error": error.to_string()}),
                    );
                }
            }
            gauge.dec();
        });
    }

    /// `POST /v1/rooms/{room}/recording`.
    pub(super) fn recording_request(
        &mut self,
        room: &RoomId,
        request: RecordingRequest,
        by: String,
        reply: RoomReply,
    ) {
        let key = match self.core.room(room) {
            Some(view) => view.id,
            None => {
                let _ = reply.send(Err(ControlError::RoomNotFound));
                return;
            }
        };
        if request.action == RecordingAction::Start {
            let mode = request.mode.map_or(self.config.recording.mode, mode_of);
            return self.start_recording(&key, mode, Some(by), Some(reply));
        }
        let result = self
            .change_recording(&key, request, &by)
            .and_then(|()| self.room_detail(room).ok_or(ControlError::RoomNotFound));
        let _ = reply.send(result);
    }

    /// Pauses, resumes or stops `key`'s recording.
    fn change_recording(
        &mut self,
        room: &RoomId,
        request: RecordingRequest,
        by: &str,
    ) -> Result<(), ControlError> {
        let entry = self.rooms.get_mut(room).ok_or(ControlError::RoomNotFound)?;
        if entry.recording_starting {
            return Err(ControlError::Conflict("recording is starting"));
        }
        let active = entry
            .recording
            .as_mut()
            .ok_or(ControlError::Conflict("room is not being recorded"))?;
        let action = match request.action {
            RecordingAction::Pause if active.paused => {
                return Err(ControlError::Conflict("recording is already paused"));
            }
            RecordingAction::Resume if !active.paused => {
                return Err(ControlError::Conflict("recording is not paused"));
            }
            RecordingAction::Pause => "pause",
            RecordingAction::Resume => "resume",
            RecordingAction::Stop | RecordingAction::Start => "stop",
        };
        active.recording.control(RecordControl::Action {
            action: action.into(),
            by: by.to_string(),
        });
        info!(room = %room, recording = %active.recording.id(), action, by, "recording changed through the API");
        match request.action {
            RecordingAction::Pause | RecordingAction::Resume => {
                active.paused = request.action == RecordingAction::Pause;
                active.recording.control(if active.paused {
                    RecordControl::Pause
                } else {
                    RecordControl::Resume
                });
                let id = active.recording.id().to_string();
                self.event(
                    if action == "pause" {
                        "recording_paused"
                    } else {
                        "recording_resumed"
                    },
                    room,
                    serde_json::json!({"recording": id}),
                );
            }
            _ => {
                // `active` borrowed it above: it is there.
                let recording = entry.recording.take().expect("checked above");
                self.mixer
                    .send(entry.worker, Command::StopRecording { room: room.key() });
                self.finish_recording(room.clone(), recording);
            }
        }
        Ok(())
    }
}

/// `GET /v1/recordings`.
pub(super) fn list_recordings(
    archive: &Archive,
    query: &RecordingQuery,
) -> Result<RecordingsPage, ControlError> {
    let bound = |text: &Option<String>, name: &str| match text {
        None => Ok(None),
        Some(t) => basic_instant(t).map(Some).ok_or_else(|| {
            ControlError::Invalid(format!(
                "{name}: not an RFC 3339 or ISO 8601 basic UTC instant"
            ))
        }),
    };
    let (since, until) = (bound(&query.since, "since")?, bound(&query.until, "until")?);
    if let Some(room) = &query.room
        && ObjectKey::new(room.as_str()).is_err()
    {
        return Err(ControlError::Invalid("room: not a room name".into()));
    }
    let keep = |id: &str| {
        let instant = id.split_once('/').and_then(|(_, start)| start.get(..16));
        instant.is_some_and(|instant| {
            since.as_deref().is_none_or(|s| instant >= s)
                && until.as_deref().is_none_or(|u| instant < u)
        })
    };
    let limit = query
        .limit
        .unwrap_or(roundtable_api::RECORDINGS_PAGE_DEFAULT);
    let store = archive.store();
    let page = roundtable_recorder::list_recordings_page(
        store.as_ref(),
        archive.prefix(),
        query.room.as_deref(),
        query.after.as_deref(),
        limit,
        &keep,
    )
    .map_err(storage_error)?;
    let recordings = page
        .ids
        .into_iter()
        .filter_map(|id| {
            let (room, start) = id.split_once('/')?;
            Some(RecordingSummary {
                room: room.to_string(),
                start: start.to_string(),
                id: id.clone(),
            })
        })
        .collect();
    Ok(RecordingsPage {
        recordings,
        next: page.next,
    })
}

/// `GET /v1/recordings/{room}/{start}`: the manifest, its signature checked.
pub(super) fn manifest_json(
    archive: &Archive,
    id: &str,
) -> Result<serde_json::Value, ControlError> {
    let manifest = roundtable_recorder::read_manifest(
        archive.store().as_ref(),
        archive.prefix(),
        &checked_id(id)?,
        None,
    )
    .map_err(storage_error)?;
    serde_json::to_value(manifest).map_err(|e| ControlError::Unavailable(e.to_string()))
}

/// `GET /v1/recordings/{room}/{start}/{object}`.
pub(super) fn object(archive: &Archive, id: &str, object: &str) -> Result<Download, ControlError> {
    let id = checked_id(id)?;
    let allowed = object == "mix.wav"
        || object == roundtable_recorder::MANIFEST
        || object
            .strip_prefix("legs/")
            .and_then(|n| n.strip_suffix(".wav"))
            .is_some_and(|n| n.parse::<u64>().is_ok());
    if !allowed {
        return Err(ControlError::RecordingNotFound);
    }
    let key = ObjectKey::new(format!("{}recordings/{id}/{object}", archive.prefix()))
        .map_err(|_| ControlError::RecordingNotFound)?;
    let reader = archive
        .store()
        .open(&key)
        .map_err(|e| storage_error(RecordError::Storage(e)))?;
    let content_type = if object.ends_with(".wav") {
        "audio/wav"
    } else {
        "application/json"
    };
    Ok(Download {
        size: reader.size,
        content_type,
        body: reader.body,
    })
}

/// A recording id as the API takes it: two key segments.
fn checked_id(id: &str) -> Result<String, ControlError> {
    let ok = id.split('/').count() == 2 && ObjectKey::new(id).is_ok();
    if ok {
        Ok(id.to_string())
    } else {
        Err(ControlError::RecordingNotFound)
    }
}

fn storage_error(error: RecordError) -> ControlError {
    match error {
        RecordError::Storage(StorageError::NotFound(_)) => ControlError::RecordingNotFound,
        other => ControlError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_either_form() {
        assert_eq!(
            basic_instant("2026-11-22T09:30:00Z").as_deref(),
            Some("20261122T093000Z")
        );
        assert_eq!(
            basic_instant("2026-11-22T09:30:00.123Z").as_deref(),
            Some("20261122T093000Z")
        );
        assert_eq!(
            basic_instant("20261122T093000Z").as_deref(),
            Some("20261122T093000Z")
        );
        assert_eq!(basic_instant("yesterday"), None);
        assert!(checked_id("1000/20261122T093000Z").is_ok());
        assert!(checked_id("../x").is_err() && checked_id("a/b/c").is_err());
    }
}
