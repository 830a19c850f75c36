//! The drill controller: on one replica (singleton lease `drill`), runs
//! the drills the API recorded as `running`, one at a time, oldest first,
//! and stores each one's report with its timeline.
//!
//! - A **dry** drill does everything a CA-wide swap away from the CA would
//!   do except the flip: it classifies every name active on the CA by the
//!   stored facts (the readiness rules), checks each standby's revocation
//!   status afresh where it publishes a CRL (the stored status otherwise),
//!   verifies its chain, opens its sealed key and matches it to the
//!   certificate, and probes the names' endpoints. It writes nothing but
//!   the drill row and its audit events.
//! - A **live** drill swaps a sample away from the CA (a drill flip:
//!   nothing is marked for re-provisioning), waits until the sample's
//!   destinations and endpoints hold the standby (the deployer does that
//!   on its own, as after any swap) — the time to safety — then swaps the
//!   sample back and waits again, unless asked to keep it.
//!
//! - A **simulated CA event** (`[drills] allow_simulation`, test and
//!   training environments): while the drill runs, the status checker
//!   takes every certificate of the CA as revoked without asking it, and
//!   the automatic path runs for real; the drill measures how long until
//!   no name is active on the CA, then the simulation ends.
//!
//! A drill found running when this replica starts it anew was interrupted
//! (a restart): its sample, if it was swapped and not kept, is swapped
//! back, and it ends `failed` saying so.
//!
//! *Observes*: drill rows (`store::Drills`), readiness facts
//! (`store::Readiness`), sealed keys (`store::Keys`), CA trust
//! (`store::Cas`), CRLs, endpoints, deployment state. *Writes*: drill
//! rows, the drill flips with their operation records and audit events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::deployer::bounded;
use super::singleton::Singleton;
use crate::certs;
use crate::clock::Clock;
use crate::deploy::check::{self, Endpoint, Expected, Outcome};
use crate::domain::{DrillFailure, DrillMode, DrillReport, DrillSample, DrillStage};
use crate::keys::CertKey;
use crate::keys::seal::Sealer;
use crate::policy::drill::{StandbyChecks, drill_state, sample, verdict};
use crate::policy::readiness::Readiness as Outcome2;
use crate::policy::{self, CaChoice};
use crate::revocation::crl;
use crate::revocation::fetch::Fetcher;
use crate::store::{Cas, Drill, DrillFlip, DrillStandby, Drills, Keys, Readiness, StoreError};

/// The singleton lease drills run under.
pub(super) const LEASE: &str = "drill";
/// Who the controller's own audit events name.
pub const ACTOR: &str = "twincert:drill";
/// Rows read per page.
const PAGE: u64 = 1_000;
/// Failures listed in a report.
const MAX_FAILURES: usize = 1_000;
/// Endpoints a dry drill probes (the first ones in name order).
const MAX_PROBES: usize = 1_000;
/// Probes in flight at once.
const PARALLEL: usize = 16;
/// One probe's bound.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The drill controller and what it needs.
pub(super) struct DrillRunner {
    drills: Drills,
    readiness: Readiness,
    keys: Keys,
    cas: Cas,
    lease: Singleton,
    clock: Arc<dyn Clock>,
    sealer: Arc<Sealer>,
    policy_cas: Vec<CaChoice>,
    window_seconds: i64,
    fetcher: Option<Arc<Fetcher>>,
    /// Per CA, the CRLs configured for it (`[[cas]] crl_urls`), checked
    /// after the certificate's own, as the status checker does.
    ca_crls: BTreeMap<String, Vec<String>>,
}

/// A CRL as this drill found it: verified, or why not (`true`: it is
/// another issuer's, which is no failure for a configured CRL).
type CrlVerdict = Result<Arc<crl::VerifiedCrl>, (bool, String)>;

/// A stage being timed.
struct Stage {
    name: &'static str,
    started_at: i64,
    t: Instant,
}

/// What a dry drill knows of one name in scope.
struct NameCheck {
    stored: Outcome2,
    checks: StandbyChecks,
    detail: Option<String>,
}

