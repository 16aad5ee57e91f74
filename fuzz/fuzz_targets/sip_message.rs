//! SIP message parsing and validation never panic, and what parses prints back to something that
//! parses to the same start line and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_sip::message::{Framing, Message, stream_frame_len};

fuzz_target!(|data: &[u8]| {
    let _ = stream_frame_len(data);
    let _ = Message::parse(data, Framing::Stream);
    if let Ok((message, used)) = Message::parse(data, Framing::Datagram) {
        assert!(used <= data.len());
        let _ = message.validate_request();
        let _ = message.top_via();
        let _ = message.cseq();
        let (again, _) =
            Message::parse(&message.to_bytes(), Framing::Stream).expect("printed message parses");
        assert_eq!(again.start, message.start);
        assert_eq!(again.body, message.body);
    }
});
