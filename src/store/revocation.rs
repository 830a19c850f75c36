//! The store's side of revocation and renewal intelligence (issue 6): which
//! certificates to check, what a check found (revocations with their
//! evidence, ARI windows), the automatic reaction to revoked certificates
//! (one operation: flip, mark for re-provisioning, audit), CA-level
//! incidents, alerts, expiry tracking, and the singleton leases that let
//! exactly one replica run the periodic checks.

use sea_orm::{TransactionTrait, Value};

use super::operations::{FLIP, STANDBY_CA, STANDBY_UNTIL, insert_operation, mark_active_slot};
use super::{
    AuditEvent, Operation, Store, StoreError, all, exec, get, insert_audit, new_id, one,
    refresh_swap_facts,
};
use crate::domain::Slot;

/// The active slot's usable-until fact (0 once revoked or compromised).
const ACTIVE_UNTIL: &str = "COALESCE(CASE n.active_slot WHEN 'primary' \
     THEN n.primary_usable_until ELSE n.backup_usable_until END, 0)";

/// Most holes in one `IN (…)` list (PostgreSQL allows 65,535 binds).
const CHUNK: usize = 500;

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

/// What the automatic reaction to revoked certificates should do.
#[derive(Debug, Clone)]
pub struct Reaction {
    /// Operation kind: `revocation` or `incident`.
    pub kind: String,
    /// Why (names the evidence).
    pub reason: String,
    /// Who (`twincert:revocation-check`).
    pub actor: String,
    /// Names whose revoked active slot should flip to a usable standby.
    pub swap_names: Vec<String>,
    /// Slots to re-provision: (name, slot, the revoked certificate). A
    /// slot that meanwhile holds another certificate is left alone.
    pub reprovision: Vec<(String, Slot, String)>,
    /// Revoked certificates this reaction handles: marked reacted in the
    /// same transaction, so a crash before it leaves them pending.
    pub cert_ids: Vec<String>,
    /// The CA re-provisioning must avoid (CA incident), if any.
    pub avoid_ca: Option<String>,
    /// Evidence recorded in the audit event.
    pub evidence: serde_json::Value,
}

/// What a reaction did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReactionReport {
    /// The operation record.
    pub operation_id: Option<String>,
    /// Names flipped to their standby.
    pub swapped: i64,
    /// Names that had to stay on the revoked certificate (no usable
    /// standby); their active slot is re-provisioned first.
    pub not_swapped: i64,
    /// Slots marked for re-provisioning.
    pub marked: i64,
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

