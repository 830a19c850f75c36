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
//! * **Provider** (DNS-01): the provider the delegation check placed the
//!   records with is asked, read-only, whether it answers and takes our
//!   credentials for that zone (`DnsProvider::check`: a TSIG-signed SOA
//!   query, a zone GET or lookup, acme-dns's `/health`; exec and webhook
//!   cannot be checked without a change and say so). One answer stands
//!   for every name in that (provider, zone) for [`PROVIDER_CHECK_TTL`],
//!   so a daily pass over many names asks each provider once per zone.
//!   Only a process with the worker role holds provider credentials; an
//!   API-only process repeats the worker's last provider check of the
//!   name, marked as such, or says it was not checked here.
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
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::caa::relevant_caa;
use super::dns::{DnsLookup, follow_cname};
use crate::clock::Clock;
use crate::domain::{ChallengeKind, PreflightCheck, PreflightReport, PreflightStatus, Slot};
use crate::policy::caa::{CaaAsk, CaaDecision, RelevantCaa, may_issue};
use crate::providers::dns::{DnsProvider, ProviderCheck, longest_zone};
use crate::store::{Alerts, Keys, NameRecord, Names, Preflights, Store, StoreError};

/// The alert kind raised for a name whose CAA forbids one of its CAs.
pub const CAA_ALERT: &str = "preflight_caa";

/// How long (seconds) one provider check stands for every name whose
/// records go to the same (provider, zone): five minutes.
pub const PROVIDER_CHECK_TTL: i64 = 300;

/// One (provider, zone)'s last check and when it was made; the async
/// lock is held while asking, so names checked at once wait for one call.
type CheckSlot = Arc<tokio::sync::Mutex<Option<(i64, ProviderCheck)>>>;

/// Provider checks kept per (provider id, zone) for a time, so a pass
/// over a million names in one zone asks the provider once per
/// [`PROVIDER_CHECK_TTL`], not a million times — also when the pass checks
/// several names at once. Every outcome is kept, failures too: a provider
/// that is down is not asked once per name.
#[derive(Debug)]
pub struct ProviderChecks {
    ttl: i64,
    entries: Mutex<HashMap<(String, String), CheckSlot>>,
}

