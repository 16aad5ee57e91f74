//! One endpoint's delivery task: reads the events after its cursor from the event log and POSTs
//! them one at a time, in order, signed, each until it is delivered, rejected, or too old, and
//! then the next. It owns its HTTP client (and so its connections): a dead endpoint's retries
//! and timeouts never hold up another's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use roundtable_api::WebhookEndpoint;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Outbox;
use super::progress::Progress;
use super::retry::{Attempt, Verdict, backoff, judge};
use crate::events::EventLog;

/// The HTTP(S) client of one endpoint.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The most of an answer's body read (and thrown away, so the connection can be used again).
const MAX_ANSWER: usize = 64 << 10;

/// Positions are saved at most this often while events flow (and whenever they pause).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A client that speaks HTTP/1.1 and HTTPS (trusting `tls`'s roots), connecting within 5 s.
pub fn client(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https)
}

/// How long deliveries are retried and how far apart.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// An event retried this long after it happened goes to dead letters.
    pub max_age: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
}

/// What an endpoint's task needs.
pub struct Delivery {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// Its position.
    pub progress: Arc<Progress>,
    /// Dead letters and metrics.
    pub outbox: Arc<Outbox>,
    /// The events.
    pub log: Arc<EventLog>,
    /// Retries.
    pub policy: Policy,
    /// Its client.
    pub client: HttpClient,
    /// Told the endpoint's name when it answers 410.
    pub gone: tokio::sync::mpsc::UnboundedSender<String>,
    /// Ends the task (its position is saved first).
    pub stop: CancellationToken,
}

/// Whether to go on with the next event.
enum Next {
    Continue,
    Stop,
}

impl Delivery {
    /// Delivers until stopped or gone.
    pub async fn run(self) {
        let mut changes = self.log.subscribe();
        let mut saved_at = Instant::now();
        'events: while !self.stop.is_cancelled() {
            // From memory when the ring has it; the journal on a blocking thread otherwise.
            let read = match self
                .progress
                .next_page(&self.log, EventLog::since_in_memory)
            {
                Some(page) => Ok(page),
                None => {
                    let (log, progress) = (self.log.clone(), self.progress.clone());
                    tokio::task::spawn_blocking(move || progress.next_page(&log, EventLog::since))
                        .await
                }
            };
            let page = match read {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => {
                    tracing::error!(endpoint = %self.endpoint.name, %error, "webhook: cannot read the event journal");
                    if self.pause(Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
                Err(_) => break,
            };
            if page.missed > 0 {
                self.lost(page.missed).await;
            }
            for event in page.events {
                if let Next::Stop = self.deliver(event).await {
                    break 'events;
                }
            }
            self.progress.advance(page.next_seq);
            if saved_at.elapsed() >= SAVE_EVERY {
                self.save().await;
                saved_at = Instant::now();
            }
            if page.behind > 0 {
                continue;
            }
            let newest = *changes.borrow_and_update();
            if newest <= self.progress.seq() {
                // Idle: the position is saved within SAVE_EVERY, not after every event.
                let save_in = if self.progress.unsaved() {
                    SAVE_EVERY.saturating_sub(saved_at.elapsed())
                } else {
                    Duration::MAX
                };
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep(save_in) => {
                        self.save().await;
                        saved_at = Instant::now();
                    }
                }
            }
        }
        self.save().await;
    }

