//! The bridge's SIP side: routing an INVITE, negotiating its SDP, setting up the leg's media in
//! the blocking pool, answering once the core has placed it, and answering re-offers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use roundtable_conference::conference::{Departure, Destination, Refusal};
use roundtable_conference::{LegId, RoomId};
use roundtable_media::socket::{self, LegCounters, MediaPorts, ReceiveConfig, ReceiveEnd};
use roundtable_mixer::pool::{Command as MixerCommand, LegIo};
use roundtable_sip::Rejection;
use roundtable_sip::endpoint::{CallKey, IncomingCall, Reoffer, Transport};
use roundtable_sip::sdp::{Answer, AudioCodec, Direction, NegotiationError, Offer, SrtpPolicy};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Bridge, Command, LegEntry, expects_rtp, leg_codec, media_codec, srtp_contexts};
use crate::config::DialAction;

/// A leg's media, set up in the blocking pool: its sockets, intake and codecs, ready to join
/// the mixer.
pub struct LegMedia {
    add: MixerCommand,
    supervision: socket::Supervision,
    lease: Arc<socket::PortLease>,
    rtp: SocketAddr,
}

/// What a leg's media set-up needs besides its sockets.
pub(super) struct MediaSetup {
    pub(super) leg: LegId,
    /// The mixer room it is built for.
    pub(super) room: RoomId,
    /// Where its RTP goes.
    pub(super) remote: SocketAddr,
    pub(super) codec: roundtable_media::codec::LegCodec,
    pub(super) receive: tokio::sync::watch::Receiver<ReceiveConfig>,
    /// SRTP: the mixer's protector, and the receive side's pair.
    pub(super) srtp: Option<(
        roundtable_media::srtp::Protector,
        (
            roundtable_media::srtp::Unprotector,
            roundtable_media::srtp::Protector,
        ),
    )>,
    pub(super) digits: tokio::sync::mpsc::Sender<roundtable_media::dtmf::Digit>,
    pub(super) counters: Arc<LegCounters>,
    pub(super) cancel: CancellationToken,
}

impl MediaSetup {
    /// Splits the sockets into the RTP intake and RTCP supervision and builds the mixer's
    /// leg (blocking: codec construction).
    fn run(
        self,
        ports: MediaPorts,
        mixer: &roundtable_mixer::pool::MixerPool,
        metrics: roundtable_media::metrics::MediaMetrics,
    ) -> Result<Box<LegMedia>, (&'static str, String)> {
        let MediaPorts {
            rtp: rtp_socket,
            rtcp,
            lease,
            local,
        } = ports;
        let (protect, srtp_receive) = match self.srtp {
            Some((protect, receive)) => (Some(protect), Some(receive)),
            None => (None, None),
        };
        let (intake, supervision) = socket::split_receive(
            rtp_socket,
            rtcp,
            self.receive,
            srtp_receive,
            self.digits,
            self.counters.clone(),
            metrics,
            self.cancel,
        )
        .map_err(|e| ("RTP socket set-up failed", e.to_string()))?;
        let io = LegIo {
            intake,
            remote: self.remote,
            counters: self.counters,
            codec: self.codec,
            protect,
            lease: lease.clone(),
        };
        Ok(Box::new(LegMedia {
            add: mixer.add_leg(self.room.key(), self.leg, io),
            supervision,
            lease,
            rtp: local,
        }))
    }
}

/// The SIP answer to a refusal of the core, and its metric label.
fn refusal_answer(refusal: Refusal) -> (&'static str, Rejection) {
    match refusal {
        Refusal::NotAccepting => ("draining", Rejection::new(503, "Service Unavailable")),
        Refusal::LockedOut => ("forbidden", Rejection::new(403, "Forbidden")),
        Refusal::MaxCalls => ("max_calls", Rejection::new(503, "Service Unavailable")),
        Refusal::RoomFull => ("room_full", Rejection::new(486, "Busy Here")),
        Refusal::RoomLocked => ("room_locked", Rejection::new(403, "Conference Locked")),
    }
}

impl Bridge {
    /// What a leg's RTP intake accepts under an offer and our answer to it.
    pub(super) fn receive_config(&self, offer: &Offer, answer: &Answer) -> ReceiveConfig {
        ReceiveConfig {
            audio_pt: answer.payload_type,
            telephone_event: answer.telephone_event,
            inactivity: expects_rtp(offer.direction)
                .then_some(self.config.media.inactivity_timeout),
            clock_rate: answer.codec.clock_rate(),
            rtcp_mux: answer.rtcp_mux,
            rtcp_remote: offer.rtcp_addr,
        }
    }

