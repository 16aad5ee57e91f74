//! The S3 backend (`storage.backend = "s3"`): the calls a streaming recorder needs (multipart
//! uploads with explicit part numbers, so part 1 can be sent again with the final WAV header),
//! plus [`ObjectStore`] for manifests, listing and reading back.
//!
//! The SDK is async; [`S3Store`] owns a small runtime of its own and blocks on it, so callers
//! (recorder threads, blocking tasks, the CLI) use it like a file system. The SDK's own retries
//! are off: the upload pipeline retries with its own backoff and circuit breaker, which must
//! see every failure.

use std::io::Read;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode, ServerSideEncryption,
};

use crate::{
    LIST_PAGE_MAX, ObjectInfo, ObjectKey, ObjectPage, ObjectReader, ObjectStore, StorageError,
};

/// `[storage.s3]`. Its `Debug` leaves the secret key out.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    /// Endpoint URL; empty for AWS.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Prepended to every key (`""` or ending in `/`).
    pub prefix: String,
    /// Path-style addressing (MinIO, s3s, moto).
    pub path_style: bool,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key: String,
    /// Secret key (else `AWS_SECRET_ACCESS_KEY`); never logged.
    pub secret_key: String,
    /// Bytes per multipart part (at least 5 MiB).
    pub part_size: u64,
    /// `""`, `AES256` or `aws:kms`.
    pub sse: String,
    /// The KMS key for `aws:kms`.
    pub kms_key_id: String,
    /// `""`, `GOVERNANCE` or `COMPLIANCE`.
    pub object_lock_mode: String,
    /// Days objects are locked for.
    pub retention_days: u32,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("secret_key", &"[redacted]")
            .field("part_size", &self.part_size)
            .field("sse", &self.sse)
            .field("object_lock_mode", &self.object_lock_mode)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

/// The smallest part S3 accepts (but the last).
pub const MIN_PART: u64 = 5 << 20;

impl S3Config {
    /// Checks the values that need no network; an error names the `storage.s3` key and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.bucket.is_empty() {
            return Err(("bucket", "must be set"));
        }
        if !self.prefix.is_empty()
            && (!self.prefix.ends_with('/')
                || ObjectKey::new(self.prefix.trim_end_matches('/')).is_err())
        {
            return Err((
                "prefix",
                "must be empty or path segments of [A-Za-z0-9_.-] ending in '/'",
            ));
        }
        if self.part_size < MIN_PART {
            return Err(("part_size_mib", "must be at least 5"));
        }
        if !["", "AES256", "aws:kms"].contains(&self.sse.as_str()) {
            return Err(("sse", "must be \"\", \"AES256\" or \"aws:kms\""));
        }
        if !self.kms_key_id.is_empty() && self.sse != "aws:kms" {
            return Err(("kms_key_id", "needs sse = \"aws:kms\""));
        }
        if !["", "GOVERNANCE", "COMPLIANCE"].contains(&self.object_lock_mode.as_str()) {
            return Err((
                "object_lock_mode",
                "must be \"\", \"GOVERNANCE\" or \"COMPLIANCE\"",
            ));
        }
        if self.object_lock_mode.is_empty() != (self.retention_days == 0) {
            return Err((
                "retention_days",
                "must be set (above 0) exactly when object_lock_mode is",
            ));
        }
        if self.access_key.is_empty() != self.secret_key.is_empty() {
            return Err(("secret_key", "access_key and secret_key go together"));
        }
        Ok(())
    }
}

/// An S3 bucket.
pub struct S3Store {
    client: Client,
    config: S3Config,
    /// Always `Some` until dropped (taken to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context (the service may drop
        // the store there).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.config.endpoint)
            .field("bucket", &self.config.bucket)
            .finish()
    }
}

fn s3_error(operation: &'static str, key: &str, e: impl std::error::Error) -> StorageError {
    // The SDK's Display is terse ("service error"); its source chain says what happened.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    StorageError::S3 {
        operation,
        key: key.to_string(),
        message,
    }
}