impl ProviderChecks {
    /// A cache whose entries stand for `ttl` seconds.
    pub fn new(ttl: i64) -> ProviderChecks {
        ProviderChecks {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `provider`'s check of `zone` as of `now`, and when it was made:
    /// the kept one while younger than the ttl (unless `fresh`: an
    /// operator's on-demand check asks again, e.g. after fixing a key),
    /// else a new one, which is kept.
    pub async fn get(
        &self,
        provider: &dyn DnsProvider,
        zone: &str,
        now: i64,
        fresh: bool,
    ) -> (ProviderCheck, i64) {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            // Drop what expired (unless being asked right now), so the map
            // holds at most the (provider, zone) pairs of the last ttl.
            entries.retain(|_, slot| {
                slot.try_lock().map_or(true, |kept| {
                    kept.as_ref().is_some_and(|(at, _)| now - *at < self.ttl)
                })
            });
            entries
                .entry((provider.id().to_string(), zone.to_string()))
                .or_default()
                .clone()
        };
        let mut kept = slot.lock().await;
        if let Some((at, check)) = kept.as_ref()
            && !fresh
            && now - *at < self.ttl
        {
            return (check.clone(), *at);
        }
        let check = provider.check(zone).await;
        *kept = Some((now, check.clone()));
        (check, now)
    }
}

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
    /// The providers with their credentials; empty in an API-only process.
    handles: Vec<Arc<dyn DnsProvider>>,
    provider_checks: ProviderChecks,
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
            handles: Vec::new(),
            provider_checks: ProviderChecks::new(PROVIDER_CHECK_TTL),
            names: store.names().clone(),
            keys: store.keys().clone(),
            preflights: store.preflights().clone(),
            alerts: store.alerts().clone(),
            clock,
        }
    }

    /// Checks each name's DNS provider through these (the worker's
    /// providers, with their credentials). Without them the `provider`
    /// check repeats the worker's last one.
    pub fn with_providers(mut self, handles: Vec<Arc<dyn DnsProvider>>) -> Preflight {
        self.handles = handles;
        self
    }

    /// Checks `name_id`, stores the report, raises or resolves its CAA
    /// alert and returns the report; None when there is no such name.
    /// Only a store failure is an `Err`: DNS failures are in the report.
    /// The provider check may be one made for another name within
    /// [`PROVIDER_CHECK_TTL`] (the controller's passes).
    pub async fn check_name(&self, name_id: &str) -> Result<Option<PreflightReport>, StoreError> {
        self.check(name_id, false).await
    }

    /// As [`Preflight::check_name`], asking the provider again (an
    /// operator's on-demand check, e.g. after fixing a credential).
    pub async fn check_name_now(
        &self,
        name_id: &str,
    ) -> Result<Option<PreflightReport>, StoreError> {
        self.check(name_id, true).await
    }

    async fn check(
        &self,
        name_id: &str,
        fresh: bool,
    ) -> Result<Option<PreflightReport>, StoreError> {
        let Some(rec) = self.names.name(name_id).await? else {
            return Ok(None);
        };
        let report = self.report(&rec, fresh).await?;
        self.preflights
            .save(&rec.id, (&rec.primary_ca, &rec.backup_ca), &report)
            .await?;
        self.alert(&rec.id, &report).await?;
        Ok(Some(report))
    }

    async fn report(&self, rec: &NameRecord, fresh: bool) -> Result<PreflightReport, StoreError> {
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
            let mut placed: Vec<(String, String, String)> = Vec::new();
            for domain in &rec.domains {
                let base = domain.trim_start_matches("*.").to_ascii_lowercase();
                if seen.contains(&base) {
                    continue;
                }
                seen.push(base.clone());
                let (check, place) = self
                    .delegation(&base, rec.challenge, rec.dns_provider.as_deref())
                    .await;
                checks.push(check);
                if let Some((provider, zone)) = place
                    && !placed.iter().any(|(p, z, _)| *p == provider && *z == zone)
                {
                    placed.push((provider, zone, base));
                }
            }
            if !placed.is_empty() {
                let previous = if self.handles.is_empty() {
                    self.preflights.latest(&rec.id).await?
                } else {
                    None
                };
                for (provider, zone, base) in placed {
                    checks.push(
                        self.provider(&provider, &zone, &base, previous.as_ref(), fresh)
                            .await,
                    );
                }
            }
        }
        Ok(PreflightReport {
            checked_at: self.clock.now(),
            checks,
        })
    }

    /// The `provider` check of the (provider, zone) that `base`'s records
    /// go to: asked now or within the ttl, or — in a process without
    /// provider credentials — the worker's last check from `previous`.
    async fn provider(
        &self,
        provider_id: &str,
        zone: &str,
        base: &str,
        previous: Option<&PreflightReport>,
        fresh: bool,
    ) -> PreflightCheck {
        let check = |status, detail: String, fix: Option<String>| PreflightCheck {
            check: "provider".into(),
            slot: None,
            ca: None,
            domain: base.to_string(),
            status,
            detail,
            fix,
        };
        let Some(handle) = self.handles.iter().find(|h| h.id() == provider_id) else {
            let ours = format!("DNS provider '{provider_id}'");
            if let Some(last) = previous.and_then(|r| {
                r.checks
                    .iter()
                    .find(|c| c.check == "provider" && c.domain == base)
            }) && !last.detail.contains("not checked in this process")
            {
                let mut kept = last.clone();
                kept.domain = base.to_string();
                if !kept.detail.contains("(as a worker checked it at ") {
                    kept.detail = format!(
                        "{} (as a worker checked it at {}; this process holds no DNS provider \
                         credentials)",
                        kept.detail,
                        previous.map(|r| r.checked_at).unwrap_or_default()
                    );
                }
                return kept;
            }
            return check(
                PreflightStatus::Ok,
                format!(
                    "{ours} for zone {zone}: not checked in this process (it holds no DNS \
                     provider credentials); a worker's preflight pass checks it"
                ),
                None,
            );
        };
        let now = self.clock.now();
        let (outcome, at) = self
            .provider_checks
            .get(handle.as_ref(), zone, now, fresh)
            .await;
        let age = if at < now {
            format!(" (checked {} s ago)", now - at)
        } else {
            String::new()
        };
        match outcome {
            ProviderCheck::Verified(d) => check(PreflightStatus::Ok, format!("{d}{age}"), None),
            ProviderCheck::NotCheckable(d) => check(PreflightStatus::Ok, format!("{d}{age}"), None),
            ProviderCheck::Refused { detail, fix } => check(
                PreflightStatus::Finding,
                format!("{detail}{age}"),
                Some(fix),
            ),
            ProviderCheck::Unreachable(d) => {
                check(PreflightStatus::Error, format!("{d}{age}"), None)
            }
        }
    }

    /// Where `_acme-challenge.<base>` leads, and whether a configured
    /// provider (the pinned one, if any) serves it; with the (provider,
    /// zone) that will receive the records.
    async fn delegation(
        &self,
        base: &str,
        challenge: ChallengeKind,
        pinned: Option<&str>,
    ) -> (PreflightCheck, Option<(String, String)>) {
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
                return (
                    check(
                        PreflightStatus::Error,
                        format!("could not follow {owner}: {e}"),
                        None,
                    ),
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
            return (
                check(
                    PreflightStatus::Ok,
                    format!("{via}: the TXT records will have to be published at {fqdn}"),
                    None,
                ),
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
            return (
                check(
                    PreflightStatus::Ok,
                    format!("{via}; zone {zone} is served by DNS provider '{}'", p.id),
                    None,
                ),
                Some((p.id.clone(), zone)),
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
        (check(PreflightStatus::Finding, detail, Some(fix)), None)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::providers::dns::{CheckFuture, DnsFuture};

    /// Counts its checks; refuses zone `bad.test`.
    struct Counting {
        id: &'static str,
        calls: AtomicUsize,
    }

    impl DnsProvider for Counting {
        fn id(&self) -> &str {
            self.id
        }
        fn zone_for(&self, _: &str) -> Option<String> {
            None
        }
        fn present<'a>(&'a self, _: &'a str, _: &'a str) -> DnsFuture<'a> {
            unreachable!("preflight never presents")
        }
        fn cleanup<'a>(&'a self, _: &'a str, _: &'a str) -> DnsFuture<'a> {
            unreachable!("preflight never cleans up")
        }
        fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                // Answers on the next poll, as a network call would, so a
                // second caller meanwhile finds the ask in flight.
                tokio::task::yield_now().await;
                if zone == "bad.test" {
                    ProviderCheck::Refused {
                        detail: format!("call {n}"),
                        fix: "x".into(),
                    }
                } else {
                    ProviderCheck::Verified(format!("call {n}"))
                }
            })
        }
    }

    #[tokio::test]
    async fn one_check_per_provider_and_zone_stands_for_the_ttl() {
        let cache = ProviderChecks::new(300);
        let a = Counting {
            id: "a",
            calls: AtomicUsize::new(0),
        };
        let b = Counting {
            id: "b",
            calls: AtomicUsize::new(0),
        };
        // (case, provider, zone, now, the outcome, when it was made, a's and b's calls after)
        type Case<'a> = (
            &'a str,
            &'a Counting,
            &'a str,
            i64,
            ProviderCheck,
            i64,
            (usize, usize),
        );
        let ok = |n: usize| ProviderCheck::Verified(format!("call {n}"));
        let cases: Vec<Case> = vec![
            ("first ask", &a, "x.test", 1000, ok(1), 1000, (1, 0)),
            (
                "same pair within the ttl",
                &a,
                "x.test",
                1299,
                ok(1),
                1000,
                (1, 0),
            ),
            ("another zone of a", &a, "y.test", 1100, ok(2), 1100, (2, 0)),
            (
                "the same zone at b",
                &b,
                "x.test",
                1100,
                ok(1),
                1100,
                (2, 1),
            ),
            (
                "expired: asked again",
                &a,
                "x.test",
                1300,
                ok(3),
                1300,
                (3, 1),
            ),
            (
                "a refusal is kept too",
                &a,
                "bad.test",
                1300,
                ProviderCheck::Refused {
                    detail: "call 4".into(),
                    fix: "x".into(),
                },
                1300,
                (4, 1),
            ),
            (
                "and not asked again within the ttl",
                &a,
                "bad.test",
                1500,
                ProviderCheck::Refused {
                    detail: "call 4".into(),
                    fix: "x".into(),
                },
                1300,
                (4, 1),
            ),
        ];
        for (name, provider, zone, now, want, want_at, calls) in cases {
            let (got, at) = cache.get(provider, zone, now, false).await;
            assert_eq!((got, at), (want, want_at), "{name}");
            assert_eq!(
                (
                    a.calls.load(Ordering::SeqCst),
                    b.calls.load(Ordering::SeqCst)
                ),
                calls,
                "{name}"
            );
        }
        // An operator's on-demand check asks again, and keeps the answer.
        let (got, at) = cache.get(&a, "x.test", 1301, true).await;
        assert_eq!((got, at), (ok(5), 1301));
        assert_eq!(cache.get(&a, "x.test", 1302, false).await, (ok(5), 1301));
        // Names checked at once wait for one call.
        let (one, two) = tokio::join!(
            cache.get(&b, "y.test", 2000, false),
            cache.get(&b, "y.test", 2000, false)
        );
        assert_eq!((one, two), ((ok(2), 2000), (ok(2), 2000)));
        assert_eq!(b.calls.load(Ordering::SeqCst), 2);
        // Expired entries are dropped, not kept forever.
        let _ = cache.get(&a, "z.test", 10_000, false).await;
        assert_eq!(cache.entries.lock().unwrap().len(), 1);
    }
}
