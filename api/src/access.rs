//! Who may call what: API tokens with roles, the one table of role × route, and a rate limit
//! per token.
//!
//! A token is kept only as its SHA-256 (`api.tokens` may give that, `token_sha256`, so the
//! plain token never sits in the configuration). A bearer is hashed and compared with every
//! token's hash without an early exit. With no token configured the API is open (it then
//! listens on loopback only: the configuration refuses anything else).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use std::net::SocketAddr;

use aws_lc_rs::digest;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use roundtable_conference::RoomId;
use serde::{Deserialize, Serialize};

use crate::{ApiAction, ApiError, AppState};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: webhooks, trunks, tokens, reload, the configuration.
    Admin,
    /// Everything about rooms and participants, and reading recordings.
    Operator,
    /// Reading: rooms, trunks, events, the recordings' list and manifests (not their audio).
    Viewer,
    /// Recordings: list, get (audio too), verify, holds.
    Recordings,
}

impl Role {
    /// Every role, in the table's column order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Recordings];

    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Recordings => "recordings",
        }
    }

    /// Reads `admin`, `operator`, `viewer` or `recordings`.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, token or not (`/live`, `/ready`).
    Open,
    /// Any configured token, whatever its role (and `/metrics` also `api.metrics_token`).
    AnyToken,
    /// Tokens of these roles.
    Roles(&'static [Role]),
}

use Role::{Admin as A, Operator as O, Recordings as R, Viewer as V};

/// The role × route table: every route the API serves. A route missing here is refused to
/// every token (a test holds this table to the OpenAPI document's routes and to the README's).
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/live", Access::Open),
    ("GET", "/ready", Access::Open),
    ("GET", "/health", Access::AnyToken),
    ("GET", "/healthz", Access::AnyToken),
    ("GET", "/health/detailed", Access::AnyToken),
    ("GET", "/metrics", Access::AnyToken),
    ("GET", "/openapi.json", Access::AnyToken),
    ("GET", "/v1/rooms", Access::Roles(&[A, O, V])),
    ("GET", "/v1/rooms/{room}", Access::Roles(&[A, O, V])),
    ("PUT", "/v1/rooms/{room}", Access::Roles(&[A, O])),
    ("PATCH", "/v1/rooms/{room}", Access::Roles(&[A, O])),
    ("DELETE", "/v1/rooms/{room}", Access::Roles(&[A, O])),
    ("POST", "/v1/rooms/{room}/recording", Access::Roles(&[A, O])),
    (
        "POST",
        "/v1/rooms/{room}/participants",
        Access::Roles(&[A, O]),
    ),
    (
        "PATCH",
        "/v1/rooms/{room}/participants/{leg}",
        Access::Roles(&[A, O]),
    ),
    (
        "DELETE",
        "/v1/rooms/{room}/participants/{leg}",
        Access::Roles(&[A, O]),
    ),
    (
        "POST",
        "/v1/rooms/{room}/participants/{leg}/move",
        Access::Roles(&[A, O]),
    ),
    ("GET", "/v1/trunks", Access::Roles(&[A, O, V])),
    ("GET", "/v1/recordings", Access::Roles(&[A, O, V, R])),
    (
        "GET",
        "/v1/recordings/{room}/{start}",
        Access::Roles(&[A, O, V, R]),
    ),
    (
        "GET",
        "/v1/recordings/{room}/{start}/{object}",
        Access::Roles(&[A, O, R]),
    ),
    ("GET", "/v1/events", Access::Roles(&[A, O, V])),
    ("GET", "/v1/events/ws", Access::Roles(&[A, O, V])),
    ("GET", "/v1/webhooks", Access::Roles(&[A])),
    ("POST", "/v1/webhooks", Access::Roles(&[A])),
    ("GET", "/v1/webhooks/{name}", Access::Roles(&[A])),
    ("DELETE", "/v1/webhooks/{name}", Access::Roles(&[A])),
    ("GET", "/v1/admin/config", Access::Roles(&[A])),
];

/// Who may call `method` on the route `template` (as the router matched it, `{*object}`
/// written `{object}`); `None` for a route the table lacks.
pub fn access(method: &str, template: &str) -> Option<Access> {
    let template = template.replace("{*", "{");
    ROUTES
        .iter()
        .find(|(m, t, _)| *m == method && *t == template)
        .map(|(_, _, access)| *access)
}

impl Access {
    /// Whether a token of `role` may call the route.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Open | Access::AnyToken => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }

    /// The roles, by name, for the document's `x-roles`.
    pub fn role_names(self) -> Vec<&'static str> {
        match self {
            Access::Open => vec![],
            Access::AnyToken => Role::ALL.iter().map(|r| r.as_str()).collect(),
            Access::Roles(roles) => roles.iter().map(|r| r.as_str()).collect(),
        }
    }
}

/// A configured token: its name (in the audit trail and the ledger), role and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    sha256: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a token.
pub fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl ApiToken {
    /// A token given in plain.
    pub fn new(name: &str, role: Role, token: &str) -> ApiToken {
        ApiToken {
            name: name.to_string(),
            role,
            sha256: sha256(token),
        }
    }

    /// A token given as the hex of its SHA-256 (64 hex digits).
    pub fn from_sha256(name: &str, role: Role, hex: &str) -> Option<ApiToken> {
        if hex.len() != 64 {
            return None;
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ApiToken {
            name: name.to_string(),
            role,
            sha256,
        })
    }
}

/// The configured tokens, `api.metrics_token`, and each token's request budget.
#[derive(Debug)]
pub struct Tokens {
    tokens: Vec<ApiToken>,
    metrics: Option<[u8; 32]>,
    /// Requests a second per token (and twice that in a burst); 0: no limit.
    rate_per_s: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token is configured: everyone is admin (on loopback).
    Anyone,
    /// A configured token.
    Token(ApiToken),
    /// `api.metrics_token` (good for `/metrics` only).
    Metrics,
    /// No bearer, or not a configured one.
    Unknown,
}

