//! Roundtable's HTTP API: REST room control under `/v1`, health and readiness probes, and
//! Prometheus metrics.
//!
//! The API owns no room state. It turns requests into calls on a [`Control`] implementation
//! (the service's wiring), and maps [`ControlError`]s to HTTP statuses in one place
//! ([`ControlError::status`]). Every error body is `{"error":"<message>"}`.
#![deny(missing_docs)]

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
/// The body of `PUT /v1/rooms/{room}` is the room settings type the configuration uses too.
pub use roundtable_conference::settings::{AecSetting, RoomSpec};
pub use roundtable_conference::{LegId, RoomId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One room in the room list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room id.
    #[serde(with = "room_text")]
    pub id: RoomId,
    /// How many legs are in it.
    pub participants: usize,
    /// Whether it is being recorded.
    pub recording: bool,
}

/// How a participant's audio reaches the bridge, from its jitter buffer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReceiveQuality {
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Audio waiting in the jitter buffer now, ms.
    pub buffer_ms: f64,
    /// The depth the adaptive buffer aims at now, ms.
    pub buffer_target_ms: f64,
    /// Packets received.
    pub received: u64,
    /// Packets never received (expected minus received).
    pub lost: u64,
    /// Packets that came after their turn.
    pub late: u64,
    /// Packets received twice.
    pub duplicated: u64,
    /// Frames made up by loss concealment.
    pub concealed: u64,
    /// Lost frames rebuilt from Opus in-band FEC.
    pub fec_recovered: u64,
    /// `lost` as a share of the packets expected, percent.
    pub loss_percent: f64,
    /// ITU-T G.107 transmission rating of this audio (simplified E-model: loss and delay).
    pub r_factor: f64,
    /// The E-model's estimated mean opinion score, 1 to 4.5.
    pub mos: f64,
}

/// What RTCP says about a participant's call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RtcpReport {
    /// Compound RTCP reports we sent to it.
    pub reports_sent: u64,
    /// Compound RTCP reports we got from it.
    pub reports_received: u64,
    /// Round-trip time from its reports on our stream; absent until it reports one.
    pub rtt_ms: Option<f64>,
    /// The share of our packets it lost in its last interval, percent.
    pub remote_loss_percent: f64,
    /// Our packets it lost in all.
    pub remote_lost: i64,
    /// The jitter it measures on our stream, ms.
    pub remote_jitter_ms: f64,
}

/// A SIP trunk's registration, as `GET /v1/trunks` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrunkStatus {
    /// Its name from `[[trunks]]`.
    pub name: String,
    /// Whether the bridge registers with it (`register = true`).
    pub register: bool,
    /// A binding is in place now.
    pub registered: bool,
    /// When the binding lapses unless refreshed (RFC 3339), while registered.
    pub expires_at: Option<String>,
    /// The last failure (`"503 Service Unavailable"`, `"DNS: ..."`), cleared by a success.
    pub last_error: Option<String>,
    /// Failed REGISTERs in a row.
    pub failures: u32,
    /// The circuit breaker: `closed`, `open` (retrying after a pause) or `half_open` (its one
    /// probe is out).
    pub breaker: String,
}

/// One participant (leg) of a room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Participant {
    /// The leg id, used to kick it.
    #[serde(with = "leg_text")]
    pub id: LegId,
    /// The caller's From URI.
    pub from: String,
    /// The negotiated codec (`opus`, `G722`, `PCMU`, `PCMA`).
    pub codec: String,
    /// When it joined, RFC 3339 UTC.
    pub joined_at: String,
    /// RTP packets received from it.
    pub packets_in: u64,
    /// RTP packets sent to it.
    pub packets_out: u64,
    /// How its audio reaches us.
    pub receive: ReceiveQuality,
    /// What RTCP says (its view of our audio, the round trip).
    pub rtcp: RtcpReport,
    /// Its audio controls and what the mixer does with it.
    pub audio: ParticipantAudio,
    /// Whether it joined as a moderator (moderator PIN or dial plan).
    pub moderator: bool,
    /// `answered` for a caller in the room; a leg the bridge calls goes `dialing`, `ringing`,
    /// `answered`, then `ended`, or `failed`.
    #[serde(default)]
    pub state: ParticipantState,
    /// Why a call we placed failed: the final SIP response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Where a participant's call stands.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantState {
    /// The INVITE is out.
    Dialing,
    /// The phone rings.
    Ringing,
    /// Connected.
    #[default]
    Answered,
    /// It never connected (see `failure`).
    Failed,
    /// It connected and is over, or was cancelled.
    Ended,
}

