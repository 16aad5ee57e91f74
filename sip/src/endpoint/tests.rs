//! Unit tests of the endpoint core on a virtual clock.

use std::time::{Duration, Instant};

use super::*;

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: "127.0.0.1:5070".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        flow: FlowId(0),
    }
}

fn invite(branch: &str) -> Vec<u8> {
    let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: c1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn request(method: &str, to_tag: &str, branch: &str) -> Vec<u8> {
    // An ACK carries the CSeq number of the INVITE it acknowledges.
    let cseq = if method == "ACK" { 1 } else { 2 };
    format!(
        "{method} sip:roundtable@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:1000@127.0.0.1>;tag={to_tag}\r\nCall-ID: c1\r\n\
         CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Drained {
    sent: Vec<Message>,
    events: Vec<Event>,
}

fn drain(ep: &mut Endpoint) -> Drained {
    let mut d = Drained {
        sent: Vec::new(),
        events: Vec::new(),
    };
    while let Some(out) = ep.poll_output() {
        match out {
            Output::Transmit(t) => d
                .sent
                .push(Message::parse(&t.bytes, Framing::Stream).unwrap().0),
            Output::Event(e) => d.events.push(e),
            Output::Count(_) => {}
        }
    }
    d
}

fn codes(d: &Drained) -> Vec<u16> {
    d.sent.iter().filter_map(Message::status).collect()
}

/// Runs the endpoint's timers up to `until`, bounded in steps.
fn run_until(ep: &mut Endpoint, until: Instant) -> Drained {
    let mut all = Drained {
        sent: Vec::new(),
        events: Vec::new(),
    };
    for _ in 0..1000 {
        match ep.poll_timeout() {
            Some(at) if at <= until => {
                ep.handle_timeout(at);
                let d = drain(ep);
                all.sent.extend(d.sent);
                all.events.extend(d.events);
            }
            _ => break,
        }
    }
    all
}

fn answered(ep: &mut Endpoint, now: Instant) -> (CallKey, String) {
    ep.handle_message(now, peer(), &invite("z9hG4bK1"));
    let d = drain(ep);
    assert_eq!(codes(&d), [100]);
    let Some(Event::IncomingCall(call)) = d.events.first() else {
        panic!("no call event")
    };
    assert_eq!(call.user.as_deref(), Some("1000"));
    ep.accept(now, call.call, b"v=0\r\n".to_vec());
    let d = drain(ep);
    assert_eq!(codes(&d), [200]);
    let to = NameAddr::parse(d.sent[0].headers.get("To").unwrap()).unwrap();
    (call.call, to.tag.expect("200 carries a To-tag"))
}

#[test]
fn invite_accept_ack_bye() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let (call, tag) = answered(&mut ep, t0);
    ep.handle_message(t0, peer(), &request("ACK", &tag, "z9hG4bK2"));
    assert_eq!(drain(&mut ep).events, [Event::CallConfirmed(call)]);
    ep.handle_message(t0, peer(), &request("BYE", &tag, "z9hG4bK3"));
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [200]);
    assert_eq!(d.events, [Event::CallEnded(call, EndReason::RemoteBye)]);
    // A retransmitted BYE gets the same 200 from the transaction, not a 481.
    ep.handle_message(t0, peer(), &request("BYE", &tag, "z9hG4bK3"));
    assert_eq!(codes(&drain(&mut ep)), [200]);
    assert_eq!(ep.active_calls(), 0);
}

#[test]
fn ok_is_retransmitted_until_ack_then_bye_after_64_t1() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let (call, _) = answered(&mut ep, t0);
    let d = run_until(&mut ep, t0 + Duration::from_secs(40));
    let retransmits = d.sent.iter().filter(|m| m.status() == Some(200)).count();
    // 0.5, 1.5, 3.5, 7.5, then every 4 s until 32 s: 10 retransmissions.
    assert!(
        (9..=11).contains(&retransmits),
        "{retransmits} retransmissions"
    );
    let byes: Vec<_> = d
        .sent
        .iter()
        .filter(|m| m.method() == Some(&Method::Bye))
        .collect();
    assert!(!byes.is_empty(), "BYE sent after the ACK timeout");
    assert_eq!(byes[0].request_uri(), Some("sip:alice@127.0.0.1:5070"));
    assert!(
        d.events
            .contains(&Event::CallEnded(call, EndReason::AckTimeout))
    );
}

#[test]
fn retransmitted_invite_gets_last_response() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let _ = answered(&mut ep, t0);
    ep.handle_message(t0, peer(), &invite("z9hG4bK1"));
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [200]);
    assert!(d.events.is_empty());
}

