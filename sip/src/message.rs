//! SIP message parse and print (RFC 3261 section 7), pure and allocation-light.
//!
//! Parsing is done in two steps so that a broken request can still be answered:
//! [`Message::parse`] splits the start line, header fields and body (syntax), and
//! [`Message::validate_request`] applies the semantic rules (mandatory headers, CSeq, single-value
//! headers) and says which response code a broken request deserves.

use std::fmt::Write as _;

use crate::error::{ParseError, Rejection};

/// Largest message we accept, over any transport. Bounds memory per connection and per datagram.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// How the bytes arrived: this decides what a missing Content-Length means (RFC 3261 18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One datagram holds one message; a missing Content-Length means "to the end".
    Datagram,
    /// A byte stream; Content-Length is mandatory and delimits the body.
    Stream,
}

/// A SIP request method. Unknown methods are kept by name so we can answer 501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// Starts a call.
    Invite,
    /// Confirms a final INVITE response.
    Ack,
    /// Ends a call.
    Bye,
    /// Cancels a pending INVITE.
    Cancel,
    /// Capability query and keep-alive.
    Options,
    /// Registration (not served by a bridge).
    Register,
    /// Mid-call information (DTMF relay).
    Info,
    /// Session update before or after answer.
    Update,
    /// Reliable provisional response acknowledgement.
    Prack,
    /// Call transfer.
    Refer,
    /// Event subscription.
    Subscribe,
    /// Event notification.
    Notify,
    /// Instant message.
    Message,
    /// Event publication.
    Publish,
    /// Any other token: answered 501.
    Other(String),
}

impl Method {
    /// Parses a method token (case-sensitive, as RFC 3261 says).
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REFER" => Method::Refer,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(name) => name,
            known => known.standard_name().unwrap_or_default(),
        }
    }

    /// A bounded label for metrics: every unknown method shares `other`.
    pub fn metric_label(&self) -> &'static str {
        self.standard_name().unwrap_or("other")
    }

    fn standard_name(&self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(_) => return None,
        })
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// The request method.
        method: Method,
        /// The Request-URI, as written.
        uri: String,
        /// The protocol version, as written (only `SIP/2.0` is served).
        version: String,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code, 100..=699.
        code: u16,
        /// Reason phrase, as written.
        reason: String,
    },
}

/// Header fields in arrival order, with names in their canonical long form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, String)>,
}

impl Headers {
    /// Appends a field; `name` is expanded from its compact form.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.fields.push((canonical_name(name), value.into()));
    }

    /// The first value of a field, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field in order, each comma-joined line kept whole.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many header lines carry this name.
    pub fn count(&self, name: &str) -> usize {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Removes every field of this name.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// A parsed SIP message: start line, header fields and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Header fields.
    pub headers: Headers,
    /// Body bytes (exactly Content-Length of them).
    pub body: Vec<u8>,
}

/// Expands compact header names (RFC 3261 7.3.3, RFC 3515, RFC 4028) and fixes the case of the
/// common ones, so that lookups and printing are uniform.
fn canonical_name(name: &str) -> String {
    const KNOWN: &[(&str, &str)] = &[
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("x", "Session-Expires"),
        ("r", "Refer-To"),
        ("call-id", "Call-ID"),
        ("contact", "Contact"),
        ("content-length", "Content-Length"),
        ("content-type", "Content-Type"),
        ("cseq", "CSeq"),
        ("from", "From"),
        ("to", "To"),
        ("via", "Via"),
        ("max-forwards", "Max-Forwards"),
        ("route", "Route"),
        ("record-route", "Record-Route"),
        ("require", "Require"),
        ("supported", "Supported"),
        ("allow", "Allow"),
    ];
    let lower = name.to_ascii_lowercase();
    for (k, v) in KNOWN {
        if *k == lower {
            return (*v).to_string();
        }
    }
    name.to_string()
}

/// RFC 3261 `token` characters.
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

impl Message {
    /// Parses one message from the front of `buf`. Returns the message and how many bytes it used.
    ///
    /// With [`Framing::Stream`], [`ParseError::Incomplete`] means "read more and call again";
    /// with [`Framing::Datagram`], bytes after the body are ignored (RFC 4475 `dblreq`).
    pub fn parse(buf: &[u8], framing: Framing) -> Result<(Message, usize), ParseError> {
        let head_end = match find(buf, b"\r\n\r\n") {
            Some(i) => i,
            None if buf.len() > MAX_MESSAGE_LEN => return Err(ParseError::TooLarge),
            None if framing == Framing::Stream => return Err(ParseError::Incomplete),
            None => return Err(ParseError::NoHeaderEnd),
        };
        let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ParseError::NotUtf8)?;
        let mut lines = head.split("\r\n");
        let first = lines.next().ok_or(ParseError::EmptyMessage)?;
        let start = parse_start_line(first)?;

