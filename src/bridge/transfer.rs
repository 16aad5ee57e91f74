//! Moving a live participant to another room: the API's move and, from the caller's side, an
//! in-dialog REFER naming one of our rooms. The core decides; the mixer detaches the leg's
//! media and adds it to the other room (its call stays up). A REFER to anyone else is declined
//! (603) unless `sip.allow_refer_out`, which dials the target into the caller's room and
//! reports its progress to the caller in NOTIFYs.

use std::net::IpAddr;
use std::time::Instant;

use roundtable_api::{ControlError, DialRequest, Participant};
use roundtable_conference::conference::{DialState, Refusal};
use roundtable_conference::{ConferenceError, LegId, RoomId};
use roundtable_sip::Rejection;
use roundtable_sip::endpoint::Refer;
use roundtable_sip::locate;
use roundtable_sip::message::SipUri;
use tracing::info;

use super::api::core_error;
use roundtable_conference::conference::Destination;

use super::Bridge;

impl Bridge {
    /// `POST /v1/rooms/{room}/participants/{leg}/move` with `{"room": to}`: the participant as
    /// it is in `to`.
    pub(super) fn move_participant(
        &mut self,
        room: &RoomId,
        id: LegId,
        to: &RoomId,
    ) -> Result<Participant, ControlError> {
        self.core
            .move_leg(room, id, to, &self.book)
            .map_err(core_error)?;
        self.carry_out();
        let moderator = self
            .core
            .room(to)
            .and_then(|view| {
                view.members
                    .iter()
                    .find(|m| m.leg == id)
                    .map(|m| m.moderator)
            })
            .ok_or(ControlError::LegNotFound)?;
        let entry = self.legs.get(&id).ok_or(ControlError::LegNotFound)?;
        Ok(self.participant(id, moderator, entry, self.room_aec(to)))
    }
}

/// What a REFER's Refer-To names.
enum ReferTarget {
    /// One of our rooms (the host is ours; the dial plan maps the user part to a room).
    Room(RoomId),
    /// Somebody else.
    Outside,
}

impl Bridge {
    /// Whether `host:port` is one of ours: an address we listen on (its IP, or for a listener
    /// on all addresses `media.public_ip` or the address our SDP gave this leg), at its port.
    fn is_our_address(&self, host: &str, port: u16, leg: LegId) -> bool {
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let ours_anyway = self.config.media.public_ip == Some(ip)
            || self.legs.get(&leg).is_some_and(|e| e.advertised.ip() == ip);
        self.config.sip.listen.iter().any(|l| {
            l.addr.port() == port
                && (l.addr.ip() == ip || (l.addr.ip().is_unspecified() && ours_anyway))
        })
    }

    /// What `target` names for a REFER in `leg`'s call; `Err` answers the REFER.
    fn refer_target(&self, target: &str, leg: LegId) -> Result<ReferTarget, Rejection> {
        let (Ok(uri), Some((host, port))) =
            (SipUri::parse(target), locate::uri_host_and_port(target))
        else {
            return Ok(ReferTarget::Outside); // tel: and the like
        };
        let port = port.unwrap_or(if uri.scheme == "sips" { 5061 } else { 5060 });
        if !self.is_our_address(&host, port, leg) {
            return Ok(ReferTarget::Outside);
        }
        match self.route(uri.user.as_deref())? {
            Destination::Room { room, .. } => Ok(ReferTarget::Room(room)),
            // Into the PIN lobby a caller dials itself.
            Destination::Lobby => Err(Rejection::new(603, "Declined")),
        }
    }

    /// An in-dialog REFER: into one of our rooms it moves the caller; to anyone else it is
    /// declined, or dialled into the caller's room with `sip.allow_refer_out`.
    pub(super) fn refer(&mut self, now: Instant, refer: Refer) {
        let Some(sip) = self.sip.clone() else {
            return;
        };
        let leg = self.calls.get(&refer.call).copied();
        let room = leg.and_then(|leg| self.core.room_of(leg).cloned());
        let (Some(leg), Some(room)) = (leg, room) else {
            // Not (or no longer, or not yet) in a room: nothing to transfer.
            sip.answer_refer(refer.id, Err(Rejection::new(403, "Forbidden")));
            return;
        };
        let target = match self.refer_target(&refer.target, leg) {
            Ok(target) => target,
            Err(rejection) => return sip.answer_refer(refer.id, Err(rejection)),
        };
        match target {
            ReferTarget::Room(to) => {
                info!(leg = %leg, room = %room, to = %to, "REFER: moving the caller");
                sip.answer_refer(refer.id, Ok(()));
                let (code, reason) = match self.core.move_leg(&room, leg, &to, &self.book) {
                    Ok(()) => (200, "OK"),
                    Err(ConferenceError::Refused(Refusal::RoomFull)) => (486, "Busy Here"),
                    Err(ConferenceError::Refused(_)) => (403, "Forbidden"),
                    Err(_) => (404, "Not Found"),
                };
                self.carry_out();
                sip.notify_refer(refer.call, code, reason.to_string(), true);
            }
            ReferTarget::Outside if !self.config.sip.allow_refer_out => {
                info!(leg = %leg, target = %refer.target, "REFER out of the bridge declined");
                sip.answer_refer(refer.id, Err(Rejection::new(603, "Declined")));
            }
            ReferTarget::Outside => {
                let request = DialRequest {
                    to: refer.target.clone(),
                    trunk: None,
                    from: None,
                    display_name: None,
                    timeout_s: 30,
                    moderator: false,
                    muted: false,
                };
                if request.check().is_err() {
                    return sip.answer_refer(refer.id, Err(Rejection::new(603, "Declined")));
                }
                sip.answer_refer(refer.id, Ok(()));
                sip.notify_refer(refer.call, 100, "Trying".into(), false);
                match self.dial(now, &room, request) {
                    Ok(participant) => {
                        info!(leg = %leg, target = %refer.target, dialled = %participant.id, "REFER: dialling the target into the room");
                        self.referrals.insert(participant.id, refer.call);
                    }
                    Err(error) => {
                        sip.notify_refer(refer.call, 503, error.to_string(), true);
                    }
                }
                self.carry_out();
            }
        }
    }

    /// A call dialled for a REFER changed state: the caller that asked hears of it.
    pub(super) fn referral_progress(&mut self, leg: LegId, state: &DialState) {
        let Some(&call) = self.referrals.get(&leg) else {
            return;
        };
        let Some(sip) = &self.sip else {
            return;
        };
        let (code, reason, done) = match state {
            DialState::Dialing => return,
            DialState::Ringing => (180, "Ringing".to_string(), false),
            DialState::Answered => (200, "OK".to_string(), true),
            DialState::Failed { code, reason } => (*code, reason.clone(), true),
            DialState::Ended => (487, "Request Terminated".to_string(), true),
        };
        if done {
            self.referrals.remove(&leg);
        }
        sip.notify_refer(call, code, reason, done);
    }
}
