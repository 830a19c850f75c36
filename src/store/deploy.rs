//! Deployment state: which destinations each name's active certificate
//! goes to and whether it arrived (`deployments`), the TLS endpoints that
//! should serve it and what their last check saw (`endpoints`).
//!
//! A deployment is due when the certificate it last wrote is not the
//! name's active one and its backoff has passed. The deployer does not
//! look for such rows on every poll (a join over every deployment): they
//! are *marked* due (`deployments.due_at`, a partial index holds only the
//! marked rows) and the deployer reads the marked ones by index:
//!
//! - an issuance or renewal marks the name's deployments in its own
//!   transaction ([`mark_name_due`], `orders.rs`), as does a key-compromise
//!   swap of one name;
//! - a swap (any operation: swap, incident, drill) writes its `operations`
//!   row in its transaction; the deployer, seeing a new operation, marks
//!   every deployment that does not hold its name's active certificate in
//!   one statement ([`Deployments::mark_stale`]) — one pass over the rows
//!   per operation, not per poll; it does so at its start and every few
//!   minutes too, so a path that changes an active certificate without
//!   marking is caught within minutes;
//! - a successful write unmarks; a failed one marks again at its backoff.
//!
//! Endpoint checks are due by `endpoints.next_check_at` (indexed); the
//! same two markings make the endpoints of names twincert does not deploy
//! itself due at once after their active certificate changed (with
//! deployments, the write schedules the check).

use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::counts::{buckets_where, mark_buckets, mark_names};
use super::sql::{all, exec, get, int, json_col, new_id, one, with_tx};

/// Deployments and endpoint checks.
#[derive(Clone)]
pub struct Deployments {
    pub(super) db: DatabaseConnection,
}

/// One TLS endpoint to check for a name, as configured through the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Host name to resolve (and the SNI unless `sni` says otherwise).
    pub host: String,
    /// TCP port (443 if absent).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Server name to send instead of `host`.
    #[serde(default)]
    pub sni: Option<String>,
    /// Connect to this address instead of resolving `host` (internal
    /// networks).
    #[serde(default)]
    pub ip: Option<String>,
    /// Who runs this server: alert mails about it go here too.
    #[serde(default)]
    pub admin_contact: Option<String>,
}

pub(super) fn default_port() -> u16 {
    443
}

/// A destination's state for one name.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeploymentView {
    /// The configured destination id.
    pub destination: String,
    /// `requested` (the active certificate is being or was written, not
    /// yet seen by a check), `confirmed` (a check saw it) or `failed`.
    pub state: String,
    /// Serial (hex) of the certificate last written there.
    pub serial: Option<String>,
    /// Unix seconds.
    pub requested_at: i64,
    /// Unix seconds: last successful write.
    pub deployed_at: Option<i64>,
    /// Unix seconds: a check saw it served.
    pub confirmed_at: Option<i64>,
    /// Failed writes in a row.
    pub attempts: i64,
    /// The last write's error or the check failure that failed it.
    pub last_error: Option<String>,
    /// The last write's outcome (paths, command status, webhook answer).
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// An endpoint and its last check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    /// Row id.
    pub id: String,
    /// As configured.
    #[serde(flatten)]
    pub spec: EndpointSpec,
    /// `matched`, `mismatch`, `incomplete`, `unreachable`; none before the
    /// first check.
    pub outcome: Option<String>,
    /// `Resolved OK 127.0.0.1:8443 / Connected OK / TLS OK / …`.
    pub summary: Option<String>,
    /// Each step with its outcome and detail.
    #[schema(value_type = Option<Object>)]
    pub steps: Option<serde_json::Value>,
    /// Serial (hex) of the leaf the endpoint served.
    pub served_serial: Option<String>,
    /// Unix seconds.
    pub checked_at: Option<i64>,
    /// Unix seconds.
    pub next_check_at: i64,
}

/// A deployment to (re)write: the name's active certificate.
#[derive(Debug, Clone)]
pub struct DueDeployment {
    pub name_id: String,
    pub destination: String,
    pub cert_id: String,
    pub slot: String,
    pub ca_id: String,
    pub serial: String,
    pub chain_pem: String,
    pub private_key_id: String,
    pub attempts: i64,
}

