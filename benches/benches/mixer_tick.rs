//! One mixer tick of one room at N G.711 legs (half mu-law, half A-law), with the default voice
//! processing (noise suppression, level control, top-4 mixing, limiter): three legs speak
//! recorded speech, the others send near-silence. Three echo cancellation set-ups:
//! - `aec_off`: no leg echoes, no AEC;
//! - `aec_on_<backend>`: AEC on every leg;
//! - `aec_auto_10pct`: 10 % of the legs echo what the room really sent each of them (decoded,
//!   100 ms late, -10 dB, encoded again: part of the measured tick) and `auto` mode finds them.
//!
//! All G.711 legs: the room mixes at 8 kHz. `aec_off_16k_mix` adds one silent G.722 listener,
//! which brings the room's mix to 16 kHz: what a wideband leg costs a room of telephone callers.
//!
//! Reported per tick; ns per leg per tick = time / N (see README.md).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roundtable_media::codec::{Codec, Decoder, Encoder, LegCodec};
use roundtable_media::jitter::PacketInfo;
use roundtable_media::rtp::RtpPacket;
use roundtable_mixer::{AecMode, AudioConfig, EchoBackend, LegId, Room, RoomConfig};

/// Talkers in every room.
const TALKERS: usize = 3;
/// Speech frames cycled through (8 s).
const FRAMES: usize = 400;