impl S3Store {
    /// A client for `config` (credentials from it, else from the standard environment
    /// variables). Makes no request.
    pub fn new(config: S3Config) -> Result<S3Store, StorageError> {
        config
            .validate()
            .map_err(|(key, reason)| StorageError::Config(format!("storage.s3.{key} {reason}")))?;
        let (access, secret) = if config.access_key.is_empty() {
            (
                std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            )
        } else {
            (config.access_key.clone(), config.secret_key.clone())
        };
        if access.is_empty() || secret.is_empty() {
            return Err(StorageError::Config(
                "no S3 credentials: set storage.s3.access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into(),
            ));
        }
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(access, secret, None, None, "roundtable"))
            .force_path_style(config.path_style)
            .retry_config(RetryConfig::disabled())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(config.endpoint.clone());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Config(format!("S3 runtime: {e}")))?;
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            config,
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until drop")
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// The settings.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Starts a multipart upload for `key`, with the configured encryption and object lock.
    pub fn create_multipart(&self, key: &ObjectKey) -> Result<String, StorageError> {
        let (sse, kms_key_id) = self.sse();
        let (lock_mode, until) = self.lock().unzip();
        let request = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .content_type(content_type(key))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(until);
        let output = self
            .block_on(request.send())
            .map_err(|e| s3_error("CreateMultipartUpload", key.as_str(), e))?;
        output.upload_id.ok_or_else(|| StorageError::S3 {
            operation: "CreateMultipartUpload",
            key: key.to_string(),
            message: "no upload id".into(),
        })
    }

    /// Uploads part `number` (1-based; sending a number again replaces that part); returns its
    /// ETag.
    pub fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: i32,
        bytes: Vec<u8>,
    ) -> Result<String, StorageError> {
        let request = self
            .client
            .upload_part()
            .content_md5(content_md5(&bytes))
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes));
        let output = self
            .block_on(request.send())
            .map_err(|e| s3_error("UploadPart", key.as_str(), e))?;
        output.e_tag.ok_or_else(|| StorageError::S3 {
            operation: "UploadPart",
            key: key.to_string(),
            message: "no ETag".into(),
        })
    }

    /// Completes an upload from its parts' (number, ETag), in order.
    pub fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), StorageError> {
        let parts = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        self.block_on(request.send())
            .map_err(|e| s3_error("CompleteMultipartUpload", key.as_str(), e))?;
        Ok(())
    }

    /// Puts the configured object-lock retention on an object, as a separate call: a multipart
    /// upload's completed object does not get the lock its CreateMultipartUpload asked for on
    /// every S3 implementation (moto drops it). Idempotent; a no-op without object lock.
    pub fn apply_retention(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let Some((_, until)) = self.lock() else {
            return Ok(());
        };
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::from(
                self.config.object_lock_mode.as_str(),
            ))
            .retain_until_date(until)
            .build();
        let request = self
            .client
            .put_object_retention()
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .retention(retention);
        self.block_on(request.send())
            .map_err(|e| s3_error("PutObjectRetention", key.as_str(), e))?;
        Ok(())
    }

    /// Abandons an upload and its parts.
    pub fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<(), StorageError> {
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .upload_id(upload_id);
        self.block_on(request.send())
            .map_err(|e| s3_error("AbortMultipartUpload", key.as_str(), e))?;
        Ok(())
    }

    /// The parts the server holds for an upload: (number, ETag, size).
    pub fn list_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<Vec<(i32, String, u64)>, StorageError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let request = self
                .client
                .list_parts()
                .bucket(&self.config.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone());
            let output = self
                .block_on(request.send())
                .map_err(|e| s3_error("ListParts", key.as_str(), e))?;
            for p in output.parts() {
                parts.push((
                    p.part_number.unwrap_or(0),
                    p.e_tag.clone().unwrap_or_default(),
                    p.size.unwrap_or(0).max(0) as u64,
                ));
            }
            if output.is_truncated != Some(true) {
                return Ok(parts);
            }
            marker = output.next_part_number_marker;
            if marker.is_none() {
                return Ok(parts);
            }
        }
    }

    /// Multipart uploads in progress under `prefix`: (key, upload id, when it began). Not every
    /// S3-compatible server implements this (s3s-fs does not).
    pub fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, Option<SystemTime>)>, StorageError> {
        let request = self
            .client
            .list_multipart_uploads()
            .bucket(&self.config.bucket)
            .prefix(prefix);
        let output = self
            .block_on(request.send())
            .map_err(|e| s3_error("ListMultipartUploads", prefix, e))?;
        Ok(output
            .uploads()
            .iter()
            .filter_map(|u| {
                let initiated = u.initiated.and_then(|t| SystemTime::try_from(t).ok());
                Some((u.key.clone()?, u.upload_id.clone()?, initiated))
            })
            .collect())
    }

    /// The configured server-side encryption and its KMS key id, for a request's `set_*` calls.
    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        let sse = Some(self.config.sse.as_str())
            .filter(|s| !s.is_empty())
            .map(ServerSideEncryption::from);
        let kms_key_id = Some(self.config.kms_key_id.clone()).filter(|k| !k.is_empty());
        (sse, kms_key_id)
    }

    fn lock(&self) -> Option<(ObjectLockMode, DateTime)> {
        if self.config.object_lock_mode.is_empty() {
            return None;
        }
        let until =
            SystemTime::now() + Duration::from_secs(u64::from(self.config.retention_days) * 86_400);
        Some((
            ObjectLockMode::from(self.config.object_lock_mode.as_str()),
            DateTime::from(until),
        ))
    }
}

