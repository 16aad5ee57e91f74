//! The bridge: the wiring between SIP calls, media legs, mixer rooms, recordings and the API.
//!
//! One lock guards the aggregate (rooms, legs, recordings) for short critical sections; it is
//! never held across an `.await`, and the mixer threads never take it. Rooms are created on the
//! first join and closed when the last leg leaves.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;
use std::time::SystemTime;

use roundtable_api::{
    AecSetting, Control, ControlError, Download, EventsPage, Participant, ParticipantAudio,
    ParticipantPatch, Readiness, ReceiveQuality, RecordingQuery, RecordingRequest, RecordingsPage,
    RoomDetail, RoomPatch, RoomSpec, RoomSummary, RtcpReport,
};
use roundtable_conference::RoomId;
use roundtable_conference::lobby::{Action as LobbyAction, Directory, Lobby, Prompt, RoomAccess};
use roundtable_conference::lockout::LockoutTracker;
use roundtable_conference::policy::{PolicyAction, RoomPolicy};
use roundtable_media::codec::{Codec, LegCodec, OpusOptions};
use roundtable_media::dtmf::{Digit, digit_from_info};
use roundtable_media::metrics::MediaMetrics;
use roundtable_media::ports::PortAllocator;
use roundtable_media::socket::{self, LegCounters, MediaPorts, ReceiveConfig, ReceiveEnd};
use roundtable_media::srtp::{MasterKey, Protector, Suite, Unprotector};
use roundtable_mixer::pool::{Command, LegIo, MixerEvent, MixerPool, RoomKey, WorkerId};
use roundtable_mixer::{AecMode, LegControls, LegId, RoomEvent};
use roundtable_recorder::{Archive, Control as RecordControl};
use roundtable_sip::Rejection;
use roundtable_sip::endpoint::{CallKey, EndReason, IncomingCall, Transport};
use roundtable_sip::sdp::{AudioCodec, Direction, NegotiationError, Offer, SrtpPolicy};
use roundtable_sip::transport::{CallHandler, SipHandle};
use tokio_util::sync::CancellationToken;

mod recording;
use recording::ActiveRecording;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, DialAction, RoomConfig};
use crate::metrics::BridgeMetrics;
use crate::prompts::{Prompts, Tones};
use crate::rooms::RoomBook;
use crate::time::{self, WallClock};

/// Whether a phone that offered `direction` sends us RTP (else the inactivity timer pauses).
fn expects_rtp(direction: Direction) -> bool {
    matches!(direction, Direction::SendRecv | Direction::SendOnly)
}

/// A leg's incoming audio rated: loss percent, E-model R and MOS, from its jitter buffer and
/// RTCP (one-way delay: half the round trip when known, the jitter buffer, one frame).
fn rating(counters: &LegCounters) -> (f64, f64, f64) {
    let (jitter, rtcp) = (counters.quality().jitter, counters.rtcp());
    let expected = jitter.received + jitter.lost;
    let loss_percent = if expected == 0 {
        0.0
    } else {
        jitter.lost as f64 * 100.0 / expected as f64
    };
    let delay = rtcp.rtt_ms.unwrap_or(0.0) / 2.0 + jitter.depth_ms + 20.0;
    let (r, mos) = roundtable_media::quality::emodel(loss_percent, delay);
    (loss_percent, r, mos)
}

/// `x` rounded to one decimal, for display.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The media codec an SDP codec names.
fn media_codec(codec: AudioCodec) -> Codec {
    match codec {
        AudioCodec::Pcmu => Codec::Pcmu,
        AudioCodec::Pcma => Codec::Pcma,
        AudioCodec::G722 => Codec::G722,
        AudioCodec::Opus => Codec::Opus,
    }
}

/// What the mixer needs to know of a negotiated codec.
fn leg_codec(answer: &roundtable_sip::sdp::Answer) -> LegCodec {
    LegCodec {
        codec: media_codec(answer.codec),
        payload_type: answer.payload_type,
        opus: OpusOptions {
            fec: answer.opus_fec,
            dtx: answer.opus_dtx,
        },
    }
}

/// The SRTP contexts of a leg from the accepted crypto line: our fresh key, a context that
/// protects our RTP (for the mixer), and one that unprotects the caller's RTP and RTCP and
/// protects our RTCP (for the leg's RTCP task).
fn srtp_contexts(
    srtp: &roundtable_sip::sdp::SrtpAnswer,
) -> Result<(MasterKey, Protector, (Unprotector, Protector)), Rejection> {
    let bad = Rejection::new(488, "Not Acceptable Here");
    let suite = Suite::from_name(&srtp.offer.suite).ok_or(bad)?;
    let remote = MasterKey::from_key_params(&srtp.offer.key_params).ok_or(bad)?;
    let local = MasterKey::random().map_err(|_| Rejection::new(500, "Server Internal Error"))?;
    let contexts = (|| -> Result<_, roundtable_media::MediaError> {
        Ok((
            Protector::new(suite, &local)?,
            (
                Unprotector::new(suite, &remote)?,
                Protector::new(suite, &local)?,
            ),
        ))
    })()
    .map_err(|_| bad)?;
    Ok((local, contexts.0, contexts.1))
}

/// The API's name for an echo cancellation mode.
fn aec_setting(mode: AecMode) -> AecSetting {
    match mode {
        AecMode::Off => AecSetting::Off,
        AecMode::On => AecSetting::On,
        AecMode::Auto => AecSetting::Auto,
    }
}

/// The mixer's echo cancellation mode for an API setting.
fn aec_mode(setting: AecSetting) -> AecMode {
    match setting {
        AecSetting::Off => AecMode::Off,
        AecSetting::On => AecMode::On,
        AecSetting::Auto => AecMode::Auto,
    }
}

/// Where the dial plan sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    /// Straight into this room, as a moderator or not.
    Room(RoomKey, bool),
    /// Into the PIN lobby.
    Lobby,
}

/// The lobby's view of rooms and lockouts for one caller.
struct LobbyDirectory<'a> {
    bridge: &'a Bridge,
    source: IpAddr,
}

