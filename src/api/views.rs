//! The JSON shapes of API v1, built from store records. Never carries key
//! material: certificates are described by their facts, and the private
//! key id is skipped.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::domain::{NameState, Slot, SlotState};
use crate::policy::{self, SlotFacts};
use crate::store::{NameRecord, OrderSummary, SlotRecord};

/// One slot as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlotView {
    /// The CA of the certificate the slot holds (before its first
    /// certificate: the CA its order goes to). Where a pending order goes
    /// is `order.ca`, which differs while re-provisioning moves the slot.
    pub ca: String,
    /// issuing / valid / renewing / expired / failed / waiting.
    pub state: SlotState,
    /// Leaf serial (hex), when issued.
    pub serial: Option<String>,
    /// Issuer DN.
    pub issuer: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// RFC 3339: when renewal starts.
    pub renew_after: Option<String>,
    /// SubjectPublicKeyInfo SHA-256, hex.
    pub spki_sha256: Option<String>,
    /// The last failure, cleared by success.
    pub last_error: Option<String>,
    /// The open order, if any.
    pub order: Option<OrderView>,
    /// The certificate's standing at its CA (CRL/OCSP), when issued.
    pub revocation: Option<RevocationView>,
    /// The CA's ARI suggested renewal window, when it offers ARI.
    pub ari: Option<AriView>,
    /// Set while an emergency operation replaces this slot's certificate
    /// (a swap away from its CA, a distrust, a compromise): the slot is no
    /// real standby until the new certificate is in.
    pub reprovision: Option<ReprovisionView>,
    /// The ACME profile the current certificate was ordered with (none:
    /// the CA's default).
    pub acme_profile: Option<String>,
    /// Whether the CA's order object named that profile; `false`: the CA
    /// did not echo it (acme2certifier never does), so the certificate's
    /// lifetime is the only evidence. Absent when no profile was asked for.
    pub acme_profile_confirmed: Option<bool>,
}

/// How far an operation's replacement of a slot's certificate has got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReprovisionView {
    /// The operation (`GET /v1/operations/{id}`).
    pub operation: String,
    /// `queued` (the worker has not chosen a CA yet), `waiting` (its
    /// order holds back until `until`, see `reason`), `ordering` (its
    /// order is being carried out, see `order`) or `blocked` (no CA can
    /// take it; `reason` says what to configure).
    pub state: String,
    /// RFC 3339: when a `waiting` slot's order starts.
    pub until: Option<String>,
    /// Why it waits or is blocked.
    pub reason: Option<String>,
}

/// What the revocation checks know about a slot's certificate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevocationView {
    /// `good`, `revoked`, `undetermined` (the last check could not
    /// decide; see `check_error`), `no_source` (the certificate names no
    /// CRL or OCSP responder and its CA has no CRL configured) or
    /// `unchecked`.
    pub status: String,
    /// RFC 3339: when the CA revoked it.
    pub revoked_at: Option<String>,
    /// RFC 5280 CRLReason code.
    pub reason: Option<i64>,
    /// `crl`, `ocsp` or `acme` (twincert revoked it).
    pub source: Option<String>,
    /// The CRL number / OCSP times that showed the revocation.
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<serde_json::Value>,
    /// RFC 3339: last check.
    pub checked_at: Option<String>,
    /// Where the last check looked: `crl`, `ocsp`, `none`.
    pub checked_via: Option<String>,
    /// Why the last check could not decide.
    pub check_error: Option<String>,
    /// What the status means, for people; for `no_source`: "not checked:
    /// the CA publishes no revocation source" — short-lived certificates
    /// (Let's Encrypt's 6-day ones) carry neither a CRL distribution
    /// point nor an OCSP URL, by design, and that is no error.
    pub note: Option<String>,
}

/// Said of a certificate that names no CRL and no OCSP responder.
pub const NO_SOURCE_NOTE: &str = "not checked: the CA publishes no revocation source \
     (no CRL distribution point or OCSP URL in the certificate, no CRL configured for the CA); \
     an ARI window from the CA still triggers renewal";

