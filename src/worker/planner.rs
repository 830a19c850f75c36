//! The planning pass, run by the issuer on its cadence (at most 1/20 of
//! the time, see `issuer`): in this order, the re-provisioner moves marked
//! slots (so that no order is opened for them at the CA they are leaving),
//! due renewals and missing certificates get their orders, leftover DNS-01
//! records of ended orders are swept, queued revocations are sent to
//! the CAs, and the dns-persist-01 `persistUntil` alert is checked.
//!
//! *Observes*: slots without a current or with a due certificate
//! (`store::Orders`). *Writes*: their orders; the rest through the
//! controllers it runs.

use std::sync::Arc;

use tracing::warn;

use super::persist_expiry::PersistExpiry;
use super::reprovisioner::Reprovisioner;
use super::revoker::Revoker;
use crate::store::Orders;
use crate::validation::dns01::Dns01Challenges;

/// How many orders one planning pass opens at most.
const PLAN_BATCH: u64 = 1000;

/// The planning pass and the controllers it runs.
pub(super) struct Planner {
    orders: Orders,
    reprovisioner: Reprovisioner,
    revoker: Revoker,
    dns01: Arc<Dns01Challenges>,
    persist_expiry: PersistExpiry,
}

impl Planner {
    pub(super) fn new(
        orders: Orders,
        reprovisioner: Reprovisioner,
        revoker: Revoker,
        dns01: Arc<Dns01Challenges>,
        persist_expiry: PersistExpiry,
    ) -> Planner {
        Planner {
            orders,
            reprovisioner,
            revoker,
            dns01,
            persist_expiry,
        }
    }

    /// One planning pass at `now`.
    pub(super) async fn pass(&self, now: i64) {
        self.reprovisioner.pass(now).await;
        if let Err(e) = self.orders.plan_due_orders(now, PLAN_BATCH).await {
            warn!(error = %e, "planner failed");
        }
        self.dns01.sweep().await;
        self.revoker.pass().await;
        self.persist_expiry.pass(now).await;
    }
}
