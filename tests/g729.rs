//! G.729 end to end: a G.729 caller and a PCMU caller in one room hear each other and not
//! themselves, asserted on tones with an SNR floor. The G.729 caller is built on g729-sys, a
//! Rust implementation, not on the bcg729 library the bridge links, with its own RTP framing
//! written here; it sends with Annex B on (VAD/DTX), so its silences arrive as SID frames and
//! gaps, which the bridge must turn into comfort noise, not into clicks or lost framing.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What a tone must reach above everything else in a window, through G.729 and the mix: G.729
/// alone (bcg729 to g729-sys) gives 22 dB on a 440 Hz tone; the room adds little.
const SNR_FLOOR_DB: f64 = 18.0;

/// Tone power over the rest of the signal's power, dB.
fn snr_db(samples: &[i16], freq: f64) -> f64 {
    let total =
        samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
    // Goertzel's |X|^2 / n^2 is A^2 / 4 for a sine of amplitude A, whose mean square is A^2 / 2.
    let tone = 2.0 * goertzel_at(samples, freq, 8000.0);
    10.0 * (tone / (total - tone).max(1e-9)).log10()
}

/// The G.729 caller's RTP: sends `freq` in bursts (1.2 s on, 0.6 s off) for `duration`, encoded
/// with g729-sys and Annex B, and decodes what comes back. Returns what it heard, by arrival
/// time from the start.
fn g729_caller(
    socket: UdpSocket,
    remote: std::net::SocketAddr,
    freq: f64,
    duration: Duration,
) -> Vec<(Duration, Vec<i16>)> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let receiver = {
        let socket = socket.try_clone().unwrap();
        let heard = heard.clone();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        std::thread::spawn(move || {
            let mut decoder = g729_sys::Decoder::new();
            let mut buf = [0u8; 1500];
            while start.elapsed() < duration + Duration::from_millis(300) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                if n < 12 || buf[1] & 0x7f != 18 {
                    continue;
                }
                let payload = &buf[12..n];
                let mut frame = Vec::with_capacity(160);
                // The bridge sends two speech frames per packet.
                for part in payload.chunks(10).take(2) {
                    frame.extend_from_slice(&decoder.decode(part, false, part.len() == 2, false));
                }
                heard.lock().unwrap().push((start.elapsed(), frame));
            }
        })
    };
    let mut encoder = g729_sys::Encoder::new(true);
    let (mut sequence, mut timestamp) = (0u16, 0u32);
    let ssrc = 0x6729_0001u32;
    for i in 0..(duration.as_millis() / 20) as usize {
        let speaking = (i % 90) < 60;
        let samples = if speaking {
            tone_at(freq, i * 160, 160, 8000, 6000.0)
        } else {
            vec![0i16; 160]
        };
        let mut frames = Vec::new();
        for half in samples.chunks_exact(80) {
            frames.push(encoder.encode(half.try_into().unwrap()));
        }
        // RFC 3551 4.5.6: speech frames first; a SID only last. A 10 ms frame that cannot go
        // in this packet (speech after a SID, or alone after nothing) goes alone.
        let payload: Vec<u8> = match (frames[0].len(), frames[1].len()) {
            (10, _) => [frames[0].clone(), frames[1].clone()].concat(),
            (2, _) => frames[0].clone(),
            (_, n) if n > 0 => frames[1].clone(),
            _ => Vec::new(),
        };
        if !payload.is_empty() {
            let mut packet = vec![0x80, 18];
            packet.extend_from_slice(&sequence.to_be_bytes());
            packet.extend_from_slice(&timestamp.to_be_bytes());
            packet.extend_from_slice(&ssrc.to_be_bytes());
            packet.extend_from_slice(&payload);
            let _ = socket.send_to(&packet, remote);
            sequence = sequence.wrapping_add(1);
        }
        timestamp = timestamp.wrapping_add(160);
        let next = start + Duration::from_millis(20 * (i as u64 + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    receiver.join().unwrap();
    Arc::try_unwrap(heard).unwrap().into_inner().unwrap()
}

#[test]
fn a_g729_caller_hears_the_room_and_is_heard() {
    let service = Service::start(Options {
        toml: "[media]\ncodecs = [\"g729\", \"pcmu\"]\n".into(),
        ..Options::default()
    });
    let mut g729 = Uac::new(service.sip, "g729-room");
    let offer = g729.offer(
        "18 101",
        "a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    assert_eq!(g729.call_with(&offer), 200);
    let answer = g729.last_response.clone().unwrap();
    assert!(
        answer.body().contains("a=rtpmap:18 G729/8000"),
        "{}",
        answer.body()
    );
    let mut pcmu = Uac::new(service.sip, "g729-room");
    assert_eq!(pcmu.call(), 200);
    service.wait_participants("g729-room", 2);

    let pcmu_media = pcmu.start_media(440.0, Duration::from_secs(6));
    let heard_by_g729 = g729_caller(
        g729.rtp.try_clone().unwrap(),
        g729.remote_rtp.unwrap(),
        700.0,
        Duration::from_secs(6),
    );
    let heard_by_pcmu = pcmu_media.finish();

    // The G.729 caller hears the PCMU caller's 440 Hz, and not its own 700 Hz.
    let window: Vec<i16> = heard_by_g729
        .iter()
        .filter(|(at, _)| *at > Duration::from_secs(2) && *at < Duration::from_millis(5500))
        .flat_map(|(_, frame)| frame.iter().copied())
        .collect();
    assert!(window.len() > 16000, "{} samples", window.len());
    let snr = snr_db(&window, 440.0);
    assert!(snr > SNR_FLOOR_DB, "440 Hz through G.729: SNR {snr:.1} dB");
    assert!(tone_db_at(&window, 700.0, 8000.0) < 20.0, "it hears itself");

    // The PCMU caller hears the 700 Hz bursts (1.2 s on from 1.8 s: 1.8-3.0, 3.6-4.8).
    let burst = heard_by_pcmu.window(Duration::from_millis(2000), Duration::from_millis(2900));
    let snr = snr_db(&burst, 700.0);
    assert!(snr > SNR_FLOOR_DB, "700 Hz from G.729: SNR {snr:.1} dB");
    // In the G.729 caller's silences (comfort noise) there is no 700 Hz and no burst of noise.
    let quiet = heard_by_pcmu.window(Duration::from_millis(3150), Duration::from_millis(3500));
    assert!(
        tone_db(&quiet, 700.0) < tone_db(&burst, 700.0) - 30.0,
        "the silence carries no tone"
    );
    let rms =
        (quiet.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / quiet.len() as f64).sqrt();
    assert!(rms < 300.0, "comfort noise stays low: rms {rms:.0}");
    assert_eq!(g729.hangup(), 200);
    assert_eq!(pcmu.hangup(), 200);
}
