//! Sealed private keys of certificates and ACME account credentials.
//! Everything here is ciphertext; opening it is `keys::seal`'s job.

use sea_orm::DatabaseConnection;

use crate::domain::KeyType;
use crate::keys::seal::Sealed;

use super::StoreError;
use super::sql::{exec, get, one};

/// Sealed certificate keys and ACME account credentials.
#[derive(Clone)]
pub struct Keys {
    pub(super) db: DatabaseConnection,
}

impl Keys {
    // ----- keys and accounts --------------------------------------------

    /// A sealed private key.
    pub async fn private_key(&self, id: &str) -> Result<Option<(KeyType, Sealed)>, StoreError> {
        let row = one(
            &self.db,
            "SELECT key_type, master_key_id, nonce, ciphertext FROM private_keys WHERE id = $1",
            vec![id.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let kt: String = get(&row, "key_type")?;
        Ok(Some((
            kt.parse().map_err(StoreError::Db)?,
            Sealed {
                key_id: get(&row, "master_key_id")?,
                nonce: get(&row, "nonce")?,
                ciphertext: get(&row, "ciphertext")?,
            },
        )))
    }

    /// The stored ACME account of a CA: its URL and sealed credentials.
    pub async fn account(&self, ca_id: &str) -> Result<Option<(String, Sealed)>, StoreError> {
        let row = one(
            &self.db,
            "SELECT account_url, master_key_id, nonce, ciphertext FROM acme_accounts \
             WHERE ca_id = $1",
            vec![ca_id.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            get(&row, "account_url")?,
            Sealed {
                key_id: get(&row, "master_key_id")?,
                nonce: get(&row, "nonce")?,
                ciphertext: get(&row, "ciphertext")?,
            },
        )))
    }

    /// Stores a CA's account unless another replica stored one first;
    /// returns the one that is stored, so every replica uses one account.
    pub async fn save_account(
        &self,
        ca_id: &str,
        directory_url: &str,
        account_url: &str,
        sealed: &Sealed,
        now: i64,
    ) -> Result<(String, Sealed), StoreError> {
        exec(
            &self.db,
            "INSERT INTO acme_accounts (ca_id, directory_url, account_url, master_key_id, nonce, \
             ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            vec![
                ca_id.into(),
                directory_url.into(),
                account_url.into(),
                sealed.key_id.clone().into(),
                sealed.nonce.clone().into(),
                sealed.ciphertext.clone().into(),
                now.into(),
            ],
        )
        .await?;
        self.account(ca_id)
            .await?
            .ok_or_else(|| StoreError::Db(format!("account for {ca_id} vanished")))
    }

    /// Private keys that belong to no certificate and no open order: keys
    /// that leaked out of the issuance cycle. Should always be zero.
    pub async fn orphan_key_count(&self) -> Result<i64, StoreError> {
        let row = one(
            &self.db,
            "SELECT COUNT(*) AS n FROM private_keys k WHERE \
             NOT EXISTS (SELECT 1 FROM certificates c WHERE c.private_key_id = k.id) AND \
             NOT EXISTS (SELECT 1 FROM orders o WHERE o.private_key_id = k.id \
               AND o.state IN ('pending', 'processing'))",
            vec![],
        )
        .await?
        .ok_or_else(|| StoreError::Db("COUNT returned no row".into()))?;
        get(&row, "n")
    }
}
