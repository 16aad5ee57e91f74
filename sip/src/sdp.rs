//! SDP offer/answer for audio (RFC 4566, RFC 3264): just what a G.711 bridge needs.
//!
//! [`Offer::parse`] reads the caller's first audio stream; [`Offer::answer`] picks a codec we
//! support, in the caller's order of preference, plus telephone-event when offered, and
//! [`Answer::to_sdp`] prints our side.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::error::ParseError;

/// An audio codec the bridge can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// G.711 mu-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl AudioCodec {
    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
        }
    }

    /// The static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            AudioCodec::Pcmu => 0,
            AudioCodec::Pcma => 8,
        }
    }
}

/// Which way media flows (RFC 3264 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// Offerer only sends.
    SendOnly,
    /// Offerer only receives.
    RecvOnly,
    /// No media.
    Inactive,
}

impl Direction {
    /// Our answer's direction for an offer in this direction.
    fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// One offered payload type with its rtpmap, if given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OfferedFormat {
    payload_type: u8,
    encoding: Option<String>,
    clock_rate: Option<u32>,
}

/// The parts of a caller's SDP offer that decide our answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Where the caller wants RTP sent (connection address and audio port).
    pub rtp_addr: SocketAddr,
    /// Transport profile, e.g. `RTP/AVP`.
    pub proto: String,
    /// The offered direction.
    pub direction: Direction,
    formats: Vec<OfferedFormat>,
}

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// No audio stream, or none in plain RTP/AVP.
    NoAudio,
    /// No codec in common: answer 488.
    NoCommonCodec,
}

/// Our answer: the chosen codec and DTMF payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The chosen audio codec.
    pub codec: AudioCodec,
    /// The caller's telephone-event payload type, if it offered one at 8000 Hz.
    pub telephone_event: Option<u8>,
    /// Our direction.
    pub direction: Direction,
}

impl Offer {
    /// Parses the first `m=audio` stream of an SDP body.
    pub fn parse(body: &[u8]) -> Result<Offer, ParseError> {
        let text = std::str::from_utf8(body).map_err(|_| ParseError::BadSdp("not UTF-8"))?;
        let mut session_addr: Option<IpAddr> = None;
        let mut media_addr: Option<IpAddr> = None;
        let mut audio: Option<(u16, String, Vec<u8>)> = None;
        let mut in_audio = false;
        let mut seen_audio = false;
        let mut direction = Direction::SendRecv;
        let mut maps: Vec<(u8, String, u32)> = Vec::new();
        let mut saw_version = false;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line.split_once('=').ok_or(ParseError::BadSdp("line without '='"))?;
            if kind.len() != 1 {
                return Err(ParseError::BadSdp("type is not one character"));
            }
            match kind {
                "v" => saw_version = value == "0",
                "m" => {
                    in_audio = false;
                    let mut parts = value.split(' ');
                    let media = parts.next().unwrap_or_default();
                    let port = parts.next().unwrap_or_default().split('/').next().unwrap_or_default();
                    let port: u16 = port.parse().map_err(|_| ParseError::BadSdp("bad m= port"))?;
                    let proto = parts.next().ok_or(ParseError::BadSdp("m= without proto"))?;
                    if media == "audio" && !seen_audio {
                        seen_audio = true;
                        in_audio = true;
                        let mut pts = Vec::new();
                        for fmt in parts {
                            // Non-numeric formats only occur with non-RTP protos; skip them.
                            if let Ok(pt) = fmt.parse::<u8>() {
                                if pt < 128 {
                                    pts.push(pt);
                                }
                            }
                        }
                        audio = Some((port, proto.to_string(), pts));
                    }
                }
                "c" if !seen_audio || in_audio => {
                    let mut parts = value.split(' ');
                    let (net, _kind, addr) = (parts.next(), parts.next(), parts.next());
                    if net != Some("IN") {
                        return Err(ParseError::BadSdp("c= network is not IN"));
                    }
                    let addr = addr.unwrap_or_default().split('/').next().unwrap_or_default();
                    let ip: IpAddr = addr.parse().map_err(|_| ParseError::BadSdp("bad c= address"))?;
                    if in_audio { media_addr = Some(ip) } else { session_addr = Some(ip) }
                }
                "a" if !seen_audio || in_audio => match value {
                    "sendrecv" => direction = Direction::SendRecv,
                    "sendonly" => direction = Direction::SendOnly,
                    "recvonly" => direction = Direction::RecvOnly,
                    "inactive" => direction = Direction::Inactive,
                    _ => {
                        if let Some(map) = value.strip_prefix("rtpmap:") {
                            if let Some(parsed) = parse_rtpmap(map) {
                                maps.push(parsed);
                            }
                        }
                    }
                },
                _ => {}
            }
        }
        if !saw_version {
            return Err(ParseError::BadSdp("missing v=0"));
        }
        let (port, proto, pts) = audio.ok_or(ParseError::BadSdp("no audio stream"))?;
        let ip = media_addr.or(session_addr).ok_or(ParseError::BadSdp("no connection address"))?;
        let formats = pts
            .into_iter()
            .map(|pt| {
                let map = maps.iter().find(|(p, _, _)| *p == pt);
                OfferedFormat {
                    payload_type: pt,
                    encoding: map.map(|(_, e, _)| e.clone()),
                    clock_rate: map.map(|(_, _, r)| *r),
                }
            })
            .collect();
        Ok(Offer { rtp_addr: SocketAddr::new(ip, port), proto, direction, formats })
    }

    /// Chooses what we answer: the first offered codec we support, plus telephone-event/8000.
    pub fn answer(&self) -> Result<Answer, NegotiationError> {
        if self.proto != "RTP/AVP" {
            return Err(NegotiationError::NoAudio);
        }
        let codec = self
            .formats
            .iter()
            .find_map(|f| {
                let name = f.encoding.as_deref().map(str::to_ascii_uppercase);
                let rate_ok = f.clock_rate.is_none_or(|r| r == 8000);
                match (f.payload_type, name.as_deref()) {
                    (_, Some("PCMU")) if rate_ok => Some(AudioCodec::Pcmu),
                    (_, Some("PCMA")) if rate_ok => Some(AudioCodec::Pcma),
                    (0, None) => Some(AudioCodec::Pcmu),
                    (8, None) => Some(AudioCodec::Pcma),
                    _ => None,
                }
            })
            .ok_or(NegotiationError::NoCommonCodec)?;
        let telephone_event = self.formats.iter().find_map(|f| {
            let is_te = f.encoding.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("telephone-event"));
            (is_te && f.clock_rate == Some(8000) && f.payload_type >= 96).then_some(f.payload_type)
        });
        Ok(Answer { codec, telephone_event, direction: self.direction.answer() })
    }
}

