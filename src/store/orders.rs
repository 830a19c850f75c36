//! Orders: planning the due ones, the issuance cycle's writes in their
//! order (key before the ACME call, the ACME URL before polling, the
//! certificate and slot pointer and the order's end in one transaction),
//! failures with backoff, and ARI's `replaces`.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::domain::{KeyType, OrderState, Slot};
use crate::keys::seal::Sealed;

use super::StoreError;
use super::audit::{AuditDetails, AuditEvent, insert_audit};
use super::counts::mark_orders;
use super::names::install_swap_facts;
use super::rows::OrderSummary;
use super::sql::{all, exec, get, is_unique_violation, new_id, one, with_tx};
use super::swap_scope::rekeyed;

/// An open order that has been failing for a while.
#[derive(Debug, Clone)]
pub struct FailingOrder {
    /// The managed name.
    pub name_id: String,
    /// Its slot (`primary` or `backup`).
    pub slot: String,
    /// The CA the order goes to.
    pub ca_id: String,
    /// The last attempt's error.
    pub last_error: String,
    /// Unix seconds of the first failed attempt.
    pub failing_since: i64,
}

/// The issuance cycle's order rows.
#[derive(Clone)]
pub struct Orders {
    pub(super) db: DatabaseConnection,
}

/// A certificate to record as the end of an order.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    /// Leaf serial, lower-case hex.
    pub serial: String,
    /// Issuer DN of the leaf.
    pub issuer: String,
    /// Identifies the root the chain ends at (see `certs::CertFacts`).
    pub root_id: String,
    /// Validity start, unix seconds.
    pub not_before: i64,
    /// Validity end, unix seconds.
    pub not_after: i64,
    /// When the planner should open a renewal order (policy decides).
    pub renew_after: i64,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
    /// The PEM chain as the CA returned it, leaf first.
    pub chain_pem: String,
    /// Where its standing is published, read from the leaf once at
    /// issuance (`certs::status_sources`), so no revocation pass — after a
    /// restart neither — parses the certificate again: CRL URLs
    /// space-separated, the OCSP URL and the ARI id, each empty when the
    /// certificate has none. `None` when they could not be read; the
    /// status checker then reads them on its first pass.
    pub status_sources: Option<StoredSources>,
}

/// A certificate's status sources as stored (see
/// [`NewCertificate::status_sources`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSources {
    /// CRL distribution point URLs, space-separated.
    pub crl_urls: String,
    /// The OCSP responder, empty when none.
    pub ocsp_url: String,
    /// The RFC 9773 certificate id, empty when it cannot have one.
    pub ari_cert_id: String,
}

/// The other slot's current certificate, for the diversity check.
#[derive(Debug, Clone)]
pub struct OtherCert {
    /// Its CA.
    pub ca_id: String,
    /// Its root identity.
    pub root_id: String,
    /// Its SPKI SHA-256.
    pub spki_sha256: String,
}

/// What [`Store::complete_order`] leaves behind.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The new certificate's row id.
    pub cert_id: String,
    /// The other slot's current certificate, if it has one.
    pub other: Option<OtherCert>,
    /// The name's recorded diversity violation before this certificate.
    pub diversity_error: Option<String>,
}

pub(super) async fn insert_order<C: ConnectionTrait>(
    c: &C,
    name_id: &str,
    slot: Slot,
    ca_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    insert_order_for(c, name_id, slot, ca_id, now, None, 1).await
}

/// Opens an order that serves an operation (re-provision, re-key,
/// compromise) at a priority: 0 goes before 1 (the default) before 2.
pub(super) async fn insert_order_for<C: ConnectionTrait>(
    c: &C,
    name_id: &str,
    slot: Slot,
    ca_id: &str,
    now: i64,
    operation_id: Option<&str>,
    priority: i32,
) -> Result<bool, StoreError> {
    // The partial unique index `orders_one_open` makes this a no-op when the
    // slot already has an open order (two planners racing).
    let n = exec(
        c,
        "INSERT INTO orders (id, name_id, slot, ca_id, state, attempts, next_attempt_at, \
         created_at, updated_at, operation_id, priority) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5, $6, $7) ON CONFLICT DO NOTHING",
        vec![
            new_id().into(),
            name_id.into(),
            slot.as_str().into(),
            ca_id.into(),
            now.into(),
            operation_id.map(str::to_string).into(),
            priority.into(),
        ],
    )
    .await?;
    Ok(n == 1)
}

/// The SET clauses that hand a leased order back as pending.
const PUT_BACK: &str = "state = 'pending', lease_owner = NULL, lease_expires_at = NULL";