/// A final SIP response that ended a call we placed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// The SIP code (480 when nobody answered within `timeout_s`).
    pub code: u16,
    /// Its reason phrase.
    pub reason: String,
}

/// `POST /v1/rooms/{room}/participants`: a call the bridge places into the room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DialRequest {
    /// Whom to call: a `sip:` URI, or a `tel:` number through a trunk.
    pub to: String,
    /// The trunk to call through (required for `tel:`).
    #[serde(default)]
    pub trunk: Option<String>,
    /// The user part (or whole `sip:` URI) we call from; default: the room id.
    #[serde(default)]
    pub from: Option<String>,
    /// The display name the callee sees; default: none.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Seconds it may ring before it is cancelled (1 to 300).
    #[serde(default = "default_dial_timeout")]
    pub timeout_s: u32,
    /// Joins as a moderator.
    #[serde(default)]
    pub moderator: bool,
    /// Joins muted.
    #[serde(default)]
    pub muted: bool,
}

fn default_dial_timeout() -> u32 {
    30
}

impl DialRequest {
    /// Checks what needs no state: the URI scheme, `tel:` with a trunk, the timeout, the
    /// display name.
    pub fn check(&self) -> Result<(), ControlError> {
        let scheme = self
            .to
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sip" | "sips" => {}
            "tel" if self.trunk.is_none() => {
                return Err(ControlError::Invalid(
                    "a tel: number needs a trunk to call through".into(),
                ));
            }
            "tel" => {}
            _ => {
                return Err(ControlError::Invalid(format!(
                    "to: {:?} is not a sip: or tel: URI",
                    self.to
                )));
            }
        }
        if !(1..=300).contains(&self.timeout_s) {
            return Err(ControlError::Invalid("timeout_s: 1 to 300".into()));
        }
        let unsafe_text = |t: &str| {
            t.chars()
                .any(|c| c.is_control() || c == '"' || c == '<' || c == '>')
        };
        if self.display_name.as_deref().is_some_and(unsafe_text)
            || self.from.as_deref().is_some_and(unsafe_text)
            || unsafe_text(&self.to)
        {
            return Err(ControlError::Invalid(
                "to, from and display_name may not hold quotes, angle brackets or control characters".into(),
            ));
        }
        Ok(())
    }
}

/// A participant's audio controls and state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParticipantAudio {
    /// Its audio is dropped: nobody hears it.
    pub muted: bool,
    /// It hears nothing.
    pub deaf: bool,
    /// Gain on what it says, dB.
    pub input_gain_db: f32,
    /// Gain on what it hears, dB.
    pub output_gain_db: f32,
    /// Its echo cancellation setting (its own, else the room's, else the service's).
    pub aec: AecSetting,
    /// Whether echo cancellation runs on it now.
    pub aec_active: bool,
    /// Whether noise suppression is on for it.
    pub noise_suppression: bool,
    /// Whether level control is on for it.
    pub agc: bool,
    /// Whether it is talking.
    pub talking: bool,
    /// Whom it hears: `"all"`, or a list of participant ids.
    pub hears: Audience,
    /// Who hears it: `"all"`, or a list of participant ids (a whisper: one).
    pub heard_by: Audience,
}

/// Everyone in the room, or some participants (by id): whom a participant hears, or who hears
/// it. Written `"all"` or `["7", "9"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Audience {
    /// Everyone.
    #[default]
    All,
    /// These participants only.
    Only(Vec<LegId>),
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Audience::All => serializer.serialize_str("all"),
            Audience::Only(legs) => serializer.collect_seq(legs.iter().map(ToString::to_string)),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Word(String),
            Legs(Vec<String>),
        }
        match Written::deserialize(deserializer)? {
            Written::Word(word) if word == "all" => Ok(Audience::All),
            Written::Legs(legs) => legs
                .iter()
                .map(|leg| parse_leg(leg).map_err(serde::de::Error::custom))
                .collect::<Result<_, _>>()
                .map(Audience::Only),
            Written::Word(word) => Err(serde::de::Error::custom(format!(
                "{word:?}: \"all\" or a list of participant ids"
            ))),
        }
    }
}

