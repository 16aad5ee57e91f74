//! The tokio driver around [`Endpoint`]: UDP sockets, TCP listeners and connections, the timer.
//!
//! One task owns the endpoint. Socket tasks forward what they read to it over a channel, and it
//! writes to UDP sockets directly and to TCP connections through each connection's writer
//! channel. The application sees calls through [`CallHandler`] (called on the driver task, so it
//! must not block) and acts on them through [`SipHandle`].
//!
//! Stream connections: a request goes over the connection its dialog came in on while that is
//! open; otherwise over an open connection to the same address (reuse), otherwise over a new TCP
//! connection the driver opens. A call we place over TCP or TLS opens its connection first (TLS:
//! the handshake checks the server's certificate for the name the call gives) and its INVITE
//! goes once it is up. A dialog whose TLS connection closed can no longer be reached (the name
//! to check is not known there). A connection that carries no transaction or call
//! and no bytes for the idle timeout is closed; CRLF keep-alives (RFC 5626 4.4.1) count as
//! traffic and a double CRLF is answered with a single one.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::endpoint::{
    CallKey, EndReason, Endpoint, EndpointConfig, Event, FlowId, IncomingCall, OutgoingCall,
    OutgoingRegister, Output, Peer, Refer, RegisterOutcome, RegisterRequest, Reoffer, RequestKey,
    Transport,
};
use crate::error::Rejection;
use crate::message::{MAX_MESSAGE_LEN, stream_frame_len};
use crate::metrics::SipMetrics;

/// Most TCP connections held open at once; further connections are closed at accept.
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// Queued outbound messages per TCP connection before the connection is considered stuck.
const TCP_WRITE_QUEUE: usize = 256;
/// How long opening an outbound TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Flow numbers of the connections the driver opens start here (listeners use 1<<48 and up,
/// one block each).
const OUTBOUND_FLOWS: u64 = 1 << 62;

/// Settings of the driver around the endpoint.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Listening sockets.
    pub listen: Vec<ListenAddr>,
    /// The TLS server configuration; required when a listener is TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The TLS client configuration for calls we place over TLS (trust anchors), or why there
    /// is none (those calls then fail with it).
    pub tls_client: Result<Arc<rustls::ClientConfig>, String>,
    /// A stream connection with no transaction, no call and no bytes for this long is closed.
    pub tcp_idle_timeout: Duration,
}

/// A configured listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    /// UDP or TCP.
    pub transport: Transport,
    /// Address and port to bind.
    pub addr: SocketAddr,
}

/// What the application learns about calls. Called on the driver task: keep it short and never
/// block (forward to the application's own task). The application answers INVITEs and
/// re-offers later, through [`SipHandle`]: until then the INVITE waits in Proceeding.
pub trait CallHandler: Send + Sync + 'static {
    /// A new INVITE: answer with [`SipHandle::accept`] or [`SipHandle::reject`].
    fn incoming(&self, call: IncomingCall);
    /// The caller acknowledged our answer.
    fn confirmed(&self, call: CallKey);
    /// The call ended from the remote side or by timeout.
    fn ended(&self, call: CallKey, reason: EndReason);
    /// A new offer in an answered call (re-INVITE or UPDATE; hold, resume, codec change):
    /// answer with [`SipHandle::answer_reoffer`]. An empty offer asks for our current SDP.
    fn reoffer(&self, offer: Reoffer);
    /// An INFO body in an answered call (DTMF relay); already answered 200.
    fn info(&self, call: CallKey, content_type: &str, body: &[u8]);
    /// A call placed with [`SipHandle::dial`] got a provisional response (180, 183...).
    fn progress(&self, call: CallKey, code: u16);
    /// A call placed with [`SipHandle::dial`] was answered (`body`: the SDP answer).
    fn answered(&self, call: CallKey, body: Vec<u8>);
    /// A call placed with [`SipHandle::dial`] failed: its final response's code and reason,
    /// and for a 3xx where to call instead.
    fn failed(&self, call: CallKey, code: u16, reason: String, redirect: Option<String>);
    /// An in-dialog REFER: answer it with [`SipHandle::answer_refer`].
    fn refer(&self, refer: Refer);
    /// A REGISTER sent with [`SipHandle::register`] ended (`cseq`: the number it last used).
    fn registered(&self, key: RequestKey, cseq: u32, outcome: RegisterOutcome);
}

