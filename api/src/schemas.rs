//! The OpenAPI document's root, and the schemas of what the API sends that no handler's type
//! names: the error body, the lists, and the events (long-poll entries, WebSocket messages and
//! webhook bodies).

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{RoomSummary, TrunkStatus};

/// Every error: `{"error":"<message>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// `GET /v1/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    /// Rooms with callers, and defined rooms even when empty.
    pub rooms: Vec<RoomSummary>,
}

/// `GET /v1/trunks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrunkList {
    /// Each `[[trunks]]` entry, in configuration order.
    pub trunks: Vec<TrunkStatus>,
}

/// The type of an event: one of `roundtable_api::EVENT_TYPES`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, dead_code)] // a schema: events are built as JSON where they happen
pub enum EventType {
    ApiAction,
    Dtmf,
    EchoCancellation,
    ModeratorArrived,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMoved,
    ParticipantMuted,
    ParticipantRelations,
    ParticipantState,
    ParticipantStoppedTalking,
    ParticipantTalking,
    ParticipantUpdated,
    RecordingFailed,
    RecordingPaused,
    RecordingResumed,
    RecordingSealed,
    RecordingStarted,
    RecordingStopped,
    RecordingUploaded,
    RoomCreated,
    RoomEnded,
    RoomLevels,
    RoomLocked,
    RoomUnlocked,
    TrunkRegistration,
    WaitingForModerator,
}

/// One event, as the long poll lists it, the WebSocket sends it and a webhook POSTs it: these
/// fields, and those of its type (see the README's REST table).
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    /// Its sequence number (it goes on across restarts).
    pub id: u64,
    /// Its cursor, `<journal id>:<id>`: pass it as `after` to read what follows.
    #[schema(example = "3fa94c1e07d2:12")]
    pub cursor: String,
    /// When it happened, RFC 3339 UTC with milliseconds.
    #[schema(example = "2026-11-22T04:40:01.120Z")]
    pub at: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The room it happened in (empty for a trunk's).
    pub room: String,
}

/// The WebSocket's first message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hello {
    /// `hello`.
    #[serde(rename = "type")]
    #[schema(example = "hello")]
    pub kind: String,
    /// The cursor the events follow.
    pub next: String,
    /// Events after `after` that are gone.
    pub missed: u64,
}

/// One participant's level in a `room_levels` message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Level {
    /// The participant id.
    pub participant: String,
    /// Its loudest input level since the last report, dBFS.
    pub dbfs: f32,
}

/// `room_levels`, on WebSockets only, every 240 ms while someone talks.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomLevelsMessage {
    /// `room_levels`.
    #[serde(rename = "type")]
    #[schema(example = "room_levels")]
    pub kind: String,
    /// The room.
    pub room: String,
    /// Each talking participant's level.
    pub levels: Vec<Level>,
}

/// The document's root: title, version, the bearer scheme, and the schemas no route names.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Roundtable",
        description = "SIP conference bridge and compliance recorder: rooms, participants, recordings, events, webhooks and probes.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorBody, Event, EventType, Hello, RoomLevelsMessage, Level)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme (`api.token`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
