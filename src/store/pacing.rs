//! Per-CA pacing: how many ACME orders a CA got in the last hour, the
//! reservation of a new one (one transaction per CA; PostgreSQL holds an
//! advisory lock so replicas together never exceed `orders_per_hour`),
//! and waking orders deferred by a limit that has since been raised.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::StoreError;
use super::sql::{exec, get, one, with_tx};

/// Per-CA order pacing.
#[derive(Clone)]
pub struct Pacing {
    pub(super) db: DatabaseConnection,
}

impl Pacing {
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
        with_tx(&self.db, async |tx| {
            if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
                one(
                    tx,
                    "SELECT pg_advisory_xact_lock(hashtext('twincert pace ' || $1)) IS NULL AS x",
                    vec![ca_id.into()],
                )
                .await?;
            }
            let row = one(
                tx,
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
                return Ok(Some((n, oldest)));
            }
            exec(
                tx,
                "UPDATE orders SET acme_ordered_at = $3 WHERE id = $1 AND lease_owner = $2",
                vec![order_id.into(), owner.into(), now.into()],
            )
            .await?;
            Ok(None)
        })
        .await
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
