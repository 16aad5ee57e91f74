//! Prometheus counters for SIP traffic, registered on the caller's registry.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::endpoint::Count;

/// SIP traffic counters.
#[derive(Clone, Debug)]
pub struct SipMetrics {
    requests: IntCounterVec,
    responses: IntCounterVec,
    dropped: IntCounter,
    refused: IntCounterVec,
    retransmissions: IntCounterVec,
    timeouts: IntCounterVec,
    requests_out: IntCounterVec,
    loops: IntCounter,
    send_failures: IntCounterVec,
}

impl SipMetrics {
    /// Creates the counters and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<SipMetrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_requests_total",
                "SIP requests received, by method",
            ),
            &["method"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_responses_total",
                "SIP responses sent, by status code",
            ),
            &["code"],
        )?;
        let dropped = IntCounter::new(
            "roundtable_sip_dropped_total",
            "SIP input dropped: unparsable and unanswerable bytes or broken stream framing",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        let refused = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_refused_total",
                "SIP messages refused: throttled (503), dropped (over the hard limit), forbidden (403), challenged and auth_failed (401)",
            ),
            &["verdict"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        let retransmissions = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_retransmissions_total",
                "SIP retransmissions sent or answered, by kind",
            ),
            &["kind"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_timeouts_total",
                "SIP timers that gave up, by kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(retransmissions.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        let requests_out = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_requests_sent_total",
                "SIP requests the bridge sent in its dialogs, by method",
            ),
            &["method"],
        )?;
        let loops = IntCounter::new(
            "roundtable_sip_loops_total",
            "SIP requests of our own that came back to us (answered 482)",
        )?;
        registry.register(Box::new(requests_out.clone()))?;
        registry.register(Box::new(loops.clone()))?;
        let send_failures = IntCounterVec::new(
            Opts::new(
                "roundtable_sip_send_failures_total",
                "SIP messages that could not be sent (socket error, connection stuck, closed or not openable), by transport",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(send_failures.clone()))?;
        Ok(SipMetrics {
            requests,
            responses,
            dropped,
            refused,
            retransmissions,
            timeouts,
            requests_out,
            loops,
            send_failures,
        })
    }

    /// Counts a message the driver could not send.
    pub fn send_failed(&self, transport: &'static str) {
        self.send_failures.with_label_values(&[transport]).inc();
    }

    /// Records one counted happening of the endpoint.
    pub fn record(&self, count: Count) {
        match count {
            Count::RequestIn(method) => self.requests.with_label_values(&[method]).inc(),
            Count::ResponseOut(code) => {
                self.responses.with_label_values(&[&code.to_string()]).inc()
            }
            Count::Dropped => self.dropped.inc(),
            Count::Refused(verdict) => self.refused.with_label_values(&[verdict]).inc(),
            Count::RequestOut(method) => self.requests_out.with_label_values(&[method]).inc(),
            Count::Loop => self.loops.inc(),
            Count::Retransmission(kind) => self.retransmissions.with_label_values(&[kind]).inc(),
            Count::Timeout(kind) => self.timeouts.with_label_values(&[kind]).inc(),
        }
    }
}
