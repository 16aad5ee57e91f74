//! Defined rooms: `[[rooms]]` from the configuration plus rooms made with `PUT /v1/rooms/{room}`,
//! which are kept in `<storage.path>/rooms.json` and survive restarts. Defined rooms exist (and
//! are listed) while empty; an API definition overrides a configured one of the same id. Every
//! room, defined or made by dialling it, takes what its definition leaves out from `[room]`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{RoomConfig, Secret};

/// Why the room book could not be read or written.
#[derive(Debug, Error)]
pub enum RoomBookError {
    /// The file exists but cannot be read or parsed.
    #[error("{path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the file failed.
    #[error("{path}: {source}")]
    Save {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredRoom {
    id: String,
    pin: Option<String>,
    moderator_pin: Option<String>,
    #[serde(default)]
    max_participants: Option<usize>,
    #[serde(default)]
    record: Option<bool>,
    #[serde(default)]
    aec: Option<String>,
    #[serde(default)]
    join_leave_tones: Option<bool>,
    #[serde(default)]
    alone_prompt: Option<bool>,
    #[serde(default)]
    wait_for_moderator: Option<bool>,
    #[serde(default)]
    end_with_moderator: Option<bool>,
}

impl StoredRoom {
    fn into_config(self) -> (String, RoomConfig) {
        let config = RoomConfig {
            pin: self.pin.map(Secret::new),
            moderator_pin: self.moderator_pin.map(Secret::new),
            max_participants: self.max_participants,
            record: self.record,
            aec: self
                .aec
                .as_deref()
                .and_then(roundtable_mixer::AecMode::parse),
            join_leave_tones: self.join_leave_tones,
            alone_prompt: self.alone_prompt,
            wait_for_moderator: self.wait_for_moderator,
            end_with_moderator: self.end_with_moderator,
        };
        (self.id, config)
    }
}

/// What applies to one room: its definition over the `[room]` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    /// The PIN, if the room has one.
    pub pin: Option<Secret>,
    /// The moderator PIN, if the room has one.
    pub moderator_pin: Option<Secret>,
    /// Participants before new callers get 486.
    pub max_participants: usize,
    /// Record from the first join.
    pub record: bool,
    /// Echo cancellation in the room (`None`: `audio.aec`).
    pub aec: Option<roundtable_mixer::AecMode>,
    /// Who joins and leaves, what the room hears (see `roundtable_conference::policy`).
    pub policy: roundtable_conference::policy::PolicySettings,
}

impl RoomSettings {
    /// Whether the room is entered through the PIN lobby only.
    pub fn has_pin(&self) -> bool {
        self.pin.is_some() || self.moderator_pin.is_some()
    }
}

/// The fallbacks below a room's definition.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `[room]`.
    pub room: RoomConfig,
    /// `media.max_legs_per_room`: the cap on any room's size.
    pub max_legs_per_room: usize,
    /// `recording.auto_start`: the default of `record`.
    pub auto_record: bool,
}

impl roundtable_conference::conference::RoomDirectory for RoomBook {
    fn defined(&self, room: &roundtable_conference::RoomId) -> bool {
        self.get(room.as_str()).is_some()
    }