/// A call to place: where to, as whom, with which offer.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The address of the first hop (resolved), and the transport to it.
    pub target: SocketAddr,
    /// UDP, TCP or TLS.
    pub transport: Transport,
    /// For TLS: the name the server's certificate must carry (RFC 5922: the host of the URI
    /// we call, or of the proxy we send through).
    pub server_name: String,
    /// The Request-URI.
    pub request_uri: String,
    /// Our From, without tag.
    pub from: String,
    /// The To.
    pub to: String,
    /// Route headers (an outbound proxy), in order.
    pub route: Vec<String>,
    /// The SDP offer.
    pub body: Vec<u8>,
    /// Digest credentials for a 401/407.
    pub credentials: Option<crate::digest::User>,
}

/// A REGISTER to send: where to, for which address of record, binding how long.
#[derive(Debug, Clone)]
pub struct Register {
    /// The address of the registrar or outbound proxy (resolved), and the transport to it.
    pub target: SocketAddr,
    /// UDP, TCP or TLS.
    pub transport: Transport,
    /// For TLS: the name the server's certificate must carry.
    pub server_name: String,
    /// The REGISTER itself (its `peer` is filled in by the driver).
    pub request: RegisterRequest,
}

/// A request that needs a connection before it can go.
#[derive(Debug)]
enum Pending {
    Dial(CallKey, Box<Dial>),
    Register(RequestKey, Box<Register>),
}

impl Pending {
    /// Transport, address and (TLS) server name of its first hop.
    fn hop(&self) -> (Transport, SocketAddr, &str) {
        match self {
            Pending::Dial(_, d) => (d.transport, d.target, &d.server_name),
            Pending::Register(_, r) => (r.transport, r.target, &r.server_name),
        }
    }
}

/// Commands to the driver task.
#[derive(Debug)]
enum Command {
    Accept(CallKey, Vec<u8>),
    Reject(CallKey, Rejection),
    AnswerReoffer(CallKey, Result<Vec<u8>, Rejection>),
    Hangup(CallKey),
    Send(Pending),
    Trust(Vec<IpAddr>),
    AnswerRefer(CallKey, Result<(), Rejection>),
    NotifyRefer {
        call: CallKey,
        code: u16,
        reason: String,
        done: bool,
    },
    ActiveCalls(tokio::sync::oneshot::Sender<usize>),
}

/// A cloneable handle for sending commands to a running SIP driver.
#[derive(Clone, Debug)]
pub struct SipHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// Numbers the calls we place ([`CallKey::outgoing`]).
    next_dial: Arc<std::sync::atomic::AtomicU64>,
}

impl SipHandle {
    /// Answers a pending INVITE with 200 OK carrying our SDP.
    pub fn accept(&self, call: CallKey, sdp: Vec<u8>) {
        let _ = self.commands.send(Command::Accept(call, sdp));
    }

    /// Refuses a pending INVITE.
    pub fn reject(&self, call: CallKey, rejection: Rejection) {
        let _ = self.commands.send(Command::Reject(call, rejection));
    }

    /// Answers a re-offer (`id` from [`Reoffer::id`]): our SDP, or a refusal that leaves the
    /// session as it was.
    pub fn answer_reoffer(&self, id: CallKey, answer: Result<Vec<u8>, Rejection>) {
        let _ = self.commands.send(Command::AnswerReoffer(id, answer));
    }

    /// Places a call; its progress comes to the [`CallHandler`] under the returned key.
    /// [`SipHandle::hangup`] cancels it before the answer and ends it after.
    pub fn dial(&self, dial: Dial) -> CallKey {
        let n = self
            .next_dial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let call = CallKey::outgoing(n);
        let _ = self
            .commands
            .send(Command::Send(Pending::Dial(call, Box::new(dial))));
        call
    }

