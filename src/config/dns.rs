//! The `[dns]` section (where DNS-01 lookups go, how long propagation may
//! take) and the `[[dns_providers]]` entries (each validated into its
//! kind's own settings type, so providers do not depend on the file's
//! shape; a zone belongs to one provider).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, invalid, read_secret};
use crate::providers::dns::{DnsProviderConfig, DnsProviderKind, Rfc2136Settings};
// API-based providers (issue 16).
use crate::providers::dns::{AcmeDnsSettings, CloudflareSettings, PowerDnsSettings};
// exec, webhook, route53 (issue 16)
use crate::providers::dns::{ExecSettings, Route53Settings, WebhookSettings};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    resolver: Option<String>,
    authoritative_port: Option<u16>,
    propagation_timeout_seconds: Option<u64>,
    propagation_interval_ms: Option<u64>,
    delegation_zone: Option<String>,
    manual_poll_seconds: Option<u64>,
    manual_expiry_seconds: Option<i64>,
}

/// One `[[dns_providers]]` entry as written: `id`, `kind` and `zones`,
/// which every kind has, and the fields of its kind, which the kind's own
/// raw struct below reads (refusing unknown ones).
pub(super) type RawDnsProvider = toml::Table;

/// The fields of a `kind = "rfc2136"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRfc2136 {
    server: String,
    tsig_key_name: String,
    tsig_algorithm: Option<String>,
    tsig_secret_file: Option<PathBuf>,
    tsig_secret_env: Option<String>,
    tsig_secret: Option<String>,
}

// API-based providers (issue 16).

/// The fields of a `kind = "powerdns"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPowerDns {
    api_url: String,
    server_id: Option<String>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    api_key_env: Option<String>,
}

/// The fields of a `kind = "cloudflare"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudflare {
    api_url: Option<String>,
    api_token: Option<String>,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
}

/// The fields of a `kind = "acme-dns"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcmeDns {
    api_url: String,
    allow_from: Option<Vec<String>>,
}

// exec, webhook, route53 (issue 16) ---------------------------------------

/// The fields of a `kind = "exec"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Vec<String>,
    timeout_seconds: Option<u64>,
    env: Option<BTreeMap<String, String>>,
}

/// The fields of a `kind = "webhook"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    timeout_seconds: Option<u64>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
}

/// The fields of a `kind = "route53"` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute53 {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    secret_access_key_env: Option<String>,
    hosted_zone_id: Option<String>,
    endpoint: Option<String>,
    sts_endpoint: Option<String>,
    timeout_seconds: Option<u64>,
    insync_timeout_seconds: Option<u64>,
    insync_interval_ms: Option<u64>,
}

// ----------------------------------------------------------------------------

/// Where DNS-01 lookups go and how long propagation may take.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The resolver asked for SOA, NS, CNAME and A records (not for the
    /// propagation check, which asks the authoritative servers directly).
    pub resolver: SocketAddr,
    /// The port authoritative servers answer on (53 outside tests).
    pub authoritative_port: u16,
    /// How long to wait for every authoritative server to show a record.
    pub propagation_timeout_seconds: u64,
    /// How often to ask them.
    pub propagation_interval_ms: u64,
    /// The zone (controlled by a DNS provider) that delegated
    /// `_acme-challenge` CNAMEs should point into; shown by the API.
    pub delegation_zone: Option<String>,
    /// How often a `dns-01-manual` order looks for its records.
    pub manual_poll_seconds: u64,
    /// After how long unpublished manual records expire (the request is
    /// then renewed with fresh values).
    pub manual_expiry_seconds: i64,
}

