//! Alerts and their delivery: raised once per kind and subject (a repeat
//! counts up), resolved when the condition is gone, handed to the
//! notifier with reminders rate-limited, every delivery attempt recorded.

use sea_orm::{DatabaseConnection, Value};

use super::StoreError;
use super::sql::{all, exec, get, holes, json_col, new_id, one};
use super::status::CHUNK;

/// Alerts and their delivery records.
#[derive(Clone)]
pub struct Alerts {
    pub(super) db: DatabaseConnection,
}

/// An alert to deliver.
#[derive(Debug, Clone)]
pub struct PendingAlert {
    pub alert: super::Alert,
    /// Notified before (a reminder), or new.
    pub reminder: bool,
}

/// A recorded alert. Open alerts are unique per (kind, subject): a
/// condition seen again raises `count` and `last_at`, not a new alert.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Its id.
    pub id: String,
    /// `certificate_revoked`, `crl_invalid`, `ocsp_unknown`,
    /// `ocsp_invalid`, `ca_incident`, `expiry_soon`, `no_standby`, …
    pub kind: String,
    /// What it is about: `name/slot`, a CA id, a CRL URL.
    pub subject: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// One line for people.
    pub message: String,
    /// Evidence, as JSON.
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    /// Unix seconds.
    pub first_at: i64,
    /// Unix seconds.
    pub last_at: i64,
    /// Times raised while open.
    pub count: i64,
    /// Unix seconds, once the condition is gone.
    pub resolved_at: Option<i64>,
}

pub(super) fn alert_row(r: &sea_orm::QueryResult) -> Result<Alert, StoreError> {
    Ok(Alert {
        id: get(r, "id")?,
        kind: get(r, "kind")?,
        subject: get(r, "subject")?,
        severity: get(r, "severity")?,
        message: get(r, "message")?,
        details: json_col(r, "details")?,
        first_at: get(r, "first_at")?,
        last_at: get(r, "last_at")?,
        count: get(r, "count")?,
        resolved_at: get(r, "resolved_at")?,
    })
}

