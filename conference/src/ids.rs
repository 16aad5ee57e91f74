//! The conference's identities, parsed once where they enter (SIP, API, configuration) and
//! carried as types from there on.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

pub use roundtable_media::frames::LegId;

use crate::ConferenceError;

/// A room's id: `[A-Za-z0-9_.-]{1,64}`, so it is safe in object keys, paths and metric labels.
/// Cheap to clone (the mixer's room key is the same shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    /// Parses a room id.
    pub fn parse(text: &str) -> Result<RoomId, ConferenceError> {
        if Self::valid(text) {
            Ok(RoomId(Arc::from(text)))
        } else {
            Err(ConferenceError::InvalidRoomId)
        }
    }

    /// Whether `text` is a room id.
    pub fn valid(text: &str) -> bool {
        (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    }

    /// The private mixer room of one lobby caller: `~` keeps it apart from every room id.
    pub fn lobby(leg: LegId) -> RoomId {
        RoomId(Arc::from(format!("~lobby-{leg}")))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, as the mixer keys its rooms.
    pub fn key(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A secret string whose `Debug` output is redacted, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: String) -> Secret {
        Secret(secret)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret is read as the string it is (a PIN in `rooms.json` or a request body). It has no
/// `Serialize`: whoever writes one out does it on purpose, with [`Secret::expose`].
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_safe_names() {
        assert_eq!(
            RoomId::parse("sales-1.b_2").unwrap().as_str(),
            "sales-1.b_2"
        );
        for bad in ["", "a/b", "..%", "a b", "é", &"x".repeat(65)] {
            assert_eq!(
                RoomId::parse(bad),
                Err(ConferenceError::InvalidRoomId),
                "{bad:?}"
            );
        }
        assert!(RoomId::parse(&"x".repeat(64)).is_ok());
        assert!(!RoomId::valid(RoomId::lobby(LegId(7)).as_str()));
        assert_eq!(
            format!("{:?}", Secret::new("1234".into())),
            "Secret(<redacted>)"
        );
    }
}