    /// Delivers one event: until it is delivered, rejected, too old, or the endpoint is gone.
    async fn deliver(&self, event: Value) -> Next {
        let Some(seq) = event["id"].as_u64() else {
            return Next::Continue;
        };
        let id = event["cursor"].as_str().unwrap_or_default().to_string();
        let body = Bytes::from(event.to_string());
        let happened = event["at"]
            .as_str()
            .and_then(crate::time::parse_rfc3339)
            .unwrap_or_else(SystemTime::now);
        let mut attempts = 0u32;
        loop {
            if self.progress.seq() >= seq {
                // The journal's pruner sent it to dead letters meanwhile.
                return Next::Continue;
            }
            attempts += 1;
            let attempt = self.attempt(&id, &body).await;
            match judge(&attempt) {
                Verdict::Delivered => {
                    self.progress.delivered(seq);
                    self.outbox.metrics.delivered(&self.endpoint.name, happened);
                    self.outbox.metrics.breaker(&self.endpoint.name, 0);
                    return Next::Continue;
                }
                Verdict::Gone => {
                    tracing::warn!(endpoint = %self.endpoint.name, "webhook endpoint answered 410 Gone: removing it");
                    self.progress.set_gone();
                    let _ = self.gone.send(self.endpoint.name.clone());
                    return Next::Stop;
                }
                Verdict::Rejected(status) => {
                    self.outbox.metrics.failed(&self.endpoint.name);
                    self.progress.answered(format!("answered {status}"));
                    self.outbox.metrics.breaker(&self.endpoint.name, 0);
                    if self
                        .dead_letter(&event, "rejected", Some(status), attempts)
                        .await
                    {
                        return Next::Continue;
                    }
                }
                Verdict::Retry { why, not_before } => {
                    self.outbox.metrics.failed(&self.endpoint.name);
                    let failures = self.progress.failed(&why);
                    self.outbox.metrics.breaker(&self.endpoint.name, failures);
                    let age = happened.elapsed().unwrap_or_default();
                    if age >= self.policy.max_age {
                        let status = match attempt {
                            Attempt::Answered { status, .. } => Some(status),
                            _ => None,
                        };
                        if self.dead_letter(&event, "expired", status, attempts).await {
                            return Next::Continue;
                        }
                    } else {
                        let wait = backoff(failures, random(), self.policy.backoff_max, not_before)
                            .min(self.policy.max_age - age);
                        tracing::debug!(endpoint = %self.endpoint.name, %why, ?wait, "webhook: retrying");
                        if self.pause(wait).await {
                            return Next::Stop;
                        }
                    }
                }
            }
            if self.stop.is_cancelled() {
                return Next::Stop;
            }
        }
    }

    /// One POST: the event, signed.
    async fn attempt(&self, id: &str, body: &Bytes) -> Attempt {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let request = axum::http::Request::post(self.endpoint.url.clone())
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .header(axum::http::header::USER_AGENT, "Roundtable-Webhooks/1")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header(
                "webhook-signature",
                self.endpoint.secret.sign(id, timestamp, body),
            )
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(request) => request,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            // Read (and drop) the answer, so the connection can carry the next event.
            let _ = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        };
        match tokio::time::timeout(self.endpoint.timeout, exchange).await {
            Err(_) => Attempt::TimedOut,
            Ok(Err(error)) => Attempt::Failed(error_chain(&error)),
            Ok(Ok((status, retry_after))) => Attempt::Answered {
                status,
                retry_after,
            },
        }
    }

    /// Sends `event` to dead letters (fsynced) and passes it; `false` when the file could not
    /// be written (the event is then tried again: it is never passed unrecorded).
    async fn dead_letter(
        &self,
        event: &Value,
        reason: &'static str,
        status: Option<u16>,
        attempts: u32,
    ) -> bool {
        let letter = super::progress::letter(
            &self.endpoint.name,
            reason,
            status,
            attempts,
            self.progress.last_error().as_deref(),
            event,
        );
        let seq = event["id"].as_u64().unwrap_or_default();
        let (outbox, progress) = (self.outbox.clone(), self.progress.clone());
        let written = tokio::task::spawn_blocking(move || {
            outbox.dead_letters(&progress, &[letter], reason, seq)
        })
        .await;
        match written {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::error!(endpoint = %self.endpoint.name, %error, "webhook: cannot write a dead letter; the event stays queued");
                let _ = self.pause(Duration::from_secs(1)).await;
                false
            }
            Err(_) => false,
        }
    }

    /// Records `missed` events gone from the journal before this endpoint saw them (a disk
    /// failure): they cannot be sent, but they are counted and written down.
    async fn lost(&self, missed: u64) {
        tracing::error!(endpoint = %self.endpoint.name, missed, "webhook: events gone from the journal before delivery");
        let letter = serde_json::json!({
            "at": crate::time::rfc3339(SystemTime::now()),
            "endpoint": self.endpoint.name,
            "reason": "lost",
            "count": missed,
            "before": self.log.cursor(self.progress.seq() + missed + 1),
        });
        let (outbox, progress) = (self.outbox.clone(), self.progress.clone());
        let _ = tokio::task::spawn_blocking(move || {
            outbox.dead_letters(&progress, &[letter], "lost", 0)
        })
        .await;
    }

    async fn save(&self) {
        let progress = self.progress.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || progress.save()).await {
            tracing::warn!(endpoint = %self.endpoint.name, %error, "webhook: cannot save the position");
        }
    }

    /// Waits `wait`; `true` when stopped meanwhile.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => false,
            () = self.stop.cancelled() => true,
        }
    }
}

/// An error and its causes, `a: b: c` (hyper's own message is only "client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// A uniform number in 0..=1 for the jitter.
fn random() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 1.0;
    }
    u64::from_le_bytes(bytes) as f64 / u64::MAX as f64
}
