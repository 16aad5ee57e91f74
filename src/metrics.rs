//! Service-level metrics: calls, rooms, recordings, refusals.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Gauges and counters the bridge keeps.
#[derive(Clone, Debug)]
pub struct BridgeMetrics {
    /// Calls up now.
    pub active_calls: IntGauge,
    /// Rooms open now.
    pub rooms: IntGauge,
    /// Recordings running now (until their file is finalized).
    pub recordings_active: IntGauge,
    /// INVITEs refused, by reason.
    pub calls_rejected: IntCounterVec,
    /// Recordings that could not start, or could not be stored.
    pub recording_failures: IntCounter,
    /// Recordings refused because the spool is over 80 % of its quota.
    pub recordings_refused: IntCounter,
    /// Calls answered by the PIN lobby.
    pub lobby_calls: IntCounter,
    /// Lobby outcomes: joined, wrong_pin, invalid_room, hung_up.
    pub lobby_outcomes: IntCounterVec,
    /// Lockouts started, by scope (source, room).
    pub lockouts: IntCounterVec,
    /// INVITEs refused because their source address is locked out.
    pub lockout_refusals: IntCounter,
    /// DTMF keys pressed by participants in rooms (RFC 4733 or INFO).
    pub dtmf_digits: IntCounter,
    /// Per ended leg: the estimated MOS of its audio as received.
    pub leg_mos: Histogram,
    /// Per ended leg: the share of its packets lost, percent.
    pub leg_loss_percent: Histogram,
    /// Per ended leg: its RFC 3550 jitter, ms.
    pub leg_jitter_ms: Histogram,
    /// Per ended leg with RTCP round trips: the last round-trip time, ms.
    pub leg_rtt_ms: Histogram,
    /// Legs with echo cancellation running now.
    pub legs_aec_active: IntGauge,
    /// Legs talking now.
    pub legs_talking: IntGauge,
}

impl BridgeMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<BridgeMetrics> {
        let active_calls = IntGauge::new("roundtable_active_calls", "Calls up now")?;
        let rooms = IntGauge::new("roundtable_rooms", "Rooms open now")?;
        let recordings_active =
            IntGauge::new("roundtable_recordings_active", "Recordings running now")?;
        let calls_rejected = IntCounterVec::new(
            Opts::new(
                "roundtable_calls_rejected_total",
                "INVITEs refused, by reason",
            ),
            &["reason"],
        )?;
        let recording_failures = IntCounter::new(
            "roundtable_recording_failures_total",
            "Recordings that could not be started or stored",
        )?;
        let recordings_refused = IntCounter::new(
            "roundtable_recordings_refused_total",
            "Recordings refused because the spool is over 80% of storage.spool_quota_mib",
        )?;
        registry.register(Box::new(recordings_refused.clone()))?;
        registry.register(Box::new(active_calls.clone()))?;
        registry.register(Box::new(rooms.clone()))?;
        registry.register(Box::new(recordings_active.clone()))?;
        registry.register(Box::new(calls_rejected.clone()))?;
        registry.register(Box::new(recording_failures.clone()))?;
        let lobby_calls = IntCounter::new(
            "roundtable_lobby_calls_total",
            "Calls answered by the PIN lobby",
        )?;
        let lobby_outcomes = IntCounterVec::new(
            Opts::new(
                "roundtable_lobby_outcomes_total",
                "Lobby outcomes: joined, wrong_pin, invalid_room, hung_up",
            ),
            &["outcome"],
        )?;
        let lockouts = IntCounterVec::new(
            Opts::new(
                "roundtable_lockouts_total",
                "PIN brute-force lockouts started, by scope",
            ),
            &["scope"],
        )?;
        let lockout_refusals = IntCounter::new(
            "roundtable_lockout_refusals_total",
            "INVITEs refused from a locked-out address",
        )?;
        registry.register(Box::new(lobby_calls.clone()))?;
        registry.register(Box::new(lobby_outcomes.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(lockout_refusals.clone()))?;
        let dtmf_digits = IntCounter::new(
            "roundtable_dtmf_digits_total",
            "DTMF keys pressed by participants in rooms",
        )?;
        registry.register(Box::new(dtmf_digits.clone()))?;
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> prometheus::Result<Histogram> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let leg_mos = histogram(
            "roundtable_leg_mos",
            "Estimated MOS (G.107 simplified E-model) of each ended leg's audio as the bridge received it",
            vec![1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.3, 4.4, 4.5],
        )?;
        let leg_loss_percent = histogram(
            "roundtable_leg_loss_percent",
            "Share of each ended leg's RTP packets lost on the way in, percent",
            vec![0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0],
        )?;
        let leg_jitter_ms = histogram(
            "roundtable_leg_jitter_ms",
            "RFC 3550 interarrival jitter of each ended leg's RTP, ms",
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0],
        )?;
        let leg_rtt_ms = histogram(
            "roundtable_leg_rtt_ms",
            "Last RTCP round-trip time of each ended leg that reported one, ms",
            vec![5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0],
        )?;
        let legs_aec_active = IntGauge::new(
            "roundtable_legs_aec_active",
            "Legs with echo cancellation running now",
        )?;
        let legs_talking = IntGauge::new("roundtable_legs_talking", "Legs talking now")?;
        registry.register(Box::new(legs_aec_active.clone()))?;
        registry.register(Box::new(legs_talking.clone()))?;
        Ok(BridgeMetrics {
            legs_aec_active,
            legs_talking,
            active_calls,
            rooms,
            recordings_active,
            calls_rejected,
            recording_failures,
            recordings_refused,
            lobby_calls,
            lobby_outcomes,
            lockouts,
            lockout_refusals,
            dtmf_digits,
            leg_mos,
            leg_loss_percent,
            leg_jitter_ms,
            leg_rtt_ms,
        })
    }
}

