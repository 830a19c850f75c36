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

/// One CA profile, as in `providers/ca/<id>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaProfile {
    /// Equals the file stem; config entries refer to it.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The ACME directory URL (RFC 8555 §7.1.1).
    pub directory_url: String,
    /// A staging or test endpoint whose certificates no browser trusts.
    pub staging: bool,
    /// Whether account creation needs External Account Binding
    /// (RFC 8555 §7.3.4).
    pub eab_required: bool,
    /// Certificate key types the CA accepts.
    pub key_types: Vec<KeyType>,
    /// CAs with the same root group chain to the same root (or a
    /// cross-signed family); policy never pairs two of them.
    pub root_group: String,
    /// Typical lifetime of issued certificates.
    pub default_validity_days: u32,
    /// Whether the CA offers ARI (RFC 9773).
    pub ari: bool,
    /// CAA issuer domain names (RFC 8659).
    pub caa_identities: Vec<String>,
    /// Pacing derived from the CA's published limits.
    pub rate_limits: RateLimits,
    /// Operator notes.
    pub notes: Notes,
}

/// How fast twincert may order from one CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// New orders per hour per account that twincert stays under.
    pub orders_per_hour: u32,
    /// Orders in flight at once against this CA.
    pub concurrency: u32,
    /// The CA's published limits, quoted, with their source.
    pub published: String,
}

/// Free-form operator notes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notes {
    /// The text.
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
    let profile: CaProfile = toml::from_str(text).map_err(|e| ProfileError {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
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
        for p in all.values() {
            assert!(p.directory_url.starts_with("https://"), "{}", p.id);
            assert!(!p.key_types.is_empty(), "{}", p.id);
        }
    }
}
