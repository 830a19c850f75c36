//! The status checker: on one replica at a time (a singleton lease), every
//! check interval, every current certificate's
//! standing at its CA is established — CRL first (the primary signal since
//! Let's Encrypt ended OCSP), OCSP where no CRL covers it, each answer
//! verified against the issuing certificate before it is believed — and
//! ARI windows are polled where the CA offers them. Then, in this order:
//! revocations are recorded with their evidence; CAs with many affected
//! certificates within the window become one CA-level incident (one
//! CA-wide swap, or one dry run waiting for an operator) instead of many
//! independent reactions; the rest get the per-name reaction (swap the
//! active slot away, re-provision revoked slots) as one operation; alerts
//! are raised and resolved (CRL/OCSP failures, expiry, names without a
//! usable standby).
//!
//! *Observes*: the current certificates (`store::Status`), CRLs, OCSP
//! responders and ARI windows of the CAs, open incidents, simulated CA
//! events (running `simulate` drills). *Writes*: check
//! outcomes, revocations with evidence, ARI windows, incidents, the
//! reactions (swaps and re-provisioning markers through
//! `store::Emergency`) and alerts. Decides nothing itself that `policy`
//! can decide.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use super::singleton::Singleton;
use crate::ca::CaClient;
use crate::certs;
use crate::clock::Clock;
use crate::clock::rfc3339;
use crate::config::RevocationConfig;
use crate::config::{IncidentPolicy, RevokedActivePolicy};
use crate::domain::Slot;
use crate::policy;
use crate::policy::reaction::{
    self, CaStanding, IncidentOutcome, NewIncident, OnActiveRevoked, OnIncident, PerName, Revoked,
    Settings, Signal,
};
use crate::revocation::crl::{self, VerifiedCrl};
use crate::revocation::fetch::{FetchedCrl, Fetcher};
use crate::revocation::ocsp::{self, CertStatus, OcspAnswer};
use crate::store::{
    Alerts, Audit, AuditEvent, Drills, Emergency, Incident, Incidents, Names, Reaction,
    RevocationFinding, RevokedSlot, Status, StatusTarget, StoreError, SwapScope, new_id,
};

/// The status checker controller and what it needs, nothing more.
pub struct StatusChecker {
    status: Status,
    incidents: Incidents,
    alerts: Alerts,
    emergency: Emergency,
    names: Names,
    audit: Audit,
    /// Simulated CA events (a `simulate` drill): read once per pass.
    drills: Drills,
    lease: Singleton,
    cas: BTreeMap<String, Arc<CaClient>>,
    clock: Arc<dyn Clock>,
    revocation: RevocationConfig,
    checker: Checker,
    /// Wakes the issuer when renewals became due (ARI, revocations).
    wake: Arc<Notify>,
}

/// Who automatic actions are audited as.
pub const ACTOR: &str = "twincert:revocation-check";
/// The singleton lease of the check pass.
const LEASE: &str = "revocation-check";
/// Certificates read per page.
const PAGE: u64 = 500;
/// OCSP and ARI requests in flight at once.
const PARALLEL: usize = 16;
/// Most subjects an alert kind keeps open (expiry, no standby).
const ALERT_LIMIT: u64 = 10_000;

/// What the pass keeps between runs: the HTTP fetcher with its CRL cache,
/// issuer certificates, the verified CRL per (URL, issuer) and the highest
/// CRL number seen per URL (a CDN serving an older copy is caught), and
/// when each certificate's OCSP answer goes stale. Entries for URLs and
/// certificates a pass no longer sees are dropped at its end.
struct Checker {
    fetcher: Result<Arc<Fetcher>, String>,
    issuers: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    verified: Mutex<HashMap<(String, String), VersionedCrl>>,
    crl_numbers: Mutex<HashMap<String, String>>,
    ocsp_until: Mutex<HashMap<String, i64>>,
}

/// A verified CRL and the fetched version it came from.
type VersionedCrl = (u64, Arc<VerifiedCrl>);

#[derive(Clone)]
enum CrlResult {
    Ok(Arc<VerifiedCrl>),
    /// A configured CA CRL that belongs to another issuer of the CA.
    NotForIssuer,
    Err(String),
}

impl Checker {
    fn new(refresh_seconds: u64) -> Checker {
        Checker {
            fetcher: Fetcher::new(
                Duration::from_secs(refresh_seconds),
                Duration::from_secs(30),
            )
            .map(Arc::new),
            issuers: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            crl_numbers: Mutex::new(HashMap::new()),
            ocsp_until: Mutex::new(HashMap::new()),
        }
    }

    /// Drops cached data of URLs, issuers and certificates this pass did
    /// not see (memory stays bounded by what is managed now).
    fn prune(&self, pass: &Pass) {
        if let Ok(f) = self.fetcher.as_ref() {
            f.retain(|url| pass.crl_fetched.contains_key(url));
        }
        if let Ok(mut m) = self.verified.lock() {
            m.retain(|(url, _), _| pass.crl_fetched.contains_key(url));
        }
        if let Ok(mut m) = self.crl_numbers.lock() {
            m.retain(|url, _| pass.crl_fetched.contains_key(url));
        }
        if let Ok(mut m) = self.issuers.lock() {
            m.retain(|k, _| pass.issuers_seen.contains(k));
        }
        if let Ok(mut m) = self.ocsp_until.lock() {
            m.retain(|id, _| pass.certs_seen.contains(id));
        }
    }
}

