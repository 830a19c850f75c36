//! Figures for `/metrics`: names by state (the same rule as the API's
//! `state`), orders by state and CA, the work queue, swaps, DNS
//! propagation, revocation and alert series, and the expiry time of the
//! soonest slots' certificates. Each is one aggregate query.
//!
//! At millions of names those queries take seconds, so a scrape does not
//! run them: one replica recounts them all ([`Store::recount`], the
//! `counts` controller under its singleton lease) and stores the result
//! in `metric_counts` ([`Metrics::save_counts`]); a scrape reads those
//! rows ([`Metrics::load_counts`]). Until the first pass has stored a
//! set, the scrape leaves these series out.

use sea_orm::DatabaseConnection;

use super::console::{OVERVIEW_DAYS, OverviewCounts};
use super::names::{NAME_STATE_JOINS, name_state_case};
use super::sql::{all, exec, get, holes, one, with_tx};
use super::{Store, StoreError};

/// Aggregate figures for `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub(super) db: DatabaseConnection,
}

/// A metric series: name with labels, value.
pub type Series = (String, f64);

/// A Prometheus label value, escaped.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything a scrape shows from the store's aggregates, as counted at
/// `computed_at` (one pass; its queries are separate statements, so two
/// figures may be a few milliseconds apart).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Unix seconds when the pass began.
    pub computed_at: i64,
    /// How long the pass took.
    pub pass_seconds: f64,
    /// Unlabelled gauges (`twincert_names`, …), see [`Metrics::basic`].
    pub totals: Vec<(String, i64)>,
    /// Per CA: (CA, active names, slots), see `Cas::ca_usage`.
    pub usage: Vec<(String, i64, i64)>,
    /// Sealed secrets per master key id, see `Keys::sealed_by_key_id`.
    pub sealed: Vec<(String, i64)>,
    /// Labelled series: revocation, scale, and the soonest expiries.
    pub series: Vec<Series>,
    /// What the console's overview shows beyond the series (standby
    /// posture, CA mix, expiry timeline; its `states` stay empty — they
    /// are the `twincert_names_by_state` series), see
    /// `Console::overview_counts`. Not part of `/metrics`.
    pub overview: OverviewCounts,
}

