//! The bridge: the conference core driven by one task, wired to SIP calls, media legs, mixer
//! rooms, recordings and the API.
//!
//! [`Bridge`] owns the [`Conference`] core and everything that goes with each leg and room (its
//! sockets' counters, its SDP, its mixer thread, its recording) by `&mut`: no mutex guards them.
//! The SIP driver, the API, the mixer's event thread and each leg's key-press reader hold a
//! [`BridgeHandle`] and send it [`Command`]s; a request that needs an answer carries a oneshot.
//! Slow work (binding a leg's sockets, building its codecs) runs in the blocking pool and comes
//! back as a command, so the task never waits on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use roundtable_api::{
    AecSetting, Control, ControlError, Download, EventsPage, ParticipantPatch, Readiness,
    RecordingQuery, RecordingRequest, RecordingsPage, Reply, RoomPatch, RoomSpec,
};
use roundtable_conference::conference::{Action, Departure, Limits, Sound};
use roundtable_conference::{Conference, LegId, RoomId};
use roundtable_media::codec::{Codec, LegCodec, OpusOptions};
use roundtable_media::dtmf::{Digit, digit_from_info};
use roundtable_media::metrics::MediaMetrics;
use roundtable_media::ports::PortAllocator;
use roundtable_media::socket::{LegCounters, ReceiveConfig};
use roundtable_media::srtp::{MasterKey, Protector, Suite, Unprotector};
use roundtable_mixer::pool::{Command as MixerCommand, LegIo, MixerEvent, MixerPool, WorkerId};
use roundtable_mixer::{AecMode, LegControls, RoomEvent};
use roundtable_recorder::Archive;
use roundtable_sip::Rejection;
use roundtable_sip::endpoint::{CallKey, EndReason, IncomingCall, Reoffer};
use roundtable_sip::locate::Locator;
use roundtable_sip::sdp::{AudioCodec, Direction};
use roundtable_sip::transport::SipHandle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use crate::metrics::BridgeMetrics;
use crate::prompts::{Prompts, Tones};
use crate::rooms::RoomBook;
use crate::time::{self, WallClock};

mod api;
mod book;
mod calls;
mod dialout;
mod recording;
mod transfer;
use recording::ActiveRecording;

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
        AudioCodec::G729 => Codec::G729,
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

/// What the bridge task is asked to do.
pub enum Command {
    /// The SIP driver to answer calls through (before the first call).
    AttachSip(SipHandle),
    /// Start (true) or stop taking calls.
    Accepting(bool),
    /// A new INVITE.
    Incoming(IncomingCall),
    /// A leg's sockets and codecs are set up (or could not be).
    MediaReady(LegId, Result<Box<calls::LegMedia>, Rejection>),
    /// A re-INVITE or UPDATE offer.
    Reoffer(Reoffer),
    /// An in-dialog REFER.
    Refer(roundtable_sip::endpoint::Refer),
    /// A dial-out's URI was looked up in DNS: the targets to try in order, or why there are
    /// none.
    DialRouted(LegId, Result<Vec<roundtable_sip::locate::Target>, String>),
    /// A dial-out's RTP ports are bound (or not).
    DialPorts(
        LegId,
        Box<Result<roundtable_media::socket::MediaPorts, String>>,
    ),
    /// A dial-out got a provisional response.
    DialProgress(CallKey),
    /// A dial-out was answered, with this SDP.
    DialAnswered(CallKey, Vec<u8>),
    /// A dial-out failed: code, reason, and a 3xx's target.
    DialFailed(CallKey, u16, String, Option<String>),
    /// A call ended from its side.
    Ended(CallKey, EndReason),
    /// A key press (RFC 4733 from the leg's RTP task, or INFO).
    Digit(LegId, Digit),
    /// A key press relayed by INFO, to be parsed.
    Info(CallKey, String, Vec<u8>),
    /// A leg's media ended on its own (RTP inactivity or a socket error).
    MediaEnded(LegId, Departure),
    /// `rooms.json` was written (or not) for the first waiting room definition change.
    BookWritten(Result<(), crate::rooms::RoomBookError>),
    /// A recording's spool was opened in the blocking pool (or could not be).
    RecordingOpened(Box<recording::Opened>),
    /// A leg detached from a mixer room, on its way to `to`.
    Detached(LegId, RoomId, Box<LegIo>),
    /// Talking and echo cancellation changes from a mixer thread.
    Mixer(MixerEvent),
    /// An API request.
    Api(api::Request),
    /// Calls up or being set up.
    ActiveCalls(oneshot::Sender<usize>),
    /// Hang up everyone (shutdown); answered once done.
    HangUpAll(oneshot::Sender<()>),
    /// Stop the task; the mixer threads stop with it. Answered once they have.
    Stop(oneshot::Sender<()>),
}

