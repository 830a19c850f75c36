//! `[drills]`: what drills may do here.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrills {
    allow_simulation: Option<bool>,
}

/// Drill settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrillsConfig {
    /// Whether a simulated CA event may be drilled: the revocation checks
    /// then see every certificate of the CA revoked (without asking the
    /// CA) and the automatic path runs for real — incident, swap,
    /// re-provisioning. For test and training environments only; off by
    /// default.
    pub allow_simulation: bool,
}

pub(super) fn validate_drills(r: RawDrills) -> Result<DrillsConfig, ConfigError> {
    Ok(DrillsConfig {
        allow_simulation: r.allow_simulation.unwrap_or(false),
    })
}
