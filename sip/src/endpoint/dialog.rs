//! The dialogs of answered calls (RFC 3261 12): requests in them, the ACK of our 2xx, re-offers,
//! the session timer (RFC 4028) and our own requests' routing.

use super::*;

/// A dialog's session timer (RFC 4028).
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub(super) interval: u32,
    pub(super) refresher: Refresher,
    /// Whether the caller supports the extension (our responses then `Require` it).
    pub(super) caller_supports: bool,
    /// Without a refresh before this, the session is over.
    pub(super) expires_at: Instant,
    /// When we refresh next (we are the refresher and none is in flight).
    pub(super) refresh_at: Option<Instant>,
}

impl Session {
    pub(super) fn start(now: Instant, negotiation: Negotiation) -> Option<Session> {
        let Negotiation::Timer {
            interval,
            refresher,
            caller_supports,
        } = negotiation
        else {
            return None;
        };
        let secs = |s: u32| std::time::Duration::from_secs(u64::from(s));
        let (expires_at, refresh_at) = match refresher {
            Refresher::Caller => (now + session_timer::expiry(interval), None),
            Refresher::Bridge => (now + secs(interval), Some(now + secs(interval / 2))),
        };
        Some(Session {
            interval,
            refresher,
            caller_supports,
            expires_at,
            refresh_at,
        })
    }

    /// The terms this session runs on.
    pub(super) fn terms(&self) -> Negotiation {
        Negotiation::Timer {
            interval: self.interval,
            refresher: self.refresher,
            caller_supports: self.caller_supports,
        }
    }

    /// Adds `Session-Expires` (and `Require: timer` when the caller knows it) to a 2xx.
    pub(super) fn annotate(&self, response: &mut Message) {
        if let Some(value) = self.terms().header() {
            response.headers.push("Session-Expires", value);
        }
        if self.caller_supports {
            response.headers.push("Require", "timer");
        }
    }
}

/// A 2xx to an INVITE (initial or re-INVITE) that waits for its ACK (RFC 3261 13.3.1.4).
#[derive(Debug)]
pub(super) struct UnackedOk {
    pub(super) response: Vec<u8>,
    /// The CSeq number the ACK will carry.
    pub(super) cseq: u32,
    /// The INVITE server transaction to forget once the ACK arrives.
    pub(super) txn: TxnKey,
    pub(super) attempt: u32,
    pub(super) retransmit_at: Option<Instant>,
    pub(super) give_up_at: Instant,
}