    /// The RTP address our SDP names for a leg bound at `local`: `media.public_ip` if set.
    pub(super) fn advertised(&self, local: SocketAddr) -> SocketAddr {
        SocketAddr::new(
            self.config.media.public_ip.unwrap_or(local.ip()),
            local.port(),
        )
    }

    /// `media.codecs` as SDP codecs, in our order of preference.
    pub(super) fn sdp_codecs(&self) -> Vec<AudioCodec> {
        const ALL: [AudioCodec; 5] = [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
            AudioCodec::G729,
        ];
        self.config
            .media
            .codecs
            .iter()
            .filter_map(|c| ALL.into_iter().find(|a| media_codec(*a) == *c))
            .collect()
    }

    /// Where the dial plan sends a Request-URI user part (first match wins).
    pub(super) fn route(&self, user: Option<&str>) -> Result<Destination, Rejection> {
        let not_found = Rejection::new(404, "Not Found");
        let user = user.ok_or(not_found)?;
        let (room, moderator) = if self.config.dialplan.is_empty() {
            (user, false)
        } else {
            let rule = self
                .config
                .dialplan
                .iter()
                .find(|r| r.pattern.is_match(user))
                .ok_or(not_found)?;
            if rule.action == DialAction::Lobby {
                return Ok(Destination::Lobby);
            }
            let captures = rule.pattern.captures(user).ok_or(not_found)?;
            (
                captures
                    .get(1)
                    .or_else(|| captures.get(0))
                    .map_or(user, |m| m.as_str()),
                rule.moderator,
            )
        };
        let room = RoomId::parse(room).map_err(|_| not_found)?;
        if self.book.settings(room.as_str()).has_pin() {
            // PIN rooms are entered through the lobby only.
            return Err(Rejection::new(403, "Forbidden"));
        }
        Ok(Destination::Room { room, moderator })
    }

    /// Refuses a pending call, counted under `reason`.
    fn refuse(&self, call: CallKey, call_id: &str, reason: &'static str, rejection: Rejection) {
        info!(call_id = %call_id, code = rejection.code, reason, "call refused");
        self.metrics
            .calls_rejected
            .with_label_values(&[reason])
            .inc();
        if let Some(sip) = &self.sip {
            sip.reject(call, rejection);
        }
    }

    /// A new INVITE: routed, its offer answered, admitted by the core; its media is then set
    /// up in the blocking pool ([`Bridge::media_ready`] follows).
    pub(super) fn incoming(&mut self, now: Instant, call: IncomingCall) {
        // A call through a trunk names its DID in To (the Request-URI is our registered
        // Contact); any other names its room in the Request-URI.
        let trunk = self
            .handle
            .trunks
            .borrow()
            .addresses
            .get(&call.peer.remote.ip())
            .cloned();
        let dialled = match &trunk {
            Some(trunk) => {
                debug!(%trunk, did = ?call.to_user, "call through a trunk: routed on its To user");
                call.to_user.as_deref()
            }
            None => call.user.as_deref(),
        };
        let destination = match self.route(dialled) {
            Ok(d) => d,
            Err(rejection) => {
                let reason = if rejection.code == 403 {
                    "forbidden"
                } else {
                    "no_room"
                };
                return self.refuse(call.call, &call.call_id, reason, rejection);
            }
        };
        let (offer, mut answer) = match self.negotiate(&call) {
            Ok(pair) => pair,
            Err(rejection) => return self.refuse(call.call, &call.call_id, "sdp", rejection),
        };
        let srtp = match answer.srtp.as_ref().map(srtp_contexts) {
            None => None,
            Some(Ok(contexts)) => Some(contexts),
            Some(Err(rejection)) => return self.refuse(call.call, &call.call_id, "sdp", rejection),
        };
        if let Some((local, ..)) = &srtp {
            answer.set_local_key(local.key_params());
        }
        let source = call.peer.remote.ip();
        let target = match &destination {
            Destination::Room { room, .. } => Some(room.clone()),
            Destination::Lobby => None,
        };
        let leg = match self.core.handle_call(now, source, destination, &self.book) {
            Ok(leg) => leg,
            Err(refusal) => {
                if refusal == Refusal::LockedOut {
                    self.metrics.lockout_refusals.inc();
                }
                let (reason, rejection) = refusal_answer(refusal);
                return self.refuse(call.call, &call.call_id, reason, rejection);
            }
        };
        let room = target.unwrap_or_else(|| RoomId::lobby(leg));
        let (receive_tx, receive_rx) =
            tokio::sync::watch::channel(self.receive_config(&offer, &answer));
        let codec = leg_codec(&answer);
        let mut entry = LegEntry::new(
            call.call,
            call.from.clone(),
            answer.codec,
            self.clock.now(),
            receive_tx,
        );
        entry.call_id = call.call_id.clone();
        entry.srtp = answer.srtp.clone();
        entry.pending_answer = Some(answer);
        let (counters, cancel) = (entry.counters.clone(), entry.cancel.clone());
        self.legs.insert(leg, entry);
        self.calls.insert(call.call, leg);
        let digits_tx = self.forward_digits(leg);
        // Binding sockets and building codecs run in the blocking pool.
        let setup = MediaSetup {
            leg,
            room,
            remote: offer.rtp_addr,
            codec,
            receive: receive_rx,
            srtp: srtp.map(|(_, mixer, receive)| (mixer, receive)),
            digits: digits_tx,
            counters,
            cancel,
        };
        let (ports, local_ip) = (self.ports.clone(), call.peer.local.ip());
        self.spawn_media(
            move || MediaPorts::bind(local_ip, &ports).map_err(|e| ("no RTP port", e.to_string())),
            setup,
        );
    }

