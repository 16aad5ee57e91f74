//! RTP load tool: places N G.711 (PCMU) calls to a Roundtable bridge over SIP/UDP (or, with
//! `--janus http://127.0.0.1:8088/janus`, joins N plain-RTP participants to Janus AudioBridge
//! rooms through its HTTP API, for comparison; `--janus-rate` sets their `sampling_rate`, 16000
//! by default), in rooms of `--room-size`, streams 20 ms packets on every leg for `--seconds`,
//! and measures what comes back: packets, loss (sequence gaps), RFC 3550 interarrival jitter.
//! With `--pid` it reports the server's CPU seconds per participant-second; with `--api`
//! Roundtable's tick lateness p99 from `/metrics`.
//!
//! What the legs say (`--speech`):
//! - `talkers` (the default): the first `--talkers` legs of each room (3 by default) speak
//!   babble (speech-like noise bursts, a different voice each) all the time, the others send
//!   near-silence, as in a busy conference.
//! - `turns`: the members of each room speak in turn, one a second: 700 ms of babble from a
//!   syllable's start, then 300 ms of near-silence. Every other member should hear each turn:
//!   the tool reports the talk-onset latency (from the turn's first packet leaving the tool to
//!   the first loud packet, above -45 dBFS, reaching a listener, by kernel stamps) and the turns
//!   a listener never heard.
//!
//! How the legs' sockets work (`--sockets`):
//! - `shared` (the default): all legs share one local RTP socket (its receive buffer raised to
//!   64 MiB), so the tool stays cheap beside the server it measures: one thread sends every
//!   leg's packet at absolute 20 ms deadlines with `sendmmsg`, another polls everything with
//!   `recvmmsg` every millisecond and tells legs apart by the server's source address.
//! - `per-leg`: each leg has its own socket, as real phones do, and the receiving thread
//!   blocks in epoll until one is readable. Each datagram then wakes a reader, and on loopback
//!   the server's send pays for that wake-up: a cost the shared, polled socket hides.
//!
//! ```sh
//! target/release/roundtable serve --config load.toml &
//! target/release/rtp_load --sip 127.0.0.1:5060 --legs 600 --room-size 10 --seconds 30 \
//!     --sockets per-leg --speech turns --pid $(pgrep -n roundtable) --api 127.0.0.1:8080
//! ```
//!
//! Jitter uses the kernel's arrival stamps. Drops in the tool's own sockets are reported apart
//! from the server's loss. Every wait is bounded.
//!
//! With `--api`, the measurement starts once every mixer thread runs all its voice processing
//! (a burst of call set-ups can make the bridge shed some for a while), and the tool warns when
//! the bridge shed any while measured. It also reports the CPU time the hypervisor stole
//! meanwhile: on a VM, a busy host makes every figure noisier.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use roundtable_benches::epoll::Epoll;
use roundtable_media::codec::{Codec, Encoder};
use roundtable_media::udp::{ClockPair, RecvBatch, enable_stamps, send_batch, set_buffers};

/// What each leg saw of its incoming stream.
#[derive(Default, Clone)]
struct Received {
    packets: u64,
    lost: u64,
    /// 20 ms frames the server skipped: its timestamp moved on further than its sequence.
    skipped: u64,
    last_sequence: Option<u16>,
    last_timestamp: u32,
    /// RFC 3550 transit of the previous packet (8 kHz units) and the running jitter (ms).
    transit: Option<i64>,
    jitter_ms: f64,
}

/// What the receiving thread saw in all.
struct Reception {
    legs: Vec<Received>,
    /// Datagrams the tool's own sockets dropped (a buffer was full: the tool fell behind).
    tool_drops: u32,
    /// With `--speech turns`: each turn a leg heard begin (by turn number), and how long after
    /// the turn's first packet left the tool.
    onsets: Vec<HashMap<u64, Duration>>,
}

/// What the legs say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Speech {
    /// The first `--talkers` legs of each room speak all the time.
    Talkers,
    /// The members of each room speak one at a time, a turn a second.
    Turns,
}

/// A turn lasts this many ticks (1 s); its speaker talks for the first [`SPEAK_TICKS`].
const TURN_TICKS: u64 = 50;
/// 700 ms of speech, then 300 ms of near-silence before the next speaker.
const SPEAK_TICKS: u64 = 35;
/// A listener's frame at or above this RMS (dBFS) is speech heard.
const LOUD_DBFS: f64 = -45.0;
/// At or below this, quiet; after [`QUIET_TO_ARM`] quiet frames a listener awaits the next turn.
const QUIET_DBFS: f64 = -55.0;
const QUIET_TO_ARM: u32 = 5;