        let mut headers = Headers::default();
        let mut current: Option<(String, String)> = None;
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation of the previous field (RFC 3261 7.3.1).
                let Some((_, value)) = current.as_mut() else {
                    return Err(ParseError::BadHeader);
                };
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(line.trim());
                continue;
            }
            if let Some((n, v)) = current.take() {
                headers.push(&n, v);
            }
            let colon = line.find(':').ok_or(ParseError::BadHeader)?;
            let name = line[..colon].trim_end_matches([' ', '\t']);
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ParseError::BadHeader);
            }
            current = Some((name.to_string(), line[colon + 1..].trim().to_string()));
        }
        if let Some((n, v)) = current.take() {
            headers.push(&n, v);
        }

        let body_start = head_end + 4;
        let available = buf.len() - body_start;
        let lengths: Vec<&str> = headers.all("Content-Length").collect();
        let content_length = match lengths.as_slice() {
            [] if framing == Framing::Datagram => available,
            [] => return Err(ParseError::MissingContentLength),
            [one] => parse_content_length(one)?,
            _ => return Err(ParseError::MultipleContentLength),
        };
        if content_length > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        if content_length > available {
            return match framing {
                Framing::Stream => Err(ParseError::Incomplete),
                Framing::Datagram => Err(ParseError::BodyShorterThanContentLength {
                    declared: content_length,
                    available,
                }),
            };
        }
        let body = buf[body_start..body_start + content_length].to_vec();
        Ok((
            Message {
                start,
                headers,
                body,
            },
            body_start + content_length,
        ))
    }

    /// The method, if this is a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, if this is a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase, if this is a response.
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI, if this is a request.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The Call-ID header value.
    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }

    /// The `tag` parameter of a From or To header.
    pub fn tag(&self, header: &str) -> Option<String> {
        self.headers
            .get(header)
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|n| n.tag)
    }

    /// The parsed CSeq header.
    pub fn cseq(&self) -> Option<CSeq> {
        self.headers.get("CSeq").and_then(|v| CSeq::parse(v).ok())
    }

    /// The topmost Via, parsed.
    pub fn top_via(&self) -> Option<Via> {
        let first_line = self.headers.get("Via")?;
        Via::parse(split_commas(first_line).next()?).ok()
    }

    /// Checks the semantic rules RFC 3261 and RFC 4475 set for requests, returning the response a
    /// broken request deserves. Syntax was already checked by [`Message::parse`].
    pub fn validate_request(&self) -> Result<(), Rejection> {
        let StartLine::Request {
            method,
            uri,
            version,
        } = &self.start
        else {
            return Ok(());
        };
        if version != "SIP/2.0" {
            return Err(Rejection::new(505, "Version Not Supported"));
        }
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.headers.get(name).is_none() {
                return Err(Rejection::new(400, "Missing Mandatory Header"));
            }
        }
        for name in [
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Max-Forwards",
            "Content-Type",
        ] {
            if self.headers.count(name) > 1 {
                return Err(Rejection::new(400, "Duplicate Single-Value Header"));
            }
        }
        let cseq = CSeq::parse(self.headers.get("CSeq").unwrap_or_default())
            .map_err(|_| Rejection::new(400, "Bad CSeq"))?;
        if cseq.method != *method {
            return Err(Rejection::new(400, "CSeq Method Mismatch"));
        }
        if let Some(mf) = self.headers.get("Max-Forwards")
            && (mf.is_empty() || mf.len() > 9 || !mf.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Rejection::new(400, "Bad Max-Forwards"));
        }
        for line in self.headers.all("Via") {
            let values: Vec<&str> = line.split(',').map(str::trim).collect();
            if values
                .iter()
                .any(|v| v.is_empty() || Via::parse(v).is_err())
            {
                return Err(Rejection::new(400, "Bad Via"));
            }
        }
        for name in ["From", "To"] {
            let value = self.headers.get(name).unwrap_or_default();
            NameAddr::parse(value).map_err(|_| Rejection::new(400, "Bad From/To"))?;
        }
        let scheme = uri
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if uri.contains(['<', '>', ' ']) {
            return Err(Rejection::new(400, "Bad Request-URI"));
        }
        if scheme != "sip" && scheme != "sips" && scheme != "tel" {
            return Err(Rejection::new(416, "Unsupported URI Scheme"));
        }
        if scheme != "tel" {
            let host = SipUri::parse(uri)
                .map_err(|_| Rejection::new(400, "Bad Request-URI"))?
                .host_port;
            // An IPv6 literal must be bracketed (RFC 5118 4.2): more than one colon otherwise.
            if !host.starts_with('[') && host.matches(':').count() > 1 {
                return Err(Rejection::new(400, "Bad Request-URI"));
            }
        }
        Ok(())
    }

    /// Prints the message in wire form with a fresh Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                let _ = write!(out, "{} {} {}\r\n", method.as_str(), uri, version);
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (name, value) in self.headers.iter() {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Finds where the first message of a stream buffer ends, without parsing it: `Ok(None)` means
/// "read more". Leading CRLFs (keep-alives, RFC 5626) must be skipped by the caller.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE_LEN {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ParseError::NotUtf8)?;
    let mut length = None;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name == "l" || name == "L" {
            if length.is_some() {
                return Err(ParseError::MultipleContentLength);
            }
            length = Some(parse_content_length(value.trim())?);
        }
    }
    let length = length.ok_or(ParseError::MissingContentLength)?;
    if length > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge);
    }
    let total = head_end + 4 + length;
    Ok((buf.len() >= total).then_some(total))
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let mut parts = rest.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if version != "2.0" {
            return Err(ParseError::BadStartLine);
        }
        let code_text = parts.next().ok_or(ParseError::BadStartLine)?;
        if code_text.len() != 3 || !code_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStartLine);
        }
        // Three ASCII digits always fit in a u16.
        let code: u16 = code_text.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        let reason = parts.next().unwrap_or_default().to_string();
        return Ok(StartLine::Response { code, reason });
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(ParseError::BadStartLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_char) || uri.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    if !version.starts_with("SIP/") {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_string(),
        version: version.to_string(),
    })
}

