//! Roundtable's object storage: where finished recordings live and are read back from.
//!
//! [`ObjectStore`] is what the recorder's archive step, `roundtable recordings list|get|verify`
//! and the API's downloads need from a backend: put, open, size and list objects under
//! validated [`ObjectKey`]s. [`LocalStore`] keeps objects as files under a folder (the default
//! backend); the S3 backend lives in [`s3`].
#![deny(missing_docs)]

pub mod s3;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The key is not a safe relative path of `[A-Za-z0-9_.-]` segments.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// No object has this key.
    #[error("object {0} not found")]
    NotFound(String),
    /// The backend's IO failed.
    #[error("storage IO error on {path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An S3 request failed.
    #[error("S3 {operation} {key}: {message}")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// The key (or bucket) involved.
        key: String,
        /// What the service or the connection said.
        message: String,
    },
    /// The S3 settings are unusable.
    #[error("S3 configuration: {0}")]
    Config(String),
}

/// A validated object key: `/`-separated segments of `[A-Za-z0-9_.-]`, none of them `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates a key.
    pub fn new(key: impl Into<String>) -> Result<ObjectKey, StorageError> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= 1024
            && key.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            });
        if ok {
            Ok(ObjectKey(key))
        } else {
            Err(StorageError::InvalidKey(key))
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// One page of a listing ([`ObjectStore::list_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectPage {
    /// The objects, in key order.
    pub objects: Vec<ObjectInfo>,
    /// Whether more objects follow the last one.
    pub more: bool,
}

/// Objects one listing request asks an object store for at most (S3's own limit).
pub const LIST_PAGE_MAX: usize = 1000;

/// A readable object: its size and a stream of its bytes.
pub struct ObjectReader {
    /// Bytes in the object.
    pub size: u64,
    /// Its content.
    pub body: Box<dyn Read + Send>,
}

/// A place finished recordings are kept and read back from.
pub trait ObjectStore: Send + Sync + 'static {
    /// `local` or `s3`.
    fn backend(&self) -> &'static str;
    /// Stores a whole small object (a manifest), replacing any object of that key.
    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError>;
    /// Opens an object for reading.
    fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError>;
    /// Removes an object (a missing one is not an error). Only the health probe's object is
    /// ever deleted: recordings are kept.
    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    /// At most `max` objects whose key starts with `prefix` and sorts after `after` (when
    /// given), in key order (bytewise, as S3 orders keys). Paging keeps a listing of a large
    /// archive bounded: the API lists recordings a page at a time.
    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<ObjectPage, StorageError>;
    /// Every object whose key starts with `prefix`, in key order (page after page).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut all: Vec<ObjectInfo> = Vec::new();
        loop {
            let after = all.last().map(|o| o.key.to_string());
            let page = self.list_page(prefix, after.as_deref(), LIST_PAGE_MAX)?;
            all.extend(page.objects);
            if !page.more {
                return Ok(all);
            }
        }
    }
    /// Checks that objects can be written (at startup and by `check-config`).
    fn check_writable(&self) -> Result<(), StorageError>;
}

