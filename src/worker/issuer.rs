//! The issuer: carries leased orders through ACME to a stored
//! certificate, and runs the planning pass on its cadence.
//!
//! *Observes*: due order rows (leased, `store::Leases`), the CAs' ACME
//! answers. *Writes* only through the store, in the order documented in
//! `store`: key before ACME order, order URL before polling, tokens before
//! telling the CA, certificate + slot + order end in one transaction.
//! Replicas share the work by leasing rows; a crashed issuer's lease runs
//! out and another one resumes its order from the stored URL, reusing the
//! stored key.
//!
//! A failed attempt is a *result*: its error is stored on the order and the
//! slot, and the order is retried after an exponential backoff with jitter
//! (`backon`). A final CA answer (4xx other than badNonce/rateLimited) ends
//! the ACME order, so the next attempt opens a fresh one; `rateLimited`
//! waits at least the CA's Retry-After.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, error, info, info_span, warn};

use super::accounts::Accounts;
use super::planner::Planner;
use super::{SupervisorBuilder, backoff_secs};
use crate::ca::{AcmeError, AcmeErrorKind, CaClient, Http01Publisher, Progress};
use crate::certs;
use crate::clock::Clock;
use crate::config::WorkerConfig;
use crate::domain::{ChallengeKind, DnsName};
use crate::keys::CertKey;
use crate::keys::seal::Sealer;
use crate::policy::{self, IssuedFacts};
use crate::store::{
    Completed, Keys, Leases, Names, NewCertificate, OrderJob, Orders, Pacing, StoreError,
    StoredSources,
};
use crate::validation::Http01Answers;
use crate::validation::dns01::{Answer, Dns01Challenges, Dns01Error};

/// The issuer controller and what it needs.
pub struct Issuer {
    orders: Orders,
    leases: Leases,
    keys: Keys,
    pacing: Pacing,
    names: Names,
    /// The issuer domain names chosen for dns-persist-01 records.
    ca_facts: crate::store::Cas,
    cas: BTreeMap<String, Arc<CaClient>>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
    renew_fraction: f64,
    owner: String,
    accounts: Arc<Accounts>,
    /// Per-CA limit of orders in flight (the profile's or the config's).
    ca_permits: BTreeMap<String, Arc<Semaphore>>,
    wake: Arc<Notify>,
    answers: Arc<Http01Answers>,
    dns01: Arc<Dns01Challenges>,
    /// Whether renewals send ARI's `replaces`.
    ari: bool,
    /// `TWINCERT_FAILPOINT`, in test builds only; see the `failpoint` method.
    #[cfg(feature = "failpoints")]
    failpoint: Option<String>,
    planner: Planner,
    /// Set when a certificate is stored (readiness may have changed).
    readiness_dirty: Arc<std::sync::atomic::AtomicBool>,
}

