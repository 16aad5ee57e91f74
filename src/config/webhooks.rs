//! `[webhooks]`: the bounds of the outbox (the event journal every event is written to before
//! anyone, a WebSocket, a long poll or a webhook endpoint, sees it), how long retries wait, and
//! `[[webhooks.endpoints]]`.

use std::time::Duration;

use roundtable_api::{WebhookEndpoint, WebhookSpec};
use serde::Deserialize;

use super::{ConfigError, bounded};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    outbox_max_mib: i64,
    max_age_s: i64,
    backoff_max_s: i64,
    #[serde(default)]
    endpoints: Vec<WebhookSpec>,
}

/// `[webhooks]`, checked.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// `webhooks.outbox_max_mib`, in bytes: the journal's oldest events go beyond it (to an
    /// endpoint's dead letters if it had not received them).
    pub outbox_max: u64,
    /// `webhooks.max_age_s`: events older than this go, and a delivery retried this long goes
    /// to dead letters.
    pub max_age: Duration,
    /// `webhooks.backoff_max_s`: the longest wait between two attempts of a delivery.
    pub backoff_max: Duration,
    /// `[[webhooks.endpoints]]`, checked, in the file's order.
    pub endpoints: Vec<WebhookEndpoint>,
}

impl WebhooksConfig {
    /// Checks `[webhooks]`.
    pub(super) fn validate(raw: RawWebhooks) -> Result<WebhooksConfig, ConfigError> {
        let mut endpoints: Vec<WebhookEndpoint> = Vec::new();
        for spec in &raw.endpoints {
            let endpoint = spec.check().map_err(|reason| {
                let (field, reason) = reason.split_once(": ").unwrap_or(("", &reason));
                ConfigError::new(
                    &format!("webhooks.endpoints.{field}"),
                    format!("endpoint {:?}: {reason}", spec.name),
                )
            })?;
            if endpoints.iter().any(|e| e.name == endpoint.name) {
                return Err(ConfigError::new(
                    "webhooks.endpoints.name",
                    format!("{:?} is defined twice", endpoint.name),
                ));
            }
            endpoints.push(endpoint);
        }
        Ok(WebhooksConfig {
            outbox_max: bounded(
                "webhooks.outbox_max_mib",
                raw.outbox_max_mib,
                16..=1 << 20,
                "must be between 16 and 1048576",
            )? << 20,
            max_age: Duration::from_secs(bounded(
                "webhooks.max_age_s",
                raw.max_age_s,
                60..=365 * 86_400,
                "must be between 60 and 31536000",
            )?),
            backoff_max: Duration::from_secs(bounded(
                "webhooks.backoff_max_s",
                raw.backoff_max_s,
                1..=86_400,
                "must be between 1 and 86400",
            )?),
            endpoints,
        })
    }
}
