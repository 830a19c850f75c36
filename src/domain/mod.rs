//! The vocabulary of twincert: slots, key types, challenge kinds, states,
//! validated names and the [`NewName`] built from them, IP networks
//! ([`Cidr`]), mail addresses, and the ACME request statistics the CA
//! client records and the API shows. Raw input and validated input are
//! different types: a [`DnsName`] or a [`ManagedNameId`] can only exist
//! once it passed the checks in `names`, so code below the API never
//! re-validates.
//!
//! This module does no I/O, knows nothing about SQL or HTTP, and imports no
//! other module of the crate: everything else may use it.

mod acme_profile;
mod acme_requests;
mod drill;
mod mail;
mod names;
mod net;
mod new_name;
mod preflight;
mod readiness;

pub use acme_profile::{MAX_PROFILE_LEN, check_acme_profile_name};
pub use acme_requests::{ACME_LATENCY_BUCKETS, AcmeRequestStats};
pub use drill::{DrillFailure, DrillMode, DrillReport, DrillRequest, DrillSample, DrillStage};
pub use mail::{MailAddressError, check_mail_address};
pub use names::{DnsName, ManagedNameId, NameError};
pub use net::Cidr;
pub use new_name::NewName;
pub use preflight::{PREFLIGHT_CHECKS, PreflightCheck, PreflightReport, PreflightStatus};
pub use readiness::{CaReadiness, ReadinessReport};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two certificate positions every managed name has.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// The slot that is active when a name is created.
    Primary,
    /// The standby slot at creation; a swap makes it active.
    Backup,
}

impl Slot {
    /// Both slots, primary first.
    pub const ALL: [Slot; 2] = [Slot::Primary, Slot::Backup];

    /// The stable lower-case spelling used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Primary => "primary",
            Slot::Backup => "backup",
        }
    }

    /// The other slot of the same name.
    pub fn other(self) -> Slot {
        match self {
            Slot::Primary => Slot::Backup,
            Slot::Backup => Slot::Primary,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary" => Ok(Slot::Primary),
            "backup" => Ok(Slot::Backup),
            other => Err(format!(
                "unknown slot '{other}': expected 'primary' or 'backup'"
            )),
        }
    }
}

/// The private-key algorithm of a name's certificates. Every issuance gets a
/// fresh key of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: the default, small and fast.
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// RSA 2048 for clients that cannot do ECDSA.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 3072.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
}

impl KeyType {
    /// Every supported key type.
    pub const ALL: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
    ];

    /// The stable spelling used in the API, config and store.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown key type '{s}': expected one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072"
                )
            })
    }
}

/// How control of a name's domains is proven to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ChallengeKind {
    /// RFC 8555 §8.3: a token served over HTTP on port 80 of every domain.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// RFC 8555 §8.4: a TXT record at `_acme-challenge.<domain>`.
    #[serde(rename = "dns-01")]
    Dns01,
    /// DNS-01 where a person publishes the TXT records the API lists;
    /// twincert polls the authoritative servers until they appear.
    #[serde(rename = "dns-01-manual")]
    Dns01Manual,
    /// draft-ietf-acme-dns-persist: a persistent TXT record at
    /// `_validation-persist.<domain>` binding the domain to one CA and one
    /// ACME account; published once per CA, never removed by twincert.
    #[serde(rename = "dns-persist-01")]
    DnsPersist01,
}

impl ChallengeKind {
    /// The stable spelling used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::Dns01Manual => "dns-01-manual",
            ChallengeKind::DnsPersist01 => "dns-persist-01",
        }
    }

    /// Whether the challenge is DNS-01 (automatic or manual).
    pub fn is_dns(self) -> bool {
        matches!(self, ChallengeKind::Dns01 | ChallengeKind::Dns01Manual)
    }
}

impl FromStr for ChallengeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http-01" => Ok(ChallengeKind::Http01),
            "dns-01" => Ok(ChallengeKind::Dns01),
            "dns-01-manual" => Ok(ChallengeKind::Dns01Manual),
            "dns-persist-01" => Ok(ChallengeKind::DnsPersist01),
            other => Err(format!(
                "unknown challenge '{other}': expected 'http-01', 'dns-01', 'dns-01-manual' or \
                 'dns-persist-01'"
            )),
        }
    }
}

/// Where an order (one ACME issuance attempt for one slot) stands.
///
/// `Pending`, `Processing` are transient; `Valid` and `Abandoned` are final.
/// A failed attempt does not end the order: it goes back to `Pending` with a
/// later `next_attempt_at` and its `last_error` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderState {
    /// Waiting for a worker (first attempt or a retry after backoff).
    Pending,
    /// Leased by a worker that is talking to the CA.
    Processing,
    /// The certificate is issued and stored.
    Valid,
    /// The name or slot went away; the order will never be worked again.
    Abandoned,
}

impl OrderState {
    /// The stable spelling used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Processing => "processing",
            OrderState::Valid => "valid",
            OrderState::Abandoned => "abandoned",
        }
    }
}

impl FromStr for OrderState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(OrderState::Pending),
            "processing" => Ok(OrderState::Processing),
            "valid" => Ok(OrderState::Valid),
            "abandoned" => Ok(OrderState::Abandoned),
            other => Err(format!("unknown order state '{other}'")),
        }
    }
}

/// The state of one slot as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// No certificate yet; an order is under way.
    Issuing,
    /// A current, unexpired certificate is stored.
    Valid,
    /// A certificate is stored and a renewal order is under way.
    Renewing,
    /// The stored certificate has expired.
    Expired,
    /// No certificate and the last attempt failed; retries continue.
    Failed,
    /// No certificate yet and its order waits for a person (the records of
    /// manual DNS-01): not a failure until the wait expires.
    Waiting,
}

/// The overall state of a managed name as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NameState {
    /// Not both slots hold a certificate yet and nothing is known to be wrong.
    Provisioning,
    /// Both slots hold valid certificates that pass the diversity check.
    Ready,
    /// Something needs attention: a slot failed, expired, or the pair is not
    /// diverse.
    Degraded,
    /// Nothing is wrong, but a slot without a certificate waits for a
    /// person (manual DNS-01 records; see its `order.held`) — neither a
    /// failure nor an outage until the wait expires.
    Waiting,
}

impl NameState {
    /// The stable spelling used in the API and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            NameState::Provisioning => "provisioning",
            NameState::Ready => "ready",
            NameState::Degraded => "degraded",
            NameState::Waiting => "waiting",
        }
    }
}

/// Identifies a configured CA (a `[[cas]]` entry's `id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CaId(pub String);

impl CaId {
    /// The id as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a certificate key's DER SubjectPublicKeyInfo, lower-case hex.
/// Two slots with the same fingerprint share a key, which invariant 2
/// forbids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyFingerprint(pub String);

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a bearer token may do (DESIGN.md "REST API v1"). Ordered: each role
/// includes the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read names, certificates and events; never keys.
    Viewer,
    /// Viewer, plus read the private key of a certificate (audited).
    Deployer,
    /// Manage names, swap, report compromise.
    Operator,
    /// Everything: CAs, distrust, tokens.
    Admin,
}

impl Role {
    /// The stable spelling used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}': expected viewer, deployer, operator or admin"
            )),
        }
    }
}
