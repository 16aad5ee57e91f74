//! Tokens, roles and TLS on the real service: an operator records and a viewer is refused, the
//! audit trail and the recording's ledger name the token, the metrics token reads `/metrics`
//! only, and the API over TLS with the configured certificate (plain HTTP to it fails).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const OPERATOR: &str = "op-7d41c9e2b5";
const VIEWER: &str = "view-3a8f16c0d2";
const METRICS: &str = "scrape-5e2b7a9c41";
const ADMIN: &str = "admin-91c4e07f3b";

fn as_token(
    service: &Service,
    method: &str,
    path: &str,
    body: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let (status, text) = http(service.api, method, path, body, Some(token))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", service.log_tail()));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn roles_are_enforced_and_the_audit_trail_and_ledger_name_the_token() {
    let service = Service::start(Options {
        toml: format!(
            "[api]\nmetrics_token = \"{METRICS}\"\ntoken = \"{ADMIN}\"\n\
             [[api.tokens]]\nname = \"night-shift\"\nrole = \"operator\"\ntoken = \"{OPERATOR}\"\n\
             [[api.tokens]]\nname = \"wallboard\"\nrole = \"viewer\"\ntoken = \"{VIEWER}\"\n"
        ),
        ..Options::default()
    });
    let mut caller = Uac::new(service.sip, "1000");
    assert_eq!(caller.call(), 200);
    let start = r#"{"action":"start"}"#;
    let (status, refused) = as_token(&service, "POST", "/v1/rooms/1000/recording", start, VIEWER);
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("viewer"),
        "{refused}"
    );
    let (status, room) = as_token(
        &service,
        "POST",
        "/v1/rooms/1000/recording",
        start,
        OPERATOR,
    );
    assert_eq!(status, 200, "{room}");
    let (status, _) = as_token(&service, "GET", "/v1/rooms/1000", "", VIEWER);
    assert_eq!(status, 200, "a viewer reads");
    std::thread::sleep(Duration::from_millis(500));
    let stop = r#"{"action":"stop"}"#;
    let (status, _) = as_token(&service, "POST", "/v1/rooms/1000/recording", stop, OPERATOR);
    assert_eq!(status, 200);
    assert_eq!(caller.hangup(), 200);

    // The ledger names the token that started and stopped the recording.
    let deadline = Instant::now() + Duration::from_secs(20);
    let manifest = loop {
        let (_, list) = as_token(&service, "GET", "/v1/recordings?room=1000", "", VIEWER);
        if let Some(id) = list["recordings"][0]["id"].as_str() {
            let (status, manifest) =
                as_token(&service, "GET", &format!("/v1/recordings/{id}"), "", VIEWER);
            assert_eq!(status, 200, "{manifest}");
            let (status, _) = as_token(
                &service,
                "GET",
                &format!("/v1/recordings/{id}/mix.wav"),
                "",
                VIEWER,
            );
            assert_eq!(status, 403, "a viewer does not get the audio");
            break manifest;
        }
        assert!(
            Instant::now() < deadline,
            "no recording\n{}",
            service.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let ledger = manifest["ledger"].to_string();
    assert!(
        ledger.contains("token night-shift from 127.0.0.1:"),
        "the ledger names the token: {ledger}"
    );

    // The audit trail: every request that is not a GET, refused ones too, with its token.
    let (status, page) = as_token(&service, "GET", "/v1/events?types=api_action", "", VIEWER);
    assert_eq!(status, 200);
    let audited: Vec<(String, u64)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["token"].as_str().unwrap_or("-").to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        audited,
        [
            ("wallboard".to_string(), 403),
            ("night-shift".to_string(), 200),
            ("night-shift".to_string(), 200)
        ]
    );

    // The metrics token reads /metrics and nothing else; /live and /ready need no token.
    assert_eq!(as_token(&service, "GET", "/metrics", "", METRICS).0, 200);
    assert_eq!(as_token(&service, "GET", "/v1/rooms", "", METRICS).0, 401);
    assert_eq!(as_token(&service, "GET", "/metrics", "", VIEWER).0, 200);
    assert_eq!(
        service.try_http("GET", "/metrics", "", None).unwrap().0,
        401
    );
    assert_eq!(service.try_http("GET", "/health", "", None).unwrap().0, 401);
    assert_eq!(service.try_http("GET", "/live", "", None).unwrap().0, 200);
    for secret in [OPERATOR, VIEWER, METRICS] {
        assert!(
            !service.log().contains(secret),
            "tokens never reach the log"
        );
    }
}

#[test]
fn the_api_speaks_tls_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (sip, api) = (free_port(), free_port());
    let (low, high) = rtp_range(4);
    let config = dir.path().join("roundtable.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:{sip}\"]\n[media]\nrtp_ports = \"{low}-{high}\"\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\ntoken = \"tls-tok\"\ntls_cert = {:?}\ntls_key = {:?}\n\
             [storage]\npath = {:?}\n",
            cert.display().to_string(),
            key.display().to_string(),
            dir.path().join("store").display().to_string()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .args(args)
            .output()
            .expect("curl runs")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let live = loop {
        let out = curl(&[&format!("https://127.0.0.1:{api}/live")]);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("service.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        String::from_utf8_lossy(&live.stdout),
        r#"{"status":"live"}"#
    );
    let rooms = curl(&[
        "-H",
        "Authorization: Bearer tls-tok",
        &format!("https://127.0.0.1:{api}/v1/rooms"),
    ]);
    assert!(
        String::from_utf8_lossy(&rooms.stdout).contains("\"rooms\""),
        "{rooms:?}"
    );
    let plain = http(
        format!("127.0.0.1:{api}").parse().unwrap(),
        "GET",
        "/live",
        "",
        None,
    );
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP to the TLS port fails: {plain:?}"
    );
    let after = curl(&[&format!("https://127.0.0.1:{api}/live")]);
    assert!(
        after.status.success(),
        "a failed plain request harms nobody"
    );
    let _ = child.kill();
    let _ = child.wait();
}
