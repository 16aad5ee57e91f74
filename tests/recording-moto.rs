//! Recording to S3 features s3s-fs does not have, against moto (`moto[server]` from PyPI, which
//! .ci/run installs): object-lock retention and server-side encryption (SSE-S3 and SSE-KMS with
//! a key id) on finished objects, and a multipart upload left open by a killed process, found
//! and dealt with at the next start.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUCKET: &str = "locked";

/// A moto server on a free loopback port, killed on drop.
struct Moto {
    addr: SocketAddr,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto; when it is missing, fails the test, or returns `None` if `RT_TEST_SKIP` names it
/// (see [`tool_present`]).
fn moto() -> Option<Moto> {
    let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let child = match Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tool_present(&MOTO, Some(format!("{program}: {e}")));
            return None;
        }
    };
    let moto = Moto {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if raw(moto.addr, "GET", "/", &[], b"").is_ok() {
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not start on {}", moto.addr);
}

/// One plain HTTP/1.1 request (moto checks no signatures, but routes by the service named in
/// the Authorization header: without it a key ending in `.json` goes to another service).
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    head.push_str("Authorization: AWS4-HMAC-SHA256 Credential=test/20261122/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// Object Lock (GOVERNANCE, 2 days) and SSE-S3.
const LOCKED: &str = "sse = \"AES256\"\nobject_lock_mode = \"GOVERNANCE\"\nretention_days = 2\n";

/// A service recording every room (mix and tracks) to moto with `s3` settings.
fn service_on(moto: &Moto, s3: &str) -> Service {
    let (status, _, body) = raw(
        moto.addr,
        "PUT",
        &format!("/{BUCKET}"),
        &[("x-amz-bucket-object-lock-enabled", "true")],
        b"",
    )
    .unwrap();
    assert!(
        status == 200 || body.contains("BucketAlreadyOwnedByYou"),
        "{status} {body}"
    );
    let toml = format!(
        "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://{}\"\nbucket = \"{BUCKET}\"\naccess_key = \"test\"\n\
         secret_key = \"test\"\n{s3}[recording]\nauto_start = true\nmode = \"both\"\n",
        moto.addr
    );
    Service::start(Options {
        toml,
        ..Options::default()
    })
}

/// The response headers of HeadObject on `key`.
fn head(moto: &Moto, key: &str) -> impl Fn(&str) -> Option<String> {
    let (status, head, _) = raw(moto.addr, "HEAD", &format!("/{BUCKET}/{key}"), &[], b"").unwrap();
    assert_eq!(status, 200, "{key}: {head}");
    move |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    }
}

/// Every object of a finished recording, the manifest included.
fn all_keys(manifest: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    keys.push(format!(
        "recordings/{}/manifest.json",
        manifest["id"].as_str().unwrap()
    ));
    keys
}

#[test]
fn finished_objects_carry_retention_and_encryption() {
    let Some(moto) = moto() else { return };
    let service = service_on(&moto, LOCKED);
    let mut uac = Uac::new(service.sip, "5100");
    assert_eq!(uac.call(), 200);
    let _ = uac.start_media(440.0, Duration::from_secs(3)).finish();
    assert_eq!(uac.hangup(), 200);
    let manifest = service.finished_recording("5100", Duration::from_secs(60));
    assert_eq!(manifest["retention"]["object_lock_mode"], "GOVERNANCE");
    assert_eq!(manifest["retention"]["retention_days"], 2);
    let tomorrow = roundtable_recorder::time::rfc3339(
        std::time::SystemTime::now() + Duration::from_secs(86_400),
    );
    // HeadObject carries what GetObjectRetention would say (moto implements only the former).
    for key in all_keys(&manifest) {
        let header = head(&moto, &key);
        assert_eq!(
            header("x-amz-object-lock-mode").as_deref(),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = header("x-amz-object-lock-retain-until-date").unwrap_or_default();
        assert!(
            until.as_str() > tomorrow.as_str(),
            "{key} retained until {until}: at least two days"
        );
        assert_eq!(
            header("x-amz-server-side-encryption").as_deref(),
            Some("AES256"),
            "{key}"
        );
    }
    let (code, out, err) = service.cli(&["recordings", "verify", manifest["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn uploads_left_open_by_a_killed_process_are_completed_or_aborted() {
    let Some(moto) = moto() else { return };
    let mut service = service_on(&moto, LOCKED);
    let mut uac = Uac::new(service.sip, "5200");
    assert_eq!(uac.call(), 200);
    let media = uac.start_media(440.0, Duration::from_secs(6));
    std::thread::sleep(Duration::from_secs(3));
    service.kill9();
    drop(media);
    // The killed run's uploads are open; add one it started but never noted (killed between
    // CreateMultipartUpload and writing upload.json).
    let spool = service.storage().join("spool/recordings/5200");
    let start = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let stray = format!("recordings/5200/{start}/legs/99.wav");
    let (status, _, body) = raw(
        moto.addr,
        "POST",
        &format!("/{BUCKET}/{stray}?uploads"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, _, open) = raw(moto.addr, "GET", &format!("/{BUCKET}?uploads"), &[], b"").unwrap();
    assert!(
        open.matches("<UploadId>").count() >= 3,
        "mix, a track and the stray are open: {open}"
    );

    service.start_again();
    let manifest = service.finished_recording("5200", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut open = String::new();
    while Instant::now() < deadline {
        open = raw(moto.addr, "GET", &format!("/{BUCKET}?uploads"), &[], b"")
            .unwrap()
            .2;
        if !open.contains("<UploadId>") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !open.contains("<UploadId>"),
        "uploads still open after recovery: {open}"
    );
    assert!(
        manifest["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| !o["key"].as_str().unwrap().ends_with("99.wav"))
    );
    let (code, out, err) = service.cli(&["recordings", "verify", manifest["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn sse_kms_names_its_key_on_every_object() {
    let Some(moto) = moto() else { return };
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/roundtable-test";
    let service = service_on(
        &moto,
        &format!("sse = \"aws:kms\"\nkms_key_id = \"{key_id}\"\n"),
    );
    let mut uac = Uac::new(service.sip, "5300");
    assert_eq!(uac.call(), 200);
    let _ = uac.start_media(440.0, Duration::from_secs(2)).finish();
    assert_eq!(uac.hangup(), 200);
    let manifest = service.finished_recording("5300", Duration::from_secs(60));
    assert_eq!(manifest["retention"]["sse"], "aws:kms");
    for key in all_keys(&manifest) {
        let header = head(&moto, &key);
        assert_eq!(
            header("x-amz-server-side-encryption").as_deref(),
            Some("aws:kms"),
            "{key}"
        );
        assert_eq!(
            header("x-amz-server-side-encryption-aws-kms-key-id").as_deref(),
            Some(key_id),
            "{key}"
        );
        assert_eq!(
            header("x-amz-object-lock-mode"),
            None,
            "{key}: no lock asked for"
        );
    }
}