#[test]
fn reject_is_retransmitted_until_ack() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_message(t0, peer(), &invite("z9hG4bK1"));
    let Some(Event::IncomingCall(call)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.reject(t0, call.call, Rejection::new(488, "Not Acceptable Here"));
    assert_eq!(codes(&drain(&mut ep)), [488]);
    let d = run_until(&mut ep, t0 + Duration::from_millis(600));
    assert_eq!(codes(&d), [488]);
    // The ACK of a non-2xx shares the INVITE's branch and CSeq number.
    let ack = String::from_utf8(request("ACK", "x", "z9hG4bK1")).unwrap();
    ep.handle_message(t0 + Duration::from_millis(700), peer(), ack.as_bytes());
    let d = run_until(&mut ep, t0 + Duration::from_secs(60));
    assert!(codes(&d).is_empty());
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn hangup_sends_bye_and_retransmits_over_udp() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let (_call, tag) = answered(&mut ep, t0);
    ep.handle_message(t0, peer(), &request("ACK", &tag, "z9hG4bK2"));
    let _ = drain(&mut ep);
    let (call, _) = (CallKey(1), ());
    ep.hangup(t0, call);
    let d = drain(&mut ep);
    let bye = &d.sent[0];
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(
        NameAddr::parse(bye.headers.get("From").unwrap())
            .unwrap()
            .tag,
        Some(tag)
    );
    assert_eq!(
        NameAddr::parse(bye.headers.get("To").unwrap())
            .unwrap()
            .tag
            .as_deref(),
        Some("a1")
    );
    let d = run_until(&mut ep, t0 + Duration::from_secs(1));
    assert_eq!(d.sent.len(), 1, "one retransmission in the first second");
    let d = run_until(&mut ep, t0 + Duration::from_secs(40));
    assert!(d.sent.len() > 3);
    assert_eq!(ep.poll_timeout(), None, "Timer F ended the transaction");
}

#[test]
fn out_of_dialog_requests() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_message(t0, peer(), &request("BYE", "nope", "z9hG4bKa"));
    assert_eq!(codes(&drain(&mut ep)), [481]);
    let options = String::from_utf8(request("OPTIONS", "x", "z9hG4bKb"))
        .unwrap()
        .replace(";tag=x", "");
    ep.handle_message(t0, peer(), options.as_bytes());
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [200]);
    assert!(d.sent[0].headers.get("Allow").unwrap().contains("INVITE"));
    let foo = String::from_utf8(request("FOO", "x", "z9hG4bKc"))
        .unwrap()
        .replace(";tag=x", "");
    ep.handle_message(t0, peer(), foo.as_bytes());
    assert_eq!(codes(&drain(&mut ep)), [501]);
}

#[test]
fn garbage_is_dropped_and_bad_content_length_answered() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_message(t0, peer(), b"\x00\x01garbage");
    let mut counts = Vec::new();
    while let Some(o) = ep.poll_output() {
        counts.push(o);
    }
    assert_eq!(counts, [Output::Count(Count::Dropped)]);
    let mut long = invite("z9hG4bK9");
    long.truncate(long.len() - 10);
    ep.handle_message(t0, peer(), &long);
    assert_eq!(codes(&drain(&mut ep)), [400]);
}

#[test]
fn cancel_of_pending_invite() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_message(t0, peer(), &invite("z9hG4bK1"));
    let _ = drain(&mut ep);
    let cancel = String::from_utf8(request("CANCEL", "x", "z9hG4bK1"))
        .unwrap()
        .replace(";tag=x", "")
        .replace("2 CANCEL", "1 CANCEL");
    ep.handle_message(t0, peer(), cancel.as_bytes());
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [200, 487]);
    assert!(matches!(
        d.events[..],
        [Event::CallEnded(_, EndReason::Cancelled)]
    ));
}

#[test]
fn transaction_table_is_bounded() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig {
        max_transactions: 3,
        ..EndpointConfig::default()
    });
    let mut last = Vec::new();
    for i in 0..5 {
        let options = String::from_utf8(request("OPTIONS", "x", &format!("z9hG4bKo{i}")))
            .unwrap()
            .replace(";tag=x", "");
        ep.handle_message(t0, peer(), options.as_bytes());
        last = codes(&drain(&mut ep));
        if i < 3 {
            assert_eq!(last, [200]);
        }
    }
    assert_eq!(last, [503]);
    let _ = run_until(&mut ep, t0 + Duration::from_secs(40));
    ep.handle_message(t0 + Duration::from_secs(40), peer(), &invite("z9hG4bKnew"));
    assert_eq!(
        codes(&drain(&mut ep)),
        [100],
        "room again once Timer J freed the table"
    );
}

