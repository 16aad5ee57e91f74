//! Dial-out load: places `--count` calls (default 200) at `--rate` per second (default 20)
//! through a running Roundtable's API into one room, to a SIPp callee this tool starts (it
//! rings, then answers at once), and reports the setup time of each call (from the API request
//! to its `answered` event: p50, p99, max) and the mixer's tick lateness while they connect
//! (from `roundtable_mixer_tick_lateness_seconds`). Then it hangs every call up.
//!
//! ```text
//! roundtable serve --config load.toml     # sip.max_dialouts >= count, sip.dialout_cps >= rate
//! dialout_load --api 127.0.0.1:8080 --callee-port 5090 --count 200 --rate 20
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roundtable_benches::{histogram_buckets, http, http_json, quantile_between};

/// The callee: 180, then 200 with PCMU towards RTP_PORT; waits for the BYE.
const SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="dial-out load callee">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=callee 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio RTP_PORT RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv

]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="300000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#;

struct Args {
    api: SocketAddr,
    callee_port: u16,
    count: usize,
    rate: f64,
    room: String,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        api: "127.0.0.1:8080".parse().unwrap(),
        callee_port: 5090,
        count: 200,
        rate: 20.0,
        room: "dialload".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--api" => args.api = value.parse().map_err(|e| bad(&e))?,
            "--callee-port" => args.callee_port = value.parse().map_err(|e| bad(&e))?,
            "--count" => args.count = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = value.parse().map_err(|e| bad(&e))?,
            "--room" => args.room = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dialout_load: {e}");
            std::process::exit(2);
        }
    };
    // Where the callees' audio goes: read and dropped.
    let sink = UdpSocket::bind("127.0.0.1:0").expect("RTP sink");
    let sink_port = sink.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while sink.recv(&mut buf).is_ok() {}
    });
    let dir = std::env::temp_dir().join(format!("dialout_load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("callee.xml");
    std::fs::write(
        &scenario,
        SCENARIO.replace("RTP_PORT", &sink_port.to_string()),
    )
    .unwrap();
    let mut sipp = Command::new("sipp")
        .current_dir(&dir)
        .arg("-sf")
        .arg(&scenario)
        .args(["-i", "127.0.0.1", "-p", &args.callee_port.to_string()])
        .args(["-m", &args.count.to_string(), "-nostdin", "-bg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (Debian sip-tester) is needed");
    std::thread::sleep(Duration::from_millis(500));

    let metrics = |api| {
        http(api, "GET", "/metrics", None, Duration::from_secs(5))
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let lateness = "roundtable_mixer_tick_lateness_seconds";
    let before = histogram_buckets(&metrics(args.api), lateness);
    let (_, page) = http_json(
        args.api,
        "GET",
        "/v1/events?after=0",
        None,
        Duration::from_secs(5),
    )
    .expect("the API answers");
    let mut cursor = page["next"].as_u64().unwrap_or(0);

    // Each call's state changes, seen as they happen (a long poll of the room's events in a
    // thread of its own), while the calls are placed.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<(String, String, String, Instant)>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (api, room, stop) = (args.api, args.room.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = format!("/v1/events?after={cursor}&room={room}&wait_s=1");
                let Ok((_, page)) = http_json(api, "GET", &path, None, Duration::from_secs(5))
                else {
                    continue;
                };
                let now = Instant::now();
                cursor = page["next"].as_u64().unwrap_or(cursor);
                for event in page["events"].as_array().into_iter().flatten() {
                    if event["type"] == "participant_state" {
                        let field =
                            |name: &str| event[name].as_str().unwrap_or_default().to_string();
                        let failure = event["failure"].to_string();
                        let _ = seen_tx.send((field("participant"), field("state"), failure, now));
                    }
                }
            }
        })
    };

    let to = format!("sip:callee@127.0.0.1:{}", args.callee_port);
    let body = serde_json::json!({ "to": to, "timeout_s": 60 });
    let start = Instant::now();
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(args.count);
    let mut refused = Vec::new();
    let path = format!("/v1/rooms/{}/participants", args.room);
    for i in 0..args.count {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let asked = Instant::now();
        match http_json(args.api, "POST", &path, Some(&body), Duration::from_secs(5)) {
            Ok((202, participant)) => {
                let id = participant["id"].as_str().unwrap_or_default().to_string();
                sent.push((id, asked));
            }
            Ok((status, answer)) => refused.push(format!("{status} {answer}")),
            Err(e) => refused.push(e),
        }
    }

    let mut setup = Vec::new();
    let mut failed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.len() + failed.len() < sent.len() && Instant::now() < deadline {
        let Ok((id, state, failure, at)) = seen_rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let Some((_, asked)) = sent.iter().find(|(leg, _)| *leg == id) else {
            continue;
        };
        match state.as_str() {
            "answered" => setup.push(at - *asked),
            "failed" => failed.push(failure),
            _ => {}
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    let after = histogram_buckets(&metrics(args.api), lateness);
    let elapsed = start.elapsed();

    for (id, _) in &sent {
        let _ = http(
            args.api,
            "DELETE",
            &format!("/v1/rooms/{}/participants/{id}", args.room),
            None,
            Duration::from_secs(5),
        );
    }
    let sipp_done = Instant::now() + Duration::from_secs(20);
    while Instant::now() < sipp_done && sipp.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = sipp.kill();
    let _ = std::fs::remove_dir_all(&dir);

    setup.sort();
    println!(
        "dial-outs: {} placed at {}/s in {:.1} s; {} answered, {} failed, {} refused by the API",
        sent.len(),
        args.rate,
        elapsed.as_secs_f64(),
        setup.len(),
        failed.len(),
        refused.len()
    );
    println!(
        "setup time (API request to answered event): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&setup, 0.5).as_secs_f64() * 1e3,
        percentile(&setup, 0.99).as_secs_f64() * 1e3,
        setup.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let (p50, ticks) = quantile_between(&before, &after, 0.5);
    let (p99, _) = quantile_between(&before, &after, 0.99);
    let (max, _) = quantile_between(&before, &after, 1.0);
    println!(
        "mixer tick lateness meanwhile ({ticks} ticks, bucket bounds): p50 <= {:.2} ms, p99 <= {:.2} ms, max <= {:.2} ms",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
    for line in failed.iter().chain(&refused).take(5) {
        println!("  e.g. {line}");
    }
}
