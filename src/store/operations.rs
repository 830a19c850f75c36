//! Emergency operations (DESIGN invariant 4: a swap needs no CA): swaps of
//! one name, a list, a CA or an SPKI; CA distrust; mass re-key; bulk key
//! compromise. Each real run is one transaction that changes the names,
//! leaves markers for the worker (which slots to re-provision or re-key)
//! and writes an operation record and an audit event — all or nothing.
//! The worker's side of re-provisioning (choosing the new CA, opening the
//! order) is here too, because it must agree with the markers.

use std::collections::BTreeMap;
use std::time::Instant;

use sea_orm::{ConnectionTrait, TransactionTrait, Value};

use super::{
    AuditEvent, Store, StoreError, all, exec, get, insert_audit, insert_order_for, new_id, one,
    refresh_swap_facts,
};
use crate::domain::Slot;

/// Which names an operation affects.
#[derive(Debug, Clone)]
pub enum SwapScope {
    /// Names whose active certificate comes from this CA.
    Ca(String),
    /// Names whose active key has this SPKI SHA-256.
    Spki(String),
    /// These names.
    Names(Vec<String>),
    /// Every name (mass re-key).
    All,
}

impl SwapScope {
    /// `ca:<id>`, `spki:<hex>`, `names:<count>` or `all`, for audit events
    /// and operation records.
    pub fn describe(&self) -> String {
        match self {
            SwapScope::Ca(c) => format!("ca:{c}"),
            SwapScope::Spki(s) => format!("spki:{s}"),
            SwapScope::Names(n) => format!("names:{}", n.len()),
            SwapScope::All => "all".into(),
        }
    }

    /// The scope as SQL over `names n` and its swap facts: the filter,
    /// the "standby is from the CA swapped away from" test on the facts
    /// and on the classification joins (`cs`), and the values for holes
    /// `$2…` (`$1` is always `now`).
    fn sql(&self) -> ScopeSql {
        match self {
            SwapScope::Ca(ca) => ScopeSql {
                filter: format!("{ACTIVE_CA} = $2"),
                same_ca: format!("COALESCE({STANDBY_CA}, '') = $2"),
                same_ca_joined: "cs.ca_id = $2",
                values: vec![ca.clone().into()],
            },
            SwapScope::Spki(spki) => ScopeSql {
                filter: format!("{ACTIVE_SPKI} = $2"),
                same_ca: "1 = 0".into(),
                same_ca_joined: "1 = 0",
                values: vec![spki.clone().into()],
            },
            SwapScope::Names(names) => {
                let holes: Vec<String> = (0..names.len()).map(|i| format!("${}", i + 2)).collect();
                ScopeSql {
                    filter: format!("n.id IN ({})", holes.join(", ")),
                    same_ca: "1 = 0".into(),
                    same_ca_joined: "1 = 0",
                    values: names.iter().map(|n| Value::from(n.clone())).collect(),
                }
            }
            SwapScope::All => ScopeSql {
                filter: "1 = 1".into(),
                same_ca: "1 = 0".into(),
                same_ca_joined: "1 = 0",
                values: vec![],
            },
        }
    }

    /// Whether names skipped by a swap in this scope have their *active*
    /// slot re-provisioned: yes when the scope says the active certificate
    /// itself is doomed (its CA or its key), no for a hand-picked list.
    fn replaces_skipped(&self) -> bool {
        matches!(self, SwapScope::Ca(_) | SwapScope::Spki(_))
    }
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
    /// Nothing left to do.
    pub done: bool,
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
}

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

/// A scope as SQL (see [`SwapScope::sql`]).
struct ScopeSql {
    filter: String,
    same_ca: String,
    same_ca_joined: &'static str,
    values: Vec<Value>,
}

impl ScopeSql {
    /// Names in scope whose standby is usable: from the swap facts alone.
    /// `distrusted` are the holes of the distrusted CAs' ids (read first,
    /// so the common case — none — costs nothing per row).
    fn swappable(&self, distrusted: &[String]) -> String {
        let not_distrusted = if distrusted.is_empty() {
            String::new()
        } else {
            format!(
                " AND COALESCE({STANDBY_CA}, '') NOT IN ({})",
                distrusted.join(", ")
            )
        };
        format!(
            "({STANDBY_UNTIL} > $1 AND NOT ({}){not_distrusted})",
            self.same_ca
        )
    }
}

