//! Configuration: embedded defaults < TOML file (`--config`) < environment
//! (`ROUNDTABLE_<SECTION>__<KEY>`) < command-line flags, then validated into [`Config`].
//!
//! Every error names the key as written in the file (`api.listen`) and the reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use roundtable_conference::RoomId;
use roundtable_conference::settings::RoomSpec;
use serde::Deserialize;
use thiserror::Error;

mod audio;
mod dialplan;
mod media;
mod recording;
mod service;
mod sip;
mod storage;
mod trunks;
mod webhooks;

pub use audio::AudioConfig;
pub use dialplan::{DialAction, DialRule};
pub use media::MediaConfig;
pub use recording::RecordingConfig;
pub use roundtable_conference::Secret;
pub use service::{ApiConfig, HealthConfig, LogConfig, LogFormat, Testing};
pub use sip::SipConfig;
pub use storage::StorageConfig;
pub use trunks::Trunk;
pub use webhooks::WebhooksConfig;

/// The embedded defaults: `roundtable serve` with no arguments runs on these.
pub const DEFAULTS: &str = r#"
[sip]
listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
max_calls = 1000
timer_t1_ms = 500
answer_delay_ms = 0
session_expires_s = 1800
min_session_expires_s = 90
options_ping_s = 0
tcp_idle_timeout_s = 300
max_dialouts = 100
dialout_cps = 10
dns_servers = []
allow_refer_out = false
allow = []
trusted_proxies = []
tls_cert = ""
tls_key = ""
tls_ca = ""

[sip.auth]
required = false
realm = "roundtable"
users = []
algorithms = ["SHA-256", "MD5"]

[sip.limits]
requests_per_second = 50
burst = 200
hard_limit = 500
trusted_requests_per_second = 1000
trusted_burst = 2000
trusted_hard_limit = 5000

[sip.lockout]
max_failures = 5
window_s = 300
backoff_s = 30

[media]
rtp_ports = "16384-32767"
public_ip = ""
max_legs_per_room = 200
inactivity_timeout_s = 30
codecs = ["opus", "g722", "pcmu", "pcma"]
jitter_min_ms = 20
jitter_max_ms = 200
srtp = "optional"
srtp_required_over_tls = false

[audio]
rate = 16000
aec = "auto"
aec_backend = "sonora"
noise_suppression = true
agc = true
limiter = true
top_k = 4
mixer_threads = 0

[api]
listen = "127.0.0.1:8080"
token = ""
metrics_token = ""
rate_limit_per_s = 50
tls_cert = ""
tls_key = ""

[storage]
backend = "local"
path = "./roundtable-data"
spool_quota_mib = 1024

[storage.s3]
endpoint = ""
region = "us-east-1"
bucket = ""
prefix = ""
path_style = true
access_key = ""
secret_key = ""
part_size_mib = 5
sse = ""
kms_key_id = ""
object_lock_mode = ""
retention_days = 0

[recording]
auto_start = false
mode = "mixed"
signing_key = ""
consent_notice = true
include_whispers = false
consent_prompt = ""

[webhooks]
outbox_max_mib = 256
max_age_s = 86400
backoff_max_s = 300

[shutdown]
drain_s = 0

[log]
level = "info"
format = "text"

[testing]
spool_fsync_delay_ms = 0
mixer_stall_ms = 0
outbox_max_kib = 0

[health]
tick_lateness_ms = 20
disk_free_min_mib = 1024
storage_probe_s = 30

[room]
pin = ""
moderator_pin = ""
join_leave_tones = true
alone_prompt = true
wait_for_moderator = false
end_with_moderator = false
"#;

/// A configuration problem, naming the key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The key as written in the file, e.g. `api.listen`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    fn new(key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    dialplan: Vec<dialplan::RawRule>,
    #[serde(default)]
    rooms: Vec<crate::rooms::RoomEntry>,
    #[serde(default)]
    trunks: Vec<trunks::RawTrunk>,
    #[serde(default)]
    room: RoomSpec,
    sip: sip::RawSip,
    media: media::RawMedia,
    audio: audio::RawAudio,
    api: service::RawApi,
    storage: storage::RawStorage,
    recording: recording::RawRecording,
    webhooks: webhooks::RawWebhooks,
    shutdown: service::RawShutdown,
    log: service::RawLog,
    testing: service::RawTesting,
    health: service::RawHealth,
}

