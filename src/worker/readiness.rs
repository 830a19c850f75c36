//! The readiness controller: on one replica, recomputes emergency
//! readiness — per CA, how many names active on it would be safe at once
//! if it were lost now, why the others would not, the estimated time to
//! safety and to full redundancy — stores the report, and alerts a CA
//! whose safe share or time to safety crosses its threshold.
//!
//! *Observes*: the readiness facts and measured rates (`store::Readiness`,
//! `store::Pacing`), the distrusted CAs (`store::Cas`). *Writes*: the
//! stored report, `readiness` alerts (`store::Alerts`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::ReadinessConfig;
use crate::domain::{CaReadiness, ReadinessReport};
use crate::policy::readiness::{Readiness as Outcome, StandbyFacts, readiness, readiness_alert};
use crate::policy::{self, CaChoice, CaPace};
use crate::store::{Alerts, Cas, Pacing, Readiness, ReadinessGroup, Store, StoreError};

use super::singleton::Singleton;

/// The singleton lease the readiness pass runs under.
pub(super) const LEASE: &str = "readiness";

/// Seconds per swapped name before any swap was measured.
const DEFAULT_SWAP_MS_PER_NAME: f64 = 0.05;
/// Seconds per deployment before any was measured.
const DEFAULT_DEPLOY_SECONDS: f64 = 2.0;
/// Seconds until an endpoint confirms before any did.
const DEFAULT_VERIFY_SECONDS: f64 = 30.0;
/// Names listed per reason.
const SAMPLE: u64 = 10;

/// The readiness of the names of one group for the loss of their active
/// CA, by `policy::readiness`: `cas` give the root groups, `distrusted`
/// the CAs distrusted now.
pub(super) fn group_outcome(
    g: &ReadinessGroup,
    cas: &[CaChoice],
    distrusted: &[String],
) -> Outcome {
    let group_of = |id: &str| {
        cas.iter()
            .find(|c| c.id == id)
            .map(|c| c.root_group.as_str())
    };
    let facts = StandbyFacts {
        present: g.present,
        ca: g.standby_ca.as_deref(),
        ca_root_group: g.standby_ca.as_deref().and_then(group_of),
        ca_distrusted: g
            .standby_ca
            .as_ref()
            .is_some_and(|c| distrusted.contains(c)),
        expired: g.expired,
        expiring: g.expiring,
        revoked: g.revoked,
        key_compromised: g.compromised,
        superseded: g.superseded,
        status_unknown: g.status_unknown,
        deploy_failing: g.deploy_failing,
        endpoint_unreachable: g.endpoint_unreachable,
    };
    let x_group = group_of(&g.active_ca).unwrap_or(g.active_ca.as_str());
    readiness(&facts, &g.active_ca, x_group)
}

/// The readiness controller and what it needs.
pub(super) struct ReadinessChecker {
    readiness: Readiness,
    pacing: Pacing,
    cas: Cas,
    alerts: Alerts,
    lease: Singleton,
    clock: Arc<dyn Clock>,
    cfg: ReadinessConfig,
    policy_cas: Vec<CaChoice>,
    paces: Vec<CaPace>,
    same_ca_hold_off: i64,
    deploy_concurrency: usize,
    /// Set when something this replica did may change readiness.
    dirty: Arc<AtomicBool>,
}

/// What the readiness controller is built from.
pub(super) struct ReadinessParts {
    pub(super) cfg: ReadinessConfig,
    pub(super) policy_cas: Vec<CaChoice>,
    pub(super) paces: Vec<CaPace>,
    pub(super) same_ca_hold_off: i64,
    pub(super) deploy_concurrency: usize,
    pub(super) dirty: Arc<AtomicBool>,
}

impl ReadinessChecker {
    pub(super) fn new(
        store: &Store,
        owner: String,
        clock: Arc<dyn Clock>,
        parts: ReadinessParts,
    ) -> ReadinessChecker {
        let ttl = (parts.cfg.interval_seconds as i64 * 3).max(60);
        ReadinessChecker {
            readiness: store.readiness().clone(),
            pacing: store.pacing().clone(),
            cas: store.cas().clone(),
            alerts: store.alerts().clone(),
            lease: Singleton::new(store.leases().clone(), LEASE, owner, ttl, clock.clone()),
            clock,
            cfg: parts.cfg,
            policy_cas: parts.policy_cas,
            paces: parts.paces,
            same_ca_hold_off: parts.same_ca_hold_off,
            deploy_concurrency: parts.deploy_concurrency,
            dirty: parts.dirty,
        }
    }

