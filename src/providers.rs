//! CA profiles: what twincert knows about each ACME CA it can plug into
//! (directory URL, EAB need, key types, root family, published limits).
//! The profiles live in `providers/ca/*.toml`; the ones in the repository
//! are compiled in so the binary works from any directory, and a configured
//! `providers_dir` can add or replace profiles.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::domain::KeyType;

pub mod dns;

/// One CA profile, as in `providers/ca/<id>.toml`. Every field has a
/// default, so a profile says only what it knows; `docs/configuration.md`
/// ("CA profiles") lists them. A profile without a `directory_url` or a
/// `root_group` (the `generic` one, for a private ACME server) leaves them
/// to each `[[cas]]` entry that uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaProfile {
    /// Equals the file stem; config entries refer to it. Default: the stem.
    #[serde(default)]
    pub id: String,
    /// Human name. Default: the id.
    #[serde(default)]
    pub name: String,
    /// The ACME directory URL (RFC 8555 §7.1.1); none for a profile of no
    /// particular CA.
    #[serde(default)]
    pub directory_url: Option<String>,
    /// A staging or test endpoint whose certificates no browser trusts.
    #[serde(default)]
    pub staging: bool,
    /// Whether account creation needs External Account Binding
    /// (RFC 8555 §7.3.4).
    #[serde(default)]
    pub eab_required: bool,
    /// Certificate key types the CA accepts. Default: all twincert makes.
    #[serde(default = "all_key_types")]
    pub key_types: Vec<KeyType>,
    /// CAs with the same root group chain to the same root (or a
    /// cross-signed family); policy never pairs two of them. None for a
    /// profile of no particular CA.
    #[serde(default)]
    pub root_group: Option<String>,
    /// Typical lifetime of issued certificates. Default: 90.
    #[serde(default = "ninety_days")]
    pub default_validity_days: u32,
    /// Whether the CA offers ARI (RFC 9773).
    #[serde(default)]
    pub ari: bool,
    /// CAA issuer domain names (RFC 8659).
    #[serde(default)]
    pub caa_identities: Vec<String>,
    /// Whether the CA offers dns-persist-01 (draft-ietf-acme-dns-persist);
    /// a `[[cas]]` entry's `dns_persist_01` overrides it.
    #[serde(default)]
    pub dns_persist_01: bool,
    /// Pacing derived from the CA's published limits.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Operator notes.
    #[serde(default)]
    pub notes: Notes,
}

fn all_key_types() -> Vec<KeyType> {
    KeyType::ALL.to_vec()
}

fn ninety_days() -> u32 {
    90
}

/// How fast twincert may order from one CA. The defaults are modest, for a
/// CA whose limits are not known; a `[[cas]]` entry overrides both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// New orders per hour per account that twincert stays under.
    /// Default: 300.
    #[serde(default = "default_orders_per_hour")]
    pub orders_per_hour: u32,
    /// Orders in flight at once against this CA. Default: 10.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// The CA's published limits, quoted, with their source.
    #[serde(default)]
    pub published: String,
}

fn default_orders_per_hour() -> u32 {
    300
}

fn default_concurrency() -> u32 {
    10
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            orders_per_hour: default_orders_per_hour(),
            concurrency: default_concurrency(),
            published: String::new(),
        }
    }
}

/// Free-form operator notes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notes {
    /// The text.
    #[serde(default)]
    pub text: String,
}

const BUILT_IN: &[(&str, &str)] = &[
    ("actalis", include_str!("../providers/ca/actalis.toml")),
    ("google", include_str!("../providers/ca/google.toml")),
    (
        "google-staging",
        include_str!("../providers/ca/google-staging.toml"),
    ),
    (
        "letsencrypt",
        include_str!("../providers/ca/letsencrypt.toml"),
    ),
    (
        "letsencrypt-staging",
        include_str!("../providers/ca/letsencrypt-staging.toml"),
    ),
    ("generic", include_str!("../providers/ca/generic.toml")),
    ("pebble", include_str!("../providers/ca/pebble.toml")),
    ("sslcom", include_str!("../providers/ca/sslcom.toml")),
    ("zerossl", include_str!("../providers/ca/zerossl.toml")),
];

