//! What a room does as people join and leave (pure): join and leave tones, the "you are the only
//! participant" prompt, waiting for the moderator (the room on hold until one joins), and ending
//! the conference when the last moderator leaves. The bridge feeds it joins and leaves and
//! carries out the actions it returns.

use std::collections::BTreeMap;

use crate::LegId;

/// A room's switches (`[room]`, `[[rooms]]`, `PUT /v1/rooms/{room}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySettings {
    /// A rising tone when someone joins, a falling one when someone leaves.
    pub join_leave_tones: bool,
    /// A prompt to a caller who is alone in the room.
    pub alone_prompt: bool,
    /// Nobody is mixed until a moderator is in the room; everyone hears a hold tone.
    pub wait_for_moderator: bool,
    /// When the last moderator leaves, everyone else is hung up.
    pub end_with_moderator: bool,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            join_leave_tones: true,
            alone_prompt: true,
            wait_for_moderator: false,
            end_with_moderator: false,
        }
    }
}

/// What the bridge should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    /// Play the join tone to the room.
    JoinTone,
    /// Play the leave tone to the room.
    LeaveTone,
    /// Put the room on hold (true) or take it off (false).
    Hold(bool),
    /// Play the "only participant" prompt to this leg.
    Alone(LegId),
    /// Stop the "only participant" prompt to this leg, if it still plays: someone joined it.
    NotAlone(LegId),
    /// Hang up everyone left: the last moderator left.
    End,
}

/// One room's membership as the policy sees it.
#[derive(Debug, Clone, Default)]
pub struct RoomPolicy {
    settings: PolicySettings,
    /// Each leg and whether it is a moderator.
    legs: BTreeMap<LegId, bool>,
    on_hold: bool,
}

impl RoomPolicy {
    /// An empty room with these settings.
    pub fn new(settings: PolicySettings) -> RoomPolicy {
        RoomPolicy {
            settings,
            legs: BTreeMap::new(),
            on_hold: false,
        }
    }

    /// Whether the room waits for its moderator.
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    fn moderators(&self) -> usize {
        self.legs.values().filter(|m| **m).count()
    }

    /// A leg joined.
    pub fn joined(&mut self, leg: LegId, moderator: bool) -> Vec<PolicyAction> {
        let mut actions = Vec::new();
        self.legs.insert(leg, moderator);
        if self.settings.alone_prompt
            && self.legs.len() == 2
            && let Some(&first) = self.legs.keys().find(|&&other| other != leg)
        {
            actions.push(PolicyAction::NotAlone(first));
        }
        if self.settings.join_leave_tones && self.legs.len() > 1 {
            actions.push(PolicyAction::JoinTone);
        }
        if self.settings.wait_for_moderator && self.moderators() == 0 && !self.on_hold {
            self.on_hold = true;
            actions.push(PolicyAction::Hold(true));
        }
        if moderator && self.on_hold {
            self.on_hold = false;
            actions.push(PolicyAction::Hold(false));
        }
        if self.settings.alone_prompt && self.legs.len() == 1 && !self.on_hold {
            actions.push(PolicyAction::Alone(leg));
        }
        actions
    }

    /// A leg left.
    pub fn left(&mut self, leg: LegId) -> Vec<PolicyAction> {
        let mut actions = Vec::new();
        let Some(was_moderator) = self.legs.remove(&leg) else {
            return actions;
        };
        if self.legs.is_empty() {
            return actions;
        }
        if self.settings.join_leave_tones {
            actions.push(PolicyAction::LeaveTone);
        }
        if was_moderator && self.moderators() == 0 {
            if self.settings.end_with_moderator {
                actions.push(PolicyAction::End);
                return actions;
            }
            if self.settings.wait_for_moderator && !self.on_hold {
                self.on_hold = true;
                actions.push(PolicyAction::Hold(true));
            }
        }
        if self.settings.alone_prompt
            && self.legs.len() == 1
            && !self.on_hold
            && let Some(&remaining) = self.legs.keys().next()
        {
            actions.push(PolicyAction::Alone(remaining));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PolicyAction::*;

    #[test]
    fn tones_and_the_alone_prompt() {
        let mut room = RoomPolicy::new(PolicySettings::default());
        assert_eq!(room.joined(LegId(1), false), [Alone(LegId(1))]);
        assert_eq!(room.joined(LegId(2), false), [NotAlone(LegId(1)), JoinTone]);
        assert_eq!(room.joined(LegId(3), false), [JoinTone]);
        assert_eq!(room.left(LegId(3)), [LeaveTone]);
        assert_eq!(room.left(LegId(1)), [LeaveTone, Alone(LegId(2))]);
        assert_eq!(room.joined(LegId(4), false), [NotAlone(LegId(2)), JoinTone]);
        let mut quiet = RoomPolicy::new(PolicySettings {
            join_leave_tones: false,
            alone_prompt: false,
            ..Default::default()
        });
        assert_eq!(quiet.joined(LegId(1), false), []);
        assert_eq!(quiet.joined(LegId(2), false), []);
    }

    #[test]
    fn waiting_for_the_moderator() {
        let settings = PolicySettings {
            wait_for_moderator: true,
            ..Default::default()
        };
        let mut room = RoomPolicy::new(settings);
        assert_eq!(room.joined(LegId(1), false), [Hold(true)]);
        assert_eq!(room.joined(LegId(2), false), [NotAlone(LegId(1)), JoinTone]);
        assert!(room.on_hold());
        assert_eq!(room.joined(LegId(3), true), [JoinTone, Hold(false)]);
        assert!(!room.on_hold());
        assert_eq!(room.left(LegId(3)), [LeaveTone, Hold(true)]);
        // A moderator who dials in first never puts the room on hold.
        let mut room = RoomPolicy::new(settings);
        assert_eq!(room.joined(LegId(9), true), [Alone(LegId(9))]);
        assert_eq!(
            room.joined(LegId(10), false),
            [NotAlone(LegId(9)), JoinTone]
        );
    }

    #[test]
    fn the_conference_ends_with_its_last_moderator() {
        let mut room = RoomPolicy::new(PolicySettings {
            end_with_moderator: true,
            ..Default::default()
        });
        room.joined(LegId(1), true);
        room.joined(LegId(2), true);
        room.joined(LegId(3), false);
        assert_eq!(
            room.left(LegId(1)),
            [LeaveTone],
            "another moderator remains"
        );
        assert_eq!(room.left(LegId(2)), [LeaveTone, End]);
    }
}