/// Applies `set` (its holes from `$3`, bound to `values`) to an order
/// `owner` holds leased; `LeaseLost` when it no longer does.
async fn update_leased<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    owner: &str,
    set: &str,
    values: Vec<sea_orm::Value>,
) -> Result<(), StoreError> {
    let mut all_values: Vec<sea_orm::Value> = vec![order_id.into(), owner.into()];
    all_values.extend(values);
    let n = exec(
        c,
        &format!(
            "UPDATE orders SET {set} WHERE id = $1 AND lease_owner = $2 AND state = 'processing'"
        ),
        all_values,
    )
    .await?;
    if n == 0 {
        return Err(StoreError::LeaseLost(order_id.into()));
    }
    Ok(())
}

/// Sets (or clears) the error of the slot an order is for.
async fn set_slot_error<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE slots SET last_error = $2, updated_at = $3 WHERE (name_id, slot) IN \
         (SELECT name_id, slot FROM orders WHERE id = $1)",
        vec![
            order_id.into(),
            error.map(str::to_string).into(),
            now.into(),
        ],
    )
    .await?;
    // A slot's error (and an order's hold, written with it) decides its
    // name's state.
    mark_orders(c, &[order_id]).await
}

/// Converts an order state text for records.
pub(super) fn order_state(s: &str) -> Result<OrderState, StoreError> {
    s.parse().map_err(StoreError::Db)
}

impl Orders {
    // ----- orders (the job rows) -----------------------------------------

    /// Opens an order for every slot that has no open order and whose
    /// certificate is missing, due for renewal, or older than a re-key
    /// request of its name; returns how many.
    ///
    /// A re-key takes the standby slot first, and the active slot only once
    /// the standby holds a valid certificate under a new key, so the name
    /// always has one. Slots marked for re-provisioning are left to
    /// [`Store::start_reprovision`], which moves them first.
    pub async fn plan_due_orders(&self, now: i64, limit: u64) -> Result<u64, StoreError> {
        // Three index ranges, not one join over every slot: slots without
        // a certificate (`slots_by_cert`), certificates past `renew_after`
        // (`certificates_renew_after`), names with a re-key
        // (`names_rekey_since`, M0029), each written as an `IN` list so
        // that SQLite, which keeps no statistics, starts from the index.
        // A slot in more than one gives the same row (`op` is NULL unless
        // only the re-key makes it due), which UNION keeps once.
        let free = "NOT ((s.slot = 'primary' AND n.primary_reprovision_op IS NOT NULL) \
               OR (s.slot = 'backup' AND n.backup_reprovision_op IS NOT NULL)) \
             AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.name_id = s.name_id \
              AND o.slot = s.slot AND o.state IN ('pending', 'processing'))";
        let sql = format!(
            "SELECT name_id, slot, ca_id, op FROM (\
             SELECT s.name_id, s.slot, s.ca_id, CAST(NULL AS TEXT) AS op \
             FROM slots s JOIN names n ON n.id = s.name_id \
             WHERE s.current_cert_id IS NULL AND {free} \
             UNION \
             SELECT s.name_id, s.slot, s.ca_id, CAST(NULL AS TEXT) AS op \
             FROM slots s JOIN names n ON n.id = s.name_id \
             WHERE s.current_cert_id IN (SELECT cd.id FROM certificates cd \
               WHERE cd.renew_after <= $1) AND {free} \
             UNION \
             SELECT s.name_id, s.slot, s.ca_id, \
             CASE WHEN c.id IS NULL OR c.renew_after <= $1 THEN NULL ELSE n.rekey_op END AS op \
             FROM slots s JOIN names n ON n.id = s.name_id \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             WHERE s.name_id IN (SELECT r.id FROM names r WHERE r.rekey_since IS NOT NULL) \
             AND NOT {fresh_c} AND (s.slot <> n.active_slot OR EXISTS \
               (SELECT 1 FROM slots so JOIN certificates co ON co.id = so.current_cert_id \
                WHERE so.name_id = n.id AND so.slot <> s.slot AND {fresh_co} \
                AND co.not_after > $1 AND co.revoked_at IS NULL)) AND {free}\
             ) due LIMIT $2",
            fresh_c = rekeyed("c"),
            fresh_co = rekeyed("co"),
        );
        let due = all(&self.db, &sql, vec![now.into(), (limit as i64).into()]).await?;
        let mut opened = 0;
        for row in &due {
            let slot: String = get(row, "slot")?;
            let slot: Slot = slot.parse().map_err(StoreError::Db)?;
            let name: String = get(row, "name_id")?;
            let ca: String = get(row, "ca_id")?;
            let op: Option<String> = get(row, "op")?;
            // Re-keys yield to renewals and first issuances.
            let priority = if op.is_some() { 2 } else { 1 };
            if insert_order_for(&self.db, &name, slot, &ca, now, op.as_deref(), priority).await? {
                opened += 1;
            }
        }
        Ok(opened)
    }