struct Args {
    sip: SocketAddr,
    legs: usize,
    room_size: usize,
    /// Legs per room that speak (the others send near-silence).
    talkers: usize,
    seconds: u64,
    local: IpAddr,
    pid: Option<u32>,
    api: Option<SocketAddr>,
    /// Janus's HTTP API (host:port and base path), when measuring Janus instead.
    janus: Option<(SocketAddr, String)>,
    /// The Janus rooms' `sampling_rate` (16000 matches Roundtable's default `audio.rate`;
    /// 8000 is Janus's cheapest setting for G.711 rooms).
    janus_rate: u32,
    speech: Speech,
    /// Each leg its own socket, read by a thread blocked in epoll.
    per_leg_sockets: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sip: "127.0.0.1:5060".parse().map_err(|e| format!("{e}"))?,
        legs: 100,
        room_size: 10,
        talkers: 3,
        seconds: 30,
        local: "127.0.0.1".parse().map_err(|e| format!("{e}"))?,
        pid: None,
        api: None,
        janus: None,
        janus_rate: 16000,
        speech: Speech::Talkers,
        per_leg_sockets: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--sip" => args.sip = value.parse().map_err(|e| bad(&e))?,
            "--legs" => args.legs = value.parse().map_err(|e| bad(&e))?,
            "--room-size" => args.room_size = value.parse().map_err(|e| bad(&e))?,
            "--talkers" => args.talkers = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--local" => args.local = value.parse().map_err(|e| bad(&e))?,
            "--pid" => args.pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--api" => args.api = Some(value.parse().map_err(|e| bad(&e))?),
            "--janus" => {
                let rest = value
                    .strip_prefix("http://")
                    .ok_or_else(|| bad(&"not an http:// URL"))?;
                let (host, path) = rest.split_once('/').unwrap_or((rest, "janus"));
                args.janus = Some((host.parse().map_err(|e| bad(&e))?, format!("/{path}")));
            }
            "--janus-rate" => args.janus_rate = value.parse().map_err(|e| bad(&e))?,
            "--speech" => {
                args.speech = match value.as_str() {
                    "talkers" => Speech::Talkers,
                    "turns" => Speech::Turns,
                    _ => return Err(bad(&"talkers or turns")),
                }
            }
            "--sockets" => {
                args.per_leg_sockets = match value.as_str() {
                    "shared" => false,
                    "per-leg" => true,
                    _ => return Err(bad(&"shared or per-leg")),
                }
            }
            "--bench" => {} // cargo bench passes it to every target
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.legs == 0 || args.room_size == 0 || args.seconds == 0 {
        return Err("--legs, --room-size and --seconds must be positive".into());
    }
    Ok(args)
}

/// One call's SIP and media state.
struct Leg {
    /// The server's RTP address for this leg (where we send, and where its packets come from).
    remote: SocketAddr,
    call_id: String,
    to_tag: String,
    room: String,
}

fn invite(args: &Args, sip_local: SocketAddr, call_id: &str, room: &str, rtp_port: u16) -> String {
    let sdp = format!(
        "v=0\r\no=load 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = args.local
    );
    format!(
        "INVITE sip:{room}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {sip_local};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n\
         From: <sip:load@{local}>;tag=f{call_id}\r\nTo: <sip:{room}@{sip}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:load@{sip_local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        sip = args.sip,
        local = args.local,
    )
}

fn in_dialog(
    args: &Args,
    sip_local: SocketAddr,
    leg: &Leg,
    method: &str,
    cseq: u32,
    branch: &str,
) -> String {
    format!(
        "{method} sip:{room}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {sip_local};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:load@{local}>;tag=f{id}\r\nTo: <sip:{room}@{sip}>;tag={to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        room = leg.room,
        sip = args.sip,
        local = args.local,
        id = leg.call_id,
        to = leg.to_tag,
    )
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Places every call, one at a time (each within 5 s); call `i` offers RTP port `ports[i]`.
fn place_calls(args: &Args, sip: &UdpSocket, ports: &[u16]) -> Result<Vec<Leg>, String> {
    let sip_local = sip.local_addr().map_err(|e| e.to_string())?;
    sip.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut legs = Vec::with_capacity(args.legs);
    let mut buf = vec![0u8; 65536];
    for (i, &port) in ports.iter().enumerate() {
        let room = format!("load{}", i / args.room_size);
        let call_id = format!("load{}x{}", std::process::id(), i);
        sip.send_to(
            invite(args, sip_local, &call_id, &room, port).as_bytes(),
            args.sip,
        )
        .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let answer = loop {
            if Instant::now() > deadline {
                return Err(format!("call {i}: no final response within 5 s"));
            }
            let Ok((n, _)) = sip.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if header(&text, "Call-ID") != Some(call_id.as_str()) {
                continue;
            }
            let code: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if code >= 200 {
                if code != 200 {
                    return Err(format!(
                        "call {i}: {}",
                        text.lines().next().unwrap_or_default()
                    ));
                }
                break text;
            }
        };
        let to_tag = header(&answer, "To")
            .and_then(|t| t.split(";tag=").nth(1))
            .unwrap_or_default()
            .to_string();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let ip = body
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .and_then(|a| a.trim().parse::<IpAddr>().ok());
        let media_port = body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|m| m.split(' ').next()?.parse::<u16>().ok());
        let (Some(ip), Some(media_port)) = (ip, media_port) else {
            return Err(format!("call {i}: no media address in the answer"));
        };
        let leg = Leg {
            remote: SocketAddr::new(ip, media_port),
            call_id,
            to_tag,
            room,
        };
        sip.send_to(
            in_dialog(
                args,
                sip_local,
                &leg,
                "ACK",
                1,
                &format!("{}a", leg.call_id),
            )
            .as_bytes(),
            args.sip,
        )
        .map_err(|e| e.to_string())?;
        legs.push(leg);
    }
    Ok(legs)
}