#[test]
fn answer_delay_rings_then_answers_or_is_cancelled() {
    let t0 = Instant::now();
    let config = EndpointConfig {
        answer_delay: Duration::from_secs(2),
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(config.clone());
    ep.handle_message(t0, peer(), &invite("z9hG4bK1"));
    let Some(Event::IncomingCall(call)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.accept(t0, call.call, b"v=0\r\n".to_vec());
    let d = drain(&mut ep);
    assert_eq!(d.sent[0].status(), Some(180));
    let ringing_tag = NameAddr::parse(d.sent[0].headers.get("To").unwrap())
        .unwrap()
        .tag;
    assert!(
        ringing_tag.is_some(),
        "180 carries the To-tag of the early dialog"
    );
    let d = run_until(&mut ep, t0 + Duration::from_millis(1900));
    assert!(codes(&d).is_empty(), "no 200 before the delay");
    let d = run_until(&mut ep, t0 + Duration::from_millis(2100));
    assert_eq!(codes(&d), [200]);
    assert_eq!(
        NameAddr::parse(d.sent[0].headers.get("To").unwrap())
            .unwrap()
            .tag,
        ringing_tag
    );

    // The same, cancelled while ringing: 200 to the CANCEL, 487 to the INVITE, no 200 ever.
    let mut ep = Endpoint::new(config);
    ep.handle_message(t0, peer(), &invite("z9hG4bK1"));
    let Some(Event::IncomingCall(call)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.accept(t0, call.call, b"v=0\r\n".to_vec());
    let _ = drain(&mut ep);
    let cancel = String::from_utf8(request("CANCEL", "x", "z9hG4bK1"))
        .unwrap()
        .replace(";tag=x", "")
        .replace("2 CANCEL", "1 CANCEL");
    ep.handle_message(t0 + Duration::from_millis(500), peer(), cancel.as_bytes());
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [200, 487]);
    assert_eq!(
        d.events,
        [Event::CallEnded(call.call, EndReason::Cancelled)]
    );
    let d = run_until(&mut ep, t0 + Duration::from_secs(3));
    assert!(!codes(&d).contains(&200), "never answered after CANCEL");
}

#[test]
fn reinvite_is_offered_answered_and_retransmitted_until_ack() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let (call, tag) = answered(&mut ep, t0);
    ep.handle_message(t0, peer(), &request("ACK", &tag, "z9hG4bK2"));
    let _ = drain(&mut ep);
    let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    let reinvite = String::from_utf8(request("INVITE", &tag, "z9hG4bK3"))
        .unwrap()
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        );
    ep.handle_message(t0, peer(), reinvite.as_bytes());
    let d = drain(&mut ep);
    let Some(Event::Reoffer(offer)) = d.events.first() else {
        panic!("{:?}", d.events)
    };
    assert_eq!((offer.call, offer.body.as_slice()), (call, sdp.as_bytes()));
    ep.answer_reoffer(t0, offer.id, Ok(b"v=0\r\na=recvonly\r\n".to_vec()));
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [200]);
    assert_eq!(d.sent[0].body, b"v=0\r\na=recvonly\r\n");
    // Retransmitted until the ACK (CSeq 2), then quiet; the call stays up.
    let d = run_until(&mut ep, t0 + Duration::from_millis(600));
    assert_eq!(codes(&d), [200]);
    let ack = String::from_utf8(request("ACK", &tag, "z9hG4bK4"))
        .unwrap()
        .replace("1 ACK", "2 ACK");
    ep.handle_message(t0 + Duration::from_millis(700), peer(), ack.as_bytes());
    let d = run_until(&mut ep, t0 + Duration::from_secs(40));
    assert!(
        codes(&d).is_empty() && d.events.is_empty(),
        "{:?}",
        d.events
    );
    assert_eq!(ep.active_calls(), 1);

    // A REFER without Refer-To is refused with 400 and the call goes on.
    let refer = String::from_utf8(request("REFER", &tag, "z9hG4bK6"))
        .unwrap()
        .replace("2 REFER", "4 REFER");
    ep.handle_message(t0 + Duration::from_secs(40), peer(), refer.as_bytes());
    assert_eq!(codes(&drain(&mut ep)), [400]);

    // An UPDATE is answered at once; a rejected re-offer keeps the call.
    let update = String::from_utf8(request("UPDATE", &tag, "z9hG4bK5"))
        .unwrap()
        .replace("2 UPDATE", "3 UPDATE");
    ep.handle_message(t0 + Duration::from_secs(41), peer(), update.as_bytes());
    let Some(Event::Reoffer(offer)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.answer_reoffer(
        t0 + Duration::from_secs(41),
        offer.id,
        Err(Rejection::new(488, "Not Acceptable Here")),
    );
    assert_eq!(codes(&drain(&mut ep)), [488]);
    assert_eq!(ep.active_calls(), 1);
}

#[test]
fn session_timer_refresh_and_expiry() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let with_timer = String::from_utf8(invite("z9hG4bK1")).unwrap().replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 90\r\n",
    );
    ep.handle_message(t0, peer(), with_timer.as_bytes());
    let Some(Event::IncomingCall(call)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.accept(t0, call.call, b"v=0\r\n".to_vec());
    let d = drain(&mut ep);
    assert_eq!(
        d.sent[0].headers.get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(d.sent[0].headers.get("Require"), Some("timer"));
    let tag = NameAddr::parse(d.sent[0].headers.get("To").unwrap())
        .unwrap()
        .tag
        .unwrap();
    ep.handle_message(t0, peer(), &request("ACK", &tag, "z9hG4bK2"));
    let _ = drain(&mut ep);
    // A refresh by UPDATE at 50 s moves the end to 50 + 60 s.
    let update = String::from_utf8(request("UPDATE", &tag, "z9hG4bK3")).unwrap();
    ep.handle_message(t0 + Duration::from_secs(50), peer(), update.as_bytes());
    let Some(Event::Reoffer(offer)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.answer_reoffer(t0 + Duration::from_secs(50), offer.id, Ok(Vec::new()));
    let d = drain(&mut ep);
    assert_eq!(
        d.sent[0].headers.get("Session-Expires"),
        Some("90;refresher=uac")
    );
    let d = run_until(&mut ep, t0 + Duration::from_secs(100));
    assert!(d.events.is_empty(), "still up at 100 s: {:?}", d.events);
    let d = run_until(&mut ep, t0 + Duration::from_secs(111));
    assert!(
        d.events
            .contains(&Event::CallEnded(call.call, EndReason::SessionExpired))
    );
    assert!(d.sent.iter().any(|m| m.method() == Some(&Method::Bye)));

    // Below Min-SE: 422 with Min-SE.
    let mut ep = Endpoint::new(EndpointConfig::default());
    let small = String::from_utf8(invite("z9hG4bK9")).unwrap().replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 30\r\n",
    );
    ep.handle_message(t0, peer(), small.as_bytes());
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [422]);
    assert_eq!(d.sent[0].headers.get("Min-SE"), Some("90"));
}

