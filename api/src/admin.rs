//! Administration: the configuration the service runs with, secrets redacted.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::schemas::ErrorBody;

/// The configuration in effect (embedded defaults, the file, the environment and the command
/// line merged), every secret (tokens, passwords, PINs, keys) written `<redacted>`.
#[utoipa::path(get, path = "/admin/config", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "the configuration, by section", body = Object),
    (status = 401, description = "no token, or not a configured one", body = ErrorBody)
))]
pub(crate) async fn config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json((*state.config).clone())
}
