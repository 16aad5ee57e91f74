//! What `/live`, `/ready` and `/health` answer from. A thread measures every component once a
//! second (mixer heartbeats and lateness, voice processing shed, the spool, free disk, open
//! descriptors, uploads, the event journal, trunks) and a second thread times a storage round
//! trip every `health.storage_probe_s`; each publishes what it found, and the probes read the
//! last report without doing any IO. Each component's status is also the metric
//! `roundtable_health_component{name}` (0 ok, 1 degraded, 2 unhealthy).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roundtable_api::{HealthComponent, HealthReport, HealthStatus};
use roundtable_mixer::metrics::MixerMetrics;
use roundtable_mixer::pool::Heartbeats;
use roundtable_recorder::{Archive, SpoolAccount};
use roundtable_storage::ObjectKey;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::HealthConfig;

/// A mixer thread that has not ticked for this long is stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The lateness p99 is taken over this many one-second samples.
const LATENESS_WINDOW: usize = 10;

/// What the probes read: the last report and the few things they check at once.
#[derive(Clone)]
pub struct HealthView {
    report: watch::Receiver<Arc<HealthReport>>,
    heartbeats: Heartbeats,
    sip_down: Arc<AtomicBool>,
    spool: Arc<SpoolAccount>,
}

impl HealthView {
    /// `Ok` while every mixer thread ticked within [`STALLED_AFTER`], else which did not.
    pub fn liveness(&self) -> Result<(), String> {
        let stalled = self.heartbeats.stalled(Instant::now(), STALLED_AFTER);
        if stalled.is_empty() {
            return Ok(());
        }
        Err(format!(
            "mixer threads {stalled:?} did not tick in the last {} ms",
            STALLED_AFTER.as_millis()
        ))
    }

    /// Why new calls should go elsewhere now, if they should (not storage: recordings ride
    /// an outage out in the spool).
    pub fn unready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.sip_down.load(Ordering::Relaxed) {
            reasons.push("sip_listeners: the SIP driver stopped".to_string());
        }
        if !self.spool.accepts_new() {
            reasons.push("spool: over 80 % of storage.spool_quota_mib".to_string());
        }
        reasons
    }

    /// The last report.
    pub fn report(&self) -> HealthReport {
        (**self.report.borrow()).clone()
    }
}

/// What the monitor measures.
pub struct Inputs {
    /// `[health]`.
    pub config: HealthConfig,
    /// The mixer threads' heartbeats.
    pub heartbeats: Heartbeats,
    /// Their lateness and shed stages.
    pub mixer: MixerMetrics,
    /// The archive: spool, uploads and the store to probe.
    pub archive: Arc<Archive>,
    /// `storage.path`, for free space.
    pub storage_path: PathBuf,
    /// Events published without the journal.
    pub unjournaled: prometheus::IntCounter,
    /// The webhook endpoints' backlogs, breakers and dead letters.
    pub webhooks: Arc<crate::webhooks::Outbox>,
    /// The newest event published.
    pub events: watch::Receiver<u64>,
    /// The trunks' registrations.
    pub trunks: watch::Receiver<crate::trunks::TrunkView>,
    /// Set once the SIP driver has stopped (its listeners with it).
    pub sip_down: Arc<AtomicBool>,
    /// `roundtable_health_component{name}`.
    pub gauge: prometheus::IntGaugeVec,
    /// Ends both threads.
    pub stop: Arc<AtomicBool>,
}

/// The gauge of component statuses, registered.
pub fn register(registry: &prometheus::Registry) -> prometheus::Result<prometheus::IntGaugeVec> {
    let gauge = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "roundtable_health_component",
            "Health of each component: 0 ok, 1 degraded, 2 unhealthy",
        ),
        &["name"],
    )?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