/// What one pass gathered before acting.
#[derive(Default)]
struct Pass {
    findings: Vec<RevocationFinding>,
    good: BTreeMap<&'static str, Vec<String>>,
    undecided: Vec<(String, String, String)>,
    crl_failures: BTreeMap<String, String>,
    crl_stale: BTreeMap<String, String>,
    /// Each CRL URL is fetched at most once per pass (a dead CRL server
    /// costs one timeout, not one per certificate).
    crl_fetched: HashMap<String, Result<FetchedCrl, String>>,
    /// Verification results of this pass per (URL, issuer).
    crl_results: HashMap<(String, String), CrlResult>,
    ocsp_failures: BTreeMap<String, String>,
    ocsp_unknown: Vec<String>,
    ari_moved: BTreeSet<String>,
    ari_due_now: usize,
    checked: usize,
    /// The lease was lost mid-page (another replica runs the pass).
    lost: bool,
    /// name/slot of certificates decided this pass (any source).
    decided: Vec<String>,
    issuers_seen: HashSet<String>,
    certs_seen: HashSet<String>,
    /// CAs under a simulated event, with the drill simulating it: every
    /// certificate of theirs is taken as revoked, the CA is not asked.
    simulated: HashMap<String, String>,
    /// Check outcomes recorded at or after this time and unchanged are not
    /// written again (now minus the heartbeat).
    fresh_after: i64,
}

impl Pass {
    /// Notes a check outcome for writing, unless the row read for this
    /// pass already records it recently enough: a steady pass over a
    /// million unchanged certificates sends no write for them at all.
    fn note(&mut self, t: &StatusTarget, source: &'static str, error: Option<String>) {
        if !t.needs_record(source, error.as_deref(), self.fresh_after) {
            return;
        }
        match error {
            None => self.good.entry(source).or_default().push(t.cert_id.clone()),
            Some(e) => self.undecided.push((t.cert_id.clone(), source.into(), e)),
        }
    }
}

/// Certificates of one issuer share its certificate and CRLs: the CA and
/// the authority key identifier (the ARI id's first part), or the issuer
/// DN when there is none — an issuer that rolls its key under the same
/// name is another issuer.
fn issuer_key(t: &StatusTarget) -> String {
    let aki = t
        .ari_cert_id
        .as_deref()
        .and_then(|a| a.split_once('.'))
        .map(|(aki, _)| aki)
        .unwrap_or_default();
    format!("{}\u{0}{}\u{0}{aki}", t.ca_id, t.issuer)
}

/// Whether decimal CRL number `a` is lower than `b`.
fn number_lower(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) < (b.len(), b)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}

/// The pending revocations as the facts `policy::reaction` decides on.
fn revoked_facts(pending: &[RevokedSlot]) -> Vec<Revoked<'_>> {
    pending
        .iter()
        .map(|r| Revoked {
            name: &r.name_id,
            slot: r.slot,
            ca: &r.ca_id,
            cert_id: &r.cert_id,
            active: r.active,
            evidence: &r.evidence,
        })
        .collect()
}

impl StatusChecker {
    /// A status checker over `store` for the configured CAs; it holds the
    /// `revocation-check` lease as `owner` and wakes the issuer by `wake`.
    pub(super) fn new(
        store: &crate::store::Store,
        cas: BTreeMap<String, Arc<CaClient>>,
        clock: Arc<dyn Clock>,
        revocation: RevocationConfig,
        owner: String,
        wake: Arc<Notify>,
    ) -> StatusChecker {
        let ttl = (revocation.check_interval_seconds as i64 * 3).max(30);
        StatusChecker {
            status: store.status().clone(),
            incidents: store.incidents().clone(),
            alerts: store.alerts().clone(),
            emergency: store.emergency().clone(),
            names: store.names().clone(),
            audit: store.audit().clone(),
            drills: store.drills().clone(),
            lease: Singleton::new(store.leases().clone(), LEASE, owner, ttl, clock.clone()),
            cas,
            clock,
            checker: Checker::new(revocation.refresh_seconds),
            revocation,
            wake,
        }
    }

    /// How often an unchanged check outcome is written again (hourly, or
    /// every pass when passes are rarer).
    fn check_heartbeat(&self) -> i64 {
        (self.revocation.check_interval_seconds as i64).max(3600)
    }

    /// Keeps this replica's lease on the pass; false once another took it.
    async fn renew_lease(&self) -> Result<bool, StoreError> {
        self.lease.renew().await
    }

