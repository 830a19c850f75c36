//! Managed names and their two slots, and the *swap facts* each name
//! carries (its slots' certificate CA, SPKI and usable-until), which are
//! refreshed in the same transaction as every change to a slot's current
//! certificate, its revocation or its key.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Value};

use crate::domain::{NameState, Slot};

use super::StoreError;
use super::audit::{AuditDetails, AuditEvent, insert_audit};
use super::counts::{bucket_of, mark_names};
use super::orders::insert_order;
use super::rows::NameRecord;
use super::sql::{all, exec, get, holes, one, with_tx};
use super::status::CHUNK;

/// Managed names, their slots and swap facts.
#[derive(Clone)]
pub struct Names {
    pub(super) db: DatabaseConnection,
}

/// A name to create, already validated by the caller.
pub use crate::domain::NewName;

/// Which names [`Names::list_names`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct NameFilter<'a> {
    /// Only names using this CA in either slot.
    pub ca: Option<&'a str>,
    /// Only names in this state at this time (unix seconds), by the rule
    /// of [`name_state_case`].
    pub state: Option<(NameState, i64)>,
}

/// The joins [`name_state_case`] reads: each name `n` with its primary and
/// backup slots (`sp`, `sb`) and their current certificates (`cp`, `cb`).
pub(super) const NAME_STATE_JOINS: &str = "JOIN slots sp ON sp.name_id = n.id AND sp.slot = 'primary' \
     LEFT JOIN certificates cp ON cp.id = sp.current_cert_id \
     JOIN slots sb ON sb.name_id = n.id AND sb.slot = 'backup' \
     LEFT JOIN certificates cb ON cb.id = sb.current_cert_id";

/// A name's state (`ready`, `degraded`, `provisioning`, `waiting`) as an
/// SQL expression over [`NAME_STATE_JOINS`], at the time bound to the
/// placeholder `now`. It restates the API's rule, `policy::name_state` of
/// `policy::slot_state` (the store contract compares the two): degraded
/// when the pair is not diverse, a slot's certificate was superseded by an
/// operation, or a slot failed its first issuance or expired; waiting when
/// a slot without a certificate waits for a person; ready when both hold
/// an unexpired certificate; provisioning otherwise.
pub(super) fn name_state_case(now: &str) -> String {
    let waiting = |s: &str, c: &str| {
        format!(
            "({c}.id IS NULL AND EXISTS (SELECT 1 FROM orders o WHERE o.name_id = n.id \
             AND o.slot = {s}.slot AND o.state IN ('pending', 'processing') \
             AND o.held_reason IS NOT NULL))"
        )
    };
    let bad = |s: &str, c: &str| {
        format!(
            "(({c}.id IS NOT NULL AND {c}.not_after <= {now}) OR \
             ({c}.id IS NULL AND {s}.last_error IS NOT NULL AND NOT {}))",
            waiting(s, c)
        )
    };
    let ok = |c: &str| format!("({c}.id IS NOT NULL AND {c}.not_after > {now})");
    format!(
        "CASE WHEN n.diversity_error IS NOT NULL OR {} OR {} \
         OR n.primary_superseded_by IS NOT NULL OR n.backup_superseded_by IS NOT NULL \
         THEN 'degraded' WHEN {} OR {} THEN 'waiting' \
         WHEN {} AND {} THEN 'ready' ELSE 'provisioning' END",
        bad("sp", "cp"),
        bad("sb", "cb"),
        waiting("sp", "cp"),
        waiting("sb", "cb"),
        ok("cp"),
        ok("cb")
    )
}

/// Copies a slot's current certificate facts onto its name (the *swap
/// facts*: CA, SPKI, usable-until — `not_after`, or 0 once the certificate
/// is revoked or its key compromised), so swaps classify a million names
/// from one table. Called in the same transaction as every change to a
/// slot's current certificate, its revocation or its key.
pub(super) async fn refresh_swap_facts<C: ConnectionTrait>(
    c: &C,
    name_id: &str,
    slot: Slot,
) -> Result<(), StoreError> {
    swap_facts(c, name_id, slot, false).await
}