    /// Stores the order's fresh sealed key and ties it to the order, in one
    /// transaction, before any ACME call uses it: a crash later finds the
    /// key through the order and never leaves it orphaned.
    pub async fn attach_key(
        &self,
        order_id: &str,
        owner: &str,
        key_type: KeyType,
        spki_sha256: &str,
        sealed: &Sealed,
        now: i64,
    ) -> Result<String, StoreError> {
        with_tx(&self.db, async |tx| {
        let key_id = new_id();
        let r = exec(
            tx,
            "INSERT INTO private_keys (id, spki_sha256, key_type, master_key_id, nonce, \
             ciphertext, compromised, created_at, count_bucket) VALUES ($1, $2, $3, $4, $5, $6, \
             FALSE, $7, COALESCE((SELECT n.count_bucket FROM orders o JOIN names n \
             ON n.id = o.name_id WHERE o.id = $8), 0))",
            vec![
                key_id.clone().into(),
                spki_sha256.into(),
                key_type.as_str().into(),
                sealed.key_id.clone().into(),
                sealed.nonce.clone().into(),
                sealed.ciphertext.clone().into(),
                now.into(),
                order_id.into(),
            ],
        )
        .await;
        if let Err(e) = r {
            if is_unique_violation(&e) {
                // Invariant 2: a key is never reused. A duplicate SPKI means
                // the RNG or the key generator is broken; refuse loudly.
                return Err(StoreError::Conflict(format!(
                    "a private key with SPKI {spki_sha256} already exists; refusing to reuse a key"
                )));
            }
            return Err(e);
        }
        update_leased(
            tx,
            order_id,
            owner,
            "private_key_id = $3, updated_at = $4",
            vec![key_id.clone().into(), now.into()],
        )
        .await?;
        mark_orders(tx, &[order_id]).await?;
        Ok(key_id)
        })
        .await
    }

    /// Records the ACME order URL (before it is polled, so a restart can
    /// resume it) and counts the ACME order.
    pub async fn set_acme_order_url(
        &self,
        order_id: &str,
        owner: &str,
        url: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        update_leased(
            &self.db,
            order_id,
            owner,
            "acme_order_url = $3, acme_orders = acme_orders + 1, acme_ordered_at = $4, \
             updated_at = $4",
            vec![url.into(), now.into()],
        )
        .await
    }

    /// Records the ACME order a leased order opened (as
    /// [`Orders::set_acme_order_url`]) together with the ACME profile it
    /// asked for and whether the CA's order object confirmed it (`None`,
    /// `None`: none asked for), in one statement.
    pub async fn set_acme_order(
        &self,
        order_id: &str,
        owner: &str,
        url: &str,
        profile: Option<&str>,
        confirmed: Option<bool>,
        now: i64,
    ) -> Result<(), StoreError> {
        update_leased(
            &self.db,
            order_id,
            owner,
            "acme_order_url = $3, acme_orders = acme_orders + 1, acme_ordered_at = $4, \
             updated_at = $4, acme_profile = $5, acme_profile_confirmed = $6",
            vec![
                url.into(),
                now.into(),
                profile.map(str::to_string).into(),
                confirmed.into(),
            ],
        )
        .await
    }

    /// Puts a leased order back, untried, until `until` (pacing): no
    /// attempt is counted and the slot's error is left alone; the order's
    /// note says why it waits.
    pub async fn defer_order(
        &self,
        order_id: &str,
        owner: &str,
        note: &str,
        until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        update_leased(
            &self.db,
            order_id,
            owner,
            &format!(
                "{PUT_BACK}, next_attempt_at = $3, last_error = $4, paced = TRUE, updated_at = $5"
            ),
            vec![until.into(), note.into(), now.into()],
        )
        .await
    }

