//! SDP offer/answer for audio (RFC 4566, RFC 3264, RFC 7587 for Opus).
//!
//! [`Offer::parse`] reads the caller's media lines; [`Offer::answer`] picks, in our order of
//! preference, the first codec the caller offered, plus telephone-event when offered, and
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
    /// G.722, static payload type 9; `G722/8000` in SDP although it carries 16 kHz audio.
    G722,
    /// Opus, `opus/48000/2` with a dynamic payload type (RFC 7587).
    Opus,
    /// G.729, static payload type 18 (Annex B silence frames accepted: RFC 4856's default
    /// `annexb=yes`).
    G729,
}

impl AudioCodec {
    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::G722 => "G722",
            AudioCodec::Opus => "opus",
            AudioCodec::G729 => "G729",
        }
    }

    /// The RTP clock rate written in `a=rtpmap`.
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48000,
            _ => 8000,
        }
    }

    /// The static RTP payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Pcma => Some(8),
            AudioCodec::G722 => Some(9),
            AudioCodec::G729 => Some(18),
            AudioCodec::Opus => None,
        }
    }

    /// Whether an offered format is this codec: by rtpmap name and clock rate, or by static
    /// payload type without an rtpmap.
    fn matches(self, format: &OfferedFormat) -> bool {
        match (&format.encoding, format.clock_rate) {
            (Some(name), Some(rate)) => {
                name.eq_ignore_ascii_case(self.name()) && rate == self.clock_rate()
            }
            _ => self.static_payload_type() == Some(format.payload_type),
        }
    }
}

/// The SDES crypto suites we accept (RFC 4568), in our order of preference.
pub const SRTP_SUITES: [&str; 2] = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"];

/// Whether calls may, must or must not use SRTP (`media.srtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpPolicy {
    /// Plain RTP only; `RTP/SAVP` offers are declined.
    Off,
    /// SRTP when the caller offers it with a suite we speak, plain RTP otherwise.
    Optional,
    /// SRTP only; a plain offer gets 488.
    Required,
}

/// One `a=crypto` line of the chosen stream (RFC 4568 9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoOffer {
    /// The tag our answer repeats.
    pub tag: u32,
    /// The suite, one of [`SRTP_SUITES`].
    pub suite: String,
    /// The caller's key-params (`inline:...`): its sending key.
    pub key_params: String,
}

/// Our side of an SDES negotiation.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpAnswer {
    /// The crypto line of the offer we accepted (the caller's key).
    pub offer: CryptoOffer,
    /// Our key-params (`inline:...`), which protect what we send.
    pub local_key_params: String,
}

impl std::fmt::Debug for SrtpAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log.
        write!(
            f,
            "SrtpAnswer {{ tag: {}, suite: {} }}",
            self.offer.tag, self.offer.suite
        )
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

/// One offered payload type with its rtpmap and fmtp, if given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OfferedFormat {
    payload_type: u8,
    encoding: Option<String>,
    clock_rate: Option<u32>,
    fmtp: Option<String>,
}

impl OfferedFormat {
    /// Whether the fmtp sets `name=1` (RFC 7587 parameters are `;`-separated).
    fn flag(&self, name: &str) -> bool {
        self.fmtp.as_deref().is_some_and(|f| {
            f.split(';')
                .filter_map(|p| p.split_once('='))
                .any(|(k, v)| k.trim().eq_ignore_ascii_case(name) && v.trim() == "1")
        })
    }
}

/// One `m=` line of an offer with what we need to answer or decline it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaLine {
    media: String,
    port: u16,
    proto: String,
    /// The format list as written (declined lines echo the first one).
    formats_text: Vec<String>,
    formats: Vec<OfferedFormat>,
    connection: Option<IpAddr>,
    direction: Option<Direction>,
    /// `a=rtcp-mux` (RFC 5761).
    rtcp_mux: bool,
    /// `a=rtcp:PORT` (RFC 3605).
    rtcp_port: Option<u16>,
    /// `a=crypto` lines we could use, in offer order.
    crypto: Vec<CryptoOffer>,
}

