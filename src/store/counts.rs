//! Counts maintained by bucket: what keeps `/metrics` cheap at ten million
//! names without a full recount every pass.
//!
//! Every name belongs to one of [`BUCKETS`] fixed buckets
//! (`names.count_bucket`, set at creation and never changed; its private
//! keys carry the same number). For each bucket the store keeps its
//! *partial* sums (`count_partials`: names, names by state, slots and
//! certificates by CA and status, closed orders, deployments, endpoint
//! checks, sealed keys) and the next moment one of its time-dependent
//! figures changes (`count_buckets.valid_until`: a certificate expires, or
//! enters its last 7 days, or its ARI window opens).
//!
//! **Marking.** A transaction that changes what one of those figures
//! counts marks the buckets of the names it changed in `count_dirty`
//! ([`mark_names`], [`mark_orders`], [`mark_certificates`]), in the same
//! transaction, as its last statement; a change to every name at once (a
//! CA-wide swap, a re-seal of every key, a restore) marks bucket
//! [`ALL`] with one row ([`mark_all`]). What is *not* marked because it is
//! read live each pass from an index: open orders (the queue, leases,
//! failures), each CA's newest revocation check and ARI poll, operations,
//! incidents, alerts, sealed accounts and packages, the soonest expiries.
//!
//! **A pass** ([`Store::count_maintained`], the `counts` controller under
//! its singleton lease) takes the marks (`taken = 1`), recounts the marked
//! buckets and those whose `valid_until` came — everything when [`ALL`] is
//! marked or no partial is stored yet (a new or just migrated store) —
//! and stores their partials, `valid_until` and the removal of
//! exactly the marks it took in one transaction; a mark set again while
//! the pass ran (`taken` back to 0) survives for the next pass. A pass that
//! fails leaves its marks, so the next takes them again. It then adds up
//! the partials (a few rows per bucket) and reads the live parts. At idle
//! it recounts nothing.
//!
//! The full recount ([`Store::recount`]) stays the reference: the store
//! contract compares the two after swaps, new names and failures.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseConnection, Value};

use super::metrics::{BASIC, Counts, Series, label};
use super::names::{NAME_STATE_JOINS, name_state_case};
use super::sql::{all, exec, get, holes, one, with_tx};
use super::{Store, StoreError};

/// How many buckets names are spread over. Fixed: a name's bucket is
/// stored with it. At 1M names a bucket holds ~250 names, at 10M ~2,500;
/// the partials are a few rows per bucket.
pub(crate) const BUCKETS: i64 = 4096;

/// The mark that means "every bucket".
pub(super) const ALL: i64 = -1;

/// Buckets per statement of a partial recount (one placeholder each).
const BUCKETS_PER_QUERY: usize = 500;

/// Rows per INSERT of partials (four values each).
const PARTIAL_ROWS_PER_INSERT: usize = 250;

/// A new name's bucket: FNV-1a of its id (any stable spread is correct;
/// an even one keeps buckets small).
pub(super) fn bucket_of(id: &str) -> i64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i64::from(h) & (BUCKETS - 1)
}

/// The upsert every mark ends with: a bucket already marked (and maybe
/// taken by a running pass) is marked again, so the pass does not remove
/// it.
const MARK_CONFLICT: &str =
    "ON CONFLICT (bucket) DO UPDATE SET taken = 0 WHERE count_dirty.taken <> 0";

/// Marks the buckets of the names `names_where` selects (an SQL
/// condition over `names n`) as changed.
pub(super) async fn mark_where<C: ConnectionTrait>(
    c: &C,
    names_where: &str,
    values: Vec<Value>,
) -> Result<(), StoreError> {
    exec(
        c,
        &format!(
            "INSERT INTO count_dirty (bucket, taken) SELECT DISTINCT n.count_bucket, 0 \
             FROM names n WHERE {names_where} ORDER BY 1 {MARK_CONFLICT}"
        ),
        values,
    )
    .await?;
    Ok(())
}

/// Marks the buckets of these names as changed (call it after inserting
/// a name and before deleting one).
pub(super) async fn mark_names<C: ConnectionTrait>(
    c: &C,
    name_ids: &[&str],
) -> Result<(), StoreError> {
    for chunk in name_ids.chunks(BUCKETS_PER_QUERY) {
        let values = chunk.iter().map(|n| (*n).into()).collect();
        mark_where(c, &format!("n.id IN ({})", holes(1, chunk.len())), values).await?;
    }
    Ok(())
}

