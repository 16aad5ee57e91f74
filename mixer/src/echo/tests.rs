//! Echo cancellation and detection on simulated time, with recorded speech through a synthetic
//! echo path (delayed, filtered, attenuated).

use super::detector::EchoDetector;
use super::*;
use crate::test_audio::{Noise, speech};

const RATE: u32 = 16000;
const FRAME: usize = 320;

/// A phone's echo path: a delay, a low-pass (a 3-tap FIR), and an attenuation.
struct EchoPath {
    line: std::collections::VecDeque<f32>,
    gain: f32,
    last: [f32; 2],
}

impl EchoPath {
    fn new(rate: u32, delay_ms: usize, attenuation_db: f32) -> EchoPath {
        let line = std::iter::repeat_n(0.0, delay_ms * rate as usize / 1000).collect();
        EchoPath {
            line,
            gain: 10f32.powf(-attenuation_db / 20.0),
            last: [0.0; 2],
        }
    }

    /// What comes back for one frame sent.
    fn echo(&mut self, sent: &[i16]) -> Vec<f32> {
        sent.iter()
            .map(|&s| {
                self.line.push_back(f32::from(s));
                let x = self.line.pop_front().unwrap_or(0.0);
                let y = 0.5 * x + 0.3 * self.last[0] + 0.2 * self.last[1];
                self.last = [x, self.last[0]];
                y * self.gain
            })
            .collect()
    }
}

fn power(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum()
}

fn frame_of(signal: &[i16], index: usize) -> &[i16] {
    frame_at(signal, index, FRAME)
}

/// Frame `index` of `signal` (looping) in frames of `frame` samples.
fn frame_at(signal: &[i16], index: usize, frame: usize) -> &[i16] {
    let frames = signal.len() / frame;
    let i = index % frames;
    &signal[i * frame..(i + 1) * frame]
}

struct Outcome {
    /// Echo reduction over 5 s to 8 s of far-end speech only.
    erle_db: f64,
    /// Near-end speech level change during double talk (8 s to 16 s).
    near_change_db: f64,
}

/// Fixture speech `which` at `rate` (8 kHz: through the telephone-band resampler, as a G.711
/// leg's audio is).
fn speech_at(which: usize, rate: u32) -> Vec<i16> {
    let wide = speech(which);
    if rate == RATE {
        return wide;
    }
    let mut down = roundtable_media::resample::Resampler::new(RATE, rate).unwrap();
    let mut out = vec![0; rate as usize / 50];
    let mut narrow = Vec::new();
    for frame in wide.chunks_exact(FRAME) {
        down.process(frame, &mut out);
        narrow.extend_from_slice(&out);
    }
    narrow
}

/// Runs 16 s at `rate`: far-end speech always; near-end speech from 8 s on.
fn run(backend: EchoBackend, rate: u32, delay_ms: usize, attenuation_db: f32) -> Outcome {
    let frame = rate as usize / 50;
    let far = speech_at(0, rate);
    let near = speech_at(1, rate);
    let mut aec = canceller(backend, rate).unwrap();
    let mut path = EchoPath::new(rate, delay_ms, attenuation_db);
    let mut noise = Noise::new(3);
    let (mut echo_in, mut echo_out, mut near_in, mut near_out) = (0.0, 0.0, 0.0, 0.0);
    for f in 0..800 {
        let sent = frame_at(&far, f, frame);
        let echo = path.echo(sent);
        let own: Vec<i16> = if f >= 400 {
            frame_at(&near, f - 400, frame).to_vec()
        } else {
            vec![0; frame]
        };
        let mut input: Vec<i16> = echo
            .iter()
            .zip(&own)
            .map(|(e, &o)| (e + f32::from(o) + f32::from(noise.sample(3.0))) as i16)
            .collect();
        let before = input.clone();
        aec.capture(&mut input).unwrap();
        aec.render(sent).unwrap();
        if (250..400).contains(&f) {
            echo_in += power(&before);
            echo_out += power(&input);
        }
        if f >= 450 && power(&own) > 1e6 {
            near_in += power(&own);
            near_out += power(&input);
        }
    }
    Outcome {
        erle_db: 10.0 * (echo_in / echo_out.max(1.0)).log10(),
        near_change_db: 10.0 * (near_out / near_in).log10(),
    }
}

