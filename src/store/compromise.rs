//! Key compromise and re-keying, one name or many: mark the key
//! compromised, swap away from it where it is active, queue revocation at
//! the CA and a re-issue under a new key; and the automatic reaction to
//! certificates found revoked (one operation: flip, mark, audit).

use sea_orm::Value;
use std::time::Instant;

use crate::domain::Slot;

use super::StoreError;
use super::audit::{AuditDetails, AuditEvent, insert_audit};
use super::counts::{mark_certificates, mark_names};
use super::names::refresh_swap_facts;
use super::operations::{Operation, insert_operation};
use super::orders::insert_order_for;
use super::sql::{all, exec, get, holes, new_id, one, with_tx};
use super::status::{ACTIVE_UNTIL, CHUNK};
use super::swap::{Emergency, mark_active_slot};
use super::swap_scope::{FLIP, STANDBY_CA, STANDBY_UNTIL, SwapScope};

/// What a bulk compromise did.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct CompromiseReport {
    /// Keys marked compromised (a revocation and a re-issue queued each).
    pub compromised: i64,
    /// Names that swapped away from a compromised active key.
    pub swapped: i64,
    /// (target, error) for targets that could not be processed.
    pub errors: Vec<(String, String)>,
    /// The operation record.
    pub operation_id: String,
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

impl Emergency {
    /// Starts a mass re-key (Heartbleed-class): every name in `scope` must
    /// end with two certificates whose keys were made after `now`. The
    /// planner re-keys the standby first and the active slot only once the
    /// standby holds a new valid certificate, so a name always has one.
    /// Returns (names marked, operation id — none for a dry run).
    pub async fn start_rekey(
        &self,
        scope: &SwapScope,
        reason: &str,
        actor: &str,
        dry_run: bool,
        now: i64,
    ) -> Result<(i64, Option<String>), StoreError> {
        let started = Instant::now();
        let sql = scope.sql();
        let mut values: Vec<Value> = vec![now.into()];
        values.extend(sql.values);
        let names = format!(
            "SELECT n.id FROM names n WHERE {} AND CAST($1 AS BIGINT) IS NOT NULL",
            sql.filter
        );
        if dry_run {
            let row = one(
                &self.db,
                &format!("SELECT COUNT(*) AS n FROM ({names}) t"),
                values,
            )
            .await?;
            let n = match row {
                Some(r) => get(&r, "n")?,
                None => 0,
            };
            return Ok((n, None));
        }
        with_tx(&self.db, async |tx| {
            let op = new_id();
            let op_hole = values.len() + 1;
            values.push(op.clone().into());
            let marked = exec(
                tx,
                &format!(
                    "UPDATE names SET rekey_op = ${op_hole}, rekey_since = $1, updated_at = $1 \
                 WHERE id IN ({names})"
                ),
                values,
            )
            .await? as i64;
            insert_operation(
                tx,
                &Operation {
                    id: op.clone(),
                    kind: "rekey".into(),
                    actor: actor.into(),
                    reason: reason.into(),
                    scope: scope.describe(),
                    avoid_ca: None,
                    counts: serde_json::json!({ "marked": marked }),
                    affected: marked,
                    blocked: 0,
                    reprovision_open: false,
                    duration_ms: started.elapsed().as_millis() as i64,
                    created_at: now,
                },
            )
            .await?;
            insert_audit(
                tx,
                &AuditEvent::ok(
                    now,
                    actor,
                    "rekey.start",
                    scope.describe(),
                    Some(reason.into()),
                    Some(AuditDetails::Rekey {
                        operation: op.clone(),
                        names: marked.max(0) as u64,
                    }),
                ),
            )
            .await?;
            Ok((marked, Some(op)))
        })
        .await
    }