/// An ARI suggested renewal window (RFC 9773).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AriView {
    /// RFC 3339.
    pub window_start: String,
    /// RFC 3339.
    pub window_end: String,
    /// The CA's explanation of the window.
    pub explanation_url: Option<String>,
    /// RFC 3339: last poll.
    pub checked_at: Option<String>,
}

/// An open order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// Order id.
    pub id: String,
    /// The CA it is placed with.
    pub ca: String,
    /// The emergency operation it re-provisions for, if any.
    pub operation: Option<String>,
    /// Why it holds back until `next_attempt_at` — for a person (manual
    /// DNS-01 records) or a hold-off (re-issuing from the CA swapped away
    /// from); null when it does not.
    pub held: Option<String>,
    /// pending / processing.
    pub state: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// RFC 3339.
    pub next_attempt_at: String,
    /// Last attempt's error.
    pub last_error: Option<String>,
    /// ACME orders created for it.
    pub acme_orders: i64,
}

/// A managed name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NameView {
    /// Its id.
    pub name: String,
    /// SANs.
    pub domains: Vec<String>,
    /// http-01 / dns-01.
    pub challenge: String,
    /// Key algorithm.
    pub key_type: String,
    /// The DNS provider pinned for DNS-01, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// [primary CA, backup CA]: each slot's `ca`.
    pub cas: [String; 2],
    /// The active slot.
    pub active: Slot,
    /// provisioning / ready / degraded / waiting.
    pub state: NameState,
    /// Set when the pair failed the diversity check.
    pub diversity_error: Option<String>,
    /// The primary slot.
    pub primary: SlotView,
    /// The backup slot.
    pub backup: SlotView,
    /// DNS-01 names only: the `_acme-challenge` CNAMEs the owner must create
    /// once, for domains in zones no configured DNS provider controls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns01_delegations: Vec<Delegation>,
    /// `dns-01-manual` names only: the TXT records a person must publish
    /// now, per slot with an open order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns01_manual_records: Vec<ManualRecord>,
    /// `dns-persist-01` names only (`GET /v1/names/{name}`): per CA of the
    /// name, the persistent `_validation-persist` TXT records that must
    /// stand — published by twincert through the zone's DNS provider when
    /// one controls it, else by the operator, once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_persist_records: Vec<PersistRecordView>,
    /// The latest CAA, delegation and provider preflight (`GET /v1/names/{name}`
    /// only; null until the first check, run within seconds of creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<crate::domain::PreflightReport>,
    /// ACME profile overrides given at creation: CA id → profile (absent:
    /// none; each CA's `acme_profile` applies).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub acme_profiles: std::collections::BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// One CNAME an owner must create so twincert can answer DNS-01 for a
/// domain it has no DNS key for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delegation {
    /// The record to create: `_acme-challenge.<domain>`.
    pub name: String,
    /// Its CNAME target, in a zone twincert controls (`null` when no
    /// `dns.delegation_zone` is configured: then any name in such a zone).
    pub cname_to: Option<String>,
}

/// A dns-persist-01 record (draft-ietf-acme-dns-persist-02) of one CA.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersistRecordView {
    /// The CA whose record it is.
    pub ca: String,
    /// Owner name: `_validation-persist.<domain>`.
    pub name: String,
    /// Always `TXT`.
    pub r#type: &'static str,
    /// The value; `null` until twincert has an ACME account at the CA
    /// (the account URL is part of it) or knows the CA's issuer domain
    /// name.
    pub value: Option<String>,
    /// Why `value` is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// A TXT record to publish by hand.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ManualRecord {
    /// For which slot's order.
    pub slot: Slot,
    /// Owner name.
    pub name: String,
    /// Always `TXT`.
    pub r#type: &'static str,
    /// The value.
    pub value: String,
}

