//! The sans-IO SIP user agent core of the bridge: server transactions, the dialogs of answered
//! calls, and the client transactions of the requests we send in them (BYE, session refreshes
//! by UPDATE or re-INVITE, OPTIONS pings; see [`client`]).
//!
//! The parts, one state machine a file: `invite_server` (a call from its INVITE to its answer
//! or refusal), `non_invite_server`, `dialog` (answered calls: in-dialog requests, ACKs,
//! re-offers, session timers), `requests` (our requests in a dialog and what their outcomes
//! do), `client` (the client transaction machine they run on) and `deadlines` (every timer of
//! them all in one ordered queue). This file holds the public types, the dispatch of what
//! arrives, and the timers' firing.
//!
//! # How to drive it
//! The driver owns the sockets and the clock; [`Endpoint`] owns every transaction and dialog.
//! - Feed input with [`Endpoint::handle_message`] (bytes received) and
//!   [`Endpoint::handle_timeout`] (when the deadline from [`Endpoint::poll_timeout`] passes).
//! - Give commands with [`Endpoint::accept`], [`Endpoint::reject`] and [`Endpoint::hangup`].
//! - After each input or command, drain [`Endpoint::poll_output`] until it returns `None`, then
//!   sleep until [`Endpoint::poll_timeout`].
//!
//! An [`Event::IncomingCall`] must be answered with `accept` or `reject`; the transaction stays
//! in Proceeding (100 Trying sent) until then. Time only moves forward: a `now` older than the
//! last one seen is treated as the last one.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::time::Instant;

use crate::admission::{Admission, Cidr, RateLimits, Trusted, Verdict};
use crate::digest::{AuthConfig, Authenticator, Verdict as DigestVerdict};
use crate::error::{ParseError, Rejection};
use crate::message::{
    Framing, Headers, Message, Method, NameAddr, SipUri, StartLine, split_commas,
};
use crate::session_timer::{self, Negotiation, Refresher};
use crate::timer::{TimerConfig, TimerKind};
use client::{ClientTxn, Outcome, Purpose};
use deadlines::{Deadlines, Owner};
use dial::Dialing;
pub use dial::OutgoingCall;
use dialog::{Dialog, Session, UnackedOk};
use invite_server::{InviteServer, InviteState};
use non_invite_server::NonInviteServer;
pub use refer::Refer;
use register::Registering;
pub use register::{OutgoingRegister, RegisterOutcome, RegisterRequest, RequestKey};

mod client;
mod deadlines;
mod dial;
mod dialog;
mod invite_server;
mod non_invite_server;
mod refer;
mod register;
mod requests;

/// The methods we answer, for `Allow`.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";
/// The option tags we support (`Require` with any other gets 420).
const SUPPORTED: &[&str] = &["timer"];

/// Transport protocol of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: we retransmit.
    Udp,
    /// A stream: reliable, no retransmission.
    Tcp,
    /// A TLS stream over TCP.
    Tls,
}

impl Transport {
    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    fn reliable(self) -> bool {
        self != Transport::Udp
    }
}

/// Identifies the driver's socket a message used: a UDP socket or one TCP connection. Answers
/// and in-dialog requests go back over the same flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub u64);

/// Which socket a message came in on (and where its answers go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// UDP or TCP.
    pub transport: Transport,
    /// The remote address the bytes came from.
    pub remote: SocketAddr,
    /// Our address the bytes arrived at (a concrete IP, never 0.0.0.0).
    pub local: SocketAddr,
    /// The socket or connection it used.
    pub flow: FlowId,
}

/// Bytes for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them (over the same connection for TCP).
    pub peer: Peer,
    /// A complete SIP message.
    pub bytes: Vec<u8>,
}

/// Our handle for one call (INVITE transaction, then dialog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

/// A new INVITE the application must accept or reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// Our handle.
    pub call: CallKey,
    /// The SIP Call-ID, for logs.
    pub call_id: String,
    /// The Request-URI.
    pub request_uri: String,
    /// The user part of the Request-URI, if it has one.
    pub user: Option<String>,
    /// The user part of the To URI, if it has one (a trunk's DID: the Request-URI of a call a
    /// registrar forwards names our registered Contact instead).
    pub to_user: Option<String>,
    /// The From URI.
    pub from: String,
    /// The offer body, if any.
    pub body: Vec<u8>,
    /// Where it came from.
    pub peer: Peer,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before we answered.
    Cancelled,
    /// No ACK arrived for our 2xx within 64*T1; we sent BYE.
    AckTimeout,
    /// The session was not refreshed in time (RFC 4028); we sent BYE.
    SessionExpired,
    /// A request we sent in the dialog (refresh or ping) got 408 or 481 or no answer at all
    /// (RFC 3261 12.2.1.2): the peer is gone; we sent BYE unless it answered 481.
    PeerUnreachable,
}

