//! API tokens: only a SHA-256 of the secret is stored; creating and
//! deleting one is audited.

use sea_orm::DatabaseConnection;

use super::StoreError;
use super::audit::{AuditDetails, AuditEvent, insert_audit};
use super::rows::TokenRecord;
use super::sql::{all, exec, new_id, one, with_tx};

/// API tokens.
#[derive(Clone)]
pub struct Tokens {
    pub(super) db: DatabaseConnection,
}

/// A token to create. The secret itself never reaches the store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Unique name (the actor in audit events).
    pub name: String,
    /// What it may do.
    pub role: crate::domain::Role,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Unix seconds, if it expires.
    pub expires_at: Option<i64>,
}

impl Tokens {
    // ----- API tokens ------------------------------------------------------

    /// Stores a new token (only the secret's SHA-256) and audits it, in one
    /// transaction.
    pub async fn create_token(
        &self,
        t: &NewToken,
        actor: &str,
        now: i64,
    ) -> Result<TokenRecord, StoreError> {
        with_tx(&self.db, async |tx| {
            let id = new_id();
            let n = exec(
                tx,
                "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                vec![
                    id.clone().into(),
                    t.name.clone().into(),
                    t.role.as_str().into(),
                    t.secret_sha256.clone().into(),
                    now.into(),
                    t.expires_at.into(),
                ],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::Duplicate(format!("token '{}'", t.name)));
            }
            insert_audit(
                tx,
                &AuditEvent::ok(
                    now,
                    actor,
                    "token.create",
                    t.name.clone(),
                    None,
                    Some(AuditDetails::TokenCreated { role: t.role }),
                ),
            )
            .await?;
            Ok(TokenRecord {
                id,
                name: t.name.clone(),
                role: t.role,
                created_at: now,
                last_used_at: None,
                expires_at: t.expires_at,
            })
        })
        .await
    }

    /// The token whose secret hashes to `secret_sha256`, if any; marks it
    /// used (at most once a minute, to keep reads cheap).
    pub async fn token_by_hash(
        &self,
        secret_sha256: &str,
        now: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = one(
            &self.db,
            "SELECT id, name, role, created_at, last_used_at, expires_at FROM api_tokens \
             WHERE secret_sha256 = $1",
            vec![secret_sha256.into()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let t = super::rows::token(&row)?;
        if t.last_used_at.is_none_or(|u| u < now - 60) {
            exec(
                &self.db,
                "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1",
                vec![t.id.clone().into(), now.into()],
            )
            .await?;
        }
        Ok(Some(t))
    }

    /// All tokens (never their secrets), by name.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, name, role, created_at, last_used_at, expires_at FROM api_tokens \
             ORDER BY name",
            vec![],
        )
        .await?;
        rows.iter().map(super::rows::token).collect()
    }

    /// Deletes a token by name, ends the console sessions signed in with
    /// it, and audits it, in one transaction.
    pub async fn delete_token(&self, name: &str, actor: &str, now: i64) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                "DELETE FROM api_tokens WHERE name = $1",
                vec![name.into()],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("token '{name}'")));
            }
            // The console sessions signed in with it end with it (a
            // session's actor is the token's name; a person signed in
            // through OpenID Connect is an email or `sub:…`, never a
            // token name).
            exec(
                tx,
                "DELETE FROM console_sessions WHERE actor = $1",
                vec![name.into()],
            )
            .await?;
            insert_audit(
                tx,
                &AuditEvent::ok(now, actor, "token.delete", name, None, None),
            )
            .await?;
            Ok(())
        })
        .await
    }
}