/// What the API knows about DNS-01 delegation.
#[derive(Debug, Clone, Default)]
pub struct DelegationPolicy {
    /// Zones the configured DNS providers control.
    pub zones: Vec<String>,
    /// Ids of the configured DNS providers.
    pub provider_ids: Vec<String>,
    /// Where delegated records are placed (`dns.delegation_zone`).
    pub delegation_zone: Option<String>,
}

impl DelegationPolicy {
    /// The CNAMEs a DNS-01 name over `domains` needs.
    pub fn delegations(&self, domains: &[String]) -> Vec<Delegation> {
        let mut out: Vec<Delegation> = Vec::new();
        for d in domains {
            let base = d.trim_start_matches("*.");
            let name = format!("_acme-challenge.{base}");
            if crate::providers::dns::longest_zone(&self.zones, &name).is_some()
                || out.iter().any(|x| x.name == name)
            {
                continue;
            }
            let cname_to = self
                .delegation_zone
                .as_ref()
                .map(|z| format!("{}.{z}", base.replace('.', "-")));
            out.push(Delegation { name, cname_to });
        }
        out
    }
}

fn order_view(o: &OrderSummary) -> OrderView {
    OrderView {
        id: o.id.clone(),
        ca: o.ca_id.clone(),
        operation: o.operation_id.clone(),
        held: o.held_reason.clone(),
        state: o.state.as_str().to_string(),
        attempts: o.attempts,
        next_attempt_at: rfc3339(o.next_attempt_at),
        last_error: o.last_error.clone(),
        acme_orders: o.acme_orders,
    }
}

fn slot_view(s: Option<&SlotRecord>, ca: &str, now: i64) -> SlotView {
    let Some(s) = s else {
        return SlotView {
            ca: ca.to_string(),
            state: SlotState::Issuing,
            serial: None,
            issuer: None,
            not_before: None,
            not_after: None,
            renew_after: None,
            spki_sha256: None,
            last_error: None,
            order: None,
            revocation: None,
            ari: None,
            reprovision: None,
            acme_profile: None,
            acme_profile_confirmed: None,
        };
    };
    let facts = SlotFacts {
        current: s.cert.as_ref().map(|c| (c.not_before, c.not_after)),
        order_open: s.order.is_some(),
        last_attempt_failed: s.last_error.is_some(),
        waiting: s.order.as_ref().is_some_and(|o| o.held_reason.is_some()),
    };
    let c = s.cert.as_ref();
    SlotView {
        ca: c.map_or_else(|| s.ca_id.clone(), |c| c.ca_id.clone()),
        state: policy::slot_state(facts, now),
        serial: c.map(|c| c.serial.clone()),
        issuer: c.map(|c| c.issuer.clone()),
        not_before: c.map(|c| rfc3339(c.not_before)),
        not_after: c.map(|c| rfc3339(c.not_after)),
        renew_after: c.map(|c| rfc3339(c.renew_after)),
        spki_sha256: c.map(|c| c.spki_sha256.clone()),
        last_error: s.last_error.clone(),
        order: s.order.as_ref().map(order_view),
        revocation: c.map(|c| revocation_view(&c.status)),
        ari: c.and_then(|c| {
            Some(AriView {
                window_start: rfc3339(c.status.ari_window_start?),
                window_end: rfc3339(c.status.ari_window_end?),
                explanation_url: c.status.ari_explanation_url.clone(),
                checked_at: c.status.ari_checked_at.map(rfc3339),
            })
        }),
        reprovision: reprovision_view(s, now),
        acme_profile: c.and(s.acme_profile.clone()),
        acme_profile_confirmed: c.and(s.acme_profile_confirmed),
    }
}

fn reprovision_view(s: &SlotRecord, now: i64) -> Option<ReprovisionView> {
    let operation = s.reprovision_op.clone().or(s.superseded_by.clone())?;
    let view = |state: &str, until: Option<i64>, reason: Option<String>| ReprovisionView {
        operation: operation.clone(),
        state: state.into(),
        until: until.map(rfc3339),
        reason,
    };
    if s.reprovision_op.is_some() {
        return Some(view("queued", None, None));
    }
    match s.order.as_ref() {
        Some(o) if o.operation_id.as_deref() == Some(operation.as_str()) => {
            if o.held_reason.is_some() && o.attempts == 0 && o.next_attempt_at > now {
                Some(view(
                    "waiting",
                    Some(o.next_attempt_at),
                    o.held_reason.clone(),
                ))
            } else {
                Some(view("ordering", None, None))
            }
        }
        _ => Some(view("blocked", None, s.last_error.clone())),
    }
}

