//! The singleton-lease loop: a periodic pass that exactly one replica runs
//! at a time (the status checks; deployment and notification).
//!
//! *Observes* the lease row named by the pass. *Writes* only that row: it
//! takes the lease when free or expired, renews it while running, and lets
//! it run out when the process stops (another replica takes over after
//! `ttl` seconds).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::clock::Clock;
use crate::store::{Leases, StoreError};

/// One named singleton lease held by this replica (`owner`).
#[derive(Clone)]
pub(super) struct Singleton {
    leases: Leases,
    name: &'static str,
    owner: String,
    ttl: i64,
    clock: Arc<dyn Clock>,
}

impl Singleton {
    pub(super) fn new(
        leases: Leases,
        name: &'static str,
        owner: String,
        ttl: i64,
        clock: Arc<dyn Clock>,
    ) -> Singleton {
        Singleton {
            leases,
            name,
            owner,
            ttl,
            clock,
        }
    }

    /// Takes or renews the lease; false while another replica holds it.
    pub(super) async fn renew(&self) -> Result<bool, StoreError> {
        self.leases
            .singleton_lease(self.name, &self.owner, self.clock.now(), self.ttl)
            .await
    }

    /// Runs `pass` every `every` until `shutdown` turns true, on the ticks
    /// at which this replica holds the lease. A lease taken or renewed
    /// within a third of its TTL is still ours: the store is not asked
    /// again on every tick.
    pub(super) async fn run<F, Fut>(
        &self,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
        mut pass: F,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let keep = Duration::from_secs(u64::try_from(self.ttl / 3).unwrap_or(0));
        let mut held_at = None::<tokio::time::Instant>;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let lease = if held_at.is_some_and(|t| t.elapsed() < keep) {
                Ok(true)
            } else {
                self.renew().await
            };
            held_at = match lease {
                Ok(true) => held_at
                    .filter(|t| t.elapsed() < keep)
                    .or(Some(tokio::time::Instant::now())),
                _ => None,
            };
            match lease {
                Ok(true) => pass().await,
                Ok(false) => {}
                Err(e) => warn!(lease = self.name, error = %e, "singleton lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
