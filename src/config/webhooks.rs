//! `[webhooks]`: the bounds of the outbox, the event journal every event is written to before
//! anyone (a WebSocket, a long poll, a webhook endpoint) sees it.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, bounded};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    outbox_max_mib: i64,
    max_age_s: i64,
}

/// `[webhooks]`, checked.
#[derive(Debug, Clone, Copy)]
pub struct WebhooksConfig {
    /// `webhooks.outbox_max_mib`, in bytes: the journal's oldest events go beyond it.
    pub outbox_max: u64,
    /// `webhooks.max_age_s`: events older than this go.
    pub max_age: Duration,
}

impl WebhooksConfig {
    /// Checks `[webhooks]`.
    pub(super) fn validate(raw: RawWebhooks) -> Result<WebhooksConfig, ConfigError> {
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
        })
    }
}