impl DrillRunner {
    pub(super) fn new(
        store: &crate::store::Store,
        owner: String,
        clock: Arc<dyn Clock>,
        sealer: Arc<Sealer>,
        policy_cas: Vec<CaChoice>,
        window_seconds: i64,
        ca_crls: BTreeMap<String, Vec<String>>,
    ) -> DrillRunner {
        DrillRunner {
            drills: store.drills().clone(),
            readiness: store.readiness().clone(),
            keys: store.keys().clone(),
            cas: store.cas().clone(),
            // A live drill waits for deployments; the lease outlives a
            // stage and is renewed between stages.
            lease: Singleton::new(store.leases().clone(), LEASE, owner, 900, clock.clone()),
            clock,
            sealer,
            policy_cas,
            window_seconds,
            fetcher: Fetcher::new(Duration::from_secs(60), Duration::from_secs(15))
                .map(Arc::new)
                .ok(),
            ca_crls,
        }
    }

    /// Looks for a requested drill every second on the replica holding
    /// the lease, and runs it.
    pub(super) async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let me = self.clone();
        self.lease
            .run(Duration::from_secs(1), shutdown, || {
                let me = me.clone();
                async move {
                    match me.drills.next_running().await {
                        Ok(Some(d)) => {
                            if let Err(e) = me.run_one(d).await {
                                warn!(error = %e, "drill failed to record its end");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "reading requested drills failed"),
                    }
                }
            })
            .await;
    }

    /// Runs one drill to its end and stores its report.
    pub(super) async fn run_one(&self, d: Drill) -> Result<(), StoreError> {
        let mut report = DrillReport::default();
        if d.started_at.is_some() {
            // Begun before and never finished: this replica restarted (or
            // took the lease over) mid-drill.
            let mut before = d.report.clone().unwrap_or_default();
            // The sample is stored before it is flipped: whatever of it
            // left the CA is flipped back (the back flip touches only names
            // whose standby is on the CA).
            if d.mode == DrillMode::Live
                && before.operations.len() < 2
                && !before.sample.is_empty()
                && !d.request.keep
            {
                let (back, op) = self
                    .drills
                    .flip(
                        &before.sample,
                        &d.ca,
                        DrillFlip::Back,
                        &d.id,
                        &d.actor,
                        &format!("{} (swapped back after an interrupted drill)", d.reason),
                        self.clock.now(),
                    )
                    .await?;
                if !op.is_empty() {
                    before.operations.push(op);
                }
                before.stages.push(DrillStage {
                    name: "swap_back".into(),
                    started_at: self.clock.now(),
                    duration_ms: 0,
                    outcome: "ok".into(),
                    detail: format!("{} names swapped back after the interruption", back.len()),
                });
            }
            before.error = Some(
                "interrupted: the worker running it stopped; the drill was not repeated".into(),
            );
            report = before;
        } else {
            self.drills.start(&d.id, self.clock.now()).await?;
            info!(drill = %d.id, ca = %d.ca, mode = d.mode.as_str(), "drill started");
            let done = match d.mode {
                DrillMode::Dry => self.dry(&d, &mut report).await,
                DrillMode::Live => self.live(&d, &mut report).await,
                DrillMode::Simulate => self.simulate(&d, &mut report).await,
            };
            if let Err(e) = done {
                report.error = Some(e.to_string());
            }
        }
        let state = drill_state(&report);
        info!(drill = %d.id, state, safe = report.safe, names = report.names, "drill ended");
        self.drills
            .finish(&d, state, &report, ACTOR, self.clock.now())
            .await
    }

    fn begin(&self, name: &'static str) -> Stage {
        Stage {
            name,
            started_at: self.clock.now(),
            t: Instant::now(),
        }
    }

    async fn end(
        &self,
        d: &Drill,
        report: &mut DrillReport,
        s: Stage,
        failed: bool,
        detail: String,
    ) -> Result<(), StoreError> {
        report.stages.push(DrillStage {
            name: s.name.into(),
            started_at: s.started_at,
            duration_ms: s.t.elapsed().as_millis() as i64,
            outcome: if failed { "failed" } else { "ok" }.into(),
            detail,
        });
        self.drills.progress(&d.id, report).await?;
        if !self.lease.renew().await? {
            return Err(StoreError::Conflict(
                "the drill lease was lost to another replica".into(),
            ));
        }
        Ok(())
    }

