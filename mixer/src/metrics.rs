//! Prometheus metrics of the mixer threads.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::controls::Degradation;

/// Mixer timing, overload and loss counters.
#[derive(Clone, Debug)]
pub struct MixerMetrics {
    /// How late each tick started after its absolute deadline, per thread.
    pub tick_lateness: HistogramVec,
    /// How long one tick of all of a thread's rooms took, per thread.
    pub tick_duration: HistogramVec,
    /// Ticks skipped because a thread fell more than the catch-up limit behind.
    pub ticks_skipped: IntCounter,
    /// RTP sends that failed (socket buffer full or unreachable).
    pub send_errors: IntCounter,
    /// Mix frames a recorder could not take in time (filled with silence by the recorder).
    pub recorder_frames_dropped: IntCounter,
    /// Each thread's degradation stage (0 = everything runs; see `Degradation`).
    pub degradation_level: IntGaugeVec,
    /// Steps down into each degradation stage.
    pub degradations: IntCounterVec,
    /// Steps back up after an overload.
    pub restorations: IntCounter,
    /// Frames a voice processing stage (echo canceller, noise suppressor) refused.
    pub processing_errors: IntCounter,
    /// Room events (talking, echo cancellation) dropped because their consumer fell behind.
    pub events_dropped: IntCounter,
    /// Frames each thread encoded in its last tick (shared outputs once, private ones each).
    pub encodes: IntGaugeVec,
}

impl MixerMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<MixerMetrics> {
        let buckets = vec![
            0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
        ];
        let tick_lateness = HistogramVec::new(
            HistogramOpts::new(
                "roundtable_mixer_tick_lateness_seconds",
                "Lateness of mixer ticks behind their deadline",
            )
            .buckets(buckets.clone()),
            &["thread"],
        )?;
        let tick_duration = HistogramVec::new(
            HistogramOpts::new(
                "roundtable_mixer_tick_duration_seconds",
                "Time one mixer thread spent on one tick",
            )
            .buckets(buckets),
            &["thread"],
        )?;
        let ticks_skipped = IntCounter::new(
            "roundtable_mixer_ticks_skipped_total",
            "Mixer ticks skipped after falling behind",
        )?;
        let send_errors = IntCounter::new(
            "roundtable_mixer_send_errors_total",
            "RTP sends from mixer threads that failed",
        )?;
        let recorder_frames_dropped = IntCounter::new(
            "roundtable_recorder_frames_dropped_total",
            "Mix frames a recorder fell behind on (recorded as silence and counted as gaps)",
        )?;
        let degradation_level = IntGaugeVec::new(
            Opts::new(
                "roundtable_mixer_degradation_level",
                "Overload stage of each mixer thread: 0 full, 1 no noise suppression, 2 no auto AEC, 3 no AEC",
            ),
            &["thread"],
        )?;
        let degradations = IntCounterVec::new(
            Opts::new(
                "roundtable_mixer_degradations_total",
                "Overload steps down into each degradation stage",
            ),
            &["stage"],
        )?;
        for stage in &Degradation::ALL[1..] {
            degradations.with_label_values(&[stage.name()]);
        }
        let restorations = IntCounter::new(
            "roundtable_mixer_restorations_total",
            "Degradation stages given back after an overload",
        )?;
        let processing_errors = IntCounter::new(
            "roundtable_mixer_processing_errors_total",
            "Frames a voice processing stage refused",
        )?;
        let encodes = IntGaugeVec::new(
            Opts::new(
                "roundtable_mixer_encodes_last_tick",
                "Frames each mixer thread encoded in its last tick: one per shared output and per leg with a mix of its own",
            ),
            &["thread"],
        )?;
        let events_dropped = IntCounter::new(
            "roundtable_mixer_events_dropped_total",
            "Room events (talking, echo cancellation) dropped because their consumer fell behind",
        )?;
        for m in [
            &ticks_skipped,
            &send_errors,
            &recorder_frames_dropped,
            &restorations,
            &processing_errors,
            &events_dropped,
        ] {
            registry.register(Box::new(m.clone()))?;
        }
        registry.register(Box::new(tick_lateness.clone()))?;
        registry.register(Box::new(tick_duration.clone()))?;
        registry.register(Box::new(degradation_level.clone()))?;
        registry.register(Box::new(degradations.clone()))?;
        registry.register(Box::new(encodes.clone()))?;
        Ok(MixerMetrics {
            tick_lateness,
            tick_duration,
            ticks_skipped,
            send_errors,
            recorder_frames_dropped,
            degradation_level,
            degradations,
            restorations,
            processing_errors,
            events_dropped,
            encodes,
        })
    }

    /// Per-thread handles, resolved once so the tick loop does no label lookups.
    pub fn for_thread(&self, index: usize) -> ThreadMetrics {
        let label = index.to_string();
        ThreadMetrics {
            lateness: self.tick_lateness.with_label_values(&[&label]),
            duration: self.tick_duration.with_label_values(&[&label]),
            level: self.degradation_level.with_label_values(&[&label]),
            encodes: self.encodes.with_label_values(&[&label]),
        }
    }
}

/// One mixer thread's own metric handles.
#[derive(Clone, Debug)]
pub struct ThreadMetrics {
    /// Its tick lateness.
    pub lateness: Histogram,
    /// Its tick cost.
    pub duration: Histogram,
    /// Its degradation stage.
    pub level: IntGauge,
    /// Frames it encoded in its last tick.
    pub encodes: IntGauge,
}
