//! Emergency readiness facts: names active on each CA grouped by what is
//! known of their standby (the rules are `policy::readiness`), a sample of
//! the names in a group, the measured rates an estimate needs, and the
//! stored report.

use sea_orm::{DatabaseConnection, Value};

use crate::domain::ReadinessReport;

use super::StoreError;
use super::sql::{all, exec, get, one};
use super::swap_scope::ACTIVE_CA;

/// Readiness facts and the stored report.
#[derive(Clone)]
pub struct Readiness {
    pub(super) db: DatabaseConnection,
}

/// Names active on one CA sharing the same standby facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessGroup {
    /// The CA the names are active on.
    pub active_ca: String,
    /// The standby's CA (None: no standby certificate).
    pub standby_ca: Option<String>,
    /// The standby slot holds a certificate.
    pub present: bool,
    /// It has expired.
    pub expired: bool,
    /// It expires before the revocation window ends.
    pub expiring: bool,
    /// It is revoked.
    pub revoked: bool,
    /// Its key is compromised.
    pub compromised: bool,
    /// An operation superseded it.
    pub superseded: bool,
    /// Its last revocation check could not decide.
    pub status_unknown: bool,
    /// A deployment destination of the name failed.
    pub deploy_failing: bool,
    /// An endpoint was unreachable at its last check.
    pub endpoint_unreachable: bool,
    /// The name has deployment destinations.
    pub deployed: bool,
    /// How many names.
    pub names: i64,
}

/// The facts of every name with an active certificate (holes: `$1` now,
/// `$2` the end of the revocation window). `expiring` mirrors
/// `policy::readiness::standby_expiring`: the standby expires within the
/// revocation window or within 1/4 of its own lifetime, whichever is
/// shorter (divisor `STANDBY_EXPIRING_LIFETIME_DIVISOR` there).
const FACTS: &str = "SELECT n.id AS name_id, {ACTIVE_CA} AS active_ca, cs.ca_id AS standby_ca, \
     CASE WHEN cs.id IS NULL THEN 0 ELSE 1 END AS present, \
     CASE WHEN cs.not_after <= $1 THEN 1 ELSE 0 END AS expired, \
     CASE WHEN cs.not_after <= $1 + (CASE WHEN (cs.not_after - cs.not_before) / 4 < $2 - $1 \
       THEN (cs.not_after - cs.not_before) / 4 ELSE $2 - $1 END) THEN 1 ELSE 0 END AS expiring, \
     CASE WHEN cs.revoked_at IS NOT NULL THEN 1 ELSE 0 END AS revoked, \
     CASE WHEN ks.compromised THEN 1 ELSE 0 END AS compromised, \
     CASE WHEN (CASE n.active_slot WHEN 'primary' THEN n.backup_superseded_by \
       ELSE n.primary_superseded_by END) IS NOT NULL THEN 1 ELSE 0 END AS superseded, \
     CASE WHEN cs.status_error IS NOT NULL THEN 1 ELSE 0 END AS status_unknown, \
     CASE WHEN EXISTS (SELECT 1 FROM deployments d WHERE d.name_id = n.id \
       AND d.state = 'failed') THEN 1 ELSE 0 END AS deploy_failing, \
     CASE WHEN EXISTS (SELECT 1 FROM endpoints e WHERE e.name_id = n.id \
       AND e.outcome = 'unreachable') THEN 1 ELSE 0 END AS endpoint_unreachable, \
     CASE WHEN EXISTS (SELECT 1 FROM deployments d WHERE d.name_id = n.id) \
       THEN 1 ELSE 0 END AS deployed \
     FROM names n \
     LEFT JOIN slots ss ON ss.name_id = n.id AND ss.slot <> n.active_slot \
     LEFT JOIN certificates cs ON cs.id = ss.current_cert_id \
     LEFT JOIN private_keys ks ON ks.id = cs.private_key_id \
     WHERE {ACTIVE_CA} IS NOT NULL";

