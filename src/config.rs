//! Configuration: embedded defaults < TOML file (`--config`) < environment
//! (`ROUNDTABLE_<SECTION>__<KEY>`) < command-line flags, then validated into [`Config`].
//!
//! Every error names the key as written in the file (`api.listen`) and the reason.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use roundtable_media::ports::PortRange;
use roundtable_sip::endpoint::Transport;
use roundtable_sip::transport::ListenAddr;
use roundtable_storage::{LocalStore, ObjectStore};
use serde::Deserialize;
use thiserror::Error;

mod trunks;
pub use trunks::Trunk;

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

[shutdown]
drain_s = 0

[log]
level = "info"
format = "text"

[testing]
spool_fsync_delay_ms = 0

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
    dialplan: Vec<RawRule>,
    #[serde(default)]
    rooms: Vec<crate::rooms::RoomEntry>,
    #[serde(default)]
    trunks: Vec<trunks::RawTrunk>,
    #[serde(default)]
    room: RoomSpec,
    sip: RawSip,
    media: RawMedia,
    audio: RawAudio,
    api: RawApi,
    storage: RawStorage,
    recording: RawRecording,
    shutdown: RawShutdown,
    log: RawLog,
    testing: RawTesting,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    listen: Vec<String>,
    max_calls: i64,
    timer_t1_ms: i64,
    answer_delay_ms: i64,
    session_expires_s: i64,
    min_session_expires_s: i64,
    options_ping_s: i64,
    tcp_idle_timeout_s: i64,
    max_dialouts: i64,
    dialout_cps: i64,
    dns_servers: Vec<String>,
    allow_refer_out: bool,
    allow: Vec<String>,
    trusted_proxies: Vec<String>,
    tls_cert: String,
    tls_key: String,
    tls_ca: String,
    auth: RawAuth,
    limits: RawLimits,
    lockout: RawLockout,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    required: bool,
    realm: String,
    users: Vec<RawUser>,
    algorithms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: String,
}

impl std::fmt::Debug for RawUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawUser({}, <password>)", self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    requests_per_second: i64,
    burst: i64,
    hard_limit: i64,
    trusted_requests_per_second: i64,
    trusted_burst: i64,
    trusted_hard_limit: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    max_failures: i64,
    window_s: i64,
    backoff_s: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: String,
    action: String,
    #[serde(default)]
    moderator: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    rtp_ports: String,
    public_ip: String,
    max_legs_per_room: i64,
    inactivity_timeout_s: i64,
    codecs: Vec<String>,
    jitter_min_ms: i64,
    jitter_max_ms: i64,
    srtp: String,
    srtp_required_over_tls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudio {
    rate: i64,
    aec: String,
    aec_backend: String,
    noise_suppression: bool,
    agc: bool,
    limiter: bool,
    top_k: i64,
    mixer_threads: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: String,
    path: String,
    spool_quota_mib: i64,
    s3: RawS3,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: String,
    region: String,
    bucket: String,
    prefix: String,
    path_style: bool,
    access_key: String,
    secret_key: String,
    part_size_mib: i64,
    sse: String,
    kms_key_id: String,
    object_lock_mode: String,
    retention_days: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    auto_start: bool,
    mode: String,
    signing_key: String,
    consent_notice: bool,
    consent_prompt: String,
    include_whispers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    drain_s: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTesting {
    spool_fsync_delay_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: String,
    format: String,
}

use roundtable_conference::RoomId;
pub use roundtable_conference::Secret;
use roundtable_conference::settings::RoomSpec;

/// What a dial-plan rule does with a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialAction {
    /// Answer and ask for the conference ID and PIN by DTMF.
    Lobby,
    /// Join the room named by the first capture group (or the whole user part).
    Room,
}

