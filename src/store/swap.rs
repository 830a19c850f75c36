//! Swaps (DESIGN invariant 4: a swap needs no CA): one name, or every
//! name in a scope, flipped to its standby in one transaction that also
//! leaves the re-provisioning markers, writes the operation record and the
//! audit event — all or nothing. CA distrust and trust live here too,
//! because distrust is a swap plus a status change.

use sea_orm::{DatabaseConnection, TransactionTrait, Value};
use std::collections::BTreeMap;
use std::time::Instant;

use crate::domain::Slot;

use super::StoreError;
use super::audit::{AuditDetails, AuditEvent, insert_audit};
use super::cas::set_ca_status;
use super::counts::{mark_all, mark_names};
use super::operations::{Operation, insert_operation};
use super::sql::{all, exec, get, new_id, one, with_tx};
use super::swap_scope::{
    ACTIVE_SLOT_CA, FLIP, SwapScope, classified, counts_of, lock_names, marked_by, refusal,
    sample_of, slots_per_ca,
};

/// Swaps, distrust, compromise, re-key and revocation reactions: the emergency operations.
#[derive(Clone)]
pub struct Emergency {
    pub(super) db: DatabaseConnection,
}

/// What a swap or distrust did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SwapReport {
    /// Names by outcome: swap, no_standby, standby_expired, standby_revoked,
    /// standby_compromised, standby_distrusted, standby_same_ca, and
    /// not_found for listed names that do not exist.
    pub counts: BTreeMap<String, i64>,
    /// Up to 10 (name, outcome) pairs, skipped names first.
    pub sample: Vec<(String, String)>,
    /// Names flipped (0 for a dry run).
    pub swapped: i64,
    /// Slots the worker re-orders afterwards (for a dry run: would).
    pub reprovision: i64,
    /// Slots re-provisioning would order, per CA they are on now.
    pub reprovision_from: BTreeMap<String, i64>,
    /// The operation record (not for a dry run).
    pub operation_id: Option<String>,
    /// Time spent in the store, transaction included.
    pub duration_ms: i64,
}

/// SET clauses that mark the (pre-update) active slot for re-provisioning
/// by the operation in hole `$op`, its certificate superseded (no real
/// standby until a new one replaces it); the other slot's marker is kept.
/// One marker per slot, so a later operation never erases an earlier
/// one's work on the other slot.
pub(super) fn mark_active_slot(op_hole: usize) -> String {
    slot_markers(op_hole, true, None)
}

/// SET clauses for the markers of operation `$op` on each slot: on the
/// (pre-update) active slot if `active`, and on every slot the CA in hole
/// `$ca` holds (a distrust: re-provision a slot whose CA or whose current
/// certificate is that CA's, and mark the certificate superseded). A slot
/// neither applies to keeps its marker.
fn slot_markers(op_hole: usize, active: bool, distrusted_ca_hole: Option<usize>) -> String {
    let mut sets = Vec::new();
    for (column, ca_columns) in [
        ("reprovision_op", &["ca", "cert_ca"][..]),
        ("superseded_by", &["cert_ca"][..]),
    ] {
        for s in ["primary", "backup"] {
            let mut when = Vec::new();
            if active {
                when.push(format!("active_slot = '{s}'"));
            }
            if let Some(ca) = distrusted_ca_hole {
                when.extend(ca_columns.iter().map(|c| format!("{s}_{c} = ${ca}")));
            }
            sets.push(format!(
                "{s}_{column} = CASE WHEN {} THEN ${op_hole} ELSE {s}_{column} END",
                when.join(" OR ")
            ));
        }
    }
    sets.join(", ")
}

/// Turns SQLite's WAL auto-checkpointing back on and checkpoints, in the
/// background, when a swap ends — also when its future is dropped (a
/// request timeout or a disconnected client), so the WAL never grows
/// unchecked.
pub(super) struct RestoreCheckpointing(Emergency);

impl Drop for RestoreCheckpointing {
    fn drop(&mut self) {
        let store = self.0.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let restored = exec(&store.db, "PRAGMA wal_autocheckpoint = 1000", vec![]).await;
            if let Err(e) = restored.map(|_| ()).and(store.checkpoint().await) {
                tracing::warn!(error = %e, "restoring WAL checkpointing after a swap failed");
            }
        });
    }
}

