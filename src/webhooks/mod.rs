//! Webhooks: every event an endpoint asks for is POSTed to it, signed, in order, at least once.
//!
//! The outbox is the event journal itself (`<storage.path>/events/`): an event counts as
//! emitted once the journal has fsynced it, and each endpoint keeps a cursor into it
//! ([`progress`]). Nothing is copied per endpoint, so ten endpoints cost no more disk than
//! one, and a restart (or a kill -9) resumes each endpoint where its cursor was.
//!
//! The journal is bounded (`webhooks.outbox_max_mib`, `webhooks.max_age_s`). When it must drop
//! its oldest segment and an endpoint has not received some of its events, those go to that
//! endpoint's dead letters first (`outbox_full` or `expired`), counted in
//! `roundtable_webhook_dead_letters_total` and raised on `/health/detailed`: never silently.
//!
//! One task owns the endpoints ([`Registry`]): the configured ones, and those added with
//! `POST /v1/webhooks`, kept in `<storage.path>/webhooks.json`. Each endpoint has its own
//! delivery task ([`delivery`]).

mod delivery;
mod progress;
mod retry;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use roundtable_api::{
    ControlError, Reply, WebhookControl, WebhookCreated, WebhookEndpoint, WebhookSource,
    WebhookSpec, WebhookState, WebhookView,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksConfig;
use crate::events::{EventLog, PruneHook};
pub use delivery::Policy;
use progress::{DeadLetters, Progress};

/// Dead letters for want of room in the outbox keep the webhooks component degraded this long.
const ALERT_FOR: Duration = Duration::from_secs(3600);

/// The webhooks' metrics.
#[derive(Clone)]
pub struct WebhookMetrics {
    deliveries: prometheus::IntCounterVec,
    dead_letters: prometheus::IntCounterVec,
    breaker_open: prometheus::IntGaugeVec,
    latency: prometheus::Histogram,
}

impl WebhookMetrics {
    /// Registered in `registry`.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<WebhookMetrics> {
        let metrics = WebhookMetrics {
            deliveries: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "roundtable_webhook_deliveries_total",
                    "Webhook delivery attempts by endpoint and result (delivered, failed)",
                ),
                &["endpoint", "result"],
            )?,
            dead_letters: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "roundtable_webhook_dead_letters_total",
                    "Events sent to the dead-letter file by endpoint and reason (rejected, expired, outbox_full, lost)",
                ),
                &["endpoint", "reason"],
            )?,
            breaker_open: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "roundtable_webhook_breaker_open",
                    "1 while an endpoint's breaker is open (five failed attempts in a row)",
                ),
                &["endpoint"],
            )?,
            latency: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "roundtable_webhook_delivery_seconds",
                    "From an event to its delivery (2xx) to an endpoint",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
                ]),
            )?,
        };
        registry.register(Box::new(metrics.deliveries.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.breaker_open.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        Ok(metrics)
    }

    fn delivered(&self, endpoint: &str, happened: SystemTime) {
        self.deliveries
            .with_label_values(&[endpoint, "delivered"])
            .inc();
        self.latency
            .observe(happened.elapsed().unwrap_or_default().as_secs_f64());
    }

    fn failed(&self, endpoint: &str) {
        self.deliveries
            .with_label_values(&[endpoint, "failed"])
            .inc();
    }

    fn breaker(&self, endpoint: &str, failures: u32) {
        self.breaker_open
            .with_label_values(&[endpoint])
            .set(i64::from(retry::breaker_open(failures)));
    }
}

/// What the endpoints share with the journal's pruner and the health monitor: their
/// positions, the dead letters, the metrics.
pub struct Outbox {
    dir: PathBuf,
    endpoints: Mutex<Vec<Arc<Progress>>>,
    letters: DeadLetters,
    metrics: WebhookMetrics,
    /// When events last went to dead letters for want of room.
    full_at: Mutex<Option<Instant>>,
}

/// What `/health/detailed` shows of the webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxHealth {
    /// The largest backlog of an endpoint, in events.
    pub backlog: u64,
    /// Endpoints whose breaker is open.
    pub open: Vec<String>,
    /// Whether events went to dead letters for want of room within the last hour.
    pub full_recently: bool,
    /// Dead letters since the start.
    pub dead_letters: u64,
}