/// A caller's SDP offer (RFC 4566), every media line kept so the answer can mirror them
/// (RFC 3264 section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Where the caller wants RTP sent: the chosen audio line's connection address and port.
    pub rtp_addr: SocketAddr,
    /// The offered direction of the audio stream.
    pub direction: Direction,
    /// Where the caller wants RTCP: its RTP address with rtcp-mux, the `a=rtcp` port, or the
    /// RTP port + 1 (RFC 3550 11).
    pub rtcp_addr: SocketAddr,
    /// The caller offered `a=rtcp-mux`; we accept it.
    pub rtcp_mux: bool,
    /// The SDES crypto chosen for the stream, when it is `RTP/SAVP`.
    pub crypto: Option<CryptoOffer>,
    /// The policy the stream was chosen under.
    policy: SrtpPolicy,
    lines: Vec<MediaLine>,
    /// Index in `lines` of the audio stream we answer.
    audio: usize,
}

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// No audio stream in plain RTP/AVP with a non-zero port.
    NoAudio,
    /// SRTP is required and the offer has no `RTP/SAVP` audio with a suite we speak.
    SrtpRequired,
    /// No codec in common: answer 488.
    NoCommonCodec,
}

/// Our answer: the chosen codec and DTMF payload type, plus the offer's lines to decline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The chosen audio codec.
    pub codec: AudioCodec,
    /// Its payload type in this call (the caller's, for a dynamic one).
    pub payload_type: u8,
    /// Opus: the caller decodes in-band FEC (`useinbandfec=1`), so we send it.
    pub opus_fec: bool,
    /// Opus: the caller prefers DTX (`usedtx=1`).
    pub opus_dtx: bool,
    /// The caller's telephone-event payload type, if it offered one at the codec's clock rate
    /// or at 8000 Hz.
    pub telephone_event: Option<u8>,
    /// The clock rate of that telephone-event.
    telephone_event_rate: u32,
    /// We multiplex RTCP on the RTP port (the offer asked).
    pub rtcp_mux: bool,
    /// Our direction.
    pub direction: Direction,
    /// SRTP: the tag and suite we accept, and our key-params (set by the caller with
    /// [`Answer::set_local_key`]; until then the answer carries no usable crypto line).
    pub srtp: Option<SrtpAnswer>,
    /// Every offered m-line in order: `None` for the audio line we accept, else (media, proto,
    /// first format) to decline with port 0.
    lines: Vec<Option<(String, String, String)>>,
}

