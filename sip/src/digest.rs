//! Digest authentication of callers (RFC 3261 22, RFC 8760 for SHA-256; MD5 for older phones),
//! server side: challenges with stateless, expiring nonces and checks `Authorization` answers.

use std::fmt::Write as _;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// How long a nonce stays valid; older ones get a `stale=true` challenge.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// A user allowed to call in.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The digest username.
    pub name: String,
    /// The password (never logged).
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({}, <password>)", self.name)
    }
}

/// `[sip.auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether new calls must authenticate.
    pub required: bool,
    /// The realm in challenges.
    pub realm: String,
    /// The accepted users.
    pub users: Vec<User>,
    /// The algorithms challenged and accepted, most preferred first (empty means both,
    /// SHA-256 first).
    pub algorithms: Vec<Algorithm>,
}

/// The digest algorithms we offer, strongest first (RFC 8760 section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256.
    Sha256,
    /// MD5, for phones that know nothing else.
    Md5,
}

impl Algorithm {
    /// Parses `SHA-256` or `MD5`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            n if n.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            n if n.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
        };
        hex(&bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as this user.
    Authenticated(String),
    /// No usable credentials: challenge (`stale` when only the nonce had expired).
    Challenge {
        /// The nonce was ours but too old.
        stale: bool,
    },
}

/// Issues and checks nonces: `<issued seconds, hex>.<mac>`, where the MAC is keyed with a
/// per-process secret, so nothing is stored per challenge.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    secret: String,
}

impl Authenticator {
    /// An authenticator keyed with `secret` (random per process).
    pub fn new(config: AuthConfig, secret: u64) -> Authenticator {
        Authenticator {
            config,
            secret: format!("{secret:016x}"),
        }
    }

    /// Whether calls must authenticate.
    pub fn required(&self) -> bool {
        self.config.required
    }

    fn algorithms(&self) -> &[Algorithm] {
        if self.config.algorithms.is_empty() {
            &[Algorithm::Sha256, Algorithm::Md5]
        } else {
            &self.config.algorithms
        }
    }

    fn nonce(&self, issued: u64) -> String {
        let mac = Algorithm::Sha256.hash(&format!("{}:{issued:x}", self.secret));
        format!("{issued:x}.{}", &mac[..32])
    }

    /// The `WWW-Authenticate` values of a 401, SHA-256 first. `now_s` is seconds on the
    /// endpoint's clock.
    pub fn challenges(&self, now_s: u64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now_s);
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms()
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    self.config.realm,
                    a.name()
                )
            })
            .collect()
    }

    /// Checks the `Authorization` values of a request with this method.
    pub fn check(&self, method: &str, authorizations: &[&str], now_s: u64) -> Verdict {
        let mut stale = false;
        for value in authorizations {
            let Some(params) = value.trim().strip_prefix("Digest") else {
                continue;
            };
            let p = parse_params(params);
            let get = |k: &str| {
                p.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.as_str())
            };
            let (Some(username), Some(nonce), Some(uri), Some(response)) =
                (get("username"), get("nonce"), get("uri"), get("response"))
            else {
                continue;
            };
            if get("realm") != Some(self.config.realm.as_str()) {
                continue;
            }
            let Some(algorithm) = Algorithm::from_name(get("algorithm").unwrap_or("MD5")) else {
                continue;
            };
            if !self.algorithms().contains(&algorithm) {
                continue;
            }
            let Some(issued) = nonce
                .split_once('.')
                .and_then(|(t, _)| u64::from_str_radix(t, 16).ok())
            else {
                continue;
            };
            if !constant_time_eq(self.nonce(issued).as_bytes(), nonce.as_bytes()) {
                continue;
            }
            if now_s.saturating_sub(issued) > NONCE_LIFETIME.as_secs() {
                stale = true;
                continue;
            }
            let Some(user) = self.config.users.iter().find(|u| u.name == username) else {
                continue;
            };
            let ha1 = algorithm.hash(&format!(
                "{}:{}:{}",
                user.name, self.config.realm, user.password
            ));
            let ha2 = algorithm.hash(&format!("{method}:{uri}"));
            let expected = match (get("qop"), get("nc"), get("cnonce")) {
                (Some(qop), Some(nc), Some(cnonce)) if qop.eq_ignore_ascii_case("auth") => {
                    algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
                }
                (None, _, _) => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
                _ => continue,
            };
            if constant_time_eq(
                expected.as_bytes(),
                response.to_ascii_lowercase().as_bytes(),
            ) {
                return Verdict::Authenticated(user.name.clone());
            }
        }
        Verdict::Challenge { stale }
    }
}