impl Outbox {
    /// The outbox's state in `<storage_path>/webhooks/`.
    pub fn open(storage_path: &Path, metrics: WebhookMetrics) -> std::io::Result<Arc<Outbox>> {
        let dir = storage_path.join("webhooks");
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Outbox {
            letters: DeadLetters::new(&dir),
            dir,
            endpoints: Mutex::default(),
            metrics,
            full_at: Mutex::default(),
        }))
    }

    /// What the journal calls before it drops a segment.
    pub fn prune_hook(self: &Arc<Self>) -> PruneHook {
        let outbox = self.clone();
        Box::new(move |events, last, why| outbox.before_prune(events, last, why))
    }

    fn endpoints(&self) -> Vec<Arc<Progress>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn track(&self, progress: Arc<Progress>) {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(progress);
    }

    fn untrack(&self, name: &str) {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p.name != name);
    }

    /// Before the journal drops the segment `path` (events up to `last`): each endpoint that
    /// has not received all of them gets the ones it wants in its dead letters, and its position
    /// moves past them. The segment is read only when an endpoint lags behind its end.
    fn before_prune(&self, path: &Path, last: u64, why: &'static str) -> std::io::Result<()> {
        let lagging: Vec<Arc<Progress>> = self
            .endpoints()
            .into_iter()
            .filter(|p| p.seq() < last)
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        let events = crate::events::segment_events(path)?;
        for progress in lagging {
            let after = progress.seq();
            let letters: Vec<Value> = events
                .iter()
                .filter(|(seq, event)| *seq > after && progress.wants(event))
                .map(|(_, event)| progress::letter(&progress.name, why, None, 0, None, event))
                .collect();
            if !letters.is_empty() {
                tracing::error!(
                    endpoint = %progress.name,
                    events = letters.len(),
                    reason = why,
                    "webhook: the outbox drops events this endpoint has not received; they go to its dead letters"
                );
                if why == "outbox_full" {
                    *self.full_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
            }
            self.dead_letters(&progress, &letters, why, last)?;
            progress.save()?;
        }
        Ok(())
    }

    /// Writes `letters` (fsynced), counts them, and moves `progress` to `seq` (blocking).
    fn dead_letters(
        &self,
        progress: &Progress,
        letters: &[Value],
        reason: &str,
        seq: u64,
    ) -> std::io::Result<()> {
        if !letters.is_empty() {
            self.letters.write(letters)?;
            let n = letters
                .iter()
                .map(|l| l["count"].as_u64().unwrap_or(1))
                .sum::<u64>();
            self.metrics
                .dead_letters
                .with_label_values(&[progress.name.as_str(), reason])
                .inc_by(n);
            progress.add_dead(n);
        }
        progress.advance(seq);
        Ok(())
    }

    /// The webhooks' health, with `published` the newest event.
    pub fn health(&self, published: u64) -> OutboxHealth {
        let endpoints = self.endpoints();
        OutboxHealth {
            backlog: endpoints
                .iter()
                .map(|p| published.saturating_sub(p.seq()))
                .max()
                .unwrap_or(0),
            open: endpoints
                .iter()
                .filter(|p| p.state() == WebhookState::Open)
                .map(|p| p.name.clone())
                .collect(),
            full_recently: self
                .full_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < ALERT_FOR),
            dead_letters: endpoints.iter().map(|p| p.dead_count()).sum(),
        }
    }
}

/// Why the webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    /// `webhooks.json` is unreadable or holds a bad endpoint.
    #[error("{path}: {reason}")]
    Book {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A position could not be read or written.
    #[error("webhook positions: {0}")]
    Io(#[from] std::io::Error),
}

/// `webhooks.json`: the endpoints added through the API.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Book {
    endpoints: Vec<WebhookSpec>,
}

