//! Every RFC 4475 and RFC 5118 torture message, fed to the endpoint core over UDP, gets the
//! verdict `testdata/sip-torture/index.tsv` gives: accept (any answer but 400, or the call is
//! offered to the application), reject (one of the listed codes), either, drop (no answer), or
//! dblreq (the REGISTER is answered, the trailing INVITE ignored).

use std::path::PathBuf;
use std::time::Instant;

use roundtable_sip::endpoint::{Endpoint, EndpointConfig, Event, FlowId, Output, Peer, Transport};
use roundtable_sip::message::{Framing, Message};

#[derive(Debug, PartialEq)]
enum Outcome {
    Response(u16),
    Offered,
    Silence,
}

fn outcome(bytes: &[u8]) -> Vec<Outcome> {
    let mut ep = Endpoint::new(EndpointConfig {
        seed: Some(7),
        ..EndpointConfig::default()
    });
    let peer = Peer {
        transport: Transport::Udp,
        remote: "127.0.0.1:5070".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        flow: FlowId(0),
    };
    ep.handle_message(Instant::now(), peer, bytes);
    let mut seen = Vec::new();
    while let Some(out) = ep.poll_output() {
        match out {
            Output::Transmit(t) => {
                let (m, _) =
                    Message::parse(&t.bytes, Framing::Datagram).expect("we print valid SIP");
                if let Some(code) = m.status().filter(|c| *c >= 200) {
                    seen.push(Outcome::Response(code));
                }
            }
            Output::Event(Event::IncomingCall(_)) => seen.push(Outcome::Offered),
            _ => {}
        }
    }
    if seen.is_empty() {
        seen.push(Outcome::Silence);
    }
    seen
}

fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/sip-torture")
}

#[test]
fn every_torture_message_gets_the_indexed_verdict() {
    let index = std::fs::read_to_string(torture_dir().join("index.tsv")).expect("index.tsv");
    let mut failures = Vec::new();
    let mut rows = 0;
    for line in index.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, expect, codes) = (cols[0], cols[5], cols[6]);
        let codes: Vec<u16> = codes
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let bytes = std::fs::read(torture_dir().join(file)).expect(file);
        let got = outcome(&bytes);
        rows += 1;
        let ok = match expect {
            "accept" => got.iter().all(|o| match o {
                Outcome::Offered => true,
                Outcome::Response(c) => *c != 400 && (codes.is_empty() || codes.contains(c)),
                Outcome::Silence => false,
            }),
            "reject" => got
                .iter()
                .all(|o| matches!(o, Outcome::Response(c) if codes.contains(c))),
            "either" => true,
            "drop" => got == [Outcome::Silence],
            "dblreq" => got.len() == 1 && matches!(got[0], Outcome::Response(c) if c != 400),
            other => panic!("unknown verdict {other}"),
        };
        if !ok {
            failures.push(format!("{file}: expected {expect} {codes:?}, got {got:?}"));
        }
    }
    assert_eq!(rows, 61, "every row of the index");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