impl Tokens {
    /// `tokens` (names unique), `metrics` (the plain `api.metrics_token`), `rate_per_s`.
    pub fn new(tokens: Vec<ApiToken>, metrics: Option<&str>, rate_per_s: u32) -> Tokens {
        Tokens {
            tokens,
            metrics: metrics.map(sha256),
            rate_per_s,
            buckets: Mutex::default(),
        }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Who `bearer` is: every hash is compared, without an early exit.
    pub fn identify(&self, bearer: Option<&str>) -> Caller {
        if !self.enabled() {
            return Caller::Anyone;
        }
        let Some(bearer) = bearer else {
            return Caller::Unknown;
        };
        let given = sha256(bearer);
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&given, &token.sha256) {
                found = Some(token);
            }
        }
        match (found, &self.metrics) {
            (Some(token), _) => Caller::Token(token.clone()),
            (None, Some(metrics)) if constant_time_eq(&given, metrics) => Caller::Metrics,
            _ => Caller::Unknown,
        }
    }

    /// Takes one request from `name`'s budget: `Err(seconds)` to wait when it is spent.
    pub fn spend(&self, name: &str, now: Instant) -> Result<(), u64> {
        if self.rate_per_s == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate_per_s);
        let burst = 2.0 * rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(name.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// The guard of every route: who the caller is, whether its role may call the route, its
/// request budget; then, for every request that is not a GET (refused or not), the
/// `api_action` audit entry naming the token. The handler finds the [`Caller`] among the
/// request's extensions (the recording ledger names the token).
pub(crate) async fn guard(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |m| m.as_str().to_string(),
    );
    let headers = request.headers();
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
    let caller = state.tokens.identify(bearer.or(subprotocol));
    // A method the route lacks: any token reaches axum's 405.
    let access = access(method.as_str(), &route).unwrap_or(Access::AnyToken);
    let refused = match (&caller, access) {
        (_, Access::Open) | (Caller::Anyone, _) => None,
        (Caller::Unknown, _) => Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )),
        (Caller::Metrics, _) if route == "/metrics" => None,
        (Caller::Metrics, _) => Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api.metrics_token is for /metrics only".into(),
        )),
        (Caller::Token(token), access) if !access.allows(token.role) => Some(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("the {} role may not {method} {route}", token.role.as_str()),
        )),
        (Caller::Token(token), _) => {
            state
                .tokens
                .spend(&token.name, Instant::now())
                .err()
                .map(|wait| ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: "over api.rate_limit_per_s for this token".into(),
                    retry_after_s: Some(wait),
                })
        }
    };
    let audited = (method != Method::GET).then(|| {
        let path = request.uri().path().to_string();
        let source = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
        (path, source)
    });
    let token = match &caller {
        Caller::Token(token) => Some(token.name.clone()),
        Caller::Metrics => Some("api.metrics_token".to_string()),
        Caller::Anyone | Caller::Unknown => None,
    };
    request.extensions_mut().insert(caller);
    let response = match refused {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    };
    if let Some((path, source)) = audited {
        let room = path
            .strip_prefix("/v1/rooms/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|room| RoomId::parse(room).ok());
        state.control.audit(ApiAction {
            token,
            action: format!("{method} {route}"),
            path,
            room,
            source,
            status: response.status().as_u16(),
        });
    }
    response
}

/// Compares without an early exit, so timing does not reveal how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_known_by_their_hash_and_budgets_refill() {
        let hex: String = sha256("v-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tokens = Tokens::new(
            vec![
                ApiToken::new("ops", Role::Operator, "o-token"),
                ApiToken::from_sha256("wall", Role::Viewer, &hex).unwrap(),
            ],
            Some("m-token"),
            1,
        );
        assert!(
            matches!(tokens.identify(Some("o-token")), Caller::Token(t) if t.role == Role::Operator)
        );
        assert!(matches!(tokens.identify(Some("v-token")), Caller::Token(t) if t.name == "wall"));
        assert_eq!(tokens.identify(Some("m-token")), Caller::Metrics);
        assert_eq!(tokens.identify(Some("nope")), Caller::Unknown);
        assert_eq!(tokens.identify(None), Caller::Unknown);
        assert_eq!(Tokens::new(vec![], None, 0).identify(None), Caller::Anyone);
        assert!(ApiToken::from_sha256("x", Role::Admin, "abc").is_none());
        assert!(
            !format!("{:?}", tokens).contains("sha256"),
            "hashes stay out of logs"
        );

        let t0 = Instant::now();
        assert_eq!(tokens.spend("ops", t0), Ok(()));
        assert_eq!(tokens.spend("ops", t0), Ok(()), "a burst of two at 1/s");
        assert_eq!(tokens.spend("ops", t0), Err(1));
        assert_eq!(
            tokens.spend("wall", t0),
            Ok(()),
            "each token has its own budget"
        );
        assert_eq!(
            tokens.spend("ops", t0 + std::time::Duration::from_millis(1100)),
            Ok(())
        );
    }

    #[test]
    fn the_table_says_who_may_call_what() {
        let wav = access("GET", "/v1/recordings/{room}/{start}/{*object}").unwrap();
        assert!(wav.allows(Role::Recordings) && !wav.allows(Role::Viewer));
        assert!(
            !access("POST", "/v1/webhooks")
                .unwrap()
                .allows(Role::Operator)
        );
        assert_eq!(access("GET", "/live"), Some(Access::Open));
        assert_eq!(access("POST", "/v1/nothing"), None);
    }
}
