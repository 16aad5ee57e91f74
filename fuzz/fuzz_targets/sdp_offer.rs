//! SDP offer parsing and answering never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_sip::sdp::{AudioCodec, Offer, SrtpPolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = Offer::parse(data, SrtpPolicy::Optional) {
        if let Ok(answer) = offer.answer(&[
            AudioCodec::Opus,
            AudioCodec::G722,
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
        ]) {
            let _ = answer.to_sdp(offer.rtp_addr, 1, 1);
        }
    }
});
