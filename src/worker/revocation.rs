//! The revocation check pass (issue 6): on one replica at a time (a
//! singleton lease), every check interval, every current certificate's
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::Worker;
use crate::certs;
use crate::config::{IncidentPolicy, RevokedActivePolicy};
use crate::domain::Slot;
use crate::policy;
use crate::revocation::crl::{self, VerifiedCrl};
use crate::revocation::fetch::Fetcher;
use crate::revocation::ocsp::{self, CertStatus, OcspAnswer};
use crate::store::{
    AuditEvent, Incident, Reaction, RevocationFinding, RevokedSlot, StatusTarget, StoreError,
    SwapScope, new_id,
};

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
/// issuer certificates, verified CRLs, and when each certificate's OCSP
/// answer goes stale.
pub(super) struct Checker {
    fetcher: Result<Arc<Fetcher>, String>,
    issuers: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    verified: Mutex<HashMap<(String, u64, String), CrlResult>>,
    ocsp_until: Mutex<HashMap<String, i64>>,
}

#[derive(Clone)]
enum CrlResult {
    Ok(Arc<VerifiedCrl>),
    /// A configured CA CRL that belongs to another issuer of the CA.
    NotForIssuer,
    Err(String),
}

impl Checker {
    pub(super) fn new(refresh_seconds: u64) -> Checker {
        Checker {
            fetcher: Fetcher::new(
                Duration::from_secs(refresh_seconds),
                Duration::from_secs(30),
            )
            .map(Arc::new),
            issuers: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            ocsp_until: Mutex::new(HashMap::new()),
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
    ocsp_failures: BTreeMap<String, String>,
    ocsp_unknown: Vec<String>,
    ari_moved: BTreeSet<String>,
    ari_due_now: usize,
    checked: usize,
}

fn issuer_key(t: &StatusTarget) -> String {
    format!("{}\u{0}{}", t.ca_id, t.issuer)
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Worker {
    /// Runs the check pass every `check_interval_seconds` until shutdown,
    /// on whichever replica holds the singleton lease.
    pub(super) async fn revocation_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.revocation.check_interval_seconds.max(1));
        let ttl = (self.revocation.check_interval_seconds as i64 * 3).max(30);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = self.clock.now();
            match self
                .store
                .singleton_lease(LEASE, &self.owner, now, ttl)
                .await
            {
                Ok(true) => {
                    if let Err(e) = self.check_pass(now).await {
                        warn!(error = %e, "revocation check pass failed");
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "revocation check lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One pass over every current certificate.
    pub async fn check_pass(&self, now: i64) -> Result<(), StoreError> {
        let mut pass = Pass::default();
        let mut cursor = String::new();
        loop {
            let page = self.store.status_targets(&cursor, PAGE, now).await?;
            let Some(last) = page.last() else { break };
            cursor = last.cert_id.clone();
            self.check_page(page.clone(), now, &mut pass).await?;
            if (page.len() as u64) < PAGE {
                break;
            }
        }
        for (source, ids) in &pass.good {
            self.store.record_checks(ids, source, None, now).await?;
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
            self.store
                .record_checks(ids, source, Some(error), now)
                .await?;
        }
        let revoked = self
            .store
            .record_revocations(&pass.findings, ACTOR, now)
            .await?;
        self.react(&revoked, &pass.ari_moved, now).await?;
        self.failure_alerts(&pass, now).await?;
        self.expiry_alerts(now).await?;
        if !revoked.is_empty() || pass.ari_due_now > 0 {
            info!(
                checked = pass.checked,
                revoked = revoked.len(),
                ari_renew_now = pass.ari_due_now,
                "revocation check pass"
            );
            self.wake();
        }
        Ok(())
    }

    /// Reads what the pass needs from each certificate once: where its
    /// status is published, its ARI id, its issuer's certificate.
    async fn prepare(&self, t: &mut StatusTarget) -> Result<Option<Arc<Vec<u8>>>, String> {
        let key = issuer_key(t);
        let cached = self
            .checker
            .issuers
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        if t.crl_urls.is_some() && cached.is_some() {
            return Ok(cached);
        }
        let pem = self
            .store
            .chain_pem(&t.cert_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "certificate vanished".to_string())?;
        let ders = certs::chain_ders(&pem).map_err(|e| e.to_string())?;
        if t.crl_urls.is_none() {
            let (crls, ocsp_url) = certs::status_sources(&ders[0]).map_err(|e| e.to_string())?;
            let crls = crls.join(" ");
            let ocsp_url = ocsp_url.unwrap_or_default();
            let ari = crate::ca::ari_cert_id(&ders[0]).unwrap_or_default();
            self.store
                .set_status_sources(&t.cert_id, &crls, &ocsp_url, &ari)
                .await
                .map_err(|e| e.to_string())?;
            t.crl_urls = Some(crls);
            t.ocsp_url = Some(ocsp_url);
            t.ari_cert_id = Some(ari);
        }
        match (cached, ders.get(1)) {
            (Some(c), _) => Ok(Some(c)),
            (None, Some(issuer)) => {
                let issuer = Arc::new(issuer.clone());
                if let Ok(mut m) = self.checker.issuers.lock() {
                    m.insert(key, issuer.clone());
                }
                Ok(Some(issuer))
            }
            (None, None) => Ok(None),
        }
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
        for t in page.iter_mut() {
            pass.checked += 1;
            let issuer = match self.prepare(t).await {
                Ok(Some(i)) => i,
                Ok(None) => {
                    pass.undecided.push((
                        t.cert_id.clone(),
                        "none".into(),
                        "the stored chain has no issuer certificate".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    pass.undecided.push((t.cert_id.clone(), "none".into(), e));
                    continue;
                }
            };
            if self.revocation.ari
                && t.ari_cert_id.as_deref().is_some_and(|a| !a.is_empty())
                && t.ari_next_poll.is_none_or(|p| p <= now)
            {
                ari_wanted.push(t.clone());
            }
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
            let mut covered: Option<(String, Arc<VerifiedCrl>)> = None;
            let mut revoked: Option<(String, Arc<VerifiedCrl>)> = None;
            let mut errors = Vec::new();
            for (url, configured) in &urls {
                match self
                    .verified_crl(&fetcher, url, *configured, t, &issuer, now)
                    .await
                {
                    CrlResult::Ok(c) => {
                        if c.revoked.contains_key(&t.serial) && revoked.is_none() {
                            revoked = Some((url.clone(), c.clone()));
                        }
                        covered.get_or_insert((url.clone(), c));
                    }
                    CrlResult::NotForIssuer => {}
                    CrlResult::Err(e) => {
                        pass.crl_failures.insert(url.clone(), e.clone());
                        errors.push(e);
                    }
                }
            }
            if let Some((url, c)) = revoked {
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
            } else if covered.is_some() {
                pass.good.entry("crl").or_default().push(t.cert_id.clone());
            } else if self.revocation.ocsp && t.ocsp_url.as_deref().is_some_and(|u| !u.is_empty()) {
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
                pass.undecided
                    .push((t.cert_id.clone(), "crl".into(), errors.join("; ")));
            } else {
                pass.good.entry("none").or_default().push(t.cert_id.clone());
            }
        }
        self.ask_ocsp(&fetcher, ocsp_wanted, now, pass).await?;
        self.poll_ari(ari_wanted, now, pass).await?;
        Ok(())
    }

    /// The CRL at `url` verified against `issuer`, from the per-version
    /// cache or fetched and verified now.
    async fn verified_crl(
        &self,
        fetcher: &Fetcher,
        url: &str,
        configured: bool,
        t: &StatusTarget,
        issuer: &[u8],
        now: i64,
    ) -> CrlResult {
        let fetched = match fetcher.crl(url, now).await {
            Ok(f) => f,
            Err(e) => return CrlResult::Err(e),
        };
        let key = (url.to_string(), fetched.version, issuer_key(t));
        if let Some(hit) = self
            .checker
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            // A CRL past its nextUpdate is no longer evidence of anything.
            if let CrlResult::Ok(c) = &hit
                && c.next_update.is_some_and(|n| n + 300 < now)
            {
                return CrlResult::Err(format!(
                    "CRL {url} expired at {} and no newer one is served",
                    c.next_update.map(rfc3339).unwrap_or_default()
                ));
            }
            return hit;
        }
        let result = match crl::verify(&fetched.bytes, issuer, now) {
            Ok(c) => {
                fetcher.note_next_update(url, c.next_update);
                CrlResult::Ok(Arc::new(c))
            }
            Err(e) if configured && matches!(e, crl::CrlError::WrongIssuer { .. }) => {
                CrlResult::NotForIssuer
            }
            Err(e) => CrlResult::Err(format!("CRL {url}: {e}")),
        };
        if let Ok(mut m) = self.checker.verified.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(key, result.clone());
        }
        if let Some(stale) = fetched.stale_reason {
            warn!(reason = %stale, "CRL refresh failed");
        }
        result
    }

    async fn ask_ocsp(
        &self,
        fetcher: &Arc<Fetcher>,
        wanted: Vec<(StatusTarget, Arc<Vec<u8>>)>,
        now: i64,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        for batch in wanted.chunks(PARALLEL) {
            let mut set = tokio::task::JoinSet::new();
            for (t, issuer) in batch {
                let Some(pem) = self.store.chain_pem(&t.cert_id).await? else {
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
        match result {
            Ok(a) => match a.status {
                CertStatus::Good => pass.good.entry("ocsp").or_default().push(t.cert_id),
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
                    pass.ocsp_unknown
                        .push(format!("{}/{}", t.name_id, t.slot.as_str()));
                    pass.undecided.push((
                        t.cert_id,
                        "ocsp".into(),
                        format!("OCSP {url}: the responder does not know this certificate"),
                    ));
                }
            },
            Err(e) => {
                pass.ocsp_failures.insert(url, e.clone());
                pass.undecided.push((t.cert_id, "ocsp".into(), e));
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
                let retry = (min * 10).clamp(min, 3600) as i64;
                return self
                    .store
                    .ari_poll_failed(&t.cert_id, now + retry, now)
                    .await;
            }
        };
        let previous = t.ari_window_start.map(|_| t.renew_after);
        let renew = policy::ari_renewal_time(w.start, w.end, previous, now, random_u64());
        let normal = policy::renew_at(t.not_before, t.not_after, self.renew_fraction);
        let moved_past = policy::ari_moved_past(w.start, normal, now);
        let next_poll = now + policy::ari_poll_delay(w.retry_after, min, 86_400) as i64;
        self.store
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
            self.store
                .audit(&AuditEvent {
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

    /// Decides what the recorded revocations (and ARI windows moved into
    /// the past) lead to: CA incidents first, then per-name reactions for
    /// the CAs without one.
    async fn react(
        &self,
        revoked: &[RevokedSlot],
        ari_moved: &BTreeSet<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let cfg = &self.revocation;
        let mut cas: BTreeSet<String> = revoked.iter().map(|r| r.ca_id.clone()).collect();
        cas.extend(ari_moved.iter().cloned());
        // CAs whose revocations get no per-name reaction: an incident
        // opened in this pass (its CA-wide swap or dry run covers them) or
        // one waiting for an operator. After a CA-wide swap, later
        // revocations at that CA are handled per name, re-provisioned
        // away from it.
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut avoid: BTreeSet<String> = BTreeSet::new();
        for ca in &cas {
            if let Some(open) = self.store.open_incident(ca).await? {
                if open.policy == "swap" {
                    avoid.insert(ca.clone());
                } else {
                    held.insert(ca.clone());
                }
                continue;
            }
            let (rev, ari, total) = self
                .store
                .incident_signal(ca, now - cfg.incident_window_seconds)
                .await?;
            if !policy::is_ca_incident(
                rev + ari,
                total,
                cfg.incident_percent,
                cfg.incident_count,
                cfg.incident_min_count,
            ) {
                continue;
            }
            held.insert(ca.clone());
            self.open_incident(ca, rev, ari, total, revoked, now)
                .await?;
        }
        let plain: Vec<&RevokedSlot> = revoked
            .iter()
            .filter(|r| !held.contains(&r.ca_id) && !avoid.contains(&r.ca_id))
            .collect();
        self.react_per_name(&plain, None, now).await?;
        for ca in &avoid {
            let group: Vec<&RevokedSlot> = revoked.iter().filter(|r| &r.ca_id == ca).collect();
            self.react_per_name(&group, Some(ca), now).await?;
        }
        Ok(())
    }

    /// The per-name reaction to `revoked` (one operation): swap names
    /// whose active certificate is revoked (unless policy says alert
    /// only), re-provision every revoked slot (away from `avoid_ca` when
    /// given), alert per slot.
    async fn react_per_name(
        &self,
        mine: &[&RevokedSlot],
        avoid_ca: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        if mine.is_empty() {
            return Ok(());
        }
        let swap = self.revocation.on_active_revoked == RevokedActivePolicy::Swap;
        let swap_names: Vec<String> = if swap {
            mine.iter()
                .filter(|r| r.active)
                .map(|r| r.name_id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let report = self
            .store
            .react_to_revocations(
                &Reaction {
                    kind: "revocation".into(),
                    reason: format!(
                        "{} certificate(s) found revoked by their CA ({})",
                        mine.len(),
                        mine.iter()
                            .map(|r| r.ca_id.as_str())
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    actor: ACTOR.into(),
                    swap_names,
                    reprovision: mine.iter().map(|r| (r.name_id.clone(), r.slot)).collect(),
                    avoid_ca: avoid_ca.map(str::to_string),
                    evidence: serde_json::json!(
                        mine.iter()
                            .map(|r| serde_json::json!({
                                "name": r.name_id,
                                "slot": r.slot.as_str(),
                                "ca": r.ca_id,
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
            revoked = mine.len(),
            swapped = report.swapped,
            without_standby = report.not_swapped,
            reprovision = report.marked,
            operation = report.operation_id.as_deref().unwrap_or(""),
            "revoked certificates: reacted"
        );
        for r in mine {
            let subject = format!("{}/{}", r.name_id, r.slot.as_str());
            let (severity, what) = match (r.active, swap) {
                (true, true) => (
                    "critical",
                    "active certificate revoked; swapped to the standby where usable, re-issuing",
                ),
                (true, false) => (
                    "critical",
                    "active certificate revoked; policy is alert-only: swap it (twincert swap) — re-issuing",
                ),
                (false, _) => ("warning", "standby certificate revoked; re-issuing"),
            };
            self.alert(
                "certificate_revoked",
                &subject,
                severity,
                &format!("{subject} ({}): {what}", r.ca_id),
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

    async fn open_incident(
        &self,
        ca: &str,
        rev: i64,
        ari: i64,
        total: i64,
        revoked: &[RevokedSlot],
        now: i64,
    ) -> Result<(), StoreError> {
        let cfg = &self.revocation;
        let summary = format!(
            "{rev} of {total} current certificates from {ca} found revoked and {ari} asked for \
             early renewal (ARI) within {} s",
            cfg.incident_window_seconds
        );
        let policy = match cfg.incident_policy {
            IncidentPolicy::Swap => "swap",
            IncidentPolicy::Manual => "manual",
        };
        let incident = Incident {
            id: new_id(),
            ca_id: ca.to_string(),
            state: "open".into(),
            policy: policy.into(),
            revoked: rev,
            ari_past: ari,
            total,
            window_seconds: cfg.incident_window_seconds,
            summary: summary.clone(),
            operation_id: None,
            dry_run: None,
            opened_at: now,
            closed_at: None,
            closed_by: None,
            close_reason: None,
        };
        if !self.store.create_incident(&incident, ACTOR).await? {
            return Ok(());
        }
        let reason = format!("CA incident {}: {summary}", incident.id);
        let scope = SwapScope::Ca(ca.to_string());
        let (operation, dry) = match cfg.incident_policy {
            IncidentPolicy::Swap => {
                let report = self
                    .store
                    .mass_swap(&scope, &reason, ACTOR, false, now)
                    .await?;
                // Standbys of other names revoked at this CA: re-issued
                // elsewhere (the CA-wide swap only moves active slots).
                let standbys: Vec<(String, Slot)> = revoked
                    .iter()
                    .filter(|r| r.ca_id == ca && !r.active)
                    .map(|r| (r.name_id.clone(), r.slot))
                    .collect();
                if !standbys.is_empty() {
                    self.store
                        .react_to_revocations(
                            &Reaction {
                                kind: "incident".into(),
                                reason: reason.clone(),
                                actor: ACTOR.into(),
                                swap_names: Vec::new(),
                                reprovision: standbys,
                                avoid_ca: Some(ca.to_string()),
                                evidence: serde_json::json!({ "incident": incident.id }),
                            },
                            now,
                        )
                        .await?;
                }
                (report.operation_id, None)
            }
            IncidentPolicy::Manual => {
                let report = self
                    .store
                    .mass_swap(&scope, &reason, ACTOR, true, now)
                    .await?;
                (None, Some(serde_json::json!(report)))
            }
        };
        self.store
            .set_incident_outcome(&incident.id, operation.as_deref(), dry.as_ref())
            .await?;
        let what = match cfg.incident_policy {
            IncidentPolicy::Swap => format!(
                "every name active on {ca} swapped away (operation {})",
                operation.as_deref().unwrap_or("?")
            ),
            IncidentPolicy::Manual => format!(
                "a dry run of `twincert swap --ca {ca}` waits for an operator (GET /v1/incidents/{})",
                incident.id
            ),
        };
        error!(ca = %ca, incident = %incident.id, policy, "CA incident: {summary}; {what}");
        self.alert(
            "ca_incident",
            ca,
            "critical",
            &format!("CA incident at {ca}: {summary}; {what}"),
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
            .store
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
        self.store
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
        self.store.resolve_revoked_alerts(now).await?;
        let urls: Vec<String> = pass.ocsp_failures.keys().cloned().collect();
        self.store
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
        self.store
            .resolve_alerts_except("ocsp_unknown", &pass.ocsp_unknown, now)
            .await?;
        Ok(())
    }

    /// Slots near expiry without a successful renewal, and names without a
    /// usable standby for too long.
    async fn expiry_alerts(&self, now: i64) -> Result<(), StoreError> {
        let cfg = &self.revocation;
        let expiring = self
            .store
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
        self.store
            .resolve_alerts_except("expiry_soon", &subjects, now)
            .await?;
        let missing = self
            .store
            .track_standby(now, now - cfg.no_standby_alert_seconds, ALERT_LIMIT)
            .await?;
        let mut names = Vec::with_capacity(missing.len());
        for (name, since) in &missing {
            self.alert(
                "no_standby",
                name,
                "warning",
                &format!(
                    "{name} has had no usable standby certificate since {} (an emergency swap \
                     would skip it)",
                    rfc3339(*since)
                ),
                None,
                now,
            )
            .await?;
            names.push(name.clone());
        }
        self.store
            .resolve_alerts_except("no_standby", &names, now)
            .await?;
        Ok(())
    }
}
