//! Emergency operations as records (what a swap, distrust, re-key or
//! reaction did and how its re-provisioning progresses) and the
//! re-provisioner's side: which abandoned slots to re-issue, from which
//! CA, or why that is blocked.

use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::collections::BTreeMap;

use crate::domain::Slot;

use super::StoreError;
use super::counts::mark_names;
use super::orders::insert_order_for;
use super::sql::{all, exec, get, one, with_tx};
use super::swap_scope::{marked_by, rekeyed};

/// Operation records and re-provisioning.
#[derive(Clone)]
pub struct Operations {
    pub(super) db: DatabaseConnection,
}

/// One emergency operation as recorded.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Operation {
    /// Its id.
    pub id: String,
    /// `swap`, `distrust`, `rekey` or `compromise`.
    pub kind: String,
    /// Who ran it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// `ca:<id>`, `spki:<hex>`, `names:<n>`, `name:<id>` or `all`.
    pub scope: String,
    /// The CA re-provisioning avoids (CA-wide swap, distrust).
    pub avoid_ca: Option<String>,
    /// Outcome counts at the time of the operation.
    #[schema(value_type = Object)]
    pub counts: serde_json::Value,
    /// Names changed (flipped, marked for re-key, keys compromised).
    pub affected: i64,
    /// Slots that could not be re-provisioned (no eligible CA).
    pub blocked: i64,
    /// Whether slots it marked still wait to be re-provisioned.
    pub reprovision_open: bool,
    /// How long the operation's transaction took.
    pub duration_ms: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// How far the work an operation left behind has got.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct OperationProgress {
    /// Slots marked for re-provisioning that the worker has not taken yet.
    pub queued: i64,
    /// Its orders by state: pending, processing, valid, abandoned.
    pub orders: BTreeMap<String, i64>,
    /// Open orders whose last attempt failed (they are retried).
    pub failing: i64,
    /// Up to 5 (name, slot, last error) of failing orders.
    pub errors: Vec<(String, String, String)>,
    /// Re-key: names in the operation, and those whose both keys are new.
    pub rekey_total: i64,
    /// See `rekey_total`.
    pub rekey_done: i64,
    /// Slots whose re-provisioning order waits before its first attempt
    /// (re-issuing from the CA swapped away from after its hold-off).
    pub waiting: i64,
    /// Unix seconds: when the last of them starts.
    pub waiting_until: Option<i64>,
    /// Slots of the operation no CA can take now (their certificate is
    /// superseded and nothing re-issues it; retried when the workers
    /// start, so after another CA is configured).
    pub blocked: i64,
    /// Nothing left to do: no slot queued, waiting, ordering or blocked.
    pub done: bool,
    /// Its open orders per CA, by CA id.
    pub cas: Vec<CaOrders>,
}

/// An operation's open orders at one CA.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct CaOrders {
    /// The CA.
    pub ca: String,
    /// Open (pending or processing) orders there.
    pub open: i64,
    /// Of those, how many have a last error: a failed attempt (a
    /// `rateLimited` answer among them, see `errors`) or a deferral by
    /// twincert's own pacing.
    pub failing: i64,
    /// Unix seconds: the latest time one of them is held back to (the
    /// CA's `Retry-After`, a backoff, pacing or the same-CA hold-off);
    /// null when none is.
    pub retry_at: Option<i64>,
}

/// What the worker needs to re-provision one slot.
#[derive(Debug, Clone)]
pub struct ReprovisionJob {
    /// The name.
    pub name_id: String,
    /// The slot to re-order.
    pub slot: Slot,
    /// Whether that slot is the active one (the name has no usable
    /// standby; it goes first).
    pub is_active: bool,
    /// Its key type.
    pub key_type: String,
    /// The operation that asked for it.
    pub operation_id: String,
    /// The CA it must avoid besides the other slot's (CA-wide operations).
    pub avoid_ca: Option<String>,
    /// The CA the slot is on now.
    pub slot_ca: String,
    /// The other slot's CA.
    pub other_ca: String,
    /// When the operation ran, unix seconds.
    pub operation_at: i64,
    /// The name's challenge (`dns-persist-01` names may only move to CAs
    /// that offer it).
    pub challenge: String,
}