#[test]
fn record_route_is_echoed_and_bye_follows_the_route_set() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let routed = String::from_utf8(invite("z9hG4bK1")).unwrap().replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRecord-Route: <sip:127.0.0.1:5099;lr>, <sip:10.9.9.9;lr>\r\n",
    );
    ep.handle_message(t0, peer(), routed.as_bytes());
    let Some(Event::IncomingCall(call)) = drain(&mut ep).events.pop() else {
        panic!()
    };
    ep.accept(t0, call.call, b"v=0\r\n".to_vec());
    let d = drain(&mut ep);
    assert_eq!(
        d.sent[0].headers.get("Record-Route"),
        Some("<sip:127.0.0.1:5099;lr>, <sip:10.9.9.9;lr>")
    );
    ep.hangup(t0, call.call);
    let mut transmits = Vec::new();
    while let Some(out) = ep.poll_output() {
        if let Output::Transmit(t) = out {
            transmits.push(t);
        }
    }
    let bye = Message::parse(&transmits[0].bytes, Framing::Stream)
        .unwrap()
        .0;
    assert_eq!(
        transmits[0].peer.remote,
        "127.0.0.1:5099".parse().unwrap(),
        "sent to the first hop"
    );
    assert_eq!(
        bye.request_uri(),
        Some("sip:alice@127.0.0.1:5070"),
        "the remote target stays the Request-URI"
    );
    let routes: Vec<&str> = bye.headers.all("Route").collect();
    assert_eq!(routes, ["<sip:127.0.0.1:5099;lr>", "<sip:10.9.9.9;lr>"]);
}

#[test]
fn merged_request_gets_482() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_message(t0, peer(), &invite("z9hG4bK1"));
    let _ = drain(&mut ep);
    // The same INVITE forked by a proxy arrives again with another branch.
    ep.handle_message(t0, peer(), &invite("z9hG4bKother"));
    let d = drain(&mut ep);
    assert_eq!(codes(&d), [482]);
    assert!(d.events.is_empty());
}

/// Answers an INVITE carrying `extra` headers and ACKs it; returns the call, our tag and the 200.
fn answered_with(ep: &mut Endpoint, now: Instant, extra: &str) -> (CallKey, String, Message) {
    let text = String::from_utf8(invite("z9hG4bK1")).unwrap().replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{extra}"),
    );
    ep.handle_message(now, peer(), text.as_bytes());
    let Some(Event::IncomingCall(call)) = drain(ep).events.pop() else {
        panic!("no call")
    };
    ep.accept(now, call.call, b"v=0\r\n".to_vec());
    let ok = drain(ep).sent.remove(0);
    let tag = NameAddr::parse(ok.headers.get("To").unwrap())
        .unwrap()
        .tag
        .unwrap();
    ep.handle_message(now, peer(), &request("ACK", &tag, "z9hG4bK2"));
    assert_eq!(drain(ep).events, [Event::CallConfirmed(call.call)]);
    (call.call, tag, ok)
}

/// A response from the phone to a request we sent.
fn answer_to(request: &Message, code: u16, extra: &str) -> Vec<u8> {
    let mut text = format!("SIP/2.0 {code} X\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        text.push_str(&format!(
            "{name}: {}\r\n",
            request.headers.get(name).unwrap()
        ));
    }
    format!("{text}{extra}Content-Length: 0\r\n\r\n").into_bytes()
}

fn config_with(f: impl FnOnce(&mut EndpointConfig)) -> EndpointConfig {
    let mut config = EndpointConfig::default();
    f(&mut config);
    config
}

#[test]
fn bridge_refreshes_callers_without_timer_support_by_update() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(config_with(|c| c.session_expires = 120));
    let (call, _, ok) = answered_with(&mut ep, t0, "Allow: INVITE, ACK, BYE, UPDATE\r\n");
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uas"));
    assert_eq!(
        ok.headers.get("Require"),
        None,
        "the caller does not know the extension"
    );
    // Refreshes at half the interval, by UPDATE without a body, and again after each success.
    let d = run_until(&mut ep, t0 + Duration::from_secs(60));
    let update = d
        .sent
        .iter()
        .find(|m| m.method() == Some(&Method::Update))
        .expect("UPDATE sent at 60 s");
    assert_eq!(
        update.headers.get("Session-Expires"),
        Some("120;refresher=uas")
    );
    assert_eq!(update.headers.get("CSeq"), Some("2 UPDATE"));
    assert_eq!(update.request_uri(), Some("sip:alice@127.0.0.1:5070"));
    assert!(update.body.is_empty());
    ep.handle_message(
        t0 + Duration::from_secs(60),
        peer(),
        &answer_to(update, 200, ""),
    );
    let d = run_until(&mut ep, t0 + Duration::from_secs(120));
    assert!(d.events.is_empty(), "{:?}", d.events);
    let second = d
        .sent
        .iter()
        .find(|m| m.method() == Some(&Method::Update))
        .expect("second refresh at 120 s");
    assert_eq!(second.headers.get("CSeq"), Some("3 UPDATE"));
    // No answer to it: Timer F ends the call with BYE.
    let d = run_until(&mut ep, t0 + Duration::from_secs(160));
    assert!(
        d.events
            .contains(&Event::CallEnded(call, EndReason::PeerUnreachable)),
        "{:?}",
        d.events
    );
    assert!(d.sent.iter().any(|m| m.method() == Some(&Method::Bye)));
    assert_eq!(ep.active_calls(), 0);
}

