//! RTCP for one leg (RFC 3550 section 6), sans-IO: when to report, what our compound report
//! says (a sender report about our stream with a reception report block about theirs, and
//! SDES CNAME), and what theirs tell us (their view of our stream, round-trip time, BYE).
//!
//! Drive it with [`RtcpSession::handle`] for each RTCP datagram (with `now` and the wall clock
//! as NTP time) and [`RtcpSession::report`] when [`RtcpSession::next_report`] is due.

use std::time::{Duration, Instant};

use rtcp_types::{
    Compound, Packet, ReceiverReport, ReportBlock, RtcpPacketWriterExt, Sdes, SdesChunk, SdesItem,
    SenderReport,
};

use crate::error::MediaError;
use crate::jitter::JitterStats;
use crate::rtp::SenderStats;

/// RFC 3550's minimum report interval; each interval is randomised to 0.5-1.5 times it.
const INTERVAL: Duration = Duration::from_secs(5);

/// What the peer's reports tell us, for the API and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpStats {
    /// Compound reports we sent.
    pub reports_sent: u64,
    /// Compound reports we received.
    pub reports_received: u64,
    /// Round-trip time from the peer's last report on our stream (RFC 3550 6.4.1, LSR/DLSR).
    pub rtt_ms: Option<f64>,
    /// The share of our packets the peer lost in its last reporting interval (0-1).
    pub remote_fraction_lost: f64,
    /// Our packets the peer lost in all.
    pub remote_cumulative_lost: i64,
    /// The jitter the peer measures on our stream, ms.
    pub remote_jitter_ms: f64,
    /// The peer sent an RTCP BYE.
    pub bye: bool,
}

/// The RTCP state of one leg.
#[derive(Debug)]
pub struct RtcpSession {
    clock_rate: u32,
    next_report: Option<Instant>,
    rng: u64,
    /// The peer's last sender report: middle 32 bits of its NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
    /// Expected and received counts at our last report, for the fraction lost.
    prior: (u64, u64),
    stats: RtcpStats,
}