/// At 16 kHz (wideband legs) and 8 kHz (G.711 legs, whose voice processing runs at their
/// codec's rate).
fn check(backend: EchoBackend) {
    let cases = [
        (16000, 40, 6.0),
        (16000, 120, 10.0),
        (16000, 200, 20.0),
        (8000, 40, 6.0),
        (8000, 120, 10.0),
        (8000, 200, 20.0),
    ];
    for (rate, delay, attenuation) in cases {
        let outcome = run(backend, rate, delay, attenuation);
        println!(
            "{} at {rate} Hz: {delay} ms, -{attenuation} dB: echo reduced by {:.1} dB, near-end speech changed by {:.1} dB",
            backend.name(),
            outcome.erle_db,
            outcome.near_change_db
        );
        assert!(
            outcome.erle_db >= 25.0,
            "{delay} ms: only {:.1} dB of echo reduction",
            outcome.erle_db
        );
        assert!(
            outcome.near_change_db >= -6.0,
            "{delay} ms: near-end speech dropped {:.1} dB",
            outcome.near_change_db
        );
    }
}

#[test]
fn sonora_removes_echo_and_keeps_double_talk() {
    check(EchoBackend::Sonora);
}

#[cfg(feature = "webrtc-aec")]
#[test]
fn webrtc_removes_echo_and_keeps_double_talk() {
    check(EchoBackend::WebRtc);
}

#[test]
fn the_detector_finds_an_echoing_leg_and_not_a_clean_one() {
    let far = speech(0);
    let near = speech(1);
    let mut path = EchoPath::new(RATE, 150, 15.0);
    let mut echoing = EchoDetector::new(0);
    let mut clean = EchoDetector::new(7);
    let mut found = None;
    for f in 0..500 {
        let sent = frame_of(&far, f);
        let echo: Vec<i16> = path.echo(sent).iter().map(|&e| e as i16).collect();
        if echoing.observe(&echo, sent) == Some(true) {
            found.get_or_insert(f);
        }
        // The clean leg talks on its own (in turns with the far end: here, at random).
        let own = if (f / 40) % 2 == 0 {
            frame_of(&near, f).to_vec()
        } else {
            vec![0; FRAME]
        };
        assert_eq!(
            clean.observe(&own, sent),
            None,
            "clean leg at frame {f}, score {}",
            clean.score()
        );
    }
    let found = found.expect("echo found");
    assert!(
        found < 250,
        "echo found only after {} s",
        found as f32 / 50.0
    );
    assert!(echoing.echo() && !clean.echo());
    // The echo stops (the caller picked up the handset): the detector lets go within 15 s.
    let mut released = None;
    for f in 500..1300 {
        if echoing.observe(&[0; FRAME], frame_of(&far, f)) == Some(false) {
            released.get_or_insert(f);
        }
    }
    assert!(released.is_some_and(|f| f < 500 + 750), "{released:?}");
}

#[test]
fn unsupported_frame_sizes_are_errors() {
    let mut aec = canceller(EchoBackend::Sonora, RATE).unwrap();
    assert!(matches!(
        aec.capture(&mut [0; 100]),
        Err(MixerError::FrameSize(100))
    ));
    assert!(matches!(aec.render(&[]), Err(MixerError::FrameSize(0))));
}

#[test]
fn tones_starting_together_are_not_echo() {
    // Two callers start steady tones at the same moment: the envelopes step together once,
    // which is no evidence of an echo path.
    let mut detector = EchoDetector::new(0);
    let tone = |freq: f32, f: usize| -> Vec<i16> {
        (0..FRAME)
            .map(|i| {
                (6000.0
                    * (std::f32::consts::TAU * freq * (f * FRAME + i) as f32 / RATE as f32).sin())
                    as i16
            })
            .collect()
    };
    for f in 0..500 {
        let (heard, sent) = if f < 50 {
            (vec![0; FRAME], vec![0; FRAME])
        } else {
            (tone(440.0, f), tone(1000.0, f))
        };
        assert_eq!(
            detector.observe(&heard, &sent),
            None,
            "frame {f}, score {}",
            detector.score()
        );
    }
}

/// Two independent talkers in conversation must not look like echo to each other: over 40
/// pairs and 30 s each, at most one pair (2.5 %) is ever taken for echo.
#[test]
fn independent_talkers_are_rarely_taken_for_echo() {
    let mut false_alarms = Vec::new();
    for pair in 0..40u64 {
        let own = crate::babble::babble(2 * pair, 16000, 1500);
        let other = crate::babble::babble(2 * pair + 1, 16000, 1500);
        let mut detector = EchoDetector::new(pair);
        for (f, (own, other)) in own.iter().zip(&other).enumerate() {
            if detector.observe(own, other) == Some(true) {
                false_alarms.push((pair, f, detector.score()));
                break;
            }
        }
    }
    assert!(false_alarms.len() <= 1, "taken for echo: {false_alarms:?}");
}
