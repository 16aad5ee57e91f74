//! An adaptive jitter buffer (pure): reorders packets by sequence number, releases one per 20 ms
//! tick, and keeps just enough delay for the network's jitter.
//!
//! Each packet's arrival time against its RTP timestamp gives its transit; its delay relative to
//! the fastest packet of the last two seconds goes into a histogram that forgets (factor 0.99
//! per packet, a memory of about two seconds). The target delay is the 95th percentile of that
//! delay plus one frame, within the configured bounds. Playout follows it: more than a frame
//! below target, a tick plays a concealed frame instead of a packet (the buffer grows); when the
//! shallowest the buffer was over the last half second is above target, one packet is dropped
//! (it shrinks, without reacting to a single burst). RFC 3550 interarrival jitter is kept for
//! RTCP.
//!
//! Handles reordering, duplicates (counted, dropped), 16-bit sequence and 32-bit timestamp
//! wrap, a new SSRC (the buffer starts over) and a marker bit after a pause (a new talkspurt).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Delay histogram bin width.
const BIN_MS: f64 = 10.0;
/// Histogram bins (delays beyond the last bin land in it).
const BINS: usize = 100;
/// Per-packet forgetting factor of the delay histogram.
const FORGET: f64 = 0.99;
/// The share of packets the target delay must cover.
const QUANTILE: f64 = 0.95;
/// The window of the fastest transit.
const MIN_WINDOW: Duration = Duration::from_secs(2);
/// Ticks over which the buffer must stay above target before one packet is dropped.
const SHRINK_WINDOW: u32 = 25;
/// Frame length.
const FRAME_MS: f64 = 20.0;

/// Bounds of the buffer's target delay (`media.jitter_min_ms`, `media.jitter_max_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The least delay kept, even on a perfect network.
    pub min: Duration,
    /// The most delay kept, however bad the network.
    pub max: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
        }
    }
}

/// What one packet carried besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP marker bit (first packet of a talkspurt).
    pub marker: bool,
    /// When it arrived.
    pub arrival: Instant,
}

/// Counters and gauges of one buffer, for the API, metrics and RTCP.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Packets played out.
    pub played: u64,
    /// Packets never received (RFC 3550: expected minus received, from the sequence numbers).
    pub lost: u64,
    /// Ticks with nothing to play while playing: a loss, a late packet, or growing the buffer.
    pub concealed: u64,
    /// Packets that arrived after their slot was played or concealed.
    pub late: u64,
    /// Packets received twice.
    pub duplicated: u64,
    /// Packets dropped to shrink the buffer or because it was full.
    pub discarded: u64,
    /// Delay buffered now, in ms: the frames waiting behind the one played this tick.
    pub depth_ms: f64,
    /// The depth the buffer aims at now, in ms (comparable with `depth_ms`).
    pub target_ms: f64,
    /// RFC 3550 interarrival jitter, in ms.
    pub jitter_ms: f64,
    /// RFC 3550 jitter in timestamp units (for RTCP receiver reports).
    pub jitter_units: u32,
    /// The highest extended sequence number received (for RTCP).
    pub highest_sequence: u64,
}

/// What a tick plays.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<T> {
    /// The next packet.
    Packet(T),
    /// The next packet is missing (lost, late or the buffer is growing): conceal it. The packet
    /// after it is available through [`JitterBuffer::upcoming`] (for Opus FEC).
    Missing,
    /// Not playing (nothing received yet, or the sender paused): silence.
    Idle,
}

