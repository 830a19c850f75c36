//! The re-provisioner: moves the slots that swaps, distrust, compromise
//! and revocation reactions marked to a CA chosen by `policy` and opens
//! their orders; a slot no CA can take is reported blocked on its
//! operation, visible in the API.
//!
//! *Observes*: re-provisioning markers on names (`store::Operations`), the
//! distrusted CAs (`store::Cas`). *Writes*: the slot's new CA and its
//! order, or the reason it is blocked.

use std::sync::Mutex;

use tracing::{info, warn};

use crate::domain::KeyType;
use crate::policy::{self, CaChoice};
use crate::store::{Cas, Operations};

/// The re-provisioner controller and what it needs.
pub(super) struct Reprovisioner {
    operations: Operations,
    cas: Cas,
    /// The configured CAs in preference order.
    policy_cas: Vec<CaChoice>,
    /// Where the walk over names marked for re-provisioning goes on.
    reprovision_cursor: Mutex<String>,
}

impl Reprovisioner {
    pub(super) fn new(store: &crate::store::Store, policy_cas: Vec<CaChoice>) -> Reprovisioner {
        Reprovisioner {
            operations: store.operations().clone(),
            cas: store.cas().clone(),
            policy_cas,
            reprovision_cursor: Mutex::new(String::new()),
        }
    }

    /// Moves the slots that swaps, distrust and compromise marked for
    /// re-provisioning to a CA chosen by policy and opens their orders;
    /// a slot no CA can take is reported blocked on its operation.
    pub(super) async fn pass(&self, now: i64) {
        match self.operations.reprovision_pending().await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(error = %e, "checking for re-provisioning work failed");
                return;
            }
        }
        let mut cursor = self
            .reprovision_cursor
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        for _ in 0..20 {
            let jobs = match self.operations.reprovision_jobs(&cursor, 500).await {
                Ok(j) if j.is_empty() => {
                    // The end of the names: once a walk from the start
                    // finds nothing, every marker was taken.
                    if cursor.is_empty()
                        && let Err(e) = self.operations.close_reprovision().await
                    {
                        warn!(error = %e, "closing re-provisioning failed");
                    }
                    cursor.clear();
                    break;
                }
                Ok(j) => j,
                Err(e) => {
                    warn!(error = %e, "listing re-provisioning work failed");
                    return;
                }
            };
            let distrusted = match self.cas.distrusted_cas().await {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "reading distrusted CAs failed");
                    return;
                }
            };
            let cas: Vec<CaChoice> = self
                .policy_cas
                .iter()
                .map(|c| CaChoice {
                    distrusted: c.distrusted || distrusted.contains(&c.id),
                    ..c.clone()
                })
                .collect();
            let mut blocked = 0;
            let mut first_block: Option<String> = None;
            for job in &jobs {
                let choice = match job.key_type.parse::<KeyType>() {
                    Ok(kt) => policy::choose_reprovision_ca(
                        &cas,
                        kt,
                        &job.slot_ca,
                        &job.other_ca,
                        job.avoid_ca.as_deref(),
                    ),
                    Err(e) => Err(format!("stored key type is invalid: {e}")),
                };
                let result = match &choice {
                    Ok(ca) => self
                        .operations
                        .start_reprovision(job, ca, now)
                        .await
                        .map(|_| ()),
                    Err(why) => {
                        blocked += 1;
                        first_block
                            .get_or_insert_with(|| format!("{} {}: {why}", job.name_id, job.slot));
                        self.operations.block_reprovision(job, why, now).await
                    }
                };
                if let Err(e) = result {
                    // Left marked: the next walk tries it again; the others
                    // go on.
                    warn!(managed_name = %job.name_id, error = %e, "re-provisioning failed");
                }
            }
            // One line per batch, not per slot: a distrust can block a
            // million slots at once.
            if let Some(first) = first_block {
                warn!(slots = blocked, first = %first, "re-provisioning blocked");
            }
            info!(
                slots = jobs.len() - blocked,
                "re-provisioning orders opened"
            );
            if let Some(last) = jobs.last() {
                cursor = last.name_id.clone();
            }
        }
        if let Ok(mut c) = self.reprovision_cursor.lock() {
            *c = cursor;
        }
    }
}
