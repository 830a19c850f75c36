//! `[console]` and `[console.oidc]`: the operator console under `/ui/`
//! (served by the API role), its session lifetimes and its optional
//! OpenID Connect sign-in. The client secret follows the credential
//! convention of the DNS providers (`client_secret`, `client_secret_file`
//! or `client_secret_env`) and is never shown in an error or `Debug`.
//!
//! Unlike the CA and DNS credentials, the client secret is read by the API
//! role too: the console is part of the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, invalid, read_secret, resolve};
use crate::domain::Role;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    enabled: Option<bool>,
    session_idle_seconds: Option<i64>,
    session_absolute_seconds: Option<i64>,
    oidc: Option<RawOidc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    redirect_url: Option<String>,
    role_claim: Option<String>,
    #[serde(default)]
    role_map: BTreeMap<String, String>,
    scopes: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RawOidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOidc")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The console's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleConfig {
    /// Whether `/ui/` is served (default: yes, wherever the API is).
    pub enabled: bool,
    /// A session unused this long ends.
    pub session_idle_seconds: i64,
    /// A session ends this long after sign-in, however busy.
    pub session_absolute_seconds: i64,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<OidcConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_idle_seconds: 1800,
            session_absolute_seconds: 43200,
            oidc: None,
        }
    }
}

/// `[console.oidc]`: the operator's identity provider.
#[derive(Clone, PartialEq)]
pub struct OidcConfig {
    /// The issuer URL; discovery at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id registered at the IdP (the `aud` of its ID tokens).
    pub client_id: String,
    /// The client secret (sent with HTTP Basic to the token endpoint).
    pub client_secret: String,
    /// Where the IdP sends people back; `None`: `{server.public_url}/ui/oidc/callback`.
    pub redirect_url: Option<String>,
    /// The ID-token claim holding the person's groups (string or array).
    pub role_claim: String,
    /// Claim value → twincert role; a person with several gets the highest.
    pub role_map: BTreeMap<String, Role>,
    /// Scopes asked for (always including `openid`).
    pub scopes: Vec<String>,
    /// An extra trust root for the IdP's HTTPS (a private IdP, tests).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .field("role_claim", &self.role_claim)
            .field("role_map", &self.role_map)
            .field("scopes", &self.scopes)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// An https URL, or http to a loopback address (tests, a local proxy).
fn web_url(key: &str, v: &str) -> Result<String, ConfigError> {
    let u =
        url::Url::parse(v).map_err(|e| invalid(key, v, format!("{e}; give an absolute URL")))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
        return Err(invalid(
            key,
            v,
            "must be https:// (http:// only to a loopback address)",
        ));
    }
    Ok(v.trim_end_matches('/').to_string())
}

pub(super) fn validate_console(
    raw: RawConsole,
    base: &Path,
    public_url: Option<&str>,
) -> Result<ConsoleConfig, ConfigError> {
    let d = ConsoleConfig::default();
    let idle = raw.session_idle_seconds.unwrap_or(d.session_idle_seconds);
    if !(60..=86400).contains(&idle) {
        return Err(invalid(
            "console.session_idle_seconds",
            idle,
            "must be between 60 and 86400",
        ));
    }
    let absolute = raw
        .session_absolute_seconds
        .unwrap_or(d.session_absolute_seconds);
    if !(idle..=30 * 86400).contains(&absolute) {
        return Err(invalid(
            "console.session_absolute_seconds",
            absolute,
            "must be at least session_idle_seconds and at most 2592000 (30 days)",
        ));
    }
    let oidc = raw
        .oidc
        .map(|o| validate_oidc(o, base, public_url))
        .transpose()?;
    Ok(ConsoleConfig {
        enabled: raw.enabled.unwrap_or(true),
        session_idle_seconds: idle,
        session_absolute_seconds: absolute,
        oidc,
    })
}