fn parse_content_length(value: &str) -> Result<usize, ParseError> {
    if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    value.parse().map_err(|_| ParseError::BadContentLength)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_commas(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// Parses `;name=value;flag` parameters; names are lower-cased, spaces around `=` tolerated.
fn parse_params(text: &str) -> Vec<(String, Option<String>)> {
    text.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// A CSeq header: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, below 2^31 (RFC 3261 8.1.1.5).
    pub number: u32,
    /// The method it numbers.
    pub method: Method,
}

impl CSeq {
    /// Parses `123 INVITE`.
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        let mut parts = value.split_whitespace();
        let number = parts.next().ok_or(ParseError::BadHeader)?;
        let method = parts.next().ok_or(ParseError::BadHeader)?;
        if parts.next().is_some()
            || number.len() > 10
            || !number.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ParseError::BadHeader);
        }
        let number: u64 = number.parse().map_err(|_| ParseError::BadHeader)?;
        if number >= 1 << 31 {
            return Err(ParseError::BadHeader);
        }
        Ok(CSeq {
            number: number as u32,
            method: Method::from_token(method),
        })
    }
}

/// One Via value: transport, sent-by and the parameters that matter to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, ...
    pub transport: String,
    /// `host[:port]` as written.
    pub sent_by: String,
    /// The `branch` parameter, the transaction key when it starts with `z9hG4bK`.
    pub branch: Option<String>,
    /// Whether `rport` (RFC 3581) asks for responses to the source port.
    pub rport: bool,
}

impl Via {
    /// Parses `SIP/2.0/UDP host:port;branch=...`, tolerating LWS around `/` (RFC 4475 wsinv).
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        let (proto, params) = match value.find(';') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, ""),
        };
        let mut parts = proto.splitn(3, '/');
        let name = parts.next().unwrap_or_default().trim();
        let version = parts.next().unwrap_or_default().trim();
        let rest = parts.next().ok_or(ParseError::BadHeader)?.trim();
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(ParseError::BadHeader);
        }
        let mut rest = rest.split_whitespace();
        let transport = rest
            .next()
            .ok_or(ParseError::BadHeader)?
            .to_ascii_uppercase();
        let sent_by: String = rest.collect::<Vec<_>>().join("");
        if sent_by.is_empty() {
            return Err(ParseError::BadHeader);
        }
        if !params.is_empty() && params.split(';').any(|p| p.trim().is_empty()) {
            return Err(ParseError::BadHeader);
        }
        let params = parse_params(params);
        let branch = params
            .iter()
            .find(|(n, _)| n == "branch")
            .and_then(|(_, v)| v.clone());
        let rport = params.iter().any(|(n, _)| n == "rport");
        Ok(Via {
            transport,
            sent_by,
            branch,
            rport,
        })
    }

    /// The port of sent-by, if written (`host:port`, `[v6]:port`).
    pub fn sent_by_port(&self) -> Option<u16> {
        let tail = match self.sent_by.rfind(']') {
            Some(close) => &self.sent_by[close + 1..],
            None if self.sent_by.matches(':').count() == 1 => {
                &self.sent_by[self.sent_by.find(':')?..]
            }
            None => return None,
        };
        tail.strip_prefix(':')?.parse().ok()
    }
}

