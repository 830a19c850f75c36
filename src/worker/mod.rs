//! The worker: the planner and the order processor.
//!
//! *Observes* the store: slots without a current or with a due certificate
//! (planner), and due order rows (processor). *Writes* only through the
//! store, in the order documented in `store`: key before ACME order, order
//! URL before polling, tokens before telling the CA, certificate + slot +
//! order end in one transaction. Replicas share the work by leasing rows;
//! a crashed worker's lease runs out and another one resumes its order from
//! the stored URL, reusing the stored key.
//!
//! A failed attempt is a *result*: its error is stored on the order and the
//! slot, and the order is retried after an exponential backoff with jitter
//! (`backon`). A final CA answer (4xx other than badNonce/rateLimited) ends
//! the ACME order, so the next attempt opens a fresh one; `rateLimited`
//! waits at least the CA's Retry-After.

mod accounts;
mod deploy;
mod revocation;

pub use deploy::Delivery;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, error, info, info_span, warn};

use crate::ca::{AcmeError, AcmeErrorKind, CaClient, Http01Publisher, Progress};
use crate::certs;
use crate::clock::Clock;
use crate::config::{RevocationConfig, WorkerConfig};
use crate::domain::ChallengeKind;
use crate::domain::DnsName;
use crate::domain::KeyType;
use crate::keys::CertKey;
use crate::keys::seal::Sealer;
use crate::policy::{self, CaChoice, IssuedFacts};
use crate::store::{Completed, NewCertificate, OrderJob, Store, StoreError};
use crate::validation::Http01Answers;
use crate::validation::dns::Dns01Solver;

/// The provider id recorded for manually published DNS-01 records.
pub const MANUAL_PROVIDER: &str = "manual";

/// Everything the worker needs, shared by its tasks.
pub struct Worker {
    store: Store,
    cas: BTreeMap<String, Arc<CaClient>>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
    renew_fraction: f64,
    owner: String,
    accounts: accounts::Accounts,
    /// Per-CA limit of orders in flight (the profile's or the config's).
    ca_permits: BTreeMap<String, Arc<Semaphore>>,
    wake: Notify,
    answers: Arc<Http01Answers>,
    dns01: Option<Arc<Dns01Solver>>,
    failpoint: Option<String>,
    /// The configured CAs in preference order, for re-provisioning.
    policy_cas: Vec<CaChoice>,
    /// Where the walk over names marked for re-provisioning goes on.
    reprovision_cursor: std::sync::Mutex<String>,
    /// Revocation checks, ARI, incidents, expiry alerts.
    revocation: RevocationConfig,
    checker: revocation::Checker,
    /// Destinations, endpoint checks and alert channels (issue 7).
    delivery: Option<Arc<deploy::Delivery>>,
}

/// Why one attempt failed, and how to go on.
struct AttemptError {
    kind: AcmeErrorKind,
    message: String,
    retry_after: Option<u64>,
    /// Not a failure but a wait (manual DNS-01): the next attempt comes
    /// after exactly `retry_after`, without backoff growth.
    waiting: bool,
    /// Held back by the CA's pacing before anything was sent: the order
    /// waits `retry_after` and the attempt does not count at all.
    paced: bool,
}

impl From<AcmeError> for AttemptError {
    fn from(e: AcmeError) -> Self {
        AttemptError {
            kind: e.kind,
            message: e.message,
            retry_after: None,
            waiting: false,
            paced: false,
        }
    }
}

impl From<StoreError> for AttemptError {
    fn from(e: StoreError) -> Self {
        AttemptError {
            kind: AcmeErrorKind::Transient,
            message: format!("store: {e}"),
            retry_after: None,
            waiting: false,
            paced: false,
        }
    }
}

fn final_error(message: impl Into<String>) -> AttemptError {
    AttemptError {
        kind: AcmeErrorKind::Final,
        message: message.into(),
        retry_after: None,
        waiting: false,
        paced: false,
    }
}

fn transient(message: impl Into<String>) -> AttemptError {
    AttemptError {
        kind: AcmeErrorKind::Transient,
        message: message.into(),
        retry_after: None,
        waiting: false,
        paced: false,
    }
}

/// An attempt that waits for something outside twincert (a person
/// publishing DNS records): retried after exactly `secs`.
fn waiting(message: impl Into<String>, secs: u64) -> AttemptError {
    AttemptError {
        kind: AcmeErrorKind::Transient,
        message: message.into(),
        retry_after: Some(secs),
        waiting: true,
        paced: false,
    }
}

