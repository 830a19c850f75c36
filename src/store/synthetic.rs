//! Synthetic names for benchmarks and crash tests (cargo feature
//! `bench`, on by default): N names, each with two valid certificates
//! (primary from one CA, active; backup from another), written with
//! set-based `INSERT … SELECT` over a generated sequence so a million names
//! take seconds, not hours. The certificates and sealed keys are
//! placeholders that nothing can use: the names live under
//! `.synthetic.test` and exist only to be swapped.

use sea_orm::Value;

use super::counts::{BUCKETS, mark_all};
use super::deploy::{ACTIVE_JOIN, EndpointSpec, insert_deployment, insert_endpoint};
use super::sql::{exec, get, one, with_tx};
use super::{Store, StoreError};

/// Seconds a synthetic certificate stays valid (90 days) and when it is due
/// for renewal (60 days): far enough that nothing renews during a run.
pub(super) const VALIDITY: i64 = 90 * 86_400;

pub(super) const RENEW_AFTER: i64 = 60 * 86_400;

impl Store {
    /// Writes `n` synthetic names `<prefix><i>.synthetic.test` (i from 0),
    /// active on `ca_a` with a standby from `ca_b`, in one transaction.
    pub async fn seed_synthetic(
        &self,
        prefix: &str,
        n: u64,
        ca_a: &str,
        ca_b: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let seq = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq \
                   WHERE i + 1 < $1)";
        let id = "($2 || CAST(i AS TEXT) || '.synthetic.test')";
        let bucket = format!("(i % {BUCKETS})");
        let values = || -> Vec<Value> {
            vec![
                (n as i64).into(),
                prefix.into(),
                ca_a.into(),
                ca_b.into(),
                now.into(),
                Value::Bytes(Some(vec![0u8])),
            ]
        };
        with_tx(&self.db, async |tx| {
            exec(
            tx,
            &format!(
                "{seq} INSERT INTO names (id, domains, challenge, key_type, primary_ca, backup_ca, \
                 active_slot, created_at, updated_at, primary_cert_ca, backup_cert_ca, \
                 primary_spki, backup_spki, primary_usable_until, backup_usable_until, \
                 count_bucket) \
                 SELECT {id}, '[\"' || {id} || '\"]', 'http-01', 'ecdsa-p256', $3, $4, 'primary', \
                 $5, $5, $3, $4, {id} || '/primary', {id} || '/backup', $5 + {VALIDITY}, \
                 $5 + {VALIDITY}, {bucket} FROM seq WHERE $6 IS NOT NULL"
            ),
            values(),
        )
        .await?;
            for (slot, ca) in [("primary", "$3"), ("backup", "$4")] {
                let key = format!("({id} || '/{slot}')");
                exec(
                    tx,
                    &format!(
                        "{seq} INSERT INTO private_keys (id, spki_sha256, key_type, master_key_id, \
                     nonce, ciphertext, compromised, created_at, count_bucket) SELECT {key}, {key}, \
                     'ecdsa-p256', 'synthetic', $6, $6, FALSE, $5, {bucket} FROM seq \
                     WHERE {ca} IS NOT NULL AND $3 IS NOT NULL AND $4 IS NOT NULL"
                    ),
                    values(),
                )
                .await?;
                exec(
                    tx,
                    &format!(
                        "{seq} INSERT INTO certificates (id, name_id, slot, ca_id, private_key_id, \
                     order_id, serial, issuer, root_id, not_before, not_after, renew_after, \
                     spki_sha256, chain_pem, created_at) SELECT {key}, {id}, '{slot}', {ca}, \
                     {key}, 'synthetic', {key}, 'synthetic', {ca}, $5, $5 + {VALIDITY}, \
                     $5 + {RENEW_AFTER}, {key}, '', $5 FROM seq \
                     WHERE $6 IS NOT NULL AND $3 IS NOT NULL AND $4 IS NOT NULL"
                    ),
                    values(),
                )
                .await?;
                exec(
                tx,
                &format!(
                    "{seq} INSERT INTO slots (name_id, slot, ca_id, current_cert_id, updated_at) \
                     SELECT {id}, '{slot}', {ca}, {key}, $5 FROM seq \
                     WHERE $6 IS NOT NULL AND $3 IS NOT NULL AND $4 IS NOT NULL"
                ),
                values(),
            )
            .await?;
            }
            mark_all(tx).await
        })
        .await
    }

    /// Gives synthetic certificates real chains: (certificate id — see
    /// [`Store::synthetic_cert_id`] — serial, issuer DN, PEM chain), in
    /// one transaction. For benchmarks of what reads certificates (the
    /// revocation checks).
    pub async fn attach_synthetic_chains(
        &self,
        chains: &[(String, String, String, String)],
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            for (id, serial, issuer, pem) in chains {
                exec(
                    tx,
                    "UPDATE certificates SET serial = $2, issuer = $3, chain_pem = $4 \
                 WHERE id = $1 AND order_id = 'synthetic'",
                    vec![
                        id.clone().into(),
                        serial.clone().into(),
                        issuer.clone().into(),
                        pem.clone().into(),
                    ],
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// Gives synthetic certificates real sealed keys (benchmarks that
    /// deploy them): (key id — the certificate id —, sealed PKCS#8).
    pub async fn attach_synthetic_keys(
        &self,
        keys: &[(String, crate::keys::seal::Sealed)],
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            for (id, sealed) in keys {
                exec(
                    tx,
                    "UPDATE private_keys SET master_key_id = $2, nonce = $3, ciphertext = $4 \
                 WHERE id = $1 AND spki_sha256 = id",
                    vec![
                        id.clone().into(),
                        sealed.key_id.clone().into(),
                        sealed.nonce.clone().into(),
                        sealed.ciphertext.clone().into(),
                    ],
                )
                .await?;
            }
            mark_all(tx).await
        })
        .await
    }
    /// One destination and one endpoint for each of many names, in one
    /// transaction (benchmarks; the API sets them name by name).
    pub async fn bulk_deploy_targets(
        &self,
        targets: &[(String, EndpointSpec)],
        destination: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            for (name, e) in targets {
                insert_deployment(tx, name, destination, now).await?;
                insert_endpoint(tx, name, e, now).await?;
            }
            mark_all(tx).await
        })
        .await
    }

    /// Every endpoint is checked at the next pass; how many.
    pub async fn request_all_checks(&self, now: i64) -> Result<u64, StoreError> {
        exec(
            &self.db,
            "UPDATE endpoints SET next_check_at = $1",
            vec![now.into()],
        )
        .await
    }

    /// (deployments, those confirmed with their name's active
    /// certificate): a rollout is done when the two are equal.
    pub async fn deployments_settled(&self) -> Result<(i64, i64), StoreError> {
        let r = one(
            &self.db,
            &format!(
                "SELECT COUNT(*) AS total, SUM(CASE WHEN d.state = 'confirmed' AND \
                 d.cert_id = c.id THEN 1 ELSE 0 END) AS ok FROM deployments d {ACTIVE_JOIN}"
            ),
            vec![],
        )
        .await?
        .ok_or_else(|| StoreError::Db("COUNT returned no row".into()))?;
        Ok((
            get(&r, "total")?,
            get::<Option<i64>>(&r, "ok")?.unwrap_or(0),
        ))
    }
    /// The certificate id of synthetic name `i`'s `slot`.
    pub fn synthetic_cert_id(prefix: &str, i: u64, slot: &str) -> String {
        format!("{prefix}{i}.synthetic.test/{slot}")
    }

    /// Removes the synthetic names `<prefix>*.synthetic.test` and their
    /// slots, certificates and keys (a benchmark cleaning up after itself).
    pub async fn purge_synthetic(&self, prefix: &str) -> Result<(), StoreError> {
        let like = format!("{prefix}%.synthetic.test");
        with_tx(&self.db, async |tx| {
            for sql in [
                "DELETE FROM preflight WHERE name_id LIKE $1",
                "DELETE FROM audit_events WHERE target LIKE $1",
                "DELETE FROM slots WHERE name_id LIKE $1",
                "DELETE FROM orders WHERE name_id LIKE $1",
                "DELETE FROM certificates WHERE name_id LIKE $1",
                "DELETE FROM private_keys WHERE id LIKE $1 || '/%'",
                "DELETE FROM names WHERE id LIKE $1",
            ] {
                exec(tx, sql, vec![like.clone().into()]).await?;
            }
            mark_all(tx).await
        })
        .await
    }

    /// What the console's filters look for, among `n` synthetic names
    /// (`seed_synthetic`'s): a `name.create` audit event (actor
    /// `bench-seed`) for every name, and `rare` names each, spread over the
    /// key space, that are degraded (a diversity error), validated by
    /// DNS-01, on `rare_ca` as their standby, with preflight findings (a
    /// placeholder report), and audited by actor `bench-rare`.
    pub async fn seed_console_rarities(
        &self,
        prefix: &str,
        n: u64,
        rare: u64,
        rare_ca: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let seq = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq \
                   WHERE i + 1 < $1)";
        let id = "($2 || CAST(i AS TEXT) || '.synthetic.test')";
        let rare = rare.clamp(1, n.max(1));
        let step = (n / rare).max(1) as i64;
        // The k-th rare name of each kind: i = k·step + offset.
        let pick = |offset: i64| -> Vec<Value> {
            (0..rare as i64)
                .map(|k| format!("{prefix}{}.synthetic.test", k * step + offset % step).into())
                .collect()
        };
        let in_list = |values: &[Value], first: usize| super::sql::holes(first, values.len());
        with_tx(&self.db, async |tx| {
            exec(
                tx,
                &format!(
                    "{seq} INSERT INTO audit_events (at, actor, action, target, result) \
                     SELECT $3, 'bench-seed', 'name.create', {id}, 'ok' FROM seq"
                ),
                vec![(n as i64).into(), prefix.into(), now.into()],
            )
            .await?;
            for (offset, sql) in [
                (
                    1,
                    "UPDATE names SET diversity_error = 'synthetic' WHERE id IN",
                ),
                (2, "UPDATE names SET challenge = 'dns-01' WHERE id IN"),
                (
                    3,
                    "INSERT INTO preflight (name_id, checked_at, primary_ca, backup_ca, report, \
                     caa_findings) SELECT id, created_at, primary_ca, backup_ca, '{}', 1 \
                     FROM names WHERE id IN",
                ),
            ] {
                let ids = pick(offset);
                exec(tx, &format!("{sql} ({})", in_list(&ids, 1)), ids).await?;
            }
            let mut values = vec![rare_ca.into()];
            values.extend(pick(4));
            exec(
                tx,
                &format!(
                    "UPDATE names SET backup_ca = $1, backup_cert_ca = $1 WHERE id IN ({})",
                    in_list(&values[1..], 2)
                ),
                values,
            )
            .await?;
            let mut values = vec![now.into()];
            values.extend(pick(5));
            let rows = (0..values.len() - 1)
                .map(|i| format!("($1, 'bench-rare', 'name.swap', ${}, 'ok')", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            exec(
                tx,
                &format!(
                    "INSERT INTO audit_events (at, actor, action, target, result) VALUES {rows}"
                ),
                values,
            )
            .await?;
            Ok(())
        })
        .await
    }
}
