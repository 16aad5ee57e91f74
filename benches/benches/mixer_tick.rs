//! One mixer tick (jitter pop, G.711 decode, N-1 mix, encode, RTP packetise) at N legs, against
//! the 20 ms budget. Reported per tick; divide by N for ns per leg per tick (see README.md).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roundtable_media::{FRAME_SAMPLES, G711};
use roundtable_mixer::{LegId, Room};

fn tone_payload(freq: f64) -> Vec<u8> {
    let mut frame = [0i16; FRAME_SAMPLES];
    for (i, s) in frame.iter_mut().enumerate() {
        *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16;
    }
    let mut out = Vec::new();
    G711::Ulaw.encode(&frame, &mut out);
    out
}

fn mixer_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixer_tick");
    for legs in [2usize, 10, 100, 1000] {
        let mut room = Room::new();
        for i in 0..legs {
            let codec = if i % 2 == 0 { G711::Ulaw } else { G711::Alaw };
            room.add_leg(LegId(i as u64), codec, i as u64 + 1);
        }
        let payload = tone_payload(440.0);
        let mut sequence = 0u16;
        group.throughput(Throughput::Elements(legs as u64));
        group.bench_with_input(BenchmarkId::from_parameter(legs), &legs, |b, &legs| {
            b.iter(|| {
                // Every leg delivers one packet per tick, as in a room where everyone talks.
                for i in 0..legs {
                    room.handle_audio(LegId(i as u64), sequence, payload.clone());
                }
                sequence = sequence.wrapping_add(1);
                room.tick();
                std::hint::black_box(room.mix()[0]);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, mixer_tick);
criterion_main!(benches);
