//! The CA revoker: carries out queued revocations at the CA — keys
//! reported compromised, names deleted with `?revoke=true` — with the
//! queued reason code (RFC 8555 §7.6). A failure stays queued with its
//! error and is retried on the next planning tick.
//!
//! *Observes*: the revocation queue (`store::CaRevocations`). *Writes*:
//! each revocation's result.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::accounts::Accounts;
use crate::ca::CaClient;
use crate::certs;
use crate::clock::Clock;
use crate::keys::seal::Sealer;
use crate::store::{CaRevocations, Keys};

/// The CA revoker controller and what it needs.
pub(super) struct Revoker {
    ca_revocations: CaRevocations,
    keys: Keys,
    cas: BTreeMap<String, Arc<CaClient>>,
    accounts: Arc<Accounts>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
}

impl Revoker {
    pub(super) fn new(
        store: &crate::store::Store,
        cas: BTreeMap<String, Arc<CaClient>>,
        accounts: Arc<Accounts>,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
    ) -> Revoker {
        Revoker {
            ca_revocations: store.ca_revocations().clone(),
            keys: store.keys().clone(),
            cas,
            accounts,
            sealer,
            clock,
        }
    }

    /// Carries out queued key-compromise revocations (RFC 8555 §7.6). A
    /// failure stays queued with its error and is retried on the next tick.
    pub(super) async fn pass(&self) {
        let Ok(jobs) = self.ca_revocations.pending_revocations(20).await else {
            return;
        };
        for job in jobs {
            let (id, ca_id, chain_pem, reason_code) =
                (job.id, job.ca_id, job.chain_pem, job.reason_code);
            let now = self.clock.now();
            let result = async {
                let ca = self
                    .cas
                    .get(&ca_id)
                    .ok_or_else(|| format!("CA '{ca_id}' is not configured"))?;
                self.accounts
                    .ensure(ca, &self.keys, &self.sealer, now)
                    .await
                    .map_err(|e| e.message)?;
                let der = certs::chain_ders(&chain_pem)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .next()
                    .ok_or_else(|| "empty chain".to_string())?;
                ca.revoke(&der, reason_code).await.map_err(|e| e.message)
            }
            .await;
            match &result {
                Ok(()) => {
                    info!(ca = %ca_id, revocation = %id, reason_code, "certificate revoked")
                }
                Err(e) => {
                    warn!(ca = %ca_id, revocation = %id, error = %e, "revocation failed; will retry")
                }
            }
            let _ = self
                .ca_revocations
                .revocation_result(&id, result.as_ref().err().map(String::as_str), now)
                .await;
        }
    }
}
