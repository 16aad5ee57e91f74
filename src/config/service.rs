//! The service's own small sections: `[api]`, `[health]`, `[shutdown]`, `[log]` and
//! `[testing]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret, bounded, socket_addr};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    listen: String,
    token: String,
    metrics_token: String,
    rate_limit_per_s: i64,
    tls_cert: String,
    tls_key: String,
    #[serde(default)]
    tokens: Vec<RawApiToken>,
}

/// One `[[api.tokens]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiToken {
    name: String,
    role: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    token_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    drain_s: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    level: String,
    format: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTesting {
    spool_fsync_delay_ms: i64,
    mixer_stall_ms: i64,
    outbox_max_kib: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    tick_lateness_ms: i64,
    disk_free_min_mib: i64,
    storage_probe_s: i64,
}

/// `[health]`: where `/health` turns `degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// `health.tick_lateness_ms`: the mixer ticks' lateness p99 (over the last 10 s) above
    /// which the service is degraded.
    pub tick_lateness: Duration,
    /// `health.disk_free_min_mib`, in bytes: less free space under `storage.path` is degraded.
    pub disk_free_min: u64,
    /// `health.storage_probe_s`: between two storage round trips.
    pub storage_probe: Duration,
}

impl HealthConfig {
    /// Checks `[health]`.
    pub(super) fn validate(raw: RawHealth) -> Result<HealthConfig, ConfigError> {
        Ok(HealthConfig {
            tick_lateness: Duration::from_millis(bounded(
                "health.tick_lateness_ms",
                raw.tick_lateness_ms,
                1..=10_000,
                "must be between 1 and 10000",
            )?),
            disk_free_min: bounded(
                "health.disk_free_min_mib",
                raw.disk_free_min_mib,
                0..=1 << 30,
                "must be between 0 and 1073741824",
            )? << 20,
            storage_probe: Duration::from_secs(bounded(
                "health.storage_probe_s",
                raw.storage_probe_s,
                5..=3600,
                "must be between 5 and 3600",
            )?),
        })
    }
}

/// `[api]`, checked.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// REST API address.
    pub listen: SocketAddr,
    /// `api.token` (an admin named `api.token`) and `[[api.tokens]]`; only their hashes are
    /// kept.
    pub tokens: Vec<roundtable_api::ApiToken>,
    /// `api.metrics_token`: good for `GET /metrics` only.
    pub metrics_token: Option<Secret>,
    /// `api.rate_limit_per_s`: requests a second per token (0: none).
    pub rate_limit_per_s: u32,
    /// `api.tls_cert` and `api.tls_key`, loaded: the API speaks HTTPS only.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl ApiConfig {
    /// Checks `[api]`: tokens with valid roles and unique names, one is required off
    /// loopback, and a certificate with its key or neither.
    pub(super) fn validate(raw: RawApi) -> Result<ApiConfig, ConfigError> {
        use roundtable_api::{ApiToken, Role};
        let listen = socket_addr("api.listen", &raw.listen)?;
        let mut tokens = Vec::new();
        if !raw.token.is_empty() {
            tokens.push(ApiToken::new("api.token", Role::Admin, &raw.token));
        }
        for entry in &raw.tokens {
            let bad = |field: &str, reason: String| {
                ConfigError::new(
                    &format!("api.tokens.{field}"),
                    format!("token {:?}: {reason}", entry.name),
                )
            };
            let name_ok = (1..=64).contains(&entry.name.len())
                && entry
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok {
                return Err(bad("name", "is not [A-Za-z0-9_.-]{1,64}".into()));
            }
            if tokens.iter().any(|t: &ApiToken| t.name == entry.name) {
                return Err(bad(
                    "name",
                    "is used twice (api.token is the name of api.token)".into(),
                ));
            }
            let role = Role::parse(&entry.role).ok_or_else(|| {
                bad(
                    "role",
                    format!(
                        "{:?} is not admin, operator, viewer or recordings",
                        entry.role
                    ),
                )
            })?;
            let token = match (entry.token.is_empty(), entry.token_sha256.is_empty()) {
                (false, true) => ApiToken::new(&entry.name, role, &entry.token),
                (true, false) => ApiToken::from_sha256(
                    &entry.name,
                    role,
                    &entry.token_sha256.to_ascii_lowercase(),
                )
                .ok_or_else(|| bad("token_sha256", "is not 64 hex digits".into()))?,
                _ => {
                    return Err(bad(
                        "token",
                        "give token or token_sha256, one of them".into(),
                    ));
                }
            };
            tokens.push(token);
        }
        if !listen.ip().is_loopback() && tokens.is_empty() {
            return Err(ConfigError::new(
                "api.token",
                "required when api.listen is not a loopback address (or [[api.tokens]])",
            ));
        }
        let tls = match (raw.tls_cert.is_empty(), raw.tls_key.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let loaded = roundtable_sip::transport::tls_config(
                    raw.tls_cert.as_ref(),
                    raw.tls_key.as_ref(),
                )
                .map_err(|e| ConfigError::new("api.tls_cert", e))?;
                let mut config = (*loaded).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(std::sync::Arc::new(config))
            }
            (true, false) => {
                return Err(ConfigError::new(
                    "api.tls_cert",
                    "required with api.tls_key",
                ));
            }
            (false, true) => {
                return Err(ConfigError::new(
                    "api.tls_key",
                    "required with api.tls_cert",
                ));
            }
        };
        Ok(ApiConfig {
            listen,
            tokens,
            metrics_token: Some(raw.metrics_token)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            rate_limit_per_s: bounded(
                "api.rate_limit_per_s",
                raw.rate_limit_per_s,
                0..=1_000_000,
                "must be between 0 and 1000000",
            )? as u32,
            tls,
        })
    }
}

