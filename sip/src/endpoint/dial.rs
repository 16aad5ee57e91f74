//! Calls we place (RFC 3261 13.2): the INVITE's client transaction, provisional responses, one
//! digest challenge (401/407) answered with the call's credentials, the 2xx that makes the
//! dialog (and its ACK), CANCEL (RFC 3261 9.1), and what a failure reports.
//!
//! ```text
//!  dial() --INVITE--> Calling --1xx--> Proceeding (Event::Progress for 18x)
//!     401/407, once: INVITE again, CSeq + 1, with (Proxy-)Authorization
//!     2xx: dialog up, ACK sent ........................ Event::Answered
//!     3xx-6xx, Timer B ................................ Event::Failed (3xx: its Contact)
//!  hangup() before the answer: CANCEL once a provisional arrived (9.1), then 487 fails it;
//!     a 2xx that crosses the CANCEL is ACKed and ended with BYE.
//! ```

use super::*;
use crate::digest::{User, answer, pick_challenge};

/// A call for the endpoint to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    /// Where the INVITE goes (the first hop, resolved by the driver) and over which socket.
    pub peer: Peer,
    /// The Request-URI: who is called.
    pub request_uri: String,
    /// Our From, without tag: `"Name" <sip:user@host>`.
    pub from: String,
    /// The To: usually the Request-URI in angle brackets.
    pub to: String,
    /// Route headers to pre-load (an outbound proxy), in order.
    pub route: Vec<String>,
    /// The SDP offer.
    pub body: Vec<u8>,
    /// Credentials for a 401 or 407 challenge (a trunk's); without them a challenge fails the
    /// call.
    pub credentials: Option<User>,
}

/// A call we are placing, until its final response.
#[derive(Debug)]
pub(super) struct Dialing {
    /// The INVITE in flight (the last one, after a challenge).
    request: Message,
    /// Its client transaction's branch.
    branch: String,
    peer: Peer,
    credentials: Option<User>,
    /// A challenge was answered already: another one fails the call.
    challenged: bool,
    /// A provisional response arrived, so a CANCEL may go (RFC 3261 9.1).
    provisional: bool,
    /// The application hung up: CANCEL once allowed, and end whatever answers.
    cancel: bool,
    /// The CANCEL went.
    cancel_sent: bool,
}

/// The client transaction key of a CANCEL (it shares its INVITE's branch).
pub(super) fn cancel_key(branch: &str) -> String {
    format!("{branch} CANCEL")
}

/// The first Contact URI of a response (a 2xx's remote target, a 3xx's new target).
pub(super) fn contact_uri(response: &Message) -> Option<String> {
    let first = response
        .headers
        .all("Contact")
        .flat_map(split_commas)
        .next()?;
    NameAddr::parse(first).ok().map(|c| c.uri)
}

impl CallKey {
    /// A key for a call the application places: the application picks it (so it knows the call
    /// before the endpoint's task does); these never collide with the endpoint's own, which
    /// count up from 1.
    pub fn outgoing(n: u64) -> CallKey {
        CallKey(1 << 63 | n)
    }
}

impl Endpoint {
    /// Places a call under `call` (see [`CallKey::outgoing`]): the INVITE goes now; what
    /// happens to it comes as [`Event::Progress`], [`Event::Answered`] or [`Event::Failed`].
    /// [`Endpoint::hangup`] before the answer cancels it.
    pub fn dial(&mut self, now: Instant, call: CallKey, outgoing: OutgoingCall) {
        let now = self.advance(now);
        let tag = self.random_token();
        let call_id = format!("{}@{}", self.random_token(), outgoing.peer.local.ip());
        // The Via goes on per attempt, in `send_invite`.
        let mut headers = Headers::default();
        headers.push("Max-Forwards", "70");
        for route in &outgoing.route {
            headers.push("Route", route.clone());
        }
        headers.push("From", format!("{};tag={tag}", outgoing.from));
        headers.push("To", outgoing.to.clone());
        headers.push("Call-ID", call_id);
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", contact(outgoing.peer));
        headers.push("Allow", ALLOW);
        headers.push("User-Agent", self.config.user_agent.clone());
        headers.push("Content-Type", "application/sdp");
        let request = Message {
            start: StartLine::Request {
                method: Method::Invite,
                uri: outgoing.request_uri,
                version: "SIP/2.0".into(),
            },
            headers,
            body: outgoing.body,
        };
        let dialing = Dialing {
            request,
            branch: String::new(),
            peer: outgoing.peer,
            credentials: outgoing.credentials,
            challenged: false,
            provisional: false,
            cancel: false,
            cancel_sent: false,
        };
        self.send_invite(now, call, dialing);
    }