fn revocation_view(s: &crate::store::CertStatusRecord) -> RevocationView {
    let status = if s.revoked_at.is_some() {
        "revoked"
    } else if s.checked_at.is_none() {
        "unchecked"
    } else if s.check_error.is_some() {
        "undetermined"
    } else if s.checked_source.as_deref() == Some("none") {
        "no_source"
    } else {
        "good"
    };
    RevocationView {
        status: status.into(),
        revoked_at: s.revoked_at.map(rfc3339),
        reason: s.revocation_reason,
        source: s.revocation_source.clone(),
        evidence: s
            .revocation_evidence
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok()),
        checked_at: s.checked_at.map(rfc3339),
        checked_via: s.checked_source.clone(),
        check_error: s.check_error.clone(),
        note: (status == "no_source").then(|| NO_SOURCE_NOTE.to_string()),
    }
}

/// Builds the API view of a name at `now`.
pub fn name_view(n: &NameRecord, now: i64, dns: &DelegationPolicy) -> NameView {
    let primary = slot_view(n.slot(Slot::Primary), &n.primary_ca, now);
    let backup = slot_view(n.slot(Slot::Backup), &n.backup_ca, now);
    let superseded = n.slots.iter().any(|s| s.superseded_by.is_some());
    let state = policy::name_state(
        primary.state,
        backup.state,
        n.diversity_error.is_none(),
        superseded,
    );
    NameView {
        name: n.id.clone(),
        domains: n.domains.clone(),
        challenge: n.challenge.as_str().to_string(),
        key_type: n.key_type.as_str().to_string(),
        dns_provider: n.dns_provider.clone(),
        cas: [primary.ca.clone(), backup.ca.clone()],
        active: n.active,
        state,
        diversity_error: n.diversity_error.clone(),
        primary,
        backup,
        dns01_delegations: if n.challenge == crate::domain::ChallengeKind::Dns01 {
            dns.delegations(&n.domains)
        } else {
            Vec::new()
        },
        dns01_manual_records: Vec::new(),
        dns_persist_records: Vec::new(),
        preflight: None,
        acme_profiles: n.acme_profiles.clone(),
        created_at: rfc3339(n.created_at),
        updated_at: rfc3339(n.updated_at),
    }
}

/// A configured CA as `GET /v1/cas` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaView {
    /// Configured id.
    pub id: String,
    /// The profile's human name.
    pub name: String,
    /// The profile id (`providers/ca/<profile>.toml`).
    pub profile: String,
    /// ACME directory URL.
    pub directory_url: String,
    /// Root family; two CAs of one group are never paired.
    pub root_group: String,
    /// A staging/test CA.
    pub staging: bool,
    /// Never chosen for new slots.
    pub distrusted: bool,
    /// Names whose active certificate slot is on this CA.
    pub active_names: i64,
    /// Slots (primary or backup) this CA serves.
    pub slots: i64,
    /// Configured pacing: new ACME orders per hour at most.
    pub orders_per_hour: u32,
    /// Configured pacing: orders in flight at once at most.
    pub concurrency: u32,
    /// Whether the CA offers dns-persist-01 (its `[[cas]]` entry's or
    /// profile's `dns_persist_01`); names using that challenge need it.
    pub dns_persist_01: bool,
    /// `persistUntil` (Unix seconds) written into this CA's dns-persist-01
    /// records; absent: they do not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_persist_until: Option<i64>,
    /// The CA's configured CAA issuer domain names (the dns-persist-01
    /// record's issuer until the CA's own challenge names one).
    #[serde(skip)]
    pub caa_identities: Vec<String>,
}