/// A cloneable handle to the bridge task: the SIP driver's [`CallHandler`], the API's
/// [`Control`], and the way `main` starts, drains and stops the service.
#[derive(Clone)]
pub struct BridgeHandle {
    commands: mpsc::UnboundedSender<Command>,
    readiness: Arc<AtomicU8>,
    events: Arc<crate::events::EventLog>,
    archive: Arc<Archive>,
    tasks: TaskTracker,
    /// The trunks as their task publishes them.
    trunks: tokio::sync::watch::Receiver<crate::trunks::TrunkView>,
    /// The mixer's level reports, straight to WebSocket consumers (not the event log).
    levels: tokio::sync::broadcast::Sender<roundtable_api::RoomLevels>,
    /// What the probes read.
    health: crate::health::HealthView,
}

/// Level reports a WebSocket consumer may be behind before it skips some.
const LEVELS_BACKLOG: usize = 256;

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl BridgeHandle {
    fn send(&self, command: Command) {
        // The task only stops at the very end of shutdown, after every adapter.
        let _ = self.commands.send(command);
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.send(command(tx));
        rx.await.ok()
    }

    /// The event ring the API reads, for other tasks' events (the trunks').
    pub fn event_log(&self) -> Arc<crate::events::EventLog> {
        self.events.clone()
    }

    /// Gives the bridge the SIP handle it answers and hangs up through.
    pub fn attach_sip(&self, sip: SipHandle) {
        self.send(Command::AttachSip(sip));
    }

    /// Starts taking calls.
    pub fn set_ready(&self) {
        self.readiness.store(READY, Ordering::SeqCst);
        self.send(Command::Accepting(true));
    }

    /// Stops taking calls (new INVITEs get 503, `/ready` turns 503).
    pub fn start_draining(&self) {
        self.readiness.store(DRAINING, Ordering::SeqCst);
        self.send(Command::Accepting(false));
    }

    /// Calls up now.
    pub async fn active_calls(&self) -> usize {
        self.ask(Command::ActiveCalls).await.unwrap_or(0)
    }

    /// Sends BYE to every leg and closes every room and recording (shutdown).
    pub async fn hang_up_all(&self) {
        self.ask(Command::HangUpAll).await;
    }

    /// Waits until every recording is finalized and every leg task ended.
    pub async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Stops the bridge task and the mixer threads.
    pub async fn stop(&self) {
        self.ask(Command::Stop).await;
    }

    /// Takes an event from a mixer thread; level reports go to WebSocket consumers directly.
    pub fn mixer_event(&self, event: MixerEvent) {
        if let RoomEvent::Levels(levels) = event.event {
            if self.levels.receiver_count() > 0
                && let Ok(room) = RoomId::parse(&event.room)
            {
                let _ = self
                    .levels
                    .send(roundtable_api::RoomLevels { room, levels });
            }
            return;
        }
        self.send(Command::Mixer(event));
    }
}

