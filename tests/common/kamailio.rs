//! A real Kamailio (Debian's `kamailio`) on a loopback port, started from a config template in
//! `tests/kamailio/` with its placeholders replaced; its log (stderr) kept for assertions.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{KAMAILIO, tool_present};

/// Whether Kamailio is installed (see [`tool_present`]: missing fails the test).
pub fn kamailio_available() -> bool {
    let found = Path::new("/usr/sbin/kamailio").exists();
    tool_present(&KAMAILIO, (!found).then(|| "no /usr/sbin/kamailio".into()))
}

/// A running Kamailio; stopped on drop.
pub struct Kamailio {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Kamailio {
    /// Starts `tests/kamailio/<template>` with `replacements` (`PORT` becomes `port`), in
    /// `dir`; waits (at most 5 s) until it answers an OPTIONS on UDP `port`.
    pub fn start(
        template: &str,
        port: u16,
        replacements: &[(&str, String)],
        dir: &Path,
    ) -> Kamailio {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/kamailio")
            .join(template);
        let mut text = std::fs::read_to_string(&path).expect("kamailio template");
        text = text.replace("PORT", &port.to_string());
        for (from, to) in replacements {
            text = text.replace(from, to);
        }
        let config = dir.join(template);
        std::fs::write(&config, text).unwrap();
        let mut kamailio = Kamailio {
            child: None,
            config,
            log: dir.join("kamailio.log"),
            dir: dir.to_path_buf(),
            port,
        };
        kamailio.run();
        kamailio
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let runtime = self.dir.join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        let child = Command::new("/usr/sbin/kamailio")
            // Its own process group: Kamailio forks workers, and stopping it kills them all.
            .process_group(0)
            .arg("-f")
            .arg(&self.config)
            .args(["-DD", "-E", "-m", "32", "-M", "8"])
            .arg("-Y")
            .arg(&runtime)
            .arg("-w")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kamailio");
        self.child = Some(child);
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let local = probe.local_addr().unwrap();
        let options = format!(
            "OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-probe\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p\r\nTo: <sip:probe@127.0.0.1>\r\n\
             Call-ID: kamailio-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            port = self.port
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("kamailio exited ({status}):\n{}", self.log());
            }
            let _ = probe.send_to(options.as_bytes(), ("127.0.0.1", self.port));
            if probe.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("kamailio did not answer on {}:\n{}", self.port, self.log());
    }

    /// Stops it and its workers (SIGKILL to the process group: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same configuration (its location table starts empty).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `within`) until its log holds `count` lines containing `text`.
    pub fn wait_for_log(&self, text: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().matches(text).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}