fn holes(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn int(row: &sea_orm::QueryResult, col: &str) -> Result<i64, StoreError> {
    get::<i32>(row, col)
        .map(i64::from)
        .or_else(|_| get::<i64>(row, col))
}

pub(super) fn json_col(
    row: &sea_orm::QueryResult,
    col: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let s: Option<String> = get(row, col)?;
    Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
}

fn incident_row(r: &sea_orm::QueryResult) -> Result<Incident, StoreError> {
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

impl Store {
    // ----- singleton leases ------------------------------------------------

    /// Takes or keeps the lease `name` for `owner` until `now + ttl`;
    /// false while another replica holds it. Periodic whole-store passes
    /// (revocation checks) run on one replica at a time this way.
    pub async fn singleton_lease(
        &self,
        name: &str,
        owner: &str,
        now: i64,
        ttl: i64,
    ) -> Result<bool, StoreError> {
        let n = exec(
            &self.db,
            "INSERT INTO singleton_leases (name, owner, expires_at) VALUES ($1, $2, $4) \
             ON CONFLICT (name) DO UPDATE SET owner = $2, expires_at = $4 \
             WHERE singleton_leases.owner = $2 OR singleton_leases.expires_at < $3",
            vec![name.into(), owner.into(), now.into(), (now + ttl).into()],
        )
        .await?;
        Ok(n == 1)
    }

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
             c.crl_urls, c.ocsp_url, c.ari_cert_id, c.ari_next_poll, c.ari_window_start \
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
            });
        }
        let next = if rows.len() as u64 == limit {
            last
        } else {
            None
        };
        Ok((out, next))
    }

    /// The PEM chains of certificates `ids` (those that exist), in one
    /// query per 500.
    pub async fn chain_pems(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let values: Vec<Value> = chunk.iter().map(|i| Value::from(i.clone())).collect();
            for r in &all(
                &self.db,
                &format!(
                    "SELECT id, chain_pem FROM certificates WHERE id IN ({})",
                    holes(1, chunk.len())
                ),
                values,
            )
            .await?
            {
                out.insert(get(r, "id")?, get(r, "chain_pem")?);
            }
        }
        Ok(out)
    }

    /// Records where certificates' status comes from, read once from each
    /// certificate: (id, CRL URLs space-separated, OCSP URL, ARI id) — one
    /// statement per 500.
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
                     UPDATE certificates SET \
                     crl_urls = (SELECT crl FROM v WHERE v.id = certificates.id), \
                     ocsp_url = (SELECT ocsp FROM v WHERE v.id = certificates.id), \
                     ari_cert_id = (SELECT ari FROM v WHERE v.id = certificates.id) \
                     WHERE id IN (SELECT id FROM v)",
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
            exec(
                &self.db,
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
        let tx = self.db.begin().await?;
        let mut out = Vec::new();
        for f in findings {
            let n = exec(
                &tx,
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
                &tx,
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
                refresh_swap_facts(&tx, &name, slot).await?;
                let ca: String = get(r, "ca_id")?;
                insert_audit(
                    &tx,
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
        tx.commit().await?;
        Ok(out)
    }

    /// The automatic reaction to revoked certificates, as one operation in
    /// one transaction: names whose active certificate is revoked flip to
    /// their standby where it is usable (not revoked, expired, compromised
    /// or from a distrusted CA); the revoked slots are marked for
    /// re-provisioning (those that could not flip go first); the operation
    /// record and an audit event carry the evidence.
    pub async fn react_to_revocations(
        &self,
        r: &Reaction,
        now: i64,
    ) -> Result<ReactionReport, StoreError> {
        let mut report = ReactionReport::default();
        if r.swap_names.is_empty() && r.reprovision.is_empty() && r.cert_ids.is_empty() {
            return Ok(report);
        }
        let op = new_id();
        let tx = self.db.begin().await?;
        for chunk in r.cert_ids.chunks(CHUNK) {
            let mut values: Vec<Value> = vec![now.into()];
            values.extend(chunk.iter().map(|n| Value::from(n.clone())));
            exec(
                &tx,
                &format!(
                    "UPDATE certificates SET revocation_reacted_at = $1 \
                     WHERE revocation_reacted_at IS NULL AND id IN ({})",
                    holes(2, chunk.len())
                ),
                values,
            )
            .await?;
        }
        if r.swap_names.is_empty() && r.reprovision.is_empty() {
            tx.commit().await?;
            return Ok(report);
        }
        for chunk in r.swap_names.chunks(CHUNK) {
            let mut values: Vec<Value> = vec![now.into(), op.clone().into()];
            values.extend(chunk.iter().map(|n| Value::from(n.clone())));
            report.swapped += exec(
                &tx,
                &format!(
                    "UPDATE names AS n SET {}, active_slot = {FLIP}, updated_at = $1 \
                     WHERE n.id IN ({}) AND {ACTIVE_UNTIL} = 0 AND {STANDBY_UNTIL} > $1 \
                     AND COALESCE({STANDBY_CA}, '') NOT IN \
                     (SELECT ca_id FROM ca_status WHERE distrusted = TRUE)",
                    mark_active_slot(2),
                    holes(3, chunk.len())
                ),
                values,
            )
            .await? as i64;
        }
        report.not_swapped = r.swap_names.len() as i64 - report.swapped;
        for slot in [Slot::Primary, Slot::Backup] {
            let certs: Vec<&String> = r
                .reprovision
                .iter()
                .filter(|(_, s, _)| *s == slot)
                .map(|(_, _, c)| c)
                .collect();
            let s = slot.as_str();
            for chunk in certs.chunks(CHUNK) {
                let mut values: Vec<Value> = vec![now.into(), op.clone().into()];
                values.extend(chunk.iter().map(|c| Value::from((*c).clone())));
                exec(
                    &tx,
                    &format!(
                        "UPDATE names SET {s}_reprovision_op = COALESCE({s}_reprovision_op, $2), \
                         updated_at = $1 WHERE id IN (SELECT name_id FROM slots \
                         WHERE slot = '{s}' AND current_cert_id IN ({}))",
                        holes(3, chunk.len())
                    ),
                    values,
                )
                .await?;
            }
        }
        let marked = one(
            &tx,
            "SELECT COUNT(*) AS a, \
             SUM(CASE WHEN primary_reprovision_op = $1 THEN 1 ELSE 0 END) + \
             SUM(CASE WHEN backup_reprovision_op = $1 THEN 1 ELSE 0 END) AS n \
             FROM names WHERE primary_reprovision_op = $1 OR backup_reprovision_op = $1",
            vec![op.clone().into()],
        )
        .await?;
        report.marked = match marked {
            Some(row) => get::<Option<i64>>(&row, "n")?.unwrap_or(0),
            None => 0,
        };
        if report.swapped == 0 && report.not_swapped == 0 && report.marked == 0 {
            // Nothing left to do (e.g. a CA-wide swap already marked these
            // slots): only the certificates are marked as reacted to.
            tx.commit().await?;
            return Ok(report);
        }
        let counts = serde_json::json!({
            "swap": report.swapped,
            "no_usable_standby": report.not_swapped,
            "reprovision": report.marked,
        });
        let scope = format!("names:{}", r.swap_names.len().max(r.reprovision.len()));
        insert_operation(
            &tx,
            &Operation {
                id: op.clone(),
                kind: r.kind.clone(),
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                scope: scope.clone(),
                avoid_ca: r.avoid_ca.clone(),
                counts: counts.clone(),
                affected: report.swapped,
                blocked: 0,
                reprovision_open: report.marked > 0,
                duration_ms: 0,
                created_at: now,
            },
        )
        .await?;
        insert_audit(
            &tx,
            &AuditEvent {
                at: now,
                actor: r.actor.clone(),
                action: format!("{}.react", r.kind),
                target: scope,
                reason: Some(r.reason.clone()),
                result: format!("swapped {}", report.swapped),
                details: Some(
                    serde_json::json!({
                        "operation": op,
                        "counts": counts,
                        "swap_names": r.swap_names,
                        "evidence": r.evidence,
                    })
                    .to_string(),
                ),
            },
        )
        .await?;
        tx.commit().await?;
        report.operation_id = Some(op);
        Ok(report)
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
        exec(
            &self.db,
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
        Ok(())
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

    /// The certificate an order renews, as PEM — when the slot's current
    /// certificate comes from the order's CA (ARI `replaces` is only valid
    /// within one CA and account).
    pub async fn renewal_source(&self, order_id: &str) -> Result<Option<String>, StoreError> {
        let row = one(
            &self.db,
            "SELECT c.chain_pem FROM orders o \
             JOIN slots s ON s.name_id = o.name_id AND s.slot = o.slot \
             JOIN certificates c ON c.id = s.current_cert_id \
             WHERE o.id = $1 AND c.ca_id = o.ca_id",
            vec![order_id.into()],
        )
        .await?;
        row.map(|r| get(&r, "chain_pem")).transpose()
    }

    /// Records the certificate id an order sent as ARI `replaces`.
    pub async fn set_order_replaces(
        &self,
        order_id: &str,
        cert_id: &str,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE orders SET replaces = $2 WHERE id = $1",
            vec![order_id.into(), cert_id.into()],
        )
        .await?;
        Ok(())
    }

    /// The `replaces` value of every order of a name's slot, oldest first
    /// (tests and support: did the renewal say what it replaced?).
    pub async fn order_replaces(
        &self,
        name_id: &str,
        slot: Slot,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT replaces FROM orders WHERE name_id = $1 AND slot = $2 ORDER BY created_at, id",
            vec![name_id.into(), slot.as_str().into()],
        )
        .await?;
        rows.iter().map(|r| get(r, "replaces")).collect()
    }

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
        let tx = self.db.begin().await?;
        let n = exec(
            &tx,
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
                &tx,
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
        tx.commit().await?;
        Ok(n == 1)
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
    pub async fn incidents(&self, limit: u64) -> Result<Vec<Incident>, StoreError> {
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
        let tx = self.db.begin().await?;
        let n = exec(
            &tx,
            "UPDATE ca_incidents SET state = 'closed', closed_at = $2, closed_by = $3, \
             close_reason = $4 WHERE id = $1 AND state = 'open'",
            vec![id.into(), now.into(), actor.into(), reason.into()],
        )
        .await?;
        if n == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = one(
            &tx,
            "SELECT * FROM ca_incidents WHERE id = $1",
            vec![id.into()],
        )
        .await?
        .ok_or_else(|| StoreError::Db("incident vanished".into()))?;
        let inc = incident_row(&row)?;
        insert_audit(
            &tx,
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
            &tx,
            "UPDATE alerts SET resolved_at = $2 WHERE kind = 'ca_incident' AND subject = $1 \
             AND resolved_at IS NULL",
            vec![inc.ca_id.clone().into(), now.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(inc))
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
    pub async fn alerts(&self, open_only: bool, limit: u64) -> Result<Vec<Alert>, StoreError> {
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

    /// Keeps `names.standby_missing_since` true to the swap facts, and
    /// returns the names without a usable standby since before `cutoff`
    /// with that time (at most `limit`).
    pub async fn track_standby(
        &self,
        now: i64,
        cutoff: i64,
        limit: u64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        exec(
            &self.db,
            &format!(
                "UPDATE names AS n SET standby_missing_since = $1 \
                 WHERE n.standby_missing_since IS NULL AND NOT ({STANDBY_UNTIL} > $1)"
            ),
            vec![now.into()],
        )
        .await?;
        exec(
            &self.db,
            &format!(
                "UPDATE names AS n SET standby_missing_since = NULL \
                 WHERE n.standby_missing_since IS NOT NULL AND {STANDBY_UNTIL} > $1"
            ),
            vec![now.into()],
        )
        .await?;
        let rows = all(
            &self.db,
            "SELECT id, standby_missing_since FROM names \
             WHERE standby_missing_since <= $1 ORDER BY standby_missing_since, id LIMIT $2",
            vec![cutoff.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "id")?, get(r, "standby_missing_since")?)))
            .collect()
    }

    // ----- metrics -----------------------------------------------------------

    /// Revocation/ARI/incident/alert figures for `/metrics`.
    pub async fn revocation_metrics(
        &self,
        now: i64,
    ) -> Result<Vec<super::metrics::Series>, StoreError> {
        let mut out = Vec::new();
        let rows = all(
            &self.db,
            "SELECT c.ca_id, \
             CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked' \
                  WHEN c.status_checked_at IS NULL THEN 'unchecked' \
                  WHEN c.status_error IS NOT NULL THEN 'undetermined' \
                  WHEN c.status_source = 'none' THEN 'no_source' \
                  ELSE 'good' END AS state, COUNT(*) AS n \
             FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
             GROUP BY c.ca_id, \
             CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked' \
                  WHEN c.status_checked_at IS NULL THEN 'unchecked' \
                  WHEN c.status_error IS NOT NULL THEN 'undetermined' \
                  WHEN c.status_source = 'none' THEN 'no_source' \
                  ELSE 'good' END",
            vec![],
        )
        .await?;
        for r in &rows {
            let ca: String = get(r, "ca_id")?;
            let state: String = get(r, "state")?;
            out.push((
                format!("twincert_certificates_by_status{{ca=\"{ca}\",state=\"{state}\"}}"),
                get(r, "n")?,
            ));
        }
        let rows = all(
            &self.db,
            "SELECT c.ca_id, MAX(c.status_checked_at) AS checked, MAX(c.ari_checked_at) AS ari, \
             SUM(CASE WHEN c.ari_window_start <= $1 AND c.revoked_at IS NULL THEN 1 ELSE 0 END) \
             AS ari_due \
             FROM slots s JOIN certificates c ON c.id = s.current_cert_id GROUP BY c.ca_id",
            vec![now.into()],
        )
        .await?;
        for r in &rows {
            let ca: String = get(r, "ca_id")?;
            if let Some(t) = get::<Option<i64>>(r, "checked")? {
                out.push((
                    format!("twincert_revocation_last_check_timestamp_seconds{{ca=\"{ca}\"}}"),
                    t,
                ));
            }
            if let Some(t) = get::<Option<i64>>(r, "ari")? {
                out.push((
                    format!("twincert_ari_last_poll_timestamp_seconds{{ca=\"{ca}\"}}"),
                    t,
                ));
            }
            out.push((
                format!("twincert_ari_window_open{{ca=\"{ca}\"}}"),
                get::<Option<i64>>(r, "ari_due")?.unwrap_or(0),
            ));
        }
        for r in &all(
            &self.db,
            "SELECT ca_id, COUNT(*) AS n FROM ca_incidents WHERE state = 'open' GROUP BY ca_id",
            vec![],
        )
        .await?
        {
            let ca: String = get(r, "ca_id")?;
            out.push((
                format!("twincert_ca_incidents_open{{ca=\"{ca}\"}}"),
                get(r, "n")?,
            ));
        }
        for r in &all(
            &self.db,
            "SELECT kind, COUNT(*) AS n FROM alerts WHERE resolved_at IS NULL GROUP BY kind",
            vec![],
        )
        .await?
        {
            let kind: String = get(r, "kind")?;
            out.push((
                format!("twincert_alerts_open{{kind=\"{kind}\"}}"),
                get(r, "n")?,
            ));
        }
        let row = one(
            &self.db,
            "SELECT COUNT(*) AS n FROM names WHERE standby_missing_since IS NOT NULL",
            vec![],
        )
        .await?;
        if let Some(r) = row {
            out.push((
                "twincert_names_without_usable_standby".into(),
                get(&r, "n")?,
            ));
        }
        Ok(out
            .into_iter()
            .map(|(k, v): (String, i64)| (k, v as f64))
            .collect())
    }
}