/// Fixture speech, 8 kHz (pairs averaged), as 20 ms frames.
fn speech(name: &str, offset: usize) -> Vec<Vec<i16>> {
    let path = format!(
        "{}/../mixer/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut reader = hound::WavReader::open(&path).expect("speech fixture");
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let half: Vec<i16> = samples
        .chunks(2)
        .map(|p| ((i32::from(p[0]) + i32::from(*p.last().unwrap_or(&0))) / 2) as i16)
        .collect();
    (0..FRAMES)
        .map(|i| half[(offset + i * 160) % (half.len() - 160)..][..160].to_vec())
        .collect()
}

/// One room's per-leg input: an encoded payload per frame index.
struct Inputs {
    payloads: Vec<[Vec<u8>; 2]>,
}

impl Inputs {
    fn new(frames: &[Vec<i16>]) -> Inputs {
        let mut mu = Encoder::new(Codec::Pcmu, 8000, Default::default()).unwrap();
        let mut a = Encoder::new(Codec::Pcma, 8000, Default::default()).unwrap();
        let payloads = frames
            .iter()
            .map(|f| {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                mu.encode(f, &mut x).unwrap();
                a.encode(f, &mut y).unwrap();
                [x, y]
            })
            .collect();
        Inputs { payloads }
    }
}

/// A speakerphone: plays back what it was sent, 100 ms (5 frames) late at -10 dB.
struct EchoingLeg {
    decoder: Decoder,
    encoder: Encoder,
    /// Payloads to send back, oldest first.
    line: VecDeque<Vec<u8>>,
    samples: Vec<i16>,
}

impl EchoingLeg {
    fn new(codec: Codec) -> EchoingLeg {
        let silence = |codec| {
            let mut payload = Vec::new();
            Encoder::new(codec, 8000, Default::default())
                .unwrap()
                .encode(&[0; 160], &mut payload)
                .unwrap();
            payload
        };
        EchoingLeg {
            decoder: Decoder::new(codec, 8000).unwrap(),
            encoder: Encoder::new(codec, 8000, Default::default()).unwrap(),
            line: (0..5).map(|_| silence(codec)).collect(),
            samples: vec![0; 160],
        }
    }

    /// Takes the packet the room sent it this tick.
    fn heard(&mut self, packet: &[u8]) {
        let Ok(packet) = RtpPacket::parse(packet) else {
            return;
        };
        if self
            .decoder
            .decode(packet.payload, &mut self.samples)
            .is_err()
        {
            return;
        }
        self.samples
            .iter_mut()
            .for_each(|s| *s = (f32::from(*s) * 0.316) as i16);
        let mut payload = Vec::new();
        if self.encoder.encode(&self.samples, &mut payload).is_ok() {
            self.line.push_back(payload);
        }
    }
}

struct Setup {
    room: Room,
    legs: usize,
    talkers: Vec<Inputs>,
    echoing: Vec<EchoingLeg>,
    quiet: Inputs,
    seq: u16,
    start: Instant,
}

impl Setup {
    /// A 16 kHz room of `legs` G.711 legs (and a silent G.722 one when `wideband`).
    fn new(
        legs: usize,
        aec: AecMode,
        backend: EchoBackend,
        echoing: usize,
        wideband: bool,
    ) -> Setup {
        let audio = AudioConfig {
            aec,
            aec_backend: backend,
            ..AudioConfig::default()
        };
        let mut room = Room::new(RoomConfig {
            audio,
            ..RoomConfig::at(16000)
        });
        for i in 0..legs {
            let codec = if i % 2 == 0 { Codec::Pcmu } else { Codec::Pcma };
            room.add_leg(LegId(i as u64), LegCodec::plain(codec), i as u64 + 1)
                .unwrap();
        }
        if wideband {
            room.add_leg(
                LegId(legs as u64),
                LegCodec::plain(Codec::G722),
                legs as u64 + 1,
            )
            .unwrap();
        }
        let voices: Vec<Vec<Vec<i16>>> = (0..TALKERS)
            .map(|t| {
                speech(
                    if t % 2 == 0 {
                        "speech-a.wav"
                    } else {
                        "speech-b.wav"
                    },
                    t * 24_000,
                )
            })
            .collect();
        let quiet: Vec<Vec<i16>> = (0..FRAMES)
            .map(|i| {
                (0..160)
                    .map(|k| ((i * 7 + k * 13) % 9) as i16 - 4)
                    .collect()
            })
            .collect();
        Setup {
            room,
            legs,
            talkers: voices.iter().map(|v| Inputs::new(v)).collect(),
            echoing: (legs - echoing..legs)
                .map(|i| EchoingLeg::new(if i % 2 == 0 { Codec::Pcmu } else { Codec::Pcma }))
                .collect(),
            quiet: Inputs::new(&quiet),
            seq: 0,
            start: Instant::now(),
        }
    }

    /// One tick on simulated time: every leg delivers its packet, then the room ticks.
    fn tick(&mut self) {
        let now = self.start + Duration::from_millis(20 * u64::from(self.seq));
        let frame = usize::from(self.seq) % FRAMES;
        let first_echoing = self.legs - self.echoing.len();
        for i in 0..self.legs {
            let echoed;
            let payload: &[u8] = if i < TALKERS {
                &self.talkers[i].payloads[frame][i % 2]
            } else if i >= first_echoing {
                echoed = self.echoing[i - first_echoing]
                    .line
                    .pop_front()
                    .unwrap_or_default();
                &echoed
            } else {
                &self.quiet.payloads[frame][i % 2]
            };
            let info = PacketInfo {
                sequence: self.seq,
                timestamp: u32::from(self.seq) * 160,
                ssrc: i as u32,
                marker: false,
                arrival: now,
            };
            self.room.handle_audio(LegId(i as u64), info, payload);
        }
        self.seq = self.seq.wrapping_add(1);
        self.room.tick(now);
        for (leg, packet) in self.room.packets() {
            if let Some(echoing) = (leg.0 as usize)
                .checked_sub(first_echoing)
                .and_then(|e| self.echoing.get_mut(e))
            {
                echoing.heard(packet);
            }
        }
        while self.room.poll_event().is_some() {}
    }
}

fn mixer_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixer_tick");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut setups = vec![];
    // `cargo test --benches` runs each benchmark once: only the small rooms there.
    let sizes: &[usize] = if std::env::args().any(|a| a == "--bench") {
        &[10, 100, 1000]
    } else {
        &[10]
    };
    for &legs in sizes {
        setups.push(("aec_off", legs, AecMode::Off, EchoBackend::Sonora, 0, false));
        setups.push((
            "aec_auto_10pct",
            legs,
            AecMode::Auto,
            EchoBackend::Sonora,
            legs / 10,
            false,
        ));
        setups.push((
            "aec_on_sonora",
            legs,
            AecMode::On,
            EchoBackend::Sonora,
            0,
            false,
        ));
        if EchoBackend::WebRtc.available() {
            setups.push((
                "aec_on_webrtc",
                legs,
                AecMode::On,
                EchoBackend::WebRtc,
                0,
                false,
            ));
        }
        setups.push((
            "aec_off_16k_mix",
            legs,
            AecMode::Off,
            EchoBackend::Sonora,
            0,
            true,
        ));
    }
    // A mixer thread's share of a 1,200-leg load: 60 rooms of 10, ticked one after another as
    // the thread does. Each room's state is out of the cache by its next tick, as in the load
    // runs; the single-room figures above stay in it.
    if sizes.len() > 1 {
        let mut rooms: Vec<Setup> = (0..60)
            .map(|_| Setup::new(10, AecMode::Off, EchoBackend::Sonora, 0, false))
            .collect();
        for _ in 0..25 {
            rooms.iter_mut().for_each(Setup::tick);
        }
        group.throughput(Throughput::Elements(600));
        group.bench_with_input(
            BenchmarkId::new("aec_off_60_rooms_of_10", 600),
            &600,
            |b, _| b.iter(|| rooms.iter_mut().for_each(Setup::tick)),
        );
    }
    for (name, legs, aec, backend, echoing, wideband) in setups {
        let mut setup = Setup::new(legs, aec, backend, echoing, wideband);
        // Let the echo detector find the echoing legs (3.5 s of history, two checks) and the
        // cancellers start.
        let warm = if aec == AecMode::Auto { 400 } else { 25 };
        for _ in 0..warm {
            setup.tick();
        }
        group.throughput(Throughput::Elements(legs as u64));
        group.bench_with_input(BenchmarkId::new(name, legs), &legs, |b, _| {
            b.iter(|| setup.tick())
        });
    }
    group.finish();
}

criterion_group!(benches, mixer_tick);
criterion_main!(benches);
