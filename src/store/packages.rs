//! Install packages of `manual` destinations (`install_packages`): one row
//! per install request mailed to a server's administrator.
//!
//! What is stored, and for how long:
//!
//! * the download token only as its SHA-256 (`token_sha256`): the link in
//!   the mail is the only copy of the token;
//! * the package (a tar of the PKCS#12 and the encrypted PEM bundle)
//!   sealed under a master key, until it can no longer be fetched (a
//!   one-time download, or superseded); an expired package's ciphertext
//!   stays until the next package of that deployment supersedes it;
//! * a password for `api` delivery sealed until an operator is shown it
//!   (once); a mailed password is never stored.
//!
//! States: `open` (downloadable until `expires_at`), `downloaded` (a
//! one-time link was used; final), `superseded` (a newer package of the
//! same name and destination exists; final). A new package supersedes
//! every earlier one of its deployment in the same transaction.

use sea_orm::DatabaseConnection;

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::sql::{all, exec, get, int, one, with_tx};
use crate::keys::seal::Sealed;

/// Install packages.
#[derive(Clone)]
pub struct Packages {
    pub(super) db: DatabaseConnection,
}

/// A package to store (its id and the token's hash made by the caller).
#[derive(Debug, Clone)]
pub struct NewPackage {
    pub id: String,
    pub name_id: String,
    pub destination: String,
    pub cert_id: String,
    pub serial: String,
    /// Hex SHA-256 of the download token.
    pub token_sha256: String,
    pub one_time: bool,
    /// `api` or `mail`.
    pub password_delivery: String,
    /// Who was asked to install it.
    pub contacts: Vec<String>,
    /// The sealed tar archive.
    pub package: Sealed,
    /// The sealed password (only for `api` delivery).
    pub password: Option<Sealed>,
    pub created_at: i64,
    pub expires_at: i64,
    /// When to remind the contacts if the deployment is still `requested`.
    pub remind_at: i64,
}

/// A stored package, as the download and the password request see it.
#[derive(Debug, Clone)]
pub struct PackageRecord {
    pub id: String,
    pub name_id: String,
    pub destination: String,
    pub serial: String,
    /// `open`, `downloaded`, `superseded`.
    pub state: String,
    pub one_time: bool,
    pub password_delivery: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub downloads: i64,
    pub downloaded_at: Option<i64>,
    pub superseded_at: Option<i64>,
    pub password_shown_at: Option<i64>,
    /// The sealed package while it can still be fetched.
    pub package: Option<Sealed>,
    /// The sealed password until it is shown (`api` delivery).
    pub password: Option<Sealed>,
}

/// A package whose deployment is still `requested` at its reminder time.
#[derive(Debug, Clone)]
pub struct DueReminder {
    pub id: String,
    pub name_id: String,
    pub destination: String,
    pub serial: String,
    pub state: String,
    pub contacts: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub downloads: i64,
}

fn sealed_cols(
    r: &sea_orm::QueryResult,
    key_id: &str,
    nonce: &str,
    ct: &str,
) -> Result<Option<Sealed>, StoreError> {
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (
        get::<Option<String>>(r, key_id)?,
        get::<Option<Vec<u8>>>(r, nonce)?,
        get::<Option<Vec<u8>>>(r, ct)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Sealed {
        key_id,
        nonce,
        ciphertext,
    }))
}

fn record(r: &sea_orm::QueryResult) -> Result<PackageRecord, StoreError> {
    Ok(PackageRecord {
        id: get(r, "id")?,
        name_id: get(r, "name_id")?,
        destination: get(r, "destination")?,
        serial: get(r, "serial")?,
        state: get(r, "state")?,
        one_time: get(r, "one_time")?,
        password_delivery: get(r, "password_delivery")?,
        created_at: get(r, "created_at")?,
        expires_at: get(r, "expires_at")?,
        downloads: int(r, "downloads")?,
        downloaded_at: get(r, "downloaded_at")?,
        superseded_at: get(r, "superseded_at")?,
        password_shown_at: get(r, "password_shown_at")?,
        package: sealed_cols(r, "master_key_id", "nonce", "ciphertext")?,
        password: sealed_cols(
            r,
            "password_key_id",
            "password_nonce",
            "password_ciphertext",
        )?,
    })
}

fn contacts(r: &sea_orm::QueryResult) -> Result<Vec<String>, StoreError> {
    let text: String = get(r, "contacts")?;
    serde_json::from_str(&text).map_err(|e| StoreError::Db(format!("contacts column: {e}")))
}

