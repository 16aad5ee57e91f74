//! End to end: three PCMU callers in one room, one of which (a speakerphone) plays back what it
//! hears 100 ms late at -10 dB. The two others speak in turns (recorded speech). With echo
//! cancellation (`auto`, the default) neither hears its own speech come back: by correlation
//! with what each sent, its echo is at least 25 dB below the other talker. With `aec = "off"`
//! the echo is plainly there, so the test can fail.

mod common;

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Options, Service, Uac};
use roundtable_media::codec::{Codec, Decoder, Encoder};
use roundtable_media::resample::Resampler;

const FRAME: usize = 160;
/// Seconds each of the two talkers speaks: a first, then b.
const TURN_S: usize = 8;

/// Fixture speech at 8 kHz.
fn speech(name: &str) -> Vec<i16> {
    let path = format!("{}/mixer/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let (spec, samples) = common::read_wav(std::path::Path::new(&path));
    assert_eq!(spec.sample_rate, 16000);
    let mut down = Resampler::new(16000, 8000).unwrap();
    let mut out = vec![0i16; FRAME];
    samples
        .chunks_exact(2 * FRAME)
        .flat_map(|c| {
            down.process(c, &mut out);
            out.clone()
        })
        .collect()
}

/// What one caller sent and heard, on the same sample timeline (8 kHz from its start).
struct Track {
    sent: Vec<i16>,
    heard: Vec<i16>,
}

/// Runs one caller's media for `frames` ticks: sends `say(i)` (or, for the echoing caller, what
/// it heard 100 ms ago at -10 dB) and records what arrives, placed by RTP timestamp.
fn run_caller(
    socket: UdpSocket,
    remote: SocketAddr,
    start: Instant,
    frames: usize,
    say: Option<Vec<i16>>,
) -> Track {
    socket.set_nonblocking(true).unwrap();
    let mut encoder = Encoder::new(Codec::Pcmu, 8000, Default::default()).unwrap();
    let mut decoder = Decoder::new(Codec::Pcmu, 8000).unwrap();
    let ssrc = common::media_ssrc(remote);
    let mut sent = Vec::with_capacity(frames * FRAME);
    let mut heard = vec![0i16; (frames + 50) * FRAME];
    let mut first: Option<(u32, usize)> = None;
    let mut echo: VecDeque<i16> = std::iter::repeat_n(0, 800).collect();
    let (mut payload, mut buf, mut decoded) = (Vec::new(), [0u8; 1500], vec![0i16; FRAME]);
    for i in 0..frames {
        let frame: Vec<i16> = match &say {
            Some(speech) => speech[i * FRAME % speech.len()..][..FRAME].to_vec(),
            None => echo
                .drain(..FRAME)
                .map(|s| (f32::from(s) * 0.316) as i16)
                .collect(),
        };
        encoder.encode(&frame, &mut payload).unwrap();
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&(i as u16).to_be_bytes());
        packet.extend_from_slice(&((i * FRAME) as u32).to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&payload);
        let _ = socket.send_to(&packet, remote);
        sent.extend_from_slice(&frame);
        let next = start + Duration::from_millis(20 * (i as u64 + 1));
        // Receive until the next frame is due.
        loop {
            while let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n < 12 + FRAME || buf[1] & 0x7F != 0 {
                    continue;
                }
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let (ts0, at0) = *first.get_or_insert_with(|| {
                    (
                        ts,
                        (start.elapsed().as_micros() as usize / 125).saturating_sub(FRAME),
                    )
                });
                let at = at0 + ts.wrapping_sub(ts0) as usize;
                decoder.decode(&buf[12..n], &mut decoded).unwrap();
                if let Some(slot) = heard.get_mut(at..at + FRAME) {
                    slot.copy_from_slice(&decoded);
                }
                if say.is_none() {
                    echo.extend(decoded.iter().copied());
                }
            }
            match next.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait.min(Duration::from_millis(2))),
                None => break,
            }
        }
        // Keep the echo line at 100 ms (plus at most a frame) if packets bunch up.
        while echo.len() > 800 + 2 * FRAME {
            echo.pop_front();
        }
        while echo.len() < 800 {
            echo.push_front(0);
        }
    }
    heard.truncate(frames * FRAME);
    Track { sent, heard }
}

fn power(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64
}