/// Something the application must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An INVITE outside any dialog.
    IncomingCall(IncomingCall),
    /// The ACK for our 2xx arrived.
    CallConfirmed(CallKey),
    /// The call is over from the remote side or by timeout (not reported for [`Endpoint::hangup`]).
    CallEnded(CallKey, EndReason),
    /// A re-INVITE or UPDATE in an answered call: answer it with [`Endpoint::answer_reoffer`].
    Reoffer(Reoffer),
    /// An INFO with a body in an answered call (already answered 200), e.g. DTMF relay.
    Info(Info),
    /// A call we place got a provisional response (180 Ringing, 183 Session Progress...).
    Progress {
        /// The call.
        call: CallKey,
        /// The response code.
        code: u16,
    },
    /// A call we place was answered: the dialog is up and our ACK sent.
    Answered {
        /// The call.
        call: CallKey,
        /// The SDP answer (empty if the 2xx had none).
        body: Vec<u8>,
    },
    /// A call we place failed with a final response (408 when nothing answered in time).
    Failed {
        /// The call.
        call: CallKey,
        /// The response code.
        code: u16,
        /// The response's reason phrase.
        reason: String,
        /// For a 3xx, the first Contact's URI: where to call instead.
        redirect: Option<String>,
    },
    /// An in-dialog REFER (RFC 3515): answer it with [`Endpoint::answer_refer`].
    Refer(Refer),
    /// A REGISTER sent with [`Endpoint::register`] ended.
    Registered {
        /// The key it was sent under.
        key: RequestKey,
        /// The CSeq number it last used (after a challenge, one more than asked): the next
        /// REGISTER of the registration goes above it.
        cseq: u32,
        /// Granted or failed.
        outcome: RegisterOutcome,
    },
}

/// The body of an in-dialog INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The call it belongs to.
    pub call: CallKey,
    /// Its Content-Type (empty when absent).
    pub content_type: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// A new offer inside an answered call (hold, resume, codec change, session refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reoffer {
    /// The call it belongs to.
    pub call: CallKey,
    /// Identifies this offer for [`Endpoint::answer_reoffer`].
    pub id: CallKey,
    /// The SDP offer; empty when the peer asks us to offer (we then send our current SDP).
    pub body: Vec<u8>,
}

