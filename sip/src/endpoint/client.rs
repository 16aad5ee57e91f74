//! Client transactions (RFC 3261 17.1) for the requests the bridge sends: inside its dialogs
//! BYE, session refreshes (re-INVITE or UPDATE) and OPTIONS pings; the INVITE and CANCEL of
//! calls it places; REGISTER.
//!
//! ```text
//!  INVITE (17.1.1, RFC 6026)            non-INVITE (17.1.2)
//!  Calling --1xx--> Proceeding          Trying --1xx--> Proceeding
//!    |  Timer A: resend (UDP)             |  Timer E: resend (UDP; every T2 once Proceeding)
//!    |  Timer B: Timeout                  |  Timer F: Timeout
//!    +--final--> Completed                +--final--> Completed
//!         non-2xx: we send the ACK;            Timer K: absorb retransmitted responses
//!         2xx: the dialog's ACK is kept;
//!         a retransmitted final gets it again
//!         Timer D (non-2xx) / M (2xx): gone
//! ```
//! One [`ClientTxn`] is one machine; the endpoint keys them by branch and acts on the
//! [`Outcome`] it reports once.

use std::time::Instant;

use super::{CallKey, Peer};
use crate::message::{Headers, Message, Method, StartLine};
use crate::timer::{TimerConfig, TimerKind};

/// Why the endpoint sent the request, so it knows what the outcome means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Ending a dialog: nothing follows whatever the answer.
    Bye,
    /// A session refresh (RFC 4028) of this call.
    Refresh(CallKey),
    /// An in-dialog OPTIONS asking whether this call's peer is still there.
    Ping(CallKey),
    /// The INVITE of a call we place.
    Dial(CallKey),
    /// The CANCEL of a call we place (its INVITE's outcome tells the rest).
    Cancel,
    /// A REGISTER (outside any dialog).
    Register(super::RequestKey),
    /// A NOTIFY of a REFER's progress: nothing follows whatever the answer.
    Notify,
}

/// How a client transaction ended, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A 2xx final response.
    Success(Message),
    /// A final response of 300 or more, by code.
    Failure(u16),
    /// No final response before Timer B or F.
    Timeout,
}

#[derive(Debug)]
enum State {
    /// Calling (INVITE) or Trying (non-INVITE): retransmitting over UDP.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing its retransmissions until `until`.
    Completed {
        ack: Option<Vec<u8>>,
        until: Instant,
    },
}

/// What a transaction wants after an input.
#[derive(Debug, Default)]
pub(super) struct Step {
    /// Bytes to send (a retransmission or an ACK).
    pub send: Option<Vec<u8>>,
    /// The outcome, the first time there is one.
    pub outcome: Option<Outcome>,
    /// The transaction is over and can be forgotten.
    pub finished: bool,
}

/// One client transaction.
#[derive(Debug)]
pub(super) struct ClientTxn {
    /// Why it was sent.
    pub purpose: Purpose,
    /// Where it goes (and its retransmissions and ACK).
    pub peer: Peer,
    request: Message,
    bytes: Vec<u8>,
    attempt: u32,
    retransmit_at: Option<Instant>,
    /// Timer B or F while waiting for a final response.
    timeout_at: Instant,
    state: State,
}

impl ClientTxn {
    /// Starts a transaction for `request`, already sent once by the caller.
    pub fn new(
        now: Instant,
        timers: &TimerConfig,
        purpose: Purpose,
        peer: Peer,
        request: Message,
    ) -> ClientTxn {
        let bytes = request.to_bytes();
        let reliable = peer.transport.reliable();
        let (retransmit, timeout) = if request.method() == Some(&Method::Invite) {
            (TimerKind::A, TimerKind::B)
        } else {
            (TimerKind::E, TimerKind::F)
        };
        ClientTxn {
            purpose,
            peer,
            retransmit_at: timers.duration(retransmit, 0, reliable).map(|d| now + d),
            timeout_at: now + timers.duration(timeout, 0, reliable).unwrap_or_default(),
            request,
            bytes,
            attempt: 0,
            state: State::Calling,
        }
    }