/// The power of `sent`'s echo in `heard` over `range` (samples): the best least-squares fit of
/// `sent` delayed 50-600 ms, as a fraction of `heard`'s samples.
fn echo_power(track: &Track, range: std::ops::Range<usize>) -> f64 {
    let heard = &track.heard[range.clone()];
    let mut best = 0.0f64;
    // Coarse then fine: every 4th lag, then around the best.
    let score = |lag: usize| -> f64 {
        let sent = &track.sent[range.start - lag..range.end - lag];
        let (mut xy, mut xx) = (0.0f64, 0.0f64);
        for (&h, &s) in heard.iter().zip(sent) {
            xy += f64::from(h) * f64::from(s);
            xx += f64::from(s) * f64::from(s);
        }
        if xx == 0.0 {
            0.0
        } else {
            xy * xy / xx / heard.len() as f64
        }
    };
    let mut best_lag = 400;
    for lag in (400..4800).step_by(4) {
        let s = score(lag);
        if s > best {
            best = s;
            best_lag = lag;
        }
    }
    for lag in best_lag.saturating_sub(4)..best_lag + 4 {
        best = best.max(score(lag));
    }
    best
}

/// Runs the three callers; returns, for a and b, how far their own echo is below the other
/// talker as each heard it (dB).
fn echo_margins(toml: &str) -> (f64, f64, String, Vec<bool>, String) {
    let service = Service::start(Options {
        toml: toml.into(),
        ..Default::default()
    });
    let mut callers: Vec<Uac> = (0..3).map(|_| Uac::new(service.sip, "echo")).collect();
    for c in &mut callers {
        assert_eq!(c.call_codec(Codec::Pcmu), 200);
    }
    service.wait_participants("echo", 3);
    let frames = 2 * TURN_S * 50;
    let turn = TURN_S * 50 * FRAME;
    let a_speech = speech("speech-a.wav");
    let b_speech = speech("speech-b.wav");
    // a speaks in the first turn, b in the second; silence otherwise.
    let a_says: Vec<i16> = a_speech
        .iter()
        .copied()
        .cycle()
        .take(turn)
        .chain(std::iter::repeat_n(0, turn))
        .collect();
    let b_says: Vec<i16> = std::iter::repeat_n(0, turn)
        .chain(b_speech.iter().copied().cycle().take(turn))
        .collect();
    let start = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = callers
        .iter()
        .zip([Some(a_says), Some(b_says), None])
        .map(|(c, say)| {
            let socket = c.rtp.try_clone().unwrap();
            let remote = c.remote_rtp.unwrap();
            std::thread::spawn(move || run_caller(socket, remote, start, frames, say))
        })
        .collect();
    let tracks: Vec<Track> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Which legs run echo cancellation now, as the API and the metrics show it.
    let (_, room) = service.http("GET", "/v1/rooms/echo", "");
    let active: Vec<bool> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["audio"]["aec_active"] == true)
        .collect();
    let gauge = service
        .metrics()
        .lines()
        .find(|l| l.starts_with("roundtable_legs_aec_active "))
        .unwrap_or_default()
        .to_string();
    for c in &mut callers {
        c.hangup();
    }
    // a's own echo over the last 3 s of its turn (detection and convergence take the
    // first), against b's speech as a heard it; and the same for b.
    let a_echo = echo_power(&tracks[0], turn * 5 / 8..turn);
    let a_other = power(&tracks[0].heard[turn + turn / 8..2 * turn]);
    let b_echo = echo_power(&tracks[1], turn + turn * 5 / 8..2 * turn);
    let b_other = power(&tracks[1].heard[turn / 8..turn]);
    let margin = |echo: f64, other: f64| 10.0 * (other / echo.max(1e-6)).log10();
    let (_, events) = service.http("GET", "/v1/events?room=echo", "");
    (
        margin(a_echo, a_other),
        margin(b_echo, b_other),
        events.to_string(),
        active,
        gauge,
    )
}

#[test]
fn with_echo_cancellation_no_one_hears_their_own_speech_back() {
    let (a, b, events, active, gauge) = echo_margins("");
    println!("own echo below the other talker: a {a:.1} dB, b {b:.1} dB");
    assert!(
        a >= 25.0 && b >= 25.0,
        "echo only {a:.1} / {b:.1} dB below the other talker; events {events}"
    );
    assert!(events.contains("\"echo_cancellation\""), "{events}");
    assert_eq!(
        active,
        [false, false, true],
        "only the speakerphone gets AEC (auto)"
    );
    assert_eq!(gauge, "roundtable_legs_aec_active 1");
}

#[test]
fn without_echo_cancellation_the_echo_comes_back() {
    let (a, b, _, active, _) = echo_margins("[audio]\naec = \"off\"\n");
    assert_eq!(active, [false, false, false]);
    println!("own echo below the other talker without AEC: a {a:.1} dB, b {b:.1} dB");
    assert!(
        a < 20.0 && b < 20.0,
        "the echo should be audible without AEC: {a:.1} / {b:.1} dB"
    );
}
