//! Prometheus counters for RTP.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::error::MediaError;

/// RTP counters, cheap to clone into every leg task and mixer thread.
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    packets_in: IntCounter,
    packets_out: IntCounter,
    invalid: IntCounterVec,
    receive_overflow: IntCounter,
    connect_failures: IntCounter,
    rtcp: IntCounterVec,
}

impl MediaMetrics {
    /// Creates the counters and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<MediaMetrics> {
        let packets_in = IntCounter::new(
            "roundtable_rtp_packets_in_total",
            "Valid RTP packets received",
        )?;
        let packets_out = IntCounter::new("roundtable_rtp_packets_out_total", "RTP packets sent")?;
        let invalid = IntCounterVec::new(
            Opts::new(
                "roundtable_rtp_invalid_total",
                "RTP packets dropped as invalid, by reason",
            ),
            &["reason"],
        )?;
        let receive_overflow = IntCounter::new(
            "roundtable_rtp_receive_overflow_total",
            "RTP packets the kernel dropped because a leg's socket buffer was full (its mixer thread fell behind)",
        )?;
        let connect_failures = IntCounter::new(
            "roundtable_rtp_connect_failures_total",
            "Times a leg got no socket connected to its latched RTP source and went on through its unconnected one (correct, a little slower)",
        )?;
        registry.register(Box::new(connect_failures.clone()))?;
        registry.register(Box::new(packets_in.clone()))?;
        registry.register(Box::new(packets_out.clone()))?;
        registry.register(Box::new(invalid.clone()))?;
        registry.register(Box::new(receive_overflow.clone()))?;
        let rtcp = IntCounterVec::new(
            Opts::new(
                "roundtable_rtcp_reports_total",
                "RTCP compound reports, by direction (sent, received)",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(rtcp.clone()))?;
        Ok(MediaMetrics {
            packets_in,
            packets_out,
            invalid,
            receive_overflow,
            connect_failures,
            rtcp,
        })
    }

    /// Valid packets in. Mixer threads count a tick's worth at once: every thread shares
    /// this counter, and one update per packet kept its cache line bouncing between cores.
    pub fn packets_in(&self, n: u64) {
        self.packets_in.inc_by(n);
    }

    /// Packets out (counted like [`MediaMetrics::packets_in`]).
    pub fn packets_out(&self, n: u64) {
        self.packets_out.inc_by(n);
    }

    /// A leg got no connected socket for its latched source (see
    /// [`crate::udp::connected_twin`]).
    pub fn connect_failure(&self) {
        self.connect_failures.inc();
    }

    /// One RTCP report sent.
    pub fn rtcp_sent(&self) {
        self.rtcp.with_label_values(&["sent"]).inc();
    }

    /// One RTCP report received and read.
    pub fn rtcp_received(&self) {
        self.rtcp.with_label_values(&["received"]).inc();
    }

    /// One invalid packet.
    pub fn invalid(&self, error: MediaError) {
        let reason = match error {
            MediaError::Truncated => "truncated",
            MediaError::BadVersion => "version",
            MediaError::RtcpOnRtpPort => "rtcp",
            MediaError::BadPadding => "padding",
            MediaError::UnexpectedPayloadType(_) => "payload_type",
            MediaError::UnexpectedSsrc(_) => "ssrc",
            MediaError::PortsExhausted => "ports",
            MediaError::Resampler(_) => "resampler",
            MediaError::BadRtcp => "rtcp_malformed",
            MediaError::Hijack => "hijack",
            MediaError::Srtp(_) => "srtp",
            MediaError::Codec(_) => "codec",
        };
        self.invalid.with_label_values(&[reason]).inc();
    }

    /// Packets the kernel dropped on a leg's full socket.
    pub fn receive_overflow(&self, packets: u64) {
        self.receive_overflow.inc_by(packets);
    }
}