#[test]
fn refresh_by_reinvite_is_acked_and_a_crossing_reinvite_gets_491() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(config_with(|c| c.session_expires = 90));
    let (call, tag, _) = answered_with(&mut ep, t0, "");
    let d = run_until(&mut ep, t0 + Duration::from_secs(45));
    let reinvite = d
        .sent
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .expect("re-INVITE at 45 s");
    assert_eq!(reinvite.body, b"v=0\r\n", "our current SDP, unchanged");
    assert_eq!(
        reinvite.headers.get("Content-Type"),
        Some("application/sdp")
    );
    // The phone's own re-INVITE crosses ours: 491.
    let theirs = String::from_utf8(request("INVITE", &tag, "z9hG4bK7")).unwrap();
    ep.handle_message(t0 + Duration::from_secs(45), peer(), theirs.as_bytes());
    assert_eq!(codes(&drain(&mut ep)), [491]);
    // Our re-INVITE's 200 gets an ACK with the same CSeq number and a new branch, again for
    // each retransmission of the 200.
    let ok = answer_to(reinvite, 200, "Contact: <sip:alice@127.0.0.1:5071>\r\n");
    ep.handle_message(t0 + Duration::from_secs(45), peer(), &ok);
    let d = drain(&mut ep);
    let ack = &d.sent[0];
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.headers.get("CSeq"), Some("2 ACK"));
    assert_eq!(
        ack.request_uri(),
        Some("sip:alice@127.0.0.1:5071"),
        "the 2xx refreshed the target"
    );
    assert_ne!(
        ack.top_via().unwrap().branch,
        reinvite.top_via().unwrap().branch
    );
    ep.handle_message(t0 + Duration::from_secs(46), peer(), &ok);
    assert_eq!(drain(&mut ep).sent[0].method(), Some(&Method::Ack));
    // Refreshed: still up well past the first interval.
    let d = run_until(&mut ep, t0 + Duration::from_secs(89));
    assert!(
        !d.events.iter().any(|e| matches!(e, Event::CallEnded(..))),
        "{:?}",
        d.events
    );
    assert_eq!(ep.active_calls(), 1);
    let _ = call;
}

#[test]
fn a_refused_refresh_is_retried_and_a_non_2xx_is_acked() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(config_with(|c| c.session_expires = 1800));
    let (_, _, _) = answered_with(&mut ep, t0, "");
    let d = run_until(&mut ep, t0 + Duration::from_secs(900));
    let reinvite = d
        .sent
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .unwrap();
    ep.handle_message(
        t0 + Duration::from_secs(900),
        peer(),
        &answer_to(reinvite, 500, ""),
    );
    let d = drain(&mut ep);
    assert_eq!(d.sent[0].method(), Some(&Method::Ack));
    assert_eq!(
        d.sent[0].top_via().unwrap().branch,
        reinvite.top_via().unwrap().branch,
        "same transaction"
    );
    let d = run_until(&mut ep, t0 + Duration::from_secs(1350));
    assert!(
        d.sent.iter().any(|m| m.method() == Some(&Method::Invite)),
        "retried halfway to the expiry"
    );
}

#[test]
fn ping_481_ends_the_call_without_bye_and_a_200_keeps_pinging() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(config_with(|c| {
        c.session_expires = 0;
        c.ping_interval = Some(Duration::from_secs(30));
    }));
    let (call, _, ok) = answered_with(&mut ep, t0, "");
    assert_eq!(ok.headers.get("Session-Expires"), None);
    let d = run_until(&mut ep, t0 + Duration::from_secs(30));
    let ping = d
        .sent
        .iter()
        .find(|m| m.method() == Some(&Method::Options))
        .expect("OPTIONS at 30 s");
    ep.handle_message(
        t0 + Duration::from_secs(30),
        peer(),
        &answer_to(ping, 200, ""),
    );
    let d = run_until(&mut ep, t0 + Duration::from_secs(60));
    let ping = d
        .sent
        .iter()
        .find(|m| m.method() == Some(&Method::Options))
        .expect("OPTIONS at 60 s");
    ep.handle_message(
        t0 + Duration::from_secs(60),
        peer(),
        &answer_to(ping, 481, ""),
    );
    let d = drain(&mut ep);
    assert_eq!(
        d.events,
        [Event::CallEnded(call, EndReason::PeerUnreachable)]
    );
    assert!(
        d.sent.is_empty(),
        "no BYE for a dialog the peer does not know"
    );
    assert_eq!(ep.active_calls(), 0);
}

#[test]
fn our_own_request_routed_back_gets_482() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let (call, _, _) = answered_with(&mut ep, t0, "");
    ep.hangup(t0, call);
    let mut bye = Vec::new();
    while let Some(out) = ep.poll_output() {
        if let Output::Transmit(t) = out {
            bye = t.bytes;
        }
    }
    // A misconfigured proxy sends our BYE back to us with its own Via on top.
    let text = String::from_utf8(bye).unwrap().replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKproxy\r\nVia: ",
        1,
    );
    ep.handle_message(t0, peer(), text.as_bytes());
    assert_eq!(codes(&drain(&mut ep)), [482]);
}

mod dial {
    use super::*;

    fn outgoing(credentials: Option<crate::digest::User>) -> OutgoingCall {
        OutgoingCall {
            peer: peer(),
            request_uri: "sip:bob@127.0.0.1:5070".into(),
            from: "\"Roundtable\" <sip:room@127.0.0.1>".into(),
            to: "<sip:bob@127.0.0.1:5070>".into(),
            route: Vec::new(),
            body: b"v=0\r\n".to_vec(),
            credentials,
        }
    }