    /// Sends a REGISTER; its outcome comes through [`CallHandler::registered`] under the
    /// returned key.
    pub fn register(&self, register: Register) -> RequestKey {
        let key = RequestKey(
            self.next_dial
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let _ = self
            .commands
            .send(Command::Send(Pending::Register(key, Box::new(register))));
        key
    }

    /// Answers a REFER: `Ok` accepts it (202), `Err` refuses it.
    pub fn answer_refer(&self, id: CallKey, answer: Result<(), Rejection>) {
        let _ = self.commands.send(Command::AnswerRefer(id, answer));
    }

    /// Reports a REFER's progress to the caller of `call` (a NOTIFY with `SIP/2.0 code
    /// reason`); `done` for the final outcome.
    pub fn notify_refer(&self, call: CallKey, code: u16, reason: String, done: bool) {
        let _ = self.commands.send(Command::NotifyRefer {
            call,
            code,
            reason,
            done,
        });
    }

    /// Trusts `addresses` (the trunks' next hops) like `sip.trusted_proxies`, replacing the last
    /// set: they pass `sip.allow` and get the trusted rate limits.
    pub fn trust(&self, addresses: Vec<IpAddr>) {
        let _ = self.commands.send(Command::Trust(addresses));
    }

    /// Ends an answered call with BYE, refuses a pending one, or cancels one we place.
    pub fn hangup(&self, call: CallKey) {
        let _ = self.commands.send(Command::Hangup(call));
    }

    /// How many calls the endpoint holds (pending or up); `None` once the driver stopped.
    pub async fn active_calls(&self) -> Option<usize> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(Command::ActiveCalls(tx)).ok()?;
        rx.await.ok()
    }
}

/// A message read by a socket task.
struct Inbound {
    peer: Peer,
    bytes: Vec<u8>,
}

/// How the driver writes to a flow.
enum FlowWriter {
    Udp(Arc<UdpSocket>),
    /// A TCP or TLS connection to `remote`.
    Stream {
        transport: Transport,
        remote: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
        /// Our end, once connected (an accepted connection knows it at once).
        local: Option<SocketAddr>,
        /// For a TLS connection we opened: the name its certificate was checked against.
        server_name: Option<String>,
    },
}

/// What connection tasks tell the driver.
enum FlowUpdate {
    /// A connection opened (or, one we open, began connecting).
    Opened(FlowId, FlowWriter),
    /// A connection we open is up (TLS: handshake done), from `local`.
    Connected(FlowId, SocketAddr),
    /// A connection we open could not be made: why.
    ConnectFailed(FlowId, String),
    /// A connection closed.
    Closed(FlowId),
    /// A connection saw no bytes for the idle timeout: close it unless calls use it.
    Idle(FlowId),
}

/// The addresses actually bound, in the order configured (port 0 resolved).
pub type BoundAddrs = Vec<ListenAddr>;

/// Loads a PEM certificate chain and private key into a TLS server configuration.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Binds every listener and spawns the driver. Returns the handle and the bound addresses.
pub async fn spawn(
    transport: TransportConfig,
    config: EndpointConfig,
    handler: Arc<dyn CallHandler>,
    metrics: SipMetrics,
    shutdown: CancellationToken,
) -> io::Result<(SipHandle, BoundAddrs, tokio::task::JoinHandle<()>)> {
    let TransportConfig {
        listen,
        tls,
        tls_client,
        tcp_idle_timeout,
    } = transport;
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(4096);
    let (flow_tx, flow_rx) = mpsc::unbounded_channel::<FlowUpdate>();
    let mut flows = HashMap::new();
    let mut bound = Vec::new();
    let mut next_flow = 0u64;
    for l in &listen {
        match l.transport {
            Transport::Udp => {
                let socket = Arc::new(UdpSocket::bind(l.addr).await?);
                let local = socket.local_addr()?;
                let flow = FlowId(next_flow);
                next_flow += 1;
                flows.insert(flow, FlowWriter::Udp(socket.clone()));
                bound.push(ListenAddr {
                    transport: Transport::Udp,
                    addr: local,
                });
                tokio::spawn(udp_reader(
                    socket,
                    flow,
                    inbound_tx.clone(),
                    shutdown.clone(),
                ));
            }
            Transport::Tcp | Transport::Tls => {
                let acceptor = match (l.transport, &tls) {
                    (Transport::Tls, Some(config)) => {
                        Some(tokio_rustls::TlsAcceptor::from(config.clone()))
                    }
                    (Transport::Tls, None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a TLS listener needs a certificate",
                        ));
                    }
                    _ => None,
                };
                let listener = TcpListener::bind(l.addr).await?;
                bound.push(ListenAddr {
                    transport: l.transport,
                    addr: listener.local_addr()?,
                });
                // Each stream listener numbers its connections from its own base, far above the
                // UDP socket numbers.
                let links = Links {
                    inbound: inbound_tx.clone(),
                    flows: flow_tx.clone(),
                    shutdown: shutdown.clone(),
                    idle: tcp_idle_timeout,
                };
                tokio::spawn(stream_acceptor(
                    listener,
                    acceptor,
                    (next_flow + 1) << 48,
                    links,
                ));
                next_flow += 1;
            }
        }
    }
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let links = Links {
        inbound: inbound_tx,
        flows: flow_tx,
        shutdown: shutdown.clone(),
        idle: tcp_idle_timeout,
    };
    let driver = Driver {
        endpoint: Endpoint::new(config),
        flows,
        streams: HashMap::new(),
        waiting: HashMap::new(),
        tls_client,
        next_outbound: OUTBOUND_FLOWS,
        links,
        handler,
        metrics,
        clock_origin: (Instant::now(), std::time::Instant::now()),
    };
    let task = tokio::spawn(driver.run(inbound_rx, flow_rx, commands_rx, shutdown));
    Ok((
        SipHandle {
            next_dial: Arc::default(),
            commands: commands_tx,
        },
        bound,
        task,
    ))
}

