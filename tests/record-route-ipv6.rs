//! Record-Route: the bridge echoes the proxy's Record-Route in its 200, accepts the phone's
//! in-dialog requests routed through the proxy, and sends its own BYE to the proxy with the route
//! set as Route. And the same kind of call over IPv6 (UDP on ::1) with an IPv6 SDP.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

#[test]
fn in_dialog_requests_follow_the_record_route_set() {
    let service = Service::start(Options::default());
    let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
    proxy
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let hop = format!("<sip:{};lr>", proxy.local_addr().unwrap());
    let mut phone = Uac::new(service.sip, "1000");
    phone.extra_headers = format!("Record-Route: {hop}\r\n");
    assert_eq!(phone.call(), 200);
    let ok = phone.last_response.clone().unwrap();
    assert_eq!(
        ok.header("Record-Route"),
        Some(hop.clone()),
        "200 echoes Record-Route"
    );

    // The phone's own in-dialog request carries the route as Route: it is served.
    let (status, _) = phone.reinvite(&phone.offer("0", "a=rtpmap:0 PCMU/8000\r\n"));
    assert_eq!(status, 200);

    // Kick: the BYE goes to the proxy, with the route set and the phone's Contact as target.
    let (_, room) = service.http("GET", "/v1/rooms/1000", "");
    let leg = room["participants"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        service
            .http("DELETE", &format!("/v1/rooms/1000/participants/{leg}"), "")
            .0,
        204
    );
    let mut buf = [0u8; 4096];
    let (n, _) = proxy.recv_from(&mut buf).expect("BYE reaches the proxy");
    let bye = SipText(String::from_utf8_lossy(&buf[..n]).to_string());
    assert_eq!(bye.method(), Some("BYE"));
    assert_eq!(bye.header("Route"), Some(hop));
    let phone_contact = format!("sip:tester@{}", phone.sip.local_addr().unwrap());
    assert!(
        bye.0.starts_with(&format!("BYE {phone_contact} SIP/2.0")),
        "{}",
        bye.0
    );
}

#[test]
fn call_over_ipv6() {
    let service = Service::start(Options {
        ipv6: true,
        ..Options::default()
    });
    let server = format!("[::1]:{}", service.sip.port()).parse().unwrap();
    let mut a = Uac::new_from(server, "v6", "::1");
    let mut b = Uac::new_from(server, "v6", "::1");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    assert!(a.remote_rtp.unwrap().is_ipv6(), "the answer's c= is IPv6");
    let media_a = a.start_media(440.0, Duration::from_millis(1500));
    let media_b = b.start_media(0.0, Duration::from_millis(1500));
    let _ = media_a.finish();
    let heard_b = media_b.finish();
    assert!(
        tone_db(
            &heard_b.window(Duration::from_millis(500), Duration::from_millis(1400)),
            440.0
        ) > 50.0
    );
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
}