/// A participant id as the API writes it (`"7"`), parsed.
pub fn parse_leg(text: &str) -> Result<LegId, ControlError> {
    text.parse()
        .map(LegId)
        .map_err(|_| ControlError::Invalid(format!("{text:?} is not a participant id")))
}

/// A room id as a path or body gives it, parsed.
pub fn parse_room(text: &str) -> Result<RoomId, ControlError> {
    RoomId::parse(text).map_err(|e| ControlError::Invalid(e.to_string()))
}

/// Reads a `whisper_to`: present (even `null`) as `Some`, a participant id as a [`LegId`].
fn whisper_target<'de, D>(deserializer: D) -> Result<Option<Option<LegId>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(Some(None)),
        Some(text) => parse_leg(&text)
            .map(|leg| Some(Some(leg)))
            .map_err(serde::de::Error::custom),
    }
}

/// Writes a `whisper_to` as the API reads it.
fn whisper_text<S: serde::Serializer>(
    target: &Option<Option<LegId>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    target
        .flatten()
        .map(|leg| leg.to_string())
        .serialize(serializer)
}

/// A participant id written as the API writes it: a string (`"7"`).
mod leg_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::LegId;

    pub fn serialize<S: Serializer>(leg: &LegId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(leg)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<LegId, D::Error> {
        super::parse_leg(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A room id written as text.
mod room_text {
    use serde::{Deserializer, Serializer};

    use super::RoomId;

    pub fn serialize<S: Serializer>(room: &RoomId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(room.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RoomId, D::Error> {
        super::room_id(deserializer)
    }
}

/// Reads a room id in a body.
fn room_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<RoomId, D::Error> {
    parse_room(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// The body of `PATCH /v1/rooms/{room}/participants/{leg}`: the controls to change.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPatch {
    /// Mute (nobody hears it) or unmute.
    #[serde(default)]
    pub muted: Option<bool>,
    /// Deafen (it hears nothing) or undeafen.
    #[serde(default)]
    pub deaf: Option<bool>,
    /// Gain on what it says, -30 to +20 dB.
    #[serde(default)]
    pub input_gain_db: Option<f32>,
    /// Gain on what it hears, -30 to +20 dB.
    #[serde(default)]
    pub output_gain_db: Option<f32>,
    /// Its echo cancellation.
    #[serde(default)]
    pub aec: Option<AecSetting>,
    /// Its noise suppression.
    #[serde(default)]
    pub noise_suppression: Option<bool>,
    /// Its level control.
    #[serde(default)]
    pub agc: Option<bool>,
    /// Whom it hears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hears: Option<Audience>,
    /// Who hears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_by: Option<Audience>,
    /// Heard by this participant only (`heard_by: [id]`), or by everyone again (`null`).
    #[serde(
        default,
        deserialize_with = "whisper_target",
        serialize_with = "whisper_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub whisper_to: Option<Option<LegId>>,
}

/// The range of participant gains, dB.
pub const GAIN_RANGE_DB: std::ops::RangeInclusive<f32> = -30.0..=20.0;

impl ParticipantPatch {
    /// Why the patch cannot be applied, if it cannot.
    pub fn problem(&self) -> Option<String> {
        for (name, gain) in [
            ("input_gain_db", self.input_gain_db),
            ("output_gain_db", self.output_gain_db),
        ] {
            if gain.is_some_and(|g| !GAIN_RANGE_DB.contains(&g)) {
                return Some(format!("{name} is -30 to 20"));
            }
        }
        if self.whisper_to.is_some() && self.heard_by.is_some() {
            return Some("whisper_to and heard_by say the same thing: give one".into());
        }
        None
    }

    /// Who hears it after the patch, if the patch says (`whisper_to` is `heard_by` of one).
    pub fn heard_by(&self) -> Option<Audience> {
        match &self.whisper_to {
            Some(Some(leg)) => Some(Audience::Only(vec![*leg])),
            Some(None) => Some(Audience::All),
            None => self.heard_by.clone(),
        }
    }
}

/// A room with its participants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoomDetail {
    /// The room id.
    #[serde(with = "room_text")]
    pub id: RoomId,
    /// Whether it is being recorded (or its recording is starting).
    pub recording: bool,
    /// The running recording's id (`<room>/<start>`); absent while the recording's files are
    /// still being created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// Whether the running recording is paused.
    #[serde(default)]
    pub recording_paused: bool,
    /// Its echo cancellation setting (its own, else the service's).
    pub aec: AecSetting,
    /// Whether new callers are refused.
    pub locked: bool,
    /// Whether it waits for its moderator (nobody is mixed; everyone hears a hold tone).
    pub waiting_for_moderator: bool,
    /// Its legs.
    pub participants: Vec<Participant>,
}

/// The body of `PATCH /v1/rooms/{room}`: live changes to a running room.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    /// Lock (new callers get 403) or unlock.
    #[serde(default)]
    pub locked: Option<bool>,
}

/// The body of `POST /v1/rooms/{room}/recording`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordingRequest {
    /// Start, stop, pause or resume.
    pub action: RecordingAction,
    /// For `start`: what to record (default `recording.mode`).
    #[serde(default)]
    pub mode: Option<RecordingMode>,
}

/// What to do with a room's recording.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordingAction {
    /// Start recording the room.
    Start,
    /// Stop and finalize the recording.
    Stop,
    /// Write silence until resumed (noted in the ledger).
    Pause,
    /// Write the room's audio again.
    Resume,
}

/// What a recording writes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordingMode {
    /// The room's mix (`mix.wav`).
    Mixed,
    /// One time-aligned track per leg (`legs/<leg>.wav`).
    Tracks,
    /// Both.
    Both,
}

/// A finished recording in `GET /v1/recordings`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordingSummary {
    /// `<room>/<start>`.
    pub id: String,
    /// The room.
    pub room: String,
    /// Its folder name: the UTC start, ISO 8601 basic (`20261122T093000Z`, maybe suffixed).
    pub start: String,
}