/// Marks the buckets of the names of these orders.
pub(super) async fn mark_orders<C: ConnectionTrait>(
    c: &C,
    order_ids: &[&str],
) -> Result<(), StoreError> {
    for chunk in order_ids.chunks(BUCKETS_PER_QUERY) {
        let values = chunk.iter().map(|n| (*n).into()).collect();
        mark_where(
            c,
            &format!(
                "n.id IN (SELECT o.name_id FROM orders o WHERE o.id IN ({}))",
                holes(1, chunk.len())
            ),
            values,
        )
        .await?;
    }
    Ok(())
}

/// Marks the buckets of the names of these certificates.
pub(super) async fn mark_certificates<C: ConnectionTrait>(
    c: &C,
    cert_ids: &[&str],
) -> Result<(), StoreError> {
    for chunk in cert_ids.chunks(BUCKETS_PER_QUERY) {
        let values = chunk.iter().map(|n| (*n).into()).collect();
        mark_where(
            c,
            &format!(
                "n.id IN (SELECT c.name_id FROM certificates c WHERE c.id IN ({}))",
                holes(1, chunk.len())
            ),
            values,
        )
        .await?;
    }
    Ok(())
}

/// The buckets of the names `names_where` selects (read before a change
/// that decides what to mark from the old values; marked after it with
/// [`mark_buckets`], so the mark is the transaction's last lock).
pub(super) async fn buckets_where<C: ConnectionTrait>(
    c: &C,
    names_where: &str,
    values: Vec<Value>,
) -> Result<Vec<i64>, StoreError> {
    all(
        c,
        &format!("SELECT DISTINCT n.count_bucket AS b FROM names n WHERE {names_where}"),
        values,
    )
    .await?
    .iter()
    .map(|r| get(r, "b"))
    .collect()
}