/// [`refresh_swap_facts`] for a slot that just got a new certificate: in
/// the same statement, the slot is no longer superseded (a real standby
/// again) unless an operation still waits to replace it.
pub(super) async fn install_swap_facts<C: ConnectionTrait>(
    c: &C,
    name_id: &str,
    slot: Slot,
) -> Result<(), StoreError> {
    swap_facts(c, name_id, slot, true).await
}

async fn swap_facts<C: ConnectionTrait>(
    c: &C,
    name_id: &str,
    slot: Slot,
    installed: bool,
) -> Result<(), StoreError> {
    // PostgreSQL: lock the name first, so the UPDATE below (a new statement,
    // a new snapshot) reads the slots as committed after any concurrent
    // change to the same name, never an older certificate's facts. `FOR NO
    // KEY UPDATE`, the lock the UPDATE takes anyway: `FOR UPDATE` conflicts
    // with the key-share lock a certificate row's foreign key holds on the
    // name, so two slots completing at once deadlocked.
    if c.get_database_backend() == DbBackend::Postgres {
        exec(
            c,
            "SELECT id FROM names WHERE id = $1 FOR NO KEY UPDATE",
            vec![name_id.into()],
        )
        .await?;
    }
    let s = slot.as_str();
    let current = "FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                   JOIN private_keys k ON k.id = c.private_key_id \
                   WHERE s.name_id = names.id AND s.slot = $2";
    let superseded = if installed {
        format!(
            ", {s}_superseded_by = CASE WHEN {s}_reprovision_op IS NULL THEN NULL \
             ELSE {s}_superseded_by END"
        )
    } else {
        String::new()
    };
    exec(
        c,
        &format!(
            "UPDATE names SET {s}_cert_ca = (SELECT c.ca_id {current}), \
             {s}_spki = (SELECT c.spki_sha256 {current}), \
             {s}_usable_until = (SELECT CASE WHEN c.revoked_at IS NOT NULL OR k.compromised \
             THEN 0 ELSE c.not_after END {current}){superseded} WHERE id = $1"
        ),
        vec![name_id.into(), s.into()],
    )
    .await?;
    // Every change to a slot's certificate, its revocation or its key
    // passes here: what the name counts as may have changed.
    mark_names(c, &[name_id]).await
}

pub(super) const NAME_SELECT: &str = "SELECT n.id, n.domains, n.challenge, n.key_type, n.dns_provider, n.primary_ca, \
     n.acme_profiles, co.acme_profile AS cert_acme_profile, \
     co.acme_profile_confirmed AS cert_acme_profile_confirmed, \
     n.backup_ca, n.active_slot, n.diversity_error, n.created_at, n.updated_at, \
     s.slot, s.ca_id AS slot_ca, s.last_error AS slot_error, \
     c.id AS cert_id, c.ca_id AS cert_ca, c.serial, c.issuer, c.root_id, c.not_before, \
     c.not_after, c.renew_after, c.spki_sha256, c.private_key_id, c.created_at AS cert_created, \
     c.revoked_at, c.revocation_reason, c.revocation_source, c.revocation_evidence, \
     c.status_checked_at, c.status_source, c.status_error, c.ari_window_start, c.ari_window_end, \
     c.ari_explanation_url, c.ari_checked_at, \
     o.id AS order_id, o.state AS order_state, o.attempts, o.next_attempt_at, \
     o.last_error AS order_error, o.acme_orders, o.ca_id AS order_ca, \
     o.operation_id AS order_operation, o.held_reason, \
     CASE s.slot WHEN 'primary' THEN n.primary_superseded_by ELSE n.backup_superseded_by END \
       AS superseded_by, \
     CASE s.slot WHEN 'primary' THEN n.primary_reprovision_op ELSE n.backup_reprovision_op END \
       AS reprovision_op \
     FROM names n JOIN slots s ON s.name_id = n.id \
     LEFT JOIN certificates c ON c.id = s.current_cert_id \
     LEFT JOIN orders co ON co.id = c.order_id \
     LEFT JOIN orders o ON o.name_id = s.name_id AND o.slot = s.slot \
       AND o.state IN ('pending', 'processing')";