struct AnswerPublisher<'a> {
    answers: &'a Http01Answers,
    order_id: &'a str,
    now: i64,
}

impl Http01Publisher for AnswerPublisher<'_> {
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        self.answers
            .publish(token, key_authorization, self.order_id, self.now)
            .await
            .map_err(|e| e.to_string())
    }
}

/// How many times its own duration the planning pass waits before it
/// runs again (so it takes at most 1/20 of a core however many names).
const PLAN_DUTY: u32 = 20;
/// The longest pause between planning passes: renewals are planned days
/// ahead, so a minute of delay on a huge store costs nothing.
const PLAN_MAX_PAUSE: Duration = Duration::from_secs(60);

/// The pause after a planning pass that took `took`: the poll interval on
/// a small store, longer on a large one (see [`PLAN_DUTY`]).
fn plan_interval(poll: Duration, took: Duration) -> Duration {
    poll.max(took.saturating_mul(PLAN_DUTY))
        .min(PLAN_MAX_PAUSE.max(poll))
}

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

impl Worker {
    /// A worker over `store` for the configured CAs. `owner` names this
    /// replica in leases.
    pub fn new(
        store: Store,
        cas: BTreeMap<String, Arc<CaClient>>,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        cfg: WorkerConfig,
        renew_fraction: f64,
        owner: String,
    ) -> Worker {
        let ca_permits = cas
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    Arc::new(Semaphore::new(c.concurrency() as usize)),
                )
            })
            .collect();
        Worker {
            answers: Http01Answers::new(store.clone()),
            dns01: None,
            store,
            ca_permits,
            cas,
            sealer,
            clock,
            cfg,
            renew_fraction,
            owner,
            accounts: accounts::Accounts::default(),
            wake: Notify::new(),
            // Test hook for crash-safety tests; see `process`.
            failpoint: std::env::var("TWINCERT_FAILPOINT").ok(),
            policy_cas: Vec::new(),
            reprovision_cursor: std::sync::Mutex::new(String::new()),
            checker: revocation::Checker::new(RevocationConfig::default().refresh_seconds),
            revocation: RevocationConfig::default(),
            delivery: None,
        }
    }

    /// Deployment to destinations, endpoint checks and alert delivery.
    pub fn with_delivery(mut self, delivery: deploy::Delivery) -> Worker {
        self.delivery = Some(Arc::new(delivery));
        self
    }

    /// Revocation checking, ARI and alerting as configured (the defaults
    /// otherwise).
    pub fn with_revocation(mut self, cfg: RevocationConfig) -> Worker {
        self.checker = revocation::Checker::new(cfg.refresh_seconds);
        self.revocation = cfg;
        self
    }

    /// The configured CAs in preference order: re-provisioning after swaps,
    /// distrust and compromise chooses among them.
    pub fn with_policy(mut self, cas: Vec<CaChoice>) -> Worker {
        self.policy_cas = cas;
        self
    }

    /// Enables DNS-01 through `solver`'s providers.
    pub fn with_dns01(mut self, solver: Arc<Dns01Solver>) -> Worker {
        self.dns01 = Some(solver);
        self
    }

    /// The HTTP-01 answers this worker publishes; serve them with
    /// `validation::http01_router`.
    pub fn http01_answers(&self) -> Arc<Http01Answers> {
        self.answers.clone()
    }

    /// Wakes the loop now (a name was created), instead of at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown` turns true: plan, lease, process, repeat.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        info!(owner = %self.owner, concurrency = self.cfg.concurrency, "worker started");
        let base_plan_every = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut plan_every = base_plan_every;
        let mut last_plan: Option<tokio::time::Instant> = None;
        if self.revocation.enabled {
            tokio::spawn(self.clone().revocation_loop(shutdown.clone()));
        }
        tokio::spawn(self.clone().deploy_loop(shutdown.clone()));
        self.wake_paced().await;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = self.clock.now();
            // The planner scans every slot, so it runs on the poll tick, not
            // on every wake-up (new names bring their own orders), and no
            // more often than keeps it under 1/PLAN_DUTY of the time: a
            // million idle names must not keep a core busy re-reading them.
            if last_plan.is_none_or(|t| t.elapsed() >= plan_every) {
                let started = tokio::time::Instant::now();
                // Moves marked slots first, so the planner does not open
                // orders for them at the CA they are leaving.
                self.reprovision(now).await;
                if let Err(e) = self.store.orders().plan_due_orders(now, 1000).await {
                    warn!(error = %e, "planner failed");
                }
                self.sweep_dns().await;
                self.revoke_pending().await;
                plan_every = plan_interval(base_plan_every, started.elapsed());
                last_plan = Some(tokio::time::Instant::now());
            }
            let free = permits.available_permits();
            let mut leased = 0;
            if free > 0 {
                match self
                    .store
                    .leases()
                    .lease_orders(&self.owner, now, self.cfg.lease_seconds, free as u64)
                    .await
                {
                    Ok(jobs) => {
                        leased = jobs.len();
                        for job in jobs {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                break;
                            };
                            let me = self.clone();
                            tokio::spawn(async move {
                                me.process(job).await;
                                drop(permit);
                                me.wake();
                            });
                        }
                    }
                    Err(e) => warn!(error = %e, "leasing orders failed"),
                }
            }
            // Leased a full batch: there may be more right away.
            if leased > 0 && leased == free {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.poll_interval_ms)) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Graceful: no new leases were taken since the signal; give the
        // orders in flight a moment to finish, then hand the rest back.
        let in_flight = self.cfg.concurrency.max(1);
        let grace = Duration::from_secs((self.cfg.lease_seconds as u64 / 4).clamp(1, 10));
        let finished = tokio::time::timeout(
            grace,
            permits.acquire_many(u32::try_from(in_flight).unwrap_or(u32::MAX)),
        )
        .await
        .is_ok();
        if !finished {
            match self
                .store
                .leases()
                .release_leases(&self.owner, self.clock.now())
                .await
            {
                Ok(n) => info!(released = n, "worker stopping: leases handed back"),
                Err(e) => warn!(error = %e, "worker stopping: could not hand back leases"),
            }
        }
        info!("worker stopped");
    }

    /// Carries one leased order as far as it goes, and records the outcome.
    pub async fn process(&self, job: OrderJob) {
        let span = info_span!("order", managed_name = %job.name_id, slot = %job.slot, ca = %job.ca_id, order = %job.id);
        async {
            // Keep the lease while working: renew it every third of its
            // length, so a slow CA never lets another replica take the
            // order, yet a crashed worker's lease runs out quickly.
            let heartbeat = async {
                let every = Duration::from_millis((self.cfg.lease_seconds as u64 * 1000) / 3);
                loop {
                    tokio::time::sleep(every).await;
                    let until = self.clock.now() + self.cfg.lease_seconds;
                    if let Err(e) = self
                        .store
                        .leases()
                        .renew_lease(&job.id, &self.owner, until)
                        .await
                    {
                        warn!(error = %e, "could not renew the lease");
                    }
                }
            };
            // A bound on the whole attempt, beyond the per-request and
            // per-wait bounds inside `ca`: an order never hangs a permit.
            let limit =
                Duration::from_secs(self.cfg.acme_timeout_seconds.saturating_mul(4).max(10));
            let work = crate::ca::with_retry_after(async {
                match tokio::time::timeout(limit, self.attempt(&job)).await {
                    Ok(r) => r,
                    Err(_) => Err(transient(format!(
                        "attempt did not finish within {} s",
                        limit.as_secs()
                    ))),
                }
            });
            let (result, retry_after) = tokio::select! {
                r = work => r,
                never = heartbeat => match never {},
            };
            self.answers.forget_order(&job.id);
            match job.challenge {
                ChallengeKind::Dns01 => self.cleanup_dns(&job.id).await,
                // Manual records stay listed while the order waits for them.
                ChallengeKind::Dns01Manual if result.is_ok() => self.cleanup_dns(&job.id).await,
                _ => {}
            }
            let now = self.clock.now();
            match result {
                Ok(serial) => info!(serial = %serial, "certificate stored"),
                Err(mut e) => {
                    e.retry_after = e.retry_after.or(crate::ca::retry_after_secs(retry_after));
                    let ca_url = self
                        .cas
                        .get(&job.ca_id)
                        .map(|c| c.directory_url().to_string())
                        .unwrap_or_default();
                    let message = format!("CA {} ({ca_url}): {}", job.ca_id, e.message);
                    let delay = if e.waiting {
                        e.retry_after.unwrap_or(self.cfg.min_backoff_seconds)
                    } else {
                        backoff_secs(
                            self.cfg.min_backoff_seconds,
                            self.cfg.max_backoff_seconds,
                            job.attempts,
                            e.retry_after,
                        )
                    };
                    if e.paced {
                        info!(wait_s = delay, "{message}");
                        if let Err(se) = self
                            .store
                            .orders()
                            .defer_order(&job.id, &self.owner, &message, now + delay as i64, now)
                            .await
                        {
                            warn!(error = %se, "could not defer the paced order");
                        }
                        return;
                    }
                    warn!(error = %message, kind = ?e.kind, retry_in_s = delay, "attempt failed");
                    let forget = e.kind == AcmeErrorKind::Final;
                    if let Err(se) = self
                        .store
                        .orders()
                        .fail_attempt(
                            &job.id,
                            &self.owner,
                            &message,
                            now + delay as i64,
                            forget,
                            now,
                        )
                        .await
                    {
                        warn!(error = %se, "could not record the failed attempt");
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(&self, job: &OrderJob) -> Result<String, AttemptError> {
        let ca = self
            .cas
            .get(&job.ca_id)
            .ok_or_else(|| final_error(format!("CA '{}' is not configured", job.ca_id)))?
            .clone();
        let _ca_permit = match self.ca_permits.get(&job.ca_id) {
            Some(p) => Some(
                p.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| final_error("worker is shutting down"))?,
            ),
            None => None,
        };
        let domains: Vec<DnsName> = job
            .domains
            .iter()
            .map(|d| DnsName::parse(d))
            .collect::<Result<_, _>>()
            .map_err(|e| final_error(format!("stored name is invalid: {e}")))?;
        self.accounts
            .ensure(&ca, &self.store, &self.sealer, self.clock.now())
            .await?;
        if job.acme_order_url.is_none() {
            self.pace(&ca, job).await?;
        }
        let key = self.order_key(job).await?;

        let mut order = match &job.acme_order_url {
            Some(url) => match ca.resume_order(url).await {
                Ok(o) => o,
                // The CA forgot the order (or it is unreadable): a new one.
                Err(e) if e.kind == AcmeErrorKind::Final => self.new_acme_order(&ca, job).await?,
                Err(e) => return Err(e.into()),
            },
            None => self.new_acme_order(&ca, job).await?,
        };
        if self.failpoint.as_deref() == Some("after_order_url") {
            warn!("failpoint after_order_url: hanging until killed");
            std::future::pending::<()>().await;
        }

        let publisher = AnswerPublisher {
            answers: &self.answers,
            order_id: &job.id,
            now: self.clock.now(),
        };
        if order.progress() == Progress::Pending {
            match job.challenge {
                ChallengeKind::Http01 => order.answer_http01(&publisher).await?,
                ChallengeKind::Dns01 => self.answer_dns01(job, &mut order).await?,
                ChallengeKind::Dns01Manual => self.answer_dns01_manual(job, &mut order).await?,
            }
            order.wait_ready().await?;
        }
        if let Progress::Invalid(why) = order.progress() {
            return Err(final_error(why));
        }
        let csr = key
            .csr_der(&domains)
            .map_err(|e| final_error(format!("cannot build the CSR: {e}")))?;
        let chain = order.finalize_and_download(&csr).await?;

        let facts = certs::inspect_chain(&chain)
            .map_err(|e| final_error(format!("the CA returned an unreadable chain: {e}")))?;
        let fp = key.fingerprint();
        if facts.spki_sha256 != fp {
            return Err(final_error(
                "the CA returned a certificate for a different key than our CSR's",
            ));
        }
        for d in &job.domains {
            if !facts.dns_names.iter().any(|n| n.eq_ignore_ascii_case(d)) {
                return Err(final_error(format!(
                    "the CA's certificate does not cover {d}"
                )));
            }
        }
        let now = self.clock.now();
        let cert = NewCertificate {
            serial: facts.serial.clone(),
            issuer: facts.issuer.clone(),
            root_id: facts.root_id.clone(),
            not_before: facts.not_before,
            not_after: facts.not_after,
            renew_after: policy::renew_at(facts.not_before, facts.not_after, self.renew_fraction),
            spki_sha256: facts.spki_sha256.0.clone(),
            chain_pem: chain,
        };
        let done = self
            .store
            .orders()
            .complete_order(&job.id, &self.owner, &cert, now)
            .await?;
        self.check_diversity(&job.name_id, &job.ca_id, &cert, &done)
            .await;
        Ok(facts.serial)
    }

    /// DNS-01 (RFC 8555 §8.4): record, then publish each answer where
    /// CNAME delegation points; wait until every authoritative server shows
    /// all of them; only then tell the CA. Leftovers of an earlier attempt
    /// of this order are removed first.
    async fn answer_dns01(
        &self,
        job: &OrderJob,
        order: &mut crate::ca::AcmeOrder,
    ) -> Result<(), AttemptError> {
        let solver = self
            .dns01
            .clone()
            .ok_or_else(|| final_error("dns-01 needs a DNS provider; none is configured"))?;
        self.cleanup_dns(&job.id).await;
        let tasks = order.dns01_tasks().await?;
        let mut placed = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let p = solver
                .place(&t.domain, job.dns_provider.as_deref())
                .await
                .map_err(transient)?;
            self.store
                .challenges()
                .add_dns_record(
                    &job.id,
                    p.provider.id(),
                    &p.fqdn,
                    &t.value,
                    self.clock.now(),
                )
                .await?;
            p.provider
                .present(&p.fqdn, &t.value)
                .await
                .map_err(|e| transient(e.0))?;
            placed.push((p.zone, p.fqdn, t.value.clone()));
        }
        if self.failpoint.as_deref() == Some("after_dns_present") {
            warn!("failpoint after_dns_present: hanging until killed");
            std::future::pending::<()>().await;
        }
        let started = std::time::Instant::now();
        for (zone, fqdn, value) in &placed {
            solver
                .wait_visible(zone, fqdn, value)
                .await
                .map_err(transient)?;
        }
        let waited = started.elapsed();
        info!(
            records = placed.len(),
            propagation_ms = waited.as_millis() as u64,
            "dns-01 records visible"
        );
        let _ = self
            .store
            .orders()
            .set_propagation_ms(
                &job.id,
                i64::try_from(waited.as_millis()).unwrap_or(i64::MAX),
            )
            .await;
        let urls: Vec<String> = tasks.into_iter().map(|t| t.url).collect();
        order.set_ready(&urls).await?;
        Ok(())
    }

    /// Manual DNS-01: the TXT records a person must publish are stored (the
    /// API lists them); each attempt asks the authoritative servers once and
    /// tells the CA only when all are visible, else it retries after
    /// `dns.manual_poll_seconds`. Records nobody published within
    /// `dns.manual_expiry_seconds` expire: the attempt ends finally, and the
    /// next one starts a fresh ACME order with fresh values.
    async fn answer_dns01_manual(
        &self,
        job: &OrderJob,
        order: &mut crate::ca::AcmeOrder,
    ) -> Result<(), AttemptError> {
        let solver = self
            .dns01
            .clone()
            .ok_or_else(|| final_error("dns-01-manual needs the [dns] lookups"))?;
        let cfg = solver.lookup().config().clone();
        let tasks = order.dns01_tasks().await?;
        let now = self.clock.now();
        let mut records = self.store.challenges().dns_records_of(&job.id).await?;
        // Values of an earlier ACME order are no longer wanted.
        for r in &records {
            if !tasks.iter().any(|t| t.value == r.value) {
                self.store.challenges().delete_dns_record(&r.id).await?;
            }
        }
        records.retain(|r| tasks.iter().any(|t| t.value == r.value));
        for t in &tasks {
            if !records.iter().any(|r| r.value == t.value) {
                let fqdn = format!("_acme-challenge.{}", t.domain);
                let id = self
                    .store
                    .challenges()
                    .add_dns_record(&job.id, MANUAL_PROVIDER, &fqdn, &t.value, now)
                    .await?;
                records.push(crate::store::DnsRecord {
                    id,
                    order_id: job.id.clone(),
                    provider_id: MANUAL_PROVIDER.into(),
                    fqdn,
                    value: t.value.clone(),
                    created_at: now,
                });
            }
        }
        let oldest = records.iter().map(|r| r.created_at).min().unwrap_or(now);
        let mut missing = Vec::new();
        for r in &records {
            let zone = crate::validation::dns::find_zone(solver.lookup(), &r.fqdn)
                .await
                .map_err(|e| waiting(e, cfg.manual_poll_seconds))?;
            let visible = solver
                .lookup()
                .txt_visible(&zone, &r.fqdn, &r.value)
                .await
                .unwrap_or(false);
            if !visible {
                missing.push(format!("{} TXT \"{}\"", r.fqdn, r.value));
            }
        }
        if !missing.is_empty() {
            if now - oldest >= cfg.manual_expiry_seconds {
                for r in &records {
                    self.store.challenges().delete_dns_record(&r.id).await?;
                }
                return Err(final_error(format!(
                    "manual DNS-01 expired: the TXT records were not published within {} s; \
                     a new request with new values follows",
                    cfg.manual_expiry_seconds
                )));
            }
            return Err(waiting(
                format!("waiting for manual DNS-01 records: {}", missing.join(", ")),
                cfg.manual_poll_seconds,
            ));
        }
        let urls: Vec<String> = tasks.into_iter().map(|t| t.url).collect();
        order.set_ready(&urls).await?;
        Ok(())
    }

    /// Removes the TXT records an order published; a record whose removal
    /// fails stays recorded for the sweep.
    async fn cleanup_dns(&self, order_id: &str) {
        let Some(solver) = &self.dns01 else { return };
        let Ok(records) = self.store.challenges().dns_records_of(order_id).await else {
            return;
        };
        self.remove_records(solver, records).await;
    }

    async fn remove_records(&self, solver: &Dns01Solver, records: Vec<crate::store::DnsRecord>) {
        for r in records {
            if r.provider_id == MANUAL_PROVIDER {
                // Published by a person: nothing for twincert to remove.
                let _ = self.store.challenges().delete_dns_record(&r.id).await;
                continue;
            }
            let Some(p) = solver.provider(&r.provider_id) else {
                warn!(provider = %r.provider_id, fqdn = %r.fqdn, "cannot clean up: DNS provider no longer configured");
                continue;
            };
            match p.cleanup(&r.fqdn, &r.value).await {
                Ok(()) => {
                    let _ = self.store.challenges().delete_dns_record(&r.id).await;
                }
                Err(e) => warn!(error = %e, "dns-01 cleanup failed; the sweep will retry"),
            }
        }
    }

    /// Carries out queued key-compromise revocations (RFC 8555 §7.6). A
    /// failure stays queued with its error and is retried on the next tick.
    async fn revoke_pending(&self) {
        let Ok(jobs) = self.store.ca_revocations().pending_revocations(20).await else {
            return;
        };
        for (id, ca_id, chain_pem, reason_code) in jobs {
            let now = self.clock.now();
            let result = async {
                let ca = self
                    .cas
                    .get(&ca_id)
                    .ok_or_else(|| format!("CA '{ca_id}' is not configured"))?;
                self.accounts
                    .ensure(ca, &self.store, &self.sealer, now)
                    .await
                    .map_err(|e| e.message)?;
                let der = certs::chain_ders(&chain_pem)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .next()
                    .ok_or_else(|| "empty chain".to_string())?;
                ca.revoke(&der, reason_code).await.map_err(|e| e.message)
            }
            .await;
            match &result {
                Ok(()) => {
                    info!(ca = %ca_id, revocation = %id, reason_code, "certificate revoked")
                }
                Err(e) => {
                    warn!(ca = %ca_id, revocation = %id, error = %e, "revocation failed; will retry")
                }
            }
            let _ = self
                .store
                .ca_revocations()
                .revocation_result(&id, result.as_ref().err().map(String::as_str), now)
                .await;
        }
    }

    /// Crash recovery: removes records of orders that are no longer open.
    async fn sweep_dns(&self) {
        let Some(solver) = &self.dns01 else { return };
        if let Ok(records) = self.store.challenges().stale_dns_records(100).await
            && !records.is_empty()
        {
            info!(count = records.len(), "sweeping leftover dns-01 records");
            self.remove_records(solver, records).await;
        }
    }

    /// Orders deferred by a CA's pace were given a time under the limit
    /// then in force; this process may run with a higher one, so the ones
    /// it leaves room for are made due now.
    async fn wake_paced(&self) {
        let now = self.clock.now();
        for ca in self.cas.values() {
            match self
                .store
                .pacing()
                .wake_paced_orders(ca.id(), i64::from(ca.orders_per_hour()), now)
                .await
            {
                Ok(0) => {}
                Ok(n) => info!(
                    ca = ca.id(),
                    orders = n,
                    "paced orders woken under the current limit"
                ),
                Err(e) => warn!(ca = ca.id(), error = %e, "could not wake paced orders"),
            }
        }
    }

    /// Holds a new ACME order back while the CA had its configured
    /// `orders_per_hour` in the last hour. The count and this order's
    /// reservation are one step per CA in the store, so replicas together
    /// never exceed it. The order is deferred: no attempt is counted and
    /// the slot shows no error (the order's note says why it waits).
    async fn pace(&self, ca: &CaClient, job: &OrderJob) -> Result<(), AttemptError> {
        let now = self.clock.now();
        let limit = i64::from(ca.orders_per_hour());
        let Some((opened, oldest)) = self
            .store
            .pacing()
            .reserve_acme_order(ca.id(), &job.id, &self.owner, limit, now)
            .await?
        else {
            return Ok(());
        };
        let wait = oldest.map_or(60, |t| t + 3600 - now).max(1) as u64;
        Err(AttemptError {
            kind: AcmeErrorKind::Transient,
            message: format!(
                "paced: {opened} ACME orders at this CA in the last hour reach its configured \
                 orders_per_hour = {limit}; the next one in {wait} s"
            ),
            retry_after: Some(wait),
            waiting: true,
            paced: true,
        })
    }

    /// Moves the slots that swaps, distrust and compromise marked for
    /// re-provisioning to a CA chosen by policy and opens their orders;
    /// a slot no CA can take is reported blocked on its operation.
    async fn reprovision(&self, now: i64) {
        match self.store.operations().reprovision_pending().await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(error = %e, "checking for re-provisioning work failed");
                return;
            }
        }
        let mut cursor = self
            .reprovision_cursor
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        for _ in 0..20 {
            let jobs = match self.store.operations().reprovision_jobs(&cursor, 500).await {
                Ok(j) if j.is_empty() => {
                    // The end of the names: once a walk from the start
                    // finds nothing, every marker was taken.
                    if cursor.is_empty()
                        && let Err(e) = self.store.operations().close_reprovision().await
                    {
                        warn!(error = %e, "closing re-provisioning failed");
                    }
                    cursor.clear();
                    break;
                }
                Ok(j) => j,
                Err(e) => {
                    warn!(error = %e, "listing re-provisioning work failed");
                    return;
                }
            };
            let distrusted = match self.store.cas().distrusted_cas().await {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "reading distrusted CAs failed");
                    return;
                }
            };
            let cas: Vec<CaChoice> = self
                .policy_cas
                .iter()
                .map(|c| CaChoice {
                    distrusted: c.distrusted || distrusted.contains(&c.id),
                    ..c.clone()
                })
                .collect();
            let mut blocked = 0;
            let mut first_block: Option<String> = None;
            for job in &jobs {
                let choice = match job.key_type.parse::<KeyType>() {
                    Ok(kt) => policy::choose_reprovision_ca(
                        &cas,
                        kt,
                        &job.slot_ca,
                        &job.other_ca,
                        job.avoid_ca.as_deref(),
                    ),
                    Err(e) => Err(format!("stored key type is invalid: {e}")),
                };
                let result = match &choice {
                    Ok(ca) => self
                        .store
                        .operations()
                        .start_reprovision(job, ca, now)
                        .await
                        .map(|_| ()),
                    Err(why) => {
                        blocked += 1;
                        first_block
                            .get_or_insert_with(|| format!("{} {}: {why}", job.name_id, job.slot));
                        self.store
                            .operations()
                            .block_reprovision(job, why, now)
                            .await
                    }
                };
                if let Err(e) = result {
                    // Left marked: the next walk tries it again; the others
                    // go on.
                    warn!(managed_name = %job.name_id, error = %e, "re-provisioning failed");
                }
            }
            // One line per batch, not per slot: a distrust can block a
            // million slots at once.
            if let Some(first) = first_block {
                warn!(slots = blocked, first = %first, "re-provisioning blocked");
            }
            info!(
                slots = jobs.len() - blocked,
                "re-provisioning orders opened"
            );
            if let Some(last) = jobs.last() {
                cursor = last.name_id.clone();
            }
        }
        if let Ok(mut c) = self.reprovision_cursor.lock() {
            *c = cursor;
        }
    }

    async fn new_acme_order(
        &self,
        ca: &CaClient,
        job: &OrderJob,
    ) -> Result<crate::ca::AcmeOrder, AttemptError> {
        let replaces = self.replaces(ca, job).await;
        let order = match ca.new_order(&job.domains, replaces.as_deref()).await {
            // A CA may refuse `replaces` (alreadyReplaced: an earlier
            // order of ours replaced it already); the renewal goes on
            // without it.
            Err(e) if replaces.is_some() && e.kind == AcmeErrorKind::Final => {
                warn!(error = %e.message, "order with ARI replaces refused; ordering without");
                ca.new_order(&job.domains, None).await?
            }
            other => {
                let order = other?;
                if let Some(r) = &replaces {
                    self.store.orders().set_order_replaces(&job.id, r).await?;
                }
                order
            }
        };
        // Written down before anything polls it: a restart resumes it.
        self.store
            .orders()
            .set_acme_order_url(&job.id, &self.owner, &order.url(), self.clock.now())
            .await?;
        Ok(order)
    }

    /// The RFC 9773 id of the certificate this order renews, to send as
    /// `replaces`: only to a CA that offers ARI, only when the slot's
    /// current certificate comes from the same CA (and so the same
    /// account — twincert keeps one per CA).
    async fn replaces(&self, ca: &CaClient, job: &OrderJob) -> Option<String> {
        if !self.revocation.ari {
            return None;
        }
        match ca.renewal_info_url().await {
            Ok(Some(_)) => {}
            _ => return None,
        }
        let pem = self.store.orders().renewal_source(&job.id).await.ok()??;
        let ders = crate::certs::chain_ders(&pem).ok()?;
        crate::certs::ari_cert_id(ders.first()?)
    }

    /// The order's key: the stored one when the order has it (resume),
    /// else a fresh one, sealed and stored before any CA sees its CSR.
    async fn order_key(&self, job: &OrderJob) -> Result<CertKey, AttemptError> {
        if let Some(id) = &job.private_key_id {
            let (key_type, sealed) = self
                .store
                .keys()
                .private_key(id)
                .await?
                .ok_or_else(|| final_error(format!("the order's key {id} is missing")))?;
            return CertKey::unseal(&self.sealer, key_type, &sealed)
                .map_err(|e| final_error(format!("the order's stored key: {e}")));
        }
        let key_type = job.key_type;
        let key = tokio::task::spawn_blocking(move || CertKey::generate(key_type))
            .await
            .map_err(|e| final_error(format!("key generation panicked: {e}")))?
            .map_err(|e| final_error(format!("key generation failed: {e}")))?;
        let sealed = key
            .seal(&self.sealer)
            .map_err(|e| final_error(format!("cannot seal the key: {e}")))?;
        self.store
            .orders()
            .attach_key(
                &job.id,
                &self.owner,
                key_type,
                &key.fingerprint().0,
                &sealed,
                self.clock.now(),
            )
            .await?;
        Ok(key)
    }

    /// Invariant 1: after issuance the two current certificates must come
    /// from different roots under different keys. A violation is stored on
    /// the name (state `degraded`) and logged as an alert; a pair that is
    /// diverse again clears it.
    async fn check_diversity(
        &self,
        name_id: &str,
        ca_id: &str,
        cert: &NewCertificate,
        done: &Completed,
    ) {
        let Some(other) = &done.other else { return };
        let fa = IssuedFacts {
            ca: ca_id,
            root_id: &cert.root_id,
            spki_sha256: &cert.spki_sha256,
        };
        let fb = IssuedFacts {
            ca: &other.ca_id,
            root_id: &other.root_id,
            spki_sha256: &other.spki_sha256,
        };
        let verdict = policy::check_diversity(&fa, &fb)
            .err()
            .map(|v| v.to_string());
        if let Some(v) = &verdict {
            error!(managed_name = %name_id, violation = %v, alert = true, "diversity check failed");
        }
        if verdict != done.diversity_error
            && let Err(e) = self
                .store
                .names()
                .set_diversity_error(name_id, verdict.as_deref(), self.clock.now())
                .await
        {
            warn!(error = %e, "could not record the diversity check");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_pauses_grow_with_the_pass_and_are_capped() {
        let poll = Duration::from_millis(500);
        // A small store: every poll tick.
        assert_eq!(plan_interval(poll, Duration::from_millis(3)), poll);
        // A 200 ms pass: 4 s, so the planner takes 1/20 of the time.
        assert_eq!(
            plan_interval(poll, Duration::from_millis(200)),
            Duration::from_secs(4)
        );
        // A 10 s pass (millions of slots): at most a minute.
        assert_eq!(
            plan_interval(poll, Duration::from_secs(10)),
            Duration::from_secs(60)
        );
        // A poll interval above the cap is kept.
        assert_eq!(
            plan_interval(Duration::from_secs(90), Duration::from_secs(10)),
            Duration::from_secs(90)
        );
    }

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
