//! Every RFC 4475 / RFC 5118 torture message, sent over UDP to the running binary: the response
//! arrives where RFC 3261 18.2.2 sends it (the source address with the Via sent-by port, 5060 by
//! default, or the source port with `rport`) and matches `testdata/sip-torture/index.tsv`;
//! messages to drop get silence; the service answers OPTIONS afterwards.
//!
//! The one test in this binary binds 127.0.0.1 UDP port 5060 and the other sent-by ports the
//! vectors name (5050, 6050, 19823); no other test binds them.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use roundtable_sip::message::{Framing, Message};

/// The Call-ID of a message our parser refuses, read line by line.
fn raw_call_id(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}

fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sip-torture")
}

/// Distinct final response codes (>= 200) for `call_id` arriving on any of `sockets` within
/// `wait`; retransmissions of earlier messages' responses are told apart by their Call-ID.
fn collect(sockets: &[(u16, UdpSocket)], call_id: &str, wait: Duration) -> Vec<u16> {
    let deadline = Instant::now() + wait;
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        for (_, s) in sockets {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                let text = SipText(String::from_utf8_lossy(&buf[..n]).to_string());
                let same_call = text
                    .header("Call-ID")
                    .or_else(|| text.header("i"))
                    .unwrap_or_default()
                    == call_id;
                if let Some(code) = text.status().filter(|c| *c >= 200 && same_call)
                    && !codes.contains(&code)
                {
                    codes.push(code);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    codes
}

#[test]
fn torture_vectors_over_udp() {
    // One real call holds the only call slot, so torture INVITEs that would be accepted get 503
    // (never 400) and no RTP is ever sent towards the vectors' TEST-NET addresses.
    let service = Service::start(Options {
        toml: "[sip]\nmax_calls = 1".into(),
        ..Options::default()
    });
    let mut holder = Uac::new(service.sip, "holder");
    assert_eq!(holder.call(), 200);

    let mut sockets: Vec<(u16, UdpSocket)> = Vec::new();
    let index = std::fs::read_to_string(torture_dir().join("index.tsv")).unwrap();
    let mut failures = Vec::new();
    for line in index.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, kind, expect) = (cols[0], cols[4], cols[5]);
        let codes: Vec<u16> = cols[6]
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let bytes = std::fs::read(torture_dir().join(file)).unwrap();
        // Sent from port 5060. RFC 3261 18.2.2 answers the source address at the sent-by port
        // (5060 when none is written), or at the source port with rport: listen there.
        let reply_port = Message::parse(&bytes, Framing::Datagram)
            .ok()
            .and_then(|(m, _)| m.top_via())
            .filter(|via| !via.rport)
            .and_then(|via| via.sent_by_port())
            .unwrap_or(5060);
        for port in [5060, reply_port] {
            if !sockets.iter().any(|(p, _)| *p == port) {
                let socket = UdpSocket::bind(("127.0.0.1", port))
                    .unwrap_or_else(|e| panic!("port {port}: {e}"));
                socket.set_nonblocking(true).unwrap();
                sockets.push((port, socket));
            }
        }
        let sender = &sockets
            .iter()
            .find(|(p, _)| *p == 5060)
            .expect("bound above")
            .1;
        sender.send_to(&bytes, service.sip).unwrap();
        let call_id = Message::parse(&bytes, Framing::Datagram)
            .ok()
            .and_then(|(m, _)| m.call_id().map(str::to_string))
            .unwrap_or_else(|| raw_call_id(&bytes));
        let got = collect(
            &sockets,
            &call_id,
            Duration::from_millis(if kind == "response" { 300 } else { 250 }),
        );
        let ok = match expect {
            "accept" => {
                !got.is_empty()
                    && got
                        .iter()
                        .all(|c| *c != 400 && (codes.is_empty() || codes.contains(c) || *c == 503))
            }
            "reject" => !got.is_empty() && got.iter().all(|c| codes.contains(c)),
            "either" => true,
            "drop" => got.is_empty(),
            "dblreq" => got.len() == 1 && got[0] != 400,
            other => panic!("unknown verdict {other}"),
        };
        if !ok {
            failures.push(format!("{file}: expected {expect} {codes:?}, got {got:?}"));
        }
    }
    // Still serving: an OPTIONS ping is answered, and the call that was up still is.
    let ping = Uac::new(service.sip, "x");
    let options = ping
        .invite_text("", "z9hG4bK-ping")
        .replace("INVITE sip:", "OPTIONS sip:")
        .replace("1 INVITE", "1 OPTIONS");
    ping.send_raw(options.as_bytes());
    assert_eq!(
        ping.final_response(Duration::from_secs(2))
            .and_then(|m| m.status()),
        Some(200)
    );
    assert_eq!(holder.hangup(), 200);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        service.log()
    );
}
