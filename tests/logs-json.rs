//! `log.format = "json"`: one JSON object per line, and every line about a call carries its
//! Call-ID and room.

mod common;

use common::*;

#[test]
fn json_lines_carry_call_id_and_room() {
    let service = Service::start(Options {
        toml: "[log]\nformat = \"json\"\nlevel = \"info\"".into(),
        ..Options::default()
    });
    let mut a = Uac::new(service.sip, "json-room");
    assert_eq!(a.call(), 200);
    assert_eq!(a.hangup(), 200);
    service.wait_participants("json-room", 0);
    // The bridge logs "left room" just after the leg is gone from the API: wait for the line.
    service.wait_for_log("left room", std::time::Duration::from_secs(5));
    let log = service.log();
    let mut call_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let message = value["message"].as_str().unwrap_or_default();
        if message.contains("joined room") || message.contains("left room") {
            call_lines += 1;
            assert!(
                value["call_id"].as_str().is_some_and(|c| !c.is_empty()),
                "{line}"
            );
            assert_eq!(value["room"], "json-room", "{line}");
        }
    }
    assert_eq!(call_lines, 2, "{log}");
}