/// One `[[dialplan]]` rule: a regex on the Request-URI user part.
#[derive(Debug, Clone)]
pub struct DialRule {
    /// The compiled pattern.
    pub pattern: regex::Regex,
    /// What to do on a match.
    pub action: DialAction,
    /// Callers routed to a room by this rule join as moderators.
    pub moderator: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// SIP listening sockets.
    pub sip_listen: Vec<ListenAddr>,
    /// Calls held at once before new INVITEs get 503.
    pub max_calls: usize,
    /// RFC 3261 T1; the other SIP timers derive from it (64*T1 is the ACK timeout).
    pub timer_t1: Duration,
    /// 180 Ringing, then this long before 200 OK.
    pub answer_delay: Duration,
    /// RFC 4028 session interval in seconds for callers that name none (0: off).
    pub session_expires: u32,
    /// Our RFC 4028 Min-SE in seconds (90 unless shortened, for tests).
    pub min_session_expires: u32,
    /// Interval of in-dialog OPTIONS pings; `None`: no pings.
    pub options_ping: Option<Duration>,
    /// A TCP or TLS connection that carries no call and no bytes for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// `sip.allow_refer_out`: a REFER to someone outside the bridge dials them into the
    /// caller's room (else 603).
    pub allow_refer_out: bool,
    /// `sip.dns_servers`: where dial-outs' DNS goes; empty: the system's resolvers.
    pub dns_servers: Vec<SocketAddr>,
    /// `sip.max_dialouts`, `sip.dialout_cps`: calls we place, at once and per second.
    pub dial_limits: roundtable_conference::conference::DialLimits,
    /// `[[dialplan]]`, in order; empty means "the user part is the room".
    pub dialplan: Vec<DialRule>,
    /// `[[trunks]]`, in order.
    pub trunks: Vec<Trunk>,
    /// `[[rooms]]` by id.
    pub rooms: std::collections::HashMap<RoomId, RoomSpec>,
    /// `[room]`: defaults for every room.
    pub room_defaults: RoomSpec,
    /// `[sip.lockout]`.
    pub lockout: roundtable_conference::lockout::Lockout,
    /// `sip.allow`: networks allowed to send SIP; empty allows all.
    pub sip_allow: Vec<roundtable_sip::admission::Cidr>,
    /// `[sip.limits]`.
    pub sip_limits: roundtable_sip::admission::RateLimits,
    /// `sip.trusted_proxies` and `sip.limits.trusted_*`.
    pub sip_trusted: roundtable_sip::admission::Trusted,
    /// `[sip.auth]`.
    pub sip_auth: roundtable_sip::digest::AuthConfig,
    /// The TLS server configuration, when a `tls:` listener is configured.
    pub sip_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The TLS client configuration for dial-outs over TLS (`sip.tls_ca`, else the system's
    /// roots), or why the system has none (TLS dial-outs then fail with it).
    pub sip_tls_client: Result<std::sync::Arc<rustls::ClientConfig>, String>,
    /// RTP/RTCP port range.
    pub rtp_ports: PortRange,
    /// Address put in SDP instead of the one the INVITE arrived on.
    pub public_ip: Option<IpAddr>,
    /// Legs per room before new INVITEs to it get 486.
    pub max_legs_per_room: usize,
    /// A leg without RTP for this long gets BYE.
    pub inactivity_timeout: Duration,
    /// `media.codecs`: the codecs we answer with, in our order of preference.
    pub codecs: Vec<roundtable_media::codec::Codec>,
    /// `audio.rate`: every room's internal rate (and its recordings' rate).
    pub audio_rate: u32,
    /// `audio.*`: the voice processing every room starts with.
    pub audio: roundtable_mixer::AudioConfig,
    /// `audio.mixer_threads`: mixer threads (0 in the file: one per core).
    pub mixer_threads: usize,
    /// `media.jitter_min_ms`, `media.jitter_max_ms`: the adaptive jitter buffer's bounds.
    pub jitter: roundtable_media::jitter::JitterConfig,
    /// `media.srtp`: whether calls may, must or must not use SRTP.
    pub srtp: roundtable_sip::sdp::SrtpPolicy,
    /// `media.srtp_required_over_tls`: calls that came over TLS must use SRTP.
    pub srtp_required_over_tls: bool,
    /// REST API address.
    pub api_listen: SocketAddr,
    /// Bearer token for `/v1`; never logged.
    pub api_token: Option<Secret>,
    /// `storage.path`: the local store and spool root.
    pub storage_path: PathBuf,
    /// `storage.spool_quota_mib`, in bytes.
    pub spool_quota: u64,
    /// `[storage.s3]` when `storage.backend = "s3"`.
    pub s3: Option<roundtable_storage::s3::S3Config>,
    /// Record every room from its first join.
    pub auto_record: bool,
    /// `recording.mode`.
    pub recording_mode: roundtable_recorder::Mode,
    /// `recording.signing_key`, or `signing-key.pk8` in `storage.path` (generated if missing).
    pub signing_key: PathBuf,
    /// `recording.consent_notice`: everyone in a recorded room hears the recording notice.
    pub consent_notice: bool,
    /// `recording.include_whispers`: the mixed recording carries what participants heard by
    /// only some said (a coach's whisper).
    pub include_whispers: bool,
    /// `recording.consent_prompt`: the notice's samples (8 kHz) if not the shipped one.
    pub consent_prompt: Option<std::sync::Arc<[i16]>>,
    /// How long shutdown waits for calls to end before sending BYE.
    pub drain: Duration,
    /// Log level filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// `[testing]`: faults tests inject. Production leaves them at zero; the service warns at
    /// start when any is set.
    pub testing: Testing,
}

/// Test hooks, in one place so that no production path reads one by accident: each is off at
/// its default, and [`Testing::hooks_set`] names those that are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Testing {
    /// A pause before each new recording's first fsync (a slow disk), in the blocking pool.
    pub spool_fsync_delay: Duration,
}