/// What a connection task needs to talk to the driver.
#[derive(Clone)]
struct Links {
    inbound: mpsc::Sender<Inbound>,
    flows: mpsc::UnboundedSender<FlowUpdate>,
    shutdown: CancellationToken,
    idle: Duration,
}

struct Driver {
    endpoint: Endpoint,
    flows: HashMap<FlowId, FlowWriter>,
    /// Open stream connections by (transport, remote address), for reuse.
    streams: HashMap<(Transport, SocketAddr), FlowId>,
    /// Requests (calls we place, REGISTERs) waiting for a connection being opened, by its flow.
    waiting: HashMap<FlowId, Vec<Pending>>,
    /// Trust anchors for the TLS connections we open.
    tls_client: Result<Arc<rustls::ClientConfig>, String>,
    next_outbound: u64,
    links: Links,
    handler: Arc<dyn CallHandler>,
    metrics: SipMetrics,
    /// Maps tokio time (pausable in tests) onto the std `Instant` the core takes.
    clock_origin: (Instant, std::time::Instant),
}

impl Driver {
    fn now(&self) -> std::time::Instant {
        self.clock_origin.1 + (Instant::now() - self.clock_origin.0)
    }

    fn to_tokio(&self, at: std::time::Instant) -> Instant {
        self.clock_origin.0 + at.saturating_duration_since(self.clock_origin.1)
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut flow_updates: mpsc::UnboundedReceiver<FlowUpdate>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        loop {
            let deadline = self.endpoint.poll_timeout().map(|at| self.to_tokio(at));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(update) = flow_updates.recv() => self.update_flow(update),
                Some(message) = inbound.recv() => {
                    // A connection's `Opened` is queued before anything it reads: take it first,
                    // so an answer never finds its connection unknown.
                    while let Ok(update) = flow_updates.try_recv() {
                        self.update_flow(update);
                    }
                    let now = self.now();
                    self.endpoint.handle_message(now, message.peer, &message.bytes);
                }
                Some(command) = commands.recv() => self.apply(command),
                () = sleep => {
                    let now = self.now();
                    self.endpoint.handle_timeout(now);
                }
                () = shutdown.cancelled() => {
                    // Flush what is queued (the BYEs of shutdown) before leaving.
                    while let Ok(command) = commands.try_recv() {
                        self.apply(command);
                    }
                    self.drain_outputs().await;
                    return;
                }
            }
            self.drain_outputs().await;
        }
    }

    async fn drain_outputs(&mut self) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::Transmit(t) => self.transmit(t.peer, t.bytes).await,
                Output::Count(c) => self.metrics.record(c),
                Output::Event(event) => self.deliver(event),
            }
        }
    }

    fn apply(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Accept(call, sdp) => self.endpoint.accept(now, call, sdp),
            Command::Reject(call, rejection) => self.endpoint.reject(now, call, rejection),
            Command::AnswerReoffer(id, answer) => self.endpoint.answer_reoffer(now, id, answer),
            Command::Hangup(call) => self.endpoint.hangup(now, call),
            Command::Send(pending) => self.send_out(now, pending),
            Command::Trust(addresses) => self.endpoint.set_trusted_addresses(addresses),
            Command::AnswerRefer(id, answer) => self.endpoint.answer_refer(now, id, answer),
            Command::NotifyRefer {
                call,
                code,
                reason,
                done,
            } => self.endpoint.notify_refer(now, call, code, &reason, done),
            Command::ActiveCalls(reply) => {
                let _ = reply.send(self.endpoint.active_calls());
            }
        }
    }

    fn deliver(&mut self, event: Event) {
        match event {
            Event::IncomingCall(call) => self.handler.incoming(call),
            Event::CallConfirmed(call) => self.handler.confirmed(call),
            Event::Info(info) => self.handler.info(info.call, &info.content_type, &info.body),
            Event::Reoffer(offer) => self.handler.reoffer(offer),
            Event::CallEnded(call, reason) => self.handler.ended(call, reason),
            Event::Progress { call, code } => self.handler.progress(call, code),
            Event::Answered { call, body } => self.handler.answered(call, body),
            Event::Failed {
                call,
                code,
                reason,
                redirect,
            } => self.handler.failed(call, code, reason, redirect),
            Event::Refer(refer) => self.handler.refer(refer),
            Event::Registered { key, cseq, outcome } => self.handler.registered(key, cseq, outcome),
        }
    }

    /// Sends a call we place or a REGISTER: over the UDP socket of the target's address
    /// family, or over a TCP or TLS connection to the target (one already open, else a new
    /// one; the request goes once it is up, so its Via and Contact name our real end of it).
    fn send_out(&mut self, now: std::time::Instant, pending: Pending) {
        let (transport, target, _) = pending.hop();
        if transport != Transport::Udp {
            return self.send_over_stream(now, pending);
        }
        let socket = self.flows.iter().find_map(|(flow, writer)| match writer {
            FlowWriter::Udp(socket) => socket
                .local_addr()
                .ok()
                .filter(|local| local.is_ipv4() == target.is_ipv4())
                .map(|local| (*flow, local)),
            FlowWriter::Stream { .. } => None,
        });
        let Some((flow, bound)) = socket else {
            return self.refuse(pending, format!("no UDP SIP socket for {target}"));
        };
        let local = route_source(bound, target);
        self.start(now, pending, flow, local);
    }

    /// Over TCP or TLS: reuses an open connection to the target (for TLS, one we opened for
    /// the same server name), else opens one.
    fn send_over_stream(&mut self, now: std::time::Instant, pending: Pending) {
        let (transport, target, name) = pending.hop();
        let open =
            self.streams
                .get(&(transport, target))
                .and_then(|flow| match self.flows.get(flow) {
                    Some(FlowWriter::Stream {
                        local, server_name, ..
                    }) if transport == Transport::Tcp || server_name.as_deref() == Some(name) => {
                        Some((*flow, *local))
                    }
                    _ => None,
                });
        match open {
            Some((flow, Some(local))) => self.start(now, pending, flow, local),
            Some((flow, None)) => self.waiting.entry(flow).or_default().push(pending),
            None => {
                let name = (transport == Transport::Tls).then(|| name.to_string());
                match self.connect(transport, target, name) {
                    Ok((flow, _)) => self.waiting.entry(flow).or_default().push(pending),
                    Err(reason) => self.refuse(pending, reason),
                }
            }
        }
    }

    /// Hands a request to the endpoint, over `flow` from `local`.
    fn start(
        &mut self,
        now: std::time::Instant,
        pending: Pending,
        flow: FlowId,
        local: SocketAddr,
    ) {
        let (transport, remote, _) = pending.hop();
        let peer = Peer {
            transport,
            remote,
            local,
            flow,
        };
        match pending {
            Pending::Dial(call, dial) => {
                let dial = *dial;
                let outgoing = OutgoingCall {
                    peer,
                    request_uri: dial.request_uri,
                    from: dial.from,
                    to: dial.to,
                    route: dial.route,
                    body: dial.body,
                    credentials: dial.credentials,
                };
                self.endpoint.dial(now, call, outgoing);
            }
            Pending::Register(key, register) => {
                let outgoing = OutgoingRegister {
                    peer,
                    request: register.request,
                };
                self.endpoint.register(now, key, outgoing);
            }
        }
    }

    /// A request that cannot go (no socket, no connection): it fails as a 503 with `reason`.
    fn refuse(&self, pending: Pending, reason: String) {
        match pending {
            Pending::Dial(call, _) => self.handler.failed(call, 503, reason, None),
            Pending::Register(key, register) => {
                let outcome = RegisterOutcome::Failed {
                    code: 503,
                    reason,
                    min_expires: None,
                };
                self.handler.registered(key, register.request.cseq, outcome);
            }
        }
    }

    fn update_flow(&mut self, update: FlowUpdate) {
        match update {
            FlowUpdate::Connected(flow, at) => {
                if let Some(FlowWriter::Stream { local, .. }) = self.flows.get_mut(&flow) {
                    *local = Some(at);
                }
                let now = self.now();
                for pending in self.waiting.remove(&flow).unwrap_or_default() {
                    self.start(now, pending, flow, at);
                }
            }
            FlowUpdate::ConnectFailed(flow, reason) => {
                for pending in self.waiting.remove(&flow).unwrap_or_default() {
                    let (transport, target, _) = pending.hop();
                    let reason = format!("{transport:?} connection to {target} failed: {reason}");
                    self.refuse(pending, reason);
                }
            }
            FlowUpdate::Opened(flow, writer) => {
                if let FlowWriter::Stream {
                    transport, remote, ..
                } = &writer
                {
                    self.streams.insert((*transport, *remote), flow);
                }
                self.flows.insert(flow, writer);
            }
            FlowUpdate::Closed(flow) => self.forget_flow(flow),
            FlowUpdate::Idle(flow) => {
                if !self.endpoint.uses_flow(flow) {
                    // Dropping the writer ends the connection task.
                    self.forget_flow(flow);
                }
            }
        }
    }

    fn forget_flow(&mut self, flow: FlowId) {
        for pending in self.waiting.remove(&flow).unwrap_or_default() {
            let (transport, target, _) = pending.hop();
            self.refuse(
                pending,
                format!("{transport:?} connection to {target} closed"),
            );
        }
        if let Some(FlowWriter::Stream {
            transport, remote, ..
        }) = self.flows.remove(&flow)
            && self.streams.get(&(transport, remote)) == Some(&flow)
        {
            self.streams.remove(&(transport, remote));
        }
    }

    async fn transmit(&mut self, peer: Peer, bytes: Vec<u8>) {
        if peer.transport == Transport::Udp {
            match self.flows.get(&peer.flow) {
                Some(FlowWriter::Udp(socket)) => {
                    if let Err(error) = socket.send_to(&bytes, peer.remote).await {
                        self.metrics.send_failed("udp");
                        warn!(%error, remote = %peer.remote, "SIP UDP send failed");
                    }
                }
                _ => debug!(remote = %peer.remote, "SIP UDP flow unknown; message not sent"),
            }
            return;
        }
        // The flow the message belongs to, else an open connection to the address, else a new one.
        let flow = Some(peer.flow)
            .filter(|f| matches!(self.flows.get(f), Some(FlowWriter::Stream { .. })))
            .or_else(|| self.streams.get(&(peer.transport, peer.remote)).copied());
        // Responses go back over the request's connection only (RFC 3261 18.2.2 would connect
        // to the Via's sent-by; a TCP client that lost its connection retries the request).
        let is_response = bytes.starts_with(b"SIP/2.0 ");
        let writer = match flow.and_then(|f| self.flows.get(&f)) {
            Some(FlowWriter::Stream { writer, .. }) => writer.clone(),
            _ if is_response => {
                self.metrics.send_failed("tcp");
                debug!(remote = %peer.remote, "SIP connection closed before its response; response not sent");
                return;
            }
            _ if peer.transport == Transport::Tcp => {
                match self.connect(Transport::Tcp, peer.remote, None) {
                    Ok((_, writer)) => writer,
                    Err(reason) => {
                        self.metrics.send_failed("tcp");
                        warn!(remote = %peer.remote, %reason, "SIP TCP connection not opened; message lost");
                        return;
                    }
                }
            }
            _ => {
                // Reopening would need the name the peer's certificate must carry, which an
                // in-dialog request no longer knows.
                self.metrics.send_failed("tls");
                warn!(remote = %peer.remote, "SIP TLS connection closed; message lost");
                return;
            }
        };
        if writer.try_send(bytes).is_err() {
            self.metrics.send_failed("tcp");
            warn!(remote = %peer.remote, "SIP TCP connection stuck or closed; message lost");
        }
    }

    /// Opens a TCP connection to `remote` in the background, with a TLS handshake checking
    /// `server_name` when given; messages queue until it is up. Returns its flow and writer,
    /// or why it cannot be opened (TLS without trust anchors, a bad server name).
    fn connect(
        &mut self,
        transport: Transport,
        remote: SocketAddr,
        server_name: Option<String>,
    ) -> Result<(FlowId, mpsc::Sender<Vec<u8>>), String> {
        let tls = match &server_name {
            None => None,
            Some(name) => {
                let config = self.tls_client.clone()?;
                let name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
        };
        self.next_outbound += 1;
        let flow = FlowId(self.next_outbound);
        let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
        let writer = FlowWriter::Stream {
            transport,
            remote,
            writer: tx.clone(),
            local: None,
            server_name,
        };
        self.update_flow(FlowUpdate::Opened(flow, writer));
        let links = self.links.clone();
        let metrics = self.metrics.clone();
        let label = if tls.is_some() { "tls" } else { "tcp" };
        tokio::spawn(async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let stream = tokio::net::TcpStream::connect(remote)
                    .await
                    .map_err(|e| e.to_string())?;
                let local = stream.local_addr().map_err(|e| e.to_string())?;
                Ok::<_, String>((stream, local))
            })
            .await
            .unwrap_or_else(|_| Err("connect timed out".into()));
            let peer = |local| Peer {
                transport,
                remote,
                local,
                flow,
            };
            match (connected, tls) {
                (Ok((stream, local)), None) => {
                    debug!(%remote, "SIP TCP connection opened");
                    let _ = links.flows.send(FlowUpdate::Connected(flow, local));
                    stream_connection(stream, peer(local), rx, &links).await;
                }
                (Ok((stream, local)), Some((connector, name))) => {
                    match tokio::time::timeout(
                        TLS_HANDSHAKE_TIMEOUT,
                        connector.connect(name, stream),
                    )
                    .await
                    {
                        Ok(Ok(tls_stream)) => {
                            debug!(%remote, "SIP TLS connection opened");
                            let _ = links.flows.send(FlowUpdate::Connected(flow, local));
                            stream_connection(tls_stream, peer(local), rx, &links).await;
                        }
                        Ok(Err(error)) => {
                            metrics.send_failed(label);
                            warn!(%error, %remote, "SIP TLS handshake failed");
                            let reason = format!("TLS handshake: {error}");
                            let _ = links.flows.send(FlowUpdate::ConnectFailed(flow, reason));
                        }
                        Err(_) => {
                            metrics.send_failed(label);
                            warn!(%remote, "SIP TLS handshake timed out");
                            let reason = "TLS handshake timed out".to_string();
                            let _ = links.flows.send(FlowUpdate::ConnectFailed(flow, reason));
                        }
                    }
                }
                (Err(reason), _) => {
                    metrics.send_failed(label);
                    warn!(%reason, %remote, "SIP {label} connect failed; queued messages lost");
                    let _ = links.flows.send(FlowUpdate::ConnectFailed(flow, reason));
                }
            }
            let _ = links.flows.send(FlowUpdate::Closed(flow));
        });
        Ok((flow, tx))
    }
}

