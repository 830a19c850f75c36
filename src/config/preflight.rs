//! `[preflight]`: whether and how often every name's CAA and delegation
//! are re-checked (new names and names whose CA pair changed are checked
//! within half a minute regardless of the interval).

use serde::Deserialize;

use super::{ConfigError, invalid};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    enabled: Option<bool>,
    interval_seconds: Option<u64>,
}

/// Preflight settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightConfig {
    /// Whether the worker runs preflight checks at all (the API's
    /// on-demand check works either way).
    pub enabled: bool,
    /// Re-check every name at least this often. Default: one day.
    pub interval_seconds: u64,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        PreflightConfig {
            enabled: true,
            interval_seconds: 86_400,
        }
    }
}

pub(super) fn validate_preflight(r: RawPreflight) -> Result<PreflightConfig, ConfigError> {
    let d = PreflightConfig::default();
    let c = PreflightConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        interval_seconds: r.interval_seconds.unwrap_or(d.interval_seconds),
    };
    if !(60..=30 * 86_400).contains(&c.interval_seconds) {
        return Err(invalid(
            "preflight.interval_seconds",
            c.interval_seconds,
            "must be between 60 and 2592000 (30 days); the default is 86400 (daily)",
        ));
    }
    Ok(c)
}