const FLAGS: [&str; 10] = [
    "present",
    "expired",
    "expiring",
    "revoked",
    "compromised",
    "superseded",
    "status_unknown",
    "deploy_failing",
    "endpoint_unreachable",
    "deployed",
];

fn facts() -> String {
    FACTS.replace("{ACTIVE_CA}", ACTIVE_CA)
}

fn flag(r: &sea_orm::QueryResult, col: &str) -> Result<bool, StoreError> {
    Ok(get::<i32>(r, col)
        .map(i64::from)
        .or_else(|_| get::<i64>(r, col))?
        != 0)
}

/// A row of [`FACTS`] (or of a grouping of it) as a group of `names`.
fn group_row(r: &sea_orm::QueryResult, names: i64) -> Result<ReadinessGroup, StoreError> {
    Ok(ReadinessGroup {
        active_ca: get(r, "active_ca")?,
        standby_ca: get(r, "standby_ca")?,
        present: flag(r, "present")?,
        expired: flag(r, "expired")?,
        expiring: flag(r, "expiring")?,
        revoked: flag(r, "revoked")?,
        compromised: flag(r, "compromised")?,
        superseded: flag(r, "superseded")?,
        status_unknown: flag(r, "status_unknown")?,
        deploy_failing: flag(r, "deploy_failing")?,
        endpoint_unreachable: flag(r, "endpoint_unreachable")?,
        deployed: flag(r, "deployed")?,
        names,
    })
}

impl ReadinessGroup {
    /// Its facts in the order of [`FLAGS`].
    fn flags(&self) -> [bool; 10] {
        [
            self.present,
            self.expired,
            self.expiring,
            self.revoked,
            self.compromised,
            self.superseded,
            self.status_unknown,
            self.deploy_failing,
            self.endpoint_unreachable,
            self.deployed,
        ]
    }
}

impl Readiness {
    /// Names with an active certificate, grouped by their active CA and
    /// their standby's facts at `now` (expiring: before `window_end`).
    pub async fn groups(
        &self,
        now: i64,
        window_end: i64,
    ) -> Result<Vec<ReadinessGroup>, StoreError> {
        let cols = format!("active_ca, standby_ca, {}", FLAGS.join(", "));
        let rows = all(
            &self.db,
            &format!(
                "SELECT {cols}, COUNT(*) AS n FROM ({}) f GROUP BY {cols}",
                facts()
            ),
            vec![now.into(), window_end.into()],
        )
        .await?;
        rows.iter().map(|r| group_row(r, get(r, "n")?)).collect()
    }

