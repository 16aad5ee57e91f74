//! Session timers (RFC 4028), UAS side: which `Session-Expires` to accept and when a session
//! without a refresh is over.
//!
//! The bridge lets the caller refresh (`refresher=uac`) when the caller supports the extension.
//! When it does not, or asks the bridge to refresh, the session runs without a timer: the
//! bridge does not send refreshes yet (documented in docs/sip.md).

use std::time::Duration;

use crate::message::Message;

/// Our Min-SE (RFC 4028 recommends 90 s): shorter intervals get 422.
pub const MIN_SE: u32 = 90;

/// What a request asks of the session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No session timer for this session.
    Off,
    /// The caller refreshes at least every `interval` seconds.
    CallerRefreshes {
        /// The session interval in seconds.
        interval: u32,
    },
    /// The interval is below our Min-SE: answer 422 with `Min-SE`.
    TooSmall,
}

/// Reads `Session-Expires`, its `refresher` and `Supported`/`Require: timer` from a request.
pub fn negotiate(request: &Message) -> Negotiation {
    let Some(value) = request.headers.get("Session-Expires") else {
        return Negotiation::Off;
    };
    let mut parts = value.split(';');
    let Ok(interval) = parts.next().unwrap_or_default().trim().parse::<u32>() else {
        return Negotiation::Off;
    };
    if interval < MIN_SE {
        return Negotiation::TooSmall;
    }
    let refresher = parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    let supports_timer = ["Supported", "Require"].iter().any(|h| {
        request.headers.all(h).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("timer"))
    });
    match refresher.as_deref() {
        None | Some("uac") if supports_timer => Negotiation::CallerRefreshes { interval },
        _ => Negotiation::Off,
    }
}

/// When to give up on a session that was last refreshed `interval` seconds ago: RFC 4028 10
/// sends the BYE at the interval minus the lesser of 32 s and a third of it.
pub fn expiry(interval: u32) -> Duration {
    Duration::from_secs(u64::from(interval - (interval / 3).min(32)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Framing;

    fn request(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes(), Framing::Stream).unwrap().0
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&request("")), Negotiation::Off);
        let ok = request("Supported: timer, 100rel\r\nSession-Expires: 1800\r\n");
        assert_eq!(negotiate(&ok), Negotiation::CallerRefreshes { interval: 1800 });
        let uac = request("Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n");
        assert_eq!(negotiate(&uac), Negotiation::CallerRefreshes { interval: 120 });
        assert_eq!(negotiate(&request("Supported: timer\r\nSession-Expires: 60\r\n")), Negotiation::TooSmall);
        assert_eq!(negotiate(&request("Session-Expires: 1800\r\n")), Negotiation::Off, "no timer support");
        assert_eq!(negotiate(&request("Supported: timer\r\nx: 300;refresher=uas\r\n")), Negotiation::Off);
    }

    #[test]
    fn bye_before_expiry() {
        assert_eq!(expiry(90), Duration::from_secs(60));
        assert_eq!(expiry(1800), Duration::from_secs(1768));
    }
}
