//! The store: the single source of truth and the only coordination point
//! between replicas. It is the only module that imports sea-orm or knows SQL.
//!
//! One SQL text serves SQLite and PostgreSQL (`$n` placeholders work on
//! both). Rows are read into private shapes and handed out as the plain
//! records below; multi-row writes run in one transaction. Times are unix
//! seconds supplied by the caller (the clock is injected, never read here).
//!
//! What is stored before what (the issuance cycle, see `worker`):
//! 1. a name and its two slots, each with an open order (one transaction);
//! 2. the order's fresh private key, sealed, before any ACME call;
//! 3. the ACME order URL, before polling it;
//! 4. HTTP-01 tokens, before telling the CA to validate;
//! 5. the certificate, the slot pointer and the order's end, in one
//!    transaction, and only then the tokens are deleted.

mod deploy;
mod metrics;
mod operations;
mod revocation;
mod rows;
mod synthetic;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult,
    Statement, TransactionTrait, Value,
};
use twincert_migrations::{Migrator, MigratorTrait};

use crate::domain::{KeyType, OrderState, Slot};
use crate::keys::seal::Sealed;

pub use deploy::{
    CheckRecord, DeploymentView, DueDeployment, DueEndpoint, EndpointSpec, EndpointView,
    PendingAlert,
};
pub use operations::{
    CompromiseReport, Operation, OperationProgress, ReprovisionJob, SwapReport, SwapScope,
};
pub use revocation::{
    Alert, Incident, Reaction, ReactionReport, RevocationFinding, RevokedSlot, StatusTarget,
};
pub use rows::{
    CertRecord, CertStatusRecord, DnsRecord, NameRecord, OrderJob, OrderSummary, SlotRecord,
    TokenRecord,
};

/// Why a store operation failed. `Db` is infrastructure (retry later); the
/// others are answers the caller shows to a user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A row with this key exists already.
    #[error("{0} already exists")]
    Duplicate(String),
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    /// The worker's lease on an order ran out and another worker may own it.
    #[error("lease on order {0} was lost")]
    LeaseLost(String),
    /// The database failed or returned something unreadable.
    #[error("database: {0}")]
    Db(String),
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// A name to create, already validated by the caller.
pub use crate::domain::NewName;

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
}

/// A token to create. The secret itself never reaches the store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Unique name (the actor in audit events).
    pub name: String,
    /// What it may do.
    pub role: crate::domain::Role,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Unix seconds, if it expires.
    pub expires_at: Option<i64>,
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

/// An audit event: who did what to which target, why, and how it ended.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Token name or `worker:<id>`.
    pub actor: String,
    /// Verb, e.g. `name.create`, `name.swap`.
    pub action: String,
    /// The object, e.g. the name id.
    pub target: String,
    /// The reason given by the actor.
    pub reason: Option<String>,
    /// `ok` or an error text.
    pub result: String,
    /// Extra JSON text.
    pub details: Option<String>,
}

impl AuditEvent {
    /// A successful change, as the store records it in the change's own
    /// transaction.
    pub fn ok(
        at: i64,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        reason: Option<String>,
        details: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            at,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            reason,
            result: "ok".into(),
            details,
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// A fresh random id (128 bits, hex): ids are made here, not by the
/// database, so one SQL text fits both backends and an id can be written
/// down before the row exists.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // aws-lc's system RNG does not fail on supported platforms; if it ever
    // did, a time-based id is still unique enough for a row key.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b.copy_from_slice(&t.to_le_bytes());
    }
    crate::keys::hex(&b)
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    // `$n` placeholders are understood by both sqlx drivers; the backend tag
    // only matters for sea-orm's own logging.
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

async fn exec<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> Result<u64, StoreError> {
    Ok(c.execute_raw(stmt(sql, values)).await?.rows_affected())
}

async fn one<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Option<QueryResult>, StoreError> {
    Ok(c.query_one_raw(stmt(sql, values)).await?)
}

async fn all<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<QueryResult>, StoreError> {
    Ok(c.query_all_raw(stmt(sql, values)).await?)
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str) -> Result<T, StoreError> {
    row.try_get::<T>("", col)
        .map_err(|e| StoreError::Db(format!("column {col}: {e}")))
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(m) if m.contains("UNIQUE") || m.contains("unique") || m.contains("duplicate key"))
}