/// Counted happenings, for the driver's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A request arrived, by bounded method label.
    RequestIn(&'static str),
    /// We sent a response with this code (first transmission only).
    ResponseOut(u16),
    /// Bytes that did not parse and could not be answered.
    Dropped,
    /// A message refused by admission: `throttled` (503), `dropped` (over the hard limit) or
    /// `forbidden` (outside `sip.allow`, 403).
    Refused(&'static str),
    /// We sent a request (first transmission only), by method.
    RequestOut(&'static str),
    /// A retransmission: `final` (non-2xx to INVITE, Timer G), `2xx` (until the ACK), a method
    /// name for our own requests (Timers A and E), or `answered` (a request retransmitted to us,
    /// answered from its transaction).
    Retransmission(&'static str),
    /// A timer that gave up: `ack` (no ACK for a 2xx), `ack_final` (Timer H), a method name for
    /// our own requests (Timers B and F without a final response), `session` (RFC 4028 expiry).
    Timeout(&'static str),
    /// A request of ours came back to us (its Via carries our branch): answered 482.
    Loop,
}

/// What the endpoint wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send bytes.
    Transmit(Transmit),
    /// Tell the application.
    Event(Event),
    /// Count it.
    Count(Count),
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// RFC 3261 timer bases.
    pub timers: TimerConfig,
    /// Value of our `Server` and `User-Agent` headers.
    pub user_agent: String,
    /// Seed for tags and branches; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Time between the application accepting a call and the 200 OK; when non-zero, 180 Ringing
    /// goes out at once, so a CANCEL can arrive in between.
    pub answer_delay: std::time::Duration,
    /// Source networks allowed to send to us; empty allows all.
    pub allow: Vec<Cidr>,
    /// Digest authentication of new calls.
    pub auth: AuthConfig,
    /// Per-source rate limits.
    pub limits: RateLimits,
    /// Sources trusted to send many calls (proxies, SBCs), with their own limits.
    pub trusted: Trusted,
    /// Most server transactions and dialogs held at once. Beyond it, new requests are answered
    /// 503 without keeping state, so a flood cannot grow memory without bound.
    pub max_transactions: usize,
    /// RFC 4028 session interval in seconds for callers that name none (0: no timer unless the
    /// caller asks). Callers without timer support are refreshed by us.
    pub session_expires: u32,
    /// Our RFC 4028 Min-SE in seconds: shorter session intervals are raised to it, or refused
    /// with 422 when the caller supports timers. RFC 4028 asks for 90 or more; tests shorten it.
    pub min_session_expires: u32,
    /// How often to send an in-dialog OPTIONS to each answered call; a 408, 481 or no answer
    /// ends the call. `None` sends none.
    pub ping_interval: Option<std::time::Duration>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            timers: TimerConfig::default(),
            user_agent: concat!("Roundtable/", env!("CARGO_PKG_VERSION")).to_string(),
            seed: None,
            answer_delay: std::time::Duration::ZERO,
            allow: Vec::new(),
            auth: AuthConfig::default(),
            limits: RateLimits::default(),
            trusted: Trusted::default(),
            max_transactions: 50_000,
            session_expires: 1800,
            min_session_expires: session_timer::MIN_SE,
            ping_interval: None,
        }
    }
}

/// Server transaction key (RFC 3261 17.2.3): branch, sent-by, and method with ACK as INVITE;
/// plus Call-ID and CSeq number, so that a client reusing a branch for a different request gets
/// a new transaction rather than the old request's response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxnKey {
    branch: String,
    sent_by: String,
    method: String,
    call_id: String,
    cseq: u32,
}

/// The bridge's SIP user agent core. See the module docs for the driving loop.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    now: Option<Instant>,
    rng: u64,
    next_call: u64,
    invites: HashMap<TxnKey, InviteServer>,
    calls: HashMap<CallKey, TxnKey>,
    non_invites: HashMap<TxnKey, NonInviteServer>,
    dialogs: HashMap<CallKey, Dialog>,
    /// (Call-ID, remote tag, local tag) to call.
    dialog_index: HashMap<(String, String, String), CallKey>,
    /// Our client transactions, by branch (a CANCEL's: see [`dial::cancel_key`]).
    clients: HashMap<String, ClientTxn>,
    /// Calls we place, until their final response.
    dialing: HashMap<CallKey, Dialing>,
    /// REGISTERs we sent, until their final response.
    registering: HashMap<RequestKey, Registering>,
    /// Starts every branch we generate, unique to this endpoint: a request carrying it in a Via
    /// is one of ours that came back.
    branch_prefix: String,
    /// Offers the application has not answered yet: offer id to dialog.
    reoffers: HashMap<CallKey, CallKey>,
    /// UPDATE transactions waiting for the application's answer.
    pending_updates: HashMap<CallKey, (TxnKey, Peer, Message)>,
    /// REFER transactions waiting for the application's answer.
    pending_refers: HashMap<CallKey, (TxnKey, Peer, Message)>,
    outputs: VecDeque<Output>,
    admission: Admission,
    auth: Authenticator,
    /// The first `now` seen: nonce timestamps count seconds from it.
    epoch: Option<Instant>,
    /// Every transaction's and dialog's next deadline, in order.
    deadlines: Deadlines,
    /// Owners whose timers changed since the queue was last brought up to date: every change to
    /// an owner's timers pushes it here, and [`Self::settle`] files its new deadline.
    touched: Vec<Owner>,
}

