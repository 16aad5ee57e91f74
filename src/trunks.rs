//! The trunks' registrations: one task owns every trunk's [`Registration`] core, sends the
//! REGISTERs they ask for (the registrar looked up in DNS in a task of its own, RFC 3263), feeds
//! back what came of them, and publishes where each stands (`GET /v1/trunks`, metrics, and the
//! trunks' addresses, whose INVITEs are routed on their To user: DID to room).
//!
//! ```text
//!  timer ─► Registration::handle_timeout ─► Send ─► DNS task ─► Located ─► SipHandle::register
//!  SIP driver ─► Registered(key, cseq, outcome) ─► Registration::handle_outcome ─► publish
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roundtable_api::TrunkStatus;
use roundtable_sip::endpoint::{RegisterOutcome, RegisterRequest, RequestKey};
use roundtable_sip::locate::{self, Locator, Target};
use roundtable_sip::registration::{Registration, Send};
use roundtable_sip::transport::{Register, SipHandle};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Trunk;
use crate::metrics::TrunkMetrics;
use crate::time::WallClock;

/// What the trunks publish.
#[derive(Debug, Clone, Default)]
pub struct TrunkView {
    /// Each trunk's registration, in configuration order.
    pub status: Vec<TrunkStatus>,
    /// The addresses each trunk's requests go to (its registrar or proxy, as last resolved):
    /// INVITEs from them came through the trunk.
    pub addresses: HashMap<IpAddr, String>,
}

/// Input to the trunks' task.
#[derive(Debug)]
pub enum Command {
    /// A REGISTER ended (from the SIP driver).
    Registered(RequestKey, u32, RegisterOutcome),
    /// A trunk's next hop was looked up: for the REGISTER `send`, or (none) for a trunk that
    /// does not register, whose addresses are learnt at start.
    Located(usize, Option<Send>, Result<Vec<Target>, String>),
}

/// The sending side of the trunks' command channel.
pub type Commands = mpsc::UnboundedSender<Command>;

/// A trunk and its registration (none for a trunk that does not register).
struct Entry {
    trunk: Trunk,
    registration: Option<Registration>,
    /// The registration's Call-ID, the same for every REGISTER (RFC 3261 §10.2.4).
    call_id: String,
    /// The addresses its next hop resolved to last.
    addresses: Vec<IpAddr>,
    /// For a trunk that does not register: when its next hop is looked up again (a
    /// registering trunk's is looked up for every REGISTER).
    resolve_at: Option<Instant>,
}

/// How often a trunk that does not register has its next hop looked up again (its addresses
/// route calls by DID and are trusted).
const RESOLVE_EVERY: Duration = Duration::from_secs(300);

/// The task's state.
struct TrunksTask {
    entries: Vec<Entry>,
    sip: SipHandle,
    locator: Locator,
    commands: Commands,
    /// REGISTERs out, to their trunk.
    keys: HashMap<RequestKey, usize>,
    /// REGISTERs waiting for their registrar's lookup.
    locating: usize,
    metrics: TrunkMetrics,
    clock: Arc<dyn WallClock>,
    published: watch::Sender<TrunkView>,
    events: Arc<crate::events::EventLog>,
}

/// What the task needs.
pub struct TrunkServices {
    /// Sends the REGISTERs.
    pub sip: SipHandle,
    /// Looks registrars up.
    pub locator: Locator,
    /// The trunks' metrics.
    pub metrics: TrunkMetrics,
    /// For `expires_at`.
    pub clock: Arc<dyn WallClock>,
    /// Where the task publishes.
    pub published: watch::Sender<TrunkView>,
    /// Where registration changes go as `trunk_registration` events.
    pub events: Arc<crate::events::EventLog>,
}

/// Starts the task for `trunks`; it takes `commands` (their sender goes to the SIP adapter)
/// and, on `shutdown`, removes its bindings (REGISTER with expiry 0, at most 2 s) and ends.
pub fn spawn(
    trunks: Vec<Trunk>,
    services: TrunkServices,
    commands: (Commands, mpsc::UnboundedReceiver<Command>),
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let now = Instant::now();
    let entries = trunks
        .into_iter()
        .enumerate()
        .map(|(index, trunk)| Entry {
            registration: trunk
                .registration
                .map(|config| Registration::new(now, config, seed(index))),
            call_id: format!("{:016x}-{index}@roundtable", seed(index)),
            addresses: Vec::new(),
            resolve_at: trunk.registration.is_none().then_some(now),
            trunk,
        })
        .collect();
    let task = TrunksTask {
        entries,
        sip: services.sip,
        locator: services.locator,
        commands: commands.0,
        keys: HashMap::new(),
        locating: 0,
        metrics: services.metrics,
        clock: services.clock,
        published: services.published,
        events: services.events,
    };
    task.publish();
    tokio::spawn(task.run(commands.1, shutdown))
}