/// The unlabelled gauges and the query that counts each.
pub(super) const BASIC: [(&str, &str); 6] = [
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

/// Per-slot expiry series a scrape shows: the soonest-expiring ones (the
/// ones an alert is about), not a million series.
pub const EXPIRY_SERIES: u64 = 10_000;

/// Rows written per INSERT when a set of counts is stored (three values
/// each: well under SQLite's 32,766 parameters).
const COUNT_ROWS_PER_INSERT: usize = 500;

impl Store {
    /// Counts every aggregate a scrape shows, at `now`, with the `expiry`
    /// soonest-expiring slots: the slow part of a scrape (seconds at a
    /// million names), run by the `counts` controller.
    pub async fn recount(&self, now: i64, expiry: u64) -> Result<Counts, StoreError> {
        let started = std::time::Instant::now();
        let m = self.metrics();
        let totals = m.basic(now).await?;
        let usage = self.cas().ca_usage().await?;
        let sealed = self.keys().sealed_by_key_id().await?;
        let mut series = m.revocation_metrics(now).await?;
        series.extend(m.scale_metrics(now).await?);
        series.extend(m.expiry_series(expiry).await?);
        let overview = self.console().overview_counts(now, OVERVIEW_DAYS).await?;
        Ok(Counts {
            computed_at: now,
            pass_seconds: started.elapsed().as_secs_f64(),
            totals,
            usage,
            sealed,
            series,
            overview,
        })
    }
}

impl Metrics {
    // ----- maintained counts -------------------------------------------------

    /// Replaces the stored set of counts with `counts`, in one transaction
    /// (a scrape sees the old set or the new one, never a mix). A set older
    /// than the stored one is dropped: two replicas that both ran a pass
    /// (one lost its lease mid-pass) leave the newer.
    pub async fn save_counts(&self, counts: &Counts) -> Result<bool, StoreError> {
        let mut rows: Vec<(&str, String, f64)> = vec![
            ("meta", "computed_at".into(), counts.computed_at as f64),
            ("meta", "pass_seconds".into(), counts.pass_seconds),
        ];
        rows.extend(
            counts
                .totals
                .iter()
                .map(|(k, v)| ("total", k.clone(), *v as f64)),
        );
        for (ca, active, slots) in &counts.usage {
            rows.push(("usage_active", ca.clone(), *active as f64));
            rows.push(("usage_slots", ca.clone(), *slots as f64));
        }
        rows.extend(
            counts
                .sealed
                .iter()
                .map(|(k, v)| ("sealed", k.clone(), *v as f64)),
        );
        // The same series twice (it cannot happen today) would break the
        // primary key: the last one wins, as it would in the exposition.
        let mut series: Vec<&Series> = counts.series.iter().collect();
        series.reverse();
        let mut seen = std::collections::HashSet::new();
        series.retain(|(k, _)| seen.insert(k.as_str()));
        rows.extend(series.into_iter().map(|(k, v)| ("series", k.clone(), *v)));
        rows.extend(counts.overview.stored_rows());
        with_tx(&self.db, async |tx| {
            let newer = one(
                tx,
                "SELECT value FROM metric_counts WHERE part = 'meta' AND series = 'computed_at'",
                vec![],
            )
            .await?
            .map(|r| get::<String>(&r, "value"))
            .transpose()?
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|stored| stored > counts.computed_at as f64);
            if newer {
                return Ok(false);
            }
            exec(tx, "DELETE FROM metric_counts", vec![]).await?;
            for chunk in rows.chunks(COUNT_ROWS_PER_INSERT) {
                let values = (0..chunk.len())
                    .map(|i| format!("({})", holes(3 * i + 1, 3)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let params = chunk
                    .iter()
                    .flat_map(|(p, k, v)| [(*p).into(), k.clone().into(), v.to_string().into()])
                    .collect();
                exec(
                    tx,
                    &format!("INSERT INTO metric_counts (part, series, value) VALUES {values}"),
                    params,
                )
                .await?;
            }
            Ok(true)
        })
        .await
    }

    /// The stored set of counts; `None` before the first pass stored one.
    pub async fn load_counts(&self) -> Result<Option<Counts>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT part, series, value FROM metric_counts",
            vec![],
        )
        .await?;
        let mut counts = Counts::default();
        let mut stored = false;
        let mut usage: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for r in &rows {
            let (part, key, value) = count_row(r)?;
            // Counts are integers well inside f64's exact range (2^53).
            let int = value as i64;
            match (part.as_str(), key.as_str()) {
                ("meta", "computed_at") => {
                    counts.computed_at = int;
                    stored = true;
                }
                ("meta", "pass_seconds") => counts.pass_seconds = value,
                ("total", _) => counts.totals.push((key, int)),
                ("usage_active", _) => usage.entry(key).or_default().0 = int,
                ("usage_slots", _) => usage.entry(key).or_default().1 = int,
                ("sealed", _) => counts.sealed.push((key, int)),
                ("series", _) => counts.series.push((key, value)),
                (p, _) => counts.overview.read_row(p, key, value),
            }
        }
        if !stored {
            return Ok(None);
        }
        // The order the live queries give: totals as `basic` lists them,
        // CAs and key ids sorted.
        let order = |k: &str| BASIC.iter().position(|(m, _)| *m == k);
        counts.totals.sort_by_key(|(k, _)| order(k));
        counts.sealed.sort();
        counts.usage = usage.into_iter().map(|(ca, (a, s))| (ca, a, s)).collect();
        Ok(Some(counts))
    }

    // ----- metrics -----------------------------------------------------------

    /// Counts for `/metrics`: each a small aggregate query, so scraping a
    /// store of millions of names stays cheap.
    pub async fn basic(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let queries = BASIC;
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
    /// Names by state (`ready`, `degraded`, `provisioning`, every one
    /// present), by the API's rule (policy::name_state, restated in
    /// `names::name_state_case`). One aggregate query.
    pub async fn names_by_state(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let state = name_state_case("$1");
        let mut by_state: Vec<(String, i64)> = ["ready", "degraded", "provisioning", "waiting"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for r in &all(
            &self.db,
            &format!(
                "SELECT {state} AS name_state, COUNT(*) AS n FROM names n \
                 {NAME_STATE_JOINS} GROUP BY name_state"
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
        out.extend(self.order_queue(now).await?);
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
        out.push(("twincert_names_swapped_total".into(), self.swapped().await?));
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

    /// The job queue in one pass over the open orders (index): due
    /// orders, leases that ran out, how long the oldest live lease has been
    /// held (a worker stuck on one order while its heartbeat keeps the
    /// lease) and how long the oldest due order has waited for a worker.
    pub(super) async fn order_queue(&self, now: i64) -> Result<Vec<Series>, StoreError> {
        let mut out = Vec::new();
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
        Ok(out)
    }

    /// Names moved by operations so far.
    pub(super) async fn swapped(&self) -> Result<f64, StoreError> {
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast back.
        let swapped = one(
            &self.db,
            "SELECT CAST(SUM(affected) AS BIGINT) AS n FROM operations \
             WHERE kind IN ('swap', 'distrust', 'revocation', 'incident')",
            vec![],
        )
        .await?
        .ok_or_else(|| StoreError::Db("aggregate returned no row".into()))?;
        Ok(get::<Option<i64>>(&swapped, "n")?.unwrap_or(0) as f64)
    }

    /// `twincert_certificate_expiration_timestamp_seconds{name,slot,ca}`
    /// (cert-manager's name) for the `limit` soonest-expiring current
    /// certificates: the ones an alert is about, without a million series
    /// per scrape.
    pub async fn expiry_series(&self, limit: u64) -> Result<Vec<Series>, StoreError> {
        let rows = all(
            &self.db,
            // Walks `certificates_expiry` in order and stops at `limit`
            // current ones (a certificate's name and slot are its slot's),
            // instead of sorting every slot.
            "SELECT c.name_id, c.slot, c.ca_id, c.not_after FROM certificates c \
             WHERE EXISTS (SELECT 1 FROM slots s WHERE s.current_cert_id = c.id) \
             ORDER BY c.not_after, c.name_id, c.slot LIMIT $1",
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

    // ----- metrics -----------------------------------------------------------

    /// Revocation/ARI/incident/alert figures for `/metrics`: current
    /// certificates by CA and status and with their ARI window open; per
    /// such CA the newest revocation check and ARI poll of any of its
    /// certificates (an index read per CA; only current certificates are
    /// checked, so this is the newest check of a current one but for one
    /// replaced since); open incidents and alerts; names without a usable
    /// standby.
    pub async fn revocation_metrics(
        &self,
        now: i64,
    ) -> Result<Vec<super::metrics::Series>, StoreError> {
        let mut out: Vec<Series> = Vec::new();
        let status = super::counts::STATUS_CASE;
        let rows = all(
            &self.db,
            &format!(
                "SELECT c.ca_id, {status} AS state, COUNT(*) AS n \
                 FROM slots s JOIN certificates c ON c.id = s.current_cert_id \
                 GROUP BY c.ca_id, {status}"
            ),
            vec![],
        )
        .await?;
        for r in &rows {
            let ca: String = get(r, "ca_id")?;
            let state: String = get(r, "state")?;
            out.push((
                format!("twincert_certificates_by_status{{ca=\"{ca}\",state=\"{state}\"}}"),
                get::<i64>(r, "n")? as f64,
            ));
        }
        let rows = all(
            &self.db,
            "SELECT c.ca_id, \
             SUM(CASE WHEN c.ari_window_start <= $1 AND c.revoked_at IS NULL THEN 1 ELSE 0 END) \
             AS ari_due \
             FROM slots s JOIN certificates c ON c.id = s.current_cert_id GROUP BY c.ca_id",
            vec![now.into()],
        )
        .await?;
        for r in &rows {
            let ca: String = get(r, "ca_id")?;
            out.extend(self.last_checks(&ca).await?);
            out.push((
                format!("twincert_ari_window_open{{ca=\"{ca}\"}}"),
                get::<Option<i64>>(r, "ari_due")?.unwrap_or(0) as f64,
            ));
        }
        out.extend(self.incidents_and_alerts().await?);
        let row = one(
            &self.db,
            "SELECT COUNT(*) AS n FROM names WHERE standby_missing_since IS NOT NULL",
            vec![],
        )
        .await?;
        if let Some(r) = row {
            out.push((
                "twincert_names_without_usable_standby".into(),
                get::<i64>(&r, "n")? as f64,
            ));
        }
        Ok(out)
    }

    /// A CA's newest revocation check and ARI poll (of any of its
    /// certificates; index `certificates_checked`, `certificates_ari_checked`).
    pub(super) async fn last_checks(&self, ca: &str) -> Result<Vec<Series>, StoreError> {
        let mut out = Vec::new();
        for (col, metric) in [
            (
                "status_checked_at",
                "twincert_revocation_last_check_timestamp_seconds",
            ),
            ("ari_checked_at", "twincert_ari_last_poll_timestamp_seconds"),
        ] {
            let t = one(
                &self.db,
                &format!("SELECT MAX({col}) AS t FROM certificates WHERE ca_id = $1"),
                vec![ca.into()],
            )
            .await?
            .map(|r| get::<Option<i64>>(&r, "t"))
            .transpose()?
            .flatten();
            if let Some(t) = t {
                out.push((format!("{metric}{{ca=\"{ca}\"}}"), t as f64));
            }
        }
        Ok(out)
    }

    /// Open CA incidents and open alerts (small tables, partial indexes).
    pub(super) async fn incidents_and_alerts(&self) -> Result<Vec<Series>, StoreError> {
        let mut out = Vec::new();
        for r in &all(
            &self.db,
            "SELECT ca_id, COUNT(*) AS n FROM ca_incidents WHERE state = 'open' GROUP BY ca_id",
            vec![],
        )
        .await?
        {
            let ca: String = get(r, "ca_id")?;
            out.push((
                format!("twincert_ca_incidents_open{{ca=\"{ca}\"}}"),
                get::<i64>(r, "n")? as f64,
            ));
        }
        for r in &all(
            &self.db,
            "SELECT kind, COUNT(*) AS n FROM alerts WHERE resolved_at IS NULL GROUP BY kind",
            vec![],
        )
        .await?
        {
            let kind: String = get(r, "kind")?;
            out.push((
                format!("twincert_alerts_open{{kind=\"{kind}\"}}"),
                get::<i64>(r, "n")? as f64,
            ));
        }
        Ok(out)
    }
}

/// One `metric_counts` row: its part, series and value (stored as text).
pub(super) fn count_row(r: &sea_orm::QueryResult) -> Result<(String, String, f64), StoreError> {
    let part: String = get(r, "part")?;
    let key: String = get(r, "series")?;
    let text: String = get(r, "value")?;
    let value = text
        .parse()
        .map_err(|_| StoreError::Db(format!("metric_counts value {text:?}")))?;
    Ok((part, key, value))
}