impl Endpoint {
    /// A new endpoint with no calls.
    pub fn new(config: EndpointConfig) -> Endpoint {
        let rng = config
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64))
            | 1;
        let admission = Admission::new(config.allow.clone(), config.limits, config.trusted.clone());
        let auth = Authenticator::new(
            config.auth.clone(),
            rng.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15,
        );
        Endpoint {
            admission,
            auth,
            epoch: None,
            config,
            now: None,
            rng,
            next_call: 1,
            invites: HashMap::new(),
            calls: HashMap::new(),
            non_invites: HashMap::new(),
            dialogs: HashMap::new(),
            dialog_index: HashMap::new(),
            clients: HashMap::new(),
            dialing: HashMap::new(),
            registering: HashMap::new(),
            branch_prefix: format!("z9hG4bK{:08x}", rng.rotate_left(17) as u32),
            reoffers: HashMap::new(),
            pending_updates: HashMap::new(),
            pending_refers: HashMap::new(),
            outputs: VecDeque::new(),
            deadlines: Deadlines::default(),
            touched: Vec::new(),
        }
    }

    /// Number of calls in progress or up (transactions pending an answer plus dialogs).
    pub fn active_calls(&self) -> usize {
        self.calls.len().max(self.dialogs.len()) + self.dialing.len()
    }

    /// Whether a transaction or call still uses `flow` (the driver keeps such connections open).
    pub fn uses_flow(&self, flow: FlowId) -> bool {
        self.dialogs.values().any(|d| d.peer.flow == flow)
            || self.invites.values().any(|t| t.peer.flow == flow)
            || self.clients.values().any(|t| t.peer.flow == flow)
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline at which [`Endpoint::handle_timeout`] must be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.settle();
        self.deadlines.next()
    }

    /// Brings the deadline queue up to date with every owner touched since the last call.
    fn settle(&mut self) {
        for owner in std::mem::take(&mut self.touched) {
            let at = self.deadline_of(&owner);
            self.deadlines.arm(owner, at);
        }
        if cfg!(any(test, debug_assertions)) {
            self.check_deadlines();
        }
    }

    /// An owner's next deadline, read off its state (`None`: none, or the owner is gone).
    fn deadline_of(&self, owner: &Owner) -> Option<Instant> {
        match owner {
            Owner::Invite(key) => self
                .invites
                .get(key)
                .and_then(|t| t.timers.iter().map(|(_, at)| *at).min()),
            Owner::NonInvite(key) => self.non_invites.get(key).map(|t| t.expires),
            Owner::Client(branch) => self.clients.get(branch).map(ClientTxn::deadline),
            Owner::Dialog(call) => self.dialogs.get(call).and_then(Dialog::deadline),
        }
    }

    /// In tests and debug builds: the queue holds exactly every owner's deadline. A change to an
    /// owner's timers that forgot to push it to `touched` would otherwise miss a timer without a trace.
    fn check_deadlines(&self) {
        let owners = (self.invites.keys().cloned().map(Owner::Invite))
            .chain(self.non_invites.keys().cloned().map(Owner::NonInvite))
            .chain(self.clients.keys().cloned().map(Owner::Client))
            .chain(self.dialogs.keys().copied().map(Owner::Dialog));
        let mut armed = 0;
        for owner in owners {
            let at = self.deadline_of(&owner);
            assert_eq!(self.deadlines.armed(&owner), at, "deadline of {owner:?}");
            armed += usize::from(at.is_some());
        }
        assert_eq!(
            self.deadlines.len(),
            armed,
            "the queue holds owners that are gone"
        );
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |last| last.max(now));
        self.now = Some(now);
        self.epoch.get_or_insert(now);
        now
    }

    /// Seconds since the first `now`, for nonce timestamps.
    fn seconds(&self, now: Instant) -> u64 {
        self.epoch
            .map_or(0, |e| now.saturating_duration_since(e).as_secs())
    }

    /// Trusts these addresses besides `EndpointConfig::trusted` (the trunks' next hops, as
    /// resolved now), replacing the last set.
    pub fn set_trusted_addresses(&mut self, addresses: Vec<std::net::IpAddr>) {
        self.admission.set_trusted_addresses(addresses);
    }

    /// Handles bytes that arrived from `peer` (one datagram, or one framed message of a stream).
    pub fn handle_message(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        let now = self.advance(now);
        let framing = match peer.transport {
            Transport::Udp => Framing::Datagram,
            Transport::Tcp | Transport::Tls => Framing::Stream,
        };
        let verdict = self.admission.check(peer.remote.ip(), now);
        if verdict != Verdict::Admit {
            self.refuse(peer, bytes, framing, verdict);
            return;
        }
        let message = match Message::parse(bytes, framing) {
            Ok((message, _)) => message,
            Err(error) => {
                self.answer_unparsable(peer, bytes, &error);
                return;
            }
        };
        match &message.start {
            StartLine::Request { method, .. } => {
                self.outputs
                    .push_back(Output::Count(Count::RequestIn(method.metric_label())));
                let reply = reply_peer(peer, &message);
                if let Err(rejection) = message.validate_request() {
                    // Even a Via we cannot parse lets us answer the source address.
                    if message.method() != Some(&Method::Ack)
                        && message.headers.get("Via").is_some()
                    {
                        let response =
                            self.response(&message, rejection.code, rejection.reason, None);
                        self.send_response(reply, response);
                    } else {
                        self.count(Count::Dropped);
                    }
                    return;
                }
                self.handle_request(now, reply, message);
            }
            StartLine::Response { .. } => self.handle_response(now, message),
        }
    }

    /// Answers what admission refused: 503 (throttled) or 403 (not allowed) to requests we can
    /// address; everything else, and anything over the hard limit, is dropped.
    fn refuse(&mut self, peer: Peer, bytes: &[u8], framing: Framing, verdict: Verdict) {
        let (label, answer) = match verdict {
            Verdict::Throttle => ("throttled", Some((503, "Service Unavailable"))),
            Verdict::Forbidden => ("forbidden", Some((403, "Forbidden"))),
            Verdict::Drop | Verdict::Admit => ("dropped", None),
        };
        self.count(Count::Refused(label));
        let Some((code, reason)) = answer else { return };
        let Ok((request, _)) = Message::parse(bytes, framing) else {
            return;
        };
        if request.method().is_none_or(|m| *m == Method::Ack) || request.top_via().is_none() {
            return;
        }
        let mut response = self.response(&request, code, reason, None);
        if code == 503 {
            response.headers.push("Retry-After", "5");
        }
        self.send_response(reply_peer(peer, &request), response);
    }

    /// A message that failed to parse gets 400 only if its header section is readable enough to
    /// address one (RFC 4475 clerr, ncl); anything else is dropped.
    fn answer_unparsable(&mut self, peer: Peer, bytes: &[u8], error: &ParseError) {
        let addressable = matches!(
            error,
            ParseError::BodyShorterThanContentLength { .. }
                | ParseError::BadContentLength
                | ParseError::MultipleContentLength
        );
        if addressable {
            // Re-read the headers with the body ignored: cut at the header end.
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let cleaned = strip_content_length(&bytes[..end]);
                if let Ok((m, _)) = Message::parse(&cleaned, Framing::Datagram)
                    && matches!(m.start, StartLine::Request { .. })
                    && m.method() != Some(&Method::Ack)
                    && m.top_via().is_some()
                    && m.validate_request().is_ok()
                {
                    let label = m.method().map_or("other", Method::metric_label);
                    self.count(Count::RequestIn(label));
                    let response = self.response(&m, 400, "Bad Content-Length", None);
                    self.send_response(reply_peer(peer, &m), response);
                    return;
                }
            }
        }
        self.count(Count::Dropped);
    }

    fn handle_request(&mut self, now: Instant, peer: Peer, request: Message) {
        let Some(key) = txn_key(&request) else {
            self.count(Count::Dropped);
            return;
        };
        let method = request
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));
        if method == Method::Ack {
            self.handle_ack(now, &key, &request);
            return;
        }
        if self.is_our_own(&request) {
            self.count(Count::Loop);
            self.answer_non_invite(now, peer, key, &request, 482, "Loop Detected");
            return;
        }
        // Retransmission of a request whose transaction we still hold: resend our last answer.
        if let Some(txn) = self.invites.get(&key).filter(|_| method == Method::Invite) {
            if let Some(bytes) = &txn.last_response {
                let transmit = Transmit {
                    peer,
                    bytes: bytes.clone(),
                };
                self.outputs.push_back(Output::Transmit(transmit));
            }
            self.count(Count::Retransmission("answered"));
            return;
        }
        if let Some(txn) = self.non_invites.get(&key) {
            let transmit = Transmit {
                peer,
                bytes: txn.last_response.clone(),
            };
            self.outputs.push_back(Output::Transmit(transmit));
            self.count(Count::Retransmission("answered"));
            return;
        }
        if request.tag("To").is_some() {
            self.handle_in_dialog(now, peer, key, request);
            return;
        }
        // In-dialog requests above free state; new ones only add it.
        if let Some(response) = self.refuse_extensions_or_body(&request) {
            match method {
                Method::Invite => self.start_invite_txn(now, peer, key, request, response),
                _ => self.finish_non_invite(now, peer, key, response),
            }
            return;
        }
        if self.invites.len() + self.non_invites.len() + self.dialogs.len()
            >= self.config.max_transactions
        {
            let mut response = self.response(&request, 503, "Service Unavailable", None);
            response.headers.push("Retry-After", "5");
            self.send_response(peer, response);
            return;
        }
        if method == Method::Invite && self.is_merged(&key, &request) {
            let response = self.response(&request, 482, "Loop Detected", None);
            self.start_invite_txn(now, peer, key, request, response);
            return;
        }
        match method {
            Method::Invite => self.handle_invite(now, peer, key, request),
            Method::Options => {
                let mut response = self.response(&request, 200, "OK", None);
                response.headers.push("Accept", "application/sdp");
                self.finish_non_invite(now, peer, key, response);
            }
            Method::Cancel => self.handle_cancel(now, peer, key, request),
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.answer_no_transaction(now, peer, key, &request);
            }
            Method::Other(_) => {
                self.answer_non_invite(now, peer, key, &request, 501, "Not Implemented");
            }
            _ => {
                self.answer_non_invite(now, peer, key, &request, 405, "Method Not Allowed");
            }
        }
    }

    /// RFC 3261 8.2.2.2 (and 16.3 item 4 in spirit): a request whose Via list holds a branch we
    /// generated is one of ours routed back to us.
    fn is_our_own(&self, request: &Message) -> bool {
        request
            .headers
            .all("Via")
            .flat_map(split_commas)
            .any(|via| {
                crate::message::Via::parse(via)
                    .ok()
                    .and_then(|v| v.branch)
                    .is_some_and(|b| b.starts_with(&self.branch_prefix))
            })
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let timers = self.config.timers;
        self.settle();
        let (mut due_invites, mut due_clients, mut due_dialogs) =
            (Vec::new(), Vec::new(), Vec::new());
        for owner in self.deadlines.pop_due(now) {
            // Each due owner's timers are run below, and it is re-armed afterwards.
            self.touched.push(owner.clone());
            match owner {
                Owner::Invite(key) => due_invites.push(key),
                Owner::NonInvite(key) => {
                    self.non_invites.remove(&key);
                }
                Owner::Client(branch) => due_clients.push(branch),
                Owner::Dialog(call) => due_dialogs.push(call),
            }
        }

        let mut finished = Vec::new();
        let mut resend: Vec<(&'static str, Transmit)> = Vec::new();
        let mut timeouts: Vec<&'static str> = Vec::new();
        let mut answer = Vec::new();
        for key in due_invites {
            let Some(txn) = self.invites.get_mut(&key) else {
                continue;
            };
            let reliable = txn.peer.transport.reliable();
            let due: Vec<TimerKind> = txn
                .timers
                .iter()
                .filter(|(_, at)| *at <= now)
                .map(|(k, _)| *k)
                .collect();
            txn.timers.retain(|(_, at)| *at > now);
            for kind in due {
                match kind {
                    TimerKind::G => {
                        if let InviteState::Completed { attempt } = &mut txn.state {
                            *attempt += 1;
                            if let Some(bytes) = &txn.last_response {
                                resend.push((
                                    "final",
                                    Transmit {
                                        peer: txn.peer,
                                        bytes: bytes.clone(),
                                    },
                                ));
                            }
                            if let Some(d) = timers.duration(TimerKind::G, *attempt, reliable) {
                                txn.timers.push((TimerKind::G, now + d));
                            }
                        }
                    }
                    TimerKind::AnswerDelay => {
                        if let InviteState::Ringing { sdp, local_tag } = &mut txn.state {
                            answer.push((
                                txn.call,
                                key.clone(),
                                std::mem::take(sdp),
                                std::mem::take(local_tag),
                            ));
                        }
                    }
                    TimerKind::H => {
                        if matches!(txn.state, InviteState::Completed { .. }) {
                            timeouts.push("ack_final");
                        }
                        finished.push(key.clone());
                    }
                    _ => finished.push(key.clone()),
                }
            }
        }
        for key in finished {
            if let Some(txn) = self.invites.remove(&key) {
                self.calls.remove(&txn.call);
            }
        }
        for (call, key, sdp, local_tag) in answer {
            self.send_ok(now, call, key, sdp, local_tag);
        }

        let mut outcomes = Vec::new();
        for branch in due_clients {
            let Some(mut txn) = self.clients.remove(&branch) else {
                continue;
            };
            let step = txn.on_timeout(now, &timers);
            let label = txn.method_label();
            if let Some(bytes) = step.send {
                resend.push((
                    label,
                    Transmit {
                        peer: txn.peer,
                        bytes,
                    },
                ));
            }
            if step.outcome == Some(Outcome::Timeout) {
                timeouts.push(label);
            }
            if let Some(outcome) = step.outcome {
                outcomes.push((txn.purpose, branch.clone(), outcome));
            }
            if !step.finished {
                self.clients.insert(branch, txn);
            }
        }

        let mut no_ack = Vec::new();
        let mut expired = Vec::new();
        let mut refresh = Vec::new();
        let mut ping = Vec::new();
        for call in due_dialogs {
            let Some(dialog) = self.dialogs.get_mut(&call) else {
                continue;
            };
            if let Some(session) = dialog.session {
                if session.expires_at <= now {
                    expired.push(call);
                    continue;
                }
                if session.refresh_at.is_some_and(|at| at <= now) {
                    refresh.push(call);
                }
            }
            if dialog.ping_at.is_some_and(|at| at <= now) {
                dialog.ping_at = None;
                ping.push(call);
            }
            let Some(u) = dialog.unacked.as_mut() else {
                continue;
            };
            if u.give_up_at <= now {
                no_ack.push(call);
            } else if u.retransmit_at.is_some_and(|at| at <= now) {
                u.attempt += 1;
                resend.push((
                    "2xx",
                    Transmit {
                        peer: dialog.peer,
                        bytes: u.response.clone(),
                    },
                ));
                u.retransmit_at = timers
                    .duration(TimerKind::Retransmit2xx, u.attempt, false)
                    .map(|d| now + d);
            }
        }
        for (kind, transmit) in resend {
            self.count(Count::Retransmission(kind));
            self.outputs.push_back(Output::Transmit(transmit));
        }
        for kind in timeouts {
            self.count(Count::Timeout(kind));
        }
        for call in no_ack {
            self.count(Count::Timeout("ack"));
            self.hangup(now, call);
            self.outputs
                .push_back(Output::Event(Event::CallEnded(call, EndReason::AckTimeout)));
        }
        for call in expired {
            self.count(Count::Timeout("session"));
            self.hangup(now, call);
            self.outputs.push_back(Output::Event(Event::CallEnded(
                call,
                EndReason::SessionExpired,
            )));
        }
        for (purpose, branch, outcome) in outcomes {
            self.on_outcome(now, purpose, &branch, outcome);
        }
        for call in refresh {
            self.send_refresh(now, call);
        }
        for call in ping {
            let extra = vec![("Accept", "application/sdp".to_string())];
            self.send_request(
                now,
                call,
                Purpose::Ping(call),
                Method::Options,
                extra,
                Vec::new(),
            );
        }
        self.settle();
    }

    /// RFC 3261 8.2.2.3 and 8.2.3: a `Require` we do not support gets 420; an INVITE whose body
    /// is not SDP gets 415, and one whose `Accept` excludes SDP gets 406.
    fn refuse_extensions_or_body(&self, request: &Message) -> Option<Message> {
        let method = request.method()?;
        if *method == Method::Cancel {
            return None;
        }
        let unsupported: Vec<&str> = request
            .headers
            .all("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| t.eq_ignore_ascii_case(s)))
            .collect();
        if !unsupported.is_empty() {
            let mut response = self.response(request, 420, "Bad Extension", None);
            response.headers.push("Unsupported", unsupported.join(", "));
            return Some(response);
        }
        if matches!(method, Method::Invite | Method::Update)
            && session_timer::negotiate(request, 0, self.config.min_session_expires)
                == Negotiation::TooSmall
        {
            let mut response = self.response(request, 422, "Session Interval Too Small", None);
            response
                .headers
                .push("Min-SE", self.config.min_session_expires.to_string());
            return Some(response);
        }
        if *method != Method::Invite {
            return None;
        }
        let is_sdp = |media: &str| {
            let media = media.split(';').next().unwrap_or_default().trim();
            ["application/sdp", "application/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
        };
        let content_is_sdp = request.headers.get("Content-Type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/sdp")
        });
        if !request.body.is_empty() && !content_is_sdp {
            let mut response = self.response(request, 415, "Unsupported Media Type", None);
            response.headers.push("Accept", "application/sdp");
            return Some(response);
        }
        let accepts: Vec<&str> = request
            .headers
            .all("Accept")
            .flat_map(|v| v.split(','))
            .collect();
        if !accepts.is_empty() && !accepts.iter().any(|a| is_sdp(a)) {
            let mut response = self.response(request, 406, "Not Acceptable", None);
            response.headers.push("Accept", "application/sdp");
            return Some(response);
        }
        None
    }

    fn send_response(&mut self, peer: Peer, response: Message) {
        self.count(Count::ResponseOut(response.status().unwrap_or(500)));
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            bytes: response.to_bytes(),
        }));
    }

    fn count(&mut self, count: Count) {
        self.outputs.push_back(Output::Count(count));
    }

    /// Builds a response to `request` (RFC 3261 8.2.6): copies Via, From, To, Call-ID and CSeq,
    /// and adds our To-tag when given and the request had none.
    fn response(
        &self,
        request: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Message {
        let mut headers = Headers::default();
        for via in request.headers.all("Via") {
            headers.push("Via", via.to_string());
        }
        for name in ["From", "Call-ID", "CSeq"] {
            if let Some(value) = request.headers.get(name) {
                headers.push(name, value.to_string());
            }
        }
        if let Some(to) = request.headers.get("To") {
            let has_tag = NameAddr::parse(to).ok().and_then(|n| n.tag).is_some();
            match to_tag {
                Some(tag) if !has_tag => headers.push("To", format!("{to};tag={tag}")),
                _ => headers.push("To", to.to_string()),
            }
        }
        headers.push("Server", self.config.user_agent.clone());
        if matches!(code, 405 | 501) || (code == 200 && request.method() == Some(&Method::Options))
        {
            headers.push("Allow", ALLOW);
        }
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers,
            body: Vec::new(),
        }
    }

    fn random_token(&mut self) -> String {
        // xorshift64*: tags and branches need uniqueness, not secrecy.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        format!("{:016x}", x.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }
}