/// Looks `trunk`'s next hop up in a task of its own; the answer comes back as
/// [`Command::Located`].
fn locate_hop(
    locator: &Locator,
    commands: &Commands,
    index: usize,
    trunk: &Trunk,
    send: Option<Send>,
) {
    let (locator, commands) = (locator.clone(), commands.clone());
    let hop = trunk.next_hop.clone();
    tokio::spawn(async move {
        let targets = locator.locate(&hop).await.map_err(|e| e.to_string());
        let _ = commands.send(Command::Located(index, send, targets));
    });
}

/// A per-process, per-trunk seed for jitter and Call-IDs.
fn seed(index: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(index);
    hasher.finish()
}

impl TrunksTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                Some(command) = commands.recv() => self.apply(command),
                () = sleep_until(deadline) => self.fire(Instant::now()),
                () = shutdown.cancelled() => break,
            }
        }
        // Remove the bindings: one REGISTER with expiry 0 each, answered within 2 s or not.
        let now = Instant::now();
        for entry in &mut self.entries {
            if let Some(registration) = &mut entry.registration {
                registration.stop(now);
            }
        }
        self.fire(now);
        let give_up = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(give_up);
        while !self.keys.is_empty() || self.locating > 0 {
            tokio::select! {
                Some(command) = commands.recv() => {
                    self.apply(command);
                    // A refresh that was out when we stopped is followed by its removal.
                    self.fire(Instant::now());
                }
                () = &mut give_up => break,
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| match &e.registration {
                Some(registration) => registration.poll_timeout(),
                None => e.resolve_at,
            })
            .min()
    }

    /// Sends the REGISTERs that are due (each trunk's next hop is looked up first), and looks
    /// the next hops of trunks that do not register up again when due.
    fn fire(&mut self, now: Instant) {
        for (index, entry) in self.entries.iter_mut().enumerate() {
            if entry.resolve_at.is_some_and(|at| at <= now) {
                entry.resolve_at = Some(now + RESOLVE_EVERY);
                locate_hop(&self.locator, &self.commands, index, &entry.trunk, None);
                continue;
            }
            let Some(send) = entry
                .registration
                .as_mut()
                .and_then(|r| r.handle_timeout(now))
            else {
                continue;
            };
            locate_hop(
                &self.locator,
                &self.commands,
                index,
                &entry.trunk,
                Some(send),
            );
            self.locating += 1;
        }
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Located(index, send, targets) => {
                if send.is_some() {
                    self.locating = self.locating.saturating_sub(1);
                }
                self.located(now, index, send, targets);
            }
            Command::Registered(key, cseq, outcome) => {
                let Some(index) = self.keys.remove(&key) else {
                    return;
                };
                self.outcome(now, index, cseq, &outcome);
            }
        }
    }

    /// The next hop is known (or not): its addresses are trusted and, for a REGISTER, it goes
    /// to the first.
    fn located(
        &mut self,
        now: Instant,
        index: usize,
        send: Option<Send>,
        targets: Result<Vec<Target>, String>,
    ) {
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        let found = match targets {
            Ok(targets) if !targets.is_empty() => Ok(targets),
            Ok(_) => Err("DNS: no targets".to_string()),
            Err(error) => Err(format!("DNS: {error}")),
        };
        if let Ok(targets) = &found {
            let addresses: Vec<IpAddr> = targets.iter().map(|t| t.addr.ip()).collect();
            if addresses != entry.addresses {
                entry.addresses = addresses;
                self.trust_addresses();
            }
        }
        let (send, target) = match (send, found) {
            (Some(send), Ok(targets)) => (send, targets[0].clone()),
            (Some(send), Err(reason)) => return self.unreachable(now, index, send, reason),
            (None, Ok(_)) => return self.publish(),
            (None, Err(reason)) => {
                let name = &self.entries[index].trunk.name;
                warn!(trunk = %name, %reason, "trunk's address not found; its calls are routed by Request-URI");
                return;
            }
        };
        let entry = &self.entries[index];
        let trunk = &entry.trunk;
        let request = RegisterRequest {
            registrar: format!("sip:{}", locate::bracket_ipv6(&trunk.domain)),
            aor: format!(
                "sip:{}@{}",
                trunk.from_user,
                locate::bracket_ipv6(&trunk.domain)
            ),
            contact_user: trunk.from_user.clone(),
            call_id: entry.call_id.clone(),
            cseq: send.cseq,
            expires: send.expires,
            route: trunk.route.iter().cloned().collect(),
            credentials: trunk.credentials.clone(),
        };
        let key = self.sip.register(Register {
            target: target.addr,
            transport: target.transport,
            server_name: locate::uri_host(&trunk.next_hop).unwrap_or_default(),
            request,
        });
        self.keys.insert(key, index);
        self.publish();
    }

    /// Tells the SIP endpoint which addresses are the trunks' (trusted like proxies).
    fn trust_addresses(&self) {
        let all: Vec<IpAddr> = self
            .entries
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        self.sip.trust(all);
    }

    /// The registrar could not be found: the attempt fails as a 503 with `reason`.
    fn unreachable(&mut self, now: Instant, index: usize, send: Send, reason: String) {
        let outcome = RegisterOutcome::Failed {
            code: 503,
            reason,
            min_expires: None,
        };
        self.outcome(now, index, send.cseq, &outcome);
    }

    fn outcome(&mut self, now: Instant, index: usize, cseq: u32, outcome: &RegisterOutcome) {
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        let Some(registration) = entry.registration.as_mut() else {
            return;
        };
        let name = &entry.trunk.name;
        match outcome {
            RegisterOutcome::Granted { expires } => {
                info!(trunk = %name, expires, "trunk registered");
            }
            RegisterOutcome::Failed { code, reason, .. } => {
                let label = match reason.as_str() {
                    r if r.starts_with("DNS:") => "dns".to_string(),
                    r if *code == 503 && r.contains("connection") => "connect".to_string(),
                    _ => code.to_string(),
                };
                self.metrics
                    .register_failures
                    .with_label_values(&[name.as_str(), label.as_str()])
                    .inc();
                warn!(trunk = %name, code, %reason, "trunk REGISTER failed");
            }
        }
        let before = registration.status(now);
        registration.handle_outcome(now, cseq, outcome);
        let after = registration.status(now);
        let changed = (before.registered, before.breaker, &before.last_error)
            != (after.registered, after.breaker, &after.last_error);
        let name = name.clone();
        self.publish();
        if changed && let Some(status) = self.published.borrow().status.get(index) {
            let mut fields = serde_json::Map::new();
            fields.insert("trunk".into(), name.into());
            if let Ok(serde_json::Value::Object(status)) = serde_json::to_value(status) {
                fields.extend(status.into_iter().filter(|(key, _)| key != "name"));
            }
            let at = crate::time::rfc3339(self.clock.now());
            self.events.push("trunk_registration", "", at, fields);
        }
    }

    /// Publishes every trunk's status and addresses, and updates the gauges.
    fn publish(&self) {
        let now = Instant::now();
        let wall = self.clock.now();
        let mut view = TrunkView::default();
        for entry in &self.entries {
            let name = entry.trunk.name.as_str();
            let status = match &entry.registration {
                Some(registration) => {
                    let s = registration.status(now);
                    self.metrics
                        .registered
                        .with_label_values(&[name])
                        .set(i64::from(s.registered));
                    self.metrics
                        .breaker_state
                        .with_label_values(&[name])
                        .set(s.breaker.gauge());
                    TrunkStatus {
                        name: name.to_string(),
                        register: true,
                        registered: s.registered,
                        expires_at: s
                            .expires_at
                            .map(|at| crate::time::rfc3339(wall + (at - now))),
                        last_error: s.last_error,
                        failures: s.failures,
                        breaker: s.breaker.as_str().to_string(),
                    }
                }
                None => TrunkStatus {
                    name: name.to_string(),
                    register: false,
                    registered: false,
                    expires_at: None,
                    last_error: None,
                    failures: 0,
                    breaker: "closed".to_string(),
                },
            };
            view.status.push(status);
            for ip in &entry.addresses {
                view.addresses.insert(*ip, name.to_string());
            }
        }
        self.published.send_replace(view);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