    /// The facts of each name active on `ca`, one group of one per name,
    /// in name order after `after` (a drill classifies names one by one).
    pub async fn name_facts(
        &self,
        ca: &str,
        now: i64,
        window_end: i64,
        after: &str,
        limit: u64,
    ) -> Result<Vec<(String, ReadinessGroup)>, StoreError> {
        let rows = all(
            &self.db,
            &format!(
                "SELECT * FROM ({}) f WHERE active_ca = $3 AND name_id > $4 \
                 ORDER BY name_id LIMIT $5",
                facts()
            ),
            vec![
                now.into(),
                window_end.into(),
                ca.into(),
                after.into(),
                (limit as i64).into(),
            ],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "name_id")?, group_row(r, 1)?)))
            .collect()
    }

    /// Up to `limit` names of one group, in name order.
    pub async fn sample(
        &self,
        g: &ReadinessGroup,
        now: i64,
        window_end: i64,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut values: Vec<Value> = vec![
            now.into(),
            window_end.into(),
            g.active_ca.clone().into(),
            g.standby_ca.clone().unwrap_or_default().into(),
        ];
        let bits = g.flags();
        let mut filter = String::from("active_ca = $3 AND COALESCE(standby_ca, '') = $4");
        for (i, (col, bit)) in FLAGS.iter().zip(bits).enumerate() {
            filter.push_str(&format!(" AND {col} = ${}", i + 5));
            values.push(i32::from(bit).into());
        }
        values.push((limit as i64).into());
        let rows = all(
            &self.db,
            &format!(
                "SELECT name_id FROM ({}) f WHERE {filter} ORDER BY name_id LIMIT ${}",
                facts(),
                values.len()
            ),
            values,
        )
        .await?;
        rows.iter().map(|r| get(r, "name_id")).collect()
    }

    /// Milliseconds per name of the recent swaps (None before the first).
    pub async fn swap_ms_per_name(&self) -> Result<Option<f64>, StoreError> {
        let r = one(
            &self.db,
            "SELECT CAST(SUM(duration_ms) AS BIGINT) AS ms, \
             CAST(SUM(affected) AS BIGINT) AS names FROM (SELECT duration_ms, \
             affected FROM operations WHERE affected > 0 AND kind IN ('swap', 'distrust', \
             'incident', 'revocation') ORDER BY seq DESC LIMIT 20) t",
            vec![],
        )
        .await?;
        let Some(r) = r else { return Ok(None) };
        let ms: Option<i64> = get(&r, "ms")?;
        let names: Option<i64> = get(&r, "names")?;
        Ok(match (ms, names) {
            (Some(ms), Some(n)) if n > 0 => Some(ms as f64 / n as f64),
            _ => None,
        })
    }

    /// Mean seconds from requesting a deployment to its write, and from
    /// the write to an endpoint confirming it, over the last 100 (None
    /// before any).
    pub async fn deploy_seconds(&self) -> Result<(Option<f64>, Option<f64>), StoreError> {
        let r = one(
            &self.db,
            "SELECT CAST(AVG(deployed_at - requested_at) AS DOUBLE PRECISION) AS deploy, \
             CAST(AVG(CASE WHEN confirmed_at IS NOT NULL THEN confirmed_at - deployed_at END) \
             AS DOUBLE PRECISION) AS verify \
             FROM (SELECT requested_at, deployed_at, confirmed_at FROM deployments \
             WHERE deployed_at IS NOT NULL ORDER BY deployed_at DESC LIMIT 100) t",
            vec![],
        )
        .await?;
        let Some(r) = r else {
            return Ok((None, None));
        };
        Ok((get(&r, "deploy")?, get(&r, "verify")?))
    }

    /// A cheap token that changes when an emergency operation ran or a
    /// CA's trust changed (any replica).
    pub async fn fingerprint(&self) -> Result<String, StoreError> {
        let r = one(
            &self.db,
            "SELECT (SELECT MAX(seq) FROM operations) AS ops, \
             (SELECT MAX(updated_at) FROM ca_status) AS trust",
            vec![],
        )
        .await?;
        let Some(r) = r else {
            return Ok(String::new());
        };
        let ops: Option<i64> = get(&r, "ops")?;
        let trust: Option<i64> = get(&r, "trust")?;
        Ok(format!("{ops:?}/{trust:?}"))
    }

    /// Stores the latest report (one row).
    pub async fn save(&self, report: &ReadinessReport) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(|e| StoreError::Db(e.to_string()))?;
        exec(
            &self.db,
            "INSERT INTO readiness (id, computed_at, report) VALUES ('latest', $1, $2) \
             ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at, \
             report = excluded.report",
            vec![report.computed_at.into(), json.into()],
        )
        .await?;
        Ok(())
    }

    /// The latest report, if one was computed.
    pub async fn latest(&self) -> Result<Option<ReadinessReport>, StoreError> {
        let Some(r) = one(
            &self.db,
            "SELECT report FROM readiness WHERE id = 'latest'",
            vec![],
        )
        .await?
        else {
            return Ok(None);
        };
        let text: String = get(&r, "report")?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Db(format!("stored readiness report: {e}")))
    }
}
