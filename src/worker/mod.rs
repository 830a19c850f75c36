//! The worker: controllers started by a small supervisor. Each controller
//! does one job, says in its module doc what it *observes* and what it
//! *writes*, and holds only the store facets and clients it uses; they
//! meet only through the store.
//!
//! * [`issuer`] — leases due orders and carries them through ACME; runs the
//!   [`planner`] pass on its cadence, which runs the [`reprovisioner`]
//!   (marked slots to a new CA) and the [`revoker`] (revocations at the CA)
//!   and sweeps leftover DNS-01 records;
//! * [`status`] — CRL/OCSP/ARI checks, incidents and the reactions to
//!   revocations (singleton lease `revocation-check`);
//! * [`deployer`] and [`notifier`] — writing active certificates to their
//!   destinations and checking endpoints, then telling people (singleton
//!   lease `deploy`);
//! * `preflight` — CAA, delegation and provider checks of new, changed and (daily)
//!   all names (singleton lease `preflight`).
//!
//! [`singleton`] is the one loop that runs a pass on exactly one replica.

mod accounts;
mod counts;
mod delivery;
pub mod deployer;
mod drill;
mod install;
pub mod issuer;
pub mod notifier;
pub mod persist_expiry;
mod planner;
mod preflight;
mod readiness;
mod reprovisioner;
mod revoker;
mod singleton;
pub mod status;

pub use delivery::Delivery;
pub use deployer::Deployer;
pub use issuer::Issuer;
pub use notifier::Notifier;
pub use status::StatusChecker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, watch};
use tracing::info;

use crate::ca::CaClient;
use crate::clock::Clock;
use crate::config::{RevocationConfig, WorkerConfig};
use crate::keys::seal::Sealer;
use crate::policy::CaChoice;
use crate::store::{Store, StoreError};
use crate::validation::Http01Answers;
use crate::validation::dns::Dns01Solver;
use crate::validation::dns01::Dns01Challenges;

/// Seconds until the next attempt after `attempts` failures: exponential
/// (factor 2) from `min` with jitter (backon adds up to one more delay),
/// capped at `max`, and never before a CA's Retry-After.
pub fn backoff_secs(min: u64, max: u64, attempts: i64, retry_after: Option<u64>) -> u64 {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(min))
        .with_max_delay(Duration::from_secs(max))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    let n = usize::try_from(attempts.clamp(0, 40)).unwrap_or(0);
    let d = delays.nth(n).unwrap_or(Duration::from_secs(max));
    let secs = d.as_secs().clamp(min.max(1), max.max(1));
    secs.max(retry_after.unwrap_or(0))
}

/// What the controllers are built from; [`SupervisorBuilder::build`] makes
/// them.
pub struct SupervisorBuilder {
    store: Store,
    cas: BTreeMap<String, Arc<CaClient>>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
    renew_fraction: f64,
    owner: String,
    delivery: Option<Delivery>,
    policy_cas: Vec<CaChoice>,
    same_ca_hold_off: i64,
    revocation: RevocationConfig,
    dns01: Option<Arc<Dns01Solver>>,
    readiness: Option<(crate::config::ReadinessConfig, usize)>,
    /// Set when something this replica did may change readiness.
    readiness_dirty: Arc<std::sync::atomic::AtomicBool>,
    preflight: Option<(
        crate::config::PreflightConfig,
        Arc<crate::validation::preflight::Preflight>,
    )>,
}

impl SupervisorBuilder {
    /// CAA, delegation and provider preflight of new, changed and (daily) all names,
    /// on one replica.
    pub fn with_preflight(
        mut self,
        cfg: crate::config::PreflightConfig,
        preflight: Arc<crate::validation::preflight::Preflight>,
    ) -> SupervisorBuilder {
        self.preflight = cfg.enabled.then_some((cfg, preflight));
        self
    }

