//! CA standing: which CAs are distrusted (never chosen again) and how
//! many slots each CA holds. Distrusting is a swap (see `swap`); trusting
//! again only changes the status.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::sql::{all, exec, get, with_tx};

/// CA status: distrust and usage.
#[derive(Clone)]
pub struct Cas {
    pub(super) db: DatabaseConnection,
}

/// Records whether a CA is distrusted (one row per CA), inside the
/// caller's transaction.
pub(super) async fn set_ca_status<C: ConnectionTrait>(
    c: &C,
    ca_id: &str,
    distrusted: bool,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO ca_status (ca_id, distrusted, reason, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (ca_id) DO UPDATE SET distrusted = excluded.distrusted, \
         reason = excluded.reason, updated_at = excluded.updated_at",
        vec![ca_id.into(), distrusted.into(), reason.into(), now.into()],
    )
    .await?;
    Ok(())
}

impl Cas {
    /// Records the issuer domain name used in `ca_id`'s dns-persist-01
    /// records (a later choice replaces it).
    pub async fn set_persist_issuer(
        &self,
        ca_id: &str,
        issuer_domain_name: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "INSERT INTO dns_persist_issuers (ca_id, issuer_domain_name, seen_at) \
             VALUES ($1, $2, $3) ON CONFLICT (ca_id) DO UPDATE SET \
             issuer_domain_name = excluded.issuer_domain_name, seen_at = excluded.seen_at",
            vec![ca_id.into(), issuer_domain_name.into(), now.into()],
        )
        .await?;
        Ok(())
    }

    /// Per CA, the issuer domain name of its dns-persist-01 records, where
    /// one was chosen from a challenge.
    pub async fn persist_issuers(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT ca_id, issuer_domain_name FROM dns_persist_issuers",
            vec![],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "ca_id")?, get(r, "issuer_domain_name")?)))
            .collect()
    }

    /// Per CA, the URL of twincert's ACME account there (public: it is the
    /// `accounturi` of dns-persist-01 records).
    pub async fn account_urls(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT ca_id, account_url FROM acme_accounts",
            vec![],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "ca_id")?, get(r, "account_url")?)))
            .collect()
    }

    /// The ids of distrusted CAs.
    pub async fn distrusted_cas(&self) -> Result<Vec<String>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT ca_id FROM ca_status WHERE distrusted = TRUE ORDER BY ca_id",
            vec![],
        )
        .await?;
        rows.iter().map(|r| get(r, "ca_id")).collect()
    }

    /// Per CA: how many names are active on it and how many slots it holds
    /// — by the CA of the certificate a slot holds (a slot being moved to
    /// another CA still counts where its certificate comes from; a slot
    /// without one counts where its order goes).
    pub async fn ca_usage(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT COALESCE(c.ca_id, s.ca_id) AS ca_id, COUNT(*) AS slots, \
             SUM(CASE WHEN s.slot = n.active_slot THEN 1 ELSE 0 END) AS active \
             FROM slots s JOIN names n ON n.id = s.name_id \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             GROUP BY COALESCE(c.ca_id, s.ca_id)",
            vec![],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "ca_id")?, get(r, "active")?, get(r, "slots")?)))
            .collect()
    }

    /// Trusts a CA again for future choices; names already moved away stay
    /// where they are.
    pub async fn trust_ca(
        &self,
        ca_id: &str,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            set_ca_status(tx, ca_id, false, reason, now).await?;
            insert_audit(
                tx,
                &AuditEvent::ok(now, actor, "ca.trust", ca_id, Some(reason.into()), None),
            )
            .await?;
            Ok(())
        })
        .await
    }
}
