//! `[sip]` with `[sip.auth]`, `[sip.limits]` and `[sip.lockout]`: the listeners, timers,
//! admission and authentication of the SIP front end, and the calls it places.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use roundtable_sip::admission::{Cidr, RateLimits, Trusted};
use roundtable_sip::digest::{Algorithm, AuthConfig, User};
use roundtable_sip::endpoint::Transport;
use roundtable_sip::transport::ListenAddr;
use serde::Deserialize;

use super::{ConfigError, bounded, positive, socket_addr};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSip {
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
    pub(super) auth: RawAuth,
    pub(super) limits: RawLimits,
    pub(super) lockout: RawLockout,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
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
pub(super) struct RawLimits {
    requests_per_second: i64,
    burst: i64,
    hard_limit: i64,
    trusted_requests_per_second: i64,
    trusted_burst: i64,
    trusted_hard_limit: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLockout {
    max_failures: i64,
    window_s: i64,
    backoff_s: i64,
}

/// `[sip]`, checked.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// `sip.listen`: the listening sockets.
    pub listen: Vec<ListenAddr>,
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
    /// `[sip.lockout]`.
    pub lockout: roundtable_conference::lockout::Lockout,
    /// `sip.allow`: networks allowed to send SIP; empty allows all.
    pub allow: Vec<Cidr>,
    /// `[sip.limits]`.
    pub limits: RateLimits,
    /// `sip.trusted_proxies` and `sip.limits.trusted_*`.
    pub trusted: Trusted,
    /// `[sip.auth]`.
    pub auth: AuthConfig,
    /// The TLS server configuration, when a `tls:` listener is configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The TLS client configuration for dial-outs over TLS (`sip.tls_ca`, else the system's
    /// roots), or why the system has none (TLS dial-outs then fail with it).
    pub tls_client: Result<Arc<rustls::ClientConfig>, String>,
}

/// Addresses or CIDR networks.
fn networks(key: &str, entries: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    entries
        .iter()
        .map(|entry| {
            Cidr::parse(entry).ok_or_else(|| {
                ConfigError::new(key, format!("{entry:?} is not an address or CIDR network"))
            })
        })
        .collect()
}

impl SipConfig {
    /// Checks `[sip]` and its tables.
    pub(super) fn validate(raw: RawSip) -> Result<SipConfig, ConfigError> {
        let listen = listeners(&raw.listen)?;
        let max_calls = positive("sip.max_calls", raw.max_calls)?;
        let dial_limits = roundtable_conference::conference::DialLimits {
            max_concurrent: positive("sip.max_dialouts", raw.max_dialouts)?,
            per_second: bounded(
                "sip.dialout_cps",
                raw.dialout_cps,
                1..=10_000,
                "must be between 1 and 10000",
            )? as u32,
        };
        let tls = if listen.iter().any(|l| l.transport == Transport::Tls) {
            for (key, value) in [
                ("sip.tls_cert", &raw.tls_cert),
                ("sip.tls_key", &raw.tls_key),
            ] {
                if value.is_empty() {
                    return Err(ConfigError::new(key, "required by the tls: listener"));
                }
            }
            let config =
                roundtable_sip::transport::tls_config(raw.tls_cert.as_ref(), raw.tls_key.as_ref())
                    .map_err(|e| ConfigError::new("sip.tls_cert", e))?;
            Some(config)
        } else {
            None
        };
        let tls_client = if raw.tls_ca.is_empty() {
            roundtable_sip::transport::tls_client_config(None)
        } else {
            Ok(
                roundtable_sip::transport::tls_client_config(Some(raw.tls_ca.as_ref()))
                    .map_err(|e| ConfigError::new("sip.tls_ca", e))?,
            )
        };
        let timer_t1_ms = bounded(
            "sip.timer_t1_ms",
            raw.timer_t1_ms,
            1..=60_000,
            "must be between 1 and 60000",
        )?;
        let answer_delay_ms = bounded(
            "sip.answer_delay_ms",
            raw.answer_delay_ms,
            0..=60_000,
            "must be between 0 and 60000",
        )?;
        let min_session_expires = bounded(
            "sip.min_session_expires_s",
            raw.min_session_expires_s,
            1..=86_400,
            "must be between 1 and 86400 (RFC 4028 asks for 90 or more)",
        )? as u32;
        let session_expires = u32::try_from(raw.session_expires_s)
            .ok()
            .filter(|s| *s == 0 || (min_session_expires..=86_400).contains(s))
            .ok_or_else(|| {
                ConfigError::new(
                    "sip.session_expires_s",
                    format!(
                        "must be 0 (off) or between {min_session_expires} \
                         (sip.min_session_expires_s) and 86400"
                    ),
                )
            })?;
        let options_ping = bounded(
            "sip.options_ping_s",
            raw.options_ping_s,
            0..=86_400,
            "must be between 0 (off) and 86400",
        )?;
        let tcp_idle_timeout = bounded(
            "sip.tcp_idle_timeout_s",
            raw.tcp_idle_timeout_s,
            1..=86_400,
            "must be between 1 and 86400",
        )?;
        let dns_servers = raw
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
        let allow = networks("sip.allow", &raw.allow)?;
        let rate_limits = |prefix: &str, rate: i64, burst: i64, hard: i64| {
            let key = |k: &str| format!("sip.limits.{prefix}{k}");
            Ok::<_, ConfigError>(RateLimits {
                requests_per_second: positive(&key("requests_per_second"), rate)? as f64,
                burst: positive(&key("burst"), burst)? as f64,
                hard_limit: u32::try_from(positive(&key("hard_limit"), hard)?)
                    .map_err(|_| ConfigError::new(&key("hard_limit"), "too large"))?,
            })
        };
        let limits = &raw.limits;
        let sip_limits = rate_limits(
            "",
            limits.requests_per_second,
            limits.burst,
            limits.hard_limit,
        )?;
        let trusted = Trusted {
            networks: networks("sip.trusted_proxies", &raw.trusted_proxies)?,
            limits: rate_limits(
                "trusted_",
                limits.trusted_requests_per_second,
                limits.trusted_burst,
                limits.trusted_hard_limit,
            )?,
        };
        let lockout = roundtable_conference::lockout::Lockout {
            max_failures: positive("sip.lockout.max_failures", raw.lockout.max_failures)?,
            window: Duration::from_secs(
                positive("sip.lockout.window_s", raw.lockout.window_s)? as u64
            ),
            backoff: Duration::from_secs(
                positive("sip.lockout.backoff_s", raw.lockout.backoff_s)? as u64
            ),
        };
        Ok(SipConfig {
            listen,
            max_calls,
            timer_t1: Duration::from_millis(timer_t1_ms),
            answer_delay: Duration::from_millis(answer_delay_ms),
            session_expires,
            min_session_expires,
            options_ping: (options_ping > 0).then(|| Duration::from_secs(options_ping)),
            tcp_idle_timeout: Duration::from_secs(tcp_idle_timeout),
            allow_refer_out: raw.allow_refer_out,
            dns_servers,
            dial_limits,
            lockout,
            allow,
            limits: sip_limits,
            trusted,
            auth: auth(&raw.auth)?,
            tls,
            tls_client,
        })
    }
}

/// `sip.listen`: `PROTO:HOST:PORT` each.
fn listeners(entries: &[String]) -> Result<Vec<ListenAddr>, ConfigError> {
    if entries.is_empty() {
        return Err(ConfigError::new("sip.listen", "needs at least one socket"));
    }
    entries
        .iter()
        .map(|entry| {
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
            Ok(ListenAddr {
                transport,
                addr: socket_addr("sip.listen", addr)?,
            })
        })
        .collect()
}

/// `[sip.auth]`.
fn auth(raw: &RawAuth) -> Result<AuthConfig, ConfigError> {
    if raw.realm.is_empty() || raw.realm.contains('"') {
        return Err(ConfigError::new(
            "sip.auth.realm",
            "must be non-empty and without quotes",
        ));
    }
    if raw.required && raw.users.is_empty() {
        return Err(ConfigError::new(
            "sip.auth.users",
            "required = true needs at least one user",
        ));
    }
    let algorithms = raw
        .algorithms
        .iter()
        .map(|name| {
            Algorithm::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    "sip.auth.algorithms",
                    format!("{name:?} is not SHA-256 or MD5"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err(ConfigError::new(
            "sip.auth.algorithms",
            "needs at least one algorithm",
        ));
    }
    Ok(AuthConfig {
        algorithms,
        required: raw.required,
        realm: raw.realm.clone(),
        users: raw
            .users
            .iter()
            .map(|u| User {
                name: u.name.clone(),
                password: u.password.clone(),
            })
            .collect(),
    })
}
