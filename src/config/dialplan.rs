//! `[[dialplan]]`: what a call's Request-URI user part leads to (a room or the PIN lobby).

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(rename = "match")]
    pattern: String,
    action: String,
    #[serde(default)]
    moderator: bool,
}

/// What a dial-plan rule does with a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialAction {
    /// Answer and ask for the conference ID and PIN by DTMF.
    Lobby,
    /// Join the room named by the first capture group (or the whole user part).
    Room,
}

/// One `[[dialplan]]` rule: a regex on the Request-URI user part.
#[derive(Debug, Clone)]
pub struct DialRule {
    /// The compiled pattern.
    pub pattern: regex::Regex,
    /// What to do on a match.
    pub action: DialAction,
    /// Callers routed to a room by this rule join as moderators.
    pub moderator: bool,
}

/// Checks and compiles the rules, in order.
pub(super) fn validate(raw: &[RawRule]) -> Result<Vec<DialRule>, ConfigError> {
    raw.iter()
        .map(|rule| {
            let pattern = regex::Regex::new(&rule.pattern).map_err(|e| {
                ConfigError::new(
                    "dialplan.match",
                    format!("{:?} is not a valid regex: {e}", rule.pattern),
                )
            })?;
            let action = match rule.action.as_str() {
                "lobby" => DialAction::Lobby,
                "room" => DialAction::Room,
                other => {
                    return Err(ConfigError::new(
                        "dialplan.action",
                        format!("{other:?} is not lobby or room"),
                    ));
                }
            };
            if rule.moderator && action != DialAction::Room {
                return Err(ConfigError::new(
                    "dialplan.moderator",
                    "only a room rule makes moderators (the lobby uses moderator_pin)",
                ));
            }
            Ok(DialRule {
                pattern,
                action,
                moderator: rule.moderator,
            })
        })
        .collect()
}