pub(super) fn validate_dns(raw: RawDns) -> Result<DnsConfig, ConfigError> {
    let resolver_text = raw.resolver.as_deref().unwrap_or("127.0.0.1:53");
    let dns_config = DnsConfig {
        resolver: resolver_text
            .parse()
            .map_err(|_| invalid("dns.resolver", resolver_text, "must be IP:PORT"))?,
        authoritative_port: raw.authoritative_port.unwrap_or(53),
        propagation_timeout_seconds: raw.propagation_timeout_seconds.unwrap_or(120),
        propagation_interval_ms: raw.propagation_interval_ms.unwrap_or(500),
        manual_poll_seconds: raw.manual_poll_seconds.unwrap_or(30).max(1),
        manual_expiry_seconds: raw.manual_expiry_seconds.unwrap_or(7 * 24 * 3600).max(1),
        delegation_zone: match &raw.delegation_zone {
            Some(z) => Some(
                crate::domain::DnsName::parse(z)
                    .map_err(|e| invalid("dns.delegation_zone", z, e.to_string()))?
                    .as_str()
                    .to_string(),
            ),
            None => None,
        },
    };
    if dns_config.propagation_timeout_seconds == 0 || dns_config.propagation_interval_ms == 0 {
        return Err(invalid(
            "dns.propagation_timeout_seconds",
            dns_config.propagation_timeout_seconds,
            "timeout and interval must be positive",
        ));
    }
    Ok(dns_config)
}

/// The kinds of DNS provider, as `kind` names them.
const KINDS: &[&str] = &[
    "rfc2136",
    "powerdns",
    "cloudflare",
    "route53",
    "acme-dns",
    "exec",
    "webhook",
];

pub(super) fn validate_dns_providers(
    raw: &[RawDnsProvider],
    base: &Path,
    credentials: bool,
) -> Result<BTreeMap<String, DnsProviderConfig>, ConfigError> {
    let mut dns_providers: BTreeMap<String, DnsProviderConfig> = BTreeMap::new();
    // Zone → the provider that claimed it first.
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    for (i, entry) in raw.iter().enumerate() {
        let key = |k: &str| format!("dns_providers[{i}].{k}");
        let mut rest = entry.clone();
        let id = take_string(&mut rest, &key("id"))?;
        if crate::domain::ManagedNameId::parse(&id).is_err() || dns_providers.contains_key(&id) {
            return Err(invalid(&key("id"), &id, "must be a unique lower-case id"));
        }
        let kind = take_string(&mut rest, &key("kind"))?;
        let zone_values = match rest.remove("zones") {
            Some(toml::Value::Array(a)) => a,
            Some(other) => {
                return Err(invalid(
                    &key("zones"),
                    other,
                    "must be a list of zone names",
                ));
            }
            None => {
                return Err(invalid(
                    &key("zones"),
                    "(missing)",
                    "list the zones it serves",
                ));
            }
        };
        let mut zones = Vec::new();
        for z in &zone_values {
            let text = z
                .as_str()
                .ok_or_else(|| invalid(&key("zones"), z, "must be a list of zone names"))?;
            let zone = crate::domain::DnsName::parse(text)
                .map_err(|e| invalid(&key("zones"), text, e.to_string()))?;
            let zone = zone.as_str().to_string();
            if let Some(other) = claimed.get(&zone) {
                return Err(invalid(
                    &key("zones"),
                    &zone,
                    format!(
                        "dns provider '{other}' already serves this zone; a zone belongs to one \
                         provider (a sub-zone may go to another)"
                    ),
                ));
            }
            if zones.contains(&zone) {
                return Err(invalid(&key("zones"), &zone, "is listed twice"));
            }
            zones.push(zone);
        }
        if zones.is_empty() {
            return Err(invalid(&key("zones"), "[]", "list at least one zone"));
        }
        let ctx = KindContext {
            index: i,
            kind: &kind,
            base,
            credentials,
        };
        let kind = match kind.as_str() {
            "rfc2136" => DnsProviderKind::Rfc2136(rfc2136(&ctx, kind_fields(&ctx, rest)?)?),
            // API-based providers (issue 16).
            "powerdns" => DnsProviderKind::PowerDns(powerdns(&ctx, kind_fields(&ctx, rest)?)?),
            "cloudflare" => {
                DnsProviderKind::Cloudflare(cloudflare(&ctx, kind_fields(&ctx, rest)?)?)
            }
            "acme-dns" => DnsProviderKind::AcmeDns(acme_dns(&ctx, kind_fields(&ctx, rest)?)?),
            // exec, webhook, route53 (issue 16)
            "exec" => DnsProviderKind::Exec(exec(&ctx, kind_fields(&ctx, rest)?)?),
            "webhook" => DnsProviderKind::Webhook(webhook(&ctx, kind_fields(&ctx, rest)?)?),
            "route53" => {
                DnsProviderKind::Route53(Box::new(route53(&ctx, kind_fields(&ctx, rest)?)?))
            }
            other => {
                return Err(invalid(
                    &key("kind"),
                    other,
                    format!("unknown kind; one of: {}", KINDS.join(", ")),
                ));
            }
        };
        for z in &zones {
            claimed.insert(z.clone(), id.clone());
        }
        dns_providers.insert(id.clone(), DnsProviderConfig { id, zones, kind });
    }
    Ok(dns_providers)
}

