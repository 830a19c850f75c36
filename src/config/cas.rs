//! The `[[cas]]` entries (a CA profile plus this deployment's directory
//! URL, trust roots, account contact, External Account Binding and pacing)
//! and the `[policy]` section (CA preference, renewal point, default key
//! type). At least two CAs: every name gets certificates from two.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Missing, invalid, resolve};
use crate::domain::KeyType;
use crate::providers::{self, CaProfile};

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    // Optional here so that a missing one is reported with the rest.
    id: Option<String>,
    profile: Option<String>,
    directory_url: Option<String>,
    trust_roots_file: Option<PathBuf>,
    root_group: Option<String>,
    contact: Option<Vec<String>>,
    eab_kid: Option<String>,
    eab_hmac_file: Option<PathBuf>,
    eab_hmac: Option<String>,
    orders_per_hour: Option<u32>,
    concurrency: Option<u32>,
    crl_urls: Option<Vec<String>>,
    caa_identities: Option<Vec<String>>,
    dns_persist_01: Option<bool>,
    dns_persist_until: Option<i64>,
    acme_profile: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    ca_preference: Option<Vec<String>>,
    renew_at_fraction: Option<f64>,
    default_key_type: Option<KeyType>,
    reprovision_same_ca_after_seconds: Option<i64>,
}

/// One CA twincert orders from: a profile plus this deployment's overrides.
#[derive(Clone)]
pub struct CaConfig {
    /// Configured id (unique; what the API shows and names refer to).
    pub id: String,
    /// The profile it is based on.
    pub profile: CaProfile,
    /// Effective directory URL.
    pub directory_url: String,
    /// Extra PEM roots to trust for this CA's HTTPS (local CAs).
    pub trust_roots_pem: Option<String>,
    /// Effective root group (see [`CaProfile::root_group`]).
    pub root_group: String,
    /// Account contact URLs (`mailto:`).
    pub contact: Vec<String>,
    /// External Account Binding: key id and the base64url HMAC key.
    pub eab: Option<(String, String)>,
    /// Effective pacing.
    pub orders_per_hour: u32,
    /// Effective concurrency.
    pub concurrency: u32,
    /// CRLs to check besides those named in the certificates (CAs whose
    /// certificates carry no CRL distribution point, e.g. Let's Encrypt's
    /// sharded CRLs listed in CCADB).
    pub crl_urls: Vec<String>,
    /// The CA's CAA issuer domain names (RFC 8659 §4.2), lower-case: the
    /// entry's `caa_identities`, else its profile's. Empty: unknown, and
    /// preflight reports that wherever a CAA record set applies.
    pub caa_identities: Vec<String>,
    /// Whether the CA offers dns-persist-01 (draft-ietf-acme-dns-persist):
    /// the entry's `dns_persist_01`, else its profile's. Names using that
    /// challenge are refused a CA without it.
    pub dns_persist_01: bool,
    /// `persistUntil` (Unix seconds) written into this CA's dns-persist-01
    /// records; none: the records do not expire.
    pub dns_persist_until: Option<i64>,
    /// The ACME profile (draft-ietf-acme-profiles) to ask this CA for in
    /// every new order, unless a name overrides it; `None`: the CA's
    /// default. Checked against the directory's `meta.profiles` at start.
    pub acme_profile: Option<String>,
}

impl std::fmt::Debug for CaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaConfig")
            .field("id", &self.id)
            .field("profile", &self.profile.id)
            .field("directory_url", &self.directory_url)
            .field("root_group", &self.root_group)
            .field("eab_kid", &self.eab.as_ref().map(|(kid, _)| kid))
            .finish_non_exhaustive()
    }
}

/// How long re-provisioning waits before re-issuing from the CA a swap
/// moved away from, when no other CA is eligible (15 minutes: a CA in
/// mid-incident is not hammered, and redundancy comes back the same hour).
pub const DEFAULT_SAME_CA_HOLD_OFF: i64 = 900;

/// `[policy]`, validated against the configured CAs.
pub(super) struct Policy {
    pub ca_preference: Vec<String>,
    pub renew_at_fraction: f64,
    pub default_key_type: KeyType,
    pub reprovision_same_ca_after_seconds: i64,
}

