//! Defined rooms: `[[rooms]]` from the configuration plus rooms made with `PUT /v1/rooms/{room}`,
//! which are kept in `<storage.path>/rooms.json` and survive restarts. Defined rooms exist (and
//! are listed) while empty; an API definition overrides a configured one of the same id. Every
//! room, defined or made by dialling it, takes what its definition leaves out from `[room]`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use roundtable_conference::RoomId;
use roundtable_conference::conference::RoomRules;
use roundtable_conference::settings::{RoomSpec, ServiceDefaults};

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

/// A defined room: a `[[rooms]]` entry or one of `rooms.json`: its id beside its settings.
#[derive(Debug, Clone, Serialize)]
pub struct RoomEntry {
    /// The room.
    #[serde(serialize_with = "room_id_text")]
    pub id: RoomId,
    /// Its settings.
    #[serde(flatten)]
    pub spec: RoomSpec,
}

fn room_id_text<S: serde::Serializer>(id: &RoomId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(id.as_str())
}

/// Read by hand, since serde's `flatten` would let unknown keys pass: the `id`, then the rest
/// as a [`RoomSpec`], which refuses unknown keys. A field that does not read is named in the
/// error (`max_participants: invalid type ...`).
impl<'de> Deserialize<'de> for RoomEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let id = match fields.remove("id") {
            Some(serde_json::Value::String(id)) => RoomId::parse(&id).map_err(|_| {
                D::Error::custom(format!("id: {id:?} is not [A-Za-z0-9_.-]{{1,64}}"))
            })?,
            Some(other) => return Err(D::Error::custom(format!("id: {other} is not a string"))),
            None => return Err(D::Error::custom("id: missing (every room has one)")),
        };
        let spec =
            RoomSpec::deserialize(serde_json::Value::Object(fields.clone())).map_err(|e| {
                let field = fields.iter().find(|(key, value)| {
                    let one = serde_json::Map::from_iter([((*key).clone(), (*value).clone())]);
                    RoomSpec::deserialize(serde_json::Value::Object(one)).is_err()
                });
                match field {
                    Some((key, _)) => D::Error::custom(format!("room {id}: {key}: {e}")),
                    None => D::Error::custom(format!("room {id}: {e}")),
                }
            })?;
        Ok(RoomEntry { id, spec })
    }
}

impl roundtable_conference::conference::RoomDirectory for RoomBook {
    fn defined(&self, room: &RoomId) -> bool {
        self.get(room.as_str()).is_some()
    }

    fn rules(&self, room: &RoomId) -> RoomRules {
        self.settings(room.as_str())
    }
}

/// `rooms.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    rooms: Vec<RoomEntry>,
}

/// Every defined room.
#[derive(Debug)]
pub struct RoomBook {
    configured: HashMap<RoomId, RoomSpec>,
    api: HashMap<RoomId, RoomSpec>,
    /// `[room]`.
    defaults: RoomSpec,
    service: ServiceDefaults,
    path: PathBuf,
}

impl RoomBook {
    /// The configured rooms plus those saved in `path` (absent file: none). Saved rooms are
    /// checked as the API checked them, so a hand-edited file cannot pass what `PUT` refuses.
    pub fn load(
        configured: HashMap<RoomId, RoomSpec>,
        defaults: RoomSpec,
        service: ServiceDefaults,
        path: PathBuf,
    ) -> Result<RoomBook, RoomBookError> {
        let load_error = |reason: String| RoomBookError::Load {
            path: path.clone(),
            reason,
        };
        let api = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored =
                    serde_json::from_slice(&bytes).map_err(|e| load_error(e.to_string()))?;
                let mut api = HashMap::new();
                for entry in stored.rooms {
                    if let Some((field, reason)) = entry.spec.problem(service.max_legs_per_room) {
                        return Err(load_error(format!("room {}: {field}: {reason}", entry.id)));
                    }
                    api.insert(entry.id, entry.spec);
                }
                api
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(load_error(e.to_string())),
        };
        Ok(RoomBook {
            configured,
            api,
            defaults,
            service,
            path,
        })
    }

    /// A room's definition.
    pub fn get(&self, id: &str) -> Option<&RoomSpec> {
        self.api.get(id).or_else(|| self.configured.get(id))
    }

    /// What applies to room `id` (defined or not): its definition, then `[room]`, then the
    /// service-wide settings. An empty PIN in the definition clears a default PIN.
    pub fn settings(&self, id: &str) -> RoomRules {
        self.get(id)
            .unwrap_or(&RoomSpec::default())
            .rules(&self.defaults, self.service)
    }

    /// Every defined room id.
    pub fn ids(&self) -> impl Iterator<Item = &RoomId> {
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
        let mut rooms: Vec<RoomEntry> = api
            .into_iter()
            .map(|(id, spec)| RoomEntry { id, spec })
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
    Put(RoomId, RoomSpec),
    /// Remove a room's API definition.
    Delete(RoomId),
}

