//! Which names a swap touches and how they are classified, as SQL
//! fragments: the scope (one name, a list, a CA, an SPKI), the swap facts
//! read from `names` alone, and the reasons a name is skipped. Each
//! fragment mirrors a rule of `policy` (the store contract tests compare
//! them on both backends).

use sea_orm::{ConnectionTrait, Value};
use std::collections::BTreeMap;

use crate::domain::Slot;

use super::StoreError;
use super::sql::{all, get};

/// Whether certificate `c` (an alias) counts as re-keyed for its name's
/// re-key request (`n`): made by an order of the re-key operation, or its
/// *key* was made in a later second than the request (a renewal opened
/// before the request carries an older key and does not count). A key
/// from the request's own second is not trusted to be newer.
pub(crate) fn rekeyed(c: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM private_keys rk WHERE rk.id = {c}.private_key_id \
         AND rk.created_at > n.rekey_since) OR EXISTS (SELECT 1 FROM orders ro \
         WHERE ro.id = {c}.order_id AND ro.operation_id = n.rekey_op))"
    )
}

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

/// A scope as SQL (see [`SwapScope::sql`]).
pub(super) struct ScopeSql {
    pub(super) filter: String,
    pub(super) same_ca: String,
    pub(super) same_ca_joined: &'static str,
    pub(super) values: Vec<Value>,
}

// The swap facts of `names n` (see the store's `refresh_swap_facts`).
pub(super) const ACTIVE_CA: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.primary_cert_ca ELSE n.backup_cert_ca END)";

pub(super) const ACTIVE_SPKI: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.primary_spki ELSE n.backup_spki END)";

pub(super) const STANDBY_CA: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.backup_cert_ca ELSE n.primary_cert_ca END)";

pub(super) const STANDBY_UNTIL: &str = "COALESCE(CASE n.active_slot WHEN 'primary' \
     THEN n.backup_usable_until ELSE n.primary_usable_until END, 0)";

/// The CA the active slot is on (where re-provisioning moves it from).
pub(super) const ACTIVE_SLOT_CA: &str =
    "(CASE n.active_slot WHEN 'primary' THEN n.primary_ca ELSE n.backup_ca END)";

/// The classification of every name in `filter`, with the reason a name
/// is skipped, from the certificate rows themselves: `name_id`, `outcome`.
/// Swaps run it only over the names the swap facts say are skipped.
pub(super) fn classified(filter: &str, same_ca: &str, extra: &str) -> String {
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

/// Names carrying a marker of the operation in hole `$op`.
pub(super) fn marked_by(op_hole: usize) -> String {
    format!("(primary_reprovision_op = ${op_hole} OR backup_reprovision_op = ${op_hole})")
}

pub(super) async fn counts_of<C: ConnectionTrait>(
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

pub(super) async fn sample_of<C: ConnectionTrait>(
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

/// PostgreSQL: locks the names `filter` selects (holes from `$1`) until
/// the transaction ends. SQLite serializes writers, so there is nothing to
/// do there.
pub(super) async fn lock_names<C: ConnectionTrait>(
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
pub(super) async fn slots_per_ca<C: ConnectionTrait>(
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
pub(super) fn refusal(id: &str, standby: Slot, outcome: &str) -> StoreError {
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
    pub(super) fn sql(&self) -> ScopeSql {
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
    pub(super) fn replaces_skipped(&self) -> bool {
        matches!(self, SwapScope::Ca(_) | SwapScope::Spki(_))
    }
}

impl ScopeSql {
    /// Names in scope whose standby is usable: from the swap facts alone.
    /// `distrusted` are the holes of the distrusted CAs' ids (read first,
    /// so the common case — none — costs nothing per row).
    pub(super) fn swappable(&self, distrusted: &[String]) -> String {
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
