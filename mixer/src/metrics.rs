//! Prometheus metrics of the mixer threads.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

/// Mixer timing and loss counters.
#[derive(Clone, Debug)]
pub struct MixerMetrics {
    /// How late each tick started after its absolute deadline.
    pub tick_lateness: Histogram,
    /// How long one tick of all of a thread's rooms took.
    pub tick_duration: Histogram,
    /// Ticks skipped because a thread fell more than the catch-up limit behind.
    pub ticks_skipped: IntCounter,
    /// RTP sends that failed (socket buffer full or unreachable).
    pub send_errors: IntCounter,
    /// Mix frames a recorder could not take in time (filled with silence by the recorder).
    pub recorder_frames_dropped: IntCounter,
}

impl MixerMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<MixerMetrics> {
        let buckets = vec![0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5];
        let tick_lateness = Histogram::with_opts(
            HistogramOpts::new("roundtable_mixer_tick_lateness_seconds", "Lateness of mixer ticks behind their deadline")
                .buckets(buckets.clone()),
        )?;
        let tick_duration = Histogram::with_opts(
            HistogramOpts::new("roundtable_mixer_tick_duration_seconds", "Time one mixer thread spent on one tick")
                .buckets(buckets),
        )?;
        let ticks_skipped = IntCounter::new("roundtable_mixer_ticks_skipped_total", "Mixer ticks skipped after falling behind")?;
        let send_errors = IntCounter::new("roundtable_mixer_send_errors_total", "RTP sends from mixer threads that failed")?;
        let recorder_frames_dropped = IntCounter::new(
            "roundtable_recorder_frames_dropped_total",
            "Mix frames a recorder fell behind on (recorded as silence and counted as gaps)",
        )?;
        for m in [&ticks_skipped, &send_errors, &recorder_frames_dropped] {
            registry.register(Box::new(m.clone()))?;
        }
        registry.register(Box::new(tick_lateness.clone()))?;
        registry.register(Box::new(tick_duration.clone()))?;
        Ok(MixerMetrics { tick_lateness, tick_duration, ticks_skipped, send_errors, recorder_frames_dropped })
    }
}
