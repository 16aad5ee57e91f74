//! SIP over TLS (`tls:` listener, `sip.tls_cert` / `sip.tls_key`): a rustls test client places a
//! call, is answered with a `sips:` Contact, shows up in the room, and hangs up. Debian's SIPp is
//! built without TLS, hence our own client. With `media.srtp_required_over_tls` the same
//! plain-RTP call over TLS gets 488.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A service with a `tls:` listener (self-signed certificate) and `extra` TOML; returns it, the
/// TLS port and a client configuration trusting the certificate.
fn tls_service(extra: &str) -> (Service, u16, Arc<rustls::ClientConfig>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let (udp, tls_port) = (free_port(), free_port());
    let toml = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:{udp}\", \"tls:127.0.0.1:{tls_port}\"]\ntls_cert = {:?}\ntls_key = {:?}\n{extra}",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    let service = Service::start(Options {
        toml,
        ..Options::default()
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (service, tls_port, Arc::new(config), dir)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects over TLS and sends a plain-RTP INVITE for room 1000; returns the stream and our
/// local address.
fn invite_over_tls(port: u16, config: &Arc<rustls::ClientConfig>) -> (Tls, std::net::SocketAddr) {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let sdp = "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sips:1000@localhost:{port} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-1\r\n\
         Max-Forwards: 70\r\nFrom: <sips:tls@localhost>;tag=t1\r\nTo: <sips:1000@localhost>\r\nCall-ID: tls-call\r\n\
         CSeq: 1 INVITE\r\nContact: <sips:tls@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    tls.write_all(invite.as_bytes()).unwrap();
    (tls, local)
}

#[test]
fn call_over_tls() {
    let (service, tls_port, config, _dir) = tls_service("");
    let (mut tls, local) = invite_over_tls(tls_port, &config);
    let mut pending = Vec::new();
    let mut ok = None;
    for _ in 0..5 {
        let message = read_stream_message(&mut tls, &mut pending).expect("a response over TLS");
        if message.starts_with("SIP/2.0 200") {
            ok = Some(message);
            break;
        }
    }
    let ok = ok.expect("200 OK over TLS");
    assert!(ok.contains("Contact: <sips:roundtable@127.0.0.1:"), "{ok}");
    let to = ok
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .unwrap()
        .to_string();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sips:roundtable@127.0.0.1:{tls_port} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sips:tls@localhost>;tag=t1\r\nTo: {to}\r\nCall-ID: tls-call\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    tls.write_all(in_dialog("ACK", 1).as_bytes()).unwrap();
    service.wait_participants("1000", 1);
    tls.write_all(in_dialog("BYE", 2).as_bytes()).unwrap();
    let bye_ok = read_stream_message(&mut tls, &mut pending).expect("BYE answered");
    assert!(
        bye_ok.starts_with("SIP/2.0 200") && bye_ok.contains("CSeq: 2 BYE"),
        "{bye_ok}"
    );
    service.wait_participants("1000", 0);
}

#[test]
fn plain_rtp_over_tls_is_refused_when_srtp_is_required_there() {
    let (_service, tls_port, config, _dir) = tls_service("[media]\nsrtp_required_over_tls = true");
    let (mut tls, _) = invite_over_tls(tls_port, &config);
    let mut pending = Vec::new();
    let final_response = (0..5)
        .filter_map(|_| read_stream_message(&mut tls, &mut pending))
        .find(|m| !m.starts_with("SIP/2.0 1"))
        .expect("a final response over TLS");
    assert!(
        final_response.starts_with("SIP/2.0 488"),
        "{final_response}"
    );
}
