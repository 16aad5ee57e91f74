//! RTCP end to end: the bridge sends compound reports (sender report with a reception block
//! about the caller's stream, SDES) at the RFC 3550 interval, here multiplexed on the RTP port;
//! the test parses them off the wire. The participant's loss, jitter and estimated MOS in
//! `GET /v1/rooms/{room}` match the network: PCMU at 0 % and at 5 % random loss, with the MOS
//! within 0.2 of ITU-T G.107's simplified E-model for the loss the impairer really applied.

mod common;

use std::time::Duration;

use common::*;
use rtcp_types::{Compound, Packet};

/// G.107 simplified (written out here independently of the bridge's): R from random loss in
/// percent (G.711 with concealment: Ie 0, Bpl 25.1) and one-way delay, then MOS.
fn formula_mos(loss_percent: f64, delay_ms: f64) -> f64 {
    let id = 0.024 * delay_ms
        + if delay_ms > 177.3 {
            0.11 * (delay_ms - 177.3)
        } else {
            0.0
        };
    let r = 93.2 - id - 95.0 * loss_percent / (loss_percent + 25.1);
    1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
}

/// One caller through an impairer with `loss`, another listening; returns the first caller's
/// participant entry, the RTCP it received, the SSRC of its stream and the loss the impairer
/// applied (percent).
fn call_with_loss(
    service: &Service,
    room: &str,
    loss: f64,
    seed: u64,
) -> (serde_json::Value, Vec<Vec<u8>>, u32, f64) {
    let (mut talker, mut listener) = (Uac::new(service.sip, room), Uac::new(service.sip, room));
    assert_eq!(talker.call_codec_with(Codec::Pcmu, "a=rtcp-mux\r\n"), 200);
    assert!(
        talker
            .last_response
            .as_ref()
            .unwrap()
            .body()
            .contains("a=rtcp-mux"),
        "rtcp-mux accepted"
    );
    assert_eq!(listener.call(), 200);
    let bridge_rtp = talker.remote_rtp.unwrap();
    let impairer = Impairer::start(talker.rtp.local_addr().unwrap(), bridge_rtp, seed);
    impairer.set(Impairment {
        loss,
        ..Impairment::default()
    });
    talker.remote_rtp = Some(impairer.addr());
    let talk = talker.start_media(440.0, Duration::from_secs(12));
    let listen = listener.start_media(0.0, Duration::from_secs(12));
    std::thread::sleep(Duration::from_millis(11_500));
    let (_, detail) = service.http("GET", &format!("/v1/rooms/{room}"), "");
    let (seen, dropped) = *impairer.counts.lock().unwrap();
    let applied = dropped as f64 * 100.0 / seen.max(1) as f64;
    let heard = talk.finish();
    let _ = listen.finish();
    assert_eq!(talker.hangup(), 200);
    assert_eq!(listener.hangup(), 200);
    (
        detail["participants"][0].clone(),
        heard.rtcp,
        media_ssrc(impairer.addr()),
        applied,
    )
}

#[test]
fn reports_on_the_wire_and_quality_in_the_api() {
    let service = Service::start(Options::default());
    let results: Vec<_> = std::thread::scope(|scope| {
        let clean = scope.spawn(|| call_with_loss(&service, "clean", 0.0, 1));
        let lossy = scope.spawn(|| call_with_loss(&service, "lossy", 0.05, 99));
        vec![(0.0, clean.join().unwrap()), (5.0, lossy.join().unwrap())]
    });
    for (loss, (participant, rtcp, ssrc, applied)) in results {
        assert!(
            (applied - loss).abs() < 3.0,
            "the impairer applied {applied:.1} % for {loss} %"
        );
        // Reports every 5 s on average (the first after 2.5 s): at least two in 12 s.
        assert!(rtcp.len() >= 2, "{loss} %: {} RTCP packets", rtcp.len());
        let mut fractions = Vec::new();
        for datagram in &rtcp {
            let packets: Vec<_> = Compound::parse(datagram)
                .expect("valid compound RTCP")
                .map(Result::unwrap)
                .collect();
            let Packet::Sr(sr) = &packets[0] else {
                panic!("a sender report first: {packets:?}")
            };
            assert!(sr.packet_count() > 0 && sr.octet_count() >= 160 * sr.packet_count());
            assert!(
                packets.iter().any(|p| matches!(p, Packet::Sdes(_))),
                "SDES CNAME included"
            );
            for block in sr.report_blocks() {
                assert_eq!(block.ssrc(), ssrc, "the block is about the caller's stream");
                fractions.push(f64::from(block.fraction_lost()) / 256.0 * 100.0);
            }
        }
        assert!(
            !fractions.is_empty(),
            "a reception block about the caller's stream"
        );
        let last = *fractions.last().unwrap();
        assert!(
            (last - applied).abs() < 4.0,
            "{loss} %: RTCP fraction lost {fractions:?}, applied {applied:.2} %"
        );

        let receive = &participant["receive"];
        let measured = receive["loss_percent"].as_f64().unwrap();
        assert!(
            (measured - applied).abs() < 1.0,
            "{loss} %: measured {measured} %, applied {applied:.2} % {participant}"
        );
        let jitter = receive["jitter_ms"].as_f64().unwrap();
        assert!(jitter < 10.0, "loopback jitter {jitter} ms");
        let mos = receive["mos"].as_f64().unwrap();
        let delay = receive["buffer_ms"].as_f64().unwrap() + 20.0;
        let expected = formula_mos(applied, delay);
        assert!(
            (mos - expected).abs() <= 0.2,
            "{loss} %: MOS {mos}, the formula gives {expected:.2} for {applied:.2} % {participant}"
        );
        assert!(
            participant["rtcp"]["reports_sent"].as_u64().unwrap() >= 2,
            "{participant}"
        );
    }
    // Each ended leg's quality lands in the metrics' histograms.
    let metrics = service.metrics();
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("roundtable_leg_mos_count "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(count.is_some_and(|n| n >= 2), "{metrics}");
}
