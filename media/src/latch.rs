//! Symmetric RTP (RFC 4961) with a guard against hijacking: a leg's media goes back to the
//! address its RTP really comes from (so phones behind NAT are reached), latched once, on the
//! first valid packet. After that, packets from any other address are refused, unless the
//! latched source has fallen silent (a NAT rebinding or a roaming phone): then a packet that
//! continues the same stream (same SSRC, sequence number just after the last) moves the latch.
//! A phone that restarts its stream (new SSRC) is followed only from the latched address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the latched source must be silent before another address may take over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(2);
/// How far ahead of the last sequence number a relatching packet may be.
const SEQUENCE_WINDOW: u16 = 200;

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched source: accept.
    Accept,
    /// The first packet, or the stream moved: accept and send to this address from now on.
    Latch(SocketAddr),
    /// From another address while the latched source is alive, or not continuing its stream.
    Hijack,
    /// Another SSRC from another address.
    ForeignSsrc,
}

/// The latch of one leg.
#[derive(Debug, Default)]
pub struct Latch {
    remote: Option<SocketAddr>,
    ssrc: Option<u32>,
    last_sequence: u16,
    last_seen: Option<Instant>,
}

impl Latch {
    /// The SSRC of the stream followed, if any.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// The latched address, if any.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Decides on a valid RTP packet from `from`.
    pub fn check(&mut self, now: Instant, from: SocketAddr, ssrc: u32, sequence: u16) -> Verdict {
        let verdict = match (self.remote, self.ssrc) {
            (None, _) | (_, None) => Verdict::Latch(from),
            (Some(remote), Some(_)) if remote == from => Verdict::Accept,
            (Some(_), Some(locked)) if locked != ssrc => return Verdict::ForeignSsrc,
            (Some(_), Some(_)) => {
                let silent = self
                    .last_seen
                    .is_none_or(|at| now.saturating_duration_since(at) >= RELATCH_AFTER);
                let ahead = sequence.wrapping_sub(self.last_sequence);
                if silent && (1..=SEQUENCE_WINDOW).contains(&ahead) {
                    Verdict::Latch(from)
                } else {
                    return Verdict::Hijack;
                }
            }
        };
        if let Verdict::Latch(addr) = verdict {
            self.remote = Some(addr);
        }
        self.ssrc = Some(ssrc);
        self.last_sequence = sequence;
        self.last_seen = Some(now);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_once_and_refuses_others_while_the_source_lives() {
        let t0 = Instant::now();
        let (phone, attacker, moved): (SocketAddr, SocketAddr, SocketAddr) = (
            "10.0.0.1:4000".parse().unwrap(),
            "10.6.6.6:4000".parse().unwrap(),
            "10.0.0.9:5000".parse().unwrap(),
        );
        let mut latch = Latch::default();
        assert_eq!(latch.check(t0, phone, 7, 100), Verdict::Latch(phone));
        assert_eq!(
            latch.check(t0 + Duration::from_millis(20), phone, 7, 101),
            Verdict::Accept
        );
        // Same SSRC, next sequence, from elsewhere, while the phone still sends: a hijack.
        assert_eq!(
            latch.check(t0 + Duration::from_millis(30), attacker, 7, 102),
            Verdict::Hijack
        );
        assert_eq!(
            latch.check(t0 + Duration::from_millis(30), attacker, 8, 1),
            Verdict::ForeignSsrc
        );
        assert_eq!(latch.remote(), Some(phone));
        // The phone goes silent for 2 s, then its stream continues from a new address.
        let later = t0 + Duration::from_millis(20) + RELATCH_AFTER;
        assert_eq!(
            latch.check(later, attacker, 7, 40_000),
            Verdict::Hijack,
            "not continuing the stream"
        );
        assert_eq!(latch.check(later, moved, 7, 105), Verdict::Latch(moved));
        assert_eq!(
            latch.check(later + Duration::from_millis(20), phone, 7, 106),
            Verdict::Hijack
        );
        // A restarted stream (new SSRC) from the latched address is followed.
        assert_eq!(
            latch.check(later + Duration::from_millis(40), moved, 9, 5),
            Verdict::Accept
        );
    }
}
