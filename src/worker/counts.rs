//! The counts controller: on one replica (the `counts` singleton lease),
//! keeps the aggregates `/metrics` shows — names by state, slots and
//! certificates by CA and status, orders, deployments, endpoint checks,
//! sealed secrets, the soonest expiries — current and stored, so a scrape
//! reads a few rows instead of joining every name (seconds at a million).
//!
//! Each pass recounts only the buckets of names that changed since the
//! last (the transactions that change them mark their bucket, see
//! `store::counts`) or whose time-dependent figures moved (a certificate
//! expired, entered its last week, its ARI window opened), adds up the
//! stored per-bucket partials and reads the rest live from indexes. An
//! idle store of ten million names recounts nothing; a CA-wide swap marks
//! everything and the next pass is a full recount.
//!
//! The console overview's per-name figures (standby posture, CA mix, the
//! 90-day expiry timeline) are not kept by bucket: they are counted over
//! every name (`store::Console::overview_counts`) at their own pace,
//! [`overview_due`] — every five minutes, at most 2 % of the time, sooner
//! after a full pass — and the stored ones are carried in between, with
//! their own age, which the overview page shows.
//!
//! *Observes*: the marked buckets and their rows (`Store::count_maintained`),
//! the emergency-operation fingerprint (`store::Readiness::fingerprint`),
//! the stored overview and its age (`store::Console::stored_overview`).
//! *Writes*: the per-bucket partials (in `count_maintained`) and the
//! stored counts (`store::Metrics::save_counts`), nothing else.
//!
//! Pace: a pass every `worker.counts_interval_seconds`, but never more
//! often than ten times its own duration (a full recount of 10 s at a
//! million names runs at most every 100 s: it costs at most a tenth of
//! one core of the database); after a swap or a trust change (the
//! fingerprint moved) as soon as twice its duration allows, so the
//! dashboards of an emergency follow it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::singleton::Singleton;
use crate::clock::Clock;
use crate::store::{CountPass, EXPIRY_SERIES, OVERVIEW_DAYS, Store, StoreError};

/// The singleton lease the counts pass runs under.
pub(super) const LEASE: &str = "counts";

/// The lease outlives a pass at ten million names (~2 minutes).
pub(super) const LEASE_TTL: i64 = 600;

/// Whether a pass is due, `since` the last one that took `took`:
/// `interval` has passed and so has ten times the last pass (so the
/// recount never takes more than a tenth of the time), or an emergency
/// operation ran and twice the last pass has passed.
pub(super) fn pass_due(
    since: Option<Duration>,
    took: Duration,
    interval: Duration,
    fingerprint_moved: bool,
) -> bool {
    let Some(since) = since else {
        return true;
    };
    since >= interval.max(took * 10) || (fingerprint_moved && since >= took * 2)
}

/// The overview's posture, CA mix and expiry timeline are per-name
/// figures over every name (seconds at a million names) that the bucketed
/// pass does not keep: they are counted at most every this often…
pub(super) const OVERVIEW_INTERVAL: Duration = Duration::from_secs(300);

/// Whether the console overview's counts are due, `since` they were last
/// taken (`None`: never) in `took`: every [`OVERVIEW_INTERVAL`] but never
/// more often than fifty times their own cost (at most 2 % of the time),
/// and sooner — ten times their cost — after a pass that recounted
/// everything (a CA-wide swap or distrust: the overview must show it).
pub(super) fn overview_due(since: Option<Duration>, took: Duration, full_pass: bool) -> bool {
    let Some(since) = since else {
        return true;
    };
    since >= OVERVIEW_INTERVAL.max(took * 50) || (full_pass && since >= took * 10)
}

/// The counts controller.
pub(super) struct Counter {
    store: Store,
    lease: Singleton,
    clock: Arc<dyn Clock>,
    interval: Duration,
}