/// Filters of `GET /v1/recordings`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordingQuery {
    /// Only this room's.
    pub room: Option<String>,
    /// Only those started at or after this instant (RFC 3339 or ISO 8601 basic, UTC).
    pub since: Option<String>,
    /// Only those started before this instant.
    pub until: Option<String>,
    /// At most this many ([`RECORDINGS_PAGE_DEFAULT`] when absent, at most
    /// [`RECORDINGS_PAGE_MAX`]).
    pub limit: Option<usize>,
    /// Only those after this id (the `next` of the page before).
    pub after: Option<String>,
}

/// Recordings a page of `GET /v1/recordings` holds unless `limit` says otherwise.
pub const RECORDINGS_PAGE_DEFAULT: usize = 100;
/// The most a page of `GET /v1/recordings` holds.
pub const RECORDINGS_PAGE_MAX: usize = 1000;

/// A page of `GET /v1/recordings`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RecordingsPage {
    /// The recordings, in id order (by room, then start).
    pub recordings: Vec<RecordingSummary>,
    /// When more follow: the `after` for the next page.
    pub next: Option<String>,
}

/// A stored object being streamed out: its size and bytes.
pub struct Download {
    /// Bytes in the object.
    pub size: u64,
    /// Its content type.
    pub content_type: &'static str,
    /// The bytes (read on a blocking thread).
    pub body: Box<dyn std::io::Read + Send>,
}

pub use probes::{HealthComponent, HealthReport, HealthStatus, Readiness};

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventsPage {
    /// Events after the cursor, oldest first: objects with `id`, `at`, `type`, `room` and the
    /// type's fields.
    pub events: Vec<serde_json::Value>,
    /// The cursor for the next request (`after`): `<journal>:<sequence>`, opaque to clients.
    pub next: String,
    /// Events after the cursor that are gone (beyond the journal's bounds) before this read.
    pub missed: u64,
    /// Events after `next` already published (the page was full): read again at once.
    #[serde(default)]
    pub behind: u64,
}

/// A control request as the audit trail keeps it (the `api_action` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAction {
    /// The name of the token it came with (`api.token`), or `None` without one.
    pub token: Option<String>,
    /// Method and route, e.g. `PATCH /v1/rooms/{room}/participants/{leg}`.
    pub action: String,
    /// The path as requested.
    pub path: String,
    /// The room it acted on, when its path names one.
    pub room: Option<RoomId>,
    /// The client's address (`unknown` when the server does not know it).
    pub source: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// The talking participants' levels in a room, every 250 ms while someone talks: sent on the
