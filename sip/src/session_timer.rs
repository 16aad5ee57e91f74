//! Session timers (RFC 4028): which interval and refresher a request and our configuration agree
//! on, and when a session without a refresh is over.
//!
//! A caller that supports the extension refreshes (`refresher=uac`) unless it asks the bridge to
//! (`refresher=uas`). A caller that does not support it gets `refresher=uas` with our configured
//! interval: the bridge then refreshes with UPDATE (when the caller allows it) or re-INVITE, and
//! ends the call when a refresh fails.

use std::time::Duration;

use crate::message::Message;

/// Our default Min-SE (RFC 4028 asks for at least 90 s): shorter intervals get 422. A
/// deployment may set another (`EndpointConfig::min_session_expires`); tests shorten it.
pub const MIN_SE: u32 = 90;

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (`refresher=uac`).
    Caller,
    /// The bridge (`refresher=uas`).
    Bridge,
}

/// What a request and our configuration agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No session timer for this session.
    Off,
    /// A session timer runs.
    Timer {
        /// The session interval in seconds.
        interval: u32,
        /// Who refreshes.
        refresher: Refresher,
        /// Whether the caller supports the extension (then our 2xx carries `Require: timer`).
        caller_supports: bool,
    },
    /// The interval is below our Min-SE and the caller supports the extension: answer 422 with
    /// `Min-SE`.
    TooSmall,
}

impl Negotiation {
    /// The `Session-Expires` value of our 2xx, if a timer runs.
    pub fn header(&self) -> Option<String> {
        match self {
            Negotiation::Timer {
                interval,
                refresher,
                ..
            } => {
                let who = if *refresher == Refresher::Caller {
                    "uac"
                } else {
                    "uas"
                };
                Some(format!("{interval};refresher={who}"))
            }
            Negotiation::Off | Negotiation::TooSmall => None,
        }
    }
}

/// Reads `Session-Expires`, its `refresher`, `Min-SE` and `Supported`/`Require: timer` from a
/// request. `default_interval` (0 = none) applies when the request names no interval; `min_se`
/// is our Min-SE.
pub fn negotiate(request: &Message, default_interval: u32, min_se: u32) -> Negotiation {
    let caller_supports = ["Supported", "Require"].iter().any(|h| {
        request
            .headers
            .all(h)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("timer"))
    });
    let their_min = request
        .headers
        .get("Min-SE")
        .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok());
    let asked = request.headers.get("Session-Expires").and_then(|value| {
        let mut parts = value.split(';');
        let interval = parts.next()?.trim().parse::<u32>().ok()?;
        let refresher = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        Some((interval, refresher))
    });
    let (interval, refresher) = match asked {
        Some((interval, _)) if interval < min_se && caller_supports => {
            return Negotiation::TooSmall;
        }
        Some((interval, refresher)) => (interval.max(min_se), refresher),
        None if default_interval == 0 => return Negotiation::Off,
        None => (
            default_interval.max(their_min.unwrap_or(0)).max(min_se),
            None,
        ),
    };
    let refresher = match refresher.as_deref() {
        Some("uas") => Refresher::Bridge,
        _ if caller_supports => Refresher::Caller,
        _ => Refresher::Bridge,
    };
    Negotiation::Timer {
        interval,
        refresher,
        caller_supports,
    }
}

/// When to give up on a session that was last refreshed `interval` seconds ago: RFC 4028 10
/// sends the BYE at the interval minus the lesser of 32 s and a third of it. (When the bridge
/// refreshes, it refreshes at half the interval and ends the call as soon as a refresh fails.)
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

    fn timer(interval: u32, refresher: Refresher, caller_supports: bool) -> Negotiation {
        Negotiation::Timer {
            interval,
            refresher,
            caller_supports,
        }
    }

    #[test]
    fn negotiation() {
        use Refresher::{Bridge, Caller};
        assert_eq!(negotiate(&request(""), 0, MIN_SE), Negotiation::Off);
        assert_eq!(
            negotiate(&request(""), 1800, MIN_SE),
            timer(1800, Bridge, false),
            "we refresh for old phones"
        );
        assert_eq!(
            negotiate(&request("Supported: timer\r\n"), 1800, MIN_SE),
            timer(1800, Caller, true)
        );
        assert_eq!(
            negotiate(&request("Min-SE: 3600\r\n"), 1800, MIN_SE),
            timer(3600, Bridge, false)
        );
        let ok = request("Supported: timer, 100rel\r\nSession-Expires: 1800\r\n");
        assert_eq!(negotiate(&ok, 0, MIN_SE), timer(1800, Caller, true));
        let uac = request("Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n");
        assert_eq!(negotiate(&uac, 0, MIN_SE), timer(120, Caller, true));
        let uas = request("Supported: timer\r\nSession-Expires: 120;refresher=uas\r\n");
        assert_eq!(negotiate(&uas, 0, MIN_SE), timer(120, Bridge, true));
        assert_eq!(
            negotiate(
                &request("Supported: timer\r\nSession-Expires: 60\r\n"),
                0,
                MIN_SE
            ),
            Negotiation::TooSmall
        );
        assert_eq!(
            negotiate(&request("Session-Expires: 60\r\n"), 0, MIN_SE),
            timer(90, Bridge, false),
            "raised, not refused"
        );
        assert_eq!(
            negotiate(&request("Session-Expires: 1800\r\n"), 0, MIN_SE),
            timer(1800, Bridge, false)
        );
        // Another Min-SE (tests shorten it): 9 s is then long enough, 5 s is not.
        assert_eq!(
            negotiate(&request("Supported: timer\r\nSession-Expires: 9\r\n"), 0, 9),
            timer(9, Caller, true)
        );
        assert_eq!(
            negotiate(&request("Supported: timer\r\nSession-Expires: 5\r\n"), 0, 9),
            Negotiation::TooSmall
        );
        assert_eq!(
            timer(90, Bridge, false).header().as_deref(),
            Some("90;refresher=uas")
        );
        assert_eq!(
            timer(90, Caller, true).header().as_deref(),
            Some("90;refresher=uac")
        );
    }

    #[test]
    fn bye_before_expiry() {
        assert_eq!(expiry(90), Duration::from_secs(60));
        assert_eq!(expiry(1800), Duration::from_secs(1768));
    }
}