/// The validated configuration: one checked type per section.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[sip]`.
    pub sip: SipConfig,
    /// `[[dialplan]]`, in order; empty means "the user part is the room".
    pub dialplan: Vec<DialRule>,
    /// `[[trunks]]`, in order.
    pub trunks: Vec<Trunk>,
    /// `[[rooms]]` by id.
    pub rooms: HashMap<RoomId, RoomSpec>,
    /// `[room]`: defaults for every room.
    pub room_defaults: RoomSpec,
    /// `[media]`.
    pub media: MediaConfig,
    /// `[audio]`.
    pub audio: AudioConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[recording]`.
    pub recording: RecordingConfig,
    /// `[webhooks]`: the event outbox's bounds.
    pub webhooks: WebhooksConfig,
    /// `shutdown.drain_s`: how long shutdown waits for calls to end before sending BYE.
    pub drain: Duration,
    /// `[log]`.
    pub log: LogConfig,
    /// `[health]`.
    pub health: HealthConfig,
    /// `[testing]`: faults tests inject. Production leaves them at zero; the service warns at
    /// start when any is set.
    pub testing: Testing,
    /// Everything merged (defaults, file, environment, command line) as the file writes it,
    /// secrets redacted: what `GET /v1/admin/config` shows.
    pub effective: serde_json::Value,
}

/// Command-line values that override the file and environment (for the common keys).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `sip.listen`.
    pub sip_listen: Option<Vec<String>>,
    /// `api.listen`.
    pub api_listen: Option<String>,
    /// `storage.path`.
    pub storage_path: Option<String>,
    /// `recording.auto_start`.
    pub auto_record: Option<bool>,
    /// `log.level`.
    pub log_level: Option<String>,
}

/// The list keys the environment can set, as comma-separated values
/// (`ROUNDTABLE_SIP__LISTEN=udp:127.0.0.1:15060,tcp:127.0.0.1:15060`), so that a container or a
/// test can move the listening sockets without a file. An empty value is an empty list. Lists of
/// tables (`sip.auth.users`, `[[rooms]]`, `[[dialplan]]`, `[[trunks]]`) are set in the file only.
pub const ENV_LIST_KEYS: &[&str] = &[
    "sip.listen",
    "sip.allow",
    "sip.dns_servers",
    "sip.trusted_proxies",
    "sip.auth.algorithms",
    "media.codecs",
];

/// The environment variable that sets `key`: `sip.listen` is `ROUNDTABLE_SIP__LISTEN`.
pub fn env_name(key: &str) -> String {
    format!("ROUNDTABLE_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// A comma-separated list from the environment, each entry trimmed; empty entries are dropped,
/// so an empty value is an empty list.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(String::from)
        .collect()
}

/// Loads and validates. `env` is the environment to read (`std::env::vars()` in production).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::new(
                "--config",
                format!("{} is not a readable file", path.display()),
            ));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let mut lists = Vec::new();
    let mut scalars = config::Map::new();
    for (name, value) in env
        .into_iter()
        .filter(|(k, _)| k.starts_with("ROUNDTABLE_"))
    {
        match ENV_LIST_KEYS.iter().find(|key| env_name(key) == name) {
            Some(key) => lists.push((*key, value)),
            None => {
                scalars.insert(name, value);
            }
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix("ROUNDTABLE")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(scalars)),
    );
    let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
               key: &str,
               v: Option<config::Value>| match v {
        Some(v) => b
            .set_override(key, v)
            .map_err(|e| ConfigError::new(key, e.to_string())),
        None => Ok(b),
    };
    for (key, value) in lists {
        builder = set(builder, key, Some(config::Value::from(split_list(&value))))?;
    }
    builder = set(
        builder,
        "sip.listen",
        overrides.sip_listen.clone().map(config::Value::from),
    )?;
    builder = set(
        builder,
        "api.listen",
        overrides.api_listen.clone().map(config::Value::from),
    )?;
    builder = set(
        builder,
        "storage.path",
        overrides.storage_path.clone().map(config::Value::from),
    )?;
    builder = set(
        builder,
        "recording.auto_start",
        overrides.auto_record.map(config::Value::from),
    )?;
    builder = set(
        builder,
        "log.level",
        overrides.log_level.clone().map(config::Value::from),
    )?;
    let merged = builder.build().map_err(|e| from_config_error(&e))?;
    let effective: serde_json::Value = merged
        .clone()
        .try_deserialize()
        .unwrap_or(serde_json::Value::Null);
    let raw: Raw = merged
        .try_deserialize()
        .map_err(|e| from_config_error(&e))?;
    let mut config = validate(raw)?;
    config.effective = redacted(effective);
    Ok(config)
}

/// Keys whose values are secrets: `GET /v1/admin/config` writes them `<redacted>`.
const SECRET_KEYS: &[&str] = &[
    "token",
    "token_sha256",
    "metrics_token",
    "secret",
    "secret_key",
    "access_key",
    "password",
    "pin",
    "moderator_pin",
];

/// `value` with every non-empty secret (by its key, at any depth) written `<redacted>`.
fn redacted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let secret = SECRET_KEYS.contains(&key.as_str())
                        && !matches!(&value, Value::String(s) if s.is_empty())
                        && !value.is_null();
                    let value = if secret {
                        Value::String("<redacted>".into())
                    } else {
                        redacted(value)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        other => other,
    }
}

/// Turns the config crate's message into our key + reason form.
fn from_config_error(error: &config::ConfigError) -> ConfigError {
    let text = error.to_string();
    // Unknown keys: serde says "unknown field `x`, expected ..." and config adds "for key `sec`".
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let section = text
            .rsplit("for key `")
            .next()
            .filter(|_| text.contains("for key `"));
        let section = section.map(|s| s.trim_end_matches('`').trim_end_matches("` ").to_string());
        let key = match section {
            Some(s) if !s.is_empty() => format!("{}.{field}", s.trim_end_matches('`')),
            _ => field.to_string(),
        };
        return ConfigError::new(&key, "unknown key");
    }
    if let Some(idx) = text.find("for key `") {
        let key = text[idx + 9..].split('`').next().unwrap_or_default();
        return ConfigError::new(key, text[..idx].trim().to_string());
    }
    ConfigError::new("(file)", text)
}