/// Distinct babble voices; the talkers of one room always get different ones.
const BABBLE_VOICES: u64 = 16;

/// The machine's CPU time stolen by the hypervisor and its total CPU time, in clock ticks
/// (`/proc/stat`): on a VM, steal shows when the host was busy and every figure is noisier.
fn steal_and_total() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some((*fields.get(7)?, fields.iter().take(8).sum()))
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A Prometheus histogram family's cumulative bucket counts (summed over its label sets), by
/// upper bound.
fn histogram_buckets(metrics: &str, name: &str) -> Option<HashMap<String, f64>> {
    let mut buckets: HashMap<String, f64> = HashMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
    {
        let le = line.split("le=\"").nth(1)?.split('"').next()?.to_string();
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        *buckets.entry(le).or_default() += count;
    }
    Some(buckets)
}

/// p99 of a Prometheus histogram family over what it observed between `before` (the media's
/// start: call set-up is not measured) and `after`, from its buckets.
fn histogram_p99(before: Option<&str>, after: &str, name: &str) -> Option<f64> {
    let mut buckets = histogram_buckets(after, name)?;
    if let Some(before) = before.and_then(|b| histogram_buckets(b, name)) {
        for (le, count) in before {
            if let Some(c) = buckets.get_mut(&le) {
                *c -= count;
            }
        }
    }
    let mut sorted: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(le, c)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                },
                c,
            )
        })
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    sorted
        .iter()
        .find(|(_, c)| *c >= 0.99 * total)
        .map(|(le, _)| *le)
}

