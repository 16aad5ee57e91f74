//! Rooms and their participants: listing, defining, locking, recording control, dial-outs,
//! mutes, moves and kicks; and the trunks.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use roundtable_conference::{LegId, RoomId};
use serde::Deserialize;

use crate::model::*;
use crate::schemas::{ErrorBody, RoomList, TrunkList};
use crate::{ApiError, AppState, ControlError, RoomSpec};

/// Rooms with callers, and defined rooms even when empty.
#[utoipa::path(
    get,
    path = "/rooms",
    tag = "rooms",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the rooms", body = RoomList)
    )
)]
pub(crate) async fn list_rooms(State(state): State<AppState>) -> Json<RoomList> {
    Json(RoomList {
        rooms: state.control.rooms().await,
    })
}

/// Every trunk with its registration.
#[utoipa::path(
    get,
    path = "/trunks",
    tag = "rooms",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the trunks", body = TrunkList)
    )
)]
pub(crate) async fn list_trunks(State(state): State<AppState>) -> Json<TrunkList> {
    Json(TrunkList {
        trunks: state.control.trunks(),
    })
}

/// A room with its participants.
#[utoipa::path(
    get,
    path = "/rooms/{room}",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "the room", body = RoomDetail),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room", body = ErrorBody)
    )
)]
pub(crate) async fn show_room(
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

/// Starts, pauses, resumes or stops the room's recording.
#[utoipa::path(
    post,
    path = "/rooms/{room}/recording",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = RecordingRequest,
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "the room", body = RoomDetail),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room", body = ErrorBody),
        (status = 409, description = "the room is in the way (full, locked, or in a conflicting state)", body = ErrorBody),
        (status = 503, description = "the service cannot do it now (draining, spool full, at capacity)", body = ErrorBody)
    )
)]
pub(crate) async fn recording(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    caller: Option<axum::Extension<crate::Caller>>,
    body: Bytes,
) -> Result<Json<RoomDetail>, ApiError> {
    let request: RecordingRequest = crate::json_body(&body)?;
    if request.mode.is_some() && request.action != RecordingAction::Start {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "mode is only for start".into(),
        ));
    }
    // The ledger names who asked: the token and the address it came from.
    let address = peer.map_or_else(|| "unknown".to_string(), |p| p.0.0.to_string());
    let by = match caller.map(|c| c.0) {
        Some(crate::Caller::Token(token)) => format!("token {} from {address}", token.name),
        _ => address,
    };
    Ok(Json(state.control.recording(&room, request, &by).await?))
}

/// Defines (or redefines) a room that exists while empty and survives restarts.
#[utoipa::path(
    put,
    path = "/rooms/{room}",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = Option<RoomSpec>,
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "the room", body = RoomDetail),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 503, description = "the service cannot do it now (draining, spool full, at capacity)", body = ErrorBody)
    )
)]
pub(crate) async fn put_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    body: Bytes,
) -> Result<Json<RoomDetail>, ApiError> {
    let spec: RoomSpec = if body.is_empty() {
        RoomSpec::default()
    } else {
        crate::json_body(&body)?
    };
    Ok(Json(state.control.put_room(&room, spec).await?))
}

/// Removes a room defined through the API.
#[utoipa::path(
    delete,
    path = "/rooms/{room}",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room", body = ErrorBody),
        (status = 409, description = "defined only in the configuration", body = ErrorBody),
        (status = 503, description = "the service cannot do it now (draining, spool full, at capacity)", body = ErrorBody)
    )
)]
pub(crate) async fn delete_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
) -> Result<StatusCode, ApiError> {
    state.control.delete_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Calls someone into the room; progress follows as participant_state events.
#[utoipa::path(
    post,
    path = "/rooms/{room}/participants",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = DialRequest,
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 202, description = "the participant, dialing", body = Participant),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such trunk", body = ErrorBody),
        (status = 409, description = "the room is in the way (full, locked, or in a conflicting state)", body = ErrorBody),
        (status = 429, description = "over sip.max_dialouts or sip.dialout_cps; see Retry-After", body = ErrorBody),
        (status = 503, description = "the service cannot do it now (draining, spool full, at capacity)", body = ErrorBody)
    )
)]
pub(crate) async fn dial(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    body: Bytes,
) -> Result<(StatusCode, Json<Participant>), ApiError> {
    let request: DialRequest = crate::json_body(&body)?;
    request.check()?;
    let participant = state.control.dial(&room, request).await?;
    Ok((StatusCode::ACCEPTED, Json(participant)))
}