    /// Puts a leased order back until `until` because it waits for a
    /// person (manual DNS-01 records): not a failure — no attempt is
    /// counted, the order's and the slot's errors are cleared (the wait is
    /// the latest news), `held_reason` says what it waits for.
    pub async fn wait_order(
        &self,
        order_id: &str,
        owner: &str,
        why: &str,
        until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            update_leased(
                tx,
                order_id,
                owner,
                &format!(
                    "{PUT_BACK}, next_attempt_at = $3, held_reason = $4, last_error = NULL, \
                     failing_since = NULL, updated_at = $5"
                ),
                vec![until.into(), why.into(), now.into()],
            )
            .await?;
            set_slot_error(tx, order_id, None, now).await
        })
        .await
    }

    /// Ends an attempt that failed: the order goes back to pending until
    /// `next_attempt_at`, its error and the slot's error are set, the lease
    /// is released, its tokens are deleted. With `forget_acme_order` the
    /// next attempt starts a fresh ACME order (the old one is final).
    pub async fn fail_attempt(
        &self,
        order_id: &str,
        owner: &str,
        error: &str,
        next_attempt_at: i64,
        forget_acme_order: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            let url_sql = if forget_acme_order {
                ", acme_order_url = NULL"
            } else {
                ""
            };
            update_leased(
                tx,
                order_id,
                owner,
                &format!(
                    "{PUT_BACK}, attempts = attempts + 1, next_attempt_at = $3, last_error = $4, \
                     held_reason = NULL, updated_at = $5, \
                     failing_since = COALESCE(failing_since, $5){url_sql}"
                ),
                vec![next_attempt_at.into(), error.into(), now.into()],
            )
            .await?;
            set_slot_error(tx, order_id, Some(error), now).await?;
            exec(
                tx,
                "DELETE FROM http01_tokens WHERE order_id = $1",
                vec![order_id.into()],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Ends an order with its certificate: stores it, points the slot at
    /// it, clears the slot's error, closes the order, deletes its tokens —
    /// one transaction, so a crash leaves either all of it or none.
    pub async fn complete_order(
        &self,
        order_id: &str,
        owner: &str,
        cert: &NewCertificate,
        now: i64,
    ) -> Result<Completed, StoreError> {
        with_tx(&self.db, async |tx| {
            let row = one(
                tx,
                "SELECT name_id, slot, ca_id, private_key_id FROM orders WHERE id = $1 \
             AND lease_owner = $2 AND state = 'processing'",
                vec![order_id.into(), owner.into()],
            )
            .await?
            .ok_or_else(|| StoreError::LeaseLost(order_id.into()))?;
            let name_id: String = get(&row, "name_id")?;
            let slot: String = get(&row, "slot")?;
            let ca_id: String = get(&row, "ca_id")?;
            let key_id: Option<String> = get(&row, "private_key_id")?;
            let key_id = key_id
                .ok_or_else(|| StoreError::Conflict(format!("order {order_id} has no key")))?;
            let cert_id = new_id();
            let src = cert.status_sources.as_ref();
            exec(
            tx,
            "INSERT INTO certificates (id, name_id, slot, ca_id, private_key_id, order_id, serial, \
             issuer, root_id, not_before, not_after, renew_after, spki_sha256, chain_pem, \
             created_at, crl_urls, ocsp_url, ari_cert_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            vec![
                cert_id.clone().into(),
                name_id.clone().into(),
                slot.clone().into(),
                ca_id.into(),
                key_id.into(),
                order_id.into(),
                cert.serial.clone().into(),
                cert.issuer.clone().into(),
                cert.root_id.clone().into(),
                cert.not_before.into(),
                cert.not_after.into(),
                cert.renew_after.into(),
                cert.spki_sha256.clone().into(),
                cert.chain_pem.clone().into(),
                now.into(),
                src.map(|s| s.crl_urls.clone()).into(),
                src.map(|s| s.ocsp_url.clone()).into(),
                src.map(|s| s.ari_cert_id.clone()).into(),
            ],
        )
        .await?;
            exec(
                tx,
                "UPDATE slots SET current_cert_id = $3, last_error = NULL, updated_at = $4 \
             WHERE name_id = $1 AND slot = $2",
                vec![
                    name_id.clone().into(),
                    slot.clone().into(),
                    cert_id.clone().into(),
                    now.into(),
                ],
            )
            .await?;
            let slot_enum: Slot = slot.parse().map_err(StoreError::Db)?;
            install_swap_facts(tx, &name_id, slot_enum).await?;
            // The name serves a revoked certificate or a compromised key (its
            // standby was not usable when that was found): the new certificate
            // in the other slot takes over at once.
            let rescued = exec(
                tx,
                "UPDATE names SET active_slot = $2, updated_at = $3 WHERE id = $1 \
             AND active_slot <> $2 AND COALESCE(CASE active_slot WHEN 'primary' \
             THEN primary_usable_until ELSE backup_usable_until END, 1) = 0",
                vec![name_id.clone().into(), slot.clone().into(), now.into()],
            )
            .await?;
            // Renewed or rescued: the name's destinations are written at
            // the deployer's next poll.
            super::deploy::mark_name_due(tx, &name_id, now).await?;
            if rescued == 1 {
                insert_audit(
                    tx,
                    &AuditEvent::ok(
                        now,
                        format!("worker:{owner}"),
                        "name.swap",
                        name_id.clone(),
                        Some(
                            "automatic: the active certificate is revoked or its key compromised, \
                         and a new certificate is ready in the other slot"
                                .into(),
                        ),
                        slot.parse::<Slot>()
                            .ok()
                            .map(|to| AuditDetails::AutoSwapped { to }),
                    ),
                )
                .await?;
            }
            let other = one(
                tx,
                "SELECT n.diversity_error, c.ca_id, c.root_id, c.spki_sha256 FROM names n \
             JOIN slots s ON s.name_id = n.id AND s.slot <> $2 \
             LEFT JOIN certificates c ON c.id = s.current_cert_id WHERE n.id = $1",
                vec![name_id.into(), slot.into()],
            )
            .await?;
            exec(
                tx,
                "UPDATE orders SET state = 'valid', certificate_id = $2, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 WHERE id = $1",
                vec![order_id.into(), cert_id.clone().into(), now.into()],
            )
            .await?;
            exec(
                tx,
                "DELETE FROM http01_tokens WHERE order_id = $1",
                vec![order_id.into()],
            )
            .await?;
            let (diversity_error, other) = match other {
                Some(r) => {
                    let ca: Option<String> = get(&r, "ca_id")?;
                    let other = match ca {
                        Some(ca_id) => Some(OtherCert {
                            ca_id,
                            root_id: get(&r, "root_id")?,
                            spki_sha256: get(&r, "spki_sha256")?,
                        }),
                        None => None,
                    };
                    (get(&r, "diversity_error")?, other)
                }
                None => (None, None),
            };
            Ok(Completed {
                cert_id,
                other,
                diversity_error,
            })
        })
        .await
    }

    /// Orders of one slot, newest first (for tests and the API's history).
    pub async fn orders_of(
        &self,
        name_id: &str,
        slot: Slot,
    ) -> Result<Vec<OrderSummary>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id AS order_id, state AS order_state, attempts, next_attempt_at, \
             last_error AS order_error, acme_orders, ca_id AS order_ca, \
             operation_id AS order_operation, held_reason FROM orders \
             WHERE name_id = $1 AND slot = $2 ORDER BY created_at DESC",
            vec![name_id.into(), slot.as_str().into()],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(super::rows::order_summary(r)?);
        }
        Ok(out)
    }

    /// Records how long the propagation check of an order took.
    pub async fn set_propagation_ms(&self, order_id: &str, ms: i64) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            exec(
                tx,
                "UPDATE orders SET propagation_ms = $2 WHERE id = $1",
                vec![order_id.into(), ms.into()],
            )
            .await?;
            // Open orders' figures are read live; a closed one's are not.
            mark_orders(tx, &[order_id]).await
        })
        .await
    }

    /// Orders failing for longer than `older_than` seconds since their
    /// first failed attempt: (name, slot, CA, last error, since).
    pub async fn long_failing_orders(
        &self,
        now: i64,
        older_than: i64,
        limit: u64,
    ) -> Result<Vec<FailingOrder>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT name_id, slot, ca_id, last_error, \
             COALESCE(failing_since, created_at) AS since FROM orders \
             WHERE state IN ('pending', 'processing') AND last_error IS NOT NULL \
             AND attempts > 0 AND COALESCE(failing_since, created_at) <= $1 \
             ORDER BY since LIMIT $2",
            vec![(now - older_than).into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FailingOrder {
                    name_id: get(r, "name_id")?,
                    slot: get(r, "slot")?,
                    ca_id: get(r, "ca_id")?,
                    last_error: get(r, "last_error")?,
                    failing_since: get(r, "since")?,
                })
            })
            .collect()
    }

    /// The validity (`notBefore`, `notAfter`, unix seconds) of the
    /// certificate the order's slot holds now, from whichever CA; `None`
    /// for a first issuance.
    pub async fn current_validity(&self, order_id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let row = one(
            &self.db,
            "SELECT c.not_before, c.not_after FROM orders o \
             JOIN slots s ON s.name_id = o.name_id AND s.slot = o.slot \
             JOIN certificates c ON c.id = s.current_cert_id \
             WHERE o.id = $1",
            vec![order_id.into()],
        )
        .await?;
        row.map(|r| Ok((get(&r, "not_before")?, get(&r, "not_after")?)))
            .transpose()
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
}
