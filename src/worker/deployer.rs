//! The deployer: on whichever replica holds the `deploy` singleton lease,
//! once a second:
//!
//! 1. **write**: every (name, destination) whose destination does not hold
//!    the name's active certificate — after an issuance, a renewal or a
//!    swap alike — is written: to a `files` destination in batches of up
//!    to a page, one durability barrier per batch
//!    (`deploy::files::write_batch`) and the results recorded in one
//!    transaction; webhooks, Kubernetes Secrets and install requests one
//!    at a time, several at once. A failure (of one name of a batch too)
//!    is that name's alone: retried with backoff and alerted;
//! 2. **check**, side by side with the writes: every endpoint due (just
//!    deployed, or its interval passed) is checked step by step against
//!    the active certificate, a page at a time, `concurrency` at once,
//!    while the next batch is written (`policy::wave`); the name's
//!    deployments become `confirmed` when all its endpoints serve it, or
//!    `failed`, and an alert says so (the notifier tells people).
//!
//! Every check is a full TLS handshake (no session resumption, see
//! `deploy::check`): a resumed session shows no certificate, so it could
//! not say which one is served.
//!
//! *Observes*: due deployments and due endpoint checks
//! (`store::Deployments`, read through indexes of the marked rows), the
//! newest emergency operation, the active certificates and their sealed
//! keys.
//!
//! Before writing, it marks due the deployments a swap made stale
//! (`Deployments::mark_stale`, one statement over every row) — when a new
//! emergency operation appeared, at its first pass and every
//! [`MARK_STALE_EVERY`] as a safety net; issuances and renewals mark
//! their own in their transaction.
//! *Writes*: destinations (outside), deployment and check results, and
//! deployment alerts (`store::Alerts`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::backoff_secs;
use super::delivery::Delivery;
use super::singleton::Singleton;
use crate::clock::Clock;
use crate::config::{Destination, FilesTarget};
use crate::deploy::check::{self, Endpoint, Expected, Outcome};
use crate::deploy::files::{self, FilesOutcome, Material};
use crate::deploy::kube::{self, SecretMaterial};
use crate::keys::seal::Sealer;
use crate::policy::wave::{self, CheckStep, WriteKind};
use crate::store::{
    Alerts, CheckRecord, Checked, Deployed, Deployments, DueDeployment, DueEndpoint, Keys,
    Packages, StoreError,
};

/// The singleton lease of deployment and notification.
pub(super) const LEASE: &str = "deploy";
/// Longer than a page of writes or checks can take, renewed after each
/// page, so a second replica never runs the same rows.
pub(super) const LEASE_TTL: i64 = 300;
const PAGE: u64 = 500;
/// Most writes to one `files` destination made durable by one barrier.
/// A page of due rows is at most one batch per destination: the checks
/// of a batch run while the next page is read and written.
const WRITE_BATCH: usize = PAGE as usize;
/// Most threads writing one batch's files at once (at most the
/// configured concurrency): enough to hide filesystem waits.
const FILE_WRITERS: usize = 16;
/// How long the check loop waits for the next recorded batch before it
/// reads again anyway (a check delay running out).
const CHECK_WAIT: Duration = Duration::from_millis(200);
/// How often the deployer looks over every deployment for one that does
/// not hold its active certificate and was not marked (a path that
/// changed it without marking: a bug, or a change made outside twincert).
pub(super) const MARK_STALE_EVERY: Duration = Duration::from_secs(300);

/// The deployer controller and what it needs.
pub struct Deployer {
    pub(super) deployments: Deployments,
    pub(super) packages: Packages,
    keys: Keys,
    alerts: Alerts,
    lease: Singleton,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) sealer: Arc<Sealer>,
    pub(super) delivery: Arc<Delivery>,
    /// When `mark_stale` last ran and the newest operation then.
    marked: tokio::sync::Mutex<Option<(Instant, Option<i64>)>>,
    /// Where the passes' time went, for `bench deploy`.
    stages: StageClock,
}

/// Time spent per stage of the deployment passes, summed since the last
/// [`Deployer::take_stages`]. The write and check loops run side by
/// side, so stages overlap: their sum can exceed the wall time, which
/// is the point of running them side by side.
#[derive(Debug, Default)]
struct StageClock {
    nanos: [AtomicU64; Stage::COUNT],
    counts: [AtomicU64; Count::COUNT],
}

