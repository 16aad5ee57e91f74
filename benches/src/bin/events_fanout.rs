//! Event fan-out load: `--ws` WebSocket consumers (default 1,000) and `--webhooks` webhook
//! endpoints (default 10) on a running service, while `--rate` API actions a second (default
//! 200, each an `api_action` event) are made for `--seconds` (default 30). Run it beside
//! `rtp_load` to have the mixer busy with legs, and once with `--ws 0 --webhooks 0 --rate 0`
//! for the baseline.
//!
//! ```text
//! roundtable serve --config load.toml        # api.rate_limit_per_s = 0, log.level = "warn"
//! rtp_load --sip 127.0.0.1:5060 --legs 500 --room-size 10 --seconds 60 &
//! events_fanout --api 127.0.0.1:8080 --pid $(pidof roundtable) --seconds 30
//! ```
//!
//! It reports the service's CPU seconds over the run (from `/proc/<pid>/stat`) and per event
//! delivered, the mixer's skipped ticks and tick lateness p99 over the run (from `/metrics`),
//! and the latency from each event (its `at`, to the millisecond) to its arrival at a WebSocket
//! consumer and at a webhook receiver (p50, p99, max).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use roundtable_benches::{histogram_buckets, quantile_between};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
struct Args {
    api: SocketAddr,
    token: Option<String>,
    pid: Option<u32>,
    ws: usize,
    webhooks: usize,
    rate: u32,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        api: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        token: None,
        pid: None,
        ws: 1000,
        webhooks: 10,
        rate: 200,
        seconds: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--api" => args.api = value.parse().map_err(|e| bad(&e))?,
            "--token" => args.token = Some(value),
            "--pid" => args.pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--ws" => args.ws = value.parse().map_err(|e| bad(&e))?,
            "--webhooks" => args.webhooks = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Milliseconds from each event's `at` to its arrival, per consumer kind.
#[derive(Default)]
struct Latencies {
    ws: Vec<u32>,
    webhooks: Vec<u32>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn latency_of(body: &str) -> Option<u32> {
    let event: serde_json::Value = serde_json::from_str(body).ok()?;
    if event["type"] != "api_action" {
        return None;
    }
    let at = roundtable_recorder::time::parse_rfc3339(event["at"].as_str()?)?;
    let at_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(now_ms().saturating_sub(at_ms) as u32)
}

/// One HTTP/1.1 request on a fresh connection; the status.
async fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(api).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, answer))
}