    /// Sends `dialing`'s INVITE on a new branch through a new client transaction.
    fn send_invite(&mut self, now: Instant, call: CallKey, mut dialing: Dialing) {
        let peer = dialing.peer;
        dialing.branch = self.start_client_txn(
            now,
            Purpose::Dial(call),
            peer,
            &mut dialing.request,
            "INVITE",
        );
        self.dialing.insert(call, dialing);
    }

    /// A provisional response to one of our INVITEs (on `branch`: an earlier attempt's, from
    /// before a challenge, is ignored).
    pub(super) fn dial_provisional(
        &mut self,
        now: Instant,
        call: CallKey,
        branch: &str,
        code: u16,
    ) {
        let Some(dialing) = self.dialing.get_mut(&call).filter(|d| d.branch == branch) else {
            return;
        };
        dialing.provisional = true;
        if dialing.cancel && !dialing.cancel_sent {
            self.send_cancel(now, call);
        }
        if code > 100 {
            self.outputs
                .push_back(Output::Event(Event::Progress { call, code }));
        }
    }

    /// Cancels a call we are placing (from [`Endpoint::hangup`]).
    pub(super) fn cancel_dial(&mut self, now: Instant, call: CallKey) {
        let Some(dialing) = self.dialing.get_mut(&call) else {
            return;
        };
        dialing.cancel = true;
        if dialing.provisional && !dialing.cancel_sent {
            self.send_cancel(now, call);
        }
    }