/// What a kind's validation needs to know about its entry.
struct KindContext<'a> {
    index: usize,
    kind: &'a str,
    base: &'a Path,
    credentials: bool,
}

impl KindContext<'_> {
    /// The dotted path of one of the entry's fields.
    fn key(&self, field: &str) -> String {
        format!("dns_providers[{}].{field}", self.index)
    }

    /// A credential given as exactly one of `<name>` (inline),
    /// `<name>_file` (a file, trimmed) or `<name>_env` (an environment
    /// variable). Without `credentials` (an API process, a migration) only
    /// the choice is checked and the value is empty.
    fn credential(
        &self,
        name: &str,
        inline: Option<&str>,
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<String, ConfigError> {
        let given = [inline.is_some(), file.is_some(), env.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(invalid(
                &self.key(name),
                "(secret)",
                format!("give exactly one of {name}, {name}_file and {name}_env"),
            ));
        }
        if let Some(v) = inline {
            return Ok(v.trim().to_string());
        }
        let field = if file.is_some() {
            format!("{name}_file")
        } else {
            format!("{name}_env")
        };
        Ok(
            read_secret(&self.key(&field), file, env, self.base, self.credentials)?
                .unwrap_or_default(),
        )
    }
}

/// Removes a required string field from an entry.
fn take_string(t: &mut toml::Table, key: &str) -> Result<String, ConfigError> {
    match t.remove(key.rsplit('.').next().unwrap_or(key)) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(key, other, "must be a string")),
        None => Err(invalid(key, "(missing)", "is required")),
    }
}

/// The rest of an entry read as its kind's fields; an unknown or missing
/// field is named with the entry's path.
fn kind_fields<T: serde::de::DeserializeOwned>(
    ctx: &KindContext<'_>,
    rest: toml::Table,
) -> Result<T, ConfigError> {
    toml::Value::Table(rest)
        .try_into()
        .map_err(|e: toml::de::Error| {
            ConfigError::Parse(format!(
                "dns_providers[{}] (kind '{}'): {}",
                ctx.index,
                ctx.kind,
                e.message()
            ))
        })
}

fn rfc2136(ctx: &KindContext<'_>, p: RawRfc2136) -> Result<Rfc2136Settings, ConfigError> {
    let server: SocketAddr = p
        .server
        .parse()
        .map_err(|_| invalid(&ctx.key("server"), &p.server, "must be IP:PORT"))?;
    let algorithm = p
        .tsig_algorithm
        .clone()
        .unwrap_or_else(|| "hmac-sha256".into());
    if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&algorithm.as_str()) {
        return Err(invalid(
            &ctx.key("tsig_algorithm"),
            &algorithm,
            "must be hmac-sha256, hmac-sha384 or hmac-sha512",
        ));
    }
    let secret = ctx.credential(
        "tsig_secret",
        p.tsig_secret.as_deref(),
        p.tsig_secret_file.as_deref(),
        p.tsig_secret_env.as_deref(),
    )?;
    {
        use base64::Engine as _;
        if base64::engine::general_purpose::STANDARD
            .decode(&secret)
            .is_err()
        {
            return Err(invalid(
                &ctx.key("tsig_secret"),
                "(secret)",
                "is not base64",
            ));
        }
    }
    Ok(Rfc2136Settings {
        server,
        tsig_key_name: p.tsig_key_name,
        tsig_algorithm: algorithm,
        tsig_secret_b64: secret,
    })
}

// API-based providers (issue 16).

/// An `http`/`https` URL for an API endpoint.
fn api_url(ctx: &KindContext<'_>, field: &str, text: &str) -> Result<url::Url, ConfigError> {
    let url: url::Url = text
        .parse()
        .map_err(|_| invalid(&ctx.key(field), text, "must be an http:// or https:// URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid(
            &ctx.key(field),
            text,
            "must be an http:// or https:// URL",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            &ctx.key(field),
            "(a URL with credentials)",
            "must not carry credentials; give them in their own field",
        ));
    }
    Ok(url)
}