    fn rules(
        &self,
        room: &roundtable_conference::RoomId,
    ) -> roundtable_conference::conference::RoomRules {
        let settings = self.settings(room.as_str());
        roundtable_conference::conference::RoomRules {
            pin: settings.pin,
            moderator_pin: settings.moderator_pin,
            max_participants: settings.max_participants,
            record: settings.record,
            policy: settings.policy,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    rooms: Vec<StoredRoom>,
}

/// Every defined room.
#[derive(Debug)]
pub struct RoomBook {
    configured: HashMap<String, RoomConfig>,
    api: HashMap<String, RoomConfig>,
    defaults: Defaults,
    path: PathBuf,
}

impl RoomBook {
    /// The configured rooms plus those saved in `path` (absent file: none).
    pub fn load(
        configured: HashMap<String, RoomConfig>,
        defaults: Defaults,
        path: PathBuf,
    ) -> Result<RoomBook, RoomBookError> {
        let api = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored =
                    serde_json::from_slice(&bytes).map_err(|e| RoomBookError::Load {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                stored
                    .rooms
                    .into_iter()
                    .map(StoredRoom::into_config)
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                return Err(RoomBookError::Load {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(RoomBook {
            configured,
            api,
            defaults,
            path,
        })
    }

    /// A room's definition.
    pub fn get(&self, id: &str) -> Option<&RoomConfig> {
        self.api.get(id).or_else(|| self.configured.get(id))
    }

    /// What applies to room `id` (defined or not): its definition, then `[room]`, then the
    /// service-wide settings. An empty PIN in the definition clears a default PIN.
    pub fn settings(&self, id: &str) -> RoomSettings {
        let own = self.get(id).cloned().unwrap_or_default();
        let fallback = &self.defaults.room;
        let pin = |own: Option<Secret>, fallback: &Option<Secret>| {
            own.or_else(|| fallback.clone())
                .filter(|p| !p.expose().is_empty())
        };
        RoomSettings {
            pin: pin(own.pin, &fallback.pin),
            moderator_pin: pin(own.moderator_pin, &fallback.moderator_pin),
            max_participants: own
                .max_participants
                .or(fallback.max_participants)
                .unwrap_or(self.defaults.max_legs_per_room)
                .min(self.defaults.max_legs_per_room),
            record: own
                .record
                .or(fallback.record)
                .unwrap_or(self.defaults.auto_record),
            aec: own.aec.or(fallback.aec),
            policy: roundtable_conference::policy::PolicySettings {
                join_leave_tones: own
                    .join_leave_tones
                    .or(fallback.join_leave_tones)
                    .unwrap_or(true),
                alone_prompt: own.alone_prompt.or(fallback.alone_prompt).unwrap_or(true),
                wait_for_moderator: own
                    .wait_for_moderator
                    .or(fallback.wait_for_moderator)
                    .unwrap_or(false),
                end_with_moderator: own
                    .end_with_moderator
                    .or(fallback.end_with_moderator)
                    .unwrap_or(false),
            },
        }
    }

    /// Every defined room id.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.configured.keys().chain(
            self.api
                .keys()
                .filter(|k| !self.configured.contains_key(*k)),
        )
    }

    /// Whether the room comes from the configuration file only.
    pub fn is_configured_only(&self, id: &str) -> bool {
        self.configured.contains_key(id) && !self.api.contains_key(id)
    }

    /// The rooms file as it would be after `change` (nothing changes yet): the bridge writes it
    /// in the blocking pool, then [`RoomBook::apply`]s the change, so memory and disk agree.
    pub fn file_after(&self, change: &BookChange) -> Result<BookFile, RoomBookError> {
        let mut api = self.api.clone();
        change.clone().apply_to(&mut api);
        let mut rooms: Vec<StoredRoom> = api
            .into_iter()
            .map(|(id, r)| StoredRoom {
                id,
                pin: r.pin.as_ref().map(|p| p.expose().to_string()),
                moderator_pin: r.moderator_pin.as_ref().map(|p| p.expose().to_string()),
                max_participants: r.max_participants,
                record: r.record,
                aec: r.aec.map(|m| m.name().to_string()),
                join_leave_tones: r.join_leave_tones,
                alone_prompt: r.alone_prompt,
                wait_for_moderator: r.wait_for_moderator,
                end_with_moderator: r.end_with_moderator,
            })
            .collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        let bytes =
            serde_json::to_vec_pretty(&Stored { rooms }).map_err(|e| RoomBookError::Save {
                path: self.path.clone(),
                source: e.into(),
            })?;
        Ok(BookFile {
            path: self.path.clone(),
            bytes,
        })
    }

    /// Makes a change whose file is written.
    pub fn apply(&mut self, change: BookChange) {
        change.apply_to(&mut self.api);
    }

    /// Whether `id` was defined through the API.
    pub fn is_api_defined(&self, id: &str) -> bool {
        self.api.contains_key(id)
    }

    /// Writes and applies a change in one go (tests).
    #[cfg(test)]
    fn change(&mut self, change: BookChange) -> Result<(), RoomBookError> {
        self.file_after(&change)?.write()?;
        self.apply(change);
        Ok(())
    }
}

/// A change to the API-defined rooms.
#[derive(Debug, Clone)]
pub enum BookChange {
    /// Define (or redefine) a room.
    Put(String, RoomConfig),
    /// Remove a room's API definition.
    Delete(String),
}

impl BookChange {
    fn apply_to(self, rooms: &mut HashMap<String, RoomConfig>) {
        match self {
            BookChange::Put(id, room) => {
                rooms.insert(id, room);
            }
            BookChange::Delete(id) => {
                rooms.remove(&id);
            }
        }
    }
}

/// The rooms file's new content and where it goes.
#[derive(Debug)]
pub struct BookFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl BookFile {
    /// Writes the file atomically (temporary file, fsync, rename), readable by owner only since
    /// it holds PINs. Blocking: run it off the bridge task.
    pub fn write(&self) -> Result<(), RoomBookError> {
        let error = |source| RoomBookError::Save {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(error)?;
        file.write_all(&self.bytes)
            .and_then(|()| file.sync_all())
            .map_err(error)?;
        std::fs::rename(&tmp, &self.path).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            room: RoomConfig::default(),
            max_legs_per_room: 200,
            auto_record: false,
        }
    }

    fn with_pin(pin: &str) -> RoomConfig {
        RoomConfig {
            pin: Some(Secret::new(pin.into())),
            ..RoomConfig::default()
        }
    }

    #[test]
    fn api_rooms_survive_a_reload_and_override_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.json");
        let configured: HashMap<_, _> = [("1".to_string(), with_pin("11"))].into();
        let mut book = RoomBook::load(configured.clone(), defaults(), path.clone()).unwrap();
        book.change(BookChange::Put(
            "2".into(),
            RoomConfig {
                max_participants: Some(5),
                record: Some(true),
                ..with_pin("22")
            },
        ))
        .unwrap();
        book.change(BookChange::Put("1".into(), RoomConfig::default()))
            .unwrap();
        let book = RoomBook::load(configured.clone(), defaults(), path.clone()).unwrap();
        assert_eq!(
            book.settings("2").pin.as_ref().map(Secret::expose),
            Some("22")
        );
        assert_eq!(
            (
                book.settings("2").max_participants,
                book.settings("2").record
            ),
            (5, true)
        );
        assert!(!book.settings("1").has_pin(), "the API definition wins");
        let mut ids: Vec<_> = book.ids().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["1", "2"]);
        let mut book = book;
        assert!(book.is_api_defined("2"));
        book.change(BookChange::Delete("2".into())).unwrap();
        assert!(!book.is_api_defined("2"));
        assert!(
            RoomBook::load(configured, defaults(), path.clone())
                .unwrap()
                .get("2")
                .is_none()
        );
        std::fs::write(&path, b"{not json").unwrap();
        assert!(RoomBook::load(HashMap::new(), defaults(), path).is_err());
    }

    #[test]
    fn settings_fall_back_to_room_defaults_then_service_settings() {
        let dir = tempfile::tempdir().unwrap();
        let room = RoomConfig {
            max_participants: Some(10),
            record: Some(true),
            ..with_pin("1111")
        };
        let defaults = Defaults {
            room,
            max_legs_per_room: 50,
            auto_record: false,
        };
        let configured: HashMap<_, _> = [
            ("open".to_string(), with_pin("")),
            (
                "big".to_string(),
                RoomConfig {
                    max_participants: Some(40),
                    record: Some(false),
                    ..RoomConfig::default()
                },
            ),
        ]
        .into();
        let book = RoomBook::load(configured, defaults, dir.path().join("rooms.json")).unwrap();
        let adhoc = book.settings("anything");
        assert_eq!(
            (
                adhoc.pin.as_ref().map(Secret::expose),
                adhoc.max_participants,
                adhoc.record
            ),
            (Some("1111"), 10, true)
        );
        assert!(
            !book.settings("open").has_pin(),
            "an empty PIN clears the default"
        );
        assert_eq!(book.settings("open").max_participants, 10);
        assert_eq!(
            (
                book.settings("big").max_participants,
                book.settings("big").record
            ),
            (40, false)
        );
        let book = RoomBook::load(
            HashMap::new(),
            super::tests::defaults(),
            dir.path().join("x.json"),
        )
        .unwrap();
        assert_eq!(
            (
                book.settings("x").max_participants,
                book.settings("x").record,
                book.settings("x").has_pin()
            ),
            (200, false, false)
        );
    }
}