fn parse_rtpmap(map: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = map.split_once(' ')?;
    let pt: u8 = pt.trim().parse().ok()?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.to_string();
    let rate: u32 = parts.next()?.parse().ok()?;
    Some((pt, encoding, rate))
}

impl Answer {
    /// Prints our SDP: `rtp` is the address and port we receive on; `session_id` identifies it.
    pub fn to_sdp(&self, rtp: SocketAddr, session_id: u64) -> Vec<u8> {
        let family = if rtp.is_ipv4() { "IP4" } else { "IP6" };
        let ip = rtp.ip();
        let pt = self.codec.payload_type();
        let mut s = String::with_capacity(256);
        let _ = write!(s, "v=0\r\no=roundtable {session_id} {session_id} IN {family} {ip}\r\n");
        let _ = write!(s, "s=Roundtable\r\nc=IN {family} {ip}\r\nt=0 0\r\n");
        let _ = write!(s, "m=audio {} RTP/AVP {pt}", rtp.port());
        if let Some(te) = self.telephone_event {
            let _ = write!(s, " {te}");
        }
        let _ = write!(s, "\r\na=rtpmap:{pt} {}/8000\r\n", self.codec.name());
        if let Some(te) = self.telephone_event {
            let _ = write!(s, "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n");
        }
        let _ = write!(s, "a=ptime:20\r\na={}\r\n", self.direction.attribute());
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

    #[test]
    fn picks_first_supported_codec_and_dtmf() {
        let offer = Offer::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(offer.rtp_addr, "192.0.2.1:40000".parse().unwrap());
        let answer = offer.answer().unwrap();
        assert_eq!(answer.codec, AudioCodec::Pcma);
        assert_eq!(answer.telephone_event, Some(101));
        let sdp = String::from_utf8(answer.to_sdp("10.0.0.5:16384".parse().unwrap(), 7)).unwrap();
        assert!(sdp.contains("c=IN IP4 10.0.0.5\r\n"));
        assert!(sdp.contains("m=audio 16384 RTP/AVP 8 101\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000"));
    }

    #[test]
    fn static_payload_type_without_rtpmap() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n";
        let answer = Offer::parse(sdp.as_bytes()).unwrap().answer().unwrap();
        assert_eq!(answer.codec, AudioCodec::Pcmu);
        assert_eq!(answer.telephone_event, None);
    }

    #[test]
    fn no_common_codec() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let offer = Offer::parse(sdp.as_bytes()).unwrap();
        assert_eq!(offer.answer(), Err(NegotiationError::NoCommonCodec));
    }

    #[test]
    fn media_level_connection_wins_and_hold_is_answered() {
        let sdp = "v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 2.2.2.2\r\na=sendonly\r\n";
        let offer = Offer::parse(sdp.as_bytes()).unwrap();
        assert_eq!(offer.rtp_addr.ip().to_string(), "2.2.2.2");
        assert_eq!(offer.answer().unwrap().direction, Direction::RecvOnly);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Offer::parse(b"hello").is_err());
        assert!(Offer::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(Offer::parse(&[0xff, 0xfe]).is_err());
    }
}
