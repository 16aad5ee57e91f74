//! Where a request to a SIP URI goes (RFC 3263 §4): the addresses, ports and transports to try,
//! in order. [`plan`] and [`order_srv`] decide without IO; [`Locator`] asks DNS (SRV, then A and
//! AAAA) through hickory-resolver, on the caller's task.
//!
//! - An IP literal is its own target: the URI's port (default 5060, 5061 for `sips:`) and
//!   `transport` parameter (default UDP, TLS for `sips:`).
//! - A host name with a port: its A and AAAA records at that port.
//! - A host name without a port: SRV records (`_sip._udp`, then `_sip._tcp`; `_sips._tcp` for
//!   `sips:`, or the one transport the URI names), ordered by priority and weight (RFC 2782);
//!   without any, the host's A and AAAA records at the default port.
//!
//! NAPTR records are not consulted (RFC 3263 allows going straight to SRV when a client has
//! its own transport preference); `maddr` is ignored.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use thiserror::Error;

use crate::endpoint::Transport;
use crate::message::SipUri;

/// Most targets one lookup yields (a misconfigured zone cannot make a call try forever).
pub const MAX_TARGETS: usize = 16;

/// One place to send the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport to it.
    pub transport: Transport,
}

/// Why a URI could not be located.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LocateError {
    /// Not a `sip:`/`sips:` URI, or its host or port is malformed.
    #[error("{0:?} is not a valid sip: or sips: URI")]
    BadUri(String),
    /// A `transport` parameter we cannot use.
    #[error("{uri:?}: transport {transport:?} is not supported here (udp, tcp, tls)")]
    Transport {
        /// The URI.
        uri: String,
        /// Its transport parameter.
        transport: String,
    },
    /// DNS gave no usable answer.
    #[error("{name}: {reason}")]
    Dns {
        /// The name looked up.
        name: String,
        /// What went wrong (no records, timeout, server failure).
        reason: String,
    },
    /// The resolver could not be set up (the system configuration is unreadable).
    #[error("DNS resolver: {0}")]
    Resolver(String),
}

/// What DNS must be asked for a URI (RFC 3263 §4.1 and §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// An IP literal: no DNS.
    Direct(Target),
    /// A host name with an explicit port: its A and AAAA records.
    Address {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
        /// The transport.
        transport: Transport,
    },
    /// A host name without a port: SRV records for each service in order (the first that has
    /// records is used), else the host's A and AAAA records with `fallback` at its default
    /// port.
    Service {
        /// The host name.
        host: String,
        /// SRV names with the transport each stands for, in our order of preference.
        services: Vec<(String, Transport)>,
        /// The transport used when no SRV record exists.
        fallback: Transport,
    },
}

/// The URI's `name` parameter (`;transport=tcp`), lower-cased.
fn uri_param(uri: &str, name: &str) -> Option<String> {
    let (_, rest) = uri.split_once(':')?;
    let rest = rest.split('?').next().unwrap_or_default();
    let host_and_params = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host_and_params.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_ascii_lowercase())
    })
}

/// The default port of a transport (RFC 3261 §19.1.2).
pub fn default_port(transport: Transport) -> u16 {
    if transport == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// Splits `host[:port]` (IPv6 in brackets); `Err` for a malformed port or empty host.
fn host_and_port(host_port: &str) -> Result<(String, Option<u16>), ()> {
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(())?),
        };
        (inside.to_string(), port)
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (host_port.to_string(), None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(()))
        .transpose()?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !valid_host {
        return Err(());
    }
    Ok((host, port))
}

/// The host of a `sip:`/`sips:` URI, without brackets or port: the name a TLS server's
/// certificate must carry for a call to it (RFC 5922 §4).
pub fn uri_host(uri: &str) -> Option<String> {
    uri_host_and_port(uri).map(|(host, _)| host)
}

