//! The event routes: `GET /v1/events` (a page, or a long poll with `wait_s`) and
//! `GET /v1/events/ws` (a WebSocket that sends a hello, then every event in order as it is
//! published). Both read through [`Control::events`] with a cursor, so a reader that comes back
//! with its last cursor misses nothing the journal still holds, and is told how many it missed
//! otherwise.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::schemas::ErrorBody;
use crate::{ApiError, AppState, ControlError, EventQuery, EventsPage, parse_room};

/// Most seconds `GET /v1/events` waits for a first event.
pub const MAX_EVENT_WAIT_S: u64 = 30;

/// Events a WebSocket consumer may have queued before it is closed with [`LAGGING_CLOSE`].
pub const MAX_BEHIND: usize = 1000;

/// The close code for a consumer that fell too far behind.
pub const LAGGING_CLOSE: u16 = 4008;

/// Between pings on a quiet WebSocket.
const PING_EVERY: Duration = Duration::from_secs(20);

/// The WebSocket subprotocol the bridge speaks; a client may offer `bearer.<token>` beside it.
pub const SUBPROTOCOL: &str = "roundtable.v1";

/// Query of both event routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsParams {
    /// The cursor: events after it (absent: from the oldest held).
    #[serde(default)]
    after: Option<String>,
    /// Only this room's.
    room: Option<String>,
    /// Only these types, comma-separated.
    types: Option<String>,
    /// Long poll: seconds to wait for an event (`/v1/events` only).
    #[serde(default)]
    wait_s: u64,
}

impl EventsParams {
    fn query(&self) -> Result<EventQuery, ApiError> {
        let types = crate::webhooks::parse_event_types(self.types.as_deref().unwrap_or_default())
            .map_err(|e| ControlError::Invalid(format!("types: {e}")))?;
        Ok(EventQuery {
            after: self.after.clone().unwrap_or_default(),
            room: self.room.as_deref().map(parse_room).transpose()?,
            types,
        })
    }
}

type ParamsResult = Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>;

fn params(query: ParamsResult) -> Result<EventsParams, ApiError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// Reads a page: from memory at once, or (a cursor behind the memory ring reads the journal)
/// on a blocking thread.
async fn page(state: &AppState, query: &EventQuery) -> Result<EventsPage, ApiError> {
    if let Some(page) = state.control.events_in_memory(query) {
        return page.map_err(ApiError::from);
    }
    let (control, query) = (state.control.clone(), query.clone());
    crate::blocking(move || control.events(&query)).await
}

/// Events after cursor `after`, oldest first, at most 500; with `wait_s`, waits up to that
/// many seconds (at most 30) for one when there is none yet.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    security(("bearer" = [])),
    params(EventsParams),
    responses(
        (status = 200, description = "a page of events", body = EventsPage),
        (status = 400, description = "a bad cursor, room, type or wait_s", body = ErrorBody)
    )
)]
pub(crate) async fn long_poll(
    State(state): State<AppState>,
    query: ParamsResult,
) -> Result<Json<EventsPage>, ApiError> {
    let params = params(query)?;
    let query = params.query()?;
    if params.wait_s > MAX_EVENT_WAIT_S {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("wait_s is at most {MAX_EVENT_WAIT_S}"),
        ));
    }
    let mut changes = state.control.event_changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(params.wait_s);
    loop {
        changes.borrow_and_update();
        let page = page(&state, &query).await?;
        if !page.events.is_empty() || page.missed > 0 || tokio::time::Instant::now() >= deadline {
            return Ok(Json(page));
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(Json(page));
        }
    }
}