/// Why one attempt failed, and how to go on.
pub(super) struct AttemptError {
    kind: AcmeErrorKind,
    pub(super) message: String,
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

impl From<Dns01Error> for AttemptError {
    fn from(e: Dns01Error) -> Self {
        match e {
            Dns01Error::Final(m) => final_error(m),
            Dns01Error::Transient(m) => transient(m),
            Dns01Error::Waiting(m, secs) => waiting(m, secs),
        }
    }
}

pub(super) fn final_error(message: impl Into<String>) -> AttemptError {
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

/// The TXT records the CA asked for, as `validation::dns01` takes them.
fn answers_of(tasks: &[crate::ca::Dns01Task]) -> Vec<Answer> {
    tasks
        .iter()
        .map(|t| Answer {
            domain: t.domain.clone(),
            value: t.value.clone(),
        })
        .collect()
}

impl Issuer {
    /// The issuer of `b`'s settings, with the parts it shares with the
    /// other controllers.
    pub(super) fn new(
        b: &SupervisorBuilder,
        accounts: Arc<Accounts>,
        wake: Arc<Notify>,
        answers: Arc<Http01Answers>,
        dns01: Arc<Dns01Challenges>,
        planner: Planner,
    ) -> Issuer {
        let ca_permits = b
            .cas
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    Arc::new(Semaphore::new(c.concurrency() as usize)),
                )
            })
            .collect();
        Issuer {
            readiness_dirty: b.readiness_dirty.clone(),
            orders: b.store.orders().clone(),
            leases: b.store.leases().clone(),
            keys: b.store.keys().clone(),
            pacing: b.store.pacing().clone(),
            names: b.store.names().clone(),
            ca_facts: b.store.cas().clone(),
            cas: b.cas.clone(),
            sealer: b.sealer.clone(),
            clock: b.clock.clone(),
            cfg: b.cfg.clone(),
            renew_fraction: b.renew_fraction,
            owner: b.owner.clone(),
            accounts,
            ca_permits,
            wake,
            answers,
            dns01,
            ari: b.revocation.ari,
            #[cfg(feature = "failpoints")]
            failpoint: std::env::var("TWINCERT_FAILPOINT").ok(),
            planner,
        }
    }

    /// A crash-safety test hook: with `TWINCERT_FAILPOINT=<point>` the
    /// attempt hangs here until the test kills the process, leaving what
    /// was stored so far for the restart to resume. Built only with the
    /// `failpoints` feature; the product has no such point.
    #[cfg(feature = "failpoints")]
    async fn failpoint(&self, point: &str) {
        if self.failpoint.as_deref() == Some(point) {
            warn!("failpoint {point}: hanging until killed");
            std::future::pending::<()>().await;
        }
    }

    #[cfg(not(feature = "failpoints"))]
    async fn failpoint(&self, _point: &str) {}

    /// Wakes the loop now (a name was created), instead of at the next poll.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown` turns true: plan, lease, process, repeat.
    pub(super) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        info!(owner = %self.owner, concurrency = self.cfg.concurrency, "issuer started");
        let base_plan_every = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut plan_every = base_plan_every;
        let mut last_plan: Option<tokio::time::Instant> = None;
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
                self.planner.pass(now).await;
                plan_every = plan_interval(base_plan_every, started.elapsed());
                last_plan = Some(tokio::time::Instant::now());
            }
            let free = permits.available_permits();
            let mut leased = 0;
            if free > 0 {
                match self
                    .leases
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
                .leases
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
                    if let Err(e) = self.leases.renew_lease(&job.id, &self.owner, until).await {
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
                ChallengeKind::Dns01 => self.dns01.cleanup(&job.id).await,
                // Manual records stay listed while the order waits for them.
                ChallengeKind::Dns01Manual if result.is_ok() => self.dns01.cleanup(&job.id).await,
                _ => {}
            }
            // Converted before `now` is read: `now` + these seconds then
            // never falls before the CA's time (see `retry_after_secs`).
            let ca_wait = crate::ca::retry_after_secs(retry_after);
            let now = self.clock.now();
            match result {
                Ok(serial) => {
                    info!(serial = %serial, "certificate stored");
                    self.readiness_dirty
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(mut e) => {
                    e.retry_after = e.retry_after.or(ca_wait);
                    let ca_url = self
                        .cas
                        .get(&job.ca_id)
                        .map(|c| c.directory_url().to_string())
                        .unwrap_or_default();
                    let message = format!("CA {} ({ca_url}): {}", job.ca_id, e.message);
                    let delay = if e.waiting {
                        e.retry_after.unwrap_or(self.cfg.min_backoff_seconds)
                    } else {
                        // The longest wait shrinks with the lifetime of
                        // the certificate being replaced: its last third
                        // must hold many attempts.
                        let lifetime = match self.orders.current_validity(&job.id).await {
                            Ok(v) => v.map(|(nb, na)| na - nb),
                            Err(se) => {
                                warn!(error = %se, "could not read the slot's certificate");
                                None
                            }
                        };
                        backoff_secs(
                            self.cfg.min_backoff_seconds,
                            crate::policy::max_backoff_seconds(
                                self.cfg.max_backoff_seconds,
                                self.cfg.min_backoff_seconds,
                                lifetime,
                            ),
                            job.attempts,
                            e.retry_after,
                        )
                    };
                    if e.paced {
                        info!(wait_s = delay, "{message}");
                        if let Err(se) = self
                            .orders
                            .defer_order(&job.id, &self.owner, &message, now + delay as i64, now)
                            .await
                        {
                            warn!(error = %se, "could not defer the paced order");
                        }
                        return;
                    }
                    // Waiting for a person (manual DNS-01), not a failure.
                    if e.waiting {
                        info!(wait_s = delay, "{message}");
                        if let Err(se) = self
                            .orders
                            .wait_order(&job.id, &self.owner, &e.message, now + delay as i64, now)
                            .await
                        {
                            warn!(error = %se, "could not record the wait");
                        }
                        return;
                    }
                    warn!(error = %message, kind = ?e.kind, retry_in_s = delay, "attempt failed");
                    // A fresh ACME order next time: this one is over, or it
                    // belonged to an account the CA has forgotten.
                    let forget =
                        matches!(e.kind, AcmeErrorKind::Final | AcmeErrorKind::AccountGone);
                    if let Err(se) = self
                        .orders
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
            .ensure(&ca, &self.keys, &self.sealer, self.clock.now())
            .await?;
        let account_url = ca.account_url();
        let result = self.attempt_with_account(&ca, job, &domains).await;
        if let (Err(e), Some(url)) = (&result, &account_url)
            && e.kind == AcmeErrorKind::AccountGone
        {
            self.accounts.mark_dead(&ca, url);
        }
        result
    }

    /// The rest of [`Self::attempt`], once the CA's account is loaded.
    async fn attempt_with_account(
        &self,
        ca: &Arc<CaClient>,
        job: &OrderJob,
        domains: &[DnsName],
    ) -> Result<String, AttemptError> {
        let ca = ca.clone();
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
        self.failpoint("after_order_url").await;

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
                ChallengeKind::DnsPersist01 => {
                    self.answer_dns_persist(&ca, job, &mut order).await?
                }
            }
            order.wait_ready().await?;
        }
        if let Progress::Invalid(why) = order.progress() {
            return Err(final_error(why));
        }
        let csr = key
            .csr_der(domains)
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
            status_sources: status_sources(&chain),
            chain_pem: chain,
        };
        let done = self
            .orders
            .complete_order(&job.id, &self.owner, &cert, now)
            .await?;
        self.check_diversity(&job.name_id, &job.ca_id, &cert, &done)
            .await;
        Ok(facts.serial)
    }

    /// DNS-01 (RFC 8555 §8.4): the answers are placed and awaited on every
    /// authoritative server (see `validation::dns01`); only then is the CA
    /// told.
    async fn answer_dns01(
        &self,
        job: &OrderJob,
        order: &mut crate::ca::AcmeOrder,
    ) -> Result<(), AttemptError> {
        let tasks = order.dns01_tasks().await?;
        let answers = answers_of(&tasks);
        let placed = self
            .dns01
            .present(&job.id, job.dns_provider.as_deref(), &answers)
            .await?;
        self.failpoint("after_dns_present").await;
        let waited = self.dns01.wait_visible(&placed).await?;
        let _ = self
            .orders
            .set_propagation_ms(
                &job.id,
                i64::try_from(waited.as_millis()).unwrap_or(i64::MAX),
            )
            .await;
        let urls: Vec<String> = tasks.into_iter().map(|t| t.url).collect();
        order.set_ready(&urls).await?;
        Ok(())
    }

    /// Manual DNS-01: tells the CA only once a person published every
    /// record (see `validation::dns01`); until then the order waits.
    async fn answer_dns01_manual(
        &self,
        job: &OrderJob,
        order: &mut crate::ca::AcmeOrder,
    ) -> Result<(), AttemptError> {
        let tasks = order.dns01_tasks().await?;
        let answers = answers_of(&tasks);
        self.dns01.check_manual(&job.id, &answers).await?;
        let urls: Vec<String> = tasks.into_iter().map(|t| t.url).collect();
        order.set_ready(&urls).await?;
        Ok(())
    }

    /// dns-persist-01 (draft-ietf-acme-dns-persist-02): computes this CA's
    /// records for the pending authorizations, makes sure they stand
    /// (`validation::dns01`: written only where missing, through the DNS
    /// provider if one controls them, else waited for), then tells the CA.
    async fn answer_dns_persist(
        &self,
        ca: &CaClient,
        job: &OrderJob,
        order: &mut crate::ca::AcmeOrder,
    ) -> Result<(), AttemptError> {
        let tasks = order.dns_persist_tasks().await?;
        if tasks.is_empty() {
            return Ok(());
        }
        let ours = ca.account_url();
        // The CA checks the record against the account it names; ours
        // unless it names another (it should not).
        let account_uri = match (tasks.iter().find_map(|t| t.seen.accounturi.clone()), ours) {
            (Some(theirs), Some(ours)) if theirs != ours => {
                warn!(ca_account = %theirs, ours = %ours, "the CA names another account URI in dns-persist-01; using the CA's");
                theirs
            }
            (_, Some(ours)) => ours,
            (Some(theirs), None) => theirs,
            (None, None) => return Err(transient("account not loaded")),
        };
        let mut offered: Vec<String> = Vec::new();
        for t in &tasks {
            for n in &t.seen.issuer_domain_names {
                if !offered.contains(n) {
                    offered.push(n.clone());
                }
            }
        }
        let issuer =
            policy::dns_persist::choose_issuer(&offered, ca.caa_identities()).ok_or_else(|| {
                final_error(format!(
                    "CA {} sent no issuer-domain-names with its dns-persist-01 challenge and \
                     has no caa_identities configured: set caa_identities in its [[cas]] entry",
                    ca.id()
                ))
            })?;
        if !offered.is_empty()
            && let Err(e) = self
                .ca_facts
                .set_persist_issuer(ca.id(), &issuer, self.clock.now())
                .await
        {
            warn!(error = %e, "could not store the dns-persist-01 issuer domain name");
        }
        let domains: Vec<&str> = job.domains.iter().map(String::as_str).collect();
        let wanted: Vec<String> = tasks
            .iter()
            .map(|t| t.identifier.trim_start_matches("*.").to_ascii_lowercase())
            .collect();
        let records: Vec<_> =
            policy::dns_persist::records(&domains, &issuer, &account_uri, ca.dns_persist_until())
                .into_iter()
                .filter(|r| wanted.contains(&r.domain))
                .collect();
        let written = self
            .dns01
            .ensure_persist(&records, job.dns_provider.as_deref())
            .await?;
        if written > 0 {
            info!(records = written, "dns-persist-01 records published");
        }
        let urls: Vec<String> = tasks.into_iter().map(|t| t.url).collect();
        order.set_ready(&urls).await?;
        Ok(())
    }

    /// Orders deferred by a CA's pace were given a time under the limit
    /// then in force; this process may run with a higher one, so the ones
    /// it leaves room for are made due now.
    async fn wake_paced(&self) {
        let now = self.clock.now();
        for ca in self.cas.values() {
            match self
                .pacing
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
            .pacing
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

    async fn new_acme_order(
        &self,
        ca: &CaClient,
        job: &OrderJob,
    ) -> Result<crate::ca::AcmeOrder, AttemptError> {
        let replaces = self.replaces(ca, job).await;
        let profile =
            policy::profiles::profile_for(&job.acme_profiles, &job.ca_id, ca.acme_profile());
        let mut order = match ca
            .new_order(&job.domains, replaces.as_deref(), profile)
            .await
        {
            // A CA may refuse `replaces` (alreadyReplaced: an earlier
            // order of ours replaced it already); the renewal goes on
            // without it.
            Err(e) if replaces.is_some() && e.kind == AcmeErrorKind::Final => {
                warn!(error = %e.message, "order with ARI replaces refused; ordering without");
                ca.new_order(&job.domains, None, profile).await?
            }
            other => {
                let order = other?;
                if let Some(r) = &replaces {
                    self.orders.set_order_replaces(&job.id, r).await?;
                }
                order
            }
        };
        // instant-acme does not compare the order's profile with the
        // request: a CA that applied another one is refused here, before
        // the order URL is kept (the next attempt opens a new order).
        let answer = policy::profiles::judge_answer(profile, order.profile().as_deref());
        if let policy::profiles::ProfileAnswer::Different(got) = &answer {
            return Err(final_error(format!(
                "the CA created the order with profile '{got}', not the requested '{}'",
                profile.unwrap_or_default()
            )));
        }
        // Written down before anything polls it: a restart resumes it.
        // The profile always (an earlier ACME order of this row may have
        // asked for another).
        self.orders
            .set_acme_order(
                &job.id,
                &self.owner,
                &order.url(),
                profile,
                profile.map(|_| answer == policy::profiles::ProfileAnswer::Confirmed),
                self.clock.now(),
            )
            .await?;
        Ok(order)
    }

    /// The RFC 9773 id of the certificate this order renews, to send as
    /// `replaces`: only to a CA that offers ARI, only when the slot's
    /// current certificate comes from the same CA (and so the same
    /// account — twincert keeps one per CA).
    async fn replaces(&self, ca: &CaClient, job: &OrderJob) -> Option<String> {
        if !self.ari {
            return None;
        }
        match ca.renewal_info_url().await {
            Ok(Some(_)) => {}
            _ => return None,
        }
        let pem = self.orders.renewal_source(&job.id).await.ok()??;
        let ders = crate::certs::chain_ders(&pem).ok()?;
        crate::certs::ari_cert_id(ders.first()?)
    }

    /// The order's key: the stored one when the order has it (resume),
    /// else a fresh one, sealed and stored before any CA sees its CSR.
    async fn order_key(&self, job: &OrderJob) -> Result<CertKey, AttemptError> {
        if let Some(id) = &job.private_key_id {
            let (key_type, sealed) = self
                .keys
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
        self.orders
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
                .names
                .set_diversity_error(name_id, verdict.as_deref(), self.clock.now())
                .await
        {
            warn!(error = %e, "could not record the diversity check");
        }
    }
}

/// A new certificate's status sources, read once here so that no
/// revocation pass parses it again; `None` when the leaf cannot be read
/// (the status checker reads it then, and reports why).
fn status_sources(chain_pem: &str) -> Option<StoredSources> {
    let ders = certs::chain_ders(chain_pem).ok()?;
    let found = certs::status_sources(ders.first()?).ok()?;
    Some(StoredSources {
        crl_urls: found.crl_urls.join(" "),
        ocsp_url: found.ocsp_url.unwrap_or_default(),
        ari_cert_id: found.ari_cert_id.unwrap_or_default(),
    })
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
}
