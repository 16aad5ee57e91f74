//! Room tests on simulated time: real codecs and RTP packets, no sockets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use roundtable_media::codec::{Decoder, Encoder};
use roundtable_media::rtp::RtpPacket;

use super::*;
use crate::test_audio::speech;

fn tone(rate: u32, freq: f64, amplitude: f64, n0: usize) -> Vec<i16> {
    (0..frame_len(rate))
        .map(|i| {
            (amplitude
                * (2.0 * std::f64::consts::PI * freq * (n0 + i) as f64 / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

fn energy(frame: &[i16]) -> f64 {
    frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len().max(1) as f64
}

/// Power of `frame` at `freq` (Goertzel), normalised like `energy`.
fn power_at(frame: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in frame {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let n = frame.len() as f64;
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) * 2.0 / (n * n)
}

/// A room driven on simulated time by callers that each encode what they say and decode what
/// they are sent.
struct Sim {
    room: Room,
    rate: u32,
    callers: Vec<(LegId, Codec, Encoder, Decoder)>,
    seq: u16,
    start: Instant,
}

impl Sim {
    fn new(config: RoomConfig) -> Sim {
        let mut room = Room::new(config);
        room.set_recording(true, false);
        Sim {
            room,
            rate: config.rate,
            callers: Vec::new(),
            seq: 0,
            start: Instant::now(),
        }
    }

    fn add(&mut self, id: u64, codec: Codec) -> LegId {
        let leg = LegId(id);
        self.room.add_leg(leg, LegCodec::plain(codec), id).unwrap();
        let encoder = Encoder::new(codec, self.rate, Default::default()).unwrap();
        let decoder = Decoder::new(codec, self.rate).unwrap();
        self.callers.push((leg, codec, encoder, decoder));
        leg
    }

    /// One tick: each caller with a frame (at its codec's rate) sends it; returns what every
    /// caller that was sent something decoded.
    fn step(&mut self, said: &HashMap<LegId, Vec<i16>>) -> HashMap<LegId, Vec<i16>> {
        let now = self.start + Duration::from_millis(20 * u64::from(self.seq));
        let mut encoded = Vec::new();
        for (leg, codec, encoder, _) in &mut self.callers {
            if let Some(frame) = said.get(leg) {
                encoder.encode(frame, &mut encoded).unwrap();
                let clock = codec.clock_rate();
                let info = PacketInfo {
                    sequence: self.seq,
                    timestamp: u32::from(self.seq) * clock / 50,
                    ssrc: leg.0 as u32,
                    marker: false,
                    arrival: now,
                };
                self.room.handle_audio(*leg, info, &encoded);
            }
        }
        self.seq += 1;
        self.room.tick(now);
        let mut heard = HashMap::new();
        for (leg, packet) in self.room.packets() {
            let (_, _, _, decoder) = self.callers.iter_mut().find(|c| c.0 == leg).unwrap();
            let p = RtpPacket::parse(packet).unwrap();
            let mut out = vec![0i16; decoder.frame_len()];
            decoder.decode(p.payload, &mut out).unwrap();
            heard.insert(leg, out);
        }
        heard
    }
}

fn plain(rate: u32) -> RoomConfig {
    RoomConfig {
        audio: AudioConfig::plain(),
        ..RoomConfig::at(rate)
    }
}

#[test]
fn a_leg_does_not_hear_itself() {
    let mut sim = Sim::new(plain(16000));
    let a = sim.add(1, Codec::Pcmu);
    let b = sim.add(2, Codec::Pcma);
    let mut heard = HashMap::new();
    for i in 0..6 {
        heard = sim.step(&HashMap::from([(a, tone(8000, 440.0, 8000.0, 160 * i))]));
    }
    assert!(energy(&heard[&a]) < 10.0, "leg 1 hears only silence");
    assert!(energy(&heard[&b]) > 1e6, "leg 2 hears leg 1's tone");
    assert!(energy(sim.room.mix()) > 1e6);

    // On hold leg 1 is neither heard nor sent anything; leg 2 hears silence.
    sim.room
        .update_leg(a, LegCodec::plain(Codec::Pcmu), false, false)
        .unwrap();
    for i in 6..10 {
        heard = sim.step(&HashMap::from([(a, tone(8000, 440.0, 8000.0, 160 * i))]));
    }
    assert_eq!(heard.len(), 1);
    assert!(energy(&heard[&b]) < 100.0, "the held leg is not heard");
}

#[test]
fn telephone_callers_mix_at_8_khz_until_a_wideband_leg_joins() {
    let mut sim = Sim::new(plain(16000));
    let a = sim.add(1, Codec::Pcmu);
    let b = sim.add(2, Codec::Pcma);
    assert_eq!(
        sim.room.mix_rate(),
        8000,
        "two G.711 legs: nothing needs more than 8 kHz"
    );
    let mut t = 0;
    let mut run = |sim: &mut Sim, ticks: usize| {
        let mut heard = HashMap::new();
        for _ in 0..ticks {
            heard = sim.step(&HashMap::from([(a, tone(8000, 1000.0, 8000.0, 160 * t))]));
            t += 1;
        }
        heard
    };
    let heard = run(&mut sim, 10);
    assert!(power_at(&heard[&b], 8000, 1000.0) > 1e7, "b hears a");
    let recorded = sim.room.mix();
    assert_eq!(
        recorded.len(),
        320,
        "the recorded mix stays at the room's rate"
    );
    assert!(
        power_at(recorded, 16000, 1000.0) > 1e7,
        "and holds a's tone at 1 kHz"
    );

    let c = sim.add(3, Codec::G722);
    assert_eq!(
        sim.room.mix_rate(),
        16000,
        "a G.722 leg brings the room to 16 kHz"
    );
    let heard = run(&mut sim, 10);
    assert!(power_at(&heard[&b], 8000, 1000.0) > 1e7, "b still hears a");
    assert!(
        power_at(&heard[&c], 16000, 1000.0) > 1e7,
        "c hears a at its own rate"
    );
    assert!(power_at(sim.room.mix(), 16000, 1000.0) > 1e7);

    sim.room.remove_leg(c);
    sim.callers.retain(|caller| caller.0 != c);
    assert_eq!(sim.room.mix_rate(), 8000, "back to 8 kHz when it leaves");
    let heard = run(&mut sim, 10);
    assert!(
        power_at(&heard[&b], 8000, 1000.0) > 1e7,
        "b hears a after the change"
    );
    assert!(power_at(sim.room.mix(), 16000, 1000.0) > 1e7);
    assert!(energy(&heard[&a]) < 10.0, "a never hears itself");
}

#[test]
fn a_prompt_at_the_rooms_rate_reaches_a_leg_mixed_at_8_khz() {
    let mut sim = Sim::new(plain(16000));
    let a = sim.add(1, Codec::Pcmu);
    let prompt: Arc<[i16]> = (0..10)
        .flat_map(|i| tone(16000, 600.0, 6000.0, 320 * i))
        .collect();
    sim.room.play(a, prompt);
    let mut heard = Vec::new();
    for _ in 0..12 {
        heard.push(sim.step(&HashMap::new())[&a].clone());
    }
    for (t, frame) in heard[..10].iter().enumerate() {
        let p = power_at(frame, 8000, 600.0);
        assert!(p > 1e6, "tick {t}: the prompt's tone at 8 kHz ({p})");
    }
    assert!(energy(&heard[11]) < 10.0, "the prompt ended");
}

#[test]
fn legs_of_different_codecs_hear_each_other_at_their_own_rate() {
    let mut sim = Sim::new(plain(16000));
    let codecs = [Codec::Pcmu, Codec::G722, Codec::Opus];
    let legs: Vec<LegId> = codecs
        .iter()
        .enumerate()
        .map(|(i, c)| sim.add(i as u64, *c))
        .collect();
    // Only the G.722 leg speaks: a 1 kHz tone at 16 kHz.
    let mut heard = HashMap::new();
    for i in 0..15 {
        heard = sim.step(&HashMap::from([(
            legs[1],
            tone(16000, 1000.0, 8000.0, 320 * i),
        )]));
    }
    assert!(
        energy(&heard[&legs[0]]) > 1e6,
        "PCMU leg hears it: {}",
        energy(&heard[&legs[0]])
    );
    assert!(
        energy(&heard[&legs[1]]) < 1e3,
        "the speaker does not: {}",
        energy(&heard[&legs[1]])
    );
    assert!(
        energy(&heard[&legs[2]]) > 1e6,
        "Opus leg hears it: {}",
        energy(&heard[&legs[2]])
    );
    assert_eq!(heard[&legs[0]].len(), 160);
    assert_eq!(heard[&legs[2]].len(), 320);
    // RTP timestamps advance by the codec's clock: 160 for PCMU, 960 for Opus.
    let stamps: Vec<u32> = sim
        .room
        .packets()
        .map(|(_, p)| RtpPacket::parse(p).unwrap().timestamp)
        .collect();
    sim.step(&HashMap::new());
    let next: Vec<u32> = sim
        .room
        .packets()
        .map(|(_, p)| RtpPacket::parse(p).unwrap().timestamp)
        .collect();
    let steps: Vec<u32> = next
        .iter()
        .zip(&stamps)
        .map(|(n, s)| n.wrapping_sub(*s))
        .collect();
    assert_eq!(steps, [160, 160, 960]);
    assert_eq!(sim.room.take_codec_errors(), 0);
}

#[test]
fn a_prompt_plays_until_it_ends() {
    let mut sim = Sim::new(plain(8000));
    let a = sim.add(1, Codec::Pcmu);
    let prompt: Arc<[i16]> = tone(8000, 1000.0, 8000.0, 0)
        .iter()
        .chain(tone(8000, 1000.0, 8000.0, 160).iter())
        .copied()
        .collect();
    sim.room.play(a, prompt);
    let levels: Vec<f64> = (0..3)
        .map(|_| energy(&sim.step(&HashMap::new())[&a]))
        .collect();
    assert!(levels[0] > 1e6 && levels[1] > 1e6, "{levels:?}");
    assert!(
        levels[2] < 10.0,
        "only the (silent) room after the prompt: {levels:?}"
    );
}

#[test]
fn a_prompt_plays_over_the_room_and_stops_only_itself() {
    let mut sim = Sim::new(plain(8000));
    let a = sim.add(1, Codec::Pcmu);
    let b = sim.add(2, Codec::Pcmu);
    let prompt: Arc<[i16]> = (0..50)
        .flat_map(|i| tone(8000, 600.0, 6000.0, 160 * i))
        .collect();
    sim.room.play(a, prompt.clone());
    // b and a both talk while a's prompt plays: a hears b and the prompt, never itself.
    for i in 0..10 {
        let heard = sim.step(&HashMap::from([
            (a, tone(8000, 400.0, 6000.0, 160 * i)),
            (b, tone(8000, 1000.0, 6000.0, 160 * i)),
        ]));
        if i < 3 {
            continue; // b's first packets are still in its jitter buffer
        }
        let (other, own, spoken) = (
            power_at(&heard[&a], 8000, 1000.0),
            power_at(&heard[&a], 8000, 400.0),
            power_at(&heard[&a], 8000, 600.0),
        );
        assert!(
            other > 1e6,
            "tick {i}: a hears b under its prompt ({other})"
        );
        assert!(spoken > 1e6, "tick {i}: a hears its prompt ({spoken})");
        assert!(
            own < other / 1e3,
            "tick {i}: a does not hear itself ({own})"
        );
        assert!(power_at(&heard[&b], 8000, 600.0) < 1e3, "b hears no prompt");
    }
    // Stopping another prompt leaves this one playing; stopping this one ends it.
    let other: Arc<[i16]> = prompt.to_vec().into();
    sim.room.stop_prompt(a, Some(&other));
    let heard = sim.step(&HashMap::from([(b, tone(8000, 1000.0, 6000.0, 1600))]));
    assert!(power_at(&heard[&a], 8000, 600.0) > 1e6, "still playing");
    sim.room.stop_prompt(a, Some(&prompt));
    let heard = sim.step(&HashMap::from([(b, tone(8000, 1000.0, 6000.0, 1760))]));
    assert!(power_at(&heard[&a], 8000, 600.0) < 1e3, "stopped");
    assert!(power_at(&heard[&a], 8000, 1000.0) > 1e6, "the room goes on");
}

/// G.711 mu-law in and out of a frame, as the room sees it.
fn mulaw(frame: &[i16]) -> Vec<i16> {
    let mut encoder = Encoder::new(Codec::Pcmu, 8000, Default::default()).unwrap();
    let mut decoder = Decoder::new(Codec::Pcmu, 8000).unwrap();
    let mut bytes = Vec::new();
    encoder.encode(frame, &mut bytes).unwrap();
    let mut out = vec![0; frame.len()];
    decoder.decode(&bytes, &mut out).unwrap();
    out
}

#[derive(Debug, Clone)]
struct Caller {
    frame: Vec<i16>,
    muted: bool,
    deaf: bool,
}

fn caller() -> impl Strategy<Value = Caller> {
    let loud = proptest::collection::vec(-16000i16..16000, 160);
    let frame = prop_oneof![3 => loud, 1 => Just(vec![0i16; 160])];
    (
        frame,
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(frame, muted, deaf)| Caller { frame, muted, deaf })
}

/// Runs a PCMU room at 8 kHz (no resampling: every step is exact) with steady callers; returns
/// what each heard in the last tick and who was mixed.
fn run_steady(
    callers: &[Caller],
    order: &[usize],
    top_k: usize,
) -> (HashMap<LegId, Vec<i16>>, Vec<LegId>) {
    let mut sim = Sim::new(RoomConfig {
        audio: AudioConfig {
            top_k,
            ..AudioConfig::plain()
        },
        ..RoomConfig::at(8000)
    });
    for &i in order {
        let leg = sim.add(i as u64, Codec::Pcmu);
        let controls = LegControls {
            muted: callers[i].muted,
            deaf: callers[i].deaf,
            ..Default::default()
        };
        sim.room.set_controls(leg, controls);
    }
    let said: HashMap<LegId, Vec<i16>> = callers
        .iter()
        .enumerate()
        .map(|(i, c)| (LegId(i as u64), c.frame.clone()))
        .collect();
    let mut heard = HashMap::new();
    for _ in 0..6 {
        heard = sim.step(&said);
    }
    let mut mixed: Vec<LegId> = sim.room.mixed_talkers().collect();
    mixed.sort();
    (heard, mixed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn each_hears_the_sum_of_the_mixed_talkers_but_itself(callers in proptest::collection::vec(caller(), 1..7), top_k in 0usize..4) {
        let order: Vec<usize> = (0..callers.len()).collect();
        let (heard, mixed) = run_steady(&callers, &order, top_k);
        let talkers = callers.iter().filter(|c| !c.muted && c.frame.iter().any(|&s| s != 0)).count();
        prop_assert_eq!(mixed.len(), if top_k == 0 { talkers } else { talkers.min(top_k) });
        for (i, c) in callers.iter().enumerate() {
            let me = LegId(i as u64);
            prop_assert!(!(c.muted && mixed.contains(&me)), "a muted leg is never mixed");
            let out = &heard[&me];
            if c.deaf {
                prop_assert!(out.iter().all(|&s| s == 0), "a deaf leg hears nothing");
                continue;
            }
            let mut sum = vec![0i32; 160];
            for other in mixed.iter().filter(|&&m| m != me) {
                for (s, x) in sum.iter_mut().zip(mulaw(&callers[other.0 as usize].frame)) {
                    *s += i32::from(x);
                }
            }
            let expected: Vec<i16> = mulaw(&sum.iter().map(|&s| s.clamp(-32768, 32767) as i16).collect::<Vec<_>>());
            prop_assert_eq!(out, &expected, "leg {}", i);
        }
    }

    #[test]
    fn leg_order_does_not_matter(callers in proptest::collection::vec(caller(), 2..6)) {
        let order: Vec<usize> = (0..callers.len()).collect();
        let reversed: Vec<usize> = order.iter().rev().copied().collect();
        prop_assert_eq!(run_steady(&callers, &order, 0), run_steady(&callers, &reversed, 0));
    }
}

#[test]
fn silence_in_silence_out() {
    let mut sim = Sim::new(RoomConfig::at(16000));
    let legs: Vec<LegId> = (0..5).map(|i| sim.add(i, Codec::G722)).collect();
    let said: HashMap<LegId, Vec<i16>> = legs.iter().map(|&l| (l, vec![0; 320])).collect();
    for _ in 0..20 {
        let heard = sim.step(&said);
        assert!(
            heard.values().all(|f| energy(f) < 25.0),
            "{:?}",
            heard.values().map(|f| energy(f)).collect::<Vec<_>>()
        );
        assert!(sim.room.mix().iter().all(|&s| s == 0));
    }
}

#[test]
fn ten_full_scale_talkers_are_limited_not_clipped() {
    let mut sim = Sim::new(RoomConfig {
        audio: AudioConfig {
            top_k: 0,
            ..AudioConfig::plain()
        },
        ..RoomConfig::at(8000)
    });
    sim.room.config.audio.limiter = true;
    sim.room.mix_limiter = Limiter::new(true);
    let legs: Vec<LegId> = (0..11).map(|i| sim.add(i, Codec::Pcmu)).collect();
    for &leg in &legs {
        sim.room
            .legs
            .iter_mut()
            .find(|l| l.id == leg)
            .unwrap()
            .limiter = Limiter::new(true);
    }
    let mut peaks = vec![0i32; legs.len()];
    let mut mix_peak = 0i32;
    for t in 0..100 {
        // Ten legs talk at full scale; the eleventh only listens.
        let said: HashMap<LegId, Vec<i16>> = legs[..10]
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, tone(8000, 200.0 + 90.0 * i as f64, 32767.0, 160 * t)))
            .collect();
        let heard = sim.step(&said);
        if t < 50 {
            continue;
        }
        for (i, leg) in legs.iter().enumerate() {
            let frame = &heard[leg];
            assert!(
                frame.iter().all(|&s| s > -32000 && s < 32000),
                "leg {i} clipped"
            );
            peaks[i] = peaks[i].max(frame.iter().map(|&s| i32::from(s).abs()).max().unwrap_or(0));
        }
        mix_peak = mix_peak.max(
            sim.room
                .mix()
                .iter()
                .map(|&s| i32::from(s).abs())
                .max()
                .unwrap_or(0),
        );
    }
    for (i, &peak) in peaks.iter().chain([&mix_peak]).enumerate() {
        let db = 20.0 * (peak as f32 / crate::limiter::CEILING).log10();
        assert!(
            db > -3.0 && db < 0.5,
            "output {i}: peak {db:.1} dB from the limiter's ceiling"
        );
    }
}

#[test]
fn top_k_mixes_three_talkers_for_fifty_legs_and_encodes_once_per_codec() {
    let config = RoomConfig {
        audio: AudioConfig {
            top_k: 4,
            ..AudioConfig::plain()
        },
        ..RoomConfig::at(8000)
    };
    let mut sim = Sim::new(config);
    let legs: Vec<LegId> = (0..50)
        .map(|i| sim.add(i, if i % 2 == 0 { Codec::Pcmu } else { Codec::Pcma }))
        .collect();
    let freqs = [300.0, 700.0, 1500.0];
    let mut heard = HashMap::new();
    for t in 0..20 {
        let mut said: HashMap<LegId, Vec<i16>> = legs.iter().map(|&l| (l, vec![0; 160])).collect();
        for (i, f) in freqs.iter().enumerate() {
            said.insert(legs[i], tone(8000, *f, 6000.0, 160 * t));
        }
        heard = sim.step(&said);
        if t >= 5 {
            assert!(
                sim.room.encodes_last_tick() <= 4 + 2,
                "{} encodes",
                sim.room.encodes_last_tick()
            );
        }
    }
    assert_eq!(
        sim.room.encodes_last_tick(),
        3 + 2,
        "3 talkers' own mixes + one shared frame per codec"
    );
    for (i, leg) in legs.iter().enumerate() {
        for (j, f) in freqs.iter().enumerate() {
            let p = power_at(&heard[leg], 8000, *f);
            if i == j {
                assert!(p < 1e4, "talker {i} hears itself: {p}");
            } else {
                assert!(p > 1e6, "leg {i} does not hear talker {j}: {p}");
            }
        }
    }
    // Two new talkers 12 dB louder than the rest push two of them out (K = 4).
    let mut said: HashMap<LegId, Vec<i16>> = legs.iter().map(|&l| (l, vec![0; 160])).collect();
    for t in 20..30 {
        for (i, f) in freqs.iter().enumerate() {
            said.insert(legs[i], tone(8000, *f, 6000.0, 160 * t));
        }
        said.insert(legs[10], tone(8000, 2500.0, 24000.0, 160 * t));
        said.insert(legs[11], tone(8000, 2700.0, 24000.0, 160 * t));
        sim.step(&said);
    }
    let mixed: Vec<LegId> = sim.room.mixed_talkers().collect();
    assert_eq!(mixed.len(), 4);
    assert!(
        mixed.contains(&legs[10]) && mixed.contains(&legs[11]),
        "{mixed:?}"
    );
}

#[test]
fn output_gain_and_deaf_get_their_own_shared_outputs() {
    let mut sim = Sim::new(plain(8000));
    let talker = sim.add(1, Codec::Pcmu);
    let normal = sim.add(2, Codec::Pcmu);
    let quiet = sim.add(3, Codec::Pcmu);
    let deaf = sim.add(4, Codec::Pcmu);
    sim.room.set_controls(
        quiet,
        LegControls {
            output_gain_db: -20.0,
            ..Default::default()
        },
    );
    sim.room.set_controls(
        deaf,
        LegControls {
            deaf: true,
            ..Default::default()
        },
    );
    let mut heard = HashMap::new();
    for t in 0..10 {
        heard = sim.step(&HashMap::from([(
            talker,
            tone(8000, 500.0, 10000.0, 160 * t),
        )]));
    }
    let ratio = 10.0 * (energy(&heard[&normal]) / energy(&heard[&quiet])).log10();
    assert!((ratio - 20.0).abs() < 1.0, "output gain: {ratio:.1} dB");
    assert!(energy(&heard[&deaf]) < 1.0);
    assert_eq!(
        sim.room.encodes_last_tick(),
        4,
        "talker, plain mix, -20 dB mix, silence"
    );
}

#[test]
fn talking_events_and_levels_follow_speech() {
    let mut sim = Sim::new(plain(8000));
    let a = sim.add(1, Codec::Pcmu);
    let _b = sim.add(2, Codec::Pcmu);
    let mut events = Vec::new();
    let mut levels_at = Vec::new();
    for t in 0..200 {
        let frame = if (20..80).contains(&t) {
            tone(8000, 400.0, 8000.0, 160 * t)
        } else {
            vec![0; 160]
        };
        sim.step(&HashMap::from([(a, frame)]));
        while let Some(e) = sim.room.poll_event() {
            if let RoomEvent::Levels(levels) = &e {
                // An 8000-amplitude tone: RMS 5657, -15.2 dBFS; after it, the voice detector's
                // hangover still says "talking" over silence. Only the talker is reported.
                let expected = if t < 92 { -15.2 } else { -96.0 };
                assert!(
                    matches!(levels.as_slice(), [(l, db)] if *l == a && (db - expected).abs() < 1.0),
                    "{t}: {levels:?}"
                );
                levels_at.push(t);
                continue;
            }
            events.push((t, e));
        }
    }
    // A report every 12 ticks while it talks (ticks 22-25 to 118-125), none otherwise.
    assert!(
        levels_at.len() >= 7 && levels_at.len() <= 9,
        "{levels_at:?}"
    );
    assert!(
        levels_at.iter().all(|t| (22..=126).contains(t)),
        "{levels_at:?}"
    );
    assert!(
        levels_at.windows(2).all(|w| w[1] - w[0] == 12),
        "{levels_at:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(events[0], (22..=26, RoomEvent::Talking(l)) if l == a),
        "{events:?}"
    );
    assert!(
        matches!(events[1], (118..=126, RoomEvent::StoppedTalking(l)) if l == a),
        "{events:?}"
    );
}

/// Fixture speech at 8 kHz (pairs averaged: enough for these tests).
fn speech_8k(which: usize) -> Vec<i16> {
    speech(which)
        .chunks(2)
        .map(|p| ((i32::from(p[0]) + i32::from(p.get(1).copied().unwrap_or(0))) / 2) as i16)
        .collect()
}

/// A caller that plays back what it hears, 100 ms late at -10 dB.
struct Echo(std::collections::VecDeque<i16>);

impl Echo {
    fn new() -> Echo {
        Echo(std::iter::repeat_n(0, 800).collect())
    }

    fn step(&mut self, heard: &[i16]) -> Vec<i16> {
        heard
            .iter()
            .map(|&s| {
                self.0.push_back(s);
                (f32::from(self.0.pop_front().unwrap_or(0)) * 0.316) as i16
            })
            .collect()
    }
}

/// Three legs; `a` talks, `c` echoes what it hears. Returns how far below `a`'s own speech the
/// echo of it that `a` hears is (dB), and the events.
fn echo_room(aec: AecMode) -> (f64, Vec<RoomEvent>) {
    let config = RoomConfig {
        audio: AudioConfig {
            aec,
            ..AudioConfig::default()
        },
        ..RoomConfig::at(8000)
    };
    let mut sim = Sim::new(config);
    let (a, b, c) = (
        sim.add(1, Codec::Pcmu),
        sim.add(2, Codec::Pcmu),
        sim.add(3, Codec::Pcmu),
    );
    let far = speech_8k(0);
    let near = speech_8k(1);
    let mut echo = Echo::new();
    let mut heard_c = vec![0i16; 160];
    let (mut said_a, mut heard_a) = (0.0, 0.0);
    let mut events = Vec::new();
    for t in 0..1000 {
        let frame = |s: &[i16], i: usize| s[(i % (s.len() / 160)) * 160..][..160].to_vec();
        let mut said = HashMap::new();
        // a talks for 10 s, then b for 10 s; c only echoes.
        let a_frame = if t < 500 {
            frame(&far, t)
        } else {
            vec![0; 160]
        };
        said.insert(a, a_frame.clone());
        said.insert(
            b,
            if t >= 500 {
                frame(&near, t)
            } else {
                vec![0; 160]
            },
        );
        said.insert(c, echo.step(&heard_c));
        let heard = sim.step(&said);
        heard_c = heard[&c].clone();
        if (250..500).contains(&t) {
            said_a += energy(&a_frame);
            heard_a += energy(&heard[&a]);
        }
        while let Some(e) = sim.room.poll_event() {
            events.push(e);
        }
    }
    let _ = b;
    (10.0 * (said_a / heard_a.max(1e-9)).log10(), events)
}

#[test]
fn auto_aec_cancels_the_echoing_leg_only() {
    let (below, events) = echo_room(AecMode::Auto);
    assert!(
        below >= 25.0,
        "a hears its own speech back only {below:.1} dB down"
    );
    let aec: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, RoomEvent::EchoCancellation(..)))
        .collect();
    assert_eq!(
        aec,
        [&RoomEvent::EchoCancellation(LegId(3), true)],
        "{events:?}"
    );
}

#[test]
fn without_aec_the_echo_comes_back() {
    let (below, _) = echo_room(AecMode::Off);
    assert!(
        below < 15.0,
        "without AEC a hears itself {below:.1} dB down"
    );
}

#[test]
fn a_room_on_hold_hears_only_the_hold_sound_until_released() {
    let mut sim = Sim::new(plain(8000));
    let a = sim.add(1, Codec::Pcmu);
    let b = sim.add(2, Codec::Pcmu);
    let hold: Arc<[i16]> = tone(8000, 425.0, 4000.0, 0)
        .into_iter()
        .chain(vec![0; 160])
        .collect();
    sim.room.set_hold(Some(hold));
    for t in 0..20 {
        let heard = sim.step(&HashMap::from([(a, tone(8000, 1000.0, 8000.0, 160 * t))]));
        let leak = power_at(&heard[&b], 8000, 1000.0);
        assert!(leak < 1e5, "b does not hear a while on hold: {leak}");
        assert!(
            sim.room.mix().iter().all(|&s| s == 0),
            "the recording is silent on hold"
        );
        if t % 2 == 0 {
            assert!(
                power_at(&heard[&b], 8000, 425.0) > 1e5,
                "b hears the hold tone"
            );
            assert!(
                power_at(&heard[&a], 8000, 425.0) > 1e5,
                "a hears the hold tone"
            );
        }
    }
    assert_eq!(sim.room.mixed_talkers().count(), 0);
    sim.room.set_hold(None);
    let mut heard = HashMap::new();
    for t in 20..25 {
        heard = sim.step(&HashMap::from([(a, tone(8000, 1000.0, 8000.0, 160 * t))]));
    }
    assert!(power_at(&heard[&b], 8000, 1000.0) > 1e6, "mixing again");
}

#[test]
fn an_announcement_reaches_everyone_once() {
    let mut sim = Sim::new(plain(8000));
    let a = sim.add(1, Codec::Pcmu);
    let b = sim.add(2, Codec::Pcmu);
    let beep: Arc<[i16]> = (0..3)
        .flat_map(|i| tone(8000, 800.0, 6000.0, 160 * i))
        .collect();
    sim.room.announce(beep);
    let mut levels = Vec::new();
    for t in 0..5 {
        let heard = sim.step(&HashMap::from([(a, tone(8000, 300.0, 6000.0, 160 * t))]));
        levels.push((
            power_at(&heard[&a], 8000, 800.0),
            power_at(&heard[&b], 8000, 800.0),
            power_at(&heard[&b], 8000, 300.0),
        ));
    }
    for (t, (at_a, at_b, talker)) in levels.iter().enumerate() {
        let playing = t < 3;
        assert_eq!(*at_a > 1e5, playing, "a at {t}: {levels:?}");
        assert_eq!(*at_b > 1e5, playing, "b at {t}: {levels:?}");
        assert!(t == 0 || *talker > 1e6, "b hears a throughout");
    }
}

#[test]
fn skipped_ticks_move_the_rtp_timestamps_on() {
    let mut sim = Sim::new(plain(16000));
    let a = sim.add(1, Codec::Pcmu);
    let b = sim.add(2, Codec::Opus);
    sim.step(&HashMap::new());
    let before: HashMap<LegId, (u16, u32)> = sim
        .room
        .packets()
        .map(|(l, p)| {
            let p = RtpPacket::parse(p).unwrap();
            (l, (p.sequence, p.timestamp))
        })
        .collect();
    sim.room.skip(10);
    sim.step(&HashMap::new());
    for (leg, packet) in sim.room.packets() {
        let p = RtpPacket::parse(packet).unwrap();
        let step = if leg == a { 160 } else { 960 };
        assert_eq!(
            p.sequence,
            before[&leg].0.wrapping_add(1),
            "sequence numbers stay contiguous"
        );
        assert_eq!(
            p.timestamp,
            before[&leg].1.wrapping_add(11 * step),
            "timestamp jumps by the skipped audio"
        );
        assert!(p.marker, "marker on the packet after the gap");
    }
    let _ = b;
}

/// A room of `n` PCMU legs where legs 0 and 1 talk (300 and 700 Hz) and leg 2, the coach,
/// whispers (1500 Hz) to leg 3, the agent; `top_k` as given.
fn coached(n: u64, top_k: usize) -> (Sim, Vec<LegId>) {
    let config = RoomConfig {
        audio: AudioConfig {
            top_k,
            ..AudioConfig::plain()
        },
        ..RoomConfig::at(8000)
    };
    let mut sim = Sim::new(config);
    let legs: Vec<LegId> = (0..n).map(|i| sim.add(i, Codec::Pcmu)).collect();
    sim.room.set_relations(
        legs[2],
        Relations {
            hears: Audience::All,
            heard_by: Audience::Only(vec![legs[3]]),
        },
    );
    (sim, legs)
}

/// Runs `ticks` ticks of legs 0, 1 and 2 saying their tones (the coach's at
/// `coach_amplitude`); returns what each leg heard in the last.
fn run_coached(
    sim: &mut Sim,
    legs: &[LegId],
    ticks: usize,
    coach_amplitude: f64,
) -> HashMap<LegId, Vec<i16>> {
    let mut heard = HashMap::new();
    for t in 0..ticks {
        let mut said: HashMap<LegId, Vec<i16>> = legs.iter().map(|&l| (l, vec![0; 160])).collect();
        said.insert(legs[0], tone(8000, 300.0, 6000.0, 160 * t));
        said.insert(legs[1], tone(8000, 700.0, 6000.0, 160 * t));
        said.insert(legs[2], tone(8000, 1500.0, coach_amplitude, 160 * t));
        heard = sim.step(&said);
    }
    heard
}

#[test]
fn a_whisper_is_heard_by_its_target_only_and_the_whisperer_hears_the_room() {
    let (mut sim, legs) = coached(10, 4);
    let heard = run_coached(&mut sim, &legs, 20, 6000.0);
    let at = |leg: usize, f: f64| power_at(&heard[&legs[leg]], 8000, f);
    assert!(at(3, 1500.0) > 1e6, "the agent hears the coach");
    assert!(at(3, 300.0) > 1e6 && at(3, 700.0) > 1e6, "and the room");
    for other in [0, 1, 4, 9] {
        assert!(
            at(other, 1500.0) < 1e4,
            "leg {other} hears the coach: {}",
            at(other, 1500.0)
        );
    }
    assert!(
        at(2, 300.0) > 1e6 && at(2, 700.0) > 1e6,
        "the coach hears the room"
    );
    assert!(at(2, 1500.0) < 1e4, "the coach does not hear itself");
    // Encode-once for everyone else: 2 talkers' own mixes, 1 shared frame for the 7 others and
    // the coach, and the agent's own mix.
    assert_eq!(sim.room.encodes_last_tick(), 2 + 1 + 1);
    // The room's recorded mix carries no whisper unless asked.
    assert!(power_at(sim.room.mix(), 8000, 1500.0) < 1e4);
    sim.room.set_record_whispers(true);
    run_coached(&mut sim, &legs, 3, 6000.0);
    assert!(
        power_at(sim.room.mix(), 8000, 1500.0) > 1e6,
        "include_whispers"
    );
}

#[test]
fn a_whisper_bypasses_top_k() {
    // top_k 2 is filled by the two louder room talkers; the quieter coach still reaches the
    // agent.
    let (mut sim, legs) = coached(6, 2);
    let heard = run_coached(&mut sim, &legs, 20, 2000.0);
    assert!(power_at(&heard[&legs[3]], 8000, 1500.0) > 1e5);
    let mixed: Vec<LegId> = sim.room.mixed_talkers().collect();
    assert!(mixed.contains(&legs[2]) && mixed.len() == 3, "{mixed:?}");
}

#[test]
fn hears_only_some_legs_and_relations_can_be_cleared() {
    let (mut sim, legs) = coached(5, 0);
    sim.room.set_relations(legs[2], Relations::default());
    // Leg 4 hears leg 0 only.
    sim.room.set_relations(
        legs[4],
        Relations {
            hears: Audience::Only(vec![legs[0]]),
            heard_by: Audience::All,
        },
    );
    let heard = run_coached(&mut sim, &legs, 20, 6000.0);
    let at = |leg: usize, f: f64| power_at(&heard[&legs[leg]], 8000, f);
    assert!(at(4, 300.0) > 1e6);
    assert!(at(4, 700.0) < 1e4 && at(4, 1500.0) < 1e4, "only leg 0");
    assert!(at(1, 1500.0) > 1e6, "the coach, cleared, is heard by all");
    sim.room.set_relations(legs[4], Relations::default());
    let heard = run_coached(&mut sim, &legs, 5, 6000.0);
    assert!(
        power_at(&heard[&legs[4]], 8000, 700.0) > 1e6,
        "back to the whole room"
    );
    // 3 talkers' own mixes and one shared frame again.
    assert_eq!(sim.room.encodes_last_tick(), 3 + 1);
}