/// A number in `range`, or the error naming `key` with `reason`.
fn bounded(
    key: &str,
    value: i64,
    range: std::ops::RangeInclusive<u64>,
    reason: &str,
) -> Result<u64, ConfigError> {
    u64::try_from(value)
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| ConfigError::new(key, reason))
}

fn positive(key: &str, value: i64) -> Result<usize, ConfigError> {
    usize::try_from(value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ConfigError::new(key, "must be at least 1"))
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::new(key, format!("{text:?} is not HOST:PORT")))?;
    let port: u32 = port
        .parse()
        .map_err(|_| ConfigError::new(key, format!("port {port:?} is not a number")))?;
    if port > 65535 {
        return Err(ConfigError::new(
            key,
            format!("port {port} out of range (0-65535)"),
        ));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| ConfigError::new(key, format!("{host:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port as u16))
}

/// Checks each section on its own; rooms are checked against `media.max_legs_per_room`, and
/// the signing key defaults into `storage.path`.
fn validate(raw: Raw) -> Result<Config, ConfigError> {
    let media = MediaConfig::validate(raw.media)?;
    let storage = StorageConfig::validate(raw.storage)?;
    let recording = RecordingConfig::validate(raw.recording, &storage.path)?;
    let (rooms, room_defaults) = rooms(raw.rooms, raw.room, media.max_legs_per_room)?;
    Ok(Config {
        sip: SipConfig::validate(raw.sip)?,
        dialplan: dialplan::validate(&raw.dialplan)?,
        trunks: trunks::validate(raw.trunks)?,
        rooms,
        room_defaults,
        media,
        audio: AudioConfig::validate(raw.audio)?,
        api: ApiConfig::validate(raw.api)?,
        storage,
        recording,
        webhooks: WebhooksConfig::validate(raw.webhooks)?,
        drain: service::drain(&raw.shutdown)?,
        log: LogConfig::validate(raw.log)?,
        health: HealthConfig::validate(raw.health)?,
        testing: Testing::validate(raw.testing)?,
        effective: serde_json::Value::Null,
    })
}

/// `[[rooms]]` by id and `[room]`, each checked as the API checks a room.
fn rooms(
    entries: Vec<crate::rooms::RoomEntry>,
    defaults: RoomSpec,
    max_legs_per_room: usize,
) -> Result<(HashMap<RoomId, RoomSpec>, RoomSpec), ConfigError> {
    if let Some((field, reason)) = defaults.problem(max_legs_per_room) {
        return Err(ConfigError::new(&format!("room.{field}"), reason));
    }
    let mut rooms = HashMap::new();
    for entry in entries {
        if let Some((field, reason)) = entry.spec.problem(max_legs_per_room) {
            return Err(ConfigError::new(
                &format!("rooms.{field}"),
                format!("room {}: {reason}", entry.id),
            ));
        }
        if rooms.insert(entry.id.clone(), entry.spec).is_some() {
            return Err(ConfigError::new(
                "rooms.id",
                format!("room {} is defined twice", entry.id),
            ));
        }
    }
    Ok((rooms, defaults))
}

#[cfg(test)]
mod docs_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &file,
            format!("[storage]\npath = {:?}\n{toml}", data.display().to_string()),
        )
        .unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        load(Some(&file), env, &Overrides::default())
    }

    #[test]
    fn defaults_are_valid() {
        let c = load_toml("", &[]).unwrap();
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.media.rtp_ports.pairs(), 8192);
        assert_eq!(c.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.media.inactivity_timeout, Duration::from_secs(30));
    }

    #[test]
    fn tokens_are_kept_as_hashes_with_their_roles() {
        let c = load_toml(
            "[api]\ntoken = \"hunter2\"\nmetrics_token = \"scrape-me\"\n\
             [[api.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken = \"op-secret\"\n\
             [[api.tokens]]\nname = \"idx\"\nrole = \"recordings\"\n\
             token_sha256 = \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\"\n",
            &[],
        )
        .unwrap();
        let names: Vec<(&str, roundtable_api::Role)> = c
            .api
            .tokens
            .iter()
            .map(|t| (t.name.as_str(), t.role))
            .collect();
        use roundtable_api::Role::*;
        assert_eq!(
            names,
            [("api.token", Admin), ("ops", Operator), ("idx", Recordings)]
        );
        let debug = format!("{c:?}");
        for secret in ["hunter2", "op-secret", "scrape-me"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        let shown = c.effective.to_string();
        for secret in ["hunter2", "op-secret", "scrape-me", "9F86D081"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(c.effective["api"]["tokens"][0]["token"], "<redacted>");
        assert_eq!(c.effective["api"]["tokens"][0]["name"], "ops");
        assert_eq!(
            c.effective["api"]["tls_cert"], "",
            "an empty value stays empty"
        );
        assert_eq!(
            c.effective["sip"]["max_calls"], 1000,
            "the rest is as configured"
        );
        let tokens = roundtable_api::Tokens::new(c.api.tokens.clone(), None, 0);
        assert!(
            matches!(tokens.identify(Some("test")), roundtable_api::Caller::Token(t) if t.name == "idx"),
            "the hash of \"test\", in upper case hex"
        );
        for (toml, key) in [
            (
                "[[api.tokens]]\nname = \"x\"\nrole = \"boss\"\ntoken = \"t\"",
                "api.tokens.role",
            ),
            (
                "[[api.tokens]]\nname = \"x\"\nrole = \"viewer\"",
                "api.tokens.token",
            ),
            (
                "[[api.tokens]]\nname = \"x\"\nrole = \"viewer\"\ntoken = \"a\"\ntoken_sha256 = \"b\"",
                "api.tokens.token",
            ),
            (
                "[[api.tokens]]\nname = \"x\"\nrole = \"viewer\"\ntoken_sha256 = \"abc\"",
                "api.tokens.token_sha256",
            ),
            (
                "[api]\ntoken = \"t\"\n[[api.tokens]]\nname = \"api.token\"\nrole = \"viewer\"\ntoken = \"u\"",
                "api.tokens.name",
            ),
            ("[api]\ntls_cert = \"/nonexistent.pem\"", "api.tls_key"),
            (
                "[api]\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"",
                "api.tls_cert",
            ),
            ("[api]\nlisten = \"0.0.0.0:8080\"", "api.token"),
        ] {
            assert_eq!(load_toml(toml, &[]).unwrap_err().key, key, "{toml}");
        }
    }

    #[test]
    fn env_overrides_scalars() {
        let c = load_toml(
            "",
            &[
                ("ROUNDTABLE_API__LISTEN", "127.0.0.1:9999"),
                ("ROUNDTABLE_RECORDING__AUTO_START", "true"),
                ("ROUNDTABLE_SIP__MAX_CALLS", "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.api.listen.port(), 9999);
        assert!(c.recording.auto_start);
        assert_eq!(c.sip.max_calls, 5);
    }

    #[test]
    fn env_sets_lists_comma_separated() {
        let env = [
            (
                "ROUNDTABLE_SIP__LISTEN",
                "udp:127.0.0.1:15060, tcp:127.0.0.1:15060",
            ),
            ("ROUNDTABLE_SIP__ALLOW", "10.0.0.0/8,127.0.0.1"),
            ("ROUNDTABLE_MEDIA__CODECS", "pcma"),
            ("ROUNDTABLE_SIP__AUTH__ALGORITHMS", "MD5"),
        ];
        let c = load_toml("[sip]\nlisten = [\"udp:0.0.0.0:5070\"]", &env).unwrap();
        let listen: Vec<_> = c.sip.listen.iter().map(|l| (l.transport, l.addr)).collect();
        let addr: SocketAddr = "127.0.0.1:15060".parse().unwrap();
        assert_eq!(
            listen,
            [
                (roundtable_sip::endpoint::Transport::Udp, addr),
                (roundtable_sip::endpoint::Transport::Tcp, addr),
            ],
            "env beats the file"
        );
        assert_eq!(c.sip.allow.len(), 2);
        assert_eq!(c.media.codecs, [roundtable_media::codec::Codec::Pcma]);
        assert_eq!(c.sip.auth.algorithms.len(), 1);
        let c = load_toml(
            "[sip]\nallow = [\"10.0.0.0/8\"]",
            &[("ROUNDTABLE_SIP__ALLOW", "")],
        );
        assert!(
            c.unwrap().sip.allow.is_empty(),
            "an empty value is an empty list"
        );
        let err = load_toml("", &[("ROUNDTABLE_SIP__LISTEN", "udp:127.0.0.1:99999")]).unwrap_err();
        assert_eq!(err.key, "sip.listen");
        let err = load_toml("", &[("ROUNDTABLE_SIP__LISTEN", "")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: sip.listen: needs at least one socket"
        );
        let flag = Overrides {
            sip_listen: Some(vec!["udp:127.0.0.1:25060".into()]),
            ..Overrides::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!("[storage]\npath = {:?}\n", dir.path().display()),
        )
        .unwrap();
        let env = [(
            "ROUNDTABLE_SIP__LISTEN".to_string(),
            "udp:127.0.0.1:15060".to_string(),
        )];
        let c = load(Some(&file), env, &flag).unwrap();
        assert_eq!(
            c.sip.listen[0].addr.port(),
            25060,
            "the command line beats the environment"
        );
    }

    #[test]
    fn invalid_cases_name_the_key() {
        // (TOML, environment, the key the error must name)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("[api]\nlisten = \"127.0.0.1:70000\"", &[], "api.listen"),
            (
                "[media]\nrtp_ports = \"20000-20000\"",
                &[],
                "media.rtp_ports",
            ),
            ("[api]\nlisten = \"0.0.0.0:8080\"", &[], "api.token"),
            ("[api]\nbogus = 1", &[], "api.bogus"),
            ("[sip]\nlisten = [\"sctp:0.0.0.0:5060\"]", &[], "sip.listen"),
            (
                "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]",
                &[],
                "sip.tls_cert",
            ),
            (
                "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.pem\"",
                &[],
                "sip.tls_cert",
            ),
            ("[sip]\ntls_ca = \"/nonexistent.pem\"", &[], "sip.tls_ca"),
            (
                "[[trunks]]\nname = \"a b\"\nuri = \"sip:p.example\"",
                &[],
                "trunks.name",
            ),
            (
                "[[trunks]]\nname = \"t\"\nuri = \"http://p.example\"",
                &[],
                "trunks.uri",
            ),
            (
                "[[trunks]]\nname = \"t\"\nuri = \"sip:p.example\"\ntransport = \"sctp\"",
                &[],
                "trunks.transport",
            ),
            (
                "[[trunks]]\nname = \"t\"\nuri = \"sip:p.example\"",
                &[],
                "trunks.username",
            ),
            (
                "[[trunks]]\nname = \"t\"\nuri = \"sip:p.example\"\nusername = \"u\"\nexpires_s = 5",
                &[],
                "trunks.expires_s",
            ),
            (
                "[[trunks]]\nname = \"t\"\nuri = \"sip:p.example\"\nregister = false\n\
                 [[trunks]]\nname = \"t\"\nuri = \"sip:q.example\"\nregister = false",
                &[],
                "trunks.name",
            ),
            (
                "[sip]\ndns_servers = [\"dns.example\"]",
                &[],
                "sip.dns_servers",
            ),
            ("[sip]\nmax_dialouts = 0", &[], "sip.max_dialouts"),
            ("[sip]\ndialout_cps = 20000", &[], "sip.dialout_cps"),
            ("[log]\nformat = \"xml\"", &[], "log.format"),
            ("[audio]\naec = \"sometimes\"", &[], "audio.aec"),
            ("[audio]\ntop_k = -1", &[], "audio.top_k"),
            ("[audio]\nmixer_threads = 1000", &[], "audio.mixer_threads"),
            ("[room]\naec = \"yes\"", &[], "room.aec"),
            (
                "[sip]\nmin_session_expires_s = 0",
                &[],
                "sip.min_session_expires_s",
            ),
            (
                "[sip]\nsession_expires_s = 60",
                &[],
                "sip.session_expires_s",
            ),
            (
                "[sip]\nmin_session_expires_s = 120\nsession_expires_s = 100",
                &[],
                "sip.session_expires_s",
            ),
            ("", &[("ROUNDTABLE_AUDIO__AEC", "loud")], "audio.aec"),
            (
                "",
                &[("ROUNDTABLE_SIP__MAX_CALLS", "zero")],
                "sip.max_calls",
            ),
        ];
        for (toml, env, key) in cases {
            let err = load_toml(toml, env).expect_err(toml);
            assert_eq!(err.key, *key, "{toml}: {err}");
        }
    }

    #[test]
    fn trunks_are_read_with_their_next_hop_and_credentials() {
        let toml = "[[trunks]]\nname = \"carrier\"\nuri = \"sip:sip.carrier.example\"\n\
                    transport = \"tcp\"\nusername = \"4420\"\npassword = \"pw\"\n\
                    outbound_proxy = \"sip:192.0.2.7:5080\"\n\
                    [[trunks]]\nname = \"pbx\"\nuri = \"sip:10.0.0.1\"\nregister = false\n";
        let c = load_toml(toml, &[]).unwrap();
        let carrier = &c.trunks[0];
        assert_eq!(carrier.domain, "sip.carrier.example");
        assert_eq!(carrier.next_hop, "sip:192.0.2.7:5080;transport=tcp");
        assert_eq!(carrier.route.as_deref(), Some("<sip:192.0.2.7:5080;lr>"));
        assert_eq!(carrier.from_user, "4420");
        assert_eq!(carrier.registration.unwrap().expires, 3600);
        assert!(
            !format!("{carrier:?}").contains("pw"),
            "no password in logs"
        );
        assert_eq!(
            carrier.request_uri("tel:+15551234567"),
            "sip:+15551234567@sip.carrier.example;user=phone"
        );
        assert!(c.trunks[1].registration.is_none());
        assert!(c.trunks[1].credentials.is_none());
    }

    #[test]
    fn dialplan_rooms_and_lockout() {
        let toml = "[[dialplan]]\nmatch = \"^lobby$\"\naction = \"lobby\"\n[[dialplan]]\nmatch = \"^(\\\\d+)$\"\naction = \"room\"\n\
                    [[rooms]]\nid = \"4242\"\npin = \"1234\"\nmoderator_pin = \"9999\"\n";
        let c = load_toml(toml, &[]).unwrap();
        assert_eq!(c.dialplan.len(), 2);
        assert!(c.dialplan[1].pattern.is_match("4242"));
        assert_eq!(
            c.rooms["4242"].pin.as_ref().map(Secret::expose),
            Some("1234")
        );
        assert_eq!(c.sip.lockout.max_failures, 5);
        let bad = load_toml("[[dialplan]]\nmatch = \"(\"\naction = \"room\"", &[]).unwrap_err();
        assert_eq!(bad.key, "dialplan.match");
        let bad = load_toml("[[rooms]]\nid = \"1\"\npin = \"12a\"", &[]).unwrap_err();
        assert_eq!(bad.key, "rooms.pin");
    }

    #[test]
    fn audio_switches() {
        let c = load_toml("[audio]\naec = \"on\"\nnoise_suppression = false\ntop_k = 0\n[[rooms]]\nid = \"x\"\naec = \"off\"", &[]).unwrap();
        assert_eq!(
            (
                c.audio.processing.aec,
                c.audio.processing.noise_suppression,
                c.audio.processing.top_k
            ),
            (roundtable_mixer::AecMode::On, false, 0)
        );
        assert_eq!(
            c.rooms["x"].aec,
            Some(roundtable_conference::settings::AecSetting::Off)
        );
        let defaults = load_toml("", &[]).unwrap();
        assert_eq!(
            defaults.audio.processing,
            roundtable_mixer::AudioConfig::default()
        );
        assert!(defaults.audio.mixer_threads >= 1);
        let webrtc = load_toml("[audio]\naec_backend = \"webrtc\"", &[]);
        assert_eq!(
            webrtc.is_ok(),
            roundtable_mixer::EchoBackend::WebRtc.available(),
            "{webrtc:?}"
        );
    }

    #[test]
    fn room_defaults_and_overrides() {
        let toml = "[room]\npin = \"1111\"\nmax_participants = 10\nrecord = true\n\
                    [[rooms]]\nid = \"open\"\npin = \"\"\nmax_participants = 3\n";
        let c = load_toml(toml, &[]).unwrap();
        assert_eq!(
            c.room_defaults.pin.as_ref().map(Secret::expose),
            Some("1111")
        );
        assert_eq!(c.room_defaults.max_participants, Some(10));
        assert_eq!(c.room_defaults.record, Some(true));
        assert_eq!(
            c.rooms["open"].pin.as_ref().map(Secret::expose),
            Some(""),
            "explicitly no PIN"
        );
        assert_eq!(c.rooms["open"].record, None, "inherits");
        let bad = load_toml("[room]\nmax_participants = 201", &[]).unwrap_err();
        assert_eq!(bad.key, "room.max_participants");
        let bad = load_toml("[[rooms]]\nid = \"1\"\nmax_participants = 0", &[]).unwrap_err();
        assert_eq!(bad.key, "rooms.max_participants");
        let bad = load_toml("[room]\nvolume = 3", &[]).unwrap_err();
        assert_eq!(bad.key, "room.volume");
        for (toml, key, reason) in [
            (
                "id = \"1\"\nvolume = 3",
                "rooms",
                "room 1: volume: unknown field",
            ),
            (
                "id = \"1\"\nmax_participants = -1",
                "rooms",
                "room 1: max_participants: invalid value",
            ),
            ("id = \"a/b\"", "rooms", "id: \"a/b\" is not"),
            ("pin = \"1\"", "rooms", "id: missing"),
        ] {
            let bad = load_toml(&format!("[[rooms]]\n{toml}"), &[]).unwrap_err();
            assert!(
                bad.key.starts_with(key) && bad.reason.contains(reason),
                "{toml}: {bad}"
            );
        }
    }

    #[test]
    fn unwritable_data_dir_names_storage_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                "[storage]\npath = {:?}\n",
                blocker.join("sub").display().to_string()
            ),
        )
        .unwrap();
        let err = load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "storage.path");
    }
}