impl Directory for LobbyDirectory<'_> {
    fn room(&self, id: &str) -> Option<RoomAccess> {
        // Defined rooms, and rooms that are up, can be entered from the lobby.
        let (defined, settings) = {
            let book = self.bridge.book();
            (book.get(id).is_some(), book.settings(id))
        };
        if !defined && !self.bridge.lock().rooms.contains_key(id) {
            return None;
        }
        let expose = |p: &Option<crate::config::Secret>| p.as_ref().map(|s| s.expose().to_string());
        Some(RoomAccess {
            pin: expose(&settings.pin),
            moderator_pin: expose(&settings.moderator_pin),
        })
    }

    fn locked_out(&self, room: &str) -> bool {
        let tracker = self
            .bridge
            .lockout
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tracker.room_locked(room, now) || tracker.source_locked(self.source, now)
    }

    fn record_failure(&mut self, room: Option<&str>) {
        let outcome = if room.is_some() {
            "wrong_pin"
        } else {
            "invalid_room"
        };
        self.bridge
            .metrics
            .lobby_outcomes
            .with_label_values(&[outcome])
            .inc();
        let locked = self
            .bridge
            .lockout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(self.source, room, Instant::now());
        for scope in locked {
            self.bridge
                .metrics
                .lockouts
                .with_label_values(&[scope.label()])
                .inc();
            warn!(source = %self.source, room = room.unwrap_or(""), scope = scope.label(), "PIN lockout");
        }
    }
}

struct LegEntry {
    id: LegId,
    /// The SRTP line we answered (the caller's key and ours; Debug shows no key), if SRTP.
    srtp: Option<roundtable_sip::sdp::SrtpAnswer>,
    /// The mixer room the leg is in: a room id, or a private lobby room while in the lobby.
    room: RoomKey,
    /// The mixer thread serving that room.
    worker: WorkerId,
    in_lobby: bool,
    /// Where RFC 4733 and INFO key presses go (the lobby reads them).
    digits: tokio::sync::mpsc::Sender<Digit>,
    source: IpAddr,
    call_id: String,
    from: String,
    codec: AudioCodec,
    joined_at: SystemTime,
    counters: Arc<LegCounters>,
    cancel: CancellationToken,
    /// The address our SDP advertises.
    advertised: SocketAddr,
    /// Our current SDP answer and its version (RFC 3264 8: bumped on every change).
    answer_sdp: Vec<u8>,
    sdp_version: u64,
    /// What the leg's RTP intake accepts (and its RTCP task's inactivity limit); changed by re-offers.
    receive: tokio::sync::watch::Sender<ReceiveConfig>,
    /// Its audio controls (API, DTMF).
    controls: LegControls,
    /// It joined with the moderator PIN or through a moderator dial plan rule.
    moderator: bool,
    /// What the mixer last reported: talking, echo cancellation running.
    talking: bool,
    aec_active: bool,
}

struct RoomEntry {
    worker: WorkerId,
    legs: BTreeMap<LegId, CallKey>,
    recording: Option<ActiveRecording>,
    /// Joins, leaves, moderators, hold (see `roundtable_conference::policy`).
    policy: RoomPolicy,
    /// New callers are refused.
    locked: bool,
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomKey, RoomEntry>,
    legs: HashMap<CallKey, LegEntry>,
    next_leg: u64,
}