impl Packages {
    /// Stores a new package; every earlier package of the same name and
    /// destination is superseded (its link stops working, its secrets are
    /// wiped, no reminder follows) in the same transaction, audited there
    /// with the event `audit` makes of the superseded ids. Returns those
    /// ids.
    pub async fn create_package(
        &self,
        p: &NewPackage,
        audit: impl FnOnce(&[String]) -> AuditEvent,
    ) -> Result<Vec<String>, StoreError> {
        with_tx(&self.db, async |tx| {
            let superseded = all(
                tx,
                "UPDATE install_packages SET state = 'superseded', superseded_at = $3, \
                 superseded_by = $4, master_key_id = NULL, nonce = NULL, ciphertext = NULL, \
                 password_key_id = NULL, password_nonce = NULL, password_ciphertext = NULL, \
                 remind_at = NULL WHERE name_id = $1 AND destination = $2 \
                 AND state <> 'superseded' RETURNING id",
                vec![
                    p.name_id.clone().into(),
                    p.destination.clone().into(),
                    p.created_at.into(),
                    p.id.clone().into(),
                ],
            )
            .await?;
            let (pk, pn, pc) = match &p.password {
                Some(s) => (
                    Some(s.key_id.clone()),
                    Some(s.nonce.clone()),
                    Some(s.ciphertext.clone()),
                ),
                None => (None, None, None),
            };
            exec(
                tx,
                "INSERT INTO install_packages (id, name_id, destination, cert_id, serial, \
                 token_sha256, state, one_time, password_delivery, contacts, master_key_id, \
                 nonce, ciphertext, password_key_id, password_nonce, password_ciphertext, \
                 created_at, expires_at, remind_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, \
                 $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                vec![
                    p.id.clone().into(),
                    p.name_id.clone().into(),
                    p.destination.clone().into(),
                    p.cert_id.clone().into(),
                    p.serial.clone().into(),
                    p.token_sha256.clone().into(),
                    p.one_time.into(),
                    p.password_delivery.clone().into(),
                    serde_json::to_string(&p.contacts)
                        .unwrap_or_else(|_| "[]".into())
                        .into(),
                    p.package.key_id.clone().into(),
                    p.package.nonce.clone().into(),
                    p.package.ciphertext.clone().into(),
                    pk.into(),
                    pn.into(),
                    pc.into(),
                    p.created_at.into(),
                    p.expires_at.into(),
                    p.remind_at.into(),
                ],
            )
            .await?;
            let ids = superseded
                .iter()
                .map(|r| get::<String>(r, "id"))
                .collect::<Result<Vec<_>, _>>()?;
            insert_audit(tx, &audit(&ids)).await?;
            Ok(ids)
        })
        .await
    }

    /// The package a download token (its hex SHA-256) belongs to.
    pub async fn package_by_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<PackageRecord>, StoreError> {
        one(
            &self.db,
            "SELECT * FROM install_packages WHERE token_sha256 = $1",
            vec![token_sha256.into()],
        )
        .await?
        .map(|r| record(&r))
        .transpose()
    }

    /// The newest package of a name's destination: the one not superseded
    /// (there is at most one; two made in the same second are ordered by
    /// that), else the last superseded.
    pub async fn latest_package(
        &self,
        name_id: &str,
        destination: &str,
    ) -> Result<Option<PackageRecord>, StoreError> {
        one(
            &self.db,
            "SELECT * FROM install_packages WHERE name_id = $1 AND destination = $2 \
             ORDER BY CASE WHEN state = 'superseded' THEN 1 ELSE 0 END, created_at DESC, \
             id DESC LIMIT 1",
            vec![name_id.into(), destination.into()],
        )
        .await?
        .map(|r| record(&r))
        .transpose()
    }

    /// Counts a download of an `open`, unexpired package, audited in the
    /// same transaction; a one-time package becomes `downloaded` and its
    /// ciphertext is wiped. False (nothing written) when the package was
    /// superseded, downloaded or expired meanwhile.
    pub async fn record_download(
        &self,
        id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                "UPDATE install_packages SET downloads = downloads + 1, \
                 downloaded_at = COALESCE(downloaded_at, $2), \
                 state = CASE WHEN one_time THEN 'downloaded' ELSE state END, \
                 master_key_id = CASE WHEN one_time THEN NULL ELSE master_key_id END, \
                 nonce = CASE WHEN one_time THEN NULL ELSE nonce END, \
                 ciphertext = CASE WHEN one_time THEN NULL ELSE ciphertext END \
                 WHERE id = $1 AND state = 'open' AND expires_at > $2",
                vec![id.into(), now.into()],
            )
            .await?;
            if n == 1 {
                insert_audit(tx, audit).await?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Wipes a package's sealed password (it is being shown), audited in
    /// the same transaction. False when someone else was shown it first.
    pub async fn take_password(
        &self,
        id: &str,
        nonce: &[u8],
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                "UPDATE install_packages SET password_key_id = NULL, password_nonce = NULL, \
                 password_ciphertext = NULL, password_shown_at = $3 \
                 WHERE id = $1 AND password_nonce = $2",
                vec![id.into(), nonce.to_vec().into(), audit.at.into()],
            )
            .await?;
            if n == 1 {
                insert_audit(tx, audit).await?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Packages whose reminder time has come while their deployment still
    /// waits (`requested`) for the certificate they carry.
    pub async fn due_reminders(
        &self,
        now: i64,
        limit: u64,
    ) -> Result<Vec<DueReminder>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT p.id, p.name_id, p.destination, p.serial, p.state, p.contacts, \
             p.created_at, p.expires_at, p.downloads FROM install_packages p \
             JOIN deployments d ON d.name_id = p.name_id AND d.destination = p.destination \
             AND d.cert_id = p.cert_id AND d.state = 'requested' \
             WHERE p.remind_at IS NOT NULL AND p.remind_at <= $1 AND p.state <> 'superseded' \
             ORDER BY p.remind_at LIMIT $2",
            vec![now.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueReminder {
                    id: get(r, "id")?,
                    name_id: get(r, "name_id")?,
                    destination: get(r, "destination")?,
                    serial: get(r, "serial")?,
                    state: get(r, "state")?,
                    contacts: contacts(r)?,
                    created_at: get(r, "created_at")?,
                    expires_at: get(r, "expires_at")?,
                    downloads: int(r, "downloads")?,
                })
            })
            .collect()
    }

    /// A reminder went out: no other follows for this package.
    pub async fn record_reminded(&self, id: &str, now: i64) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE install_packages SET remind_at = NULL, reminded_at = $2 WHERE id = $1",
            vec![id.into(), now.into()],
        )
        .await?;
        Ok(())
    }
}
