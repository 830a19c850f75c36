//! Records the store hands out, and their explicit conversion from rows.
//! Callers never see a sea-orm type.

use std::collections::BTreeMap;

use sea_orm::QueryResult;

use super::StoreError;
use super::orders::order_state;
use super::sql::get;
use crate::domain::{ChallengeKind, KeyType, OrderState, Slot};

/// A stored certificate's facts (the PEM is fetched separately).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRecord {
    /// Row id.
    pub id: String,
    /// The CA that issued it.
    pub ca_id: String,
    /// Leaf serial, hex.
    pub serial: String,
    /// Issuer DN.
    pub issuer: String,
    /// Root identity (see `certs::CertFacts::root_id`).
    pub root_id: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// When renewal starts, unix seconds.
    pub renew_after: i64,
    /// SPKI SHA-256, hex.
    pub spki_sha256: String,
    /// The private key's row id (never the key).
    #[serde(skip)]
    pub private_key_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// What twincert knows of its standing at the CA.
    pub status: CertStatusRecord,
}

/// A certificate's revocation status and ARI window, as last checked.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CertStatusRecord {
    /// When it was found (or made) revoked, unix seconds (the CA's time
    /// when a CRL or OCSP said so).
    pub revoked_at: Option<i64>,
    /// RFC 5280 CRLReason code, when known.
    pub revocation_reason: Option<i64>,
    /// `crl`, `ocsp` or `acme` (twincert revoked it itself).
    pub revocation_source: Option<String>,
    /// The CRL number / OCSP response times that showed it, as JSON.
    pub revocation_evidence: Option<String>,
    /// Last status check, unix seconds.
    pub checked_at: Option<i64>,
    /// Where the last check looked: `crl`, `ocsp` or `none`.
    pub checked_source: Option<String>,
    /// Why the last check could not decide, if it could not.
    pub check_error: Option<String>,
    /// The ARI suggested window, unix seconds.
    pub ari_window_start: Option<i64>,
    /// See `ari_window_start`.
    pub ari_window_end: Option<i64>,
    /// The CA's explanation of the window, if it gave one.
    pub ari_explanation_url: Option<String>,
    /// Last ARI poll, unix seconds.
    pub ari_checked_at: Option<i64>,
}

/// The open order of a slot, as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrderSummary {
    /// Row id.
    pub id: String,
    /// The CA it is placed with.
    pub ca_id: String,
    /// pending / processing / valid / abandoned.
    pub state: OrderState,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the next attempt may start, unix seconds.
    pub next_attempt_at: i64,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// How many ACME orders were created for it (1 unless an attempt
    /// ended in a final CA error).
    pub acme_orders: i64,
    /// The emergency operation it re-provisions for, if any.
    pub operation_id: Option<String>,
    /// Why it holds back until `next_attempt_at`: it waits for a person
    /// (manual DNS-01) or out a hold-off; cleared by a failed attempt.
    pub held_reason: Option<String>,
}

/// One slot of a name.
#[derive(Debug, Clone)]
pub struct SlotRecord {
    /// Which slot.
    pub slot: Slot,
    /// The CA that serves this slot.
    pub ca_id: String,
    /// The current certificate.
    pub cert: Option<CertRecord>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// The open order, if any.
    pub order: Option<OrderSummary>,
    /// The operation that superseded its certificate (a swap away from its
    /// CA, a distrust, a compromise) until a new one replaces it: the slot
    /// is no real standby meanwhile.
    pub superseded_by: Option<String>,
    /// The operation whose re-provisioning of this slot has not started.
    pub reprovision_op: Option<String>,
    /// The ACME profile the current certificate's order asked for.
    pub acme_profile: Option<String>,
    /// Whether the CA's order object named that profile (`false`: it
    /// named none; `None`: no profile asked for).
    pub acme_profile_confirmed: Option<bool>,
}

