//! Drills: proving that a CA could be lost. A drill is requested for one
//! CA (the one the drill swaps *away from*), run by one worker replica and
//! stored with its report: what a real CA-wide swap would have found, per
//! stage with its timing, and which names would not have been safe.
//! States: `running` (transient: requested or being run), `passed` and
//! `failed` (final: the report says why).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How much a drill does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrillMode {
    /// Everything a CA-wide swap would do except the flip; changes nothing.
    Dry,
    /// Really swaps a sample away from the CA, verifies, and swaps it back.
    Live,
    /// Test and training environments (`[drills] allow_simulation`): the
    /// revocation checks see every certificate of the CA revoked, without
    /// asking the CA, and the automatic path runs for real.
    Simulate,
}

impl DrillMode {
    /// `dry` or `live`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillMode::Dry => "dry",
            DrillMode::Live => "live",
            DrillMode::Simulate => "simulate",
        }
    }
}

/// Which names a live drill swaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrillSample {
    /// These names (those active on the CA; never others).
    Names(Vec<String>),
    /// This percentage of the names active on the CA, rounded down.
    Percent(u8),
}

/// What was asked, as stored (validated by the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillRequest {
    /// Dry or live.
    pub mode: DrillMode,
    /// Live only: the sample.
    pub sample: Option<DrillSample>,
    /// Live only: keep the sample on its standby instead of swapping back.
    pub keep: bool,
    /// Live: how long to wait for the endpoints to serve the flipped
    /// certificates; simulate: for every name to leave the CA.
    pub verify_timeout_seconds: u64,
}

/// One stage of a drill's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillStage {
    /// `scope`, `revocation`, `chains`, `keys`, `endpoints` (dry);
    /// `sample`, `swap`, `verify`, `swap_back`, `verify_back` (live);
    /// `scope`, `simulate` (simulate).
    pub name: String,
    /// Unix seconds.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// `ok`, `failed` (defects found or the step failed) or `skipped`.
    pub outcome: String,
    /// What it did, in a line.
    pub detail: String,
}

/// One name that would not have been safe, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillFailure {
    /// The name.
    pub name: String,
    /// The first reason (a readiness reason, or `standby_revoked_now`,
    /// `chain_invalid`, `key_unopenable`, `key_mismatch`,
    /// `endpoint_unreachable`, `not_swapped`, `not_verified`,
    /// `not_restored`).
    pub reason: String,
    /// More about it, when there is more.
    pub detail: Option<String>,
}

/// What a drill found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillReport {
    /// Names active on the CA when the drill ran.
    pub names: i64,
    /// Of those, the ones that would be safe (dry) or were swapped,
    /// verified and restored (live: of the sample).
    pub safe: i64,
    /// Names by outcome: `safe`, or the first reason a name was not.
    pub outcomes: BTreeMap<String, i64>,
    /// The names that were not safe (up to 1000), with their reason.
    pub failures: Vec<DrillFailure>,
    /// The stages in order, with their timing.
    pub stages: Vec<DrillStage>,
    /// Live: the names swapped.
    pub sample: Vec<String>,
    /// Live: the swaps' operation records (away, back).
    pub operations: Vec<String>,
    /// Live: milliseconds from the flip until every swapped name was
    /// verified (served by its endpoints, or written to its destinations;
    /// the flip alone for names with neither). Null when not verified.
    pub time_to_safety_ms: Option<i64>,
    /// Live: the sample was kept on its standby.
    pub kept: bool,
    /// Why the drill stopped early, when it did.
    pub error: Option<String>,
}
