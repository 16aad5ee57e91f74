//! Roundtable's object storage: where recordings go.
//!
//! [`Storage`] hands out [`ObjectWriter`]s for validated [`ObjectKey`]s; [`LocalStorage`] keeps
//! objects as files under a folder (the default backend). An object is complete and durable
//! once [`ObjectWriter::finish`] returned; before that, it grows in place so that a crash loses
//! at most the unflushed tail.
#![deny(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The key is not a safe relative path of `[A-Za-z0-9_.-]` segments.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// An object with this key exists; objects are never overwritten.
    #[error("object {0} already exists")]
    AlreadyExists(String),
    /// The backend's IO failed.
    #[error("storage IO error on {path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A validated object key: `/`-separated segments of `[A-Za-z0-9_.-]`, none of them `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
                    && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            });
        if ok { Ok(ObjectKey(key)) } else { Err(StorageError::InvalidKey(key)) }
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

/// An object being written. `Seek` lets WAV writers patch their header.
pub trait ObjectWriter: Write + Seek + Send {
    /// Flushes, makes the object durable and closes it.
    fn finish(self: Box<Self>) -> Result<(), StorageError>;
}

/// A place to put recordings.
pub trait Storage: Send + Sync + 'static {
    /// Creates a new object; fails if it exists.
    fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Checks that objects can be written (used at startup and by `check-config`).
    fn check_writable(&self) -> Result<(), StorageError>;
}

/// Objects as files under a root folder.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    /// The file path of a key.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

impl Storage for LocalStorage {
    fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let path = self.path_of(key);
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_error(&parent))?;
        let file = OpenOptions::new().write(true).read(true).create_new(true).open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                StorageError::AlreadyExists(key.to_string())
            } else {
                StorageError::Io { path: path.clone(), source: e }
            }
        })?;
        Ok(Box::new(LocalObject { file: BufWriter::with_capacity(64 * 1024, file), path, parent }))
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        let probe = self.root.join(format!(".roundtable-write-check-{}", std::process::id()));
        let result = File::create(&probe).and_then(|mut f| f.write_all(b"ok")).map_err(io_error(&probe));
        let _ = fs::remove_file(&probe);
        result
    }
}

/// A file being written under [`LocalStorage`].
struct LocalObject {
    file: BufWriter<File>,
    path: PathBuf,
    parent: PathBuf,
}

impl Write for LocalObject {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for LocalObject {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl ObjectWriter for LocalObject {
    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let LocalObject { file, path, parent } = *self;
        let file = file.into_inner().map_err(|e| StorageError::Io { path: path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io_error(&path))?;
        // Make the directory entry durable too.
        File::open(&parent).and_then(|d| d.sync_all()).map_err(io_error(&parent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(ObjectKey::new("recordings/1000/20261121T223015Z/mix.wav").is_ok());
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a b", "a/\u{e9}", "a\\b"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_seeks_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.check_writable().unwrap();
        let key = ObjectKey::new("a/b/c.bin").unwrap();
        let mut w = storage.create(&key).unwrap();
        w.write_all(b"hello world").unwrap();
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(b"J").unwrap();
        w.finish().unwrap();
        assert_eq!(fs::read(dir.path().join("a/b/c.bin")).unwrap(), b"Jello world");
        assert!(matches!(storage.create(&key), Err(StorageError::AlreadyExists(_))));
    }

    #[test]
    fn unwritable_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let storage = LocalStorage::new(file.join("sub"));
        assert!(matches!(storage.check_writable(), Err(StorageError::Io { .. })));
    }
}