// The swap facts of `names n` (see the store's `refresh_swap_facts`).
const ACTIVE_CA: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.primary_cert_ca ELSE n.backup_cert_ca END)";
const ACTIVE_SPKI: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.primary_spki ELSE n.backup_spki END)";
pub(super) const STANDBY_CA: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.backup_cert_ca ELSE n.primary_cert_ca END)";
pub(super) const STANDBY_UNTIL: &str = "COALESCE(CASE n.active_slot WHEN 'primary' \
     THEN n.backup_usable_until ELSE n.primary_usable_until END, 0)";
/// The CA the active slot is on (where re-provisioning moves it from).
const ACTIVE_SLOT_CA: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.primary_ca ELSE n.backup_ca END)";

/// The classification of every name in `filter`, with the reason a name
/// is skipped, from the certificate rows themselves: `name_id`, `outcome`.
/// Swaps run it only over the names the swap facts say are skipped.
fn classified(filter: &str, same_ca: &str, extra: &str) -> String {
    format!(
        "SELECT n.id AS name_id, CASE \
           WHEN cs.id IS NULL THEN 'no_standby' \
           WHEN cs.not_after <= $1 THEN 'standby_expired' \
           WHEN cs.revoked_at IS NOT NULL THEN 'standby_revoked' \
           WHEN ks.compromised THEN 'standby_compromised' \
           WHEN cs.ca_id IN (SELECT ca_id FROM ca_status WHERE distrusted = TRUE) \
             THEN 'standby_distrusted' \
           WHEN {same_ca} THEN 'standby_same_ca' \
           ELSE 'swap' END AS outcome \
         FROM names n \
         JOIN slots sa ON sa.name_id = n.id AND sa.slot = n.active_slot \
         LEFT JOIN certificates ca ON ca.id = sa.current_cert_id \
         LEFT JOIN slots ss ON ss.name_id = n.id AND ss.slot <> n.active_slot \
         LEFT JOIN certificates cs ON cs.id = ss.current_cert_id \
         LEFT JOIN private_keys ks ON ks.id = cs.private_key_id \
         WHERE {filter}{extra}"
    )
}

pub(super) const FLIP: &str = "CASE active_slot WHEN 'primary' THEN 'backup' ELSE 'primary' END";

/// SET clauses that mark the (pre-update) active slot for re-provisioning
/// by the operation in hole `$op`; the other slot's marker is kept. One
/// marker per slot, so a later operation never erases an earlier one's
/// work on the other slot.
pub(super) fn mark_active_slot(op_hole: usize) -> String {
    format!(
        "primary_reprovision_op = CASE WHEN active_slot = 'primary' THEN ${op_hole} \
         ELSE primary_reprovision_op END, \
         backup_reprovision_op = CASE WHEN active_slot = 'backup' THEN ${op_hole} \
         ELSE backup_reprovision_op END"
    )
}

/// Names carrying a marker of the operation in hole `$op`.
fn marked_by(op_hole: usize) -> String {
    format!("(primary_reprovision_op = ${op_hole} OR backup_reprovision_op = ${op_hole})")
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
    // People hear of every executed swap (issue 7): one alert per
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

async fn counts_of<C: ConnectionTrait>(
    c: &C,
    classified: &str,
    values: Vec<Value>,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let rows = all(
        c,
        &format!("SELECT outcome, COUNT(*) AS n FROM ({classified}) t GROUP BY outcome"),
        values,
    )
    .await?;
    let mut counts = BTreeMap::new();
    for r in &rows {
        counts.insert(get::<String>(r, "outcome")?, get::<i64>(r, "n")?);
    }
    Ok(counts)
}

async fn sample_of<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<(String, String)>, StoreError> {
    all(c, sql, values)
        .await?
        .iter()
        .map(|r| Ok((get(r, "name_id")?, get(r, "outcome")?)))
        .collect()
}

/// Turns SQLite's WAL auto-checkpointing back on and checkpoints, in the
/// background, when a swap ends — also when its future is dropped (a
/// request timeout or a disconnected client), so the WAL never grows
/// unchecked.
struct RestoreCheckpointing(Store);

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

/// Records whether a CA is distrusted (one row per CA), inside the
/// caller's transaction.
async fn set_ca_status<C: ConnectionTrait>(
    c: &C,
    ca_id: &str,
    distrusted: bool,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO ca_status (ca_id, distrusted, reason, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (ca_id) DO UPDATE SET distrusted = excluded.distrusted, \
         reason = excluded.reason, updated_at = excluded.updated_at",
        vec![ca_id.into(), distrusted.into(), reason.into(), now.into()],
    )
    .await?;
    Ok(())
}

/// PostgreSQL: locks the names `filter` selects (holes from `$1`) until
/// the transaction ends. SQLite serializes writers, so there is nothing to
/// do there.
async fn lock_names<C: ConnectionTrait>(
    c: &C,
    filter: &str,
    values: Vec<Value>,
) -> Result<(), StoreError> {
    if c.get_database_backend() == sea_orm::DbBackend::Postgres {
        all(
            c,
            // In key order, so two overlapping lists never lock in
            // opposite orders (deadlock).
            &format!("SELECT n.id FROM names n WHERE {filter} ORDER BY n.id FOR UPDATE"),
            values,
        )
        .await?;
    }
    Ok(())
}

/// Slots per CA among the slots that a re-provision would order.
async fn slots_per_ca<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut out = BTreeMap::new();
    for r in all(c, sql, values).await? {
        out.insert(get::<String>(&r, "ca_id")?, get::<i64>(&r, "n")?);
    }
    Ok(out)
}

