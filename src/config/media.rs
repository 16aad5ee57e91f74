//! `[media]`: RTP ports and addresses, codecs, the jitter buffer and SRTP.

use std::net::IpAddr;
use std::time::Duration;

use roundtable_media::codec::Codec;
use roundtable_media::jitter::JitterConfig;
use roundtable_media::ports::PortRange;
use roundtable_sip::sdp::SrtpPolicy;
use serde::Deserialize;

use super::{ConfigError, bounded, positive};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMedia {
    rtp_ports: String,
    public_ip: String,
    max_legs_per_room: i64,
    inactivity_timeout_s: i64,
    codecs: Vec<String>,
    jitter_min_ms: i64,
    jitter_max_ms: i64,
    srtp: String,
    srtp_required_over_tls: bool,
}

/// `[media]`, checked.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// RTP/RTCP port range.
    pub rtp_ports: PortRange,
    /// Address put in SDP instead of the one the INVITE arrived on.
    pub public_ip: Option<IpAddr>,
    /// Legs per room before new INVITEs to it get 486.
    pub max_legs_per_room: usize,
    /// A leg without RTP for this long gets BYE.
    pub inactivity_timeout: Duration,
    /// `media.codecs`: the codecs we answer with, in our order of preference.
    pub codecs: Vec<Codec>,
    /// `media.jitter_min_ms`, `media.jitter_max_ms`: the adaptive jitter buffer's bounds.
    pub jitter: JitterConfig,
    /// `media.srtp`: whether calls may, must or must not use SRTP.
    pub srtp: SrtpPolicy,
    /// `media.srtp_required_over_tls`: calls that came over TLS must use SRTP.
    pub srtp_required_over_tls: bool,
}

impl MediaConfig {
    /// Checks `[media]`.
    pub(super) fn validate(raw: RawMedia) -> Result<MediaConfig, ConfigError> {
        let public_ip = match raw.public_ip.trim() {
            "" => None,
            ip => Some(ip.parse().map_err(|_| {
                ConfigError::new("media.public_ip", format!("{ip:?} is not an IP address"))
            })?),
        };
        let inactivity = positive("media.inactivity_timeout_s", raw.inactivity_timeout_s)?;
        let jitter_min = bounded(
            "media.jitter_min_ms",
            raw.jitter_min_ms,
            20..=1000,
            "must be between 20 and 1000",
        )?;
        let jitter_max = bounded(
            "media.jitter_max_ms",
            raw.jitter_max_ms,
            jitter_min..=1000,
            "must be between media.jitter_min_ms and 1000",
        )?;
        let srtp = match raw.srtp.as_str() {
            "off" => SrtpPolicy::Off,
            "optional" => SrtpPolicy::Optional,
            "required" => SrtpPolicy::Required,
            other => {
                return Err(ConfigError::new(
                    "media.srtp",
                    format!("{other:?} is not off, optional or required"),
                ));
            }
        };
        Ok(MediaConfig {
            rtp_ports: port_range(&raw.rtp_ports)?,
            public_ip,
            max_legs_per_room: positive("media.max_legs_per_room", raw.max_legs_per_room)?,
            inactivity_timeout: Duration::from_secs(inactivity as u64),
            codecs: codecs(&raw.codecs)?,
            jitter: JitterConfig {
                min: Duration::from_millis(jitter_min),
                max: Duration::from_millis(jitter_max),
            },
            srtp,
            srtp_required_over_tls: raw.srtp_required_over_tls,
        })
    }
}

/// `media.rtp_ports`: `LOW-HIGH`.
fn port_range(text: &str) -> Result<PortRange, ConfigError> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| ConfigError::new("media.rtp_ports", "must be LOW-HIGH"))?;
    let parse_port = |p: &str| -> Result<u16, ConfigError> {
        let n: u32 = p
            .trim()
            .parse()
            .map_err(|_| ConfigError::new("media.rtp_ports", format!("{p:?} is not a port")))?;
        u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::new(
                "media.rtp_ports",
                format!("port {n} out of range (1-65535)"),
            )
        })
    };
    PortRange::new(parse_port(low)?, parse_port(high)?).ok_or_else(|| {
        ConfigError::new(
            "media.rtp_ports",
            "RTP range smaller than 2 ports (needs an even RTP port and the odd one above)",
        )
    })
}

/// `media.codecs`: known, each once, at least one.
fn codecs(names: &[String]) -> Result<Vec<Codec>, ConfigError> {
    let mut codecs = Vec::new();
    for name in names {
        let codec = Codec::from_config_name(name).ok_or_else(|| {
            ConfigError::new(
                "media.codecs",
                format!("{name:?} is not one of opus, g722, pcmu, pcma, g729"),
            )
        })?;
        if codecs.contains(&codec) {
            return Err(ConfigError::new(
                "media.codecs",
                format!("{name:?} is listed twice"),
            ));
        }
        codecs.push(codec);
    }
    if codecs.is_empty() {
        return Err(ConfigError::new(
            "media.codecs",
            "must list at least one codec",
        ));
    }
    Ok(codecs)
}
