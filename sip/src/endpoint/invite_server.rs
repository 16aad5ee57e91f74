//! INVITE server transactions (RFC 3261 17.2.1): a call from its INVITE to its answer or refusal,
//! and the ACK of a non-2xx final response; the 200 starts the call's dialog ([`super::dialog`]).

use super::*;

#[derive(Debug)]
pub(super) enum InviteState {
    /// 100 sent, waiting for the application.
    Proceeding,
    /// Accepted by the application; 180 sent; the 200 goes out at the answer-delay timer.
    Ringing { sdp: Vec<u8>, local_tag: String },
    /// Non-2xx final sent, waiting for ACK (Timers G and H).
    Completed { attempt: u32 },
    /// ACK received; absorbing retransmissions (Timer I).
    Confirmed,
    /// 2xx sent; the dialog owns retransmission; kept to answer INVITE retransmissions.
    Accepted,
}

#[derive(Debug)]
pub(super) struct InviteServer {
    pub(super) call: CallKey,
    pub(super) request: Message,
    pub(super) peer: Peer,
    pub(super) last_response: Option<Vec<u8>>,
    pub(super) state: InviteState,
    pub(super) timers: Vec<(TimerKind, Instant)>,
}

impl Endpoint {
    pub(super) fn handle_invite(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: Message,
    ) {
        if self.auth.required() {
            let authorizations: Vec<&str> = request.headers.all("Authorization").collect();
            if let DigestVerdict::Challenge { stale } =
                self.auth
                    .check("INVITE", &authorizations, self.seconds(now))
            {
                self.count(Count::Refused(if authorizations.is_empty() {
                    "challenged"
                } else {
                    "auth_failed"
                }));
                let mut response = self.response(&request, 401, "Unauthorized", None);
                for challenge in self.auth.challenges(self.seconds(now), stale) {
                    response.headers.push("WWW-Authenticate", challenge);
                }
                self.start_invite_txn(now, peer, key, request, response);
                return;
            }
        }
        let user = request
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user);
        let from = request
            .headers
            .get("From")
            .and_then(|v| NameAddr::parse(v).ok());
        let to_user = request
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|to| SipUri::parse(&to.uri).ok())
            .and_then(|u| u.user);
        let call_id = request.call_id().unwrap_or_default().to_string();
        let request_uri = request.request_uri().unwrap_or_default().to_string();
        let body = request.body.clone();
        let call = self.open_invite_txn(peer, key, request);
        let incoming = IncomingCall {
            call,
            call_id,
            request_uri,
            user,
            to_user,
            from: from.map(|f| f.uri).unwrap_or_default(),
            body,
            peer,
        };
        self.outputs
            .push_back(Output::Event(Event::IncomingCall(incoming)));
    }

    /// Sends 100 Trying and holds a Proceeding INVITE server transaction until the application
    /// answers (initial INVITE or re-INVITE); returns its handle.
    pub(super) fn open_invite_txn(&mut self, peer: Peer, key: TxnKey, request: Message) -> CallKey {
        let call = CallKey(self.next_call);
        self.next_call += 1;
        let trying = self.response(&request, 100, "Trying", None).to_bytes();
        self.count(Count::ResponseOut(100));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: trying.clone(),
        }));
        let txn = InviteServer {
            call,
            request,
            peer,
            last_response: Some(trying),
            state: InviteState::Proceeding,
            timers: Vec::new(),
        };
        self.calls.insert(call, key.clone());
        self.invites.insert(key, txn);
        call
    }

    /// Creates an INVITE server transaction that answers at once with a non-2xx response.
    pub(super) fn start_invite_txn(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: Message,
        response: Message,
    ) {
        let call = CallKey(self.next_call);
        self.next_call += 1;
        let txn = InviteServer {
            call,
            request,
            peer,
            last_response: None,
            state: InviteState::Proceeding,
            timers: Vec::new(),
        };
        self.invites.insert(key.clone(), txn);
        self.calls.insert(call, key);
        self.send_final_non_2xx(now, call, response);
    }

    pub(super) fn handle_cancel(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: Message,
    ) {
        let invite_key = TxnKey {
            method: "INVITE".into(),
            ..key.clone()
        };
        let pending = self.invites.get(&invite_key).map(|t| {
            (
                t.call,
                matches!(
                    t.state,
                    InviteState::Proceeding | InviteState::Ringing { .. }
                ),
            )
        });
        let Some((call, pending)) = pending else {
            self.answer_no_transaction(now, peer, key, &request);
            return;
        };
        self.answer_non_invite(now, peer, key, &request, 200, "OK");
        if pending {
            let request = &self.invites[&invite_key].request;
            let terminated = self.response(request, 487, "Request Terminated", None);
            self.send_final_non_2xx(now, call, terminated);
            self.outputs
                .push_back(Output::Event(Event::CallEnded(call, EndReason::Cancelled)));
        }
    }

    /// Answers the call with 200 OK carrying `sdp`; the dialog starts now.
    pub fn accept(&mut self, now: Instant, call: CallKey, sdp: Vec<u8>) {
        let now = self.advance(now);
        let Some(key) = self.calls.get(&call).cloned() else {
            return;
        };
        let local_tag = self.random_token();
        let delay = self.config.answer_delay;
        let Some(txn) = self.invites.get(&key) else {
            return;
        };
        if !matches!(txn.state, InviteState::Proceeding) {
            return;
        }
        if delay.is_zero() {
            self.send_ok(now, call, key, sdp, local_tag);
            return;
        }
        let mut ringing = self.response(&txn.request, 180, "Ringing", Some(&local_tag));
        copy_record_route(&txn.request, &mut ringing);
        let ringing = ringing.to_bytes();
        let Some(txn) = self.invites.get_mut(&key) else {
            return;
        };
        let peer = txn.peer;
        txn.last_response = Some(ringing.clone());
        txn.state = InviteState::Ringing { sdp, local_tag };
        txn.timers.push((TimerKind::AnswerDelay, now + delay));
        self.touched.push(Owner::Invite(key));
        self.count(Count::ResponseOut(180));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: ringing,
        }));
    }

    /// Sends the 200 OK of an accepted call and starts its dialog.
    pub(super) fn send_ok(
        &mut self,
        now: Instant,
        call: CallKey,
        key: TxnKey,
        sdp: Vec<u8>,
        local_tag: String,
    ) {
        let Some(txn) = self.invites.get_mut(&key) else {
            return;
        };
        txn.state = InviteState::Accepted;
        txn.timers.clear();
        let peer = txn.peer;
        let request = txn.request.clone();
        self.touched.push(Owner::Invite(key.clone()));
        self.touched.push(Owner::Dialog(call));
        let mut response = self.response(&request, 200, "OK", Some(&local_tag));
        copy_record_route(&request, &mut response);
        let session = Session::start(
            now,
            session_timer::negotiate(
                &request,
                self.config.session_expires,
                self.config.min_session_expires,
            ),
        );
        if let Some(session) = &session {
            session.annotate(&mut response);
        }
        let local_party = response.headers.get("To").unwrap_or_default().to_string();
        let bytes = self.send_invite_ok(&key, peer, response, sdp.clone());
        let peer_allows_update = request
            .headers
            .all("Allow")
            .flat_map(|v| v.split(','))
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"));

        let from = request.headers.get("From").unwrap_or_default().to_string();
        let remote_tag = request.tag("From").unwrap_or_default();
        let remote_target = request
            .headers
            .get("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri)
            .or_else(|| NameAddr::parse(&from).ok().map(|f| f.uri))
            .unwrap_or_default();
        let call_id = request.call_id().unwrap_or_default().to_string();
        let cseq = request.cseq().map_or(0, |c| c.number);
        self.dialog_index.insert(
            (call_id.clone(), remote_tag.clone(), local_tag.clone()),
            call,
        );
        self.dialogs.insert(
            call,
            Dialog {
                call_id,
                local_tag,
                remote_tag,
                remote_party: from,
                local_party,
                remote_target,
                route_set: request
                    .headers
                    .all("Record-Route")
                    .flat_map(split_commas)
                    .map(str::to_string)
                    .collect(),
                local_cseq: 1,
                peer,
                invite_key: Some(key.clone()),
                confirmed: false,
                unacked: Some(UnackedOk::new(
                    now,
                    &self.config.timers,
                    peer,
                    bytes,
                    cseq,
                    key,
                )),
                session,
                pending_refresh: None,
                local_sdp: sdp,
                peer_allows_update,
                ping_at: self.config.ping_interval.map(|d| now + d),
            },
        );
    }

    /// Sends a 200 to an INVITE (initial or re-INVITE) carrying our SDP, and keeps it to answer
    /// retransmissions of that INVITE. Returns the bytes for the retransmissions until the ACK.
    pub(super) fn send_invite_ok(
        &mut self,
        key: &TxnKey,
        peer: Peer,
        mut response: Message,
        sdp: Vec<u8>,
    ) -> Vec<u8> {
        response.headers.push("Contact", contact(peer));
        response.headers.push("Allow", ALLOW);
        response.headers.push("Content-Type", "application/sdp");
        response.body = sdp;
        let bytes = response.to_bytes();
        if let Some(txn) = self.invites.get_mut(key) {
            txn.last_response = Some(bytes.clone());
        }
        self.count(Count::ResponseOut(200));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: bytes.clone(),
        }));
        bytes
    }

    /// Rejects a pending call with a final status (4xx-6xx).
    pub fn reject(&mut self, now: Instant, call: CallKey, rejection: Rejection) {
        let now = self.advance(now);
        let Some(key) = self.calls.get(&call) else {
            return;
        };
        let Some(txn) = self.invites.get(key) else {
            return;
        };
        if !matches!(
            txn.state,
            InviteState::Proceeding | InviteState::Ringing { .. }
        ) {
            return;
        }
        let response = self.response(&txn.request, rejection.code, rejection.reason, None);
        self.send_final_non_2xx(now, call, response);
    }

    pub(super) fn send_final_non_2xx(&mut self, now: Instant, call: CallKey, response: Message) {
        let Some(key) = self.calls.get(&call) else {
            return;
        };
        let Some(txn) = self.invites.get_mut(key) else {
            return;
        };
        self.touched.push(Owner::Invite(key.clone()));
        let bytes = response.to_bytes();
        let code = response.status().unwrap_or(500);
        txn.last_response = Some(bytes.clone());
        txn.state = InviteState::Completed { attempt: 0 };
        let reliable = txn.peer.transport.reliable();
        let timers = self.config.timers;
        txn.timers.clear();
        if let Some(d) = timers.duration(TimerKind::G, 0, reliable) {
            txn.timers.push((TimerKind::G, now + d));
        }
        txn.timers.push((
            TimerKind::H,
            now + timers
                .duration(TimerKind::H, 0, reliable)
                .unwrap_or_default(),
        ));
        let peer = txn.peer;
        self.count(Count::ResponseOut(code));
        self.outputs
            .push_back(Output::Transmit(Transmit { peer, bytes }));
    }

    /// RFC 3261 8.2.2.2: an INVITE with the From tag, Call-ID and CSeq of a transaction we hold,
    /// arriving by another path (another branch or sent-by), is a fork merging back: 482.
    pub(super) fn is_merged(&self, key: &TxnKey, request: &Message) -> bool {
        let from_tag = request.tag("From");
        self.invites.iter().any(|(k, txn)| {
            k.call_id == key.call_id
                && k.cseq == key.cseq
                && k.method == key.method
                && (k.branch != key.branch || k.sent_by != key.sent_by)
                && txn.request.tag("From") == from_tag
        })
    }
}
