//! Challenge answers shared by every replica: HTTP-01 key authorizations
//! (any replica answers the CA) and the DNS-01 TXT records an order
//! placed, so a crashed order's records are found and removed.

use sea_orm::DatabaseConnection;

use super::StoreError;
use super::rows::DnsRecord;
use super::sql::{all, exec, get, new_id, one};

/// HTTP-01 answers and DNS-01 records.
#[derive(Clone)]
pub struct Challenges {
    pub(super) db: DatabaseConnection,
}

impl Challenges {
    // ----- HTTP-01 tokens ------------------------------------------------

    /// Publishes an HTTP-01 answer for every replica's responder.
    pub async fn put_http01_token(
        &self,
        token: &str,
        key_authorization: &str,
        order_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "INSERT INTO http01_tokens (token, key_authorization, order_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (token) DO UPDATE SET \
             key_authorization = excluded.key_authorization, order_id = excluded.order_id",
            vec![
                token.into(),
                key_authorization.into(),
                order_id.into(),
                now.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The key authorization to serve for `token` (RFC 8555 §8.3).
    pub async fn http01_key_authorization(
        &self,
        token: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = one(
            &self.db,
            "SELECT key_authorization FROM http01_tokens WHERE token = $1",
            vec![token.into()],
        )
        .await?;
        row.map(|r| get(&r, "key_authorization")).transpose()
    }

    // ----- DNS-01 records ----------------------------------------------------

    /// Records a TXT value an order is about to publish (before publishing,
    /// so cleanup can always find it).
    pub async fn add_dns_record(
        &self,
        order_id: &str,
        provider_id: &str,
        fqdn: &str,
        value: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let id = new_id();
        exec(
            &self.db,
            "INSERT INTO dns_records (id, order_id, provider_id, fqdn, value, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                id.clone().into(),
                order_id.into(),
                provider_id.into(),
                fqdn.into(),
                value.into(),
                now.into(),
            ],
        )
        .await?;
        Ok(id)
    }

    /// TXT records published for one order.
    pub async fn dns_records_of(&self, order_id: &str) -> Result<Vec<DnsRecord>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, order_id, provider_id, fqdn, value, created_at FROM dns_records WHERE order_id = $1",
            vec![order_id.into()],
        )
        .await?;
        rows.iter().map(super::rows::dns_record).collect()
    }

    /// TXT records left behind by orders that are no longer open (a crash
    /// between publishing and cleaning up).
    pub async fn stale_dns_records(&self, limit: u64) -> Result<Vec<DnsRecord>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, order_id, provider_id, fqdn, value, created_at FROM dns_records d WHERE NOT EXISTS \
             (SELECT 1 FROM orders o WHERE o.id = d.order_id \
              AND o.state IN ('pending', 'processing')) LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?;
        rows.iter().map(super::rows::dns_record).collect()
    }

    /// Forgets a TXT record once it is removed from DNS.
    pub async fn delete_dns_record(&self, id: &str) -> Result<(), StoreError> {
        exec(
            &self.db,
            "DELETE FROM dns_records WHERE id = $1",
            vec![id.into()],
        )
        .await?;
        Ok(())
    }
}