impl Book {
    fn load(path: &Path) -> Result<Book, WebhooksError> {
        let bad = |reason: String| WebhooksError::Book {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Book::default()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let book: Book = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for spec in &book.endpoints {
            spec.check()
                .map_err(|e| bad(format!("endpoint {:?}: {e}", spec.name)))?;
        }
        Ok(book)
    }

    /// Written whole (mode 0600: it holds secrets), fsynced, and renamed over the old one.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// What the webhooks start from.
pub struct Setup {
    /// `[webhooks]`.
    pub config: WebhooksConfig,
    /// Positions, dead letters, metrics.
    pub outbox: Arc<Outbox>,
    /// The events.
    pub log: Arc<EventLog>,
    /// `<storage.path>/webhooks.json`.
    pub book: PathBuf,
    /// Stops every delivery (positions saved).
    pub stop: CancellationToken,
}

enum Command {
    List(oneshot::Sender<Vec<WebhookView>>),
    Add(
        WebhookSpec,
        oneshot::Sender<Result<WebhookCreated, ControlError>>,
    ),
    Remove(String, oneshot::Sender<Result<(), ControlError>>),
}

/// The API's way to the endpoints.
#[derive(Clone)]
pub struct WebhooksHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl WebhooksHandle {
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
        stopped: T,
    ) -> Reply<T> {
        let (tx, rx) = oneshot::channel();
        let sent = self.commands.send(make(tx)).is_ok();
        Box::pin(async move {
            if sent {
                rx.await.unwrap_or(stopped)
            } else {
                stopped
            }
        })
    }
}

fn stopped() -> ControlError {
    ControlError::Unavailable("the webhook deliveries have stopped".into())
}

impl WebhookControl for WebhooksHandle {
    fn list(&self) -> Reply<Vec<WebhookView>> {
        self.ask(Command::List, Vec::new())
    }

    fn add(&self, endpoint: WebhookSpec) -> Reply<Result<WebhookCreated, ControlError>> {
        self.ask(|tx| Command::Add(endpoint, tx), Err(stopped()))
    }

    fn remove(&self, name: &str) -> Reply<Result<(), ControlError>> {
        let name = name.to_string();
        self.ask(|tx| Command::Remove(name, tx), Err(stopped()))
    }
}

/// A running endpoint.
struct Running {
    /// Its definition (secret left out).
    spec: WebhookSpec,
    source: WebhookSource,
    progress: Arc<Progress>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The owner of the endpoints.
struct Registry {
    outbox: Arc<Outbox>,
    log: Arc<EventLog>,
    policy: Policy,
    book_path: PathBuf,
    book: Book,
    running: Vec<Running>,
    tls: rustls::ClientConfig,
    gone: mpsc::UnboundedSender<String>,
    stop: CancellationToken,
}

/// Starts the configured endpoints and those of `webhooks.json` (a bad file stops the start,
/// naming what is wrong), and the task that owns them. The returned task ends once `stop`
/// is cancelled and every delivery has saved its position.
pub fn spawn(setup: Setup) -> Result<(WebhooksHandle, tokio::task::JoinHandle<()>), WebhooksError> {
    let book = Book::load(&setup.book)?;
    let tls = match roundtable_sip::transport::tls_client_config(None) {
        Ok(config) => (*config).clone(),
        Err(problem) => {
            tracing::warn!(%problem, "webhooks to https:// URLs will fail");
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhooksError::Io(std::io::Error::other(e)))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        }
    };
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel();
    let mut registry = Registry {
        outbox: setup.outbox,
        log: setup.log,
        policy: Policy {
            max_age: setup.config.max_age,
            backoff_max: setup.config.backoff_max,
        },
        book_path: setup.book,
        book: Book::default(),
        running: Vec::new(),
        tls,
        gone: gone_tx,
        stop: setup.stop,
    };
    for endpoint in &setup.config.endpoints {
        let spec = spec_of(endpoint);
        registry.start(endpoint.clone(), spec, WebhookSource::Config)?;
    }
    for spec in book.endpoints {
        if registry.find(&spec.name).is_some() {
            tracing::warn!(endpoint = %spec.name, "webhooks.json: an endpoint of this name is configured; the configured one is used");
            continue;
        }
        let endpoint = spec.check().map_err(|reason| WebhooksError::Book {
            path: registry.book_path.clone(),
            reason,
        })?;
        registry.book.endpoints.push(spec.clone());
        registry.start(endpoint, spec, WebhookSource::Api)?;
    }
    let (tx, mut commands) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => registry.apply(command).await,
                    None => break,
                },
                Some(name) = gone_rx.recv() => registry.gone(&name).await,
                () = registry.stop.cancelled() => break,
            }
        }
        registry.stop_all().await;
    });
    Ok((WebhooksHandle { commands: tx }, task))
}

/// A configured endpoint as the listing shows it.
fn spec_of(endpoint: &WebhookEndpoint) -> WebhookSpec {
    WebhookSpec {
        name: endpoint.name.clone(),
        url: endpoint.url.to_string(),
        events: endpoint.events.join(","),
        rooms: endpoint
            .rooms
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(","),
        secret: None,
        timeout_s: endpoint.timeout.as_secs(),
    }
}

