//! Revocations to perform at the CA (compromised keys, deleted names
//! with `?revoke=true`) and their results.

use sea_orm::DatabaseConnection;

use super::StoreError;
use super::names::refresh_swap_facts;
use super::sql::{all, exec, get, with_tx};

/// A revocation waiting to be sent to its CA.
#[derive(Debug, Clone)]
pub struct PendingRevocation {
    /// The job's id.
    pub id: String,
    /// The CA that issued the certificate.
    pub ca_id: String,
    /// The certificate's PEM chain, copied into the job so that it
    /// outlives the deletion of its name.
    pub chain_pem: String,
    /// The RFC 5280 reason code.
    pub reason_code: i64,
}

/// Revocations to perform at the CA.
#[derive(Clone)]
pub struct CaRevocations {
    pub(super) db: DatabaseConnection,
}

impl CaRevocations {
    /// Pending revocations, oldest first.
    pub async fn pending_revocations(
        &self,
        limit: u64,
    ) -> Result<Vec<PendingRevocation>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, ca_id, chain_pem, reason_code FROM revocations \
             WHERE state = 'pending' ORDER BY created_at LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingRevocation {
                    id: get(r, "id")?,
                    ca_id: get(r, "ca_id")?,
                    chain_pem: get(r, "chain_pem")?,
                    reason_code: get::<i32>(r, "reason_code")
                        .map(i64::from)
                        .or_else(|_| get(r, "reason_code"))?,
                })
            })
            .collect()
    }

    /// Records the outcome of a revocation attempt.
    pub async fn revocation_result(
        &self,
        id: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let state = if error.is_none() { "done" } else { "pending" };
        // One transaction: a revocation is never `done` while its
        // certificate still looks usable to a swap.
        with_tx(&self.db, async |tx| {
            exec(
                tx,
                "UPDATE revocations SET state = $2, attempts = attempts + 1, last_error = $3, \
             updated_at = $4 WHERE id = $1",
                vec![
                    id.into(),
                    state.into(),
                    error.map(str::to_string).into(),
                    now.into(),
                ],
            )
            .await?;
            if error.is_none() {
                // Swaps never land on it again (`standby_revoked`).
                exec(
                    tx,
                    "UPDATE certificates SET revoked_at = $2, revocation_source = 'acme', \
                 revocation_reason = (SELECT reason_code FROM revocations WHERE id = $1) \
                 WHERE revoked_at IS NULL AND id = \
                 (SELECT certificate_id FROM revocations WHERE id = $1)",
                    vec![id.into(), now.into()],
                )
                .await?;
                let current = all(
                    tx,
                    "SELECT s.name_id, s.slot FROM slots s JOIN revocations r \
                 ON r.certificate_id = s.current_cert_id WHERE r.id = $1",
                    vec![id.into()],
                )
                .await?;
                for r in &current {
                    let name: String = get(r, "name_id")?;
                    let slot: String = get(r, "slot")?;
                    refresh_swap_facts(tx, &name, slot.parse().map_err(StoreError::Db)?).await?;
                }
            }
            Ok(())
        })
        .await
    }
}