    /// Emergency readiness, recomputed on one replica
    /// (`deploy_concurrency` paces its time-to-safety estimate).
    pub fn with_readiness(
        mut self,
        cfg: crate::config::ReadinessConfig,
        deploy_concurrency: usize,
    ) -> SupervisorBuilder {
        self.readiness = cfg.enabled.then_some((cfg, deploy_concurrency));
        self
    }

    /// Deployment to destinations, endpoint checks and alert delivery.
    pub fn with_delivery(mut self, delivery: Delivery) -> SupervisorBuilder {
        self.delivery = Some(delivery);
        self
    }

    /// Revocation checking, ARI and alerting as configured (the defaults
    /// otherwise).
    pub fn with_revocation(mut self, cfg: RevocationConfig) -> SupervisorBuilder {
        self.revocation = cfg;
        self
    }

    /// The configured CAs in preference order: re-provisioning after swaps,
    /// distrust and compromise chooses among them.
    ///
    /// `same_ca_hold_off` is `policy.reprovision_same_ca_after_seconds`.
    pub fn with_policy(mut self, cas: Vec<CaChoice>, same_ca_hold_off: i64) -> SupervisorBuilder {
        self.policy_cas = cas;
        self.same_ca_hold_off = same_ca_hold_off;
        self
    }

    /// Enables DNS-01 through `solver`'s providers.
    pub fn with_dns01(mut self, solver: Arc<Dns01Solver>) -> SupervisorBuilder {
        self.dns01 = Some(solver);
        self
    }

    /// Builds every controller (none runs until [`Supervisor::run`]).
    pub fn build(self) -> Supervisor {
        let s = &self.store;
        let wake = Arc::new(Notify::new());
        let accounts = Arc::new(accounts::Accounts::default());
        let answers = Http01Answers::new(s.challenges().clone());
        let dns01 = Arc::new(Dns01Challenges::new(
            s.challenges().clone(),
            self.dns01.clone(),
            self.clock.clone(),
        ));
        let planner = planner::Planner::new(
            s.orders().clone(),
            reprovisioner::Reprovisioner::new(
                s,
                self.policy_cas.clone(),
                self.same_ca_hold_off,
                self.cas
                    .values()
                    .filter(|c| c.offers_dns_persist())
                    .map(|c| c.id().to_string())
                    .collect(),
            ),
            revoker::Revoker::new(
                s,
                self.cas.clone(),
                accounts.clone(),
                self.sealer.clone(),
                self.clock.clone(),
            ),
            dns01.clone(),
            persist_expiry::PersistExpiry::new(
                s.alerts().clone(),
                self.cas
                    .values()
                    .filter_map(|c| c.dns_persist_until().map(|t| (c.id().to_string(), t)))
                    .collect(),
            ),
        );
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let issuer = Arc::new(Issuer::new(
            &self,
            accounts,
            wake.clone(),
            answers.clone(),
            dns01,
            planner,
        ));
        let readiness = self.readiness.clone().map(|(cfg, deploy_concurrency)| {
            Arc::new(readiness::ReadinessChecker::new(
                s,
                self.owner.clone(),
                self.clock.clone(),
                readiness::ReadinessParts {
                    cfg,
                    policy_cas: self.policy_cas.clone(),
                    paces: self
                        .cas
                        .values()
                        .map(|c| crate::policy::CaPace {
                            id: c.id().to_string(),
                            orders_per_hour: c.orders_per_hour(),
                            concurrency: c.concurrency(),
                            mean_issue_seconds: None,
                        })
                        .collect(),
                    same_ca_hold_off: self.same_ca_hold_off,
                    deploy_concurrency,
                    dirty: self.readiness_dirty.clone(),
                },
            ))
        });
        let readiness_dirty = self.readiness_dirty.clone();
        let preflight_dirty = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let preflight = self.preflight.clone().map(|(cfg, p)| {
            Arc::new(preflight::PreflightChecker::new(
                s,
                self.owner.clone(),
                self.clock.clone(),
                cfg,
                p,
                preflight_dirty.clone(),
            ))
        });
        let drills = Arc::new(drill::DrillRunner::new(
            s,
            self.owner.clone(),
            self.clock.clone(),
            self.sealer.clone(),
            self.policy_cas.clone(),
            self.readiness
                .as_ref()
                .map(|(c, _)| c.revocation_window_seconds)
                .unwrap_or_else(|| {
                    crate::config::ReadinessConfig::default().revocation_window_seconds
                }),
            self.cas
                .values()
                .map(|c| (c.id().to_string(), c.crl_urls().to_vec()))
                .collect(),
        ));
        let counter = Arc::new(counts::Counter::new(
            s,
            self.owner.clone(),
            self.clock.clone(),
            Duration::from_secs(self.cfg.counts_interval_seconds),
        ));
        let revocation_enabled = self.revocation.enabled;
        let status = Arc::new(StatusChecker::new(
            s,
            self.cas.clone(),
            self.clock.clone(),
            self.revocation,
            self.owner.clone(),
            wake.clone(),
        ));
        let deploy_lease = singleton::Singleton::new(
            s.leases().clone(),
            deployer::LEASE,
            self.owner.clone(),
            deployer::LEASE_TTL,
            self.clock.clone(),
        );
        let delivery = self.delivery.map(Arc::new);
        let deployer = delivery.as_ref().map(|d| {
            Arc::new(Deployer::new(
                s,
                deploy_lease.clone(),
                self.clock.clone(),
                self.sealer.clone(),
                d.clone(),
            ))
        });
        let notifier = delivery
            .as_ref()
            .map(|d| Arc::new(Notifier::new(s, self.clock.clone(), d.clone())));
        Supervisor {
            issuer,
            counter,
            drills,
            readiness,
            readiness_dirty,
            preflight,
            preflight_dirty,
            status,
            revocation_enabled,
            deployer,
            notifier,
            deploy_lease,
            answers,
            wake,
            poll,
            owner: self.owner,
        }
    }
}

