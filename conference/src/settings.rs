//! A room's settings as they are written, in one type for every place that writes them: the
//! `[room]` defaults, a `[[rooms]]` entry, `rooms.json` and the body of `PUT /v1/rooms/{room}`.
//! Each field left out inherits from `[room]`, then from the service; [`RoomSpec::rules`]
//! resolves them into what the core decides with.

use serde::{Deserialize, Serialize};

use crate::Secret;
use crate::conference::RoomRules;
use crate::policy::PolicySettings;

/// Echo cancellation in a room or on a leg: always, never, or where the echo detector finds
/// echo.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AecSetting {
    /// Never.
    Off,
    /// Always.
    On,
    /// Only on legs that echo.
    Auto,
}

/// One room's settings, or the defaults of every room. `None` inherits; an empty PIN means "no
/// PIN" even when the default has one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoomSpec {
    /// The PIN lobby callers enter; a room with one can only be entered through the lobby.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "exposed"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9]{0,16}$"))]
    pub pin: Option<Secret>,
    /// The PIN that joins as moderator.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "exposed"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9]{0,16}$"))]
    pub moderator_pin: Option<Secret>,
    /// Participants before new callers get 486 (at most `media.max_legs_per_room`, which is
    /// also the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    /// Record the room from its first join (default: `recording.auto_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    /// Echo cancellation in the room (default: `audio.aec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aec: Option<AecSetting>,
    /// Tones to the room when someone joins or leaves (default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_leave_tones: Option<bool>,
    /// "You are the only participant" to a caller alone in the room (default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alone_prompt: Option<bool>,
    /// Until a moderator joins, nobody is mixed and everyone hears a hold tone (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_moderator: Option<bool>,
    /// When the last moderator leaves, everyone else is hung up (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_with_moderator: Option<bool>,
}

/// Writes a PIN as itself: only `rooms.json` serializes a [`RoomSpec`] (API answers never
/// carry one).
fn exposed<S: serde::Serializer>(
    secret: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    secret.as_ref().map(Secret::expose).serialize(serializer)
}

/// The service-wide values below `[room]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDefaults {
    /// `media.max_legs_per_room`: the cap on any room's size, and its default.
    pub max_legs_per_room: usize,
    /// `recording.auto_start`: the default of `record`.
    pub auto_record: bool,
}

impl RoomSpec {
    /// Why these settings cannot apply, if they cannot: the field and the reason.
    pub fn problem(&self, max_legs_per_room: usize) -> Option<(&'static str, String)> {
        for (field, pin) in [("pin", &self.pin), ("moderator_pin", &self.moderator_pin)] {
            if let Some(reason) = pin.as_ref().and_then(|p| pin_problem(p.expose())) {
                return Some((field, reason.into()));
            }
        }
        match self.max_participants {
            Some(n) if n == 0 || n as usize > max_legs_per_room => Some((
                "max_participants",
                format!("must be between 1 and media.max_legs_per_room ({max_legs_per_room})"),
            )),
            _ => None,
        }
    }

    /// What applies to a room with these settings over `defaults` (`[room]`) over the
    /// service's.
    pub fn rules(&self, defaults: &RoomSpec, service: ServiceDefaults) -> RoomRules {
        let pin = |own: &Option<Secret>, fallback: &Option<Secret>| {
            own.as_ref()
                .or(fallback.as_ref())
                .filter(|p| !p.expose().is_empty())
                .cloned()
        };
        let flag = |own: Option<bool>, fallback: Option<bool>, service: bool| {
            own.or(fallback).unwrap_or(service)
        };
        let policy = PolicySettings::default();
        RoomRules {
            pin: pin(&self.pin, &defaults.pin),
            moderator_pin: pin(&self.moderator_pin, &defaults.moderator_pin),
            max_participants: self
                .max_participants
                .or(defaults.max_participants)
                .map_or(service.max_legs_per_room, |n| n as usize)
                .min(service.max_legs_per_room),
            record: flag(self.record, defaults.record, service.auto_record),
            aec: self.aec.or(defaults.aec),
            policy: PolicySettings {
                join_leave_tones: flag(
                    self.join_leave_tones,
                    defaults.join_leave_tones,
                    policy.join_leave_tones,
                ),
                alone_prompt: flag(
                    self.alone_prompt,
                    defaults.alone_prompt,
                    policy.alone_prompt,
                ),
                wait_for_moderator: flag(
                    self.wait_for_moderator,
                    defaults.wait_for_moderator,
                    policy.wait_for_moderator,
                ),
                end_with_moderator: flag(
                    self.end_with_moderator,
                    defaults.end_with_moderator,
                    policy.end_with_moderator,
                ),
            },
        }
    }
}

/// Why a PIN is not acceptable, if it is not: 1 to 16 digits, or empty for "none".
pub fn pin_problem(pin: &str) -> Option<&'static str> {
    (pin.len() > 16 || !pin.bytes().all(|b| b.is_ascii_digit()))
        .then_some("a PIN is 1 to 16 digits (empty: no PIN)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: ServiceDefaults = ServiceDefaults {
        max_legs_per_room: 50,
        auto_record: false,
    };

    fn with_pin(pin: &str) -> RoomSpec {
        RoomSpec {
            pin: Some(Secret::new(pin.into())),
            ..RoomSpec::default()
        }
    }

    #[test]
    fn rules_fall_back_to_room_defaults_then_service_settings() {
        let defaults = RoomSpec {
            max_participants: Some(10),
            record: Some(true),
            alone_prompt: Some(false),
            ..with_pin("1111")
        };
        let adhoc = RoomSpec::default().rules(&defaults, SERVICE);
        assert_eq!(adhoc.pin.as_ref().map(Secret::expose), Some("1111"));
        assert_eq!((adhoc.max_participants, adhoc.record), (10, true));
        assert!(!adhoc.policy.alone_prompt && adhoc.policy.join_leave_tones);
        let open = with_pin("").rules(&defaults, SERVICE);
        assert!(!open.has_pin(), "an empty PIN clears the default");
        let big = RoomSpec {
            max_participants: Some(40),
            record: Some(false),
            ..RoomSpec::default()
        }
        .rules(&defaults, SERVICE);
        assert_eq!((big.max_participants, big.record), (40, false));
        let bare = RoomSpec::default().rules(&RoomSpec::default(), SERVICE);
        assert_eq!(
            (bare.max_participants, bare.record, bare.has_pin()),
            (50, false, false)
        );
        assert_eq!(bare.policy, PolicySettings::default());
    }

    #[test]
    fn problems_name_the_field() {
        assert_eq!(with_pin("12a").problem(50).unwrap().0, "pin");
        assert_eq!(with_pin(&"1".repeat(17)).problem(50).unwrap().0, "pin");
        assert!(with_pin("").problem(50).is_none());
        for n in [0, 51] {
            let spec = RoomSpec {
                max_participants: Some(n),
                ..RoomSpec::default()
            };
            assert_eq!(spec.problem(50).unwrap().0, "max_participants");
        }
    }

    #[test]
    fn written_as_json_with_its_pins_and_read_back() {
        let spec = RoomSpec {
            aec: Some(AecSetting::Off),
            max_participants: Some(5),
            ..with_pin("4321")
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"pin":"4321","max_participants":5,"aec":"off"}"#);
        assert_eq!(serde_json::from_str::<RoomSpec>(&json).unwrap(), spec);
        assert!(format!("{spec:?}").contains("redacted") && !format!("{spec:?}").contains("4321"));
        let unknown = serde_json::from_str::<RoomSpec>(r#"{"volume":3}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `volume`"),
            "{unknown}"
        );
    }
}