/// An endpoint to check against the name's active certificate.
#[derive(Debug, Clone)]
pub struct DueEndpoint {
    pub id: String,
    pub name_id: String,
    pub spec: EndpointSpec,
    /// The active certificate now; `None` while the name has none.
    pub cert_id: Option<String>,
    pub chain_pem: Option<String>,
    pub prior_outcome: Option<String>,
    /// A person was asked to install the active certificate (a `manual`
    /// destination's install request is open): not seeing it yet is
    /// expected, not an alert.
    pub awaiting_install: bool,
}

/// What a check found, to store.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub outcome: String,
    pub summary: String,
    pub steps: serde_json::Value,
    pub served_serial: Option<String>,
}

pub(super) const ACTIVE_JOIN: &str = "JOIN names n ON n.id = d.name_id \
     JOIN slots s ON s.name_id = n.id AND s.slot = n.active_slot \
     JOIN certificates c ON c.id = s.current_cert_id";

/// The name's active certificate, as a scalar subquery over `{t}.name_id`.
fn active_cert_of(t: &str) -> String {
    format!(
        "(SELECT s.current_cert_id FROM names n JOIN slots s ON s.name_id = n.id \
         AND s.slot = n.active_slot WHERE n.id = {t}.name_id)"
    )
}

/// The name's active certificate may have changed (an issuance, a
/// renewal, a one-name swap): its deployments are due (a deployment in
/// backoff keeps its time) and, when twincert deploys nothing for it, its
/// endpoints are checked at once. Called in the transaction that made the
/// change; marking a deployment that already holds the active certificate
/// costs the deployer one indexed read, which unmarks it.
pub(crate) async fn mark_name_due<C: sea_orm::ConnectionTrait>(
    c: &C,
    name_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE deployments SET due_at = $2 WHERE name_id = $1 AND due_at IS NULL",
        vec![name_id.into(), now.into()],
    )
    .await?;
    exec(
        c,
        "UPDATE endpoints SET next_check_at = $2 WHERE name_id = $1 AND next_check_at > $2 \
         AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.name_id = endpoints.name_id)",
        vec![name_id.into(), now.into()],
    )
    .await?;
    Ok(())
}

/// One deployment row, due now (nothing written yet).
pub(super) async fn insert_deployment<C: sea_orm::ConnectionTrait>(
    c: &C,
    name_id: &str,
    destination: &str,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO deployments (name_id, destination, state, requested_at, \
         next_attempt_at, due_at, updated_at) VALUES ($1, $2, 'requested', $3, $3, $3, $3) \
         ON CONFLICT (name_id, destination) DO NOTHING",
        vec![name_id.into(), destination.into(), now.into()],
    )
    .await?;
    Ok(())
}

/// A name's endpoints are checked at `at`.
pub(super) async fn schedule_checks<C: sea_orm::ConnectionTrait>(
    c: &C,
    name_id: &str,
    at: i64,
) -> Result<u64, StoreError> {
    exec(
        c,
        "UPDATE endpoints SET next_check_at = $2 WHERE name_id = $1",
        vec![name_id.into(), at.into()],
    )
    .await
}