/// NTP time (seconds since 1900 in the upper 32 bits) of a wall-clock time.
pub fn ntp_time(wall: std::time::SystemTime) -> u64 {
    let since_unix = wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_unix.as_secs() + 2_208_988_800;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

impl RtcpSession {
    /// A session for a stream with RTP clock `clock_rate`; `seed` randomises report times.
    pub fn new(clock_rate: u32, seed: u64) -> RtcpSession {
        RtcpSession {
            clock_rate: clock_rate.max(1),
            next_report: None,
            rng: seed | 1,
            last_sr: None,
            prior: (0, 0),
            stats: RtcpStats::default(),
        }
    }

    /// Changes the RTP clock (a re-offer changed the codec).
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
    }

    /// What the peer's reports said so far.
    pub fn stats(&self) -> RtcpStats {
        self.stats
    }

    /// When the next report is due; the first comes half an interval after `now`.
    pub fn next_report(&mut self, now: Instant) -> Instant {
        *self.next_report.get_or_insert(now + INTERVAL / 2)
    }

    fn random_interval(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        INTERVAL.mul_f64(factor)
    }

    /// Reads one RTCP datagram (a compound packet).
    pub fn handle(
        &mut self,
        now: Instant,
        ntp_now: u64,
        local_ssrc: Option<u32>,
        bytes: &[u8],
    ) -> Result<(), MediaError> {
        let compound = Compound::parse(bytes).map_err(|_| MediaError::BadRtcp)?;
        self.stats.reports_received += 1;
        for packet in compound {
            match packet.map_err(|_| MediaError::BadRtcp)? {
                Packet::Sr(sr) => {
                    self.last_sr = Some(((sr.ntp_timestamp() >> 16) as u32, now));
                    for block in sr.report_blocks() {
                        self.read_block(ntp_now, local_ssrc, &block);
                    }
                }
                Packet::Rr(rr) => {
                    for block in rr.report_blocks() {
                        self.read_block(ntp_now, local_ssrc, &block);
                    }
                }
                Packet::Bye(_) => self.stats.bye = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// A reception report about our stream: the peer's loss and jitter, and the round trip.
    fn read_block(&mut self, ntp_now: u64, local_ssrc: Option<u32>, block: &ReportBlock<'_>) {
        if Some(block.ssrc()) != local_ssrc {
            return;
        }
        self.stats.remote_fraction_lost = f64::from(block.fraction_lost()) / 256.0;
        // 24-bit two's complement.
        let lost = block.cumulative_lost() & 0x00FF_FFFF;
        self.stats.remote_cumulative_lost = if lost & 0x0080_0000 != 0 {
            i64::from(lost) - (1 << 24)
        } else {
            i64::from(lost)
        };
        self.stats.remote_jitter_ms =
            f64::from(block.interarrival_jitter()) * 1000.0 / f64::from(self.clock_rate);
        let lsr = block.last_sender_report_timestamp();
        if lsr != 0 {
            let arrival = (ntp_now >> 16) as u32;
            let rtt = arrival
                .wrapping_sub(lsr)
                .wrapping_sub(block.delay_since_last_sender_report_timestamp());
            // 1/65536 s units; anything beyond a minute is a clock or counting error.
            if rtt < 60 << 16 {
                self.stats.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65536.0);
            }
        }
    }

    /// Builds our compound report and schedules the next: a sender report when we have sent
    /// (`sender`), else a receiver report; a reception block about the peer's stream once it has
    /// sent (`received`, with its SSRC); and SDES CNAME.
    pub fn report(
        &mut self,
        now: Instant,
        ntp_now: u64,
        sender: Option<SenderStats>,
        received: Option<(u32, &JitterStats)>,
    ) -> Vec<u8> {
        let interval = self.random_interval();
        self.next_report = Some(now + interval);
        let local_ssrc = sender.map_or(0, |s| s.ssrc);
        let block = received.map(|(ssrc, stats)| self.block(now, ssrc, stats));
        let cname = format!("roundtable-{local_ssrc:08x}");
        let sdes = Sdes::builder()
            .add_chunk(SdesChunk::builder(local_ssrc).add_item(SdesItem::builder(1, &cname)));
        let mut compound = Compound::builder();
        compound = match sender {
            Some(s) => {
                let mut sr = SenderReport::builder(s.ssrc)
                    .ntp_timestamp(ntp_now)
                    .rtp_timestamp(s.timestamp)
                    .packet_count(s.packets)
                    .octet_count(s.octets);
                if let Some(b) = block {
                    sr = sr.add_report_block(b);
                }
                compound.add_packet(sr)
            }
            None => {
                let mut rr = ReceiverReport::builder(local_ssrc);
                if let Some(b) = block {
                    rr = rr.add_report_block(b);
                }
                compound.add_packet(rr)
            }
        };
        compound = compound.add_packet(sdes);
        let mut out = vec![0u8; 1500];
        match compound.write_into(&mut out) {
            Ok(n) => {
                out.truncate(n);
                self.stats.reports_sent += 1;
                out
            }
            Err(_) => Vec::new(),
        }
    }

    fn block(
        &mut self,
        now: Instant,
        ssrc: u32,
        stats: &JitterStats,
    ) -> rtcp_types::ReportBlockBuilder {
        let received = stats.received;
        let expected = received + stats.lost;
        let (expected_interval, received_interval) = (
            expected.saturating_sub(self.prior.0),
            received.saturating_sub(self.prior.1),
        );
        self.prior = (expected, received);
        let fraction = if expected_interval == 0 || received_interval >= expected_interval {
            0
        } else {
            ((expected_interval - received_interval) * 256 / expected_interval).min(255) as u8
        };
        let cumulative = stats.lost.min(0x7F_FFFF) as u32;
        // Our extended sequence numbers start one cycle up; RTCP counts cycles from zero.
        let highest = stats.highest_sequence.saturating_sub(1 << 16) as u32;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
            ),
            None => (0, 0),
        };
        ReportBlock::builder(ssrc)
            .fraction_lost(fraction)
            .cumulative_lost(cumulative)
            .extended_sequence_number(highest)
            .interarrival_jitter(stats.jitter_units)
            .last_sender_report_timestamp(lsr)
            .delay_since_last_sender_report_timestamp(dlsr)
    }
}

