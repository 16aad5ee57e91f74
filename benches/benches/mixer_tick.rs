//! One mixer tick (jitter pop, decode, resample to the room rate, N-1 mix, resample back,
//! encode, RTP packetise) at N legs, against the 20 ms budget. Reported per tick; divide by N for
//! ns per leg per tick (see README.md). G.711 legs in an 8 kHz room need no resampling; in a
//! 16 kHz room (the default) each leg resamples both ways.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roundtable_media::codec::{Codec, Encoder, LegCodec};
use roundtable_media::jitter::PacketInfo;
use roundtable_mixer::{LegId, Room, RoomConfig};

fn tone_payload(codec: Codec, room_rate: u32, freq: f64) -> Vec<u8> {
    let rate = codec.audio_rate(room_rate);
    let frame: Vec<i16> = (0..rate as usize / 50)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as i16)
        .collect();
    let mut out = Vec::new();
    Encoder::new(codec, room_rate, Default::default()).unwrap().encode(&frame, &mut out).unwrap();
    out
}

fn mixer_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixer_tick");
    for (rate, legs) in [(8000, 2usize), (8000, 10), (8000, 100), (8000, 1000), (16000, 2), (16000, 10), (16000, 100)] {
        let mut room = Room::new(RoomConfig::at(rate));
        for i in 0..legs {
            let codec = if i % 2 == 0 { Codec::Pcmu } else { Codec::Pcma };
            room.add_leg(LegId(i as u64), LegCodec::plain(codec), i as u64 + 1).unwrap();
        }
        let payloads = [tone_payload(Codec::Pcmu, rate, 440.0), tone_payload(Codec::Pcma, rate, 440.0)];
        let mut sequence = 0u16;
        group.throughput(Throughput::Elements(legs as u64));
        let id = BenchmarkId::new(format!("g711_room_{}k", rate / 1000), legs);
        group.bench_with_input(id, &legs, |b, &legs| {
            b.iter(|| {
                // Every leg delivers one packet per tick, as in a room where everyone talks.
                let info = PacketInfo {
                    sequence,
                    timestamp: u32::from(sequence) * 160,
                    ssrc: 1,
                    marker: false,
                    arrival: std::time::Instant::now(),
                };
                for i in 0..legs {
                    room.handle_audio(LegId(i as u64), info, payloads[i % 2].clone());
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