/// A name-addr or addr-spec (From, To, Contact): display name, URI and header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The URI without angle brackets.
    pub uri: String,
    /// The `tag` parameter, if any.
    pub tag: Option<String>,
}

impl NameAddr {
    /// Parses `"Name" <sip:u@h>;tag=x` or `sip:u@h;tag=x`.
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        let value = value.trim();
        let (uri, params) = if let Some(open) = find_unquoted(value, '<') {
            let display = value[..open].trim();
            if !display.is_empty() && !display.starts_with('"') {
                // An unquoted display name must be tokens and spaces (RFC 4475 baddn).
                if !display
                    .bytes()
                    .all(|b| is_token_char(b) || b == b' ' || b == b'\t')
                {
                    return Err(ParseError::BadHeader);
                }
            }
            if display.starts_with('"') && !quoted_string_closed(display) {
                return Err(ParseError::BadHeader);
            }
            let close = value[open..].find('>').ok_or(ParseError::BadHeader)? + open;
            (value[open + 1..close].trim(), &value[close + 1..])
        } else {
            if value.starts_with('"') {
                return Err(ParseError::BadHeader);
            }
            match value.find(';') {
                Some(i) => (value[..i].trim(), &value[i..]),
                None => (value, ""),
            }
        };
        if uri.is_empty() || !uri.contains(':') || uri.contains(char::is_whitespace) {
            return Err(ParseError::BadHeader);
        }
        let tag = parse_params(params)
            .into_iter()
            .find(|(n, _)| n == "tag")
            .and_then(|(_, v)| v);
        Ok(NameAddr {
            uri: uri.to_string(),
            tag,
        })
    }
}

fn find_unquoted(value: &str, target: char) -> Option<usize> {
    let (mut in_quotes, mut escaped) = (false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == target && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

fn quoted_string_closed(text: &str) -> bool {
    let mut escaped = false;
    for c in text.chars().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return true,
            _ => {}
        }
    }
    false
}

/// The parts of a `sip:`/`sips:` URI a bridge routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`, lower-cased.
    pub scheme: String,
    /// The user part, percent-decoding not applied.
    pub user: Option<String>,
    /// Host (with brackets for IPv6) and optional port.
    pub host_port: String,
}

