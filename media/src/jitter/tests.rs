//! The jitter buffer against a simulated network on a virtual clock.

use super::*;

/// A deterministic pseudo-random source (xorshift), uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One sender packet every 20 ms from `start_seq`, through a network that delays each by
/// `delay(i)` ms (or drops it when `None`); the receiver ticks every 20 ms. Returns what each
/// tick played (`Some(i)` for packet i) and the stats after each second.
struct Sim {
    buffer: JitterBuffer<u64>,
    t0: Instant,
    start_seq: u16,
    start_ts: u32,
    ssrc: u32,
    sent: u64,
    in_flight: Vec<(f64, u64)>,
    played: Vec<Option<u64>>,
    tick: u64,
}

impl Sim {
    fn new(start_seq: u16, start_ts: u32) -> Sim {
        Sim {
            buffer: JitterBuffer::new(JitterConfig::default(), 8000, 50),
            t0: Instant::now(),
            start_seq,
            start_ts,
            ssrc: 1,
            sent: 0,
            in_flight: Vec::new(),
            played: Vec::new(),
            tick: 0,
        }
    }

    /// Runs `ms` of time; `delay` decides each new packet's fate.
    fn run(&mut self, ms: u64, mut delay: impl FnMut(u64) -> Option<f64>) {
        let end = self.tick * 20 + ms;
        // The receiver ticks 7 ms after each send instant, like a mixer out of phase.
        while self.tick * 20 < end {
            let now_ms = self.tick as f64 * 20.0 + 7.0;
            while (self.sent as f64) * 20.0 <= now_ms {
                if let Some(d) = delay(self.sent) {
                    self.in_flight
                        .push((self.sent as f64 * 20.0 + d, self.sent));
                }
                self.sent += 1;
            }
            self.in_flight.sort_by(|a, b| a.0.total_cmp(&b.0));
            while self.in_flight.first().is_some_and(|(at, _)| *at <= now_ms) {
                let (at, i) = self.in_flight.remove(0);
                let info = PacketInfo {
                    sequence: self.start_seq.wrapping_add(i as u16),
                    timestamp: self.start_ts.wrapping_add(i as u32 * 160),
                    ssrc: self.ssrc,
                    marker: i == 0,
                    arrival: self.t0 + Duration::from_secs_f64(at / 1000.0),
                };
                self.buffer.push(info, i);
            }
            self.played.push(match self.buffer.pop() {
                Playout::Packet(i) => Some(i),
                _ => None,
            });
            self.tick += 1;
        }
    }
}

#[test]
fn a_clean_network_plays_everything_in_order_at_the_minimum_delay() {
    let mut sim = Sim::new(65530, u32::MAX - 800);
    sim.run(10_000, |_| Some(3.0));
    let played: Vec<u64> = sim.played.iter().flatten().copied().collect();
    assert_eq!(
        played,
        (0..played.len() as u64).collect::<Vec<_>>(),
        "in order, across the sequence and timestamp wraps"
    );
    assert!(played.len() >= 495, "{}", played.len());
    let stats = sim.buffer.stats();
    assert_eq!((stats.lost, stats.late, stats.duplicated), (0, 0, 0));
    assert!(
        stats.depth_ms <= 40.0 && stats.target_ms <= 40.0,
        "{stats:?}"
    );
    assert!(stats.jitter_ms < 1.0, "{stats:?}");
}

#[test]
fn reordering_and_duplicates_are_absorbed_and_counted() {
    let mut sim = Sim::new(100, 0);
    // Every 10th packet is 15 ms late (arrives after the next one); every 7th arrives twice.
    let mut twice = Vec::new();
    sim.run(4_000, |i| Some(if i % 10 == 5 { 18.0 } else { 2.0 }));
    for (i, &p) in sim.played.iter().enumerate().skip(10) {
        if let Some(p) = p {
            twice.push(p);
            let _ = i;
        }
    }
    let stats = sim.buffer.stats();
    assert_eq!(stats.lost, 0);
    let info = PacketInfo {
        sequence: 100 + 150,
        timestamp: 150 * 160,
        ssrc: 1,
        marker: false,
        arrival: sim.t0 + Duration::from_secs(5),
    };
    sim.buffer.push(info, 150);
    assert_eq!(
        sim.buffer.stats().duplicated,
        1,
        "a packet already played, again"
    );
    let played: Vec<u64> = sim.played.iter().flatten().copied().collect();
    let mut sorted = played.clone();
    sorted.sort_unstable();
    assert_eq!(played, sorted, "reordered packets play in sequence");
}