    /// A response from the callee to `request` (its Via, From, Call-ID, CSeq), To-tagged.
    fn respond(request: &Message, code: u16, extra: &str) -> Vec<u8> {
        let h = |n: &str| request.headers.get(n).unwrap_or_default().to_string();
        let to = if code > 100 {
            format!("{};tag=callee", h("To"))
        } else {
            h("To")
        };
        format!(
            "SIP/2.0 {code} Whatever\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("Call-ID"),
            h("CSeq"),
        )
        .into_bytes()
    }

    fn method(m: &Message) -> &str {
        m.method().map_or("", Method::as_str)
    }

    #[test]
    fn ringing_then_answered_makes_a_dialog_and_acks() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let call = CallKey::outgoing(1);
        ep.dial(t0, call, outgoing(None));
        let d = drain(&mut ep);
        let invite = d.sent[0].clone();
        assert_eq!(method(&invite), "INVITE");
        assert_eq!(invite.request_uri(), Some("sip:bob@127.0.0.1:5070"));
        assert!(invite.tag("From").is_some() && invite.tag("To").is_none());
        assert_eq!(ep.active_calls(), 1);
        ep.handle_message(t0, peer(), &respond(&invite, 100, ""));
        ep.handle_message(t0, peer(), &respond(&invite, 180, ""));
        assert_eq!(
            drain(&mut ep).events,
            [Event::Progress { call, code: 180 }],
            "100 Trying is not reported"
        );
        let ok = respond(&invite, 200, "Contact: <sip:bob@127.0.0.1:5071>\r\n");
        ep.handle_message(t0, peer(), &ok);
        let d = drain(&mut ep);
        assert!(matches!(&d.events[..], [Event::Answered { call: c, .. }] if *c == call));
        let ack = &d.sent[0];
        assert_eq!(method(ack), "ACK");
        assert_eq!(
            ack.request_uri(),
            Some("sip:bob@127.0.0.1:5071"),
            "to the Contact"
        );
        assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
        assert_eq!(ack.tag("To").as_deref(), Some("callee"));
        // A retransmitted 200 gets the same ACK again; nothing else is reported.
        ep.handle_message(t0, peer(), &ok);
        let d = drain(&mut ep);
        assert_eq!((d.sent.len(), d.events.len()), (1, 0));
        // The callee hangs up: the dialog knows the call.
        let bye = format!(
            "BYE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye\r\n\
             From: {};tag=callee\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            invite.headers.get("To").unwrap(),
            invite.headers.get("From").unwrap(),
            invite.call_id().unwrap()
        );
        ep.handle_message(t0, peer(), bye.as_bytes());
        let d = drain(&mut ep);
        assert_eq!(codes(&d), [200]);
        assert_eq!(d.events, [Event::CallEnded(call, EndReason::RemoteBye)]);
    }

    #[test]
    fn busy_and_redirect_fail_with_their_code_and_target() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        for (n, code, extra, redirect) in [
            (1, 486, "", None),
            (
                2,
                302,
                "Contact: <sip:carol@127.0.0.1:5090>\r\n",
                Some("sip:carol@127.0.0.1:5090"),
            ),
        ] {
            let call = CallKey::outgoing(n);
            ep.dial(t0, call, outgoing(None));
            let invite = drain(&mut ep).sent.remove(0);
            ep.handle_message(t0, peer(), &respond(&invite, code, extra));
            let d = drain(&mut ep);
            assert_eq!(
                method(&d.sent[0]),
                "ACK",
                "a non-2xx is ACKed by the transaction"
            );
            assert_eq!(
                d.events,
                [Event::Failed {
                    call,
                    code,
                    reason: "Whatever".into(),
                    redirect: redirect.map(str::to_string),
                }]
            );
        }
        run_until(&mut ep, t0 + Duration::from_secs(40));
        assert_eq!(ep.active_calls(), 0);
    }

    #[test]
    fn a_proxy_challenge_is_answered_once_with_the_credentials() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let user = crate::digest::User {
            name: "trunk".into(),
            password: "pw".into(),
        };
        let call = CallKey::outgoing(1);
        ep.dial(t0, call, outgoing(Some(user.clone())));
        let invite = drain(&mut ep).sent.remove(0);
        let challenge = "Proxy-Authenticate: Digest realm=\"pbx\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n";
        ep.handle_message(t0, peer(), &respond(&invite, 407, challenge));
        let d = drain(&mut ep);
        assert!(d.events.is_empty(), "{:?}", d.events);
        let again = d
            .sent
            .iter()
            .find(|m| method(m) == "INVITE")
            .expect("INVITE again");
        assert_eq!(again.headers.get("CSeq"), Some("2 INVITE"));
        assert_eq!(again.call_id(), invite.call_id());
        assert_eq!(again.tag("From"), invite.tag("From"));
        assert_ne!(
            again.top_via().unwrap().branch,
            invite.top_via().unwrap().branch
        );
        let authz = again.headers.get("Proxy-Authorization").expect("answered");
        assert!(authz.contains("username=\"trunk\"") && authz.contains("realm=\"pbx\""));
        // A second challenge fails the call.
        ep.handle_message(t0, peer(), &respond(again, 407, challenge));
        let d = drain(&mut ep);
        assert!(
            matches!(&d.events[..], [Event::Failed { code: 407, .. }]),
            "{:?}",
            d.events
        );
    }

    #[test]
    fn hangup_while_ringing_cancels_and_the_487_fails_the_call() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let call = CallKey::outgoing(1);
        ep.dial(t0, call, outgoing(None));
        let invite = drain(&mut ep).sent.remove(0);
        // No provisional yet: the CANCEL waits for one (RFC 3261 9.1).
        ep.hangup(t0, call);
        assert!(drain(&mut ep).sent.is_empty());
        ep.handle_message(t0, peer(), &respond(&invite, 180, ""));
        let d = drain(&mut ep);
        let cancel = d
            .sent
            .iter()
            .find(|m| method(m) == "CANCEL")
            .expect("CANCEL");
        assert_eq!(cancel.headers.get("Via"), invite.headers.get("Via"));
        assert_eq!(cancel.headers.get("CSeq"), Some("1 CANCEL"));
        assert_eq!(cancel.request_uri(), invite.request_uri());
        ep.handle_message(t0, peer(), &respond(cancel, 200, ""));
        ep.handle_message(t0, peer(), &respond(&invite, 487, ""));
        let d = drain(&mut ep);
        assert!(d.sent.iter().any(|m| method(m) == "ACK"));
        assert!(
            matches!(&d.events[..], [Event::Failed { code: 487, .. }]),
            "{:?}",
            d.events
        );
    }

    #[test]
    fn a_2xx_crossing_the_cancel_is_acked_and_ended_with_bye() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let call = CallKey::outgoing(1);
        ep.dial(t0, call, outgoing(None));
        let invite = drain(&mut ep).sent.remove(0);
        ep.handle_message(t0, peer(), &respond(&invite, 180, ""));
        ep.hangup(t0, call);
        drain(&mut ep);
        ep.handle_message(
            t0,
            peer(),
            &respond(&invite, 200, "Contact: <sip:bob@127.0.0.1:5070>\r\n"),
        );
        let d = drain(&mut ep);
        let sent: Vec<&str> = d.sent.iter().map(method).collect();
        assert_eq!(sent, ["ACK", "BYE"]);
        assert!(
            matches!(&d.events[..], [Event::Failed { code: 487, .. }]),
            "{:?}",
            d.events
        );
    }

    #[test]
    fn no_answer_at_all_fails_with_408_after_timer_b() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let call = CallKey::outgoing(1);
        ep.dial(t0, call, outgoing(None));
        drain(&mut ep);
        let d = run_until(&mut ep, t0 + Duration::from_secs(33));
        assert_eq!(d.sent.len(), 6, "Timer A retransmissions");
        assert!(
            matches!(&d.events[..], [Event::Failed { code: 408, .. }]),
            "{:?}",
            d.events
        );
        assert_eq!(ep.active_calls(), 0);
    }
}