/// WebSocket only (`room_levels`), never kept in the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomLevels {
    /// The room.
    pub room: RoomId,
    /// Each talking participant's loudest input level over the last 250 ms, dBFS.
    pub levels: Vec<(LegId, f32)>,
}

impl RoomLevels {
    /// The WebSocket message: `{"type":"room_levels","room":"1000","levels":[{"participant":"7","dbfs":-21.5}]}`.
    pub fn message(&self) -> serde_json::Value {
        let levels: Vec<serde_json::Value> = self
            .levels
            .iter()
            .map(|(leg, db)| {
                serde_json::json!({"participant": leg.to_string(), "dbfs": (f64::from(*db) * 10.0).round() / 10.0})
            })
            .collect();
        serde_json::json!({"type": "room_levels", "room": self.room.as_str(), "levels": levels})
    }
}

/// What a reader of events asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// The cursor: events after it (empty: from the oldest held). A bare number is a sequence
    /// number of the current journal.
    pub after: String,
    /// Only this room's.
    pub room: Option<RoomId>,
    /// Only these types (empty: all).
    pub types: Vec<String>,
}

pub use events::{LAGGING_CLOSE, MAX_BEHIND, MAX_EVENT_WAIT_S, SUBPROTOCOL};
pub use webhooks::{
    EVENT_TYPES, WebhookControl, WebhookCreated, WebhookEndpoint, WebhookSecret, WebhookSource,
    WebhookSpec, WebhookState, WebhookView,
};

/// Why a control request failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    /// No such room.
    #[error("room not found")]
    RoomNotFound,
    /// No such participant in the room.
    #[error("participant not found")]
    LegNotFound,
    /// No such finished recording (or object of one).
    #[error("recording not found")]
    RecordingNotFound,
    /// No trunk of that name.
    #[error("trunk not found")]
    TrunkNotFound,
    /// No webhook endpoint of that name.
    #[error("webhook endpoint not found")]
    WebhookNotFound,
    /// The request conflicts with the room's state (e.g. already recording).
    #[error("{0}")]
    Conflict(&'static str),
    /// The service could not carry it out.
    #[error("{0}")]
    Unavailable(String),
    /// The request names something invalid (a room id, a PIN).
    #[error("{0}")]
    Invalid(String),
    /// A limit is reached (`what`); the client may try again after `retry_after_s` seconds.
    #[error("{what}")]
    TooMany {
        /// Which limit.
        what: String,
        /// Seconds until a retry may succeed (`Retry-After`).
        retry_after_s: u64,
    },
}

