//! `[storage]` and `[storage.s3]`: where recordings, spools and `rooms.json` live.

use std::path::PathBuf;

use roundtable_storage::s3::S3Config;
use roundtable_storage::{LocalStore, ObjectStore};
use serde::Deserialize;

use super::{ConfigError, bounded};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    backend: String,
    path: String,
    spool_quota_mib: i64,
    pub(super) s3: RawS3,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    endpoint: String,
    region: String,
    bucket: String,
    prefix: String,
    path_style: bool,
    access_key: String,
    secret_key: String,
    part_size_mib: i64,
    sse: String,
    kms_key_id: String,
    object_lock_mode: String,
    retention_days: i64,
}

/// `[storage]`, checked.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `storage.path`: the local store and spool root (checked writable).
    pub path: PathBuf,
    /// `storage.spool_quota_mib`, in bytes.
    pub spool_quota: u64,
    /// `[storage.s3]` when `storage.backend = "s3"`.
    pub s3: Option<S3Config>,
}

impl StorageConfig {
    /// Checks `[storage]`, and that its folder is writable.
    pub(super) fn validate(raw: RawStorage) -> Result<StorageConfig, ConfigError> {
        let s3 = match raw.backend.as_str() {
            "local" => None,
            "s3" => Some(s3_config(&raw.s3)?),
            other => {
                return Err(ConfigError::new(
                    "storage.backend",
                    format!("unknown backend {other:?} (local or s3)"),
                ));
            }
        };
        if raw.path.is_empty() {
            return Err(ConfigError::new("storage.path", "must not be empty"));
        }
        let path = PathBuf::from(&raw.path);
        LocalStore::new(&path)
            .check_writable()
            .map_err(|e| ConfigError::new("storage.path", format!("data dir not writable: {e}")))?;
        let spool_quota = bounded(
            "storage.spool_quota_mib",
            raw.spool_quota_mib,
            1..=1 << 30,
            "must be at least 1",
        )? << 20;
        Ok(StorageConfig {
            path,
            spool_quota,
            s3,
        })
    }
}

/// `[storage.s3]`, checked.
fn s3_config(raw: &RawS3) -> Result<S3Config, ConfigError> {
    let part_size = bounded(
        "storage.s3.part_size_mib",
        raw.part_size_mib,
        5..=5120,
        "must be between 5 and 5120",
    )? << 20;
    let retention_days = bounded(
        "storage.s3.retention_days",
        raw.retention_days,
        0..=36_500,
        "must be between 0 and 36500",
    )? as u32;
    let config = S3Config {
        endpoint: raw.endpoint.clone(),
        region: raw.region.clone(),
        bucket: raw.bucket.clone(),
        prefix: raw.prefix.clone(),
        path_style: raw.path_style,
        access_key: raw.access_key.clone(),
        secret_key: raw.secret_key.clone(),
        part_size,
        sse: raw.sse.clone(),
        kms_key_id: raw.kms_key_id.clone(),
        object_lock_mode: raw.object_lock_mode.clone(),
        retention_days,
    };
    config
        .validate()
        .map_err(|(key, reason)| ConfigError::new(&format!("storage.s3.{key}"), reason))?;
    Ok(config)
}
