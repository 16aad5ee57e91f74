//! A test whose tool is missing fails and names the package to install; it is skipped only when
//! `RT_TEST_SKIP` names the tool, and then says so. Runs one real SIPp test and one real moto test
//! (their own test binaries, built beside this one) with the tool off `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The newest test binary of `tests/<name>.rs` built beside this one (`<name>-<hash>`, with `-`
/// in the file name written `_`).
fn sibling_test_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let prefix = format!("{}-", name.replace('-', "_"));
    let newest = std::fs::read_dir(deps)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            file.starts_with(&prefix) && path.extension().is_none() && is_executable(path)
        })
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok());
    newest.unwrap_or_else(|| {
        panic!(
            "no test binary {prefix}* in {} (build every test first: cargo test --no-run)",
            deps.display()
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs one test of `binary` exactly, with an empty `PATH` (so neither SIPp nor moto_server can
/// be found), no `MOTO_SERVER` and `RT_TEST_SKIP` as given.
fn run_without_tools(binary: &Path, test: &str, skip: Option<&str>) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary);
    command
        .args(["--exact", test, "--test-threads", "1"])
        .env("PATH", empty.path())
        .env_remove("MOTO_SERVER")
        .env_remove("RT_TEST_SKIP");
    if let Some(skip) = skip {
        command.env("RT_TEST_SKIP", skip);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Checks that `test` of `tests/<file>.rs` fails without its tool, naming `package`, and is
/// skipped, visibly, when `RT_TEST_SKIP` names `tool`.
fn fails_without_tool_unless_skipped(file: &str, test: &str, tool: &str, package: &str) {
    let binary = sibling_test_binary(file);
    let failed = run_without_tools(&binary, test, None);
    let out = text(&failed);
    assert!(
        !failed.status.success(),
        "{test} passed without {tool}:\n{out}"
    );
    assert!(
        out.contains("1 failed"),
        "{test} did not run and fail:\n{out}"
    );
    assert!(
        out.contains(package),
        "{test}'s failure does not name {package}:\n{out}"
    );
    assert!(out.contains(&format!("RT_TEST_SKIP={tool}")), "{out}");

    let skipped = run_without_tools(&binary, test, Some(&format!("other,{tool}")));
    let out = text(&skipped);
    assert!(
        skipped.status.success(),
        "{test} failed though RT_TEST_SKIP={tool}:\n{out}"
    );
    let line = format!("SKIPPED {test}: {tool} is not installed");
    assert!(out.contains(&line), "no '{line}' line:\n{out}");

    let other = run_without_tools(&binary, test, Some("something-else"));
    assert!(
        !other.status.success(),
        "{test} skipped for another tool's name:\n{}",
        text(&other)
    );
}

#[test]
fn sipp_test_without_sipp_fails_naming_the_package() {
    fails_without_tool_unless_skipped(
        "sipp-scenarios",
        "options_ping_is_answered",
        "sipp",
        "sip-tester",
    );
}

#[test]
fn moto_test_without_moto_fails_naming_the_package() {
    fails_without_tool_unless_skipped(
        "recording-moto",
        "finished_objects_carry_retention_and_encryption",
        "moto",
        "moto[server]",
    );
}