impl Names {
    // ----- names -------------------------------------------------------

    /// Creates a name, its two slots and an open order for each, and the
    /// audit event, in one transaction.
    pub async fn create_name(&self, n: &NewName, actor: &str, now: i64) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            let domains =
                serde_json::to_string(&n.domains).map_err(|e| StoreError::Db(e.to_string()))?;
            let acme_profiles: Option<String> = if n.acme_profiles.is_empty() {
                None
            } else {
                Some(
                    serde_json::to_string(&n.acme_profiles)
                        .map_err(|e| StoreError::Db(e.to_string()))?,
                )
            };
            let inserted = exec(
                tx,
                "INSERT INTO names (id, domains, challenge, key_type, primary_ca, backup_ca, \
             active_slot, created_at, updated_at, dns_provider, acme_profiles, count_bucket) \
             VALUES ($1, $2, $3, $4, $5, $6, 'primary', $7, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                vec![
                    n.id.as_str().into(),
                    domains.into(),
                    n.challenge.as_str().into(),
                    n.key_type.as_str().into(),
                    n.primary_ca.as_str().into(),
                    n.backup_ca.as_str().into(),
                    now.into(),
                    n.dns_provider.clone().into(),
                    acme_profiles.into(),
                    bucket_of(n.id.as_str()).into(),
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(StoreError::Duplicate(format!("name '{}'", n.id)));
            }
            for (slot, ca) in [(Slot::Primary, &n.primary_ca), (Slot::Backup, &n.backup_ca)] {
                exec(
                    tx,
                    "INSERT INTO slots (name_id, slot, ca_id, updated_at) VALUES ($1, $2, $3, $4)",
                    vec![
                        n.id.as_str().into(),
                        slot.as_str().into(),
                        ca.as_str().into(),
                        now.into(),
                    ],
                )
                .await?;
                insert_order(tx, n.id.as_str(), slot, ca.as_str(), now).await?;
            }
            mark_names(tx, &[n.id.as_str()]).await?;
            insert_audit(
                tx,
                &AuditEvent {
                    at: now,
                    actor: actor.to_string(),
                    action: "name.create".into(),
                    target: n.id.to_string(),
                    reason: None,
                    result: "ok".into(),
                    details: Some(
                        AuditDetails::NameCreated {
                            primary_ca: n.primary_ca.to_string(),
                            backup_ca: n.backup_ca.to_string(),
                        }
                        .json(),
                    ),
                },
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// One name with both slots, or `None`.
    pub async fn name(&self, id: &str) -> Result<Option<NameRecord>, StoreError> {
        let sql = format!("{NAME_SELECT} WHERE n.id = $1 ORDER BY s.slot DESC");
        let rows = all(&self.db, &sql, vec![id.into()]).await?;
        Ok(super::rows::names_from_rows(&rows)?.into_iter().next())
    }

    /// Up to `limit` names ordered by id, after `cursor`, of those
    /// `filter` admits. The filter is applied in the query, so a page is
    /// full unless the list has ended, however few names match.
    pub async fn list_names(
        &self,
        limit: u64,
        cursor: Option<&str>,
        filter: NameFilter<'_>,
    ) -> Result<Vec<NameRecord>, StoreError> {
        let mut values: Vec<Value> = vec![
            cursor.unwrap_or("").into(),
            filter.ca.unwrap_or("").into(),
            (limit as i64).into(),
        ];
        let page = match filter.state {
            None => "SELECT id FROM names WHERE id > $1 \
                     AND ($2 = '' OR COALESCE(primary_cert_ca, primary_ca) = $2 \
                     OR COALESCE(backup_cert_ca, backup_ca) = $2) ORDER BY id LIMIT $3"
                .to_string(),
            Some((state, now)) => {
                values.push(now.into());
                values.push(state.as_str().into());
                format!(
                    "SELECT n.id FROM names n {NAME_STATE_JOINS} WHERE n.id > $1 \
                     AND ($2 = '' OR COALESCE(n.primary_cert_ca, n.primary_ca) = $2 \
                     OR COALESCE(n.backup_cert_ca, n.backup_ca) = $2) \
                     AND {} = $5 ORDER BY n.id LIMIT $3",
                    name_state_case("$4")
                )
            }
        };
        let sql = format!("{NAME_SELECT} WHERE n.id IN ({page}) ORDER BY n.id, s.slot DESC");
        let rows = all(&self.db, &sql, values).await?;
        super::rows::names_from_rows(&rows)
    }

    /// Stops managing a name: deletes it, its slots, orders, tokens,
    /// certificates and their keys, and records why, in one transaction.
    pub async fn delete_name(
        &self,
        id: &str,
        revoke: bool,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
        let exists = one(tx, "SELECT id FROM names WHERE id = $1", vec![id.into()]).await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("name '{id}'")));
        }
        mark_names(tx, &[id]).await?;
        if revoke {
            // cessationOfOperation (RFC 5280 reason 5) for each current
            // certificate; the worker carries it out after the name is gone.
            exec(
                tx,
                "INSERT INTO revocations (id, certificate_id, ca_id, chain_pem, reason_code, state, \
                 created_at, updated_at) SELECT 'rv-' || c.id, c.id, c.ca_id, c.chain_pem, 5, \
                 'pending', $2, $2 FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                 WHERE s.name_id = $1 ON CONFLICT DO NOTHING",
                vec![id.into(), now.into()],
            )
            .await?;
        }
        let key_rows = all(
            tx,
            "SELECT private_key_id AS k FROM certificates WHERE name_id = $1 \
             UNION SELECT private_key_id AS k FROM orders WHERE name_id = $1 \
             AND private_key_id IS NOT NULL",
            vec![id.into()],
        )
        .await?;
        exec(
            tx,
            "DELETE FROM http01_tokens WHERE order_id IN (SELECT id FROM orders WHERE name_id = $1)",
            vec![id.into()],
        )
        .await?;
        for sql in [
            "DELETE FROM orders WHERE name_id = $1",
            "DELETE FROM slots WHERE name_id = $1",
            "DELETE FROM certificates WHERE name_id = $1",
            "DELETE FROM names WHERE id = $1",
        ] {
            exec(tx, sql, vec![id.into()]).await?;
        }
        for row in &key_rows {
            let k: String = get(row, "k")?;
            exec(
                tx,
                "DELETE FROM private_keys WHERE id = $1",
                vec![k.into()],
            )
            .await?;
        }
        insert_audit(
            tx,
            &AuditEvent::ok(
                now,
                actor,
                "name.delete",
                id,
                None,
                Some(AuditDetails::NameDeleted { revoke }),
            ),
        )
        .await?;
        Ok(())
        })
        .await
    }

    /// Records (or clears) a diversity violation found after issuance.
    pub async fn set_diversity_error(
        &self,
        id: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            exec(
                tx,
                "UPDATE names SET diversity_error = $2, updated_at = $3 WHERE id = $1",
                vec![id.into(), error.map(str::to_string).into(), now.into()],
            )
            .await?;
            mark_names(tx, &[id]).await
        })
        .await
    }

    /// The PEM chain of a certificate.
    pub async fn chain_pem(&self, cert_id: &str) -> Result<Option<String>, StoreError> {
        let row = one(
            &self.db,
            "SELECT chain_pem FROM certificates WHERE id = $1",
            vec![cert_id.into()],
        )
        .await?;
        row.map(|r| get(&r, "chain_pem")).transpose()
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
}
