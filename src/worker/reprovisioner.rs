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

use crate::domain::{ChallengeKind, KeyType};
use crate::policy::{self, CaChoice};
use crate::store::{Cas, Operations};

/// The re-provisioner controller and what it needs.
pub(super) struct Reprovisioner {
    operations: Operations,
    cas: Cas,
    /// The configured CAs in preference order.
    policy_cas: Vec<CaChoice>,
    /// How long after a CA-wide operation the CA it moved away from may
    /// re-issue the slots no other CA can take.
    same_ca_hold_off: i64,
    /// The CAs that offer dns-persist-01.
    persist_cas: Vec<String>,
    /// Where the walk over names marked for re-provisioning goes on.
    reprovision_cursor: Mutex<String>,
    /// Whether blocked slots were marked again since the worker started.
    retried_blocked: std::sync::atomic::AtomicBool,
}

impl Reprovisioner {
    pub(super) fn new(
        store: &crate::store::Store,
        policy_cas: Vec<CaChoice>,
        same_ca_hold_off: i64,
        persist_cas: Vec<String>,
    ) -> Reprovisioner {
        Reprovisioner {
            persist_cas,
            operations: store.operations().clone(),
            cas: store.cas().clone(),
            policy_cas,
            same_ca_hold_off,
            reprovision_cursor: Mutex::new(String::new()),
            retried_blocked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Moves the slots that swaps, distrust and compromise marked for
    /// re-provisioning to a CA chosen by policy and opens their orders;
    /// a slot no CA can take is reported blocked on its operation.
    pub(super) async fn pass(&self, now: i64) {
        use std::sync::atomic::Ordering;
        // The configured CAs change only with a restart: slots blocked
        // before it may have a CA now.
        if !self.retried_blocked.load(Ordering::Relaxed) {
            match self.operations.retry_blocked(now).await {
                Ok(n) => {
                    self.retried_blocked.store(true, Ordering::Relaxed);
                    if n > 0 {
                        info!(slots = n, "blocked re-provisioning retried");
                    }
                }
                Err(e) => warn!(error = %e, "retrying blocked re-provisioning failed"),
            }
        }
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
            let cas = policy::with_distrusted(&self.policy_cas, &distrusted);
            let mut blocked = 0;
            let mut held = 0;
            let mut first_block: Option<String> = None;
            for job in &jobs {
                let avoid = job.avoid_ca.as_deref().map(|ca| policy::Avoid {
                    ca,
                    usable_from: job.operation_at + self.same_ca_hold_off,
                });
                // A dns-persist-01 name moves only among the CAs that
                // offer it (its records name the CA).
                let persist_only: Vec<CaChoice>;
                let among = if job.challenge == ChallengeKind::DnsPersist01.as_str() {
                    persist_only = cas
                        .iter()
                        .filter(|c| self.persist_cas.contains(&c.id))
                        .cloned()
                        .collect();
                    &persist_only
                } else {
                    &cas
                };
                let choice = match job.key_type.parse::<KeyType>() {
                    Ok(kt) => policy::choose_reprovision_ca(
                        among,
                        kt,
                        &job.slot_ca,
                        &job.other_ca,
                        avoid,
                        now,
                    ),
                    Err(e) => Err(format!("stored key type is invalid: {e}")),
                };
                let result = match &choice {
                    Ok(c) => {
                        held += usize::from(c.hold.is_some());
                        let hold = c.hold.as_ref().map(|(t, why)| (*t, why.as_str()));
                        self.operations
                            .start_reprovision(job, &c.ca, hold, now)
                            .await
                            .map(|_| ())
                    }
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
                held_for_the_ca_swapped_away_from = held,
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