/// A timed stage.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Reading the due deployments (and unmarking those already held).
    DueReads,
    /// Reading the sealed keys and opening them.
    Keys,
    /// Writing version directories (not synced).
    FileWrites,
    /// The durability barriers.
    FileSyncs,
    /// Link switches, `live` synced, old versions collected.
    FileSwitches,
    /// Post-deploy commands.
    Commands,
    /// Writes made one at a time (webhook, Kubernetes, install requests).
    OtherWrites,
    /// Recording writes and their alerts.
    WriteBookkeeping,
    /// Reading the due endpoints.
    EndpointReads,
    /// The TLS checks of a page, from the first start to the last end.
    TlsChecks,
    /// Recording checks, settling deployments, their alerts.
    CheckBookkeeping,
    /// The write loop, start to end.
    WriteLoop,
    /// The check loop, start to end.
    CheckLoop,
}

impl Stage {
    const COUNT: usize = 13;
    const ALL: [Stage; Stage::COUNT] = [
        Stage::DueReads,
        Stage::Keys,
        Stage::FileWrites,
        Stage::FileSyncs,
        Stage::FileSwitches,
        Stage::Commands,
        Stage::OtherWrites,
        Stage::WriteBookkeeping,
        Stage::EndpointReads,
        Stage::TlsChecks,
        Stage::CheckBookkeeping,
        Stage::WriteLoop,
        Stage::CheckLoop,
    ];

    fn key(self) -> &'static str {
        match self {
            Stage::DueReads => "due_queue_reads",
            Stage::Keys => "key_unseal",
            Stage::FileWrites => "file_writes",
            Stage::FileSyncs => "file_syncs",
            Stage::FileSwitches => "file_switches",
            Stage::Commands => "post_deploy_commands",
            Stage::OtherWrites => "other_writes",
            Stage::WriteBookkeeping => "write_bookkeeping",
            Stage::EndpointReads => "endpoint_reads",
            Stage::TlsChecks => "tls_checks",
            Stage::CheckBookkeeping => "check_bookkeeping",
            Stage::WriteLoop => "write_loop_wall",
            Stage::CheckLoop => "check_loop_wall",
        }
    }
}

/// A counted event.
#[derive(Debug, Clone, Copy)]
enum Count {
    Written,
    WriteFailed,
    Batches,
    Checked,
    Matched,
}

impl Count {
    const COUNT: usize = 5;
    const ALL: [Count; Count::COUNT] = [
        Count::Written,
        Count::WriteFailed,
        Count::Batches,
        Count::Checked,
        Count::Matched,
    ];

    fn key(self) -> &'static str {
        match self {
            Count::Written => "written",
            Count::WriteFailed => "write_failed",
            Count::Batches => "file_batches",
            Count::Checked => "checked",
            Count::Matched => "matched",
        }
    }
}

