//! Caps answered with clear refusals: `sip.max_calls` (503), `media.max_legs_per_room` (486),
//! RTP port exhaustion (503), and RTP inactivity (BYE).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn max_calls_gives_503() {
    let service = Service::start(Options { toml: "[sip]\nmax_calls = 2".into(), ..Options::default() });
    let mut calls: Vec<Uac> = (0..3).map(|i| Uac::new(service.sip, &format!("room{i}"))).collect();
    assert_eq!(calls[0].call(), 200);
    assert_eq!(calls[1].call(), 200);
    assert_eq!(calls[2].call(), 503);
    assert_eq!(calls[0].hangup(), 200);
    let mut again = Uac::new(service.sip, "room2");
    assert_eq!(again.call(), 200, "a slot freed up");
    assert!(service.metrics().contains("roundtable_calls_rejected_total{reason=\"max_calls\"} 1"));
}

#[test]
fn max_legs_per_room_gives_486() {
    let service = Service::start(Options { toml: "[media]\nmax_legs_per_room = 1".into(), ..Options::default() });
    let mut a = Uac::new(service.sip, "1000");
    let mut b = Uac::new(service.sip, "1000");
    let mut c = Uac::new(service.sip, "2000");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 486);
    assert_eq!(c.call(), 200, "other rooms are not affected");
}

#[test]
fn rtp_port_exhaustion_gives_503() {
    let service = Service::start(Options { rtp_pairs: 1, ..Options::default() });
    let mut a = Uac::new(service.sip, "1000");
    let mut b = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 503);
    assert!(service.metrics().contains("roundtable_calls_rejected_total{reason=\"rtp_ports\"} 1"));
    assert_eq!(a.hangup(), 200);
}

#[test]
fn silent_leg_gets_bye_after_inactivity_timeout() {
    let service = Service::start(Options { toml: "[media]\ninactivity_timeout_s = 1".into(), ..Options::default() });
    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert!(a.expect_bye(Duration::from_secs(4)), "BYE after 1 s without RTP\n{}", service.log());
    service.wait_participants("1000", 0);
}

#[test]
fn public_ip_is_what_the_sdp_advertises() {
    let service = Service::start(Options { toml: "[media]\npublic_ip = \"192.0.2.7\"".into(), ..Options::default() });
    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert_eq!(a.remote_rtp.unwrap().ip().to_string(), "192.0.2.7");
    assert_eq!(a.hangup(), 200);
}