fn powerdns(ctx: &KindContext<'_>, p: RawPowerDns) -> Result<PowerDnsSettings, ConfigError> {
    let server_id = p.server_id.unwrap_or_else(|| "localhost".into());
    if server_id.is_empty() || server_id.contains('/') {
        return Err(invalid(
            &ctx.key("server_id"),
            &server_id,
            "must be a server id such as 'localhost'",
        ));
    }
    let api_key = ctx.credential(
        "api_key",
        p.api_key.as_deref(),
        p.api_key_file.as_deref(),
        p.api_key_env.as_deref(),
    )?;
    Ok(PowerDnsSettings {
        api_url: api_url(ctx, "api_url", &p.api_url)?,
        server_id,
        api_key,
    })
}

fn cloudflare(ctx: &KindContext<'_>, p: RawCloudflare) -> Result<CloudflareSettings, ConfigError> {
    let api_token = ctx.credential(
        "api_token",
        p.api_token.as_deref(),
        p.api_token_file.as_deref(),
        p.api_token_env.as_deref(),
    )?;
    let url = p
        .api_url
        .as_deref()
        .unwrap_or(crate::providers::dns::CLOUDFLARE_API_URL);
    Ok(CloudflareSettings {
        api_url: api_url(ctx, "api_url", url)?,
        api_token,
    })
}

fn acme_dns(ctx: &KindContext<'_>, p: RawAcmeDns) -> Result<AcmeDnsSettings, ConfigError> {
    let allow_from = p.allow_from.unwrap_or_default();
    for cidr in &allow_from {
        cidr.parse::<crate::domain::Cidr>()
            .map_err(|e| invalid(&ctx.key("allow_from"), cidr, e))?;
    }
    Ok(AcmeDnsSettings {
        api_url: api_url(ctx, "api_url", &p.api_url)?,
        allow_from,
    })
}

// exec, webhook, route53 (issue 16) ---------------------------------------

/// A `timeout_seconds` field: `default` when absent, positive.
fn timeout(
    ctx: &KindContext<'_>,
    given: Option<u64>,
    default: u64,
) -> Result<std::time::Duration, ConfigError> {
    match given.unwrap_or(default) {
        0 => Err(invalid(&ctx.key("timeout_seconds"), 0, "must be positive")),
        s => Ok(std::time::Duration::from_secs(s)),
    }
}

fn exec(ctx: &KindContext<'_>, p: RawExec) -> Result<ExecSettings, ConfigError> {
    let mut command = p.command;
    match command.first_mut() {
        None => {
            return Err(invalid(
                &ctx.key("command"),
                "[]",
                "give the program and its arguments, e.g. [\"/usr/local/bin/dns-hook\"]",
            ));
        }
        // A path is relative to the configuration file, as other paths
        // are; a bare name is looked up in PATH.
        Some(program) if program.contains('/') => {
            *program = super::resolve(ctx.base, PathBuf::from(&*program))
                .display()
                .to_string();
        }
        Some(_) => {}
    }
    Ok(ExecSettings {
        command,
        timeout: timeout(ctx, p.timeout_seconds, 60)?,
        env: p.env.unwrap_or_default(),
    })
}