impl UnackedOk {
    /// A 2xx just sent: retransmitted over UDP (13.3.1.4), given up on after 64*T1.
    pub(super) fn new(
        now: Instant,
        timers: &TimerConfig,
        peer: Peer,
        response: Vec<u8>,
        cseq: u32,
        txn: TxnKey,
    ) -> UnackedOk {
        let reliable = peer.transport.reliable();
        UnackedOk {
            response,
            cseq,
            txn,
            attempt: 0,
            retransmit_at: timers
                .duration(TimerKind::Retransmit2xx, 0, reliable)
                .map(|d| now + d),
            give_up_at: now
                + timers
                    .duration(TimerKind::AckTimeout, 0, reliable)
                    .unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Dialog {
    pub(super) call_id: String,
    pub(super) local_tag: String,
    pub(super) remote_tag: String,
    /// Their From header value, our To for requests we send.
    pub(super) remote_party: String,
    /// Our To header value with tag, our From for requests we send.
    pub(super) local_party: String,
    pub(super) remote_target: String,
    /// The Record-Route set of the INVITE, in order (RFC 3261 12.1.1): our requests carry it as
    /// Route and go to its first hop.
    pub(super) route_set: Vec<String>,
    pub(super) local_cseq: u32,
    pub(super) peer: Peer,
    /// The INVITE server transaction that made it (none for a call we placed).
    pub(super) invite_key: Option<TxnKey>,
    /// Whether the ACK of the initial INVITE's 2xx arrived.
    pub(super) confirmed: bool,
    /// The 2xx being retransmitted until its ACK, if any.
    pub(super) unacked: Option<UnackedOk>,
    /// RFC 4028 session timer, if one runs.
    pub(super) session: Option<Session>,
    /// The branch of our session refresh in flight, if any (a re-offer from the peer meanwhile
    /// gets 491).
    pub(super) pending_refresh: Option<String>,
    /// The SDP we last sent, for a refresh by re-INVITE.
    pub(super) local_sdp: Vec<u8>,
    /// Whether the caller's INVITE listed UPDATE in `Allow` (we then refresh with UPDATE).
    pub(super) peer_allows_update: bool,
    /// When to send the next OPTIONS ping.
    pub(super) ping_at: Option<Instant>,
}

impl Dialog {
    /// The dialog's next deadline: its unacknowledged 2xx, its session timer, its ping.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let unacked = self
            .unacked
            .iter()
            .flat_map(|u| u.retransmit_at.into_iter().chain([u.give_up_at]));
        let session = self
            .session
            .iter()
            .flat_map(|s| s.refresh_at.into_iter().chain([s.expires_at]));
        unacked.chain(session).chain(self.ping_at).min()
    }
}

/// The Request-URI of our in-dialog requests and where they go (RFC 3261 12.2.1.1): with a
/// loose-routing first hop, the remote target, sent to that hop; with a strict router, the hop
/// itself is the Request-URI. Over UDP the request goes to that hop, or without a route set back
/// where the INVITE came from (NAT-friendly). Over TCP and TLS it goes over the dialog's
/// connection while that is open; the address given is where the driver connects otherwise: the
/// first hop, or the remote target. Addresses must be IP literals (the core does no DNS); a
/// hostname falls back to the INVITE's source.
pub(super) fn next_hop(dialog: &Dialog) -> (String, Peer) {
    let hop = dialog
        .route_set
        .first()
        .and_then(|first| NameAddr::parse(first).ok());
    let Some(hop) = hop else {
        let remote = match dialog.peer.transport {
            Transport::Udp => None,
            Transport::Tcp | Transport::Tls => uri_address(&dialog.remote_target),
        };
        return (
            dialog.remote_target.clone(),
            Peer {
                remote: remote.unwrap_or(dialog.peer.remote),
                ..dialog.peer
            },
        );
    };
    let loose = hop
        .uri
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case("lr"));
    let uri = if loose {
        dialog.remote_target.clone()
    } else {
        hop.uri.clone()
    };
    let remote = uri_address(&hop.uri).unwrap_or(dialog.peer.remote);
    (
        uri,
        Peer {
            remote,
            ..dialog.peer
        },
    )
}

/// The socket address of a SIP URI whose host is an IP literal.
fn uri_address(uri: &str) -> Option<SocketAddr> {
    SipUri::parse(uri).ok()?.ip_address()
}

/// The Route headers of our in-dialog requests: the route set, minus the strict router that
/// became the Request-URI, plus the remote target at the end in that case.
pub(super) fn route_headers(dialog: &Dialog) -> Vec<String> {
    let Some(first) = dialog.route_set.first() else {
        return Vec::new();
    };
    let loose = NameAddr::parse(first).is_ok_and(|h| {
        h.uri
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("lr"))
    });
    if loose {
        dialog.route_set.clone()
    } else {
        let mut routes: Vec<String> = dialog.route_set[1..].to_vec();
        routes.push(format!("<{}>", dialog.remote_target));
        routes
    }
}

/// The dialog a request belongs to, as we index it: (Call-ID, remote tag, local tag).
pub(super) fn dialog_index_of(request: &Message) -> (String, String, String) {
    (
        request.call_id().unwrap_or_default().to_string(),
        request.tag("From").unwrap_or_default(),
        request.tag("To").unwrap_or_default(),
    )
}

