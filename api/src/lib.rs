//! Roundtable's HTTP API: REST room control under `/v1`, health and readiness probes, and
//! Prometheus metrics.
//!
//! The API owns no room state. It turns requests into calls on a [`Control`] implementation
//! (the service's wiring), and maps [`ControlError`]s to HTTP statuses in one place
//! ([`ControlError::status`]). Every error body is `{"error":"<message>"}`.
#![deny(missing_docs)]

use std::sync::Arc;

pub use access::{Access, ApiToken, Caller, ROUTES, Role, Tokens};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
pub use events::{LAGGING_CLOSE, MAX_BEHIND, MAX_EVENT_WAIT_S, SUBPROTOCOL};
pub use model::*;
pub use probes::{HealthComponent, HealthReport, HealthStatus, Readiness};
use prometheus::Registry;
/// The body of `PUT /v1/rooms/{room}` is the room settings type the configuration uses too.
pub use roundtable_conference::settings::{AecSetting, RoomSpec};
pub use roundtable_conference::{LegId, RoomId};
use thiserror::Error;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
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
    /// [`Control::events`] when it needs no IO (the page is in memory): callable on an async
    /// thread; `None` when the journal must be read.
    fn events_in_memory(&self, query: &EventQuery) -> Option<Result<EventsPage, ControlError>>;
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
    config: Arc<serde_json::Value>,
    registry: Registry,
    tokens: Arc<Tokens>,
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
    /// The configuration in effect, secrets redacted (`GET /v1/admin/config`).
    pub config: serde_json::Value,
    /// The tokens and their roles (`api.token`, `[[api.tokens]]`): with any, every route but
    /// `/live` and `/ready` needs one (see [`access::ROUTES`]).
    pub tokens: Tokens,
}

/// Builds the router.
pub fn router(services: ApiServices) -> Router {
    let ApiServices {
        control,
        webhooks,
        config,
        registry,
        tokens,
    } = services;
    let state = AppState {
        control,
        webhooks,
        config: Arc::new(config),
        metrics: Arc::new(ApiMetrics::register(&registry)),
        registry,
        tokens: Arc::new(tokens),
    };
    let v1 = OpenApiRouter::new()
        .routes(routes!(rooms::list_rooms))
        .routes(routes!(rooms::list_trunks))
        .routes(routes!(
            rooms::show_room,
            rooms::put_room,
            rooms::delete_room,
            rooms::update_room
        ))
        .routes(routes!(rooms::recording))
        .routes(routes!(rooms::dial))
        .routes(routes!(rooms::kick, rooms::update_participant))
        .routes(routes!(rooms::move_participant))
        .routes(routes!(recordings::list_recordings))
        .routes(routes!(recordings::show_recording))
        .routes(routes!(recordings::download))
        .routes(routes!(webhooks::list, webhooks::add))
        .routes(routes!(webhooks::show, webhooks::remove))
        .routes(routes!(events::long_poll))
        .routes(routes!(events::websocket))
        .routes(routes!(admin::config));
    let (router, document) = OpenApiRouter::with_openapi(schemas::ApiDoc::openapi())
        .nest("/v1", v1)
        .routes(routes!(probes::live))
        .routes(routes!(probes::ready))
        .routes(routes!(probes::health))
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::detailed))
        .routes(routes!(probes::metrics))
        .routes(routes!(openapi_json))
        .split_for_parts();
    let document = Arc::new(finish_document(document));
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), access::guard))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found".into()) })
        .layer(axum::Extension(document))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// The document as served: OpenAPI 3.1, with axum's wildcard `{*object}` written `{object}`,
/// and the answers every route can give added once here: 401 where a token is needed, 413 for
/// an oversized body, and the event types each `types` parameter takes.
fn finish_document(mut document: utoipa::openapi::OpenApi) -> String {
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut json = match serde_json::to_value(&document) {
        Ok(json) => json,
        Err(e) => return format!(r#"{{"error":"{e}"}}"#),
    };
    let error = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    let one_type = format!("({})", EVENT_TYPES.join("|"));
    let types_pattern = format!("^({one_type}(,{one_type})*)?$");
    if let Some(paths) = json["paths"].as_object_mut() {
        let old = std::mem::take(paths);
        for (path, mut item) in old {
            let operations = item.as_object_mut().into_iter().flat_map(|i| {
                i.iter_mut().filter(|(method, _)| {
                    ["get", "put", "post", "patch", "delete"].contains(&method.as_str())
                })
            });
            for (method, operation) in operations {
                let access =
                    access::access(&method.to_uppercase(), &path).unwrap_or(Access::Roles(&[]));
                let has_body = operation.get("requestBody").is_some();
                operation["x-roles"] = access.role_names().into();
                if access == Access::Open {
                    if let Some(o) = operation.as_object_mut() {
                        o.remove("security");
                    }
                } else {
                    operation["security"] = serde_json::json!([{"bearer": []}]);
                }
                let responses = &mut operation["responses"];
                if access != Access::Open {
                    responses["401"] = error("no token, or not a configured one");
                    responses["429"] =
                        error("over api.rate_limit_per_s for this token; see Retry-After");
                }
                if access.role_names().len() < Role::ALL.len() && access != Access::Open {
                    responses["403"] = error("the token's role may not call this route");
                }
                if has_body {
                    responses["413"] = error("the body is over 64 KiB");
                }
                let parameters = operation
                    .get_mut("parameters")
                    .and_then(serde_json::Value::as_array_mut);
                for parameter in parameters.into_iter().flatten() {
                    if parameter["name"] == "types" {
                        parameter["schema"]["pattern"] = types_pattern.clone().into();
                    }
                }
            }
            paths.insert(path.replace("{*", "{"), item);
        }
    }
    json.to_string()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", responses(
    (status = 200, description = "the OpenAPI document", body = Object)
))]
async fn openapi_json(axum::Extension(document): axum::Extension<Arc<String>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str().to_owned(),
    )
        .into_response()
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
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            axum::http::HeaderValue::from_static(HTML_POLICY),
        );
        headers.insert(
            header::X_FRAME_OPTIONS,
            axum::http::HeaderValue::from_static("DENY"),
        );
    }
    response
}

/// The Content-Security-Policy of every HTML page (the console): its own scripts, styles and
/// API only; no inline script, no framing, no plugins.
pub const HTML_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// A request body: a JSON object (serde would also read a struct from an array) of `T`.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |e: String| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}"));
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("a JSON object is expected".into()));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
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

mod access;
mod admin;
mod events;
mod model;
mod probes;
mod recordings;
mod rooms;
mod schemas;
pub mod webhooks;

#[cfg(test)]
mod tests;
