//! REFER inside a call (RFC 3515): the caller asks to be transferred to the `Refer-To` URI. The
//! application decides ([`Endpoint::answer_refer`]: 202 Accepted, or a refusal such as 603) and
//! reports the transfer's progress with [`Endpoint::notify_refer`]: NOTIFYs in the dialog with
//! `Event: refer` and a `message/sipfrag` status line, the last one terminating the implicit
//! subscription. A REFER without exactly one readable `Refer-To` gets 400 here.

use super::*;

/// An in-dialog REFER for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refer {
    /// The call it came in.
    pub call: CallKey,
    /// Identifies it for [`Endpoint::answer_refer`].
    pub id: CallKey,
    /// The `Refer-To` URI (without angle brackets; URI headers such as `?Replaces=` kept).
    pub target: String,
}

/// How long the implicit subscription a REFER creates is said to last (RFC 3515 2.4.4 leaves it
/// to the notifier); the final NOTIFY ends it sooner.
const REFER_SUBSCRIPTION_S: u32 = 60;

impl Endpoint {
    pub(super) fn handle_refer(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        call: CallKey,
        request: Message,
    ) {
        if self.pending_refers.values().any(|(k, _, _)| *k == key) {
            return; // A retransmission of one the application is deciding on.
        }
        let targets: Vec<&str> = request.headers.all("Refer-To").collect();
        let target = match targets[..] {
            [one] => NameAddr::parse(one).ok().map(|n| n.uri),
            _ => None,
        };
        let Some(target) = target.filter(|t| {
            let scheme = t.split(':').next().unwrap_or_default().to_ascii_lowercase();
            matches!(scheme.as_str(), "sip" | "sips" | "tel")
        }) else {
            self.answer_non_invite(now, peer, key, &request, 400, "Bad Refer-To");
            return;
        };
        let id = CallKey(self.next_call);
        self.next_call += 1;
        self.pending_refers.insert(id, (key, peer, request));
        self.outputs
            .push_back(Output::Event(Event::Refer(Refer { call, id, target })));
    }

    /// Answers a [`Refer`]: `Ok` accepts it (202; its progress follows with
    /// [`Endpoint::notify_refer`]), `Err` refuses it (e.g. 603 Declined) and nothing follows.
    pub fn answer_refer(&mut self, now: Instant, id: CallKey, answer: Result<(), Rejection>) {
        let now = self.advance(now);
        let Some((key, peer, request)) = self.pending_refers.remove(&id) else {
            return;
        };
        let (code, reason) = match answer {
            Ok(()) => (202, "Accepted"),
            Err(rejection) => (rejection.code, rejection.reason),
        };
        self.answer_non_invite(now, peer, key, &request, code, reason);
    }

    /// Reports a transfer's progress to the caller that asked for it in `call`: a NOTIFY whose
    /// body is the status line `SIP/2.0 <code> <reason>`; `done` ends the subscription (a final
    /// outcome).
    pub fn notify_refer(
        &mut self,
        now: Instant,
        call: CallKey,
        code: u16,
        reason: &str,
        done: bool,
    ) {
        let now = self.advance(now);
        let state = if done {
            "terminated;reason=noresource".to_string()
        } else {
            format!("active;expires={REFER_SUBSCRIPTION_S}")
        };
        let extra = vec![
            ("Event", "refer".to_string()),
            ("Subscription-State", state),
            ("Content-Type", "message/sipfrag;version=2.0".to_string()),
        ];
        let body = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
        self.send_request(now, call, Purpose::Notify, Method::Notify, extra, body);
    }
}
