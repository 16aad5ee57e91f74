//! What the README tells a newcomer to type, run as written on a fresh clone: `scripts/serve`
//! serves a real call on the embedded defaults, the quick start works step by step, and the other
//! ways of starting the service the README gives start it.
//!
//! Each test starts the service through the README's own command, which builds the release
//! binary, on the default ports. So they are ignored in a plain `cargo test` and run by
//! `.ci/run`, after the suite, on a fresh clone it names in `RT_README_CLONE`:
//!
//! ```sh
//! git clone -q . /tmp/clone
//! RT_README_CLONE=/tmp/clone cargo test --test readme-commands -- --ignored
//! ```
//!
//! The clone shares this build's target folder (`CARGO_TARGET_DIR`, else this checkout's
//! `target/`). When a default port (SIP 5060, API 8080) is taken, the service is moved through
//! `ROUNDTABLE_SIP__LISTEN` and `ROUNDTABLE_API__LISTEN`, and the test says so.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

const README: &str = include_str!("../README.md");

/// The commands the README gives, checked to be there word for word before they are run.
const SERVE: &str = "scripts/serve";
const SERVE_AUTO_RECORD: &str = "scripts/serve serve --auto-record";
const SERVE_CONFIG: &str = "scripts/serve --config roundtable.toml";
const CARGO_RUN: &str = "cargo run --release -- serve";
const CURL_ROOM: &str = "curl -s localhost:8080/v1/rooms/1000";
const CURL_RECORD: &str =
    r#"curl -s -XPOST localhost:8080/v1/rooms/1000/recording -d '{"action":"start"}'"#;
const VERIFY: &str = "target/release/roundtable recordings verify 1000/<START>";

/// The default API port, which the README's `curl` lines name.
const DEFAULT_API_PORT: u16 = 8080;

/// How long the first start may take: `scripts/serve` builds the release binary first.
const BUILD_AND_START: Duration = Duration::from_secs(45 * 60);

/// `shutdown.drain_s` on the defaults (0) plus the 10 s a clean exit may take.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// One service on the default ports at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The fresh clone and the ports the service listens on there.
struct Clone {
    dir: PathBuf,
    target: PathBuf,
    sip: SocketAddr,
    api: SocketAddr,
    /// `ROUNDTABLE_*` settings that move the ports when the defaults are taken.
    moved: Vec<(String, String)>,
}

impl Clone {
    fn from_env() -> Clone {
        let dir = std::env::var_os("RT_README_CLONE")
            .map(PathBuf::from)
            .expect(
                "RT_README_CLONE must name a fresh clone of this repository (.ci/run makes one)",
            );
        assert!(
            dir.join("scripts/serve").is_file(),
            "{} is no clone",
            dir.display()
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let defaults_free = UdpSocket::bind("0.0.0.0:5060").is_ok()
            && TcpListener::bind("0.0.0.0:5060").is_ok()
            && TcpListener::bind(("127.0.0.1", DEFAULT_API_PORT)).is_ok();
        if defaults_free {
            return Clone {
                dir,
                target,
                sip: "127.0.0.1:5060".parse().unwrap(),
                api: SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT)),
                moved: Vec::new(),
            };
        }
        let (sip, api) = (free_port(), free_port());
        let listen = format!("udp:127.0.0.1:{sip},tcp:127.0.0.1:{sip}");
        let moved = vec![
            ("ROUNDTABLE_SIP__LISTEN".to_string(), listen),
            (
                "ROUNDTABLE_API__LISTEN".to_string(),
                format!("127.0.0.1:{api}"),
            ),
        ];
        eprintln!("default ports taken: moving the service with {moved:?}");
        Clone {
            dir,
            target,
            sip: SocketAddr::from(([127, 0, 0, 1], sip)),
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            moved,
        }
    }

    /// Starts a README command in the clone, in a newcomer's environment (no `ROUNDTABLE_*` or
    /// `RT_*` settings but the moved ports), and waits until `/ready`.
    fn start(&self, readme_command: &str) -> Running {
        assert!(
            README.contains(readme_command),
            "the README no longer says `{readme_command}`"
        );
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("exec {readme_command}")])
            .current_dir(&self.dir)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| {
                [
                    "PATH",
                    "HOME",
                    "USER",
                    "LANG",
                    "TMPDIR",
                    "CARGO_HOME",
                    "RUSTUP_HOME",
                ]
                .contains(&k.as_str())
                    || k == "RUSTUP_TOOLCHAIN"
            }))
            .env("CARGO_TARGET_DIR", &self.target)
            .envs(self.moved.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        let child = command.spawn().unwrap();
        let mut running = Running {
            child: Some(child),
            log,
            api: self.api,
        };
        running.wait_ready();
        running
    }

    /// A README `curl` line, on the moved API port if the default was taken: its JSON output.
    fn curl(&self, readme_line: &str) -> serde_json::Value {
        assert!(
            README.contains(readme_line),
            "the README no longer says `{readme_line}`"
        );
        let line = readme_line.replace(
            &format!("localhost:{DEFAULT_API_PORT}"),
            &format!("localhost:{}", self.api.port()),
        );
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        assert!(out.status.success(), "`{line}` failed: {out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`{line}` printed no JSON ({e}): {out:?}"))
    }

    /// The README's `verify` line for a recording, run in the clone: whether it passed, and
    /// what it printed. `target/` is the shared target folder here.
    fn verify(&self, start: &str) -> (bool, String) {
        assert!(
            README.contains(VERIFY),
            "the README no longer says `{VERIFY}`"
        );
        let line = VERIFY
            .replace("<START>", start)
            .replace("target/", &format!("{}/", self.target.display()));
        let out = Command::new("sh")
            .args(["-c", &line])
            .current_dir(&self.dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The recordings of room 1000 in the clone's default data folder (`./roundtable-data`).
    fn recordings_of_1000(&self) -> Vec<String> {
        let dir = self.dir.join("roundtable-data/recordings/1000");
        let mut starts: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into())
                    .collect()
            })
            .unwrap_or_default();
        starts.sort();
        starts
    }

    fn recording_dir(&self, start: &str) -> PathBuf {
        self.dir.join("roundtable-data/recordings/1000").join(start)
    }
}

