//! Non-INVITE server transactions (RFC 3261 17.2.2): the final response is kept for Timer J,
//! to answer retransmissions of the request.

use super::*;

#[derive(Debug)]
pub(super) struct NonInviteServer {
    pub(super) last_response: Vec<u8>,
    pub(super) expires: Instant,
}

impl Endpoint {
    /// Answers a non-INVITE request with a plain status.
    pub(super) fn answer_non_invite(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: &Message,
        code: u16,
        reason: &str,
    ) {
        let response = self.response(request, code, reason, None);
        self.finish_non_invite(now, peer, key, response);
    }

    /// Answers 481: the request names a dialog or transaction we do not hold.
    pub(super) fn answer_no_transaction(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: &Message,
    ) {
        self.answer_non_invite(
            now,
            peer,
            key,
            request,
            481,
            "Call/Transaction Does Not Exist",
        );
    }

    pub(super) fn finish_non_invite(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        response: Message,
    ) {
        let bytes = response.to_bytes();
        self.count(Count::ResponseOut(response.status().unwrap_or(500)));
        let wait = self
            .config
            .timers
            .duration(TimerKind::J, 0, peer.transport.reliable())
            .unwrap_or_default();
        if !wait.is_zero() {
            self.touched.push(Owner::NonInvite(key.clone()));
            self.non_invites.insert(
                key,
                NonInviteServer {
                    last_response: bytes.clone(),
                    expires: now + wait,
                },
            );
        }
        self.outputs
            .push_back(Output::Transmit(Transmit { peer, bytes }));
    }
}