/// Marks these buckets (as an `UPDATE … RETURNING count_bucket` gave
/// them) as changed.
pub(super) async fn mark_buckets<C: ConnectionTrait>(
    c: &C,
    buckets: &[i64],
) -> Result<(), StoreError> {
    let mut buckets = buckets.to_vec();
    buckets.sort_unstable();
    buckets.dedup();
    for chunk in buckets.chunks(BUCKETS_PER_QUERY) {
        let rows = (0..chunk.len())
            .map(|i| format!("(${}, 0)", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        exec(
            c,
            &format!("INSERT INTO count_dirty (bucket, taken) VALUES {rows} {MARK_CONFLICT}"),
            chunk.iter().map(|b| (*b).into()).collect(),
        )
        .await?;
    }
    Ok(())
}

/// Marks every bucket (one row): for changes to every name at once.
pub(super) async fn mark_all<C: ConnectionTrait>(c: &C) -> Result<(), StoreError> {
    exec(
        c,
        &format!("INSERT INTO count_dirty (bucket, taken) VALUES ({ALL}, 0) {MARK_CONFLICT}"),
        vec![],
    )
    .await?;
    Ok(())
}

/// Which buckets a partial recount covers.
enum Scope<'a> {
    All,
    Some(&'a [i64]),
}

/// One partial: (bucket, part, series, value).
type Partial = (i64, &'static str, String, i64);

/// What one pass of maintained counts did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CountPass {
    /// Buckets recounted (all of them: [`BUCKETS`]).
    pub buckets: usize,
    /// Whether every bucket was recounted.
    pub full: bool,
}

impl Store {
    /// One pass of the maintained counts at `now` (see the module doc):
    /// recounts the marked and time-due buckets, stores their partials,
    /// and returns the whole set as [`Store::recount`] would count it,
    /// with the `expiry` soonest expiries.
    pub async fn count_maintained(
        &self,
        now: i64,
        expiry: u64,
    ) -> Result<(Counts, CountPass), StoreError> {
        let started = std::time::Instant::now();
        let db = &self.metrics().db;
        exec(db, "UPDATE count_dirty SET taken = 1", vec![]).await?;
        let mut marked: Vec<i64> = Vec::new();
        for r in &all(db, "SELECT bucket FROM count_dirty WHERE taken = 1", vec![]).await? {
            marked.push(get(r, "bucket")?);
        }
        // Nothing stored yet (a new or just migrated store): count it all.
        let never = one(db, "SELECT bucket FROM count_partials LIMIT 1", vec![])
            .await?
            .is_none();
        let full = never || marked.contains(&ALL);
        let mut buckets = marked.clone();
        if !full {
            for r in &all(
                db,
                "SELECT bucket FROM count_buckets WHERE valid_until <= $1",
                vec![now.into()],
            )
            .await?
            {
                buckets.push(get(r, "bucket")?);
            }
            buckets.sort_unstable();
            buckets.dedup();
        }
        let pass = CountPass {
            buckets: if full {
                BUCKETS as usize
            } else {
                buckets.len()
            },
            full,
        };
        if full || !buckets.is_empty() {
            let scope = if full {
                Scope::All
            } else {
                Scope::Some(&buckets)
            };
            let (partials, valid) = partials(db, now, &scope).await?;
            store_partials(db, &scope, &marked, &partials, &valid).await?;
        }
        let mut counts = sum_partials(db).await?;
        live(db, now, expiry, &mut counts).await?;
        counts.computed_at = now;
        counts.pass_seconds = started.elapsed().as_secs_f64();
        Ok((counts, pass))
    }
}

/// `AND <col> IN (…)` for a scope, its placeholders from `$first`.
fn filter(scope: &Scope, col: &str, first: usize) -> (String, Vec<Value>) {
    match scope {
        Scope::All => (String::new(), vec![]),
        Scope::Some(b) => (
            format!(" AND {col} IN ({})", holes(first, b.len())),
            b.iter().map(|v| (*v).into()).collect(),
        ),
    }
}

/// The scope in pieces small enough for one statement each.
fn pieces<'a>(scope: &'a Scope<'a>) -> Vec<Scope<'a>> {
    match scope {
        Scope::All => vec![Scope::All],
        Scope::Some(b) => b.chunks(BUCKETS_PER_QUERY).map(Scope::Some).collect(),
    }
}

/// The status a current certificate counts as (the same rule as the full
/// recount's `revocation_metrics`).
pub(super) const STATUS_CASE: &str = "CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked' \
     WHEN c.status_checked_at IS NULL THEN 'unchecked' \
     WHEN c.status_error IS NOT NULL THEN 'undetermined' \
     WHEN c.status_source = 'none' THEN 'no_source' ELSE 'good' END";

/// Seconds before `not_after` a certificate counts as expiring.
const EXPIRING: i64 = 7 * 86_400;

/// Counts the partials of the buckets in `scope` at `now`, and for each
/// bucket the next moment a time-dependent figure of it changes.
async fn partials(
    db: &DatabaseConnection,
    now: i64,
    scope: &Scope<'_>,
) -> Result<(Vec<Partial>, BTreeMap<i64, i64>), StoreError> {
    let mut out: Vec<Partial> = Vec::new();
    let mut valid: BTreeMap<i64, i64> = BTreeMap::new();
    let n = |r: &sea_orm::QueryResult, col: &str| -> Result<i64, StoreError> {
        Ok(get::<Option<i64>>(r, col)?.unwrap_or(0))
    };
    for piece in pieces(scope) {
        let (f, fv) = filter(&piece, "n.count_bucket", 1);
        for r in &all(
            db,
            &format!(
                "SELECT n.count_bucket AS b, COUNT(*) AS n, \
                 SUM(CASE WHEN n.diversity_error IS NOT NULL THEN 1 ELSE 0 END) AS div, \
                 SUM(CASE WHEN n.standby_missing_since IS NOT NULL THEN 1 ELSE 0 END) AS nostandby \
                 FROM names n WHERE 1 = 1{f} GROUP BY n.count_bucket"
            ),
            fv.clone(),
        )
        .await?
        {
            let b: i64 = get(r, "b")?;
            out.push((b, "total", "twincert_names".into(), n(r, "n")?));
            out.push((
                b,
                "total",
                "twincert_names_diversity_violations".into(),
                n(r, "div")?,
            ));
            out.push((
                b,
                "series",
                "twincert_names_without_usable_standby".into(),
                n(r, "nostandby")?,
            ));
        }
        let (f2, mut fv2) = filter(&piece, "n.count_bucket", 2);
        let mut values: Vec<Value> = vec![now.into()];
        values.append(&mut fv2);
        for r in &all(
            db,
            &format!(
                "SELECT n.count_bucket AS b, {} AS name_state, COUNT(*) AS n FROM names n \
                 {NAME_STATE_JOINS} WHERE 1 = 1{f2} GROUP BY n.count_bucket, name_state",
                name_state_case("$1")
            ),
            values.clone(),
        )
        .await?
        {
            let state: String = get(r, "name_state")?;
            out.push((
                get(r, "b")?,
                "series",
                format!("twincert_names_by_state{{state=\"{state}\"}}"),
                n(r, "n")?,
            ));
        }
        for r in &all(
            db,
            &format!(
                "SELECT n.count_bucket AS b, COALESCE(c.ca_id, s.ca_id) AS ca_id, COUNT(*) AS slots, \
                 SUM(CASE WHEN s.slot = n.active_slot THEN 1 ELSE 0 END) AS active, \
                 SUM(CASE WHEN s.current_cert_id IS NOT NULL THEN 1 ELSE 0 END) AS with_cert \
                 FROM slots s JOIN names n ON n.id = s.name_id \
                 LEFT JOIN certificates c ON c.id = s.current_cert_id WHERE 1 = 1{f} \
                 GROUP BY n.count_bucket, COALESCE(c.ca_id, s.ca_id)"
            ),
            fv.clone(),
        )
        .await?
        {
            let b: i64 = get(r, "b")?;
            let ca: String = get(r, "ca_id")?;
            out.push((b, "usage_slots", ca.clone(), n(r, "slots")?));
            out.push((b, "usage_active", ca, n(r, "active")?));
            out.push((
                b,
                "total",
                "twincert_slots_with_certificate".into(),
                n(r, "with_cert")?,
            ));
        }
        // Current certificates: by CA and status, expiring, ARI windows
        // open, and when each of those (or a name's state) next changes.
        for r in &all(
            db,
            &format!(
                "SELECT n.count_bucket AS b, c.ca_id, {STATUS_CASE} AS state, COUNT(*) AS n, \
                 SUM(CASE WHEN c.not_after < $1 + {EXPIRING} THEN 1 ELSE 0 END) AS expiring, \
                 SUM(CASE WHEN c.ari_window_start <= $1 AND c.revoked_at IS NULL THEN 1 ELSE 0 END) \
                   AS ari_due, \
                 MIN(CASE WHEN c.not_after > $1 THEN c.not_after END) AS t_expiry, \
                 MIN(CASE WHEN c.not_after - {} > $1 THEN c.not_after - {} END) AS t_expiring, \
                 MIN(CASE WHEN c.ari_window_start > $1 THEN c.ari_window_start END) AS t_ari \
                 FROM slots s JOIN names n ON n.id = s.name_id \
                 JOIN certificates c ON c.id = s.current_cert_id WHERE 1 = 1{f2} \
                 GROUP BY n.count_bucket, c.ca_id, {STATUS_CASE}",
                EXPIRING - 1,
                EXPIRING - 1
            ),
            values.clone(),
        )
        .await?
        {
            let b: i64 = get(r, "b")?;
            let ca: String = get(r, "ca_id")?;
            let state: String = get(r, "state")?;
            out.push((
                b,
                "series",
                format!(
                    "twincert_certificates_by_status{{ca=\"{ca}\",state=\"{state}\"}}"
                ),
                n(r, "n")?,
            ));
            out.push((
                b,
                "total",
                "twincert_certificates_expiring_7d".into(),
                n(r, "expiring")?,
            ));
            out.push((
                b,
                "series",
                format!("twincert_ari_window_open{{ca=\"{ca}\"}}"),
                n(r, "ari_due")?,
            ));
            for col in ["t_expiry", "t_expiring", "t_ari"] {
                if let Some(t) = get::<Option<i64>>(r, col)? {
                    let e = valid.entry(b).or_insert(t);
                    *e = (*e).min(t);
                }
            }
        }
        // Closed orders (final: they change only when an order closes or
        // its name goes); open ones are read live.
        for r in &all(
            db,
            &format!(
                "SELECT n.count_bucket AS b, o.ca_id, o.state, COUNT(*) AS n, \
                 COUNT(o.propagation_ms) AS pn, CAST(SUM(o.propagation_ms) AS BIGINT) AS pms \
                 FROM orders o JOIN names n ON n.id = o.name_id \
                 WHERE o.state NOT IN ('pending', 'processing'){f} \
                 GROUP BY n.count_bucket, o.ca_id, o.state"
            ),
            fv.clone(),
        )
        .await?
        {
            let b: i64 = get(r, "b")?;
            let ca: String = get(r, "ca_id")?;
            let st: String = get(r, "state")?;
            out.push((
                b,
                "series",
                format!(
                    "twincert_orders{{ca=\"{}\",state=\"{}\"}}",
                    label(&ca),
                    label(&st)
                ),
                n(r, "n")?,
            ));
            out.push((b, "propagation", "count".into(), n(r, "pn")?));
            out.push((b, "propagation", "ms".into(), n(r, "pms")?));
        }
        for (sql, metric, label_name) in [
            (
                "SELECT n.count_bucket AS b, d.state AS k, COUNT(*) AS n FROM deployments d \
                 JOIN names n ON n.id = d.name_id WHERE 1 = 1{f} GROUP BY n.count_bucket, d.state",
                "twincert_deployments",
                "state",
            ),
            (
                "SELECT n.count_bucket AS b, COALESCE(e.outcome, 'unchecked') AS k, COUNT(*) AS n \
                 FROM endpoints e JOIN names n ON n.id = e.name_id WHERE 1 = 1{f} \
                 GROUP BY n.count_bucket, COALESCE(e.outcome, 'unchecked')",
                "twincert_endpoint_checks",
                "outcome",
            ),
        ] {
            for r in &all(db, &sql.replace("{f}", &f), fv.clone()).await? {
                let k: String = get(r, "k")?;
                out.push((
                    get(r, "b")?,
                    "series",
                    format!("{metric}{{{label_name}=\"{}\"}}", label(&k)),
                    n(r, "n")?,
                ));
            }
        }
        let (fk, fkv) = filter(&piece, "count_bucket", 1);
        for r in &all(
            db,
            &format!(
                "SELECT count_bucket AS b, master_key_id AS k, COUNT(*) AS n FROM private_keys \
                 WHERE master_key_id <> 'synthetic'{fk} GROUP BY count_bucket, master_key_id"
            ),
            fkv,
        )
        .await?
        {
            out.push((get(r, "b")?, "sealed", get(r, "k")?, n(r, "n")?));
        }
    }
    out.retain(|p| p.3 != 0);
    // One row per (bucket, part, series): the groups above never repeat
    // one, except totals summed over a bucket's CAs.
    let mut merged: BTreeMap<(i64, &'static str, String), i64> = BTreeMap::new();
    for (b, part, series, v) in out {
        *merged.entry((b, part, series)).or_default() += v;
    }
    Ok((
        merged
            .into_iter()
            .map(|((b, p, s), v)| (b, p, s, v))
            .collect(),
        valid,
    ))
}

/// Replaces the partials and time limits of the buckets in `scope` and
/// removes the marks this pass took (`marked`), in one transaction.
async fn store_partials(
    db: &DatabaseConnection,
    scope: &Scope<'_>,
    marked: &[i64],
    partials: &[Partial],
    valid: &BTreeMap<i64, i64>,
) -> Result<(), StoreError> {
    with_tx(db, async |tx| {
        for piece in pieces(scope) {
            let (f, fv) = filter(&piece, "bucket", 1);
            exec(
                tx,
                &format!("DELETE FROM count_partials WHERE 1 = 1{f}"),
                fv.clone(),
            )
            .await?;
            exec(tx, &format!("DELETE FROM count_buckets WHERE 1 = 1{f}"), fv).await?;
        }
        for chunk in partials.chunks(PARTIAL_ROWS_PER_INSERT) {
            let rows = (0..chunk.len())
                .map(|i| format!("({})", holes(4 * i + 1, 4)))
                .collect::<Vec<_>>()
                .join(", ");
            let values = chunk
                .iter()
                .flat_map(|(b, p, s, v)| [(*b).into(), (*p).into(), s.clone().into(), (*v).into()])
                .collect();
            exec(
                tx,
                &format!("INSERT INTO count_partials (bucket, part, series, value) VALUES {rows}"),
                values,
            )
            .await?;
        }
        let valid: Vec<(i64, i64)> = valid.iter().map(|(b, t)| (*b, *t)).collect();
        for chunk in valid.chunks(PARTIAL_ROWS_PER_INSERT) {
            let rows = (0..chunk.len())
                .map(|i| format!("({})", holes(2 * i + 1, 2)))
                .collect::<Vec<_>>()
                .join(", ");
            let values = chunk
                .iter()
                .flat_map(|(b, t)| [(*b).into(), (*t).into()])
                .collect();
            exec(
                tx,
                &format!("INSERT INTO count_buckets (bucket, valid_until) VALUES {rows}"),
                values,
            )
            .await?;
        }
        // Only the marks taken: one set again meanwhile has `taken = 0`.
        for chunk in marked.chunks(BUCKETS_PER_QUERY) {
            exec(
                tx,
                &format!(
                    "DELETE FROM count_dirty WHERE taken = 1 AND bucket IN ({})",
                    holes(1, chunk.len())
                ),
                chunk.iter().map(|b| (*b).into()).collect(),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

/// The stored partials added up, into the bucketed parts of a [`Counts`]
/// (the live parts are added by [`live`]).
async fn sum_partials(db: &DatabaseConnection) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut usage: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut sealed: BTreeMap<String, i64> = BTreeMap::new();
    for r in &all(
        db,
        "SELECT part, series, CAST(SUM(value) AS BIGINT) AS v FROM count_partials \
         GROUP BY part, series",
        vec![],
    )
    .await?
    {
        let part: String = get(r, "part")?;
        let series: String = get(r, "series")?;
        let v: i64 = get::<Option<i64>>(r, "v")?.unwrap_or(0);
        if v == 0 {
            continue;
        }
        match part.as_str() {
            "total" => {
                totals.insert(series, v);
            }
            "usage_active" => usage.entry(series).or_default().0 = v,
            "usage_slots" => usage.entry(series).or_default().1 = v,
            "sealed" => {
                sealed.insert(series, v);
            }
            "series" => counts.series.push((series, v as f64)),
            "propagation" => counts
                .series
                .push((format!("propagation:{series}"), v as f64)),
            _ => {}
        }
    }
    counts.totals = BASIC
        .iter()
        .map(|(k, _)| (k.to_string(), totals.get(*k).copied().unwrap_or(0)))
        .collect();
    counts.usage = usage
        .into_iter()
        .filter(|(_, (_, slots))| *slots > 0)
        .map(|(ca, (a, s))| (ca, a, s))
        .collect();
    counts.sealed = sealed.into_iter().collect();
    Ok(counts)
}

/// Adds what is read live each pass (all from indexes or small tables):
/// open orders, the queue, each CA's newest check and ARI poll, swaps,
/// incidents, alerts, sealed accounts and packages, the soonest expiries;
/// and fills the series a full recount always shows.
async fn live(
    db: &DatabaseConnection,
    now: i64,
    expiry: u64,
    counts: &mut Counts,
) -> Result<(), StoreError> {
    let m = super::metrics::Metrics { db: db.clone() };
    let mut series: BTreeMap<String, f64> = counts.series.drain(..).collect();
    let mut prop_n = series.remove("propagation:count").unwrap_or(0.0);
    let mut prop_ms = series.remove("propagation:ms").unwrap_or(0.0);
    // Open orders: by CA and state, open and failing, propagation.
    let (mut open, mut failing) = (0i64, 0i64);
    let mut orders: Vec<Series> = Vec::new();
    for r in &all(
        db,
        "SELECT ca_id, state, COUNT(*) AS n, \
         SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END) AS failing, \
         COUNT(propagation_ms) AS pn, CAST(SUM(propagation_ms) AS BIGINT) AS pms \
         FROM orders WHERE state IN ('pending', 'processing') GROUP BY ca_id, state",
        vec![],
    )
    .await?
    {
        let ca: String = get(r, "ca_id")?;
        let st: String = get(r, "state")?;
        let n: i64 = get(r, "n")?;
        open += n;
        failing += get::<Option<i64>>(r, "failing")?.unwrap_or(0);
        prop_n += get::<i64>(r, "pn")? as f64;
        prop_ms += get::<Option<i64>>(r, "pms")?.unwrap_or(0) as f64;
        orders.push((
            format!(
                "twincert_orders{{ca=\"{}\",state=\"{}\"}}",
                label(&ca),
                label(&st)
            ),
            n as f64,
        ));
    }
    for (k, v) in counts.totals.iter_mut() {
        match k.as_str() {
            "twincert_orders_open" => *v = open,
            "twincert_orders_failing" => *v = failing,
            _ => {}
        }
    }
    let mut out: Vec<Series> = Vec::new();
    // Revocation: status series (bucketed), then per CA with current
    // certificates its newest check and ARI poll (index) and open windows.
    let mut cas: Vec<String> = Vec::new();
    let status: Vec<Series> = series
        .iter()
        .filter(|(k, _)| k.starts_with("twincert_certificates_by_status{"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (k, v) in status {
        series.remove(&k);
        if let Some(ca) = k
            .strip_prefix("twincert_certificates_by_status{ca=\"")
            .and_then(|r| r.split_once('"'))
            .map(|(ca, _)| ca.to_string())
            && !cas.contains(&ca)
        {
            cas.push(ca);
        }
        out.push((k, v));
    }
    cas.sort();
    for ca in &cas {
        out.extend(m.last_checks(ca).await?);
        let k = format!("twincert_ari_window_open{{ca=\"{ca}\"}}");
        let v = series.remove(&k).unwrap_or(0.0);
        out.push((k, v));
    }
    out.extend(m.incidents_and_alerts().await?);
    let k = "twincert_names_without_usable_standby".to_string();
    let v = series.remove(&k).unwrap_or(0.0);
    out.push((k, v));
    for s in ["ready", "degraded", "provisioning", "waiting"] {
        let k = format!("twincert_names_by_state{{state=\"{s}\"}}");
        let v = series.remove(&k).unwrap_or(0.0);
        out.push((k, v));
    }
    // Orders: closed from the partials, open from above.
    let closed: Vec<String> = series
        .keys()
        .filter(|k| k.starts_with("twincert_orders{"))
        .cloned()
        .collect();
    for k in closed {
        let v = series.remove(&k).unwrap_or(0.0);
        out.push((k, v));
    }
    out.extend(orders);
    out.extend(m.order_queue(now).await?);
    // Deployments, endpoint checks: whatever is left of the partials.
    out.extend(series);
    out.push(("twincert_names_swapped_total".into(), m.swapped().await?));
    out.push(("twincert_dns_propagation_seconds_count".into(), prop_n));
    out.push((
        "twincert_dns_propagation_seconds_sum".into(),
        prop_ms / 1000.0,
    ));
    out.extend(m.expiry_series(expiry).await?);
    counts.series = out;
    // Sealed secrets outside `private_keys` (a few rows each).
    let mut sealed: BTreeMap<String, i64> = counts.sealed.drain(..).collect();
    for r in &all(
        db,
        "SELECT master_key_id, COUNT(*) AS n FROM (\
           SELECT master_key_id FROM acme_accounts \
           UNION ALL SELECT master_key_id FROM install_packages WHERE master_key_id IS NOT NULL \
           UNION ALL SELECT password_key_id FROM install_packages \
             WHERE password_key_id IS NOT NULL \
           UNION ALL SELECT master_key_id FROM acme_dns_registrations) s \
         GROUP BY master_key_id",
        vec![],
    )
    .await?
    {
        let k: String = get(r, "master_key_id")?;
        *sealed.entry(k).or_default() += super::sql::int(r, "n")?;
    }
    counts.sealed = sealed.into_iter().collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_stable_and_in_range() {
        for id in ["", "a.example", "i1234-99.synthetic.test", "ü.example"] {
            let b = bucket_of(id);
            assert!((0..BUCKETS).contains(&b), "{id}: {b}");
            assert_eq!(b, bucket_of(id), "{id}");
        }
        // Spread: 10,000 names fill most of the buckets.
        let used: std::collections::HashSet<i64> = (0..10_000)
            .map(|i| bucket_of(&format!("n{i}.example")))
            .collect();
        assert!(used.len() > 3_500, "{}", used.len());
    }
}
