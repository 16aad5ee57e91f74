//! A small fixed-delay jitter buffer: reorders by sequence number and plays out one packet per
//! 20 ms tick. Adaptive delay comes with the media-plane issue; this one keeps `depth` packets
//! of delay and never grows beyond `capacity`.

use std::collections::BTreeMap;

/// Jitter buffer counters, for metrics and RTCP later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets played out.
    pub played: u64,
    /// Ticks with no packet to play while playing (loss or underrun).
    pub missing: u64,
    /// Packets that arrived after their slot was played.
    pub late: u64,
    /// Packets dropped because the buffer was full, or duplicates.
    pub discarded: u64,
}

/// Reorders packets by extended sequence number and releases them at the tick rate.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    depth: usize,
    capacity: usize,
    packets: BTreeMap<u64, T>,
    /// Highest extended sequence seen, to extend the next 16-bit one.
    highest: Option<u64>,
    /// The next sequence to play; `None` while priming.
    next: Option<u64>,
    consecutive_missing: u32,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// A buffer that starts playing once `depth` packets are queued and holds at most `capacity`.
    pub fn new(depth: usize, capacity: usize) -> JitterBuffer<T> {
        JitterBuffer {
            depth: depth.max(1),
            capacity: capacity.max(depth.max(1)),
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            consecutive_missing: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet waits.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Extends a 16-bit sequence number to the one nearest the highest seen (RFC 3550 A.1).
    fn extend(&self, sequence: u16) -> u64 {
        let Some(highest) = self.highest else { return u64::from(sequence) + (1 << 16) };
        let base = highest & !0xFFFF;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        candidates
            .into_iter()
            .map(|c| c + u64::from(sequence))
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(base + u64::from(sequence))
    }

    /// Queues one packet.
    pub fn push(&mut self, sequence: u16, packet: T) {
        let ext = self.extend(sequence);
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            return;
        }
        if self.packets.contains_key(&ext) {
            self.stats.discarded += 1;
            return;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.packets.insert(ext, packet);
        while self.packets.len() > self.capacity {
            // Too far behind the sender: drop the oldest and move on.
            if let Some((seq, _)) = self.packets.pop_first() {
                self.stats.discarded += 1;
                if let Some(next) = self.next.as_mut() {
                    *next = (*next).max(seq + 1);
                }
            }
        }
    }

    /// The packet for this tick, or `None` (silence) when priming or when it is missing.
    pub fn pop(&mut self) -> Option<T> {
        let next = match self.next {
            Some(next) => next,
            None if self.packets.len() >= self.depth => *self.packets.keys().next()?,
            None => return None,
        };
        if let Some(packet) = self.packets.remove(&next) {
            self.next = Some(next + 1);
            self.consecutive_missing = 0;
            self.stats.played += 1;
            return Some(packet);
        }
        self.stats.missing += 1;
        self.consecutive_missing += 1;
        self.next = Some(next + 1);
        if self.packets.is_empty() && self.consecutive_missing as usize > self.depth {
            // The sender paused (or went away): prime again when it resumes.
            self.next = None;
        } else if let Some(&first) = self.packets.keys().next() {
            if self.consecutive_missing as usize > self.depth && first > next + 1 {
                // A jump in sequence numbers: resynchronise instead of waiting through the gap.
                self.next = Some(first);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorders_within_depth() {
        let mut jb = JitterBuffer::new(2, 10);
        jb.push(11, 11);
        assert_eq!(jb.pop(), None, "priming");
        jb.push(10, 10);
        jb.push(13, 13);
        jb.push(12, 12);
        assert_eq!([jb.pop(), jb.pop(), jb.pop(), jb.pop()], [Some(10), Some(11), Some(12), Some(13)]);
        assert_eq!(jb.stats().played, 4);
    }

    #[test]
    fn loss_gives_silence_and_late_packets_are_dropped() {
        let mut jb = JitterBuffer::new(1, 10);
        jb.push(1, 1);
        jb.push(3, 3);
        assert_eq!(jb.pop(), Some(1));
        assert_eq!(jb.pop(), None);
        jb.push(2, 2);
        assert_eq!(jb.pop(), Some(3));
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().missing, 1);
    }

    #[test]
    fn wraps_around_sequence_numbers() {
        let mut jb = JitterBuffer::new(1, 10);
        for seq in [65534u16, 65535, 0, 1] {
            jb.push(seq, seq);
        }
        let got: Vec<_> = (0..4).filter_map(|_| jb.pop()).collect();
        assert_eq!(got, [65534, 65535, 0, 1]);
    }

    #[test]
    fn bounded_and_resyncs_after_a_jump() {
        let mut jb = JitterBuffer::new(2, 4);
        for seq in 0..10u16 {
            jb.push(seq, seq);
        }
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.pop(), Some(6));
        for seq in 1000..1004u16 {
            jb.push(seq, seq);
        }
        let got: Vec<_> = (0..12).filter_map(|_| jb.pop()).collect();
        assert_eq!(&got[got.len() - 4..], [1000, 1001, 1002, 1003]);
    }
}