/// A WebSocket (subprotocol `roundtable.v1`): a `Hello`, then every `Event` after `after` as
/// it happens, and `RoomLevelsMessage`s while someone talks. The token may come as the
/// subprotocol `bearer.<token>`. A consumer 1,000 events behind is closed with 4008.
#[utoipa::path(
    get,
    path = "/events/ws",
    tag = "events",
    security(("bearer" = [])),
    params(EventsParams),
    responses(
        (status = 101, description = "switching to the WebSocket: Hello, then Event and RoomLevelsMessage messages"),
        (status = 400, description = "a bad cursor, room or type, or not a WebSocket handshake", body = ErrorBody),
        (status = 426, description = "not a WebSocket upgrade", body = ErrorBody)
    )
)]
pub(crate) async fn websocket(
    State(state): State<AppState>,
    query: ParamsResult,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(rejection.status(), rejection.body_text()).into_response();
        }
    };
    let query = match params(query).and_then(|p| p.query()) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    // Marked seen before each read, so that nothing published after a read goes unnoticed.
    let mut changes = state.control.event_changes();
    changes.borrow_and_update();
    // The first page checks the cursor before the upgrade, so a bad one is a 400.
    let first = match page(&state, &query).await {
        Ok(first) => first,
        Err(error) => return error.into_response(),
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| stream(state, socket, query, first, changes))
}

/// One consumer: a task writes to the socket from a queue of at most [`MAX_BEHIND`] messages,
/// while this loop follows the log into it; a full queue closes the socket with 4008.
async fn stream(
    state: AppState,
    socket: WebSocket,
    mut query: EventQuery,
    first: EventsPage,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    state.metrics.ws_clients.inc();
    let (queue, queued) = mpsc::channel::<Message>(MAX_BEHIND);
    let lagging = CancellationToken::new();
    let writer = tokio::spawn(write(socket, queued, lagging.clone()));
    let hello = serde_json::json!({"type": "hello", "next": first.next, "missed": first.missed});
    let mut page = first;
    let mut levels = Some(state.control.room_levels());
    let wants_levels = query.types.is_empty() || query.types.iter().any(|t| t == "room_levels");
    if queue
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        'follow: loop {
            for event in std::mem::take(&mut page.events) {
                match queue.try_send(Message::Text(event.to_string().into())) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        state.metrics.ws_lagging_closed.inc();
                        lagging.cancel();
                        break 'follow;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break 'follow,
                }
            }
            query.after = std::mem::take(&mut page.next);
            if page.behind == 0 {
                loop {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                break 'follow;
                            }
                            break;
                        }
                        report = next_levels(&mut levels) => {
                            if wants_levels && query.room.as_ref().is_none_or(|r| *r == report.room) {
                                // Levels are fleeting: one that finds the queue full is dropped.
                                let _ = queue.try_send(Message::Text(report.message().to_string().into()));
                            }
                        }
                        () = queue.closed() => break 'follow,
                    }
                }
            }
            changes.borrow_and_update();
            page = match self::page(&state, &query).await {
                Ok(page) => page,
                Err(_) => break,
            };
        }
    }
    drop(queue);
    let _ = writer.await;
    state.metrics.ws_clients.dec();
}

/// The next levels report; never, once the reports have ended (a lagging receiver skips what
/// it missed).
async fn next_levels(
    levels: &mut Option<tokio::sync::broadcast::Receiver<crate::RoomLevels>>,
) -> crate::RoomLevels {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let Some(receiver) = levels.as_mut() else {
            return std::future::pending().await;
        };
        match receiver.recv().await {
            Ok(report) => return report,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => *levels = None,
        }
    }
}

/// Writes queued messages, pings a quiet socket, and once `lagging` is cancelled closes it
/// with 4008 (abandoning a send blocked on a consumer that stopped reading).
async fn write(
    mut socket: WebSocket,
    mut queued: mpsc::Receiver<Message>,
    lagging: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            () = lagging.cancelled() => break,
            message = queued.recv() => match message {
                Some(message) => message,
                None => return,
            },
            incoming = socket.recv() => match incoming {
                // The client closed, or the connection broke.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            () = tokio::time::sleep(PING_EVERY) => Message::Ping(Default::default()),
        };
        tokio::select! {
            biased;
            () = lagging.cancelled() => break,
            sent = socket.send(message) => {
                if sent.is_err() {
                    return;
                }
            }
        }
    }
    let frame = Message::Close(Some(CloseFrame {
        code: LAGGING_CLOSE,
        reason: "too far behind".into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.send(frame)).await;
}