    /// The request's bytes, for its first transmission.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The request's method, as a metric label.
    pub fn method_label(&self) -> &'static str {
        self.request.method().map_or("other", Method::metric_label)
    }

    fn invite(&self) -> bool {
        self.request.method() == Some(&Method::Invite)
    }

    /// The earliest time [`ClientTxn::on_timeout`] has work.
    pub fn deadline(&self) -> Instant {
        match &self.state {
            State::Completed { until, .. } => *until,
            _ => self
                .retransmit_at
                .map_or(self.timeout_at, |at| at.min(self.timeout_at)),
        }
    }

    /// Fires the timers due at `now`.
    pub fn on_timeout(&mut self, now: Instant, timers: &TimerConfig) -> Step {
        if let State::Completed { until, .. } = self.state {
            return Step {
                finished: until <= now,
                ..Step::default()
            };
        }
        if self.timeout_at <= now {
            return Step {
                outcome: Some(Outcome::Timeout),
                finished: true,
                ..Step::default()
            };
        }
        if self.retransmit_at.is_none_or(|at| at > now) {
            return Step::default();
        }
        self.attempt += 1;
        let reliable = self.peer.transport.reliable();
        self.retransmit_at = match (&self.state, self.invite()) {
            // A non-INVITE that got a provisional keeps resending every T2 (17.1.2.2).
            (State::Proceeding, false) => Some(now + timers.t2),
            (_, true) => timers
                .duration(TimerKind::A, self.attempt, reliable)
                .map(|d| now + d),
            (_, false) => timers
                .duration(TimerKind::E, self.attempt, reliable)
                .map(|d| now + d),
        };
        Step {
            send: Some(self.bytes.clone()),
            ..Step::default()
        }
    }

    /// Handles a response whose top Via carries this transaction's branch. `ack_2xx` is the
    /// dialog's ACK for a 2xx to a re-INVITE (RFC 3261 13.2.2.4), sent now and again for each
    /// retransmission of that 2xx.
    pub fn on_response(
        &mut self,
        now: Instant,
        timers: &TimerConfig,
        response: &Message,
        ack_2xx: impl FnOnce() -> Vec<u8>,
    ) -> Step {
        let Some(code) = response.status() else {
            return Step::default();
        };
        let reliable = self.peer.transport.reliable();
        if let State::Completed { ack, .. } = &self.state {
            return Step {
                send: if code >= 200 { ack.clone() } else { None },
                ..Step::default()
            };
        }
        if code < 200 {
            if matches!(self.state, State::Calling) {
                self.state = State::Proceeding;
                if self.invite() {
                    self.retransmit_at = None;
                }
            }
            return Step::default();
        }
        let ack = match (self.invite(), code < 300) {
            (true, true) => Some(ack_2xx()),
            (true, false) => Some(self.ack_non_2xx(response).to_bytes()),
            (false, _) => None,
        };
        let linger = match (self.invite(), code < 300) {
            (true, true) => TimerKind::M,
            (true, false) => TimerKind::D,
            (false, _) => TimerKind::K,
        };
        let linger = timers.duration(linger, 0, reliable).unwrap_or_default();
        let outcome = if code < 300 {
            Outcome::Success(response.clone())
        } else {
            Outcome::Failure(code)
        };
        self.state = State::Completed {
            ack: ack.clone(),
            until: now + linger,
        };
        self.retransmit_at = None;
        Step {
            send: ack,
            outcome: Some(outcome),
            finished: linger.is_zero(),
        }
    }

    /// The ACK of a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's Request-URI, top
    /// Via, Route, From, Call-ID and CSeq number, with the response's To.
    fn ack_non_2xx(&self, response: &Message) -> Message {
        let mut headers = Headers::default();
        if let Some(via) = self.request.headers.get("Via") {
            headers.push("Via", via.to_string());
        }
        headers.push("Max-Forwards", "70");
        for route in self.request.headers.all("Route") {
            headers.push("Route", route.to_string());
        }
        for name in ["From", "Call-ID"] {
            if let Some(value) = self.request.headers.get(name) {
                headers.push(name, value.to_string());
            }
        }
        if let Some(to) = response.headers.get("To") {
            headers.push("To", to.to_string());
        }
        let number = self.request.cseq().map_or(0, |c| c.number);
        headers.push("CSeq", format!("{number} ACK"));
        let uri = self.request.request_uri().unwrap_or_default().to_string();
        Message {
            start: StartLine::Request {
                method: Method::Ack,
                uri,
                version: "SIP/2.0".into(),
            },
            headers,
            body: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{FlowId, Transport};
    use super::*;
    use crate::message::Framing;

    fn peer(transport: Transport) -> Peer {
        Peer {
            transport,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            flow: FlowId(0),
        }
    }

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes(), Framing::Stream).unwrap().0
    }

    fn request(method: &str) -> Message {
        parse(&format!(
            "{method} sip:a@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc1\r\n\
             Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:5099;lr>\r\nFrom: <sip:r@h>;tag=us\r\nTo: <sip:a@h>;tag=them\r\n\
             Call-ID: c\r\nCSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn response(code: u16, method: &str) -> Message {
        parse(&format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc1\r\nFrom: <sip:r@h>;tag=us\r\n\
             To: <sip:a@h>;tag=them\r\nCall-ID: c\r\nCSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    /// Runs timers until the transaction finishes; returns (retransmissions, outcome, end time).
    fn run(
        txn: &mut ClientTxn,
        t0: Instant,
        timers: &TimerConfig,
    ) -> (usize, Option<Outcome>, Duration) {
        let (mut sent, mut outcome) = (0, None);
        for _ in 0..100 {
            let at = txn.deadline();
            let step = txn.on_timeout(at, timers);
            sent += usize::from(step.send.is_some());
            outcome = outcome.or(step.outcome);
            if step.finished {
                return (sent, outcome, at - t0);
            }
        }
        panic!("the transaction never finished");
    }

    #[test]
    fn invite_over_udp_retransmits_on_timer_a_and_times_out_on_b() {
        let (t0, timers) = (Instant::now(), TimerConfig::default());
        let mut txn = ClientTxn::new(
            t0,
            &timers,
            Purpose::Bye,
            peer(Transport::Udp),
            request("INVITE"),
        );
        let (sent, outcome, end) = run(&mut txn, t0, &timers);
        // Timer A doubles without the T2 cap: 0.5, 1, 2, 4, 8, 16 s, then B at 32 s.
        assert_eq!(sent, 6);
        assert_eq!(outcome, Some(Outcome::Timeout));
        assert_eq!(end, Duration::from_secs(32));
    }

    #[test]
    fn non_invite_over_tcp_sends_once_and_times_out_on_f() {
        let (t0, timers) = (Instant::now(), TimerConfig::default());
        let mut txn = ClientTxn::new(
            t0,
            &timers,
            Purpose::Bye,
            peer(Transport::Tcp),
            request("OPTIONS"),
        );
        let (sent, outcome, end) = run(&mut txn, t0, &timers);
        assert_eq!(
            (sent, outcome, end),
            (0, Some(Outcome::Timeout), Duration::from_secs(32))
        );
    }

    #[test]
    fn non_invite_after_provisional_resends_every_t2_then_completes() {
        let (t0, timers) = (Instant::now(), TimerConfig::default());
        let mut txn = ClientTxn::new(
            t0,
            &timers,
            Purpose::Bye,
            peer(Transport::Udp),
            request("UPDATE"),
        );
        assert!(
            txn.on_response(t0, &timers, &response(100, "UPDATE"), Vec::new)
                .outcome
                .is_none()
        );
        let step = txn.on_timeout(t0 + Duration::from_millis(500), &timers);
        assert!(step.send.is_some());
        assert_eq!(
            txn.deadline(),
            t0 + Duration::from_millis(4500),
            "Proceeding resends every T2"
        );
        let step = txn.on_response(
            t0 + Duration::from_secs(1),
            &timers,
            &response(200, "UPDATE"),
            Vec::new,
        );
        assert!(matches!(step.outcome, Some(Outcome::Success(_))));
        assert!(step.send.is_none() && !step.finished);
        // Timer K absorbs retransmissions, then the transaction is gone.
        let step = txn.on_response(
            t0 + Duration::from_secs(2),
            &timers,
            &response(200, "UPDATE"),
            Vec::new,
        );
        assert!(step.outcome.is_none() && step.send.is_none());
        assert!(
            txn.on_timeout(t0 + Duration::from_secs(6), &timers)
                .finished
        );
    }

    #[test]
    fn invite_non_2xx_is_acked_on_the_same_branch_and_again_for_each_retransmission() {
        let (t0, timers) = (Instant::now(), TimerConfig::default());
        let mut txn = ClientTxn::new(
            t0,
            &timers,
            Purpose::Bye,
            peer(Transport::Udp),
            request("INVITE"),
        );
        let step = txn.on_response(t0, &timers, &response(491, "INVITE"), || {
            panic!("not a 2xx")
        });
        assert_eq!(step.outcome, Some(Outcome::Failure(491)));
        let ack = parse(std::str::from_utf8(&step.send.expect("ACK sent")).unwrap());
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.request_uri(), Some("sip:a@127.0.0.1:5070"));
        assert_eq!(
            ack.headers.get("Via"),
            Some("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc1")
        );
        assert_eq!(ack.headers.get("CSeq"), Some("7 ACK"));
        assert_eq!(ack.headers.get("To"), Some("<sip:a@h>;tag=them"));
        assert_eq!(ack.headers.get("Route"), Some("<sip:127.0.0.1:5099;lr>"));
        let again = txn.on_response(
            t0 + Duration::from_secs(1),
            &timers,
            &response(491, "INVITE"),
            || panic!(),
        );
        assert!(again.send.is_some() && again.outcome.is_none());
        assert!(
            !txn.on_timeout(t0 + Duration::from_secs(31), &timers)
                .finished
        );
        assert!(
            txn.on_timeout(t0 + Duration::from_secs(32), &timers)
                .finished,
            "Timer D"
        );
    }

    #[test]
    fn invite_2xx_sends_the_dialog_ack_and_repeats_it() {
        let (t0, timers) = (Instant::now(), TimerConfig::default());
        let mut txn = ClientTxn::new(
            t0,
            &timers,
            Purpose::Refresh(CallKey(1)),
            peer(Transport::Udp),
            request("INVITE"),
        );
        assert!(
            txn.on_response(t0, &timers, &response(180, "INVITE"), Vec::new)
                .send
                .is_none()
        );
        assert!(
            txn.on_timeout(t0 + Duration::from_secs(1), &timers)
                .send
                .is_none(),
            "no resend once Proceeding"
        );
        let step = txn.on_response(t0, &timers, &response(200, "INVITE"), || b"ACK".to_vec());
        assert_eq!(step.send.as_deref(), Some(&b"ACK"[..]));
        assert!(matches!(step.outcome, Some(Outcome::Success(_))));
        let again = txn.on_response(t0, &timers, &response(200, "INVITE"), || {
            panic!("built once")
        });
        assert_eq!(again.send.as_deref(), Some(&b"ACK"[..]));
    }
}
