//! REGISTER as a client (RFC 3261 §10.2): one request per [`Endpoint::register`] through a
//! non-INVITE client transaction, one 401/407 answered with the credentials, the outcome
//! reported as [`Event::Registered`] with the expiry the registrar granted. When to refresh,
//! back off or give up is the caller's ([`crate::registration`]).
//!
//! ```text
//!  register() --REGISTER--> Trying --2xx--> Event::Registered(Granted{expires})
//!     401/407, once: REGISTER again, CSeq + 1, with (Proxy-)Authorization
//!     423: Event::Registered(Failed{min_expires}); other final or Timer F: Failed
//! ```

use super::*;
use crate::digest::User;

/// Names a request the application sends outside any dialog (a REGISTER), so it can tell the
/// outcomes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey(pub u64);

/// The parts of a REGISTER the application decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The Request-URI: the registrar's domain (`sip:example.com`).
    pub registrar: String,
    /// The address of record, for To and From (`sip:user@example.com`).
    pub aor: String,
    /// The user part of our Contact (calls to the AOR reach `sip:<user>@<our address>`).
    pub contact_user: String,
    /// One Call-ID for every REGISTER of a registration (RFC 3261 §10.2.4).
    pub call_id: String,
    /// This request's CSeq number (higher than the last one sent with `call_id`).
    pub cseq: u32,
    /// Seconds asked for; 0 removes the binding.
    pub expires: u32,
    /// Route headers to pre-load (an outbound proxy), in order.
    pub route: Vec<String>,
    /// Credentials for a 401 or 407.
    pub credentials: Option<User>,
}

/// A REGISTER for the endpoint to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRegister {
    /// Where it goes (the registrar or outbound proxy, resolved) and over which socket.
    pub peer: Peer,
    /// The request.
    pub request: RegisterRequest,
}

/// How a REGISTER ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A 2xx: our binding holds for `expires` seconds (the registrar's grant for our Contact,
    /// else its Expires header, else what we asked).
    Granted {
        /// Seconds granted.
        expires: u32,
    },
    /// A final failure (408 when nothing answered in time).
    Failed {
        /// The response code.
        code: u16,
        /// Its reason phrase.
        reason: String,
        /// A 423's `Min-Expires`: the shortest interval the registrar takes.
        min_expires: Option<u32>,
    },
}

/// A REGISTER in flight.
#[derive(Debug)]
pub(super) struct Registering {
    request: Message,
    branch: String,
    peer: Peer,
    credentials: Option<User>,
    challenged: bool,
    expires: u32,
}

impl Endpoint {
    /// Sends a REGISTER under `key`; its outcome comes as [`Event::Registered`].
    pub fn register(&mut self, now: Instant, key: RequestKey, outgoing: OutgoingRegister) {
        let now = self.advance(now);
        let OutgoingRegister {
            peer,
            request: register,
        } = outgoing;
        let tag = self.random_token();
        let mut headers = Headers::default();
        headers.push("Max-Forwards", "70");
        for route in &register.route {
            headers.push("Route", route.clone());
        }
        headers.push("From", format!("<{}>;tag={tag}", register.aor));
        headers.push("To", format!("<{}>", register.aor));
        headers.push("Call-ID", register.call_id);
        headers.push("CSeq", format!("{} REGISTER", register.cseq));
        headers.push("Contact", contact_as(&register.contact_user, peer));
        headers.push("Expires", register.expires.to_string());
        headers.push("Allow", ALLOW);
        headers.push("User-Agent", self.config.user_agent.clone());
        let request = Message {
            start: StartLine::Request {
                method: Method::Register,
                uri: register.registrar,
                version: "SIP/2.0".into(),
            },
            headers,
            body: Vec::new(),
        };
        let registering = Registering {
            request,
            branch: String::new(),
            peer,
            credentials: register.credentials,
            challenged: false,
            expires: register.expires,
        };
        self.send_register(now, key, registering);
    }

    /// Sends `registering`'s REGISTER on a new branch.
    fn send_register(&mut self, now: Instant, key: RequestKey, mut registering: Registering) {
        let peer = registering.peer;
        registering.branch = self.start_client_txn(
            now,
            Purpose::Register(key),
            peer,
            &mut registering.request,
            "REGISTER",
        );
        self.registering.insert(key, registering);
    }

    /// How a REGISTER ended: granted, challenged (sent again with credentials) or failed.
    pub(super) fn register_outcome(
        &mut self,
        now: Instant,
        key: RequestKey,
        branch: &str,
        response: Option<&Message>,
        outcome: Outcome,
    ) {
        let Some(mut registering) = self.registering.remove(&key) else {
            return;
        };
        if registering.branch != branch {
            self.registering.insert(key, registering);
            return;
        }
        let reason = response
            .and_then(Message::reason)
            .unwrap_or_default()
            .to_string();
        let cseq = registering.request.cseq().map_or(0, |c| c.number);
        let report =
            |outcome: RegisterOutcome| Output::Event(Event::Registered { key, cseq, outcome });
        let outcome = match outcome {
            Outcome::Success(response) => RegisterOutcome::Granted {
                expires: granted_expiry(&response, &registering),
            },
            Outcome::Failure(code @ (401 | 407)) if !registering.challenged => {
                let answered = registering.credentials.clone().is_some_and(|user| {
                    self.answer_challenge(&mut registering.request, code, response, &user)
                });
                if answered {
                    registering.challenged = true;
                    return self.send_register(now, key, registering);
                }
                RegisterOutcome::Failed {
                    code,
                    reason,
                    min_expires: None,
                }
            }
            Outcome::Failure(code) => RegisterOutcome::Failed {
                code,
                reason,
                min_expires: response
                    .filter(|_| code == 423)
                    .and_then(|r| r.headers.get("Min-Expires"))
                    .and_then(|v| v.trim().parse().ok()),
            },
            Outcome::Timeout => RegisterOutcome::Failed {
                code: 408,
                reason: "Request Timeout".into(),
                min_expires: None,
            },
        };
        self.outputs.push_back(report(outcome));
    }
}

/// The expiry a 2xx to a REGISTER grants our binding: the `expires` parameter of the Contact
/// that is ours (RFC 3261 §10.2.4), else the Expires header, else what we asked.
fn granted_expiry(response: &Message, registering: &Registering) -> u32 {
    let ours = registering
        .request
        .headers
        .get("Contact")
        .and_then(|c| NameAddr::parse(c).ok())
        .map(|c| c.uri);
    let from_contact = response
        .headers
        .all("Contact")
        .flat_map(split_commas)
        .filter(|c| {
            NameAddr::parse(c)
                .ok()
                .is_some_and(|c| Some(&c.uri) == ours.as_ref())
        })
        .find_map(|c| contact_param(c, "expires"));
    from_contact
        .or_else(|| {
            response
                .headers
                .get("Expires")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(registering.expires)
}

/// A header parameter of a Contact value (after its `>`, or after the URI).
fn contact_param(contact: &str, name: &str) -> Option<u32> {
    let params = match contact.rfind('>') {
        Some(close) => &contact[close + 1..],
        None => contact.split_once(';').map_or("", |(_, p)| p),
    };
    params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
