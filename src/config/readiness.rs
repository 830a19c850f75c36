//! `[readiness]`: how often emergency readiness is recomputed and when it
//! is alerted.

use serde::Deserialize;

use super::{ConfigError, invalid};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    enabled: Option<bool>,
    interval_seconds: Option<u64>,
    min_safe_share: Option<f64>,
    max_time_to_safety_seconds: Option<i64>,
    revocation_window_hours: Option<f64>,
}

/// Emergency readiness settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessConfig {
    /// Whether the worker computes readiness at all.
    pub enabled: bool,
    /// Recompute at least this often (also after every emergency
    /// operation or trust change, at most every 5 s).
    pub interval_seconds: u64,
    /// Alert when fewer of a CA's active names than this share would be
    /// safe if it were lost.
    pub min_safe_share: f64,
    /// Alert when the estimated time to safety exceeds this.
    pub max_time_to_safety_seconds: i64,
    /// A standby expiring within this many seconds is not counted safe
    /// (the CA/B Forum allows a CA 5 days to revoke).
    pub revocation_window_seconds: i64,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            enabled: true,
            interval_seconds: 300,
            min_safe_share: 0.99,
            max_time_to_safety_seconds: 600,
            revocation_window_seconds: 5 * 86_400,
        }
    }
}

pub(super) fn validate_readiness(r: RawReadiness) -> Result<ReadinessConfig, ConfigError> {
    let d = ReadinessConfig::default();
    let c = ReadinessConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        interval_seconds: r.interval_seconds.unwrap_or(d.interval_seconds),
        min_safe_share: r.min_safe_share.unwrap_or(d.min_safe_share),
        max_time_to_safety_seconds: r
            .max_time_to_safety_seconds
            .unwrap_or(d.max_time_to_safety_seconds),
        revocation_window_seconds: match r.revocation_window_hours {
            Some(h) if h.is_finite() && (0.0..=24.0 * 90.0).contains(&h) => (h * 3600.0) as i64,
            Some(h) => {
                return Err(invalid(
                    "readiness.revocation_window_hours",
                    h,
                    "must be a number of hours between 0 and 2160",
                ));
            }
            None => d.revocation_window_seconds,
        },
    };
    if !(1..=86_400).contains(&c.interval_seconds) {
        return Err(invalid(
            "readiness.interval_seconds",
            c.interval_seconds,
            "must be between 1 and 86400",
        ));
    }
    if !(0.0..=1.0).contains(&c.min_safe_share) {
        return Err(invalid(
            "readiness.min_safe_share",
            c.min_safe_share,
            "must be between 0 and 1 (e.g. 0.99)",
        ));
    }
    if c.max_time_to_safety_seconds < 1 {
        return Err(invalid(
            "readiness.max_time_to_safety_seconds",
            c.max_time_to_safety_seconds,
            "must be at least 1",
        ));
    }
    Ok(c)
}