/// The host (without brackets) and port, if written, of a `sip:`/`sips:` URI.
pub fn uri_host_and_port(uri: &str) -> Option<(String, Option<u16>)> {
    let parsed = SipUri::parse(uri).ok()?;
    host_and_port(&parsed.host_port).ok()
}

/// A host as a URI writes it: an IPv6 address in brackets, anything else as it is.
pub fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Decides what to look up for `uri` (RFC 3263 §4.1, §4.2).
pub fn plan(uri: &str) -> Result<Plan, LocateError> {
    let bad = || LocateError::BadUri(uri.to_string());
    let parsed = SipUri::parse(uri).map_err(|_| bad())?;
    let secure = parsed.scheme == "sips";
    let named = match uri_param(uri, "transport").as_deref() {
        None => None,
        Some("udp") if !secure => Some(Transport::Udp),
        Some("tcp") if !secure => Some(Transport::Tcp),
        // `sips:` runs over TLS whatever the parameter says about TCP.
        Some("tcp" | "tls") => Some(Transport::Tls),
        Some(other) => {
            return Err(LocateError::Transport {
                uri: uri.to_string(),
                transport: other.to_string(),
            });
        }
    };
    let (host, port) = host_and_port(&parsed.host_port).map_err(|()| bad())?;
    let transport = named.unwrap_or(if secure {
        Transport::Tls
    } else {
        Transport::Udp
    });
    if let Ok(ip) = host.parse::<IpAddr>() {
        let port = port.unwrap_or(default_port(transport));
        return Ok(Plan::Direct(Target {
            addr: SocketAddr::new(ip, port),
            transport,
        }));
    }
    if host.contains(':') {
        return Err(bad());
    }
    if let Some(port) = port {
        return Ok(Plan::Address {
            host,
            port,
            transport,
        });
    }
    let service = |t: Transport| {
        let prefix = match t {
            Transport::Udp => "_sip._udp",
            Transport::Tcp => "_sip._tcp",
            Transport::Tls => "_sips._tcp",
        };
        (format!("{prefix}.{host}"), t)
    };
    let services = match named {
        Some(t) => vec![service(t)],
        None if secure => vec![service(Transport::Tls)],
        None => vec![service(Transport::Udp), service(Transport::Tcp)],
    };
    Ok(Plan::Service {
        host,
        services,
        fallback: transport,
    })
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Share of the load among records of one priority.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host to look up.
    pub target: String,
}

/// Orders SRV records as RFC 2782 says: by priority; within a priority, each next record drawn
/// with a probability proportional to its weight (`pick(n)` returns a number in `0..=n`;
/// unlike RFC 2782's literal draw in `0..=total`, a weight of 0 is then never picked before a
/// weighted record). A target of "." (the service is not offered) is dropped.
pub fn order_srv(mut records: Vec<SrvRecord>, mut pick: impl FnMut(u32) -> u32) -> Vec<SrvRecord> {
    records.retain(|r| r.target != "." && !r.target.is_empty());
    records.sort_by_key(|r| (r.priority, r.weight));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let mut group: Vec<SrvRecord> = Vec::new();
        while records.first().is_some_and(|r| r.priority == priority) {
            group.push(records.remove(0));
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            // Weight 0 everywhere: in order. Else a draw in 0..total lands on each record in
            // proportion to its weight.
            let index = match total {
                0 => 0,
                _ => {
                    let drawn = pick(total - 1).min(total - 1);
                    let mut running = 0u32;
                    group
                        .iter()
                        .position(|r| {
                            running += u32::from(r.weight);
                            running > drawn
                        })
                        .unwrap_or(0)
                }
            };
            ordered.push(group.remove(index));
        }
    }
    ordered
}

/// A random number in `0..=total` for [`order_srv`]: hashing a counter with the process's random
/// hash keys is plenty for spreading load.
fn random_pick(total: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    (hasher.finish() % (u64::from(total) + 1)) as u32
}

