//! The bridge's dial-outs (`POST /v1/rooms/{room}/participants`): admitted by the core, the
//! URI looked up in DNS (RFC 3263, in a task), the leg's RTP ports bound in the blocking pool,
//! our offer sent in an INVITE to the first target; a 503 or a timeout moves on to the next.
//! The callee's answer picks the codec, its media is built like a caller's, and the core puts
//! it in its room. A 3xx is followed once.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use roundtable_api::{ControlError, DialRequest, Failure, Participant, ParticipantState};
use roundtable_conference::conference::{DialOut, DialRefusal, DialState, Refusal};
use roundtable_conference::{LegId, RoomId};
use roundtable_media::socket::{MediaPorts, ReceiveConfig};
use roundtable_sip::endpoint::CallKey;
use roundtable_sip::locate::{self, Target};
use roundtable_sip::sdp::{Offer, SrtpPolicy, offer_sdp};
use roundtable_sip::transport::{Dial, route_source};
use tracing::{debug, info, warn};

use super::calls::MediaSetup;
use super::{Bridge, Command, LegEntry, leg_codec};
use crate::config::Trunk;

/// A call we place, beside its [`LegEntry`].
pub(super) struct DialInfo {
    /// Where the INVITE goes now (none until DNS answered).
    target: Option<Target>,
    /// The targets to fail over to (RFC 3263: on a 503 or a timeout), in order.
    alternatives: VecDeque<Target>,
    /// Whom we call (the Request-URI).
    uri: String,
    /// The trunk it goes through: its next hop is looked up instead of `uri`'s host, its
    /// credentials answer challenges, and our From is its user at its domain.
    trunk: Option<Trunk>,
    /// Our From user (or whole URI) and display name.
    from: Option<String>,
    display_name: Option<String>,
    /// A 3xx was followed already.
    redirected: bool,
    /// Its RTP ports, from binding until its media is built (failover happens only before).
    ports: Option<MediaPorts>,
    /// The INVITE went (`LegEntry::call` is its key).
    sent: bool,
}

/// Checks a dial-out's URI before anything is set up: 400 for a malformed one.
fn check_uri(uri: &str) -> Result<(), ControlError> {
    locate::plan(uri)
        .map(drop)
        .map_err(|e| ControlError::Invalid(format!("to: {e}")))
}

/// Checks what is called through a trunk: a `tel:` number of digits, `+` and visual
/// separators, or a `sip:` URI.
fn check_number(to: &str) -> Result<(), ControlError> {
    let Some(number) = to.strip_prefix("tel:") else {
        return Ok(());
    };
    let number = number.split(';').next().unwrap_or_default();
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    let allowed = number
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.() ".contains(&b) || b.is_ascii_hexdigit());
    if digits == 0 || !allowed || number.len() > 64 {
        return Err(ControlError::Invalid(format!(
            "to: {to:?} is not a telephone number"
        )));
    }
    Ok(())
}

/// The local IP the kernel routes `target` from (where the leg's RTP ports are bound).
fn route_ip(target: SocketAddr) -> Result<IpAddr, String> {
    let unspecified = SocketAddr::new(
        if target.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        },
        0,
    );
    let ip = route_source(unspecified, target).ip();
    if ip.is_unspecified() {
        return Err(format!("no route to {target}"));
    }
    Ok(ip)
}

fn dial_refusal_error(refusal: DialRefusal) -> ControlError {
    match refusal {
        DialRefusal::Admission(refusal) => refusal_error(refusal),
        DialRefusal::MaxDialOuts => ControlError::TooMany {
            what: refusal.to_string(),
            retry_after_s: 1,
        },
        DialRefusal::Rate { retry } => ControlError::TooMany {
            what: refusal.to_string(),
            retry_after_s: retry.as_secs_f64().ceil().max(1.0) as u64,
        },
    }
}

/// The API's answer when a room does not take a participant.
pub(super) fn refusal_error(refusal: Refusal) -> ControlError {
    match refusal {
        Refusal::RoomFull => ControlError::Conflict("room full"),
        Refusal::RoomLocked => ControlError::Conflict("room locked"),
        Refusal::MaxCalls => ControlError::Unavailable("sip.max_calls calls are up".into()),
        Refusal::NotAccepting | Refusal::LockedOut => {
            ControlError::Unavailable("not taking calls".into())
        }
    }
}

