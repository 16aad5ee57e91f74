//! DTMF digits from RFC 4733 telephone-events: parse the event payload and report each key press
//! once, however many packets (updates and the three end packets) carry it.

/// A DTMF key: `0`-`9`, `*`, `#`, `A`-`D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(char);

impl Digit {
    /// The key for an RFC 4733 event code (0-15), if it is a DTMF key.
    pub fn from_event(code: u8) -> Option<Digit> {
        const KEYS: &[u8; 16] = b"0123456789*#ABCD";
        KEYS.get(usize::from(code)).map(|&k| Digit(char::from(k)))
    }

    /// Parses a key from text (`5`, `*`, `#`, `a`), as SIP INFO bodies carry it.
    pub fn from_char(c: char) -> Option<Digit> {
        let c = c.to_ascii_uppercase();
        matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(Digit(c))
    }

    /// The key as a character.
    pub fn as_char(self) -> char {
        self.0
    }
}

/// One RFC 4733 event packet's payload (section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code.
    pub event: u8,
    /// End bit: this is (one of the copies of) the last packet of the event.
    pub end: bool,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the 4-byte payload; `None` if shorter.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let p = payload.get(..4)?;
        Some(TelephoneEvent {
            event: p[0],
            end: p[1] & 0x80 != 0,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }
}

/// Turns a stream of telephone-event packets into key presses. All packets of one event share
/// its RTP timestamp (RFC 4733 2.5.1), so a new timestamp is a new press: it is reported once,
/// whether its first packet is a begin, an update or one of the three redundant end packets,
/// and a late packet of an earlier event (a timestamp shortly before) is not a new press. A
/// timestamp far behind, or a new SSRC, is a restarted stream: a new press.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    last: Option<(u32, u32)>,
}

/// How far behind the last event's timestamp a packet still counts as a late copy (2^20 units:
/// 131 s at 8 kHz, 22 s at 48 kHz).
const STALE_WINDOW: u32 = 1 << 20;

impl DtmfDetector {
    /// Feeds one telephone-event packet of stream `ssrc`; returns the digit when it starts a
    /// new press.
    pub fn handle(&mut self, ssrc: u32, timestamp: u32, payload: &[u8]) -> Option<Digit> {
        let event = TelephoneEvent::parse(payload)?;
        if let Some((last_ssrc, last)) = self.last {
            // The same event again, or a late copy of one before it.
            if last_ssrc == ssrc && last.wrapping_sub(timestamp) < STALE_WINDOW {
                return None;
            }
        }
        self.last = Some((ssrc, timestamp));
        Digit::from_event(event.event)
    }
}

/// Reads the digit of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`).
pub fn digit_from_info(content_type: &str, body: &[u8]) -> Option<Digit> {
    let text = std::str::from_utf8(body).ok()?;
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let value = match media.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Digit::from_char(c),
        // Some phones send the event number ("10" for '*', "11" for '#').
        _ => value.parse::<u8>().ok().and_then(Digit::from_event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_press_per_event_however_many_packets() {
        let mut d = DtmfDetector::default();
        let start = [5, 0x0a, 0, 160];
        let end = [5, 0x8a, 3, 32];
        assert_eq!(d.handle(1, 1000, &start).map(Digit::as_char), Some('5'));
        assert_eq!(d.handle(1, 1000, &[5, 0x0a, 1, 64]), None);
        for _ in 0..3 {
            assert_eq!(d.handle(1, 1000, &end), None);
        }
        assert_eq!(
            d.handle(1, 2600, &[11, 0x0a, 0, 160]).map(Digit::as_char),
            Some('#')
        );
        assert_eq!(
            d.handle(1, 4000, &[16, 0x0a, 0, 160]),
            None,
            "flash is not a key"
        );
        assert_eq!(d.handle(1, 5000, &[1, 2]), None, "short payload");
        // A late end packet of the '#' event after the next press started is not a press.
        assert_eq!(
            d.handle(1, 6000, &[2, 0x8a, 3, 32]).map(Digit::as_char),
            Some('2'),
            "first seen at its end"
        );
        assert_eq!(d.handle(1, 2600, &[11, 0x8a, 3, 32]), None, "stale");
        // Timestamps wrap.
        let mut w = DtmfDetector::default();
        assert!(w.handle(1, u32::MAX - 100, &start).is_some());
        assert!(w.handle(1, 200, &start).is_some(), "after the wrap");
        assert!(
            w.handle(1, u32::MAX - 100, &end).is_none(),
            "before the wrap: stale"
        );
        // A restarted stream: far-behind timestamps or a new SSRC are new presses.
        assert!(w.handle(1, 100_000_000, &start).is_some());
        assert!(w.handle(1, 5, &start).is_some(), "far behind: a restart");
        assert!(w.handle(2, 5, &start).is_some(), "new SSRC");
    }

    #[test]
    fn info_bodies() {
        let relay = digit_from_info("application/dtmf-relay", b"Signal=7\r\nDuration=160\r\n");
        assert_eq!(relay.map(Digit::as_char), Some('7'));
        assert_eq!(
            digit_from_info("application/dtmf", b"#").map(Digit::as_char),
            Some('#')
        );
        assert_eq!(
            digit_from_info("application/dtmf-relay", b"Signal=11").map(Digit::as_char),
            Some('#')
        );
        assert_eq!(digit_from_info("text/plain", b"5"), None);
        assert_eq!(digit_from_info("application/dtmf", b"x"), None);
    }
}