/// One readiness computation over `store` for the CAs `policy_cas`, without
/// a lease or a running worker (`twincert bench readiness`).
pub async fn readiness_once(
    store: &Store,
    policy_cas: Vec<CaChoice>,
    cfg: crate::config::ReadinessConfig,
    clock: Arc<dyn Clock>,
) -> Result<crate::domain::ReadinessReport, StoreError> {
    let paces = policy_cas
        .iter()
        .map(|c| crate::policy::CaPace {
            id: c.id.clone(),
            orders_per_hour: 300,
            concurrency: 10,
            mean_issue_seconds: None,
        })
        .collect();
    readiness::ReadinessChecker::new(
        store,
        "bench".into(),
        clock,
        readiness::ReadinessParts {
            cfg,
            policy_cas,
            paces,
            same_ca_hold_off: crate::config::DEFAULT_SAME_CA_HOLD_OFF,
            deploy_concurrency: 8,
            dirty: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        },
    )
    .pass()
    .await
}

/// Starts the controllers and stops them on shutdown.
pub struct Supervisor {
    issuer: Arc<Issuer>,
    counter: Arc<counts::Counter>,
    drills: Arc<drill::DrillRunner>,
    readiness: Option<Arc<readiness::ReadinessChecker>>,
    readiness_dirty: Arc<std::sync::atomic::AtomicBool>,
    preflight: Option<Arc<preflight::PreflightChecker>>,
    /// Set when this replica's API created a name (preflight it now).
    preflight_dirty: Arc<std::sync::atomic::AtomicBool>,
    status: Arc<StatusChecker>,
    revocation_enabled: bool,
    deployer: Option<Arc<Deployer>>,
    notifier: Option<Arc<Notifier>>,
    deploy_lease: singleton::Singleton,
    answers: Arc<Http01Answers>,
    wake: Arc<Notify>,
    poll: Duration,
    owner: String,
}