/// What the SIP driver reports about calls ([`crate::sip_events::SipEvents`] forwards it).
impl BridgeHandle {
    /// A new INVITE.
    pub fn incoming(&self, call: IncomingCall) {
        self.send(Command::Incoming(call));
    }

    /// A call ended from its side.
    pub fn ended(&self, call: CallKey, reason: EndReason) {
        self.send(Command::Ended(call, reason));
    }

    /// A re-INVITE or UPDATE offer.
    pub fn reoffer(&self, offer: Reoffer) {
        self.send(Command::Reoffer(offer));
    }

    /// An in-dialog REFER.
    pub fn refer(&self, refer: roundtable_sip::endpoint::Refer) {
        self.send(Command::Refer(refer));
    }

    /// An INFO body (DTMF relay).
    pub fn info(&self, call: CallKey, content_type: &str, body: &[u8]) {
        self.send(Command::Info(call, content_type.to_string(), body.to_vec()));
    }

    /// A provisional response to a dial-out.
    pub fn progress(&self, call: CallKey) {
        self.send(Command::DialProgress(call));
    }

    /// A dial-out was answered.
    pub fn answered(&self, call: CallKey, body: Vec<u8>) {
        self.send(Command::DialAnswered(call, body));
    }

    /// A dial-out failed.
    pub fn failed(&self, call: CallKey, code: u16, reason: String, redirect: Option<String>) {
        self.send(Command::DialFailed(call, code, reason, redirect));
    }
}

/// A core audience as the API writes it (`"all"` or participant ids).
pub(super) fn api_audience(audience: &roundtable_mixer::Audience) -> roundtable_api::Audience {
    match audience {
        roundtable_mixer::Audience::All => roundtable_api::Audience::All,
        roundtable_mixer::Audience::Only(legs) => roundtable_api::Audience::Only(legs.clone()),
    }
}

/// One leg's media and call, beside the core's view of it.
struct LegEntry {
    call: CallKey,
    call_id: String,
    from: String,
    /// The SRTP line we answered (the caller's key and ours; Debug shows no key), if SRTP.
    srtp: Option<roundtable_sip::sdp::SrtpAnswer>,
    codec: AudioCodec,
    joined_at: SystemTime,
    counters: Arc<LegCounters>,
    cancel: CancellationToken,
    /// The address our SDP advertises.
    advertised: SocketAddr,
    /// Our current SDP answer and its version (RFC 3264 8: bumped on every change).
    answer_sdp: Vec<u8>,
    sdp_version: u64,
    /// What the leg's RTP intake accepts (and its RTCP task's inactivity limit).
    receive: tokio::sync::watch::Sender<ReceiveConfig>,
    /// The mixer command that adds it to its first room, until the core places it.
    add: Option<MixerCommand>,
    /// Our SDP answer while its media is set up (the address comes with the sockets).
    pending_answer: Option<roundtable_sip::sdp::Answer>,
    /// Its audio controls (API, DTMF).
    controls: LegControls,
    /// What the mixer last reported: talking, echo cancellation running.
    talking: bool,
    aec_active: bool,
    /// The SIP call is answered (else a hang-up refuses it).
    answered: bool,
    /// A call we place: where to, and its state until it joins.
    dial: Option<Box<dialout::DialInfo>>,
}

impl LegEntry {
    /// A leg that is being set up: no media, no SDP yet, not answered.
    fn new(
        call: CallKey,
        from: String,
        codec: AudioCodec,
        joined_at: SystemTime,
        receive: tokio::sync::watch::Sender<ReceiveConfig>,
    ) -> LegEntry {
        LegEntry {
            call,
            call_id: String::new(),
            from,
            srtp: None,
            codec,
            joined_at,
            counters: Arc::default(),
            cancel: CancellationToken::new(),
            advertised: SocketAddr::from(([0, 0, 0, 0], 0)),
            answer_sdp: Vec::new(),
            sdp_version: 1,
            receive,
            add: None,
            pending_answer: None,
            controls: LegControls::default(),
            talking: false,
            aec_active: false,
            answered: false,
            dial: None,
        }
    }
}