impl Counter {
    pub(super) fn new(
        store: &Store,
        owner: String,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> Counter {
        Counter {
            store: store.clone(),
            lease: Singleton::new(
                store.leases().clone(),
                LEASE,
                owner,
                LEASE_TTL,
                clock.clone(),
            ),
            clock,
            interval,
        }
    }

    /// Looks every second (or every interval, when shorter) whether a pass
    /// is due, on the ticks this replica holds the lease.
    pub(super) async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let tick = self.interval.min(Duration::from_secs(1));
        // (when the last pass ended, how long it took, the fingerprint then)
        let state = Arc::new(tokio::sync::Mutex::new((
            None::<Instant>,
            Duration::ZERO,
            String::new(),
        )));
        self.lease
            .run(tick, shutdown, || {
                let (me, state) = (self.clone(), state.clone());
                async move {
                    let mut st = state.lock().await;
                    let fingerprint = me.store.readiness().fingerprint().await.unwrap_or_default();
                    let since = st.0.map(|t| t.elapsed());
                    if !pass_due(since, st.1, me.interval, fingerprint != st.2) {
                        return;
                    }
                    let started = Instant::now();
                    // The overview's own time does not stretch the pace
                    // of the counts pass (it has its own, `overview_due`).
                    let mut overview = Duration::ZERO;
                    match me.pass().await {
                        Ok((series, pass, took)) => {
                            overview = took;
                            debug!(
                                series,
                                buckets = pass.buckets,
                                full = pass.full,
                                ms = started.elapsed().as_millis(),
                                overview_ms = took.as_millis(),
                                "counted"
                            )
                        }
                        Err(e) => warn!(error = %e, "counts pass failed"),
                    }
                    *st = (
                        Some(Instant::now()),
                        started.elapsed().saturating_sub(overview),
                        fingerprint,
                    );
                }
            })
            .await;
    }

    /// One pass, stored: how many series, what it recounted, and how long
    /// the console overview's counts took (zero when they were not due and
    /// the stored ones were kept).
    pub(super) async fn pass(&self) -> Result<(usize, CountPass, Duration), StoreError> {
        let now = self.clock.now();
        let (mut counts, pass) = self.store.count_maintained(now, EXPIRY_SERIES).await?;
        // The overview's rows only, not the thousands of series.
        let previous = self
            .store
            .console()
            .stored_overview()
            .await?
            .map(|(_, o)| o)
            .filter(|o| o.computed_at > 0);
        let since = previous
            .as_ref()
            .map(|o| Duration::from_secs(now.saturating_sub(o.computed_at).max(0) as u64));
        let took = previous
            .as_ref()
            .map(|o| Duration::from_secs_f64(o.seconds.max(0.0)))
            .unwrap_or_default();
        let mut overview_took = Duration::ZERO;
        counts.overview = match previous {
            Some(o) if !overview_due(since, took, pass.full) => o,
            _ => {
                let o = self
                    .store
                    .console()
                    .overview_counts(now, OVERVIEW_DAYS)
                    .await?;
                overview_took = Duration::from_secs_f64(o.seconds.max(0.0));
                o
            }
        };
        self.store.metrics().save_counts(&counts).await?;
        Ok((counts.series.len(), pass, overview_took))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overview_is_due_by_its_interval_its_cost_and_after_a_full_pass() {
        let s = Duration::from_secs;
        // (case, since last, it took, full pass, due)
        let cases = [
            ("never counted", None, s(0), false, true),
            ("interval not over", Some(s(299)), s(1), false, false),
            ("interval over", Some(s(300)), s(1), false, true),
            ("slow count stretches it", Some(s(400)), s(10), false, false),
            ("fifty times its cost", Some(s(500)), s(10), false, true),
            (
                "full pass, ten times its cost",
                Some(s(100)),
                s(10),
                true,
                true,
            ),
            ("full pass, too soon", Some(s(99)), s(10), true, false),
        ];
        for (case, since, took, full, want) in cases {
            assert_eq!(overview_due(since, took, full), want, "{case}");
        }
    }

    #[test]
    fn a_pass_is_due_by_interval_by_its_own_cost_and_after_an_emergency() {
        let s = Duration::from_secs;
        // (since last, last took, interval, fingerprint moved, due)
        let cases = [
            ("never ran", None, s(0), s(30), false, true),
            ("interval not over", Some(s(10)), s(1), s(30), false, false),
            ("interval over", Some(s(30)), s(1), s(30), false, true),
            (
                "slow pass stretches the interval",
                Some(s(60)),
                s(10),
                s(30),
                false,
                false,
            ),
            (
                "ten times the pass",
                Some(s(100)),
                s(10),
                s(30),
                false,
                true,
            ),
            (
                "emergency waits twice the pass",
                Some(s(15)),
                s(10),
                s(30),
                true,
                false,
            ),
            (
                "emergency after twice the pass",
                Some(s(20)),
                s(10),
                s(30),
                true,
                true,
            ),
        ];
        for (case, since, took, interval, moved, want) in cases {
            assert_eq!(pass_due(since, took, interval, moved), want, "{case}");
        }
    }
}