/// The CAs by id, each with its profile resolved; refuses fewer than two.
pub(super) fn validate_cas(
    raw: &[RawCa],
    providers_dir: Option<PathBuf>,
    base: &Path,
    credentials: bool,
) -> Result<BTreeMap<String, CaConfig>, ConfigError> {
    let profiles = providers::load(providers_dir.map(|p| resolve(base, p)).as_deref())?;
    let missing = missing_settings(raw, &profiles);
    if !missing.is_empty() {
        return Err(ConfigError::Missing(missing));
    }
    let mut cas = BTreeMap::new();
    for (i, ca) in raw.iter().enumerate() {
        let key = |k: &str| format!("cas[{i}].{k}");
        // Present: `missing_settings` found nothing missing.
        let (Some(id), Some(profile_id)) = (&ca.id, &ca.profile) else {
            continue;
        };
        let ca_id = id.clone();
        if crate::domain::ManagedNameId::parse(id).is_err() {
            return Err(invalid(
                &key("id"),
                id,
                "must be lower-case letters, digits, '.', '_' or '-'",
            ));
        }
        if cas.contains_key(id) {
            return Err(invalid(&key("id"), id, "is used by two CA entries"));
        }
        let profile = profiles.get(profile_id).cloned().ok_or_else(|| {
            invalid(
                &key("profile"),
                profile_id,
                format!(
                    "no such profile; known: {}",
                    profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let (Some(directory_url), Some(root_group)) = (
            ca.directory_url
                .clone()
                .or_else(|| profile.directory_url.clone()),
            ca.root_group.clone().or_else(|| profile.root_group.clone()),
        ) else {
            continue; // reported by `missing_settings`
        };
        match url::Url::parse(&directory_url) {
            Ok(u) if u.scheme() == "https" => {}
            _ => {
                return Err(invalid(
                    &key("directory_url"),
                    &directory_url,
                    "must be an https:// URL (RFC 8555 §6.1)",
                ));
            }
        }
        let trust_roots_pem = match &ca.trust_roots_file {
            Some(p) => {
                let p = resolve(base, p.clone());
                let pem = std::fs::read_to_string(&p).map_err(|e| {
                    invalid(
                        &key("trust_roots_file"),
                        p.display(),
                        format!("cannot read: {e}"),
                    )
                })?;
                if !pem.contains("BEGIN CERTIFICATE") {
                    return Err(invalid(
                        &key("trust_roots_file"),
                        p.display(),
                        "contains no PEM certificate",
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        let hmac = match (&ca.eab_hmac, &ca.eab_hmac_file) {
            (Some(h), _) => Some(h.trim().to_string()),
            (None, Some(_)) if !credentials => Some(String::new()),
            (None, Some(p)) => {
                let p = resolve(base, p.clone());
                Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| {
                            invalid(
                                &key("eab_hmac_file"),
                                p.display(),
                                format!("cannot read: {e}"),
                            )
                        })?
                        .trim()
                        .to_string(),
                )
            }
            (None, None) => None,
        };
        let eab = match (&ca.eab_kid, hmac) {
            (Some(kid), Some(hmac)) => Some((kid.clone(), hmac)),
            (None, None) => None,
            (Some(kid), None) => {
                return Err(invalid(
                    &key("eab_kid"),
                    kid,
                    "needs eab_hmac_file (or TWINCERT_CA_<ID>_EAB_HMAC)",
                ));
            }
            (None, Some(_)) => return Err(invalid(&key("eab_hmac"), "(secret)", "needs eab_kid")),
        };
        for c in ca.contact.iter().flatten() {
            if !c.starts_with("mailto:") {
                return Err(invalid(&key("contact"), c, "contacts must be mailto: URLs"));
            }
        }
        let orders_per_hour = ca
            .orders_per_hour
            .unwrap_or(profile.rate_limits.orders_per_hour);
        let concurrency = ca.concurrency.unwrap_or(profile.rate_limits.concurrency);
        if orders_per_hour == 0 || concurrency == 0 {
            return Err(invalid(
                &key("orders_per_hour"),
                orders_per_hour,
                "pacing values must be at least 1",
            ));
        }
        let crl_urls = ca.crl_urls.clone().unwrap_or_default();
        for u in &crl_urls {
            match url::Url::parse(u) {
                Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
                _ => {
                    return Err(invalid(
                        &key("crl_urls"),
                        u,
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        let caa_identities: Vec<String> = ca
            .caa_identities
            .clone()
            .unwrap_or_else(|| profile.caa_identities.clone())
            .iter()
            .map(|i| i.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        for i in &caa_identities {
            let ok = !i.is_empty()
                && i.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(invalid(
                    &key("caa_identities"),
                    i,
                    "must be issuer domain names such as \"letsencrypt.org\" (RFC 8659 §4.2)",
                ));
            }
        }
        let dns_persist_01 = ca.dns_persist_01.unwrap_or(profile.dns_persist_01);
        if let Some(t) = ca.dns_persist_until {
            if !dns_persist_01 {
                return Err(invalid(
                    &key("dns_persist_until"),
                    t,
                    "only applies to a CA that offers dns-persist-01: set dns_persist_01 = true",
                ));
            }
            if t <= 0 {
                return Err(invalid(
                    &key("dns_persist_until"),
                    t,
                    "must be a Unix time in seconds, such as 1830297600 (2028-01-01)",
                ));
            }
        }
        let acme_profile = match &ca.acme_profile {
            None => None,
            Some(p) => Some(
                crate::domain::check_acme_profile_name(p)
                    .map_err(|why| invalid(&key("acme_profile"), p, why))?
                    .to_string(),
            ),
        };
        cas.insert(
            ca_id.clone(),
            CaConfig {
                acme_profile,
                dns_persist_01,
                dns_persist_until: ca.dns_persist_until,
                caa_identities,
                crl_urls,
                id: ca_id,
                root_group,
                directory_url,
                trust_roots_pem,
                contact: ca.contact.clone().unwrap_or_default(),
                eab,
                orders_per_hour,
                concurrency,
                profile,
            },
        );
    }
    if cas.len() < 2 {
        return Err(invalid(
            "cas",
            format!("{} entries", cas.len()),
            "at least two CAs are needed: every name gets certificates from two different CAs",
        ));
    }
    Ok(cas)
}

/// Every setting of the `[[cas]]` entries that must be present and is not,
/// with what to set: an `id`; a `profile`; a `directory_url` and a
/// `root_group` where the profile has none (the `generic` profile, for a
/// private ACME server); `eab_kid` and its HMAC where the profile requires
/// External Account Binding. All of them at once, so writing the entry
/// for an internal CA takes one attempt, not one per field.
fn missing_settings(raw: &[RawCa], profiles: &BTreeMap<String, CaProfile>) -> Vec<Missing> {
    let mut out = Vec::new();
    for (i, ca) in raw.iter().enumerate() {
        // "CA 'internal': …", so an entry is found by its id, not only by
        // its place in the file.
        let who = ca
            .id
            .as_deref()
            .map_or(String::new(), |id| format!("CA '{id}': "));
        let mut miss = |k: &str, fix: String| {
            out.push(Missing {
                key: format!("cas[{i}].{k}"),
                fix: format!("{who}{fix}"),
            })
        };
        if ca.id.is_none() {
            miss(
                "id",
                "set id = \"<a name for this CA>\" (lower-case; names and the API refer to it)"
                    .into(),
            );
        }
        let Some(profile_id) = &ca.profile else {
            miss(
                "profile",
                format!(
                    "set profile = \"generic\" for a private ACME server, or one of: {}",
                    profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            continue;
        };
        // An unknown profile is a wrong value, reported by the validation.
        let Some(profile) = profiles.get(profile_id) else {
            continue;
        };
        if ca.directory_url.is_none() && profile.directory_url.is_none() {
            miss(
                "directory_url",
                format!(
                    "profile '{profile_id}' names no ACME server; set directory_url = \
                     \"https://<your ACME server>/directory\""
                ),
            );
        }
        if ca.root_group.is_none() && profile.root_group.is_none() {
            miss(
                "root_group",
                format!(
                    "profile '{profile_id}' cannot know which root the CA chains to; set \
                     root_group = \"<its root's name>\" (CAs that share a root share \
                     a group and are never paired)"
                ),
            );
        }
        if profile.eab_required && ca.eab_kid.is_none() {
            miss(
                "eab_kid",
                format!(
                    "profile '{profile_id}' requires External Account Binding; set eab_kid = \
                     \"<key id>\" and eab_hmac_file = \"<file with the HMAC key>\" \
                     (or TWINCERT_CA_<ID>_EAB_HMAC)"
                ),
            );
        }
    }
    out
}

/// `[policy]`; the preference defaults to the order of the `[[cas]]`
/// entries.
pub(super) fn validate_policy(
    raw: RawPolicy,
    raw_cas: &[RawCa],
    cas: &BTreeMap<String, CaConfig>,
) -> Result<Policy, ConfigError> {
    let ca_preference = raw
        .ca_preference
        .unwrap_or_else(|| raw_cas.iter().filter_map(|c| c.id.clone()).collect());
    let mut seen = BTreeSet::new();
    for id in &ca_preference {
        if !cas.contains_key(id) {
            return Err(invalid(
                "policy.ca_preference",
                id,
                "is not a configured CA id",
            ));
        }
        if !seen.insert(id) {
            return Err(invalid("policy.ca_preference", id, "is listed twice"));
        }
    }
    let renew_at_fraction = raw.renew_at_fraction.unwrap_or(2.0 / 3.0);
    if !(0.05..=0.95).contains(&renew_at_fraction) {
        return Err(invalid(
            "policy.renew_at_fraction",
            renew_at_fraction,
            "must be between 0.05 and 0.95",
        ));
    }
    let hold_off = raw
        .reprovision_same_ca_after_seconds
        .unwrap_or(DEFAULT_SAME_CA_HOLD_OFF);
    if !(0..=30 * 86_400).contains(&hold_off) {
        return Err(invalid(
            "policy.reprovision_same_ca_after_seconds",
            hold_off,
            "must be between 0 and 2592000 (30 days)",
        ));
    }
    Ok(Policy {
        ca_preference,
        renew_at_fraction,
        default_key_type: raw.default_key_type.unwrap_or_default(),
        reprovision_same_ca_after_seconds: hold_off,
    })
}