/// One endpoint row, due for its first check at `now`.
pub(super) async fn insert_endpoint<C: sea_orm::ConnectionTrait>(
    c: &C,
    name_id: &str,
    e: &EndpointSpec,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO endpoints (id, name_id, host, port, sni, ip, admin_contact, \
         next_check_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            new_id().into(),
            name_id.into(),
            e.host.clone().into(),
            i32::from(e.port).into(),
            e.sni.clone().into(),
            e.ip.clone().into(),
            e.admin_contact.clone().into(),
            now.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) fn endpoint_spec(r: &sea_orm::QueryResult) -> Result<EndpointSpec, StoreError> {
    Ok(EndpointSpec {
        host: get(r, "host")?,
        port: u16::try_from(int(r, "port")?).unwrap_or(0),
        sni: get(r, "sni")?,
        ip: get(r, "ip")?,
        admin_contact: get(r, "admin_contact")?,
    })
}

impl Deployments {
    /// Replaces a name's destinations and endpoints, audited in the same
    /// transaction. Destinations kept keep their state; new ones are due
    /// now; endpoints are checked now.
    pub async fn set_deploy_targets(
        &self,
        name_id: &str,
        destinations: &[String],
        endpoints: &[EndpointSpec],
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let now = audit.at;
        with_tx(&self.db, async |tx| {
            let existing = all(
                tx,
                "SELECT destination FROM deployments WHERE name_id = $1",
                vec![name_id.into()],
            )
            .await?;
            for r in &existing {
                let d: String = get(r, "destination")?;
                if !destinations.contains(&d) {
                    exec(
                        tx,
                        "DELETE FROM deployments WHERE name_id = $1 AND destination = $2",
                        vec![name_id.into(), d.into()],
                    )
                    .await?;
                }
            }
            for d in destinations {
                insert_deployment(tx, name_id, d, now).await?;
            }
            exec(
                tx,
                "DELETE FROM endpoints WHERE name_id = $1",
                vec![name_id.into()],
            )
            .await?;
            for e in endpoints {
                insert_endpoint(tx, name_id, e, now).await?;
            }
            insert_audit(tx, audit).await?;
            mark_names(tx, &[name_id]).await
        })
        .await
    }

    /// A name's destinations and endpoints with their state.
    pub async fn deploy_targets(
        &self,
        name_id: &str,
    ) -> Result<(Vec<DeploymentView>, Vec<EndpointView>), StoreError> {
        let rows = all(
            &self.db,
            "SELECT d.*, c.serial FROM deployments d LEFT JOIN certificates c ON c.id = d.cert_id \
             WHERE d.name_id = $1 ORDER BY d.destination",
            vec![name_id.into()],
        )
        .await?;
        let mut deployments = Vec::new();
        for r in &rows {
            deployments.push(DeploymentView {
                destination: get(r, "destination")?,
                state: get(r, "state")?,
                serial: get(r, "serial")?,
                requested_at: get(r, "requested_at")?,
                deployed_at: get(r, "deployed_at")?,
                confirmed_at: get(r, "confirmed_at")?,
                attempts: int(r, "attempts")?,
                last_error: get(r, "last_error")?,
                detail: json_col(r, "detail")?,
            });
        }
        let rows = all(
            &self.db,
            "SELECT * FROM endpoints WHERE name_id = $1 ORDER BY host, port, id",
            vec![name_id.into()],
        )
        .await?;
        let mut endpoints = Vec::new();
        for r in &rows {
            endpoints.push(EndpointView {
                id: get(r, "id")?,
                spec: endpoint_spec(r)?,
                outcome: get(r, "outcome")?,
                summary: get(r, "summary")?,
                steps: json_col(r, "steps")?,
                served_serial: get(r, "served_serial")?,
                checked_at: get(r, "checked_at")?,
                next_check_at: get(r, "next_check_at")?,
            });
        }
        Ok((deployments, endpoints))
    }

    /// Marks due every deployment that does not hold its name's active
    /// certificate and is not marked yet, and checks now the endpoints of
    /// names without deployments whose last check saw another certificate
    /// than the active one: one pass over every row, after a swap
    /// (a bulk change of active certificates) and as a periodic safety
    /// net. Returns (deployments, endpoints) marked.
    pub async fn mark_stale(&self, now: i64) -> Result<(u64, u64), StoreError> {
        let deployments = exec(
            &self.db,
            &format!(
                "UPDATE deployments SET due_at = $1 WHERE due_at IS NULL \
                 AND (cert_id IS NULL OR cert_id <> {})",
                active_cert_of("deployments")
            ),
            vec![now.into()],
        )
        .await?;
        let endpoints = exec(
            &self.db,
            &format!(
                "UPDATE endpoints SET next_check_at = $1 WHERE next_check_at > $1 \
                 AND cert_id <> {} \
                 AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.name_id = endpoints.name_id)",
                active_cert_of("endpoints")
            ),
            vec![now.into()],
        )
        .await?;
        Ok((deployments, endpoints))
    }

    /// The newest emergency operation (swap, incident, drill), as a
    /// number that grows with each: when it moved, active certificates
    /// changed in bulk and [`Deployments::mark_stale`] is due.
    pub async fn last_operation(&self) -> Result<Option<i64>, StoreError> {
        match one(&self.db, "SELECT MAX(seq) AS seq FROM operations", vec![]).await? {
            Some(r) => get(&r, "seq"),
            None => Ok(None),
        }
    }

    /// Deployments marked due whose time came and whose destination does
    /// not hold the name's active certificate, oldest first; read through
    /// the partial index of marked rows. Marked rows that hold it already
    /// (a swap there and back, a renewal of the standby slot) are unmarked
    /// first.
    pub async fn due_deployments(
        &self,
        now: i64,
        limit: u64,
    ) -> Result<Vec<DueDeployment>, StoreError> {
        exec(
            &self.db,
            &format!(
                "UPDATE deployments SET due_at = NULL WHERE due_at <= $1 \
                 AND cert_id = {}",
                active_cert_of("deployments")
            ),
            vec![now.into()],
        )
        .await?;
        let rows = all(
            &self.db,
            &format!(
                "SELECT d.name_id, d.destination, d.attempts, c.id AS cert_id, c.slot, c.ca_id, \
                 c.serial, c.chain_pem, c.private_key_id FROM deployments d {ACTIVE_JOIN} \
                 WHERE d.due_at <= $1 AND (d.cert_id IS NULL OR d.cert_id <> c.id) \
                 ORDER BY d.due_at LIMIT $2"
            ),
            vec![now.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDeployment {
                    name_id: get(r, "name_id")?,
                    destination: get(r, "destination")?,
                    cert_id: get(r, "cert_id")?,
                    slot: get(r, "slot")?,
                    ca_id: get(r, "ca_id")?,
                    serial: get(r, "serial")?,
                    chain_pem: get(r, "chain_pem")?,
                    private_key_id: get(r, "private_key_id")?,
                    attempts: int(r, "attempts")?,
                })
            })
            .collect()
    }

    /// A destination now holds `cert_id`: requested until a check sees it;
    /// the name's endpoints are checked now.
    pub async fn record_deployed(
        &self,
        name_id: &str,
        destination: &str,
        cert_id: &str,
        detail: &serde_json::Value,
        check_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            deployed(tx, name_id, destination, cert_id, detail, check_at, now).await
        })
        .await
    }

    /// [`Deployments::record_deployed`] for a batch of writes, in one
    /// transaction (a wave records thousands: one commit per batch, not
    /// per name).
    pub async fn record_deployed_many(
        &self,
        writes: &[Deployed],
        check_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        with_tx(&self.db, async |tx| {
            for w in writes {
                deployed(
                    tx,
                    &w.name_id,
                    &w.destination,
                    &w.cert_id,
                    &w.detail,
                    check_at,
                    now,
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// A write failed: failed, retried at `next_attempt_at`.
    pub async fn record_deploy_failure(
        &self,
        name_id: &str,
        destination: &str,
        error: &str,
        detail: Option<&serde_json::Value>,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            exec(
                tx,
                "UPDATE deployments SET state = 'failed', attempts = attempts + 1, \
                 last_error = $3, detail = $4, next_attempt_at = $5, due_at = $5, updated_at = $6 \
                 WHERE name_id = $1 AND destination = $2",
                vec![
                    name_id.into(),
                    destination.into(),
                    error.into(),
                    detail.map(|d| d.to_string()).into(),
                    next_attempt_at.into(),
                    now.into(),
                ],
            )
            .await?;
            mark_names(tx, &[name_id]).await
        })
        .await
    }

    /// Endpoints due for a check (their time came: an index range), with
    /// the name's active certificate. A swap or renewal of a name twincert
    /// does not deploy itself makes its endpoints due at once through
    /// [`mark_name_due`] or [`Deployments::mark_stale`]; with
    /// destinations, the write schedules the check, and an endpoint whose
    /// name has a write pending (a deployment marked due whose time came)
    /// waits for it: checked now, it would only see the old certificate
    /// (the deployer checks while it writes).
    pub async fn due_endpoints(
        &self,
        now: i64,
        limit: u64,
    ) -> Result<Vec<DueEndpoint>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT e.*, c.id AS active_cert, c.chain_pem, \
             CASE WHEN EXISTS (SELECT 1 FROM install_packages p JOIN deployments d \
               ON d.name_id = p.name_id AND d.destination = p.destination \
               AND d.cert_id = p.cert_id AND d.state = 'requested' \
               WHERE p.name_id = e.name_id AND p.cert_id = c.id AND p.state <> 'superseded') \
             THEN 1 ELSE 0 END AS awaiting_install FROM endpoints e \
             JOIN names n ON n.id = e.name_id \
             JOIN slots s ON s.name_id = n.id AND s.slot = n.active_slot \
             LEFT JOIN certificates c ON c.id = s.current_cert_id \
             WHERE e.next_check_at <= $1 AND NOT EXISTS (SELECT 1 FROM deployments d \
               WHERE d.name_id = e.name_id AND d.due_at <= $1) \
             ORDER BY e.next_check_at LIMIT $2",
            vec![now.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueEndpoint {
                    id: get(r, "id")?,
                    name_id: get(r, "name_id")?,
                    spec: endpoint_spec(r)?,
                    cert_id: get(r, "active_cert")?,
                    chain_pem: get(r, "chain_pem")?,
                    prior_outcome: get(r, "outcome")?,
                    awaiting_install: int(r, "awaiting_install")? == 1,
                })
            })
            .collect()
    }

    /// Writes the active certificate to one destination of a name again at
    /// the next pass (for a `manual` destination: a new install request,
    /// superseding the last), audited in the same transaction. False when
    /// the name has no such destination.
    pub async fn redeploy(
        &self,
        name_id: &str,
        destination: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        with_tx(&self.db, async |tx| {
            let n = exec(
                tx,
                "UPDATE deployments SET cert_id = NULL, attempts = 0, next_attempt_at = $3, \
                 due_at = $3, updated_at = $3 WHERE name_id = $1 AND destination = $2",
                vec![name_id.into(), destination.into(), audit.at.into()],
            )
            .await?;
            if n == 1 {
                insert_audit(tx, audit).await?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Checks a name's endpoints at the next pass; how many it has.
    pub async fn request_checks(&self, name_id: &str, now: i64) -> Result<u64, StoreError> {
        schedule_checks(&self.db, name_id, now).await
    }

    /// Stores a check's result and when to check again.
    pub async fn record_check(
        &self,
        endpoint_id: &str,
        cert_id: Option<&str>,
        rec: &CheckRecord,
        next_check_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            checked(tx, endpoint_id, cert_id, rec, next_check_at, now).await
        })
        .await
    }

    /// [`Deployments::record_check`] for many checks, in one transaction.
    pub async fn record_checks(&self, checks: &[Checked], now: i64) -> Result<(), StoreError> {
        if checks.is_empty() {
            return Ok(());
        }
        with_tx(&self.db, async |tx| {
            for c in checks {
                checked(
                    tx,
                    &c.endpoint_id,
                    c.cert_id.as_deref(),
                    &c.record,
                    c.next_check_at,
                    now,
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// [`Deployments::settle_deployments`] for many names, in one
    /// transaction: (name, destination, new state) of those that changed.
    pub async fn settle_many(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        with_tx(&self.db, async |tx| {
            let mut changed = Vec::new();
            for name in names {
                for (dest, state) in settle(tx, name, now).await? {
                    changed.push((name.clone(), dest, state));
                }
            }
            Ok(changed)
        })
        .await
    }

    /// Sets the state of a name's deployments from its endpoints' last
    /// checks: every endpoint saw the active certificate → `confirmed`;
    /// one did not → `failed`. Only deployments that hold the active
    /// certificate change, and a deployment waiting for a person to
    /// install it (an install request of a `manual` destination for that
    /// certificate) stays `requested` rather than `failed`. Returns
    /// (destination, new state) of those that changed.
    pub async fn settle_deployments(
        &self,
        name_id: &str,
        now: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        with_tx(&self.db, async |tx| settle(tx, name_id, now).await).await
    }
}

/// The statements of [`Deployments::settle_deployments`], on `c`.
async fn settle<C: sea_orm::ConnectionTrait>(
    c: &C,
    name_id: &str,
    now: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let Some(r) = one(
            c,
            "SELECT COUNT(*) AS total, \
             SUM(CASE WHEN e.outcome = 'matched' AND e.cert_id = s.current_cert_id THEN 1 ELSE 0 END) AS ok, \
             SUM(CASE WHEN e.outcome IS NOT NULL AND e.outcome <> 'matched' \
               AND e.cert_id = s.current_cert_id THEN 1 ELSE 0 END) AS bad, \
             MAX(s.current_cert_id) AS active FROM endpoints e JOIN names n ON n.id = e.name_id \
             JOIN slots s ON s.name_id = n.id AND s.slot = n.active_slot WHERE e.name_id = $1",
            vec![name_id.into()],
        )
        .await?
        else {
            return Ok(Vec::new());
        };
    let total: i64 = get(&r, "total")?;
    let ok = get::<Option<i64>>(&r, "ok")?.unwrap_or(0);
    let bad = get::<Option<i64>>(&r, "bad")?.unwrap_or(0);
    let Some(active): Option<String> = get(&r, "active")? else {
        return Ok(Vec::new());
    };
    let target = if total > 0 && ok == total {
        "confirmed"
    } else if bad > 0 {
        "failed"
    } else {
        return Ok(Vec::new());
    };
    let rows = all(
            c,
            "UPDATE deployments SET state = $3, \
             confirmed_at = CASE WHEN $3 = 'confirmed' THEN CAST($4 AS BIGINT) ELSE confirmed_at END, \
             last_error = CASE WHEN $3 = 'failed' THEN 'an endpoint check does not see this certificate' ELSE last_error END, \
             updated_at = $4 WHERE name_id = $1 AND cert_id = $2 AND state <> $3 \
             AND NOT ($3 = 'failed' AND state = 'requested' AND EXISTS (SELECT 1 FROM \
               install_packages p WHERE p.name_id = deployments.name_id \
               AND p.destination = deployments.destination AND p.cert_id = deployments.cert_id \
               AND p.state <> 'superseded')) RETURNING destination",
            vec![
                name_id.into(),
                active.into(),
                target.into(),
                now.into(),
            ],
        )
        .await?;
    if !rows.is_empty() {
        mark_names(c, &[name_id]).await?;
    }
    rows.iter()
        .map(|r| Ok((get::<String>(r, "destination")?, target.to_string())))
        .collect()
}

/// One successful write, for [`Deployments::record_deployed_many`].
#[derive(Debug, Clone)]
pub struct Deployed {
    pub name_id: String,
    pub destination: String,
    pub cert_id: String,
    /// The write's outcome (paths, command status).
    pub detail: serde_json::Value,
}

/// One check's result, for [`Deployments::record_checks`].
#[derive(Debug, Clone)]
pub struct Checked {
    pub endpoint_id: String,
    /// The active certificate compared against; `None` while none.
    pub cert_id: Option<String>,
    pub record: CheckRecord,
    pub next_check_at: i64,
}

/// The statements of [`Deployments::record_deployed`], on `c`.
async fn deployed<C: sea_orm::ConnectionTrait>(
    c: &C,
    name_id: &str,
    destination: &str,
    cert_id: &str,
    detail: &serde_json::Value,
    check_at: i64,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE deployments SET state = 'requested', cert_id = $3, requested_at = $4, \
         deployed_at = $4, confirmed_at = NULL, attempts = 0, last_error = NULL, \
         detail = $5, updated_at = $4, due_at = NULL \
         WHERE name_id = $1 AND destination = $2",
        vec![
            name_id.into(),
            destination.into(),
            cert_id.into(),
            now.into(),
            detail.to_string().into(),
        ],
    )
    .await?;
    schedule_checks(c, name_id, check_at).await?;
    mark_names(c, &[name_id]).await
}

/// The statement of [`Deployments::record_check`], on `c`.
async fn checked<C: sea_orm::ConnectionTrait>(
    c: &C,
    endpoint_id: &str,
    cert_id: Option<&str>,
    rec: &CheckRecord,
    next_check_at: i64,
    now: i64,
) -> Result<(), StoreError> {
    // The counts see an endpoint's outcome, not when it was checked.
    let changed = buckets_where(
        c,
        "n.id IN (SELECT e.name_id FROM endpoints e WHERE e.id = $1 \
         AND COALESCE(e.outcome, '') <> $2)",
        vec![endpoint_id.into(), rec.outcome.clone().into()],
    )
    .await?;
    exec(
        c,
        "UPDATE endpoints SET outcome = $2, summary = $3, steps = $4, served_serial = $5, \
         cert_id = $6, checked_at = $7, next_check_at = $8 WHERE id = $1",
        vec![
            endpoint_id.into(),
            rec.outcome.clone().into(),
            rec.summary.clone().into(),
            rec.steps.to_string().into(),
            rec.served_serial.clone().into(),
            cert_id.map(str::to_string).into(),
            now.into(),
            next_check_at.into(),
        ],
    )
    .await?;
    mark_buckets(c, &changed).await
}