/// The recording spool and upload pipeline, sampled from the archive once a second.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    /// Bytes in the spool not yet safe in the store.
    pub spool_bytes: IntGauge,
    /// Bytes recorders wrote into the spool.
    pub spool_written_bytes: IntCounter,
    /// Spool writes that failed (a full disk); their audio is a gap in the ledger.
    pub spool_write_failures: IntCounter,
    /// The spool quota.
    pub spool_quota_bytes: IntGauge,
    /// 1 while the spool is over 80 % of its quota (new recordings refused).
    pub spool_alert: IntGauge,
    /// S3 calls that failed.
    pub upload_errors: IntCounter,
    /// Bytes sent to S3.
    pub upload_bytes: IntCounter,
    /// The S3 circuit breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
}

impl StorageMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<StorageMetrics> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(StorageMetrics {
            spool_bytes: gauge(
                "roundtable_spool_bytes",
                "Recording bytes in the spool not yet safe in the store (the upload backlog)",
            )?,
            spool_written_bytes: counter(
                "roundtable_spool_written_bytes_total",
                "Recording bytes written into the spool",
            )?,
            spool_write_failures: counter(
                "roundtable_spool_write_failures_total",
                "Recording writes to the spool that failed (a full disk); their audio is a gap in the ledger",
            )?,
            spool_quota_bytes: gauge(
                "roundtable_spool_quota_bytes",
                "storage.spool_quota_mib in bytes",
            )?,
            spool_alert: gauge(
                "roundtable_spool_alert",
                "1 while the spool is over 80% of its quota and new recordings are refused",
            )?,
            upload_errors: counter(
                "roundtable_upload_errors_total",
                "S3 calls that failed (each retry counts)",
            )?,
            upload_bytes: counter("roundtable_upload_bytes_total", "Bytes sent to S3")?,
            breaker_state: gauge(
                "roundtable_storage_breaker_state",
                "S3 circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
        })
    }
}

/// The trunks' registration state.
#[derive(Clone, Debug)]
pub struct TrunkMetrics {
    /// 1 while a trunk's binding is in place.
    pub registered: prometheus::IntGaugeVec,
    /// REGISTERs that failed, by trunk and reason (the SIP code, `dns` or `connect`).
    pub register_failures: IntCounterVec,
    /// The breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: prometheus::IntGaugeVec,
}

impl TrunkMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<TrunkMetrics> {
        let registered = prometheus::IntGaugeVec::new(
            Opts::new(
                "roundtable_trunk_registered",
                "1 while the trunk's registration is in place",
            ),
            &["trunk"],
        )?;
        let register_failures = IntCounterVec::new(
            Opts::new(
                "roundtable_trunk_register_failures_total",
                "REGISTERs that failed, by trunk and reason (SIP code, dns, connect)",
            ),
            &["trunk", "reason"],
        )?;
        let breaker_state = prometheus::IntGaugeVec::new(
            Opts::new(
                "roundtable_trunk_breaker_state",
                "The trunk registration's circuit breaker: 0 closed, 1 open, 2 half-open",
            ),
            &["trunk"],
        )?;
        registry.register(Box::new(registered.clone()))?;
        registry.register(Box::new(register_failures.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        Ok(TrunkMetrics {
            registered,
            register_failures,
            breaker_state,
        })
    }
}
