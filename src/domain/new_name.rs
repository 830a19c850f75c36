//! A managed name to create, as validated input: what the API accepted and
//! the store records, carried as the domain's types so no layer below the
//! API parses it again.

use super::{CaId, ChallengeKind, DnsName, KeyType, ManagedNameId};

/// A name to create with its two slots. Built by the API from a request
/// once every field has passed its check and policy chose the CA pair.
/// The two CAs are meant to differ; the store's schema refuses a name
/// whose slots share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewName {
    /// The managed name's id (its API path segment).
    pub id: ManagedNameId,
    /// The SANs, first is the common name; no duplicates.
    pub domains: Vec<DnsName>,
    /// How control of the names is proven.
    pub challenge: ChallengeKind,
    /// Key algorithm for both slots.
    pub key_type: KeyType,
    /// CA of the primary slot.
    pub primary_ca: CaId,
    /// CA of the backup slot.
    pub backup_ca: CaId,
    /// The DNS provider DNS-01 records must go through (else: by zone); a
    /// configured provider id.
    pub dns_provider: Option<String>,
    /// ACME profile overrides for this name: CA id → profile (one of its
    /// two CAs; checked against what the CA offers).
    pub acme_profiles: std::collections::BTreeMap<String, String>,
}