impl Registry {
    fn find(&self, name: &str) -> Option<usize> {
        self.running.iter().position(|r| r.spec.name == name)
    }

    /// Starts delivering to `endpoint` from its saved position (a new one: from now on). A
    /// configured endpoint that answered 410 stays off until its URL changes.
    fn start(
        &mut self,
        endpoint: WebhookEndpoint,
        mut spec: WebhookSpec,
        source: WebhookSource,
    ) -> std::io::Result<()> {
        spec.secret = None;
        let progress = Arc::new(Progress::open(
            &self.outbox.dir,
            &endpoint,
            self.log.journal_id(),
            self.log.published(),
        )?);
        let stop = self.stop.child_token();
        let marker = self.outbox.dir.join(format!("{}.gone", endpoint.name));
        let task = match std::fs::read_to_string(&marker) {
            Ok(url) if url.trim() == spec.url => {
                tracing::warn!(endpoint = %spec.name, "webhook endpoint answered 410 Gone before: not delivering until its URL changes");
                progress.set_gone();
                None
            }
            _ => {
                let _ = std::fs::remove_file(&marker);
                self.outbox.track(progress.clone());
                let delivery = delivery::Delivery {
                    endpoint,
                    progress: progress.clone(),
                    outbox: self.outbox.clone(),
                    log: self.log.clone(),
                    policy: self.policy,
                    client: delivery::client(self.tls.clone()),
                    gone: self.gone.clone(),
                    stop: stop.clone(),
                };
                Some(tokio::spawn(delivery.run()))
            }
        };
        self.running.push(Running {
            spec,
            source,
            progress,
            stop,
            task,
        });
        Ok(())
    }

    async fn apply(&mut self, command: Command) {
        match command {
            Command::List(reply) => {
                let _ = reply.send(self.running.iter().map(|r| self.view(r)).collect());
            }
            Command::Add(spec, reply) => {
                let _ = reply.send(self.add(spec).await);
            }
            Command::Remove(name, reply) => {
                let _ = reply.send(self.remove(&name).await);
            }
        }
    }

    fn view(&self, running: &Running) -> WebhookView {
        let seq = running.progress.seq();
        WebhookView {
            name: running.spec.name.clone(),
            url: running.spec.url.clone(),
            events: running.spec.events.clone(),
            rooms: running.spec.rooms.clone(),
            timeout_s: running.spec.timeout_s,
            source: running.source,
            state: running.progress.state(),
            cursor: self.log.cursor(seq),
            backlog: self.log.published().saturating_sub(seq),
            delivered: running.progress.delivered_count(),
            dead_letters: running.progress.dead_count(),
            last_error: running.progress.last_error(),
        }
    }

    async fn add(&mut self, spec: WebhookSpec) -> Result<WebhookCreated, ControlError> {
        let endpoint = spec.check().map_err(ControlError::Invalid)?;
        if self.find(&spec.name).is_some() {
            return Err(ControlError::Conflict(
                "a webhook endpoint of that name exists",
            ));
        }
        let mut book = Book {
            endpoints: self.book.endpoints.clone(),
        };
        book.endpoints.push(spec.clone());
        let book = self.save(book).await?;
        self.book = book;
        let secret = spec.secret.clone().unwrap_or_default();
        self.start(endpoint, spec, WebhookSource::Api)
            .map_err(|e| ControlError::Unavailable(format!("webhook position: {e}")))?;
        let running = self.running.last().ok_or_else(stopped)?;
        Ok(WebhookCreated {
            endpoint: self.view(running),
            secret,
        })
    }

    async fn remove(&mut self, name: &str) -> Result<(), ControlError> {
        let at = self.find(name).ok_or(ControlError::WebhookNotFound)?;
        if self.running[at].source == WebhookSource::Config {
            return Err(ControlError::Conflict(
                "the endpoint is defined in [[webhooks.endpoints]]: remove it there",
            ));
        }
        let book = Book {
            endpoints: self
                .book
                .endpoints
                .iter()
                .filter(|s| s.name != name)
                .cloned()
                .collect(),
        };
        self.book = self.save(book).await?;
        let running = self.running.remove(at);
        self.stop_one(running, true).await;
        Ok(())
    }