    /// Recomputes every `interval_seconds`, and within 5 s of an emergency
    /// operation or a trust change (any replica) or of something this
    /// replica did (a certificate stored, an API change), on whichever
    /// replica holds the lease.
    pub(super) async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let tick = Duration::from_secs(self.cfg.interval_seconds.clamp(1, 5));
        let state = Arc::new(tokio::sync::Mutex::new((None::<Instant>, String::new())));
        self.lease
            .run(tick, shutdown, || {
                let (me, state) = (self.clone(), state.clone());
                async move {
                    let mut st = state.lock().await;
                    let fingerprint = me.readiness.fingerprint().await.unwrap_or_default();
                    let due = st.0.is_none_or(|t| {
                        t.elapsed() >= Duration::from_secs(me.cfg.interval_seconds)
                    });
                    let dirty = me.dirty.swap(false, Ordering::Relaxed);
                    if due || dirty || fingerprint != st.1 {
                        match me.pass().await {
                            Ok(r) => info!(
                                names = r.names,
                                safe = r.safe,
                                ms = r.duration_ms,
                                "readiness computed"
                            ),
                            Err(e) => warn!(error = %e, "readiness pass failed"),
                        }
                        *st = (Some(Instant::now()), fingerprint);
                    }
                }
            })
            .await;
    }

    /// One computation: the report stored, the alerts raised or resolved.
    pub(super) async fn pass(&self) -> Result<ReadinessReport, StoreError> {
        let started = Instant::now();
        let now = self.clock.now();
        let window_end = now + self.cfg.revocation_window_seconds;
        let groups = self.readiness.groups(now, window_end).await?;
        let distrusted = self.cas.distrusted_cas().await?;
        let cas = policy::with_distrusted(&self.policy_cas, &distrusted);
        let swap_ms = self
            .readiness
            .swap_ms_per_name()
            .await?
            .unwrap_or(DEFAULT_SWAP_MS_PER_NAME);
        let (deploy_s, verify_s) = self.readiness.deploy_seconds().await?;
        let deploy_per_second = self.deploy_concurrency.max(1) as f64
            / deploy_s.unwrap_or(DEFAULT_DEPLOY_SECONDS).max(0.01);
        let verify = verify_s.unwrap_or(DEFAULT_VERIFY_SECONDS).ceil() as i64;
        // Each CA's measured issuance time, read once for every estimate.
        let mut paces = self.paces.clone();
        for p in &mut paces {
            p.mean_issue_seconds = self.pacing.mean_issue_seconds(&p.id).await?;
        }

        let mut per_ca: BTreeMap<String, CaReadiness> = BTreeMap::new();
        let mut deployed: BTreeMap<String, i64> = BTreeMap::new();
        let mut unsafe_groups: Vec<(Outcome, &ReadinessGroup)> = Vec::new();
        for g in &groups {
            let outcome = group_outcome(g, &cas, &distrusted);
            let entry = per_ca
                .entry(g.active_ca.clone())
                .or_insert_with(|| CaReadiness {
                    ca: g.active_ca.clone(),
                    ..CaReadiness::default()
                });
            entry.active += g.names;
            *entry.outcomes.entry(outcome.as_str().into()).or_insert(0) += g.names;
            if outcome == Outcome::Safe {
                entry.safe += g.names;
            } else {
                unsafe_groups.push((outcome, g));
            }
            if g.deployed {
                *deployed.entry(g.active_ca.clone()).or_insert(0) += g.names;
            }
        }
        for (outcome, g) in unsafe_groups {
            let Some(entry) = per_ca.get_mut(&g.active_ca) else {
                continue;
            };
            let names = entry.samples.entry(outcome.as_str().into()).or_default();
            if (names.len() as u64) < SAMPLE {
                let room = SAMPLE - names.len() as u64;
                names.extend(self.readiness.sample(g, now, window_end, room).await?);
                names.sort();
            }
        }
        for c in &cas {
            per_ca.entry(c.id.clone()).or_insert_with(|| CaReadiness {
                ca: c.id.clone(),
                ..CaReadiness::default()
            });
        }
        let mut report = ReadinessReport {
            computed_at: now,
            ..ReadinessReport::default()
        };
        let mut alerted = Vec::new();
        for (ca, mut r) in per_ca {
            r.safe_share = if r.active > 0 {
                r.safe as f64 / r.active as f64
            } else {
                1.0
            };
            r.time_to_safety_seconds = policy::readiness::time_to_safety(
                r.active,
                swap_ms,
                deployed.get(&ca).copied().unwrap_or(0),
                deploy_per_second,
                verify,
            );
            let f = policy::reprovision_forecast(
                &cas,
                Some(&ca),
                &paces,
                r.active,
                self.same_ca_hold_off,
            );
            r.time_to_redundancy_seconds = if r.active == 0 { Some(0) } else { f.seconds };
            r.redundancy_from = if f.eligible.is_empty() {
                f.same_ca.into_iter().collect()
            } else {
                f.eligible
            };
            r.alert = readiness_alert(
                &ca,
                r.active,
                r.safe,
                Some(r.time_to_safety_seconds),
                self.cfg.min_safe_share,
                self.cfg.max_time_to_safety_seconds,
            );
            if let Some(message) = &r.alert {
                let details = serde_json::json!({
                    "ca": ca, "active": r.active, "safe": r.safe,
                    "outcomes": r.outcomes, "samples": r.samples,
                    "time_to_safety_seconds": r.time_to_safety_seconds,
                });
                if self
                    .alerts
                    .raise_alert("readiness", &ca, "warning", message, Some(&details), now)
                    .await?
                {
                    warn!(alert = "readiness", ca = %ca, "{message}");
                }
                alerted.push(ca.clone());
            }
            report.names += r.active;
            report.safe += r.safe;
            report.cas.push(r);
        }
        self.alerts
            .resolve_alerts_except("readiness", &alerted, now)
            .await?;
        report.duration_ms = started.elapsed().as_millis() as i64;
        self.readiness.save(&report).await?;
        Ok(report)
    }
}
