//! Invalid configuration stops `serve` and `check-config` with a non-zero exit and a message
//! naming the key as written in the file.

mod common;

use std::process::Command;

use common::BIN;

fn run(args: &[&str], toml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let data = dir.path().join("data");
    std::fs::write(&file, format!("{toml}\n")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(&file)
        .env("ROUNDTABLE_STORAGE__PATH", &data);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// An S3 store that is complete but for the key a case adds.
const S3: &str = "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\n";

#[test]
fn each_invalid_case_exits_non_zero_and_names_the_key() {
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let unwritable = format!(
        "[storage]\npath = {:?}",
        blocker.path().join("sub").display().to_string()
    );
    // (TOML, environment, the key the error must name)
    type Case = (String, Vec<(&'static str, &'static str)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "[api]\nlisten = \"127.0.0.1:70000\"".into(),
            vec![],
            "api.listen",
        ),
        (
            "[sip]\nlisten = [\"udp:0.0.0.0:99999\"]".into(),
            vec![],
            "sip.listen",
        ),
        (
            "[media]\nrtp_ports = \"20000-20000\"".into(),
            vec![],
            "media.rtp_ports",
        ),
        (
            "[media]\nrtp_ports = \"30000-20000\"".into(),
            vec![],
            "media.rtp_ports",
        ),
        (
            "[api]\nlisten = \"0.0.0.0:8080\"".into(),
            vec![],
            "api.token",
        ),
        (
            "[media]\nunknown_key = 1".into(),
            vec![],
            "media.unknown_key",
        ),
        ("[nosuchsection]\nx = 1".into(), vec![], "nosuchsection"),
        ("[log]\nformat = \"xml\"".into(), vec![], "log.format"),
        (
            "".into(),
            vec![("ROUNDTABLE_API__LISTEN", "nonsense")],
            "api.listen",
        ),
        (
            "[recording]\nmode = \"stereo\"".into(),
            vec![],
            "recording.mode",
        ),
        (
            "[recording]\nconsent_prompt = \"/nonexistent.wav\"".into(),
            vec![],
            "recording.consent_prompt",
        ),
        (
            "[storage]\nspool_quota_mib = 0".into(),
            vec![],
            "storage.spool_quota_mib",
        ),
        (
            "[storage]\nbackend = \"ftp\"".into(),
            vec![],
            "storage.backend",
        ),
        (
            "[storage]\nbackend = \"s3\"".into(),
            vec![],
            "storage.s3.bucket",
        ),
        (
            format!("{S3}part_size_mib = 4"),
            vec![],
            "storage.s3.part_size_mib",
        ),
        (format!("{S3}sse = \"DES\""), vec![], "storage.s3.sse"),
        (
            format!("{S3}object_lock_mode = \"COMPLIANCE\""),
            vec![],
            "storage.s3.retention_days",
        ),
        (
            format!("{S3}prefix = \"no-slash\""),
            vec![],
            "storage.s3.prefix",
        ),
    ];
    for (toml, env, key) in &cases {
        for sub in [&["check-config"][..], &["serve"][..]] {
            let (code, stderr) = run(sub, toml, env);
            assert_ne!(code, 0, "{sub:?} {toml:?} must fail");
            assert!(
                stderr.contains(key),
                "{sub:?} {toml:?}: stderr {stderr:?} does not name {key}"
            );
        }
    }
    // The unwritable data dir, from the file (the env default above is overridden by nothing).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, &unwritable).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("storage.path") && stderr.contains("not writable"),
        "{stderr}"
    );
}

#[test]
fn valid_configuration_checks_ok() {
    let (code, stderr) = run(&["check-config"], "[recording]\nauto_start = true", &[]);
    assert_eq!(code, 0, "{stderr}");
}
