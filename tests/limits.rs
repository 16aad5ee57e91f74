//! Caps answered with clear refusals: `sip.max_calls` (503), `media.max_legs_per_room` and
//! `max_participants` from `[room]` / `[[rooms]]` / the API (486), RTP port exhaustion (503), and
//! RTP inactivity (BYE).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn max_calls_gives_503() {
    let service = Service::start(Options {
        toml: "[sip]\nmax_calls = 2".into(),
        ..Options::default()
    });
    let mut calls: Vec<Uac> = (0..3)
        .map(|i| Uac::new(service.sip, &format!("room{i}")))
        .collect();
    assert_eq!(calls[0].call(), 200);
    assert_eq!(calls[1].call(), 200);
    assert_eq!(calls[2].call(), 503);
    assert_eq!(calls[0].hangup(), 200);
    let mut again = Uac::new(service.sip, "room2");
    assert_eq!(again.call(), 200, "a slot freed up");
    assert!(
        service
            .metrics()
            .contains("roundtable_calls_rejected_total{reason=\"max_calls\"} 1")
    );
}

#[test]
fn max_legs_per_room_gives_486() {
    let service = Service::start(Options {
        toml: "[media]\nmax_legs_per_room = 1".into(),
        ..Options::default()
    });
    let mut a = Uac::new(service.sip, "1000");
    let mut b = Uac::new(service.sip, "1000");
    let mut c = Uac::new(service.sip, "2000");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 486);
    assert_eq!(c.call(), 200, "other rooms are not affected");
}

#[test]
fn room_defaults_apply_to_every_room_and_definitions_override_them() {
    let toml = "[room]\nmax_participants = 1\npin = \"4321\"\n\
                [[rooms]]\nid = \"open\"\npin = \"\"\n\
                [[rooms]]\nid = \"big\"\npin = \"\"\nmax_participants = 2\n\
                [[rooms]]\nid = \"recorded\"\npin = \"\"\nrecord = true\n";
    let service = Service::start(Options {
        toml: toml.into(),
        ..Options::default()
    });
    // The default PIN makes any other room PIN-only: dialled directly, 403.
    assert_eq!(Uac::new(service.sip, "1000").call(), 403);
    // The default size applies where the definition says nothing.
    let (mut a, mut b) = (Uac::new(service.sip, "open"), Uac::new(service.sip, "open"));
    assert_eq!((a.call(), b.call()), (200, 486));
    let (mut c, mut d) = (Uac::new(service.sip, "big"), Uac::new(service.sip, "big"));
    assert_eq!((c.call(), d.call()), (200, 200));
    // An API definition overrides both.
    let (status, _) = service.http("PUT", "/v1/rooms/api", r#"{"pin":"","max_participants":2}"#);
    assert_eq!(status, 200);
    let (mut e, mut f) = (Uac::new(service.sip, "api"), Uac::new(service.sip, "api"));
    assert_eq!((e.call(), f.call()), (200, 200));
    assert_eq!(
        service
            .http("PUT", "/v1/rooms/bad", r#"{"max_participants":0}"#)
            .0,
        400
    );
    assert_eq!(
        service
            .http("PUT", "/v1/rooms/bad", r#"{"max_participants":201}"#)
            .0,
        400
    );
    // `record = true` records the room from its first join.
    let mut g = Uac::new(service.sip, "recorded");
    assert_eq!(g.call(), 200);
    let (_, room) = service.http("GET", "/v1/rooms/recorded", "");
    assert_eq!(room["recording"], true, "{room}");
    let (_, room) = service.http("GET", "/v1/rooms/open", "");
    assert_eq!(room["recording"], false, "{room}");
    for caller in [&mut a, &mut c, &mut d, &mut e, &mut f, &mut g] {
        assert_eq!(caller.hangup(), 200);
    }
}

#[test]
fn rtp_port_exhaustion_gives_503() {
    let service = Service::start(Options {
        rtp_pairs: 1,
        ..Options::default()
    });
    let mut a = Uac::new(service.sip, "1000");
    let mut b = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 503);
    assert!(
        service
            .metrics()
            .contains("roundtable_calls_rejected_total{reason=\"rtp_ports\"} 1")
    );
    assert_eq!(a.hangup(), 200);
}

#[test]
fn silent_leg_gets_bye_after_inactivity_timeout() {
    let service = Service::start(Options {
        toml: "[media]\ninactivity_timeout_s = 1".into(),
        ..Options::default()
    });
    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert!(
        a.expect_bye(Duration::from_secs(4)),
        "BYE after 1 s without RTP\n{}",
        service.log()
    );
    service.wait_participants("1000", 0);
}

#[test]
fn public_ip_is_what_the_sdp_advertises() {
    let service = Service::start(Options {
        toml: "[media]\npublic_ip = \"192.0.2.7\"".into(),
        ..Options::default()
    });
    let mut a = Uac::new(service.sip, "1000");
    assert_eq!(a.call(), 200);
    assert_eq!(a.remote_rtp.unwrap().ip().to_string(), "192.0.2.7");
    assert_eq!(a.hangup(), 200);
}

#[test]
fn thousands_of_join_leave_cycles_leak_no_port() {
    // Four RTP port pairs for 2000 calls: a pair returns to the pool only once the leg's
    // sockets closed (a few ms after its BYE), so back-to-back calls may need a second or third;
    // a leaked pair would show as 503s long before the end.
    let toml = "[sip.limits]\nrequests_per_second = 100000\nburst = 100000\nhard_limit = 1000000";
    let service = Service::start(Options {
        toml: toml.into(),
        rtp_pairs: 4,
        ..Options::default()
    });
    let started = std::time::Instant::now();
    let mut busy = 0;
    for cycle in 0..2000 {
        let mut caller = Uac::new(service.sip, "cycle");
        // Calls this close together can find every pair still closing (503): wait and retry.
        let mut status = caller.call();
        for _ in 0..5 {
            if status != 503 {
                break;
            }
            busy += 1;
            std::thread::sleep(Duration::from_millis(50));
            caller = Uac::new(service.sip, "cycle");
            status = caller.call();
        }
        assert_eq!(status, 200, "cycle {cycle}\n{}", service.metrics());
        if cycle % 100 == 99 {
            // Now and then the bridge ends the call instead (kick: BYE from the bridge).
            let (_, room) = service.http("GET", "/v1/rooms/cycle", "");
            let leg = room["participants"][0]["id"].as_str().unwrap().to_string();
            assert_eq!(
                service
                    .http("DELETE", &format!("/v1/rooms/cycle/participants/{leg}"), "")
                    .0,
                204
            );
            assert!(caller.expect_bye(Duration::from_secs(2)));
        } else {
            assert_eq!(caller.hangup(), 200, "cycle {cycle}");
        }
    }
    eprintln!(
        "2000 join/leave cycles in {:?}, {busy} momentary 503s",
        started.elapsed()
    );
    // How often a call finds all four pairs still closing depends on scheduling (2-21 seen in
    // 2000 on an idle machine); a leak shows in the check below, this only bounds the waiting.
    assert!(
        busy < 100,
        "{busy} calls found every port pair still closing"
    );
    // Every pair is free at the end: four calls at once still fit.
    std::thread::sleep(Duration::from_millis(200));
    let mut callers: Vec<Uac> = (0..4).map(|_| Uac::new(service.sip, "end")).collect();
    for caller in &mut callers {
        assert_eq!(caller.call(), 200);
    }
}
