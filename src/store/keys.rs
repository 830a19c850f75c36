//! Sealed private keys of certificates and ACME account credentials.
//! Everything here is ciphertext; opening it is `keys::seal`'s job.

use sea_orm::DatabaseConnection;

use crate::domain::KeyType;
use crate::keys::seal::Sealed;

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::sql::{all, exec, get, int, one, with_tx};

/// Which kind of sealed secret a row holds (it decides the AEAD purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A certificate's private key (`private_keys`, by key id).
    PrivateKey,
    /// A CA's ACME account credentials (`acme_accounts`, by CA id).
    Account,
    /// An install package not yet fetched (`install_packages`, by id).
    InstallPackage,
    /// An install package's password not yet shown (`install_packages`,
    /// by id).
    InstallPassword,
    /// An acme-dns account's credentials (`acme_dns_registrations`, by
    /// `"<provider id> <domain>"`).
    AcmeDnsAccount,
}

/// One sealed secret as stored, for re-sealing.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    /// Its table.
    pub kind: SecretKind,
    /// Its row: the private key's id, the CA id of the account, or
    /// `"<provider id> <domain>"` of an acme-dns account.
    pub id: String,
    /// The ciphertext.
    pub sealed: Sealed,
}

fn sealed_of(row: &sea_orm::QueryResult) -> Result<Sealed, StoreError> {
    Ok(Sealed {
        key_id: get(row, "master_key_id")?,
        nonce: get(row, "nonce")?,
        ciphertext: get(row, "ciphertext")?,
    })
}

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

    /// Replaces a CA's account the CA has forgotten (`accountDoesNotExist`)
    /// — but only if the stored one is still `dead_url`: when replicas find
    /// the loss at once, the first replacement wins and the others get it
    /// back, as with [`Keys::save_account`].
    pub async fn replace_account(
        &self,
        ca_id: &str,
        dead_url: &str,
        account_url: &str,
        sealed: &Sealed,
        now: i64,
    ) -> Result<(String, Sealed), StoreError> {
        exec(
            &self.db,
            "UPDATE acme_accounts SET account_url = $1, master_key_id = $2, nonce = $3, \
             ciphertext = $4, created_at = $5 WHERE ca_id = $6 AND account_url = $7",
            vec![
                account_url.into(),
                sealed.key_id.clone().into(),
                sealed.nonce.clone().into(),
                sealed.ciphertext.clone().into(),
                now.into(),
                ca_id.into(),
                dead_url.into(),
            ],
        )
        .await?;
        self.account(ca_id)
            .await?
            .ok_or_else(|| StoreError::Db(format!("account for {ca_id} vanished")))
    }

    /// How many sealed secrets (certificate keys, ACME account and
    /// acme-dns credentials) each master key id seals, by key id. The benchmarks' synthetic names
    /// (key id `synthetic`) hold placeholders, not secrets: not counted,
    /// never re-sealed.
    pub async fn sealed_by_key_id(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT master_key_id, COUNT(*) AS n FROM (\
               SELECT master_key_id FROM private_keys WHERE master_key_id <> 'synthetic' \
               UNION ALL SELECT master_key_id FROM acme_accounts \
               UNION ALL SELECT master_key_id FROM install_packages WHERE master_key_id IS NOT NULL \
               UNION ALL SELECT password_key_id FROM install_packages \
                 WHERE password_key_id IS NOT NULL \
               UNION ALL SELECT master_key_id FROM acme_dns_registrations) s \
             GROUP BY master_key_id ORDER BY master_key_id",
            vec![],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "master_key_id")?, int(r, "n")?)))
            .collect()
    }

    /// Up to `limit` sealed secrets not sealed under `current_key_id`:
    /// ACME accounts first, then acme-dns accounts, then private keys in id
    /// order.
    pub async fn sealed_not_under(
        &self,
        current_key_id: &str,
        limit: u64,
    ) -> Result<Vec<SealedSecret>, StoreError> {
        let mut out = Vec::new();
        for r in &all(
            &self.db,
            "SELECT ca_id, master_key_id, nonce, ciphertext FROM acme_accounts \
             WHERE master_key_id <> $1 ORDER BY ca_id LIMIT $2",
            vec![current_key_id.into(), (limit as i64).into()],
        )
        .await?
        {
            out.push(SealedSecret {
                kind: SecretKind::Account,
                id: get(r, "ca_id")?,
                sealed: sealed_of(r)?,
            });
        }
        for r in &all(
            &self.db,
            "SELECT provider_id, domain, master_key_id, nonce, ciphertext \
             FROM acme_dns_registrations WHERE master_key_id <> $1 \
             ORDER BY provider_id, domain LIMIT $2",
            vec![
                current_key_id.into(),
                (limit.saturating_sub(out.len() as u64) as i64).into(),
            ],
        )
        .await?
        {
            let provider: String = get(r, "provider_id")?;
            let domain: String = get(r, "domain")?;
            out.push(SealedSecret {
                kind: SecretKind::AcmeDnsAccount,
                id: format!("{provider} {domain}"),
                sealed: sealed_of(r)?,
            });
        }
        let left = limit.saturating_sub(out.len() as u64);
        if left == 0 {
            return Ok(out);
        }
        for r in &all(
            &self.db,
            "SELECT id, master_key_id, nonce, ciphertext FROM private_keys \
             WHERE master_key_id <> $1 AND master_key_id <> 'synthetic' ORDER BY id LIMIT $2",
            vec![current_key_id.into(), (left as i64).into()],
        )
        .await?
        {
            out.push(SealedSecret {
                kind: SecretKind::PrivateKey,
                id: get(r, "id")?,
                sealed: sealed_of(r)?,
            });
        }
        // Install packages and their passwords: few, short-lived.
        for (kind, cols) in [
            (
                SecretKind::InstallPackage,
                "master_key_id, nonce, ciphertext",
            ),
            (
                SecretKind::InstallPassword,
                "password_key_id AS master_key_id, password_nonce AS nonce, \
                 password_ciphertext AS ciphertext",
            ),
        ] {
            let left = limit.saturating_sub(out.len() as u64);
            if left == 0 {
                return Ok(out);
            }
            let key_col = match kind {
                SecretKind::InstallPassword => "password_key_id",
                _ => "master_key_id",
            };
            for r in &all(
                &self.db,
                &format!(
                    "SELECT id, {cols} FROM install_packages WHERE {key_col} IS NOT NULL \
                     AND {key_col} <> $1 ORDER BY id LIMIT $2"
                ),
                vec![current_key_id.into(), (left as i64).into()],
            )
            .await?
            {
                out.push(SealedSecret {
                    kind,
                    id: get(r, "id")?,
                    sealed: sealed_of(r)?,
                });
            }
        }
        Ok(out)
    }

    /// Replaces each secret's ciphertext with its re-sealed one, in one
    /// transaction with `audit`. A row whose ciphertext changed since it
    /// was read (another re-seal ran) is left alone. Returns how many
    /// private keys, accounts (ACME and acme-dns) and install-package
    /// secrets were replaced.
    pub async fn replace_sealed(
        &self,
        batch: &[(SealedSecret, Sealed)],
        audit: impl FnOnce(u64, u64, u64) -> AuditEvent,
    ) -> Result<(u64, u64, u64), StoreError> {
        with_tx(&self.db, async |tx| {
            let (mut keys, mut accounts, mut packages) = (0, 0, 0);
            for (old, new) in batch {
                let sql = match old.kind {
                    SecretKind::PrivateKey => {
                        "UPDATE private_keys SET master_key_id = $1, nonce = $2, ciphertext = $3 \
                         WHERE id = $4 AND master_key_id = $5 AND nonce = $6"
                    }
                    SecretKind::Account => {
                        "UPDATE acme_accounts SET master_key_id = $1, nonce = $2, ciphertext = $3 \
                         WHERE ca_id = $4 AND master_key_id = $5 AND nonce = $6"
                    }
                    SecretKind::InstallPackage => {
                        "UPDATE install_packages SET master_key_id = $1, nonce = $2, \
                         ciphertext = $3 WHERE id = $4 AND master_key_id = $5 AND nonce = $6"
                    }
                    SecretKind::InstallPassword => {
                        "UPDATE install_packages SET password_key_id = $1, password_nonce = $2, \
                         password_ciphertext = $3 WHERE id = $4 AND password_key_id = $5 \
                         AND password_nonce = $6"
                    }
                    SecretKind::AcmeDnsAccount => {
                        "UPDATE acme_dns_registrations SET master_key_id = $1, nonce = $2, \
                         ciphertext = $3 WHERE provider_id || ' ' || domain = $4 \
                         AND master_key_id = $5 AND nonce = $6"
                    }
                };
                let n = exec(
                    tx,
                    sql,
                    vec![
                        new.key_id.clone().into(),
                        new.nonce.clone().into(),
                        new.ciphertext.clone().into(),
                        old.id.clone().into(),
                        old.sealed.key_id.clone().into(),
                        old.sealed.nonce.clone().into(),
                    ],
                )
                .await?;
                match old.kind {
                    SecretKind::PrivateKey => keys += n,
                    SecretKind::Account | SecretKind::AcmeDnsAccount => accounts += n,
                    SecretKind::InstallPackage | SecretKind::InstallPassword => packages += n,
                }
            }
            if keys + accounts + packages > 0 {
                insert_audit(tx, &audit(keys, accounts, packages)).await?;
            }
            if keys > 0 {
                // Sealed keys are counted by bucket; a re-seal walks them
                // all, so its batches mark everything (one row).
                super::counts::mark_all(tx).await?;
            }
            Ok((keys, accounts, packages))
        })
        .await
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
