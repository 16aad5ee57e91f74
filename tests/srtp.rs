//! SRTP with SDES keys end to end: a caller offering `RTP/SAVP` with an `a=crypto` line gets an
//! SRTP answer with the bridge's own key, and hears and is heard (tones) by a plain-RTP caller in
//! the same room, every packet encrypted and authenticated both ways; plain RTP sent to its port
//! is dropped. With `media.srtp = "required"` a plain offer gets 488. No key reaches the log.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn an_srtp_caller_and_a_plain_caller_hear_each_other() {
    let service = Service::start(Options::default());
    let (mut secure, mut plain) = (Uac::new(service.sip, "1000"), Uac::new(service.sip, "1000"));
    let key = MasterKey::random().unwrap();
    secure.srtp = Some((key.clone(), None));
    assert_eq!(secure.call(), 200);
    let answer = secure.last_response.clone().unwrap();
    assert!(
        answer.body().contains(" RTP/SAVP 0 101\r\n"),
        "{}",
        answer.body()
    );
    let bridge_key = secure
        .srtp
        .as_ref()
        .and_then(|(_, remote)| remote.clone())
        .expect("the bridge's key in the answer");
    assert_ne!(bridge_key, key, "the bridge sends with its own key");
    assert_eq!(plain.call(), 200);
    assert!(
        plain
            .last_response
            .clone()
            .unwrap()
            .body()
            .contains(" RTP/AVP 0 101\r\n")
    );

    let a = secure.start_media(440.0, Duration::from_secs(3));
    let b = plain.start_media(1000.0, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1000));
    // Plain RTP to the SRTP leg's port fails authentication and is dropped.
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut packet = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    packet.extend_from_slice(&[0xff; 160]);
    for _ in 0..10 {
        stray.send_to(&packet, secure.remote_rtp.unwrap()).unwrap();
    }
    let (heard_a, heard_b) = (a.finish(), b.finish());
    let window = |h: &Heard| h.window(Duration::from_millis(1000), Duration::from_millis(2800));
    let (wa, wb) = (window(&heard_a), window(&heard_b));
    assert!(
        wa.len() > 8000,
        "the SRTP caller decrypted audio from the bridge: {} samples",
        wa.len()
    );
    assert!(
        tone_db(&wa, 1000.0) > 20.0,
        "the SRTP caller hears the plain one"
    );
    assert!(
        tone_db(&wb, 440.0) > 20.0,
        "the plain caller hears the SRTP one"
    );
    assert!(
        tone_db(&wa, 440.0) < tone_db(&wa, 1000.0) - 30.0,
        "not itself"
    );
    let metrics = service.metrics();
    assert!(
        metrics.contains("roundtable_rtp_invalid_total{reason=\"srtp\"}"),
        "{metrics}"
    );
    assert_eq!(secure.hangup(), 200);
    assert_eq!(plain.hangup(), 200);
    let log = service.log();
    for params in [key.key_params(), bridge_key.key_params()] {
        assert!(
            !log.contains(&params["inline:".len()..]),
            "a key is in the log"
        );
    }
}

#[test]
fn required_srtp_refuses_plain_offers() {
    let toml = "[media]\nsrtp = \"required\"";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    let mut plain = Uac::new(service.sip, "1000");
    assert_eq!(plain.call(), 488);
    let mut secure = Uac::new(service.sip, "1000");
    secure.srtp = Some((MasterKey::random().unwrap(), None));
    assert_eq!(secure.call(), 200);
    assert_eq!(secure.hangup(), 200);
}