impl Emergency {
    /// Makes the standby slot of one name active, if it is usable (valid at
    /// `now`, not revoked, key not compromised); marks the abandoned slot
    /// for re-provisioning under a new key; records the operation and the
    /// audit event in the same transaction. Needs no CA and no network
    /// (invariant 4). Returns the new active slot and the operation id.
    pub async fn swap(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<(Slot, String), StoreError> {
        let started = Instant::now();
        with_tx(&self.db, async |tx| {
            lock_names(tx, "n.id = $1", vec![id.into()]).await?;
            let row = one(
                tx,
                &format!(
                    "SELECT t.outcome, n.active_slot FROM ({}) t JOIN names n ON n.id = t.name_id",
                    classified("n.id = $2", "1 = 0", "")
                ),
                vec![now.into(), id.into()],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("name '{id}'")))?;
            let active: String = get(&row, "active_slot")?;
            let active: Slot = active.parse().map_err(StoreError::Db)?;
            let standby = active.other();
            let outcome: String = get(&row, "outcome")?;
            if outcome != "swap" {
                return Err(refusal(id, standby, &outcome));
            }
            let op = new_id();
            // Only from the state just classified: a concurrent swap of the
            // same name cannot be undone by this one.
            let flipped = exec(
                tx,
                &format!(
                    "UPDATE names SET {}, active_slot = {FLIP}, updated_at = $3 \
                 WHERE id = $1 AND active_slot = $4",
                    mark_active_slot(2)
                ),
                vec![
                    id.into(),
                    op.clone().into(),
                    now.into(),
                    active.as_str().into(),
                ],
            )
            .await?;
            if flipped != 1 {
                return Err(StoreError::Conflict(format!(
                    "'{id}' was swapped concurrently; look at it again before swapping"
                )));
            }
            mark_names(tx, &[id]).await?;
            insert_operation(
                tx,
                &Operation {
                    id: op.clone(),
                    kind: "swap".into(),
                    actor: actor.into(),
                    reason: reason.into(),
                    scope: format!("name:{id}"),
                    avoid_ca: None,
                    counts: serde_json::json!({ "swap": 1 }),
                    affected: 1,
                    blocked: 0,
                    reprovision_open: true,
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
                    "name.swap",
                    id,
                    Some(reason.into()),
                    Some(AuditDetails::Swapped {
                        from: active,
                        to: standby,
                        operation: op.clone(),
                    }),
                ),
            )
            .await?;
            Ok((standby, op))
        })
        .await
    }

    /// Classifies the names in `scope` for a swap and, unless `dry_run`,
    /// flips every swappable one in ONE statement inside one transaction
    /// together with the re-provisioning markers, the operation record and
    /// the audit event: all or none.
    ///
    /// Outcomes: `swap`; `no_standby` (standby slot has no certificate);
    /// `standby_expired`; `standby_revoked`; `standby_compromised`;
    /// `standby_same_ca` (for a CA scope, the standby is from the CA being
    /// swapped away from). The abandoned slots of flipped names are marked
    /// for re-provisioning; for a CA or SPKI scope so are the active slots
    /// of skipped names (their active certificate is doomed and they have
    /// no standby to run on).
    pub async fn mass_swap(
        &self,
        scope: &SwapScope,
        reason: &str,
        actor: &str,
        dry_run: bool,
        now: i64,
    ) -> Result<SwapReport, StoreError> {
        self.swap_operation(scope, None, reason, actor, dry_run, now)
            .await
    }

    /// Distrusts a CA in one transaction: it is never chosen again by
    /// policy; every name active on it swaps to its standby (where usable);
    /// every slot it holds — active or standby — is marked for
    /// re-provisioning from another CA. `trust` ([`Store::trust_ca`]) undoes
    /// only the first part.
    pub async fn distrust_ca(
        &self,
        ca: &str,
        reason: &str,
        actor: &str,
        dry_run: bool,
        now: i64,
    ) -> Result<SwapReport, StoreError> {
        self.swap_operation(
            &SwapScope::Ca(ca.into()),
            Some(ca),
            reason,
            actor,
            dry_run,
            now,
        )
        .await
    }

