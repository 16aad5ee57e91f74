//! Webhooks: the endpoints' definitions (`[[webhooks.endpoints]]`, `POST /v1/webhooks`), what
//! the API shows of them, and signing.
//!
//! Signing is as Standard Webhooks defines it (<https://www.standardwebhooks.com>): each
//! delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature:
//! v1,<base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>">`, keyed with the endpoint's
//! secret, written `whsec_` + the key's bytes in base64. A receiver verifies with any Standard
//! Webhooks library, or in a few lines of its own (see the README).

use aws_lc_rs::hmac;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use roundtable_conference::RoomId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::schemas::ErrorBody;
use crate::{ApiError, AppState, ControlError, Reply};

/// Every event type the bridge emits, by name: what `types=` and an endpoint's `events` may
/// name (`room_levels` is sent on WebSockets only).
pub const EVENT_TYPES: &[&str] = &[
    "api_action",
    "dtmf",
    "echo_cancellation",
    "moderator_arrived",
    "participant_joined",
    "participant_left",
    "participant_moved",
    "participant_muted",
    "participant_relations",
    "participant_state",
    "participant_stopped_talking",
    "participant_talking",
    "participant_updated",
    "recording_failed",
    "recording_paused",
    "recording_resumed",
    "recording_sealed",
    "recording_started",
    "recording_stopped",
    "recording_uploaded",
    "room_created",
    "room_ended",
    "room_levels",
    "room_locked",
    "room_unlocked",
    "trunk_registration",
    "waiting_for_moderator",
];

/// Reads a comma-separated list of event types (`a,b`), each one of [`EVENT_TYPES`].
pub fn parse_event_types(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if EVENT_TYPES.contains(&t) {
                Ok(t.to_string())
            } else {
                Err(format!("{t:?} is not an event type"))
            }
        })
        .collect()
}

/// An endpoint's definition: a `[[webhooks.endpoints]]` entry, an entry of
/// `<storage.path>/webhooks.json`, and the body of `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Its name: `[A-Za-z0-9_.-]{1,64}`, unique.
    pub name: String,
    /// Where events are POSTed: an `http://` or `https://` URL.
    pub url: String,
    /// The event types it receives, comma-separated (empty: all but `room_levels`).
    #[serde(default)]
    pub events: String,
    /// The rooms whose events it receives, comma-separated (empty: every room's).
    #[serde(default)]
    pub rooms: String,
    /// Its signing secret, `whsec_` + base64 of 24 to 64 bytes. Left out of a `POST`, one is
    /// made and returned once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Seconds a delivery may take before it counts as failed (1 to 60).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_timeout_s() -> u64 {
    10
}

/// A [`WebhookSpec`] checked: what delivery works from.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// Its name.
    pub name: String,
    /// Where to POST.
    pub url: axum::http::Uri,
    /// The types it wants (empty: all).
    pub events: Vec<String>,
    /// The rooms it wants (empty: all).
    pub rooms: Vec<RoomId>,
    /// Its key.
    pub secret: WebhookSecret,
    /// How long one delivery may take.
    pub timeout: std::time::Duration,
}

impl WebhookSpec {
    /// Checks the definition, naming what is wrong. A spec without a secret is refused here:
    /// whoever takes one without gives it a [`WebhookSecret::generate`]d one first.
    pub fn check(&self) -> Result<WebhookEndpoint, String> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok {
            return Err(format!(
                "name: {:?} is not [A-Za-z0-9_.-]{{1,64}}",
                self.name
            ));
        }
        let url: axum::http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url: {:?}: {e}", self.url))?;
        let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
        if !scheme_ok || url.host().is_none_or(str::is_empty) {
            return Err(format!(
                "url: {:?} is not an http:// or https:// URL",
                self.url
            ));
        }
        if url.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(
                "url: credentials do not go in the URL (the secret signs each delivery)".into(),
            );
        }
        let events = parse_event_types(&self.events).map_err(|e| format!("events: {e}"))?;
        let rooms = self
            .rooms
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| RoomId::parse(r).map_err(|_| format!("rooms: {r:?} is not a room id")))
            .collect::<Result<Vec<_>, _>>()?;
        let secret = self
            .secret
            .as_deref()
            .ok_or_else(|| "secret: missing".to_string())
            .and_then(|s| WebhookSecret::parse(s).map_err(|e| format!("secret: {e}")))?;
        if !(1..=60).contains(&self.timeout_s) {
            return Err(format!(
                "timeout_s: {} is not between 1 and 60",
                self.timeout_s
            ));
        }
        Ok(WebhookEndpoint {
            name: self.name.clone(),
            url,
            events,
            rooms,
            secret,
            timeout: std::time::Duration::from_secs(self.timeout_s),
        })
    }
}

/// Where an endpoint was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookSource {
    /// `[[webhooks.endpoints]]`: changed only in the configuration.
    Config,
    /// `POST /v1/webhooks`: kept in `webhooks.json`.
    Api,
}

/// How an endpoint's deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Delivering (or waiting for events).
    Delivering,
    /// The last attempt failed; retrying with backoff.
    Retrying,
    /// Five attempts in a row failed: the breaker is open, one attempt per backoff period.
    Open,
    /// It answered 410 Gone: removed (a configured one stays off until the configuration
    /// changes its URL).
    Gone,
}

