//! Our own requests in a dialog (BYE, session refreshes, OPTIONS pings): sent through a
//! [`super::client::ClientTxn`] each, and what their outcome does to the dialog.

use super::*;

impl Endpoint {
    pub(super) fn handle_response(&mut self, now: Instant, response: Message) {
        let Some(via_branch) = response.top_via().and_then(|v| v.branch) else {
            return;
        };
        let branch = match response.cseq() {
            Some(cseq) if cseq.method == Method::Cancel => dial::cancel_key(&via_branch),
            _ => via_branch,
        };
        let Some(mut txn) = self.clients.remove(&branch) else {
            return;
        };
        let timers = self.config.timers;
        let purpose = txn.purpose;
        if let (Purpose::Dial(call), Some(code @ 100..=199)) = (purpose, response.status()) {
            self.dial_provisional(now, call, &branch, code);
        }
        let step = txn.on_response(now, &timers, &response, || {
            self.ack_for_2xx(purpose, &response)
        });
        if let Some(bytes) = step.send {
            self.outputs.push_back(Output::Transmit(Transmit {
                peer: txn.peer,
                bytes,
            }));
        }
        if !step.finished {
            self.clients.insert(branch.clone(), txn);
        }
        self.touched.push(Owner::Client(branch.clone()));
        if let Some(outcome) = step.outcome {
            match purpose {
                Purpose::Dial(call) => {
                    self.dial_outcome(now, call, &branch, Some(&response), outcome)
                }
                Purpose::Register(key) => {
                    self.register_outcome(now, key, &branch, Some(&response), outcome)
                }
                _ => self.on_outcome(now, purpose, &branch, outcome),
            }
        }
    }

    /// The ACK of a 2xx to our INVITE (RFC 3261 13.2.2.4): a new transaction in the dialog
    /// with the INVITE's CSeq number. A 2xx to a re-INVITE updates the remote target
    /// (12.2.1.2); one to a call we place makes the dialog first.
    pub(super) fn ack_for_2xx(&mut self, purpose: Purpose, response: &Message) -> Vec<u8> {
        let call = match purpose {
            Purpose::Refresh(call) => {
                if let (Some(target), Some(dialog)) =
                    (dial::contact_uri(response), self.dialogs.get_mut(&call))
                {
                    dialog.remote_target = target;
                }
                call
            }
            Purpose::Dial(call) => {
                self.dial_answered(call, response);
                call
            }
            Purpose::Bye
            | Purpose::Ping(_)
            | Purpose::Cancel
            | Purpose::Register(_)
            | Purpose::Notify => {
                return Vec::new();
            }
        };
        let number = response.cseq().map_or(0, |c| c.number);
        match self.dialog_request(call, Method::Ack, Some(number), Vec::new(), Vec::new()) {
            Some((ack, _, _)) => ack.to_bytes(),
            None => Vec::new(),
        }
    }

    /// Acts on how one of our in-dialog requests ended.
    pub(super) fn on_outcome(
        &mut self,
        now: Instant,
        purpose: Purpose,
        branch: &str,
        outcome: Outcome,
    ) {
        let call = match purpose {
            Purpose::Bye | Purpose::Cancel | Purpose::Notify => return,
            Purpose::Dial(call) => return self.dial_outcome(now, call, branch, None, outcome),
            Purpose::Register(key) => {
                return self.register_outcome(now, key, branch, None, outcome);
            }
            Purpose::Refresh(call) | Purpose::Ping(call) => call,
        };
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        self.touched.push(Owner::Dialog(call));
        if dialog.pending_refresh.as_deref() == Some(branch) {
            dialog.pending_refresh = None;
        }
        match outcome {
            Outcome::Failure(481) => {
                self.remove_dialog(call);
                self.outputs.push_back(Output::Event(Event::CallEnded(
                    call,
                    EndReason::PeerUnreachable,
                )));
                return;
            }
            Outcome::Failure(408) | Outcome::Timeout => {
                self.hangup(now, call);
                self.outputs.push_back(Output::Event(Event::CallEnded(
                    call,
                    EndReason::PeerUnreachable,
                )));
                return;
            }
            _ => {}
        }
        let ping_interval = self.config.ping_interval;
        match (purpose, outcome) {
            (Purpose::Ping(_), _) => dialog.ping_at = ping_interval.map(|d| now + d),
            (Purpose::Refresh(_), Outcome::Success(response)) => {
                // The peer may shorten the interval or take the refresher role (RFC 4028 7.4).
                let current = dialog.session.map_or(0, |s| s.interval);
                let mut negotiation =
                    session_timer::negotiate(&response, current, self.config.min_session_expires);
                if let Negotiation::Timer {
                    caller_supports, ..
                } = &mut negotiation
                {
                    *caller_supports = dialog.session.is_some_and(|s| s.caller_supports);
                }
                dialog.session = Session::start(now, negotiation).or(dialog.session);
            }
            (Purpose::Refresh(_), _) => {
                // Refused (e.g. 491 or 500): try again halfway to the expiry while there is
                // time for a whole transaction; otherwise the expiry ends the call.
                if let Some(session) = dialog.session.as_mut() {
                    let left = session.expires_at.saturating_duration_since(now);
                    let transaction = self.config.timers.t1 * 64;
                    session.refresh_at = (left > transaction * 2).then(|| now + left / 2);
                }
            }
            (
                Purpose::Bye
                | Purpose::Cancel
                | Purpose::Dial(_)
                | Purpose::Register(_)
                | Purpose::Notify,
                _,
            ) => {}
        }
    }

    pub(super) fn refresh_in_flight(&self, call: CallKey) -> bool {
        self.dialogs
            .get(&call)
            .is_some_and(|d| d.pending_refresh.is_some())
    }

    /// Sends a request in a dialog through a new client transaction; returns its branch.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        call: CallKey,
        purpose: Purpose,
        method: Method,
        extra: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Option<String> {
        let (request, peer, branch) = self.dialog_request(call, method, None, extra, body)?;
        let label = request.method().map_or("other", Method::metric_label);
        let txn = ClientTxn::new(now, &self.config.timers, purpose, peer, request);
        self.count(Count::RequestOut(label));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: txn.bytes().to_vec(),
        }));
        self.clients.insert(branch.clone(), txn);
        self.touched.push(Owner::Client(branch.clone()));
        Some(branch)
    }

    /// Sends `request` (a request outside any dialog: an INVITE we place, a REGISTER) through a
    /// new client transaction: a fresh branch in a new top Via (an earlier attempt's is
    /// replaced), counted under `label`. Returns the branch.
    pub(super) fn start_client_txn(
        &mut self,
        now: Instant,
        purpose: Purpose,
        peer: Peer,
        request: &mut Message,
        label: &'static str,
    ) -> String {
        let token = self.random_token();
        let branch = format!("{}{token}", self.branch_prefix);
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            peer.transport.via_name(),
            peer.local
        );
        request.headers.remove("Via");
        let mut headers = Headers::default();
        headers.push("Via", via);
        for (name, value) in request.headers.iter() {
            headers.push(name, value.to_string());
        }
        request.headers = headers;
        let txn = ClientTxn::new(now, &self.config.timers, purpose, peer, request.clone());
        self.count(Count::RequestOut(label));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: txn.bytes().to_vec(),
        }));
        self.clients.insert(branch.clone(), txn);
        self.touched.push(Owner::Client(branch.clone()));
        branch
    }
}
