//! Each echo canceller backend on the same signal: recorded speech sent to a leg, returned
//! through a synthetic echo path (120 ms, a 3-tap low-pass, -10 dB) with the leg's own speech
//! from 8 s on. Prints the cost per 20 ms frame and the echo reduction (ERLE) over 4-8 s, and
//! how much the leg's own speech changed during double talk. A plain `main` (no criterion): the
//! cost is measured over 800 frames after 50 frames of warm-up, at 16 kHz.

use std::collections::VecDeque;
use std::time::Instant;

use roundtable_mixer::EchoBackend;
use roundtable_mixer::echo::canceller;

const RATE: u32 = 16000;
const FRAME: usize = 320;

fn speech(name: &str) -> Vec<i16> {
    let path = format!(
        "{}/../mixer/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut reader = hound::WavReader::open(&path).expect("speech fixture");
    reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect()
}

fn frame(signal: &[i16], i: usize) -> &[i16] {
    let n = signal.len() / FRAME;
    &signal[(i % n) * FRAME..][..FRAME]
}

fn power(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum()
}

fn main() {
    let far = speech("speech-a.wav");
    let near = speech("speech-b.wav");
    println!("backend  | us per 20 ms | ERLE (dB) | near-end change in double talk (dB)");
    for backend in [EchoBackend::Sonora, EchoBackend::WebRtc] {
        let Ok(mut aec) = canceller(backend, RATE) else {
            println!(
                "{:8} | not built (cargo feature webrtc-aec)",
                backend.name()
            );
            continue;
        };
        let mut line: VecDeque<f32> =
            std::iter::repeat_n(0.0, 120 * RATE as usize / 1000).collect();
        let mut last = [0.0f32; 2];
        let (mut echo_in, mut echo_out, mut near_in, mut near_out) = (0.0, 0.0, 0.0, 0.0);
        let mut spent = std::time::Duration::ZERO;
        for f in 0..800 {
            let sent = frame(&far, f);
            let own: Vec<i16> = if f >= 400 {
                frame(&near, f).to_vec()
            } else {
                vec![0; FRAME]
            };
            let mut input: Vec<i16> = sent
                .iter()
                .zip(&own)
                .map(|(&s, &o)| {
                    line.push_back(f32::from(s));
                    let x = line.pop_front().unwrap_or(0.0);
                    let y = 0.5 * x + 0.3 * last[0] + 0.2 * last[1];
                    last = [x, last[0]];
                    (y * 0.316 + f32::from(o)) as i16
                })
                .collect();
            let before = input.clone();
            let started = Instant::now();
            aec.capture(&mut input).expect("capture");
            aec.render(sent).expect("render");
            if f >= 50 {
                spent += started.elapsed();
            }
            if (200..400).contains(&f) {
                echo_in += power(&before);
                echo_out += power(&input);
            }
            if f >= 450 && power(&own) > 1e6 {
                near_in += power(&own);
                near_out += power(&input);
            }
        }
        println!(
            "{:8} | {:12.1} | {:9.1} | {:.1}",
            backend.name(),
            spent.as_secs_f64() * 1e6 / 750.0,
            10.0 * (echo_in / echo_out.max(1.0)).log10(),
            10.0 * (near_out / near_in).log10()
        );
    }
}