/// Reorders packets by extended sequence number and releases them at the tick rate.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    clock_rate: u32,
    capacity: usize,
    packets: Queue<T>,
    ssrc: Option<u32>,
    /// Highest extended sequence received.
    highest: Option<u64>,
    /// The first extended sequence received (for the expected count).
    first: Option<u64>,
    /// The next sequence to play; `None` while priming.
    next: Option<u64>,
    /// Sequences played or concealed recently (bit i: `next - 1 - i`), to tell late from duplicate.
    history: u64,
    consecutive_missing: u32,
    /// (arrival, transit ms) of recent packets, increasing transit: the window's minimum first.
    fastest: VecDeque<(Instant, f64)>,
    /// Forgetting histogram of delays relative to the fastest packet.
    histogram: [f64; BINS],
    /// The weight of the newest packet in `histogram`.
    weight: f64,
    /// The sum of `histogram`'s bins, kept as they change (the target is read every tick).
    total: f64,
    /// Packets arrived since the target was last computed.
    target_stale: bool,
    /// RFC 3550 state: last (arrival seconds, timestamp) and J in timestamp units.
    last_transit: Option<f64>,
    jitter: f64,
    /// Extends 32-bit timestamps across wraps.
    timestamp_base: Option<(u32, i64)>,
    epoch: Option<Instant>,
    /// Ticks in the current shrink window, and the least depth seen in it.
    window_ticks: u32,
    window_min: usize,
    target_frames: usize,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// A buffer for a stream with RTP clock `clock_rate`, holding at most `capacity` packets.
    pub fn new(config: JitterConfig, clock_rate: u32, capacity: usize) -> JitterBuffer<T> {
        let min_frames = frames(config.min).max(1);
        JitterBuffer {
            config,
            clock_rate: clock_rate.max(1),
            capacity: capacity.max(min_frames + 1),
            packets: Queue::with_capacity(capacity.max(min_frames + 1) + 1),
            ssrc: None,
            highest: None,
            first: None,
            next: None,
            history: 0,
            consecutive_missing: 0,
            fastest: VecDeque::new(),
            histogram: [0.0; BINS],
            weight: 1.0,
            total: 0.0,
            target_stale: false,
            last_transit: None,
            jitter: 0.0,
            timestamp_base: None,
            epoch: None,
            window_ticks: 0,
            window_min: usize::MAX,
            target_frames: min_frames,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far, with the current depth and target.
    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        stats.depth_ms = self.depth_frames() as f64 * FRAME_MS;
        stats.target_ms = self.target_frames.saturating_sub(1) as f64 * FRAME_MS;
        stats.jitter_ms = self.jitter * 1000.0 / f64::from(self.clock_rate);
        stats.jitter_units = self.jitter as u32;
        stats.highest_sequence = self.highest.unwrap_or(0);
        stats.lost = match (self.first, self.highest) {
            (Some(first), Some(highest)) => {
                (highest - first + 1).saturating_sub(self.stats.received)
            }
            _ => 0,
        };
        stats
    }

    /// Whether playout has started (a missing packet now is a loss, not priming).
    pub fn is_playing(&self) -> bool {
        self.next.is_some()
    }

    /// Whether the packet due next is here (false while priming: a packet more may start
    /// playout).
    pub fn next_ready(&self) -> bool {
        self.next.is_some_and(|next| self.packets.contains(next))
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet waits.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The packet due right after the one a [`Playout::Missing`] stood for, if it is here.
    pub fn upcoming(&self) -> Option<&T> {
        self.next.and_then(|n| self.packets.get(n))
    }

    /// Frames from the next to play to the newest received.
    fn depth_frames(&self) -> usize {
        match (self.next, self.highest) {
            (Some(next), Some(highest)) if highest >= next => (highest - next + 1) as usize,
            (None, _) => self.packets.len(),
            _ => 0,
        }
    }

    /// Queues a packet.
    pub fn push(&mut self, info: PacketInfo, packet: T) {
        if self.ssrc.is_some_and(|s| s != info.ssrc) {
            self.restart();
        }
        self.ssrc = Some(info.ssrc);
        let seq = self.extend_sequence(info.sequence);
        // A new talkspurt after the sender paused: play from it rather than wait for the gap.
        if info.marker
            && self.next.is_some()
            && self.packets.is_empty()
            && seq > self.next.unwrap_or(0)
        {
            self.next = None;
        }
        if let Some(next) = self.next
            && seq < next
        {
            let age = next - 1 - seq;
            if age < 64 && self.history & (1 << age) != 0 {
                self.stats.duplicated += 1;
            } else {
                self.stats.late += 1;
                self.stats.received += 1;
                self.mark_received(seq);
            }
            return;
        }
        if self.packets.contains(seq) {
            self.stats.duplicated += 1;
            return;
        }
        self.stats.received += 1;
        self.first = Some(self.first.map_or(seq, |f| f.min(seq)));
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.measure(info);
        self.packets.insert(seq, packet);
        while self.packets.len() > self.capacity {
            if let Some((seq, _)) = self.packets.pop_first() {
                self.stats.discarded += 1;
                if let Some(next) = self.next.as_mut() {
                    *next = (*next).max(seq + 1);
                }
            }
        }
    }

    /// The packet for this tick.
    pub fn pop(&mut self) -> Playout<T> {
        self.update_target();
        let next = match self.next {
            Some(next) => next,
            None if self.depth_frames() >= self.target_frames => match self.packets.first() {
                Some(first) => first,
                None => return Playout::Idle,
            },
            None => return Playout::Idle,
        };
        // Frames available, counting the one due now.
        let depth = match self.highest {
            Some(highest) if highest >= next => (highest - next + 1) as usize,
            _ => 0,
        };
        // Grow: hold the packet back one tick while more than a frame short of the target.
        if self.next.is_some() && depth + 1 < self.target_frames && self.packets.contains(next) {
            self.stats.concealed += 1;
            return Playout::Missing;
        }
        // Shrink: when the buffer stayed above target for a whole window, drop one packet.
        self.window_ticks += 1;
        self.window_min = self.window_min.min(depth);
        let mut next = next;
        if self.window_ticks >= SHRINK_WINDOW {
            if self.window_min > self.target_frames && self.packets.contains(next) && depth > 1 {
                self.packets.remove(next);
                self.stats.discarded += 1;
                self.advance(next, true);
                next += 1;
            }
            self.window_ticks = 0;
            self.window_min = usize::MAX;
        }
        if let Some(packet) = self.packets.remove(next) {
            self.advance(next, true);
            self.consecutive_missing = 0;
            self.stats.played += 1;
            return Playout::Packet(packet);
        }
        self.advance(next, false);
        self.consecutive_missing += 1;
        if self.packets.is_empty() && self.consecutive_missing as usize > self.target_frames.max(3)
        {
            // The sender paused (or went away): prime again when it resumes.
            self.next = None;
            return Playout::Idle;
        }
        if let Some(first) = self.packets.first()
            && self.consecutive_missing as usize > self.target_frames
            && first > next + 1
        {
            // A jump in sequence numbers: resynchronise instead of waiting through the gap.
            self.next = Some(first);
        }
        self.stats.concealed += 1;
        Playout::Missing
    }

    /// Moves playout past `seq`, remembering whether it was received.
    fn advance(&mut self, seq: u64, received: bool) {
        self.history = (self.history << 1) | u64::from(received);
        self.next = Some(seq + 1);
    }

    fn mark_received(&mut self, seq: u64) {
        if let Some(next) = self.next {
            let age = next - 1 - seq;
            if age < 64 {
                self.history |= 1 << age;
            }
        }
    }

    /// Forgets the stream (a new SSRC).
    fn restart(&mut self) {
        self.packets.clear();
        self.highest = None;
        self.first = None;
        self.next = None;
        self.history = 0;
        self.timestamp_base = None;
        self.last_transit = None;
        self.fastest.clear();
    }

    fn extend_sequence(&self, sequence: u16) -> u64 {
        match self.highest {
            None => u64::from(sequence) + (1 << 16),
            Some(highest) => {
                let candidate = (highest & !0xFFFF) | u64::from(sequence);
                let candidate = if candidate + 0x8000 < highest {
                    candidate + (1 << 16)
                } else if candidate > highest + 0x8000 && candidate >= (1 << 16) {
                    candidate - (1 << 16)
                } else {
                    candidate
                };
                candidate.max(1)
            }
        }
    }

    /// Updates the delay histogram and RFC 3550 jitter with one arrival (the target follows in
    /// the next `pop`).
    fn measure(&mut self, info: PacketInfo) {
        let epoch = *self.epoch.get_or_insert(info.arrival);
        let arrival_s = info.arrival.saturating_duration_since(epoch).as_secs_f64();
        let timestamp = self.extend_timestamp(info.timestamp);
        let clock = f64::from(self.clock_rate);
        // Transit in ms (arrival minus media time; only differences matter).
        let transit = arrival_s * 1000.0 - timestamp as f64 * 1000.0 / clock;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() * clock / 1000.0;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);

        while self
            .fastest
            .front()
            .is_some_and(|(at, _)| info.arrival.saturating_duration_since(*at) > MIN_WINDOW)
        {
            self.fastest.pop_front();
        }
        while self.fastest.back().is_some_and(|(_, t)| *t >= transit) {
            self.fastest.pop_back();
        }
        self.fastest.push_back((info.arrival, transit));
        let fastest = self.fastest.front().map_or(transit, |(_, t)| *t);
        let delay = (transit - fastest).max(0.0);
        // Forgetting without touching every bin: each new packet weighs 1/FORGET times the one
        // before (only the bins' proportions matter); rescale before the weights overflow.
        self.weight /= FORGET;
        if self.weight > 1e200 {
            for bin in &mut self.histogram {
                *bin /= self.weight;
            }
            self.total /= self.weight;
            self.weight = 1.0;
        }
        self.histogram[((delay / BIN_MS) as usize).min(BINS - 1)] += self.weight;
        self.total += self.weight;
        self.target_stale = true;
    }

    /// Recomputes the target from the histogram, once per tick at most (on the mixer thread).
    fn update_target(&mut self) {
        if !std::mem::take(&mut self.target_stale) {
            return;
        }
        let total = self.total;
        let mut cumulative = 0.0;
        let mut quantile_ms = 0.0;
        for (i, bin) in self.histogram.iter().enumerate() {
            cumulative += bin;
            if cumulative >= QUANTILE * total {
                quantile_ms = (i + 1) as f64 * BIN_MS;
                break;
            }
        }
        let target = Duration::from_secs_f64((quantile_ms + FRAME_MS) / 1000.0)
            .clamp(self.config.min, self.config.max);
        self.target_frames = frames(target).max(1);
    }

    fn extend_timestamp(&mut self, timestamp: u32) -> i64 {
        match self.timestamp_base {
            None => {
                self.timestamp_base = Some((timestamp, 0));
                0
            }
            Some((last, extended)) => {
                let step = i64::from(timestamp.wrapping_sub(last) as i32);
                let now = extended + step;
                self.timestamp_base = Some((timestamp, now));
                now
            }
        }
    }
}

