//! Certificate standing at the CA: which certificates to check, where
//! their CRL/OCSP/ARI sources are, what a check found (revocations with
//! evidence, ARI windows), revocations not yet reacted to, and expiry
//! tracking of the slots.

use sea_orm::{DatabaseConnection, Value};

use crate::domain::Slot;

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::counts::{buckets_where, mark_buckets};
use super::names::refresh_swap_facts;
use super::sql::{all, exec, get, holes, int, json_col, with_tx};
use super::swap_scope::STANDBY_UNTIL;

/// Certificate standing checks (CRL/OCSP/ARI) and expiry tracking.
#[derive(Clone)]
pub struct Status {
    pub(super) db: DatabaseConnection,
}

/// The active slot's usable-until fact (0 once revoked or compromised).
pub(super) const ACTIVE_UNTIL: &str = "COALESCE(CASE n.active_slot WHEN 'primary' \
     THEN n.primary_usable_until ELSE n.backup_usable_until END, 0)";

/// Whether the standby slot's certificate was superseded by an emergency
/// operation and not yet re-issued (no real standby, however valid).
const STANDBY_SUPERSEDED: &str = "((CASE n.active_slot WHEN 'primary' THEN n.backup_superseded_by \
     ELSE n.primary_superseded_by END) IS NOT NULL)";

/// Most holes in one `IN (…)` list (PostgreSQL allows 65,535 binds).
pub(super) const CHUNK: usize = 500;

/// A current certificate whose standing the checker must establish.
#[derive(Debug, Clone)]
pub struct StatusTarget {
    /// Certificate row id.
    pub cert_id: String,
    /// Its name.
    pub name_id: String,
    /// Its slot.
    pub slot: Slot,
    /// The CA that issued it.
    pub ca_id: String,
    /// Leaf serial, lower-case hex of the DER integer's bytes.
    pub serial: String,
    /// Issuer DN (certificates of one issuer share a CRL and issuer key).
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// When the planner renews it.
    pub renew_after: i64,
    /// Whether its slot is the name's active one.
    pub active: bool,
    /// Space-separated CRL distribution points; `None` until read from
    /// the certificate, empty when it names none.
    pub crl_urls: Option<String>,
    /// OCSP responder (AIA); empty when none; `None` until read.
    pub ocsp_url: Option<String>,
    /// RFC 9773 certificate id; empty when it cannot have one (no AKI).
    pub ari_cert_id: Option<String>,
    /// When ARI may be asked again (Retry-After), unix seconds.
    pub ari_next_poll: Option<i64>,
    /// The last ARI window's start.
    pub ari_window_start: Option<i64>,
    /// The last recorded check: when, through which source, with which
    /// error (see [`Status::record_checks`]), so a pass writes only what
    /// changed instead of asking the store about every certificate.
    pub checked: Option<(i64, String, Option<String>)>,
}

impl StatusTarget {
    /// Whether a check outcome (`source`, `error`) must be written for this
    /// certificate: its recorded outcome differs, or it was last written
    /// before `fresh_after`. The same test as [`Status::record_checks`]'s,
    /// made on the row already read.
    pub fn needs_record(&self, source: &str, error: Option<&str>, fresh_after: i64) -> bool {
        match &self.checked {
            Some((at, s, e)) => {
                *at < fresh_after
                    || s != source
                    || e.as_deref().unwrap_or_default() != error.unwrap_or_default()
            }
            None => true,
        }
    }
}

/// A certificate a CRL or OCSP response says is revoked.
#[derive(Debug, Clone)]
pub struct RevocationFinding {
    /// Certificate row id.
    pub cert_id: String,
    /// The CA's revocation time, unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code.
    pub reason: Option<i64>,
    /// `crl` or `ocsp`.
    pub source: String,
    /// What showed it (CRL URL and number, OCSP producedAt, …).
    pub evidence: serde_json::Value,
}

/// A slot whose current certificate was just recorded as revoked.
#[derive(Debug, Clone)]
pub struct RevokedSlot {
    /// Certificate row id.
    pub cert_id: String,
    /// The name.
    pub name_id: String,
    /// The slot.
    pub slot: Slot,
    /// The issuing CA.
    pub ca_id: String,
    /// Whether it was the name's active certificate.
    pub active: bool,
    /// The finding's evidence (for the reaction's audit event).
    pub evidence: serde_json::Value,
}

