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
    cmd.args(args).arg("--config").arg(&file).env("ROUNDTABLE_STORAGE__PATH", &data);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn each_invalid_case_exits_non_zero_and_names_the_key() {
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let unwritable = format!("[storage]\npath = {:?}", blocker.path().join("sub").display().to_string());
    let cases: Vec<(String, Vec<(&str, &str)>, &str)> = vec![
        ("[api]\nlisten = \"127.0.0.1:70000\"".into(), vec![], "api.listen"),
        ("[sip]\nlisten = [\"udp:0.0.0.0:99999\"]".into(), vec![], "sip.listen"),
        ("[media]\nrtp_ports = \"20000-20000\"".into(), vec![], "media.rtp_ports"),
        ("[media]\nrtp_ports = \"30000-20000\"".into(), vec![], "media.rtp_ports"),
        ("[api]\nlisten = \"0.0.0.0:8080\"".into(), vec![], "api.token"),
        ("[media]\nunknown_key = 1".into(), vec![], "media.unknown_key"),
        ("[nosuchsection]\nx = 1".into(), vec![], "nosuchsection"),
        ("[log]\nformat = \"xml\"".into(), vec![], "log.format"),
        ("".into(), vec![("ROUNDTABLE_API__LISTEN", "nonsense")], "api.listen"),
    ];
    for (toml, env, key) in &cases {
        for sub in [&["check-config"][..], &["serve"][..]] {
            let (code, stderr) = run(sub, toml, env);
            assert_ne!(code, 0, "{sub:?} {toml:?} must fail");
            assert!(stderr.contains(key), "{sub:?} {toml:?}: stderr {stderr:?} does not name {key}");
        }
    }
    // The unwritable data dir, from the file (the env default above is overridden by nothing).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, &unwritable).unwrap();
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&file).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.path") && stderr.contains("not writable"), "{stderr}");
}

#[test]
fn valid_configuration_checks_ok() {
    let (code, stderr) = run(&["check-config"], "[recording]\nauto_start = true", &[]);
    assert_eq!(code, 0, "{stderr}");
}
