//! The manifest: what a recording is (room, times, legs, ledger, retention) and proof that its
//! objects were not altered: each object's size, SHA-256 and a hash chain over 1 MiB chunks,
//! the whole signed with Ed25519.
//!
//! The chain lets `verify` name the first chunk that differs: `chain[0] = SHA-256(chunk 0)` and
//! `chain[i] = SHA-256(chain[i-1] || chunk i)`. The signature covers the manifest serialized
//! with `signature` set to `null`; the manifest refuses unknown fields, so nothing can be added
//! to a signed manifest either.

use std::io::Read;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ledger::Entry;

/// Bytes per link of an object's hash chain.
pub const CHUNK: usize = 1 << 20;

/// A recording's manifest (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// `<room>/<START>`.
    pub id: String,
    /// The room.
    pub room: String,
    /// Wall-clock start, RFC 3339 UTC.
    pub start: String,
    /// Wall-clock end (start + duration), RFC 3339 UTC.
    pub end: String,
    /// Length of every track.
    pub duration_ms: u64,
    /// Sample rate of every track.
    pub rate: u32,
    /// `mixed`, `tracks` or `both`.
    pub mode: String,
    /// Everyone who was in the recording.
    pub legs: Vec<LegRecord>,
    /// The audio objects.
    pub objects: Vec<ObjectRecord>,
    /// Everything that happened, in order.
    pub ledger: Vec<Entry>,
    /// How the objects are kept.
    pub retention: Retention,
    /// The Ed25519 signature over this manifest with this field `null`.
    pub signature: Option<Signature>,
}

/// One participant of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegRecord {
    /// Leg id.
    pub id: String,
    /// Caller URI.
    pub from: String,
    /// Codec.
    pub codec: String,
    /// When it joined, ms into the recording.
    pub joined_ms: u64,
    /// When it left (the recording's end if it never did).
    pub left_ms: u64,
    /// Whether it was played the recording notice.
    pub consent_notice: bool,
}

/// One stored object and its fingerprints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRecord {
    /// Its key in the store.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of the whole object, hex.
    pub sha256: String,
    /// The hash chain over [`CHUNK`]-byte chunks, hex.
    pub chain: Vec<String>,
}

/// The retention settings the objects were stored with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Storage backend (`local` or `s3`).
    pub backend: String,
    /// Server-side encryption (`""`, `AES256`, `aws:kms`).
    pub sse: String,
    /// Object lock mode (`""`, `GOVERNANCE`, `COMPLIANCE`).
    pub object_lock_mode: String,
    /// Object lock period.
    pub retention_days: u32,
}

/// An Ed25519 signature and the key that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The public key, hex.
    pub public_key: String,
    /// The signature, hex.
    pub value: String,
}

/// An object's fingerprints, computed as its bytes stream past.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint {
    whole: Sha256,
    chunk: Sha256,
    in_chunk: usize,
    chain: Vec<[u8; 32]>,
    size: u64,
}

impl Fingerprint {
    /// Feeds the next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = (CHUNK - self.in_chunk).min(bytes.len());
            self.chunk.update(&bytes[..n]);
            self.in_chunk += n;
            bytes = &bytes[n..];
            if self.in_chunk == CHUNK {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        let link: [u8; 32] = match self.chain.last() {
            Some(previous) => {
                let mut h = Sha256::new();
                h.update(previous);
                h.update(chunk.finalize());
                h.finalize().into()
            }
            None => chunk.finalize().into(),
        };
        self.chain.push(link);
        self.in_chunk = 0;
    }

    /// The record of the object stored under `key`.
    pub fn finish(mut self, key: String) -> ObjectRecord {
        if self.in_chunk > 0 || self.chain.is_empty() {
            self.close_chunk();
        }
        ObjectRecord {
            key,
            size: self.size,
            sha256: hex(&self.whole.finalize()),
            chain: self.chain.iter().map(|l| hex(l)).collect(),
        }
    }

    /// Fingerprints everything `reader` yields.
    pub fn of_reader(key: String, mut reader: impl Read) -> std::io::Result<ObjectRecord> {
        let mut fingerprint = Fingerprint::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(fingerprint.finish(key));
            }
            fingerprint.update(&buf[..n]);
        }
    }
}

/// Where re-reading an object stopped matching its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// A different length.
    Size {
        /// Recorded.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// The first chunk whose chain link differs (so bytes from `chunk * CHUNK` on changed).
    Chunk(usize),
    /// The whole-object hash differs (with every chain link matching: the record itself is bad).
    Sha256,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Size { expected, found } => {
                write!(f, "size {found} bytes, manifest says {expected}")
            }
            Mismatch::Chunk(i) => write!(
                f,
                "bytes {}..{} differ (hash chain link {i})",
                i * CHUNK,
                (i + 1) * CHUNK
            ),
            Mismatch::Sha256 => f.write_str("SHA-256 differs"),
        }
    }
}

impl ObjectRecord {
    /// Compares a re-read copy with this record.
    pub fn compare(&self, found: &ObjectRecord) -> Result<(), Mismatch> {
        if let Some(i) = self
            .chain
            .iter()
            .zip(&found.chain)
            .position(|(a, b)| a != b)
        {
            return Err(Mismatch::Chunk(i));
        }
        if found.size != self.size {
            return Err(Mismatch::Size {
                expected: self.size,
                found: found.size,
            });
        }
        if found.sha256 != self.sha256 || found.chain.len() != self.chain.len() {
            return Err(Mismatch::Sha256);
        }
        Ok(())
    }
}

