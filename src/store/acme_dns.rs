//! acme-dns registrations (issue 16): one account per (DNS provider,
//! domain) at an acme-dns server. The credentials are ciphertext here
//! (sealed and opened by `keys::seal`, as ACME account keys are); the
//! `fulldomain` the domain's `_acme-challenge` CNAME points at is plain,
//! so a record placed there is traced back to its account.

use sea_orm::DatabaseConnection;

use crate::keys::seal::Sealed;

use super::StoreError;
use super::sql::{exec, get, one};

/// Stored acme-dns registrations.
#[derive(Clone)]
pub struct AcmeDnsRegistrations {
    pub(super) db: DatabaseConnection,
}

/// One registration as stored.
#[derive(Debug, Clone)]
pub struct AcmeDnsRegistration {
    /// The domain whose `_acme-challenge` name is delegated.
    pub domain: String,
    /// Where that name's CNAME must point.
    pub fulldomain: String,
    /// The account's subdomain (the `subdomain` of `/update`).
    pub subdomain: String,
    /// The sealed credentials (username and password).
    pub sealed: Sealed,
}

const COLUMNS: &str = "domain, fulldomain, subdomain, master_key_id, nonce, ciphertext";

fn of(row: &sea_orm::QueryResult) -> Result<AcmeDnsRegistration, StoreError> {
    Ok(AcmeDnsRegistration {
        domain: get(row, "domain")?,
        fulldomain: get(row, "fulldomain")?,
        subdomain: get(row, "subdomain")?,
        sealed: Sealed {
            key_id: get(row, "master_key_id")?,
            nonce: get(row, "nonce")?,
            ciphertext: get(row, "ciphertext")?,
        },
    })
}

impl AcmeDnsRegistrations {
    /// The registration of `domain` at provider `provider_id`.
    pub async fn by_domain(
        &self,
        provider_id: &str,
        domain: &str,
    ) -> Result<Option<AcmeDnsRegistration>, StoreError> {
        one(
            &self.db,
            &format!(
                "SELECT {COLUMNS} FROM acme_dns_registrations \
                 WHERE provider_id = $1 AND domain = $2"
            ),
            vec![provider_id.into(), domain.into()],
        )
        .await?
        .as_ref()
        .map(of)
        .transpose()
    }

    /// The registration whose fulldomain is `fulldomain`.
    pub async fn by_fulldomain(
        &self,
        provider_id: &str,
        fulldomain: &str,
    ) -> Result<Option<AcmeDnsRegistration>, StoreError> {
        one(
            &self.db,
            &format!(
                "SELECT {COLUMNS} FROM acme_dns_registrations \
                 WHERE provider_id = $1 AND fulldomain = $2 ORDER BY domain LIMIT 1"
            ),
            vec![provider_id.into(), fulldomain.into()],
        )
        .await?
        .as_ref()
        .map(of)
        .transpose()
    }

    /// Stores a registration unless another replica stored one for the
    /// domain first; returns the one that is stored, so every replica
    /// uses one account (and one CNAME target).
    pub async fn save(
        &self,
        provider_id: &str,
        registration: &AcmeDnsRegistration,
        now: i64,
    ) -> Result<AcmeDnsRegistration, StoreError> {
        let r = registration;
        exec(
            &self.db,
            "INSERT INTO acme_dns_registrations (provider_id, domain, fulldomain, subdomain, \
             master_key_id, nonce, ciphertext, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            vec![
                provider_id.into(),
                r.domain.clone().into(),
                r.fulldomain.clone().into(),
                r.subdomain.clone().into(),
                r.sealed.key_id.clone().into(),
                r.sealed.nonce.clone().into(),
                r.sealed.ciphertext.clone().into(),
                now.into(),
            ],
        )
        .await?;
        self.by_domain(provider_id, &r.domain)
            .await?
            .ok_or_else(|| {
                StoreError::Db(format!("acme-dns registration of {} vanished", r.domain))
            })
    }
}