/// The failure a swap of one name reports, by outcome.
fn refusal(id: &str, standby: Slot, outcome: &str) -> StoreError {
    StoreError::Conflict(match outcome {
        "no_standby" => {
            format!("the {standby} slot of '{id}' has no certificate yet; nothing to swap to")
        }
        "standby_expired" => format!(
            "the {standby} certificate of '{id}' has expired; swapping to it would break TLS"
        ),
        "standby_revoked" => format!(
            "the {standby} certificate of '{id}' is revoked; swapping to it would break TLS"
        ),
        "standby_compromised" => format!(
            "the {standby} key of '{id}' is compromised; swapping to it would serve a compromised key"
        ),
        "standby_distrusted" => format!(
            "the {standby} certificate of '{id}' is from a distrusted CA; swapping to it would break TLS"
        ),
        other => format!("the {standby} slot of '{id}' cannot be swapped to ({other})"),
    })
}

impl Store {
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
        let tx = self.db.begin().await?;
        lock_names(&tx, "n.id = $1", vec![id.into()]).await?;
        let row = one(
            &tx,
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
            &tx,
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
        insert_operation(
            &tx,
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
            &tx,
            &AuditEvent::ok(
                now,
                actor,
                "name.swap",
                id,
                Some(reason.into()),
                Some(format!(
                    "{{\"from\":\"{active}\",\"to\":\"{standby}\",\"operation\":\"{op}\"}}"
                )),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((standby, op))
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
    async fn swap_operation(
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

    async fn swap_transaction(
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
        // marks the abandoned slot for re-provisioning.
        let swapped = exec(
            &tx,
            &format!(
                "UPDATE names AS n SET {}, active_slot = {FLIP}, updated_at = $1 \
                 WHERE {filter} AND {swappable}",
                mark_active_slot(op_hole)
            ),
            op_values.clone(),
        )
        .await? as i64;
        if swapped > 0 {
            report.counts.insert("swap".into(), swapped);
            let room = 10 - report.sample.len().min(10);
            if room > 0 {
                let rows = all(
                    &tx,
                    &format!(
                        "SELECT id FROM names WHERE {} ORDER BY id LIMIT $2",
                        marked_by(1)
                    ),
                    vec![op.clone().into(), (room as i64).into()],
                )
                .await?;
                for r in &rows {
                    report.sample.push((get(r, "id")?, "swap".into()));
                }
            }
        }
        report.reprovision = match distrust {
            // Every slot the CA holds, whichever name and slot it is.
            Some(ca) => {
                exec(
                    &tx,
                    "UPDATE names SET \
                 primary_reprovision_op = CASE WHEN primary_ca = $1 THEN $2 \
                 ELSE primary_reprovision_op END, \
                 backup_reprovision_op = CASE WHEN backup_ca = $1 THEN $2 \
                 ELSE backup_reprovision_op END, updated_at = $3 \
                 WHERE primary_ca = $1 OR backup_ca = $1",
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
        if std::env::var("TWINCERT_FAILPOINT").as_deref() == Ok("swap_before_commit") {
            // Crash-safety test hook: the flip is written but not committed.
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

    /// Trusts a CA again for future choices; names already moved away stay
    /// where they are.
    pub async fn trust_ca(
        &self,
        ca_id: &str,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        set_ca_status(&tx, ca_id, false, reason, now).await?;
        insert_audit(
            &tx,
            &AuditEvent::ok(now, actor, "ca.trust", ca_id, Some(reason.into()), None),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

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
        let tx = self.db.begin().await?;
        if dry_run {
            let row = one(
                &tx,
                &format!("SELECT COUNT(*) AS n FROM ({names}) t"),
                values,
            )
            .await?;
            let n = match row {
                Some(r) => get(&r, "n")?,
                None => 0,
            };
            tx.rollback().await?;
            return Ok((n, None));
        }
        let op = new_id();
        let op_hole = values.len() + 1;
        values.push(op.clone().into());
        let marked = exec(
            &tx,
            &format!(
                "UPDATE names SET rekey_op = ${op_hole}, rekey_since = $1, updated_at = $1 \
                 WHERE id IN ({names})"
            ),
            values,
        )
        .await? as i64;
        insert_operation(
            &tx,
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
            &tx,
            &AuditEvent::ok(
                now,
                actor,
                "rekey.start",
                scope.describe(),
                Some(reason.into()),
                Some(format!("{{\"operation\":\"{op}\",\"names\":{marked}}}")),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((marked, Some(op)))
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

    async fn compromise_in(
        &self,
        name_id: &str,
        slot: Slot,
        reason: &str,
        actor: &str,
        op: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin().await?;
        let row = one(
            &tx,
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
            &tx,
            "UPDATE private_keys SET compromised = TRUE WHERE id = $1",
            vec![key_id.into()],
        )
        .await?;
        refresh_swap_facts(&tx, name_id, slot).await?;
        let mut swapped = false;
        if active == slot.as_str() {
            let standby = one(
                &tx,
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
                    &tx,
                    "UPDATE names SET active_slot = $2, updated_at = $3 WHERE id = $1",
                    vec![name_id.into(), slot.other().as_str().into(), now.into()],
                )
                .await?;
                swapped = true;
            }
        }
        exec(
            &tx,
            "INSERT INTO revocations (id, certificate_id, ca_id, chain_pem, reason_code, state, \
             created_at, updated_at) SELECT $1, c.id, c.ca_id, c.chain_pem, 1, 'pending', $3, $3 \
             FROM certificates c WHERE c.id = $2 ON CONFLICT DO NOTHING",
            vec![new_id().into(), cert_id.into(), now.into()],
        )
        .await?;
        // A re-issue right away, first in line: an open order for the slot
        // (a renewal) would reuse nothing of the compromised key anyway.
        insert_order_for(&tx, name_id, slot, &ca_id, now, op, 0).await?;
        insert_audit(
            &tx,
            &AuditEvent::ok(
                now,
                actor,
                "name.compromise",
                name_id,
                Some(reason.into()),
                Some(format!(
                    "{{\"slot\":\"{slot}\",\"spki_sha256\":\"{spki}\",\"swapped\":{swapped}}}"
                )),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(swapped)
    }

    /// Operations, newest first.
    pub async fn operations(&self, limit: u64) -> Result<Vec<Operation>, StoreError> {
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
                    super::rekeyed("c")
                ),
                vec![id.into()],
            )
            .await?
        {
            p.rekey_total = get(&r, "total")?;
            p.rekey_done = get::<Option<i64>>(&r, "done")?.unwrap_or(0);
        }
        let open = p.orders.get("pending").copied().unwrap_or(0)
            + p.orders.get("processing").copied().unwrap_or(0);
        p.done = p.queued == 0 && open == 0 && p.rekey_done == p.rekey_total;
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
            "SELECT n.id, s.slot AS reprovision_slot, n.active_slot, n.key_type, \
             CASE s.slot WHEN 'primary' THEN n.primary_reprovision_op \
             ELSE n.backup_reprovision_op END AS reprovision_op, \
             o.avoid_ca, s.ca_id AS slot_ca, so.ca_id AS other_ca FROM names n \
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
    pub async fn start_reprovision(
        &self,
        job: &ReprovisionJob,
        ca: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin().await?;
        let n = exec(
            &tx,
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
            tx.rollback().await?;
            return Ok(false);
        }
        exec(
            &tx,
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
            &tx,
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
            &tx,
            &job.name_id,
            job.slot,
            ca,
            now,
            Some(&job.operation_id),
            priority,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
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
        let tx = self.db.begin().await?;
        let n = exec(
            &tx,
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
                &tx,
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
                &tx,
                "UPDATE operations SET blocked = blocked + 1 WHERE id = $1",
                vec![job.operation_id.clone().into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// ACME orders opened at `ca_id` since `since`: how many, and when the
    /// oldest of them was opened (pacing by orders per hour).
    pub async fn acme_orders_since(
        &self,
        ca_id: &str,
        since: i64,
    ) -> Result<(i64, Option<i64>), StoreError> {
        let row = one(
            &self.db,
            "SELECT COUNT(*) AS n, MIN(acme_ordered_at) AS oldest FROM orders \
             WHERE ca_id = $1 AND acme_ordered_at > $2",
            vec![ca_id.into(), since.into()],
        )
        .await?;
        match row {
            Some(r) => Ok((get(&r, "n")?, get(&r, "oldest")?)),
            None => Ok((0, None)),
        }
    }

    /// Reserves one of a CA's `limit` new ACME orders per hour for order
    /// `order_id` (held by `owner`): counts the CA's orders of the last
    /// hour and stamps this one, in one transaction that replicas run one
    /// at a time per CA (a PostgreSQL advisory lock; SQLite has a single
    /// writer), so three replicas never open more than `limit` together.
    /// `Ok(None)` when reserved, else `Some((orders in the hour, oldest))`.
    pub async fn reserve_acme_order(
        &self,
        ca_id: &str,
        order_id: &str,
        owner: &str,
        limit: i64,
        now: i64,
    ) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        let tx = self.db.begin().await?;
        if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
            one(
                &tx,
                "SELECT pg_advisory_xact_lock(hashtext('twincert pace ' || $1)) IS NULL AS x",
                vec![ca_id.into()],
            )
            .await?;
        }
        let row = one(
            &tx,
            "SELECT COUNT(*) AS n, MIN(acme_ordered_at) AS oldest FROM orders \
             WHERE ca_id = $1 AND acme_ordered_at > $2 AND id <> $3",
            vec![ca_id.into(), (now - 3600).into(), order_id.into()],
        )
        .await?;
        let (n, oldest): (i64, Option<i64>) = match row {
            Some(r) => (get(&r, "n")?, get(&r, "oldest")?),
            None => (0, None),
        };
        if n >= limit {
            tx.rollback().await?;
            return Ok(Some((n, oldest)));
        }
        exec(
            &tx,
            "UPDATE orders SET acme_ordered_at = $3 WHERE id = $1 AND lease_owner = $2",
            vec![order_id.into(), owner.into(), now.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Makes as many of `ca_id`'s pace-deferred orders due now as its
    /// `limit` leaves room for in the last hour (highest priority first),
    /// so a limit raised by a restart takes effect at once; the rest keep
    /// their time. Returns how many were woken.
    pub async fn wake_paced_orders(
        &self,
        ca_id: &str,
        limit: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let row = one(
            &self.db,
            "SELECT COUNT(*) AS n FROM orders WHERE ca_id = $1 AND acme_ordered_at > $2",
            vec![ca_id.into(), (now - 3600).into()],
        )
        .await?;
        let used: i64 = match row {
            Some(r) => get(&r, "n")?,
            None => 0,
        };
        let room = limit - used;
        if room <= 0 {
            return Ok(0);
        }
        exec(
            &self.db,
            "UPDATE orders SET next_attempt_at = $2 WHERE id IN (SELECT id FROM orders \
             WHERE ca_id = $1 AND state = 'pending' AND paced AND next_attempt_at > $2 \
             ORDER BY priority, next_attempt_at LIMIT $3)",
            vec![ca_id.into(), now.into(), room.into()],
        )
        .await
    }

    /// Mean seconds from opening to completing an order at `ca_id` over its
    /// last 100 completed orders (the dry run's time estimate), if any.
    pub async fn mean_issue_seconds(&self, ca_id: &str) -> Result<Option<f64>, StoreError> {
        let row = one(
            &self.db,
            "SELECT AVG(CAST(updated_at - created_at AS DOUBLE PRECISION)) AS s FROM \
             (SELECT updated_at, created_at FROM orders WHERE ca_id = $1 AND state = 'valid' \
              ORDER BY updated_at DESC LIMIT 100) t",
            vec![ca_id.into()],
        )
        .await?;
        match row {
            Some(r) => Ok(get::<Option<f64>>(&r, "s")?),
            None => Ok(None),
        }
    }
}

fn operation_row(r: &sea_orm::QueryResult) -> Result<Operation, StoreError> {
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
