//! The deployment loop (issue 7), on whichever replica holds the `deploy`
//! singleton lease, once a second:
//!
//! 1. **write**: every (name, destination) whose destination does not hold
//!    the name's active certificate — after an issuance, a renewal or a
//!    swap alike — is written (files, webhook, Kubernetes Secret), several
//!    at once; a failure is retried with backoff and alerted;
//! 2. **check**: every endpoint due (just deployed, or its interval passed)
//!    is checked step by step against the active certificate; the name's
//!    deployments become `confirmed` when all its endpoints serve it, or
//!    `failed`, and people are told;
//! 3. **notify**: new alerts (and open ones raised again, at most once per
//!    rate-limit period) go out by mail and webhook; every delivery is
//!    recorded.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{Worker, backoff_secs};
use crate::config::{AlertsConfig, DeployConfig, Destination};
use crate::deploy::check::{self, Endpoint, Expected, Outcome};
use crate::deploy::files::{self, Material};
use crate::deploy::kube::{self, SecretMaterial};
use crate::notify::Message;
use crate::notify::smtp::SmtpSender;
use crate::store::{CheckRecord, DueDeployment, DueEndpoint, StoreError};

const LEASE: &str = "deploy";
/// Longer than a page of writes or checks can take, renewed after each
/// page, so a second replica never runs the same rows.
const LEASE_TTL: i64 = 300;
const PAGE: u64 = 500;
/// Alerts about a single event: delivered once, then closed.
const ONE_SHOT: [&str; 2] = ["swap_executed", "deploy_confirmed"];
/// Retry of an alert no channel could deliver.
const NOTIFY_RETRY_SECONDS: i64 = 60;

/// Destinations, channels and their clients, built once.
pub struct Delivery {
    cfg: DeployConfig,
    alerts: AlertsConfig,
    http: reqwest::Client,
    smtp: Option<SmtpSender>,
    /// One Kubernetes client per destination, made on first use.
    kube: std::collections::BTreeMap<String, tokio::sync::OnceCell<::kube::Client>>,
}

