//! A real DNS server for routing tests: Debian's dnsmasq on a loopback port, serving only the
//! records a test gives it (no upstream, no hosts file), authoritative for `example.test`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{DNSMASQ, tool_present};

/// Where Debian puts dnsmasq, if it is installed (see [`tool_present`]: missing fails the test).
pub fn dnsmasq() -> Option<&'static str> {
    let found = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    tool_present(
        &DNSMASQ,
        found.is_none().then(|| "no dnsmasq in /usr/sbin".into()),
    )
    .then_some(found)
    .flatten()
}

/// A running dnsmasq; stopped on drop.
pub struct Dns {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
}

/// One record dnsmasq serves.
pub enum Record<'a> {
    /// `name` has address `ip` (A or AAAA).
    Host(&'a str, &'a str),
    /// SRV `service` (e.g. `_sip._udp.example.test`) points at `target:port`.
    Srv {
        service: &'a str,
        target: &'a str,
        port: u16,
        priority: u16,
        weight: u16,
    },
}

impl Dns {
    /// Starts dnsmasq (`binary`, from [`dnsmasq`]) on `127.0.0.1:port` with `records`; waits
    /// (at most 5 s) until it answers.
    pub fn start(binary: &str, port: u16, records: &[Record]) -> Dns {
        let mut command = Command::new(binary);
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--log-facility=-",
            "--local=/example.test/",
        ]);
        command.arg(format!("--port={port}"));
        if nix_is_root() {
            command.arg("--user=root");
        }
        for record in records {
            command.arg(match record {
                Record::Host(name, ip) => format!("--host-record={name},{ip}"),
                Record::Srv {
                    service,
                    target,
                    port,
                    priority,
                    weight,
                } => format!("--srv-host={service},{target},{port},{priority},{weight}"),
            });
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut dns = Dns { child, addr };
        dns.wait_until_answering();
        dns
    }

    /// Sends a query for `version.bind`-less nonsense until any answer comes back.
    fn wait_until_answering(&mut self) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        // A standard query for "a.example.test" type A.
        let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["a", "example", "test"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dnsmasq exited ({status}) before answering");
            }
            let _ = socket.send_to(&query, self.addr);
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("dnsmasq did not answer on {}", self.addr);
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