mod register {
    use super::*;

    fn outgoing(credentials: Option<crate::digest::User>) -> OutgoingRegister {
        OutgoingRegister {
            peer: peer(),
            request: RegisterRequest {
                registrar: "sip:pbx.example".into(),
                aor: "sip:trunk@pbx.example".into(),
                contact_user: "trunk".into(),
                call_id: "reg-1@127.0.0.1".into(),
                cseq: 7,
                expires: 600,
                route: Vec::new(),
                credentials,
            },
        }
    }

    fn respond(request: &Message, code: u16, extra: &str) -> Vec<u8> {
        let h = |n: &str| request.headers.get(n).unwrap_or_default().to_string();
        format!(
            "SIP/2.0 {code} Whatever\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=reg\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("To"),
            h("Call-ID"),
            h("CSeq"),
        )
        .into_bytes()
    }

    #[test]
    fn a_challenged_register_is_answered_and_the_grant_for_our_contact_reported() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let user = crate::digest::User {
            name: "trunk".into(),
            password: "pw".into(),
        };
        let key = RequestKey(1);
        ep.register(t0, key, outgoing(Some(user)));
        let first = drain(&mut ep).sent.remove(0);
        assert_eq!(first.method(), Some(&Method::Register));
        assert_eq!(first.request_uri(), Some("sip:pbx.example"));
        assert_eq!(first.headers.get("To"), Some("<sip:trunk@pbx.example>"));
        assert_eq!(first.headers.get("CSeq"), Some("7 REGISTER"));
        assert_eq!(first.headers.get("Expires"), Some("600"));
        let contact = first.headers.get("Contact").unwrap().to_string();
        assert!(contact.starts_with("<sip:trunk@"), "{contact}");
        let challenge = "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n1\", algorithm=MD5\r\n";
        ep.handle_message(t0, peer(), &respond(&first, 401, challenge));
        let d = drain(&mut ep);
        assert!(d.events.is_empty(), "{:?}", d.events);
        let again = d.sent[0].clone();
        assert_eq!(again.headers.get("CSeq"), Some("8 REGISTER"));
        assert_eq!(again.call_id(), first.call_id());
        let authz = again.headers.get("Authorization").expect("answered");
        assert!(authz.contains("uri=\"sip:pbx.example\""), "{authz}");
        // Another binding first, then ours with its own expiry: ours counts.
        let ok = format!(
            "Contact: <sip:other@192.0.2.9>;expires=3600, {contact};expires=120\r\nExpires: 999\r\n"
        );
        ep.handle_message(t0, peer(), &respond(&again, 200, &ok));
        assert_eq!(
            drain(&mut ep).events,
            [Event::Registered {
                key,
                cseq: 8,
                outcome: RegisterOutcome::Granted { expires: 120 }
            }]
        );
    }

    #[test]
    fn a_423_reports_min_expires_and_silence_times_out() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.register(t0, RequestKey(1), outgoing(None));
        let first = drain(&mut ep).sent.remove(0);
        ep.handle_message(t0, peer(), &respond(&first, 423, "Min-Expires: 1800\r\n"));
        assert_eq!(
            drain(&mut ep).events,
            [Event::Registered {
                key: RequestKey(1),
                cseq: 7,
                outcome: RegisterOutcome::Failed {
                    code: 423,
                    reason: "Whatever".into(),
                    min_expires: Some(1800)
                }
            }]
        );
        // Nobody answers the next one: Timer F (64*T1) ends it as 408.
        ep.register(t0, RequestKey(2), outgoing(None));
        drain(&mut ep);
        for _ in 0..100 {
            let Some(now) = ep.poll_timeout() else { break };
            ep.handle_timeout(now);
            let events = drain(&mut ep).events;
            if !events.is_empty() {
                assert!(matches!(
                    &events[..],
                    [Event::Registered {
                        outcome: RegisterOutcome::Failed { code: 408, .. },
                        ..
                    }]
                ));
                assert!(now - t0 >= Duration::from_secs(32));
                return;
            }
        }
        panic!("no timeout");
    }

    #[test]
    fn a_401_without_credentials_fails() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.register(t0, RequestKey(3), outgoing(None));
        let first = drain(&mut ep).sent.remove(0);
        let challenge = "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n1\"\r\n";
        ep.handle_message(t0, peer(), &respond(&first, 401, challenge));
        assert!(matches!(
            &drain(&mut ep).events[..],
            [Event::Registered {
                outcome: RegisterOutcome::Failed { code: 401, .. },
                ..
            }]
        ));
    }
}