/// A service started by a README command.
struct Running {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    api: SocketAddr,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Waits (at most [`BUILD_AND_START`]) for `/ready`; panics with the log if the command
    /// exits first.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + BUILD_AND_START;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http(self.api, "GET", "/ready", "", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("not ready within {BUILD_AND_START:?}:\n{}", self.log_tail());
    }

    fn http(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = http(self.api, method, path, body, None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()));
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Polls `GET /v1/rooms/1000` (at most 10 s) until `check` holds for it; the last answer.
    fn wait_room(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, room) = self.http("GET", "/v1/rooms/1000", "");
            if check(&room) {
                return room;
            }
            assert!(
                Instant::now() < deadline,
                "room 1000 never {what}: {room}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within [`EXIT_WITHIN`].
    fn terminate_cleanly(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        // `exec` in the shell, in scripts/serve and in `cargo run` leave the service on this pid.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(
            exe.ends_with("release/roundtable"),
            "pid {pid} is {}",
            exe.display()
        );
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + EXIT_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit {status} after SIGTERM:\n{}",
                    self.log_tail()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "still running {EXIT_WITHIN:?} after SIGTERM:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The README's first command, then its quick start: a caller alone in room 1000 hears the alone
/// prompt and shows in the API with packets in; a second caller joins and each hears the other;
/// the README's `curl` lines show the room and start a recording, whose notice both hear and which
/// grows while the call runs;
/// stopped, it verifies with the README's `verify` line; the first caller hangs up; SIGTERM sends
/// the other a BYE and the process exits 0 within `shutdown.drain_s` + 10 s.
#[test]
#[ignore = "run by .ci/run on a fresh clone (RT_README_CLONE): builds and starts scripts/serve"]
fn first_command_serves_a_call_and_the_quick_start_works() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let clone = Clone::from_env();
    let mut service = clone.start(SERVE);

    // One caller, alone: it hears the alone prompt, and the API counts its packets.
    let mut a = Uac::new(clone.sip, "1000");
    assert_eq!(a.call(), 200, "{}", service.log_tail());
    let alone = a.start_media(440.0, Duration::from_millis(2500)).finish();
    let prompt = rms(&alone.window(Duration::from_millis(300), Duration::from_millis(2400)));
    assert!(prompt > 300.0, "no alone prompt heard (RMS {prompt:.0})");
    let room = service.wait_room("counted packets in", |room| {
        room["participants"][0]["packets_in"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    assert_eq!(
        room["participants"].as_array().map(Vec::len),
        Some(1),
        "{room}"
    );

    // A second caller: each hears the other's tone, not its own.
    let mut b = Uac::new(clone.sip, "1000");
    assert_eq!(b.call(), 200, "{}", service.log_tail());
    let media_a = a.start_media(440.0, Duration::from_secs(3));
    let media_b = b.start_media(1100.0, Duration::from_secs(3));
    let (heard_a, heard_b) = (media_a.finish(), media_b.finish());
    let window = (Duration::from_millis(1000), Duration::from_millis(2900));
    let (a_heard, b_heard) = (
        heard_a.window(window.0, window.1),
        heard_b.window(window.0, window.1),
    );
    let (a_other, a_own) = (tone_db(&a_heard, 1100.0), tone_db(&a_heard, 440.0));
    let (b_other, b_own) = (tone_db(&b_heard, 440.0), tone_db(&b_heard, 1100.0));
    assert!(
        a_other > a_own + 20.0,
        "A: 1100 Hz {a_other:.1} dB, own 440 Hz {a_own:.1} dB"
    );
    assert!(
        b_other > b_own + 20.0,
        "B: 440 Hz {b_other:.1} dB, own 1100 Hz {b_own:.1} dB"
    );

    // Quick start 4: look at the room.
    let room = clone.curl(CURL_ROOM);
    assert_eq!(room["id"], "1000", "{room}");
    assert_eq!(
        room["participants"].as_array().map(Vec::len),
        Some(2),
        "{room}"
    );

    // Quick start 5: record it; the WAV grows at recordings/1000/<START>/mix.wav while the call
    // runs, and is complete with its manifest once the recording stops.
    // Both callers fall silent, so what they hear next is the recording notice.
    let before = clone.recordings_of_1000();
    let started = clone.curl(CURL_RECORD);
    assert_eq!(started["recording"], true, "{started}");
    let media_a = a.start_media(0.0, Duration::from_secs(3));
    let media_b = b.start_media(0.0, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1200));
    let new: Vec<String> = clone
        .recordings_of_1000()
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(new.len(), 1, "one new recording folder: {new:?}");
    let start = &new[0];
    assert!(
        start.len() == 16 && start.as_bytes()[8] == b'T' && start.ends_with('Z'),
        "START is the UTC start (20261121T223015Z): {start}"
    );
    let mix = clone.recording_dir(start).join("mix.wav");
    let size = || std::fs::metadata(&mix).map(|m| m.len()).unwrap_or(0);
    let early = size();
    std::thread::sleep(Duration::from_millis(1500));
    let later = size();
    assert!(
        later > early && early > 44,
        "mix.wav does not grow: {early} then {later} bytes"
    );
    for (name, media) in [("A", media_a), ("B", media_b)] {
        let heard = media.finish();
        let notice = rms(&heard.window(Duration::from_millis(200), Duration::from_millis(1800)));
        assert!(
            notice > 300.0,
            "{name} heard no recording notice (RMS {notice:.0})"
        );
    }
    let (status, _) = service.http("POST", "/v1/rooms/1000/recording", r#"{"action":"stop"}"#);
    assert_eq!(status, 200);
    let manifest = clone.recording_dir(start).join("manifest.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !manifest.is_file() {
        assert!(
            Instant::now() < deadline,
            "no manifest.json\n{}",
            service.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (verified, said) = clone.verify(start);
    assert!(verified, "verify failed:\n{said}");

    // The first caller hangs up; at SIGTERM the other gets BYE and the process exits 0.
    assert_eq!(a.hangup(), 200);
    service.wait_room("lost a caller", |room| {
        room["participants"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    });
    service.terminate_cleanly();
    assert!(
        b.expect_bye(Duration::from_secs(2)),
        "the caller left in got no BYE"
    );
}

/// `scripts/serve serve --auto-record`: a call is recorded from its join, and SIGTERM finalizes
/// the recording (manifest written, verified) before the process exits 0.
#[test]
#[ignore = "run by .ci/run on a fresh clone (RT_README_CLONE): builds and starts scripts/serve"]
fn auto_record_is_finalized_at_sigterm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let clone = Clone::from_env();
    let before = clone.recordings_of_1000();
    let mut service = clone.start(SERVE_AUTO_RECORD);
    let mut a = Uac::new(clone.sip, "1000");
    assert_eq!(a.call(), 200, "{}", service.log_tail());
    a.start_media(440.0, Duration::from_secs(2)).finish();
    service.wait_room("recording", |room| room["recording"] == true);
    service.terminate_cleanly();
    assert!(
        a.expect_bye(Duration::from_secs(2)),
        "the caller got no BYE"
    );
    let new: Vec<String> = clone
        .recordings_of_1000()
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(new.len(), 1, "one new recording: {new:?}");
    assert!(
        clone.recording_dir(&new[0]).join("manifest.json").is_file(),
        "not finalized"
    );
    let (verified, said) = clone.verify(&new[0]);
    assert!(verified, "verify failed:\n{said}");
}

/// `scripts/serve --config roundtable.toml` (the example configuration copied as a newcomer
/// would) and `cargo run --release -- serve` start the service too.
#[test]
#[ignore = "run by .ci/run on a fresh clone (RT_README_CLONE): builds and starts scripts/serve"]
fn other_ways_to_start_serve() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let clone = Clone::from_env();
    std::fs::copy(
        clone.dir.join("deploy/roundtable.example.toml"),
        clone.dir.join("roundtable.toml"),
    )
    .unwrap();
    for command in [SERVE_CONFIG, CARGO_RUN] {
        let mut service = clone.start(command);
        let (status, health) = service.http("GET", "/health", "");
        assert_eq!(status, 200, "{command}: {health}");
        let mut caller = Uac::new(clone.sip, "1000");
        assert_eq!(caller.call(), 200, "{command}: {}", service.log_tail());
        assert_eq!(caller.hangup(), 200, "{command}");
        service.terminate_cleanly();
    }
}