impl Offer {
    /// Parses an SDP body: every `m=` line, connection addresses at session or media level
    /// (IPv4 or IPv6), rtpmap, fmtp, rtcp, crypto and direction attributes. The audio stream to
    /// answer is chosen under `policy`: `RTP/SAVP` with a suite we speak when SRTP is allowed
    /// (preferred when optional), else `RTP/AVP`.
    pub fn parse(body: &[u8], policy: SrtpPolicy) -> Result<Offer, ParseError> {
        let text = std::str::from_utf8(body).map_err(|_| ParseError::BadSdp("not UTF-8"))?;
        let mut session_addr: Option<IpAddr> = None;
        let mut session_direction: Option<Direction> = None;
        let mut lines: Vec<MediaLine> = Vec::new();
        let mut maps: Vec<Vec<(u8, String, u32)>> = Vec::new();
        let mut fmtps: Vec<Vec<(u8, String)>> = Vec::new();
        let mut saw_version = false;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .ok_or(ParseError::BadSdp("line without '='"))?;
            if kind.len() != 1 {
                return Err(ParseError::BadSdp("type is not one character"));
            }
            match kind {
                "v" => saw_version = value == "0",
                "m" => {
                    let mut parts = value.split(' ').filter(|p| !p.is_empty());
                    let media = parts
                        .next()
                        .ok_or(ParseError::BadSdp("empty m= line"))?
                        .to_string();
                    let port = parts
                        .next()
                        .unwrap_or_default()
                        .split('/')
                        .next()
                        .unwrap_or_default();
                    let port: u16 = port
                        .parse()
                        .map_err(|_| ParseError::BadSdp("bad m= port"))?;
                    let proto = parts
                        .next()
                        .ok_or(ParseError::BadSdp("m= without proto"))?
                        .to_string();
                    let formats_text: Vec<String> = parts.map(str::to_string).collect();
                    if formats_text.is_empty() {
                        return Err(ParseError::BadSdp("m= without formats"));
                    }
                    lines.push(MediaLine {
                        media,
                        port,
                        proto,
                        formats_text,
                        formats: Vec::new(),
                        connection: None,
                        direction: None,
                        rtcp_mux: false,
                        rtcp_port: None,
                        crypto: Vec::new(),
                    });
                    maps.push(Vec::new());
                    fmtps.push(Vec::new());
                }
                "c" => {
                    let mut parts = value.split(' ');
                    let (net, family, addr) = (parts.next(), parts.next(), parts.next());
                    if net != Some("IN") {
                        return Err(ParseError::BadSdp("c= network is not IN"));
                    }
                    let addr = addr
                        .unwrap_or_default()
                        .split('/')
                        .next()
                        .unwrap_or_default();
                    let ip: IpAddr = addr
                        .parse()
                        .map_err(|_| ParseError::BadSdp("bad c= address"))?;
                    if (family == Some("IP4")) != ip.is_ipv4() {
                        return Err(ParseError::BadSdp("c= address family mismatch"));
                    }
                    match lines.last_mut() {
                        Some(m) => m.connection = Some(ip),
                        None => session_addr = Some(ip),
                    }
                }
                "a" => {
                    let direction = match value {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    match (direction, lines.last_mut()) {
                        (Some(d), Some(m)) => m.direction = Some(d),
                        (Some(d), None) => session_direction = Some(d),
                        (None, _) => {
                            if let Some(m) = lines.last_mut() {
                                if value == "rtcp-mux" {
                                    m.rtcp_mux = true;
                                } else if let Some(rtcp) = value.strip_prefix("rtcp:") {
                                    m.rtcp_port = rtcp
                                        .split_whitespace()
                                        .next()
                                        .and_then(|p| p.parse().ok())
                                        .filter(|p| *p != 0);
                                } else if let Some(crypto) = value.strip_prefix("crypto:") {
                                    let mut fields = crypto.split_whitespace();
                                    let tag = fields.next().and_then(|t| t.parse::<u32>().ok());
                                    let suite = fields.next().filter(|s| SRTP_SUITES.contains(s));
                                    let key = fields.next().filter(|k| k.starts_with("inline:"));
                                    // Session parameters (a fourth field) are not supported.
                                    if let (Some(tag), Some(suite), Some(key), None) =
                                        (tag, suite, key, fields.next())
                                    {
                                        m.crypto.push(CryptoOffer {
                                            tag,
                                            suite: suite.to_string(),
                                            key_params: key.to_string(),
                                        });
                                    }
                                }
                            }
                            if let (Some(map), Some(m)) =
                                (value.strip_prefix("rtpmap:"), maps.last_mut())
                                && let Some(parsed) = parse_rtpmap(map)
                            {
                                m.push(parsed);
                            }
                            if let (Some(fmtp), Some(f)) =
                                (value.strip_prefix("fmtp:"), fmtps.last_mut())
                                && let Some((pt, params)) = fmtp.split_once(' ')
                                && let Ok(pt) = pt.trim().parse::<u8>()
                            {
                                f.push((pt, params.trim().to_string()));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(ParseError::BadSdp("missing v=0"));
        }
        for ((line, maps), fmtps) in lines.iter_mut().zip(&maps).zip(&fmtps) {
            line.formats = line
                .formats_text
                .iter()
                .filter_map(|f| f.parse::<u8>().ok().filter(|pt| *pt < 128))
                .map(|pt| {
                    let map = maps.iter().find(|(p, _, _)| *p == pt);
                    OfferedFormat {
                        payload_type: pt,
                        encoding: map.map(|(_, e, _)| e.clone()),
                        clock_rate: map.map(|(_, _, r)| *r),
                        fmtp: fmtps.iter().find(|(p, _)| *p == pt).map(|(_, f)| f.clone()),
                    }
                })
                .collect();
        }
        let usable =
            |m: &MediaLine, proto: &str| m.media == "audio" && m.proto == proto && m.port != 0;
        let secure = lines
            .iter()
            .position(|m| usable(m, "RTP/SAVP") && !m.crypto.is_empty());
        let plain = lines.iter().position(|m| usable(m, "RTP/AVP"));
        let audio = match policy {
            SrtpPolicy::Off => plain,
            SrtpPolicy::Optional => secure.or(plain),
            SrtpPolicy::Required => secure,
        }
        .or_else(|| lines.iter().position(|m| m.media == "audio"))
        .ok_or(ParseError::BadSdp("no audio stream"))?;
        let chosen = &lines[audio];
        let ip = chosen
            .connection
            .or(session_addr)
            .ok_or(ParseError::BadSdp("no connection address"))?;
        let direction = chosen
            .direction
            .or(session_direction)
            .unwrap_or(Direction::SendRecv);
        let rtcp_port = match (chosen.rtcp_mux, chosen.rtcp_port) {
            (true, _) => chosen.port,
            (false, Some(port)) => port,
            (false, None) => chosen.port.saturating_add(1),
        };
        let rtcp_mux = chosen.rtcp_mux;
        // Our preferred suite among those offered.
        let crypto = (chosen.proto == "RTP/SAVP")
            .then(|| {
                SRTP_SUITES
                    .iter()
                    .find_map(|suite| chosen.crypto.iter().find(|c| c.suite == *suite))
                    .cloned()
            })
            .flatten();
        Ok(Offer {
            crypto,
            policy,
            rtp_addr: SocketAddr::new(ip, chosen.port),
            direction,
            rtcp_addr: SocketAddr::new(ip, rtcp_port),
            rtcp_mux,
            lines,
            audio,
        })
    }

    /// Chooses what we answer: of the codecs in `preference` (our order), the first the caller
    /// offered, at the caller's payload type; plus telephone-event; every other m-line is
    /// declined.
    pub fn answer(&self, preference: &[AudioCodec]) -> Result<Answer, NegotiationError> {
        let audio = &self.lines[self.audio];
        let secure =
            audio.proto == "RTP/SAVP" && self.crypto.is_some() && self.policy != SrtpPolicy::Off;
        if self.policy == SrtpPolicy::Required && !secure {
            return Err(NegotiationError::SrtpRequired);
        }
        if !(audio.proto == "RTP/AVP" || secure) || audio.port == 0 {
            return Err(NegotiationError::NoAudio);
        }
        let (codec, format) = preference
            .iter()
            .find_map(|codec| {
                audio
                    .formats
                    .iter()
                    .find(|f| codec.matches(f))
                    .map(|f| (*codec, f))
            })
            .ok_or(NegotiationError::NoCommonCodec)?;
        // RFC 4733: telephone-event at the audio clock; many phones offer only 8000 beside Opus.
        let telephone_event = [codec.clock_rate(), 8000].into_iter().find_map(|rate| {
            audio.formats.iter().find_map(|f| {
                let is_te = f
                    .encoding
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case("telephone-event"));
                (is_te && f.clock_rate == Some(rate) && f.payload_type >= 96)
                    .then_some((f.payload_type, rate))
            })
        });
        let lines = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (i != self.audio)
                    .then(|| (m.media.clone(), m.proto.clone(), m.formats_text[0].clone()))
            })
            .collect();
        Ok(Answer {
            codec,
            payload_type: format.payload_type,
            opus_fec: codec == AudioCodec::Opus && format.flag("useinbandfec"),
            opus_dtx: codec == AudioCodec::Opus && format.flag("usedtx"),
            telephone_event: telephone_event.map(|(pt, _)| pt),
            telephone_event_rate: telephone_event.map_or(8000, |(_, rate)| rate),
            rtcp_mux: self.rtcp_mux,
            srtp: self
                .crypto
                .clone()
                .filter(|_| secure)
                .map(|offer| SrtpAnswer {
                    offer,
                    local_key_params: String::new(),
                }),
            direction: self.direction.answer(),
            lines,
        })
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
    /// Sets the key-params of our `a=crypto` line (an SRTP answer needs one).
    pub fn set_local_key(&mut self, key_params: String) {
        if let Some(srtp) = self.srtp.as_mut() {
            srtp.local_key_params = key_params;
        }
    }

    /// Prints our SDP: `rtp` is the address and port we receive on; `session_id` identifies the
    /// session and `version` grows with every changed answer in it.
    pub fn to_sdp(&self, rtp: SocketAddr, session_id: u64, version: u64) -> Vec<u8> {
        let family = if rtp.is_ipv4() { "IP4" } else { "IP6" };
        let ip = rtp.ip();
        let pt = self.payload_type;
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "v=0\r\no=roundtable {session_id} {version} IN {family} {ip}\r\n"
        );
        let _ = write!(s, "s=Roundtable\r\nc=IN {family} {ip}\r\nt=0 0\r\n");
        for line in &self.lines {
            let Some((media, proto, format)) = line else {
                let proto = if self.srtp.is_some() {
                    "RTP/SAVP"
                } else {
                    "RTP/AVP"
                };
                let _ = write!(s, "m=audio {} {proto} {pt}", rtp.port());
                if let Some(te) = self.telephone_event {
                    let _ = write!(s, " {te}");
                }
                let _ = write!(
                    s,
                    "\r\na=rtpmap:{pt} {}/{}",
                    self.codec.name(),
                    self.codec.clock_rate()
                );
                if self.codec == AudioCodec::Opus {
                    // RFC 7587: always two channels in rtpmap; we decode in-band FEC.
                    let _ = write!(s, "/2\r\na=fmtp:{pt} useinbandfec=1");
                }
                s.push_str("\r\n");
                if let Some(te) = self.telephone_event {
                    let rate = self.telephone_event_rate;
                    let _ = write!(
                        s,
                        "a=rtpmap:{te} telephone-event/{rate}\r\na=fmtp:{te} 0-16\r\n"
                    );
                }
                if self.rtcp_mux {
                    s.push_str("a=rtcp-mux\r\n");
                }
                if let Some(srtp) = &self.srtp {
                    let _ = write!(
                        s,
                        "a=crypto:{} {} {}\r\n",
                        srtp.offer.tag, srtp.offer.suite, srtp.local_key_params
                    );
                }
                let _ = write!(s, "a=ptime:20\r\na={}\r\n", self.direction.attribute());
                continue;
            };
            let _ = write!(s, "m={media} 0 {proto} {format}\r\n");
        }
        s.into_bytes()
    }
}

/// The payload type we offer Opus at (dynamic); telephone-event is offered at
/// [`OFFER_TELEPHONE_EVENT`].
pub const OFFER_OPUS_PT: u8 = 111;
/// The payload type we offer telephone-event (RFC 4733, 8 kHz) at.
pub const OFFER_TELEPHONE_EVENT: u8 = 101;

/// Our SDP offer for a call we place: one audio stream at `rtp` with `codecs` in order of
/// preference, plus telephone-event, sendrecv, 20 ms packets. The callee's answer is read with
/// [`Offer::parse`] and [`Offer::answer`] (an answer names what both sides use).
pub fn offer_sdp(codecs: &[AudioCodec], rtp: SocketAddr, session_id: u64, version: u64) -> Vec<u8> {
    let family = if rtp.is_ipv4() { "IP4" } else { "IP6" };
    let ip = rtp.ip();
    let pt = |c: AudioCodec| c.static_payload_type().unwrap_or(OFFER_OPUS_PT);
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        "v=0\r\no=roundtable {session_id} {version} IN {family} {ip}\r\n"
    );
    let _ = write!(s, "s=Roundtable\r\nc=IN {family} {ip}\r\nt=0 0\r\n");
    let _ = write!(s, "m=audio {} RTP/AVP", rtp.port());
    for codec in codecs {
        let _ = write!(s, " {}", pt(*codec));
    }
    let _ = write!(s, " {OFFER_TELEPHONE_EVENT}\r\n");
    for codec in codecs {
        let _ = write!(
            s,
            "a=rtpmap:{} {}/{}",
            pt(*codec),
            codec.name(),
            codec.clock_rate()
        );
        if *codec == AudioCodec::Opus {
            let _ = write!(s, "/2\r\na=fmtp:{OFFER_OPUS_PT} useinbandfec=1");
        }
        s.push_str("\r\n");
    }
    let _ = write!(
        s,
        "a=rtpmap:{OFFER_TELEPHONE_EVENT} telephone-event/8000\r\na=fmtp:{OFFER_TELEPHONE_EVENT} 0-16\r\n"
    );
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_offer_parses_and_an_answer_to_it_picks_the_callee_codec() {
        let sdp = offer_sdp(
            &[AudioCodec::Opus, AudioCodec::Pcmu],
            "192.0.2.1:4000".parse().unwrap(),
            7,
            1,
        );
        let offer = Offer::parse(&sdp, SrtpPolicy::Off).expect("parses");
        assert_eq!(offer.rtp_addr, "192.0.2.1:4000".parse().unwrap());
        let answer = offer.answer(&[AudioCodec::Opus, AudioCodec::Pcmu]).unwrap();
        assert_eq!((answer.codec, answer.payload_type), (AudioCodec::Opus, 111));
        assert_eq!(answer.telephone_event, Some(101));
        // A callee answering PCMU only: reading its answer picks PCMU.
        let theirs = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
        let answered = Offer::parse(theirs, SrtpPolicy::Off).unwrap();
        let used = answered
            .answer(&[AudioCodec::Opus, AudioCodec::Pcmu])
            .unwrap();
        assert_eq!((used.codec, used.payload_type), (AudioCodec::Pcmu, 0));
    }

    const G711: &[AudioCodec] = &[AudioCodec::Pcmu, AudioCodec::Pcma];
    const ALL: &[AudioCodec] = &[
        AudioCodec::Opus,
        AudioCodec::G722,
        AudioCodec::Pcmu,
        AudioCodec::Pcma,
    ];

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

    #[test]
    fn picks_our_first_supported_codec_and_dtmf() {
        let offer = Offer::parse(OFFER.as_bytes(), SrtpPolicy::Off).unwrap();
        assert_eq!(offer.rtp_addr, "192.0.2.1:40000".parse().unwrap());
        let answer = offer.answer(&[AudioCodec::Pcma, AudioCodec::Pcmu]).unwrap();
        assert_eq!(answer.codec, AudioCodec::Pcma);
        assert_eq!(answer.telephone_event, Some(101));
        let sdp =
            String::from_utf8(answer.to_sdp("10.0.0.5:16384".parse().unwrap(), 7, 1)).unwrap();
        assert!(sdp.contains("c=IN IP4 10.0.0.5\r\n"));
        assert!(sdp.contains("m=audio 16384 RTP/AVP 8 101\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000"));
    }

    #[test]
    fn our_preference_decides_and_opus_keeps_its_payload_type_and_options() {
        let offer = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0 9 111 101 102\r\n\
                     a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10; useinbandfec=1; usedtx=1\r\n\
                     a=rtpmap:101 telephone-event/48000\r\na=rtpmap:102 telephone-event/8000\r\n";
        let offer = Offer::parse(offer.as_bytes(), SrtpPolicy::Optional).unwrap();
        let answer = offer.answer(ALL).unwrap();
        assert_eq!(
            (
                answer.codec,
                answer.payload_type,
                answer.opus_fec,
                answer.opus_dtx
            ),
            (AudioCodec::Opus, 111, true, true)
        );
        assert_eq!(
            answer.telephone_event,
            Some(101),
            "telephone-event at the Opus clock"
        );
        let sdp = String::from_utf8(answer.to_sdp("10.0.0.1:4000".parse().unwrap(), 1, 1)).unwrap();
        assert!(sdp.contains("m=audio 4000 RTP/AVP 111 101\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n"),
            "{sdp}"
        );
        assert!(
            sdp.contains("a=rtpmap:101 telephone-event/48000\r\n"),
            "{sdp}"
        );
        // G.722 by static type, in the caller's list but chosen by our order.
        let answer = offer.answer(&[AudioCodec::G722, AudioCodec::Pcmu]).unwrap();
        assert_eq!(
            (answer.codec, answer.payload_type, answer.telephone_event),
            (AudioCodec::G722, 9, Some(102))
        );
        let sdp = String::from_utf8(answer.to_sdp("10.0.0.1:4000".parse().unwrap(), 1, 1)).unwrap();
        assert!(sdp.contains("a=rtpmap:9 G722/8000\r\n"), "{sdp}");
        // Opus at a wrong clock rate is not Opus.
        let odd =
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/16000\r\n";
        assert_eq!(
            Offer::parse(odd.as_bytes(), SrtpPolicy::Optional)
                .unwrap()
                .answer(ALL),
            Err(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn rtcp_address_mux_and_port_attribute() {
        let plain = Offer::parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n",
            SrtpPolicy::Optional,
        )
        .unwrap();
        assert_eq!((plain.rtcp_addr.port(), plain.rtcp_mux), (5001, false));
        let port = Offer::parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:6000 IN IP4 1.2.3.4\r\n",
            SrtpPolicy::Optional,
        )
        .unwrap();
        assert_eq!(port.rtcp_addr.port(), 6000);
        let mux = Offer::parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\n",
            SrtpPolicy::Optional,
        )
        .unwrap();
        assert_eq!((mux.rtcp_addr.port(), mux.rtcp_mux), (5000, true));
        let answer = String::from_utf8(mux.answer(G711).unwrap().to_sdp(
            "10.0.0.1:4000".parse().unwrap(),
            1,
            1,
        ))
        .unwrap();
        assert!(answer.contains("a=rtcp-mux\r\n"), "{answer}");
        let answer = String::from_utf8(plain.answer(G711).unwrap().to_sdp(
            "10.0.0.1:4000".parse().unwrap(),
            1,
            1,
        ))
        .unwrap();
        assert!(!answer.contains("rtcp-mux"));
    }

    #[test]
    fn sdes_srtp_by_policy() {
        let both = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\nm=audio 5002 RTP/SAVP 0\r\n\
                    a=crypto:1 AES_CM_256_HMAC_SHA1_80 inline:AAAA\r\n\
                    a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:c2VjcmV0|2^31\r\n\
                    a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:a2V5\r\n";
        // Optional prefers the secure stream and our preferred suite.
        let offer = Offer::parse(both.as_bytes(), SrtpPolicy::Optional).unwrap();
        assert_eq!(offer.rtp_addr.port(), 5002);
        let crypto = offer.crypto.clone().unwrap();
        assert_eq!(
            (
                crypto.tag,
                crypto.suite.as_str(),
                crypto.key_params.as_str()
            ),
            (3, "AES_CM_128_HMAC_SHA1_80", "inline:a2V5")
        );
        let mut answer = offer.answer(G711).unwrap();
        answer.set_local_key("inline:b3Vy".into());
        assert!(
            !format!("{answer:?}").contains("b3Vy"),
            "keys stay out of Debug"
        );
        let sdp = String::from_utf8(answer.to_sdp("10.0.0.1:4000".parse().unwrap(), 1, 1)).unwrap();
        let m: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m, ["m=audio 0 RTP/AVP 0", "m=audio 4000 RTP/SAVP 0"]);
        assert!(
            sdp.contains("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:b3Vy\r\n"),
            "{sdp}"
        );
        // Off keeps to plain RTP; Required refuses a plain-only offer.
        assert_eq!(
            Offer::parse(both.as_bytes(), SrtpPolicy::Off)
                .unwrap()
                .rtp_addr
                .port(),
            5000
        );
        let plain = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n";
        let required = Offer::parse(plain.as_bytes(), SrtpPolicy::Required).unwrap();
        assert_eq!(required.answer(G711), Err(NegotiationError::SrtpRequired));
        let secure_only = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:a2V5\r\n";
        assert_eq!(
            Offer::parse(secure_only.as_bytes(), SrtpPolicy::Off)
                .unwrap()
                .answer(G711),
            Err(NegotiationError::NoAudio)
        );
    }