    /// Runs the check pass every `check_interval_seconds` until shutdown,
    /// on whichever replica holds the singleton lease.
    pub(super) async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.revocation.check_interval_seconds.max(1));
        self.lease
            .run(every, shutdown, || {
                let me = self.clone();
                async move {
                    if let Err(e) = me.check_pass(me.clock.now()).await {
                        warn!(error = %e, "revocation check pass failed");
                    }
                }
            })
            .await
    }

    /// One pass over every current certificate, then the reactions.
    /// The lease is renewed after every page; a pass that lost it stops
    /// (another replica goes on).
    pub async fn check_pass(&self, now: i64) -> Result<(), StoreError> {
        if let Err(e) = &self.checker.fetcher {
            // Nothing can be checked; nothing is resolved as if fixed.
            error!(error = %e, "revocation checks disabled: no HTTP client");
            return Ok(());
        }
        let mut pass = Pass {
            simulated: self.drills.simulated_cas().await?.into_iter().collect(),
            fresh_after: now - self.check_heartbeat(),
            ..Pass::default()
        };
        let mut cursor: Option<(String, Slot)> = None;
        loop {
            let after = cursor.as_ref().map(|(n, s)| (n.as_str(), *s));
            let (page, next) = self.status.status_targets(after, PAGE, now).await?;
            let full = next.is_some();
            cursor = next;
            self.check_page(page, now, &mut pass).await?;
            if pass.lost || !self.renew_lease().await? {
                // What was verified is still true: recorded (idempotent),
                // reacted to by whoever holds the lease next.
                warn!("revocation check lease lost to another replica; this pass stops");
                self.status
                    .record_revocations(&pass.findings, ACTOR, now)
                    .await?;
                return Ok(());
            }
            if !full {
                break;
            }
        }
        for (source, ids) in &pass.good {
            self.status
                .record_checks(ids, source, None, now, self.check_heartbeat())
                .await?;
        }
        // Grouped: one CRL failure leaves every certificate it covers
        // undecided with the same error.
        let mut undecided: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
        for (id, source, error) in &pass.undecided {
            undecided
                .entry((source.as_str(), error.as_str()))
                .or_default()
                .push(id.clone());
        }
        for ((source, error), ids) in &undecided {
            self.status
                .record_checks(ids, source, Some(error), now, self.check_heartbeat())
                .await?;
        }
        let revoked = self
            .status
            .record_revocations(&pass.findings, ACTOR, now)
            .await?;
        let reacted = self.react(&pass.ari_moved, now).await?;
        self.failure_alerts(&pass, now).await?;
        self.expiry_alerts(now).await?;
        self.checker.prune(&pass);
        if !revoked.is_empty() || reacted > 0 || pass.ari_due_now > 0 {
            info!(
                checked = pass.checked,
                revoked = revoked.len(),
                reacted,
                ari_renew_now = pass.ari_due_now,
                "revocation check pass"
            );
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Reads what the pass needs from a certificate: where its status is
    /// published and its ARI id (once per certificate; returned for the
    /// page's batch write), and its issuer's certificate (cached).
    fn prepare(
        &self,
        t: &mut StatusTarget,
        chains: &HashMap<String, String>,
        sources: &mut Vec<(String, String, String, String)>,
    ) -> Result<Option<Arc<Vec<u8>>>, String> {
        let cached = |key: &str| {
            self.checker
                .issuers
                .lock()
                .ok()
                .and_then(|m| m.get(key).cloned())
        };
        if t.crl_urls.is_some()
            && let Some(c) = cached(&issuer_key(t))
        {
            return Ok(Some(c));
        }
        let pem = chains
            .get(&t.cert_id)
            .ok_or_else(|| "certificate vanished".to_string())?;
        let ders = certs::chain_ders(pem).map_err(|e| e.to_string())?;
        if t.crl_urls.is_none() {
            let found = certs::status_sources(&ders[0]).map_err(|e| e.to_string())?;
            let crls = found.crl_urls.join(" ");
            let ocsp_url = found.ocsp_url.unwrap_or_default();
            let ari = found.ari_cert_id.unwrap_or_default();
            sources.push((
                t.cert_id.clone(),
                crls.clone(),
                ocsp_url.clone(),
                ari.clone(),
            ));
            t.crl_urls = Some(crls);
            t.ocsp_url = Some(ocsp_url);
            t.ari_cert_id = Some(ari);
        }
        let key = issuer_key(t);
        if let Some(c) = cached(&key) {
            return Ok(Some(c));
        }
        let Some(issuer) = ders.get(1) else {
            return Ok(None);
        };
        let issuer = Arc::new(issuer.clone());
        if let Ok(mut m) = self.checker.issuers.lock() {
            m.insert(key, issuer.clone());
        }
        Ok(Some(issuer))
    }

    async fn check_page(
        &self,
        mut page: Vec<StatusTarget>,
        now: i64,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let fetcher = match &self.checker.fetcher {
            Ok(f) => f.clone(),
            Err(e) => {
                error!(error = %e, "revocation checks disabled: no HTTP client");
                return Ok(());
            }
        };
        let mut ocsp_wanted: Vec<(StatusTarget, Arc<Vec<u8>>)> = Vec::new();
        let mut ari_wanted: Vec<StatusTarget> = Vec::new();
        let mut sources = Vec::new();
        let mut prepared = Vec::with_capacity(page.len());
        // Chains are read (in one query) only for certificates whose
        // sources are not known yet or whose issuer is not cached.
        let known = |t: &StatusTarget| {
            t.crl_urls.is_some()
                && self
                    .checker
                    .issuers
                    .lock()
                    .is_ok_and(|m| m.contains_key(&issuer_key(t)))
        };
        let wanted: Vec<String> = page
            .iter()
            .filter(|t| !known(t))
            .map(|t| t.cert_id.clone())
            .collect();
        let chains = self.names.chain_pems(&wanted).await?;
        for t in page.iter_mut() {
            pass.checked += 1;
            pass.certs_seen.insert(t.cert_id.clone());
            let issuer = self.prepare(t, &chains, &mut sources);
            prepared.push(issuer);
        }
        self.status.set_status_sources(&sources).await?;
        for (t, issuer) in page.into_iter().zip(prepared) {
            if let Some(drill) = pass.simulated.get(&t.ca_id).cloned() {
                // A drill's simulated CA event (`[drills] allow_simulation`):
                // marked as such in the evidence, so the audit log shows it.
                pass.decided
                    .push(format!("{}/{}", t.name_id, t.slot.as_str()));
                pass.findings.push(RevocationFinding {
                    cert_id: t.cert_id.clone(),
                    revoked_at: now,
                    reason: None,
                    source: "simulation".into(),
                    evidence: serde_json::json!({
                        "simulated": true,
                        "drill": drill,
                        "note": "a drill's simulated CA event; the CA was not asked",
                    }),
                });
                continue;
            }
            let issuer = match issuer {
                Ok(Some(i)) => i,
                Ok(None) => {
                    pass.note(
                        &t,
                        "none",
                        Some("the stored chain has no issuer certificate".into()),
                    );
                    continue;
                }
                Err(e) => {
                    pass.note(&t, "none", Some(e));
                    continue;
                }
            };
            pass.issuers_seen.insert(issuer_key(&t));
            if self.revocation.ari
                && t.ari_cert_id.as_deref().is_some_and(|a| !a.is_empty())
                && t.ari_next_poll.is_none_or(|p| p <= now)
            {
                ari_wanted.push(t.clone());
            }
            // The certificate's own distribution points, then the CA's
            // configured CRLs (those of another issuer are skipped).
            let mut urls: Vec<(String, bool)> = t
                .crl_urls
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(|u| (u.to_string(), false))
                .collect();
            if let Some(ca) = self.cas.get(&t.ca_id) {
                urls.extend(ca.crl_urls().iter().map(|u| (u.clone(), true)));
            }
            let has_own = urls.iter().any(|(_, configured)| !configured);
            let mut covered = false;
            let mut own_failed = false;
            let mut revoked: Option<(String, Arc<VerifiedCrl>)> = None;
            let mut errors = Vec::new();
            for (url, configured) in &urls {
                match self
                    .verified_crl(&fetcher, url, *configured, &t, &issuer, now, pass)
                    .await
                {
                    CrlResult::Ok(c) => {
                        if revoked.is_none() && c.revoked.contains_key(&t.serial) {
                            revoked = Some((url.clone(), c));
                        }
                        covered = true;
                    }
                    CrlResult::NotForIssuer => {}
                    CrlResult::Err(e) => {
                        pass.crl_failures.insert(url.clone(), e.clone());
                        // A failing CRL of the certificate's own, or —
                        // when it names none — any configured one (it may
                        // be the shard that would list it).
                        own_failed |= !configured || !has_own;
                        errors.push(e);
                    }
                }
            }
            let has_ocsp =
                self.revocation.ocsp && t.ocsp_url.as_deref().is_some_and(|u| !u.is_empty());
            let subject = format!("{}/{}", t.name_id, t.slot.as_str());
            if let Some((url, c)) = revoked {
                pass.decided.push(subject);
                // A verified CRL listing it is decisive, whatever else failed.
                if let Some(entry) = c.revoked.get(&t.serial) {
                    pass.findings.push(RevocationFinding {
                        cert_id: t.cert_id.clone(),
                        revoked_at: entry.revoked_at,
                        reason: entry.reason.map(i64::from),
                        source: "crl".into(),
                        evidence: serde_json::json!({
                            "crl_url": url,
                            "crl_number": c.number,
                            "crl_this_update": rfc3339(c.this_update),
                            "crl_next_update": c.next_update.map(rfc3339),
                            "crl_issuer": c.issuer,
                            "revoked_at": rfc3339(entry.revoked_at),
                            "reason": entry.reason,
                        }),
                    });
                }
            } else if covered && !own_failed {
                pass.decided.push(subject);
                pass.note(&t, "crl", None);
            } else if has_ocsp {
                let due = self
                    .checker
                    .ocsp_until
                    .lock()
                    .map(|m| m.get(&t.cert_id).is_none_or(|u| *u <= now))
                    .unwrap_or(true);
                if due {
                    ocsp_wanted.push((t.clone(), issuer.clone()));
                }
            } else if !errors.is_empty() {
                // Its own CRL failed: a configured CRL of another shard
                // does not speak for it.
                pass.note(&t, "crl", Some(errors.join("; ")));
            } else {
                // Nothing to ask: shown as `no_source`, never as good.
                pass.decided.push(subject);
                pass.note(&t, "none", None);
            }
        }
        self.ask_ocsp(&fetcher, ocsp_wanted, now, pass).await?;
        self.poll_ari(ari_wanted, now, pass).await?;
        Ok(())
    }

    /// The CRL at `url` verified against `issuer`: fetched at most once
    /// per pass, verified once per version and issuer. Failures are
    /// remembered for this pass only (a clock-dependent rejection is
    /// retried next pass).
    #[allow(clippy::too_many_arguments)]
    async fn verified_crl(
        &self,
        fetcher: &Fetcher,
        url: &str,
        configured: bool,
        t: &StatusTarget,
        issuer: &[u8],
        now: i64,
        pass: &mut Pass,
    ) -> CrlResult {
        let ikey = issuer_key(t);
        if let Some(r) = pass.crl_results.get(&(url.to_string(), ikey.clone())) {
            return r.clone();
        }
        if !pass.crl_fetched.contains_key(url) {
            let fetched = fetcher.crl(url, now).await;
            if let Ok(f) = &fetched
                && let Some(stale) = &f.stale_reason
            {
                pass.crl_stale.insert(url.to_string(), stale.clone());
            }
            pass.crl_fetched.insert(url.to_string(), fetched);
        }
        let fetched = match pass.crl_fetched.get(url) {
            Some(Ok(f)) => f.clone(),
            Some(Err(e)) => return CrlResult::Err(e.clone()),
            None => return CrlResult::Err(format!("CRL {url}: not fetched")),
        };
        let key = (url.to_string(), ikey.clone());
        let cached = self
            .checker
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        let result = match cached {
            Some((version, c)) if version == fetched.version => {
                if c.next_update.is_some_and(|n| n + 300 < now) {
                    CrlResult::Err(format!(
                        "CRL {url} expired at {} and no newer one is served",
                        c.next_update.map(rfc3339).unwrap_or_default()
                    ))
                } else {
                    CrlResult::Ok(c)
                }
            }
            _ => match crl::verify(&fetched.bytes, issuer, now) {
                Ok(c) => self.accept_crl(fetcher, url, key, fetched.version, c),
                Err(e) if configured && matches!(e, crl::CrlError::WrongIssuer { .. }) => {
                    CrlResult::NotForIssuer
                }
                Err(e) => {
                    // Not cached as the current copy: the next pass fetches
                    // again (a CDN's one bad answer is not kept for an hour).
                    fetcher.reject(url);
                    CrlResult::Err(format!("CRL {url}: {e}"))
                }
            },
        };
        pass.crl_results
            .insert((url.to_string(), ikey), result.clone());
        result
    }

    /// A verified CRL is believed unless its number is lower than one seen
    /// before from the same URL (a stale copy predating revocations).
    fn accept_crl(
        &self,
        fetcher: &Fetcher,
        url: &str,
        key: (String, String),
        version: u64,
        c: VerifiedCrl,
    ) -> CrlResult {
        if let Some(n) = &c.number
            && let Ok(mut seen) = self.checker.crl_numbers.lock()
        {
            if let Some(prev) = seen.get(url)
                && number_lower(n, prev)
            {
                fetcher.reject(url);
                return CrlResult::Err(format!(
                    "CRL {url}: number {n} is lower than {prev} seen before (a stale copy)"
                ));
            }
            seen.insert(url.to_string(), n.clone());
        }
        fetcher.note_next_update(url, c.next_update);
        let c = Arc::new(c);
        if let Ok(mut m) = self.checker.verified.lock() {
            m.insert(key, (version, c.clone()));
        }
        CrlResult::Ok(c)
    }

    async fn ask_ocsp(
        &self,
        fetcher: &Arc<Fetcher>,
        wanted: Vec<(StatusTarget, Arc<Vec<u8>>)>,
        now: i64,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        for batch in wanted.chunks(PARALLEL) {
            // Slow responders must not let the lease run out unnoticed.
            if !self.renew_lease().await? {
                pass.lost = true;
                return Ok(());
            }
            let mut set = tokio::task::JoinSet::new();
            for (t, issuer) in batch {
                let Some(pem) = self.names.chain_pem(&t.cert_id).await? else {
                    continue;
                };
                let fetcher = fetcher.clone();
                let t = t.clone();
                let issuer = issuer.clone();
                set.spawn(async move {
                    let url = t.ocsp_url.clone().unwrap_or_default();
                    let result = async {
                        let ders = certs::chain_ders(&pem).map_err(|e| e.to_string())?;
                        let req = ocsp::request(&ders[0], &issuer).map_err(|e| e.to_string())?;
                        let rsp = fetcher.ocsp(&url, req).await?;
                        ocsp::verify_response(&rsp, &ders[0], &issuer, now)
                            .map_err(|e| format!("OCSP {url}: {e}"))
                    }
                    .await;
                    (t, url, result)
                });
            }
            while let Some(done) = set.join_next().await {
                let Ok((t, url, result)) = done else { continue };
                self.ocsp_outcome(t, url, result, now, pass);
            }
        }
        Ok(())
    }

    fn ocsp_outcome(
        &self,
        t: StatusTarget,
        url: String,
        result: Result<OcspAnswer, String>,
        now: i64,
        pass: &mut Pass,
    ) {
        let refresh = self.revocation.refresh_seconds as i64;
        let until = match &result {
            Ok(a) => a.next_update.unwrap_or(now + refresh).min(now + refresh),
            Err(_) => now,
        };
        if let Ok(mut m) = self.checker.ocsp_until.lock() {
            m.insert(t.cert_id.clone(), until);
        }
        let subject = format!("{}/{}", t.name_id, t.slot.as_str());
        if matches!(&result, Ok(a) if !matches!(a.status, CertStatus::Unknown)) {
            pass.decided.push(subject.clone());
        }
        match result {
            Ok(a) => match a.status {
                CertStatus::Good => pass.note(&t, "ocsp", None),
                CertStatus::Revoked { at, reason } => pass.findings.push(RevocationFinding {
                    cert_id: t.cert_id,
                    revoked_at: at,
                    reason: reason.map(i64::from),
                    source: "ocsp".into(),
                    evidence: serde_json::json!({
                        "ocsp_url": url,
                        "produced_at": rfc3339(a.produced_at),
                        "this_update": rfc3339(a.this_update),
                        "next_update": a.next_update.map(rfc3339),
                        "responder": a.responder,
                        "revoked_at": rfc3339(at),
                        "reason": reason,
                    }),
                }),
                CertStatus::Unknown => {
                    pass.ocsp_unknown.push(subject);
                    pass.note(
                        &t,
                        "ocsp",
                        Some(format!(
                            "OCSP {url}: the responder does not know this certificate"
                        )),
                    );
                }
            },
            Err(e) => {
                pass.ocsp_failures.insert(url, e.clone());
                pass.note(&t, "ocsp", Some(e));
            }
        }
    }

    async fn poll_ari(
        &self,
        wanted: Vec<StatusTarget>,
        now: i64,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let mut bases: HashMap<String, Option<String>> = HashMap::new();
        for batch in wanted.chunks(PARALLEL) {
            if !self.renew_lease().await? {
                pass.lost = true;
                return Ok(());
            }
            let mut set = tokio::task::JoinSet::new();
            for t in batch {
                let Some(ca) = self.cas.get(&t.ca_id).cloned() else {
                    continue;
                };
                if !bases.contains_key(&t.ca_id) {
                    let base = match ca.renewal_info_url().await {
                        Ok(b) => b,
                        Err(e) => {
                            warn!(ca = %t.ca_id, error = %e, "ARI: cannot read the directory");
                            None
                        }
                    };
                    bases.insert(t.ca_id.clone(), base);
                }
                let Some(Some(base)) = bases.get(&t.ca_id).cloned() else {
                    continue;
                };
                let t = t.clone();
                set.spawn(async move {
                    let id = t.ari_cert_id.clone().unwrap_or_default();
                    let r = ca.renewal_window(&base, &id).await;
                    (t, r)
                });
            }
            while let Some(done) = set.join_next().await {
                let Ok((t, result)) = done else { continue };
                self.ari_outcome(t, result, now, pass).await?;
            }
        }
        Ok(())
    }

    async fn ari_outcome(
        &self,
        t: StatusTarget,
        result: Result<crate::ca::AriWindow, String>,
        now: i64,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let min = self.revocation.ari_min_poll_seconds;
        let w = match result {
            Ok(w) => w,
            Err(e) => {
                warn!(certificate = %t.cert_id, error = %e, "ARI poll failed");
                let retry = (min * 10).min(3600).max(min) as i64;
                return self
                    .status
                    .ari_poll_failed(&t.cert_id, now + retry, now)
                    .await;
            }
        };
        let previous = t.ari_window_start.map(|_| t.renew_after);
        // A renewal already due stays due (a failing renewal must not be
        // pushed to "now" on every poll, hiding how overdue it is).
        // A window that cannot place a renewal inside this certificate's
        // life (Pebble 2.6's ±24 h for a short lifetime) is recorded and
        // shown, but the lifetime-based point stands.
        let usable = policy::ari_window_usable((w.start, w.end), (t.not_before, t.not_after), now);
        let renew = if t.renew_after <= now || !usable {
            t.renew_after
        } else {
            policy::ari_renewal_time(w.start, w.end, previous, random_u64())
        };
        let moved_past = policy::ari_moved_past(
            (w.start, w.end),
            t.ari_window_start,
            (t.not_before, t.not_after),
            now,
        );
        let max = policy::ari_max_poll_seconds(t.not_after - t.not_before);
        let next_poll = now + policy::ari_poll_delay(w.retry_after, min, max) as i64;
        self.status
            .record_ari(
                &t.cert_id,
                (w.start, w.end),
                w.explanation_url.as_deref(),
                next_poll,
                renew,
                moved_past,
                now,
            )
            .await?;
        if moved_past {
            pass.ari_moved.insert(t.ca_id.clone());
        }
        if renew <= now && t.renew_after > now {
            pass.ari_due_now += 1;
            self.audit
                .record(&AuditEvent {
                    at: now,
                    actor: ACTOR.into(),
                    action: "ari.renew_now".into(),
                    target: format!("{}/{}", t.name_id, t.slot.as_str()),
                    reason: Some(format!(
                        "{}'s ARI window {} – {} has started",
                        t.ca_id,
                        rfc3339(w.start),
                        rfc3339(w.end)
                    )),
                    result: "renewal due now".into(),
                    details: Some(
                        serde_json::json!({
                            "certificate": t.cert_id,
                            "window_start": rfc3339(w.start),
                            "window_end": rfc3339(w.end),
                            "explanation_url": w.explanation_url,
                            "early": moved_past,
                        })
                        .to_string(),
                    ),
                })
                .await?;
        }
        Ok(())
    }

    /// Decides what the revocations recorded and not yet reacted to (this
    /// pass's, and any left pending by a crash or a held incident) and the
    /// ARI windows moved into the past lead to: gathers where each CA
    /// involved stands, lets `policy::reaction::plan` decide (CA incidents
    /// first, then per-name reactions for the CAs without one), applies
    /// the plan. Returns how many revoked certificates were reacted to.
    async fn react(&self, ari_moved: &BTreeSet<String>, now: i64) -> Result<usize, StoreError> {
        let cfg = &self.revocation;
        // An incident whose outcome was never recorded (the process
        // stopped in between) is finished first.
        for inc in self.incidents.incidents_without_outcome().await? {
            self.incident_outcome(&inc, now).await?;
        }
        // Gather. The reads of one CA do not depend on what the plan then
        // writes for another, so all are read before anything is applied.
        let pending = self.status.pending_reactions(10_000).await?;
        let facts = revoked_facts(&pending);
        let mut cas: BTreeMap<String, CaStanding> = BTreeMap::new();
        for ca in reaction::cas_to_examine(&facts, ari_moved.iter().map(String::as_str)) {
            let standing = match self.incidents.open_incident(ca).await? {
                Some(open) => CaStanding::OpenIncident(OnIncident::from_stored(&open.policy)),
                None => {
                    let closed = self.incidents.last_incident_closed_at(ca).await?;
                    let since = reaction::signal_since(now, cfg.incident_window_seconds, closed);
                    let (revoked, ari_past, total) =
                        self.incidents.incident_signal(ca, since).await?;
                    CaStanding::NoIncident(Signal {
                        revoked,
                        ari_past,
                        total,
                    })
                }
            };
            cas.insert(ca.to_string(), standing);
        }
        // Decide.
        let plan = reaction::plan(&facts, &cas, &self.reaction_settings());
        // Apply.
        for incident in &plan.incidents {
            self.open_incident(incident, now).await?;
        }
        for group in &plan.reactions {
            self.react_per_name(group, now).await?;
        }
        Ok(plan.reacted())
    }

    /// The `[revocation]` settings as policy reads them.
    fn reaction_settings(&self) -> Settings {
        let cfg = &self.revocation;
        Settings {
            on_active_revoked: match cfg.on_active_revoked {
                RevokedActivePolicy::Swap => OnActiveRevoked::Swap,
                RevokedActivePolicy::Alert => OnActiveRevoked::Alert,
            },
            on_incident: match cfg.incident_policy {
                IncidentPolicy::Swap => OnIncident::Swap,
                IncidentPolicy::Manual => OnIncident::Manual,
            },
            incident_percent: cfg.incident_percent,
            incident_count: cfg.incident_count,
            incident_min_count: cfg.incident_min_count,
            incident_window_seconds: cfg.incident_window_seconds,
        }
    }

    /// Applies one per-name reaction (one operation): the swaps and
    /// re-provisioning the plan chose, then its alerts.
    async fn react_per_name(&self, group: &PerName<'_>, now: i64) -> Result<(), StoreError> {
        let report = self
            .emergency
            .react_to_revocations(
                &Reaction {
                    kind: "revocation".into(),
                    reason: group.reason.clone(),
                    actor: ACTOR.into(),
                    swap_names: group.swap_names.iter().map(|n| n.to_string()).collect(),
                    reprovision: group
                        .reprovision
                        .iter()
                        .map(|(name, slot, cert)| (name.to_string(), *slot, cert.to_string()))
                        .collect(),
                    cert_ids: group.cert_ids.iter().map(|c| c.to_string()).collect(),
                    avoid_ca: group.avoid_ca.clone(),
                    evidence: serde_json::json!(
                        group
                            .revoked
                            .iter()
                            .map(|r| serde_json::json!({
                                "name": r.name,
                                "slot": r.slot.as_str(),
                                "ca": r.ca,
                                "active": r.active,
                                "evidence": r.evidence,
                            }))
                            .collect::<Vec<_>>()
                    ),
                },
                now,
            )
            .await?;
        warn!(
            revoked = group.revoked.len(),
            swapped = report.swapped,
            without_standby = report.not_swapped,
            reprovision = report.marked,
            operation = report.operation_id.as_deref().unwrap_or(""),
            "revoked certificates: reacted"
        );
        for (r, alert) in &group.alerts {
            self.alert(
                alert.kind,
                &alert.subject,
                alert.severity,
                &alert.message,
                Some(&serde_json::json!({
                    "operation": report.operation_id,
                    "evidence": r.evidence,
                })),
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Opens a CA incident (once across replicas) with the revocations the
    /// plan chose as evidence, then runs its outcome.
    async fn open_incident(&self, planned: &NewIncident<'_>, now: i64) -> Result<(), StoreError> {
        let incident = Incident {
            id: new_id(),
            ca_id: planned.ca.clone(),
            state: "open".into(),
            policy: planned.on_incident.as_str().into(),
            revoked: planned.signal.revoked,
            ari_past: planned.signal.ari_past,
            total: planned.signal.total,
            window_seconds: self.revocation.incident_window_seconds,
            summary: planned.summary.clone(),
            operation_id: None,
            dry_run: None,
            opened_at: now,
            closed_at: None,
            closed_by: None,
            close_reason: None,
        };
        let evidence = serde_json::json!(
            planned
                .evidence
                .iter()
                .map(|r| serde_json::json!({
                    "name": r.name,
                    "slot": r.slot.as_str(),
                    "certificate": r.cert_id,
                    "evidence": r.evidence,
                }))
                .collect::<Vec<_>>()
        );
        if !self
            .incidents
            .create_incident(&incident, &evidence, ACTOR)
            .await?
        {
            return Ok(());
        }
        self.incident_outcome(&incident, now).await
    }

    /// What an open incident does, per its policy
    /// (`policy::reaction::incident_outcome`): the CA-wide swap (and the
    /// re-provisioning of the CA's revoked standbys elsewhere; its
    /// pending revocations count as reacted to), or the dry run stored
    /// for an operator; then the alert. Safe to repeat (a swap of names
    /// already swapped flips nothing).
    async fn incident_outcome(&self, incident: &Incident, now: i64) -> Result<(), StoreError> {
        let ca = incident.ca_id.as_str();
        let reason = format!("CA incident {}: {}", incident.id, incident.summary);
        let scope = SwapScope::Ca(ca.to_string());
        let outcome = reaction::incident_outcome(OnIncident::from_stored(&incident.policy));
        let (operation, dry) = match outcome {
            IncidentOutcome::CaWideSwap => {
                let report = self
                    .emergency
                    .mass_swap(&scope, &reason, ACTOR, false, now)
                    .await?;
                // Read after the swap: what it left of the CA's revocations.
                let pending = self.status.pending_reactions(100_000).await?;
                let facts = revoked_facts(&pending);
                let left = reaction::after_ca_wide_swap(ca, &facts);
                self.emergency
                    .react_to_revocations(
                        &Reaction {
                            kind: "incident".into(),
                            reason: reason.clone(),
                            actor: ACTOR.into(),
                            swap_names: Vec::new(),
                            reprovision: left
                                .reprovision
                                .iter()
                                .map(|(name, slot, cert)| {
                                    (name.to_string(), *slot, cert.to_string())
                                })
                                .collect(),
                            cert_ids: left.cert_ids.iter().map(|c| c.to_string()).collect(),
                            avoid_ca: Some(ca.to_string()),
                            evidence: serde_json::json!({ "incident": incident.id }),
                        },
                        now,
                    )
                    .await?;
                (report.operation_id, None)
            }
            IncidentOutcome::DryRun => {
                let report = self
                    .emergency
                    .mass_swap(&scope, &reason, ACTOR, true, now)
                    .await?;
                (None, Some(serde_json::json!(report)))
            }
        };
        self.incidents
            .set_incident_outcome(&incident.id, operation.as_deref(), dry.as_ref())
            .await?;
        let what = reaction::incident_outcome_text(outcome, ca, &incident.id, operation.as_deref());
        error!(ca = %ca, incident = %incident.id, policy = %incident.policy, "CA incident: {}; {what}", incident.summary);
        let alert = reaction::incident_alert(ca, &incident.summary, &what);
        self.alert(
            alert.kind,
            &alert.subject,
            alert.severity,
            &alert.message,
            Some(&serde_json::json!({
                "incident": incident.id,
                "operation": operation,
                "dry_run": dry,
            })),
            now,
        )
        .await?;
        Ok(())
    }

    /// Raises an alert; logs it when it is new (a repeated condition only
    /// counts up).
    async fn alert(
        &self,
        kind: &str,
        subject: &str,
        severity: &str,
        message: &str,
        details: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<(), StoreError> {
        if self
            .alerts
            .raise_alert(kind, subject, severity, message, details, now)
            .await?
        {
            warn!(alert = kind, subject, severity, "{message}");
        }
        Ok(())
    }

    async fn failure_alerts(&self, pass: &Pass, now: i64) -> Result<(), StoreError> {
        for (url, e) in &pass.crl_failures {
            self.alert(
                "crl_invalid",
                url,
                "critical",
                &format!("CRL unusable (fetch or verification failed); revocations cannot be seen through it: {e}"),
                None,
                now,
            )
            .await?;
        }
        let urls: Vec<String> = pass.crl_failures.keys().cloned().collect();
        self.alerts
            .resolve_alerts_except("crl_invalid", &urls, now)
            .await?;
        for (url, e) in &pass.ocsp_failures {
            self.alert(
                "ocsp_invalid",
                url,
                "critical",
                &format!(
                    "OCSP check failed or its answer was rejected (no action taken on it): {e}"
                ),
                None,
                now,
            )
            .await?;
        }
        self.alerts.resolve_revoked_alerts(now).await?;
        let urls: Vec<String> = pass.ocsp_failures.keys().cloned().collect();
        self.alerts
            .resolve_alerts_except("ocsp_invalid", &urls, now)
            .await?;
        for subject in &pass.ocsp_unknown {
            self.alert(
                "ocsp_unknown",
                subject,
                "warning",
                &format!("{subject}: the CA's OCSP responder does not know this certificate (no action taken)"),
                None,
                now,
            )
            .await?;
        }
        // Only subjects decided this pass (by OCSP, or another way: the CRL
        // is back, the slot was re-issued without an OCSP URL) are cleared;
        // an OCSP answer not yet due says nothing new.
        self.alerts
            .resolve_alerts("ocsp_unknown", &pass.decided, now)
            .await?;
        for (url, e) in &pass.crl_stale {
            self.alert(
                "crl_stale",
                url,
                "warning",
                &format!(
                    "the CA's CRL cannot be fetched; its last copy (still current) is used: {e}"
                ),
                None,
                now,
            )
            .await?;
        }
        let urls: Vec<String> = pass.crl_stale.keys().cloned().collect();
        self.alerts
            .resolve_alerts_except("crl_stale", &urls, now)
            .await?;
        Ok(())
    }

    /// Slots near expiry without a successful renewal, and names without a
    /// usable standby for too long.
    async fn expiry_alerts(&self, now: i64) -> Result<(), StoreError> {
        let cfg = &self.revocation;
        let expiring = self
            .status
            .expiring_slots(now, cfg.expiry_alert_fraction, ALERT_LIMIT)
            .await?;
        let mut subjects = Vec::with_capacity(expiring.len());
        for (name, slot, ca, not_after, last_error) in &expiring {
            let subject = format!("{name}/{}", slot.as_str());
            let left = not_after - now;
            let state = if left <= 0 {
                "has EXPIRED".to_string()
            } else {
                format!("expires in {} h", left / 3600)
            };
            self.alert(
                "expiry_soon",
                &subject,
                if left <= 0 { "critical" } else { "warning" },
                &format!(
                    "{subject} ({ca}) {state} ({}) and no renewal has succeeded{}",
                    rfc3339(*not_after),
                    last_error
                        .as_deref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ),
                None,
                now,
            )
            .await?;
            subjects.push(subject);
        }
        // A list cut at the limit says nothing about the rest.
        if (expiring.len() as u64) < ALERT_LIMIT {
            self.alerts
                .resolve_alerts_except("expiry_soon", &subjects, now)
                .await?;
        }
        let missing = self
            .status
            .track_standby(
                now,
                cfg.no_standby_alert_seconds,
                policy::NO_STANDBY_LIFETIME_DIVISOR,
                ALERT_LIMIT,
            )
            .await?;
        let mut names = Vec::with_capacity(missing.len());
        for (name, since) in &missing {
            self.alert(
                "no_standby",
                name,
                "warning",
                &format!(
                    "{name} has had no usable standby certificate since {} (none, expired, \
                     revoked, compromised, or superseded by an emergency operation and not yet \
                     re-issued: see the name's slots)",
                    rfc3339(*since)
                ),
                None,
                now,
            )
            .await?;
            names.push(name.clone());
        }
        if (missing.len() as u64) < ALERT_LIMIT {
            self.alerts
                .resolve_alerts_except("no_standby", &names, now)
                .await?;
        }
        Ok(())
    }
}
