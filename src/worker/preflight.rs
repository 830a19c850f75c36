//! The preflight controller: on one replica, checks CAA, delegation and provider
//! (`validation::preflight`) of every name that was never checked (a new
//! name: within a few seconds of its creation, before its first order can
//! fail at the CA), whose CA pair changed since its last check, or whose
//! last check is older than `[preflight] interval_seconds` (daily by
//! default).
//!
//! *Observes*: names due for a check (`store::Preflights::never_checked`
//! among names created since its last look — every name on a full sweep at
//! start and once per interval —, `store::Preflights::stale`).
//! *Writes*: through `Preflight::check_name`, each name's report and its
//! `preflight_caa` alert.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::PreflightConfig;
use crate::store::{Preflights, Store};
use crate::validation::preflight::Preflight;

use super::singleton::Singleton;

/// The singleton lease the preflight pass runs under.
pub(super) const LEASE: &str = "preflight";

/// Names checked per pass.
const BATCH: u64 = 50;
/// Checks in flight at once (each is a few DNS queries).
const CONCURRENCY: usize = 4;
/// Without a local wake-up, look for due names this often (names created
/// through another replica's API, pairs changed by re-provisioning).
const IDLE_LOOK: Duration = Duration::from_secs(30);
/// A look for never-checked names reaches back this far (seconds) before
/// the last complete look: names created meanwhile by replicas whose clock
/// is behind ours, or whose transaction committed late.
const CREATION_SLACK: i64 = 600;

/// When the controller last looked and whether more is waiting.
#[derive(Debug, Default)]
struct Cadence {
    /// The last periodic look for due names.
    last_look: Option<Instant>,
    /// The last pass found a full batch of never-checked names.
    more_new: bool,
    /// The last pass was a full batch.
    more: bool,
    /// Where the next look for never-checked names starts.
    mark: Watermark,
}

/// Where the look for never-checked names starts: names created since the
/// last complete look (less [`CREATION_SLACK`]), through the creation-time
/// index; every name on a full sweep — at start and once per check
/// interval, for names restored from a backup with old creation times.
#[derive(Debug, Default)]
struct Watermark {
    /// Store time at the start of the last look that found everything
    /// (fewer than a batch).
    complete_at: Option<i64>,
    /// Store time of the last full sweep's start.
    swept_at: Option<i64>,
}

impl Watermark {
    /// The creation time to look from at `now`, and whether it is a full
    /// sweep.
    fn since(&self, now: i64, interval: i64) -> (i64, bool) {
        match (self.complete_at, self.swept_at) {
            (Some(done), Some(swept)) if now - swept < interval.max(IDLE_LOOK.as_secs() as i64) => {
                (done.saturating_sub(CREATION_SLACK), false)
            }
            _ => (i64::MIN, true),
        }
    }
}

/// The preflight controller.
pub(super) struct PreflightChecker {
    preflight: Arc<Preflight>,
    preflights: Preflights,
    lease: Singleton,
    clock: Arc<dyn Clock>,
    cfg: PreflightConfig,
    /// Set when this replica's API created a name.
    dirty: Arc<AtomicBool>,
}

impl PreflightChecker {
    pub(super) fn new(
        store: &Store,
        owner: String,
        clock: Arc<dyn Clock>,
        cfg: PreflightConfig,
        preflight: Arc<Preflight>,
        dirty: Arc<AtomicBool>,
    ) -> PreflightChecker {
        PreflightChecker {
            preflight,
            preflights: store.preflights().clone(),
            lease: Singleton::new(store.leases().clone(), LEASE, owner, 60, clock.clone()),
            clock,
            cfg,
            dirty,
        }
    }

    /// Looks for due names every [`IDLE_LOOK`], within a second of a local
    /// wake-up (a name created here), and every second while the last pass
    /// found a full batch. The anti-join for never-checked names runs only
    /// on a look or a wake-up, or while it keeps finding full batches — not
    /// on every second of a daily re-check of many names.
    pub(super) async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let state = Arc::new(tokio::sync::Mutex::new(Cadence::default()));
        self.lease
            .run(Duration::from_secs(1), shutdown, || {
                let (me, state) = (self.clone(), state.clone());
                async move {
                    let mut st = state.lock().await;
                    let dirty = me.dirty.swap(false, Ordering::Relaxed);
                    let look = st.last_look.is_none_or(|t| t.elapsed() >= IDLE_LOOK);
                    if !(dirty || look || st.more_new || st.more) {
                        return;
                    }
                    if look {
                        st.last_look = Some(Instant::now());
                    }
                    let look_new = dirty || look || st.more_new;
                    let now = me.clock.now();
                    let (since, full) = st.mark.since(now, me.cfg.interval_seconds as i64);
                    match me.pass(look_new.then_some(since)).await {
                        Ok((new, n)) => {
                            if n > 0 {
                                info!(names = n, new, "preflight checked");
                            }
                            if look_new && (new as u64) < BATCH {
                                st.mark.complete_at = Some(now);
                                if full {
                                    st.mark.swept_at = Some(now);
                                }
                            }
                            st.more_new = new as u64 >= BATCH;
                            st.more = n as u64 >= BATCH;
                        }
                        Err(e) => {
                            warn!(error = %e, "preflight pass failed");
                            st.more_new = false;
                            st.more = false;
                        }
                    }
                }
            })
            .await;
    }

    /// Checks up to one batch of due names — never-checked names created
    /// since `look_new` first (only when given), then the oldest stale
    /// ones; returns (new, all) checked.
    pub(super) async fn pass(
        &self,
        look_new: Option<i64>,
    ) -> Result<(usize, usize), crate::store::StoreError> {
        let mut due = match look_new {
            Some(since) => self.preflights.never_checked(since, BATCH).await?,
            None => Vec::new(),
        };
        let new = due.len();
        let room = BATCH.saturating_sub(due.len() as u64);
        if room > 0 {
            let stale_before = self.clock.now() - self.cfg.interval_seconds as i64;
            due.extend(self.preflights.stale(stale_before, room).await?);
        }
        let n = due.len();
        let results: Vec<_> = futures_util::stream::iter(due)
            .map(|name| {
                let p = self.preflight.clone();
                async move { (p.check_name(&name).await, name) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (r, name) in results {
            if let Err(e) = r {
                warn!(name = %name, error = %e, "preflight check not stored");
            }
        }
        Ok((new, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_reach_back_to_the_last_complete_look_and_sweep_once_per_interval() {
        let day = 86_400;
        // (case, complete_at, swept_at, now, expected since, full sweep?)
        type Case = (&'static str, Option<i64>, Option<i64>, i64, i64, bool);
        let cases: &[Case] = &[
            ("first look: everything", None, None, 1_000, i64::MIN, true),
            (
                "sweep unfinished: everything",
                None,
                Some(900),
                1_000,
                i64::MIN,
                true,
            ),
            (
                "after a sweep: since the last complete look, less the slack",
                Some(5_000),
                Some(1_000),
                5_030,
                5_000 - CREATION_SLACK,
                false,
            ),
            (
                "an interval after the sweep: everything again",
                Some(1_000 + day),
                Some(1_000),
                1_000 + day,
                i64::MIN,
                true,
            ),
            (
                "no underflow near the start of time",
                Some(i64::MIN + 1),
                Some(i64::MIN + 1),
                i64::MIN + 2,
                i64::MIN,
                false,
            ),
        ];
        for (case, complete_at, swept_at, now, since, full) in cases {
            let mark = Watermark {
                complete_at: *complete_at,
                swept_at: *swept_at,
            };
            assert_eq!(mark.since(*now, day), (*since, *full), "{case}");
        }
    }
}