impl Testing {
    /// The keys of the hooks that are set, for the warning at start.
    pub fn hooks_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if !self.spool_fsync_delay.is_zero() {
            set.push("testing.spool_fsync_delay_ms");
        }
        set
    }
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
    let raw: Raw = merged
        .try_deserialize()
        .map_err(|e| from_config_error(&e))?;
    validate(raw)
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

fn validate(raw: Raw) -> Result<Config, ConfigError> {
    if raw.sip.listen.is_empty() {
        return Err(ConfigError::new("sip.listen", "needs at least one socket"));
    }
    let mut sip_listen = Vec::new();
    for entry in &raw.sip.listen {
        let (proto, addr) = entry.split_once(':').ok_or_else(|| {
            ConfigError::new("sip.listen", format!("{entry:?} is not PROTO:HOST:PORT"))
        })?;
        let transport = match proto {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => {
                return Err(ConfigError::new(
                    "sip.listen",
                    format!("unknown transport {other:?} (udp, tcp, tls)"),
                ));
            }
        };
        sip_listen.push(ListenAddr {
            transport,
            addr: socket_addr("sip.listen", addr)?,
        });
    }
    let max_calls = positive("sip.max_calls", raw.sip.max_calls)?;
    let dial_limits = roundtable_conference::conference::DialLimits {
        max_concurrent: positive("sip.max_dialouts", raw.sip.max_dialouts)?,
        per_second: u32::try_from(positive("sip.dialout_cps", raw.sip.dialout_cps)?)
            .ok()
            .filter(|cps| *cps <= 10_000)
            .ok_or_else(|| ConfigError::new("sip.dialout_cps", "must be between 1 and 10000"))?,
    };
    let sip_tls = if sip_listen.iter().any(|l| l.transport == Transport::Tls) {
        for (key, value) in [
            ("sip.tls_cert", &raw.sip.tls_cert),
            ("sip.tls_key", &raw.sip.tls_key),
        ] {
            if value.is_empty() {
                return Err(ConfigError::new(key, "required by the tls: listener"));
            }
        }
        let config = roundtable_sip::transport::tls_config(
            raw.sip.tls_cert.as_ref(),
            raw.sip.tls_key.as_ref(),
        )
        .map_err(|e| ConfigError::new("sip.tls_cert", e))?;
        Some(config)
    } else {
        None
    };
    let sip_tls_client = if raw.sip.tls_ca.is_empty() {
        roundtable_sip::transport::tls_client_config(None)
    } else {
        Ok(
            roundtable_sip::transport::tls_client_config(Some(raw.sip.tls_ca.as_ref()))
                .map_err(|e| ConfigError::new("sip.tls_ca", e))?,
        )
    };
    let timer_t1_ms = positive("sip.timer_t1_ms", raw.sip.timer_t1_ms)?;
    if timer_t1_ms > 60_000 {
        return Err(ConfigError::new("sip.timer_t1_ms", "must be at most 60000"));
    }
    let answer_delay_ms = u64::try_from(raw.sip.answer_delay_ms)
        .ok()
        .filter(|ms| *ms <= 60_000)
        .ok_or_else(|| ConfigError::new("sip.answer_delay_ms", "must be between 0 and 60000"))?;
    let min_session_expires = u32::try_from(raw.sip.min_session_expires_s)
        .ok()
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| {
            ConfigError::new(
                "sip.min_session_expires_s",
                "must be between 1 and 86400 (RFC 4028 asks for 90 or more)",
            )
        })?;
    let session_expires = u32::try_from(raw.sip.session_expires_s)
        .ok()
        .filter(|s| *s == 0 || (min_session_expires..=86_400).contains(s))
        .ok_or_else(|| {
            ConfigError::new("sip.session_expires_s", format!("must be 0 (off) or between {min_session_expires} (sip.min_session_expires_s) and 86400"))
        })?;
    let options_ping = u64::try_from(raw.sip.options_ping_s)
        .ok()
        .filter(|s| *s <= 86_400)
        .ok_or_else(|| {
            ConfigError::new("sip.options_ping_s", "must be between 0 (off) and 86400")
        })?;
    let tcp_idle_timeout = u64::try_from(raw.sip.tcp_idle_timeout_s)
        .ok()
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| ConfigError::new("sip.tcp_idle_timeout_s", "must be between 1 and 86400"))?;

    let mut dialplan = Vec::new();
    for rule in &raw.dialplan {
        let pattern = regex::Regex::new(&rule.pattern).map_err(|e| {
            ConfigError::new(
                "dialplan.match",
                format!("{:?} is not a valid regex: {e}", rule.pattern),
            )
        })?;
        let action = match rule.action.as_str() {
            "lobby" => DialAction::Lobby,
            "room" => DialAction::Room,
            other => {
                return Err(ConfigError::new(
                    "dialplan.action",
                    format!("{other:?} is not lobby or room"),
                ));
            }
        };
        if rule.moderator && action != DialAction::Room {
            return Err(ConfigError::new(
                "dialplan.moderator",
                "only a room rule makes moderators (the lobby uses moderator_pin)",
            ));
        }
        dialplan.push(DialRule {
            pattern,
            action,
            moderator: rule.moderator,
        });
    }
    let max_legs_per_room = positive("media.max_legs_per_room", raw.media.max_legs_per_room)?;
    let room_problem = |section: &str, spec: &RoomSpec| match spec.problem(max_legs_per_room) {
        Some((field, reason)) => Err(ConfigError::new(&format!("{section}.{field}"), reason)),
        None => Ok(()),
    };
    room_problem("room", &raw.room)?;
    let room_defaults = raw.room;
    let trunks = trunks::validate(raw.trunks)?;
    let mut rooms = std::collections::HashMap::new();
    for entry in raw.rooms {
        room_problem("rooms", &entry.spec)
            .map_err(|e| ConfigError::new(&e.key, format!("room {}: {}", entry.id, e.reason)))?;
        if rooms.insert(entry.id.clone(), entry.spec).is_some() {
            return Err(ConfigError::new(
                "rooms.id",
                format!("room {} is defined twice", entry.id),
            ));
        }
    }
    let dns_servers = raw
        .sip
        .dns_servers
        .iter()
        .map(|server| {
            server
                .parse::<SocketAddr>()
                .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    ConfigError::new(
                        "sip.dns_servers",
                        format!("{server:?} is not an IP address (with an optional port)"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sip_allow = Vec::new();
    for entry in &raw.sip.allow {
        let cidr = roundtable_sip::admission::Cidr::parse(entry).ok_or_else(|| {
            ConfigError::new(
                "sip.allow",
                format!("{entry:?} is not an address or CIDR network"),
            )
        })?;
        sip_allow.push(cidr);
    }
    let rate_limits = |prefix: &str, rate: i64, burst: i64, hard: i64| {
        let key = |k: &str| format!("sip.limits.{prefix}{k}");
        Ok::<_, ConfigError>(roundtable_sip::admission::RateLimits {
            requests_per_second: positive(&key("requests_per_second"), rate)? as f64,
            burst: positive(&key("burst"), burst)? as f64,
            hard_limit: u32::try_from(positive(&key("hard_limit"), hard)?)
                .map_err(|_| ConfigError::new(&key("hard_limit"), "too large"))?,
        })
    };
    let limits = &raw.sip.limits;
    let sip_limits = rate_limits(
        "",
        limits.requests_per_second,
        limits.burst,
        limits.hard_limit,
    )?;
    let mut trusted_networks = Vec::new();
    for entry in &raw.sip.trusted_proxies {
        trusted_networks.push(
            roundtable_sip::admission::Cidr::parse(entry).ok_or_else(|| {
                ConfigError::new(
                    "sip.trusted_proxies",
                    format!("{entry:?} is not an address or CIDR network"),
                )
            })?,
        );
    }
    let sip_trusted = roundtable_sip::admission::Trusted {
        networks: trusted_networks,
        limits: rate_limits(
            "trusted_",
            limits.trusted_requests_per_second,
            limits.trusted_burst,
            limits.trusted_hard_limit,
        )?,
    };
    if raw.sip.auth.realm.is_empty() || raw.sip.auth.realm.contains('"') {
        return Err(ConfigError::new(
            "sip.auth.realm",
            "must be non-empty and without quotes",
        ));
    }
    if raw.sip.auth.required && raw.sip.auth.users.is_empty() {
        return Err(ConfigError::new(
            "sip.auth.users",
            "required = true needs at least one user",
        ));
    }
    let mut algorithms = Vec::new();
    for name in &raw.sip.auth.algorithms {
        let algorithm = roundtable_sip::digest::Algorithm::from_name(name).ok_or_else(|| {
            ConfigError::new(
                "sip.auth.algorithms",
                format!("{name:?} is not SHA-256 or MD5"),
            )
        })?;
        algorithms.push(algorithm);
    }
    if algorithms.is_empty() {
        return Err(ConfigError::new(
            "sip.auth.algorithms",
            "needs at least one algorithm",
        ));
    }
    let sip_auth = roundtable_sip::digest::AuthConfig {
        algorithms,
        required: raw.sip.auth.required,
        realm: raw.sip.auth.realm.clone(),
        users: raw
            .sip
            .auth
            .users
            .iter()
            .map(|u| roundtable_sip::digest::User {
                name: u.name.clone(),
                password: u.password.clone(),
            })
            .collect(),
    };
    let lockout = roundtable_conference::lockout::Lockout {
        max_failures: positive("sip.lockout.max_failures", raw.sip.lockout.max_failures)?,
        window: Duration::from_secs(
            positive("sip.lockout.window_s", raw.sip.lockout.window_s)? as u64
        ),
        backoff: Duration::from_secs(
            positive("sip.lockout.backoff_s", raw.sip.lockout.backoff_s)? as u64,
        ),
    };

    let (low, high) = raw
        .media
        .rtp_ports
        .split_once('-')
        .ok_or_else(|| ConfigError::new("media.rtp_ports", "must be LOW-HIGH"))?;
    let parse_port = |p: &str| -> Result<u16, ConfigError> {
        let n: u32 = p
            .trim()
            .parse()
            .map_err(|_| ConfigError::new("media.rtp_ports", format!("{p:?} is not a port")))?;
        u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::new(
                "media.rtp_ports",
                format!("port {n} out of range (1-65535)"),
            )
        })
    };
    let (low, high) = (parse_port(low)?, parse_port(high)?);
    let rtp_ports = PortRange::new(low, high).ok_or_else(|| {
        ConfigError::new(
            "media.rtp_ports",
            "RTP range smaller than 2 ports (needs an even RTP port and the odd one above)",
        )
    })?;
    let public_ip = match raw.media.public_ip.trim() {
        "" => None,
        ip => Some(ip.parse().map_err(|_| {
            ConfigError::new("media.public_ip", format!("{ip:?} is not an IP address"))
        })?),
    };
    let inactivity = positive("media.inactivity_timeout_s", raw.media.inactivity_timeout_s)?;
    let mut codecs = Vec::new();
    for name in &raw.media.codecs {
        let codec = roundtable_media::codec::Codec::from_config_name(name).ok_or_else(|| {
            ConfigError::new(
                "media.codecs",
                format!("{name:?} is not one of opus, g722, pcmu, pcma"),
            )
        })?;
        if codecs.contains(&codec) {
            return Err(ConfigError::new(
                "media.codecs",
                format!("{name:?} is listed twice"),
            ));
        }
        codecs.push(codec);
    }
    if codecs.is_empty() {
        return Err(ConfigError::new(
            "media.codecs",
            "must list at least one codec",
        ));
    }
    let jitter_min = u64::try_from(raw.media.jitter_min_ms)
        .ok()
        .filter(|ms| (20..=1000).contains(ms))
        .ok_or_else(|| ConfigError::new("media.jitter_min_ms", "must be between 20 and 1000"))?;
    let jitter_max = u64::try_from(raw.media.jitter_max_ms)
        .ok()
        .filter(|ms| (jitter_min..=1000).contains(ms))
        .ok_or_else(|| {
            ConfigError::new(
                "media.jitter_max_ms",
                "must be between media.jitter_min_ms and 1000",
            )
        })?;
    let jitter = roundtable_media::jitter::JitterConfig {
        min: Duration::from_millis(jitter_min),
        max: Duration::from_millis(jitter_max),
    };
    let srtp = match raw.media.srtp.as_str() {
        "off" => roundtable_sip::sdp::SrtpPolicy::Off,
        "optional" => roundtable_sip::sdp::SrtpPolicy::Optional,
        "required" => roundtable_sip::sdp::SrtpPolicy::Required,
        other => {
            return Err(ConfigError::new(
                "media.srtp",
                format!("{other:?} is not off, optional or required"),
            ));
        }
    };
    let audio_rate = match raw.audio.rate {
        8000 | 16000 | 48000 => raw.audio.rate as u32,
        other => {
            return Err(ConfigError::new(
                "audio.rate",
                format!("{other} is not 8000, 16000 or 48000"),
            ));
        }
    };
    let audio = audio_config(&raw.audio)?;
    let mixer_threads = match raw.audio.mixer_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n @ 1..=256 => n as usize,
        other => {
            return Err(ConfigError::new(
                "audio.mixer_threads",
                format!("{other} is not 0 (one per core) to 256"),
            ));
        }
    };

    let api_listen = socket_addr("api.listen", &raw.api.listen)?;
    let api_token = Some(raw.api.token.clone())
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    if !api_listen.ip().is_loopback() && api_token.is_none() {
        return Err(ConfigError::new(
            "api.token",
            "required when api.listen is not a loopback address",
        ));
    }

    let s3 = match raw.storage.backend.as_str() {
        "local" => None,
        "s3" => Some(s3_config(&raw.storage.s3)?),
        other => {
            return Err(ConfigError::new(
                "storage.backend",
                format!("unknown backend {other:?} (local or s3)"),
            ));
        }
    };
    if raw.storage.path.is_empty() {
        return Err(ConfigError::new("storage.path", "must not be empty"));
    }
    let storage_path = PathBuf::from(&raw.storage.path);
    LocalStore::new(&storage_path)
        .check_writable()
        .map_err(|e| ConfigError::new("storage.path", format!("data dir not writable: {e}")))?;
    let spool_quota = u64::try_from(raw.storage.spool_quota_mib)
        .ok()
        .filter(|q| (1..=1 << 30).contains(q))
        .ok_or_else(|| ConfigError::new("storage.spool_quota_mib", "must be at least 1"))?
        << 20;

    let recording_mode =
        roundtable_recorder::Mode::parse(&raw.recording.mode).ok_or_else(|| {
            ConfigError::new(
                "recording.mode",
                format!("{:?} is not mixed, tracks or both", raw.recording.mode),
            )
        })?;
    let signing_key = match raw.recording.signing_key.as_str() {
        "" => storage_path.join("signing-key.pk8"),
        path => PathBuf::from(path),
    };
    let consent_prompt = match raw.recording.consent_prompt.as_str() {
        "" => None,
        path => Some(
            crate::prompts::load_wav(Path::new(path))
                .map_err(|reason| ConfigError::new("recording.consent_prompt", reason))?,
        ),
    };
    let drain = u64::try_from(raw.shutdown.drain_s)
        .map_err(|_| ConfigError::new("shutdown.drain_s", "must not be negative"))?;
    let log_level = raw.log.level.to_ascii_lowercase();
    if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
        return Err(ConfigError::new(
            "log.level",
            format!(
                "{:?} is not one of trace, debug, info, warn, error",
                raw.log.level
            ),
        ));
    }
    let log_format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::new(
                "log.format",
                format!("{other:?} is not text or json"),
            ));
        }
    };
    Ok(Config {
        sip_listen,
        max_calls,
        timer_t1: Duration::from_millis(timer_t1_ms as u64),
        answer_delay: Duration::from_millis(answer_delay_ms),
        session_expires,
        min_session_expires,
        options_ping: (options_ping > 0).then(|| Duration::from_secs(options_ping)),
        tcp_idle_timeout: Duration::from_secs(tcp_idle_timeout),
        dial_limits,
        dns_servers,
        allow_refer_out: raw.sip.allow_refer_out,
        dialplan,
        rooms,
        trunks,
        room_defaults,
        lockout,
        sip_allow,
        sip_tls_client,
        sip_limits,
        sip_trusted,
        sip_auth,
        sip_tls,
        rtp_ports,
        public_ip,
        max_legs_per_room,
        inactivity_timeout: Duration::from_secs(inactivity as u64),
        codecs,
        audio_rate,
        audio,
        mixer_threads,
        jitter,
        srtp,
        srtp_required_over_tls: raw.media.srtp_required_over_tls,
        api_listen,
        api_token,
        storage_path,
        spool_quota,
        s3,
        auto_record: raw.recording.auto_start,
        recording_mode,
        signing_key,
        consent_notice: raw.recording.consent_notice,
        include_whispers: raw.recording.include_whispers,
        consent_prompt,
        drain: Duration::from_secs(drain),
        log_level,
        log_format,
        testing: Testing {
            spool_fsync_delay: Duration::from_millis(
                u64::try_from(raw.testing.spool_fsync_delay_ms)
                    .ok()
                    .filter(|ms| *ms <= 60_000)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "testing.spool_fsync_delay_ms",
                            "must be between 0 and 60000",
                        )
                    })?,
            ),
        },
    })
}

