//! Admission before anything else is done with a datagram or stream message: the source address
//! allow-list (`sip.allow`) and per-source rate limiting (`[sip.limits]`), both pure and driven by
//! the caller's `now`.
//!
//! Trusted sources (`sip.trusted_proxies` and the trunks' addresses) send every call of a
//! carrier, an SBC or a proxy from one address: they pass the allow-list and get their own,
//! much higher limits (`sip.limits.trusted_*`), so flood protection stays on for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most sources tracked; beyond it, idle ones are forgotten first.
const MAX_SOURCES: usize = 100_000;

/// An IPv4 or IPv6 network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address[/prefix]`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 sources match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `[sip.limits]`: a token bucket per source address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Sustained requests per second per source.
    pub requests_per_second: f64,
    /// Requests a source may send at once above the sustained rate.
    pub burst: f64,
    /// Above this many requests in one second, a source's excess is dropped unanswered.
    pub hard_limit: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            requests_per_second: 50.0,
            burst: 200.0,
            hard_limit: 500,
        }
    }
}

/// What to do with a message from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process it.
    Admit,
    /// Over the rate: answer 503 with Retry-After.
    Throttle,
    /// Far over the rate, or outside the allow-list without a way to answer: drop it.
    Drop,
    /// Outside `sip.allow`: answer 403.
    Forbidden,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    second_start: Instant,
    in_second: u32,
}

/// Sources trusted to send many calls from one address, and their limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trusted {
    /// `sip.trusted_proxies`.
    pub networks: Vec<Cidr>,
    /// `sip.limits.trusted_*`.
    pub limits: RateLimits,
}

/// The allow-list and rate limiter.
#[derive(Debug)]
pub struct Admission {
    allow: Vec<Cidr>,
    limits: RateLimits,
    trusted: Trusted,
    /// Addresses trusted besides `trusted.networks` (the trunks', as last resolved).
    trusted_addresses: std::collections::HashSet<IpAddr>,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Admission {
    /// An admission policy; an empty `allow` admits every address.
    pub fn new(allow: Vec<Cidr>, limits: RateLimits, trusted: Trusted) -> Admission {
        Admission {
            allow,
            limits,
            trusted,
            trusted_addresses: Default::default(),
            buckets: HashMap::new(),
        }
    }

    /// Replaces the trusted addresses that come and go (the trunks' next hops).
    pub fn set_trusted_addresses(&mut self, addresses: impl IntoIterator<Item = IpAddr>) {
        self.trusted_addresses = addresses.into_iter().collect();
    }

    /// Whether `source` is trusted (a configured proxy network or a trunk's address).
    pub fn is_trusted(&self, source: IpAddr) -> bool {
        self.trusted_addresses.contains(&source)
            || self.trusted.networks.iter().any(|c| c.contains(source))
    }

    /// Decides on one message from `source` at `now`.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let trusted = self.is_trusted(source);
        if !trusted && !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(source)) {
            return Verdict::Forbidden;
        }
        if self.buckets.len() >= MAX_SOURCES {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(10));
        }
        let limits = if trusted {
            self.trusted.limits
        } else {
            self.limits
        };
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: limits.burst,
            last: now,
            second_start: now,
            in_second: 0,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limits.requests_per_second).min(limits.burst);
        bucket.last = bucket.last.max(now);
        if now.saturating_duration_since(bucket.second_start) >= Duration::from_secs(1) {
            bucket.second_start = now;
            bucket.in_second = 0;
        }
        bucket.in_second = bucket.in_second.saturating_add(1);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Admit
        } else if bucket.in_second > limits.hard_limit {
            Verdict::Drop
        } else {
            Verdict::Throttle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8:1::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("192.0.2.1".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nonsense"), None);
    }

    #[test]
    fn burst_then_throttle_then_drop_and_refill() {
        let limits = RateLimits {
            requests_per_second: 10.0,
            burst: 20.0,
            hard_limit: 30,
        };
        let mut a = Admission::new(Vec::new(), limits, Trusted::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..40).map(|_| a.check(ip, t0)).collect();
        assert!(verdicts[..20].iter().all(|v| *v == Verdict::Admit));
        assert!(verdicts[20..30].iter().all(|v| *v == Verdict::Throttle));
        assert!(verdicts[30..].iter().all(|v| *v == Verdict::Drop));
        // Another source is not affected; after a second ten more are admitted.
        assert_eq!(a.check("192.0.2.2".parse().unwrap(), t0), Verdict::Admit);
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..15)
            .filter(|_| a.check(ip, t1) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn allow_list() {
        let mut a = Admission::new(
            vec![Cidr::parse("127.0.0.1/32").unwrap()],
            RateLimits::default(),
            Trusted::default(),
        );
        let now = Instant::now();
        assert_eq!(a.check("127.0.0.1".parse().unwrap(), now), Verdict::Admit);
        assert_eq!(
            a.check("127.0.0.3".parse().unwrap(), now),
            Verdict::Forbidden
        );
    }

    #[test]
    fn trusted_sources_get_their_own_limits_and_pass_the_allow_list() {
        let strict = RateLimits {
            requests_per_second: 10.0,
            burst: 20.0,
            hard_limit: 30,
        };
        let generous = RateLimits {
            requests_per_second: 1000.0,
            burst: 2000.0,
            hard_limit: 5000,
        };
        let trusted = Trusted {
            networks: vec![Cidr::parse("198.51.100.0/24").unwrap()],
            limits: generous,
        };
        let mut a = Admission::new(vec![Cidr::parse("10.0.0.0/8").unwrap()], strict, trusted);
        a.set_trusted_addresses(["203.0.113.5".parse().unwrap()]);
        let t0 = Instant::now();
        for source in ["198.51.100.7", "203.0.113.5"] {
            let ip: IpAddr = source.parse().unwrap();
            assert!(
                (0..1500).all(|_| a.check(ip, t0) == Verdict::Admit),
                "{source}: trusted, outside sip.allow, 1500 at once"
            );
        }
        let other: IpAddr = "10.1.1.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..25).map(|_| a.check(other, t0)).collect();
        assert_eq!(
            verdicts[20],
            Verdict::Throttle,
            "everyone else keeps the strict limits"
        );
        // A trunk's address that changed is no longer trusted.
        a.set_trusted_addresses([]);
        assert_eq!(
            a.check("203.0.113.5".parse().unwrap(), t0),
            Verdict::Forbidden
        );
    }
}