/// Starts the monitor and the storage probe.
pub fn start(inputs: Inputs) -> std::io::Result<HealthView> {
    let (publish, report) = watch::channel(Arc::new(HealthReport::default()));
    let view = HealthView {
        report,
        heartbeats: inputs.heartbeats.clone(),
        sip_down: inputs.sip_down.clone(),
        spool: inputs.archive.account().clone(),
    };
    let probe = Arc::new(Mutex::new(None));
    {
        let (archive, stop, every) = (
            inputs.archive.clone(),
            inputs.stop.clone(),
            inputs.config.storage_probe,
        );
        let probe = probe.clone();
        std::thread::Builder::new()
            .name("storage-probe".into())
            .spawn(move || probe_storage(&archive, &probe, &stop, every))?;
    }
    let mut monitor = Monitor {
        inputs,
        probe,
        lateness: VecDeque::new(),
        unjournaled: VecDeque::new(),
    };
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            while !monitor.inputs.stop.load(Ordering::Relaxed) {
                let report = monitor.measure();
                for component in &report.components {
                    monitor
                        .inputs
                        .gauge
                        .with_label_values(&[&component.name])
                        .set(component.status.value());
                }
                publish.send_replace(Arc::new(report));
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
    Ok(view)
}

/// A storage round trip: how long it took, or why it failed.
type Probe = Option<Result<Duration, String>>;

/// Puts, reads back and deletes `health/probe` every `every`, timing it.
fn probe_storage(archive: &Archive, result: &Mutex<Probe>, stop: &AtomicBool, every: Duration) {
    let key = match ObjectKey::new(format!("{}health/probe", archive.prefix())) {
        Ok(key) => key,
        Err(error) => {
            *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(error.to_string()));
            return;
        }
    };
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let body = format!(
            "roundtable health probe {}",
            crate::time::rfc3339(std::time::SystemTime::now())
        );
        let store = archive.store();
        let outcome = store
            .put(&key, body.as_bytes())
            .and_then(|()| store.open(&key))
            .and_then(|mut reader| {
                let mut read = Vec::new();
                std::io::Read::read_to_end(&mut reader.body, &mut read).map_err(|e| {
                    roundtable_storage::StorageError::Io {
                        path: key.as_str().into(),
                        source: e,
                    }
                })?;
                Ok(read)
            })
            .and_then(|read| {
                store.delete(&key)?;
                Ok(read)
            })
            .map_err(|e| e.to_string())
            .and_then(|read| {
                (read == body.as_bytes())
                    .then(|| started.elapsed())
                    .ok_or_else(|| "the probe read back other bytes".to_string())
            });
        match (&outcome, failing) {
            (Err(error), false) => warn!(%error, "storage probe failed"),
            (Ok(_), true) => info!("storage probe succeeds again"),
            _ => {}
        }
        failing = outcome.is_err();
        *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        let deadline = Instant::now() + every;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

struct Monitor {
    inputs: Inputs,
    probe: Arc<Mutex<Probe>>,
    /// The lateness histogram's summed buckets, one a second, newest last.
    lateness: VecDeque<Vec<(f64, u64)>>,
    /// The unjournaled count, one a second over the last minute.
    unjournaled: VecDeque<u64>,
}

fn component(
    name: &str,
    status: HealthStatus,
    value: Option<f64>,
    threshold: Option<f64>,
    reason: String,
) -> HealthComponent {
    HealthComponent {
        name: name.into(),
        status,
        value,
        threshold,
        reason,
    }
}

use HealthStatus::{Degraded, Ok as Good, Unhealthy};

impl Monitor {
    fn measure(&mut self) -> HealthReport {
        HealthReport::new(vec![
            self.sip_listeners(),
            self.mixer_threads(),
            self.tick_lateness(),
            self.voice_processing(),
            self.storage(),
            self.spool(),
            self.disk_free(),
            descriptors(),
            self.uploads(),
            self.event_journal(),
            self.webhooks(),
            self.trunks(),
        ])
    }

    fn sip_listeners(&self) -> HealthComponent {
        if self.inputs.sip_down.load(Ordering::Relaxed) {
            component(
                "sip_listeners",
                Unhealthy,
                None,
                None,
                "the SIP driver stopped".into(),
            )
        } else {
            component("sip_listeners", Good, None, None, "listening".into())
        }
    }

    fn mixer_threads(&self) -> HealthComponent {
        let stalled = self
            .inputs
            .heartbeats
            .stalled(Instant::now(), STALLED_AFTER);
        let status = if stalled.is_empty() { Good } else { Unhealthy };
        let reason = match stalled.as_slice() {
            [] => format!("{} threads ticking", self.inputs.heartbeats.threads()),
            some => format!("threads {some:?} did not tick in the last second"),
        };
        component(
            "mixer_threads",
            status,
            Some(stalled.len() as f64),
            Some(0.0),
            reason,
        )
    }

    fn tick_lateness(&mut self) -> HealthComponent {
        let threshold_ms = self.inputs.config.tick_lateness.as_secs_f64() * 1000.0;
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for family in prometheus::core::Collector::collect(&self.inputs.mixer.tick_lateness) {
            for metric in family.get_metric() {
                for (i, bucket) in metric.get_histogram().get_bucket().iter().enumerate() {
                    if buckets.len() <= i {
                        buckets.push((bucket.upper_bound(), 0));
                    }
                    buckets[i].1 += bucket.cumulative_count();
                }
            }
        }
        self.lateness.push_back(buckets);
        if self.lateness.len() > LATENESS_WINDOW + 1 {
            self.lateness.pop_front();
        }
        let (Some(old), Some(new)) = (self.lateness.front(), self.lateness.back()) else {
            return component(
                "tick_lateness",
                Good,
                None,
                Some(threshold_ms),
                "no ticks yet".into(),
            );
        };
        let counts: Vec<(f64, u64)> = new
            .iter()
            .zip(old.iter().chain(std::iter::repeat(&(0.0, 0))))
            .map(|((bound, n), (_, o))| (*bound, n.saturating_sub(*o)))
            .collect();
        let total = counts.last().map_or(0, |c| c.1);
        // The p99 as the bucket bound it falls under (the histogram's resolution).
        let p99_ms = counts
            .iter()
            .find(|(_, n)| total > 0 && *n as f64 >= 0.99 * total as f64)
            .map_or(0.0, |(bound, _)| bound * 1000.0);
        let status = if p99_ms > threshold_ms {
            Degraded
        } else {
            Good
        };
        component(
            "tick_lateness",
            status,
            Some(p99_ms),
            Some(threshold_ms),
            "p99 of the mixer ticks' lateness over the last 10 s, ms (at most the bucket bound)"
                .into(),
        )
    }

    fn voice_processing(&self) -> HealthComponent {
        let level = prometheus::core::Collector::collect(&self.inputs.mixer.degradation_level)
            .iter()
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_gauge().get_value()))
            .fold(0.0, f64::max);
        let status = if level > 0.0 { Degraded } else { Good };
        let reason = if level > 0.0 {
            "a mixer thread sheds voice processing (overload stage)".to_string()
        } else {
            "all voice processing runs".to_string()
        };
        component("voice_processing", status, Some(level), Some(0.0), reason)
    }

    fn storage(&self) -> HealthComponent {
        match &*self.probe.lock().unwrap_or_else(|p| p.into_inner()) {
            None => component("storage", Good, None, None, "not probed yet".into()),
            Some(Ok(took)) => component(
                "storage",
                Good,
                Some(took.as_secs_f64() * 1000.0),
                None,
                "round trip (put, read, delete of health/probe), ms".into(),
            ),
            Some(Err(error)) => component("storage", Degraded, None, None, error.clone()),
        }
    }

    fn spool(&self) -> HealthComponent {
        let account = self.inputs.archive.account();
        let percent = 100.0 * account.used() as f64 / account.quota().max(1) as f64;
        let threshold = 100.0 * roundtable_recorder::spool::REFUSE_AT;
        let alert = !account.accepts_new();
        component(
            "spool",
            if alert { Degraded } else { Good },
            Some((percent * 10.0).round() / 10.0),
            Some(threshold),
            if alert {
                "spool alert: new recordings are refused".into()
            } else {
                "percent of storage.spool_quota_mib in use".into()
            },
        )
    }

    fn disk_free(&self) -> HealthComponent {
        let min_mib = (self.inputs.config.disk_free_min >> 20) as f64;
        match rustix::fs::statvfs(&self.inputs.storage_path) {
            Ok(stat) => {
                let free_mib = ((stat.f_bavail * stat.f_frsize) >> 20) as f64;
                component(
                    "disk_free",
                    if free_mib < min_mib { Degraded } else { Good },
                    Some(free_mib),
                    Some(min_mib),
                    "MiB free under storage.path".into(),
                )
            }
            Err(error) => component(
                "disk_free",
                Degraded,
                None,
                Some(min_mib),
                error.to_string(),
            ),
        }
    }

    fn uploads(&self) -> HealthComponent {
        let Some(uploader) = self.inputs.archive.uploader() else {
            return component(
                "uploads",
                Good,
                None,
                None,
                "local storage: nothing to upload".into(),
            );
        };
        let state = uploader.breaker().state(Instant::now());
        let value = state.value() as f64;
        let status = if value == 0.0 { Good } else { Degraded };
        component(
            "uploads",
            status,
            Some(value),
            Some(0.0),
            "upload circuit breaker: 0 closed, 1 open, 2 half-open; while open, recordings wait in the spool".into(),
        )
    }

    fn event_journal(&mut self) -> HealthComponent {
        let now = self.inputs.unjournaled.get();
        self.unjournaled.push_back(now);
        if self.unjournaled.len() > 61 {
            self.unjournaled.pop_front();
        }
        let recent = now - self.unjournaled.front().copied().unwrap_or(now);
        component(
            "event_journal",
            if recent > 0 { Degraded } else { Good },
            Some(recent as f64),
            Some(0.0),
            "events published without the journal in the last minute".into(),
        )
    }

    fn webhooks(&self) -> HealthComponent {
        let health = self.inputs.webhooks.health(*self.inputs.events.borrow());
        let mut problems = Vec::new();
        if !health.open.is_empty() {
            problems.push(format!("breaker open: {}", health.open.join(", ")));
        }
        if health.full_recently {
            problems.push("the outbox was full: events went to dead letters in the last hour (webhooks.outbox_max_mib)".to_string());
        }
        component(
            "webhooks",
            if problems.is_empty() { Good } else { Degraded },
            Some(health.backlog as f64),
            None,
            if problems.is_empty() {
                format!(
                    "largest endpoint backlog, in events; {} dead letters since the start",
                    health.dead_letters
                )
            } else {
                problems.join("; ")
            },
        )
    }

    fn trunks(&self) -> HealthComponent {
        let view = self.inputs.trunks.borrow();
        let registering: Vec<_> = view.status.iter().filter(|t| t.register).collect();
        let down: Vec<&str> = registering
            .iter()
            .filter(|t| !t.registered)
            .map(|t| t.name.as_str())
            .collect();
        component(
            "trunks",
            if down.is_empty() { Good } else { Degraded },
            Some((registering.len() - down.len()) as f64),
            Some(registering.len() as f64),
            if down.is_empty() {
                "trunks registered, of those that register".into()
            } else {
                format!("not registered: {}", down.join(", "))
            },
        )
    }
}

/// Open descriptors against the soft limit: degraded from 80 %, unhealthy from 95 %.
fn descriptors() -> HealthComponent {
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0) as f64;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX) as f64;
    let percent = 100.0 * open / limit.max(1.0);
    let status = if percent >= 95.0 {
        Unhealthy
    } else if percent >= 80.0 {
        Degraded
    } else {
        Good
    };
    component(
        "descriptors",
        status,
        Some(open),
        Some(limit),
        "open file descriptors, of the soft limit (RLIMIT_NOFILE)".into(),
    )
}