impl SipUri {
    /// Parses the URI's scheme, user and host; parameters and headers are ignored.
    pub fn parse(uri: &str) -> Result<SipUri, ParseError> {
        let (scheme, rest) = uri.split_once(':').ok_or(ParseError::BadUri)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(ParseError::BadUri);
        }
        let rest = rest.split(['?']).next().unwrap_or_default();
        let (user, host_part) = match rest.rfind('@') {
            Some(at) => (
                Some(rest[..at].split(':').next().unwrap_or_default().to_string()),
                &rest[at + 1..],
            ),
            None => (None, rest),
        };
        let host_port = host_part.split(';').next().unwrap_or_default().to_string();
        if host_port.is_empty() {
            return Err(ParseError::BadUri);
        }
        Ok(SipUri {
            scheme,
            user,
            host_port,
        })
    }

    /// The socket address the URI names when its host is an IP literal (default port 5060,
    /// 5061 for `sips:`); `None` for a hostname, which needs DNS.
    pub fn ip_address(&self) -> Option<std::net::SocketAddr> {
        let host_port = self.host_port.as_str();
        host_port.parse().ok().or_else(|| {
            let ip: std::net::IpAddr = host_port
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?;
            let port = if self.scheme == "sips" { 5061 } else { 5060 };
            Some(std::net::SocketAddr::new(ip, port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../testdata/sip-torture/rfc4475/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn outcome(name: &str) -> Result<(), u16> {
        match Message::parse(&torture(name), Framing::Datagram) {
            Err(_) => Err(0),
            Ok((m, _)) => m.validate_request().map_err(|r| r.code),
        }
    }

    #[test]
    fn torture_must_accept() {
        for name in [
            "wsinv.dat",
            "intmeth.dat",
            "esc01.dat",
            "escnull.dat",
            "esc02.dat",
            "lwsdisp.dat",
            "longreq.dat",
            "dblreq.dat",
            "semiuri.dat",
            "transports.dat",
            "mpart01.dat",
            "unreason.dat",
            "noreason.dat",
            "zeromf.dat",
            "cparam01.dat",
            "cparam02.dat",
            "regescrt.dat",
            "inv2543.dat",
            "regaut01.dat",
        ] {
            assert_eq!(outcome(name), Ok(()), "{name} must be accepted");
        }
    }

    #[test]
    fn torture_must_reject() {
        for (name, codes) in [
            ("badinv01.dat", &[0, 400][..]),
            ("clerr.dat", &[0, 400]),
            ("ncl.dat", &[0, 400]),
            ("scalar02.dat", &[0, 400]),
            ("baddn.dat", &[400]),
            ("badvers.dat", &[505]),
            ("mismatch01.dat", &[400]),
            ("mismatch02.dat", &[400, 501]),
            ("bigcode.dat", &[0]),
            ("insuf.dat", &[400]),
            ("unkscm.dat", &[416]),
            ("novelsc.dat", &[416]),
            ("multi01.dat", &[400]),
            ("mcl01.dat", &[0, 400]),
        ] {
            let got = outcome(name).expect_err(name);
            assert!(
                codes.contains(&got),
                "{name}: got {got}, want one of {codes:?}"
            );
        }
    }

    #[test]
    fn wsinv_fields() {
        let (m, _) = Message::parse(&torture("wsinv.dat"), Framing::Datagram).unwrap();
        assert_eq!(m.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
        assert_eq!(m.cseq().unwrap().number, 9);
        assert_eq!(m.body.len(), 150);
        let via = m.top_via().unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.branch.as_deref(), Some("390skdjuw"));
        let to = NameAddr::parse(m.headers.get("To").unwrap()).unwrap();
        assert_eq!(to.tag.as_deref(), Some("1918181833n"));
    }

    #[test]
    fn dblreq_ignores_trailing_datagram_bytes() {
        let bytes = torture("dblreq.dat");
        let (m, used) = Message::parse(&bytes, Framing::Datagram).unwrap();
        assert_eq!(m.method(), Some(&Method::Register));
        assert!(used < bytes.len());
    }

    #[test]
    fn stream_framing_waits_for_body() {
        let text = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\nab";
        assert!(matches!(
            Message::parse(text, Framing::Stream),
            Err(ParseError::Incomplete)
        ));
        assert!(matches!(
            Message::parse(&text[..10], Framing::Stream),
            Err(ParseError::Incomplete)
        ));
    }

    #[test]
    fn print_and_parse_round_trip() {
        let (m, _) = Message::parse(&torture("wsinv.dat"), Framing::Datagram).unwrap();
        let (again, _) = Message::parse(&m.to_bytes(), Framing::Stream).unwrap();
        let without_length = |m: &Message| {
            let mut h = m.headers.clone();
            h.remove("Content-Length");
            h
        };
        assert_eq!(m.start, again.start);
        assert_eq!(m.body, again.body);
        assert_eq!(without_length(&m), without_length(&again));
    }

    #[test]
    fn uri_user_and_host() {
        let u = SipUri::parse("sip:1000@10.0.0.1:5060;transport=udp").unwrap();
        assert_eq!(u.user.as_deref(), Some("1000"));
        assert_eq!(u.host_port, "10.0.0.1:5060");
        assert!(SipUri::parse("tel:+1234").is_err());
    }

    #[test]
    fn via_sent_by_port_and_rport() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKx;rport").unwrap();
        assert_eq!((v.sent_by_port(), v.rport), (Some(5070), true));
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKx").unwrap();
        assert_eq!((v.sent_by_port(), v.rport), (Some(6050), false));
        assert_eq!(
            Via::parse("SIP/2.0/UDP [2001:db8::1];branch=z")
                .unwrap()
                .sent_by_port(),
            None
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP example.com;rport=1")
                .unwrap()
                .sent_by_port(),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Ok((m, _)) = Message::parse(&bytes, Framing::Datagram) {
                let _ = m.validate_request();
            }
            let _ = Message::parse(&bytes, Framing::Stream);
        }
    }
}
