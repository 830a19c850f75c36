//! The audit log: who did what, when, why and with what result. Every
//! mutation of an operator's (swap, revoke, re-key, distrust, token
//! change, key download) writes one event, in the same transaction as the
//! change itself; `details` is a typed value serialized by serde.

use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::Serialize;

use crate::domain::{Role, Slot};

use super::StoreError;
use super::sql::{all, exec, get};

/// The audit log.
#[derive(Clone)]
pub struct Audit {
    pub(super) db: DatabaseConnection,
}

/// An audit event: who did what to which target, why, and how it ended.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Token name or `worker:<id>`.
    pub actor: String,
    /// Verb, e.g. `name.create`, `name.swap`.
    pub action: String,
    /// The object, e.g. the name id.
    pub target: String,
    /// The reason given by the actor.
    pub reason: Option<String>,
    /// `ok` or an error text.
    pub result: String,
    /// Extra JSON text.
    pub details: Option<String>,
}

pub(super) async fn insert_audit<C: ConnectionTrait>(
    c: &C,
    e: &AuditEvent,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO audit_events (at, actor, action, target, reason, result, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            e.at.into(),
            e.actor.clone().into(),
            e.action.clone().into(),
            e.target.clone().into(),
            e.reason.clone().into(),
            e.result.clone().into(),
            e.details.clone().into(),
        ],
    )
    .await?;
    Ok(())
}

/// Hides a password in a database URL for error messages.
pub(super) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The extra facts of an audit event, one variant per shape, serialized
/// by serde into the event's `details` JSON (never assembled by hand, so
/// every value is escaped).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AuditDetails {
    /// A name was created with this CA pair.
    NameCreated {
        /// CA of the primary slot.
        primary_ca: String,
        /// CA of the backup slot.
        backup_ca: String,
    },
    /// A name stopped being managed.
    NameDeleted {
        /// Whether its certificates are revoked.
        revoke: bool,
    },
    /// A token was created.
    TokenCreated {
        /// Its role.
        role: Role,
    },
    /// A private key was read.
    KeyRead {
        /// The slot whose key it is.
        slot: Slot,
        /// The key's SubjectPublicKeyInfo fingerprint.
        spki_sha256: String,
    },
    /// One name was swapped by an operator.
    Swapped {
        /// The slot that was active.
        from: Slot,
        /// The slot that is active now.
        to: Slot,
        /// The operation record.
        operation: String,
    },
    /// The worker swapped a name whose standby was unusable before.
    AutoSwapped {
        /// The slot that is active now.
        to: Slot,
    },
    /// A key was reported compromised.
    Compromised {
        /// The slot whose key it is.
        slot: Slot,
        /// The key's SubjectPublicKeyInfo fingerprint.
        spki_sha256: String,
        /// Whether the name was swapped away from it.
        swapped: bool,
    },
    /// A drill was requested or ended.
    Drill {
        /// The drill record.
        drill: String,
        /// `dry` or `live`.
        mode: String,
        /// `running`, `passed` or `failed`.
        state: String,
    },
    /// A live drill flipped names (away from its CA or back).
    DrillSwap {
        /// The drill record.
        drill: String,
        /// The operation record.
        operation: String,
        /// How many names.
        names: u64,
    },
    /// Sealed secrets were re-sealed under the current master key (one
    /// event per batch of `twincert keys reseal`).
    Resealed {
        /// The master key id they are sealed under now.
        key_id: String,
        /// Certificate private keys in this batch.
        private_keys: u64,
        /// ACME account credentials in this batch.
        accounts: u64,
        /// Install packages and package passwords in this batch.
        install_secrets: u64,
    },
    /// The store was restored from a backup (`twincert restore`).
    Restored {
        /// When the backup was taken (unix seconds).
        backup_created_at: i64,
        /// The backend the backup came from.
        source_backend: String,
        /// Rows written.
        rows: u64,
        /// Whether the store's previous contents were replaced (`--force`).
        replaced: bool,
    },
    /// An install package of a `manual` destination was made and mailed.
    InstallRequested {
        /// The destination id.
        destination: String,
        /// The package id.
        package: String,
        /// Serial of the certificate inside.
        serial: String,
        /// Who was asked to install it.
        contacts: Vec<String>,
        /// Earlier packages of the destination whose links stopped working.
        superseded: Vec<String>,
    },
    /// An install package was downloaded through its link, or its password
    /// was shown to an operator.
    InstallPackage {
        /// The destination id.
        destination: String,
        /// The package id.
        package: String,
        /// Serial of the certificate inside.
        serial: String,
    },
    /// A re-key operation started.
    Rekey {
        /// The operation record.
        operation: String,
        /// How many names it covers.
        names: u64,
    },
}

impl AuditDetails {
    /// The JSON text stored in `audit_events.details`.
    pub fn json(&self) -> String {
        // Plain strings, numbers and booleans: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl AuditEvent {
    /// A successful change, as the store records it in the change's own
    /// transaction.
    pub fn ok(
        at: i64,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        reason: Option<String>,
        details: Option<AuditDetails>,
    ) -> AuditEvent {
        AuditEvent {
            at,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            reason,
            result: "ok".into(),
            details: details.map(|d| d.json()),
        }
    }
}

impl Audit {
    // ----- audit -----------------------------------------------------------

    /// Appends an audit event.
    pub async fn record(&self, e: &AuditEvent) -> Result<(), StoreError> {
        insert_audit(&self.db, e).await
    }

    /// The newest audit events.
    pub async fn events(&self, limit: u64) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self
            .page(limit, None)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// A page of audit events, newest first, older than event `before`;
    /// each with its id (the cursor of the next page).
    pub async fn page(
        &self,
        limit: u64,
        before: Option<i64>,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, at, actor, action, target, reason, result, details FROM audit_events \
             WHERE id < $2 ORDER BY id DESC LIMIT $1",
            vec![(limit as i64).into(), before.unwrap_or(i64::MAX).into()],
        )
        .await?;
        events_from_rows(&rows)
    }
}

/// Audit events with their ids, from rows of
/// `id, at, actor, action, target, reason, result, details`.
pub(super) fn events_from_rows(
    rows: &[sea_orm::QueryResult],
) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok((
                get(r, "id")?,
                AuditEvent {
                    at: get(r, "at")?,
                    actor: get(r, "actor")?,
                    action: get(r, "action")?,
                    target: get(r, "target")?,
                    reason: get(r, "reason")?,
                    result: get(r, "result")?,
                    details: get(r, "details")?,
                },
            ))
        })
        .collect()
}