impl BookChange {
    fn apply_to(self, rooms: &mut HashMap<RoomId, RoomSpec>) {
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
    use roundtable_conference::Secret;

    const SERVICE: ServiceDefaults = ServiceDefaults {
        max_legs_per_room: 200,
        auto_record: false,
    };

    fn id(text: &str) -> RoomId {
        RoomId::parse(text).unwrap()
    }

    fn with_pin(pin: &str) -> RoomSpec {
        RoomSpec {
            pin: Some(Secret::new(pin.into())),
            ..RoomSpec::default()
        }
    }

    fn load(configured: &HashMap<RoomId, RoomSpec>, path: &std::path::Path) -> RoomBook {
        RoomBook::load(
            configured.clone(),
            RoomSpec::default(),
            SERVICE,
            path.into(),
        )
        .unwrap()
    }

    #[test]
    fn api_rooms_survive_a_reload_and_override_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.json");
        let configured: HashMap<_, _> = [(id("1"), with_pin("11"))].into();
        let mut book = load(&configured, &path);
        book.change(BookChange::Put(
            id("2"),
            RoomSpec {
                max_participants: Some(5),
                record: Some(true),
                ..with_pin("22")
            },
        ))
        .unwrap();
        book.change(BookChange::Put(id("1"), RoomSpec::default()))
            .unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(
            stored.contains(r#""id": "2""#) && stored.contains(r#""pin": "22""#),
            "{stored}"
        );
        let mut book = load(&configured, &path);
        let two = book.settings("2");
        assert_eq!(two.pin.as_ref().map(Secret::expose), Some("22"));
        assert_eq!((two.max_participants, two.record), (5, true));
        assert!(!book.settings("1").has_pin(), "the API definition wins");
        let mut ids: Vec<_> = book.ids().map(RoomId::as_str).collect();
        ids.sort();
        assert_eq!(ids, ["1", "2"]);
        assert!(book.is_api_defined("2"));
        book.change(BookChange::Delete(id("2"))).unwrap();
        assert!(!book.is_api_defined("2"));
        assert!(load(&configured, &path).get("2").is_none());
    }

    #[test]
    fn a_bad_rooms_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.json");
        let refused = |text: &str| {
            std::fs::write(&path, text).unwrap();
            RoomBook::load(HashMap::new(), RoomSpec::default(), SERVICE, path.clone())
                .unwrap_err()
                .to_string()
        };
        assert!(refused("{not json").contains("rooms.json"));
        let unknown = refused(r#"{"rooms": [{"id": "a", "volume": 3}]}"#);
        assert!(unknown.contains("unknown field `volume`"), "{unknown}");
        let bad_id = refused(r#"{"rooms": [{"id": "a/b"}]}"#);
        assert!(bad_id.contains("is not [A-Za-z0-9_.-]"), "{bad_id}");
        let too_big = refused(r#"{"rooms": [{"id": "a", "max_participants": 500}]}"#);
        assert!(too_big.contains("room a: max_participants"), "{too_big}");
        let bad_type = refused(r#"{"rooms": [{"id": "a", "record": "yes"}]}"#);
        assert!(bad_type.contains("room a: record:"), "{bad_type}");
    }

    #[test]
    fn settings_fall_back_to_room_defaults_then_service_settings() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = RoomSpec {
            max_participants: Some(10),
            record: Some(true),
            ..with_pin("1111")
        };
        let configured: HashMap<_, _> = [(id("open"), with_pin(""))].into();
        let book =
            RoomBook::load(configured, defaults, SERVICE, dir.path().join("rooms.json")).unwrap();
        let adhoc = book.settings("anything");
        assert_eq!(adhoc.pin.as_ref().map(Secret::expose), Some("1111"));
        assert_eq!((adhoc.max_participants, adhoc.record), (10, true));
        assert!(
            !book.settings("open").has_pin(),
            "an empty PIN clears the default"
        );
        assert_eq!(book.settings("open").max_participants, 10);
    }
}
