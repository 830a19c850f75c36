//! CA incidents: the signal (revocations and early renewals of one CA in
//! a window), opening one (once across replicas), its outcome (a CA-wide
//! swap or a stored dry run), and closing it.

use sea_orm::DatabaseConnection;

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::sql::{all, exec, get, json_col, one, with_tx};

/// CA incidents.
#[derive(Clone)]
pub struct Incidents {
    pub(super) db: DatabaseConnection,
}

/// A CA-level incident: many of one CA's certificates revoked or moved
/// into early renewal within a time window.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Incident {
    /// Its id.
    pub id: String,
    /// The CA.
    pub ca_id: String,
    /// `open` or `closed`.
    pub state: String,
    /// `swap` (the CA-wide swap ran) or `manual` (a dry run waits).
    pub policy: String,
    /// Certificates found revoked within the window.
    pub revoked: i64,
    /// Certificates whose ARI window moved into the past within it.
    pub ari_past: i64,
    /// The CA's current certificates.
    pub total: i64,
    /// The window, seconds.
    pub window_seconds: i64,
    /// One line for people.
    pub summary: String,
    /// The CA-wide swap's operation (policy `swap`).
    pub operation_id: Option<String>,
    /// The CA-wide swap's dry run (policy `manual`).
    #[schema(value_type = Option<Object>)]
    pub dry_run: Option<serde_json::Value>,
    /// Unix seconds.
    pub opened_at: i64,
    /// Unix seconds.
    pub closed_at: Option<i64>,
    /// Who closed it.
    pub closed_by: Option<String>,
    /// Why.
    pub close_reason: Option<String>,
}

pub(super) fn incident_row(r: &sea_orm::QueryResult) -> Result<Incident, StoreError> {
    Ok(Incident {
        id: get(r, "id")?,
        ca_id: get(r, "ca_id")?,
        state: get(r, "state")?,
        policy: get(r, "policy")?,
        revoked: get(r, "revoked")?,
        ari_past: get(r, "ari_past")?,
        total: get(r, "total")?,
        window_seconds: get(r, "window_seconds")?,
        summary: get(r, "summary")?,
        operation_id: get(r, "operation_id")?,
        dry_run: json_col(r, "dry_run")?,
        opened_at: get(r, "opened_at")?,
        closed_at: get(r, "closed_at")?,
        closed_by: get(r, "closed_by")?,
        close_reason: get(r, "close_reason")?,
    })
}

impl Incidents {
    // ----- CA incidents ----------------------------------------------------