fn webhook(ctx: &KindContext<'_>, p: RawWebhook) -> Result<WebhookSettings, ConfigError> {
    let url: url::Url = p
        .url
        .parse()
        .map_err(|e| invalid(&ctx.key("url"), "(url)", format!("is not a URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let shown = url.origin().ascii_serialization();
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(invalid(
                &ctx.key("url"),
                shown,
                "must be https:// (http:// only to a loopback address)",
            ));
        }
    }
    let secret = ctx.credential(
        "secret",
        p.secret.as_deref(),
        p.secret_file.as_deref(),
        p.secret_env.as_deref(),
    )?;
    if ctx.credentials && secret.is_empty() {
        return Err(invalid(&ctx.key("secret"), "(secret)", "is empty"));
    }
    Ok(WebhookSettings {
        url,
        secret,
        timeout: timeout(ctx, p.timeout_seconds, 30)?,
    })
}

fn route53(ctx: &KindContext<'_>, p: RawRoute53) -> Result<Route53Settings, ConfigError> {
    use crate::providers::dns::aws::Credentials;
    let secret_given = p.secret_access_key.is_some()
        || p.secret_access_key_file.is_some()
        || p.secret_access_key_env.is_some();
    let credentials = match (&p.access_key_id, secret_given) {
        (None, false) => None,
        (Some(id), true) => Some(Credentials {
            access_key_id: id.trim().to_string(),
            secret_access_key: ctx.credential(
                "secret_access_key",
                p.secret_access_key.as_deref(),
                p.secret_access_key_file.as_deref(),
                p.secret_access_key_env.as_deref(),
            )?,
            session_token: None,
            expires: None,
        }),
        (None, true) => {
            return Err(invalid(
                &ctx.key("access_key_id"),
                "(missing)",
                "a secret access key needs its access_key_id",
            ));
        }
        (Some(_), false) => {
            return Err(invalid(
                &ctx.key("secret_access_key"),
                "(missing)",
                "give one of secret_access_key, secret_access_key_file and secret_access_key_env \
                 with access_key_id (or neither, for the environment, web identity or \
                 ~/.aws/credentials)",
            ));
        }
    };
    let endpoint = |field: &str, given: &Option<String>, default: &str| {
        let text = given.as_deref().unwrap_or(default);
        let url: url::Url = text
            .parse()
            .map_err(|e| invalid(&ctx.key(field), text, format!("is not a URL: {e}")))?;
        match url.scheme() {
            "https" | "http" => Ok(url),
            _ => Err(invalid(&ctx.key(field), text, "must be an http(s) URL")),
        }
    };
    let interval = p.insync_interval_ms.unwrap_or(2000);
    if interval == 0 {
        return Err(invalid(
            &ctx.key("insync_interval_ms"),
            0,
            "must be positive",
        ));
    }
    let insync_timeout = match p.insync_timeout_seconds.unwrap_or(300) {
        0 => {
            return Err(invalid(
                &ctx.key("insync_timeout_seconds"),
                0,
                "must be positive",
            ));
        }
        s => std::time::Duration::from_secs(s),
    };
    Ok(Route53Settings {
        credentials,
        hosted_zone_id: p.hosted_zone_id,
        endpoint: endpoint(
            "endpoint",
            &p.endpoint,
            crate::providers::dns::DEFAULT_ENDPOINT,
        )?,
        sts_endpoint: endpoint(
            "sts_endpoint",
            &p.sts_endpoint,
            crate::providers::dns::DEFAULT_STS_ENDPOINT,
        )?,
        timeout: timeout(ctx, p.timeout_seconds, 30)?,
        insync_timeout,
        insync_interval: std::time::Duration::from_millis(interval),
    })
}

// ----------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<RawDnsProvider> {
        #[derive(Deserialize)]
        struct File {
            dns_providers: Vec<RawDnsProvider>,
        }
        toml::from_str::<File>(text)
            .expect("test TOML parses")
            .dns_providers
    }

    fn check(text: &str) -> Result<BTreeMap<String, DnsProviderConfig>, String> {
        validate_dns_providers(&entries(text), Path::new("/"), true).map_err(|e| e.to_string())
    }

    const BIND: &str = r#"