impl Alerts {
    /// Open alerts nobody was told about yet, and open ones raised again
    /// since the last notice once `remind_after` seconds have passed.
    pub async fn alerts_to_notify(
        &self,
        now: i64,
        remind_after: i64,
        limit: u64,
    ) -> Result<Vec<PendingAlert>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT * FROM alerts a WHERE resolved_at IS NULL \
             AND (notify_after IS NULL OR notify_after <= $3) AND ( \
               (notified_at IS NULL AND NOT EXISTS (SELECT 1 FROM alerts o WHERE \
                 o.kind = a.kind AND o.subject = a.subject AND o.id <> a.id AND o.notified_at > $1)) \
               OR (last_at > notified_at AND notified_at <= $1)) \
             ORDER BY first_at LIMIT $2",
            vec![(now - remind_after).into(), (limit as i64).into(), now.into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingAlert {
                    alert: alert_row(r)?,
                    reminder: get::<Option<i64>>(r, "notified_at")?.is_some(),
                })
            })
            .collect()
    }

    /// Records one delivery attempt of an alert.
    pub async fn record_notification(
        &self,
        alert_id: &str,
        channel: &str,
        recipient: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "INSERT INTO notifications (id, alert_id, channel, recipient, at, ok, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                new_id().into(),
                alert_id.into(),
                channel.into(),
                recipient.into(),
                now.into(),
                error.is_none().into(),
                error.map(str::to_string).into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// No channel delivered the alert: try again at `at`.
    pub async fn defer_notification(&self, alert_id: &str, at: i64) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE alerts SET notify_after = $2 WHERE id = $1",
            vec![alert_id.into(), at.into()],
        )
        .await?;
        Ok(())
    }

    /// Closes every open alert of these kinds (one-shot events when
    /// nobody is to be told).
    pub async fn resolve_open_alerts_of(
        &self,
        kinds: &[&str],
        now: i64,
    ) -> Result<u64, StoreError> {
        let holes: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let mut values: Vec<sea_orm::Value> = vec![now.into()];
        values.extend(kinds.iter().map(|k| sea_orm::Value::from(*k)));
        exec(
            &self.db,
            &format!(
                "UPDATE alerts SET resolved_at = $1 WHERE resolved_at IS NULL AND kind IN ({})",
                holes.join(", ")
            ),
            values,
        )
        .await
    }

    /// The alert was delivered at `now`.
    pub async fn mark_notified(&self, alert_id: &str, now: i64) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE alerts SET notified_at = $2, notify_after = NULL WHERE id = $1",
            vec![alert_id.into(), now.into()],
        )
        .await?;
        Ok(())
    }

    // ----- alerts ------------------------------------------------------------

    /// Raises alert (kind, subject): a new one, or the open one again
    /// (count + 1, latest message and details). True when it is new — the
    /// caller tells people only then.
    pub async fn raise_alert(
        &self,
        kind: &str,
        subject: &str,
        severity: &str,
        message: &str,
        details: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let details = details.map(|d| d.to_string());
        let n = exec(
            &self.db,
            "UPDATE alerts SET last_at = $3, count = count + 1, message = $4, details = $5, \
             severity = $6 WHERE kind = $1 AND subject = $2 AND resolved_at IS NULL",
            vec![
                kind.into(),
                subject.into(),
                now.into(),
                message.into(),
                details.clone().into(),
                severity.into(),
            ],
        )
        .await?;
        if n > 0 {
            return Ok(false);
        }
        let n = exec(
            &self.db,
            "INSERT INTO alerts (id, kind, subject, severity, message, details, first_at, \
             last_at, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1) ON CONFLICT DO NOTHING",
            vec![
                new_id().into(),
                kind.into(),
                subject.into(),
                severity.into(),
                message.into(),
                details.into(),
                now.into(),
            ],
        )
        .await?;
        Ok(n == 1)
    }

    /// Resolves the open alerts of `kind` whose subject is not in `still`
    /// (the condition is gone); returns how many.
    pub async fn resolve_alerts_except(
        &self,
        kind: &str,
        still: &[String],
        now: i64,
    ) -> Result<u64, StoreError> {
        let open = all(
            &self.db,
            "SELECT subject FROM alerts WHERE kind = $1 AND resolved_at IS NULL",
            vec![kind.into()],
        )
        .await?;
        let still: std::collections::HashSet<&String> = still.iter().collect();
        let mut n = 0;
        for r in &open {
            let subject: String = get(r, "subject")?;
            if !still.contains(&subject) {
                n += exec(
                    &self.db,
                    "UPDATE alerts SET resolved_at = $3 WHERE kind = $1 AND subject = $2 \
                     AND resolved_at IS NULL",
                    vec![kind.into(), subject.into(), now.into()],
                )
                .await?;
            }
        }
        Ok(n)
    }

    /// Resolves the open alerts of `kind` about `subjects`.
    pub async fn resolve_alerts(
        &self,
        kind: &str,
        subjects: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        for chunk in subjects.chunks(CHUNK) {
            let mut values: Vec<Value> = vec![kind.into(), now.into()];
            values.extend(chunk.iter().map(|n| Value::from(n.clone())));
            exec(
                &self.db,
                &format!(
                    "UPDATE alerts SET resolved_at = $2 WHERE kind = $1 \
                     AND resolved_at IS NULL AND subject IN ({})",
                    holes(3, chunk.len())
                ),
                values,
            )
            .await?;
        }
        Ok(())
    }

    /// Resolves `certificate_revoked` alerts whose slot no longer holds a
    /// revoked certificate (it was re-issued, or the name is gone): the
    /// open alerts are read, their slots looked up by key.
    pub async fn resolve_revoked_alerts(&self, now: i64) -> Result<u64, StoreError> {
        let open = all(
            &self.db,
            "SELECT subject FROM alerts WHERE kind = 'certificate_revoked' \
             AND resolved_at IS NULL",
            vec![],
        )
        .await?;
        let mut gone = Vec::new();
        for r in &open {
            let subject: String = get(r, "subject")?;
            let Some((name, slot)) = subject.rsplit_once('/') else {
                continue;
            };
            let still = one(
                &self.db,
                "SELECT 1 AS x FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                 WHERE s.name_id = $1 AND s.slot = $2 AND c.revoked_at IS NOT NULL",
                vec![name.into(), slot.into()],
            )
            .await?;
            if still.is_none() {
                gone.push(subject);
            }
        }
        self.resolve_alerts("certificate_revoked", &gone, now)
            .await?;
        Ok(gone.len() as u64)
    }

    /// Alerts, most recently raised first; only open ones with `open_only`.
    pub async fn list(&self, open_only: bool, limit: u64) -> Result<Vec<Alert>, StoreError> {
        let filter = if open_only {
            "WHERE resolved_at IS NULL"
        } else {
            ""
        };
        let rows = all(
            &self.db,
            &format!("SELECT * FROM alerts {filter} ORDER BY last_at DESC, id LIMIT $1"),
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter().map(alert_row).collect()
    }
}