impl Supervisor {
    /// The controllers over `store` for the configured CAs; `owner` names
    /// this replica in leases.
    pub fn builder(
        store: Store,
        cas: BTreeMap<String, Arc<CaClient>>,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        cfg: WorkerConfig,
        renew_fraction: f64,
        owner: String,
    ) -> SupervisorBuilder {
        SupervisorBuilder {
            store,
            cas,
            sealer,
            clock,
            cfg,
            renew_fraction,
            owner,
            delivery: None,
            policy_cas: Vec::new(),
            same_ca_hold_off: crate::config::DEFAULT_SAME_CA_HOLD_OFF,
            revocation: RevocationConfig::default(),
            dns01: None,
            readiness: None,
            readiness_dirty: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            preflight: None,
        }
    }

    /// The HTTP-01 answers the issuer publishes; serve them with
    /// `validation::http01_router`.
    pub fn http01_answers(&self) -> Arc<Http01Answers> {
        self.answers.clone()
    }

    /// Wakes the issuer now (a name was created), instead of at the next
    /// poll.
    pub fn wake(&self) {
        self.readiness_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.preflight_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// One readiness computation, without the lease (benchmarks and tools);
    /// `None` when readiness is disabled.
    pub async fn readiness_pass(
        &self,
    ) -> Option<Result<crate::domain::ReadinessReport, StoreError>> {
        match &self.readiness {
            Some(r) => Some(r.pass().await),
            None => None,
        }
    }

    /// One status-check pass at `now`, without the lease (benchmarks and
    /// tools that drive the checker directly).
    pub async fn check_pass(&self, now: i64) -> Result<(), StoreError> {
        self.status.check_pass(now).await
    }

    /// One deployment pass and one check pass, without the lease
    /// (benchmarks and tools that drive the deployer directly).
    pub async fn deliver_once(&self) -> Result<(), StoreError> {
        match &self.deployer {
            Some(d) => d.clone().pass().await,
            None => Ok(()),
        }
    }

    /// Seconds per stage of the deployment passes since the last call
    /// (`bench deploy`'s breakdown); `None` without a deployer.
    pub fn deploy_stages(&self) -> Option<serde_json::Value> {
        self.deployer.as_ref().map(|d| d.take_stages())
    }

    /// Runs every controller until `shutdown` turns true; returns when the
    /// issuer has handed back its leases.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        info!(owner = %self.owner, "worker started");
        if self.revocation_enabled {
            tokio::spawn(self.status.clone().run(shutdown.clone()));
        }
        if let Some(r) = self.readiness.clone() {
            tokio::spawn(r.run(shutdown.clone()));
        }
        if let Some(p) = self.preflight.clone() {
            tokio::spawn(p.run(shutdown.clone()));
        }
        tokio::spawn(self.drills.clone().run(shutdown.clone()));
        tokio::spawn(self.counter.clone().run(shutdown.clone()));
        if let (Some(deployer), Some(notifier)) = (self.deployer.clone(), self.notifier.clone()) {
            let lease = self.deploy_lease.clone();
            let every = self.poll.max(Duration::from_millis(200));
            let stop = shutdown.clone();
            tokio::spawn(async move {
                lease
                    .run(every, stop, || {
                        let (deployer, notifier) = (deployer.clone(), notifier.clone());
                        async move {
                            if let Err(e) = deployer.pass().await {
                                tracing::warn!(error = %e, "deployment pass failed");
                            }
                            notifier.pass().await;
                        }
                    })
                    .await
            });
        }
        self.issuer.clone().run(shutdown).await;
        info!("worker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        for _ in 0..50 {
            let first = backoff_secs(2, 3600, 0, None);
            assert!((2..=4).contains(&first), "first retry {first}");
            let fifth = backoff_secs(2, 3600, 4, None);
            assert!((32..=64).contains(&fifth), "fifth retry {fifth}");
            assert_eq!(backoff_secs(2, 60, 30, None), 60, "capped");
            assert_eq!(backoff_secs(2, 60, 0, Some(600)), 600, "Retry-After wins");
            assert!(backoff_secs(2, 60, 0, Some(1)) >= 2, "never below min");
        }
    }
}