/// The service's call and room logic. Shared by the SIP driver (as [`CallHandler`]) and the
/// API (as [`Control`]).
pub struct Bridge {
    /// Ourselves, for the tasks a call spawns.
    me: Weak<Bridge>,
    config: Config,
    state: Mutex<State>,
    mixer: MixerPool,
    ports: Arc<Mutex<PortAllocator>>,
    archive: Arc<Archive>,
    /// Recording ids this process started in the current second (names are per second).
    recent_recordings: Mutex<std::collections::HashSet<String>>,
    clock: Arc<dyn WallClock>,
    sip: OnceLock<SipHandle>,
    readiness: AtomicU8,
    metrics: BridgeMetrics,
    media_metrics: MediaMetrics,
    /// Recorder joins and legs' RTCP tasks, awaited at shutdown.
    tasks: TaskTracker,
    prompts: Prompts,
    /// Join, leave and hold tones.
    tones: Tones,
    lockout: Mutex<LockoutTracker>,
    /// Defined rooms (configuration and API); its own lock, never taken inside `state`'s.
    book: Mutex<RoomBook>,
    /// What happened in rooms, for `GET /v1/events`.
    events: crate::events::EventLog,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Bridge {
    /// A bridge with no calls; call [`Bridge::attach_sip`] and [`Bridge::set_ready`] next.
    pub fn new(
        config: Config,
        mixer: MixerPool,
        archive: Arc<Archive>,
        clock: Arc<dyn WallClock>,
        metrics: BridgeMetrics,
        media_metrics: MediaMetrics,
        book: RoomBook,
    ) -> Arc<Bridge> {
        Arc::new_cyclic(|me| Bridge {
            me: me.clone(),
            ports: Arc::new(Mutex::new(PortAllocator::new(config.rtp_ports))),
            state: Mutex::new(State::default()),
            mixer,
            archive,
            recent_recordings: Mutex::default(),
            clock,
            sip: OnceLock::new(),
            readiness: AtomicU8::new(STARTING),
            metrics,
            media_metrics,
            tasks: TaskTracker::new(),
            prompts: Prompts::load(config.audio_rate, config.consent_prompt.as_deref()),
            tones: Tones::new(config.audio_rate),
            lockout: Mutex::new(LockoutTracker::new(config.lockout)),
            book: Mutex::new(book),
            events: crate::events::EventLog::default(),
            config,
        })
    }

    /// What a leg's RTP intake accepts under an offer and our answer to it.
    fn receive_config(&self, offer: &Offer, answer: &roundtable_sip::sdp::Answer) -> ReceiveConfig {
        ReceiveConfig {
            audio_pt: answer.payload_type,
            telephone_event: answer.telephone_event,
            inactivity: expects_rtp(offer.direction).then_some(self.config.inactivity_timeout),
            clock_rate: answer.codec.clock_rate(),
            rtcp_mux: answer.rtcp_mux,
            rtcp_remote: offer.rtcp_addr,
        }
    }

    /// `media.codecs` as SDP codecs, in our order of preference.
    fn sdp_codecs(&self) -> Vec<AudioCodec> {
        const ALL: [AudioCodec; 4] = [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
        ];
        self.config
            .codecs
            .iter()
            .filter_map(|c| ALL.into_iter().find(|a| media_codec(*a) == *c))
            .collect()
    }

    /// Records an event of `kind` in `room` with `fields` (a JSON object literal's entries).
    fn event(&self, kind: &str, room: &str, fields: serde_json::Value) {
        let fields = match fields {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        self.events
            .push(kind, room, time::rfc3339(self.clock.now()), fields);
    }

    /// Reads a room leg's key presses (RFC 4733 and INFO) as `dtmf` events until it leaves, and
    /// carries out in-room key commands: `*6` mutes or unmutes oneself, `*5` (moderators only)
    /// locks or unlocks the room.
    async fn run_room_digits(
        self: Arc<Self>,
        call: CallKey,
        mut digits: tokio::sync::mpsc::Receiver<Digit>,
        cancel: CancellationToken,
    ) {
        let mut star = false;
        loop {
            let digit = tokio::select! {
                d = digits.recv() => match d { Some(d) => d, None => return },
                () = cancel.cancelled() => return,
            };
            let Some((room, leg, call_id, moderator)) = self
                .lock()
                .legs
                .get(&call)
                .map(|l| (l.room.clone(), l.id, l.call_id.clone(), l.moderator))
            else {
                return;
            };
            self.metrics.dtmf_digits.inc();
            info!(call_id = %call_id, room = %room, leg = %leg, digit = %digit.as_char(), "DTMF key");
            self.event("dtmf", &room, serde_json::json!({"participant": leg.to_string(), "digit": digit.as_char().to_string()}));
            let key = digit.as_char();
            match (star, key) {
                (true, '6') => {
                    let muted = self
                        .lock()
                        .legs
                        .get(&call)
                        .is_some_and(|l| l.controls.muted);
                    let patch = ParticipantPatch {
                        muted: Some(!muted),
                        ..Default::default()
                    };
                    let _ = self.update_participant(&room, &leg.to_string(), patch);
                }
                (true, '5') if moderator => {
                    let locked = self.lock().rooms.get(&room).is_some_and(|r| r.locked);
                    let _ = self.set_locked(&room, !locked);
                }
                _ => {}
            }
            star = key == '*';
        }
    }

    /// Gives the bridge the SIP handle it sends BYEs through.
    pub fn attach_sip(&self, sip: SipHandle) {
        let _ = self.sip.set(sip);
    }

    /// Starts taking calls.
    pub fn set_ready(&self) {
        self.readiness.store(READY, Ordering::SeqCst);
    }

    /// Stops taking calls (new INVITEs get 503, `/ready` turns 503).
    pub fn start_draining(&self) {
        self.readiness.store(DRAINING, Ordering::SeqCst);
    }

    /// Calls up now.
    pub fn active_calls(&self) -> usize {
        self.lock().legs.len()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, RoomBook> {
        // Writers restore the map when saving fails, so a poisoned lock still holds valid data.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can panic, so a
        // poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends BYE to every leg and closes every room and recording (shutdown).
    pub fn hang_up_all(&self) {
        let calls: Vec<CallKey> = self.lock().legs.keys().copied().collect();
        for call in calls {
            if let Some(sip) = self.sip.get() {
                sip.hangup(call);
            }
            self.leave(call, "shutdown");
        }
    }

    /// Waits until every recording is finalized and every leg task ended.
    pub async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Stops the mixer threads.
    pub fn stop_mixer(self) {
        self.mixer.shutdown();
    }

    /// Where the dial plan sends a Request-URI user part (RFC-free policy: first match wins).
    fn route(&self, user: Option<&str>) -> Result<Destination, Rejection> {
        let not_found = Rejection::new(404, "Not Found");
        let user = user.ok_or(not_found)?;
        let (room, moderator) = if self.config.dialplan.is_empty() {
            (user, false)
        } else {
            let rule = self
                .config
                .dialplan
                .iter()
                .find(|r| r.pattern.is_match(user))
                .ok_or(not_found)?;
            if rule.action == DialAction::Lobby {
                return Ok(Destination::Lobby);
            }
            let captures = rule.pattern.captures(user).ok_or(not_found)?;
            (
                captures
                    .get(1)
                    .or_else(|| captures.get(0))
                    .map_or(user, |m| m.as_str()),
                rule.moderator,
            )
        };
        if !RoomId::valid(room) {
            return Err(not_found);
        }
        if self.book().settings(room).has_pin() {
            // PIN rooms are entered through the lobby only.
            return Err(Rejection::new(403, "Forbidden"));
        }
        Ok(Destination::Room(Arc::from(room), moderator))
    }

    fn admit(
        &self,
        call: &IncomingCall,
    ) -> Result<(Destination, Offer, roundtable_sip::sdp::Answer), Rejection> {
        if self.readiness.load(Ordering::SeqCst) != READY {
            return Err(Rejection::new(503, "Service Unavailable"));
        }
        if self
            .lockout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .source_locked(call.peer.remote.ip(), Instant::now())
        {
            self.metrics.lockout_refusals.inc();
            return Err(Rejection::new(403, "Forbidden"));
        }
        let destination = self.route(call.user.as_deref())?;
        if call.body.is_empty() {
            return Err(Rejection::new(488, "Not Acceptable Here"));
        }
        let policy = match call.peer.transport {
            Transport::Tls if self.config.srtp_required_over_tls => SrtpPolicy::Required,
            _ => self.config.srtp,
        };
        let offer =
            Offer::parse(&call.body, policy).map_err(|_| Rejection::new(400, "Malformed SDP"))?;
        let answer = offer.answer(&self.sdp_codecs()).map_err(|e| match e {
            NegotiationError::NoAudio | NegotiationError::NoCommonCodec => {
                Rejection::new(488, "Not Acceptable Here")
            }
            NegotiationError::SrtpRequired => Rejection::new(488, "SRTP Required"),
        })?;
        Ok((destination, offer, answer))
    }

    /// Runs one caller's lobby until it joins a room or hangs up.
    async fn run_lobby(
        self: Arc<Self>,
        call: CallKey,
        mut digits: tokio::sync::mpsc::Receiver<Digit>,
        cancel: CancellationToken,
    ) {
        let Some((source, room, worker, leg)) = self
            .lock()
            .legs
            .get(&call)
            .map(|l| (l.source, l.room.clone(), l.worker, l.id))
        else {
            return;
        };
        let mut directory = LobbyDirectory {
            bridge: &self,
            source,
        };
        let mut lobby = Lobby::new(Instant::now(), self.prompts.length(Prompt::Goodbye));
        loop {
            while let Some(action) = lobby.poll_action() {
                match action {
                    LobbyAction::Play(prompt) => {
                        let samples = self.prompts.samples(prompt);
                        self.mixer.send(
                            worker,
                            Command::Play {
                                room: room.clone(),
                                leg,
                                samples,
                            },
                        );
                    }
                    LobbyAction::StopPrompt => {
                        self.mixer.send(
                            worker,
                            Command::StopPrompt {
                                room: room.clone(),
                                leg,
                                only: None,
                            },
                        );
                    }
                    LobbyAction::Join {
                        room: target,
                        moderator,
                    } => {
                        self.metrics
                            .lobby_outcomes
                            .with_label_values(&["joined"])
                            .inc();
                        self.join_from_lobby(call, Arc::from(target.as_str()), moderator)
                            .await;
                        self.run_room_digits(call, digits, cancel).await;
                        return;
                    }
                    LobbyAction::Hangup => {
                        self.metrics
                            .lobby_outcomes
                            .with_label_values(&["hung_up"])
                            .inc();
                        if let Some(sip) = self.sip.get() {
                            sip.hangup(call);
                        }
                        self.leave(call, "lobby: too many wrong entries");
                        return;
                    }
                }
            }
            let deadline = lobby.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                digit = digits.recv() => match digit {
                    Some(d) => lobby.handle_digit(Instant::now(), d.as_char(), &mut directory),
                    None => return,
                },
                () = sleep => lobby.handle_timeout(Instant::now(), &mut directory),
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Moves a lobby caller into `room` (created if needed), on whichever mixer thread serves it.
    async fn join_from_lobby(&self, call: CallKey, room: RoomKey, moderator: bool) {
        let Some((lobby_room, lobby_worker, leg)) = self
            .lock()
            .legs
            .get(&call)
            .map(|l| (l.room.clone(), l.worker, l.id))
        else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = Box::new(move |io| {
            let _ = tx.send(io);
        });
        self.mixer.send(
            lobby_worker,
            Command::DetachLeg {
                room: lobby_room.clone(),
                leg,
                reply,
            },
        );
        let Ok(io) = rx.await else { return };
        self.mixer
            .send(lobby_worker, Command::CloseRoom { room: lobby_room });
        let mut state = self.lock();
        if !state.legs.contains_key(&call) {
            return; // Hung up while moving.
        }
        let settings = self.book().settings(&room);
        let refusal = match state.rooms.get(&room) {
            Some(r) if r.legs.len() >= settings.max_participants => Some("room full"),
            Some(r) if r.locked => Some("room locked"),
            _ => None,
        };
        if let Some(why) = refusal {
            drop(state);
            if let Some(sip) = self.sip.get() {
                sip.hangup(call);
            }
            self.leave(call, why);
            return;
        }
        let is_new_room = !state.rooms.contains_key(&room);
        let worker = state
            .rooms
            .get(&room)
            .map_or_else(|| self.mixer.assign(), |r| r.worker);
        state
            .rooms
            .entry(room.clone())
            .or_insert_with(|| RoomEntry {
                worker,
                legs: BTreeMap::new(),
                recording: None,
                policy: RoomPolicy::new(settings.policy),
                locked: false,
            })
            .legs
            .insert(leg, call);
        self.mixer
            .send(worker, self.mixer.add_leg(room.clone(), leg, io));
        let call_id = match state.legs.get_mut(&call) {
            Some(entry) => {
                entry.room = room.clone();
                entry.worker = worker;
                entry.in_lobby = false;
                entry.moderator = moderator;
                entry.call_id.clone()
            }
            None => String::new(),
        };
        if is_new_room {
            self.metrics.rooms.inc();
            self.mixer.send(
                worker,
                Command::SetRoomAec {
                    room: room.clone(),
                    mode: settings.aec,
                },
            );
        }
        let actions = state
            .rooms
            .get_mut(&room)
            .map(|r| r.policy.joined(leg, moderator))
            .unwrap_or_default();
        self.apply_policy(
            &room,
            worker,
            actions,
            state.rooms.get(&room).and_then(|r| r.recording.as_ref()),
        );
        self.recording_joined(&state, &room, call);
        if is_new_room && settings.record {
            // A failed auto-start is logged and counted; the call itself goes on.
            let _ = self.start_recording(&mut state, &room, self.config.recording_mode, None);
        }
        drop(state);
        info!(call_id = %call_id, room = %room, leg = %leg, moderator, "joined room from the lobby");
        self.event(
            "participant_joined",
            &room,
            serde_json::json!({"participant": leg.to_string(), "moderator": moderator}),
        );
    }

    fn refuse(&self, reason: &'static str, rejection: Rejection) -> Rejection {
        self.metrics
            .calls_rejected
            .with_label_values(&[reason])
            .inc();
        rejection
    }

    /// Removes a leg from its room (and the room if it empties). Idempotent.
    fn leave(&self, call: CallKey, why: &str) {
        let mut closed: Option<(RoomKey, WorkerId, Option<ActiveRecording>)> = None;
        let mut ended: Vec<CallKey> = Vec::new();
        let leg = {
            let mut state = self.lock();
            let Some(leg) = state.legs.remove(&call) else {
                return;
            };
            if leg.in_lobby {
                self.mixer.send(
                    leg.worker,
                    Command::CloseRoom {
                        room: leg.room.clone(),
                    },
                );
            } else if let Some(room) = state.rooms.get_mut(&leg.room) {
                room.legs.remove(&leg.id);
                self.mixer.send(
                    room.worker,
                    Command::RemoveLeg {
                        room: leg.room.clone(),
                        leg: leg.id,
                    },
                );
                if let Some(active) = &room.recording {
                    active.recording.control(RecordControl::Left {
                        leg: leg.id.to_string(),
                    });
                }
                let actions = room.policy.left(leg.id);
                if actions.contains(&PolicyAction::End) {
                    ended = room.legs.values().copied().collect();
                }
                self.apply_policy(&leg.room, room.worker, actions, room.recording.as_ref());
                if room.legs.is_empty()
                    && let Some(room_entry) = state.rooms.remove(&leg.room)
                {
                    closed = Some((leg.room.clone(), room_entry.worker, room_entry.recording));
                }
            }
            leg
        };
        leg.cancel.cancel();
        self.metrics.active_calls.dec();
        if leg.talking {
            self.metrics.legs_talking.dec();
        }
        if leg.aec_active {
            self.metrics.legs_aec_active.dec();
        }
        info!(call_id = %leg.call_id, room = %leg.room, leg = %leg.id, reason = why, "left room");
        if !leg.in_lobby {
            self.event(
                "participant_left",
                &leg.room,
                serde_json::json!({"participant": leg.id.to_string(), "reason": why}),
            );
        }
        // The leg's call quality, once it received audio.
        let quality = leg.counters.quality().jitter;
        if quality.received > 0 {
            let (loss_percent, _, mos) = rating(&leg.counters);
            self.metrics.leg_mos.observe(mos);
            self.metrics.leg_loss_percent.observe(loss_percent);
            self.metrics.leg_jitter_ms.observe(quality.jitter_ms);
            if let Some(rtt) = leg.counters.rtcp().rtt_ms {
                self.metrics.leg_rtt_ms.observe(rtt);
            }
        }
        if !ended.is_empty() {
            info!(room = %leg.room, "the last moderator left: ending the conference");
        }
        for other in ended {
            if let Some(sip) = self.sip.get() {
                sip.hangup(other);
            }
            self.leave(other, "moderator left");
        }
        if let Some((room, worker, recording)) = closed {
            self.mixer
                .send(worker, Command::CloseRoom { room: room.clone() });
            self.metrics.rooms.dec();
            info!(room = %room, "room closed");
            if let Some(recording) = recording {
                self.finish_recording(room, recording);
            }
        }
    }

    /// Locks or unlocks a running room.
    fn set_locked(&self, room: &str, locked: bool) -> Result<(), ControlError> {
        let changed = {
            let mut state = self.lock();
            let entry = state
                .rooms
                .get_mut(room)
                .ok_or(ControlError::RoomNotFound)?;
            std::mem::replace(&mut entry.locked, locked) != locked
        };
        if changed {
            info!(room = %room, locked, "room lock changed");
            self.event(
                if locked {
                    "room_locked"
                } else {
                    "room_unlocked"
                },
                room,
                serde_json::json!({}),
            );
        }
        Ok(())
    }

    /// Carries out a room policy's actions in the mixer.
    fn apply_policy(
        &self,
        room: &RoomKey,
        worker: WorkerId,
        actions: Vec<PolicyAction>,
        recording: Option<&ActiveRecording>,
    ) {
        for action in actions {
            let command = match action {
                PolicyAction::JoinTone => Command::Announce {
                    room: room.clone(),
                    samples: self.tones.join.clone(),
                },
                PolicyAction::LeaveTone => Command::Announce {
                    room: room.clone(),
                    samples: self.tones.leave.clone(),
                },
                PolicyAction::Hold(on) => {
                    if let Some(active) = recording {
                        active.recording.control(RecordControl::Hold(on));
                    }
                    info!(room = %room, waiting = on, "room waits for its moderator");
                    self.event(
                        if on {
                            "waiting_for_moderator"
                        } else {
                            "moderator_arrived"
                        },
                        room,
                        serde_json::json!({}),
                    );
                    Command::SetHold {
                        room: room.clone(),
                        sound: on.then(|| self.tones.hold.clone()),
                    }
                }
                PolicyAction::Alone(leg) => Command::Play {
                    room: room.clone(),
                    leg,
                    samples: self.prompts.samples(Prompt::Alone),
                },
                PolicyAction::NotAlone(leg) => Command::StopPrompt {
                    room: room.clone(),
                    leg,
                    only: Some(self.prompts.samples(Prompt::Alone)),
                },
                PolicyAction::End => continue,
            };
            self.mixer.send(worker, command);
        }
    }

    /// A room's echo cancellation setting: its own, else the service's.
    fn room_aec(&self, room: &str) -> AecMode {
        self.book()
            .settings(room)
            .aec
            .unwrap_or(self.config.audio.aec)
    }

    fn participant_audio(&self, leg: &LegEntry, room_aec: AecMode) -> ParticipantAudio {
        let c = &leg.controls;
        ParticipantAudio {
            muted: c.muted,
            deaf: c.deaf,
            input_gain_db: c.input_gain_db,
            output_gain_db: c.output_gain_db,
            aec: aec_setting(c.aec.unwrap_or(room_aec)),
            aec_active: leg.aec_active,
            noise_suppression: c
                .noise_suppression
                .unwrap_or(self.config.audio.noise_suppression),
            agc: c.agc.unwrap_or(self.config.audio.agc),
            talking: leg.talking,
        }
    }

    /// Takes an event from a mixer thread: updates the leg and logs the event.
    pub fn mixer_event(&self, event: MixerEvent) {
        let (leg_id, kind, mut fields) = match event.event {
            RoomEvent::Talking(leg) => (leg, "participant_talking", serde_json::json!({})),
            RoomEvent::StoppedTalking(leg) => {
                (leg, "participant_stopped_talking", serde_json::json!({}))
            }
            RoomEvent::EchoCancellation(leg, active) => (
                leg,
                "echo_cancellation",
                serde_json::json!({"active": active}),
            ),
        };
        {
            let mut state = self.lock();
            let Some(call) = state
                .rooms
                .get(&event.room)
                .and_then(|r| r.legs.get(&leg_id))
                .copied()
            else {
                return;
            };
            let Some(leg) = state.legs.get_mut(&call) else {
                return;
            };
            match event.event {
                RoomEvent::Talking(_) | RoomEvent::StoppedTalking(_) => {
                    let talking = matches!(event.event, RoomEvent::Talking(_));
                    if leg.talking != talking {
                        leg.talking = talking;
                        if talking {
                            self.metrics.legs_talking.inc()
                        } else {
                            self.metrics.legs_talking.dec()
                        }
                    }
                }
                RoomEvent::EchoCancellation(_, active) => {
                    if leg.aec_active != active {
                        leg.aec_active = active;
                        if active {
                            self.metrics.legs_aec_active.inc()
                        } else {
                            self.metrics.legs_aec_active.dec()
                        }
                    }
                    info!(room = %event.room, leg = %leg_id, active, "echo cancellation changed");
                }
            }
        }
        fields["participant"] = serde_json::json!(leg_id.to_string());
        self.event(kind, &event.room, fields);
    }

    fn detail(&self, state: &State, room: &str) -> Option<RoomDetail> {
        let entry = state.rooms.get(room)?;
        let room_aec = self.room_aec(room);
        let participants = entry
            .legs
            .values()
            .filter_map(|call| state.legs.get(call))
            .map(|leg| {
                let (packets_in, packets_out) = leg.counters.snapshot();
                let quality = leg.counters.quality();
                let rtcp = leg.counters.rtcp();
                let jitter = quality.jitter;
                let (loss_percent, r_factor, mos) = rating(&leg.counters);
                Participant {
                    id: leg.id.to_string(),
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
                    audio: self.participant_audio(leg, room_aec),
                    moderator: leg.moderator,
                }
            })
            .collect();
        Some(RoomDetail {
            id: room.to_string(),
            recording: entry.recording.is_some(),
            recording_id: entry
                .recording
                .as_ref()
                .map(|r| r.recording.id().to_string()),
            recording_paused: entry.recording.as_ref().is_some_and(|r| r.paused),
            aec: aec_setting(room_aec),
            locked: entry.locked,
            waiting_for_moderator: entry.policy.on_hold(),
            participants,
        })
    }
}

impl CallHandler for Bridge {
    fn incoming(&self, call: IncomingCall) -> Result<Vec<u8>, Rejection> {
        let (destination, offer, answer) = match self.admit(&call) {
            Ok(admitted) => admitted,
            Err(rejection) => {
                info!(call_id = %call.call_id, uri = %call.request_uri, code = rejection.code, "call refused");
                let reason = match rejection.code {
                    503 => "draining",
                    404 => "no_room",
                    403 => "forbidden",
                    _ => "sdp",
                };
                return Err(self.refuse(reason, rejection));
            }
        };
        let codec = leg_codec(&answer);
        let mut answer = answer;
        let srtp = match answer.srtp.as_ref().map(srtp_contexts) {
            None => None,
            Some(Ok(contexts)) => Some(contexts),
            Some(Err(rejection)) => {
                info!(call_id = %call.call_id, code = rejection.code, "call refused: unusable SRTP key");
                return Err(self.refuse("sdp", rejection));
            }
        };
        if let Some((local, ..)) = &srtp {
            answer.set_local_key(local.key_params());
        }
        let in_lobby = destination == Destination::Lobby;
        let moderator = matches!(destination, Destination::Room(_, true));
        let room: RoomKey = match &destination {
            Destination::Room(room, _) => room.clone(),
            // A private mixer room per lobby caller; '~' keeps it apart from every room id.
            Destination::Lobby => Arc::from(format!("~lobby-{}", call.call.0)),
        };
        let settings = self.book().settings(&room);
        {
            let state = self.lock();
            if state.legs.len() >= self.config.max_calls {
                drop(state);
                info!(call_id = %call.call_id, room = %room, "call refused: sip.max_calls reached");
                return Err(self.refuse("max_calls", Rejection::new(503, "Service Unavailable")));
            }
            if state
                .rooms
                .get(&room)
                .is_some_and(|r| r.legs.len() >= settings.max_participants)
            {
                drop(state);
                info!(call_id = %call.call_id, room = %room, "call refused: room full");
                return Err(self.refuse("room_full", Rejection::new(486, "Busy Here")));
            }
            if state.rooms.get(&room).is_some_and(|r| r.locked) {
                drop(state);
                info!(call_id = %call.call_id, room = %room, "call refused: room locked");
                return Err(self.refuse("room_locked", Rejection::new(403, "Conference Locked")));
            }
        }
        let ports = match MediaPorts::bind(call.peer.local.ip(), &self.ports) {
            Ok(ports) => ports,
            Err(error) => {
                warn!(call_id = %call.call_id, room = %room, %error, "call refused: no RTP port");
                return Err(self.refuse("rtp_ports", Rejection::new(503, "Service Unavailable")));
            }
        };
        let rtp = ports.local;
        let advertised = SocketAddr::new(self.config.public_ip.unwrap_or(rtp.ip()), rtp.port());
        let counters = Arc::new(LegCounters::default());
        let cancel = CancellationToken::new();
        let (digits_tx, digits_rx) = tokio::sync::mpsc::channel(32);
        let (receive_tx, receive_rx) =
            tokio::sync::watch::channel(self.receive_config(&offer, &answer));
        let (srtp_mixer, srtp_receive) = match srtp {
            Some((_, mixer, receive)) => (Some(mixer), Some(receive)),
            None => (None, None),
        };
        let MediaPorts {
            rtp: rtp_socket,
            rtcp,
            lease,
            ..
        } = ports;
        let split = socket::split_receive(
            rtp_socket,
            rtcp,
            receive_rx,
            srtp_receive,
            digits_tx.clone(),
            counters.clone(),
            self.media_metrics.clone(),
            cancel.clone(),
        );
        let (intake, supervision) = match split {
            Ok(parts) => parts,
            Err(error) => {
                warn!(call_id = %call.call_id, %error, "call refused: RTP socket set-up failed");
                return Err(self.refuse("rtp_ports", Rejection::new(503, "Service Unavailable")));
            }
        };
        let mut state = self.lock();
        state.next_leg += 1;
        let leg_id = LegId(state.next_leg);
        let sdp = answer.to_sdp(advertised, leg_id.0, 1);
        let is_new_room = !in_lobby && !state.rooms.contains_key(&room);
        let auto_record = settings.record && is_new_room;
        let worker = state
            .rooms
            .get(&room)
            .map_or_else(|| self.mixer.assign(), |r| r.worker);
        if !in_lobby {
            let entry = state
                .rooms
                .entry(room.clone())
                .or_insert_with(|| RoomEntry {
                    worker,
                    legs: BTreeMap::new(),
                    recording: None,
                    policy: RoomPolicy::new(settings.policy),
                    locked: false,
                });
            entry.legs.insert(leg_id, call.call);
        }
        let io = LegIo {
            intake,
            remote: offer.rtp_addr,
            counters: counters.clone(),
            codec,
            protect: srtp_mixer,
            lease: lease.clone(),
        };
        self.mixer
            .send(worker, self.mixer.add_leg(room.clone(), leg_id, io));
        state.legs.insert(
            call.call,
            LegEntry {
                id: leg_id,
                room: room.clone(),
                worker,
                in_lobby,
                digits: digits_tx.clone(),
                source: call.peer.remote.ip(),
                call_id: call.call_id.clone(),
                from: call.from.clone(),
                codec: answer.codec,
                joined_at: self.clock.now(),
                counters: counters.clone(),
                cancel: cancel.clone(),
                advertised,
                answer_sdp: sdp.clone(),
                srtp: answer.srtp.clone(),
                sdp_version: 1,
                receive: receive_tx,
                controls: LegControls::default(),
                moderator,
                talking: false,
                aec_active: false,
            },
        );
        if is_new_room {
            self.metrics.rooms.inc();
            self.mixer.send(
                worker,
                Command::SetRoomAec {
                    room: room.clone(),
                    mode: settings.aec,
                },
            );
        }
        if !in_lobby {
            let actions = state
                .rooms
                .get_mut(&room)
                .map(|r| r.policy.joined(leg_id, moderator))
                .unwrap_or_default();
            self.apply_policy(
                &room,
                worker,
                actions,
                state.rooms.get(&room).and_then(|r| r.recording.as_ref()),
            );
        }
        self.metrics.active_calls.inc();
        if !in_lobby {
            self.recording_joined(&state, &room, call.call);
        }
        if auto_record {
            // A failed auto-start is logged and counted; the call itself goes on.
            let _ = self.start_recording(&mut state, &room, self.config.recording_mode, None);
        }
        drop(state);
        info!(call_id = %call.call_id, room = %room, leg = %leg_id, from = %call.from, codec = answer.codec.name(), rtp = %rtp, "joined room");
        if !in_lobby {
            self.event(
                "participant_joined",
                &room,
                serde_json::json!({"participant": leg_id.to_string(), "from": call.from, "codec": answer.codec.name(), "moderator": moderator}),
            );
        }

        let bridge = self.me.clone();
        let key = call.call;
        self.tasks.spawn(async move {
            // Dropped when this task ends, after the supervisor's sockets closed.
            let _lease = lease;
            let end = socket::supervise(supervision).await;
            if let (true, Some(bridge)) = (end != ReceiveEnd::Cancelled, bridge.upgrade()) {
                let why = if end == ReceiveEnd::Inactive {
                    "rtp inactivity"
                } else {
                    "rtp socket error"
                };
                if let Some(sip) = bridge.sip.get() {
                    sip.hangup(key);
                }
                bridge.leave(key, why);
            }
        });
        if let Some(bridge) = self.me.upgrade() {
            if in_lobby {
                self.metrics.lobby_calls.inc();
                self.tasks
                    .spawn(bridge.run_lobby(call.call, digits_rx, cancel));
            } else {
                self.tasks
                    .spawn(bridge.run_room_digits(call.call, digits_rx, cancel));
            }
        }
        Ok(sdp)
    }

    fn info(&self, call: CallKey, content_type: &str, body: &[u8]) {
        let Some(digit) = digit_from_info(content_type, body) else {
            return;
        };
        if let Some(leg) = self.lock().legs.get(&call) {
            let _ = leg.digits.try_send(digit);
        }
    }

    fn reoffer(&self, call: CallKey, offer: &[u8]) -> Result<Vec<u8>, Rejection> {
        let mut state = self.lock();
        let leg = state
            .legs
            .get_mut(&call)
            .ok_or(Rejection::new(481, "Call/Transaction Does Not Exist"))?;
        if offer.is_empty() {
            return Ok(leg.answer_sdp.clone());
        }
        // A call keeps its transport: SRTP stays SRTP, with the same keys (no rekeying yet).
        let policy = if leg.srtp.is_some() {
            SrtpPolicy::Required
        } else {
            SrtpPolicy::Off
        };
        let offer =
            Offer::parse(offer, policy).map_err(|_| Rejection::new(488, "Not Acceptable Here"))?;
        let mut answer = offer
            .answer(&self.sdp_codecs())
            .map_err(|_| Rejection::new(488, "Not Acceptable Here"))?;
        if let (Some(ours), Some(theirs)) = (&leg.srtp, &answer.srtp) {
            if ours.offer.suite != theirs.offer.suite
                || ours.offer.key_params != theirs.offer.key_params
            {
                return Err(Rejection::new(488, "Not Acceptable Here"));
            }
            answer.set_local_key(ours.local_key_params.clone());
        }
        let codec = leg_codec(&answer);
        // Hold (sendonly or inactive) takes the leg out of the conference both ways; recvonly
        // lets it listen without being heard (RFC 3264 8.4).
        let (hears, heard) = match offer.direction {
            Direction::SendRecv => (true, true),
            Direction::RecvOnly => (true, false),
            Direction::SendOnly | Direction::Inactive => (false, false),
        };
        leg.codec = answer.codec;
        leg.sdp_version += 1;
        leg.answer_sdp = answer.to_sdp(leg.advertised, leg.id.0, leg.sdp_version);
        leg.receive
            .send_replace(self.receive_config(&offer, &answer));
        let (room, id, sdp) = (leg.room.clone(), leg.id, leg.answer_sdp.clone());
        if let Some(entry) = state.rooms.get(&room) {
            let command = Command::UpdateLeg {
                room: room.clone(),
                leg: id,
                codec,
                remote: offer.rtp_addr,
                hears,
                heard,
            };
            self.mixer.send(entry.worker, command);
        }
        let call_id = state
            .legs
            .get(&call)
            .map(|l| l.call_id.clone())
            .unwrap_or_default();
        drop(state);
        info!(call_id = %call_id, room = %room, leg = %id, direction = ?offer.direction, codec = answer.codec.name(), "re-offer answered");
        Ok(sdp)
    }

    fn confirmed(&self, _call: CallKey) {}

    fn ended(&self, call: CallKey, reason: EndReason) {
        let why = match reason {
            EndReason::RemoteBye => "caller hung up",
            EndReason::Cancelled => "cancelled",
            EndReason::AckTimeout => "no ACK",
            EndReason::SessionExpired => "session expired",
            EndReason::PeerUnreachable => "peer unreachable",
        };
        self.leave(call, why);
    }
}

impl Control for Bridge {
    fn rooms(&self) -> Vec<RoomSummary> {
        let defined: Vec<String> = self.book().ids().cloned().collect();
        let state = self.lock();
        let mut rooms: Vec<RoomSummary> = state
            .rooms
            .iter()
            .map(|(id, r)| RoomSummary {
                id: id.to_string(),
                participants: r.legs.len(),
                recording: r.recording.is_some(),
            })
            .collect();
        for id in defined
            .into_iter()
            .filter(|id| !state.rooms.contains_key(id.as_str()))
        {
            rooms.push(RoomSummary {
                id,
                participants: 0,
                recording: false,
            });
        }
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    fn room(&self, id: &str) -> Option<RoomDetail> {
        let defined = self.book().get(id).is_some();
        let state = self.lock();
        self.detail(&state, id).or_else(|| {
            defined.then(|| RoomDetail {
                id: id.to_string(),
                recording: false,
                recording_id: None,
                recording_paused: false,
                aec: aec_setting(self.room_aec(id)),
                locked: false,
                waiting_for_moderator: false,
                participants: Vec::new(),
            })
        })
    }

    fn put_room(&self, room: &str, spec: RoomSpec) -> Result<RoomDetail, ControlError> {
        if !RoomId::valid(room) {
            return Err(ControlError::Invalid(
                "a room id is [A-Za-z0-9_.-]{1,64}".into(),
            ));
        }
        let pin = |p: Option<String>| -> Result<Option<crate::config::Secret>, ControlError> {
            match p.as_deref().and_then(crate::config::pin_problem) {
                Some(reason) => Err(ControlError::Invalid(reason.into())),
                None => Ok(p.map(crate::config::Secret::new)),
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
        let aec = config.aec;
        self.book()
            .put(room, config)
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        if let Some((key, entry)) = self.lock().rooms.get_key_value(room) {
            self.mixer.send(
                entry.worker,
                Command::SetRoomAec {
                    room: key.clone(),
                    mode: aec,
                },
            );
        }
        info!(room = %room, "room defined through the API");
        self.room(room).ok_or(ControlError::RoomNotFound)
    }

    fn delete_room(&self, room: &str) -> Result<(), ControlError> {
        let mut book = self.book();
        if book.is_configured_only(room) {
            return Err(ControlError::Conflict(
                "the room is defined in the configuration file",
            ));
        }
        match book.delete(room) {
            Ok(true) => {
                info!(room = %room, "room definition removed through the API");
                Ok(())
            }
            Ok(false) => Err(ControlError::RoomNotFound),
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    fn recording(
        &self,
        room: &str,
        request: RecordingRequest,
        by: &str,
    ) -> Result<RoomDetail, ControlError> {
        self.recording_request(room, request, by)?;
        self.room(room).ok_or(ControlError::RoomNotFound)
    }

    fn recordings(&self, query: &RecordingQuery) -> Result<RecordingsPage, ControlError> {
        self.list_recordings(query)
    }

    fn recording_manifest(&self, id: &str) -> Result<serde_json::Value, ControlError> {
        self.manifest_json(id)
    }

    fn recording_object(&self, id: &str, object: &str) -> Result<Download, ControlError> {
        self.object(id, object)
    }

    fn kick(&self, room: &str, leg: &str) -> Result<(), ControlError> {
        let call = {
            let state = self.lock();
            let entry = state.rooms.get(room).ok_or(ControlError::RoomNotFound)?;
            let id: u64 = leg.parse().map_err(|_| ControlError::LegNotFound)?;
            *entry
                .legs
                .get(&LegId(id))
                .ok_or(ControlError::LegNotFound)?
        };
        if let Some(sip) = self.sip.get() {
            sip.hangup(call);
        }
        self.leave(call, "kicked");
        Ok(())
    }

    fn update_room(&self, room: &str, patch: RoomPatch) -> Result<RoomDetail, ControlError> {
        if let Some(locked) = patch.locked {
            self.set_locked(room, locked)?;
        }
        self.room(room).ok_or(ControlError::RoomNotFound)
    }

    fn update_participant(
        &self,
        room: &str,
        leg: &str,
        patch: ParticipantPatch,
    ) -> Result<Participant, ControlError> {
        {
            let mut state = self.lock();
            let entry = state
                .rooms
                .get_key_value(room)
                .ok_or(ControlError::RoomNotFound)?;
            let (key, worker) = (entry.0.clone(), entry.1.worker);
            let id = LegId(leg.parse().map_err(|_| ControlError::LegNotFound)?);
            let call = *entry.1.legs.get(&id).ok_or(ControlError::LegNotFound)?;
            let entry = state.legs.get_mut(&call).ok_or(ControlError::LegNotFound)?;
            let c = &mut entry.controls;
            let was_muted = c.muted;
            c.muted = patch.muted.unwrap_or(c.muted);
            c.deaf = patch.deaf.unwrap_or(c.deaf);
            c.input_gain_db = patch.input_gain_db.unwrap_or(c.input_gain_db);
            c.output_gain_db = patch.output_gain_db.unwrap_or(c.output_gain_db);
            c.aec = patch.aec.map(aec_mode).or(c.aec);
            c.noise_suppression = patch.noise_suppression.or(c.noise_suppression);
            c.agc = patch.agc.or(c.agc);
            let controls = *c;
            if controls.muted != was_muted
                && let Some(active) = state.rooms.get(room).and_then(|r| r.recording.as_ref())
            {
                active.recording.control(RecordControl::Muted {
                    leg: id.to_string(),
                    muted: controls.muted,
                });
            }
            self.mixer.send(
                worker,
                Command::SetControls {
                    room: key,
                    leg: id,
                    controls,
                },
            );
            info!(room = %room, leg = %id, ?controls, "participant controls changed");
        }
        let mut fields = serde_json::to_value(patch).unwrap_or_default();
        fields["participant"] = serde_json::json!(leg);
        self.event("participant_updated", room, fields);
        let detail = self.room(room).ok_or(ControlError::RoomNotFound)?;
        detail
            .participants
            .into_iter()
            .find(|p| p.id == leg)
            .ok_or(ControlError::LegNotFound)
    }

    fn events(&self, after: u64, room: Option<&str>) -> EventsPage {
        let page = self.events.since(after, room);
        EventsPage {
            events: page.events,
            next: page.next,
            missed: page.missed,
        }
    }

    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::SeqCst) {
            READY => Readiness::Ready,
            DRAINING => Readiness::Draining,
            _ => Readiness::Starting,
        }
    }
}