/// A managed name with both slots.
#[derive(Debug, Clone)]
pub struct NameRecord {
    /// Its id.
    pub id: String,
    /// SANs.
    pub domains: Vec<String>,
    /// Validation method.
    pub challenge: ChallengeKind,
    /// Key algorithm.
    pub key_type: KeyType,
    /// The pinned DNS provider, if any.
    pub dns_provider: Option<String>,
    /// Primary CA id.
    pub primary_ca: String,
    /// Backup CA id.
    pub backup_ca: String,
    /// The active slot.
    pub active: Slot,
    /// Set when the issued pair failed the diversity check.
    pub diversity_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// ACME profile overrides: CA id → profile.
    pub acme_profiles: BTreeMap<String, String>,
    /// Primary then backup.
    pub slots: Vec<SlotRecord>,
}

impl NameRecord {
    /// The record of one slot.
    pub fn slot(&self, slot: Slot) -> Option<&SlotRecord> {
        self.slots.iter().find(|s| s.slot == slot)
    }
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Row id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: crate::domain::Role,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

pub(super) fn token(row: &QueryResult) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        role: parse(row, "role")?,
        created_at: get(row, "created_at")?,
        last_used_at: get(row, "last_used_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

/// A DNS-01 TXT record an order published.
#[derive(Debug, Clone)]
pub struct DnsRecord {
    /// Row id.
    pub id: String,
    /// The order that published it.
    pub order_id: String,
    /// The DNS provider it was published through.
    pub provider_id: String,
    /// Where (after CNAME following).
    pub fqdn: String,
    /// The TXT value.
    pub value: String,
    /// Unix seconds.
    pub created_at: i64,
}

pub(super) fn dns_record(row: &QueryResult) -> Result<DnsRecord, StoreError> {
    Ok(DnsRecord {
        id: get(row, "id")?,
        order_id: get(row, "order_id")?,
        provider_id: get(row, "provider_id")?,
        fqdn: get(row, "fqdn")?,
        value: get(row, "value")?,
        created_at: get(row, "created_at")?,
    })
}

/// A leased order with what the worker needs to carry it out.
#[derive(Debug, Clone)]
pub struct OrderJob {
    /// Row id.
    pub id: String,
    /// The name.
    pub name_id: String,
    /// The slot.
    pub slot: Slot,
    /// The CA to order from.
    pub ca_id: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Set once the ACME order exists: resume it instead of ordering again.
    pub acme_order_url: Option<String>,
    /// Set once the order's key exists: reuse it.
    pub private_key_id: Option<String>,
    /// SANs.
    pub domains: Vec<String>,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Validation method.
    pub challenge: ChallengeKind,
    /// The pinned DNS provider, if any.
    pub dns_provider: Option<String>,
    /// The name's ACME profile overrides: CA id → profile.
    pub acme_profiles: BTreeMap<String, String>,
}

fn parse<T: std::str::FromStr<Err = String>>(
    row: &QueryResult,
    col: &str,
) -> Result<T, StoreError> {
    let s: String = get(row, col)?;
    s.parse().map_err(StoreError::Db)
}

fn domains(row: &QueryResult) -> Result<Vec<String>, StoreError> {
    let s: String = get(row, "domains")?;
    serde_json::from_str(&s).map_err(|e| StoreError::Db(format!("domains: {e}")))
}

pub(super) fn order_summary(row: &QueryResult) -> Result<Option<OrderSummary>, StoreError> {
    let id: Option<String> = get(row, "order_id")?;
    let Some(id) = id else { return Ok(None) };
    let state: String = get(row, "order_state")?;
    Ok(Some(OrderSummary {
        id,
        ca_id: get(row, "order_ca")?,
        state: order_state(&state)?,
        attempts: get::<i32>(row, "attempts")
            .map(i64::from)
            .or_else(|_| get(row, "attempts"))?,
        next_attempt_at: get(row, "next_attempt_at")?,
        last_error: get(row, "order_error")?,
        acme_orders: get::<i32>(row, "acme_orders")
            .map(i64::from)
            .or_else(|_| get(row, "acme_orders"))?,
        operation_id: get(row, "order_operation")?,
        held_reason: get(row, "held_reason")?,
    }))
}

fn cert(row: &QueryResult) -> Result<Option<CertRecord>, StoreError> {
    let id: Option<String> = get(row, "cert_id")?;
    let Some(id) = id else { return Ok(None) };
    Ok(Some(CertRecord {
        id,
        ca_id: get(row, "cert_ca")?,
        serial: get(row, "serial")?,
        issuer: get(row, "issuer")?,
        root_id: get(row, "root_id")?,
        not_before: get(row, "not_before")?,
        not_after: get(row, "not_after")?,
        renew_after: get(row, "renew_after")?,
        spki_sha256: get(row, "spki_sha256")?,
        private_key_id: get(row, "private_key_id")?,
        created_at: get(row, "cert_created")?,
        status: CertStatusRecord {
            revoked_at: get(row, "revoked_at")?,
            revocation_reason: get::<Option<i32>>(row, "revocation_reason")
                .map(|v| v.map(i64::from))
                .or_else(|_| get(row, "revocation_reason"))?,
            revocation_source: get(row, "revocation_source")?,
            revocation_evidence: get(row, "revocation_evidence")?,
            checked_at: get(row, "status_checked_at")?,
            checked_source: get(row, "status_source")?,
            check_error: get(row, "status_error")?,
            ari_window_start: get(row, "ari_window_start")?,
            ari_window_end: get(row, "ari_window_end")?,
            ari_explanation_url: get(row, "ari_explanation_url")?,
            ari_checked_at: get(row, "ari_checked_at")?,
        },
    }))
}

/// Folds the rows of `NAME_SELECT` (one per slot, grouped by name) into
/// records, keeping the row order.
pub(super) fn names_from_rows(rows: &[QueryResult]) -> Result<Vec<NameRecord>, StoreError> {
    let mut out: Vec<NameRecord> = Vec::new();
    for row in rows {
        let id: String = get(row, "id")?;
        let slot = SlotRecord {
            slot: parse(row, "slot")?,
            ca_id: get(row, "slot_ca")?,
            cert: cert(row)?,
            last_error: get(row, "slot_error")?,
            order: order_summary(row)?,
            superseded_by: get(row, "superseded_by")?,
            reprovision_op: get(row, "reprovision_op")?,
            acme_profile: get(row, "cert_acme_profile")?,
            acme_profile_confirmed: get(row, "cert_acme_profile_confirmed")?,
        };
        match out.last_mut() {
            Some(last) if last.id == id => last.slots.push(slot),
            _ => out.push(NameRecord {
                id,
                domains: domains(row)?,
                challenge: parse(row, "challenge")?,
                key_type: parse(row, "key_type")?,
                dns_provider: get(row, "dns_provider")?,
                primary_ca: get(row, "primary_ca")?,
                backup_ca: get(row, "backup_ca")?,
                active: parse(row, "active_slot")?,
                diversity_error: get(row, "diversity_error")?,
                created_at: get(row, "created_at")?,
                updated_at: get(row, "updated_at")?,
                acme_profiles: acme_profiles(row)?,
                slots: vec![slot],
            }),
        }
    }
    for n in &mut out {
        n.slots.sort_by_key(|s| s.slot);
    }
    Ok(out)
}

pub(super) fn order_job(row: &QueryResult) -> Result<OrderJob, StoreError> {
    Ok(OrderJob {
        id: get(row, "id")?,
        name_id: get(row, "name_id")?,
        slot: parse(row, "slot")?,
        ca_id: get(row, "ca_id")?,
        attempts: get::<i32>(row, "attempts")
            .map(i64::from)
            .or_else(|_| get(row, "attempts"))?,
        acme_order_url: get(row, "acme_order_url")?,
        private_key_id: get(row, "private_key_id")?,
        domains: domains(row)?,
        key_type: parse(row, "key_type")?,
        challenge: parse(row, "challenge")?,
        dns_provider: get(row, "dns_provider")?,
        acme_profiles: acme_profiles(row)?,
    })
}

/// The name's `acme_profiles` column (JSON object; NULL: none).
fn acme_profiles(row: &QueryResult) -> Result<BTreeMap<String, String>, StoreError> {
    match get::<Option<String>>(row, "acme_profiles")? {
        None => Ok(BTreeMap::new()),
        Some(j) => serde_json::from_str(&j)
            .map_err(|e| StoreError::Db(format!("stored acme_profiles are unreadable: {e}"))),
    }
}