async fn insert_audit<C: ConnectionTrait>(c: &C, e: &AuditEvent) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO audit_events (at, actor, action, target, reason, result, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            e.at.into(),
            e.actor.clone().into(),
            e.action.clone().into(),
            e.target.clone().into(),
            e.reason.clone().into(),
            e.result.clone().into(),
            e.details.clone().into(),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_order<C: ConnectionTrait>(
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
async fn insert_order_for<C: ConnectionTrait>(
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

/// Copies a slot's current certificate facts onto its name (the *swap
/// facts*: CA, SPKI, usable-until — `not_after`, or 0 once the certificate
/// is revoked or its key compromised), so swaps classify a million names
/// from one table. Called in the same transaction as every change to a
/// slot's current certificate, its revocation or its key.
async fn refresh_swap_facts<C: ConnectionTrait>(
    c: &C,
    name_id: &str,
    slot: Slot,
) -> Result<(), StoreError> {
    // PostgreSQL: lock the name first, so the UPDATE below (a new statement,
    // a new snapshot) reads the slots as committed after any concurrent
    // change to the same name, never an older certificate's facts.
    if c.get_database_backend() == DbBackend::Postgres {
        exec(
            c,
            "SELECT id FROM names WHERE id = $1 FOR UPDATE",
            vec![name_id.into()],
        )
        .await?;
    }
    let s = slot.as_str();
    let current = "FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                   JOIN private_keys k ON k.id = c.private_key_id \
                   WHERE s.name_id = names.id AND s.slot = $2";
    exec(
        c,
        &format!(
            "UPDATE names SET {s}_cert_ca = (SELECT c.ca_id {current}), \
             {s}_spki = (SELECT c.spki_sha256 {current}), \
             {s}_usable_until = (SELECT CASE WHEN c.revoked_at IS NOT NULL OR k.compromised \
             THEN 0 ELSE c.not_after END {current}) WHERE id = $1"
        ),
        vec![name_id.into(), s.into()],
    )
    .await?;
    Ok(())
}

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

const NAME_SELECT: &str = "SELECT n.id, n.domains, n.challenge, n.key_type, n.dns_provider, n.primary_ca, \
     n.backup_ca, n.active_slot, n.diversity_error, n.created_at, n.updated_at, \
     s.slot, s.ca_id AS slot_ca, s.last_error AS slot_error, \
     c.id AS cert_id, c.ca_id AS cert_ca, c.serial, c.issuer, c.root_id, c.not_before, \
     c.not_after, c.renew_after, c.spki_sha256, c.private_key_id, c.created_at AS cert_created, \
     c.revoked_at, c.revocation_reason, c.revocation_source, c.revocation_evidence, \
     c.status_checked_at, c.status_source, c.status_error, c.ari_window_start, c.ari_window_end, \
     c.ari_explanation_url, c.ari_checked_at, \
     o.id AS order_id, o.state AS order_state, o.attempts, o.next_attempt_at, \
     o.last_error AS order_error, o.acme_orders, o.ca_id AS order_ca \
     FROM names n JOIN slots s ON s.name_id = n.id \
     LEFT JOIN certificates c ON c.id = s.current_cert_id \
     LEFT JOIN orders o ON o.name_id = s.name_id AND o.slot = s.slot \
       AND o.state IN ('pending', 'processing')";

impl Store {
    /// Opens (and for SQLite creates) the database at `url`.
    ///
    /// SQLite runs in WAL mode with one pooled connection: every statement
    /// is short, and a single writer avoids `database is locked` between
    /// connections of the same process; other processes wait on the busy
    /// timeout.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            opts.max_connections(1).min_connections(1);
            opts.map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        } else {
            opts.max_connections(32);
        }
        let db = Database::connect(opts)
            .await
            .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", redact_url(url))))?;
        Ok(Store { db })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// `sqlite` or `postgres`, for logs and health output.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        one(&self.db, "SELECT 1 AS one", vec![]).await?;
        Ok(())
    }

    // ----- names -------------------------------------------------------

    /// Creates a name, its two slots and an open order for each, and the
    /// audit event, in one transaction.
    pub async fn create_name(&self, n: &NewName, actor: &str, now: i64) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let domains =
            serde_json::to_string(&n.domains).map_err(|e| StoreError::Db(e.to_string()))?;
        let inserted = exec(
            &tx,
            "INSERT INTO names (id, domains, challenge, key_type, primary_ca, backup_ca, \
             active_slot, created_at, updated_at, dns_provider) \
             VALUES ($1, $2, $3, $4, $5, $6, 'primary', $7, $7, $8) ON CONFLICT DO NOTHING",
            vec![
                n.id.as_str().into(),
                domains.into(),
                n.challenge.as_str().into(),
                n.key_type.as_str().into(),
                n.primary_ca.as_str().into(),
                n.backup_ca.as_str().into(),
                now.into(),
                n.dns_provider.clone().into(),
            ],
        )
        .await?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(format!("name '{}'", n.id)));
        }
        for (slot, ca) in [(Slot::Primary, &n.primary_ca), (Slot::Backup, &n.backup_ca)] {
            exec(
                &tx,
                "INSERT INTO slots (name_id, slot, ca_id, updated_at) VALUES ($1, $2, $3, $4)",
                vec![
                    n.id.as_str().into(),
                    slot.as_str().into(),
                    ca.as_str().into(),
                    now.into(),
                ],
            )
            .await?;
            insert_order(&tx, n.id.as_str(), slot, ca.as_str(), now).await?;
        }
        insert_audit(
            &tx,
            &AuditEvent {
                at: now,
                actor: actor.to_string(),
                action: "name.create".into(),
                target: n.id.to_string(),
                reason: None,
                result: "ok".into(),
                details: Some(format!(
                    "{{\"primary_ca\":{:?},\"backup_ca\":{:?}}}",
                    n.primary_ca.as_str(),
                    n.backup_ca.as_str()
                )),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One name with both slots, or `None`.
    pub async fn name(&self, id: &str) -> Result<Option<NameRecord>, StoreError> {
        let sql = format!("{NAME_SELECT} WHERE n.id = $1 ORDER BY s.slot DESC");
        let rows = all(&self.db, &sql, vec![id.into()]).await?;
        Ok(rows::names_from_rows(&rows)?.into_iter().next())
    }

    /// A page of names ordered by id, after `cursor`, optionally only those
    /// using CA `ca` in either slot.
    pub async fn list_names(
        &self,
        limit: u64,
        cursor: Option<&str>,
        ca: Option<&str>,
    ) -> Result<Vec<NameRecord>, StoreError> {
        let sql = format!(
            "{NAME_SELECT} WHERE n.id IN (SELECT id FROM names WHERE id > $1 \
             AND ($2 = '' OR primary_ca = $2 OR backup_ca = $2) ORDER BY id LIMIT $3) \
             ORDER BY n.id, s.slot DESC"
        );
        let rows = all(
            &self.db,
            &sql,
            vec![
                cursor.unwrap_or("").into(),
                ca.unwrap_or("").into(),
                (limit as i64).into(),
            ],
        )
        .await?;
        rows::names_from_rows(&rows)
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
        let tx = self.db.begin().await?;
        let exists = one(&tx, "SELECT id FROM names WHERE id = $1", vec![id.into()]).await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("name '{id}'")));
        }
        if revoke {
            // cessationOfOperation (RFC 5280 reason 5) for each current
            // certificate; the worker carries it out after the name is gone.
            exec(
                &tx,
                "INSERT INTO revocations (id, certificate_id, ca_id, chain_pem, reason_code, state, \
                 created_at, updated_at) SELECT 'rv-' || c.id, c.id, c.ca_id, c.chain_pem, 5, \
                 'pending', $2, $2 FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                 WHERE s.name_id = $1 ON CONFLICT DO NOTHING",
                vec![id.into(), now.into()],
            )
            .await?;
        }
        let key_rows = all(
            &tx,
            "SELECT private_key_id AS k FROM certificates WHERE name_id = $1 \
             UNION SELECT private_key_id AS k FROM orders WHERE name_id = $1 \
             AND private_key_id IS NOT NULL",
            vec![id.into()],
        )
        .await?;
        exec(
            &tx,
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
            exec(&tx, sql, vec![id.into()]).await?;
        }
        for row in &key_rows {
            let k: String = get(row, "k")?;
            exec(
                &tx,
                "DELETE FROM private_keys WHERE id = $1",
                vec![k.into()],
            )
            .await?;
        }
        insert_audit(
            &tx,
            &AuditEvent::ok(
                now,
                actor,
                "name.delete",
                id,
                None,
                Some(format!("{{\"revoke\":{revoke}}}")),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records (or clears) a diversity violation found after issuance.
    pub async fn set_diversity_error(
        &self,
        id: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE names SET diversity_error = $2, updated_at = $3 WHERE id = $1",
            vec![id.into(), error.map(str::to_string).into(), now.into()],
        )
        .await?;
        Ok(())
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

    // ----- keys and accounts --------------------------------------------

    /// A sealed private key.
    pub async fn private_key(&self, id: &str) -> Result<Option<(KeyType, Sealed)>, StoreError> {
        let row = one(
            &self.db,
            "SELECT key_type, master_key_id, nonce, ciphertext FROM private_keys WHERE id = $1",
            vec![id.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let kt: String = get(&row, "key_type")?;
        Ok(Some((
            kt.parse().map_err(StoreError::Db)?,
            Sealed {
                key_id: get(&row, "master_key_id")?,
                nonce: get(&row, "nonce")?,
                ciphertext: get(&row, "ciphertext")?,
            },
        )))
    }

    /// The stored ACME account of a CA: its URL and sealed credentials.
    pub async fn account(&self, ca_id: &str) -> Result<Option<(String, Sealed)>, StoreError> {
        let row = one(
            &self.db,
            "SELECT account_url, master_key_id, nonce, ciphertext FROM acme_accounts \
             WHERE ca_id = $1",
            vec![ca_id.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            get(&row, "account_url")?,
            Sealed {
                key_id: get(&row, "master_key_id")?,
                nonce: get(&row, "nonce")?,
                ciphertext: get(&row, "ciphertext")?,
            },
        )))
    }

    /// Stores a CA's account unless another replica stored one first;
    /// returns the one that is stored, so every replica uses one account.
    pub async fn save_account(
        &self,
        ca_id: &str,
        directory_url: &str,
        account_url: &str,
        sealed: &Sealed,
        now: i64,
    ) -> Result<(String, Sealed), StoreError> {
        exec(
            &self.db,
            "INSERT INTO acme_accounts (ca_id, directory_url, account_url, master_key_id, nonce, \
             ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            vec![
                ca_id.into(),
                directory_url.into(),
                account_url.into(),
                sealed.key_id.clone().into(),
                sealed.nonce.clone().into(),
                sealed.ciphertext.clone().into(),
                now.into(),
            ],
        )
        .await?;
        self.account(ca_id)
            .await?
            .ok_or_else(|| StoreError::Db(format!("account for {ca_id} vanished")))
    }

    /// Private keys that belong to no certificate and no open order: keys
    /// that leaked out of the issuance cycle. Should always be zero.
    pub async fn orphan_key_count(&self) -> Result<i64, StoreError> {
        let row = one(
            &self.db,
            "SELECT COUNT(*) AS n FROM private_keys k WHERE \
             NOT EXISTS (SELECT 1 FROM certificates c WHERE c.private_key_id = k.id) AND \
             NOT EXISTS (SELECT 1 FROM orders o WHERE o.private_key_id = k.id \
               AND o.state IN ('pending', 'processing'))",
            vec![],
        )
        .await?
        .ok_or_else(|| StoreError::Db("COUNT returned no row".into()))?;
        get(&row, "n")
    }

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
        let sql = format!(
            "SELECT s.name_id, s.slot, s.ca_id, \
             CASE WHEN c.id IS NULL OR c.renew_after <= $1 THEN NULL ELSE n.rekey_op END AS op \
             FROM slots s JOIN names n ON n.id = s.name_id \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             WHERE (c.id IS NULL OR c.renew_after <= $1 OR (n.rekey_since IS NOT NULL \
               AND NOT {fresh_c} AND (s.slot <> n.active_slot OR EXISTS \
               (SELECT 1 FROM slots so JOIN certificates co ON co.id = so.current_cert_id \
                WHERE so.name_id = n.id AND so.slot <> s.slot AND {fresh_co} \
                AND co.not_after > $1 AND co.revoked_at IS NULL)))) \
             AND NOT ((s.slot = 'primary' AND n.primary_reprovision_op IS NOT NULL) \
               OR (s.slot = 'backup' AND n.backup_reprovision_op IS NOT NULL)) \
             AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.name_id = s.name_id \
              AND o.slot = s.slot AND o.state IN ('pending', 'processing')) LIMIT $2",
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

    /// Leases up to `limit` due orders to `owner` until `now + lease`.
    ///
    /// An order is due when it is pending and its backoff has passed, or
    /// when it is processing under a lease that expired (its worker died).
    /// On PostgreSQL the candidate rows are locked with `FOR UPDATE SKIP
    /// LOCKED`, so replicas never lease the same row; SQLite serializes
    /// writers, so the same statement is atomic there.
    pub async fn lease_orders(
        &self,
        owner: &str,
        now: i64,
        lease_seconds: i64,
        limit: u64,
    ) -> Result<Vec<OrderJob>, StoreError> {
        let lock = match self.db.get_database_backend() {
            DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let sql = format!(
            "UPDATE orders SET state = 'processing', lease_owner = $1, lease_expires_at = $2, \
             leased_at = $3, paced = FALSE, updated_at = $3 WHERE id IN (SELECT id FROM orders WHERE \
             (state = 'pending' AND next_attempt_at <= $3) OR \
             (state = 'processing' AND lease_expires_at < $3) \
             ORDER BY priority, next_attempt_at LIMIT $4{lock}) RETURNING id"
        );
        let ids = all(
            &self.db,
            &sql,
            vec![
                owner.into(),
                (now + lease_seconds).into(),
                now.into(),
                (limit as i64).into(),
            ],
        )
        .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Value> = ids
            .iter()
            .map(|r| get::<String>(r, "id").map(Value::from))
            .collect::<Result<_, _>>()?;
        let holes: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT o.id, o.name_id, o.slot, o.ca_id, o.attempts, o.acme_order_url, \
             o.private_key_id, n.domains, n.key_type, n.challenge, n.dns_provider FROM orders o \
             JOIN names n ON n.id = o.name_id WHERE o.id IN ({}) ORDER BY o.priority, o.next_attempt_at",
            holes.join(", ")
        );
        all(&self.db, &sql, ids)
            .await?
            .iter()
            .map(rows::order_job)
            .collect()
    }

    /// Extends a lease the worker still holds.
    pub async fn renew_lease(
        &self,
        order_id: &str,
        owner: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        let n = exec(
            &self.db,
            "UPDATE orders SET lease_expires_at = $3 WHERE id = $1 AND lease_owner = $2 \
             AND state = 'processing'",
            vec![order_id.into(), owner.into(), until.into()],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::LeaseLost(order_id.into()));
        }
        Ok(())
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
        let tx = self.db.begin().await?;
        let key_id = new_id();
        let r = exec(
            &tx,
            "INSERT INTO private_keys (id, spki_sha256, key_type, master_key_id, nonce, \
             ciphertext, compromised, created_at) VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7)",
            vec![
                key_id.clone().into(),
                spki_sha256.into(),
                key_type.as_str().into(),
                sealed.key_id.clone().into(),
                sealed.nonce.clone().into(),
                sealed.ciphertext.clone().into(),
                now.into(),
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
        let n = exec(
            &tx,
            "UPDATE orders SET private_key_id = $3, updated_at = $4 WHERE id = $1 \
             AND lease_owner = $2 AND state = 'processing'",
            vec![
                order_id.into(),
                owner.into(),
                key_id.clone().into(),
                now.into(),
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::LeaseLost(order_id.into()));
        }
        tx.commit().await?;
        Ok(key_id)
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
        let n = exec(
            &self.db,
            "UPDATE orders SET acme_order_url = $3, acme_orders = acme_orders + 1, \
             acme_ordered_at = $4, updated_at = $4 WHERE id = $1 AND lease_owner = $2 AND state = 'processing'",
            vec![order_id.into(), owner.into(), url.into(), now.into()],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::LeaseLost(order_id.into()));
        }
        Ok(())
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
        let n = exec(
            &self.db,
            "UPDATE orders SET state = 'pending', next_attempt_at = $3, last_error = $4, \
             lease_owner = NULL, lease_expires_at = NULL, paced = TRUE, updated_at = $5 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'processing'",
            vec![
                order_id.into(),
                owner.into(),
                until.into(),
                note.into(),
                now.into(),
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::LeaseLost(order_id.into()));
        }
        Ok(())
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
        let tx = self.db.begin().await?;
        let url_sql = if forget_acme_order {
            ", acme_order_url = NULL"
        } else {
            ""
        };
        let n = exec(
            &tx,
            &format!(
                "UPDATE orders SET state = 'pending', attempts = attempts + 1, \
                 next_attempt_at = $3, last_error = $4, lease_owner = NULL, \
                 lease_expires_at = NULL, updated_at = $5, \
                 failing_since = COALESCE(failing_since, $5){url_sql} \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'processing'"
            ),
            vec![
                order_id.into(),
                owner.into(),
                next_attempt_at.into(),
                error.into(),
                now.into(),
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::LeaseLost(order_id.into()));
        }
        exec(
            &tx,
            "UPDATE slots SET last_error = $2, updated_at = $3 WHERE (name_id, slot) IN \
             (SELECT name_id, slot FROM orders WHERE id = $1)",
            vec![order_id.into(), error.into(), now.into()],
        )
        .await?;
        exec(
            &tx,
            "DELETE FROM http01_tokens WHERE order_id = $1",
            vec![order_id.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
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
        let tx = self.db.begin().await?;
        let row = one(
            &tx,
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
        let key_id =
            key_id.ok_or_else(|| StoreError::Conflict(format!("order {order_id} has no key")))?;
        let cert_id = new_id();
        exec(
            &tx,
            "INSERT INTO certificates (id, name_id, slot, ca_id, private_key_id, order_id, serial, \
             issuer, root_id, not_before, not_after, renew_after, spki_sha256, chain_pem, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
            ],
        )
        .await?;
        exec(
            &tx,
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
        refresh_swap_facts(&tx, &name_id, slot_enum).await?;
        // The name serves a revoked certificate or a compromised key (its
        // standby was not usable when that was found): the new certificate
        // in the other slot takes over at once.
        let rescued = exec(
            &tx,
            "UPDATE names SET active_slot = $2, updated_at = $3 WHERE id = $1 \
             AND active_slot <> $2 AND COALESCE(CASE active_slot WHEN 'primary' \
             THEN primary_usable_until ELSE backup_usable_until END, 1) = 0",
            vec![name_id.clone().into(), slot.clone().into(), now.into()],
        )
        .await?;
        if rescued == 1 {
            insert_audit(
                &tx,
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
                    Some(format!("{{\"to\":\"{slot}\"}}")),
                ),
            )
            .await?;
        }
        let other = one(
            &tx,
            "SELECT n.diversity_error, c.ca_id, c.root_id, c.spki_sha256 FROM names n \
             JOIN slots s ON s.name_id = n.id AND s.slot <> $2 \
             LEFT JOIN certificates c ON c.id = s.current_cert_id WHERE n.id = $1",
            vec![name_id.into(), slot.into()],
        )
        .await?;
        exec(
            &tx,
            "UPDATE orders SET state = 'valid', certificate_id = $2, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 WHERE id = $1",
            vec![order_id.into(), cert_id.clone().into(), now.into()],
        )
        .await?;
        exec(
            &tx,
            "DELETE FROM http01_tokens WHERE order_id = $1",
            vec![order_id.into()],
        )
        .await?;
        tx.commit().await?;
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
             last_error AS order_error, acme_orders, ca_id AS order_ca FROM orders \
             WHERE name_id = $1 AND slot = $2 ORDER BY created_at DESC",
            vec![name_id.into(), slot.as_str().into()],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(rows::order_summary(r)?);
        }
        Ok(out)
    }

    // ----- HTTP-01 tokens ------------------------------------------------

    /// Publishes an HTTP-01 answer for every replica's responder.
    pub async fn put_http01_token(
        &self,
        token: &str,
        key_authorization: &str,
        order_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "INSERT INTO http01_tokens (token, key_authorization, order_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (token) DO UPDATE SET \
             key_authorization = excluded.key_authorization, order_id = excluded.order_id",
            vec![
                token.into(),
                key_authorization.into(),
                order_id.into(),
                now.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The key authorization to serve for `token` (RFC 8555 §8.3).
    pub async fn http01_key_authorization(
        &self,
        token: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = one(
            &self.db,
            "SELECT key_authorization FROM http01_tokens WHERE token = $1",
            vec![token.into()],
        )
        .await?;
        row.map(|r| get(&r, "key_authorization")).transpose()
    }

    // ----- DNS-01 records ----------------------------------------------------

    /// Records a TXT value an order is about to publish (before publishing,
    /// so cleanup can always find it).
    pub async fn add_dns_record(
        &self,
        order_id: &str,
        provider_id: &str,
        fqdn: &str,
        value: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let id = new_id();
        exec(
            &self.db,
            "INSERT INTO dns_records (id, order_id, provider_id, fqdn, value, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                id.clone().into(),
                order_id.into(),
                provider_id.into(),
                fqdn.into(),
                value.into(),
                now.into(),
            ],
        )
        .await?;
        Ok(id)
    }

    /// TXT records published for one order.
    pub async fn dns_records_of(&self, order_id: &str) -> Result<Vec<DnsRecord>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, order_id, provider_id, fqdn, value, created_at FROM dns_records WHERE order_id = $1",
            vec![order_id.into()],
        )
        .await?;
        rows.iter().map(rows::dns_record).collect()
    }

    /// TXT records left behind by orders that are no longer open (a crash
    /// between publishing and cleaning up).
    pub async fn stale_dns_records(&self, limit: u64) -> Result<Vec<DnsRecord>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, order_id, provider_id, fqdn, value, created_at FROM dns_records d WHERE NOT EXISTS \
             (SELECT 1 FROM orders o WHERE o.id = d.order_id \
              AND o.state IN ('pending', 'processing')) LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter().map(rows::dns_record).collect()
    }

    /// Forgets a TXT record once it is removed from DNS.
    pub async fn delete_dns_record(&self, id: &str) -> Result<(), StoreError> {
        exec(
            &self.db,
            "DELETE FROM dns_records WHERE id = $1",
            vec![id.into()],
        )
        .await?;
        Ok(())
    }

    /// Records how long the propagation check of an order took.
    pub async fn set_propagation_ms(&self, order_id: &str, ms: i64) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE orders SET propagation_ms = $2 WHERE id = $1",
            vec![order_id.into(), ms.into()],
        )
        .await?;
        Ok(())
    }

    // ----- API tokens ------------------------------------------------------

    /// Stores a new token (only the secret's SHA-256) and audits it, in one
    /// transaction.
    pub async fn create_token(
        &self,
        t: &NewToken,
        actor: &str,
        now: i64,
    ) -> Result<TokenRecord, StoreError> {
        let tx = self.db.begin().await?;
        let id = new_id();
        let n = exec(
            &tx,
            "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            vec![
                id.clone().into(),
                t.name.clone().into(),
                t.role.as_str().into(),
                t.secret_sha256.clone().into(),
                now.into(),
                t.expires_at.into(),
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Duplicate(format!("token '{}'", t.name)));
        }
        insert_audit(
            &tx,
            &AuditEvent::ok(
                now,
                actor,
                "token.create",
                t.name.clone(),
                None,
                Some(format!("{{\"role\":\"{}\"}}", t.role.as_str())),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(TokenRecord {
            id,
            name: t.name.clone(),
            role: t.role,
            created_at: now,
            last_used_at: None,
            expires_at: t.expires_at,
        })
    }

    /// The token whose secret hashes to `secret_sha256`, if any; marks it
    /// used (at most once a minute, to keep reads cheap).
    pub async fn token_by_hash(
        &self,
        secret_sha256: &str,
        now: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = one(
            &self.db,
            "SELECT id, name, role, created_at, last_used_at, expires_at FROM api_tokens \
             WHERE secret_sha256 = $1",
            vec![secret_sha256.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let t = rows::token(&row)?;
        if t.last_used_at.is_none_or(|u| u < now - 60) {
            exec(
                &self.db,
                "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1",
                vec![t.id.clone().into(), now.into()],
            )
            .await?;
        }
        Ok(Some(t))
    }

    /// All tokens (never their secrets), by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, name, role, created_at, last_used_at, expires_at FROM api_tokens \
             ORDER BY name",
            vec![],
        )
        .await?;
        rows.iter().map(rows::token).collect()
    }

    /// Deletes a token by name and audits it, in one transaction.
    pub async fn delete_token(&self, name: &str, actor: &str, now: i64) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let n = exec(
            &tx,
            "DELETE FROM api_tokens WHERE name = $1",
            vec![name.into()],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("token '{name}'")));
        }
        insert_audit(
            &tx,
            &AuditEvent::ok(now, actor, "token.delete", name, None, None),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The ids of distrusted CAs.
    pub async fn distrusted_cas(&self) -> Result<Vec<String>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT ca_id FROM ca_status WHERE distrusted = TRUE ORDER BY ca_id",
            vec![],
        )
        .await?;
        rows.iter().map(|r| get(r, "ca_id")).collect()
    }

    /// Per CA: how many names are active on it and how many slots it holds.
    pub async fn ca_usage(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT s.ca_id, COUNT(*) AS slots, \
             SUM(CASE WHEN s.slot = n.active_slot THEN 1 ELSE 0 END) AS active \
             FROM slots s JOIN names n ON n.id = s.name_id GROUP BY s.ca_id",
            vec![],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "ca_id")?, get(r, "active")?, get(r, "slots")?)))
            .collect()
    }

    /// Pending revocations: (job id, CA id, the certificate's PEM chain,
    /// RFC 5280 reason code). The chain is copied into the job, so a job
    /// outlives the deletion of its name.
    pub async fn pending_revocations(
        &self,
        limit: u64,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, ca_id, chain_pem, reason_code FROM revocations \
             WHERE state = 'pending' ORDER BY created_at LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "id")?,
                    get(r, "ca_id")?,
                    get(r, "chain_pem")?,
                    get::<i32>(r, "reason_code")
                        .map(i64::from)
                        .or_else(|_| get(r, "reason_code"))?,
                ))
            })
            .collect()
    }

    /// Gives back every order `owner` still leases (graceful shutdown): each
    /// becomes due at once for any replica instead of waiting for its lease
    /// to expire. The owner's later writes to them are refused (they check
    /// the lease), so a task still running cannot overwrite the new
    /// holder's work. Returns how many.
    pub async fn release_leases(&self, owner: &str, now: i64) -> Result<u64, StoreError> {
        exec(
            &self.db,
            "UPDATE orders SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = $2, updated_at = $2 \
             WHERE lease_owner = $1 AND state = 'processing'",
            vec![owner.into(), now.into()],
        )
        .await
    }

    /// Records the outcome of a revocation attempt.
    pub async fn revocation_result(
        &self,
        id: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let state = if error.is_none() { "done" } else { "pending" };
        // One transaction: a revocation is never `done` while its
        // certificate still looks usable to a swap.
        let tx = self.db.begin().await?;
        exec(
            &tx,
            "UPDATE revocations SET state = $2, attempts = attempts + 1, last_error = $3, \
             updated_at = $4 WHERE id = $1",
            vec![
                id.into(),
                state.into(),
                error.map(str::to_string).into(),
                now.into(),
            ],
        )
        .await?;
        if error.is_none() {
            // Swaps never land on it again (`standby_revoked`).
            exec(
                &tx,
                "UPDATE certificates SET revoked_at = $2, revocation_source = 'acme', \
                 revocation_reason = (SELECT reason_code FROM revocations WHERE id = $1) \
                 WHERE revoked_at IS NULL AND id = \
                 (SELECT certificate_id FROM revocations WHERE id = $1)",
                vec![id.into(), now.into()],
            )
            .await?;
            let current = all(
                &tx,
                "SELECT s.name_id, s.slot FROM slots s JOIN revocations r \
                 ON r.certificate_id = s.current_cert_id WHERE r.id = $1",
                vec![id.into()],
            )
            .await?;
            for r in &current {
                let name: String = get(r, "name_id")?;
                let slot: String = get(r, "slot")?;
                refresh_swap_facts(&tx, &name, slot.parse().map_err(StoreError::Db)?).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    // ----- metrics -----------------------------------------------------------

    /// Counts for `/metrics`: each a small aggregate query, so scraping a
    /// store of millions of names stays cheap.
    pub async fn metrics(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let queries: [(&str, &str); 6] = [
            ("twincert_names", "SELECT COUNT(*) AS n FROM names"),
            (
                "twincert_slots_with_certificate",
                "SELECT COUNT(*) AS n FROM slots WHERE current_cert_id IS NOT NULL",
            ),
            (
                "twincert_orders_open",
                "SELECT COUNT(*) AS n FROM orders WHERE state IN ('pending', 'processing')",
            ),
            (
                "twincert_orders_failing",
                "SELECT COUNT(*) AS n FROM orders WHERE state IN ('pending', 'processing') \
                 AND last_error IS NOT NULL",
            ),
            (
                "twincert_names_diversity_violations",
                "SELECT COUNT(*) AS n FROM names WHERE diversity_error IS NOT NULL",
            ),
            (
                "twincert_certificates_expiring_7d",
                "SELECT COUNT(*) AS n FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                 WHERE c.not_after < $1",
            ),
        ];
        let mut out = Vec::with_capacity(queries.len());
        for (metric, sql) in queries {
            let values = if sql.contains("$1") {
                vec![(now + 7 * 86400).into()]
            } else {
                vec![]
            };
            let row = one(&self.db, sql, values)
                .await?
                .ok_or_else(|| StoreError::Db("COUNT returned no row".into()))?;
            out.push((metric.to_string(), get(&row, "n")?));
        }
        Ok(out)
    }

    // ----- audit -----------------------------------------------------------

    /// Appends an audit event.
    pub async fn audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        insert_audit(&self.db, e).await
    }

    /// The newest audit events.
    pub async fn audit_events(&self, limit: u64) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self
            .audit_page(limit, None)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// A page of audit events, newest first, older than event `before`;
    /// each with its id (the cursor of the next page).
    pub async fn audit_page(
        &self,
        limit: u64,
        before: Option<i64>,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, at, actor, action, target, reason, result, details FROM audit_events \
             WHERE id < $2 ORDER BY id DESC LIMIT $1",
            vec![(limit as i64).into(), before.unwrap_or(i64::MAX).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "id")?,
                    AuditEvent {
                        at: get(r, "at")?,
                        actor: get(r, "actor")?,
                        action: get(r, "action")?,
                        target: get(r, "target")?,
                        reason: get(r, "reason")?,
                        result: get(r, "result")?,
                        details: get(r, "details")?,
                    },
                ))
            })
            .collect()
    }
}

/// Hides a password in a database URL for error messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Converts an order state text for records.
fn order_state(s: &str) -> Result<OrderState, StoreError> {
    s.parse().map_err(StoreError::Db)
}
