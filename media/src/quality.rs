//! Call quality: how a leg's audio reaches us ([`LegQuality`]), and how a listener would rate it:
//! the ITU-T G.107 E-model, simplified to the two impairments a bridge can measure (packet loss
//! and one-way delay), mapped to a MOS.
//!
//! R = 93.2 - Id - Ie,eff, where Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3) for a one-way
//! delay d in ms, and Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl) for a packet loss of Ppl
//! percent (random loss, BurstR = 1). Ie = 0 and Bpl = 25.1 are G.711's with loss concealment
//! (G.113 Appendix I); they are used for every codec, a narrowband simplification.

use crate::jitter::JitterStats;
use crate::rtp::SenderStats;

/// How one leg's incoming audio fares: what the mixer, which plays its jitter buffer, publishes
/// for the API and RTCP.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegQuality {
    /// The jitter buffer's counters and gauges.
    pub jitter: JitterStats,
    /// Lost frames rebuilt from Opus in-band FEC (not counted as concealed).
    pub fec_recovered: u64,
    /// Our stream to the leg, for RTCP sender reports (`None` while it hears nothing).
    pub sender: Option<SenderStats>,
}

/// Equipment impairment of the codec (G.711: 0).
const IE: f64 = 0.0;
/// Packet-loss robustness (G.711 with PLC: 25.1).
const BPL: f64 = 25.1;

/// The transmission rating R and its MOS for `loss_percent` random loss and a one-way delay.
pub fn emodel(loss_percent: f64, one_way_delay_ms: f64) -> (f64, f64) {
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = loss_percent.clamp(0.0, 100.0);
    let ie_eff = IE + (95.0 - IE) * ppl / (ppl + BPL);
    let r = 93.2 - id - ie_eff;
    (r, mos(r))
}

/// G.107 Annex B: R to MOS.
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_points() {
        let (r, m) = emodel(0.0, 0.0);
        assert!(
            (r - 93.2).abs() < 1e-9 && (m - 4.41).abs() < 0.01,
            "{r} {m}"
        );
        let (r, m) = emodel(5.0, 0.0);
        assert!(
            (r - 77.42).abs() < 0.01 && (m - 3.92).abs() < 0.01,
            "{r} {m}"
        );
        let (_, far) = emodel(0.0, 300.0);
        assert!(far < 4.0, "long delay costs: {far}");
        assert_eq!(mos(-5.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
    }
}
