//! Finished recordings: the catalog, manifests and objects, read from the store off the async
//! threads.

use std::io::Read;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::model::*;
use crate::schemas::ErrorBody;
use crate::{ApiError, AppState, blocking};

/// Finished recordings in the store, in id order, a page at a time.
#[utoipa::path(
    get,
    path = "/recordings",
    tag = "recordings",
    security(("bearer" = [])),
    params(RecordingQuery),
    responses(
        (status = 200, description = "a page of recordings", body = RecordingsPage),
        (status = 400, description = "a bad filter or limit", body = ErrorBody),
        (status = 503, description = "the store cannot be read", body = ErrorBody)
    )
)]
pub(crate) async fn list_recordings(
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

/// A finished recording's manifest (its signature checked).
#[utoipa::path(
    get,
    path = "/recordings/{room}/{start}",
    tag = "recordings",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room id"), ("start" = String, Path, description = "its start, 20261122T093000Z (with -2, -3... for a second recording in that second)")),
    responses(
        (status = 200, description = "the signed manifest", body = Object),
        (status = 404, description = "no such recording", body = ErrorBody),
        (status = 503, description = "the store cannot be read", body = ErrorBody)
    )
)]
pub(crate) async fn show_recording(
    State(state): State<AppState>,
    Path((room, start)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let control = state.control.clone();
    Ok(Json(
        blocking(move || control.recording_manifest(&format!("{room}/{start}"))).await?,
    ))
}

/// One object of a finished recording (`mix.wav`, `legs/<leg>.wav`, `manifest.json`),
/// streamed from the store.
#[utoipa::path(
    get,
    path = "/recordings/{room}/{start}/{*object}",
    tag = "recordings",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room id"), ("start" = String, Path, description = "its start, 20261122T093000Z (with -2, -3... for a second recording in that second)"), ("object" = String, Path, description = "mix.wav, legs/<leg>.wav or manifest.json")),
    responses(
        (status = 200, description = "the object", content(
            (Vec<u8> = "audio/wav"),
            (Object = "application/json")
        )),
        (status = 404, description = "no such recording or object", body = ErrorBody),
        (status = 503, description = "the store cannot be read", body = ErrorBody)
    )
)]
pub(crate) async fn download(
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