/// `[storage.s3]`, checked.
fn s3_config(raw: &RawS3) -> Result<roundtable_storage::s3::S3Config, ConfigError> {
    let part_mib = u64::try_from(raw.part_size_mib)
        .ok()
        .filter(|p| (5..=5120).contains(p));
    let part_size = part_mib.ok_or_else(|| {
        ConfigError::new("storage.s3.part_size_mib", "must be between 5 and 5120")
    })? << 20;
    let retention_days = u32::try_from(raw.retention_days)
        .ok()
        .filter(|d| *d <= 36_500)
        .ok_or_else(|| {
            ConfigError::new("storage.s3.retention_days", "must be between 0 and 36500")
        })?;
    let config = roundtable_storage::s3::S3Config {
        endpoint: raw.endpoint.clone(),
        region: raw.region.clone(),
        bucket: raw.bucket.clone(),
        prefix: raw.prefix.clone(),
        path_style: raw.path_style,
        access_key: raw.access_key.clone(),
        secret_key: raw.secret_key.clone(),
        part_size,
        sse: raw.sse.clone(),
        kms_key_id: raw.kms_key_id.clone(),
        object_lock_mode: raw.object_lock_mode.clone(),
        retention_days,
    };
    config
        .validate()
        .map_err(|(key, reason)| ConfigError::new(&format!("storage.s3.{key}"), reason))?;
    Ok(config)
}

