//! One ACME account per CA, shared by every replica.
//!
//! On first use a replica loads the CA's sealed credentials from the store;
//! if there are none it registers an account and stores it — unless another
//! replica stored one first, in which case it uses that one (the store keeps
//! the first). A per-CA lock keeps one process from registering twice.
//!
//! When the CA says our account does not exist (`accountDoesNotExist`: its
//! database was lost or reset), the issuer marks that account dead here;
//! the next use registers a new one and replaces the stored one — only if
//! it is still the dead one, so replicas finding the loss at once end up on
//! one new account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ca::CaClient;
use crate::keys::seal::{Sealer, account_purpose as purpose};
use crate::store::Keys;

use super::issuer::{AttemptError, final_error};

/// Per-CA initialisation locks.
#[derive(Default)]
pub(super) struct Accounts {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per CA, the URL of an account the CA said does not exist.
    dead: Mutex<HashMap<String, String>>,
}

impl Accounts {
    fn lock_for(&self, ca_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(ca_id.to_string()).or_default().clone()
    }

    /// Records that the CA no longer knows the account `url`; the next
    /// [`Accounts::ensure`] registers a new one.
    pub(super) fn mark_dead(&self, ca: &CaClient, url: &str) {
        ca.forget_account(url);
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        dead.insert(ca.id().to_string(), url.to_string());
    }

    fn dead_url(&self, ca_id: &str) -> Option<String> {
        let dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        dead.get(ca_id).cloned()
    }

    /// Makes sure `ca` has its account loaded.
    pub(super) async fn ensure(
        &self,
        ca: &CaClient,
        keys: &Keys,
        sealer: &Sealer,
        now: i64,
    ) -> Result<(), AttemptError> {
        if ca.has_account() {
            return Ok(());
        }
        let lock = self.lock_for(ca.id());
        let _guard = lock.lock().await;
        if ca.has_account() {
            return Ok(());
        }
        let sealed = match keys.account(ca.id()).await? {
            Some((url, _)) if self.dead_url(ca.id()).as_deref() == Some(url.as_str()) => {
                let created = ca.create_account().await?;
                let sealed = sealer
                    .seal(&purpose(ca.id()), &created.credentials_json)
                    .map_err(|e| final_error(format!("cannot seal the account: {e}")))?;
                let (stored_url, stored) = keys
                    .replace_account(ca.id(), &url, &created.url, &sealed, now)
                    .await?;
                tracing::warn!(
                    ca = ca.id(),
                    dead = %url,
                    account = %stored_url,
                    "the CA no longer knows our account; registered a new one"
                );
                stored
            }
            Some((_, sealed)) => sealed,
            None => {
                let created = ca.create_account().await?;
                let sealed = sealer
                    .seal(&purpose(ca.id()), &created.credentials_json)
                    .map_err(|e| final_error(format!("cannot seal the account: {e}")))?;
                keys.save_account(ca.id(), ca.directory_url(), &created.url, &sealed, now)
                    .await?
                    .1
            }
        };
        let json = sealer
            .open(&purpose(ca.id()), &sealed)
            .map_err(|e| final_error(format!("cannot unseal the stored account: {e}")))?;
        ca.restore_account(&json).await?;
        Ok(())
    }
}