/// Parses `name="value", name=value` pairs.
fn parse_params(text: &str) -> Vec<(String, String)> {
    crate::message::split_commas(text)
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim().to_string(), value.to_string()))
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Computes a client's `Authorization` (or `Proxy-Authorization`) value for a challenge: the
/// bridge answering a trunk's or proxy's 401/407, and the tests' callers. `None` when the
/// challenge is not one we can answer (not Digest, an unknown algorithm, `auth-int` only).
/// With `qop=auth` offered the answer uses it (nc 1, `cnonce`); without, RFC 2069's form. An
/// `opaque` is echoed.
pub fn answer(
    challenge: &str,
    method: &str,
    uri: &str,
    user: &User,
    cnonce: &str,
) -> Option<String> {
    let (scheme, params) = challenge.trim_start().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let p = parse_params(params);
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let (realm, nonce) = (get("realm")?, get("nonce")?);
    let algorithm = match get("algorithm") {
        None => Algorithm::Md5,
        Some(name) => Algorithm::from_name(&name)?,
    };
    let qop = match get("qop") {
        None => false,
        Some(list)
            if list
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("auth")) =>
        {
            true
        }
        Some(_) => return None,
    };
    let ha1 = algorithm.hash(&format!("{}:{realm}:{}", user.name, user.password));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let response = if qop {
        algorithm.hash(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"))
    } else {
        algorithm.hash(&format!("{ha1}:{nonce}:{ha2}"))
    };
    let mut value = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        user.name,
        algorithm.name()
    );
    if qop {
        let _ = write!(value, ", qop=auth, nc=00000001, cnonce=\"{cnonce}\"");
    }
    if let Some(opaque) = get("opaque") {
        let _ = write!(value, ", opaque=\"{opaque}\"");
    }
    Some(value)
}

/// The challenge to answer among a response's: a Digest one with the strongest algorithm we
/// know (SHA-256, then MD5, which is also what no `algorithm` means).
pub fn pick_challenge<'a>(challenges: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    challenges
        .filter_map(|challenge| {
            let (scheme, params) = challenge.trim_start().split_once(char::is_whitespace)?;
            if !scheme.eq_ignore_ascii_case("Digest") {
                return None;
            }
            let algorithm = parse_params(params)
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("algorithm"))
                .map(|(_, v)| v);
            let rank = match algorithm.as_deref().map(Algorithm::from_name) {
                None | Some(Some(Algorithm::Md5)) => 1,
                Some(Some(Algorithm::Sha256)) => 2,
                Some(None) => return None,
            };
            Some((rank, challenge))
        })
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, challenge)| challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let user = User {
            name: "alice".into(),
            password: "s3cret".into(),
        };
        let config = AuthConfig {
            required: true,
            realm: "roundtable".into(),
            users: vec![user],
            algorithms: Vec::new(),
        };
        Authenticator::new(config, 42)
    }

    #[test]
    fn answers_without_qop_echo_opaque_and_refuse_unknown_algorithms() {
        let user = User {
            name: "bob".into(),
            password: "zanzibar".into(),
        };
        // RFC 2617 3.5's example, without qop (RFC 2069 form): H(H(A1):nonce:H(A2)).
        let challenge = r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let value = answer(challenge, "GET", "/dir/index.html", &user, "x").unwrap();
        let ha1 = Algorithm::Md5.hash("bob:testrealm@host.com:zanzibar");
        let ha2 = Algorithm::Md5.hash("GET:/dir/index.html");
        let expected =
            Algorithm::Md5.hash(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}"));
        assert!(
            value.contains(&format!("response=\"{expected}\"")),
            "{value}"
        );
        assert!(value.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(!value.contains("qop"));
        assert!(
            answer(
                r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#,
                "INVITE",
                "sip:a@b",
                &user,
                "x"
            )
            .is_none()
        );
        assert!(
            answer(
                r#"Digest realm="r", nonce="n", qop="auth-int""#,
                "INVITE",
                "sip:a@b",
                &user,
                "x"
            )
            .is_none()
        );
        assert!(answer(r#"Basic realm="r""#, "INVITE", "sip:a@b", &user, "x").is_none());
        let both = [
            r#"Digest realm="r", nonce="n", algorithm=MD5"#,
            r#"Digest realm="r", nonce="n", algorithm=SHA-256"#,
        ];
        assert!(
            pick_challenge(both.into_iter())
                .unwrap()
                .contains("SHA-256")
        );
    }

    #[test]
    fn sha256_and_md5_answers_are_accepted() {
        let a = auth();
        let user = User {
            name: "alice".into(),
            password: "s3cret".into(),
        };
        for challenge in a.challenges(100, false) {
            let authz = answer(&challenge, "INVITE", "sip:1000@h", &user, "abc").unwrap();
            assert_eq!(
                a.check("INVITE", &[&authz], 120),
                Verdict::Authenticated("alice".into()),
                "{challenge}"
            );
            assert_eq!(
                a.check("BYE", &[&authz], 120),
                Verdict::Challenge { stale: false },
                "method is bound"
            );
        }
    }

    #[test]
    fn wrong_password_forged_and_stale_nonces() {
        let a = auth();
        let challenge = &a.challenges(100, false)[0];
        let wrong = User {
            name: "alice".into(),
            password: "guess".into(),
        };
        let authz = answer(challenge, "INVITE", "sip:1000@h", &wrong, "abc").unwrap();
        assert_eq!(
            a.check("INVITE", &[&authz], 120),
            Verdict::Challenge { stale: false }
        );
        let forged = challenge.replace("nonce=\"64.", "nonce=\"65.");
        let user = User {
            name: "alice".into(),
            password: "s3cret".into(),
        };
        let authz = answer(&forged, "INVITE", "sip:1000@h", &user, "abc").unwrap();
        assert_eq!(
            a.check("INVITE", &[&authz], 120),
            Verdict::Challenge { stale: false }
        );
        let authz = answer(challenge, "INVITE", "sip:1000@h", &user, "abc").unwrap();
        assert_eq!(
            a.check("INVITE", &[&authz], 100 + 301),
            Verdict::Challenge { stale: true }
        );
        assert!(a.challenges(100, true)[0].ends_with("stale=true"));
    }
}