/// Why profiles could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("CA profile {file}: {reason}")]
pub struct ProfileError {
    /// Which file or built-in profile.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

fn parse(file: &str, stem: &str, text: &str) -> Result<CaProfile, ProfileError> {
    let mut profile: CaProfile = toml::from_str(text).map_err(|e| ProfileError {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    if profile.id.is_empty() {
        profile.id = stem.to_string();
    }
    if profile.name.is_empty() {
        profile.name = profile.id.clone();
    }
    if profile.id != stem {
        return Err(ProfileError {
            file: file.to_string(),
            reason: format!("id '{}' does not match the file name '{stem}'", profile.id),
        });
    }
    Ok(profile)
}

/// The built-in profiles, plus those in `dir` (which win on equal id).
pub fn load(dir: Option<&Path>) -> Result<BTreeMap<String, CaProfile>, ProfileError> {
    let mut out = BTreeMap::new();
    for (stem, text) in BUILT_IN {
        out.insert(
            stem.to_string(),
            parse(&format!("built-in {stem}.toml"), stem, text)?,
        );
    }
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).map_err(|e| ProfileError {
            file: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).map_err(|e| ProfileError {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            out.insert(
                stem.to_string(),
                parse(&path.display().to_string(), stem, &text)?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse_and_are_distinct() {
        let all = load(None).expect("built-in profiles");
        assert_eq!(all.len(), BUILT_IN.len());
        assert_eq!(
            all["letsencrypt"].root_group,
            all["letsencrypt-staging"].root_group
        );
        assert_ne!(all["letsencrypt"].root_group, all["google"].root_group);
        assert!(all["zerossl"].eab_required);
        assert!(!all["letsencrypt"].eab_required);
        for p in all.values().filter(|p| p.id != "generic") {
            let url = p.directory_url.as_deref().unwrap_or_default();
            assert!(url.starts_with("https://"), "{}", p.id);
            assert!(p.root_group.is_some(), "{}", p.id);
            assert!(!p.key_types.is_empty(), "{}", p.id);
        }
        // The generic profile knows no CA: each entry names both.
        let g = &all["generic"];
        assert!(g.directory_url.is_none() && g.root_group.is_none());
        assert_eq!(g.key_types, KeyType::ALL);
        // It lists every field with its default: an empty profile agrees.
        let empty = parse("generic.toml", "generic", "").expect("empty profile");
        assert_eq!(
            (g.staging, g.eab_required, g.ari, g.default_validity_days),
            (
                empty.staging,
                empty.eab_required,
                empty.ari,
                empty.default_validity_days
            )
        );
        assert_eq!(g.key_types, empty.key_types);
        assert_eq!(g.caa_identities, empty.caa_identities);
        assert_eq!(
            (g.rate_limits.orders_per_hour, g.rate_limits.concurrency),
            (
                empty.rate_limits.orders_per_hour,
                empty.rate_limits.concurrency
            )
        );
        assert_eq!(g.rate_limits.published, empty.rate_limits.published);
    }

    #[test]
    fn a_profile_says_only_what_it_knows_and_the_rest_is_defaulted() {
        let p = parse(
            "internal.toml",
            "internal",
            "directory_url = \"https://acme.internal/dir\"\n",
        )
        .expect("a one-line profile");
        assert_eq!(p.id, "internal");
        assert_eq!(p.name, "internal");
        assert_eq!(p.root_group, None);
        assert!(!p.eab_required && !p.staging && !p.ari);
        assert_eq!(p.key_types, KeyType::ALL);
        assert_eq!(p.default_validity_days, 90);
        assert_eq!(
            (p.rate_limits.orders_per_hour, p.rate_limits.concurrency),
            (300, 10)
        );
        // A misspelt field is still refused, naming it.
        let err = parse("internal.toml", "internal", "root_grop = \"x\"\n")
            .expect_err("unknown field")
            .to_string();
        assert!(err.contains("root_grop"), "{err}");
    }
}
