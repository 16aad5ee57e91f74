//! The bridge's API side: each request reaches the bridge task as an [`Request`] with its
//! reply, and is answered from the task's own state.

use roundtable_api::{
    Participant, ParticipantAudio, ReceiveQuality, RoomDetail, RoomSummary, RtcpReport,
};
use roundtable_conference::{LegId, RoomId};
use roundtable_mixer::pool::Command as MixerCommand;
use tokio::sync::oneshot;
use tracing::info;

use super::*;

/// An API request and where its answer goes.
pub enum Request {
    /// `GET /v1/rooms`.
    Rooms(oneshot::Sender<Vec<RoomSummary>>),
    /// `GET /v1/rooms/{room}`.
    Room(RoomId, oneshot::Sender<Option<RoomDetail>>),
    /// `PUT /v1/rooms/{room}`.
    PutRoom(
        RoomId,
        RoomSpec,
        oneshot::Sender<Result<RoomDetail, ControlError>>,
    ),
    /// `DELETE /v1/rooms/{room}`.
    DeleteRoom(RoomId, oneshot::Sender<Result<(), ControlError>>),
    /// `POST /v1/rooms/{room}/recording`.
    Recording(
        RoomId,
        RecordingRequest,
        String,
        oneshot::Sender<Result<RoomDetail, ControlError>>,
    ),
    /// `DELETE /v1/rooms/{room}/participants/{leg}`.
    Kick(RoomId, LegId, oneshot::Sender<Result<(), ControlError>>),
    /// `PATCH /v1/rooms/{room}`.
    UpdateRoom(
        RoomId,
        RoomPatch,
        oneshot::Sender<Result<RoomDetail, ControlError>>,
    ),
    /// `POST /v1/rooms/{room}/participants`.
    Dial(
        RoomId,
        roundtable_api::DialRequest,
        oneshot::Sender<Result<Participant, ControlError>>,
    ),
    /// `POST /v1/rooms/{room}/participants/{leg}/move`.
    Move(
        RoomId,
        LegId,
        RoomId,
        oneshot::Sender<Result<Participant, ControlError>>,
    ),
    /// `PATCH /v1/rooms/{room}/participants/{leg}`.
    UpdateParticipant(
        RoomId,
        LegId,
        ParticipantPatch,
        oneshot::Sender<Result<Participant, ControlError>>,
    ),
}

pub(super) fn core_error(error: roundtable_conference::ConferenceError) -> ControlError {
    use roundtable_conference::ConferenceError;
    match error {
        ConferenceError::LegNotFound => ControlError::LegNotFound,
        ConferenceError::RoomNotFound | ConferenceError::InvalidRoomId => {
            ControlError::RoomNotFound
        }
        ConferenceError::Refused(refusal) => dialout::refusal_error(refusal),
        ConferenceError::NotInRoom(leg) => ControlError::Invalid(format!(
            "participant {leg} is not another participant of the room"
        )),
    }
}

impl Bridge {
    pub(super) fn api(&mut self, request: Request) {
        match request {
            Request::Rooms(reply) => {
                let _ = reply.send(self.rooms_summary());
            }
            Request::Room(id, reply) => {
                let _ = reply.send(self.room_detail(&id));
            }
            Request::PutRoom(id, spec, reply) => self.put_room(id, spec, reply),
            Request::DeleteRoom(id, reply) => self.delete_room(id, reply),
            Request::Recording(room, request, by, reply) => {
                self.recording_request(&room, request, by, reply);
            }
            Request::Kick(room, leg, reply) => {
                let result = self.core.kick(&room, leg).map_err(core_error);
                self.carry_out();
                let _ = reply.send(result);
            }
            Request::UpdateRoom(room, patch, reply) => {
                let result = match patch.locked {
                    Some(locked) => self.core.set_locked(&room, locked).map_err(core_error),
                    None => Ok(()),
                };
                self.carry_out();
                let result =
                    result.and_then(|()| self.room_detail(&room).ok_or(ControlError::RoomNotFound));
                let _ = reply.send(result);
            }
            Request::Dial(room, request, reply) => {
                let result = self.dial(std::time::Instant::now(), &room, request);
                self.carry_out();
                let _ = reply.send(result);
            }
            Request::Move(room, leg, to, reply) => {
                let result = self.move_participant(&room, leg, &to);
                let _ = reply.send(result);
            }
            Request::UpdateParticipant(room, leg, patch, reply) => {
                let result = self.update_participant(&room, leg, patch);
                let _ = reply.send(result);
            }
        }
    }