mod refer {
    use super::*;

    fn refer(tag: &str, branch: &str, cseq: u32, refer_to: &str) -> Vec<u8> {
        String::from_utf8(request("REFER", tag, branch))
            .unwrap()
            .replace("2 REFER", &format!("{cseq} REFER"))
            .replace("Content-Length: 0", &format!("{refer_to}Content-Length: 0"))
            .into_bytes()
    }

    #[test]
    fn a_refer_is_offered_accepted_and_its_progress_notified() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let (call, tag) = answered(&mut ep, t0);
        ep.handle_message(t0, peer(), &request("ACK", &tag, "z9hG4bK2"));
        drain(&mut ep);
        let message = refer(&tag, "z9hG4bKr1", 3, "Refer-To: <sip:2000@127.0.0.1>\r\n");
        ep.handle_message(t0, peer(), &message);
        let d = drain(&mut ep);
        let [Event::Refer(offer)] = &d.events[..] else {
            panic!("{:?}", d.events)
        };
        assert_eq!(
            (offer.call, offer.target.as_str()),
            (call, "sip:2000@127.0.0.1")
        );
        // A retransmission while the application decides is absorbed.
        ep.handle_message(t0, peer(), &message);
        assert!(drain(&mut ep).events.is_empty());
        ep.answer_refer(t0, offer.id, Ok(()));
        assert_eq!(codes(&drain(&mut ep)), [202]);
        ep.notify_refer(t0, call, 100, "Trying", false);
        ep.notify_refer(t0, call, 200, "OK", true);
        let d = drain(&mut ep);
        let notifies: Vec<&Message> = d
            .sent
            .iter()
            .filter(|m| m.method() == Some(&Method::Notify))
            .collect();
        assert_eq!(notifies.len(), 2);
        assert_eq!(notifies[0].headers.get("Event"), Some("refer"));
        assert!(
            notifies[0]
                .headers
                .get("Subscription-State")
                .unwrap()
                .starts_with("active")
        );
        assert_eq!(
            notifies[1].headers.get("Content-Type"),
            Some("message/sipfrag;version=2.0")
        );
        assert_eq!(notifies[1].body, b"SIP/2.0 200 OK\r\n");
        assert!(
            notifies[1]
                .headers
                .get("Subscription-State")
                .unwrap()
                .starts_with("terminated")
        );
        assert_eq!(
            notifies[1].tag("To").as_deref(),
            Some("a1"),
            "in the dialog"
        );
    }

    #[test]
    fn a_refused_refer_and_bad_refer_tos() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let (_, tag) = answered(&mut ep, t0);
        drain(&mut ep);
        ep.handle_message(
            t0,
            peer(),
            &refer(&tag, "z9hG4bKr2", 3, "Refer-To: <sip:x@192.0.2.1>\r\n"),
        );
        let Some(Event::Refer(offer)) = drain(&mut ep).events.pop() else {
            panic!()
        };
        ep.answer_refer(t0, offer.id, Err(Rejection::new(603, "Declined")));
        assert_eq!(codes(&drain(&mut ep)), [603]);
        for (i, bad) in [
            "Refer-To: nonsense\r\n",
            "Refer-To: <mailto:a@b.example>\r\n",
            "Refer-To: <sip:a@h1>\r\nRefer-To: <sip:b@h2>\r\n",
        ]
        .into_iter()
        .enumerate()
        {
            let branch = format!("z9hG4bKbad{i}");
            ep.handle_message(t0, peer(), &refer(&tag, &branch, 4 + i as u32, bad));
            let d = drain(&mut ep);
            assert_eq!(codes(&d), [400], "{bad}");
            assert!(d.events.is_empty());
        }
        assert_eq!(ep.active_calls(), 1, "the call goes on");
    }
}
