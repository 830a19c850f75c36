//! The preflight report of one name: what the checks that run before any
//! order (CAA per domain and CA, `_acme-challenge` delegation, the DNS
//! provider that will receive the records) found.
//! Computed by `validation::preflight`, stored per name as it is, shown by
//! the API, the CLI and the metrics.

use serde::{Deserialize, Serialize};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreflightStatus {
    /// Nothing stands in the way.
    Ok,
    /// Something will make an order fail; `fix` says what to change.
    Finding,
    /// The check could not be made (a DNS server failed or timed out):
    /// neither allowed nor refused.
    Error,
}

impl PreflightStatus {
    /// The stable spelling used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            PreflightStatus::Ok => "ok",
            PreflightStatus::Finding => "finding",
            PreflightStatus::Error => "error",
        }
    }
}

/// The check kinds, as spelled in [`PreflightCheck::check`].
pub const PREFLIGHT_CHECKS: [&str; 3] = ["caa", "delegation", "provider"];

/// One check of one domain (and, for CAA, one slot's CA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreflightCheck {
    /// `caa`, `delegation` or `provider`.
    pub check: String,
    /// For CAA: the slot (`primary`/`backup`) whose CA was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// For CAA: the CA checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The domain as ordered (`*.example.com` for a wildcard).
    pub domain: String,
    /// `ok`, `finding` or `error`.
    pub status: PreflightStatus,
    /// What was found, for people.
    pub detail: String,
    /// For a finding: the exact record to add (or setting to change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The latest preflight of a name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreflightReport {
    /// When the checks ran, unix seconds.
    pub checked_at: i64,
    /// Every check made.
    pub checks: Vec<PreflightCheck>,
}

impl PreflightReport {
    /// How many checks of kind `check` came out `status`.
    pub fn count(&self, check: &str, status: PreflightStatus) -> i64 {
        self.checks
            .iter()
            .filter(|c| c.check == check && c.status == status)
            .count() as i64
    }
}