    /// The stored readiness of every name active on the CA.
    async fn scope(&self, ca: &str) -> Result<BTreeMap<String, Outcome2>, StoreError> {
        let now = self.clock.now();
        let distrusted = self.cas.distrusted_cas().await?;
        let cas = policy::with_distrusted(&self.policy_cas, &distrusted);
        let mut out = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page = self
                .readiness
                .name_facts(ca, now, now + self.window_seconds, &after, PAGE)
                .await?;
            let full = page.len() as u64 == PAGE;
            for (name, g) in page {
                out.insert(
                    name.clone(),
                    super::readiness::group_outcome(&g, &cas, &distrusted),
                );
                after = name;
            }
            if !full {
                return Ok(out);
            }
        }
    }

    async fn standbys(&self, ca: &str) -> Result<Vec<DrillStandby>, StoreError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.drills.standbys(ca, &after, PAGE).await?;
            let full = page.len() as u64 == PAGE;
            if let Some(last) = page.last() {
                after = last.name_id.clone();
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// The dry drill: every check of a CA-wide swap but the flip.
    async fn dry(&self, d: &Drill, report: &mut DrillReport) -> Result<(), StoreError> {
        let now = self.clock.now();
        let s = self.begin("scope");
        let stored = self.scope(&d.ca).await?;
        let standbys = self.standbys(&d.ca).await?;
        let mut names: BTreeMap<String, NameCheck> = stored
            .iter()
            .map(|(n, o)| {
                (
                    n.clone(),
                    NameCheck {
                        stored: *o,
                        checks: StandbyChecks::default(),
                        detail: None,
                    },
                )
            })
            .collect();
        let safe_stored = stored.values().filter(|o| **o == Outcome2::Safe).count();
        report.names = stored.len() as i64;
        self.end(
            d,
            report,
            s,
            safe_stored < stored.len(),
            format!(
                "{} names active on {}; {safe_stored} safe by the stored facts, {} standbys to check",
                stored.len(),
                d.ca,
                standbys.len()
            ),
        )
        .await?;

        // Revocation: a fresh CRL lookup where the standby names a CRL.
        let s = self.begin("revocation");
        let (mut fresh, mut from_store, mut unchecked, mut revoked) = (0, 0, 0, 0);
        let mut crls: HashMap<(String, Vec<u8>), CrlVerdict> = HashMap::new();
        for sb in &standbys {
            match self.fresh_revocation(sb, now, &mut crls).await {
                Some(Ok(is_revoked)) => {
                    fresh += 1;
                    if is_revoked && sb.revoked_at.is_none() {
                        revoked += 1;
                        if let Some(n) = names.get_mut(&sb.name_id) {
                            n.checks.revoked_now = true;
                        }
                    }
                }
                Some(Err(e)) => {
                    unchecked += 1;
                    if let Some(n) = names.get_mut(&sb.name_id) {
                        n.detail
                            .get_or_insert(format!("revocation not checked: {e}"));
                    }
                }
                None => from_store += 1,
            }
            if sb.revoked_at.is_some() {
                revoked += 1;
            }
        }
        self.end(
            d,
            report,
            s,
            revoked > 0,
            format!(
                "{fresh} checked against a CRL now, {from_store} by the stored status \
                 (no CRL), {unchecked} could not be checked now (stored status used); \
                 {revoked} revoked"
            ),
        )
        .await?;

        let s = self.begin("chains");
        let mut bad_chains = 0;
        for sb in &standbys {
            if let Err(e) = certs::verify_chain(&sb.chain_pem, now)
                && let Some(n) = names.get_mut(&sb.name_id)
            {
                bad_chains += 1;
                n.checks.chain_invalid = true;
                n.detail.get_or_insert(e.to_string());
            }
        }
        self.end(
            d,
            report,
            s,
            bad_chains > 0,
            format!("{} chains verified, {bad_chains} failed", standbys.len()),
        )
        .await?;

        let s = self.begin("keys");
        let mut bad_keys = 0;
        for sb in &standbys {
            let found = self.key_matches(sb).await?;
            if let Err((mismatch, why)) = found
                && let Some(n) = names.get_mut(&sb.name_id)
            {
                bad_keys += 1;
                if mismatch {
                    n.checks.key_mismatch = true;
                } else {
                    n.checks.key_unopenable = true;
                }
                n.detail.get_or_insert(why);
            }
        }
        self.end(
            d,
            report,
            s,
            bad_keys > 0,
            format!(
                "{} keys opened and matched to their certificates, {bad_keys} failed",
                standbys.len()
            ),
        )
        .await?;

        let s = self.begin("endpoints");
        let endpoints = self.drills.endpoints_of(&d.ca).await?;
        let total = endpoints.len();
        let chains: HashMap<&str, &str> = standbys
            .iter()
            .map(|sb| (sb.name_id.as_str(), sb.chain_pem.as_str()))
            .collect();
        let jobs: Vec<(String, Endpoint, Expected)> = endpoints
            .into_iter()
            .take(MAX_PROBES)
            .map(|(name, spec)| {
                let expected = chains
                    .get(name.as_str())
                    .and_then(|pem| Expected::from_pem(pem).ok())
                    .unwrap_or(Expected {
                        leaf_der: Vec::new(),
                        chain_der: Vec::new(),
                    });
                let ep = Endpoint {
                    host: spec.host.clone(),
                    port: spec.port,
                    sni: spec.sni.clone(),
                    ip_override: spec.ip.as_deref().and_then(|ip| ip.parse().ok()),
                };
                (name, ep, expected)
            })
            .collect();
        let probed = jobs.len();
        let results = bounded(jobs, PARALLEL, |(name, ep, exp)| async move {
            let r = check::check(&ep, &exp, PROBE_TIMEOUT).await;
            (name, ep, r)
        })
        .await;
        let mut unreachable = 0;
        for (name, ep, r) in results {
            // Any TLS answer will do: the standby is not served yet, this
            // only proves the flip could be verified.
            if r.outcome == Outcome::Unreachable
                && let Some(n) = names.get_mut(&name)
            {
                unreachable += 1;
                n.checks.endpoint_unreachable = true;
                n.detail
                    .get_or_insert(format!("{}:{}: {}", ep.host, ep.port, r.summary()));
            }
        }
        self.end(
            d,
            report,
            s,
            unreachable > 0,
            format!(
                "{probed} of {total} endpoints probed, {unreachable} unreachable{}",
                if probed < total {
                    format!(" (the first {MAX_PROBES} only)")
                } else {
                    String::new()
                }
            ),
        )
        .await?;

        for (name, n) in names {
            let v = verdict(n.stored, &n.checks);
            *report.outcomes.entry(v.into()).or_insert(0) += 1;
            if v == "safe" {
                report.safe += 1;
            } else if report.failures.len() < MAX_FAILURES {
                report.failures.push(DrillFailure {
                    name,
                    reason: v.into(),
                    detail: n.detail,
                });
            }
        }
        Ok(())
    }

    /// A fresh CRL verdict for one standby: `None` when neither it nor its
    /// CA's configuration names a CRL (the stored status is all there is),
    /// else revoked or not, or why it could not be checked. The
    /// certificate's own CRLs come first, then its CA's configured ones
    /// (one of another issuer is skipped); each is fetched and verified
    /// against the standby's issuer once per drill.
    async fn fresh_revocation(
        &self,
        sb: &DrillStandby,
        now: i64,
        crls: &mut HashMap<(String, Vec<u8>), CrlVerdict>,
    ) -> Option<Result<bool, String>> {
        let ders = match certs::chain_ders(&sb.chain_pem) {
            Ok(d) => d,
            Err(e) => return Some(Err(e.to_string())),
        };
        let mut urls = certs::status_sources(&ders[0])
            .map(|s| s.crl_urls)
            .unwrap_or_default();
        urls.extend(self.ca_crls.get(&sb.ca_id).cloned().unwrap_or_default());
        if urls.is_empty() {
            return None;
        }
        let Some(issuer) = ders.get(1) else {
            return Some(Err("no issuer in the chain to verify a CRL with".into()));
        };
        let Some(fetcher) = self.fetcher.clone() else {
            return Some(Err("no HTTP client".into()));
        };
        let serial = match x509_parser::parse_x509_certificate(&ders[0]) {
            Ok((_, leaf)) => leaf.raw_serial().to_vec(),
            Err(e) => return Some(Err(format!("bad certificate: {e}"))),
        };
        let mut last = None;
        for url in urls {
            let key = (url.clone(), issuer.clone());
            if !crls.contains_key(&key) {
                let got = match fetcher.crl(&url, now).await {
                    Ok(f) => crl::verify(&f.bytes, issuer, now)
                        .map(Arc::new)
                        .map_err(|e| {
                            (
                                matches!(e, crl::CrlError::WrongIssuer { .. }),
                                e.to_string(),
                            )
                        }),
                    Err(e) => Err((false, e)),
                };
                crls.insert(key.clone(), got);
            }
            match crls.get(&key) {
                Some(Ok(v)) => return Some(Ok(v.lookup(&serial).is_some())),
                Some(Err((true, _))) => {}
                Some(Err((false, e))) => last = Some(format!("CRL {url}: {e}")),
                None => {}
            }
        }
        Some(Err(last.unwrap_or_else(|| {
            "no CRL found for its issuer among those configured".into()
        })))
    }

    /// Opens the standby's sealed key and compares it with the
    /// certificate's: `Err((true, why))` for a mismatch, `Err((false,
    /// why))` when it cannot be opened.
    async fn key_matches(
        &self,
        sb: &DrillStandby,
    ) -> Result<Result<(), (bool, String)>, StoreError> {
        let Some((key_type, sealed)) = self.keys.private_key(&sb.private_key_id).await? else {
            return Ok(Err((false, "the key row is missing".into())));
        };
        let key = match CertKey::unseal(&self.sealer, key_type, &sealed) {
            Ok(k) => k,
            Err(e) => return Ok(Err((false, format!("the key cannot be opened: {e}")))),
        };
        let facts = match certs::inspect_chain(&sb.chain_pem) {
            Ok(f) => f,
            Err(e) => return Ok(Err((false, e.to_string()))),
        };
        if key.fingerprint() != facts.spki_sha256 {
            return Ok(Err((
                true,
                format!(
                    "the stored key ({}) is not the certificate's ({})",
                    key.fingerprint().0,
                    facts.spki_sha256.0
                ),
            )));
        }
        Ok(Ok(()))
    }

    /// Polls until every listed name is verified or `timeout` passes;
    /// returns those still not verified.
    async fn wait_verified(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.drills.unverified(names).await?;
            if left.is_empty() || Instant::now() >= deadline {
                return Ok(left);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The simulated CA event: while this drill runs (it is started), the
    /// status checker takes every certificate of the CA as revoked and the
    /// automatic path reacts (incident or per-name swaps, re-provisioning).
    /// The drill measures how long until no name is active on the CA.
    async fn simulate(&self, d: &Drill, report: &mut DrillReport) -> Result<(), StoreError> {
        let s = self.begin("scope");
        let stored = self.scope(&d.ca).await?;
        report.names = stored.len() as i64;
        self.end(
            d,
            report,
            s,
            false,
            format!(
                "{} names active on {}; the revocation checks now see its certificates \
                 revoked (simulated: the CA is not asked)",
                stored.len(),
                d.ca
            ),
        )
        .await?;
        let s = self.begin("simulate");
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(d.request.verify_timeout_seconds.max(1));
        let left = loop {
            let left = self.drills.active_on(&d.ca).await?;
            if left.is_empty() || Instant::now() >= deadline {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if left.is_empty() {
            report.time_to_safety_ms = Some(t0.elapsed().as_millis() as i64);
        }
        self.end(
            d,
            report,
            s,
            !left.is_empty(),
            match report.time_to_safety_ms {
                Some(ms) => format!(
                    "every name left {} in {ms} ms through the automatic reactions",
                    d.ca
                ),
                None => format!(
                    "{} names still active on {} after {} s (an incident waiting for an \
                     operator, or no usable standby)",
                    left.len(),
                    d.ca,
                    d.request.verify_timeout_seconds
                ),
            },
        )
        .await?;
        for (name, o) in stored {
            if left.contains(&name) {
                let reason = if o == Outcome2::Safe {
                    "not_swapped"
                } else {
                    o.as_str()
                };
                *report.outcomes.entry(reason.into()).or_insert(0) += 1;
                if report.failures.len() < MAX_FAILURES {
                    report.failures.push(DrillFailure {
                        name,
                        reason: reason.into(),
                        detail: None,
                    });
                }
            } else {
                *report.outcomes.entry("safe".into()).or_insert(0) += 1;
                report.safe += 1;
            }
        }
        Ok(())
    }

    /// The live drill: swap a sample away, verify, swap back.
    async fn live(&self, d: &Drill, report: &mut DrillReport) -> Result<(), StoreError> {
        let timeout = Duration::from_secs(d.request.verify_timeout_seconds.max(1));
        let s = self.begin("sample");
        let stored = self.scope(&d.ca).await?;
        let active: Vec<String> = stored.keys().cloned().collect();
        let asked = d.request.sample.clone().unwrap_or(DrillSample::Percent(0));
        let chosen = sample(&active, &asked);
        report.names = active.len() as i64;
        // Written down before the flip, so an interrupted drill knows what
        // to swap back.
        report.sample = chosen.clone();
        let empty = chosen.is_empty();
        self.end(
            d,
            report,
            s,
            empty,
            format!(
                "{} of {} names active on {} chosen{}",
                chosen.len(),
                active.len(),
                d.ca,
                match &asked {
                    DrillSample::Percent(p) => format!(" ({p}%, rounded down)"),
                    DrillSample::Names(n) => format!(" ({} listed)", n.len()),
                }
            ),
        )
        .await?;
        if empty {
            report.error = Some(format!(
                "the sample is empty: no listed name is active on '{}', or the percentage of \
                 its {} names rounds down to none",
                d.ca,
                active.len()
            ));
            return Ok(());
        }
        let mut outcome: BTreeMap<String, String> = BTreeMap::new();

        let s = self.begin("swap");
        let t0 = Instant::now();
        let (flipped, op) = self
            .drills
            .flip(
                &chosen,
                &d.ca,
                DrillFlip::Away,
                &d.id,
                &d.actor,
                &d.reason,
                self.clock.now(),
            )
            .await?;
        report.sample = flipped.clone();
        if !op.is_empty() {
            report.operations.push(op);
        }
        for n in &chosen {
            if !flipped.contains(n) {
                let why = stored
                    .get(n)
                    .map(|o| o.as_str())
                    .filter(|o| *o != "safe")
                    .unwrap_or("not_swapped");
                outcome.insert(n.clone(), why.into());
            }
        }
        self.end(
            d,
            report,
            s,
            flipped.len() < chosen.len(),
            format!(
                "{} of {} swapped to their standby in one transaction",
                flipped.len(),
                chosen.len()
            ),
        )
        .await?;

        let s = self.begin("verify");
        let left = self.wait_verified(&flipped, timeout).await?;
        if left.is_empty() {
            report.time_to_safety_ms = Some(t0.elapsed().as_millis() as i64);
        }
        for n in &left {
            outcome
                .entry(n.clone())
                .or_insert_with(|| "not_verified".into());
        }
        self.end(
            d,
            report,
            s,
            !left.is_empty(),
            format!(
                "{} of {} serve their standby (destinations written, endpoints matched){}",
                flipped.len() - left.len(),
                flipped.len(),
                match report.time_to_safety_ms {
                    Some(ms) => format!("; time to safety {ms} ms"),
                    None => format!("; {} not within {} s", left.len(), timeout.as_secs()),
                }
            ),
        )
        .await?;

        if d.request.keep {
            report.kept = true;
        } else {
            let s = self.begin("swap_back");
            let (back, op) = self
                .drills
                .flip(
                    &flipped,
                    &d.ca,
                    DrillFlip::Back,
                    &d.id,
                    &d.actor,
                    &d.reason,
                    self.clock.now(),
                )
                .await?;
            if !op.is_empty() {
                report.operations.push(op);
            }
            for n in &flipped {
                if !back.contains(n) {
                    outcome
                        .entry(n.clone())
                        .or_insert_with(|| "not_restored".into());
                }
            }
            self.end(
                d,
                report,
                s,
                back.len() < flipped.len(),
                format!(
                    "{} of {} swapped back to {}",
                    back.len(),
                    flipped.len(),
                    d.ca
                ),
            )
            .await?;
            let s = self.begin("verify_back");
            let left = self.wait_verified(&back, timeout).await?;
            for n in &left {
                outcome
                    .entry(n.clone())
                    .or_insert_with(|| "not_verified_back".into());
            }
            self.end(
                d,
                report,
                s,
                !left.is_empty(),
                format!(
                    "{} of {} serve their original certificate again",
                    back.len() - left.len(),
                    back.len()
                ),
            )
            .await?;
        }
        for n in &chosen {
            match outcome.get(n) {
                Some(reason) => {
                    *report.outcomes.entry(reason.clone()).or_insert(0) += 1;
                    if report.failures.len() < MAX_FAILURES {
                        report.failures.push(DrillFailure {
                            name: n.clone(),
                            reason: reason.clone(),
                            detail: None,
                        });
                    }
                }
                None => {
                    *report.outcomes.entry("safe".into()).or_insert(0) += 1;
                    report.safe += 1;
                }
            }
        }
        Ok(())
    }
}
