//! SDP offer parsing and answering never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_sip::sdp::Offer;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = Offer::parse(data) {
        if let Ok(answer) = offer.answer() {
            let _ = answer.to_sdp(offer.rtp_addr, 1, 1);
        }
    }
});
