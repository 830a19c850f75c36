//! Preflight: before any order can fail, check what would make it fail
//! in DNS, for each domain of a name and each of its two CAs, and store
//! what was found (issue 16, item 3).
//!
//! * **CAA** (RFC 8659, RFC 8657): the tree walk of `validation::caa`,
//!   decided by `policy::caa::may_issue` for the primary's CA and the
//!   backup's CA with their identities, our account URI at each (once the
//!   account exists) and the challenge the name uses.
//! * **Delegation** (DNS-01): `_acme-challenge.<domain>` — or the end of
//!   its CNAME chain — must lie in a zone a configured DNS provider serves
//!   (the longest zone wins, a name's pinned provider only), as
//!   `Dns01Solver::place` will require at order time. For `dns-01-manual`
//!   it reports where the TXT records will have to go.
//! * **Provider reachability** is not checked: the DNS provider trait has
//!   no read or no-op verb yet (see `docs/dns-providers.md`).
//!
//! A lookup that fails (SERVFAIL, timeout) is its own outcome, `error`:
//! never counted as allowed. A name with a CAA finding has an open
//! `preflight_caa` alert; it is resolved by the first check that finds
//! none.
//!
//! *Observes*: the name (`store::Names`), our ACME account URIs
//! (`store::Keys`), DNS. *Writes*: the report (`store::Preflights`) and
//! the `preflight_caa` alert (`store::Alerts`). Run by the `preflight`
//! controller (new names, changed CA pairs, daily) and on demand by the
//! API; it makes no ACME call and changes no DNS.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::warn;

use super::caa::relevant_caa;
use super::dns::{DnsLookup, follow_cname};
use crate::clock::Clock;
use crate::domain::{ChallengeKind, PreflightCheck, PreflightReport, PreflightStatus, Slot};
use crate::policy::caa::{CaaAsk, CaaDecision, RelevantCaa, may_issue};
use crate::providers::dns::longest_zone;
use crate::store::{Alerts, Keys, NameRecord, Names, Preflights, Store, StoreError};

/// The alert kind raised for a name whose CAA forbids one of its CAs.
pub const CAA_ALERT: &str = "preflight_caa";

/// What preflight knows of one configured CA.
#[derive(Debug, Clone)]
pub struct PreflightCa {
    /// Configured id.
    pub id: String,
    /// CAA issuer domain names (the `[[cas]]` entry's or its profile's).
    pub identities: Vec<String>,
}

/// The zones one configured DNS provider serves.
#[derive(Debug, Clone)]
pub struct ProviderZones {
    /// Configured id.
    pub id: String,
    /// Zone apexes, lower-case, no trailing dot.
    pub zones: Vec<String>,
}

/// The preflight checks and the store facets they read and write.
pub struct Preflight {
    lookup: DnsLookup,
    cas: Vec<PreflightCa>,
    providers: Vec<ProviderZones>,
    delegation_zone: Option<String>,
    names: Names,
    keys: Keys,
    preflights: Preflights,
    alerts: Alerts,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Preflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preflight")
            .field("cas", &self.cas)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl Preflight {
    /// Checks through `lookup` (the configured resolver) against these CAs
    /// and provider zones; `delegation_zone` is where the proposed
    /// `_acme-challenge` CNAMEs point (`dns.delegation_zone`).
    pub fn new(
        store: &Store,
        lookup: DnsLookup,
        cas: Vec<PreflightCa>,
        providers: Vec<ProviderZones>,
        clock: Arc<dyn Clock>,
    ) -> Preflight {
        let delegation_zone = lookup.config().delegation_zone.clone();
        Preflight {
            lookup,
            cas,
            providers,
            delegation_zone,
            names: store.names().clone(),
            keys: store.keys().clone(),
            preflights: store.preflights().clone(),
            alerts: store.alerts().clone(),
            clock,
        }
    }

    /// Checks `name_id`, stores the report, raises or resolves its CAA
    /// alert and returns the report; None when there is no such name.
    /// Only a store failure is an `Err`: DNS failures are in the report.
    pub async fn check_name(&self, name_id: &str) -> Result<Option<PreflightReport>, StoreError> {
        let Some(rec) = self.names.name(name_id).await? else {
            return Ok(None);
        };
        let report = self.report(&rec).await?;
        self.preflights
            .save(&rec.id, (&rec.primary_ca, &rec.backup_ca), &report)
            .await?;
        self.alert(&rec.id, &report).await?;
        Ok(Some(report))
    }

    async fn report(&self, rec: &NameRecord) -> Result<PreflightReport, StoreError> {
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            let ca = match slot {
                Slot::Primary => rec.primary_ca.clone(),
                Slot::Backup => rec.backup_ca.clone(),
            };
            let account = self.keys.account(&ca).await?.map(|(url, _)| url);
            let identities = self
                .cas
                .iter()
                .find(|c| c.id == ca)
                .map(|c| c.identities.clone())
                .unwrap_or_default();
            slots.push((slot, ca, identities, account));
        }
        let mut checks = Vec::new();
        // One walk per base domain: an apex and its wildcard share it.
        let mut walks: HashMap<String, Result<Option<RelevantCaa>, String>> = HashMap::new();
        for domain in &rec.domains {
            let base = domain.trim_start_matches("*.").to_ascii_lowercase();
            if !walks.contains_key(&base) {
                let walk = relevant_caa(&self.lookup, &base).await;
                walks.insert(base.clone(), walk);
            }
            let walk = walks.get(&base).cloned().unwrap_or(Ok(None));
            for (slot, ca, identities, account) in &slots {
                let (status, detail, fix) = match &walk {
                    Err(e) => (
                        PreflightStatus::Error,
                        format!("could not check CAA: {e}"),
                        None,
                    ),
                    Ok(relevant) => {
                        let ask = CaaAsk {
                            domain,
                            ca,
                            identities,
                            account_uri: account.as_deref(),
                            challenge: rec.challenge,
                        };
                        match may_issue(&ask, relevant.as_ref()) {
                            CaaDecision::Allowed(why) => (PreflightStatus::Ok, why, None),
                            CaaDecision::Refused { detail, fix } => {
                                (PreflightStatus::Finding, detail, Some(fix))
                            }
                        }
                    }
                };
                checks.push(PreflightCheck {
                    check: "caa".into(),
                    slot: Some(slot.as_str().into()),
                    ca: Some(ca.clone()),
                    domain: domain.clone(),
                    status,
                    detail,
                    fix,
                });
            }
        }
        if rec.challenge.is_dns() {
            let mut seen = Vec::new();
            for domain in &rec.domains {
                let base = domain.trim_start_matches("*.").to_ascii_lowercase();
                if seen.contains(&base) {
                    continue;
                }
                seen.push(base.clone());
                checks.push(
                    self.delegation(&base, rec.challenge, rec.dns_provider.as_deref())
                        .await,
                );
            }
        }
        Ok(PreflightReport {
            checked_at: self.clock.now(),
            checks,
        })
    }