    /// CANCEL (RFC 3261 9.1): the INVITE's Request-URI, top Via, Route, From, To, Call-ID and
    /// CSeq number, on the INVITE's branch.
    fn send_cancel(&mut self, now: Instant, call: CallKey) {
        let Some(dialing) = self.dialing.get_mut(&call) else {
            return;
        };
        dialing.cancel_sent = true;
        let invite = &dialing.request;
        let mut headers = Headers::default();
        for name in ["Via", "Max-Forwards"] {
            if let Some(value) = invite.headers.get(name) {
                headers.push(name, value.to_string());
            }
        }
        for route in invite.headers.all("Route") {
            headers.push("Route", route.to_string());
        }
        for name in ["From", "To", "Call-ID"] {
            if let Some(value) = invite.headers.get(name) {
                headers.push(name, value.to_string());
            }
        }
        let number = invite.cseq().map_or(1, |c| c.number);
        headers.push("CSeq", format!("{number} CANCEL"));
        headers.push("User-Agent", self.config.user_agent.clone());
        let cancel = Message {
            start: StartLine::Request {
                method: Method::Cancel,
                uri: invite.request_uri().unwrap_or_default().to_string(),
                version: "SIP/2.0".into(),
            },
            headers,
            body: Vec::new(),
        };
        let (peer, key) = (dialing.peer, cancel_key(&dialing.branch));
        let txn = ClientTxn::new(now, &self.config.timers, Purpose::Cancel, peer, cancel);
        self.count(Count::RequestOut("CANCEL"));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: txn.bytes().to_vec(),
        }));
        self.clients.insert(key.clone(), txn);
        self.touched.push(Owner::Client(key));
    }

    /// A 2xx to our INVITE: the dialog it makes (RFC 3261 12.1.2); its ACK follows in
    /// `ack_for_2xx`. A 2xx without a To tag, or from a second fork, makes none.
    pub(super) fn dial_answered(&mut self, call: CallKey, response: &Message) {
        if self.dialogs.contains_key(&call) {
            return;
        }
        let Some(dialing) = self.dialing.get(&call) else {
            return;
        };
        let request = &dialing.request;
        let (Some(remote_tag), Some(local_tag)) = (response.tag("To"), request.tag("From")) else {
            return;
        };
        let call_id = request.call_id().unwrap_or_default().to_string();
        let mut route_set: Vec<String> = response
            .headers
            .all("Record-Route")
            .flat_map(split_commas)
            .map(str::to_string)
            .collect();
        route_set.reverse();
        let allows_update = response
            .headers
            .all("Allow")
            .flat_map(|v| v.split(','))
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"));
        let dialog = Dialog {
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag: remote_tag.clone(),
            remote_party: response.headers.get("To").unwrap_or_default().to_string(),
            local_party: request.headers.get("From").unwrap_or_default().to_string(),
            remote_target: contact_uri(response)
                .unwrap_or_else(|| request.request_uri().unwrap_or_default().to_string()),
            route_set,
            local_cseq: request.cseq().map_or(1, |c| c.number),
            peer: dialing.peer,
            invite_key: None,
            confirmed: true,
            unacked: None,
            session: None,
            pending_refresh: None,
            local_sdp: request.body.clone(),
            peer_allows_update: allows_update,
            ping_at: self
                .config
                .ping_interval
                .and_then(|d| self.now.map(|n| n + d)),
        };
        self.dialogs.insert(call, dialog);
        self.dialog_index
            .insert((call_id, remote_tag, local_tag), call);
        self.touched.push(Owner::Dialog(call));
    }

    /// How our INVITE ended: answered, challenged (sent again with credentials), redirected or
    /// failed. `response` is the final response (none on a timeout).
    pub(super) fn dial_outcome(
        &mut self,
        now: Instant,
        call: CallKey,
        branch: &str,
        response: Option<&Message>,
        outcome: Outcome,
    ) {
        let Some(mut dialing) = self.dialing.remove(&call) else {
            return;
        };
        if dialing.branch != branch {
            // An earlier attempt's late answer: the current attempt decides.
            self.dialing.insert(call, dialing);
            return;
        }
        let reason = response
            .and_then(Message::reason)
            .unwrap_or_default()
            .to_string();
        let failed = |code: u16, reason: String, redirect: Option<String>| {
            Output::Event(Event::Failed {
                call,
                code,
                reason,
                redirect,
            })
        };
        match outcome {
            Outcome::Success(response) => {
                if !self.dialogs.contains_key(&call) {
                    let event = failed(502, "Bad Gateway (2xx without a To tag)".into(), None);
                    self.outputs.push_back(event);
                } else if dialing.cancel {
                    // Cancelled, but answered first: end it.
                    self.hangup(now, call);
                    let event = failed(487, "Request Terminated".into(), None);
                    self.outputs.push_back(event);
                } else {
                    self.outputs.push_back(Output::Event(Event::Answered {
                        call,
                        body: response.body,
                    }));
                }
            }
            Outcome::Failure(code @ (401 | 407))
                if !dialing.challenged && !dialing.cancel && dialing.credentials.is_some() =>
            {
                let answered = dialing.credentials.clone().is_some_and(|user| {
                    self.answer_challenge(&mut dialing.request, code, response, &user)
                });
                if !answered {
                    self.outputs.push_back(failed(code, reason, None));
                    return;
                }
                dialing.challenged = true;
                dialing.provisional = false;
                self.send_invite(now, call, dialing);
            }
            Outcome::Failure(code) => {
                let redirect = match response {
                    Some(r) if (300..400).contains(&code) => contact_uri(r),
                    _ => None,
                };
                self.outputs.push_back(failed(code, reason, redirect));
            }
            Outcome::Timeout => {
                let event = failed(408, "Request Timeout".into(), None);
                self.outputs.push_back(event);
            }
        }
    }

    /// Answers a 401 or 407 `response` to `request` with `user`'s credentials (RFC 8760
    /// digest): the request gets its next CSeq and an (Proxy-)Authorization header. `false`
    /// when the challenge is missing or of no algorithm we answer.
    pub(super) fn answer_challenge(
        &mut self,
        request: &mut Message,
        code: u16,
        response: Option<&Message>,
        user: &User,
    ) -> bool {
        let (challenge_header, answer_header) = if code == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Some(challenge) =
            response.and_then(|r| pick_challenge(r.headers.all(challenge_header)))
        else {
            return false;
        };
        let Some(cseq) = request.cseq() else {
            return false;
        };
        let uri = request.request_uri().unwrap_or_default().to_string();
        let cnonce = self.random_token();
        let Some(authorization) = answer(challenge, cseq.method.as_str(), &uri, user, &cnonce)
        else {
            return false;
        };
        let headers = &mut request.headers;
        headers.remove("CSeq");
        headers.push(
            "CSeq",
            format!("{} {}", cseq.number + 1, cseq.method.as_str()),
        );
        headers.remove("Authorization");
        headers.remove("Proxy-Authorization");
        headers.push(answer_header, authorization);
        true
    }
}