#[test]
fn losses_are_concealed_and_counted() {
    let mut sim = Sim::new(0, 0);
    let mut rng = Rng(42);
    sim.run(20_000, |_| (rng.next() >= 0.05).then_some(2.0));
    let stats = sim.buffer.stats();
    let rate = stats.lost as f64 / 1000.0;
    assert!((0.03..0.07).contains(&rate), "loss {rate} {stats:?}");
    assert!(stats.concealed >= stats.lost, "{stats:?}");
    assert!(
        stats.concealed <= stats.lost + 20,
        "concealment beyond the losses: {stats:?}"
    );
}

#[test]
fn the_delay_follows_the_jitter_up_and_back_down() {
    let mut sim = Sim::new(0, 0);
    let mut rng = Rng(7);
    // Uniform 0..120 ms extra delay: RFC 3550 jitter about 40 ms.
    sim.run(10_000, |_| Some(rng.next() * 120.0));
    let jittery = sim.buffer.stats();
    eprintln!("under jitter: {jittery:?}");
    assert!((30.0..50.0).contains(&jittery.jitter_ms), "{jittery:?}");
    assert!(
        jittery.target_ms > 60.0 && jittery.depth_ms > 60.0,
        "{jittery:?}"
    );
    // Few late packets: the buffer covers the jitter.
    assert!(jittery.late < 40, "{jittery:?}");
    let base = sim.buffer.stats().concealed;
    sim.run(10_000, |_| Some(5.0));
    let calm = sim.buffer.stats();
    assert!(
        calm.target_ms < 40.0 && calm.depth_ms < 40.0,
        "within 10 s of calm: {calm:?}"
    );
    assert!(
        calm.concealed - base < 20,
        "shrinking drops packets, it does not conceal: {calm:?}"
    );
    assert!(calm.jitter_ms < 5.0, "{calm:?}");
}

#[test]
fn a_new_ssrc_starts_over_and_the_bounds_hold() {
    let mut sim = Sim::new(1000, 0);
    sim.run(2_000, |_| Some(2.0));
    sim.ssrc = 2;
    sim.start_seq = 40000;
    sim.run(2_000, |_| Some(2.0));
    let stats = sim.buffer.stats();
    assert!(
        stats.lost < 5,
        "no phantom loss across the SSRC change: {stats:?}"
    );
    assert!(sim.played[150..].iter().filter(|p| p.is_some()).count() >= 45);

    let mut sim = Sim::new(0, 0);
    let mut rng = Rng(3);
    sim.run(5_000, |_| Some(rng.next() * 1000.0));
    assert!(
        sim.buffer.stats().target_ms <= 200.0,
        "jitter_max_ms caps the delay"
    );
}

#[test]
fn next_ready_says_whether_the_packet_due_next_is_here() {
    let mut buffer: JitterBuffer<u64> = JitterBuffer::new(JitterConfig::default(), 8000, 50);
    let t0 = Instant::now();
    let info = |i: u16| PacketInfo {
        sequence: 100 + i,
        timestamp: u32::from(i) * 160,
        ssrc: 7,
        marker: i == 0,
        arrival: t0 + Duration::from_millis(20 * u64::from(i)),
    };
    assert!(!buffer.next_ready(), "empty");
    for i in 0..4 {
        buffer.push(info(i), u64::from(i));
    }
    assert!(!buffer.next_ready(), "priming: playout has not started");
    assert!(matches!(buffer.pop(), Playout::Packet(0)));
    assert!(buffer.next_ready(), "packet 1 is due next and here");
    for _ in 1..4 {
        assert!(matches!(buffer.pop(), Playout::Packet(_)));
    }
    assert!(!buffer.next_ready(), "packet 4 has not come");
    buffer.push(info(5), 5);
    assert!(!buffer.next_ready(), "packet 5 is here, 4 is due");
    buffer.push(info(4), 4);
    assert!(buffer.next_ready());
}