    fn rooms_summary(&self) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .core
            .rooms()
            .map(|(id, participants)| RoomSummary {
                id: id.clone(),
                participants,
                recording: self
                    .rooms
                    .get(id)
                    .is_some_and(|r| r.recording.is_some() || r.recording_starting),
            })
            .collect();
        for id in self.book.ids() {
            if self.core.room(id).is_none() {
                rooms.push(RoomSummary {
                    id: id.clone(),
                    participants: 0,
                    recording: false,
                });
            }
        }
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    /// A room's echo cancellation setting: its own, else the service's.
    pub(super) fn room_aec(&self, room: &RoomId) -> AecMode {
        self.book
            .settings(room.as_str())
            .aec
            .map_or(self.config.audio.processing.aec, aec_mode)
    }

    pub(super) fn room_detail(&self, id: &RoomId) -> Option<RoomDetail> {
        let room_aec = self.room_aec(id);
        let dialing = self.dialing_participants(id);
        let Some(view) = self.core.room(id) else {
            let known = self.book.get(id.as_str()).is_some() || !dialing.is_empty();
            return known.then(|| RoomDetail {
                id: id.clone(),
                recording: false,
                recording_id: None,
                recording_paused: false,
                aec: aec_setting(room_aec),
                locked: false,
                waiting_for_moderator: false,
                participants: dialing,
            });
        };
        let entry = self.rooms.get(id);
        let starting = entry.is_some_and(|r| r.recording_starting);
        let recording = entry.and_then(|r| r.recording.as_ref());
        let participants = view
            .members
            .iter()
            .filter_map(|m| {
                Some(self.participant(m.leg, m.moderator, self.legs.get(&m.leg)?, room_aec))
            })
            .chain(dialing)
            .collect();
        Some(RoomDetail {
            id: id.clone(),
            recording: recording.is_some() || starting,
            recording_id: recording.map(|r| r.recording.id().to_string()),
            recording_paused: recording.is_some_and(|r| r.paused),
            aec: aec_setting(room_aec),
            locked: view.locked,
            waiting_for_moderator: view.waiting_for_moderator,
            participants,
        })
    }

    pub(super) fn participant(
        &self,
        id: LegId,
        moderator: bool,
        leg: &LegEntry,
        room_aec: AecMode,
    ) -> Participant {
        let (packets_in, packets_out) = leg.counters.snapshot();
        let quality = leg.counters.quality();
        let rtcp = leg.counters.rtcp();
        let jitter = quality.jitter;
        let (loss_percent, r_factor, mos) = rating(&leg.counters);
        let c = &leg.controls;
        let relations = self.core.relations(id);
        Participant {
            id,
            from: leg.from.clone(),
            codec: leg.codec.name().to_string(),
            joined_at: time::rfc3339(leg.joined_at),
            packets_in,
            packets_out,
            receive: ReceiveQuality {
                jitter_ms: round1(jitter.jitter_ms),
                buffer_ms: jitter.depth_ms,
                buffer_target_ms: jitter.target_ms,
                received: jitter.received,
                lost: jitter.lost,
                late: jitter.late,
                duplicated: jitter.duplicated,
                concealed: jitter.concealed,
                fec_recovered: quality.fec_recovered,
                loss_percent: round1(loss_percent * 10.0) / 10.0,
                r_factor: round1(r_factor),
                mos: (mos * 100.0).round() / 100.0,
            },
            rtcp: RtcpReport {
                reports_sent: rtcp.reports_sent,
                reports_received: rtcp.reports_received,
                rtt_ms: rtcp.rtt_ms.map(round1),
                remote_loss_percent: round1(rtcp.remote_fraction_lost * 100.0),
                remote_lost: rtcp.remote_cumulative_lost,
                remote_jitter_ms: round1(rtcp.remote_jitter_ms),
            },
            audio: ParticipantAudio {
                muted: c.muted,
                deaf: c.deaf,
                input_gain_db: c.input_gain_db,
                output_gain_db: c.output_gain_db,
                aec: aec_setting(c.aec.unwrap_or(room_aec)),
                aec_active: leg.aec_active,
                noise_suppression: c
                    .noise_suppression
                    .unwrap_or(self.config.audio.processing.noise_suppression),
                agc: c.agc.unwrap_or(self.config.audio.processing.agc),
                talking: leg.talking,
                hears: api_audience(&relations.hears),
                heard_by: api_audience(&relations.heard_by),
            },
            moderator,
            state: roundtable_api::ParticipantState::Answered,
            failure: None,
        }
    }