[[dns_providers]]
id = "bind"
kind = "rfc2136"
server = "127.0.0.1:53"
zones = ["example.test"]
tsig_key_name = "k"
tsig_secret = "c2VjcmV0"
"#;

    #[test]
    fn provider_entries_are_checked_field_by_field_and_zones_belong_to_one_provider() {
        let ok = check(BIND).expect("valid");
        assert_eq!(ok["bind"].zones, vec!["example.test".to_string()]);
        assert_eq!(ok["bind"].kind.name(), "rfc2136");
        // A sub-zone may go to another provider; the same zone may not.
        let sub = BIND.replace("\"bind\"", "\"sub\"").replace(
            "[\"example.test\"]",
            "[\"sub.example.test\", \"other.test\"]",
        );
        let both = check(&format!("{BIND}{sub}")).expect("sub-zone is fine");
        assert_eq!(both.len(), 2);
        let cases: &[(String, &[&str])] = &[
            (
                format!("{BIND}{}", BIND.replace("\"bind\"", "\"again\"")),
                &["dns_providers[1].zones", "'bind' already serves"],
            ),
            (
                BIND.replace("rfc2136", "route66"),
                &["dns_providers[0].kind", "route66", "unknown kind"],
            ),
            (
                BIND.replace("tsig_key_name", "tsig_kee_name"),
                &["dns_providers[0] (kind 'rfc2136')", "tsig_kee_name"],
            ),
            (
                BIND.replace("tsig_secret = \"c2VjcmV0\"", ""),
                &["dns_providers[0].tsig_secret", "exactly one of"],
            ),
            (
                BIND.replace(
                    "tsig_secret = \"c2VjcmV0\"",
                    "tsig_secret = \"c2VjcmV0\"\ntsig_secret_env = \"X\"",
                ),
                &["exactly one of tsig_secret, tsig_secret_file and tsig_secret_env"],
            ),
            (
                BIND.replace("c2VjcmV0", "not base64!"),
                &["dns_providers[0].tsig_secret", "not base64"],
            ),
            (
                BIND.replace("[\"example.test\"]", "[]"),
                &["dns_providers[0].zones", "at least one"],
            ),
            (
                BIND.replace("[\"example.test\"]", "[\"a.test\", \"A.test.\"]"),
                &["dns_providers[0].zones", "twice"],
            ),
            (
                BIND.replace("id = \"bind\"\n", ""),
                &["dns_providers[0].id", "required"],
            ),
            (
                BIND.replace(
                    "tsig_secret = \"c2VjcmV0\"",
                    "tsig_secret_env = \"TWINCERT_TEST_UNSET_SECRET\"",
                ),
                &["dns_providers[0].tsig_secret_env", "not set"],
            ),
        ];
        for (text, wants) in cases {
            let err = check(text).expect_err(text);
            for want in *wants {
                assert!(err.contains(want), "{want:?} not in {err:?}");
            }
            assert!(!err.contains("c2VjcmV0"), "a secret leaked: {err}");
        }
    }

    // API-based providers (issue 16).

    const PDNS: &str = r#"
[[dns_providers]]
id = "pdns"
kind = "powerdns"
api_url = "http://127.0.0.1:8081"
zones = ["pdns.test"]
api_key = "pdns-key-sekrit"
"#;

    const CF: &str = r#"
[[dns_providers]]
id = "cf"
kind = "cloudflare"
zones = ["cf.test"]
api_token_env = "TWINCERT_TEST_CF_TOKEN_UNSET"
"#;

    const ADNS: &str = r#"