/// The `[audio]` voice processing switches.
fn audio_config(raw: &RawAudio) -> Result<roundtable_mixer::AudioConfig, ConfigError> {
    use roundtable_mixer::{AecMode, EchoBackend};
    let aec = AecMode::parse(&raw.aec).ok_or_else(|| {
        ConfigError::new("audio.aec", format!("{:?} is not off, on or auto", raw.aec))
    })?;
    let aec_backend = EchoBackend::parse(&raw.aec_backend).ok_or_else(|| {
        ConfigError::new(
            "audio.aec_backend",
            format!("{:?} is not sonora or webrtc", raw.aec_backend),
        )
    })?;
    if !aec_backend.available() {
        return Err(ConfigError::new(
            "audio.aec_backend",
            format!(
                "{:?} is not built into this binary (build with --features webrtc-aec)",
                raw.aec_backend
            ),
        ));
    }
    let top_k = match raw.top_k {
        k @ 0..=64 => k as usize,
        other => {
            return Err(ConfigError::new(
                "audio.top_k",
                format!("{other} is not 0 (every talker) to 64"),
            ));
        }
    };
    Ok(roundtable_mixer::AudioConfig {
        aec,
        aec_backend,
        noise_suppression: raw.noise_suppression,
        agc: raw.agc,
        limiter: raw.limiter,
        top_k,
    })
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
        assert_eq!(c.sip_listen.len(), 2);
        assert_eq!(c.rtp_ports.pairs(), 8192);
        assert_eq!(c.api_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.inactivity_timeout, Duration::from_secs(30));
    }

    #[test]
    fn token_is_redacted_in_debug_output() {
        let c = load_toml("[api]\ntoken = \"hunter2\"", &[]).unwrap();
        assert_eq!(c.api_token.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
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
        assert_eq!(c.api_listen.port(), 9999);
        assert!(c.auto_record);
        assert_eq!(c.max_calls, 5);
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
        let listen: Vec<_> = c.sip_listen.iter().map(|l| (l.transport, l.addr)).collect();
        let addr: SocketAddr = "127.0.0.1:15060".parse().unwrap();
        assert_eq!(
            listen,
            [(Transport::Udp, addr), (Transport::Tcp, addr)],
            "env beats the file"
        );
        assert_eq!(c.sip_allow.len(), 2);
        assert_eq!(c.codecs, [roundtable_media::codec::Codec::Pcma]);
        assert_eq!(c.sip_auth.algorithms.len(), 1);
        let c = load_toml(
            "[sip]\nallow = [\"10.0.0.0/8\"]",
            &[("ROUNDTABLE_SIP__ALLOW", "")],
        );
        assert!(
            c.unwrap().sip_allow.is_empty(),
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
            c.sip_listen[0].addr.port(),
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
        assert_eq!(c.lockout.max_failures, 5);
        let bad = load_toml("[[dialplan]]\nmatch = \"(\"\naction = \"room\"", &[]).unwrap_err();
        assert_eq!(bad.key, "dialplan.match");
        let bad = load_toml("[[rooms]]\nid = \"1\"\npin = \"12a\"", &[]).unwrap_err();
        assert_eq!(bad.key, "rooms.pin");
    }

    #[test]
    fn audio_switches() {
        let c = load_toml("[audio]\naec = \"on\"\nnoise_suppression = false\ntop_k = 0\n[[rooms]]\nid = \"x\"\naec = \"off\"", &[]).unwrap();
        assert_eq!(
            (c.audio.aec, c.audio.noise_suppression, c.audio.top_k),
            (roundtable_mixer::AecMode::On, false, 0)
        );
        assert_eq!(
            c.rooms["x"].aec,
            Some(roundtable_conference::settings::AecSetting::Off)
        );
        let defaults = load_toml("", &[]).unwrap();
        assert_eq!(defaults.audio, roundtable_mixer::AudioConfig::default());
        assert!(defaults.mixer_threads >= 1);
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