impl ControlError {
    /// The HTTP status for this error: the one place errors become statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ControlError::RoomNotFound
            | ControlError::LegNotFound
            | ControlError::RecordingNotFound
            | ControlError::TrunkNotFound
            | ControlError::WebhookNotFound => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// What the API needs from the service.
pub trait Control: Send + Sync + 'static {
    /// Every room.
    fn rooms(&self) -> Reply<Vec<RoomSummary>>;
    /// One room.
    fn room(&self, id: &RoomId) -> Reply<Option<RoomDetail>>;
    /// Starts, stops, pauses or resumes a room's recording (`by`: the API caller's address, for
    /// the ledger), returning the room.
    fn recording(
        &self,
        room: &RoomId,
        request: RecordingRequest,
        by: &str,
    ) -> Reply<Result<RoomDetail, ControlError>>;
    /// A page of finished recordings, filtered (`query.limit` already checked and set). Reads
    /// storage: called on a blocking thread.
    fn recordings(&self, query: &RecordingQuery) -> Result<RecordingsPage, ControlError>;
    /// A finished recording's manifest (signature checked). Called on a blocking thread.
    fn recording_manifest(&self, id: &str) -> Result<serde_json::Value, ControlError>;
    /// One object of a finished recording (`mix.wav`, `legs/7.wav`, `manifest.json`). Called
    /// on a blocking thread.
    fn recording_object(&self, id: &str, object: &str) -> Result<Download, ControlError>;
    /// Removes a participant (the bridge sends BYE, or CANCEL to a call still ringing).
    fn kick(&self, room: &RoomId, leg: LegId) -> Reply<Result<(), ControlError>>;
    /// Calls someone into a room (`request` checked already), returning the new participant.
    fn dial(&self, room: &RoomId, request: DialRequest)
    -> Reply<Result<Participant, ControlError>>;
    /// Changes a running room (lock), returning the room.
    fn update_room(
        &self,
        room: &RoomId,
        patch: RoomPatch,
    ) -> Reply<Result<RoomDetail, ControlError>>;
    /// Moves a participant to room `to` (its call stays up), returning it as it is there.
    fn move_participant(
        &self,
        room: &RoomId,
        leg: LegId,
        to: &RoomId,
    ) -> Reply<Result<Participant, ControlError>>;
    /// Changes a participant's audio controls, returning the participant.
    fn update_participant(
        &self,
        room: &RoomId,
        leg: LegId,
        patch: ParticipantPatch,
    ) -> Reply<Result<Participant, ControlError>>;
    /// Defines (or redefines) a room that exists while empty and survives restarts.
    fn put_room(&self, room: &RoomId, spec: RoomSpec) -> Reply<Result<RoomDetail, ControlError>>;
    /// Removes a room defined through the API.
    fn delete_room(&self, room: &RoomId) -> Reply<Result<(), ControlError>>;
    /// The trunks and their registrations, in configuration order.
    fn trunks(&self) -> Vec<TrunkStatus>;
    /// Whether the service takes calls.
    fn readiness(&self) -> Readiness;
    /// `Ok` while the process and every mixer thread run, else why not.
    fn liveness(&self) -> Result<(), String>;
    /// The health the service last measured.
    fn health(&self) -> HealthReport;
    /// A page of events after `query.after` (a bad cursor is [`ControlError::Invalid`]). May
    /// read the journal: called on a blocking thread.
    fn events(&self, query: &EventQuery) -> Result<EventsPage, ControlError>;
    /// Every room's talking levels as the mixer reports them (for WebSockets).
    fn room_levels(&self) -> tokio::sync::broadcast::Receiver<RoomLevels>;
    /// Records a control request (`api_action`: who, what, from where, and the answer).
    fn audit(&self, action: ApiAction);
    /// Changes whenever an event is appended (so a reader can wait for one).
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// A [`Control`] answer that comes later: the service's conference task answers room
/// requests in turn, so a handler waits for its reply without holding any lock.
pub type Reply<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

#[derive(Clone)]
struct AppState {
    control: Arc<dyn Control>,
    webhooks: Arc<dyn WebhookControl>,
    registry: Registry,
    token: Option<Arc<str>>,
    metrics: Arc<ApiMetrics>,
}

/// The API's own metrics.
struct ApiMetrics {
    /// `roundtable_events_ws_clients`: WebSocket consumers connected.
    ws_clients: prometheus::IntGauge,
    /// `roundtable_events_ws_lagging_closed_total`: consumers closed with 4008.
    ws_lagging_closed: prometheus::IntCounter,
}

impl ApiMetrics {
    /// Registered in `registry` (a registry that has them already keeps its own).
    fn register(registry: &Registry) -> ApiMetrics {
        let metrics = ApiMetrics {
            ws_clients: prometheus::IntGauge::new(
                "roundtable_events_ws_clients",
                "WebSocket event consumers connected",
            )
            .expect("valid metric"),
            ws_lagging_closed: prometheus::IntCounter::new(
                "roundtable_events_ws_lagging_closed_total",
                "WebSocket event consumers closed with 4008 for falling 1,000 events behind",
            )
            .expect("valid metric"),
        };
        let _ = registry.register(Box::new(metrics.ws_clients.clone()));
        let _ = registry.register(Box::new(metrics.ws_lagging_closed.clone()));
        metrics
    }
}

/// An error response: status plus `{"error": message}` (and `Retry-After` when a limit says
/// when to come back).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> ApiError {
        ApiError {
            status,
            message,
            retry_after_s: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        match self.retry_after_s {
            Some(s) => (
                self.status,
                [(axum::http::header::RETRY_AFTER, s.to_string())],
                body,
            )
                .into_response(),
            None => (self.status, body).into_response(),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let retry_after_s = match &e {
            ControlError::TooMany { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        ApiError {
            status: e.status(),
            message: e.to_string(),
            retry_after_s,
        }
    }
}

/// What the router serves from.
pub struct ApiServices {
    /// Rooms, participants, recordings, events, health.
    pub control: Arc<dyn Control>,
    /// Webhook endpoints.
    pub webhooks: Arc<dyn WebhookControl>,
    /// The metrics `/metrics` shows (the API's own are added to it).
    pub registry: Registry,
    /// `api.token`: with it set, every `/v1` request needs `Authorization: Bearer`.
    pub token: Option<String>,
}

/// Builds the router.
pub fn router(services: ApiServices) -> Router {
    let ApiServices {
        control,
        webhooks,
        registry,
        token,
    } = services;
    let state = AppState {
        control,
        webhooks,
        metrics: Arc::new(ApiMetrics::register(&registry)),
        registry,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
    };
    let v1 = Router::new()
        .route("/rooms", get(list_rooms))
        .route("/trunks", get(list_trunks))
        .route(
            "/rooms/{room}",
            get(show_room)
                .put(put_room)
                .delete(delete_room)
                .patch(update_room),
        )
        .route("/rooms/{room}/recording", post(recording))
        .route("/recordings", get(list_recordings))
        .route("/recordings/{room}/{start}", get(show_recording))
        .route("/recordings/{room}/{start}/{*object}", get(download))
        .route("/rooms/{room}/participants", post(dial))
        .route(
            "/rooms/{room}/participants/{leg}",
            delete(kick).patch(update_participant),
        )
        .route(
            "/rooms/{room}/participants/{leg}/move",
            post(move_participant),
        )
        .route("/webhooks", get(webhooks::list).post(webhooks::add))
        .route(
            "/webhooks/{name}",
            get(webhooks::show).delete(webhooks::remove),
        )
        .route("/events", get(events::long_poll))
        .route("/events/ws", get(events::websocket))
        .route_layer(middleware::from_fn_with_state(state.clone(), audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/live", get(probes::live))
        .route("/ready", get(probes::ready))
        .route("/health", get(probes::health))
        .route("/healthz", get(probes::health))
        .route("/health/detailed", get(probes::detailed))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// The largest request body accepted (413 beyond it): a room, a dial-out or a patch is a few
/// hundred bytes.
pub const MAX_BODY: usize = 64 << 10;

/// `X-Content-Type-Options: nosniff` on every answer; `Cache-Control: no-store` on the API's
/// (they hold call state and may hold secrets).
async fn security_headers(uri: axum::http::Uri, response: Response) -> Response {
    // axum's own answer to an oversized body is text: ours are JSON.
    let mut response = if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} KiB", MAX_BODY >> 10),
        )
        .into_response()
    } else {
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    if uri.path().starts_with("/v1") {
        headers.insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Browsers cannot set headers on a WebSocket: the token may come as the subprotocol
        // `bearer.<token>` beside `roundtable.v1` (never in the URL).
        let subprotocol = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix("bearer."));
        let given = bearer.or(subprotocol).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Every request that changes something (not GET) becomes an `api_action` event once answered.
async fn audit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::GET {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_string(),
            |m| m.as_str().to_string(),
        );
    let action = format!("{} {route}", request.method());
    // Inside the nested `/v1` router the URI has lost its prefix; the original has it.
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path(), |o| o.0.path())
        .to_string();
    let room = path
        .strip_prefix("/v1/rooms/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|room| RoomId::parse(room).ok());
    let source = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let response = next.run(request).await;
    state.control.audit(ApiAction {
        token: state.token.as_ref().map(|_| "api.token".to_string()),
        action,
        path,
        room,
        source,
        status: response.status().as_u16(),
    });
    response
}

/// Compares without an early exit, so timing does not reveal how much of the token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list_rooms(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "rooms": state.control.rooms().await }))
}

/// `GET /v1/trunks`: every trunk with its registration.
async fn list_trunks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "trunks": state.control.trunks() }))
}