/// Looks SIP URIs up in DNS. Cheap to clone; share one.
#[derive(Clone)]
pub struct Locator {
    /// The resolver, or why the system's could not be set up (then only IP literals route).
    resolver: Result<TokioResolver, LocateError>,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

impl Locator {
    /// A locator asking `servers` (UDP, then TCP for truncated answers), or the system's
    /// resolvers (`/etc/resolv.conf`) when `servers` is empty. Reads the system configuration:
    /// call it at start-up. When that cannot be read, the locator still routes IP literals and
    /// [`Locator::problem`] says why host names fail.
    pub fn new(servers: &[SocketAddr]) -> Locator {
        Locator {
            resolver: Self::resolver(servers),
        }
    }

    /// Why host names cannot be looked up, if they cannot.
    pub fn problem(&self) -> Option<&LocateError> {
        self.resolver.as_ref().err()
    }

    fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, LocateError> {
        let provider = TokioRuntimeProvider::default();
        let builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| LocateError::Resolver(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
            TokioResolver::builder_with_config(config, provider)
        };
        builder
            .build()
            .map_err(|e| LocateError::Resolver(e.to_string()))
    }

    fn dns(&self) -> Result<&TokioResolver, LocateError> {
        self.resolver.as_ref().map_err(Clone::clone)
    }

    /// The targets for `uri`, in the order to try them (at most [`MAX_TARGETS`]).
    pub async fn locate(&self, uri: &str) -> Result<Vec<Target>, LocateError> {
        let mut targets = match plan(uri)? {
            Plan::Direct(target) => vec![target],
            Plan::Address {
                host,
                port,
                transport,
            } => self.addresses(&host, port, transport).await?,
            Plan::Service {
                host,
                services,
                fallback,
            } => match self.services(&services).await? {
                Some(targets) => targets,
                None => {
                    self.addresses(&host, default_port(fallback), fallback)
                        .await?
                }
            },
        };
        targets.truncate(MAX_TARGETS);
        Ok(targets)
    }

    /// The host's A and AAAA records at `port`.
    async fn addresses(
        &self,
        host: &str,
        port: u16,
        transport: Transport,
    ) -> Result<Vec<Target>, LocateError> {
        let fqdn = absolute(host);
        let ips = self
            .dns()?
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| LocateError::Dns {
                name: host.to_string(),
                reason: e.to_string(),
            })?;
        Ok(ips
            .iter()
            .map(|ip| Target {
                addr: SocketAddr::new(ip, port),
                transport,
            })
            .collect())
    }

    /// The targets of the first service with SRV records; `None` when none has any.
    async fn services(
        &self,
        services: &[(String, Transport)],
    ) -> Result<Option<Vec<Target>>, LocateError> {
        for (name, transport) in services {
            let lookup = match self.dns()?.srv_lookup(absolute(name).as_str()).await {
                Ok(lookup) => lookup,
                Err(e) if e.is_no_records_found() => continue,
                Err(e) => {
                    return Err(LocateError::Dns {
                        name: name.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            let records: Vec<SrvRecord> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == RecordType::SRV)
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_utf8().trim_end_matches('.').to_string(),
                    }),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            let mut targets = Vec::new();
            let mut last_error = None;
            for record in order_srv(records, random_pick) {
                match self
                    .addresses(&record.target, record.port, *transport)
                    .await
                {
                    Ok(found) => targets.extend(found),
                    // One SRV target not resolving leaves the others.
                    Err(e) => last_error = Some(e),
                }
                if targets.len() >= MAX_TARGETS {
                    break;
                }
            }
            return match (targets.is_empty(), last_error) {
                (true, Some(e)) => Err(e),
                _ => Ok(Some(targets)),
            };
        }
        Ok(None)
    }
}

/// `name` as an absolute DNS name (one query, no search domains).
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(addr: &str, transport: Transport) -> Plan {
        Plan::Direct(Target {
            addr: addr.parse().unwrap(),
            transport,
        })
    }