/// The TLS client configuration for the connections we open: trust anchors from `ca` (a PEM
/// file), or the system's roots when `None`.
pub fn tls_client_config(
    ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none installed".to_string(), ToString::to_string);
                return Err(format!("no system CA certificates ({why}); set sip.tls_ca"));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
}

/// The local address a message to `remote` leaves from: `bound`, or for a socket bound to the
/// unspecified address, the IP the kernel routes `remote` from (with `bound`'s port). Connecting
/// a UDP socket sends nothing; it only asks the kernel for the route.
pub fn route_source(bound: SocketAddr, remote: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let probe_bind: SocketAddr = match remote.ip() {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let ip = std::net::UdpSocket::bind(probe_bind)
        .and_then(|s| s.connect(remote).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(bound.ip());
    SocketAddr::new(ip, bound.port())
}

async fn udp_reader(
    socket: Arc<UdpSocket>,
    flow: FlowId,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) {
    let bound = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut sources: HashMap<IpAddr, SocketAddr> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        let (len, remote) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => { debug!(%error, "SIP UDP receive error"); continue; }
            },
            () = shutdown.cancelled() => return,
        };
        if sources.len() > 4096 {
            sources.clear();
        }
        let local = *sources
            .entry(remote.ip())
            .or_insert_with(|| route_source(bound, remote));
        let peer = Peer {
            transport: Transport::Udp,
            remote,
            local,
            flow,
        };
        if inbound
            .send(Inbound {
                peer,
                bytes: buf[..len].to_vec(),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn stream_acceptor(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    first_flow: u64,
    links: Links,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut next = first_flow;
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(error) => { debug!(%error, "SIP TCP accept error"); continue; }
            },
            () = links.shutdown.cancelled() => return,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%remote, "SIP TCP connection limit reached; closing");
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        next += 1;
        let flow = FlowId(next);
        let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
        let _ = links.flows.send(FlowUpdate::Opened(
            flow,
            FlowWriter::Stream {
                transport,
                remote,
                writer: tx,
                local: Some(local),
                server_name: None,
            },
        ));
        let peer = Peer {
            transport,
            remote,
            local,
            flow,
        };
        let (links, tls) = (links.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => stream_connection(stream, peer, rx, &links).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => stream_connection(tls_stream, peer, rx, &links).await,
                        Ok(Err(error)) => debug!(%error, %remote, "TLS handshake failed"),
                        Err(_) => debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
            let _ = links.flows.send(FlowUpdate::Closed(flow));
            drop(permit);
        });
    }
}