[[dns_providers]]
id = "adns"
kind = "acme-dns"
zones = ["auth.example.org", "example.com"]
api_url = "https://auth.example.org"
allow_from = ["192.0.2.0/24"]
"#;

    /// Each API kind's valid entry, then its mistakes: every error names
    /// the entry's field, and no secret appears in any of them.
    #[test]
    fn api_provider_entries_are_checked_field_by_field() {
        let ok = check(PDNS).expect("valid powerdns");
        match &ok["pdns"].kind {
            DnsProviderKind::PowerDns(s) => {
                assert_eq!(s.server_id, "localhost");
                assert_eq!(s.api_key, "pdns-key-sekrit");
                assert!(!format!("{s:?}").contains("sekrit"));
            }
            other => panic!("{other:?}"),
        }
        let cf = CF.replace(
            "api_token_env = \"TWINCERT_TEST_CF_TOKEN_UNSET\"",
            "api_token = \"cf-sekrit\"",
        );
        match &check(&cf).expect("valid cloudflare")["cf"].kind {
            DnsProviderKind::Cloudflare(s) => {
                assert_eq!(s.api_url.as_str(), "https://api.cloudflare.com/client/v4");
                assert!(!format!("{s:?}").contains("sekrit"));
            }
            other => panic!("{other:?}"),
        }
        match &check(ADNS).expect("valid acme-dns")["adns"].kind {
            DnsProviderKind::AcmeDns(s) => assert_eq!(s.allow_from, ["192.0.2.0/24"]),
            other => panic!("{other:?}"),
        }
        let cases: &[(String, &[&str])] = &[
            (
                ADNS.replace("192.0.2.0/24", "192.0.2.0/33"),
                &["dns_providers[0].allow_from", "192.0.2.0/33"],
            ),
            (
                ADNS.replace("api_url = \"https://auth.example.org\"\n", ""),
                &["dns_providers[0] (kind 'acme-dns')", "api_url"],
            ),
            (
                ADNS.replace("allow_from", "password = \"x\"\nallow_from"),
                &["dns_providers[0] (kind 'acme-dns')", "password"],
            ),
            (
                CF.to_string(),
                &["dns_providers[0].api_token_env", "not set"],
            ),
            (
                cf.replace("cf-sekrit\"", "cf-sekrit\"\napi_token_file = \"/x\""),
                &["exactly one of api_token, api_token_file and api_token_env"],
            ),
            (
                cf.replace("zones", "api_url = \"ftp://x\"\nzones"),
                &["dns_providers[0].api_url", "http://"],
            ),
            (
                cf.replace("zones", "zone_id = \"abc\"\nzones"),
                &["dns_providers[0] (kind 'cloudflare')", "zone_id"],
            ),
            (
                PDNS.replace("api_key = \"pdns-key-sekrit\"", ""),
                &[
                    "dns_providers[0].api_key",
                    "exactly one of api_key, api_key_file and api_key_env",
                ],
            ),
            (
                PDNS.replace("http://127.0.0.1:8081", "127.0.0.1:8081"),
                &["dns_providers[0].api_url", "http://"],
            ),
            (
                PDNS.replace("http://127.0.0.1:8081", "http://u:sekrit@127.0.0.1:8081"),
                &["dns_providers[0].api_url", "must not carry credentials"],
            ),
            (
                PDNS.replace("api_url", "server_id = \"a/b\"\napi_url"),
                &["dns_providers[0].server_id"],
            ),
            (
                PDNS.replace("api_url", "apiurl = 1\napi_url"),
                &["dns_providers[0] (kind 'powerdns')", "apiurl"],
            ),
        ];
        for (text, wants) in cases {
            let err = check(text).expect_err(text);
            for want in *wants {
                assert!(err.contains(want), "{want:?} not in {err:?}");
            }
            assert!(!err.contains("sekrit"), "a secret leaked: {err}");
        }
    }

    // exec, webhook, route53 (issue 16)
    /// Each text is refused with an error holding every `wants` and none of
    /// the `secrets`.
    fn assert_all_refused(cases: &[(String, &[&str])], secrets: &[&str]) {
        for (text, wants) in cases {
            let err = check(text).expect_err(text);
            for want in *wants {
                assert!(err.contains(want), "{want:?} not in {err:?}");
            }
            for secret in secrets {
                assert!(!err.contains(secret), "a secret leaked: {err}");
            }
        }
    }

    const EXEC: &str = r#"
[[dns_providers]]
id = "hook"
kind = "exec"
zones = ["example.test"]
command = ["bin/dns-hook", "--verbose"]
env = { DNS_TOKEN = "t0ken" }
"#;

    const WEBHOOK: &str = r#"