fn validate_oidc(
    o: RawOidc,
    base: &Path,
    public_url: Option<&str>,
) -> Result<OidcConfig, ConfigError> {
    const K: &str = "console.oidc";
    let issuer = o
        .issuer
        .ok_or_else(|| invalid(&format!("{K}.issuer"), "(missing)", "is required"))?;
    let issuer = web_url(&format!("{K}.issuer"), &issuer)?;
    let client_id = o
        .client_id
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| invalid(&format!("{K}.client_id"), "(missing)", "is required"))?;
    let given = [
        o.client_secret.is_some(),
        o.client_secret_file.is_some(),
        o.client_secret_env.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(invalid(
            &format!("{K}.client_secret"),
            "(secret)",
            "give exactly one of client_secret, client_secret_file and client_secret_env",
        ));
    }
    let client_secret = match o.client_secret {
        Some(s) => s.trim().to_string(),
        None => {
            let key = if o.client_secret_file.is_some() {
                format!("{K}.client_secret_file")
            } else {
                format!("{K}.client_secret_env")
            };
            read_secret(
                &key,
                o.client_secret_file.as_deref(),
                o.client_secret_env.as_deref(),
                base,
                true,
            )?
            .unwrap_or_default()
        }
    };
    if client_secret.is_empty() {
        return Err(invalid(
            &format!("{K}.client_secret"),
            "(secret)",
            "is empty",
        ));
    }
    let redirect_url = match o.redirect_url {
        Some(r) => Some(web_url(&format!("{K}.redirect_url"), &r)?),
        None if public_url.is_some() => None,
        None => {
            return Err(invalid(
                &format!("{K}.redirect_url"),
                "(missing)",
                "set redirect_url (https://<this API>/ui/oidc/callback) or server.public_url",
            ));
        }
    };
    let mut role_map = BTreeMap::new();
    for (claim, role) in o.role_map {
        let r: Role = role
            .parse()
            .map_err(|e: String| invalid(&format!("{K}.role_map.{claim}"), &role, e))?;
        role_map.insert(claim, r);
    }
    if role_map.is_empty() {
        return Err(invalid(
            &format!("{K}.role_map"),
            "{}",
            "map at least one claim value to a role, e.g. { \"twincert-operators\" = \"operator\" }",
        ));
    }
    let mut scopes = o
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    Ok(OidcConfig {
        issuer,
        client_id,
        client_secret,
        redirect_url,
        role_claim: o.role_claim.unwrap_or_else(|| "groups".into()),
        role_map,
        scopes,
        ca_file: o.ca_file.map(|p| resolve(base, p)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawConsole {
        toml::from_str(toml_text).expect("toml")
    }

    #[test]
    fn console_settings_are_checked_with_the_key_named() {
        let base = Path::new("/tmp");
        let cases: &[(&str, Option<&str>, Result<(), &str>)] = &[
            ("", None, Ok(())),
            (
                "session_idle_seconds = 10",
                None,
                Err("console.session_idle_seconds"),
            ),
            (
                "session_idle_seconds = 600\nsession_absolute_seconds = 300",
                None,
                Err("console.session_absolute_seconds"),
            ),
            (
                "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"t\"\nclient_secret = \"s\"\nrole_map = { ops = \"operator\" }",
                None,
                Err("console.oidc.redirect_url"),
            ),
            (
                "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"t\"\nclient_secret = \"s\"\nrole_map = { ops = \"operator\" }",
                Some("https://tc.example"),
                Ok(()),
            ),
            (
                "[oidc]\nissuer = \"http://idp.example\"\nclient_id = \"t\"\nclient_secret = \"s\"\nrole_map = { ops = \"operator\" }",
                Some("https://tc.example"),
                Err("console.oidc.issuer"),
            ),
            (
                "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"t\"\nrole_map = { ops = \"operator\" }",
                Some("https://tc.example"),
                Err("console.oidc.client_secret"),
            ),
            (
                "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"t\"\nclient_secret = \"s\"\nrole_map = { ops = \"boss\" }",
                Some("https://tc.example"),
                Err("console.oidc.role_map.ops"),
            ),
        ];
        for (text, public, want) in cases {
            let got = validate_console(raw(text), base, *public);
            match (want, got) {
                (Ok(()), Ok(_)) => {}
                (Err(key), Err(ConfigError::Invalid { key: k, value, .. })) => {
                    assert_eq!(&k, key, "{text}");
                    assert!(!value.contains('s') || value != "s", "secret echoed");
                }
                (w, g) => panic!("{text}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn the_client_secret_is_not_in_debug_output() {
        let c = validate_console(
            raw("[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"t\"\nclient_secret = \"hunter2-secret\"\nrole_map = { ops = \"operator\" }"),
            Path::new("/tmp"),
            Some("https://tc.example"),
        )
        .expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.oidc.expect("oidc").scopes[0], "openid");
    }
}
