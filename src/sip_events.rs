//! The SIP driver's events, sent on to their owners: calls to the bridge task, REGISTER
//! outcomes to the trunks' task. Called on the SIP driver task, so each only queues a command.

use roundtable_sip::endpoint::{
    CallKey, EndReason, IncomingCall, Refer, RegisterOutcome, Reoffer, RequestKey,
};
use roundtable_sip::transport::CallHandler;

use crate::bridge::BridgeHandle;
use crate::trunks;

/// The [`CallHandler`] the SIP driver is given.
pub struct SipEvents {
    /// Calls.
    pub bridge: BridgeHandle,
    /// Registrations.
    pub trunks: trunks::Commands,
}

impl CallHandler for SipEvents {
    fn incoming(&self, call: IncomingCall) {
        self.bridge.incoming(call);
    }

    fn confirmed(&self, _call: CallKey) {}

    fn ended(&self, call: CallKey, reason: EndReason) {
        self.bridge.ended(call, reason);
    }

    fn reoffer(&self, offer: Reoffer) {
        self.bridge.reoffer(offer);
    }

    fn info(&self, call: CallKey, content_type: &str, body: &[u8]) {
        self.bridge.info(call, content_type, body);
    }

    fn progress(&self, call: CallKey, _code: u16) {
        self.bridge.progress(call);
    }

    fn answered(&self, call: CallKey, body: Vec<u8>) {
        self.bridge.answered(call, body);
    }

    fn failed(&self, call: CallKey, code: u16, reason: String, redirect: Option<String>) {
        self.bridge.failed(call, code, reason, redirect);
    }

    fn refer(&self, refer: Refer) {
        self.bridge.refer(refer);
    }

    fn registered(&self, key: RequestKey, cseq: u32, outcome: RegisterOutcome) {
        let _ = self
            .trunks
            .send(trunks::Command::Registered(key, cseq, outcome));
    }
}