    /// For CA `ca`: its certificates found revoked since `since`, those
    /// whose ARI window moved into the past since then (counted whether or
    /// not they were replaced meanwhile: a mass revocation spread over the
    /// window must still add up), and its current certificates.
    pub async fn incident_signal(
        &self,
        ca: &str,
        since: i64,
    ) -> Result<(i64, i64, i64), StoreError> {
        let count = |sql: &'static str| {
            let values = vec![ca.into(), since.into()];
            async move {
                let row = one(&self.db, sql, values)
                    .await?
                    .ok_or_else(|| StoreError::Db("COUNT returned no row".into()))?;
                get::<i64>(&row, "n")
            }
        };
        let revoked = count(
            "SELECT COUNT(*) AS n FROM certificates \
             WHERE ca_id = $1 AND revocation_detected_at >= $2",
        )
        .await?;
        let ari_past = count(
            "SELECT COUNT(*) AS n FROM certificates WHERE ca_id = $1 AND ari_past_at >= $2 \
             AND revocation_detected_at IS NULL",
        )
        .await?;
        let total = count(
            "SELECT COUNT(*) AS n FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
             WHERE c.ca_id = $1 AND CAST($2 AS BIGINT) IS NOT NULL",
        )
        .await?;
        Ok((revoked, ari_past, total))
    }

    /// When the CA's last incident was closed (signals from before it do
    /// not open a new one).
    pub async fn last_incident_closed_at(&self, ca: &str) -> Result<Option<i64>, StoreError> {
        let row = one(
            &self.db,
            "SELECT MAX(closed_at) AS t FROM ca_incidents WHERE ca_id = $1",
            vec![ca.into()],
        )
        .await?;
        Ok(match row {
            Some(r) => get(&r, "t")?,
            None => None,
        })
    }

    /// Open incidents whose outcome (CA-wide swap or dry run) was never
    /// recorded: the process stopped in between; the next pass finishes
    /// them.
    pub async fn incidents_without_outcome(&self) -> Result<Vec<Incident>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT * FROM ca_incidents WHERE state = 'open' AND operation_id IS NULL \
             AND dry_run IS NULL",
            vec![],
        )
        .await?;
        rows.iter().map(incident_row).collect()
    }

    /// The open incident of a CA, if any.
    pub async fn open_incident(&self, ca: &str) -> Result<Option<Incident>, StoreError> {
        one(
            &self.db,
            "SELECT * FROM ca_incidents WHERE ca_id = $1 AND state = 'open'",
            vec![ca.into()],
        )
        .await?
        .map(|r| incident_row(&r))
        .transpose()
    }

    /// Opens an incident; false when the CA already has an open one
    /// (another replica was first).
    pub async fn create_incident(
        &self,
        i: &Incident,
        evidence: &serde_json::Value,
        actor: &str,
    ) -> Result<bool, StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                "INSERT INTO ca_incidents (id, ca_id, state, policy, revoked, ari_past, total, \
             window_seconds, summary, operation_id, dry_run, opened_at) \
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                vec![
                    i.id.clone().into(),
                    i.ca_id.clone().into(),
                    i.policy.clone().into(),
                    i.revoked.into(),
                    i.ari_past.into(),
                    i.total.into(),
                    i.window_seconds.into(),
                    i.summary.clone().into(),
                    i.operation_id.clone().into(),
                    i.dry_run.as_ref().map(|v| v.to_string()).into(),
                    i.opened_at.into(),
                ],
            )
            .await?;
            if n == 1 {
                insert_audit(
                    tx,
                    &AuditEvent {
                        at: i.opened_at,
                        actor: actor.into(),
                        action: "ca.incident".into(),
                        target: i.ca_id.clone(),
                        reason: Some(i.summary.clone()),
                        result: format!("opened ({})", i.policy),
                        details: Some(
                            serde_json::json!({
                                "incident": i.id,
                                "revoked": i.revoked,
                                "ari_past": i.ari_past,
                                "total": i.total,
                                "window_seconds": i.window_seconds,
                                "evidence": evidence,
                            })
                            .to_string(),
                        ),
                    },
                )
                .await?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Attaches the CA-wide swap's operation or dry run to an incident.
    pub async fn set_incident_outcome(
        &self,
        id: &str,
        operation_id: Option<&str>,
        dry_run: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE ca_incidents SET operation_id = $2, dry_run = $3 WHERE id = $1",
            vec![
                id.into(),
                operation_id.map(str::to_string).into(),
                dry_run.map(|v| v.to_string()).into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Incidents, newest first.
    pub async fn list(&self, limit: u64) -> Result<Vec<Incident>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT * FROM ca_incidents ORDER BY opened_at DESC, id LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter().map(incident_row).collect()
    }

    /// One incident.
    pub async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        one(
            &self.db,
            "SELECT * FROM ca_incidents WHERE id = $1",
            vec![id.into()],
        )
        .await?
        .map(|r| incident_row(&r))
        .transpose()
    }

    /// Closes an open incident (an operator handled it); automatic
    /// reactions for its CA resume. `None` when there is no such open one.
    pub async fn close_incident(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<Incident>, StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                "UPDATE ca_incidents SET state = 'closed', closed_at = $2, closed_by = $3, \
             close_reason = $4 WHERE id = $1 AND state = 'open'",
                vec![id.into(), now.into(), actor.into(), reason.into()],
            )
            .await?;
            if n == 0 {
                return Ok(None);
            }
            let row = one(
                tx,
                "SELECT * FROM ca_incidents WHERE id = $1",
                vec![id.into()],
            )
            .await?
            .ok_or_else(|| StoreError::Db("incident vanished".into()))?;
            let inc = incident_row(&row)?;
            insert_audit(
                tx,
                &AuditEvent {
                    at: now,
                    actor: actor.into(),
                    action: "ca.incident_close".into(),
                    target: inc.ca_id.clone(),
                    reason: Some(reason.into()),
                    result: "closed".into(),
                    details: Some(serde_json::json!({ "incident": id }).to_string()),
                },
            )
            .await?;
            exec(
                tx,
                "UPDATE alerts SET resolved_at = $2 WHERE kind = 'ca_incident' AND subject = $1 \
             AND resolved_at IS NULL",
                vec![inc.ca_id.clone().into(), now.into()],
            )
            .await?;
            Ok(Some(inc))
        })
        .await
    }
}