/// The values of every sample of one metric family (`name` with or without labels).
fn metric_values<'a>(metrics: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    metrics
        .lines()
        .filter(move |l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// At most this much media before the measurement (120 s).
const WARM_UP_MAX_TICKS: u64 = 6000;

fn fetch_metrics(api: SocketAddr) -> Option<String> {
    roundtable_benches::http(api, "GET", "/metrics", None, Duration::from_secs(5))
        .ok()
        .map(|(_, body)| body)
}

/// One HTTP request to Janus; returns the JSON body.
fn janus_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, String> {
    roundtable_benches::http_json(addr, method, path, body, Duration::from_secs(40))
        .map(|(_, json)| json)
        .map_err(|e| format!("janus: {e}"))
}

/// Joins every leg as a plain-RTP participant of Janus AudioBridge rooms (PCMU, 16 kHz
/// mixing); leg `i` receives on RTP port `ports[i]`.
fn join_janus(
    args: &Args,
    addr: SocketAddr,
    base: &str,
    ports: &[u16],
) -> Result<(Vec<Leg>, u64), String> {
    let tx = || serde_json::json!(format!("t{}", Instant::now().elapsed().as_nanos()));
    let created = janus_http(
        addr,
        "POST",
        base,
        Some(&serde_json::json!({"janus": "create", "transaction": tx()})),
    )?;
    let session = created["data"]["id"]
        .as_u64()
        .ok_or_else(|| format!("janus create: {created}"))?;
    let session_path = format!("{base}/{session}");
    let mut legs = Vec::with_capacity(args.legs);
    for (i, &port) in ports.iter().enumerate() {
        let attached = janus_http(
            addr,
            "POST",
            &session_path,
            Some(
                &serde_json::json!({"janus": "attach", "plugin": "janus.plugin.audiobridge", "transaction": tx()}),
            ),
        )?;
        let handle = attached["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus attach: {attached}"))?;
        let handle_path = format!("{session_path}/{handle}");
        let room = u64::from(std::process::id()) * 10_000 + (i / args.room_size) as u64;
        if i % args.room_size == 0 {
            let body = serde_json::json!({"request": "create", "room": room, "sampling_rate": args.janus_rate, "audiocodec": "pcmu",
                "allow_rtp_participants": true, "permanent": false});
            let reply = janus_http(
                addr,
                "POST",
                &handle_path,
                Some(&serde_json::json!({"janus": "message", "transaction": tx(), "body": body})),
            )?;
            if reply["plugindata"]["data"]["audiobridge"] != "created" {
                return Err(format!("janus create room: {reply}"));
            }
        }
        let body = serde_json::json!({"request": "join", "room": room, "display": format!("load{i}"), "codec": "pcmu",
            "rtp": {"ip": args.local.to_string(), "port": port, "payload_type": 0}});
        janus_http(
            addr,
            "POST",
            &handle_path,
            Some(&serde_json::json!({"janus": "message", "transaction": tx(), "body": body})),
        )?;
        // The join's answer (where to send) arrives as an event on the session.
        let deadline = Instant::now() + Duration::from_secs(10);
        let remote = loop {
            if Instant::now() > deadline {
                return Err(format!("janus join {i}: no answer within 10 s"));
            }
            let events = janus_http(addr, "GET", &format!("{session_path}?maxev=50"), None)?;
            let events = match events {
                serde_json::Value::Array(list) => list,
                one => vec![one],
            };
            let found = events.iter().find_map(|e| {
                let data = &e["plugindata"]["data"];
                (e["sender"].as_u64() == Some(handle) && data["audiobridge"] == "joined").then(
                    || {
                        let ip = data["rtp"]["ip"].as_str()?.parse::<IpAddr>().ok()?;
                        Some(SocketAddr::new(
                            ip,
                            u16::try_from(data["rtp"]["port"].as_u64()?).ok()?,
                        ))
                    },
                )
            });
            if let Some(found) = found {
                break found
                    .ok_or_else(|| format!("janus join {i}: no rtp address in the answer"))?;
            }
        };
        legs.push(Leg {
            remote,
            call_id: String::new(),
            to_tag: String::new(),
            room: room.to_string(),
        });
    }
    Ok((legs, session))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rtp_load: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("rtp_load: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let sip = UdpSocket::bind((args.local, 0)).map_err(|e| e.to_string())?;
    let sockets = Sockets::open(args)?;
    let ports: Vec<u16> = (0..args.legs).map(|i| sockets.port(i)).collect();
    let started = Instant::now();
    let (legs, janus_session) = match &args.janus {
        Some((addr, base)) => {
            join_janus(args, *addr, base, &ports).map(|(legs, session)| (legs, Some(session)))?
        }
        None => (place_calls(args, &sip, &ports)?, None),
    };
    println!(
        "placed {} calls in {:.1} s ({} sockets)",
        legs.len(),
        started.elapsed().as_secs_f64(),
        if args.per_leg_sockets {
            "one per leg"
        } else {
            "one shared"
        }
    );

    // Media: every leg one packet per 20 ms, at absolute deadlines from `media_start`.
    // Each talker of a room speaks its own babble (speech-like noise bursts, see `roundtable_mixer::babble`):
    // recordings would repeat between talkers, and correlated talkers look like echo.
    let voices = Voices::new()?;
    let media_start = Instant::now() + Duration::from_millis(100);

    // The receiver counts from the measurement's start (`measuring`) until told to stop, at
    // most until the longest run could last.
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let reader = sockets.reader()?;
        let remotes: Vec<SocketAddr> = legs.iter().map(|l| l.remote).collect();
        let latest =
            Instant::now() + Duration::from_secs(WARM_UP_MAX_TICKS / 50 + args.seconds + 10);
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let turns = (args.speech == Speech::Turns).then_some(media_start);
        std::thread::spawn(move || {
            let mut reception = Receiver::new(&remotes, turns);
            reception.run(reader, &measuring, &stop, latest);
            reception.finish()
        })
    };

    let mut late_sends = 0u64;
    let mut arena: Vec<u8> = Vec::with_capacity(legs.len() * 200);
    let mut ends: Vec<usize> = Vec::with_capacity(legs.len());
    let mut send_tick = |tick: u64| {
        let deadline = media_start + Duration::from_millis(20 * tick);
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else if Instant::now() - deadline > Duration::from_millis(10) {
            late_sends += 1;
        }
        arena.clear();
        ends.clear();
        for i in 0..legs.len() {
            let payload = voices.payload(args, i, tick);
            arena.extend_from_slice(&[0x80, 0]);
            arena.extend_from_slice(&(tick as u16).to_be_bytes());
            arena.extend_from_slice(&((tick as u32) * 160).to_be_bytes());
            arena.extend_from_slice(&(0x4c00_0000u32 | i as u32).to_be_bytes());
            arena.extend_from_slice(payload);
            ends.push(arena.len());
        }
        let mut datagrams = Vec::with_capacity(legs.len());
        let mut begin = 0;
        for (leg, &end) in legs.iter().zip(&ends) {
            datagrams.push((leg.remote, &arena[begin..end]));
            begin = end;
        }
        sockets.send(&datagrams);
    };
    // Warm-up: the measurement starts once the bridge runs all its voice processing again (a
    // burst of call set-ups can overload it, and its mixer threads then shed noise suppression
    // and echo cancellation for a while; see the mixer's governor). Media flows meanwhile.
    let mut tick = 0;
    if let Some(api) = args.api {
        let warm_until = tick + WARM_UP_MAX_TICKS;
        while tick < warm_until
            && !fetch_metrics(api).is_some_and(|m| {
                metric_values(&m, "roundtable_mixer_degradation_level").all(|l| l == 0.0)
            })
        {
            for _ in 0..50 {
                send_tick(tick);
                tick += 1;
            }
        }
        if tick >= warm_until {
            return Err(format!(
                "the bridge still sheds voice processing after {} s of media",
                WARM_UP_MAX_TICKS / 50
            ));
        }
        println!(
            "warm-up: {:.1} s of media until the bridge ran all its voice processing",
            tick as f64 / 50.0
        );
    }
    // Turns are measured whole, after at least one: a listener takes a turn's beginning from
    // the quiet before it, which the very first turn lacks.
    if args.speech == Speech::Turns {
        while tick < TURN_TICKS || !tick.is_multiple_of(TURN_TICKS) {
            send_tick(tick);
            tick += 1;
        }
    }
    let metrics_start = args.api.and_then(fetch_metrics);
    let cpu_start = args.pid.and_then(cpu_seconds);
    let steal_start = steal_and_total();
    let measure_start = Instant::now();
    let first_measured_tick = tick;
    measuring.store(true, Ordering::Relaxed);
    for _ in 0..args.seconds * 50 {
        send_tick(tick);
        tick += 1;
    }
    let elapsed = measure_start.elapsed().as_secs_f64();
    let cpu = args
        .pid
        .and_then(cpu_seconds)
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    let steal = steal_and_total()
        .zip(steal_start)
        .map(|((s1, t1), (s0, t0))| 100.0 * (s1 - s0) as f64 / (t1 - t0).max(1) as f64);
    // The bridge keeps sending until the calls end, 1 s after the media stopped.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let reception = receiver
        .join()
        .map_err(|_| "the receiving thread panicked".to_string())?;

    let metrics = args.api.and_then(fetch_metrics);
    match (&args.janus, janus_session) {
        (Some((addr, base)), Some(session)) => {
            let _ = janus_http(
                *addr,
                "POST",
                &format!("{base}/{session}"),
                Some(&serde_json::json!({"janus": "destroy", "transaction": "end"})),
            );
        }
        _ => {
            let sip_local = sip.local_addr().map_err(|e| e.to_string())?;
            for (i, leg) in legs.iter().enumerate() {
                let _ = sip.send_to(
                    in_dialog(
                        args,
                        sip_local,
                        leg,
                        "BYE",
                        2,
                        &format!("{}b{i}", leg.call_id),
                    )
                    .as_bytes(),
                    args.sip,
                );
            }
        }
    }

    let received = &reception.legs;
    let total: u64 = received.iter().map(|r| r.packets).sum();
    let lost: u64 = received.iter().map(|r| r.lost).sum();
    let skipped: u64 = received.iter().map(|r| r.skipped).sum();
    let mut jitters: Vec<f64> = received.iter().map(|r| r.jitter_ms).collect();
    jitters.sort_by(f64::total_cmp);
    let expected = legs.len() as f64 * (elapsed + 1.0) * 50.0;
    match args.speech {
        Speech::Talkers => println!(
            "legs {} (rooms of {}, {} talking), {:.1} s of media",
            legs.len(),
            args.room_size,
            args.talkers.min(args.room_size),
            elapsed
        ),
        Speech::Turns => println!(
            "legs {} (rooms of {}, speaking in turns), {:.1} s of media",
            legs.len(),
            args.room_size,
            elapsed
        ),
    }
    println!(
        "received {total} packets ({:.1} % of {expected:.0}), lost {lost} ({:.3} %), sender late ticks {late_sends}, tool socket drops {}",
        100.0 * total as f64 / expected,
        100.0 * lost as f64 / (total + lost).max(1) as f64,
        reception.tool_drops
    );
    println!(
        "frames the server skipped (timestamp jumps): {skipped} ({:.2} % of the packets)",
        100.0 * skipped as f64 / total.max(1) as f64
    );
    println!(
        "receive jitter ms: median {:.2}, p99 {:.2}, max {:.2}",
        percentile(&jitters, 50),
        percentile(&jitters, 99),
        jitters.last().copied().unwrap_or(0.0)
    );
    if args.speech == Speech::Turns {
        report_turns(
            args,
            &reception,
            first_measured_tick / TURN_TICKS,
            tick / TURN_TICKS,
        );
    }
    if let Some(cpu) = cpu {
        let participant_seconds = legs.len() as f64 * elapsed;
        println!(
            "server CPU {cpu:.1} s over {elapsed:.1} s ({:.0} % of a core): {:.2} ms of CPU per participant-second",
            100.0 * cpu / elapsed,
            1000.0 * cpu / participant_seconds
        );
    }
    if let Some(steal) = steal {
        println!(
            "CPU stolen by the hypervisor while measured: {steal:.1} % of the machine's CPU time"
        );
    }
    if let Some(metrics) = metrics {
        let p99 = histogram_p99(
            metrics_start.as_deref(),
            &metrics,
            "roundtable_mixer_tick_lateness_seconds",
        );
        let skipped = metrics
            .lines()
            .find(|l| l.starts_with("roundtable_mixer_ticks_skipped_total"))
            .unwrap_or_default();
        let steps =
            |m: &str| -> f64 { metric_values(m, "roundtable_mixer_degradations_total").sum() };
        let shed = steps(&metrics) - metrics_start.as_deref().map_or(0.0, steps);
        println!(
            "bridge tick lateness p99 (measured part) <= {} s; {skipped}",
            p99.map_or("?".into(), |p| p.to_string())
        );
        if shed > 0.0 {
            println!(
                "WARNING: the bridge shed voice processing {shed} times while measured: its CPU figure is not at full processing"
            );
        } else {
            println!("full voice processing throughout the measurement");
        }
    }
    Ok(())
}