async fn show_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomDetail>, ApiError> {
    state
        .control
        .room(&room)
        .await
        .map(Json)
        .ok_or(ApiError::from(ControlError::RoomNotFound))
}

async fn recording(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Bytes,
) -> Result<Json<RoomDetail>, ApiError> {
    let request: RecordingRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    if request.mode.is_some() && request.action != RecordingAction::Start {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "mode is only for start".into(),
        ));
    }
    let by = peer.map_or_else(|| "unknown".to_string(), |p| p.0.0.to_string());
    Ok(Json(state.control.recording(&room, request, &by).await?))
}

/// `GET /v1/recordings[?room=R][&since=T][&until=T][&limit=N][&after=ID]`: a page at a time.
async fn list_recordings(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<RecordingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RecordingsPage>, ApiError> {
    let axum::extract::Query(mut query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query.limit.unwrap_or(RECORDINGS_PAGE_DEFAULT);
    if !(1..=RECORDINGS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit: 1 to {RECORDINGS_PAGE_MAX}"),
        ));
    }
    query.limit = Some(limit);
    let control = state.control.clone();
    Ok(Json(blocking(move || control.recordings(&query)).await?))
}

/// `GET /v1/recordings/{room}/{start}`: the signed manifest.
async fn show_recording(
    State(state): State<AppState>,
    Path((room, start)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let control = state.control.clone();
    Ok(Json(
        blocking(move || control.recording_manifest(&format!("{room}/{start}"))).await?,
    ))
}

/// `GET /v1/recordings/{room}/{start}/{object}`: an object, streamed.
async fn download(
    State(state): State<AppState>,
    Path((room, start, object)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let control = state.control.clone();
    let download =
        blocking(move || control.recording_object(&format!("{room}/{start}"), &object)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let mut body = download.body;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let chunk = match body.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, download.content_type.to_string()),
            (header::CONTENT_LENGTH, download.size.to_string()),
        ],
        axum::body::Body::from_stream(ChannelStream(rx)),
    )
        .into_response())
}