impl StageClock {
    fn add(&self, stage: Stage, d: Duration) {
        self.nanos[stage as usize].fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn since(&self, stage: Stage, started: Instant) {
        self.add(stage, started.elapsed());
    }

    fn count(&self, what: Count, n: usize) {
        self.counts[what as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Seconds per stage and the counts, reset to zero.
    fn take(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for s in Stage::ALL {
            let ns = self.nanos[s as usize].swap(0, Ordering::Relaxed);
            let s3 = (ns as f64 / 1e6).round() / 1e3;
            out.insert(format!("{}_seconds", s.key()), json!(s3));
        }
        for c in Count::ALL {
            out.insert(
                c.key().to_string(),
                json!(self.counts[c as usize].swap(0, Ordering::Relaxed)),
            );
        }
        serde_json::Value::Object(out)
    }
}

/// Tells the check loop how the writes are going.
#[derive(Debug, Default)]
struct WriteProgress {
    /// A batch (or a page of single writes) was recorded.
    recorded: Notify,
    /// The write loop ended.
    done: AtomicBool,
}

/// One check's outcome, to record with the others of its page.
struct CheckResult {
    ep: DueEndpoint,
    checked: Checked,
    /// `matched`: its alert is resolved; otherwise the alert to raise
    /// (none while an install is awaited or nothing is issued yet).
    matched: bool,
    alert: Option<(String, &'static str, String, serde_json::Value)>,
}

/// Whether the deployer should look over every deployment now: never did,
/// an operation appeared since, or the safety-net interval passed.
pub(super) fn mark_stale_due(
    last: Option<(Duration, Option<i64>)>,
    operation: Option<i64>,
    every: Duration,
) -> bool {
    match last {
        None => true,
        Some((since, seen)) => seen != operation || since >= every,
    }
}

/// What a `files` write stores as the deployment's detail.
fn files_detail(out: &FilesOutcome) -> serde_json::Value {
    let command = out.command.as_ref().map(|c| {
        json!({
            "status": c.status.to_string(),
            "ok": c.status.success(),
            "stderr_tail": c.stderr_tail,
            "seconds": c.duration.as_secs_f64(),
        })
    });
    json!({
        "live_path": out.live_path.display().to_string(),
        "version_dir": out.version_dir.display().to_string(),
        "post_deploy": command,
    })
}

/// Splits a PEM chain (leaf first) into the leaf and the rest.
fn split_chain(chain_pem: &str) -> (String, String) {
    const END: &str = "-----END CERTIFICATE-----";
    match chain_pem.find(END) {
        Some(i) => {
            let cut = i + END.len();
            let leaf = format!("{}\n", chain_pem[..cut].trim());
            let rest = chain_pem[cut..].trim();
            let rest = if rest.is_empty() {
                String::new()
            } else {
                format!("{rest}\n")
            };
            (leaf, rest)
        }
        None => (chain_pem.to_string(), String::new()),
    }
}

impl Deployer {
    pub(super) fn new(
        store: &crate::store::Store,
        lease: Singleton,
        clock: Arc<dyn Clock>,
        sealer: Arc<Sealer>,
        delivery: Arc<Delivery>,
    ) -> Deployer {
        Deployer {
            deployments: store.deployments().clone(),
            packages: store.packages().clone(),
            keys: store.keys().clone(),
            alerts: store.alerts().clone(),
            lease,
            clock,
            sealer,
            delivery,
            marked: tokio::sync::Mutex::new(None),
            stages: StageClock::default(),
        }
    }

    /// Seconds spent per stage of the passes since the last call (and
    /// what was written and checked), as `bench deploy` prints them.
    pub fn take_stages(&self) -> serde_json::Value {
        self.stages.take()
    }

    /// Marks due what a swap made stale, when [`mark_stale_due`] says so.
    async fn mark_stale_pass(&self) -> Result<(), StoreError> {
        let operation = self.deployments.last_operation().await?;
        let mut marked = self.marked.lock().await;
        let last = marked.map(|(at, seen)| (at.elapsed(), seen));
        if !mark_stale_due(last, operation, MARK_STALE_EVERY) {
            return Ok(());
        }
        let started = Instant::now();
        let (d, e) = self.deployments.mark_stale(self.clock.now()).await?;
        if d + e > 0 {
            info!(
                deployments = d,
                endpoints = e,
                ms = started.elapsed().as_millis(),
                "marked due after an active certificate changed"
            );
        }
        *marked = Some((started, operation));
        Ok(())
    }

    /// One deployment pass and one check pass, side by side: the checks
    /// of what was written run while the next batch is written
    /// ([`wave::next_check_step`]). The lease is the caller's: the
    /// supervisor's loop, or a benchmark driving the deployer alone.
    pub async fn pass(self: Arc<Self>) -> Result<(), StoreError> {
        self.mark_stale_pass().await?;
        let progress = Arc::new(WriteProgress::default());
        let writes = {
            let (w, progress) = (self.clone(), progress.clone());
            async move {
                let started = Instant::now();
                let r = w.clone().deploy_pass(&progress).await;
                progress.done.store(true, Ordering::SeqCst);
                progress.recorded.notify_one();
                w.stages.since(Stage::WriteLoop, started);
                r
            }
        };
        let checks = {
            let (w, progress) = (self.clone(), progress.clone());
            async move {
                let started = Instant::now();
                let r = w.clone().check_pass_endpoints(&progress).await;
                w.stages.since(Stage::CheckLoop, started);
                r
            }
        };
        let (deployed, checked) = tokio::join!(writes, checks);
        let reminded = self.remind_pass().await;
        deployed.and(checked).and(reminded)
    }

    /// Keeps the `deploy` lease; false once another replica has it.
    async fn renew_deploy_lease(&self) -> Result<bool, StoreError> {
        self.lease.renew().await
    }

    /// Writes every due deployment: `files` destinations in batches with
    /// one barrier each ([`wave::batches`]), the others `concurrency` at
    /// once beside them.
    async fn deploy_pass(self: Arc<Self>, progress: &WriteProgress) -> Result<(), StoreError> {
        let concurrency = self.delivery.cfg.concurrency;
        loop {
            let started = Instant::now();
            let due = self
                .deployments
                .due_deployments(self.clock.now(), PAGE)
                .await?;
            self.stages.since(Stage::DueReads, started);
            let full = due.len() as u64 == PAGE;
            let destinations = &self.delivery.cfg.destinations;
            let kinds: Vec<WriteKind<'_>> = due
                .iter()
                .map(|j| match destinations.get(&j.destination) {
                    Some(Destination::Files(_)) => WriteKind::Batched(&j.destination),
                    _ => WriteKind::Single,
                })
                .collect();
            let (batch_ix, single_ix) = wave::batches(&kinds, WRITE_BATCH);
            drop(kinds);
            let mut due: Vec<Option<DueDeployment>> = due.into_iter().map(Some).collect();
            let singles: Vec<DueDeployment> =
                single_ix.iter().filter_map(|&i| due[i].take()).collect();
            let batches: Vec<Vec<DueDeployment>> = batch_ix
                .iter()
                .map(|b| b.iter().filter_map(|&i| due[i].take()).collect())
                .collect();
            let one_by_one = async {
                if singles.is_empty() {
                    return;
                }
                let started = Instant::now();
                bounded(singles, concurrency, |job| {
                    let w = self.clone();
                    async move { w.deploy_one(job).await }
                })
                .await;
                self.stages.since(Stage::OtherWrites, started);
                progress.recorded.notify_one();
            };
            let batched = async {
                for jobs in batches {
                    let target = match jobs.first().and_then(|j| destinations.get(&j.destination)) {
                        Some(Destination::Files(t)) => t.clone(),
                        _ => continue,
                    };
                    self.deploy_files_batch(&target, jobs).await;
                    progress.recorded.notify_one();
                }
            };
            tokio::join!(one_by_one, batched);
            if !full || !self.renew_deploy_lease().await? {
                return Ok(());
            }
        }
    }

    /// Writes a batch of due deployments to one `files` destination with
    /// one barrier, and records every write's result in one transaction;
    /// a write that fails (its key, its name, its directory) fails alone.
    async fn deploy_files_batch(&self, target: &FilesTarget, jobs: Vec<DueDeployment>) {
        let started = Instant::now();
        let mut ready = Vec::with_capacity(jobs.len());
        let mut materials = Vec::with_capacity(jobs.len());
        let mut failed: Vec<(DueDeployment, String)> = Vec::new();
        for job in jobs {
            match self.key_pem(&job.private_key_id).await {
                Ok(key_pem) => {
                    let (leaf_pem, chain_pem) = split_chain(&job.chain_pem);
                    materials.push(Material {
                        name: job.name_id.clone(),
                        leaf_pem,
                        chain_pem,
                        key_pem,
                        version: format!("{}-{}", job.slot, job.serial),
                    });
                    ready.push(job);
                }
                Err(e) => failed.push((job, e)),
            }
        }
        self.stages.since(Stage::Keys, started);
        let writers = self.delivery.cfg.concurrency.min(FILE_WRITERS);
        let (results, t) = files::write_batch_timed(target, &materials, writers).await;
        drop(materials);
        self.stages.add(Stage::FileWrites, t.write);
        self.stages.add(Stage::FileSyncs, t.sync);
        self.stages.add(Stage::FileSwitches, t.switch);
        self.stages.add(Stage::Commands, t.commands);
        self.stages.count(Count::Batches, 1);
        let started = Instant::now();
        let mut written = Vec::with_capacity(ready.len());
        for (job, r) in ready.into_iter().zip(results) {
            match r {
                Ok(out) => written.push((job, files_detail(&out))),
                Err(e) => failed.push((job, e.to_string())),
            }
        }
        self.record_written(written).await;
        for (job, error) in failed {
            self.record_write_failure(&job, &error).await;
        }
        self.stages.since(Stage::WriteBookkeeping, started);
    }

    async fn deploy_one(&self, job: DueDeployment) {
        let result = match self.delivery.cfg.destinations.get(&job.destination) {
            None => Err(format!(
                "destination '{}' is not configured on this worker",
                job.destination
            )),
            Some(dest) => self.write_destination(dest, &job).await,
        };
        match result {
            Ok(detail) => self.record_written(vec![(job, detail)]).await,
            Err(error) => self.record_write_failure(&job, &error).await,
        }
    }

    /// Records successful writes (one transaction) and their alerts: a
    /// failed post-deploy command raises one, a good write resolves the
    /// last failure's.
    async fn record_written(&self, written: Vec<(DueDeployment, serde_json::Value)>) {
        if written.is_empty() {
            return;
        }
        let d = &self.delivery;
        let now = self.clock.now();
        self.stages.count(Count::Written, written.len());
        let rows: Vec<Deployed> = written
            .iter()
            .map(|(job, detail)| Deployed {
                name_id: job.name_id.clone(),
                destination: job.destination.clone(),
                cert_id: job.cert_id.clone(),
                detail: detail.clone(),
            })
            .collect();
        if let Err(e) = self
            .deployments
            .record_deployed_many(&rows, now + d.cfg.check_delay_seconds as i64, now)
            .await
        {
            warn!(error = %e, writes = rows.len(), "could not record deployments");
        }
        let mut resolved = Vec::with_capacity(written.len());
        for (job, detail) in &written {
            info!(name = %job.name_id, destination = %job.destination, serial = %job.serial, "deployed");
            let subject = format!("{} {}", job.name_id, job.destination);
            // The files are in place; a reload that failed is the
            // operator's to fix (not retried: it would write again).
            if detail["post_deploy"]["ok"] == false {
                let details = json!({
                    "name": job.name_id, "destination": job.destination, "serial": job.serial,
                    "post_deploy": detail["post_deploy"],
                    "what_to_do": "The certificate files are written; the post-deploy command failed, so the server may still serve the old certificate. Fix the command and reload the server.",
                });
                let _ = self
                    .alerts
                    .raise_alert(
                        "deploy_failed",
                        &subject,
                        "warning",
                        &format!(
                            "{}: the post-deploy command of '{}' failed ({})",
                            job.name_id,
                            job.destination,
                            detail["post_deploy"]["status"].as_str().unwrap_or("?")
                        ),
                        Some(&details),
                        now,
                    )
                    .await;
            } else {
                resolved.push(subject);
            }
        }
        let _ = self
            .alerts
            .resolve_alerts("deploy_failed", &resolved, now)
            .await;
    }

    /// Records a failed write: retried with backoff, alerted.
    async fn record_write_failure(&self, job: &DueDeployment, error: &str) {
        self.stages.count(Count::WriteFailed, 1);
        let subject = format!("{} {}", job.name_id, job.destination);
        let now = self.clock.now();
        let delay = backoff_secs(5, 3600, job.attempts, None);
        warn!(name = %job.name_id, destination = %job.destination, %error, retry_in_s = delay, "deployment failed");
        let _ = self
            .deployments
            .record_deploy_failure(
                &job.name_id,
                &job.destination,
                error,
                None,
                now + delay as i64,
                now,
            )
            .await;
        let details = json!({
            "name": job.name_id, "destination": job.destination, "serial": job.serial,
            "error": error,
            "what_to_do": "Fix the destination (path, permissions, receiver, API access); twincert retries with backoff.",
        });
        let _ = self
            .alerts
            .raise_alert(
                "deploy_failed",
                &subject,
                "warning",
                &format!(
                    "{}: writing the certificate to '{}' failed: {error}",
                    job.name_id, job.destination
                ),
                Some(&details),
                now,
            )
            .await;
    }

    /// Writes one certificate to one destination; the outcome's detail or
    /// the error (never the key).
    async fn write_destination(
        &self,
        dest: &Destination,
        job: &DueDeployment,
    ) -> Result<serde_json::Value, String> {
        let d = &self.delivery;
        if let Destination::Manual(t) = dest {
            // A person installs it: no plaintext key leaves this way.
            return self.request_install(t, job).await;
        }
        let key_pem = self.key_pem(&job.private_key_id).await?;
        let (leaf_pem, chain_pem) = split_chain(&job.chain_pem);
        match dest {
            Destination::Manual(_) => Err("handled above".into()),
            Destination::Files(t) => {
                let m = Material {
                    name: job.name_id.clone(),
                    leaf_pem,
                    chain_pem,
                    key_pem,
                    version: format!("{}-{}", job.slot, job.serial),
                };
                let out = files::write(t, &m).await.map_err(|e| e.to_string())?;
                Ok(files_detail(&out))
            }
            Destination::Webhook(t) => {
                let mut body = json!({
                    "name": job.name_id, "slot": job.slot, "ca": job.ca_id, "serial": job.serial,
                    "fullchain_pem": job.chain_pem, "chain_pem": chain_pem,
                });
                if t.include_key {
                    body["key_pem"] = json!(key_pem);
                }
                let bytes = body.to_string().into_bytes();
                let delivery = crate::notify::webhook::post_signed(
                    &d.http,
                    &t.url,
                    &t.secret,
                    &bytes,
                    3,
                    Duration::from_millis(500),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!({ "status": delivery.status, "attempts": delivery.attempts }))
            }
            Destination::KubernetesSecret(t) => {
                let client = d
                    .kube
                    .get(&job.destination)
                    .ok_or("no client for this destination")?
                    .get_or_try_init(|| kube::client(t))
                    .await?;
                let m = SecretMaterial {
                    name: &job.name_id,
                    slot: &job.slot,
                    ca_id: &job.ca_id,
                    serial: &job.serial,
                    fullchain_pem: &job.chain_pem,
                    chain_pem: &chain_pem,
                    key_pem: &key_pem,
                };
                let version = kube::apply(client, t, &m).await?;
                Ok(json!({
                    "namespace": t.namespace,
                    "secret": kube::secret_name(&t.secret_name, &job.name_id),
                    "resource_version": version,
                }))
            }
        }
    }

    async fn key_pem(&self, key_id: &str) -> Result<String, String> {
        self.unsealed_key(key_id).await.map(|k| k.pkcs8_pem())
    }

    /// The certificate's private key, opened.
    pub(super) async fn unsealed_key(&self, key_id: &str) -> Result<crate::keys::CertKey, String> {
        let (key_type, sealed) = self
            .keys
            .private_key(key_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the certificate's private key is gone")?;
        crate::keys::CertKey::unseal(&self.sealer, key_type, &sealed).map_err(|e| e.to_string())
    }

    /// Checks due endpoints page by page while the writes go on
    /// ([`wave::next_check_step`]): each page's checks run `concurrency`
    /// at once; their results, alerts and the names' settled deployments
    /// are recorded per page.
    async fn check_pass_endpoints(
        self: Arc<Self>,
        progress: &WriteProgress,
    ) -> Result<(), StoreError> {
        let concurrency = self.delivery.cfg.concurrency;
        let (mut last, mut writes_done) = (None, false);
        loop {
            match wave::next_check_step(last, PAGE as usize, writes_done) {
                CheckStep::Stop => return Ok(()),
                CheckStep::Wait => {
                    let _ = tokio::time::timeout(CHECK_WAIT, progress.recorded.notified()).await;
                }
                CheckStep::Read => {}
            }
            writes_done = progress.done.load(Ordering::SeqCst);
            let started = Instant::now();
            let due = self
                .deployments
                .due_endpoints(self.clock.now(), PAGE)
                .await?;
            self.stages.since(Stage::EndpointReads, started);
            last = Some(due.len());
            if due.is_empty() {
                continue;
            }
            let started = Instant::now();
            let results = bounded(due, concurrency, |ep| {
                let w = self.clone();
                async move { w.check_one(ep).await }
            })
            .await;
            self.stages.since(Stage::TlsChecks, started);
            let started = Instant::now();
            self.record_checks(results).await;
            self.stages.since(Stage::CheckBookkeeping, started);
            if !self.renew_deploy_lease().await? {
                return Ok(());
            }
        }
    }

    /// Checks one endpoint against the name's active certificate.
    async fn check_one(&self, ep: DueEndpoint) -> CheckResult {
        let d = &self.delivery;
        let spec = &ep.spec;
        let endpoint = format!("{}:{}", spec.host, spec.port);
        let (Some(cert_id), Some(chain)) = (ep.cert_id.clone(), ep.chain_pem.as_deref()) else {
            // Nothing issued yet: look again later.
            let now = self.clock.now();
            let record = CheckRecord {
                outcome: "no_certificate".into(),
                summary: "no active certificate to compare yet".into(),
                steps: json!([]),
                served_serial: None,
            };
            let checked = Checked {
                endpoint_id: ep.id.clone(),
                cert_id: None,
                record,
                next_check_at: now + d.cfg.recheck_failed_seconds as i64,
            };
            return CheckResult {
                ep,
                checked,
                matched: false,
                alert: None,
            };
        };
        let expected = match Expected::from_pem(chain) {
            Ok(e) => e,
            Err(e) => {
                warn!(name = %ep.name_id, error = %e, "stored chain unreadable");
                let now = self.clock.now();
                let record = CheckRecord {
                    outcome: "error".into(),
                    summary: format!("the stored certificate chain is unreadable: {e}"),
                    steps: json!([]),
                    served_serial: None,
                };
                let checked = Checked {
                    endpoint_id: ep.id.clone(),
                    cert_id: Some(cert_id),
                    record,
                    next_check_at: now + d.cfg.recheck_failed_seconds as i64,
                };
                return CheckResult {
                    ep,
                    checked,
                    matched: false,
                    alert: None,
                };
            }
        };
        let target = Endpoint {
            host: spec.host.clone(),
            port: spec.port,
            sni: spec.sni.clone(),
            ip_override: spec.ip.as_deref().and_then(|i| i.parse().ok()),
        };
        let report = check::check(&target, &expected, d.cfg.check_timeout).await;
        let outcome = report.outcome.as_str().to_string();
        let summary = report.summary();
        let matched = report.outcome == Outcome::Matched;
        let now = self.clock.now();
        let next = if matched {
            d.cfg.check_interval_seconds
        } else {
            d.cfg.recheck_failed_seconds
        };
        let checked = Checked {
            endpoint_id: ep.id.clone(),
            cert_id: Some(cert_id),
            record: CheckRecord {
                outcome: outcome.clone(),
                summary: summary.clone(),
                steps: serde_json::to_value(&report.steps).unwrap_or_default(),
                served_serial: report.served_serial.clone(),
            },
            next_check_at: now + next as i64,
        };
        let alert = if matched {
            None
        } else if ep.awaiting_install {
            // An administrator was asked to install it; the reminder, not
            // an alert, follows up.
            info!(name = %ep.name_id, %endpoint, %summary, "waiting for an installation");
            None
        } else {
            let was_confirmed = ep.prior_outcome.as_deref() == Some("matched");
            info!(name = %ep.name_id, %endpoint, %summary, "deployment check failed");
            let details = json!({
                "name": ep.name_id,
                "endpoint": endpoint,
                "sni": spec.sni.clone().unwrap_or_else(|| spec.host.clone()),
                "outcome": outcome,
                "steps": summary,
                "served_serial": report.served_serial,
                "notify": spec.admin_contact,
                "what_to_do": format!(
                    "Make the server at {endpoint} serve the certificate twincert deployed for {} \
                     (check that it reads the deployed files or Secret and was reloaded), then \
                     ask for a new check: POST /v1/names/{}/deploy/check.",
                    ep.name_id, ep.name_id
                ),
            });
            let message = format!(
                "{}: {endpoint} does not serve the expected certificate: {summary}",
                ep.name_id
            );
            let severity = if was_confirmed { "critical" } else { "warning" };
            Some((
                endpoint_subject(&ep.name_id, spec),
                severity,
                message,
                details,
            ))
        };
        CheckResult {
            ep,
            checked,
            matched,
            alert,
        }
    }

    /// Records a page of checks (one transaction), resolves the alerts of
    /// the endpoints that serve their certificate, raises the others',
    /// then settles the names' deployments (one transaction).
    async fn record_checks(&self, results: Vec<CheckResult>) {
        let now = self.clock.now();
        self.stages.count(Count::Checked, results.len());
        let checks: Vec<Checked> = results.iter().map(|r| r.checked.clone()).collect();
        if let Err(e) = self.deployments.record_checks(&checks, now).await {
            warn!(error = %e, checks = checks.len(), "could not record checks");
        }
        let matched: Vec<String> = results
            .iter()
            .filter(|r| r.matched)
            .map(|r| endpoint_subject(&r.ep.name_id, &r.ep.spec))
            .collect();
        self.stages.count(Count::Matched, matched.len());
        let _ = self
            .alerts
            .resolve_alerts("deploy_check_failed", &matched, now)
            .await;
        for r in &results {
            if let Some((subject, severity, message, details)) = &r.alert {
                let _ = self
                    .alerts
                    .raise_alert(
                        "deploy_check_failed",
                        subject,
                        severity,
                        message,
                        Some(details),
                        now,
                    )
                    .await;
            }
        }
        let names: Vec<String> = results
            .iter()
            .map(|r| r.ep.name_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.settle(&names).await;
    }

    /// Settles the names' deployments from their endpoints' last checks;
    /// a deployment newly confirmed raises its `deploy_confirmed` notice.
    async fn settle(&self, names: &[String]) {
        let now = self.clock.now();
        match self.deployments.settle_many(names, now).await {
            Ok(changed) => {
                for (name, dest, state) in changed {
                    if state == "confirmed" {
                        let details = json!({ "name": name, "destination": dest });
                        let _ = self.alerts.raise_alert(
                                "deploy_confirmed",
                                &format!("{name} {dest}"),
                                "info",
                                &format!(
                                    "{name}: the certificate deployed to '{dest}' is now served (confirmed by check)"
                                ),
                                Some(&details),
                                now,
                            )
                            .await;
                    }
                }
            }
            Err(e) => warn!(error = %e, names = names.len(), "could not settle deployments"),
        }
    }
}

/// Runs `work` on every item, at most `limit` at once (each on its own
/// task); the results, in completion order.
pub(super) async fn bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, work: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    for item in items {
        let (permits, job) = (permits.clone(), work(item));
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            job.await
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out
}

/// An endpoint alert's subject: name, host:port, and the address or SNI
/// when given (two nodes behind one name are two subjects).
fn endpoint_subject(name: &str, spec: &crate::store::EndpointSpec) -> String {
    let mut s = format!("{name} {}:{}", spec.host, spec.port);
    if let Some(ip) = &spec.ip {
        s.push_str(&format!(" via {ip}"));
    }
    if let Some(sni) = &spec.sni {
        s.push_str(&format!(" sni {sni}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deployment_is_looked_over_at_start_after_an_operation_and_now_and_then() {
        let s = Duration::from_secs;
        let every = s(300);
        // (case, last look: since and operation seen, newest operation, due)
        let cases = [
            ("first pass", None, None, true),
            ("nothing new", Some((s(5), Some(3))), Some(3), false),
            ("a swap since", Some((s(5), Some(3))), Some(4), true),
            ("the first swap ever", Some((s(5), None)), Some(1), true),
            ("safety net", Some((s(300), Some(3))), Some(3), true),
        ];
        for (case, last, operation, want) in cases {
            assert_eq!(mark_stale_due(last, operation, every), want, "{case}");
        }
    }

    #[test]
    fn chains_split_into_leaf_and_intermediates() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let (leaf, rest) = split_chain(pem);
        assert_eq!(
            leaf,
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            rest,
            "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
        let (leaf, rest) =
            split_chain("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n");
        assert!(leaf.contains("AAA"));
        assert!(rest.is_empty());
    }
}
