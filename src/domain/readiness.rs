//! The emergency readiness report: per CA, how many names active on it
//! would be safe at once if it were lost now, and why the others would
//! not. Computed by the worker, stored as it is, shown by the API, the CLI
//! and the metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The latest readiness computation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    /// When it was computed, unix seconds.
    pub computed_at: i64,
    /// How long the computation took.
    pub duration_ms: i64,
    /// Names serving a certificate (active on some CA).
    pub names: i64,
    /// Of those, the ones that would be safe whichever CA were lost.
    pub safe: i64,
    /// Per CA that names are active on, or that is configured.
    pub cas: Vec<CaReadiness>,
}

/// Readiness for the loss of one CA.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaReadiness {
    /// The CA.
    pub ca: String,
    /// Names active on it.
    pub active: i64,
    /// Of those, the ones whose standby would flip in at once and be served.
    pub safe: i64,
    /// `safe` / `active` (1 when nothing is active on it).
    pub safe_share: f64,
    /// Names by outcome: `safe`, or the first reason a name would not be.
    pub outcomes: BTreeMap<String, i64>,
    /// Up to ten names per reason.
    pub samples: BTreeMap<String, Vec<String>>,
    /// Estimated seconds from deciding to swap away from the CA until those
    /// names serve their standby: the swap, deployment and verification, at
    /// the last measured rates.
    pub time_to_safety_seconds: i64,
    /// Estimated seconds until every name has two certificates again
    /// (re-provisioning the abandoned slots at the configured rates, after
    /// the same-CA hold-off when only this CA can re-issue them); null
    /// when no CA could.
    pub time_to_redundancy_seconds: Option<i64>,
    /// The CAs that would re-issue the abandoned slots.
    pub redundancy_from: Vec<String>,
    /// Why this CA's readiness is alerted, when it is.
    pub alert: Option<String>,
}