/// Why a manifest could not be signed or its signature does not hold.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The key file is not a PKCS#8 Ed25519 key.
    #[error("signing key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest carries no signature.
    #[error("manifest is not signed")]
    Unsigned,
    /// The signature does not match the manifest's content.
    #[error(
        "manifest signature does not verify (the manifest was changed or signed by another key)"
    )]
    Invalid,
}

/// The Ed25519 key manifests are signed with (`recording.signing_key`).
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public_key_hex())
    }
}

impl Signer {
    /// Loads the PKCS#8 key at `path`, generating it (readable by its owner only) if the file
    /// does not exist and `create` is set.
    pub fn load(path: &std::path::Path, create: bool) -> Result<Signer, SignatureError> {
        let key_error = |reason: String| SignatureError::Key {
            path: path.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                    .map_err(|_| key_error("key generation failed".into()))?;
                write_private(path, doc.as_ref()).map_err(|e| key_error(e.to_string()))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(key_error(e.to_string())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes)
            .map_err(|e| key_error(format!("not a PKCS#8 Ed25519 key: {e}")))?;
        Ok(Signer { pair })
    }

    /// The public key, hex (what `roundtable recordings pubkey` prints).
    pub fn public_key_hex(&self) -> String {
        hex(self.pair.public_key().as_ref())
    }

    /// Signs `manifest` in place.
    pub fn sign(&self, manifest: &mut Manifest) {
        manifest.signature = None;
        let bytes = serde_json::to_vec(manifest).expect("a manifest always serializes");
        manifest.signature = Some(Signature {
            algorithm: "ed25519".into(),
            public_key: self.public_key_hex(),
            value: hex(self.pair.sign(&bytes).as_ref()),
        });
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

impl Manifest {
    /// Checks the signature against the key it names, and against `trusted` (hex) if given.
    pub fn verify_signature(&self, trusted: Option<&str>) -> Result<(), SignatureError> {
        let signature = self.signature.as_ref().ok_or(SignatureError::Unsigned)?;
        if trusted.is_some_and(|t| !t.eq_ignore_ascii_case(&signature.public_key))
            || signature.algorithm != "ed25519"
        {
            return Err(SignatureError::Invalid);
        }
        let (Some(key), Some(value)) = (unhex(&signature.public_key), unhex(&signature.value))
        else {
            return Err(SignatureError::Invalid);
        };
        let mut unsigned = self.clone();
        unsigned.signature = None;
        let bytes = serde_json::to_vec(&unsigned).expect("a manifest always serializes");
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&bytes, &value)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(objects: Vec<ObjectRecord>) -> Manifest {
        Manifest {
            version: 1,
            id: "1000/20261122T093000Z".into(),
            room: "1000".into(),
            start: "2026-11-22T09:30:00.000Z".into(),
            end: "2026-11-22T09:30:10.000Z".into(),
            duration_ms: 10_000,
            rate: 16000,
            mode: "mixed".into(),
            legs: vec![],
            objects,
            ledger: vec![],
            retention: Retention::default(),
            signature: None,
        }
    }

    #[test]
    fn chain_names_the_first_changed_chunk() {
        let mut data = vec![7u8; CHUNK * 3 + 100];
        let original = Fingerprint::of_reader("k".into(), &data[..]).unwrap();
        assert_eq!(original.chain.len(), 4);
        assert_eq!(original.size, data.len() as u64);
        // Fed in odd pieces, the same fingerprint.
        let mut f = Fingerprint::default();
        for piece in data.chunks(12_345) {
            f.update(piece);
        }
        assert_eq!(f.finish("k".into()), original);
        data[CHUNK * 2 + 5] ^= 1;
        let changed = Fingerprint::of_reader("k".into(), &data[..]).unwrap();
        assert_eq!(original.compare(&changed), Err(Mismatch::Chunk(2)));
        let truncated = Fingerprint::of_reader("k".into(), &data[..CHUNK * 3]).unwrap();
        assert!(matches!(
            original.compare(&truncated),
            Err(Mismatch::Chunk(_) | Mismatch::Size { .. })
        ));
        let empty = Fingerprint::of_reader("k".into(), &[][..]).unwrap();
        assert_eq!(empty.chain.len(), 1);
    }

    #[test]
    fn signature_covers_every_field_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pk8");
        let signer = Signer::load(&path, true).unwrap();
        let again = Signer::load(&path, false).unwrap();
        assert_eq!(signer.public_key_hex(), again.public_key_hex());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let record = Fingerprint::of_reader("mix.wav".into(), &b"abc"[..]).unwrap();
        let mut manifest = sample(vec![record]);
        signer.sign(&mut manifest);
        manifest
            .verify_signature(Some(&signer.public_key_hex()))
            .unwrap();
        let text = serde_json::to_string(&manifest).unwrap();
        let parsed: Manifest = serde_json::from_str(&text).unwrap();
        parsed.verify_signature(None).unwrap();

        let mut tampered = manifest.clone();
        tampered.objects[0].size += 1;
        assert!(matches!(
            tampered.verify_signature(None),
            Err(SignatureError::Invalid)
        ));
        let other = Signer::load(&dir.path().join("other.pk8"), true).unwrap();
        assert!(matches!(
            manifest.verify_signature(Some(&other.public_key_hex())),
            Err(SignatureError::Invalid)
        ));
        let added = text.replacen("{", r#"{"extra":1,"#, 1);
        assert!(serde_json::from_str::<Manifest>(&added).is_err());
        assert!(Signer::load(&dir.path().join("missing.pk8"), false).is_err());
    }
}
