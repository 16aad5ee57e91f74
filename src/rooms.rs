//! Defined rooms: `[[rooms]]` from the configuration plus rooms made with `PUT /v1/rooms/{room}`,
//! which are kept in `<storage.path>/rooms.json` and survive restarts. Defined rooms exist (and
//! are listed) while empty; an API definition overrides a configured one of the same id.

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
    path: PathBuf,
}

impl RoomBook {
    /// The configured rooms plus those saved in `path` (absent file: none).
    pub fn load(configured: HashMap<String, RoomConfig>, path: PathBuf) -> Result<RoomBook, RoomBookError> {
        let api = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored = serde_json::from_slice(&bytes)
                    .map_err(|e| RoomBookError::Load { path: path.clone(), reason: e.to_string() })?;
                stored
                    .rooms
                    .into_iter()
                    .map(|r| (r.id, RoomConfig { pin: r.pin.map(Secret::new), moderator_pin: r.moderator_pin.map(Secret::new) }))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(RoomBookError::Load { path, reason: e.to_string() }),
        };
        Ok(RoomBook { configured, api, path })
    }

    /// A room's definition.
    pub fn get(&self, id: &str) -> Option<&RoomConfig> {
        self.api.get(id).or_else(|| self.configured.get(id))
    }

    /// Every defined room id.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.configured.keys().chain(self.api.keys().filter(|k| !self.configured.contains_key(*k)))
    }

    /// Whether the room comes from the configuration file only.
    pub fn is_configured_only(&self, id: &str) -> bool {
        self.configured.contains_key(id) && !self.api.contains_key(id)
    }

    /// Defines a room and saves the book.
    pub fn put(&mut self, id: &str, room: RoomConfig) -> Result<(), RoomBookError> {
        let previous = self.api.insert(id.to_string(), room);
        self.save().inspect_err(|_| {
            // Keep memory and disk in agreement.
            match previous {
                Some(p) => self.api.insert(id.to_string(), p),
                None => self.api.remove(id),
            };
        })
    }

    /// Removes an API-defined room and saves the book; `false` if there was none.
    pub fn delete(&mut self, id: &str) -> Result<bool, RoomBookError> {
        let Some(previous) = self.api.remove(id) else { return Ok(false) };
        self.save().inspect_err(|_| {
            self.api.insert(id.to_string(), previous.clone());
        })?;
        Ok(true)
    }

    /// Writes the API rooms atomically (temporary file, fsync, rename), readable by owner only
    /// since it holds PINs.
    fn save(&self) -> Result<(), RoomBookError> {
        let mut rooms: Vec<StoredRoom> = self
            .api
            .iter()
            .map(|(id, r)| StoredRoom {
                id: id.clone(),
                pin: r.pin.as_ref().map(|p| p.expose().to_string()),
                moderator_pin: r.moderator_pin.as_ref().map(|p| p.expose().to_string()),
            })
            .collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        let error = |source| RoomBookError::Save { path: self.path.clone(), source };
        let bytes = serde_json::to_vec_pretty(&Stored { rooms }).map_err(|e| error(e.into()))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(error)?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(error)?;
        std::fs::rename(&tmp, &self.path).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_rooms_survive_a_reload_and_override_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.json");
        let configured: HashMap<_, _> =
            [("1".to_string(), RoomConfig { pin: Some(Secret::new("11".into())), moderator_pin: None })].into();
        let mut book = RoomBook::load(configured.clone(), path.clone()).unwrap();
        book.put("2", RoomConfig { pin: Some(Secret::new("22".into())), moderator_pin: None }).unwrap();
        book.put("1", RoomConfig { pin: None, moderator_pin: None }).unwrap();
        let book = RoomBook::load(configured.clone(), path.clone()).unwrap();
        assert_eq!(book.get("2").and_then(|r| r.pin.as_ref()).map(Secret::expose), Some("22"));
        assert_eq!(book.get("1").map(|r| r.pin.is_none()), Some(true), "the API definition wins");
        let mut ids: Vec<_> = book.ids().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["1", "2"]);
        let mut book = book;
        assert!(book.delete("2").unwrap());
        assert!(!book.delete("2").unwrap());
        assert!(RoomBook::load(configured, path.clone()).unwrap().get("2").is_none());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(RoomBook::load(HashMap::new(), path).is_err());
    }
}
