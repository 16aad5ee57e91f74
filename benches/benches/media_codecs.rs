//! Per 20 ms frame: encode + decode for each codec (at a 16 kHz room; Opus codes at the room
//! rate), the resampler between telephony rates, the jitter buffer push + pop, and RTP parse.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use roundtable_media::codec::{Codec, Decoder, Encoder, OpusOptions};
use roundtable_media::jitter::{JitterBuffer, JitterConfig, PacketInfo};
use roundtable_media::resample::{Resampler, frame_len};
use roundtable_media::rtp::{RtpPacket, RtpSender};

fn tone(rate: u32, frames: usize) -> Vec<i16> {
    (0..frame_len(rate) * frames)
        .map(|n| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_encode_decode");
    for codec in [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::Opus,
        Codec::G729,
    ] {
        let rate = codec.audio_rate(16000);
        let audio = tone(rate, 50);
        let mut encoder = Encoder::new(
            codec,
            16000,
            OpusOptions {
                fec: true,
                dtx: false,
            },
        )
        .unwrap();
        let mut decoder = Decoder::new(codec, 16000).unwrap();
        let (mut payload, mut out) = (Vec::new(), vec![0i16; frame_len(rate)]);
        let mut frames = audio.chunks(frame_len(rate)).cycle();
        group.bench_function(BenchmarkId::from_parameter(codec.config_name()), |b| {
            b.iter(|| {
                encoder
                    .encode(frames.next().unwrap(), &mut payload)
                    .unwrap();
                decoder.decode(&payload, &mut out).unwrap();
                std::hint::black_box(out[0]);
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("resample_frame");
    for (from, to) in [
        (8000, 16000),
        (16000, 8000),
        (48000, 16000),
        (16000, 48000),
        (8000, 48000),
    ] {
        let audio = tone(from, 1);
        let mut resampler = Resampler::new(from, to).unwrap();
        let mut out = vec![0i16; frame_len(to)];
        group.bench_function(
            BenchmarkId::from_parameter(format!("{}k_to_{}k", from / 1000, to / 1000)),
            |b| {
                b.iter(|| {
                    resampler.process(&audio, &mut out);
                    std::hint::black_box(out[0]);
                });
            },
        );
    }
    group.finish();

    c.bench_function("jitter_push_pop", |b| {
        let mut jitter = JitterBuffer::new(JitterConfig::default(), 8000, 50);
        let mut sequence = 0u16;
        let start = std::time::Instant::now();
        b.iter(|| {
            let info = PacketInfo {
                sequence,
                timestamp: u32::from(sequence) * 160,
                ssrc: 1,
                marker: false,
                arrival: start + std::time::Duration::from_millis(u64::from(sequence) * 20),
            };
            jitter.push(info, [0u8; 160]);
            sequence = sequence.wrapping_add(1);
            std::hint::black_box(jitter.pop());
        });
    });

    let mut sender = RtpSender::new(0, 7);
    let mut packet = Vec::new();
    sender.write(&[0x55; 160], 160, &mut packet);
    c.bench_function("rtp_parse", |b| {
        b.iter(|| std::hint::black_box(RtpPacket::parse(&packet).unwrap().sequence))
    });
}

criterion_group!(benches, codecs);
criterion_main!(benches);
