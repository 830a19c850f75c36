//! The `[dns]` section (where DNS-01 lookups go, how long propagation may
//! take) and the `[[dns_providers]]` entries (RFC 2136 servers with their
//! TSIG keys, validated into the provider's own [`DnsProviderConfig`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, invalid, resolve};
use crate::providers::dns::DnsProviderConfig;

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

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnsProvider {
    id: String,
    kind: String,
    server: String,
    zones: Vec<String>,
    tsig_key_name: String,
    tsig_algorithm: Option<String>,
    tsig_secret_file: Option<PathBuf>,
    tsig_secret: Option<String>,
}

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

pub(super) fn validate_dns_providers(
    raw: &[RawDnsProvider],
    base: &Path,
    credentials: bool,
) -> Result<BTreeMap<String, DnsProviderConfig>, ConfigError> {
    let mut dns_providers = BTreeMap::new();
    for (i, p) in raw.iter().enumerate() {
        let key = |k: &str| format!("dns_providers[{i}].{k}");
        if crate::domain::ManagedNameId::parse(&p.id).is_err() || dns_providers.contains_key(&p.id)
        {
            return Err(invalid(&key("id"), &p.id, "must be a unique lower-case id"));
        }
        if p.kind != "rfc2136" {
            return Err(invalid(&key("kind"), &p.kind, "the only kind is 'rfc2136'"));
        }
        let server: SocketAddr = p
            .server
            .parse()
            .map_err(|_| invalid(&key("server"), &p.server, "must be IP:PORT"))?;
        let mut zones = Vec::new();
        for z in &p.zones {
            let zone = crate::domain::DnsName::parse(z)
                .map_err(|e| invalid(&key("zones"), z, e.to_string()))?;
            zones.push(zone.as_str().to_string());
        }
        if zones.is_empty() {
            return Err(invalid(&key("zones"), "[]", "list at least one zone"));
        }
        let algorithm = p
            .tsig_algorithm
            .clone()
            .unwrap_or_else(|| "hmac-sha256".into());
        if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&algorithm.as_str()) {
            return Err(invalid(
                &key("tsig_algorithm"),
                &algorithm,
                "must be hmac-sha256, hmac-sha384 or hmac-sha512",
            ));
        }
        let secret = match (&p.tsig_secret, &p.tsig_secret_file) {
            (Some(s), None) => s.trim().to_string(),
            (None, Some(_)) if !credentials => String::new(),
            (None, Some(f)) => {
                let f = resolve(base, f.clone());
                std::fs::read_to_string(&f)
                    .map_err(|e| invalid(&key("tsig_secret_file"), f.display(), e.to_string()))?
                    .trim()
                    .to_string()
            }
            _ => {
                return Err(invalid(
                    &key("tsig_secret"),
                    "(secret)",
                    "give exactly one of tsig_secret and tsig_secret_file",
                ));
            }
        };
        {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(&secret)
                .is_err()
            {
                return Err(invalid(&key("tsig_secret"), "(secret)", "is not base64"));
            }
        }
        dns_providers.insert(
            p.id.clone(),
            DnsProviderConfig {
                id: p.id.clone(),
                server,
                zones,
                tsig_key_name: p.tsig_key_name.clone(),
                tsig_algorithm: algorithm,
                tsig_secret_b64: secret,
            },
        );
    }
    Ok(dns_providers)
}