impl Status {
    // ----- status checks -----------------------------------------------------

    /// The current, unexpired, not yet revoked certificates among the
    /// next `limit` slots after `after` (name, slot) in key order, and the
    /// cursor for the next page (`None` at the end). The page is an index
    /// range over the slots' primary key taken first (a plan that cannot
    /// turn into a scan), so a pass is linear in the number of slots and
    /// never visits replaced certificates.
    pub async fn status_targets(
        &self,
        after: Option<(&str, Slot)>,
        limit: u64,
        now: i64,
    ) -> Result<(Vec<StatusTarget>, Option<(String, Slot)>), StoreError> {
        let (name, slot) = after.map_or(("", ""), |(n, s)| (n, s.as_str()));
        let rows = all(
            &self.db,
            "SELECT s.name_id, s.slot, c.id, c.ca_id, c.serial, c.issuer, c.not_before, \
             c.not_after, c.renew_after, c.revoked_at, \
             CASE WHEN s.slot = n.active_slot THEN 1 ELSE 0 END AS active, \
             c.crl_urls, c.ocsp_url, c.ari_cert_id, c.ari_next_poll, c.ari_window_start, \
             c.status_checked_at, c.status_source, c.status_error \
             FROM (SELECT name_id, slot, current_cert_id FROM slots \
                   WHERE (name_id, slot) > ($1, $2) ORDER BY name_id, slot LIMIT $3) s \
             JOIN names n ON n.id = s.name_id \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             ORDER BY s.name_id, s.slot",
            vec![name.into(), slot.into(), (limit as i64).into()],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last: Option<(String, Slot)> = None;
        for r in &rows {
            let slot: String = get(r, "slot")?;
            let slot: Slot = slot.parse().map_err(StoreError::Db)?;
            let name_id: String = get(r, "name_id")?;
            last = Some((name_id.clone(), slot));
            let Some(cert_id) = get::<Option<String>>(r, "id")? else {
                continue;
            };
            let not_after: i64 = get(r, "not_after")?;
            if get::<Option<i64>>(r, "revoked_at")?.is_some() || not_after <= now {
                continue;
            }
            out.push(StatusTarget {
                cert_id,
                name_id,
                slot,
                ca_id: get(r, "ca_id")?,
                serial: get(r, "serial")?,
                issuer: get(r, "issuer")?,
                not_before: get(r, "not_before")?,
                not_after,
                renew_after: get(r, "renew_after")?,
                active: int(r, "active")? == 1,
                crl_urls: get(r, "crl_urls")?,
                ocsp_url: get(r, "ocsp_url")?,
                ari_cert_id: get(r, "ari_cert_id")?,
                ari_next_poll: get(r, "ari_next_poll")?,
                ari_window_start: get(r, "ari_window_start")?,
                checked: match (
                    get::<Option<i64>>(r, "status_checked_at")?,
                    get::<Option<String>>(r, "status_source")?,
                ) {
                    (Some(at), Some(source)) => Some((at, source, get(r, "status_error")?)),
                    _ => None,
                },
            });
        }
        let next = if rows.len() as u64 == limit {
            last
        } else {
            None
        };
        Ok((out, next))
    }

    /// Records where certificates' status comes from, read once from each
    /// certificate: (id, CRL URLs space-separated, OCSP URL, ARI id) — one
    /// statement per 500, joined by id (not a lookup per column and row).
    /// Certificates stored since issue 21 carry them from issuance
    /// ([`super::NewCertificate::status_sources`]); this fills older rows.
    pub async fn set_status_sources(
        &self,
        sources: &[(String, String, String, String)],
    ) -> Result<(), StoreError> {
        for chunk in sources.chunks(CHUNK) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
            let mut rows = Vec::with_capacity(chunk.len());
            for (i, (id, crls, ocsp, ari)) in chunk.iter().enumerate() {
                let b = i * 4;
                rows.push(format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
                values.extend([
                    Value::from(id.clone()),
                    crls.clone().into(),
                    ocsp.clone().into(),
                    ari.clone().into(),
                ]);
            }
            exec(
                &self.db,
                &format!(
                    "WITH v(id, crl, ocsp, ari) AS (VALUES {}) \
                     UPDATE certificates SET crl_urls = v.crl, ocsp_url = v.ocsp, \
                     ari_cert_id = v.ari FROM v WHERE certificates.id = v.id",
                    rows.join(", ")
                ),
                values,
            )
            .await?;
        }
        Ok(())
    }

    /// Records a status check of `ids` through `source` (`crl`, `ocsp`,
    /// `none`), with the error that kept it from deciding, if any. A row
    /// is written only when its outcome changed or its last record is
    /// older than `heartbeat` seconds: a pass over a million unchanged
    /// certificates writes almost nothing (`checked_at` is "confirmed at
    /// least this recently").
    pub async fn record_checks(
        &self,
        ids: &[String],
        source: &str,
        error: Option<&str>,
        now: i64,
        heartbeat: i64,
    ) -> Result<(), StoreError> {
        for chunk in ids.chunks(CHUNK) {
            let mut values: Vec<Value> = vec![
                now.into(),
                source.into(),
                error.map(str::to_string).into(),
                (now - heartbeat).into(),
            ];
            values.extend(chunk.iter().map(|i| Value::from(i.clone())));
            with_tx(&self.db, async |tx| {
                // The counts change only when a certificate's status class
                // does (first check, an error or no source appearing or
                // going), not at a heartbeat.
                let changed = buckets_where(
                    tx,
                    &format!(
                        "n.id IN (SELECT c.name_id FROM certificates c WHERE c.id IN ({}) \
                         AND CAST($1 AS BIGINT) IS NOT NULL AND CAST($4 AS BIGINT) IS NOT NULL \
                         AND (c.status_checked_at IS NULL \
                         OR (c.status_error IS NULL) <> (CAST($3 AS TEXT) IS NULL) \
                         OR (COALESCE(c.status_source, '') = 'none') <> (CAST($2 AS TEXT) = 'none')))",
                        holes(5, chunk.len())
                    ),
                    values.clone(),
                )
                .await?;
                exec(
                    tx,
                    &format!(
                        "UPDATE certificates SET status_checked_at = $1, status_source = $2, \
                         status_error = $3 WHERE id IN ({}) AND (status_checked_at IS NULL \
                         OR status_checked_at < $4 OR COALESCE(status_source, '') <> $2 \
                         OR COALESCE(status_error, '') <> COALESCE($3, ''))",
                        holes(5, chunk.len())
                    ),
                    values,
                )
                .await?;
                mark_buckets(tx, &changed).await
            })
            .await?;
        }
        Ok(())
    }

    /// Records revocations found by a check, in one transaction: each
    /// certificate gets its revocation time, reason, source and evidence,
    /// its name's swap facts stop offering it, and an audit event keeps
    /// the evidence. Returns the slots whose *current* certificate this
    /// newly marked (already known revocations are skipped).
    pub async fn record_revocations(
        &self,
        findings: &[RevocationFinding],
        actor: &str,
        now: i64,
    ) -> Result<Vec<RevokedSlot>, StoreError> {
        with_tx(&self.db, async |tx| {
            let mut out = Vec::new();
            for f in findings {
                let n = exec(
                    tx,
                    "UPDATE certificates SET revoked_at = $2, revocation_reason = $3, \
                 revocation_source = $4, revocation_evidence = $5, revocation_detected_at = $6, \
                 status_checked_at = $6, status_source = $4, status_error = NULL \
                 WHERE id = $1 AND revoked_at IS NULL",
                    vec![
                        f.cert_id.clone().into(),
                        f.revoked_at.into(),
                        f.reason.map(|r| r as i32).into(),
                        f.source.clone().into(),
                        f.evidence.to_string().into(),
                        now.into(),
                    ],
                )
                .await?;
                if n == 0 {
                    continue;
                }
                let rows = all(
                    tx,
                    "SELECT s.name_id, s.slot, c.ca_id, \
                 CASE WHEN s.slot = n.active_slot THEN 1 ELSE 0 END AS active \
                 FROM slots s JOIN names n ON n.id = s.name_id \
                 JOIN certificates c ON c.id = s.current_cert_id WHERE c.id = $1",
                    vec![f.cert_id.clone().into()],
                )
                .await?;
                for r in &rows {
                    let name: String = get(r, "name_id")?;
                    let slot: String = get(r, "slot")?;
                    let slot: Slot = slot.parse().map_err(StoreError::Db)?;
                    refresh_swap_facts(tx, &name, slot).await?;
                    let ca: String = get(r, "ca_id")?;
                    insert_audit(
                        tx,
                        &AuditEvent {
                            at: now,
                            actor: actor.into(),
                            action: "certificate.revoked_detected".into(),
                            target: format!("{name}/{slot}"),
                            reason: Some(format!("revoked at {ca} (seen in {})", f.source)),
                            result: "recorded".into(),
                            details: Some(
                                serde_json::json!({
                                    "certificate": f.cert_id,
                                    "ca": ca,
                                    "revoked_at": f.revoked_at,
                                    "reason": f.reason,
                                    "evidence": f.evidence,
                                })
                                .to_string(),
                            ),
                        },
                    )
                    .await?;
                    out.push(RevokedSlot {
                        cert_id: f.cert_id.clone(),
                        name_id: name,
                        slot,
                        ca_id: ca,
                        active: int(r, "active")? == 1,
                        evidence: f.evidence.clone(),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Current certificates found revoked by a check whose reaction has
    /// not run yet (oldest detection first), with their evidence — except
    /// those of CAs whose incident waits for an operator (they would fill
    /// every page and starve the other CAs' reactions).
    pub async fn pending_reactions(&self, limit: u64) -> Result<Vec<RevokedSlot>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT c.id, s.name_id, s.slot, c.ca_id, c.revocation_evidence, \
             CASE WHEN s.slot = n.active_slot THEN 1 ELSE 0 END AS active \
             FROM certificates c JOIN slots s ON s.current_cert_id = c.id \
             JOIN names n ON n.id = s.name_id \
             WHERE c.revocation_detected_at IS NOT NULL AND c.revocation_reacted_at IS NULL \
             AND c.ca_id NOT IN (SELECT ca_id FROM ca_incidents \
                 WHERE state = 'open' AND policy = 'manual') \
             ORDER BY c.revocation_detected_at, c.id LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let slot: String = get(r, "slot")?;
                Ok(RevokedSlot {
                    cert_id: get(r, "id")?,
                    name_id: get(r, "name_id")?,
                    slot: slot.parse().map_err(StoreError::Db)?,
                    ca_id: get(r, "ca_id")?,
                    active: int(r, "active")? == 1,
                    evidence: json_col(r, "revocation_evidence")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    // ----- ARI -----------------------------------------------------------------

    /// Records an ARI poll: the window, its explanation, when to ask again,
    /// and the renewal time chosen inside it (the planner renews at
    /// `renew_after`). `moved_past` marks the certificate as asked for
    /// early renewal (a CA-incident signal), once.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_ari(
        &self,
        cert_id: &str,
        window: (i64, i64),
        explanation_url: Option<&str>,
        next_poll: i64,
        renew_after: i64,
        moved_past: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            // An ARI window that opens (or moves) changes the counts; a poll
            // that finds the same window does not.
            let changed = buckets_where(
                tx,
                "n.id IN (SELECT c.name_id FROM certificates c WHERE c.id = $1 \
             AND (c.ari_window_start IS NULL OR c.ari_window_start <> $2))",
                vec![cert_id.into(), window.0.into()],
            )
            .await?;
            exec(
                tx,
                "UPDATE certificates SET ari_window_start = $2, ari_window_end = $3, \
             ari_explanation_url = $4, ari_next_poll = $5, renew_after = $6, \
             ari_checked_at = $7, \
             ari_past_at = CASE WHEN $8 AND ari_past_at IS NULL THEN $7 ELSE ari_past_at END \
             WHERE id = $1",
                vec![
                    cert_id.into(),
                    window.0.into(),
                    window.1.into(),
                    explanation_url.map(str::to_string).into(),
                    next_poll.into(),
                    renew_after.into(),
                    now.into(),
                    moved_past.into(),
                ],
            )
            .await?;
            mark_buckets(tx, &changed).await
        })
        .await
    }

    /// Records a failed ARI poll: ask again at `next_poll`.
    pub async fn ari_poll_failed(
        &self,
        cert_id: &str,
        next_poll: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE certificates SET ari_next_poll = $2, ari_checked_at = $3 WHERE id = $1",
            vec![cert_id.into(), next_poll.into(), now.into()],
        )
        .await?;
        Ok(())
    }

    // ----- expiry ------------------------------------------------------------

    /// Slots whose current certificate has less than `fraction` of its
    /// lifetime left (or has expired) although its renewal was due more
    /// than 2% of its lifetime ago: no renewal succeeded in time (a
    /// renewal at its normal point, or inside an ARI window around it, is
    /// not an alert).
    /// (name, slot, CA, not_after, the slot's last error).
    pub async fn expiring_slots(
        &self,
        now: i64,
        fraction: f64,
        limit: u64,
    ) -> Result<Vec<(String, Slot, String, i64, Option<String>)>, StoreError> {
        let per_mille = (fraction * 1000.0).round() as i64;
        let rows = all(
            &self.db,
            "SELECT s.name_id, s.slot, c.ca_id, c.not_after, s.last_error \
             FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
             WHERE (c.not_after - $1) * 1000 < (c.not_after - c.not_before) * $2 \
             AND (c.renew_after + (c.not_after - c.not_before) / 50) < $1 \
             ORDER BY c.not_after LIMIT $3",
            vec![now.into(), per_mille.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let slot: String = get(r, "slot")?;
                Ok((
                    get(r, "name_id")?,
                    slot.parse().map_err(StoreError::Db)?,
                    get(r, "ca_id")?,
                    get(r, "not_after")?,
                    get(r, "last_error")?,
                ))
            })
            .collect()
    }

    /// Keeps `names.standby_missing_since` true to the swap facts (and to
    /// a standby superseded by an emergency operation), and
    /// returns the names without a usable standby for longer than
    /// `max_seconds` or 1/`divisor` of their active certificate's
    /// lifetime, whichever is shorter (`policy::no_standby_alert_after`),
    /// with the time it started (at most `limit`).
    pub async fn track_standby(
        &self,
        now: i64,
        max_seconds: i64,
        divisor: i64,
        limit: u64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        with_tx(&self.db, async |tx| {
            let mut changed: Vec<i64> = Vec::new();
            for sql in [
                format!(
                    "UPDATE names AS n SET standby_missing_since = $1 \
                     WHERE n.standby_missing_since IS NULL \
                     AND (NOT ({STANDBY_UNTIL} > $1) OR {STANDBY_SUPERSEDED}) \
                     RETURNING count_bucket"
                ),
                format!(
                    "UPDATE names AS n SET standby_missing_since = NULL \
                     WHERE n.standby_missing_since IS NOT NULL AND {STANDBY_UNTIL} > $1 \
                     AND NOT {STANDBY_SUPERSEDED} RETURNING count_bucket"
                ),
            ] {
                for r in &all(tx, &sql, vec![now.into()]).await? {
                    changed.push(get(r, "count_bucket")?);
                }
            }
            mark_buckets(tx, &changed).await
        })
        .await?;
        let rows = all(
            &self.db,
            "SELECT n.id, n.standby_missing_since FROM names n \
             LEFT JOIN slots s ON s.name_id = n.id AND s.slot = n.active_slot \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             WHERE n.standby_missing_since IS NOT NULL \
             AND n.standby_missing_since <= $1 - (CASE \
               WHEN c.id IS NOT NULL AND (c.not_after - c.not_before) / $4 < $2 \
               THEN (c.not_after - c.not_before) / $4 ELSE $2 END) \
             ORDER BY n.standby_missing_since, n.id LIMIT $3",
            vec![
                now.into(),
                max_seconds.into(),
                (limit as i64).into(),
                divisor.max(1).into(),
            ],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "id")?, get(r, "standby_missing_since")?)))
            .collect()
    }
}