impl Bridge {
    /// `POST /v1/rooms/{room}/participants` (the request's own checks passed): the call is
    /// admitted and answered `dialing`; its ports are bound next ([`Bridge::dial_ports`]).
    pub(super) fn dial(
        &mut self,
        now: Instant,
        room: &RoomId,
        request: DialRequest,
    ) -> Result<Participant, ControlError> {
        let room = room.clone();
        let trunk = match &request.trunk {
            Some(name) => Some(
                self.config
                    .trunks
                    .iter()
                    .find(|t| &t.name == name)
                    .cloned()
                    .ok_or(ControlError::TrunkNotFound)?,
            ),
            None => None,
        };
        let uri = match &trunk {
            Some(trunk) => {
                check_number(&request.to)?;
                trunk.request_uri(&request.to)
            }
            None => request.to.clone(),
        };
        check_uri(&uri)?;
        // Where the INVITE goes first: the trunk's next hop, else the callee's host.
        let hop = trunk
            .as_ref()
            .map_or_else(|| uri.clone(), |t| t.next_hop.clone());
        let dial = DialOut {
            room: room.clone(),
            moderator: request.moderator,
            muted: request.muted,
            timeout: std::time::Duration::from_secs(u64::from(request.timeout_s)),
        };
        let leg = self
            .core
            .dial_out(now, dial, &self.book)
            .map_err(dial_refusal_error)?;
        let codec = *self
            .sdp_codecs()
            .first()
            .unwrap_or(&roundtable_sip::sdp::AudioCodec::Pcmu);
        let placeholder = ReceiveConfig {
            audio_pt: 0,
            telephone_event: None,
            inactivity: None,
            clock_rate: 8000,
            rtcp_mux: false,
            rtcp_remote: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let receive = tokio::sync::watch::channel(placeholder).0;
        let mut entry = LegEntry::new(
            CallKey(0),
            request.to.clone(),
            codec,
            self.clock.now(),
            receive,
        );
        entry.controls.muted = request.muted;
        info!(leg = %leg, room = %room, to = %request.to, trunk = ?request.trunk, "dialling out");
        self.locate(leg, hop, None);
        entry.dial = Some(Box::new(DialInfo {
            target: None,
            alternatives: VecDeque::new(),
            uri,
            trunk,
            from: request.from,
            display_name: request.display_name,
            redirected: false,
            ports: None,
            sent: false,
        }));
        self.legs.insert(leg, entry);
        let entry = self.legs.get(&leg).ok_or(ControlError::LegNotFound)?;
        let room_aec = self.room_aec(&room);
        let mut participant = self.participant(leg, request.moderator, entry, room_aec);
        participant.state = ParticipantState::Dialing;
        Ok(participant)
    }

    /// Looks `uri` up in DNS in a task of its own; [`Bridge::dial_routed`] takes its answer.
    /// Only targets the leg's RTP can serve are kept: those routed from the IP its ports are
    /// bound on (`bound`, after a redirect), else from the first target's.
    fn locate(&self, leg: LegId, uri: String, bound: Option<IpAddr>) {
        let (locator, handle) = (self.locator.clone(), self.handle.clone());
        tokio::spawn(async move {
            let targets = locator.locate(&uri).await.map_err(|e| e.to_string());
            let targets = targets.map(|targets| {
                let wanted = bound.or_else(|| targets.first().and_then(|t| route_ip(t.addr).ok()));
                targets
                    .into_iter()
                    .filter(|t| {
                        let usable = route_ip(t.addr).ok() == wanted;
                        if !usable {
                            debug!(leg = %leg, target = %t.addr, "skipped: routed from another address than the leg's RTP");
                        }
                        usable
                    })
                    .collect()
            });
            handle.send(Command::DialRouted(leg, targets));
        });
    }

    /// A dial-out's targets are known (or DNS failed): the first is called, after its RTP
    /// ports are bound on the IP that routes to it (the first time).
    pub(super) fn dial_routed(
        &mut self,
        now: Instant,
        leg: LegId,
        targets: Result<Vec<Target>, String>,
    ) {
        let Some(dial) = self.legs.get_mut(&leg).and_then(|e| e.dial.as_mut()) else {
            return; // Given up meanwhile.
        };
        let mut targets: VecDeque<Target> = match targets {
            Ok(targets) => targets.into(),
            Err(error) => return self.dial_unroutable(now, leg, format!("DNS: {error}")),
        };
        debug!(leg = %leg, ?targets, "dial-out routed");
        let Some(first) = targets.pop_front() else {
            return self.dial_unroutable(now, leg, "DNS: no targets".into());
        };
        let first_addr = first.addr;
        dial.target = Some(first);
        dial.alternatives = targets;
        if dial.ports.is_some() {
            // A redirect's new targets: the ports stay.
            return self.send_invite(leg);
        }
        let (ports, handle) = (self.ports.clone(), self.handle.clone());
        tokio::task::spawn_blocking(move || {
            let bound = route_ip(first_addr)
                .and_then(|ip| MediaPorts::bind(ip, &ports).map_err(|e| e.to_string()));
            handle.send(Command::DialPorts(leg, Box::new(bound)));
        });
    }

    /// No target for a dial-out: it fails as a 503 (RFC 3263 §4.3) with the reason.
    fn dial_unroutable(&mut self, now: Instant, leg: LegId, reason: String) {
        warn!(leg = %leg, %reason, "dial-out failed: no route");
        self.core.handle_dial_failed(now, leg, 503, &reason);
    }

    /// A dial-out's ports are bound (or not): the INVITE goes with our offer.
    pub(super) fn dial_ports(
        &mut self,
        now: Instant,
        leg: LegId,
        bound: Result<MediaPorts, String>,
    ) {
        if self.legs.get(&leg).is_none_or(|e| e.dial.is_none()) {
            return; // Given up meanwhile: dropping the ports frees them.
        }
        let ports = match bound {
            Ok(ports) => ports,
            Err(error) => {
                warn!(leg = %leg, %error, "dial-out failed: no RTP port");
                self.core
                    .handle_dial_failed(now, leg, 503, "no RTP port free");
                return;
            }
        };
        let advertised = self.advertised(ports.local);
        let offer = offer_sdp(&self.sdp_codecs(), advertised, leg.0, 1);
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        entry.advertised = advertised;
        // Our offer is our SDP for the call's life (a re-offer without SDP gets it).
        entry.answer_sdp = offer;
        if let Some(dial) = entry.dial.as_mut() {
            dial.ports = Some(ports);
        }
        self.send_invite(leg);
    }

    /// Sends (or sends again, to a redirect's target) a dial-out's INVITE.
    fn send_invite(&mut self, leg: LegId) {
        let (Some(entry), Some(sip)) = (self.legs.get_mut(&leg), &self.sip) else {
            return;
        };
        let Some(dial) = entry.dial.as_mut() else {
            return;
        };
        let Some(target) = dial.target.clone() else {
            return;
        };
        let host = locate::bracket_ipv6(&entry.advertised.ip().to_string());
        let room = self
            .core
            .dial_outs_room(leg)
            .map_or_else(|| "roundtable".to_string(), |r| r.to_string());
        // Through a trunk we are its user at its domain (carriers check it); otherwise the
        // room (or the user asked for) at our address.
        let from_host = dial
            .trunk
            .as_ref()
            .map_or(host, |t| locate::bracket_ipv6(&t.domain));
        let from_uri = match (dial.from.as_deref(), &dial.trunk) {
            (Some(uri), _) if uri.contains(':') => uri.to_string(),
            (Some(user), _) => format!("sip:{user}@{from_host}"),
            (None, Some(trunk)) if !trunk.from_user.is_empty() => {
                format!("sip:{}@{from_host}", trunk.from_user)
            }
            (None, _) => format!("sip:{room}@{from_host}"),
        };
        let hop = dial.trunk.as_ref().map_or(&dial.uri, |t| &t.next_hop);
        let from = match &dial.display_name {
            Some(name) => format!("\"{name}\" <{from_uri}>"),
            None => format!("<{from_uri}>"),
        };
        let call = sip.dial(Dial {
            target: target.addr,
            transport: target.transport,
            server_name: locate::uri_host(hop).unwrap_or_default(),
            request_uri: dial.uri.clone(),
            from,
            to: format!("<{}>", dial.uri),
            route: dial.trunk.iter().filter_map(|t| t.route.clone()).collect(),
            body: entry.answer_sdp.clone(),
            credentials: dial.trunk.as_ref().and_then(|t| t.credentials.clone()),
        });
        dial.sent = true;
        self.calls.remove(&entry.call);
        entry.call = call;
        self.calls.insert(call, leg);
    }

    /// A 18x to a dial-out.
    pub(super) fn dial_progress(&mut self, now: Instant, call: CallKey) {
        if let Some(&leg) = self.calls.get(&call) {
            self.core.handle_dial_progress(now, leg);
        }
    }

    /// A dial-out was answered: its answer picks the codec, its media is built, and the core
    /// puts it in its room once that is done.
    pub(super) fn dial_answered(&mut self, now: Instant, call: CallKey, body: Vec<u8>) {
        let Some(&leg) = self.calls.get(&call) else {
            return;
        };
        let codecs = self.sdp_codecs();
        let answer = Offer::parse(&body, SrtpPolicy::Off)
            .ok()
            .and_then(|theirs| Some((theirs.answer(&codecs).ok()?, theirs)));
        let Some((ours, theirs)) = answer else {
            warn!(leg = %leg, "dial-out answered with SDP we cannot use; hanging up");
            if let Some(sip) = &self.sip {
                sip.hangup(call);
            }
            self.core
                .handle_dial_failed(now, leg, 488, "Not Acceptable Here (its SDP answer)");
            return;
        };
        let receive = self.receive_config(&theirs, &ours);
        let Some(room) = self.core.dial_outs_room(leg).cloned() else {
            return;
        };
        self.core.handle_dial_answered(now, leg);
        let digits = self.forward_digits(leg);
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        let (receive_tx, receive_rx) = tokio::sync::watch::channel(receive);
        entry.receive = receive_tx;
        entry.codec = ours.codec;
        let ports = entry.dial.as_mut().and_then(|d| d.ports.take());
        let setup = MediaSetup {
            leg,
            room,
            remote: theirs.rtp_addr,
            codec: leg_codec(&ours),
            receive: receive_rx,
            srtp: None,
            digits,
            counters: entry.counters.clone(),
            cancel: entry.cancel.clone(),
        };
        self.spawn_media(
            move || ports.ok_or(("no RTP port", "the ports were released".to_string())),
            setup,
        );
    }

    /// A dial-out failed: a first 3xx is followed (its URI looked up anew); a 503 or a timeout
    /// moves on to the next target (RFC 3263 §4.3); anything else ends it.
    pub(super) fn dial_failed(
        &mut self,
        now: Instant,
        call: CallKey,
        code: u16,
        reason: String,
        redirect: Option<String>,
    ) {
        let Some(&leg) = self.calls.get(&call) else {
            return;
        };
        let wanted = self.core.still_dialing(leg);
        let Some(dial) = self.legs.get_mut(&leg).and_then(|e| e.dial.as_mut()) else {
            return;
        };
        if let (Some(uri), true, false) = (redirect, wanted, dial.redirected)
            && check_uri(&uri).is_ok()
        {
            info!(leg = %leg, %uri, "dial-out redirected ({code})");
            dial.redirected = true;
            dial.uri = uri.clone();
            // Through a trunk, the new target is reached through it too.
            let hop = dial.trunk.as_ref().map_or(uri, |t| t.next_hop.clone());
            let bound = dial.ports.as_ref().map(|p| p.local.ip());
            self.locate(leg, hop, bound);
            return;
        }
        // The alternatives were kept only if our RTP can serve them (see `locate`).
        if wanted
            && matches!(code, 408 | 503)
            && let Some(next) = dial.alternatives.pop_front()
        {
            info!(leg = %leg, code, target = %next.addr, "dial-out failing over to the next target");
            dial.target = Some(next);
            self.send_invite(leg);
            return;
        }
        info!(leg = %leg, code, %reason, "dial-out failed");
        self.core.handle_dial_failed(now, leg, code, &reason);
    }

    /// Hangs up a dial-out before its INVITE went: it fails at once.
    pub(super) fn drop_unsent_dial(&mut self, leg: LegId) -> bool {
        let unsent = self
            .legs
            .get(&leg)
            .and_then(|e| e.dial.as_ref())
            .is_some_and(|d| !d.sent);
        if unsent {
            self.core
                .handle_dial_failed(Instant::now(), leg, 487, "Request Terminated");
        }
        unsent
    }

    /// The `participant_state` event's fields for a core dial state.
    pub(super) fn dial_state_fields(leg: LegId, state: &DialState) -> serde_json::Value {
        let mut fields =
            serde_json::json!({"participant": leg.to_string(), "state": state.as_str()});
        if let DialState::Failed { code, reason } = state {
            fields["failure"] = serde_json::json!(Failure {
                code: *code,
                reason: reason.clone()
            });
        }
        fields
    }

    /// The calls placed into `room` that have not joined it yet, as participants.
    pub(super) fn dialing_participants(&self, room: &RoomId) -> Vec<Participant> {
        let room_aec = self.room_aec(room);
        self.core
            .dial_outs(room)
            .into_iter()
            .filter_map(|view| {
                let entry = self.legs.get(&view.leg)?;
                let mut participant = self.participant(view.leg, view.moderator, entry, room_aec);
                participant.state = match view.state {
                    DialState::Dialing => ParticipantState::Dialing,
                    DialState::Ringing => ParticipantState::Ringing,
                    _ => ParticipantState::Answered,
                };
                Some(participant)
            })
            .collect()
    }
}
