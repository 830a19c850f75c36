//! Figures for `/metrics` beyond the basic counts (issue 8): names by state
//! (the same rule as the API's `state`), orders by state and CA, the work
//! queue, swaps, DNS propagation, and the expiry time of the slots'
//! certificates (the soonest ones; see [`Store::expiry_series`]). Each is
//! one aggregate query, so a scrape stays cheap at a million names.

use super::{Store, StoreError, all, get, one};

/// A metric series: name with labels, value.
pub type Series = (String, f64);

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Store {
    /// Names by state (`ready`, `degraded`, `provisioning`, every one
    /// present), by the API's rule (policy::name_state): degraded when the
    /// pair is not diverse or a slot failed its first issuance or expired;
    /// ready when both hold an unexpired certificate; provisioning
    /// otherwise. One aggregate query.
    pub async fn names_by_state(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let bad = |s: &str, c: &str| {
            format!(
                "(({c}.id IS NOT NULL AND {c}.not_after <= $1) OR \
                 ({c}.id IS NULL AND {s}.last_error IS NOT NULL))"
            )
        };
        let ok = |c: &str| format!("({c}.id IS NOT NULL AND {c}.not_after > $1)");
        let state = format!(
            "CASE WHEN n.diversity_error IS NOT NULL OR {} OR {} THEN 'degraded' \
             WHEN {} AND {} THEN 'ready' ELSE 'provisioning' END",
            bad("sp", "cp"),
            bad("sb", "cb"),
            ok("cp"),
            ok("cb")
        );
        let mut by_state: Vec<(String, i64)> = ["ready", "degraded", "provisioning"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for r in &all(
            &self.db,
            &format!(
                "SELECT {state} AS name_state, COUNT(*) AS n FROM names n \
                 JOIN slots sp ON sp.name_id = n.id AND sp.slot = 'primary' \
                 LEFT JOIN certificates cp ON cp.id = sp.current_cert_id \
                 JOIN slots sb ON sb.name_id = n.id AND sb.slot = 'backup' \
                 LEFT JOIN certificates cb ON cb.id = sb.current_cert_id \
                 GROUP BY name_state"
            ),
            vec![now.into()],
        )
        .await?
        {
            let s: String = get(r, "name_state")?;
            let n: i64 = get(r, "n")?;
            if let Some(e) = by_state.iter_mut().find(|(k, _)| *k == s) {
                e.1 = n;
            }
        }
        Ok(by_state)
    }

    /// Names by state, orders by state and CA, the due queue, orders whose
    /// lease ran out, names swapped, DNS propagation.
    pub async fn scale_metrics(&self, now: i64) -> Result<Vec<Series>, StoreError> {
        let mut out = Vec::new();
        let by_state = self.names_by_state(now).await?;
        for (s, n) in by_state {
            out.push((
                format!("twincert_names_by_state{{state=\"{s}\"}}"),
                n as f64,
            ));
        }
        for r in &all(
            &self.db,
            "SELECT ca_id, state, COUNT(*) AS n FROM orders GROUP BY ca_id, state",
            vec![],
        )
        .await?
        {
            let ca: String = get(r, "ca_id")?;
            let st: String = get(r, "state")?;
            let n: i64 = get(r, "n")?;
            out.push((
                format!(
                    "twincert_orders{{ca=\"{}\",state=\"{}\"}}",
                    label(&ca),
                    label(&st)
                ),
                n as f64,
            ));
        }
        // The job queue in one pass over `orders`: due orders, leases that
        // ran out, how long the oldest live lease has been held (a worker
        // stuck on one order while its heartbeat keeps the lease) and how
        // long the oldest due order has waited for a worker.
        let q = one(
            &self.db,
            "SELECT \
             SUM(CASE WHEN state = 'pending' AND next_attempt_at <= $1 THEN 1 ELSE 0 END) AS due, \
             SUM(CASE WHEN state = 'processing' AND lease_expires_at < $1 THEN 1 ELSE 0 END) \
               AS expired, \
             MAX(CASE WHEN state = 'processing' AND lease_expires_at >= $1 \
               THEN CAST($1 AS BIGINT) - leased_at END) AS lease_age, \
             MAX(CASE WHEN state = 'pending' AND next_attempt_at <= $1 \
               THEN CAST($1 AS BIGINT) - next_attempt_at END) AS waited \
             FROM orders WHERE state IN ('pending', 'processing')",
            vec![now.into()],
        )
        .await?
        .ok_or_else(|| StoreError::Db("aggregate returned no row".into()))?;
        let n = |col: &str| -> Result<f64, StoreError> {
            Ok(get::<Option<i64>>(&q, col)?.unwrap_or(0) as f64)
        };
        out.push(("twincert_order_queue_due".into(), n("due")?));
        out.push(("twincert_orders_lease_expired".into(), n("expired")?));
        out.push((
            "twincert_order_lease_oldest_age_seconds".into(),
            n("lease_age")?,
        ));
        out.push((
            "twincert_order_queue_oldest_due_seconds".into(),
            n("waited")?,
        ));
        // Deployments by state and endpoint checks by last outcome.
        for (sql, metric, label_name) in [
            (
                "SELECT state AS k, COUNT(*) AS n FROM deployments GROUP BY state",
                "twincert_deployments",
                "state",
            ),
            (
                "SELECT COALESCE(outcome, 'unchecked') AS k, COUNT(*) AS n FROM endpoints \
                 GROUP BY COALESCE(outcome, 'unchecked')",
                "twincert_endpoint_checks",
                "outcome",
            ),
        ] {
            for r in &all(&self.db, sql, vec![]).await? {
                let k: String = get(r, "k")?;
                let n: i64 = get(r, "n")?;
                out.push((
                    format!("{metric}{{{label_name}=\"{}\"}}", label(&k)),
                    n as f64,
                ));
            }
        }
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast back.
        let swapped = one(
            &self.db,
            "SELECT CAST(SUM(affected) AS BIGINT) AS n FROM operations \
             WHERE kind IN ('swap', 'distrust', 'revocation', 'incident')",
            vec![],
        )
        .await?
        .ok_or_else(|| StoreError::Db("aggregate returned no row".into()))?;
        out.push((
            "twincert_names_swapped_total".into(),
            get::<Option<i64>>(&swapped, "n")?.unwrap_or(0) as f64,
        ));
        if let Some(r) = one(
            &self.db,
            "SELECT COUNT(*) AS n, CAST(SUM(propagation_ms) AS BIGINT) AS ms FROM orders \
             WHERE propagation_ms IS NOT NULL",
            vec![],
        )
        .await?
        {
            let n: i64 = get(&r, "n")?;
            let ms = get::<Option<i64>>(&r, "ms")?.unwrap_or(0);
            out.push(("twincert_dns_propagation_seconds_count".into(), n as f64));
            out.push((
                "twincert_dns_propagation_seconds_sum".into(),
                ms as f64 / 1000.0,
            ));
        }
        Ok(out)
    }

    /// `twincert_certificate_expiration_timestamp_seconds{name,slot,ca}`
    /// (cert-manager's name) for the `limit` soonest-expiring current
    /// certificates: the ones an alert is about, without a million series
    /// per scrape.
    pub async fn expiry_series(&self, limit: u64) -> Result<Vec<Series>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT s.name_id, s.slot, c.ca_id, c.not_after FROM slots s \
             JOIN certificates c ON c.id = s.current_cert_id \
             ORDER BY c.not_after, s.name_id, s.slot LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = get(r, "name_id")?;
                let slot: String = get(r, "slot")?;
                let ca: String = get(r, "ca_id")?;
                let t: i64 = get(r, "not_after")?;
                Ok((
                    format!(
                        "twincert_certificate_expiration_timestamp_seconds{{name=\"{}\",slot=\"{}\",ca=\"{}\"}}",
                        label(&name),
                        label(&slot),
                        label(&ca)
                    ),
                    t as f64,
                ))
            })
            .collect()
    }
}