impl Endpoint {
    pub(super) fn handle_in_dialog(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: Message,
    ) {
        let Some(&call) = self.dialog_index.get(&dialog_index_of(&request)) else {
            self.answer_no_transaction(now, peer, key, &request);
            return;
        };
        if let Some(response) = self.refuse_extensions_or_body(&request) {
            match request.method() {
                Some(Method::Invite) => self.start_invite_txn(now, peer, key, request, response),
                _ => self.finish_non_invite(now, peer, key, response),
            }
            return;
        }
        let method = request
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));
        match method {
            Method::Bye => {
                self.answer_non_invite(now, peer, key, &request, 200, "OK");
                self.remove_dialog(call);
                self.outputs
                    .push_back(Output::Event(Event::CallEnded(call, EndReason::RemoteBye)));
            }
            Method::Options => {
                self.answer_non_invite(now, peer, key, &request, 200, "OK");
            }
            Method::Info => {
                self.answer_non_invite(now, peer, key, &request, 200, "OK");
                if !request.body.is_empty() {
                    let content_type = request
                        .headers
                        .get("Content-Type")
                        .unwrap_or_default()
                        .to_string();
                    let info = Info {
                        call,
                        content_type,
                        body: request.body,
                    };
                    self.outputs.push_back(Output::Event(Event::Info(info)));
                }
            }
            Method::Invite if self.dialogs.get(&call).is_some_and(|d| d.unacked.is_some()) => {
                // RFC 3261 14.2: a re-INVITE while our previous 2xx awaits its ACK.
                let mut response = self.response(&request, 500, "Server Internal Error", None);
                response.headers.push("Retry-After", "1");
                self.start_invite_txn(now, peer, key, request, response);
            }
            Method::Invite | Method::Update if self.refresh_in_flight(call) => {
                // RFC 3261 14.2 and RFC 3311 5.2: offers crossed (our refresh is out).
                let response = self.response(&request, 491, "Request Pending", None);
                match method {
                    Method::Invite => self.start_invite_txn(now, peer, key, request, response),
                    _ => self.finish_non_invite(now, peer, key, response),
                }
            }
            Method::Invite | Method::Update => {
                let body = request.body.clone();
                let id = if method == Method::Invite {
                    self.open_invite_txn(peer, key, request)
                } else {
                    let id = CallKey(self.next_call);
                    self.next_call += 1;
                    self.pending_updates.insert(id, (key, peer, request));
                    id
                };
                self.reoffers.insert(id, call);
                self.outputs
                    .push_back(Output::Event(Event::Reoffer(Reoffer { call, id, body })));
            }
            Method::Refer => self.handle_refer(now, peer, key, call, request),
            Method::Other(_) => {
                self.answer_non_invite(now, peer, key, &request, 501, "Not Implemented");
            }
            _ => {
                self.answer_non_invite(now, peer, key, &request, 405, "Method Not Allowed");
            }
        }
    }

    pub(super) fn handle_ack(&mut self, now: Instant, key: &TxnKey, request: &Message) {
        let invite_key = TxnKey {
            method: "INVITE".into(),
            ..key.clone()
        };
        if let Some(txn) = self.invites.get_mut(&invite_key)
            && let InviteState::Completed { .. } = txn.state
        {
            txn.state = InviteState::Confirmed;
            txn.timers.clear();
            let reliable = txn.peer.transport.reliable();
            let wait = self
                .config
                .timers
                .duration(TimerKind::I, 0, reliable)
                .unwrap_or_default();
            txn.timers.push((TimerKind::I, now + wait));
            self.touched.push(Owner::Invite(invite_key));
            return;
        }
        // ACK for a 2xx: a new transaction, matched to the dialog.
        let Some(&call) = self.dialog_index.get(&dialog_index_of(request)) else {
            return;
        };
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        let acked = request.cseq().map(|c| c.number);
        let Some(unacked) = dialog.unacked.take_if(|u| Some(u.cseq) == acked) else {
            return;
        };
        self.touched.push(Owner::Dialog(call));
        self.touched.push(Owner::Invite(unacked.txn.clone()));
        if let Some(txn) = self.invites.remove(&unacked.txn)
            && txn.call != call
        {
            self.calls.remove(&txn.call);
        }
        if !dialog.confirmed {
            dialog.confirmed = true;
            self.calls.remove(&call);
            self.outputs
                .push_back(Output::Event(Event::CallConfirmed(call)));
        }
    }

    /// Answers a [`Reoffer`]: `Ok(sdp)` sends 200 with our answer (retransmitted until the ACK for
    /// a re-INVITE), `Err` rejects it and the session stays as it was.
    pub fn answer_reoffer(
        &mut self,
        now: Instant,
        id: CallKey,
        answer: Result<Vec<u8>, Rejection>,
    ) {
        let now = self.advance(now);
        let Some(call) = self.reoffers.remove(&id) else {
            return;
        };
        if let Some((key, peer, request)) = self.pending_updates.remove(&id) {
            let response = match answer {
                Ok(sdp) => {
                    let mut ok = self.response(&request, 200, "OK", None);
                    ok.headers.push("Contact", contact(peer));
                    self.refresh_session(now, call, &request, &mut ok);
                    if let Some(dialog) = self.dialogs.get_mut(&call).filter(|_| !sdp.is_empty()) {
                        dialog.local_sdp = sdp.clone();
                    }
                    if !sdp.is_empty() {
                        ok.headers.push("Content-Type", "application/sdp");
                        ok.body = sdp;
                    }
                    ok
                }
                Err(r) => self.response(&request, r.code, r.reason, None),
            };
            self.finish_non_invite(now, peer, key, response);
            return;
        }
        let Some(key) = self.calls.get(&id).cloned() else {
            return;
        };
        let sdp = match answer {
            Ok(sdp) => sdp,
            Err(rejection) => {
                self.reject(now, id, rejection);
                return;
            }
        };
        let Some(txn) = self.invites.get_mut(&key) else {
            return;
        };
        txn.state = InviteState::Accepted;
        let (peer, request) = (txn.peer, txn.request.clone());
        let mut response = self.response(&request, 200, "OK", None);
        self.refresh_session(now, call, &request, &mut response);
        let bytes = self.send_invite_ok(&key, peer, response, sdp.clone());
        let cseq = request.cseq().map_or(0, |c| c.number);
        let unacked = UnackedOk::new(now, &self.config.timers, peer, bytes, cseq, key);
        self.touched.push(Owner::Dialog(call));
        if let Some(dialog) = self.dialogs.get_mut(&call) {
            dialog.local_sdp = sdp;
            dialog.unacked = Some(unacked);
        }
    }

    /// A refresh (re-INVITE or UPDATE answered 2xx) restarts the session timer, with the
    /// interval and refresher the request asks for, or the interval in force when it names none.
    pub(super) fn refresh_session(
        &mut self,
        now: Instant,
        call: CallKey,
        request: &Message,
        response: &mut Message,
    ) {
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        self.touched.push(Owner::Dialog(call));
        let negotiation = match dialog.session {
            // A refresh that names nothing keeps the terms in force.
            Some(s) if request.headers.get("Session-Expires").is_none() => s.terms(),
            _ => session_timer::negotiate(request, 0, self.config.min_session_expires),
        };
        dialog.session = Session::start(now, negotiation);
        if let Some(session) = &dialog.session {
            session.annotate(response);
        }
    }

    /// Ends an answered call from our side with BYE (kick, shutdown, inactivity). No
    /// [`Event::CallEnded`] follows; the application already knows.
    pub fn hangup(&mut self, now: Instant, call: CallKey) {
        let now = self.advance(now);
        if self.dialing.contains_key(&call) && !self.dialogs.contains_key(&call) {
            // A call we place, not answered yet: cancel it.
            self.cancel_dial(now, call);
            return;
        }
        if !self.dialogs.contains_key(&call) {
            // Not answered yet: refuse it instead.
            self.reject(now, call, Rejection::new(480, "Temporarily Unavailable"));
            return;
        }
        self.send_request(now, call, Purpose::Bye, Method::Bye, Vec::new(), Vec::new());
        self.remove_dialog(call);
    }

    /// Builds a request in a dialog (RFC 3261 12.2.1.1) with a fresh branch: the next local CSeq,
    /// or `cseq` (an ACK carries its INVITE's). Returns it with where it goes and its branch.
    pub(super) fn dialog_request(
        &mut self,
        call: CallKey,
        method: Method,
        cseq: Option<u32>,
        extra: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Option<(Message, Peer, String)> {
        let token = self.random_token();
        let branch = format!("{}{token}", self.branch_prefix);
        let user_agent = self.config.user_agent.clone();
        let dialog = self.dialogs.get_mut(&call)?;
        let number = cseq.unwrap_or_else(|| {
            dialog.local_cseq += 1;
            dialog.local_cseq
        });
        let (uri, peer) = next_hop(dialog);
        let mut headers = Headers::default();
        headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                peer.transport.via_name(),
                peer.local
            ),
        );
        headers.push("Max-Forwards", "70");
        for route in route_headers(dialog) {
            headers.push("Route", route);
        }
        headers.push("From", dialog.local_party.clone());
        headers.push("To", dialog.remote_party.clone());
        headers.push("Call-ID", dialog.call_id.clone());
        headers.push("CSeq", format!("{number} {}", method.as_str()));
        headers.push("User-Agent", user_agent);
        for (name, value) in extra {
            headers.push(name, value);
        }
        if !body.is_empty() && headers.get("Content-Type").is_none() {
            headers.push("Content-Type", "application/sdp");
        }
        let request = Message {
            start: StartLine::Request {
                method,
                uri,
                version: "SIP/2.0".into(),
            },
            headers,
            body,
        };
        Some((request, peer, branch))
    }

    /// Refreshes a session we are the refresher of (RFC 4028 7.4): UPDATE without a body when
    /// the peer allows it, else a re-INVITE with our current SDP (same version: nothing changes).
    pub(super) fn send_refresh(&mut self, now: Instant, call: CallKey) {
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(session) = dialog.session.as_mut() else {
            return;
        };
        self.touched.push(Owner::Dialog(call));
        session.refresh_at = None;
        if dialog.pending_refresh.is_some() || dialog.unacked.is_some() {
            // An offer is in flight; the exchange under way will settle first.
            session.refresh_at = Some(now + self.config.timers.t1 * 2);
            return;
        }
        let mut extra = vec![
            ("Contact", contact(dialog.peer)),
            ("Supported", "timer".to_string()),
            (
                "Session-Expires",
                format!("{};refresher=uas", session.interval),
            ),
        ];
        let (method, body) = if dialog.peer_allows_update {
            (Method::Update, Vec::new())
        } else {
            extra.push(("Allow", ALLOW.to_string()));
            (Method::Invite, dialog.local_sdp.clone())
        };
        let branch = self.send_request(now, call, Purpose::Refresh(call), method, extra, body);
        if let Some(dialog) = self.dialogs.get_mut(&call) {
            dialog.pending_refresh = branch;
        }
    }

    pub(super) fn remove_dialog(&mut self, call: CallKey) -> Option<Dialog> {
        let dialog = self.dialogs.remove(&call)?;
        self.touched.push(Owner::Dialog(call));
        if let Some(key) = &dialog.invite_key {
            self.touched.push(Owner::Invite(key.clone()));
            self.invites.remove(key);
        }
        self.dialog_index.remove(&(
            dialog.call_id.clone(),
            dialog.remote_tag.clone(),
            dialog.local_tag.clone(),
        ));
        self.calls.remove(&call);
        Some(dialog)
    }
}