/// `shutdown.drain_s`: how long shutdown waits for calls to end before sending BYE.
pub(super) fn drain(raw: &RawShutdown) -> Result<Duration, ConfigError> {
    u64::try_from(raw.drain_s)
        .map(Duration::from_secs)
        .map_err(|_| ConfigError::new("shutdown.drain_s", "must not be negative"))
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`, checked.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Log level filter.
    pub level: String,
    /// Log format.
    pub format: LogFormat,
}

impl LogConfig {
    /// Checks `[log]`.
    pub(super) fn validate(raw: RawLog) -> Result<LogConfig, ConfigError> {
        let level = raw.level.to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "{:?} is not one of trace, debug, info, warn, error",
                    raw.level
                ),
            ));
        }
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        Ok(LogConfig { level, format })
    }
}

/// Test hooks, in one place so that no production path reads one by accident: each is off at
/// its default, and [`Testing::hooks_set`] names those that are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Testing {
    /// A pause before each new recording's first fsync (a slow disk), in the blocking pool.
    pub spool_fsync_delay: Duration,
    /// The first mixer thread stops ticking this long at start (a stalled thread `/live`
    /// must see).
    pub mixer_stall: Duration,
    /// The event journal (the webhooks' outbox) holds this many bytes, in segments of a
    /// quarter of it, instead of `webhooks.outbox_max_mib` in 16 MiB segments (0: unset): a
    /// full outbox within a few hundred events.
    pub outbox_max: u64,
}

impl Testing {
    /// Checks `[testing]`.
    pub(super) fn validate(raw: RawTesting) -> Result<Testing, ConfigError> {
        let delay_ms = bounded(
            "testing.spool_fsync_delay_ms",
            raw.spool_fsync_delay_ms,
            0..=60_000,
            "must be between 0 and 60000",
        )?;
        let stall_ms = bounded(
            "testing.mixer_stall_ms",
            raw.mixer_stall_ms,
            0..=60_000,
            "must be between 0 and 60000",
        )?;
        let outbox_kib = bounded(
            "testing.outbox_max_kib",
            raw.outbox_max_kib,
            0..=1 << 20,
            "must be between 0 and 1048576",
        )?;
        Ok(Testing {
            spool_fsync_delay: Duration::from_millis(delay_ms),
            mixer_stall: Duration::from_millis(stall_ms),
            outbox_max: outbox_kib << 10,
        })
    }

    /// The keys of the hooks that are set, for the warning at start.
    pub fn hooks_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if !self.spool_fsync_delay.is_zero() {
            set.push("testing.spool_fsync_delay_ms");
        }
        if !self.mixer_stall.is_zero() {
            set.push("testing.mixer_stall_ms");
        }
        if self.outbox_max != 0 {
            set.push("testing.outbox_max_kib");
        }
        set
    }
}