pub(super) async fn insert_operation<C: ConnectionTrait>(
    c: &C,
    op: &Operation,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO operations (id, kind, actor, reason, scope, avoid_ca, counts, affected, \
         blocked, reprovision_open, duration_ms, created_at, seq) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, \
         COALESCE(MAX(seq), 0) + 1 FROM operations",
        vec![
            op.id.clone().into(),
            op.kind.clone().into(),
            op.actor.clone().into(),
            op.reason.clone().into(),
            op.scope.clone().into(),
            op.avoid_ca.clone().into(),
            op.counts.to_string().into(),
            op.affected.into(),
            op.reprovision_open.into(),
            op.duration_ms.into(),
            op.created_at.into(),
        ],
    )
    .await?;
    // People hear of every executed swap: one alert per
    // operation, in the same transaction, delivered by the notifier.
    if op.affected > 0
        && matches!(
            op.kind.as_str(),
            "swap" | "distrust" | "revocation" | "incident"
        )
    {
        let details = serde_json::json!({
            "operation": op.id, "kind": op.kind, "scope": op.scope,
            "counts": op.counts, "actor": op.actor, "reason": op.reason,
        });
        exec(
            c,
            "INSERT INTO alerts (id, kind, subject, severity, message, details, first_at, \
             last_at, count) VALUES ($1, 'swap_executed', $2, 'warning', $3, $4, $5, $5, 1)",
            vec![
                super::new_id().into(),
                op.id.clone().into(),
                format!(
                    "swap executed: {} name(s) now serve their standby ({}, {} by {})",
                    op.affected, op.scope, op.kind, op.actor
                )
                .into(),
                details.to_string().into(),
                op.created_at.into(),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) fn operation_row(r: &sea_orm::QueryResult) -> Result<Operation, StoreError> {
    let counts: String = get(r, "counts")?;
    Ok(Operation {
        id: get(r, "id")?,
        kind: get(r, "kind")?,
        actor: get(r, "actor")?,
        reason: get(r, "reason")?,
        scope: get(r, "scope")?,
        avoid_ca: get(r, "avoid_ca")?,
        counts: serde_json::from_str(&counts).unwrap_or(serde_json::Value::Null),
        affected: get(r, "affected")?,
        blocked: get(r, "blocked")?,
        reprovision_open: get(r, "reprovision_open")?,
        duration_ms: get(r, "duration_ms")?,
        created_at: get(r, "created_at")?,
    })
}

impl Operations {
    /// Operations, newest first.
    pub async fn list(&self, limit: u64) -> Result<Vec<Operation>, StoreError> {
        all(
            &self.db,
            "SELECT id, kind, actor, reason, scope, avoid_ca, counts, affected, blocked, \
             reprovision_open, duration_ms, created_at FROM operations ORDER BY seq DESC LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?
        .iter()
        .map(operation_row)
        .collect()
    }

    /// One operation and how far its work has got.
    pub async fn operation(
        &self,
        id: &str,
    ) -> Result<Option<(Operation, OperationProgress)>, StoreError> {
        let Some(row) = one(
            &self.db,
            "SELECT id, kind, actor, reason, scope, avoid_ca, counts, affected, blocked, \
             reprovision_open, duration_ms, created_at FROM operations WHERE id = $1",
            vec![id.into()],
        )
        .await?
        else {
            return Ok(None);
        };
        let op = operation_row(&row)?;
        let mut p = OperationProgress::default();
        if op.reprovision_open
            && let Some(r) = one(
                &self.db,
                &format!(
                    "SELECT SUM(CASE WHEN primary_reprovision_op = $1 THEN 1 ELSE 0 END \
                     + CASE WHEN backup_reprovision_op = $1 THEN 1 ELSE 0 END) AS n \
                     FROM names WHERE {}",
                    marked_by(1)
                ),
                vec![id.into()],
            )
            .await?
        {
            p.queued = get::<Option<i64>>(&r, "n")?.unwrap_or(0);
        }
        for r in all(
            &self.db,
            "SELECT state, COUNT(*) AS n, \
             SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END) AS failing \
             FROM orders WHERE operation_id = $1 GROUP BY state",
            vec![id.into()],
        )
        .await?
        {
            let state: String = get(&r, "state")?;
            let failing: Option<i64> = get(&r, "failing")?;
            if state == "pending" || state == "processing" {
                p.failing += failing.unwrap_or(0);
            }
            p.orders.insert(state, get(&r, "n")?);
        }
        for r in all(
            &self.db,
            "SELECT name_id, slot, last_error FROM orders WHERE operation_id = $1 \
             AND state IN ('pending', 'processing') AND last_error IS NOT NULL \
             ORDER BY name_id LIMIT 5",
            vec![id.into()],
        )
        .await?
        {
            p.errors.push((
                get(&r, "name_id")?,
                get(&r, "slot")?,
                get(&r, "last_error")?,
            ));
        }
        if op.kind == "rekey"
            && let Some(r) = one(
                &self.db,
                &format!(
                    "SELECT COUNT(*) AS total, SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM slots s \
                     LEFT JOIN certificates c ON c.id = s.current_cert_id WHERE s.name_id = n.id \
                     AND (c.id IS NULL OR NOT {})) THEN 1 ELSE 0 END) AS done \
                     FROM names n WHERE n.rekey_op = $1",
                    rekeyed("c")
                ),
                vec![id.into()],
            )
            .await?
        {
            p.rekey_total = get(&r, "total")?;
            p.rekey_done = get::<Option<i64>>(&r, "done")?.unwrap_or(0);
        }
        if let Some(r) = one(
            &self.db,
            "SELECT COUNT(*) AS n, MAX(next_attempt_at) AS until FROM orders \
             WHERE operation_id = $1 AND state = 'pending' AND held_reason IS NOT NULL",
            vec![id.into()],
        )
        .await?
        {
            p.waiting = get(&r, "n")?;
            p.waiting_until = get(&r, "until")?;
        }
        let mut blocked = 0;
        for s in [Slot::Primary, Slot::Backup] {
            if let Some(r) = one(
                &self.db,
                &format!(
                    "SELECT COUNT(*) AS n FROM names n WHERE n.{s}_superseded_by = $1 \
                     AND n.{s}_reprovision_op IS NULL AND NOT EXISTS (SELECT 1 FROM orders o \
                     WHERE o.name_id = n.id AND o.slot = '{s}' AND o.operation_id = $1 \
                     AND o.state IN ('pending', 'processing'))",
                    s = s.as_str()
                ),
                vec![id.into()],
            )
            .await?
            {
                blocked += get::<i64>(&r, "n")?;
            }
        }
        p.blocked = blocked;
        // next_attempt_at counts only for orders that were held back: a
        // fresh order's is its creation time.
        for r in all(
            &self.db,
            "SELECT ca_id, COUNT(*) AS n, \
             SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END) AS failing, \
             MAX(CASE WHEN last_error IS NOT NULL OR held_reason IS NOT NULL \
             THEN next_attempt_at END) AS retry_at \
             FROM orders WHERE operation_id = $1 AND state IN ('pending', 'processing') \
             GROUP BY ca_id ORDER BY ca_id",
            vec![id.into()],
        )
        .await?
        {
            p.cas.push(CaOrders {
                ca: get(&r, "ca_id")?,
                open: get(&r, "n")?,
                failing: get::<Option<i64>>(&r, "failing")?.unwrap_or(0),
                retry_at: get(&r, "retry_at")?,
            });
        }
        let open = p.orders.get("pending").copied().unwrap_or(0)
            + p.orders.get("processing").copied().unwrap_or(0);
        p.done = p.queued == 0 && open == 0 && p.blocked == 0 && p.rekey_done == p.rekey_total;
        Ok(Some((op, p)))
    }

    /// Whether any operation still has slots waiting to be re-provisioned
    /// (a cheap check, so an idle worker never scans the names).
    pub async fn reprovision_pending(&self) -> Result<bool, StoreError> {
        Ok(one(
            &self.db,
            "SELECT id FROM operations WHERE reprovision_open = TRUE LIMIT 1",
            vec![],
        )
        .await?
        .is_some())
    }

    /// Marks again the slots an operation superseded but could not
    /// re-provision (blocked: no CA was eligible), so the next walk chooses
    /// again with the CAs configured now; returns how many. Run when the
    /// workers start, the only time the configured CAs change.
    pub async fn retry_blocked(&self, now: i64) -> Result<u64, StoreError> {
        with_tx(&self.db, async |tx| {
            let mut n = 0;
            for s in [Slot::Primary, Slot::Backup] {
                n += exec(
                    tx,
                    &format!(
                        "UPDATE names SET {s}_reprovision_op = {s}_superseded_by, updated_at = $1 \
                         WHERE {s}_superseded_by IS NOT NULL AND {s}_reprovision_op IS NULL \
                         AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.name_id = names.id \
                         AND o.slot = '{s}' AND o.operation_id = names.{s}_superseded_by \
                         AND o.state IN ('pending', 'processing'))",
                        s = s.as_str()
                    ),
                    vec![now.into()],
                )
                .await?;
            }
            if n > 0 {
                exec(
                    tx,
                    "UPDATE operations SET reprovision_open = TRUE, blocked = 0 WHERE id IN \
                     (SELECT primary_superseded_by FROM names WHERE primary_superseded_by \
                     IS NOT NULL UNION SELECT backup_superseded_by FROM names \
                     WHERE backup_superseded_by IS NOT NULL)",
                    vec![],
                )
                .await?;
            }
            Ok(n)
        })
        .await
    }

    /// Closes the operations whose marked slots have all been taken.
    pub async fn close_reprovision(&self) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE operations SET reprovision_open = FALSE WHERE reprovision_open = TRUE \
             AND NOT EXISTS (SELECT 1 FROM names WHERE primary_reprovision_op = operations.id \
             OR backup_reprovision_op = operations.id)",
            vec![],
        )
        .await?;
        Ok(())
    }

    /// Slots marked for re-provisioning, by name id after `after` (a
    /// cursor: markers are not indexed, so a mass swap stays one cheap
    /// UPDATE, and the worker walks the names in key order instead).
    /// Priority is applied to the orders these become.
    pub async fn reprovision_jobs(
        &self,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ReprovisionJob>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT n.id, s.slot AS reprovision_slot, n.active_slot, n.key_type, n.challenge, \
             CASE s.slot WHEN 'primary' THEN n.primary_reprovision_op \
             ELSE n.backup_reprovision_op END AS reprovision_op, \
             o.avoid_ca, COALESCE(o.created_at, 0) AS operation_at, \
             s.ca_id AS slot_ca, so.ca_id AS other_ca FROM names n \
             JOIN slots s ON s.name_id = n.id \
             AND ((s.slot = 'primary' AND n.primary_reprovision_op IS NOT NULL) \
               OR (s.slot = 'backup' AND n.backup_reprovision_op IS NOT NULL)) \
             JOIN slots so ON so.name_id = n.id AND so.slot <> s.slot \
             LEFT JOIN operations o ON o.id = CASE s.slot WHEN 'primary' \
               THEN n.primary_reprovision_op ELSE n.backup_reprovision_op END \
             WHERE (n.primary_reprovision_op IS NOT NULL OR n.backup_reprovision_op IS NOT NULL) \
             AND n.id > $1 ORDER BY n.id, s.slot LIMIT $2",
            vec![after.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let slot: String = get(r, "reprovision_slot")?;
                let active: String = get(r, "active_slot")?;
                Ok(ReprovisionJob {
                    name_id: get(r, "id")?,
                    is_active: slot == active,
                    slot: slot.parse().map_err(StoreError::Db)?,
                    key_type: get(r, "key_type")?,
                    operation_id: get(r, "reprovision_op")?,
                    avoid_ca: get(r, "avoid_ca")?,
                    slot_ca: get(r, "slot_ca")?,
                    other_ca: get(r, "other_ca")?,
                    operation_at: get(r, "operation_at")?,
                    challenge: get(r, "challenge")?,
                })
            })
            .collect()
    }

    /// Moves a marked slot to `ca` and opens its order there (a new key, as
    /// every order has), in one transaction: any open order of the slot is
    /// abandoned, the slot and the name's CA pair point at `ca`, the marker
    /// is cleared. The slot keeps serving its current certificate until the
    /// new one replaces it. Returns false (nothing done) when the marker was
    /// replaced by a newer operation meanwhile, or when the other slot moved
    /// since the CA was chosen (both slots of a name marked in one batch):
    /// the next walk chooses again against the other slot's new CA.
    ///
    /// A `hold` (until, why) keeps the order from its first attempt until
    /// then, the reason shown on the order.
    pub async fn start_reprovision(
        &self,
        job: &ReprovisionJob,
        ca: &str,
        hold: Option<(i64, &str)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                &format!(
                    "UPDATE names SET {slot}_reprovision_op = NULL, \
                 primary_ca = CASE WHEN $3 = 'primary' THEN $4 ELSE primary_ca END, \
                 backup_ca = CASE WHEN $3 = 'backup' THEN $4 ELSE backup_ca END, updated_at = $5 \
                 WHERE id = $1 AND {slot}_reprovision_op = $2 AND {other}_ca = $6",
                    slot = job.slot.as_str(),
                    other = job.slot.other().as_str()
                ),
                vec![
                    job.name_id.clone().into(),
                    job.operation_id.clone().into(),
                    job.slot.as_str().into(),
                    ca.into(),
                    now.into(),
                    job.other_ca.clone().into(),
                ],
            )
            .await?;
            if n == 0 {
                return Ok(false);
            }
            // The new CA pair is preflighted (CAA for the new CA) at once.
            exec(
                tx,
                "UPDATE preflight SET checked_at = 0 WHERE name_id = $1",
                vec![job.name_id.clone().into()],
            )
            .await?;
            exec(
            tx,
            "UPDATE orders SET state = 'abandoned', lease_owner = NULL, lease_expires_at = NULL, \
             last_error = $3, updated_at = $4 WHERE name_id = $1 AND slot = $2 \
             AND state IN ('pending', 'processing')",
            vec![
                job.name_id.clone().into(),
                job.slot.as_str().into(),
                format!("superseded by operation {}", job.operation_id).into(),
                now.into(),
            ],
        )
        .await?;
            exec(
                tx,
                "UPDATE slots SET ca_id = $3, last_error = NULL, updated_at = $4 \
             WHERE name_id = $1 AND slot = $2",
                vec![
                    job.name_id.clone().into(),
                    job.slot.as_str().into(),
                    ca.into(),
                    now.into(),
                ],
            )
            .await?;
            let priority = if job.is_active { 0 } else { 1 };
            insert_order_for(
                tx,
                &job.name_id,
                job.slot,
                ca,
                now,
                Some(&job.operation_id),
                priority,
            )
            .await?;
            if let Some((until, why)) = hold {
                exec(
                    tx,
                    "UPDATE orders SET next_attempt_at = $4, held_reason = $5 \
                     WHERE name_id = $1 AND slot = $2 AND operation_id = $3 AND state = 'pending'",
                    vec![
                        job.name_id.clone().into(),
                        job.slot.as_str().into(),
                        job.operation_id.clone().into(),
                        until.into(),
                        why.into(),
                    ],
                )
                .await?;
            }
            mark_names(tx, &[job.name_id.as_str()]).await?;
            Ok(true)
        })
        .await
    }

    /// Gives up re-provisioning a marked slot (no CA is eligible): the
    /// marker is cleared, the slot's error says why, the operation counts
    /// it as blocked. The slot keeps its CA and its certificate.
    pub async fn block_reprovision(
        &self,
        job: &ReprovisionJob,
        why: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
        let n = exec(
            tx,
            &format!(
                "UPDATE names SET {slot}_reprovision_op = NULL, updated_at = $3 \
                 WHERE id = $1 AND {slot}_reprovision_op = $2",
                slot = job.slot.as_str()
            ),
            vec![
                job.name_id.clone().into(),
                job.operation_id.clone().into(),
                now.into(),
            ],
        )
        .await?;
        if n > 0 {
            exec(
                tx,
                "UPDATE slots SET last_error = $3, updated_at = $4 WHERE name_id = $1 AND slot = $2",
                vec![
                    job.name_id.clone().into(),
                    job.slot.as_str().into(),
                    why.into(),
                    now.into(),
                ],
            )
            .await?;
            exec(
                tx,
                "UPDATE operations SET blocked = blocked + 1 WHERE id = $1",
                vec![job.operation_id.clone().into()],
            )
            .await?;
            mark_names(tx, &[job.name_id.as_str()]).await?;
        }
        Ok(())
        })
        .await
    }
}