/// Reads framed SIP messages from a TCP or TLS stream and writes what the driver queues for it,
/// until either side closes, framing is lost, the driver drops the writer (idle), or shutdown.
async fn stream_connection<S>(
    stream: S,
    peer: Peer,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    links: &Links,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut idle_at = Instant::now() + links.idle;
    loop {
        tokio::select! {
            r = reader.read(&mut chunk) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                idle_at = Instant::now() + links.idle;
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                    if buf[..skip].windows(4).any(|w| w == b"\r\n\r\n") {
                        // RFC 5626 4.4.1 keep-alive ping: answer with a pong.
                        if writer.write_all(b"\r\n").await.is_err() { return; }
                    }
                    buf.drain(..skip);
                    match stream_frame_len(&buf) {
                        Ok(Some(len)) => {
                            let bytes: Vec<u8> = buf.drain(..len).collect();
                            if links.inbound.send(Inbound { peer, bytes }).await.is_err() { return; }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            // Framing is lost for good on a stream: close it (RFC 3261 18.3).
                            debug!(%error, remote = %peer.remote, "SIP TCP framing error; closing");
                            return;
                        }
                    }
                }
            }
            message = outbound.recv() => {
                // `None`: the driver forgot this connection (idle, unused): close it.
                let Some(bytes) = message else { return };
                idle_at = Instant::now() + links.idle;
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() { return; }
            }
            () = tokio::time::sleep_until(idle_at) => {
                idle_at = Instant::now() + links.idle;
                if links.flows.send(FlowUpdate::Idle(peer.flow)).is_err() { return; }
            }
            () = links.shutdown.cancelled() => {
                // Let the driver's last BYEs out before closing.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Ok(bytes) = outbound.try_recv() {
                    let _ = writer.write_all(&bytes).await;
                }
                let _ = writer.flush().await;
                return;
            }
        }
    }
}
