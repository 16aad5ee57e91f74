//! Service-level metrics: calls, rooms, recordings, refusals.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
    /// Recordings that could not start.
    pub recording_failures: IntCounter,
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
}

impl BridgeMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<BridgeMetrics> {
        let active_calls = IntGauge::new("roundtable_active_calls", "Calls up now")?;
        let rooms = IntGauge::new("roundtable_rooms", "Rooms open now")?;
        let recordings_active = IntGauge::new("roundtable_recordings_active", "Recordings running now")?;
        let calls_rejected = IntCounterVec::new(
            Opts::new("roundtable_calls_rejected_total", "INVITEs refused, by reason"),
            &["reason"],
        )?;
        let recording_failures =
            IntCounter::new("roundtable_recording_failures_total", "Recordings that could not be started")?;
        registry.register(Box::new(active_calls.clone()))?;
        registry.register(Box::new(rooms.clone()))?;
        registry.register(Box::new(recordings_active.clone()))?;
        registry.register(Box::new(calls_rejected.clone()))?;
        registry.register(Box::new(recording_failures.clone()))?;
        let lobby_calls = IntCounter::new("roundtable_lobby_calls_total", "Calls answered by the PIN lobby")?;
        let lobby_outcomes = IntCounterVec::new(
            Opts::new("roundtable_lobby_outcomes_total", "Lobby outcomes: joined, wrong_pin, invalid_room, hung_up"),
            &["outcome"],
        )?;
        let lockouts = IntCounterVec::new(
            Opts::new("roundtable_lockouts_total", "PIN brute-force lockouts started, by scope"),
            &["scope"],
        )?;
        let lockout_refusals =
            IntCounter::new("roundtable_lockout_refusals_total", "INVITEs refused from a locked-out address")?;
        registry.register(Box::new(lobby_calls.clone()))?;
        registry.register(Box::new(lobby_outcomes.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(lockout_refusals.clone()))?;
        let dtmf_digits = IntCounter::new("roundtable_dtmf_digits_total", "DTMF keys pressed by participants in rooms")?;
        registry.register(Box::new(dtmf_digits.clone()))?;
        Ok(BridgeMetrics {
            active_calls,
            rooms,
            recordings_active,
            calls_rejected,
            recording_failures,
            lobby_calls,
            lobby_outcomes,
            lockouts,
            lockout_refusals,
            dtmf_digits,
        })
    }
}
