//! The `[revocation]` section: how often certificates' CRL and OCSP status
//! and ARI windows are checked, when a CA-level incident opens and what it
//! does, and when expiry and missing-standby alerts are raised.

use serde::Deserialize;

use super::{ConfigError, invalid};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRevocation {
    enabled: Option<bool>,
    check_interval_seconds: Option<u64>,
    on_active_revoked: Option<String>,
    refresh_seconds: Option<u64>,
    ocsp: Option<bool>,
    ari: Option<bool>,
    ari_min_poll_seconds: Option<u64>,
    incident_percent: Option<f64>,
    incident_count: Option<i64>,
    incident_min_count: Option<i64>,
    incident_window_seconds: Option<i64>,
    incident_policy: Option<String>,
    expiry_alert_fraction: Option<f64>,
    no_standby_alert_hours: Option<f64>,
}

/// What to do when a name's *active* certificate is found revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedActivePolicy {
    /// Swap the name to its standby at once (and re-provision the slot).
    Swap,
    /// Only alert; an operator swaps.
    Alert,
}

/// What a CA-level incident does besides alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentPolicy {
    /// Swap every name active on the CA away from it, in one operation.
    Swap,
    /// Record a dry run of that swap and wait for an operator.
    Manual,
}

/// Revocation checking (CRL, OCSP), ARI polling, CA-level incidents and
/// expiry alerts (`[revocation]`).
#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// Whether the periodic checks run at all (in worker processes).
    pub enabled: bool,
    /// How often every current certificate's status is checked.
    pub check_interval_seconds: u64,
    /// Reaction to a revoked active certificate.
    pub on_active_revoked: RevokedActivePolicy,
    /// A cached CRL or OCSP answer is fetched again (CRLs conditionally)
    /// after this long even before its nextUpdate: CAs publish new CRLs
    /// long before the old one expires, and a revocation must not wait
    /// days to be seen.
    pub refresh_seconds: u64,
    /// ARI's Retry-After is clamped to at least this (RFC 9773 §4.3.3
    /// suggests one minute) and at most a day.
    pub ari_min_poll_seconds: u64,
    /// Ask OCSP responders for certificates no CRL covers.
    pub ocsp: bool,
    /// Poll ARI renewal windows where the CA's directory offers them.
    pub ari: bool,
    /// A CA incident opens when, within `incident_window_seconds`, this
    /// percentage of the CA's current certificates were found revoked or
    /// had their ARI window moved into the past …
    pub incident_percent: f64,
    /// … or this many of them (whichever comes first) …
    pub incident_count: i64,
    /// … and never for fewer than this many (one revoked certificate of a
    /// CA holding fifty is 2%, not an incident).
    pub incident_min_count: i64,
    /// See `incident_percent`.
    pub incident_window_seconds: i64,
    /// What an incident does besides alerting.
    pub incident_policy: IncidentPolicy,
    /// Alert when a slot's certificate has less than this fraction of its
    /// lifetime left (no renewal succeeded in time).
    pub expiry_alert_fraction: f64,
    /// Alert when a name has had no usable standby for this long.
    pub no_standby_alert_seconds: i64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            enabled: true,
            check_interval_seconds: 300,
            on_active_revoked: RevokedActivePolicy::Swap,
            refresh_seconds: 3600,
            ari_min_poll_seconds: 60,
            ocsp: true,
            ari: true,
            incident_percent: 1.0,
            incident_count: 100,
            incident_min_count: 5,
            incident_window_seconds: 3600,
            incident_policy: IncidentPolicy::Swap,
            expiry_alert_fraction: 1.0 / 3.0,
            no_standby_alert_seconds: 24 * 3600,
        }
    }
}

pub(super) fn validate_revocation(r: RawRevocation) -> Result<RevocationConfig, ConfigError> {
    let d = RevocationConfig::default();
    let on_active_revoked = match r.on_active_revoked.as_deref().unwrap_or("swap") {
        "swap" => RevokedActivePolicy::Swap,
        "alert" => RevokedActivePolicy::Alert,
        other => {
            return Err(invalid(
                "revocation.on_active_revoked",
                other,
                "must be 'swap' or 'alert'",
            ));
        }
    };
    let incident_policy = match r.incident_policy.as_deref().unwrap_or("swap") {
        "swap" => IncidentPolicy::Swap,
        "manual" => IncidentPolicy::Manual,
        other => {
            return Err(invalid(
                "revocation.incident_policy",
                other,
                "must be 'swap' or 'manual'",
            ));
        }
    };
    let c = RevocationConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        check_interval_seconds: r.check_interval_seconds.unwrap_or(d.check_interval_seconds),
        on_active_revoked,
        refresh_seconds: r.refresh_seconds.unwrap_or(d.refresh_seconds),
        ari_min_poll_seconds: r
            .ari_min_poll_seconds
            .unwrap_or(d.ari_min_poll_seconds)
            .clamp(1, 86_400),
        ocsp: r.ocsp.unwrap_or(d.ocsp),
        ari: r.ari.unwrap_or(d.ari),
        incident_percent: r.incident_percent.unwrap_or(d.incident_percent),
        incident_count: r.incident_count.unwrap_or(d.incident_count),
        incident_min_count: r.incident_min_count.unwrap_or(d.incident_min_count),
        incident_window_seconds: r
            .incident_window_seconds
            .unwrap_or(d.incident_window_seconds),
        incident_policy,
        expiry_alert_fraction: r.expiry_alert_fraction.unwrap_or(d.expiry_alert_fraction),
        no_standby_alert_seconds: match r.no_standby_alert_hours {
            Some(h) if h.is_finite() && h >= 0.0 => (h * 3600.0) as i64,
            Some(h) => {
                return Err(invalid(
                    "revocation.no_standby_alert_hours",
                    h,
                    "must be a number of hours >= 0",
                ));
            }
            None => d.no_standby_alert_seconds,
        },
    };
    if !(1..=86_400).contains(&c.check_interval_seconds) {
        return Err(invalid(
            "revocation.check_interval_seconds",
            c.check_interval_seconds,
            "must be between 1 and 86400",
        ));
    }
    if c.refresh_seconds == 0 {
        return Err(invalid(
            "revocation.refresh_seconds",
            0,
            "must be at least 1",
        ));
    }
    if !(c.incident_percent > 0.0 && c.incident_percent <= 100.0) {
        return Err(invalid(
            "revocation.incident_percent",
            c.incident_percent,
            "must be above 0 and at most 100",
        ));
    }
    if c.incident_count < 1 || c.incident_min_count < 1 {
        return Err(invalid(
            "revocation.incident_count",
            c.incident_count.min(c.incident_min_count),
            "incident_count and incident_min_count must be at least 1",
        ));
    }
    if c.incident_window_seconds < 1 {
        return Err(invalid(
            "revocation.incident_window_seconds",
            c.incident_window_seconds,
            "must be at least 1",
        ));
    }
    if !(c.expiry_alert_fraction > 0.0 && c.expiry_alert_fraction < 1.0) {
        return Err(invalid(
            "revocation.expiry_alert_fraction",
            c.expiry_alert_fraction,
            "must be between 0 and 1 (a fraction of the certificate's lifetime)",
        ));
    }
    Ok(c)
}