/// One mixer room (a room, or a lobby caller's private room).
struct RoomEntry {
    worker: WorkerId,
    recording: Option<ActiveRecording>,
    /// A recording's spool is being opened in the blocking pool.
    recording_starting: bool,
    /// Legs on their way into this room: its commands wait until they arrived, so none
    /// reaches the mixer before the room's legs do.
    arriving: usize,
    held: Vec<MixerCommand>,
}

/// The bridge task's state. See the module documentation.
pub struct Bridge {
    config: Config,
    core: Conference,
    book: RoomBook,
    /// Room definition changes: the one being written to `rooms.json`, then those waiting.
    book_writes: std::collections::VecDeque<book::BookWrite>,
    handle: BridgeHandle,
    mixer: Arc<MixerPool>,
    ports: Arc<Mutex<PortAllocator>>,
    sip: Option<SipHandle>,
    legs: HashMap<LegId, LegEntry>,
    calls: HashMap<CallKey, LegId>,
    rooms: HashMap<RoomId, RoomEntry>,
    /// Recording ids this process started in the current second (names are per second).
    recent_recordings: std::collections::HashSet<String>,
    clock: Arc<dyn WallClock>,
    metrics: BridgeMetrics,
    media_metrics: MediaMetrics,
    prompts: Prompts,
    /// Join, leave and hold tones.
    tones: Tones,
    /// Looks dial-out targets up in DNS (in tasks of their own).
    locator: Locator,
    /// Calls dialled for a REFER, to the call of the caller that asked (told of their
    /// progress).
    referrals: HashMap<LegId, CallKey>,
}

/// What the bridge task is built from, besides its configuration.
pub struct Services {
    /// The mixer threads.
    pub mixer: MixerPool,
    /// Where recordings go.
    pub archive: Arc<Archive>,
    /// Wall-clock time (recording names, `Participant.joined`).
    pub clock: Arc<dyn WallClock>,
    /// The bridge's metrics.
    pub metrics: BridgeMetrics,
    /// The media drivers' metrics.
    pub media_metrics: MediaMetrics,
    /// Room definitions.
    pub book: RoomBook,
    /// DNS for dial-outs (RFC 3263).
    pub locator: Locator,
    /// The trunks' registrations and addresses, as their task publishes them.
    pub trunks: tokio::sync::watch::Receiver<crate::trunks::TrunkView>,
    /// The event log (journaled).
    pub events: Arc<crate::events::EventLog>,
    /// What the probes read.
    pub health: crate::health::HealthView,
}

