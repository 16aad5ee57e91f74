//! The probes: `/live` (the process and every mixer thread run), `/ready` (take calls now?),
//! `/health` and `/healthz` (ok, degraded or unhealthy, with reasons) and `/health/detailed`
//! (every component with its value and threshold). They answer from what the service last
//! measured; none of them does IO.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use prometheus::{Encoder, TextEncoder};

use crate::schemas::ErrorBody;
use crate::{ApiError, AppState};
use axum::http::header;

/// How well a component, or the whole service, is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working as it should.
    #[default]
    Ok,
    /// Working, with something to look at (calls and recordings go on).
    Degraded,
    /// Not working.
    Unhealthy,
}

impl HealthStatus {
    /// The value of `roundtable_health_component{name}`: 0, 1 or 2.
    pub fn value(self) -> i64 {
        self as i64
    }
}

/// One measured part of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthComponent {
    /// `sip_listeners`, `mixer_threads`, `tick_lateness`, `voice_processing`, `storage`,
    /// `spool`, `disk_free`, `descriptors`, `uploads`, `event_journal`, `webhooks`, `trunks`.
    pub name: String,
    /// How it is.
    pub status: HealthStatus,
    /// What was measured (its unit in `reason`), when it is a number.
    pub value: Option<f64>,
    /// Where the status changes, when there is one threshold.
    pub threshold: Option<f64>,
    /// What the value means, or what is wrong.
    pub reason: String,
}

/// The service's health: the worst of its components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct HealthReport {
    /// The worst component status.
    pub status: HealthStatus,
    /// Every component.
    pub components: Vec<HealthComponent>,
}

impl HealthReport {
    /// A report of these components; its status is the worst of theirs.
    pub fn new(components: Vec<HealthComponent>) -> HealthReport {
        HealthReport {
            status: components
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or_default(),
            components,
        }
    }

    /// `name: reason` of every component that is not ok.
    pub fn reasons(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|c| c.status != HealthStatus::Ok)
            .map(|c| format!("{}: {}", c.name, c.reason))
            .collect()
    }
}

/// The service's readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Still binding sockets.
    Starting,
    /// Taking calls.
    Ready,
    /// Refusing new calls until the remaining ones end.
    Draining,
    /// Up, but unable to take calls well now (a SIP listener down, the spool nearly full).
    Unready(Vec<String>),
}

/// What `/live`, `/ready` and `/health` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProbeAnswer {
    /// `live`/`dead`, `ready`/`starting`/`draining`/`unready`, or `ok`/`degraded`/`unhealthy`.
    status: String,
    /// Why it is not well (absent or empty when it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<String>>,
}

fn unavailable(body: serde_json::Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// 200 while the process and every mixer thread run (each ticked within the last second);
/// 503 with the reason otherwise. For a liveness probe.
#[utoipa::path(get, path = "/live", tag = "probes", responses(
    (status = 200, description = "live", body = ProbeAnswer),
    (status = 503, description = "dead, with reasons", body = ProbeAnswer)
))]
pub(crate) async fn live(State(state): State<AppState>) -> Response {
    match state.control.liveness() {
        Ok(()) => Json(serde_json::json!({"status": "live"})).into_response(),
        Err(reason) => unavailable(serde_json::json!({"status": "dead", "reasons": [reason]})),
    }
}

/// 200 when new calls are welcome; 503 while starting, draining, with a SIP listener down or
/// the spool alert on. Storage being down does not make it unready: calls and recordings ride
/// that out in the spool. For a readiness probe.
#[utoipa::path(get, path = "/ready", tag = "probes", responses(
    (status = 200, description = "ready", body = ProbeAnswer),
    (status = 503, description = "starting, draining or unready (with reasons)", body = ProbeAnswer)
))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    match state.control.readiness() {
        Readiness::Ready => Json(serde_json::json!({"status": "ready"})).into_response(),
        Readiness::Starting => unavailable(serde_json::json!({"status": "starting"})),
        Readiness::Draining => unavailable(serde_json::json!({"status": "draining"})),
        Readiness::Unready(reasons) => {
            unavailable(serde_json::json!({"status": "unready", "reasons": reasons}))
        }
    }
}

/// 200 with `ok` or `degraded`, 503 with `unhealthy`; each with the reasons.
#[utoipa::path(get, path = "/health", tag = "probes", responses(
    (status = 200, description = "ok or degraded", body = ProbeAnswer),
    (status = 503, description = "unhealthy", body = ProbeAnswer)
))]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let report = state.control.health();
    let body = serde_json::json!({"status": report.status, "reasons": report.reasons()});
    match report.status {
        HealthStatus::Unhealthy => unavailable(body),
        _ => Json(body).into_response(),
    }
}

/// The status and every component with its value and threshold.
#[utoipa::path(get, path = "/health/detailed", tag = "probes", responses(
    (status = 200, description = "ok or degraded", body = HealthReport),
    (status = 503, description = "unhealthy", body = HealthReport)
))]
pub(crate) async fn detailed(State(state): State<AppState>) -> Response {
    let report = state.control.health();
    let status = if report.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(report)).into_response()
}

/// `GET /healthz`: the same as `/health`.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses(
    (status = 200, description = "ok or degraded", body = ProbeAnswer),
    (status = 503, description = "unhealthy", body = ProbeAnswer)
))]
pub(crate) async fn healthz(state: State<AppState>) -> Response {
    health(state).await
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "probes", security(("bearer" = [])), responses(
    (status = 200, description = "the metrics", body = String, content_type = "text/plain"),
    (status = 401, description = "a token is configured and this is not it", body = ErrorBody)
))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.registry.gather(), &mut out) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