impl Delivery {
    /// Builds the clients; a misconfigured channel is an error at start.
    pub fn new(cfg: DeployConfig, alerts: AlertsConfig) -> Result<Delivery, String> {
        // No redirects: a signed body (maybe with a key) goes only where
        // it was configured to go.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let smtp = match &alerts.smtp {
            Some(c) => Some(SmtpSender::new(c.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut kube = std::collections::BTreeMap::new();
        for (id, d) in &cfg.destinations {
            if let Destination::KubernetesSecret(_) = d {
                kube.insert(id.clone(), tokio::sync::OnceCell::new());
            }
        }
        Ok(Delivery {
            cfg,
            alerts,
            http,
            smtp,
            kube,
        })
    }
}

impl Delivery {
    /// Whether alerts go anywhere (mail or webhook).
    fn has_channel(&self) -> bool {
        self.smtp.is_some() || !self.alerts.webhooks.is_empty()
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

impl Worker {
    /// Runs the loop until shutdown (only when delivery is configured).
    pub(super) async fn deploy_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(d) = self.delivery.clone() else {
            return;
        };
        let mut last_failing_scan = None::<tokio::time::Instant>;
        // When this replica last took or renewed the lease: within a third
        // of its TTL it is still ours without asking the store each tick.
        let mut held_at = None::<tokio::time::Instant>;
        let keep = Duration::from_secs(LEASE_TTL as u64 / 3);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let lease = if held_at.is_some_and(|t| t.elapsed() < keep) {
                Ok(true)
            } else {
                let now = self.clock.now();
                self.store
                    .singleton_lease(LEASE, &self.owner, now, LEASE_TTL)
                    .await
            };
            held_at = match lease {
                Ok(true) => held_at
                    .filter(|t| t.elapsed() < keep)
                    .or(Some(tokio::time::Instant::now())),
                _ => None,
            };
            match lease {
                Ok(true) => {
                    if let Err(e) = self.clone().deploy_pass(&d).await {
                        warn!(error = %e, "deployment pass failed");
                    }
                    if let Err(e) = self.clone().check_pass_endpoints(&d).await {
                        warn!(error = %e, "deployment check pass failed");
                    }
                    if last_failing_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_failing_scan = Some(tokio::time::Instant::now());
                        if let Err(e) = self.issuance_failing_alerts(&d).await {
                            warn!(error = %e, "issuance alert scan failed");
                        }
                        if !d.has_channel() {
                            // Nobody is told: one-shot alerts stay recorded
                            // but do not pile up as open.
                            let now = self.clock.now();
                            if let Err(e) = self.store.resolve_open_alerts_of(&ONE_SHOT, now).await
                            {
                                warn!(error = %e, "closing one-shot alerts failed");
                            }
                        }
                    }
                    if let Err(e) = self.notify_pass(&d).await {
                        warn!(error = %e, "notification pass failed");
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "deploy lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.poll_interval_ms.max(200))) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One deployment pass and one check pass, without the lease (for
    /// benchmarks and tools that drive the worker directly).
    pub async fn deliver_once(self: Arc<Self>) -> Result<(), StoreError> {
        let Some(d) = self.delivery.clone() else {
            return Ok(());
        };
        self.clone().deploy_pass(&d).await?;
        self.check_pass_endpoints(&d).await
    }
    /// Keeps the `deploy` lease; false once another replica has it.
    async fn renew_deploy_lease(&self) -> Result<bool, StoreError> {
        self.store
            .singleton_lease(LEASE, &self.owner, self.clock.now(), LEASE_TTL)
            .await
    }

    /// Writes every due deployment, `concurrency` at once.
    async fn deploy_pass(self: Arc<Self>, d: &Arc<Delivery>) -> Result<(), StoreError> {
        loop {
            let due = self.store.due_deployments(self.clock.now(), PAGE).await?;
            let full = due.len() as u64 == PAGE;
            bounded(due, d.cfg.concurrency, |job| {
                let (w, d) = (self.clone(), d.clone());
                async move { w.deploy_one(&d, job).await }
            })
            .await;
            if !full || !self.renew_deploy_lease().await? {
                return Ok(());
            }
        }
    }

    async fn deploy_one(&self, d: &Delivery, job: DueDeployment) {
        let subject = format!("{} {}", job.name_id, job.destination);
        let result = match d.cfg.destinations.get(&job.destination) {
            None => Err(format!(
                "destination '{}' is not configured on this worker",
                job.destination
            )),
            Some(dest) => self.write_destination(d, dest, &job).await,
        };
        let now = self.clock.now();
        match result {
            Ok(detail) => {
                info!(name = %job.name_id, destination = %job.destination, serial = %job.serial, "deployed");
                if let Err(e) = self
                    .store
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
                        .store
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
                        .store
                        .resolve_alerts("deploy_failed", &[subject], now)
                        .await;
                }
            }
            Err(error) => {
                let delay = backoff_secs(5, 3600, job.attempts, None);
                warn!(name = %job.name_id, destination = %job.destination, %error, retry_in_s = delay, "deployment failed");
                let _ = self
                    .store
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
                    .store
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
        d: &Delivery,
        dest: &Destination,
        job: &DueDeployment,
    ) -> Result<serde_json::Value, String> {
        let key_pem = self.key_pem(&job.private_key_id).await?;
        let (leaf_pem, chain_pem) = split_chain(&job.chain_pem);
        match dest {
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
        let (key_type, sealed) = self
            .store
            .private_key(key_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the certificate's private key is gone")?;
        crate::keys::CertKey::unseal(&self.sealer, key_type, &sealed)
            .map(|k| k.pkcs8_pem())
            .map_err(|e| e.to_string())
    }

    /// Checks every due endpoint, then settles the names' deployments.
    async fn check_pass_endpoints(self: Arc<Self>, d: &Arc<Delivery>) -> Result<(), StoreError> {
        loop {
            let due = self.store.due_endpoints(self.clock.now(), PAGE).await?;
            let full = due.len() as u64 == PAGE;
            let checked = bounded(due, d.cfg.concurrency, |ep| {
                let (w, d) = (self.clone(), d.clone());
                async move {
                    let name = ep.name_id.clone();
                    w.check_one(&d, ep).await;
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

    async fn check_one(&self, d: &Delivery, ep: DueEndpoint) {
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
                .store
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
                    .store
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
            .store
            .record_check(&ep.id, Some(cert_id), &rec, now + next as i64, now)
            .await
        {
            warn!(error = %e, "could not record a check");
        }
        if matched {
            let _ = self
                .store
                .resolve_alerts("deploy_check_failed", &[subject], now)
                .await;
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
            .store
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
        match self.store.settle_deployments(name, now).await {
            Ok(changed) => {
                for (dest, state) in changed {
                    if state == "confirmed" {
                        let details = json!({ "name": name, "destination": dest });
                        let _ = self
                            .store
                            .raise_alert(
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

    /// `issuance_failing` for orders failing longer than configured.
    async fn issuance_failing_alerts(&self, d: &Delivery) -> Result<(), StoreError> {
        let now = self.clock.now();
        let failing = self
            .store
            .long_failing_orders(now, d.alerts.issuance_failing_seconds, 1000)
            .await?;
        let mut subjects = Vec::new();
        for (name, slot, ca, error, since) in failing {
            let subject = format!("{name}/{slot}");
            let details = json!({
                "name": name, "slot": slot, "ca": ca, "error": error,
                "failing_since": crate::clock::rfc3339(since),
                "what_to_do": "Look at the order's last error (GET /v1/names/{name}); fix validation or the CA account, or swap the slot to another CA.",
            });
            self.store
                .raise_alert(
                    "issuance_failing",
                    &subject,
                    "warning",
                    &format!(
                        "{subject}: issuance at {ca} failing since {}: {error}",
                        crate::clock::rfc3339(since)
                    ),
                    Some(&details),
                    now,
                )
                .await?;
            subjects.push(subject);
        }
        self.store
            .resolve_alerts_except("issuance_failing", &subjects, now)
            .await?;
        Ok(())
    }

    /// Delivers new alerts and due reminders: one mail to the certificate
    /// admins, one to the endpoint's admin (so neither sees the other's
    /// address and a bad address does not block the other), one post per
    /// webhook. An alert no channel delivered is tried again a minute
    /// later; one-shot alerts (an executed swap, a confirmation) are
    /// closed once told — at once when no channel is configured.
    async fn notify_pass(&self, d: &Delivery) -> Result<(), StoreError> {
        if !d.has_channel() {
            return Ok(());
        }
        let now = self.clock.now();
        let pending = self
            .store
            .alerts_to_notify(now, d.alerts.rate_limit_seconds as i64, 50)
            .await?;
        for p in pending {
            let a = &p.alert;
            let msg = message(a, p.reminder);
            // (channel, recipient, outcome) of every delivery attempt.
            let mut sent = Vec::new();
            if let Some(smtp) = &d.smtp {
                let mut groups = Vec::new();
                if !d.alerts.emails.is_empty() {
                    groups.push(d.alerts.emails.clone());
                }
                if let Some(extra) = a
                    .details
                    .as_ref()
                    .and_then(|v| v["notify"].as_str())
                    .filter(|s| !d.alerts.emails.iter().any(|t| t == s))
                {
                    groups.push(vec![extra.to_string()]);
                }
                for to in groups {
                    let r = smtp.send(&to, &msg).await;
                    sent.push(("email", to.join(", "), r));
                }
            }
            for url in &d.alerts.webhooks {
                let r = crate::notify::webhook::post_slack(&d.http, url, &msg).await;
                sent.push(("webhook", redact(url), r));
            }
            let mut delivered = false;
            let mut retry = false;
            for (channel, recipient, r) in &sent {
                let err = r.as_ref().err();
                match err {
                    None => delivered = true,
                    Some(e) => {
                        retry |= e.is_retryable();
                        warn!(alert = %a.id, channel, error = %e, "alert not delivered");
                    }
                }
                let err = err.map(|e| e.to_string());
                self.note_delivery(&a.id, channel, recipient, err.as_deref(), now)
                    .await;
            }
            // Nobody was told and trying again can help: in a minute. A
            // refusal that will not change (a rejected address) is final.
            if !delivered && retry {
                self.store
                    .defer_notification(&a.id, now + NOTIFY_RETRY_SECONDS)
                    .await?;
                continue;
            }
            self.store.mark_notified(&a.id, now).await?;
            if a.severity == "info" || ONE_SHOT.contains(&a.kind.as_str()) {
                // Told once; nothing stays open.
                self.store
                    .resolve_alerts(&a.kind, std::slice::from_ref(&a.subject), now)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records one delivery attempt; a store error is logged, not fatal
    /// (the message is out; the next pass must not send it again).
    async fn note_delivery(
        &self,
        alert_id: &str,
        channel: &str,
        recipient: &str,
        error: Option<&str>,
        now: i64,
    ) {
        if let Err(e) = self
            .store
            .record_notification(alert_id, channel, recipient, error, now)
            .await
        {
            warn!(alert = %alert_id, error = %e, "could not record an alert delivery");
        }
    }
}

/// Runs `work` on every item, at most `limit` at once (each on its own
/// task); the results, in completion order.
async fn bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, work: F) -> Vec<R>
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

/// A webhook URL without its path (Slack's secret lives there).
fn redact(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
        .unwrap_or_else(|_| "webhook".into())
}

/// The message people get for an alert.
fn message(a: &crate::store::Alert, reminder: bool) -> Message {
    let again = if reminder {
        format!(" (still open, raised {} times)", a.count)
    } else {
        String::new()
    };
    let mut body = format!("{}{again}\n", a.message);
    let mut fields = vec![
        ("kind".to_string(), a.kind.clone()),
        ("severity".to_string(), a.severity.clone()),
        ("subject".to_string(), a.subject.clone()),
        ("first seen".to_string(), crate::clock::rfc3339(a.first_at)),
    ];
    if let Some(serde_json::Value::Object(m)) = &a.details {
        if let Some(todo) = m.get("what_to_do").and_then(|v| v.as_str()) {
            body.push_str(&format!("\nWhat to do: {todo}\n"));
        }
        for (k, v) in m {
            if k == "what_to_do" || v.is_null() {
                continue;
            }
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            fields.push((k.clone(), v));
        }
    }
    Message {
        subject: format!(
            "[twincert] {}: {}",
            a.severity,
            a.message.chars().take(150).collect::<String>()
        ),
        body,
        kind: a.kind.clone(),
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn slack_urls_are_redacted_in_records() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/SECRET"),
            "https://hooks.slack.com/…"
        );
    }
}
