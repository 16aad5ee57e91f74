//! RTCP datagrams (compound packets from the network) fed to a leg's RTCP session never panic,
//! and whatever they say leaves the session able to build its next report.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use roundtable_media::rtcp::RtcpSession;

fuzz_target!(|data: &[u8]| {
    let mut session = RtcpSession::new(8000, 1);
    let now = Instant::now();
    let _ = session.handle(now, 0xE000_0000_0000_0000, Some(0x1234), data);
    let _ = session.handle(now, 0xE000_0001_0000_0000, Some(0x1234), data);
    let report = session.report(now, 0xE000_0002_0000_0000, None, None);
    assert!(!report.is_empty());
});
