//! SRTP with SDES keys (RFC 3711, RFC 4568): the crypto suites we accept, the master keys of
//! `a=crypto` lines, and one-way contexts that protect what we send and unprotect what we
//! receive (rtc-srtp over aws-lc-rs).
//!
//! Keys are secrets: [`MasterKey`]'s `Debug` prints no key material, and nothing here logs.

use rtc_srtp::context::Context;
use rtc_srtp::crypto::RTCRandom;
use rtc_srtp::crypto::providers::{AwsLcRsCrypto, AwsLcRsRandom};
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use crate::error::MediaError;

/// Master key (16 bytes) plus master salt (14 bytes) of the AES-CM-128 suites.
const KEY_SALT_LEN: usize = 30;
/// Replay window, in packets.
const REPLAY_WINDOW: usize = 128;

/// An SDES crypto suite we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80`: 80-bit authentication tag.
    AesCm128Sha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: 32-bit authentication tag.
    AesCm128Sha1_32,
}

impl Suite {
    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128Sha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128Sha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// Reads a suite name.
    pub fn from_name(name: &str) -> Option<Suite> {
        [Suite::AesCm128Sha1_80, Suite::AesCm128Sha1_32]
            .into_iter()
            .find(|s| s.name() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128Sha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128Sha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// A master key and salt, as carried base64-encoded in `inline:`.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_SALT_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random key and salt from the operating system.
    pub fn random() -> Result<MasterKey, MediaError> {
        let mut bytes = [0u8; KEY_SALT_LEN];
        AwsLcRsRandom
            .fill(&mut bytes)
            .map_err(|_| MediaError::Srtp("no randomness"))?;
        Ok(MasterKey(bytes))
    }

    /// Reads the key-params of an `a=crypto` line: `inline:<base64>[|lifetime][|MKI:length]`.
    /// A lifetime is accepted (we rekey never, and calls are far shorter than 2^31 packets);
    /// MKIs are refused.
    pub fn from_key_params(params: &str) -> Option<MasterKey> {
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let key = base64_decode(parts.next()?)?;
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| p.contains(':')) || rest.len() > 1 {
            return None;
        }
        key.try_into().ok().map(MasterKey)
    }

    /// The key-params for our `a=crypto` line.
    pub fn key_params(&self) -> String {
        format!("inline:{}", base64_encode(&self.0))
    }

    fn context(&self, suite: Suite, replay: bool) -> Result<Context, MediaError> {
        let (key, salt) = self.0.split_at(16);
        let (rtp, rtcp) = if replay {
            (
                Some(srtp_replay_protection(REPLAY_WINDOW)),
                Some(srtcp_replay_protection(REPLAY_WINDOW)),
            )
        } else {
            (None, None)
        };
        Context::new(key, salt, suite.profile(), rtp, rtcp, &AwsLcRsCrypto)
            .map_err(|_| MediaError::Srtp("bad key"))
    }
}

/// Protects what we send (our key): RTP on the mixer thread, RTCP on the receive task, each
/// with its own context.
pub struct Protector(Context);

impl std::fmt::Debug for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Protector")
    }
}

impl Protector {
    /// A context sending with `key` under `suite`.
    pub fn new(suite: Suite, key: &MasterKey) -> Result<Protector, MediaError> {
        key.context(suite, false).map(Protector)
    }

    /// Encrypts and authenticates an RTP packet.
    pub fn rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
        self.0
            .encrypt_rtp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| MediaError::Srtp("protect"))
    }

    /// Encrypts and authenticates an RTCP compound packet.
    pub fn rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
        self.0
            .encrypt_rtcp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| MediaError::Srtp("protect"))
    }
}

/// Checks and decrypts what the peer sends (its key), with replay protection.
pub struct Unprotector(Context);

impl std::fmt::Debug for Unprotector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unprotector")
    }
}

impl Unprotector {
    /// A context receiving with the peer's `key` under `suite`.
    pub fn new(suite: Suite, key: &MasterKey) -> Result<Unprotector, MediaError> {
        key.context(suite, true).map(Unprotector)
    }

    /// Authenticates and decrypts an SRTP packet; forged, replayed or short packets fail.
    pub fn rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
        self.0
            .decrypt_rtp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| MediaError::Srtp("authentication"))
    }

    /// Authenticates and decrypts an SRTCP packet.
    pub fn rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
        self.0
            .decrypt_rtcp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| MediaError::Srtp("authentication"))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 4).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on any other character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{RtpPacket, RtpSender};

    #[test]
    fn base64_round_trips() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(
            base64_encode(b"any carnal pleas"),
            "YW55IGNhcm5hbCBwbGVhcw=="
        );
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn key_params() {
        let key = MasterKey::random().unwrap();
        let params = key.key_params();
        assert_eq!(MasterKey::from_key_params(&params), Some(key.clone()));
        assert_eq!(
            MasterKey::from_key_params(&format!("{params}|2^20")),
            Some(key.clone()),
            "lifetime accepted"
        );
        assert_eq!(
            MasterKey::from_key_params(&format!("{params}|1:4")),
            None,
            "MKI refused"
        );
        assert_eq!(
            MasterKey::from_key_params("inline:c2hvcnQ="),
            None,
            "too short"
        );
        assert!(
            !format!("{key:?}").contains(&params[7..]),
            "Debug redacts the key"
        );
    }

    #[test]
    fn protected_rtp_and_rtcp_round_trip_and_forgeries_fail() {
        for suite in [Suite::AesCm128Sha1_80, Suite::AesCm128Sha1_32] {
            let key = MasterKey::random().unwrap();
            let (mut tx, mut rx) = (
                Protector::new(suite, &key).unwrap(),
                Unprotector::new(suite, &key).unwrap(),
            );
            let mut sender = RtpSender::new(0, 42);
            let mut packet = Vec::new();
            sender.write(&[0x55; 160], 160, &mut packet);
            let protected = tx.rtp(&packet).unwrap();
            let tag = if suite == Suite::AesCm128Sha1_80 {
                10
            } else {
                4
            };
            assert_eq!(protected.len(), packet.len() + tag);
            assert_ne!(
                &protected[12..172],
                &packet[12..172],
                "the payload is encrypted"
            );
            let clear = rx.rtp(&protected).unwrap();
            assert_eq!(RtpPacket::parse(&clear).unwrap().payload, &[0x55; 160]);
            assert!(rx.rtp(&protected).is_err(), "a replay fails");
            let mut forged = tx
                .rtp(&{
                    sender.write(&[1; 160], 160, &mut packet);
                    packet.clone()
                })
                .unwrap();
            forged[20] ^= 1;
            assert!(
                rx.rtp(&forged).is_err(),
                "a changed byte fails authentication"
            );
            let other = Unprotector::new(suite, &MasterKey::random().unwrap())
                .unwrap()
                .rtp(&protected);
            assert!(other.is_err(), "another key fails");

            let rtcp = [
                0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0,
            ];
            let protected = tx.rtcp(&rtcp).unwrap();
            assert_eq!(rx.rtcp(&protected).unwrap(), rtcp);
            assert!(rx.rtcp(&protected[..10]).is_err());
        }
    }
}
