//! Who hears whom besides "everyone hears everyone" (FreeSWITCH's `relate`): a supervisor
//! coaching an agent is heard by the agent only (`heard_by: [agent]`), while still hearing the
//! room; a leg can be made to hear only some legs (`hears: [a, b]`).
//!
//! The conference core decides relations and the mixer applies them (see
//! `roundtable_mixer::room`); they live here, beside [`LegId`], so that neither depends on the
//! other.

use crate::frames::LegId;

/// A set of legs, or everyone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Audience {
    /// Every leg of the room.
    #[default]
    All,
    /// Only these legs.
    Only(Vec<LegId>),
}

impl Audience {
    /// Whether `leg` is in it.
    pub fn includes(&self, leg: LegId) -> bool {
        match self {
            Audience::All => true,
            Audience::Only(legs) => legs.contains(&leg),
        }
    }
}

/// A leg's relations to the others.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relations {
    /// Whom it hears (its controls' `deaf` still silences everything).
    pub hears: Audience,
    /// Who hears it (`whisper_to: X` is `heard_by: [X]`).
    pub heard_by: Audience,
}

impl Relations {
    /// Everyone hears it and it hears everyone: the room's usual mix.
    pub fn is_default(&self) -> bool {
        self.hears == Audience::All && self.heard_by == Audience::All
    }

    /// Heard by everyone: part of the room's shared sum when mixed.
    pub fn public(&self) -> bool {
        self.heard_by == Audience::All
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        let coach = Relations {
            hears: Audience::All,
            heard_by: Audience::Only(vec![LegId(2)]),
        };
        assert!(!coach.is_default() && !coach.public());
        assert!(coach.heard_by.includes(LegId(2)));
        assert!(!coach.heard_by.includes(LegId(3)));
        assert!(Relations::default().is_default());
        assert!(Audience::All.includes(LegId(9)));
    }
}