impl Bridge {
    /// Starts the bridge task. Call [`BridgeHandle::attach_sip`] and
    /// [`BridgeHandle::set_ready`] next.
    pub fn spawn(config: Config, services: Services) -> BridgeHandle {
        let Services {
            mixer,
            archive,
            clock,
            metrics,
            media_metrics,
            book,
            locator,
            trunks,
            events,
            health,
        } = services;
        let (commands, rx) = mpsc::unbounded_channel();
        let handle = BridgeHandle {
            commands,
            readiness: Arc::new(AtomicU8::new(STARTING)),
            events,
            archive,
            tasks: TaskTracker::new(),
            trunks,
            levels: tokio::sync::broadcast::channel(LEVELS_BACKLOG).0,
            health,
        };
        let prompts = Prompts::load(
            config.audio.rate,
            config.recording.consent_prompt.as_deref(),
        );
        let limits = Limits {
            max_calls: config.sip.max_calls,
            lockout: config.sip.lockout,
            goodbye_length: prompts.length(roundtable_conference::lobby::Prompt::Goodbye),
            dial_outs: config.sip.dial_limits,
        };
        let bridge = Bridge {
            core: Conference::new(limits),
            book,
            book_writes: Default::default(),
            handle: handle.clone(),
            mixer: Arc::new(mixer),
            ports: Arc::new(Mutex::new(PortAllocator::new(config.media.rtp_ports))),
            sip: None,
            legs: HashMap::new(),
            calls: HashMap::new(),
            rooms: HashMap::new(),
            recent_recordings: Default::default(),
            clock,
            metrics,
            media_metrics,
            prompts,
            tones: Tones::new(config.audio.rate),
            locator,
            referrals: HashMap::new(),
            config,
        };
        tokio::spawn(bridge.run(rx));
        handle
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let deadline = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop(reply)) => {
                        self.core.hang_up_all();
                        self.carry_out();
                        if let Ok(mixer) = Arc::try_unwrap(self.mixer) {
                            // Joining the mixer threads blocks; nothing else runs here anymore.
                            let _ = tokio::task::spawn_blocking(move || mixer.shutdown()).await;
                        }
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.apply(command),
                    None => return,
                },
                () = sleep => self.core.handle_timeout(Instant::now(), &self.book),
            }
            self.carry_out();
        }
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::AttachSip(sip) => self.sip = Some(sip),
            Command::Accepting(on) => self.core.set_accepting(on),
            Command::Incoming(call) => self.incoming(now, call),
            Command::MediaReady(leg, media) => self.media_ready(now, leg, media),
            Command::Reoffer(offer) => self.reoffer(offer),
            Command::Refer(refer) => self.refer(now, refer),
            Command::DialRouted(leg, targets) => self.dial_routed(now, leg, targets),
            Command::DialPorts(leg, bound) => self.dial_ports(now, leg, *bound),
            Command::DialProgress(call) => self.dial_progress(now, call),
            Command::DialAnswered(call, body) => self.dial_answered(now, call, body),
            Command::DialFailed(call, code, reason, redirect) => {
                self.dial_failed(now, call, code, reason, redirect)
            }
            Command::Ended(call, reason) => {
                if let Some(&leg) = self.calls.get(&call) {
                    let why = match reason {
                        EndReason::RemoteBye => Departure::Hangup,
                        EndReason::Cancelled => Departure::Cancelled,
                        EndReason::AckTimeout => Departure::NoAck,
                        EndReason::SessionExpired => Departure::SessionExpired,
                        EndReason::PeerUnreachable => Departure::Unreachable,
                    };
                    self.core.handle_ended(now, leg, why);
                }
            }
            Command::Digit(leg, digit) => {
                self.core
                    .handle_digit(now, leg, digit.as_char(), &self.book)
            }
            Command::Info(call, content_type, body) => {
                if let (Some(&leg), Some(digit)) =
                    (self.calls.get(&call), digit_from_info(&content_type, &body))
                {
                    self.core
                        .handle_digit(now, leg, digit.as_char(), &self.book);
                }
            }
            Command::MediaEnded(leg, why) => self.core.handle_ended(now, leg, why),
            Command::Detached(leg, to, io) => self.arrived(leg, to, io),
            Command::RecordingOpened(opened) => self.recording_opened(*opened),
            Command::BookWritten(written) => self.book_written(written),
            Command::Mixer(event) => self.mixer_event(event),
            Command::Api(request) => self.api(request),
            Command::ActiveCalls(reply) => {
                let _ = reply.send(self.core.active_legs());
            }
            Command::HangUpAll(reply) => {
                self.core.hang_up_all();
                self.carry_out();
                let _ = reply.send(());
            }
            Command::Stop(_) => {}
        }
    }

    /// Sends a mixer command for `room`, or holds it while a leg is on its way in.
    fn send_room(&mut self, room: &RoomId, command: MixerCommand) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if entry.arriving > 0 {
            entry.held.push(command);
        } else {
            self.mixer.send(entry.worker, command);
        }
    }

    /// A moving leg detached from its old room: it joins `to`, then `to`'s held commands go.
    fn arrived(&mut self, leg: LegId, to: RoomId, io: Box<LegIo>) {
        let Some(entry) = self.rooms.get_mut(&to) else {
            return; // The room closed meanwhile; dropping `io` closes the leg's sockets.
        };
        entry.arriving = entry.arriving.saturating_sub(1);
        let worker = entry.worker;
        if self.legs.contains_key(&leg) {
            let add = self.mixer.add_leg(to.key(), leg, *io);
            self.mixer.send(worker, add);
        }
        let held = if entry.arriving == 0 {
            std::mem::take(&mut entry.held)
        } else {
            Vec::new()
        };
        for command in held {
            self.mixer.send(worker, command);
        }
    }

    fn samples(&self, sound: Sound) -> Arc<[i16]> {
        match sound {
            Sound::Prompt(prompt) => self.prompts.samples(prompt),
            Sound::JoinTone => self.tones.join.clone(),
            Sound::LeaveTone => self.tones.leave.clone(),
        }
    }

    fn hang_up(&mut self, leg: LegId) {
        if self.drop_unsent_dial(leg) {
            return;
        }
        let (Some(entry), Some(sip)) = (self.legs.get(&leg), &self.sip) else {
            return;
        };
        // An unanswered call is refused; an answered one gets BYE.
        sip.hangup(entry.call);
    }

    /// Carries out what the core decided, in order.
    fn carry_out(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::OpenRoom(room) => {
                let worker = self.mixer.assign();
                let lobby = !RoomId::valid(room.as_str());
                if lobby {
                    self.metrics.lobby_calls.inc();
                } else {
                    self.metrics.rooms.inc();
                }
                let aec = self.book.settings(room.as_str()).aec.map(aec_mode);
                self.rooms.insert(
                    room.clone(),
                    RoomEntry {
                        worker,
                        recording: None,
                        recording_starting: false,
                        arriving: 0,
                        held: Vec::new(),
                    },
                );
                if !lobby {
                    self.send_room(
                        &room,
                        MixerCommand::SetRoomAec {
                            room: room.key(),
                            mode: aec,
                        },
                    );
                    self.event("room_created", &room, serde_json::json!({}));
                }
            }
            Action::CloseRoom(room) => {
                let Some(entry) = self.rooms.remove(&room) else {
                    return;
                };
                self.mixer
                    .send(entry.worker, MixerCommand::CloseRoom { room: room.key() });
                if let Some(recording) = entry.recording {
                    self.finish_recording(room.clone(), recording);
                }
                if RoomId::valid(room.as_str()) {
                    self.metrics.rooms.dec();
                    info!(room = %room, "room closed");
                    self.event("room_ended", &room, serde_json::json!({}));
                }
            }
            Action::AddLeg { room, leg } => {
                // Built for this room in the blocking pool (the destination was known).
                if let Some(add) = self.legs.get_mut(&leg).and_then(|l| l.add.take()) {
                    self.send_room(&room, add);
                }
            }
            Action::MoveLeg { leg, from, to } => {
                let Some(source) = self.rooms.get(&from).map(|r| r.worker) else {
                    return;
                };
                let Some(target) = self.rooms.get_mut(&to) else {
                    return;
                };
                target.arriving += 1;
                let handle = self.handle.clone();
                let reply =
                    Box::new(move |io| handle.send(Command::Detached(leg, to, Box::new(io))));
                let detach = MixerCommand::DetachLeg {
                    room: from.key(),
                    leg,
                    reply,
                };
                self.mixer.send(source, detach);
            }
            Action::RemoveLeg { room, leg } => self.send_room(
                &room,
                MixerCommand::RemoveLeg {
                    room: room.key(),
                    leg,
                },
            ),
            Action::Play { room, leg, sound } => {
                let samples = self.samples(sound);
                self.send_room(
                    &room,
                    MixerCommand::Play {
                        room: room.key(),
                        leg,
                        samples,
                    },
                );
            }
            Action::StopSound { room, leg, only } => {
                let only = only.map(|s| self.samples(s));
                self.send_room(
                    &room,
                    MixerCommand::StopPrompt {
                        room: room.key(),
                        leg,
                        only,
                    },
                );
            }
            Action::Announce { room, sound } => {
                let samples = self.samples(sound);
                self.send_room(
                    &room,
                    MixerCommand::Announce {
                        room: room.key(),
                        samples,
                    },
                );
            }
            Action::Hold { room, on } => {
                info!(room = %room, waiting = on, "room waits for its moderator");
                let sound = on.then(|| self.tones.hold.clone());
                self.send_room(
                    &room,
                    MixerCommand::SetHold {
                        room: room.key(),
                        sound,
                    },
                );
            }
            Action::Relations {
                room,
                leg,
                relations,
            } => self.send_room(
                &room,
                MixerCommand::SetRelations {
                    room: room.key(),
                    leg,
                    relations,
                },
            ),
            Action::Mute { room, leg, muted } => {
                if let Some(entry) = self.legs.get_mut(&leg) {
                    entry.controls.muted = muted;
                    let controls = entry.controls;
                    self.send_room(
                        &room,
                        MixerCommand::SetControls {
                            room: room.key(),
                            leg,
                            controls,
                        },
                    );
                    self.event(
                        "participant_muted",
                        &room,
                        serde_json::json!({"participant": leg.to_string(), "muted": muted}),
                    );
                }
            }
            Action::AutoRecord(room) => {
                // A failed auto-start is logged and counted; the call itself goes on.
                self.start_recording(&room, self.config.recording.mode, None, None);
            }
            Action::Record { room, note } => self.record_note(&room, note),
            Action::Hangup(leg) => self.hang_up(leg),
            Action::Ended { leg, why } => self.ended(leg, why),
            Action::Event { room, event } => self.core_event(&room, event),
            Action::Tally(tally) => self.tally(tally),
        }
    }

    /// A leg is gone from the core: its media stops and its numbers are counted.
    fn ended(&mut self, leg: LegId, why: Departure) {
        let Some(entry) = self.legs.remove(&leg) else {
            return;
        };
        self.calls.remove(&entry.call);
        entry.cancel.cancel();
        if !entry.answered {
            // Refused or cancelled before the answer: never counted as a call.
            return;
        }
        self.metrics.active_calls.dec();
        if entry.talking {
            self.metrics.legs_talking.dec();
        }
        if entry.aec_active {
            self.metrics.legs_aec_active.dec();
        }
        info!(call_id = %entry.call_id, leg = %leg, reason = why.as_str(), "left");
        // The leg's call quality, once it received audio.
        let quality = entry.counters.quality().jitter;
        if quality.received > 0 {
            let (loss_percent, _, mos) = rating(&entry.counters);
            self.metrics.leg_mos.observe(mos);
            self.metrics.leg_loss_percent.observe(loss_percent);
            self.metrics.leg_jitter_ms.observe(quality.jitter_ms);
            if let Some(rtt) = entry.counters.rtcp().rtt_ms {
                self.metrics.leg_rtt_ms.observe(rtt);
            }
        }
    }

    /// Records an event of `kind` in `room` with `fields` (a JSON object literal's entries).
    fn event(&self, kind: &str, room: &RoomId, fields: serde_json::Value) {
        crate::events::push_json(
            &self.handle.events,
            kind,
            room.as_str(),
            self.clock.now(),
            fields,
        );
    }

    fn core_event(&mut self, room: &RoomId, event: roundtable_conference::conference::Event) {
        use roundtable_conference::conference::Event;
        let (kind, fields) = match event {
            Event::Joined { leg, moderator } => {
                let (call_id, from, codec) = self
                    .legs
                    .get(&leg)
                    .map(|l| (l.call_id.clone(), l.from.clone(), l.codec.name()))
                    .unwrap_or_default();
                info!(call_id = %call_id, room = %room, leg = %leg, from = %from, codec, moderator, "joined room");
                (
                    "participant_joined",
                    serde_json::json!({"participant": leg.to_string(), "from": from, "codec": codec, "moderator": moderator}),
                )
            }
            Event::Left { leg, why } => {
                let call_id = self
                    .legs
                    .get(&leg)
                    .map(|l| l.call_id.as_str())
                    .unwrap_or("");
                info!(call_id = %call_id, room = %room, leg = %leg, reason = why.as_str(), "left room");
                (
                    "participant_left",
                    serde_json::json!({"participant": leg.to_string(), "reason": why.as_str()}),
                )
            }
            Event::Relations { leg, relations } => {
                info!(room = %room, leg = %leg, ?relations, "relations changed");
                (
                    "participant_relations",
                    serde_json::json!({
                        "participant": leg.to_string(),
                        "hears": api_audience(&relations.hears),
                        "heard_by": api_audience(&relations.heard_by),
                    }),
                )
            }
            Event::Moved { leg, to } => {
                info!(room = %room, leg = %leg, to = %to, "moved to another room");
                (
                    "participant_moved",
                    serde_json::json!({"participant": leg.to_string(), "to": to.as_str()}),
                )
            }
            Event::Dtmf { leg, digit } => {
                info!(room = %room, leg = %leg, digit = %digit, "DTMF key");
                (
                    "dtmf",
                    serde_json::json!({"participant": leg.to_string(), "digit": digit.to_string()}),
                )
            }
            Event::Locked(locked) => {
                info!(room = %room, locked, "room lock changed");
                let kind = if locked {
                    "room_locked"
                } else {
                    "room_unlocked"
                };
                (kind, serde_json::json!({}))
            }
            Event::DialState { leg, state } => {
                info!(room = %room, leg = %leg, state = state.as_str(), "dial-out state");
                self.referral_progress(leg, &state);
                ("participant_state", Self::dial_state_fields(leg, &state))
            }
            Event::WaitingForModerator(on) => {
                let kind = if on {
                    "waiting_for_moderator"
                } else {
                    "moderator_arrived"
                };
                (kind, serde_json::json!({}))
            }
        };
        self.event(kind, room, fields);
    }

    fn tally(&self, tally: roundtable_conference::conference::Tally) {
        use roundtable_conference::conference::Tally;
        let outcome = |label: &str| {
            self.metrics
                .lobby_outcomes
                .with_label_values(&[label])
                .inc()
        };
        match tally {
            Tally::InvalidRoom => outcome("invalid_room"),
            Tally::WrongPin => outcome("wrong_pin"),
            Tally::LobbyJoined => outcome("joined"),
            Tally::LobbyHungUp => outcome("hung_up"),
            Tally::Digit => self.metrics.dtmf_digits.inc(),
            Tally::Lockout {
                scope,
                source,
                room,
            } => {
                self.metrics
                    .lockouts
                    .with_label_values(&[scope.label()])
                    .inc();
                tracing::warn!(%source, room = room.as_deref().unwrap_or(""), scope = scope.label(), "PIN lockout");
            }
        }
    }

    /// Takes an event from a mixer thread: updates the leg and logs the event.
    fn mixer_event(&mut self, event: MixerEvent) {
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
            // Sent to WebSockets by the handle; never an event of the log.
            RoomEvent::Levels(_) => return,
        };
        let Some(room) = self.core.room_of(leg_id).cloned() else {
            return;
        };
        let Some(leg) = self.legs.get_mut(&leg_id) else {
            return;
        };
        match event.event {
            RoomEvent::Levels(_) => {}
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
                info!(room = %room, leg = %leg_id, active, "echo cancellation changed");
            }
        }
        fields["participant"] = serde_json::json!(leg_id.to_string());
        self.event(kind, &room, fields);
    }
}