    /// An endpoint answered 410: an API-defined one is removed, a configured one turned off.
    async fn gone(&mut self, name: &str) {
        let Some(at) = self.find(name) else { return };
        match self.running[at].source {
            WebhookSource::Api => {
                if let Err(error) = self.remove(name).await {
                    tracing::error!(endpoint = name, %error, "webhook: cannot remove a gone endpoint");
                }
            }
            WebhookSource::Config => {
                let marker = self.outbox.dir.join(format!("{name}.gone"));
                let url = self.running[at].spec.url.clone();
                let written =
                    tokio::task::spawn_blocking(move || std::fs::write(marker, url)).await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::error!(
                        endpoint = name,
                        "webhook: cannot record the endpoint as gone"
                    );
                }
                self.outbox.untrack(name);
                if let Some(task) = self.running[at].task.take() {
                    let _ = task.await;
                }
            }
        }
    }

    async fn save(&self, book: Book) -> Result<Book, ControlError> {
        let path = self.book_path.clone();
        tokio::task::spawn_blocking(move || book.save(&path).map(|()| book))
            .await
            .map_err(|_| stopped())?
            .map_err(|e| ControlError::Unavailable(format!("webhooks.json: {e}")))
    }

    /// Stops an endpoint's task (its position saved), and with `forget` removes its position.
    async fn stop_one(&self, mut running: Running, forget: bool) {
        running.stop.cancel();
        if let Some(task) = running.task.take() {
            let _ = task.await;
        }
        if forget {
            self.outbox.untrack(&running.spec.name);
            let progress = running.progress.clone();
            let _ = tokio::task::spawn_blocking(move || progress.remove()).await;
        }
    }

    async fn stop_all(&mut self) {
        for running in std::mem::take(&mut self.running) {
            self.stop_one(running, false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, url: &str) -> WebhookSpec {
        WebhookSpec {
            name: name.into(),
            url: url.into(),
            events: String::new(),
            rooms: String::new(),
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            timeout_s: 5,
        }
    }

    #[test]
    fn the_book_keeps_secrets_private_and_refuses_bad_entries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.json");
        assert!(Book::load(&path).unwrap().endpoints.is_empty());
        let book = Book {
            endpoints: vec![spec("crm", "http://127.0.0.1:9/")],
        };
        book.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Book::load(&path).unwrap().endpoints, book.endpoints);
        std::fs::write(
            &path,
            r#"{"endpoints":[{"name":"crm","url":"gopher://x/","secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}"#,
        )
        .unwrap();
        let error = Book::load(&path).unwrap_err().to_string();
        assert!(error.contains("crm") && error.contains("url"), "{error}");
    }

    #[test]
    fn pruned_events_an_endpoint_lacks_go_to_its_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let registry = prometheus::Registry::new();
        let outbox =
            Outbox::open(dir.path(), WebhookMetrics::register(&registry).unwrap()).unwrap();
        let mut only_dtmf = spec("crm", "http://127.0.0.1:9/");
        only_dtmf.events = "dtmf".into();
        let progress =
            Arc::new(Progress::open(&outbox.dir, &only_dtmf.check().unwrap(), "j", 1).unwrap());
        outbox.track(progress.clone());
        let events: Vec<(u64, Value)> = (1..=4)
            .map(|i| {
                let kind = if i % 2 == 0 { "dtmf" } else { "room_created" };
                (i, serde_json::json!({"id": i, "type": kind, "room": "1"}))
            })
            .collect();
        let segment = dir.path().join("segment.jsonl");
        let lines: Vec<String> = events.iter().map(|(_, e)| e.to_string()).collect();
        std::fs::write(&segment, lines.join("\n") + "\n").unwrap();
        let mut hook = outbox.prune_hook();
        hook(&segment, 5, "outbox_full").unwrap();
        assert_eq!(progress.seq(), 5, "moved past the dropped segment");
        let text = std::fs::read_to_string(outbox.dir.join("dead-letters.jsonl")).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["event"]["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, [2, 4], "those after its position that it wants");
        let health = outbox.health(9);
        assert!(health.full_recently);
        assert_eq!((health.backlog, health.dead_letters), (4, 2));
        assert_eq!(
            std::fs::read_to_string(outbox.dir.join("crm.cursor")).unwrap(),
            "j:5\n",
            "saved before the segment goes"
        );
    }
}