/// Hangs a participant up (BYE, or CANCEL while it rings).
#[utoipa::path(
    delete,
    path = "/rooms/{room}/participants/{leg}",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$"), ("leg" = String, Path, description = "the participant id", pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 204, description = "gone"),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room or participant", body = ErrorBody)
    )
)]
pub(crate) async fn kick(
    State(state): State<AppState>,
    LegPath(room, leg): LegPath,
) -> Result<StatusCode, ApiError> {
    state.control.kick(&room, leg).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Locks or unlocks a running room.
#[utoipa::path(
    patch,
    path = "/rooms/{room}",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = RoomPatch,
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "the room", body = RoomDetail),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room", body = ErrorBody)
    )
)]
pub(crate) async fn update_room(
    State(state): State<AppState>,
    RoomPath(room): RoomPath,
    body: Bytes,
) -> Result<Json<RoomDetail>, ApiError> {
    let patch: RoomPatch = crate::json_body(&body)?;
    Ok(Json(state.control.update_room(&room, patch).await?))
}

/// Changes a participant's audio controls and relations.
#[utoipa::path(
    patch,
    path = "/rooms/{room}/participants/{leg}",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = ParticipantPatch,
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$"), ("leg" = String, Path, description = "the participant id", pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "the participant", body = Participant),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room or participant", body = ErrorBody)
    )
)]
pub(crate) async fn update_participant(
    State(state): State<AppState>,
    LegPath(room, leg): LegPath,
    body: Bytes,
) -> Result<Json<Participant>, ApiError> {
    let patch: ParticipantPatch = crate::json_body(&body)?;
    if let Some(problem) = patch.problem() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, problem));
    }
    Ok(Json(
        state.control.update_participant(&room, leg, patch).await?,
    ))
}

/// The body of `POST /v1/rooms/{room}/participants/{leg}/move`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    /// The room it goes to.
    #[serde(deserialize_with = "room_id")]
    #[schema(value_type = String)]
    room: RoomId,
}

/// Moves a participant to another room; its call stays up.
#[utoipa::path(
    post,
    path = "/rooms/{room}/participants/{leg}/move",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = MoveRequest,
    params(("room" = String, Path, description = "the room id", pattern = "^[A-Za-z0-9_.-]{1,64}$"), ("leg" = String, Path, description = "the participant id", pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "the participant in its new room", body = Participant),
        (status = 400, description = "a malformed id or body", body = ErrorBody),
        (status = 404, description = "no such room or participant", body = ErrorBody),
        (status = 409, description = "the room is in the way (full, locked, or in a conflicting state)", body = ErrorBody)
    )
)]
pub(crate) async fn move_participant(
    State(state): State<AppState>,
    LegPath(room, leg): LegPath,
    body: Bytes,
) -> Result<Json<Participant>, ApiError> {
    let request: MoveRequest = crate::json_body(&body)?;
    Ok(Json(
        state
            .control
            .move_participant(&room, leg, &request.room)
            .await?,
    ))
}

/// The `{room}` of a path, parsed: a malformed id is 400 before any handler runs.
pub(crate) struct RoomPath(pub(crate) RoomId);

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
pub(crate) struct LegPath(pub(crate) RoomId, pub(crate) LegId);

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