/// A webhook receiver: HTTP/1.1 with keep-alive, 204 to everything, latency of each event.
async fn receive(listener: TcpListener, latencies: Arc<Mutex<Latencies>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let latencies = latencies.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            loop {
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let trimmed = line.trim_end();
                    if trimmed.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = trimmed.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if read.read_exact(&mut body).await.is_err() {
                    return;
                }
                if let Some(ms) = latency_of(&String::from_utf8_lossy(&body)) {
                    latencies.lock().unwrap().webhooks.push(ms);
                }
                let ok = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                if write.write_all(ok).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One WebSocket consumer of every event.
async fn consume(
    after: String,
    api: SocketAddr,
    token: Option<String>,
    latencies: Arc<Mutex<Latencies>>,
    connected: Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = match format!("ws://{api}/v1/events/ws?types=api_action&after={after}")
        .into_client_request()
    {
        Ok(r) => r,
        Err(_) => return,
    };
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.headers_mut().insert("authorization", value);
    }
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else {
        eprintln!("a WebSocket did not connect");
        return;
    };
    connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    while let Some(Ok(message)) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message
            && let Some(ms) = latency_of(&text)
        {
            latencies.lock().unwrap().ws.push(ms);
        }
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The value of a metric line `name` (summed over its label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("events_fanout: {e}");
            std::process::exit(2);
        }
    };
    let token = args.token.clone();
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let receiver = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let receiver_addr = receiver.local_addr().expect("receiver address");
    tokio::spawn(receive(receiver, latencies.clone()));
    for i in 0..args.webhooks {
        let body = serde_json::json!({"name": format!("fanout-{i}"), "url": format!("http://{receiver_addr}/hook/{i}"), "events": "api_action"});
        let (status, answer) = request(
            args.api,
            "POST",
            "/v1/webhooks",
            &body.to_string(),
            token.as_deref(),
        )
        .await
        .expect("POST /v1/webhooks");
        assert!(status == 201, "webhook endpoint not added: {answer}");
    }
    // Consumers follow from the newest event (a cursor past the end reads as the newest): the
    // run measures live fan-out, not a replay of what earlier runs left in the journal.
    let (_, page) = request(
        args.api,
        "GET",
        "/v1/events?after=999999999999",
        "",
        token.as_deref(),
    )
    .await
    .expect("GET /v1/events");
    let newest = page
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|page| page["next"].as_str().map(str::to_string))
        .unwrap_or_default();
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..args.ws {
        tokio::spawn(consume(
            newest.clone(),
            args.api,
            token.clone(),
            latencies.clone(),
            connected.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = |token: Option<String>| async move {
        request(args.api, "GET", "/metrics", "", token.as_deref())
            .await
            .map(|(_, t)| t)
            .unwrap_or_default()
    };
    let before = metrics(token.clone()).await;
    let cpu_before = args.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut sent = 0u64;
    if args.rate > 0 {
        let every = Duration::from_secs_f64(1.0 / f64::from(args.rate));
        let mut next = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(args.seconds) {
            let (api, token) = (args.api, token.clone());
            tokio::spawn(async move {
                let _ = request(
                    api,
                    "DELETE",
                    &format!("/v1/rooms/fanout{}", sent % 1000),
                    "",
                    token.as_deref(),
                )
                .await;
            });
            sent += 1;
            next += every;
            tokio::time::sleep_until(next).await;
        }
    } else {
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    }
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, args.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let after = metrics(token.clone()).await;
    let skipped = metric(&after, "roundtable_mixer_ticks_skipped_total")
        - metric(&before, "roundtable_mixer_ticks_skipped_total");
    let lateness = "roundtable_mixer_tick_lateness_seconds";
    let (p99, _) = quantile_between(
        &histogram_buckets(&before, lateness),
        &histogram_buckets(&after, lateness),
        0.99,
    );
    let closed = metric(&after, "roundtable_events_ws_lagging_closed_total")
        - metric(&before, "roundtable_events_ws_lagging_closed_total");
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.ws.sort_unstable();
    l.webhooks.sort_unstable();
    let delivered = l.ws.len() + l.webhooks.len();
    println!(
        "run: {elapsed:.1} s, {sent} events made ({} a second), {} WebSockets connected, {} webhook endpoints",
        args.rate,
        connected.load(std::sync::atomic::Ordering::Relaxed),
        args.webhooks
    );
    println!(
        "service CPU: {cpu:.2} s ({:.1} % of one core); {:.1} us per event delivered ({delivered} deliveries)",
        100.0 * cpu / elapsed,
        if delivered > 0 {
            1e6 * cpu / delivered as f64
        } else {
            f64::NAN
        }
    );
    println!(
        "mixer: {skipped} ticks skipped, tick lateness p99 <= {:.1} ms; WebSockets closed for lagging: {closed}",
        p99 * 1000.0
    );
    println!(
        "WebSocket latency ms: p50 {} p99 {} max {} ({} events)",
        percentile(&l.ws, 0.5),
        percentile(&l.ws, 0.99),
        l.ws.last().copied().unwrap_or(0),
        l.ws.len()
    );
    println!(
        "webhook latency ms: p50 {} p99 {} max {} ({} events)",
        percentile(&l.webhooks, 0.5),
        percentile(&l.webhooks, 0.99),
        l.webhooks.last().copied().unwrap_or(0),
        l.webhooks.len()
    );
    for i in 0..args.webhooks {
        let _ = request(
            args.api,
            "DELETE",
            &format!("/v1/webhooks/fanout-{i}"),
            "",
            token.as_deref(),
        )
        .await;
    }
}
