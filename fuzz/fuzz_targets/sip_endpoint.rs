//! Random sequences of datagrams, timeouts, application commands and answers to the endpoint's
//! own requests (BYE, refreshes, pings, the INVITE and CANCEL of calls it places, REGISTERs a
//! trunk's registration asks for, and REFERs accepted or declined with their NOTIFYs) against the endpoint's transaction and dialog state machines
//! and the registration's never panic, and time never runs backwards.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use roundtable_sip::Rejection;
use roundtable_sip::digest::User;
use roundtable_sip::endpoint::{
    CallKey, Endpoint, EndpointConfig, Event, FlowId, OutgoingCall, OutgoingRegister, Output,
    Peer, RegisterRequest, RequestKey, Transport,
};
use roundtable_sip::registration::{Registration, RegistrationConfig};

const INVITE: &str = "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new(EndpointConfig {
        seed: Some(1),
        session_expires: 90,
        ping_interval: Some(Duration::from_secs(20)),
        ..EndpointConfig::default()
    });
    let peer = Peer {
        transport: Transport::Udp,
        remote: "127.0.0.1:5070".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        flow: FlowId(0),
    };
    let start = Instant::now();
    let mut now = start;
    let mut calls: Vec<CallKey> = Vec::new();
    let mut registration = Registration::new(start, RegistrationConfig::default(), 1);
    let mut next_key = 0u64;
    // The last request the endpoint sent, to answer with a fuzzed status.
    let mut last_request: Option<Vec<u8>> = None;
    for chunk in data.chunks(64).take(64) {
        let (op, rest) = chunk.split_first().unwrap_or((&0, &[]));
        match op % 9 {
            8 => {
                if let Some(send) = registration.handle_timeout(now) {
                    next_key += 1;
                    let register = OutgoingRegister {
                        peer,
                        request: RegisterRequest {
                            registrar: "sip:127.0.0.1".into(),
                            aor: "sip:trunk@127.0.0.1".into(),
                            contact_user: "trunk".into(),
                            call_id: "reg@127.0.0.1".into(),
                            cseq: send.cseq,
                            expires: send.expires,
                            route: Vec::new(),
                            credentials: Some(User {
                                name: "trunk".into(),
                                password: "pw".into(),
                            }),
                        },
                    };
                    ep.register(now, RequestKey(next_key), register);
                }
            }
            7 => {
                let call = CallKey::outgoing(u64::from(rest.first().copied().unwrap_or(0)));
                let credentials = (rest.get(1).copied().unwrap_or(0) % 2 == 0).then(|| User {
                    name: "trunk".into(),
                    password: "pw".into(),
                });
                let outgoing = OutgoingCall {
                    peer,
                    request_uri: "sip:bob@127.0.0.1:5070".into(),
                    from: "<sip:room@127.0.0.1>".into(),
                    to: "<sip:bob@127.0.0.1:5070>".into(),
                    route: Vec::new(),
                    body: b"v=0\r\n".to_vec(),
                    credentials,
                };
                ep.dial(now, call, outgoing);
                calls.push(call);
            }
            6 => {
                if let Some(request) = &last_request {
                    let code = 100
                        + u16::from_le_bytes([
                            rest.first().copied().unwrap_or(0),
                            rest.get(1).copied().unwrap_or(0),
                        ]) % 600;
                    ep.handle_message(now, peer, &answer(request, code));
                }
            }
            0 => ep.handle_message(now, peer, INVITE.as_bytes()),
            1 => ep.handle_message(now, peer, rest),
            2 => {
                now += Duration::from_millis(u64::from(rest.first().copied().unwrap_or(0)) * 300);
                ep.handle_timeout(now);
            }
            3 => {
                if let Some(c) = calls.first() {
                    ep.accept(now, *c, b"v=0\r\n".to_vec())
                }
            }
            4 => {
                if let Some(c) = calls.last() {
                    ep.reject(now, *c, Rejection::new(486, "Busy Here"))
                }
            }
            _ => {
                if let Some(c) = calls.pop() {
                    ep.hangup(now, c)
                }
            }
        }
        let mut refers = Vec::new();
        while let Some(out) = ep.poll_output() {
            match out {
                Output::Event(Event::Refer(refer)) => refers.push(refer),
                Output::Event(Event::IncomingCall(call)) => calls.push(call.call),
                Output::Event(Event::Registered { cseq, outcome, .. }) => {
                    registration.handle_outcome(now, cseq, &outcome);
                }
                Output::Transmit(t) if !t.bytes.starts_with(b"SIP/2.0") => {
                    last_request = Some(t.bytes)
                }
                _ => {}
            }
        }
        for (i, refer) in refers.into_iter().enumerate() {
            if i % 2 == 0 {
                ep.answer_refer(now, refer.id, Ok(()));
                ep.notify_refer(now, refer.call, 200, "OK", true);
            } else {
                ep.answer_refer(now, refer.id, Err(Rejection::new(603, "Declined")));
            }
        }
        if let Some(at) = ep.poll_timeout() {
            assert!(at + Duration::from_secs(3600) > start);
        }
        if let Some(at) = registration.poll_timeout() {
            assert!(at >= start);
        }
    }
});

/// A response with `code` to `request`, copying the headers that match it to its transaction.
fn answer(request: &[u8], code: u16) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let mut out = format!("SIP/2.0 {code} X\r\n");
    for line in text.lines().take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default();
        if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&name) {
            out.push_str(line);
            if name == "To" && !line.contains("tag=") && code > 100 {
                out.push_str(";tag=fz");
            }
            out.push_str("\r\n");
        }
    }
    match code {
        401 => out.push_str("WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth\"\r\n"),
        407 => out.push_str("Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n"),
        423 => out.push_str("Min-Expires: 7200\r\n"),
        300..=399 => out.push_str("Contact: <sip:elsewhere@127.0.0.1:5090>\r\n"),
        200..=299 => out.push_str("Contact: <sip:bob@127.0.0.1:5070>\r\n"),
        _ => {}
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}