/// The `Content-MD5` of a body (base64 of its MD5), sent with every upload: the server refuses
/// a body corrupted on the way, and S3 requires it (or a checksum) on uploads with Object Lock.
fn content_md5(bytes: &[u8]) -> String {
    use md5::Digest;
    base64(&md5::Md5::digest(bytes))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn content_type(key: &ObjectKey) -> &'static str {
    if key.as_str().ends_with(".wav") {
        "audio/wav"
    } else if key.as_str().ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// A GetObject body read synchronously, chunk by chunk.
struct BodyReader {
    body: ByteStream,
    handle: tokio::runtime::Handle,
    chunk: Vec<u8>,
    pos: usize,
    key: String,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.handle.block_on(self.body.try_next()) {
                Ok(Some(chunk)) => {
                    self.chunk = chunk.to_vec();
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(format!("reading {}: {e}", self.key))),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ObjectStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        let (sse, kms_key_id) = self.sse();
        let (lock_mode, until) = self.lock().unzip();
        let request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .content_type(content_type(key))
            .content_md5(content_md5(bytes))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(until)
            .body(ByteStream::from(bytes.to_vec()));
        self.block_on(request.send())
            .map_err(|e| s3_error("PutObject", key.as_str(), e))?;
        Ok(())
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let request = self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(key.as_str());
        self.block_on(request.send())
            .map_err(|e| s3_error("DeleteObject", key.as_str(), e))?;
        Ok(())
    }

    fn open(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key.as_str());
        let output = self.block_on(request.send()).map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                StorageError::NotFound(key.to_string())
            } else {
                s3_error("GetObject", key.as_str(), e)
            }
        })?;
        let size = output.content_length.unwrap_or(0).max(0) as u64;
        let reader = BodyReader {
            body: output.body,
            handle: self.runtime().handle().clone(),
            chunk: Vec::new(),
            pos: 0,
            key: key.to_string(),
        };
        Ok(ObjectReader {
            size,
            body: Box::new(reader),
        })
    }

    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<ObjectPage, StorageError> {
        let mut page = ObjectPage::default();
        let mut token: Option<String> = None;
        loop {
            // One more than needed: whether more follow shows without another request.
            let wanted = (max - page.objects.len())
                .saturating_add(1)
                .min(LIST_PAGE_MAX);
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(prefix)
                .set_start_after(after.filter(|_| token.is_none()).map(str::to_string))
                .max_keys(i32::try_from(wanted).unwrap_or(1000))
                .set_continuation_token(token.clone());
            let output = self
                .block_on(request.send())
                .map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
            for object in output.contents() {
                let Some(key) = object.key.as_deref().and_then(|k| ObjectKey::new(k).ok()) else {
                    continue;
                };
                if page.objects.len() >= max {
                    page.more = true;
                    return Ok(page);
                }
                page.objects.push(ObjectInfo {
                    key,
                    size: object.size.unwrap_or(0).max(0) as u64,
                });
            }
            token = output.next_continuation_token;
            if output.is_truncated != Some(true) || token.is_none() {
                return Ok(page);
            }
            if page.objects.len() >= max {
                page.more = true;
                return Ok(page);
            }
        }
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        let request = self.client.head_bucket().bucket(&self.config.bucket);
        self.block_on(request.send())
            .map_err(|e| s3_error("HeadBucket", &self.config.bucket, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_content_md5_match_rfc_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // The MD5 of an empty body, base64.
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn settings_are_checked_by_key() {
        let good = S3Config {
            bucket: "b".into(),
            part_size: MIN_PART,
            ..S3Config::default()
        };
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(
            S3Config {
                part_size: 1 << 20,
                ..good.clone()
            }
            .validate()
            .unwrap_err()
            .0,
            "part_size_mib"
        );
        assert_eq!(
            S3Config {
                object_lock_mode: "GOVERNANCE".into(),
                ..good.clone()
            }
            .validate()
            .unwrap_err()
            .0,
            "retention_days"
        );
        assert_eq!(
            S3Config {
                prefix: "a/../".into(),
                ..good.clone()
            }
            .validate()
            .unwrap_err()
            .0,
            "prefix"
        );
        assert!(
            !format!(
                "{:?}",
                S3Config {
                    secret_key: "hunter2".into(),
                    ..good
                }
            )
            .contains("hunter2")
        );
    }
}
