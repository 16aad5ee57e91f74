//! RTP parsing never panics and never returns a payload outside the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = RtpPacket::parse(data) {
        assert!(packet.payload.len() + 12 <= data.len());
    }
});