[[dns_providers]]
id = "hook"
kind = "webhook"
zones = ["example.test"]
url = "https://dns.example.net/acme?k=1"
secret = "whsec"
"#;

    #[test]
    fn exec_and_webhook_entries_are_checked_and_hide_their_secrets() {
        let ok = check(EXEC).expect("valid exec");
        match &ok["hook"].kind {
            DnsProviderKind::Exec(e) => {
                assert_eq!(
                    e.command,
                    ["/bin/dns-hook", "--verbose"],
                    "relative to the file"
                );
                assert_eq!(e.timeout.as_secs(), 60);
                assert!(!format!("{e:?}").contains("t0ken"));
            }
            other => panic!("{other:?}"),
        }
        let bare = check(&EXEC.replace("bin/dns-hook", "dns-hook")).expect("bare name");
        assert!(
            matches!(&bare["hook"].kind, DnsProviderKind::Exec(e) if e.command[0] == "dns-hook")
        );
        let ok = check(WEBHOOK).expect("valid webhook");
        match &ok["hook"].kind {
            DnsProviderKind::Webhook(w) => {
                assert_eq!(w.timeout.as_secs(), 30);
                assert!(!format!("{w:?}").contains("whsec"));
            }
            other => panic!("{other:?}"),
        }
        let loopback = WEBHOOK.replace("https://dns.example.net", "http://127.0.0.1:8080");
        check(&loopback).expect("http to loopback");
        let cases: &[(String, &[&str])] = &[
            (
                EXEC.replace("[\"bin/dns-hook\", \"--verbose\"]", "[]"),
                &["dns_providers[0].command", "give the program"],
            ),
            (
                EXEC.replace("command = [\"bin/dns-hook\", \"--verbose\"]\n", ""),
                &["dns_providers[0] (kind 'exec')", "command"],
            ),
            (
                format!("{EXEC}timeout_seconds = 0\n"),
                &["dns_providers[0].timeout_seconds", "positive"],
            ),
            (
                format!("{EXEC}shell = true\n"),
                &["dns_providers[0] (kind 'exec')", "shell"],
            ),
            (
                WEBHOOK.replace("https://dns.example.net", "http://dns.example.net"),
                &["dns_providers[0].url", "must be https://"],
            ),
            (
                WEBHOOK.replace("secret = \"whsec\"", ""),
                &[
                    "dns_providers[0].secret",
                    "exactly one of secret, secret_file and secret_env",
                ],
            ),
            (
                WEBHOOK.replace("secret = \"whsec\"", "secret = \"\""),
                &["dns_providers[0].secret", "is empty"],
            ),
            (
                WEBHOOK.replace(
                    "secret = \"whsec\"",
                    "secret_env = \"TWINCERT_TEST_UNSET_SECRET\"",
                ),
                &["dns_providers[0].secret_env", "not set"],
            ),
            (
                WEBHOOK.replace("url = ", "uri = "),
                &["dns_providers[0] (kind 'webhook')", "uri"],
            ),
        ];
        assert_all_refused(cases, &["whsec", "t0ken"]);
    }

    const ROUTE53: &str = r#"
[[dns_providers]]
id = "aws"
kind = "route53"
zones = ["example.test"]
access_key_id = "AKIAEXAMPLE"
secret_access_key = "s3cr3tkey"
"#;

    #[test]
    fn route53_entries_take_static_keys_or_none_and_hide_the_secret() {
        let ok = check(ROUTE53).expect("valid");
        match &ok["aws"].kind {
            DnsProviderKind::Route53(r) => {
                assert_eq!(
                    r.credentials.as_ref().map(|c| c.access_key_id.as_str()),
                    Some("AKIAEXAMPLE")
                );
                assert_eq!(r.endpoint.as_str(), "https://route53.amazonaws.com/");
                assert_eq!(r.timeout.as_secs(), 30);
                assert!(!format!("{r:?}").contains("s3cr3tkey"));
            }
            other => panic!("{other:?}"),
        }
        let chain = ROUTE53
            .replace("access_key_id = \"AKIAEXAMPLE\"\n", "")
            .replace("secret_access_key = \"s3cr3tkey\"\n", "");
        match &check(&chain)
            .expect("no keys: the chain")
            .get("aws")
            .map(|p| &p.kind)
        {
            Some(DnsProviderKind::Route53(r)) => assert!(r.credentials.is_none()),
            other => panic!("{other:?}"),
        }
        let cases: &[(String, &[&str])] = &[
            (
                ROUTE53.replace("access_key_id = \"AKIAEXAMPLE\"\n", ""),
                &["dns_providers[0].access_key_id", "needs its access_key_id"],
            ),
            (
                ROUTE53.replace("secret_access_key = \"s3cr3tkey\"\n", ""),
                &["dns_providers[0].secret_access_key", "give one of"],
            ),
            (
                format!("{ROUTE53}secret_access_key_env = \"X\"\n"),
                &["exactly one of secret_access_key"],
            ),
            (
                format!("{ROUTE53}endpoint = \"ftp://x\"\n"),
                &["dns_providers[0].endpoint", "http(s) URL"],
            ),
            (
                format!("{ROUTE53}insync_interval_ms = 0\n"),
                &["dns_providers[0].insync_interval_ms", "positive"],
            ),
            (
                format!("{ROUTE53}region = \"eu-west-1\"\n"),
                &["dns_providers[0] (kind 'route53')", "region"],
            ),
        ];
        assert_all_refused(cases, &["s3cr3tkey"]);
    }
}
