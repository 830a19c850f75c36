//! The preflight controller: on one replica, checks CAA and delegation
//! (`validation::preflight`) of every name that was never checked (a new
//! name: within a few seconds of its creation, before its first order can
//! fail at the CA), whose CA pair changed since its last check, or whose
//! last check is older than `[preflight] interval_seconds` (daily by
//! default).
//!
//! *Observes*: names due for a check (`store::Preflights::due`).
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

    /// Looks for due names every second while woken or while a pass found
    /// a full batch, else every [`IDLE_LOOK`].
    pub(super) async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let last = Arc::new(tokio::sync::Mutex::new((None::<Instant>, false)));
        self.lease
            .run(Duration::from_secs(1), shutdown, || {
                let (me, last) = (self.clone(), last.clone());
                async move {
                    let mut st = last.lock().await;
                    let dirty = me.dirty.swap(false, Ordering::Relaxed);
                    let idle_over = st.0.is_none_or(|t| t.elapsed() >= IDLE_LOOK);
                    if !(dirty || idle_over || st.1) {
                        return;
                    }
                    match me.pass().await {
                        Ok(n) => {
                            if n > 0 {
                                info!(names = n, "preflight checked");
                            }
                            *st = (Some(Instant::now()), n as u64 >= BATCH);
                        }
                        Err(e) => {
                            warn!(error = %e, "preflight pass failed");
                            *st = (Some(Instant::now()), false);
                        }
                    }
                }
            })
            .await;
    }

    /// Checks up to one batch of due names; returns how many.
    pub(super) async fn pass(&self) -> Result<usize, crate::store::StoreError> {
        let stale_before = self.clock.now() - self.cfg.interval_seconds as i64;
        let due = self.preflights.due(stale_before, BATCH).await?;
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
        Ok(n)
    }
}
