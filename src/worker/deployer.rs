//! The deployer: on whichever replica holds the `deploy` singleton lease,
//! once a second:
//!
//! 1. **write**: every (name, destination) whose destination does not hold
//!    the name's active certificate — after an issuance, a renewal or a
//!    swap alike — is written (files, webhook, Kubernetes Secret), several
//!    at once; a failure is retried with backoff and alerted;
//! 2. **check**: every endpoint due (just deployed, or its interval passed)
//!    is checked step by step against the active certificate; the name's
//!    deployments become `confirmed` when all its endpoints serve it, or
//!    `failed`, and an alert says so (the notifier tells people).
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
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::backoff_secs;
use super::delivery::Delivery;
use super::singleton::Singleton;
use crate::clock::Clock;
use crate::config::Destination;
use crate::deploy::check::{self, Endpoint, Expected, Outcome};
use crate::deploy::files::{self, Material};
use crate::deploy::kube::{self, SecretMaterial};
use crate::keys::seal::Sealer;
use crate::store::{
    Alerts, CheckRecord, Deployments, DueDeployment, DueEndpoint, Keys, Packages, StoreError,
};

/// The singleton lease of deployment and notification.
pub(super) const LEASE: &str = "deploy";
/// Longer than a page of writes or checks can take, renewed after each
/// page, so a second replica never runs the same rows.
pub(super) const LEASE_TTL: i64 = 300;
const PAGE: u64 = 500;
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
        }
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

    /// One deployment pass and one check pass (the lease is the caller's:
    /// the supervisor's loop, or a benchmark driving the deployer alone).
    pub async fn pass(self: Arc<Self>) -> Result<(), StoreError> {
        self.mark_stale_pass().await?;
        let deployed = self.clone().deploy_pass().await;
        let checked = self.clone().check_pass_endpoints().await;
        let reminded = self.remind_pass().await;
        deployed.and(checked).and(reminded)
    }

    /// Keeps the `deploy` lease; false once another replica has it.
    async fn renew_deploy_lease(&self) -> Result<bool, StoreError> {
        self.lease.renew().await
    }

    /// Writes every due deployment, `concurrency` at once.
    async fn deploy_pass(self: Arc<Self>) -> Result<(), StoreError> {
        let concurrency = self.delivery.cfg.concurrency;
        loop {
            let due = self
                .deployments
                .due_deployments(self.clock.now(), PAGE)
                .await?;
            let full = due.len() as u64 == PAGE;
            bounded(due, concurrency, |job| {
                let w = self.clone();
                async move { w.deploy_one(job).await }
            })
            .await;
            if !full || !self.renew_deploy_lease().await? {
                return Ok(());
            }
        }
    }

    async fn deploy_one(&self, job: DueDeployment) {
        let d = &self.delivery;
        let subject = format!("{} {}", job.name_id, job.destination);
        let result = match d.cfg.destinations.get(&job.destination) {
            None => Err(format!(
                "destination '{}' is not configured on this worker",
                job.destination
            )),
            Some(dest) => self.write_destination(dest, &job).await,
        };
        let now = self.clock.now();
        match result {
            Ok(detail) => {
                info!(name = %job.name_id, destination = %job.destination, serial = %job.serial, "deployed");
                if let Err(e) = self
                    .deployments
                    .record_deployed(
                        &job.name_id,
                        &job.destination,
                        &job.cert_id,
                        &detail,
                        now + d.cfg.check_delay_seconds as i64,
                        now,
                    )
                    .await
                {
                    warn!(error = %e, "could not record a deployment");
                }
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
                    let _ = self
                        .alerts
                        .resolve_alerts("deploy_failed", &[subject], now)
                        .await;
                }
            }
            Err(error) => {
                let delay = backoff_secs(5, 3600, job.attempts, None);
                warn!(name = %job.name_id, destination = %job.destination, %error, retry_in_s = delay, "deployment failed");
                let _ = self
                    .deployments
                    .record_deploy_failure(
                        &job.name_id,
                        &job.destination,
                        &error,
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
        }
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
                let command = out.command.as_ref().map(|c| {
                    json!({
                        "status": c.status.to_string(),
                        "ok": c.status.success(),
                        "stderr_tail": c.stderr_tail,
                        "seconds": c.duration.as_secs_f64(),
                    })
                });
                Ok(json!({
                    "live_path": out.live_path.display().to_string(),
                    "version_dir": out.version_dir.display().to_string(),
                    "post_deploy": command,
                }))
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

    /// Checks every due endpoint, then settles the names' deployments.
    async fn check_pass_endpoints(self: Arc<Self>) -> Result<(), StoreError> {
        let concurrency = self.delivery.cfg.concurrency;
        loop {
            let due = self
                .deployments
                .due_endpoints(self.clock.now(), PAGE)
                .await?;
            let full = due.len() as u64 == PAGE;
            let checked = bounded(due, concurrency, |ep| {
                let w = self.clone();
                async move {
                    let name = ep.name_id.clone();
                    w.check_one(ep).await;
                    name
                }
            })
            .await;
            let names: std::collections::BTreeSet<String> = checked.into_iter().collect();
            for name in names {
                self.settle(&name).await;
            }
            if !full || !self.renew_deploy_lease().await? {
                return Ok(());
            }
        }
    }

    async fn check_one(&self, ep: DueEndpoint) {
        let d = &self.delivery;
        let spec = &ep.spec;
        let endpoint = format!("{}:{}", spec.host, spec.port);
        let subject = endpoint_subject(&ep.name_id, spec);
        let (Some(cert_id), Some(chain)) = (ep.cert_id.as_deref(), ep.chain_pem.as_deref()) else {
            // Nothing issued yet: look again later.
            let now = self.clock.now();
            let rec = CheckRecord {
                outcome: "no_certificate".into(),
                summary: "no active certificate to compare yet".into(),
                steps: json!([]),
                served_serial: None,
            };
            let _ = self
                .deployments
                .record_check(
                    &ep.id,
                    None,
                    &rec,
                    now + d.cfg.recheck_failed_seconds as i64,
                    now,
                )
                .await;
            return;
        };
        let expected = match Expected::from_pem(chain) {
            Ok(e) => e,
            Err(e) => {
                warn!(name = %ep.name_id, error = %e, "stored chain unreadable");
                let now = self.clock.now();
                let rec = CheckRecord {
                    outcome: "error".into(),
                    summary: format!("the stored certificate chain is unreadable: {e}"),
                    steps: json!([]),
                    served_serial: None,
                };
                let next = now + d.cfg.recheck_failed_seconds as i64;
                let _ = self
                    .deployments
                    .record_check(&ep.id, Some(cert_id), &rec, next, now)
                    .await;
                return;
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
        let rec = CheckRecord {
            outcome: outcome.clone(),
            summary: summary.clone(),
            steps: serde_json::to_value(&report.steps).unwrap_or_default(),
            served_serial: report.served_serial.clone(),
        };
        if let Err(e) = self
            .deployments
            .record_check(&ep.id, Some(cert_id), &rec, now + next as i64, now)
            .await
        {
            warn!(error = %e, "could not record a check");
        }
        if matched {
            let _ = self
                .alerts
                .resolve_alerts("deploy_check_failed", &[subject], now)
                .await;
            return;
        }
        if ep.awaiting_install {
            // An administrator was asked to install it; the reminder, not
            // an alert, follows up.
            info!(name = %ep.name_id, %endpoint, %summary, "waiting for an installation");
            return;
        }
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
        let _ = self
            .alerts
            .raise_alert(
                "deploy_check_failed",
                &subject,
                if was_confirmed { "critical" } else { "warning" },
                &format!(
                    "{}: {endpoint} does not serve the expected certificate: {summary}",
                    ep.name_id
                ),
                Some(&details),
                now,
            )
            .await;
    }

    async fn settle(&self, name: &str) {
        let now = self.clock.now();
        match self.deployments.settle_deployments(name, now).await {
            Ok(changed) => {
                for (dest, state) in changed {
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
            Err(e) => warn!(error = %e, name, "could not settle deployments"),
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