/// The `p`th percentile of sorted values (0 when there are none).
fn percentile<T: Copy + Default>(sorted: &[T], p: usize) -> T {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The turns measured whole (`first..end`): how many each listener heard, and how soon.
fn report_turns(args: &Args, reception: &Reception, first: u64, end: u64) {
    let mut latencies: Vec<Duration> = Vec::new();
    let (mut expected, mut missed) = (0u64, 0u64);
    // Per room and turn, the listeners that never heard it.
    let mut missed_turns: std::collections::BTreeMap<(usize, u64), u64> = Default::default();
    for (leg, onsets) in reception.onsets.iter().enumerate() {
        for turn in first..end {
            if speaker_seat(args, turn) == leg % args.room_size
                || leg / args.room_size * args.room_size + speaker_seat(args, turn)
                    >= reception.legs.len()
            {
                continue;
            }
            expected += 1;
            match onsets.get(&turn) {
                Some(latency) => latencies.push(*latency),
                None => {
                    missed += 1;
                    *missed_turns
                        .entry((leg / args.room_size, turn - first))
                        .or_default() += 1;
                }
            }
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "turns: {} measured, {expected} listener-turns, {missed} never heard",
        end.saturating_sub(first),
    );
    for ((room, turn), listeners) in missed_turns.iter().take(10) {
        println!("  room {room}, measured turn {turn}: {listeners} listeners never heard it");
    }
    println!(
        "talk-onset latency ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 90)),
        ms(percentile(&latencies, 99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
}

/// The seat (index within its room) that speaks in `turn`.
fn speaker_seat(args: &Args, turn: u64) -> usize {
    (turn % args.room_size as u64) as usize
}

/// The babble voices, PCMU-encoded, and where each voice's syllables start.
struct Voices {
    /// Frames of each voice.
    recordings: Vec<Vec<Vec<u8>>>,
    /// In each voice, frames that start a syllable of at least 80 ms after a pause: a turn
    /// starts at one, so its first packet is already speech.
    syllables: Vec<Vec<usize>>,
    quiet: Vec<u8>,
}

impl Voices {
    fn new() -> Result<Voices, String> {
        let mut encoder =
            Encoder::new(Codec::Pcmu, 8000, Default::default()).map_err(|e| e.to_string())?;
        let mut recordings = Vec::new();
        let mut syllables = Vec::new();
        for seed in 0..BABBLE_VOICES {
            let frames = roundtable_mixer::babble::babble(seed, 8000, 1000);
            let loud = |frame: &[i16]| dbfs(frame) >= -40.0;
            syllables.push(
                (1..frames.len().saturating_sub(4))
                    .filter(|&k| {
                        frames[k - 1].iter().all(|s| *s == 0)
                            && frames[k..k + 4].iter().all(|f| loud(f))
                    })
                    .collect::<Vec<_>>(),
            );
            let mut payloads = Vec::new();
            for frame in &frames {
                let mut p = Vec::new();
                encoder.encode(frame, &mut p).map_err(|e| e.to_string())?;
                payloads.push(p);
            }
            recordings.push(payloads);
        }
        if syllables.iter().any(Vec::is_empty) {
            return Err("a babble voice without a syllable onset".into());
        }
        let mut quiet = Vec::new();
        encoder
            .encode(&[1i16; 160], &mut quiet)
            .map_err(|e| e.to_string())?;
        Ok(Voices {
            recordings,
            syllables,
            quiet,
        })
    }

    /// What leg `i` sends at `tick`.
    fn payload(&self, args: &Args, i: usize, tick: u64) -> &[u8] {
        let (room, seat) = (i / args.room_size, i % args.room_size);
        let voice = (room * 7 + seat) % self.recordings.len();
        let frames = &self.recordings[voice];
        match args.speech {
            Speech::Talkers if seat < args.talkers => {
                &frames[(tick as usize + i * 37) % frames.len()]
            }
            Speech::Turns => {
                let turn = tick / TURN_TICKS;
                let into = tick % TURN_TICKS;
                if speaker_seat(args, turn) != seat || into >= SPEAK_TICKS {
                    return &self.quiet;
                }
                let starts = &self.syllables[voice];
                let start = starts[(turn as usize / args.room_size + i) % starts.len()];
                &frames[(start + into as usize) % frames.len()]
            }
            Speech::Talkers => &self.quiet,
        }
    }
}

/// A frame's RMS level, dBFS.
fn dbfs(samples: &[i16]) -> f64 {
    let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    10.0 * (energy / samples.len().max(1) as f64 / (32768.0f64 * 32768.0))
        .max(1e-12)
        .log10()
}

/// The tool's RTP sockets.
enum Sockets {
    /// One for every leg, with 64 MiB buffers each way (forced past `rmem_max` when root, else
    /// as much as the system allows).
    Shared(UdpSocket),
    /// One per leg, with the system's default buffers.
    PerLeg(Vec<UdpSocket>),
}

impl Sockets {
    fn open(args: &Args) -> Result<Sockets, String> {
        let bind = || -> Result<UdpSocket, String> {
            let socket =
                UdpSocket::bind((args.local, 0)).map_err(|e| format!("RTP socket: {e}"))?;
            enable_stamps(&socket).map_err(|e| format!("RTP socket stamps: {e}"))?;
            Ok(socket)
        };
        if args.per_leg_sockets {
            return (0..args.legs)
                .map(|_| bind())
                .collect::<Result<_, _>>()
                .map(Sockets::PerLeg);
        }
        let socket = bind()?;
        set_buffers(&socket, 64 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        Ok(Sockets::Shared(socket))
    }

    /// The RTP port leg `i` offers.
    fn port(&self, i: usize) -> u16 {
        let socket = match self {
            Sockets::Shared(socket) => socket,
            Sockets::PerLeg(sockets) => &sockets[i],
        };
        socket.local_addr().map_or(0, |a| a.port())
    }

    /// Sends one tick's packets, leg `i`'s from its socket. Blocking sends: a full buffer
    /// waits; a failure drops the rest of this tick (bounded).
    fn send(&self, datagrams: &[(SocketAddr, &[u8])]) {
        match self {
            Sockets::Shared(socket) => {
                let mut sent = 0;
                for _ in 0..datagrams.len().max(1) {
                    match send_batch(socket, &datagrams[sent..]) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                    if sent >= datagrams.len() {
                        break;
                    }
                }
            }
            Sockets::PerLeg(sockets) => {
                for (socket, (to, bytes)) in sockets.iter().zip(datagrams) {
                    let _ = socket.send_to(bytes, to);
                }
            }
        }
    }

    /// The receiving thread's handles on the same sockets.
    fn reader(&self) -> Result<Reader, String> {
        let clone = |s: &UdpSocket| s.try_clone().map_err(|e| e.to_string());
        Ok(match self {
            Sockets::Shared(socket) => Reader::Shared(clone(socket)?),
            Sockets::PerLeg(sockets) => {
                let sockets: Vec<UdpSocket> =
                    sockets.iter().map(clone).collect::<Result<_, _>>()?;
                let mut epoll = Epoll::new(sockets.len()).map_err(|e| format!("epoll: {e}"))?;
                for (i, socket) in sockets.iter().enumerate() {
                    epoll
                        .add(socket, i as u64)
                        .map_err(|e| format!("epoll: {e}"))?;
                }
                // Nothing can be ready yet; an empty first wait checks the set works.
                let _ = epoll
                    .wait(Duration::ZERO)
                    .map_err(|e| format!("epoll: {e}"))?
                    .count();
                Reader::PerLeg(sockets, epoll)
            }
        })
    }
}

/// How the receiving thread reads.
enum Reader {
    /// Polls the shared socket every millisecond.
    Shared(UdpSocket),
    /// Blocks in epoll on the legs' sockets; a socket's token is its leg.
    PerLeg(Vec<UdpSocket>, Epoll),
}

/// The receiving thread's accounts.
struct Receiver {
    legs: Vec<Received>,
    tool_drops: u32,
    /// Leg by the server's address for it (the shared socket tells legs apart by source).
    index: HashMap<SocketAddr, usize>,
    /// The first arrival: the fixed origin of every leg's transit.
    origin: Option<Instant>,
    /// With turns: when the media started (turn `n` starts `n` seconds after), and per leg the
    /// turns heard begin and its listening state.
    turns_start: Option<Instant>,
    onsets: Vec<HashMap<u64, Duration>>,
    listening: Vec<Listening>,
    counting: bool,
}

/// A listener's state between turns.
#[derive(Clone, Copy, Default)]
struct Listening {
    /// Quiet frames in a row.
    quiet: u32,
    /// It heard quiet long enough to take the next loud frame as a turn's beginning.
    armed: bool,
}

impl Receiver {
    fn new(remotes: &[SocketAddr], turns: Option<Instant>) -> Receiver {
        Receiver {
            legs: vec![Received::default(); remotes.len()],
            tool_drops: 0,
            index: remotes.iter().enumerate().map(|(i, r)| (*r, i)).collect(),
            origin: None,
            turns_start: turns,
            onsets: vec![HashMap::new(); remotes.len()],
            listening: vec![Listening::default(); remotes.len()],
            counting: false,
        }
    }

    /// Reads until `stop` or `latest`, counting from when `measuring` is set.
    fn run(&mut self, reader: Reader, measuring: &AtomicBool, stop: &AtomicBool, latest: Instant) {
        let mut batch = RecvBatch::new(64);
        match reader {
            Reader::Shared(socket) => {
                while !stop.load(Ordering::Relaxed) && Instant::now() < latest {
                    self.check_measuring(measuring);
                    // Polls instead of blocking: a thread blocked on the socket would be woken
                    // by each datagram, and on loopback that wake-up is charged to the server's
                    // send (an IPI per packet in a VM). Arrival times come from the kernel's
                    // stamps, so polling does not change the jitter measured.
                    let Ok(n) = batch.recv(&socket, false) else {
                        continue;
                    };
                    if n == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    self.batch(&batch, None);
                }
            }
            Reader::PerLeg(sockets, mut epoll) => {
                let mut ready = Vec::with_capacity(sockets.len());
                while !stop.load(Ordering::Relaxed) && Instant::now() < latest {
                    self.check_measuring(measuring);
                    ready.clear();
                    match epoll.wait(Duration::from_millis(100)) {
                        Ok(tokens) => ready.extend(tokens),
                        Err(_) => break,
                    }
                    for &leg in &ready {
                        let socket = &sockets[leg as usize];
                        // Bounded: a socket holds at most its buffer's worth.
                        for _ in 0..64 {
                            match batch.recv(socket, false) {
                                Ok(0) | Err(_) => break,
                                Ok(_) => self.batch(&batch, Some(leg as usize)),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Once the warm-up is over, counts from zero, keeping each leg's last sequence number and
    /// transit so that the first measured packet is judged against its predecessor.
    fn check_measuring(&mut self, measuring: &AtomicBool) {
        if self.counting || !measuring.load(Ordering::Relaxed) {
            return;
        }
        self.counting = true;
        for r in &mut self.legs {
            *r = Received {
                last_sequence: r.last_sequence,
                last_timestamp: r.last_timestamp,
                transit: r.transit,
                ..Received::default()
            };
        }
    }

    /// What one read brought: `leg` when the socket says whose it is.
    fn batch(&mut self, batch: &RecvBatch, leg: Option<usize>) {
        let clock = ClockPair::now();
        for datagram in batch.datagrams() {
            self.tool_drops = self.tool_drops.max(datagram.dropped.unwrap_or(0));
            let Some(i) = leg.or_else(|| self.index.get(&datagram.from).copied()) else {
                continue;
            };
            let buf = datagram.bytes;
            if buf.len() < 12 || buf[1] & 0x7F != 0 {
                continue;
            }
            let arrival = clock.arrival(datagram.stamp);
            self.packet(i, buf, arrival);
        }
    }

    /// One PCMU packet for leg `i`: sequence, skipped frames, RFC 3550 jitter, and with turns
    /// whether a turn begins in it.
    fn packet(&mut self, i: usize, buf: &[u8], arrival: Instant) {
        let r = &mut self.legs[i];
        r.packets += 1;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if let Some(last) = r.last_sequence {
            let gap = seq.wrapping_sub(last);
            if (2..1000).contains(&gap) {
                r.lost += u64::from(gap - 1);
            }
            // PCMU: 160 timestamp units a frame. Frames the timestamp skipped beyond the
            // packets' count are time the server sent nothing for.
            let frames = timestamp.wrapping_sub(r.last_timestamp) / 160;
            if (1..1000).contains(&gap) && frames > u32::from(gap) && frames < 50_000 {
                r.skipped += u64::from(frames - u32::from(gap));
            }
        }
        r.last_sequence = Some(seq);
        r.last_timestamp = timestamp;
        // RFC 3550 A.8: transit = arrival - timestamp (both in 8 kHz units), against a fixed
        // origin.
        let origin = *self.origin.get_or_insert(arrival);
        let since = arrival.saturating_duration_since(origin);
        let transit = since.as_micros() as i64 * 8 / 1000 - i64::from(timestamp);
        if let Some(previous) = r.transit {
            let d = (transit - previous).abs() as f64 / 8.0;
            r.jitter_ms += (d - r.jitter_ms) / 16.0;
        }
        r.transit = Some(transit);
        self.listen(i, &buf[12..], arrival);
    }

    /// With turns: a loud frame after enough quiet begins the turn it arrived in (recorded once
    /// the measurement runs).
    fn listen(&mut self, i: usize, payload: &[u8], arrival: Instant) {
        let Some(media_start) = self.turns_start else {
            return;
        };
        let mut samples = [0i16; 160];
        for (sample, code) in samples.iter_mut().zip(payload) {
            *sample = roundtable_media::g711::ulaw_decode(*code);
        }
        let level = dbfs(&samples[..payload.len().min(160)]);
        let state = &mut self.listening[i];
        if level <= QUIET_DBFS {
            state.quiet += 1;
            state.armed |= state.quiet >= QUIET_TO_ARM;
            return;
        }
        state.quiet = 0;
        if level >= LOUD_DBFS && state.armed {
            state.armed = false;
            let since = arrival.saturating_duration_since(media_start);
            let turn_ms = TURN_TICKS * 20;
            let turn = since.as_millis() as u64 / turn_ms;
            let latency = since - Duration::from_millis(turn * turn_ms);
            if self.counting {
                self.onsets[i].entry(turn).or_insert(latency);
            }
        }
    }

    fn finish(self) -> Reception {
        Reception {
            legs: self.legs,
            tool_drops: self.tool_drops,
            onsets: self.onsets,
        }
    }
}
