//! Webhook signing as Standard Webhooks defines it (<https://www.standardwebhooks.com>): each
//! delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature:
//! v1,<base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>">`, keyed with the endpoint's
//! secret, written `whsec_` + the key's bytes in base64. A receiver verifies with any Standard
//! Webhooks library, or in a few lines of its own (see the README).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// What is wrong with a secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    /// Not `whsec_` followed by base64.
    #[error("a webhook secret is whsec_ followed by base64")]
    Malformed,
    /// Fewer than 24 bytes of key (Standard Webhooks asks for 24 to 64).
    #[error("a webhook secret's key is 24 to 64 bytes")]
    Length,
}

/// An endpoint's signing key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let key = text
            .strip_prefix("whsec_")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or(SecretError::Malformed)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(WebhookSecret(key))
    }

    /// A new random 32-byte key (for an endpoint defined without one).
    pub fn generate() -> Result<WebhookSecret, SecretError> {
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| SecretError::Length)?;
        Ok(WebhookSecret(key))
    }

    /// The secret as it is written and shown once to whoever defines the endpoint.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }

    /// `v1,<signature>` of one delivery.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }

    /// Whether a `webhook-signature` header (space-separated `v1,<sig>` entries) holds this
    /// delivery's signature; compared in constant time.
    pub fn verify(&self, id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(id, timestamp, body);
        header.split(' ').any(|given| {
            given.len() == expected.len()
                && given
                    .bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example (its value was checked here against
    /// Python's hmac module, an implementation independent of ours).
    #[test]
    fn signs_the_specifications_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bm90LXRoaXM= {signature}")
        ));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &signature));
        assert!(!secret.verify("msg_other", 1614265330, body, &signature));
        assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes() {
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!"] {
            assert_eq!(
                WebhookSecret::parse(bad),
                Err(SecretError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(WebhookSecret::parse("whsec_"), Err(SecretError::Length));
        assert_eq!(WebhookSecret::parse("whsec_AAAA"), Err(SecretError::Length));
        let made = WebhookSecret::generate().unwrap();
        assert_eq!(WebhookSecret::parse(&made.expose()).unwrap(), made);
        assert_ne!(WebhookSecret::generate().unwrap(), made, "random");
    }
}
