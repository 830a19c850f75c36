//! DNS providers: what twincert plugs into to publish DNS-01 answers.
//!
//! The contract is three verbs (cert-manager's Present / CleanUp, plus the
//! zone question): say which zone a name belongs to, present one TXT value
//! at a name, and remove exactly that value again. Several values must
//! coexist at one `_acme-challenge` name (primary and backup CAs validating
//! at once; apex and wildcard in one order), so presenting appends and
//! cleaning up deletes by value. The propagation check is not the
//! provider's job: `validation::dns` asks the authoritative servers.

mod rfc2136;
// API-based providers (issue 16).
mod acme_dns;
mod cloudflare;
mod powerdns;
mod rest;
// exec, webhook, route53 (issue 16)
pub mod aws;
mod exec;
mod route53;
mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use rfc2136::{Rfc2136, Rfc2136Settings};
// API-based providers (issue 16).
pub use acme_dns::{
    AcmeDns, AcmeDnsAccount, AcmeDnsAccounts, AcmeDnsSettings, SealedAccounts, cname_to_create,
};
pub use cloudflare::{Cloudflare, CloudflareSettings, DEFAULT_API_URL as CLOUDFLARE_API_URL};
pub use powerdns::{PowerDns, PowerDnsSettings};
// exec, webhook, route53 (issue 16)
pub use exec::{Exec, ExecSettings};
pub use route53::{DEFAULT_ENDPOINT, DEFAULT_STS_ENDPOINT, Route53, Route53Settings};
pub use webhook::{Webhook, WebhookSettings};

/// One `[[dns_providers]]` entry as `config` validated it: the id, the
/// zones it serves (records for a name go to the provider with the longest
/// matching zone) and the settings of its kind.
#[derive(Debug, Clone)]
pub struct DnsProviderConfig {
    /// Configured id.
    pub id: String,
    /// Zones (apex names, lower case, no trailing dot); no two providers
    /// claim the same one.
    pub zones: Vec<String>,
    /// What kind of provider, with its settings.
    pub kind: DnsProviderKind,
}

/// The provider kinds and their settings. Each kind's settings type lives
/// in that kind's file and keeps its credentials out of `Debug`.
#[derive(Debug, Clone)]
pub enum DnsProviderKind {
    /// `kind = "rfc2136"`: dynamic updates signed with TSIG.
    Rfc2136(Rfc2136Settings),
    // API-based providers (issue 16).
    /// `kind = "powerdns"`: PowerDNS Authoritative's HTTP API.
    PowerDns(PowerDnsSettings),
    /// `kind = "cloudflare"`: Cloudflare's API v4 with a scoped token.
    Cloudflare(CloudflareSettings),
    /// `kind = "acme-dns"`: an acme-dns server (accounts kept in the store).
    AcmeDns(AcmeDnsSettings),
    /// `kind = "exec"`: the operator's program, `present|cleanup FQDN VALUE`.
    Exec(ExecSettings),
    /// `kind = "webhook"`: a signed HTTPS POST per change.
    Webhook(WebhookSettings),
    /// `kind = "route53"`: AWS Route 53, SigV4-signed.
    Route53(Box<Route53Settings>),
}

impl DnsProviderKind {
    /// The `kind` value in the configuration file.
    pub fn name(&self) -> &'static str {
        match self {
            DnsProviderKind::Rfc2136(_) => "rfc2136",
            DnsProviderKind::PowerDns(_) => "powerdns",
            DnsProviderKind::Cloudflare(_) => "cloudflare",
            DnsProviderKind::AcmeDns(_) => "acme-dns",
            DnsProviderKind::Exec(_) => "exec",
            DnsProviderKind::Webhook(_) => "webhook",
            DnsProviderKind::Route53(_) => "route53",
        }
    }
}