    #[test]
    fn ip_literals_need_no_dns() {
        assert_eq!(
            plan("sip:alice@192.0.2.1").unwrap(),
            direct("192.0.2.1:5060", Transport::Udp)
        );
        assert_eq!(
            plan("sip:alice@192.0.2.1:5080;transport=TCP").unwrap(),
            direct("192.0.2.1:5080", Transport::Tcp)
        );
        assert_eq!(
            plan("sips:alice@[2001:db8::1]").unwrap(),
            direct("[2001:db8::1]:5061", Transport::Tls)
        );
        assert_eq!(
            plan("sip:[::1]:5070;transport=tls").unwrap(),
            direct("[::1]:5070", Transport::Tls)
        );
    }

    #[test]
    fn the_tls_name_is_the_uri_host() {
        assert_eq!(
            uri_host("sips:a@example.com:5061").as_deref(),
            Some("example.com")
        );
        assert_eq!(uri_host("sip:[::1]:5070").as_deref(), Some("::1"));
        assert_eq!(uri_host("tel:+1555"), None);
    }

    #[test]
    fn host_names_get_srv_then_address_lookups() {
        assert_eq!(
            plan("sip:alice@example.com").unwrap(),
            Plan::Service {
                host: "example.com".into(),
                services: vec![
                    ("_sip._udp.example.com".into(), Transport::Udp),
                    ("_sip._tcp.example.com".into(), Transport::Tcp),
                ],
                fallback: Transport::Udp,
            }
        );
        assert_eq!(
            plan("sips:bob@example.com;transport=tcp").unwrap(),
            Plan::Service {
                host: "example.com".into(),
                services: vec![("_sips._tcp.example.com".into(), Transport::Tls)],
                fallback: Transport::Tls,
            }
        );
        assert_eq!(
            plan("sip:carol@pbx.example.com:5080").unwrap(),
            Plan::Address {
                host: "pbx.example.com".into(),
                port: 5080,
                transport: Transport::Udp,
            }
        );
    }

    #[test]
    fn malformed_uris_and_unknown_transports_are_refused() {
        for uri in [
            "tel:+15551234567",
            "sip:",
            "sip:a@host:99999",
            "sip:a@host:0",
            "sip:a@[::1",
            "sip:a@ho st",
            "sip:a@host:port",
            "sip:a@:5060",
        ] {
            assert_eq!(plan(uri), Err(LocateError::BadUri(uri.into())), "{uri}");
        }
        assert!(matches!(
            plan("sip:a@example.com;transport=sctp"),
            Err(LocateError::Transport { .. })
        ));
        assert!(matches!(
            plan("sips:a@example.com;transport=udp"),
            Err(LocateError::Transport { .. })
        ));
    }

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let records = vec![
            srv(20, 0, "c"),
            srv(10, 10, "a"),
            srv(10, 90, "b"),
            srv(30, 0, "."),
        ];
        let names = |picks: &[u32]| {
            let mut picks = picks.iter().copied();
            order_srv(records.clone(), |_| picks.next().unwrap())
                .into_iter()
                .map(|r| r.target)
                .collect::<Vec<_>>()
        };
        // Drawing 0..10 of 0..100 picks "a" (weight 10) first; above that, "b".
        assert_eq!(names(&[9, 0, 0]), ["a", "b", "c"]);
        assert_eq!(names(&[10, 0, 0]), ["b", "a", "c"]);
        assert_eq!(names(&[99, 0, 0]), ["b", "a", "c"]);
    }

    #[test]
    fn weights_share_the_load() {
        let records = vec![srv(10, 1, "light"), srv(10, 3, "heavy")];
        let heavy_first = (0..4000)
            .filter(|_| order_srv(records.clone(), random_pick)[0].target == "heavy")
            .count();
        // Expected 3000 of 4000 (weight 3 of 4); allow a wide margin.
        assert!((2600..3400).contains(&heavy_first), "{heavy_first}");
    }
}
