//! The API's bodies: what requests carry and answers return.

use roundtable_conference::{LegId, RoomId};
use serde::{Deserialize, Serialize};

use crate::{AecSetting, ControlError};

/// One room in the room list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RoomSummary {
    /// The room id.
    #[serde(with = "room_text")]
    #[schema(value_type = String, example = "1000")]
    pub id: RoomId,
    /// How many legs are in it.
    pub participants: usize,
    /// Whether it is being recorded.
    pub recording: bool,
}

/// How a participant's audio reaches the bridge, from its jitter buffer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Participant {
    /// The leg id, used to kick it.
    #[serde(with = "leg_text")]
    #[schema(value_type = String, example = "7")]
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
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Failure {
    /// The SIP code (480 when nobody answered within `timeout_s`).
    pub code: u16,
    /// Its reason phrase.
    pub reason: String,
}

/// `POST /v1/rooms/{room}/participants`: a call the bridge places into the room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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

impl utoipa::PartialSchema for Audience {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["all"])),
            )
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some("\"all\", or a list of participant ids"))
            .into()
    }
}

impl utoipa::ToSchema for Audience {}

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
pub(crate) fn room_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<RoomId, D::Error> {
    parse_room(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// The body of `PATCH /v1/rooms/{room}/participants/{leg}`: the controls to change.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
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
    #[schema(value_type = Option<String>)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RoomDetail {
    /// The room id.
    #[serde(with = "room_text")]
    #[schema(value_type = String, example = "1000")]
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
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    /// Lock (new callers get 403) or unlock.
    #[serde(default)]
    pub locked: Option<bool>,
}

/// The body of `POST /v1/rooms/{room}/recording`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingRequest {
    /// Start, stop, pause or resume.
    pub action: RecordingAction,
    /// For `start`: what to record (default `recording.mode`).
    #[serde(default)]
    pub mode: Option<RecordingMode>,
}

/// What to do with a room's recording.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RecordingSummary {
    /// `<room>/<start>`.
    pub id: String,
    /// The room.
    pub room: String,
    /// Its folder name: the UTC start, ISO 8601 basic (`20261122T093000Z`, maybe suffixed).
    pub start: String,
}

/// Filters of `GET /v1/recordings`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
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

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EventsPage {
    /// Events after the cursor, oldest first: objects with `id`, `at`, `type`, `room` and the
    /// type's fields.
    #[schema(value_type = Vec<crate::schemas::Event>)]
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
