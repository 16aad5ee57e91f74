//! Shared harness for end-to-end tests: starts the built `roundtable` binary on loopback with
//! free ports and a temporary data dir, and provides a small SIP/RTP test caller, a raw HTTP
//! client, tone generation and Goertzel analysis, and SIPp helpers.
//!
//! Every wait is bounded in count and time.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

/// A port for a service or peer to listen on (free on both UDP and TCP a moment ago).
///
/// Ports come from this test process's own block in 10000-19999, below the kernel's ephemeral
/// ports (32768 and up) and the RTP blocks ([`rtp_range`]), and one process never hands out the
/// same port twice. A port the kernel picked for `bind(0)` could be picked again for the next
/// test running in parallel (two services on one API port: the second exits and its test talks
/// to the first), or for any client socket before the service binds it.
pub fn free_port() -> u16 {
    const BLOCK: u16 = 500;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block_start = 10000 + (std::process::id() % 20) as u16 * BLOCK;
    for _ in 0..BLOCK {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(
            offset < BLOCK,
            "a test process asked for more than {BLOCK} listening ports"
        );
        let port = block_start + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {block_start}-{}", block_start + BLOCK - 1);
}

/// A distinct RTP range for each service (and SIPp instance) a test process starts, so parallel
/// tests never share. Every block lies in 20000-32287, below the kernel's ephemeral ports
/// (32768 and up), so no socket bound to port 0 can take one; each test process (cargo runs them
/// one at a time) has a block of 2048 ports chosen by its pid, and wraps around within it.
pub fn rtp_range(pairs: u16) -> (u16, u16) {
    const BLOCK: u16 = 2048;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let size = pairs * 2 + 2;
    assert!(
        size < BLOCK,
        "at most {} RTP pairs per service",
        BLOCK / 2 - 1
    );
    let block_start = 20000 + (std::process::id() % 6) as u16 * BLOCK;
    let offset = NEXT.fetch_add(size, Ordering::SeqCst) % (BLOCK - size);
    let low = block_start + offset;
    let low = low + low % 2;
    (low, low + pairs * 2 - 1)
}

/// A running service.
pub struct Service {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub api: SocketAddr,
    pub data: tempfile::TempDir,
    log: PathBuf,
}

/// Extra TOML for a service, appended to the generated config.
#[derive(Default, Clone)]
pub struct Options {
    pub toml: String,
    /// Also listen for SIP on UDP [::1] (same port).
    pub ipv6: bool,
    pub rtp_pairs: u16,
    pub env: Vec<(String, String)>,
    /// Run under `ulimit -f` (KiB), with SIGXFSZ ignored: writes past it fail like a full disk.
    pub file_size_limit_kib: Option<u64>,
}

impl Service {
    pub fn start(options: Options) -> Service {
        let port = free_port();
        let api_port = free_port();
        let data = tempfile::tempdir().expect("tempdir");
        let (low, high) = rtp_range(if options.rtp_pairs == 0 {
            50
        } else {
            options.rtp_pairs
        });
        let config = data.path().join("roundtable.toml");
        let store = data.path().join("store");
        let v6 = if options.ipv6 {
            format!(", \"udp:[::1]:{port}\"")
        } else {
            String::new()
        };
        let mut toml = format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:{port}\", \"tcp:127.0.0.1:{port}\"{v6}]\n\
             [media]\nrtp_ports = \"{low}-{high}\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [audio]\nnoise_suppression = false\nagc = false\n\
             [room]\njoin_leave_tones = false\nalone_prompt = false\n\
             [storage]\npath = {store:?}\n\
             [recording]\nconsent_notice = false\n\
             [log]\nlevel = \"debug\"\n"
        );
        toml = merge_toml(&toml, &options.toml);
        std::fs::write(&config, toml).unwrap();
        let log = data.path().join("service.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = match options.file_size_limit_kib {
            None => Command::new(BIN),
            Some(kib) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn roundtable");
        let mut service = Service {
            child: Some(child),
            sip: format!("127.0.0.1:{port}").parse().unwrap(),
            api: format!("127.0.0.1:{api_port}").parse().unwrap(),
            data,
            log,
        };
        service.wait_until_ready();
        service
    }

    /// Waits (at most 5 s) for `/ready`; panics with the log if the service exits or never
    /// gets ready.
    fn wait_until_ready(&mut self) {
        for _ in 0..200 {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "service exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok((200, _)) = self.try_http("GET", "/ready", "", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("service did not become ready:\n{}", self.log());
    }

    /// Stops the service (SIGTERM) and starts it again on the same configuration and data.
    pub fn restart(&mut self) {
        let status = self.terminate(Duration::from_secs(12));
        assert!(
            status.is_some_and(|s| s.success()),
            "clean exit before restart"
        );
        self.start_again();
    }

    /// Kills the service with SIGKILL (no shutdown at all) and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The configuration file the service runs with.
    pub fn config_path(&self) -> PathBuf {
        self.data.path().join("roundtable.toml")
    }

    /// Runs `roundtable <args> --config <its config>` to the end: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .expect("run roundtable");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts the service again (after [`Service::kill9`] or [`Service::terminate`]) on the same
    /// configuration and data, and waits until it is ready.
    pub fn start_again(&mut self) {
        let config = self.data.path().join("roundtable.toml");
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("respawn roundtable");
        self.child = Some(child);
        self.wait_until_ready();
    }

    pub fn storage(&self) -> PathBuf {
        self.data.path().join("store")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `within`) until the log holds `text`; whether it does.
    pub fn wait_for_log(&self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The last 60 lines of the log, for a failure's message.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn try_http(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        http(self.api, method, path, body, token)
    }

    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self
            .try_http(method, path, body, None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()));
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn metrics(&self) -> String {
        self.try_http("GET", "/metrics", "", None)
            .unwrap_or_else(|e| panic!("metrics: {e}\n{}", self.log_tail()))
            .1
    }

    /// Waits (at most `within`) for a finished recording of `room` in `GET /v1/recordings` and
    /// returns its manifest.
    pub fn finished_recording(&self, room: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let (_, list) = self.http("GET", &format!("/v1/recordings?room={room}"), "");
            if let Some(id) = list["recordings"][0]["id"].as_str() {
                let (status, manifest) = self.http("GET", &format!("/v1/recordings/{id}"), "");
                assert_eq!(status, 200, "{manifest}");
                return manifest;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no finished recording of room {room}\n{}", self.log());
    }

    /// Waits (at most 20 s) until the room has `n` participants (0: the room is gone).
    pub fn wait_participants(&self, room: &str, n: usize) {
        for _ in 0..800 {
            let (status, body) = self.http("GET", &format!("/v1/rooms/{room}"), "");
            let have = if status == 404 {
                0
            } else {
                body["participants"].as_array().map_or(0, Vec::len)
            };
            if have == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("room {room} never had {n} participants\n{}", self.log());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Appends `extra` TOML to `base`, merging sections that appear in both.
fn merge_toml(base: &str, extra: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for text in [base, extra] {
        let mut current = String::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with("[[") {
                // Each array-of-tables header starts a table of its own.
                sections.push((line.to_string(), Vec::new()));
                current = String::new();
                continue;
            }
            if line.starts_with('[') {
                current = line.to_string();
                if !sections.iter().any(|(s, _)| *s == current) {
                    sections.push((current.clone(), Vec::new()));
                }
                continue;
            }
            let key = line
                .split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let section = if current.is_empty() {
                sections.last_mut().expect("key after a table header")
            } else {
                sections
                    .iter_mut()
                    .find(|(s, _)| *s == current)
                    .expect("key before section")
            };
            section
                .1
                .retain(|l| l.split('=').next().unwrap_or_default().trim() != key);
            section.1.push(line.to_string());
        }
    }
    sections
        .into_iter()
        .map(|(s, lines)| format!("{s}\n{}\n", lines.join("\n")))
        .collect()
}

/// One HTTP/1.1 request over a fresh connection; returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    for _ in 0..10_000 {
        let Some((size, rest)) = body.split_once("\r\n") else {
            break;
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Audio helpers

pub const RATE: f64 = 8000.0;

/// Samples `n0..n0+160` of a sine tone.
pub fn tone_frame(freq: f64, n0: usize, amplitude: f64) -> [i16; 160] {
    let mut f = [0i16; 160];
    for (i, s) in f.iter_mut().enumerate() {
        let t = (n0 + i) as f64 / RATE;
        *s = (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
    }
    f
}

/// Power of `freq` in 8 kHz `samples` (Goertzel), normalised by length.
pub fn goertzel(samples: &[i16], freq: f64) -> f64 {
    goertzel_at(samples, freq, RATE)
}

/// Power of `freq` in `samples` at `rate` Hz (Goertzel), normalised by length.
pub fn goertzel_at(samples: &[i16], freq: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    power / (samples.len() as f64).powi(2)
}

/// Root mean square of `samples` (0 for none): how loud a stretch of audio is.
pub fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// `goertzel` in dB (floored at -100 dB so silence compares).
pub fn tone_db(samples: &[i16], freq: f64) -> f64 {
    tone_db_at(samples, freq, RATE)
}

/// `goertzel_at` in dB.
pub fn tone_db_at(samples: &[i16], freq: f64, rate: f64) -> f64 {
    10.0 * goertzel_at(samples, freq, rate).max(1e-10).log10()
}

pub use roundtable_media::codec::{Codec, Decoder, Encoder, OpusOptions};
use roundtable_media::g711::ulaw_encode;
pub use roundtable_media::srtp::{MasterKey, Protector, Suite, Unprotector};

/// The payload type the test caller uses for a codec (111 for Opus).
pub fn payload_type(codec: Codec) -> u8 {
    codec.static_payload_type().unwrap_or(111)
}

/// The codec of a payload type the test caller uses.
pub fn codec_of(pt: u8) -> Option<Codec> {
    Codec::ALL.into_iter().find(|c| payload_type(*c) == pt)
}

/// `len` samples from `n0` of a sine tone at `rate` Hz.
pub fn tone_at(freq: f64, n0: usize, len: usize, rate: u32, amplitude: f64) -> Vec<i16> {
    (n0..n0 + len)
        .map(|n| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A minimal SIP caller over UDP with an RTP stream

/// A SIP response or request as text with helpers.
#[derive(Debug, Clone)]
pub struct SipText(pub String);

impl SipText {
    pub fn status(&self) -> Option<u16> {
        self.0.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }
    pub fn method(&self) -> Option<&str> {
        if self.0.starts_with("SIP/2.0") {
            None
        } else {
            self.0.split(' ').next()
        }
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    pub fn body(&self) -> &str {
        self.0.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

pub struct Uac {
    pub sip: UdpSocket,
    pub server: SocketAddr,
    pub rtp: UdpSocket,
    call_id: String,
    from_tag: String,
    to_header: Option<String>,
    cseq: u32,
    pub remote_rtp: Option<SocketAddr>,
    room: String,
    /// Extra header lines (each ending in CRLF) for the INVITE.
    pub extra_headers: String,
    /// The final response to the INVITE.
    pub last_response: Option<SipText>,
    /// SDES-SRTP: our key (offered with `RTP/SAVP`), and the bridge's from its answer.
    pub srtp: Option<(MasterKey, Option<MasterKey>)>,
}

static UAC_COUNTER: AtomicU16 = AtomicU16::new(0);
/// Key presses sent by test callers, for increasing RFC 4733 timestamps.
static DTMF_PRESSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Uac {
    pub fn new(server: SocketAddr, room: &str) -> Uac {
        Uac::new_from(server, room, "127.0.0.1")
    }

    /// A caller whose SIP and RTP sockets use another loopback source address (127.0.0.2, ...).
    pub fn new_from(server: SocketAddr, room: &str, source: &str) -> Uac {
        let sip = UdpSocket::bind((source, 0)).unwrap();
        sip.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let rtp = UdpSocket::bind((source, 0)).unwrap();
        let n = UAC_COUNTER.fetch_add(1, Ordering::SeqCst);
        Uac {
            call_id: format!(
                "uac-{}-{n}-{}@127.0.0.1",
                std::process::id(),
                sip.local_addr().unwrap().port()
            ),
            from_tag: format!("ft{n}"),
            sip,
            server,
            rtp,
            to_header: None,
            cseq: 1,
            remote_rtp: None,
            room: room.to_string(),
            extra_headers: String::new(),
            last_response: None,
            srtp: None,
        }
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.sip.send_to(bytes, self.server).unwrap();
    }

    /// Waits for the next SIP message (bounded by `timeout`).
    pub fn recv(&self, timeout: Duration) -> Option<SipText> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sip.recv_from(&mut buf) {
                return Some(SipText(String::from_utf8_lossy(&buf[..n]).to_string()));
            }
        }
        None
    }

    /// Waits for a final response (skipping 1xx).
    pub fn final_response(&self, timeout: Duration) -> Option<SipText> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let m = self.recv(deadline - Instant::now())?;
            if m.status().is_some_and(|s| s >= 200) {
                return Some(m);
            }
        }
        None
    }

    pub fn invite_text(&self, sdp: &str, branch: &str) -> String {
        let local = self.sip.local_addr().unwrap();
        format!(
            "INVITE sip:{room}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: <sip:{room}@{server}>\r\n\
             Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:tester@{local}>\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            extra = self.extra_headers,
            room = self.room,
            server = self.server,
            tag = self.from_tag,
            cid = self.call_id,
            len = sdp.len(),
        )
    }

    pub fn offer(&self, payload_types: &str, rtpmaps: &str) -> String {
        let local = self.rtp.local_addr().unwrap();
        let (port, ip) = (local.port(), local.ip());
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let (proto, crypto) = match &self.srtp {
            Some((key, _)) => (
                "RTP/SAVP",
                format!(
                    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n",
                    key.key_params()
                ),
            ),
            None => ("RTP/AVP", String::new()),
        };
        format!(
            "v=0\r\no=tester 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio {port} {proto} {payload_types}\r\n{rtpmaps}{crypto}a=sendrecv\r\n"
        )
    }

    /// Places the call (PCMU + telephone-event) and ACKs a 200. Returns the final status.
    pub fn call(&mut self) -> u16 {
        self.call_codec(Codec::Pcmu)
    }

    /// Places the call offering only `codec` (at [`payload_type`]) + telephone-event.
    pub fn call_codec(&mut self, codec: Codec) -> u16 {
        self.call_codec_with(codec, "")
    }

    /// Like [`Uac::call_codec`], with extra SDP attribute lines (each ending in CRLF).
    pub fn call_codec_with(&mut self, codec: Codec, attributes: &str) -> u16 {
        let pt = payload_type(codec);
        let mut maps = format!("a=rtpmap:{pt} {}/{}", codec.sdp_name(), codec.clock_rate());
        if codec == Codec::Opus {
            maps.push_str(&format!("/2\r\na=fmtp:{pt} useinbandfec=1"));
        }
        maps.push_str("\r\na=rtpmap:101 telephone-event/8000\r\n");
        maps.push_str(attributes);
        let sdp = self.offer(&format!("{pt} 101"), &maps);
        self.call_with(&sdp)
    }

    pub fn call_with(&mut self, sdp: &str) -> u16 {
        let invite = self.invite_text(sdp, &format!("z9hG4bK-{}-inv", self.call_id));
        self.send_raw(invite.as_bytes());
        let Some(response) = self.final_response(Duration::from_secs(5)) else {
            return 0;
        };
        let status = response.status().unwrap_or(0);
        let to = response.header("To").unwrap_or_default();
        self.to_header = Some(to.clone());
        self.last_response = Some(response.clone());
        if status == 200 {
            let body = response.body();
            let ip: std::net::IpAddr = body
                .lines()
                .find_map(|l| {
                    l.strip_prefix("c=IN IP4 ")
                        .or_else(|| l.strip_prefix("c=IN IP6 "))
                })
                .and_then(|ip| ip.trim().parse().ok())
                .expect("c= in answer");
            let port = body
                .lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|l| l.split(' ').next())
                .and_then(|p| p.parse::<u16>().ok())
                .expect("m=audio port in answer");
            self.remote_rtp = Some(SocketAddr::new(ip, port));
            if let Some((_, remote)) = self.srtp.as_mut() {
                *remote = body
                    .lines()
                    .find_map(|l| l.strip_prefix("a=crypto:1 AES_CM_128_HMAC_SHA1_80 "))
                    .and_then(|k| MasterKey::from_key_params(k.trim()));
            }
            self.send_in_dialog("ACK", 1);
        } else if status >= 300 {
            // ACK for a non-2xx belongs to the INVITE transaction: same branch (RFC 3261 17.1.1.3).
            let local = self.sip.local_addr().unwrap();
            let ack = format!(
                "ACK sip:{room}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{cid}-inv;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
                 CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                room = self.room,
                server = self.server,
                tag = self.from_tag,
                cid = self.call_id,
            );
            self.send_raw(ack.as_bytes());
        }
        status
    }

    fn send_in_dialog(&self, method: &str, cseq: u32) {
        let local = self.sip.local_addr().unwrap();
        let to = self.to_header.clone().unwrap_or_default();
        let msg = format!(
            "{method} sip:roundtable@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{cid}-{method}-{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            server = self.server,
            tag = self.from_tag,
            cid = self.call_id,
        );
        self.send_raw(msg.as_bytes());
    }

    /// Sends a re-INVITE with `sdp` in the dialog and ACKs a 2xx; returns status and body.
    pub fn reinvite(&mut self, sdp: &str) -> (u16, String) {
        self.cseq += 1;
        let cseq = self.cseq;
        let local = self.sip.local_addr().unwrap();
        let to = self.to_header.clone().unwrap_or_default();
        let msg = format!(
            "INVITE sip:roundtable@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{cid}-re-{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} INVITE\r\nContact: <sip:tester@{local}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            server = self.server,
            tag = self.from_tag,
            cid = self.call_id,
            len = sdp.len(),
        );
        self.send_raw(msg.as_bytes());
        let Some(response) = self.final_response(Duration::from_secs(5)) else {
            return (0, String::new());
        };
        let status = response.status().unwrap_or(0);
        if status == 200 {
            self.send_in_dialog("ACK", cseq);
        }
        (status, response.body().to_string())
    }

    /// Sends `keys` as RFC 4733 telephone-events (payload type 101) on the call's RTP socket:
    /// per key three updates and three end packets, 100 ms apart from the next key.
    pub fn send_dtmf(&self, keys: &str) {
        let remote = self.remote_rtp.expect("call is up");
        let ssrc: u32 = 0x1234_0000 | (remote.port() as u32);
        for (k, key) in keys.chars().enumerate() {
            let code = "0123456789*#".find(key).expect("a DTMF key") as u8;
            // Every press gets a later timestamp than the last, across calls of this function.
            let timestamp = 1_000_000u32 + DTMF_PRESSES.fetch_add(1, Ordering::SeqCst) * 8000;
            for i in 0..6u16 {
                let end = i >= 3;
                let duration = 160 * (i.min(3) + 1);
                let mut packet = vec![0x80, if i == 0 { 0x80 | 101 } else { 101 }];
                packet.extend_from_slice(&(30000 + k as u16 * 10 + i).to_be_bytes());
                packet.extend_from_slice(&timestamp.to_be_bytes());
                packet.extend_from_slice(&ssrc.to_be_bytes());
                packet.extend_from_slice(&[code, if end { 0x8a } else { 0x0a }]);
                packet.extend_from_slice(&duration.to_be_bytes());
                let _ = self.rtp.send_to(&packet, remote);
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one key by SIP INFO (`application/dtmf-relay`); returns the final status.
    pub fn send_info(&mut self, key: char) -> u16 {
        self.cseq += 1;
        let cseq = self.cseq;
        let local = self.sip.local_addr().unwrap();
        let to = self.to_header.clone().unwrap_or_default();
        let body = format!("Signal={key}\r\nDuration=160\r\n");
        let msg = format!(
            "INFO sip:roundtable@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{cid}-info-{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: {len}\r\n\r\n{body}",
            server = self.server,
            tag = self.from_tag,
            cid = self.call_id,
            len = body.len(),
        );
        self.send_raw(msg.as_bytes());
        self.final_response(Duration::from_secs(2))
            .and_then(|m| m.status())
            .unwrap_or(0)
    }

    /// Sends BYE; returns the final status.
    pub fn hangup(&mut self) -> u16 {
        self.cseq += 1;
        self.send_in_dialog("BYE", self.cseq);
        for _ in 0..50 {
            match self.recv(Duration::from_millis(200)) {
                Some(m)
                    if m.status().is_some_and(|s| s >= 200)
                        && m.header("CSeq").is_some_and(|c| c.contains("BYE")) =>
                {
                    return m.status().unwrap_or(0);
                }
                Some(_) => continue,
                None => {}
            }
        }
        0
    }

    /// Waits for a BYE from the bridge and answers it 200. Returns whether one came.
    pub fn expect_bye(&self, timeout: Duration) -> bool {
        self.expect_request("BYE", timeout).is_some()
    }

    /// Waits for a `method` request from the bridge (skipping other messages), answers it 200
    /// and returns it.
    pub fn expect_request(&self, method: &str, timeout: Duration) -> Option<SipText> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let m = self.recv(deadline - Instant::now())?;
            if m.method() == Some(method) {
                let mut ok = String::from("SIP/2.0 200 OK\r\n");
                for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    if let Some(v) = m.header(name) {
                        ok.push_str(&format!("{name}: {v}\r\n"));
                    }
                }
                ok.push_str("Content-Length: 0\r\n\r\n");
                self.send_raw(ok.as_bytes());
                return Some(m);
            }
        }
        None
    }

    /// Sends an in-dialog REFER with `refer_to` as its Refer-To value; returns the final status.
    pub fn refer(&mut self, refer_to: &str) -> u16 {
        self.cseq += 1;
        let local = self.sip.local_addr().unwrap();
        let to = self.to_header.clone().unwrap_or_default();
        let msg = format!(
            "REFER sip:roundtable@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{cid}-refer-{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} REFER\r\nContact: <sip:tester@{local}>\r\nRefer-To: {refer_to}\r\n\
             Referred-By: <sip:tester@127.0.0.1>\r\nContent-Length: 0\r\n\r\n",
            server = self.server,
            tag = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
        );
        self.send_raw(msg.as_bytes());
        self.final_response(Duration::from_secs(2))
            .and_then(|m| m.status())
            .unwrap_or(0)
    }

    /// Streams a tone (or silence with `freq = 0`) for `duration` while recording what arrives.
    pub fn start_media(&self, freq: f64, duration: Duration) -> Media {
        self.start_media_with(
            freq,
            duration,
            Arc::new(std::sync::atomic::AtomicU8::new(0)),
        )
    }

    /// Sends and receives media in `codec` (the one [`Uac::call_codec`] offered).
    pub fn start_media_codec(&self, freq: f64, duration: Duration, codec: Codec) -> Media {
        self.start_media_with(
            freq,
            duration,
            Arc::new(std::sync::atomic::AtomicU8::new(payload_type(codec))),
        )
    }

    /// Like [`Uac::start_media`], sending with the payload type in `pt` (see [`payload_type`]),
    /// which the test may change mid-stream (after a re-INVITE changed the codec). Heard audio
    /// is decoded at its codec's rate (48 kHz for Opus, as a phone would).
    pub fn start_media_with(
        &self,
        freq: f64,
        duration: Duration,
        pt: Arc<std::sync::atomic::AtomicU8>,
    ) -> Media {
        let remote = self.remote_rtp.expect("call is up");
        let socket = self.rtp.try_clone().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let heard = Arc::new(Mutex::new(Arrivals::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let first = codec_of(pt.load(Ordering::SeqCst)).unwrap_or(Codec::Pcmu);
        let rate = first.audio_rate(48000);
        let suite = Suite::AesCm128Sha1_80;
        let mut protect = self
            .srtp
            .as_ref()
            .map(|(local, _)| Protector::new(suite, local).unwrap());
        let mut unprotect = self.srtp.as_ref().map(|(_, remote)| {
            Unprotector::new(
                suite,
                remote.as_ref().expect("the bridge's key from the answer"),
            )
            .unwrap()
        });
        let sender = {
            let socket = socket.try_clone().unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let frames = (duration.as_millis() / 20) as usize;
                let ssrc = media_ssrc(remote);
                let mut encoders = std::collections::HashMap::new();
                let (mut timestamp, mut payload) = (0u32, Vec::new());
                for i in 0..frames {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let payload_type = pt.load(Ordering::SeqCst);
                    let codec = codec_of(payload_type).unwrap_or(Codec::Pcmu);
                    let rate = codec.audio_rate(48000);
                    let n = rate as usize / 50;
                    let samples = tone_at(freq, i * n, n, rate, 6000.0);
                    let encoder = encoders.entry(payload_type).or_insert_with(|| {
                        Encoder::new(
                            codec,
                            48000,
                            OpusOptions {
                                fec: true,
                                dtx: false,
                            },
                        )
                        .unwrap()
                    });
                    encoder.encode(&samples, &mut payload).unwrap();
                    let mut packet = vec![0x80, payload_type];
                    packet.extend_from_slice(&(i as u16).to_be_bytes());
                    packet.extend_from_slice(&timestamp.to_be_bytes());
                    packet.extend_from_slice(&ssrc.to_be_bytes());
                    packet.extend_from_slice(&payload);
                    timestamp = timestamp.wrapping_add(codec.timestamp_step());
                    if let Some(p) = protect.as_mut() {
                        packet = p.rtp(&packet).unwrap();
                    }
                    let _ = socket.send_to(&packet, remote);
                    let next = start + Duration::from_millis(20 * (i as u64 + 1));
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        };
        let rtcp = Arc::new(Mutex::new(Vec::new()));
        let receiver = {
            let heard = heard.clone();
            let rtcp = rtcp.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let deadline = Instant::now() + duration + Duration::from_secs(2);
                let mut decoders = std::collections::HashMap::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    if let Ok((n, _)) = socket.recv_from(&mut buf) {
                        if n >= 8 && (192..=223).contains(&buf[1]) {
                            rtcp.lock().unwrap().push(buf[..n].to_vec());
                            continue;
                        }
                        let clear = match unprotect.as_mut() {
                            Some(u) => match u.rtp(&buf[..n]) {
                                Ok(clear) => clear,
                                Err(_) => continue,
                            },
                            None => buf[..n].to_vec(),
                        };
                        let n = clear.len();
                        let pt = clear[1] & 0x7F;
                        let Some(codec) = codec_of(pt).filter(|_| n > 12) else {
                            continue;
                        };
                        let decoder = decoders
                            .entry(pt)
                            .or_insert_with(|| Decoder::new(codec, 48000).unwrap());
                        let mut samples = vec![0i16; decoder.frame_len()];
                        let _ = decoder.decode(&clear[12..n], &mut samples);
                        heard.lock().unwrap().push((Instant::now(), pt, samples));
                    }
                }
            })
        };
        Media {
            heard,
            rtcp,
            stop,
            threads: vec![sender, receiver],
            started: Instant::now(),
            rate,
        }
    }
}

/// The SSRC a test caller's stream to `remote` uses.
pub fn media_ssrc(remote: SocketAddr) -> u32 {
    0x1234_0000 | u32::from(remote.port())
}

/// A running media stream of a [`Uac`].
/// Audio packets as they arrived: when, their payload type and their decoded samples.
type Arrivals = Vec<(Instant, u8, Vec<i16>)>;

pub struct Media {
    heard: Arc<Mutex<Arrivals>>,
    rtcp: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub started: Instant,
    rate: u32,
}

impl Media {
    /// Waits for the sender to finish, then stops the receiver.
    pub fn finish(mut self) -> Heard {
        if let Some(sender) = (!self.threads.is_empty()).then(|| self.threads.remove(0)) {
            let _ = sender.join();
        }
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let packets = std::mem::take(&mut *self.heard.lock().unwrap());
        let rtcp = std::mem::take(&mut *self.rtcp.lock().unwrap());
        Heard {
            packets,
            started: self.started,
            rate: self.rate,
            rtcp,
        }
    }
}

/// What a caller heard, with arrival times.
pub struct Heard {
    packets: Arrivals,
    started: Instant,
    /// The sample rate of the heard audio (that of the codec the stream started with).
    pub rate: u32,
    /// RTCP datagrams that arrived on the RTP port (rtcp-mux).
    pub rtcp: Vec<Vec<u8>>,
}

impl Heard {
    /// Samples that arrived between `from` and `to` after the stream started.
    pub fn window(&self, from: Duration, to: Duration) -> Vec<i16> {
        self.packets
            .iter()
            .filter(|(at, _, _)| *at >= self.started + from && *at < self.started + to)
            .flat_map(|(_, _, s)| s.iter().copied())
            .collect()
    }

    /// Packets and their payload types that arrived between `from` and `to`.
    pub fn payload_types(&self, from: Duration, to: Duration) -> Vec<u8> {
        self.packets
            .iter()
            .filter(|(at, _, _)| *at >= self.started + from && *at < self.started + to)
            .map(|(_, pt, _)| *pt)
            .collect()
    }

    pub fn packets(&self) -> usize {
        self.packets.len()
    }

    /// When the stream started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

// ---------------------------------------------------------------------------------------------
// Tools the tests drive

/// A program some end-to-end tests drive, and how a developer gets it.
pub struct Tool {
    /// Its name in `RT_TEST_SKIP`.
    pub name: &'static str,
    /// What to install (the Debian or PyPI package) when it is missing.
    pub install: &'static str,
}

/// SIPp, from Debian's sip-tester.
pub const SIPP: Tool = Tool {
    name: "sipp",
    install: "Debian package sip-tester: `sudo apt-get install sip-tester` (or run .ci/run)",
};

/// dnsmasq, from Debian's dnsmasq-base (a DNS server on a loopback port; no daemon).
pub const DNSMASQ: Tool = Tool {
    name: "dnsmasq",
    install: "Debian package dnsmasq-base: `sudo apt-get install dnsmasq-base` (or run .ci/run)",
};

/// Kamailio, from Debian's kamailio (a SIP registrar and proxy on a loopback port).
pub const KAMAILIO: Tool = Tool {
    name: "kamailio",
    install: "Debian package kamailio: `sudo apt-get install kamailio` (or run .ci/run)",
};

/// moto's S3 server, from PyPI (`MOTO_SERVER` names its program, else `moto_server` on PATH).
pub const MOTO: Tool = Tool {
    name: "moto",
    install: "PyPI package moto[server]: `pip install 'moto[server]==5.2.5'` and put \
              moto_server on PATH or in MOTO_SERVER (or run .ci/run, which does both)",
};

/// Whether a test may use `tool`; `missing` says why it could not be started, if it could not.
///
/// A missing tool fails the test, naming what to install: a suite that passes must have run
/// every test. Only a developer who names the tool in `RT_TEST_SKIP` (comma-separated:
/// `RT_TEST_SKIP=sipp,moto`) skips such tests on purpose; each then prints a
/// `SKIPPED <test>: <why>` line past the test harness's output capture, and this returns false.
pub fn tool_present(tool: &Tool, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("<test>")
        .to_string();
    let skip = std::env::var("RT_TEST_SKIP").unwrap_or_default();
    if skip.split(',').any(|name| name.trim() == tool.name) {
        let line = format!(
            "SKIPPED {test}: {} is not installed ({why}); RT_TEST_SKIP names it\n",
            tool.name
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return false;
    }
    panic!(
        "{test} needs {} ({why}). Install the {}. To skip such tests on purpose, set RT_TEST_SKIP={}",
        tool.name, tool.install, tool.name
    );
}

// ---------------------------------------------------------------------------------------------
// SIPp

/// Whether SIPp is installed (see [`tool_present`]: a missing SIPp fails the test).
pub fn sipp_available() -> bool {
    let probe = Command::new("sipp").arg("-v").output();
    tool_present(&SIPP, probe.err().map(|e| e.to_string()))
}

/// The path of a SIPp scenario in `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Starts SIPp against `service` with a scenario; `extra` adds arguments.
pub fn sipp(
    service: &Service,
    scenario_file: &Path,
    room: &str,
    workdir: &Path,
    extra: &[&str],
) -> Child {
    let port = free_port();
    // SIPp binds four media ports from -mp (audio and video RTP and RTCP): take them from this
    // process's own RTP block, below the ephemeral range, so no other socket can hold them.
    let (media, _) = rtp_range(2);
    let mut cmd = Command::new("sipp");
    cmd.current_dir(workdir)
        .arg(service.sip.to_string())
        .args(["-sf"])
        .arg(scenario_file)
        .args(["-s", room, "-i", "127.0.0.1", "-nostdin"])
        .args(if extra.contains(&"-m") {
            &[][..]
        } else {
            &["-m", "1", "-l", "1"][..]
        })
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(["-trace_err", "-trace_msg", "-timeout_error"])
        .args(if extra.contains(&"-timeout") {
            &[][..]
        } else {
            &["-timeout", "60s"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("spawn sipp")
}

/// A SIPp callee on UDP `port` running `tests/sipp/<name>` with `replacements` made in it.
pub fn sipp_callee(
    name: &str,
    port: u16,
    workdir: &Path,
    replacements: &[(&str, String)],
) -> Child {
    sipp_callee_over("u1", name, port, workdir, replacements)
}

/// [`sipp_callee`] over SIPp transport `transport` (`u1`: UDP, `t1`: TCP).
pub fn sipp_callee_over(
    transport: &str,
    name: &str,
    port: u16,
    workdir: &Path,
    replacements: &[(&str, String)],
) -> Child {
    let mut text = std::fs::read_to_string(scenario(name)).expect("scenario");
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    let file = workdir.join(name);
    std::fs::write(&file, text).unwrap();
    Command::new("sipp")
        .current_dir(workdir)
        .arg("-sf")
        .arg(&file)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-t",
            transport,
        ])
        .args([
            "-nostdin",
            "-trace_err",
            "-trace_msg",
            "-timeout",
            "40s",
            "-timeout_error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp")
}

/// The PCMU audio that arrives on `socket` for `duration`, decoded.
pub fn listen_pcmu(socket: &UdpSocket, duration: Duration) -> Vec<i16> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + duration;
    let mut samples = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf)
            && n > 12
            && buf[1] & 0x7f == 0
        {
            samples.extend(
                buf[12..n]
                    .iter()
                    .map(|b| roundtable_media::g711::ulaw_decode(*b)),
            );
        }
    }
    samples
}

/// Waits (bounded) for SIPp to exit; returns its exit code.
pub fn wait_sipp(mut child: Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The messages SIPp logged in `workdir` (for failure output).
pub fn sipp_logs(workdir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(workdir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// Writes a pcap (Ethernet/IPv4/UDP/RTP) of a PCMU tone for SIPp's `play_pcap_audio`.
pub fn write_tone_pcap(path: &Path, freq: f64, duration: Duration) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    let frames = duration.as_millis() / 20;
    for i in 0..frames as usize {
        let samples = tone_frame(freq, i * 160, 6000.0);
        let mut rtp = vec![0x80, 0];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&((i * 160) as u32).to_be_bytes());
        rtp.extend_from_slice(&0x5150_5050u32.to_be_bytes());
        rtp.extend(samples.iter().map(|&s| ulaw_encode(s)));
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let sum = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xFFFF) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(&rtp);
        let ts_us = i as u64 * 20_000;
        out.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

/// Reads every sample of a WAV file.
pub fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    (spec, reader.into_samples().map(|s| s.unwrap()).collect())
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path())
                } else {
                    out.push(e.path())
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A loopback network impairer

/// What the impairer does to each packet from the caller (the other direction passes clean).
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Share of packets dropped at random.
    pub loss: f64,
    /// Drop every Nth packet (isolated losses), 0 for none.
    pub drop_every: u64,
    /// Extra delay, uniform in [0, jitter_ms] per packet (RFC 3550 jitter is about a third).
    pub jitter_ms: f64,
    /// Share of packets sent twice.
    pub duplicate: f64,
}

/// A UDP relay between a test caller's RTP socket and the bridge: the caller sends to
/// `addr()`, the relay forwards to the bridge with loss, delay (hence reordering) and
/// duplication, and relays the bridge's packets back untouched.
pub struct Impairer {
    socket: UdpSocket,
    pub settings: Arc<Mutex<Impairment>>,
    /// Packets from the caller seen, and how many of them were dropped.
    pub counts: Arc<Mutex<(u64, u64)>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Impairer {
    /// Relays between `caller` (the caller's RTP address) and `bridge` (the bridge's).
    pub fn start(caller: SocketAddr, bridge: SocketAddr, seed: u64) -> Impairer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let settings = Arc::new(Mutex::new(Impairment::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new((0u64, 0u64)));
        let thread = {
            let (socket, settings, stop) =
                (socket.try_clone().unwrap(), settings.clone(), stop.clone());
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut rng = seed | 1;
                let mut random = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng >> 11) as f64 / (1u64 << 53) as f64
                };
                let mut queue: Vec<(Instant, Vec<u8>)> = Vec::new();
                let mut count = 0u64;
                let mut buf = [0u8; 2048];
                // Bounded: the relay lives at most 10 minutes.
                let end = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        if from == caller {
                            let s = *settings.lock().unwrap();
                            count += 1;
                            let dropped = random() < s.loss
                                || (s.drop_every > 0 && count.is_multiple_of(s.drop_every));
                            {
                                let mut c = counts.lock().unwrap();
                                c.0 += 1;
                                c.1 += u64::from(dropped);
                            }
                            if !dropped {
                                let copies = if random() < s.duplicate { 2 } else { 1 };
                                for _ in 0..copies {
                                    let delay =
                                        Duration::from_secs_f64(random() * s.jitter_ms / 1000.0);
                                    queue.push((Instant::now() + delay, buf[..n].to_vec()));
                                }
                            }
                        } else {
                            let _ = socket.send_to(&buf[..n], caller);
                        }
                    }
                    let now = Instant::now();
                    queue.retain(|(at, packet)| {
                        if *at <= now {
                            let _ = socket.send_to(packet, bridge);
                            false
                        } else {
                            true
                        }
                    });
                }
            })
        };
        Impairer {
            socket,
            settings,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// Where the caller sends its RTP.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Changes the impairment from now on.
    pub fn set(&self, impairment: Impairment) {
        *self.settings.lock().unwrap() = impairment;
    }
}

impl Drop for Impairer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one SIP message (headers and a Content-Length body) from a stream within 5 s, keeping
/// what follows in `pending`; CRLF keep-alives before it are skipped. The stream should have a
/// short read timeout.
pub fn read_stream_message(
    stream: &mut impl std::io::Read,
    pending: &mut Vec<u8>,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let skip = pending
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        pending.drain(..skip);
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + length {
                let message: Vec<u8> = pending.drain(..end + 4 + length).collect();
                return Some(String::from_utf8_lossy(&message).to_string());
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// OpenAPI tools (PyPI)

/// schemathesis, from PyPI (`SCHEMATHESIS` names its program, else `schemathesis` on PATH).
pub const SCHEMATHESIS: Tool = Tool {
    name: "schemathesis",
    install: "PyPI packages schemathesis and openapi-spec-validator: `pip install \
              schemathesis==4.32.5 openapi-spec-validator==0.9.0` and put them on PATH or in \
              SCHEMATHESIS and OPENAPI_SPEC_VALIDATOR (or run .ci/run, which does both)",
};

/// A PyPI program: the path `env` names, else `name` on PATH; `None` (after [`tool_present`]
/// failed the test, or skipped it on purpose) when it is not installed.
pub fn python_tool(env: &str, name: &str, tool: &Tool) -> Option<PathBuf> {
    let program = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name));
    let probe = Command::new(&program).arg("--help").output();
    let missing = match probe {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "{} --help exited {}",
            program.display(),
            output.status
        )),
        Err(e) => Some(format!("{}: {e}", program.display())),
    };
    tool_present(tool, missing).then_some(program)
}
