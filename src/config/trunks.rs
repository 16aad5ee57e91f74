//! `[[trunks]]`: SIP trunks the bridge registers with (a DID on the trunk then reaches a room)
//! and places calls through (`tel:` numbers, `"trunk"` in a dial-out).

use std::time::Duration;

use roundtable_sip::digest::User;
use roundtable_sip::locate;
use roundtable_sip::registration::RegistrationConfig;
use serde::Deserialize;

use super::ConfigError;

/// One `[[trunks]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrunk {
    name: String,
    uri: String,
    #[serde(default)]
    transport: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    from_user: String,
    #[serde(default = "yes")]
    register: bool,
    #[serde(default = "default_expires")]
    expires_s: i64,
    #[serde(default)]
    outbound_proxy: String,
    #[serde(default = "default_retry_min")]
    retry_min_s: i64,
    #[serde(default = "default_retry_max")]
    retry_max_s: i64,
    #[serde(default = "default_breaker_failures")]
    breaker_failures: i64,
    #[serde(default = "default_breaker_open")]
    breaker_open_s: i64,
}

impl std::fmt::Debug for RawTrunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawTrunk({}, {}, <password>)", self.name, self.uri)
    }
}

fn yes() -> bool {
    true
}

fn default_expires() -> i64 {
    3600
}

fn default_retry_min() -> i64 {
    2
}

fn default_retry_max() -> i64 {
    300
}

fn default_breaker_failures() -> i64 {
    5
}

fn default_breaker_open() -> i64 {
    60
}

/// `value` of `key` within `range`, as seconds or a count.
fn within(key: &str, value: i64, range: std::ops::RangeInclusive<i64>) -> Result<u64, ConfigError> {
    if range.contains(&value) {
        Ok(value as u64)
    } else {
        Err(ConfigError::new(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

/// A validated trunk.
#[derive(Clone)]
pub struct Trunk {
    /// Its name (`"trunk"` in a dial-out, `{trunk}` in metrics).
    pub name: String,
    /// The registrar's and proxy's domain: the REGISTER's Request-URI is `sip:<domain>` and
    /// our address of record `sip:<username>@<domain>`.
    pub domain: String,
    /// Where its requests go first, with any `transport` parameter: the outbound proxy if
    /// set, else `uri`. Looked up as RFC 3263 says.
    pub next_hop: String,
    /// A Route header to its outbound proxy (`<uri;lr>`), when one is set.
    pub route: Option<String>,
    /// The digest credentials for its 401/407 challenges (none without a username).
    pub credentials: Option<User>,
    /// Our user part towards it (From, Contact): `from_user`, else `username`.
    pub from_user: String,
    /// Whether the bridge registers with it, and how.
    pub registration: Option<RegistrationConfig>,
}

impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never logged.
        f.debug_struct("Trunk")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("next_hop", &self.next_hop)
            .field("from_user", &self.from_user)
            .field("register", &self.registration.is_some())
            .finish_non_exhaustive()
    }
}

impl Trunk {
    /// The Request-URI and To for calling `to` through this trunk: a `tel:` number becomes
    /// `sip:<number>@<domain>;user=phone` (RFC 3261 §19.1.6); a `sip:` URI stays as it is.
    pub fn request_uri(&self, to: &str) -> String {
        match to.strip_prefix("tel:") {
            Some(number) => {
                let number = number.split(';').next().unwrap_or_default();
                format!("sip:{number}@{};user=phone", self.domain)
            }
            None => to.to_string(),
        }
    }
}

/// `transport` as a URI parameter value, checked.
fn transport_param(transport: &str) -> Result<Option<&'static str>, ConfigError> {
    match transport.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "udp" => Ok(Some("udp")),
        "tcp" => Ok(Some("tcp")),
        "tls" => Ok(Some("tls")),
        other => Err(ConfigError::new(
            "trunks.transport",
            format!("unknown transport {other:?} (udp, tcp, tls, or empty: from the URI)"),
        )),
    }
}

/// `uri` with `;transport=<t>` added when the trunk names one and the URI does not.
fn with_transport(uri: &str, transport: Option<&str>) -> String {
    match transport {
        Some(t) if !uri.to_ascii_lowercase().contains(";transport=") => {
            format!("{uri};transport={t}")
        }
        _ => uri.to_string(),
    }
}

/// Validates the `[[trunks]]` entries.
pub(super) fn validate(raw: Vec<RawTrunk>) -> Result<Vec<Trunk>, ConfigError> {
    let mut trunks: Vec<Trunk> = Vec::new();
    for raw in raw {
        let valid_name = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(ConfigError::new(
                "trunks.name",
                format!("{:?}: 1 to 64 letters, digits, '-' or '_'", raw.name),
            ));
        }
        if trunks.iter().any(|t| t.name == raw.name) {
            return Err(ConfigError::new(
                "trunks.name",
                format!("{:?} is defined twice", raw.name),
            ));
        }
        let transport = transport_param(&raw.transport)?;
        let uri = with_transport(&raw.uri, transport);
        locate::plan(&uri).map_err(|e| ConfigError::new("trunks.uri", e.to_string()))?;
        let domain = locate::uri_host(&uri)
            .ok_or_else(|| ConfigError::new("trunks.uri", format!("{:?}: no host", raw.uri)))?;
        let (next_hop, route) = if raw.outbound_proxy.is_empty() {
            (uri, None)
        } else {
            let proxy = with_transport(&raw.outbound_proxy, transport);
            locate::plan(&proxy)
                .map_err(|e| ConfigError::new("trunks.outbound_proxy", e.to_string()))?;
            let route = format!("<{};lr>", raw.outbound_proxy);
            (proxy, Some(route))
        };
        let credentials = (!raw.username.is_empty()).then(|| User {
            name: raw.username.clone(),
            password: raw.password.clone(),
        });
        let from_user = if raw.from_user.is_empty() {
            raw.username.clone()
        } else {
            raw.from_user.clone()
        };
        let user_ok = |u: &str| {
            u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b))
        };
        if !user_ok(&from_user) {
            return Err(ConfigError::new(
                "trunks.from_user",
                format!("{from_user:?} is not a SIP user part"),
            ));
        }
        let registration = if raw.register {
            if from_user.is_empty() {
                return Err(ConfigError::new(
                    "trunks.username",
                    format!("trunk {:?} registers: it needs a username", raw.name),
                ));
            }
            let retry_min = within("trunks.retry_min_s", raw.retry_min_s, 1..=3600)?;
            let retry_max = within("trunks.retry_max_s", raw.retry_max_s, 1..=86_400)?;
            if retry_max < retry_min {
                return Err(ConfigError::new(
                    "trunks.retry_max_s",
                    "must be at least trunks.retry_min_s",
                ));
            }
            Some(RegistrationConfig {
                expires: within("trunks.expires_s", raw.expires_s, 10..=86_400)? as u32,
                backoff_base: Duration::from_secs(retry_min),
                backoff_max: Duration::from_secs(retry_max),
                breaker_threshold: within(
                    "trunks.breaker_failures",
                    raw.breaker_failures,
                    1..=1000,
                )? as u32,
                breaker_open_for: Duration::from_secs(within(
                    "trunks.breaker_open_s",
                    raw.breaker_open_s,
                    1..=86_400,
                )?),
            })
        } else {
            None
        };
        trunks.push(Trunk {
            name: raw.name,
            domain,
            next_hop,
            route,
            credentials,
            from_user,
            registration,
        });
    }
    Ok(trunks)
}