/// Objects as files under a root folder (`storage.path`).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Storage rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file path of a key.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Adds the objects under `folder` (a key prefix without its slash; "" for the root) to
    /// `page`, in key order: each folder's entries sorted, a subfolder as its name and a slash
    /// (so `a-b` comes before `a/b`, as in S3). Folders that hold no key after `after` or none
    /// under `prefix` are not opened, so a page costs little however many pages come before it.
    fn walk(
        &self,
        folder: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
        page: &mut ObjectPage,
    ) -> Result<(), StorageError> {
        let dir = if folder.is_empty() {
            self.root.clone()
        } else {
            self.root.join(folder)
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StorageError::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        // (key, the entry for a file; None for a folder). The file type comes with the folder's
        // listing; a file's size is read only when the file joins the page.
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let is_dir = entry.file_type().map_err(io_error(&entry.path()))?.is_dir();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let key = if folder.is_empty() {
                name
            } else {
                format!("{folder}/{name}")
            };
            if is_dir {
                found.push((format!("{key}/"), None));
            } else {
                found.push((key, Some(entry)));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, file) in found {
            let Some(file) = file else {
                // Every key in the folder starts with `key` (its name and a slash).
                let all_before = after.is_some_and(|a| key.as_str() < a && !a.starts_with(&key));
                let off_prefix = !key.starts_with(prefix) && !prefix.starts_with(&key);
                if !all_before && !off_prefix {
                    self.walk(key.trim_end_matches('/'), prefix, after, max, page)?;
                }
                if page.more {
                    return Ok(());
                }
                continue;
            };
            if !key.starts_with(prefix) || after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            let Ok(key) = ObjectKey::new(&key) else {
                continue;
            };
            if page.objects.len() >= max {
                page.more = true;
                return Ok(());
            }
            let size = file.metadata().map_err(io_error(&file.path()))?.len();
            page.objects.push(ObjectInfo { key, size });
        }
        Ok(())
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` so that the file is either absent, the old one, or complete and
/// durable: a temporary file, fsynced, renamed over, and the folder fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StorageError::Io {
            path: tmp,
            source: e,
        });
    }
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error(parent))
}

impl ObjectStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        write_atomically(&self.path_of(key), bytes)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.path_of(key);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StorageError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        let path = self.path_of(key);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound(key.to_string()),
            _ => StorageError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let size = file.metadata().map_err(io_error(&path))?.len();
        Ok(ObjectReader {
            size,
            body: Box::new(io::BufReader::with_capacity(256 * 1024, file)),
        })
    }

    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<ObjectPage, StorageError> {
        // Walk from the deepest folder the prefix names.
        let folder = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut page = ObjectPage::default();
        self.walk(folder, prefix, after, max, &mut page)?;
        Ok(page)
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        let probe = self
            .root
            .join(format!(".roundtable-write-check-{}", std::process::id()));
        let result = File::create(&probe)
            .and_then(|mut f| f.write_all(b"ok"))
            .map_err(io_error(&probe));
        let _ = fs::remove_file(&probe);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(ObjectKey::new("recordings/1000/20261121T223015Z/mix.wav").is_ok());
        for bad in [
            "", "/abs", "a//b", "../x", "a/./b", "a b", "a/\u{e9}", "a\\b",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn puts_opens_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.check_writable().unwrap();
        let key = ObjectKey::new("recordings/r/1/manifest.json").unwrap();
        store.put(&key, b"first").unwrap();
        store.put(&key, b"second").unwrap();
        store
            .put(&ObjectKey::new("recordings/r/2/mix.wav").unwrap(), b"x")
            .unwrap();
        store
            .put(&ObjectKey::new("other/y").unwrap(), b"y")
            .unwrap();
        let mut body = String::new();
        let reader = store.open(&key).unwrap();
        assert_eq!(reader.size, 6);
        { reader.body }.read_to_string(&mut body).unwrap();
        assert_eq!(body, "second");
        let listed: Vec<String> = store
            .list("recordings/r/")
            .unwrap()
            .into_iter()
            .map(|o| o.key.to_string())
            .collect();
        assert_eq!(
            listed,
            ["recordings/r/1/manifest.json", "recordings/r/2/mix.wav"]
        );
        assert!(matches!(
            store.open(&ObjectKey::new("nope").unwrap()),
            Err(StorageError::NotFound(_))
        ));
        assert_eq!(
            fs::read_dir(dir.path().join("recordings/r/1"))
                .unwrap()
                .count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn lists_page_by_page_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let keys = [
            "r/a/1", "r/a/2", "r/a-b/1", "r/b/1/x", "r/b/2", "r/c", "s/1",
        ];
        for key in keys.iter().rev() {
            store.put(&ObjectKey::new(*key).unwrap(), b"x").unwrap();
        }
        let page = |prefix: &str, after: Option<&str>, max: usize| {
            let page = store.list_page(prefix, after, max).unwrap();
            (
                page.objects
                    .into_iter()
                    .map(|o| o.key.to_string())
                    .collect::<Vec<_>>(),
                page.more,
            )
        };
        // Bytewise key order, as S3 lists: "a-b/" sorts before "a/".
        assert_eq!(
            page("r/", None, 10),
            (
                vec![
                    "r/a-b/1".into(),
                    "r/a/1".into(),
                    "r/a/2".into(),
                    "r/b/1/x".into(),
                    "r/b/2".into(),
                    "r/c".into()
                ],
                false
            )
        );
        assert_eq!(
            page("r/", None, 2),
            (vec!["r/a-b/1".into(), "r/a/1".into()], true)
        );
        assert_eq!(
            page("r/", Some("r/a/1"), 2),
            (vec!["r/a/2".into(), "r/b/1/x".into()], true)
        );
        assert_eq!(
            page("r/", Some("r/b/1/x"), 2),
            (vec!["r/b/2".into(), "r/c".into()], false)
        );
        assert_eq!(
            page("r/b", None, 10),
            (vec!["r/b/1/x".into(), "r/b/2".into()], false)
        );
        assert_eq!(page("r/", Some("r/c"), 10), (vec![], false));
        let all: Vec<String> = store
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.key.to_string())
            .collect();
        let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        sorted.sort();
        assert_eq!(all, sorted);
    }

    #[test]
    fn unwritable_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let store = LocalStore::new(file.join("sub"));
        assert!(matches!(
            store.check_writable(),
            Err(StorageError::Io { .. })
        ));
    }
}
