//! Leases: order rows handed to one worker at a time (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL), renewed by heartbeat, given back at shutdown;
//! and singleton leases, which let exactly one replica run a periodic pass.

use sea_orm::{DatabaseConnection, DbBackend, Value};

use super::StoreError;
use super::rows::OrderJob;
use super::sql::{all, exec, get};

/// Makes leased orders due at `$1` for any replica; callers add which
/// leases (`AND …`).
const HAND_BACK: &str = "UPDATE orders SET state = 'pending', lease_owner = NULL, \
     lease_expires_at = NULL, next_attempt_at = $1, updated_at = $1 WHERE state = 'processing'";

/// Order leases and singleton leases.
#[derive(Clone)]
pub struct Leases {
    pub(super) db: DatabaseConnection,
}

impl Leases {
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
             o.private_key_id, n.domains, n.key_type, n.challenge, n.dns_provider, n.acme_profiles \
             FROM orders o \
             JOIN names n ON n.id = o.name_id WHERE o.id IN ({}) ORDER BY o.priority, o.next_attempt_at",
            holes.join(", ")
        );
        all(&self.db, &sql, ids)
            .await?
            .iter()
            .map(super::rows::order_job)
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

    /// Gives back every lease, whoever held it — order leases and
    /// singleton leases: only for a process that provably holds the
    /// database alone (SQLite under its lock file), at start, so what a
    /// killed process had in flight resumes at once instead of after its
    /// lease. Returns how many orders.
    pub async fn release_all_leases(&self, now: i64) -> Result<u64, StoreError> {
        exec(&self.db, "DELETE FROM singleton_leases", vec![]).await?;
        exec(&self.db, HAND_BACK, vec![now.into()]).await
    }

    /// Gives back the order leases and singleton leases held by earlier
    /// incarnations of replica `replica` (owners `"<replica>#…"`) other
    /// than `owner` (this one), at start: nobody else uses that name, so
    /// its orders resume at once. Their old holder, should it still run,
    /// is fenced as always: its writes name the old owner and are refused.
    /// Returns how many orders.
    pub async fn take_back_leases(
        &self,
        replica: &str,
        owner: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let prefix = format!("{replica}#");
        let len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
        exec(
            &self.db,
            "DELETE FROM singleton_leases WHERE substr(owner, 1, $2) = $1 AND owner <> $3",
            vec![prefix.clone().into(), len.into(), owner.into()],
        )
        .await?;
        exec(
            &self.db,
            &format!("{HAND_BACK} AND substr(lease_owner, 1, $3) = $2 AND lease_owner <> $4"),
            vec![now.into(), prefix.into(), len.into(), owner.into()],
        )
        .await
    }

    /// Gives back every order `owner` still leases (graceful shutdown): each
    /// becomes due at once for any replica instead of waiting for its lease
    /// to expire. The owner's later writes to them are refused (they check
    /// the lease), so a task still running cannot overwrite the new
    /// holder's work. Returns how many.
    pub async fn release_leases(&self, owner: &str, now: i64) -> Result<u64, StoreError> {
        exec(
            &self.db,
            &format!("{HAND_BACK} AND lease_owner = $2"),
            vec![now.into(), owner.into()],
        )
        .await
    }

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
}