    /// A channel for the leg's key presses (RFC 4733, read by its RTP intake); a task sends
    /// them on to the bridge as commands until the leg's media stops.
    pub(super) fn forward_digits(
        &self,
        leg: LegId,
    ) -> tokio::sync::mpsc::Sender<roundtable_media::dtmf::Digit> {
        let (digits_tx, mut digits_rx) = tokio::sync::mpsc::channel(32);
        let handle = self.handle.clone();
        let Some(stop) = self.legs.get(&leg).map(|l| l.cancel.clone()) else {
            return digits_tx;
        };
        self.handle.tasks.spawn(async move {
            loop {
                tokio::select! {
                    digit = digits_rx.recv() => match digit {
                        Some(d) => handle.send(Command::Digit(leg, d)),
                        None => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
        digits_tx
    }

    /// Sets up a leg's media in the blocking pool: `ports` binds (or hands over) its sockets,
    /// `setup` does the rest; [`Command::MediaReady`] follows.
    pub(super) fn spawn_media(
        &self,
        ports: impl FnOnce() -> Result<MediaPorts, (&'static str, String)> + Send + 'static,
        setup: MediaSetup,
    ) {
        let (mixer, metrics, handle) = (
            self.mixer.clone(),
            self.media_metrics.clone(),
            self.handle.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let leg = setup.leg;
            let media = ports().and_then(|ports| setup.run(ports, &mixer, metrics));
            let media = media.map_err(|(what, error): (&str, String)| {
                warn!(leg = %leg, %error, "call refused: {what}");
                Rejection::new(503, "Service Unavailable")
            });
            handle.send(Command::MediaReady(leg, media));
        });
    }

    /// Parses the INVITE's offer and answers it with our codecs.
    fn negotiate(&self, call: &IncomingCall) -> Result<(Offer, Answer), Rejection> {
        if call.body.is_empty() {
            return Err(Rejection::new(488, "Not Acceptable Here"));
        }
        let policy = match call.peer.transport {
            Transport::Tls if self.config.media.srtp_required_over_tls => SrtpPolicy::Required,
            _ => self.config.media.srtp,
        };
        let offer =
            Offer::parse(&call.body, policy).map_err(|_| Rejection::new(400, "Malformed SDP"))?;
        let answer = offer.answer(&self.sdp_codecs()).map_err(|e| match e {
            NegotiationError::NoAudio | NegotiationError::NoCommonCodec => {
                Rejection::new(488, "Not Acceptable Here")
            }
            NegotiationError::SrtpRequired => Rejection::new(488, "SRTP Required"),
        })?;
        Ok((offer, answer))
    }

    /// A leg's media is set up (or failed): the core places it, and the call is answered.
    pub(super) fn media_ready(
        &mut self,
        now: Instant,
        leg: LegId,
        media: Result<Box<LegMedia>, Rejection>,
    ) {
        let Some(entry) = self.legs.get_mut(&leg) else {
            return; // Cancelled meanwhile: dropping the media closes its sockets.
        };
        let (call, call_id, answer) = (
            entry.call,
            entry.call_id.clone(),
            entry.pending_answer.take(),
        );
        let outbound = entry.dial.is_some();
        let media = match media {
            Ok(media) => media,
            Err(_) if outbound => {
                // Answered already: the core's hang-up sends BYE.
                self.core.handle_ended(now, leg, Departure::RtpError);
                return;
            }
            Err(rejection) => {
                self.refuse(call, &call_id, "rtp_ports", rejection);
                self.core.handle_ended(now, leg, Departure::Refused);
                return;
            }
        };
        let sdp = match answer {
            Some(answer) => {
                let advertised = self.advertised(media.rtp);
                let sdp = answer.to_sdp(advertised, leg.0, 1);
                if let Some(entry) = self.legs.get_mut(&leg) {
                    entry.advertised = advertised;
                    entry.answer_sdp = sdp.clone();
                }
                Some(sdp)
            }
            None if outbound => None, // Our offer was the SDP.
            None => return,           // Placed already; a second report is ignored.
        };
        if let Some(entry) = self.legs.get_mut(&leg) {
            entry.add = Some(media.add);
        }
        if let Err(refusal) = self.core.handle_media_ready(now, leg, &self.book) {
            // The core has let the leg go (its `Ended` follows; a dial-out gets BYE from it).
            if !outbound {
                let (reason, rejection) = refusal_answer(refusal);
                self.refuse(call, &call_id, reason, rejection);
            }
            return;
        }
        let Some(entry) = self.legs.get_mut(&leg) else {
            return;
        };
        entry.answered = true;
        self.metrics.active_calls.inc();
        info!(call_id = %entry.call_id, leg = %leg, from = %entry.from, codec = entry.codec.name(), rtp = %media.rtp, outbound, "call answered");
        if let (Some(sip), Some(sdp)) = (&self.sip, sdp) {
            sip.accept(call, sdp);
        }
        // The leg's RTCP and inactivity watch; its end ends the call.
        let handle = self.handle.clone();
        let (supervision, lease) = (media.supervision, media.lease);
        self.handle.tasks.spawn(async move {
            // Dropped when this task ends, after the supervisor's sockets closed.
            let _lease = lease;
            let why = match socket::supervise(supervision).await {
                ReceiveEnd::Cancelled => return,
                ReceiveEnd::Inactive => Departure::RtpInactive,
                _ => Departure::RtpError,
            };
            handle.send(Command::MediaEnded(leg, why));
        });
    }

    /// A re-offer in an answered call: hold, resume, codec or address change.
    pub(super) fn reoffer(&mut self, offer: Reoffer) {
        let answer = self.answer_reoffer(&offer);
        if let Some(sip) = &self.sip {
            sip.answer_reoffer(offer.id, answer);
        }
    }

    fn answer_reoffer(&mut self, reoffer: &Reoffer) -> Result<Vec<u8>, Rejection> {
        let gone = Rejection::new(481, "Call/Transaction Does Not Exist");
        let leg_id = *self.calls.get(&reoffer.call).ok_or(gone)?;
        let codecs = self.sdp_codecs();
        let leg = self.legs.get(&leg_id).ok_or(gone)?;
        if reoffer.body.is_empty() {
            return Ok(leg.answer_sdp.clone());
        }
        // A call keeps its transport: SRTP stays SRTP, with the same keys (no rekeying yet).
        let policy = if leg.srtp.is_some() {
            SrtpPolicy::Required
        } else {
            SrtpPolicy::Off
        };
        let bad = Rejection::new(488, "Not Acceptable Here");
        let offer = Offer::parse(&reoffer.body, policy).map_err(|_| bad)?;
        let mut answer = offer.answer(&codecs).map_err(|_| bad)?;
        if let (Some(ours), Some(theirs)) = (&leg.srtp, &answer.srtp) {
            if ours.offer.suite != theirs.offer.suite
                || ours.offer.key_params != theirs.offer.key_params
            {
                return Err(bad);
            }
            answer.set_local_key(ours.local_key_params.clone());
        }
        let receive = self.receive_config(&offer, &answer);
        let leg = self.legs.get_mut(&leg_id).ok_or(gone)?;
        // Hold (sendonly or inactive) takes the leg out of the conference both ways; recvonly
        // lets it listen without being heard (RFC 3264 8.4).
        let (hears, heard) = match offer.direction {
            Direction::SendRecv => (true, true),
            Direction::RecvOnly => (true, false),
            Direction::SendOnly | Direction::Inactive => (false, false),
        };
        leg.codec = answer.codec;
        leg.sdp_version += 1;
        leg.answer_sdp = answer.to_sdp(leg.advertised, leg_id.0, leg.sdp_version);
        leg.receive.send_replace(receive);
        let sdp = leg.answer_sdp.clone();
        info!(call_id = %leg.call_id, leg = %leg_id, direction = ?offer.direction, codec = answer.codec.name(), "re-offer answered");
        let room = self.core.room_of(leg_id).cloned();
        if let Some(room) = room {
            let command = MixerCommand::UpdateLeg {
                room: room.key(),
                leg: leg_id,
                codec: leg_codec(&answer),
                remote: offer.rtp_addr,
                hears,
                heard,
            };
            self.send_room(&room, command);
        }
        Ok(sdp)
    }
}