    /// Records key compromises for many slots: each target in its own
    /// transaction (see [`Store::report_compromise`]), so one bad target
    /// does not hold back the others; an operation record ties them
    /// together. Targets are `(name, slot)` pairs — the key each slot holds
    /// now — and SPKI hashes. A key already reported is listed as an error
    /// and left alone, so repeating a request changes nothing.
    pub async fn bulk_compromise(
        &self,
        names: &[(String, Slot)],
        spkis: &[String],
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<CompromiseReport, StoreError> {
        let started = Instant::now();
        let op = new_id();
        let mut report = CompromiseReport {
            operation_id: op.clone(),
            ..CompromiseReport::default()
        };
        let mut targets: Vec<(String, String, Result<Slot, StoreError>)> = names
            .iter()
            .map(|(name, slot)| (name.clone(), name.clone(), Ok(*slot)))
            .collect();
        for spki in spkis {
            let rows = all(
                &self.db,
                "SELECT s.name_id, s.slot FROM slots s JOIN certificates c \
                 ON c.id = s.current_cert_id WHERE c.spki_sha256 = $1",
                vec![spki.clone().into()],
            )
            .await?;
            if rows.is_empty() {
                report.errors.push((
                    format!("spki:{spki}"),
                    "no current certificate has this key".into(),
                ));
            }
            for r in &rows {
                let slot: String = get(r, "slot")?;
                targets.push((
                    format!("spki:{spki}"),
                    get(r, "name_id")?,
                    slot.parse().map_err(StoreError::Db),
                ));
            }
        }
        for (label, name, slot) in targets {
            let result = match slot {
                Ok(slot) => {
                    self.compromise_in(&name, slot, reason, actor, Some(&op), now)
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(swapped) => {
                    report.compromised += 1;
                    report.swapped += i64::from(swapped);
                }
                Err(StoreError::Db(e)) => return Err(StoreError::Db(e)),
                Err(e) => report.errors.push((label, e.to_string())),
            }
        }
        insert_operation(
            &self.db,
            &Operation {
                id: op.clone(),
                kind: "compromise".into(),
                actor: actor.into(),
                reason: reason.into(),
                scope: format!("names:{} spkis:{}", names.len(), spkis.len()),
                avoid_ca: None,
                counts: serde_json::json!({
                    "compromised": report.compromised,
                    "swapped": report.swapped,
                    "errors": report.errors.len(),
                }),
                affected: report.compromised,
                blocked: 0,
                reprovision_open: false,
                duration_ms: started.elapsed().as_millis() as i64,
                created_at: now,
            },
        )
        .await?;
        Ok(report)
    }

    /// Records a key compromise for one slot, in one transaction: the key is
    /// marked compromised (never used again); if the slot is active and the
    /// standby is usable, the name swaps away; a revocation job (reason 1)
    /// is queued for the worker; a re-issue order for the slot is opened
    /// (a fresh key, as for every order). Returns whether it swapped.
    pub async fn report_compromise(
        &self,
        name_id: &str,
        slot: Slot,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.compromise_in(name_id, slot, reason, actor, None, now)
            .await
    }

    pub(super) async fn compromise_in(
        &self,
        name_id: &str,
        slot: Slot,
        reason: &str,
        actor: &str,
        op: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_tx(&self.db, async |tx| {
            let row = one(
                tx,
                "SELECT n.active_slot, s.ca_id, c.id AS cert_id, c.private_key_id, c.spki_sha256, \
             k.compromised FROM names n JOIN slots s ON s.name_id = n.id AND s.slot = $2 \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             LEFT JOIN private_keys k ON k.id = c.private_key_id WHERE n.id = $1",
                vec![name_id.into(), slot.as_str().into()],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("name '{name_id}'")))?;
            let cert_id: Option<String> = get(&row, "cert_id")?;
            let cert_id = cert_id.ok_or_else(|| {
                StoreError::Conflict(format!("the {slot} slot of '{name_id}' has no certificate"))
            })?;
            if get::<Option<bool>>(&row, "compromised")? == Some(true) {
                // Reported before: its revocation and re-issue are queued.
                // Refusing keeps a repeated report from touching anything else.
                return Err(StoreError::Conflict(format!(
                    "the {slot} key of '{name_id}' is already reported compromised; its revocation \
                 and re-issue are under way"
                )));
            }
            let key_id: String = get(&row, "private_key_id")?;
            let ca_id: String = get(&row, "ca_id")?;
            let spki: String = get(&row, "spki_sha256")?;
            let active: String = get(&row, "active_slot")?;
            exec(
                tx,
                "UPDATE private_keys SET compromised = TRUE WHERE id = $1",
                vec![key_id.into()],
            )
            .await?;
            refresh_swap_facts(tx, name_id, slot).await?;
            let mut swapped = false;
            if active == slot.as_str() {
                let standby = one(
                tx,
                "SELECT c.not_after FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                 JOIN private_keys k ON k.id = c.private_key_id \
                 WHERE s.name_id = $1 AND s.slot = $2 AND k.compromised = FALSE \
                 AND c.revoked_at IS NULL",
                vec![name_id.into(), slot.other().as_str().into()],
            )
            .await?;
                let usable = match standby {
                    Some(r) => get::<i64>(&r, "not_after")? > now,
                    None => false,
                };
                if usable {
                    exec(
                        tx,
                        "UPDATE names SET active_slot = $2, updated_at = $3 WHERE id = $1",
                        vec![name_id.into(), slot.other().as_str().into(), now.into()],
                    )
                    .await?;
                    super::deploy::mark_name_due(tx, name_id, now).await?;
                    swapped = true;
                }
            }
            exec(
            tx,
            "INSERT INTO revocations (id, certificate_id, ca_id, chain_pem, reason_code, state, \
             created_at, updated_at) SELECT $1, c.id, c.ca_id, c.chain_pem, 1, 'pending', $3, $3 \
             FROM certificates c WHERE c.id = $2 ON CONFLICT DO NOTHING",
            vec![new_id().into(), cert_id.into(), now.into()],
        )
        .await?;
            // A re-issue right away, first in line: an open order for the slot
            // (a renewal) would reuse nothing of the compromised key anyway.
            insert_order_for(tx, name_id, slot, &ca_id, now, op, 0).await?;
            insert_audit(
                tx,
                &AuditEvent::ok(
                    now,
                    actor,
                    "name.compromise",
                    name_id,
                    Some(reason.into()),
                    Some(AuditDetails::Compromised {
                        slot,
                        spki_sha256: spki.clone(),
                        swapped,
                    }),
                ),
            )
            .await?;
            Ok(swapped)
        })
        .await
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
        with_tx(&self.db, async |tx| {
            for chunk in r.cert_ids.chunks(CHUNK) {
                let mut values: Vec<Value> = vec![now.into()];
                values.extend(chunk.iter().map(|n| Value::from(n.clone())));
                exec(
                    tx,
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
                return Ok(report);
            }
            for chunk in r.swap_names.chunks(CHUNK) {
                let mut values: Vec<Value> = vec![now.into(), op.clone().into()];
                values.extend(chunk.iter().map(|n| Value::from(n.clone())));
                report.swapped += exec(
                    tx,
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
            let swap_names: Vec<&str> = r.swap_names.iter().map(String::as_str).collect();
            mark_names(tx, &swap_names).await?;
            let certs: Vec<&str> = r.reprovision.iter().map(|(_, _, c)| c.as_str()).collect();
            mark_certificates(tx, &certs).await?;
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
                    tx,
                    &format!(
                        "UPDATE names SET {s}_reprovision_op = COALESCE({s}_reprovision_op, $2), \
                         {s}_superseded_by = COALESCE({s}_superseded_by, $2), \
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
                tx,
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
                return Ok(report);
            }
            let counts = serde_json::json!({
                "swap": report.swapped,
                "no_usable_standby": report.not_swapped,
                "reprovision": report.marked,
            });
            let scope = format!("names:{}", r.swap_names.len().max(r.reprovision.len()));
            insert_operation(
                tx,
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
                tx,
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
            report.operation_id = Some(op);
            Ok(report)
        })
        .await
    }
}