/// The provider a validated configuration entry describes.
pub fn build(cfg: &DnsProviderConfig) -> Result<Arc<dyn DnsProvider>, DnsError> {
    Ok(match &cfg.kind {
        DnsProviderKind::Rfc2136(s) => Arc::new(Rfc2136::new(&cfg.id, &cfg.zones, s)?),
        DnsProviderKind::PowerDns(s) => Arc::new(PowerDns::new(&cfg.id, &cfg.zones, s)?),
        DnsProviderKind::Cloudflare(s) => Arc::new(Cloudflare::new(&cfg.id, &cfg.zones, s)?),
        DnsProviderKind::AcmeDns(_) => {
            return Err(DnsError(format!(
                "DNS provider {}: acme-dns keeps its accounts in the store; build it with \
                 build_with_accounts",
                cfg.id
            )));
        }
        DnsProviderKind::Exec(s) => Arc::new(Exec::new(&cfg.id, &cfg.zones, s)?),
        DnsProviderKind::Webhook(s) => Arc::new(Webhook::new(&cfg.id, &cfg.zones, s)?),
        DnsProviderKind::Route53(s) => Arc::new(Route53::new(&cfg.id, &cfg.zones, s)?),
    })
}

/// The provider a validated entry describes, for kinds that keep state in
/// the store (acme-dns registrations in `accounts`); every other kind is
/// built as [`build`] does.
pub fn build_with_accounts(
    cfg: &DnsProviderConfig,
    accounts: Arc<dyn AcmeDnsAccounts>,
) -> Result<Arc<dyn DnsProvider>, DnsError> {
    match &cfg.kind {
        DnsProviderKind::AcmeDns(s) => {
            Ok(Arc::new(AcmeDns::new(&cfg.id, &cfg.zones, s, accounts)?))
        }
        _ => build(cfg),
    }
}

/// A failed provider call, worded for the operator; never contains a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DnsError(pub String);

/// The future a provider call returns.
pub type DnsFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DnsError>> + Send + 'a>>;

/// What a provider's read-only [`DnsProvider::check`] of one zone found.
/// Every text names the provider and never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderCheck {
    /// The provider answered and accepted our credentials for the zone;
    /// what exactly was verified.
    Verified(String),
    /// The provider answered and refused (bad credentials, no such zone,
    /// no permission): an order would fail the same way. `fix` names the
    /// setting to change.
    Refused {
        /// What was asked and what came back.
        detail: String,
        /// The setting to check.
        fix: String,
    },
    /// The provider could not be asked (no connection, timeout, 5xx):
    /// neither verified nor refused.
    Unreachable(String),
    /// The kind has no read-only call that would prove anything (exec,
    /// webhook): checking would mean making a change. Says so.
    NotCheckable(String),
}

/// The future [`DnsProvider::check`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = ProviderCheck> + Send + 'a>>;

/// A place twincert can write TXT records.
pub trait DnsProvider: Send + Sync {
    /// The configured id.
    fn id(&self) -> &str;
    /// The zone (apex, no trailing dot) this provider may change that holds
    /// `fqdn`, the longest match; `None` if it holds none.
    fn zone_for(&self, fqdn: &str) -> Option<String>;
    /// Adds `value` to the TXT records at `fqdn` (RFC 2136 §2.5.1).
    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a>;
    /// Removes exactly `value` from the TXT records at `fqdn` (§2.5.4).
    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a>;
    /// Asks the provider, without changing anything, whether it is
    /// reachable and our credentials may act on `zone` (preflight's
    /// `provider` check).
    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a>;
}

/// A DNS name as providers compare them: lower case, no trailing dot.
pub(crate) fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The longest zone in `zones` that `fqdn` is in or under.
pub fn longest_zone(zones: &[String], fqdn: &str) -> Option<String> {
    let name = normal(fqdn);
    zones
        .iter()
        .filter(|z| name == **z || name.ends_with(&format!(".{z}")))
        .max_by_key(|z| z.len())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_matching_is_by_whole_labels_and_longest_first() {
        let zones = vec!["example.test".to_string(), "sub.example.test".to_string()];
        let cases = [
            ("example.test", Some("example.test")),
            ("_acme-challenge.example.test.", Some("example.test")),
            (
                "_acme-challenge.a.sub.example.test",
                Some("sub.example.test"),
            ),
            ("sub.example.test", Some("sub.example.test")),
            ("notexample.test", None),
            ("example.testing", None),
            ("other.test", None),
        ];
        for (name, want) in cases {
            assert_eq!(longest_zone(&zones, name).as_deref(), want, "{name}");
        }
    }
}