/// Whole frames covering `d`, rounded up.
fn frames(d: Duration) -> usize {
    (d.as_secs_f64() * 1000.0 / FRAME_MS).ceil() as usize
}

/// Packets in order of extended sequence number. A buffer holds a handful, arriving mostly in
/// order: a sorted ring that keeps its allocation does every operation in a step or two and
/// allocates nothing per packet (a tree map allocated a node whenever it refilled).
#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<(u64, T)>,
}

impl<T> Queue<T> {
    fn with_capacity(capacity: usize) -> Queue<T> {
        Queue {
            items: VecDeque::with_capacity(capacity),
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn clear(&mut self) {
        self.items.clear();
    }

    /// Where `seq` is, or would go. Packets mostly arrive in order and play from the front:
    /// those two cases need no search.
    fn find(&self, seq: u64) -> Result<usize, usize> {
        match (self.items.front(), self.items.back()) {
            (Some((first, _)), _) if *first == seq => Ok(0),
            (_, Some((last, _))) if *last < seq => Err(self.items.len()),
            (None, _) => Err(0),
            _ => self.items.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    fn get(&self, seq: u64) -> Option<&T> {
        self.find(seq).ok().map(|i| &self.items[i].1)
    }

    fn contains(&self, seq: u64) -> bool {
        self.find(seq).is_ok()
    }

    /// Inserts `item` at `seq` (replacing one already there).
    fn insert(&mut self, seq: u64, item: T) {
        match self.find(seq) {
            Ok(i) => self.items[i].1 = item,
            Err(i) => self.items.insert(i, (seq, item)),
        }
    }

    fn remove(&mut self, seq: u64) -> Option<T> {
        let i = self.find(seq).ok()?;
        self.items.remove(i).map(|(_, item)| item)
    }

    fn first(&self) -> Option<u64> {
        self.items.front().map(|(s, _)| *s)
    }

    fn pop_first(&mut self) -> Option<(u64, T)> {
        self.items.pop_front()
    }
}

#[cfg(test)]
mod tests;