    /// On SQLite a real swap runs with WAL auto-checkpointing off: a
    /// million flipped rows are tens of thousands of WAL pages, and copying
    /// them into the database file inside the commit would add most of a
    /// second to the emergency. The swap is durable once committed (WAL,
    /// `synchronous = NORMAL`); the copy runs right after, in the
    /// background, and auto-checkpointing is restored.
    pub(super) async fn swap_operation(
        &self,
        scope: &SwapScope,
        distrust: Option<&str>,
        reason: &str,
        actor: &str,
        dry_run: bool,
        now: i64,
    ) -> Result<SwapReport, StoreError> {
        let sqlite = !dry_run && self.db.get_database_backend() == sea_orm::DbBackend::Sqlite;
        let _restore = if sqlite {
            exec(&self.db, "PRAGMA wal_autocheckpoint = 0", vec![]).await?;
            Some(RestoreCheckpointing(self.clone()))
        } else {
            None
        };
        self.swap_transaction(scope, distrust, reason, actor, dry_run, now)
            .await
    }

    /// SQLite: copies the write-ahead log into the database file (PASSIVE:
    /// never waits for readers). A no-op on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            all(&self.db, "PRAGMA wal_checkpoint(PASSIVE)", vec![]).await?;
        }
        Ok(())
    }

    pub(super) async fn swap_transaction(
        &self,
        scope: &SwapScope,
        distrust: Option<&str>,
        reason: &str,
        actor: &str,
        dry_run: bool,
        now: i64,
    ) -> Result<SwapReport, StoreError> {
        let started = Instant::now();
        let sql = scope.sql();
        let mut values: Vec<Value> = vec![now.into()];
        values.extend(sql.values.iter().cloned());
        let filter = &sql.filter;
        // Not `with_tx`: a dry run classifies inside this transaction and
        // rolls it back, so that it sees exactly what the real run would.
        let tx = self.db.begin().await?;
        let mut distrusted_holes = Vec::new();
        for r in all(
            &tx,
            "SELECT ca_id FROM ca_status WHERE distrusted = TRUE",
            vec![],
        )
        .await?
        {
            values.push(get::<String>(&r, "ca_id")?.into());
            distrusted_holes.push(format!("${}", values.len()));
        }
        let swappable = sql.swappable(&distrusted_holes);
        if matches!(scope, SwapScope::Names(_)) && !dry_run {
            // A listed name still matches after a concurrent flip (its new
            // standby is usable too): lock the list first, so the flip
            // below sees the names as they are once the other commits.
            lock_names(
                &tx,
                &format!("{filter} AND CAST($1 AS BIGINT) IS NOT NULL"),
                values[..1 + sql.values.len()].to_vec(),
            )
            .await?;
        }
        let mut report = SwapReport::default();

        // One scan over the swap facts: how many names in scope are
        // swappable and how many skipped, per CA of the active slot.
        let skip_or_swap = format!("CASE WHEN {swappable} THEN 'swap' ELSE 'skip' END");
        let mut would = 0;
        let mut skipped_total = 0;
        let mut per_ca: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        if dry_run {
            for r in all(
                &tx,
                &format!(
                    "SELECT {ACTIVE_SLOT_CA} AS ca_id, {skip_or_swap} AS outcome, COUNT(*) AS n \
                     FROM names n WHERE {filter} GROUP BY {ACTIVE_SLOT_CA}, {skip_or_swap}"
                ),
                values.clone(),
            )
            .await?
            {
                let n: i64 = get(&r, "n")?;
                let entry = per_ca.entry(get(&r, "ca_id")?).or_default();
                if get::<String>(&r, "outcome")? == "swap" {
                    would += n;
                    entry.0 += n;
                } else {
                    skipped_total += n;
                    entry.1 += n;
                }
            }
        } else if let Some(r) = one(
            &tx,
            &format!("SELECT COUNT(*) AS n FROM names n WHERE {filter} AND NOT {swappable}"),
            values.clone(),
        )
        .await?
        {
            skipped_total = get(&r, "n")?;
        }
        // The skipped names' reasons, from the certificate rows (only for
        // them: the swap facts already say they are skipped).
        if skipped_total > 0 {
            let skipped = classified(
                &format!("n.id IN (SELECT n.id FROM names n WHERE {filter} AND NOT {swappable})"),
                sql.same_ca_joined,
                "",
            );
            report.counts = counts_of(&tx, &skipped, values.clone()).await?;
            report.sample = sample_of(
                &tx,
                &format!("SELECT name_id, outcome FROM ({skipped}) t ORDER BY name_id LIMIT 10"),
                values.clone(),
            )
            .await?;
        }
        // Listed names that do not exist are reported, not silently dropped
        // (a typo in a names file must show).
        if let SwapScope::Names(listed) = scope {
            let row = one(
                &tx,
                &format!(
                    "SELECT COUNT(*) AS n FROM names n WHERE {filter} \
                     AND CAST($1 AS BIGINT) IS NOT NULL"
                ),
                values[..1 + sql.values.len()].to_vec(),
            )
            .await?;
            let found: i64 = match row {
                Some(r) => get(&r, "n")?,
                None => 0,
            };
            let distinct = listed
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let missing = distinct as i64 - found;
            if missing > 0 {
                report.counts.insert("not_found".into(), missing);
            }
        }
        let reprovision_skipped = scope.replaces_skipped() && distrust.is_none();

        if dry_run {
            if would > 0 {
                report.counts.insert("swap".into(), would);
                report.sample.extend(
                    sample_of(
                        &tx,
                        &format!(
                            "SELECT n.id AS name_id, 'swap' AS outcome FROM names n \
                             WHERE {filter} AND {swappable} ORDER BY n.id LIMIT {}",
                            10 - report.sample.len().min(10)
                        ),
                        values.clone(),
                    )
                    .await?,
                );
            }
            report.reprovision_from = match distrust {
                Some(ca) => {
                    slots_per_ca(
                        &tx,
                        "SELECT $1 AS ca_id, COUNT(*) AS n FROM names \
                         WHERE primary_ca = $1 OR backup_ca = $1",
                        vec![ca.into()],
                    )
                    .await?
                }
                None => per_ca
                    .into_iter()
                    .map(|(ca, (swap, skip))| {
                        (ca, swap + if reprovision_skipped { skip } else { 0 })
                    })
                    .collect(),
            };
            report.reprovision_from.retain(|_, n| *n > 0);
            report.reprovision = report.reprovision_from.values().sum();
            tx.rollback().await?;
            report.duration_ms = started.elapsed().as_millis() as i64;
            return Ok(report);
        }

        let op = new_id();
        let op_hole = values.len() + 1;
        let mut op_values = values.clone();
        op_values.push(op.clone().into());
        if let Some(ca) = distrust {
            set_ca_status(&tx, ca, true, reason, now).await?;
        }
        // The flip: one statement over every swappable name, which also
        // marks the abandoned slot for re-provisioning — and, for a
        // distrust, every other slot the CA holds, so that a flipped name
        // gets one new row version, not a second one from the distrust's
        // marker statement below (on a CA-wide swap every page of `names`
        // is rewritten and, on PostgreSQL, written whole to the WAL: a
        // second statement over the same rows doubled both).
        let mut flip_values = op_values.clone();
        let distrusted_ca_hole = distrust.map(|ca| {
            flip_values.push(ca.into());
            flip_values.len()
        });
        let swapped = exec(
            &tx,
            &format!(
                "UPDATE names AS n SET {}, active_slot = {FLIP}, updated_at = $1 \
                 WHERE {filter} AND {swappable}",
                slot_markers(op_hole, true, distrusted_ca_hole)
            ),
            flip_values,
        )
        .await? as i64;
        if swapped > 0 {
            report.counts.insert("swap".into(), swapped);
            let room = 10 - report.sample.len().min(10);
            if room > 0 {
                // Any `room` of the flipped names, not the first by id: the
                // markers are not indexed (see M0020), and `ORDER BY id`
                // made this a third full scan of the table (a sort of every
                // marked row) where stopping at the first matches costs
                // next to nothing when the swap flipped many.
                let rows = all(
                    &tx,
                    &format!("SELECT id FROM names WHERE {} LIMIT $2", marked_by(1)),
                    vec![op.clone().into(), (room as i64).into()],
                )
                .await?;
                let mut flipped = rows
                    .iter()
                    .map(|r| get::<String>(r, "id"))
                    .collect::<Result<Vec<_>, _>>()?;
                flipped.sort();
                report
                    .sample
                    .extend(flipped.into_iter().map(|id| (id, "swap".to_string())));
            }
        }
        report.reprovision = match distrust {
            // Every slot the CA holds, whichever name and slot it is; the
            // names the flip marked already (it marks with the same rule)
            // are not written again.
            Some(ca) => {
                swapped
                    + exec(
                        &tx,
                        &format!(
                            "UPDATE names SET {}, updated_at = $3 \
                             WHERE (primary_ca = $1 OR backup_ca = $1 \
                             OR primary_cert_ca = $1 OR backup_cert_ca = $1) \
                             AND COALESCE(primary_reprovision_op, '') <> $2 \
                             AND COALESCE(backup_reprovision_op, '') <> $2",
                            slot_markers(2, false, Some(1))
                        ),
                        vec![ca.into(), op.clone().into(), now.into()],
                    )
                    .await? as i64
            }
            // Skipped names keep running on the doomed certificate: their
            // active slot is replaced in place. After the flip the names
            // still in scope are exactly the skipped ones.
            None if skipped_total > 0 && reprovision_skipped => {
                swapped
                    + exec(
                        &tx,
                        &format!(
                            "UPDATE names AS n SET {}, updated_at = $1 \
                             WHERE {filter} AND NOT {swappable} \
                             AND COALESCE(n.primary_reprovision_op, '') <> ${op_hole} \
                             AND COALESCE(n.backup_reprovision_op, '') <> ${op_hole}",
                            mark_active_slot(op_hole)
                        ),
                        op_values,
                    )
                    .await? as i64
            }
            None => swapped,
        };
        // One row marks every bucket for the counts: a scoped swap is a
        // rare event, and its next count is a full one.
        mark_all(&tx).await?;
        report.swapped = swapped;
        report.operation_id = Some(op.clone());
        report.duration_ms = started.elapsed().as_millis() as i64;
        let kind = if distrust.is_some() {
            "distrust"
        } else {
            "swap"
        };
        insert_operation(
            &tx,
            &Operation {
                id: op.clone(),
                kind: kind.into(),
                actor: actor.into(),
                reason: reason.into(),
                scope: scope.describe(),
                avoid_ca: match scope {
                    SwapScope::Ca(ca) => Some(ca.clone()),
                    _ => None,
                },
                counts: serde_json::json!(report.counts),
                affected: swapped,
                blocked: 0,
                reprovision_open: report.reprovision > 0,
                duration_ms: report.duration_ms,
                created_at: now,
            },
        )
        .await?;
        let details = serde_json::json!({
            "operation": op,
            "scope": scope.describe(),
            "counts": report.counts,
            "reprovision": report.reprovision,
        })
        .to_string();
        let (action, target) = match distrust {
            Some(ca) => ("ca.distrust", ca.to_string()),
            None => ("swap.mass", scope.describe()),
        };
        insert_audit(
            &tx,
            &AuditEvent {
                at: now,
                actor: actor.into(),
                action: action.into(),
                target,
                reason: Some(reason.into()),
                result: format!("swapped {swapped}"),
                details: Some(details),
            },
        )
        .await?;
        // Crash-safety test hook (`failpoints` builds only): the flip is
        // written but not committed.
        #[cfg(feature = "failpoints")]
        if std::env::var("TWINCERT_FAILPOINT").as_deref() == Ok("swap_before_commit") {
            tracing::warn!(
                swapped,
                "failpoint swap_before_commit: hanging until killed"
            );
            std::future::pending::<()>().await;
        }
        tx.commit().await?;
        report.duration_ms = started.elapsed().as_millis() as i64;
        Ok(report)
    }
}
