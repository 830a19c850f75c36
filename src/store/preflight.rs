//! Preflight outcomes: the latest report of each name (as JSON), with its
//! finding counts kept in indexed columns so `/metrics` counts names with
//! findings by index, and the CA pair the report was made for. A name is
//! due when it has no report (new), or its report is older than the
//! interval — or was made for another CA pair: re-provisioning marks it
//! stale in the transaction that moves the slot.

use sea_orm::DatabaseConnection;

use crate::domain::{PreflightReport, PreflightStatus};

use super::StoreError;
use super::sql::{all, exec, get, int, one};

/// Preflight reports per name.
#[derive(Clone)]
pub struct Preflights {
    pub(super) db: DatabaseConnection,
}

impl Preflights {
    /// Stores `report` as the latest of `name_id`, made for this CA pair.
    /// A name deleted meanwhile stores nothing.
    pub async fn save(
        &self,
        name_id: &str,
        cas: (&str, &str),
        report: &PreflightReport,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(|e| StoreError::Db(e.to_string()))?;
        exec(
            &self.db,
            "INSERT INTO preflight (name_id, checked_at, primary_ca, backup_ca, caa_findings, \
             delegation_findings, provider_findings, errors, report) \
             SELECT $1, $2, $3, $4, $5, $6, $9, $7, $8 WHERE EXISTS (SELECT 1 FROM names WHERE id = $1) \
             ON CONFLICT (name_id) DO UPDATE SET checked_at = excluded.checked_at, \
             primary_ca = excluded.primary_ca, backup_ca = excluded.backup_ca, \
             caa_findings = excluded.caa_findings, \
             delegation_findings = excluded.delegation_findings, \
             provider_findings = excluded.provider_findings, errors = excluded.errors, \
             report = excluded.report",
            vec![
                name_id.into(),
                report.checked_at.into(),
                cas.0.into(),
                cas.1.into(),
                report.count("caa", PreflightStatus::Finding).into(),
                report.count("delegation", PreflightStatus::Finding).into(),
                (report
                    .checks
                    .iter()
                    .filter(|c| c.status == PreflightStatus::Error)
                    .count() as i64)
                    .into(),
                json.into(),
                report.count("provider", PreflightStatus::Finding).into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The latest report of `name_id`, if it was checked.
    pub async fn latest(&self, name_id: &str) -> Result<Option<PreflightReport>, StoreError> {
        let Some(r) = one(
            &self.db,
            "SELECT report FROM preflight WHERE name_id = $1",
            vec![name_id.into()],
        )
        .await?
        else {
            return Ok(None);
        };
        let text: String = get(&r, "report")?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Db(format!("stored preflight report of {name_id}: {e}")))
    }

    /// Up to `limit` names never checked (new names) created at or after
    /// `created_since`, any order: through the `names_created` index, an
    /// anti-join over the names created since then only. `i64::MIN` reads
    /// every name (the controller's full sweep: at start and once per
    /// check interval, for names restored from a backup with their old
    /// creation times).
    pub async fn never_checked(
        &self,
        created_since: i64,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT n.id AS id FROM names n WHERE n.created_at >= $1 AND NOT EXISTS \
             (SELECT 1 FROM preflight p WHERE p.name_id = n.id) LIMIT $2",
            vec![
                created_since.into(),
                (limit.min(i64::MAX as u64) as i64).into(),
            ],
        )
        .await?;
        rows.iter().map(|r| get(r, "id")).collect()
    }

    /// Up to `limit` names last checked at or before `stale_before`,
    /// oldest first (through the `checked_at` index). A name whose CA pair
    /// changed is among them at once: re-provisioning sets its `checked_at`
    /// to 0 (`Operations::start_reprovision`).
    pub async fn stale(&self, stale_before: i64, limit: u64) -> Result<Vec<String>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT name_id FROM preflight WHERE checked_at <= $1 \
             ORDER BY checked_at, name_id LIMIT $2",
            vec![
                stale_before.into(),
                (limit.min(i64::MAX as u64) as i64).into(),
            ],
        )
        .await?;
        rows.iter().map(|r| get(r, "name_id")).collect()
    }

    /// Names with at least one finding, per check kind (`caa`,
    /// `delegation`, `provider`), and names with a check that could not be made
    /// (`error`): each an index range count.
    pub async fn findings(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let mut out = Vec::new();
        for (check, column) in [
            ("caa", "caa_findings"),
            ("delegation", "delegation_findings"),
            ("provider", "provider_findings"),
            ("error", "errors"),
        ] {
            let r = one(
                &self.db,
                &format!("SELECT COUNT(*) AS n FROM preflight WHERE {column} > 0"),
                vec![],
            )
            .await?;
            let n = match r {
                Some(r) => int(&r, "n")?,
                None => 0,
            };
            out.push((check, n));
        }
        Ok(out)
    }
}