/// Whether a datagram on a multiplexed RTP port is RTCP (RFC 5761 4: second byte 192-223).
pub fn is_rtcp(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0] >> 6 == 2 && (192..=223).contains(&bytes[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jitter(received: u64, lost: u64, highest: u64, jitter_units: u32) -> JitterStats {
        JitterStats {
            received,
            lost,
            highest_sequence: highest,
            jitter_units,
            ..JitterStats::default()
        }
    }

    #[test]
    fn reports_round_trip_between_two_sessions() {
        let t0 = Instant::now();
        let ntp0 = ntp_time(std::time::SystemTime::now());
        let (mut alice, mut bob) = (RtcpSession::new(8000, 1), RtcpSession::new(8000, 2));
        let (a_ssrc, b_ssrc) = (0xA, 0xB);
        assert_eq!(alice.next_report(t0), t0 + Duration::from_millis(2500));

        // Alice sends a sender report about her stream, with a block on Bob's (5 % lost).
        let a_sender = SenderStats {
            ssrc: a_ssrc,
            packets: 250,
            octets: 40_000,
            timestamp: 1234,
        };
        let report = alice.report(
            t0,
            ntp0,
            Some(a_sender),
            Some((b_ssrc, &jitter(190, 10, (1 << 16) + 200, 80))),
        );
        assert!(is_rtcp(&report));
        assert!(
            alice.next_report(t0) >= t0 + Duration::from_millis(2500)
                && alice.next_report(t0) <= t0 + Duration::from_millis(7500)
        );

        // Bob reads it 30 ms later; it tells him about his own stream.
        let later = |ms: u64| (t0 + Duration::from_millis(ms), ntp0 + (ms << 32) / 1000);
        let (t1, n1) = later(30);
        bob.handle(t1, n1, Some(b_ssrc), &report).unwrap();
        let seen = bob.stats();
        assert!((seen.remote_fraction_lost - 0.05).abs() < 0.01, "{seen:?}");
        assert_eq!(seen.remote_cumulative_lost, 10);
        assert!((seen.remote_jitter_ms - 10.0).abs() < 0.01);
        assert_eq!(
            seen.rtt_ms, None,
            "Alice has not seen a report of Bob's yet"
        );

        // Bob answers 100 ms after receiving; Alice gets it 30 ms later: RTT 60 ms.
        let (t2, n2) = later(130);
        let b_sender = SenderStats {
            ssrc: b_ssrc,
            packets: 200,
            octets: 32_000,
            timestamp: 99,
        };
        let answer = bob.report(
            t2,
            n2,
            Some(b_sender),
            Some((a_ssrc, &jitter(250, 0, (1 << 16) + 250, 0))),
        );
        let (t3, n3) = later(160);
        alice.handle(t3, n3, Some(a_ssrc), &answer).unwrap();
        let rtt = alice.stats().rtt_ms.expect("RTT from LSR/DLSR");
        assert!((rtt - 60.0).abs() < 1.0, "RTT {rtt} ms");
        assert_eq!(alice.stats().remote_fraction_lost, 0.0);
    }

    #[test]
    fn receiver_reports_bye_and_garbage() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(8000, 3);
        let rr = s.report(t0, 0, None, None);
        assert!(!rr.is_empty() && is_rtcp(&rr));
        assert_eq!(rr[1], 201, "a receiver report when we sent nothing");
        let bye = [0x81, 203, 0, 1, 0, 0, 0, 9];
        s.handle(t0, 0, Some(1), &bye).unwrap();
        assert!(s.stats().bye);
        assert_eq!(
            s.handle(t0, 0, Some(1), &[0x80, 200, 0, 40]),
            Err(MediaError::BadRtcp)
        );
        assert_eq!(s.handle(t0, 0, Some(1), &[]), Err(MediaError::BadRtcp));
        assert!(
            !is_rtcp(&[0x80, 0, 0, 1, 0, 0, 0, 0]),
            "RTP with payload type 0"
        );
    }

    proptest::proptest! {
        #[test]
        fn handle_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut s = RtcpSession::new(8000, 4);
            let _ = s.handle(Instant::now(), 0, Some(1), &bytes);
        }
    }
}
