//! The preflight controller: on one replica, checks CAA, delegation and provider
//! (`validation::preflight`) of every name that was never checked (a new
//! name: within a few seconds of its creation, before its first order can
//! fail at the CA), whose CA pair changed since its last check, or whose
//! last check is older than `[preflight] interval_seconds` (daily by
//! default).
//!
//! *Observes*: names due for a check (`store::Preflights::never_checked`,
//! `store::Preflights::stale`).
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

/// When the controller last looked and whether more is waiting.
#[derive(Debug, Default)]
struct Cadence {
    /// The last periodic look for due names.
    last_look: Option<Instant>,
    /// The last pass found a full batch of never-checked names.
    more_new: bool,
    /// The last pass was a full batch.
    more: bool,
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
                    match me.pass(look_new).await {
                        Ok((new, n)) => {
                            if n > 0 {
                                info!(names = n, new, "preflight checked");
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

    /// Checks up to one batch of due names — never-checked names first
    /// (only when `look_new`), then the oldest stale ones; returns (new,
    /// all) checked.
    pub(super) async fn pass(
        &self,
        look_new: bool,
    ) -> Result<(usize, usize), crate::store::StoreError> {
        let mut due = if look_new {
            self.preflights.never_checked(BATCH).await?
        } else {
            Vec::new()
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