    fn update_participant(
        &mut self,
        room: &RoomId,
        id: LegId,
        patch: ParticipantPatch,
    ) -> Result<Participant, ControlError> {
        let view = self.core.room(room).ok_or(ControlError::RoomNotFound)?;
        let member = *view
            .members
            .iter()
            .find(|m| m.leg == id)
            .ok_or(ControlError::LegNotFound)?;
        let key = view.id.clone();
        // Relations first: a bad one changes nothing.
        let hears = patch.hears.as_ref().map(core_audience);
        let heard_by = patch.heard_by().as_ref().map(core_audience);
        if hears.is_some() || heard_by.is_some() {
            let current = self.core.relations(id);
            let relations = roundtable_mixer::Relations {
                hears: hears.unwrap_or(current.hears),
                heard_by: heard_by.unwrap_or(current.heard_by),
            };
            self.core
                .set_relations(room, id, relations)
                .map_err(core_error)?;
        }
        let entry = self.legs.get_mut(&id).ok_or(ControlError::LegNotFound)?;
        let c = &mut entry.controls;
        c.deaf = patch.deaf.unwrap_or(c.deaf);
        c.input_gain_db = patch.input_gain_db.unwrap_or(c.input_gain_db);
        c.output_gain_db = patch.output_gain_db.unwrap_or(c.output_gain_db);
        c.aec = patch.aec.map(aec_mode).or(c.aec);
        c.noise_suppression = patch.noise_suppression.or(c.noise_suppression);
        c.agc = patch.agc.or(c.agc);
        // Muting is the conference's (the recording notes it); the rest is the mixer's.
        c.muted = patch.muted.unwrap_or(c.muted);
        let controls = *c;
        if let Some(muted) = patch.muted {
            self.core.set_muted(id, muted).map_err(core_error)?;
        }
        // The core's actions follow (relations, mute with its note and event).
        self.carry_out();
        self.send_room(
            &key,
            MixerCommand::SetControls {
                room: key.key(),
                leg: id,
                controls,
            },
        );
        info!(room = %room, leg = %id, ?controls, "participant controls changed");
        let mut fields = serde_json::to_value(&patch).unwrap_or_default();
        fields["participant"] = serde_json::json!(id.to_string());
        self.event("participant_updated", &key, fields);
        let entry = self.legs.get(&id).ok_or(ControlError::LegNotFound)?;
        Ok(self.participant(id, member.moderator, entry, self.room_aec(room)))
    }
}

/// An API audience as the core takes it.
fn core_audience(audience: &roundtable_api::Audience) -> roundtable_mixer::Audience {
    match audience {
        roundtable_api::Audience::All => roundtable_mixer::Audience::All,
        roundtable_api::Audience::Only(legs) => roundtable_mixer::Audience::Only(legs.clone()),
    }
}

impl BridgeHandle {
    /// Sends an API request to the task; its answer comes back on the request's oneshot.
    fn request<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Request + Send + 'static,
    ) -> Reply<Result<T, ControlError>> {
        let this = self.clone();
        Box::pin(async move {
            this.ask(|tx| Command::Api(make(tx)))
                .await
                .unwrap_or(Err(stopped()))
        })
    }
}

/// The API's [`Control`]: room requests go to the task; finished recordings are read from
/// storage directly (the API calls those on a blocking thread).
impl Control for BridgeHandle {
    fn rooms(&self) -> Reply<Vec<RoomSummary>> {
        let this = self.clone();
        Box::pin(async move {
            this.ask(|tx| Command::Api(Request::Rooms(tx)))
                .await
                .unwrap_or_default()
        })
    }

    fn room(&self, id: &RoomId) -> Reply<Option<RoomDetail>> {
        let (this, id) = (self.clone(), id.clone());
        Box::pin(async move {
            this.ask(|tx| Command::Api(Request::Room(id, tx)))
                .await
                .flatten()
        })
    }

    fn recording(
        &self,
        room: &RoomId,
        request: RecordingRequest,
        by: &str,
    ) -> Reply<Result<RoomDetail, ControlError>> {
        let (room, by) = (room.clone(), by.to_string());
        self.request(move |tx| Request::Recording(room, request, by, tx))
    }

    fn recordings(&self, query: &RecordingQuery) -> Result<RecordingsPage, ControlError> {
        recording::list_recordings(&self.archive, query)
    }

    fn recording_manifest(&self, id: &str) -> Result<serde_json::Value, ControlError> {
        recording::manifest_json(&self.archive, id)
    }

    fn recording_object(&self, id: &str, object: &str) -> Result<Download, ControlError> {
        recording::object(&self.archive, id, object)
    }

