//! The OpenAPI document against the live service: it validates as OpenAPI 3.1
//! (openapi-spec-validator), and schemathesis, a property-based tool, finds no mismatch
//! between it and the service's answers (statuses, content types, bodies, headers), no
//! request the document forbids that is accepted, no route that answers without the token, no
//! server error.
//!
//! schemathesis calls every route with generated values, dial-outs and webhook URLs among them,
//! so the service and schemathesis run in a network namespace of their own (`unshare -rn`) with
//! only a loopback: nothing it generates can leave the machine.

mod common;

use std::process::Command;

use common::*;

#[test]
fn live_answers_match_the_openapi_document() {
    let Some(schemathesis) = python_tool("SCHEMATHESIS", "schemathesis", &SCHEMATHESIS) else {
        return;
    };
    let Some(validator) = python_tool(
        "OPENAPI_SPEC_VALIDATOR",
        "openapi-spec-validator",
        &SCHEMATHESIS,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roundtable.toml");
    // In its own namespace the service may take any port; DNS goes to a closed loopback port.
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]\n\
             dns_servers = [\"127.0.0.1:9\"]\n\
             [api]\nlisten = \"127.0.0.1:8080\"\ntoken = \"schema-tok\"\nrate_limit_per_s = 0\n\
             [storage]\npath = {:?}\n\
             [[rooms]]\nid = \"1000\"\n",
            dir.path().join("store")
        ),
    )
    .unwrap();
    // The long poll waits up to wait_s (at most 30 s) when nothing is new: 1 s keeps the
    // waiting path in the run without making it minutes long.
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        "[[operations]]\ninclude-path = \"/v1/events\"\nparameters = { wait_s = 1 }\n",
    )
    .unwrap();
    let script = r#"
set -u
ip link set lo up || exit 90
"$RT_BIN" serve --config "$RT_CONFIG" >"$RT_DIR/service.log" 2>&1 &
service=$!
# Whatever happens below, the service goes with the script.
trap 'kill "$service" 2>/dev/null; wait "$service"' EXIT
for _ in $(seq 1 200); do
  curl -sf http://127.0.0.1:8080/ready >/dev/null && break
  sleep 0.05
done
curl -sf -H "Authorization: Bearer schema-tok" http://127.0.0.1:8080/openapi.json \
  >"$RT_DIR/openapi.json" || exit 91
"$RT_VALIDATOR" "$RT_DIR/openapi.json" || exit 92
cd "$RT_DIR"
"$RT_SCHEMATHESIS" run "$RT_DIR/openapi.json" --url http://127.0.0.1:8080 \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples 50 --no-color \
  -H "Authorization: Bearer schema-tok"
"#;
    let output = Command::new("unshare")
        .args(["-rn", "bash", "-c", script])
        .stdin(std::process::Stdio::null())
        .env("RT_BIN", BIN)
        .env("RT_CONFIG", &config)
        .env("RT_DIR", dir.path())
        .env("RT_VALIDATOR", &validator)
        .env("RT_SCHEMATHESIS", &schemathesis)
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap_or_default();
    let log_tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        output.status.success(),
        "exit {:?} (90: no loopback, 91: no document, 92: not valid OpenAPI 3.1)\n{stdout}\n{}\nservice log (last lines, newest first):\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr),
        log_tail.join("\n")
    );
    let routes = roundtable_api::ROUTES.len();
    assert!(
        stdout.contains(&format!("{routes} selected / {routes} total"))
            && !stdout.contains("failed"),
        "every operation was tested:\n{stdout}"
    );
}