/// An endpoint as `GET /v1/webhooks` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its name.
    pub name: String,
    /// Where events go.
    pub url: String,
    /// Its type filter, comma-separated (empty: all).
    pub events: String,
    /// Its room filter, comma-separated (empty: all).
    pub rooms: String,
    /// Its delivery timeout.
    pub timeout_s: u64,
    /// Where it was defined.
    pub source: WebhookSource,
    /// How its deliveries go.
    pub state: WebhookState,
    /// The cursor of the last event delivered (or dead-lettered).
    pub cursor: String,
    /// Events published after that cursor (some may not be for it).
    pub backlog: u64,
    /// Events delivered since the service started.
    pub delivered: u64,
    /// Events it sent to dead letters since the service started.
    pub dead_letters: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The answer to `POST /v1/webhooks`: the endpoint and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookCreated {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookView,
    /// Its secret (given or made): shown only here.
    pub secret: String,
}

/// What the API needs from the webhook deliveries.
pub trait WebhookControl: Send + Sync + 'static {
    /// Every endpoint, configured then API-defined, by name.
    fn list(&self) -> Reply<Vec<WebhookView>>;
    /// Adds an endpoint (checked already, with a secret); delivery starts with the next event.
    fn add(&self, endpoint: WebhookSpec) -> Reply<Result<WebhookCreated, ControlError>>;
    /// Removes an API-defined endpoint (a configured one is a conflict).
    fn remove(&self, name: &str) -> Reply<Result<(), ControlError>>;
}

/// Every endpoint, configured ones first (secrets are never shown).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])), responses(
    (status = 200, description = "the endpoints", body = Vec<WebhookView>)
))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<WebhookView>> {
    Json(state.webhooks.list().await)
}

/// One endpoint.
#[utoipa::path(get, path = "/webhooks/{name}", tag = "webhooks", security(("bearer" = [])), params(("name" = String, Path, description = "the endpoint's name")), responses(
    (status = 200, description = "the endpoint", body = WebhookView),
    (status = 404, description = "no such endpoint", body = ErrorBody)
))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    state
        .webhooks
        .list()
        .await
        .into_iter()
        .find(|w| w.name == name)
        .map(Json)
        .ok_or(ControlError::WebhookNotFound.into())
}

/// Adds an endpoint: it receives the events from now on, and its secret is shown this once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = WebhookSpec, responses(
    (status = 201, description = "the endpoint and its secret", body = WebhookCreated),
    (status = 400, description = "a bad name, URL, event type, room, secret or timeout", body = ErrorBody),
    (status = 409, description = "the name is taken", body = ErrorBody),
    (status = 503, description = "webhooks.json cannot be written", body = ErrorBody)
))]
pub(crate) async fn add(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    let mut spec: WebhookSpec = crate::json_body(&body)?;
    if spec.secret.is_none() {
        let made = WebhookSecret::generate()
            .map_err(|e| ControlError::Unavailable(format!("no random secret: {e}")))?;
        spec.secret = Some(made.expose());
    }
    spec.check().map_err(ControlError::Invalid)?;
    let created = state.webhooks.add(spec).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Removes an endpoint added through the API.
#[utoipa::path(delete, path = "/webhooks/{name}", tag = "webhooks", security(("bearer" = [])), params(("name" = String, Path, description = "the endpoint's name")), responses(
    (status = 204, description = "removed"),
    (status = 404, description = "no such endpoint", body = ErrorBody),
    (status = 409, description = "defined in [[webhooks.endpoints]]", body = ErrorBody),
    (status = 503, description = "webhooks.json cannot be written", body = ErrorBody)
))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What is wrong with a secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    /// Not `whsec_` followed by base64.
    #[error("a webhook secret is whsec_ followed by base64")]
    Malformed,
    /// Fewer than 24 bytes of key (Standard Webhooks asks for 24 to 64).
    #[error("a webhook secret's key is 24 to 64 bytes")]
    Length,
}

/// An endpoint's signing key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let key = text
            .strip_prefix("whsec_")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or(SecretError::Malformed)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(WebhookSecret(key))
    }

    /// A new random 32-byte key (for an endpoint defined without one).
    pub fn generate() -> Result<WebhookSecret, SecretError> {
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| SecretError::Length)?;
        Ok(WebhookSecret(key))
    }

    /// The secret as it is written and shown once to whoever defines the endpoint.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }

    /// `v1,<signature>` of one delivery.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }

    /// Whether a `webhook-signature` header (space-separated `v1,<sig>` entries) holds this
    /// delivery's signature; compared in constant time.
    pub fn verify(&self, id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(id, timestamp, body);
        header
            .split(' ')
            .any(|given| crate::access::constant_time_eq(given.as_bytes(), expected.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example (its value was checked here against
    /// Python's hmac module, an implementation independent of ours).
    #[test]
    fn signs_the_specifications_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bm90LXRoaXM= {signature}")
        ));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &signature));
        assert!(!secret.verify("msg_other", 1614265330, body, &signature));
        assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes() {
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!"] {
            assert_eq!(
                WebhookSecret::parse(bad),
                Err(SecretError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(WebhookSecret::parse("whsec_"), Err(SecretError::Length));
        assert_eq!(WebhookSecret::parse("whsec_AAAA"), Err(SecretError::Length));
        let made = WebhookSecret::generate().unwrap();
        assert_eq!(WebhookSecret::parse(&made.expose()).unwrap(), made);
        assert_ne!(WebhookSecret::generate().unwrap(), made, "random");
    }
}