/// Runs a storage call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage task failed".into(),
            )
        })?
        .map_err(ApiError::from)
}

/// A channel's receiving end as a stream of body chunks.
struct ChannelStream(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for ChannelStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

async fn put_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    body: Bytes,
) -> Result<Json<RoomDetail>, ApiError> {
    let spec: RoomSpec = if body.is_empty() {
        RoomSpec::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?
    };
    Ok(Json(state.control.put_room(&room, spec).await?))
}

async fn delete_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
) -> Result<StatusCode, ApiError> {
    state.control.delete_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/rooms/{room}/participants`: 202 with the participant, `dialing`; its progress
/// follows as `participant_state` events.
async fn dial(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    body: Bytes,
) -> Result<(StatusCode, Json<Participant>), ApiError> {
    let request: DialRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    request.check()?;
    let participant = state.control.dial(&room, request).await?;
    Ok((StatusCode::ACCEPTED, Json(participant)))
}

async fn kick(
    State(state): State<AppState>,
    LegPath(room, leg): LegPath,
) -> Result<StatusCode, ApiError> {
    state.control.kick(&room, leg).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    body: Bytes,
) -> Result<Json<RoomDetail>, ApiError> {
    let patch: RoomPatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    Ok(Json(state.control.update_room(&room, patch).await?))
}

async fn update_participant(
    State(state): State<AppState>,
    LegPath(room, leg): LegPath,
    body: Bytes,
) -> Result<Json<Participant>, ApiError> {
    let patch: ParticipantPatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    if let Some(problem) = patch.problem() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, problem));
    }
    Ok(Json(
        state.control.update_participant(&room, leg, patch).await?,
    ))
}

/// The body of `POST /v1/rooms/{room}/participants/{leg}/move`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    /// The room it goes to.
    #[serde(deserialize_with = "room_id")]
    room: RoomId,
}

/// `POST /v1/rooms/{room}/participants/{leg}/move`: 200 with the participant in its new room.
async fn move_participant(
    State(state): State<AppState>,
    LegPath(room, leg): LegPath,
    body: Bytes,
) -> Result<Json<Participant>, ApiError> {
    let request: MoveRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    Ok(Json(
        state
            .control
            .move_participant(&room, leg, &request.room)
            .await?,
    ))
}

/// The `{room}` of a path, parsed: a malformed id is 400 before any handler runs.
struct RoomPath(RoomId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(room) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        Ok(RoomPath(parse_room(&room)?))
    }
}

/// The `{room}` and `{leg}` of a path, parsed.
struct LegPath(RoomId, LegId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for LegPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path((room, leg)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        Ok(LegPath(parse_room(&room)?, parse_leg(&leg)?))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.registry.gather(), &mut out) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

mod events;
mod probes;
pub mod webhooks;

#[cfg(test)]
mod tests;