    /// Where `_acme-challenge.<base>` leads, and whether a configured
    /// provider (the pinned one, if any) serves it.
    async fn delegation(
        &self,
        base: &str,
        challenge: ChallengeKind,
        pinned: Option<&str>,
    ) -> PreflightCheck {
        let owner = format!("_acme-challenge.{base}");
        let check = |status, detail: String, fix: Option<String>| PreflightCheck {
            check: "delegation".into(),
            slot: None,
            ca: None,
            domain: base.to_string(),
            status,
            detail,
            fix,
        };
        let fqdn = match follow_cname(&self.lookup, &owner).await {
            Ok(f) => f,
            Err(e) => {
                return check(
                    PreflightStatus::Error,
                    format!("could not follow {owner}: {e}"),
                    None,
                );
            }
        };
        let via = if fqdn == owner {
            format!("{owner} has no CNAME")
        } else {
            format!("{owner} is a CNAME to {fqdn}")
        };
        if challenge == ChallengeKind::Dns01Manual {
            return check(
                PreflightStatus::Ok,
                format!("{via}: the TXT records will have to be published at {fqdn}"),
                None,
            );
        }
        let best = self
            .providers
            .iter()
            .filter(|p| pinned.is_none_or(|id| p.id == id))
            .filter_map(|p| longest_zone(&p.zones, &fqdn).map(|z| (z, p)))
            .max_by_key(|(z, _)| z.len());
        if let Some((zone, p)) = best {
            return check(
                PreflightStatus::Ok,
                format!("{via}; zone {zone} is served by DNS provider '{}'", p.id),
                None,
            );
        }
        let detail = match pinned {
            Some(id) => format!("{via}; DNS provider '{id}' (pinned) does not serve {fqdn}"),
            None => format!("{via}; no configured DNS provider serves {fqdn}"),
        };
        let fix = match &self.delegation_zone {
            Some(z) => format!("{owner}. CNAME {}.{z}.", base.replace('.', "-")),
            None => format!(
                "{owner}. CNAME <a name in a zone a [[dns_providers]] entry serves>, or add \
                 the zone of {owner} to a [[dns_providers]] entry's zones"
            ),
        };
        check(PreflightStatus::Finding, detail, Some(fix))
    }

    /// One `preflight_caa` alert per name while a CAA finding stands.
    async fn alert(&self, name_id: &str, report: &PreflightReport) -> Result<(), StoreError> {
        let findings: Vec<&PreflightCheck> = report
            .checks
            .iter()
            .filter(|c| c.check == "caa" && c.status == PreflightStatus::Finding)
            .collect();
        let Some(first) = findings.first() else {
            return self
                .alerts
                .resolve_alerts(CAA_ALERT, &[name_id.to_string()], report.checked_at)
                .await;
        };
        let message = format!(
            "CAA forbids CA {} ({} slot) for {}: add {}",
            first.ca.as_deref().unwrap_or("?"),
            first.slot.as_deref().unwrap_or("?"),
            first.domain,
            first.fix.as_deref().unwrap_or("a CAA record for the CA")
        );
        let details = serde_json::json!({ "name": name_id, "findings": findings });
        if self
            .alerts
            .raise_alert(
                CAA_ALERT,
                name_id,
                "warning",
                &message,
                Some(&details),
                report.checked_at,
            )
            .await?
        {
            warn!(alert = CAA_ALERT, name = %name_id, "{message}");
        }
        Ok(())
    }
}