/// Where responses to a request go (RFC 3261 18.2.2, RFC 3581): over TCP the same connection;
/// over UDP the source address, with the source port when the Via carries `rport` and the
/// sent-by port (5060 by default) otherwise. `maddr` is ignored: answering an address named in
/// a header would let anyone aim our responses at a third party.
fn reply_peer(peer: Peer, request: &Message) -> Peer {
    if peer.transport != Transport::Udp {
        return peer;
    }
    match request.top_via() {
        Some(via) if !via.rport => {
            let port = via.sent_by_port().unwrap_or(5060);
            Peer {
                remote: SocketAddr::new(peer.remote.ip(), port),
                ..peer
            }
        }
        _ => peer,
    }
}

/// Copies the request's Record-Route values into a dialog-creating response (RFC 3261 12.1.1).
fn copy_record_route(request: &Message, response: &mut Message) {
    for value in request.headers.all("Record-Route") {
        response.headers.push("Record-Route", value.to_string());
    }
}

fn contact(peer: Peer) -> String {
    contact_as("roundtable", peer)
}

/// Our Contact with user part `user`, for the transport `peer` uses.
fn contact_as(user: &str, peer: Peer) -> String {
    match peer.transport {
        Transport::Udp => format!("<sip:{user}@{}>", peer.local),
        Transport::Tcp => format!("<sip:{user}@{};transport=tcp>", peer.local),
        Transport::Tls => format!("<sips:{user}@{}>", peer.local),
    }
}

fn txn_key(request: &Message) -> Option<TxnKey> {
    let via = request.top_via()?;
    let method = match request.method()? {
        Method::Ack => "INVITE".to_string(),
        other => other.as_str().to_string(),
    };
    // RFC 2543 peers lack the magic cookie: Call-ID and CSeq number alone then identify it.
    let branch = via
        .branch
        .filter(|b| b.starts_with("z9hG4bK"))
        .unwrap_or_default();
    let call_id = request.call_id()?.to_string();
    let cseq = request.cseq()?.number;
    Some(TxnKey {
        branch,
        sent_by: via.sent_by,
        method,
        call_id,
        cseq,
    })
}

/// The header section `head` (without the blank line) with Content-Length set to 0.
fn strip_content_length(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 24);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests;
