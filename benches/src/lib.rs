//! Benchmarks live in `benches/benches/`; see README.md. The load tools (`src/bin/`) share the
//! small HTTP client here.
#![deny(missing_docs)]

// epoll_create1, epoll_ctl and epoll_wait, which the standard library does not offer, each
// with its SAFETY comment.
#[allow(unsafe_code)]
pub mod epoll;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// One HTTP/1.0 request (the connection closes after the answer); returns the status and the
/// body. `timeout` bounds the wait for the answer (a long poll asks for more).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: no status in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// Like [`http`], with a JSON body in and out.
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), String> {
    let text = body.map(ToString::to_string);
    let (status, answer) = http(addr, method, path, text.as_deref(), timeout)?;
    let json = serde_json::from_str(&answer).map_err(|e| format!("{path}: {e}: {answer}"))?;
    Ok((status, json))
}

/// The sum over every series of a Prometheus histogram `name` in `metrics`: its bucket counts
/// (upper bound, cumulative count), in order.
pub fn histogram_buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(&prefix)) {
        let Some(le) = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, c)) => *c += count,
            None => buckets.push((bound, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile's bucket upper bound of the observations between two histogram snapshots
/// (from [`histogram_buckets`]), and how many there were.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let old = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, count - old)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, c)| *c);
    let wanted = total * q;
    let bound = counts
        .iter()
        .find(|(_, c)| *c >= wanted && *c > 0.0)
        .map_or(0.0, |(b, _)| *b);
    (bound, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_between_snapshots() {
        let before = "x_bucket{t=\"0\",le=\"0.001\"} 10\nx_bucket{t=\"0\",le=\"0.01\"} 10\nx_bucket{t=\"0\",le=\"+Inf\"} 10\n";
        let after = "x_bucket{t=\"0\",le=\"0.001\"} 100\nx_bucket{t=\"0\",le=\"0.01\"} 109\nx_bucket{t=\"0\",le=\"+Inf\"} 110\n\
                     x_bucket{t=\"1\",le=\"0.001\"} 0\nx_bucket{t=\"1\",le=\"0.01\"} 0\nx_bucket{t=\"1\",le=\"+Inf\"} 0\n";
        let (b, a) = (
            histogram_buckets(before, "x"),
            histogram_buckets(after, "x"),
        );
        assert_eq!(quantile_between(&b, &a, 0.5), (0.001, 100.0));
        assert_eq!(quantile_between(&b, &a, 0.99), (0.01, 100.0));
        assert_eq!(quantile_between(&b, &a, 1.0).0, f64::INFINITY);
    }
}
