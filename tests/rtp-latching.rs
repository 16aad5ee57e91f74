//! Symmetric RTP with a guard: the bridge sends a caller's audio back where its RTP comes from,
//! but another address sending the caller's stream (same SSRC) while the caller is alive is
//! ignored and counted, not mixed and not answered; when the caller falls silent for 2 s and its
//! stream continues from a new address (a NAT rebinding), the bridge follows it there.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// Sends `frames` PCMU frames of `freq` from `socket` to `to` at 20 ms intervals.
fn send_stream(
    socket: &UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    first_seq: u16,
    freq: f64,
    frames: usize,
) {
    let start = Instant::now();
    for i in 0..frames {
        let seq = first_seq.wrapping_add(i as u16);
        let samples = tone_at(freq, usize::from(seq) * 160, 160, 8000, 6000.0);
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        let mut payload = Vec::new();
        Encoder::new(Codec::Pcmu, 8000, OpusOptions::default())
            .unwrap()
            .encode(&samples, &mut payload)
            .unwrap();
        packet.extend_from_slice(&payload);
        let _ = socket.send_to(&packet, to);
        if let Some(wait) = (start + Duration::from_millis(20 * (i as u64 + 1)))
            .checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
}

/// RTP packets that reach `socket` within `within`.
fn count_received(socket: &UdpSocket, within: Duration) -> usize {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while Instant::now() < deadline {
        if let Ok((len, _)) = socket.recv_from(&mut buf)
            && len > 12
            && buf[1] & 0x7f == 0
        {
            n += 1;
        }
    }
    n
}

#[test]
fn a_hijacker_is_ignored_and_a_moved_caller_followed() {
    let service = Service::start(Options::default());
    let (mut caller, mut listener) = (Uac::new(service.sip, "1000"), Uac::new(service.sip, "1000"));
    assert_eq!(caller.call(), 200);
    assert_eq!(listener.call(), 200);
    let bridge_rtp = caller.remote_rtp.unwrap();
    let ssrc = media_ssrc(bridge_rtp);

    let talk = caller.start_media(440.0, Duration::from_secs(4));
    let listen = listener.start_media(0.0, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(1000));
    // The attacker continues the caller's stream (same SSRC, sequence ahead) with 1700 Hz.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let attack = {
        let attacker = attacker.try_clone().unwrap();
        std::thread::spawn(move || send_stream(&attacker, bridge_rtp, ssrc, 60, 1700.0, 100))
    };
    let answered = count_received(&attacker, Duration::from_millis(2500));
    attack.join().unwrap();
    let heard_by_caller = talk.finish();
    let heard = listen.finish();
    assert_eq!(answered, 0, "the bridge sent no audio to the hijacker");
    let window = heard.window(Duration::from_millis(1200), Duration::from_millis(3000));
    let (legit, forged) = (tone_db(&window, 440.0), tone_db(&window, 1700.0));
    assert!(legit > 20.0, "the caller is still heard: {legit:.1} dB");
    assert!(forged < 0.0, "the hijacker is not mixed: {forged:.1} dB");
    assert!(
        heard_by_caller
            .window(Duration::from_millis(1500), Duration::from_millis(3500))
            .len()
            > 8000,
        "the caller still gets audio"
    );
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_rtp_invalid_total{reason=\"hijack\"}"),
        "{metrics}"
    );

    // The caller falls silent for 2.5 s, then its stream continues from another port.
    std::thread::sleep(Duration::from_millis(2500));
    let moved = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resume = {
        let moved = moved.try_clone().unwrap();
        std::thread::spawn(move || send_stream(&moved, bridge_rtp, ssrc, 200, 440.0, 75))
    };
    let reached = count_received(&moved, Duration::from_millis(1500));
    resume.join().unwrap();
    assert!(
        reached > 20,
        "the bridge followed the caller to its new address: {reached} packets"
    );
    assert_eq!(caller.hangup(), 200);
    assert_eq!(listener.hangup(), 200);
}