    fn kick(&self, room: &RoomId, leg: LegId) -> Reply<Result<(), ControlError>> {
        let room = room.clone();
        self.request(move |tx| Request::Kick(room, leg, tx))
    }

    fn update_room(
        &self,
        room: &RoomId,
        patch: RoomPatch,
    ) -> Reply<Result<RoomDetail, ControlError>> {
        let room = room.clone();
        self.request(move |tx| Request::UpdateRoom(room, patch, tx))
    }

    fn dial(
        &self,
        room: &RoomId,
        request: roundtable_api::DialRequest,
    ) -> Reply<Result<Participant, ControlError>> {
        let room = room.clone();
        self.request(move |tx| Request::Dial(room, request, tx))
    }

    fn update_participant(
        &self,
        room: &RoomId,
        leg: LegId,
        patch: ParticipantPatch,
    ) -> Reply<Result<Participant, ControlError>> {
        let room = room.clone();
        self.request(move |tx| Request::UpdateParticipant(room, leg, patch, tx))
    }

    fn move_participant(
        &self,
        room: &RoomId,
        leg: LegId,
        to: &RoomId,
    ) -> Reply<Result<Participant, ControlError>> {
        let (room, to) = (room.clone(), to.clone());
        self.request(move |tx| Request::Move(room, leg, to, tx))
    }

    fn put_room(&self, room: &RoomId, spec: RoomSpec) -> Reply<Result<RoomDetail, ControlError>> {
        let room = room.clone();
        self.request(move |tx| Request::PutRoom(room, spec, tx))
    }

    fn delete_room(&self, room: &RoomId) -> Reply<Result<(), ControlError>> {
        let room = room.clone();
        self.request(move |tx| Request::DeleteRoom(room, tx))
    }

    fn trunks(&self) -> Vec<roundtable_api::TrunkStatus> {
        self.trunks.borrow().status.clone()
    }

    fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::SeqCst) {
            READY => match self.health.unready_reasons() {
                reasons if reasons.is_empty() => Readiness::Ready,
                reasons => Readiness::Unready(reasons),
            },
            DRAINING => Readiness::Draining,
            _ => Readiness::Starting,
        }
    }

    fn liveness(&self) -> Result<(), String> {
        self.health.liveness()
    }

    fn health(&self) -> roundtable_api::HealthReport {
        self.health.report()
    }

    fn events(&self, query: &roundtable_api::EventQuery) -> Result<EventsPage, ControlError> {
        events_page(query, |cursor, filter| {
            Some(self.events.since(cursor, filter))
        })
        .unwrap_or_else(|| Err(stopped()))
    }

    fn events_in_memory(
        &self,
        query: &roundtable_api::EventQuery,
    ) -> Option<Result<EventsPage, ControlError>> {
        events_page(query, |cursor, filter| {
            self.events.since_in_memory(cursor, filter)
        })
    }

    fn room_levels(&self) -> tokio::sync::broadcast::Receiver<roundtable_api::RoomLevels> {
        self.levels.subscribe()
    }

    fn audit(&self, action: roundtable_api::ApiAction) {
        info!(token = action.token.as_deref().unwrap_or("-"), action = %action.action, path = %action.path, source = %action.source, status = action.status, "API action");
        crate::events::push_json(
            &self.events,
            "api_action",
            action.room.as_ref().map_or("", RoomId::as_str),
            std::time::SystemTime::now(),
            serde_json::json!({
                "token": action.token,
                "action": action.action,
                "path": action.path,
                "source": action.source,
                "status": action.status,
            }),
        );
    }

    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }
}

/// The answer when the bridge task has stopped (shutdown).
/// A page of the event log for the API, read by `read` (from memory or the journal).
fn events_page(
    query: &roundtable_api::EventQuery,
    read: impl FnOnce(
        &str,
        &crate::events::Filter<'_>,
    ) -> Option<Result<crate::events::Page, crate::events::EventError>>,
) -> Option<Result<EventsPage, ControlError>> {
    let rooms: Vec<&str> = query.room.iter().map(RoomId::as_str).collect();
    let filter = crate::events::Filter {
        rooms: &rooms,
        types: &query.types,
    };
    let page = read(&query.after, &filter)?;
    Some(
        page.map(|page| EventsPage {
            events: page.events,
            next: page.next,
            missed: page.missed,
            behind: page.behind,
        })
        .map_err(|e| match e {
            crate::events::EventError::BadCursor(_) => ControlError::Invalid(e.to_string()),
            crate::events::EventError::Journal(_) => ControlError::Unavailable(e.to_string()),
        }),
    )
}

fn stopped() -> ControlError {
    ControlError::Unavailable("the service is stopping".into())
}