    #[test]
    fn static_payload_type_without_rtpmap() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n";
        let answer = Offer::parse(sdp.as_bytes(), SrtpPolicy::Optional)
            .unwrap()
            .answer(G711)
            .unwrap();
        assert_eq!(answer.codec, AudioCodec::Pcmu);
        assert_eq!(answer.telephone_event, None);
    }

    #[test]
    fn no_common_codec() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let offer = Offer::parse(sdp.as_bytes(), SrtpPolicy::Optional).unwrap();
        assert_eq!(offer.answer(G711), Err(NegotiationError::NoCommonCodec));
    }

    #[test]
    fn media_level_connection_wins_and_hold_is_answered() {
        let sdp = "v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 2.2.2.2\r\na=sendonly\r\n";
        let offer = Offer::parse(sdp.as_bytes(), SrtpPolicy::Optional).unwrap();
        assert_eq!(offer.rtp_addr.ip().to_string(), "2.2.2.2");
        assert_eq!(offer.answer(G711).unwrap().direction, Direction::RecvOnly);
    }

    #[test]
    fn other_streams_are_declined_in_order() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5002 RTP/AVP 31\r\nm=audio 5000 RTP/AVP 0\r\n\
                   m=audio 5004 RTP/SAVP 0\r\n";
        let offer = Offer::parse(sdp.as_bytes(), SrtpPolicy::Optional).unwrap();
        assert_eq!(offer.rtp_addr.port(), 5000);
        let answer = String::from_utf8(offer.answer(G711).unwrap().to_sdp(
            "10.0.0.1:4000".parse().unwrap(),
            1,
            1,
        ))
        .unwrap();
        let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m_lines,
            [
                "m=video 0 RTP/AVP 31",
                "m=audio 4000 RTP/AVP 0",
                "m=audio 0 RTP/SAVP 0"
            ]
        );
    }

    #[test]
    fn ipv6_connection_and_session_level_direction() {
        let sdp = "v=0\r\nc=IN IP6 2001:db8::1\r\na=inactive\r\nm=audio 5000 RTP/AVP 8\r\n";
        let offer = Offer::parse(sdp.as_bytes(), SrtpPolicy::Optional).unwrap();
        assert_eq!(offer.rtp_addr, "[2001:db8::1]:5000".parse().unwrap());
        let answer = offer.answer(G711).unwrap();
        assert_eq!(answer.direction, Direction::Inactive);
        let text = String::from_utf8(answer.to_sdp("[::1]:4000".parse().unwrap(), 1, 1)).unwrap();
        assert!(text.contains("c=IN IP6 ::1\r\n"), "{text}");
        assert!(
            Offer::parse(
                b"v=0\r\nc=IN IP4 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\n",
                SrtpPolicy::Optional
            )
            .is_err()
        );
    }

    #[test]
    fn declined_or_secure_audio_alone_is_no_audio() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/SAVP 0\r\n";
        assert_eq!(
            Offer::parse(sdp.as_bytes(), SrtpPolicy::Optional)
                .unwrap()
                .answer(G711),
            Err(NegotiationError::NoAudio)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Offer::parse(b"hello", SrtpPolicy::Optional).is_err());
        assert!(Offer::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n", SrtpPolicy::Optional).is_err());
        assert!(Offer::parse(&[0xff, 0xfe], SrtpPolicy::Optional).is_err());
    }
}
