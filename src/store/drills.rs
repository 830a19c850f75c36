//! Drills (issue 22): the drill rows — requested by the API, run and
//! finished by one worker replica — the standby material a dry drill
//! inspects, and the live drill's flips.
//!
//! A drill's flip is not an emergency swap: it marks nothing for
//! re-provisioning and supersedes nothing (the certificate swapped away
//! from is not doomed; the drill swaps back to it). It is recorded as an
//! operation of kind `drill` and audited in the same transaction, like
//! every swap.

use std::time::Instant;

use sea_orm::{DatabaseConnection, Value};

use crate::domain::{DrillMode, DrillReport, DrillRequest};

use super::StoreError;
use super::audit::{AuditDetails, AuditEvent, insert_audit};
use super::counts::mark_names;
use super::deploy::{EndpointSpec, endpoint_spec};
use super::operations::{Operation, insert_operation};
use super::sql::{all, exec, get, holes, new_id, one, with_tx};
use super::swap_scope::{ACTIVE_CA, FLIP, STANDBY_CA, classified, lock_names};

/// Drill rows, the standbys a drill inspects, and its flips.
#[derive(Clone)]
pub struct Drills {
    pub(super) db: DatabaseConnection,
}

/// One drill as stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Drill {
    /// Its id.
    pub id: String,
    /// The CA the drill swaps (or would swap) away from.
    pub ca: String,
    /// `dry` or `live`.
    pub mode: DrillMode,
    /// `running`, then `passed` or `failed`.
    pub state: String,
    /// Who asked for it.
    pub actor: String,
    /// Why (the audit log's reason).
    pub reason: String,
    /// What was asked.
    pub request: DrillRequest,
    /// What it found so far (while running) or in the end.
    pub report: Option<DrillReport>,
    /// Unix seconds: requested.
    pub created_at: i64,
    /// Unix seconds: a worker began it.
    pub started_at: Option<i64>,
    /// Unix seconds: it ended.
    pub finished_at: Option<i64>,
}

/// The standby of a name active on the drilled CA, as a dry drill
/// inspects it.
#[derive(Debug, Clone)]
pub struct DrillStandby {
    /// The name.
    pub name_id: String,
    /// The standby certificate's row.
    pub cert_id: String,
    /// Its chain, leaf first.
    pub chain_pem: String,
    /// Its key's row.
    pub private_key_id: String,
    /// The CA that issued it.
    pub ca_id: String,
    /// Its stored revocation time, if found revoked.
    pub revoked_at: Option<i64>,
}

/// Which way a live drill flips its sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillFlip {
    /// From the drilled CA to the standby.
    Away,
    /// Back to the drilled CA.
    Back,
}

fn row(r: &sea_orm::QueryResult) -> Result<Drill, StoreError> {
    let mode: String = get(r, "mode")?;
    let request: String = get(r, "request")?;
    let report: Option<String> = get(r, "report")?;
    let bad = |e: serde_json::Error| StoreError::Db(format!("stored drill: {e}"));
    Ok(Drill {
        id: get(r, "id")?,
        ca: get(r, "ca_id")?,
        mode: match mode.as_str() {
            "live" => DrillMode::Live,
            "simulate" => DrillMode::Simulate,
            _ => DrillMode::Dry,
        },
        state: get(r, "state")?,
        actor: get(r, "actor")?,
        reason: get(r, "reason")?,
        request: serde_json::from_str(&request).map_err(bad)?,
        report: report
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(bad)?,
        created_at: get(r, "created_at")?,
        started_at: get(r, "started_at")?,
        finished_at: get(r, "finished_at")?,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Db(e.to_string()))
}

impl Drills {
    /// Records a requested drill (state `running`) and its audit event, in
    /// one transaction; refused while another drill of the CA runs, and a
    /// live one while the CA has an open incident (a drill must not swap
    /// names an incident is deciding about).
    pub async fn request(&self, d: &Drill) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            if let Some(r) = one(
                tx,
                "SELECT id FROM drills WHERE ca_id = $1 AND state = 'running'",
                vec![d.ca.clone().into()],
            )
            .await?
            {
                let other: String = get(&r, "id")?;
                return Err(StoreError::Conflict(format!(
                    "drill '{other}' is still running for CA '{}'; wait until it ends \
                     (GET /v1/drills/{other})",
                    d.ca
                )));
            }
            if d.mode != DrillMode::Dry
                && let Some(r) = one(
                    tx,
                    "SELECT id FROM ca_incidents WHERE ca_id = $1 AND state = 'open'",
                    vec![d.ca.clone().into()],
                )
                .await?
            {
                let inc: String = get(&r, "id")?;
                return Err(StoreError::Conflict(format!(
                    "incident '{inc}' is open for CA '{}'; a {} drill would swap names it is \
                     deciding about: close it first (POST /v1/incidents/{inc}/close) or run a \
                     dry drill",
                    d.ca,
                    d.mode.as_str()
                )));
            }
            exec(
                tx,
                "INSERT INTO drills (id, ca_id, mode, state, actor, reason, request, created_at) \
                 VALUES ($1, $2, $3, 'running', $4, $5, $6, $7)",
                vec![
                    d.id.clone().into(),
                    d.ca.clone().into(),
                    d.mode.as_str().into(),
                    d.actor.clone().into(),
                    d.reason.clone().into(),
                    json(&d.request)?.into(),
                    d.created_at.into(),
                ],
            )
            .await?;
            insert_audit(
                tx,
                &AuditEvent::ok(
                    d.created_at,
                    &d.actor,
                    "drill.request",
                    &d.ca,
                    Some(d.reason.clone()),
                    Some(AuditDetails::Drill {
                        drill: d.id.clone(),
                        mode: d.mode.as_str().into(),
                        state: "running".into(),
                    }),
                ),
            )
            .await
        })
        .await
    }

    /// The oldest running drill, if any.
    pub async fn next_running(&self) -> Result<Option<Drill>, StoreError> {
        one(
            &self.db,
            "SELECT * FROM drills WHERE state = 'running' ORDER BY created_at, id LIMIT 1",
            vec![],
        )
        .await?
        .map(|r| row(&r))
        .transpose()
    }

    /// The CAs under a simulated event now, with the drill simulating it:
    /// the running `simulate` drills a worker has begun.
    pub async fn simulated_cas(&self) -> Result<Vec<(String, String)>, StoreError> {
        all(
            &self.db,
            "SELECT ca_id, id FROM drills WHERE state = 'running' AND mode = 'simulate' \
             AND started_at IS NOT NULL",
            vec![],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, "ca_id")?, get(r, "id")?)))
        .collect()
    }

    /// Notes that a worker began the drill.
    pub async fn start(&self, id: &str, now: i64) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE drills SET started_at = $2 WHERE id = $1 AND state = 'running'",
            vec![id.into(), now.into()],
        )
        .await?;
        Ok(())
    }

    /// Stores the report so far (GET shows progress).
    pub async fn progress(&self, id: &str, report: &DrillReport) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE drills SET report = $2 WHERE id = $1 AND state = 'running'",
            vec![id.into(), json(report)?.into()],
        )
        .await?;
        Ok(())
    }

    /// Ends the drill (`passed` or `failed`) with its report and audit
    /// event, in one transaction.
    pub async fn finish(
        &self,
        d: &Drill,
        state: &str,
        report: &DrillReport,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_tx(&self.db, async |tx| {
            exec(
                tx,
                "UPDATE drills SET state = $2, report = $3, finished_at = $4 \
                 WHERE id = $1 AND state = 'running'",
                vec![
                    d.id.clone().into(),
                    state.into(),
                    json(report)?.into(),
                    now.into(),
                ],
            )
            .await?;
            let mut event = AuditEvent::ok(
                now,
                actor,
                "drill.finish",
                &d.ca,
                Some(d.reason.clone()),
                Some(AuditDetails::Drill {
                    drill: d.id.clone(),
                    mode: d.mode.as_str().into(),
                    state: state.into(),
                }),
            );
            if state != "passed" {
                event.result = format!("drill {state}");
            }
            insert_audit(tx, &event).await
        })
        .await
    }

    /// Drills, newest first.
    pub async fn list(&self, limit: u64) -> Result<Vec<Drill>, StoreError> {
        all(
            &self.db,
            "SELECT * FROM drills ORDER BY created_at DESC, id DESC LIMIT $1",
            vec![(limit as i64).into()],
        )
        .await?
        .iter()
        .map(row)
        .collect()
    }

    /// One drill.
    pub async fn drill(&self, id: &str) -> Result<Option<Drill>, StoreError> {
        one(
            &self.db,
            "SELECT * FROM drills WHERE id = $1",
            vec![id.into()],
        )
        .await?
        .map(|r| row(&r))
        .transpose()
    }

    /// A page of the standby certificates of names active on `ca`, in
    /// name order after `after`.
    pub async fn standbys(
        &self,
        ca: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<DrillStandby>, StoreError> {
        let rows = all(
            &self.db,
            &format!(
                "SELECT n.id AS name_id, c.id AS cert_id, c.chain_pem, c.private_key_id, \
                 c.ca_id, c.revoked_at FROM names n \
                 JOIN slots ss ON ss.name_id = n.id AND ss.slot <> n.active_slot \
                 JOIN certificates c ON c.id = ss.current_cert_id \
                 WHERE {ACTIVE_CA} = $1 AND n.id > $2 ORDER BY n.id LIMIT $3"
            ),
            vec![ca.into(), after.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DrillStandby {
                    name_id: get(r, "name_id")?,
                    cert_id: get(r, "cert_id")?,
                    chain_pem: get(r, "chain_pem")?,
                    private_key_id: get(r, "private_key_id")?,
                    ca_id: get(r, "ca_id")?,
                    revoked_at: get(r, "revoked_at")?,
                })
            })
            .collect()
    }

    /// Names active on `ca`, in name order (the population a live drill
    /// samples).
    pub async fn active_on(&self, ca: &str) -> Result<Vec<String>, StoreError> {
        all(
            &self.db,
            &format!("SELECT n.id FROM names n WHERE {ACTIVE_CA} = $1 ORDER BY n.id"),
            vec![ca.into()],
        )
        .await?
        .iter()
        .map(|r| get(r, "id"))
        .collect()
    }

    /// The endpoints of names active on `ca`, in name order (a dry drill
    /// probes them).
    pub async fn endpoints_of(&self, ca: &str) -> Result<Vec<(String, EndpointSpec)>, StoreError> {
        all(
            &self.db,
            &format!(
                "SELECT e.* FROM endpoints e JOIN names n ON n.id = e.name_id \
                 WHERE {ACTIVE_CA} = $1 ORDER BY e.name_id, e.host, e.port, e.id"
            ),
            vec![ca.into()],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, "name_id")?, endpoint_spec(r)?)))
        .collect()
    }

    /// Of the listed names, those not yet verified on their active
    /// certificate: a destination that does not hold it (or failed), or an
    /// endpoint not seen serving it. A name with neither is verified.
    pub async fn unverified(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Value> = names.iter().map(|n| Value::from(n.clone())).collect();
        all(
            &self.db,
            &format!(
                "SELECT n.id FROM names n \
                 JOIN slots s ON s.name_id = n.id AND s.slot = n.active_slot \
                 WHERE n.id IN ({}) AND (EXISTS (SELECT 1 FROM deployments d \
                   WHERE d.name_id = n.id AND (d.cert_id IS NULL OR d.cert_id <> s.current_cert_id \
                   OR d.state = 'failed')) \
                 OR EXISTS (SELECT 1 FROM endpoints e WHERE e.name_id = n.id \
                   AND (e.cert_id IS NULL OR e.cert_id <> s.current_cert_id \
                   OR COALESCE(e.outcome, '') <> 'matched'))) ORDER BY n.id",
                holes(1, names.len())
            ),
            values,
        )
        .await?
        .iter()
        .map(|r| get(r, "id"))
        .collect()
    }

    /// Flips the listed names away from `ca` (those active on it whose
    /// standby is usable and from another CA) or back to it (those whose
    /// standby is on it and usable), in one transaction with the operation
    /// record (kind `drill`) and the audit event. Marks nothing for
    /// re-provisioning. Returns the names flipped and the operation id
    /// (empty when none was flipped: nothing is recorded then).
    #[allow(clippy::too_many_arguments)]
    pub async fn flip(
        &self,
        names: &[String],
        ca: &str,
        way: DrillFlip,
        drill: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<(Vec<String>, String), StoreError> {
        let started = Instant::now();
        if names.is_empty() {
            return Ok((Vec::new(), String::new()));
        }
        // $1 now, $2 the CA, $3… the names.
        let list = holes(3, names.len());
        let side = match way {
            DrillFlip::Away => ACTIVE_CA,
            DrillFlip::Back => STANDBY_CA,
        };
        let filter = format!("n.id IN ({list}) AND {side} = $2");
        let same_ca = match way {
            DrillFlip::Away => "cs.ca_id = $2",
            DrillFlip::Back => "ca.ca_id = $2",
        };
        let mut values: Vec<Value> = vec![now.into(), ca.into()];
        values.extend(names.iter().map(|n| Value::from(n.clone())));
        with_tx(&self.db, async |tx| {
            lock_names(
                tx,
                &format!("n.id IN ({}) AND CAST($1 AS BIGINT) IS NOT NULL", holes(2, names.len())),
                std::iter::once(Value::from(now))
                    .chain(names.iter().map(|n| Value::from(n.clone())))
                    .collect(),
            )
            .await?;
            let flippable: Vec<String> = all(
                tx,
                &format!(
                    "SELECT name_id FROM ({}) t WHERE outcome = 'swap' ORDER BY name_id",
                    classified(&filter, same_ca, "")
                ),
                values.clone(),
            )
            .await?
            .iter()
            .map(|r| get(r, "name_id"))
            .collect::<Result<_, _>>()?;
            if flippable.is_empty() {
                return Ok((flippable, String::new()));
            }
            let op = new_id();
            let mut upd: Vec<Value> = vec![now.into()];
            upd.extend(flippable.iter().map(|n| Value::from(n.clone())));
            exec(
                tx,
                &format!(
                    "UPDATE names SET active_slot = {FLIP}, updated_at = $1 WHERE id IN ({})",
                    holes(2, flippable.len())
                ),
                upd,
            )
            .await?;
            let flipped: Vec<&str> = flippable.iter().map(String::as_str).collect();
            mark_names(tx, &flipped).await?;
            let kind = match way {
                DrillFlip::Away => "away",
                DrillFlip::Back => "back",
            };
            insert_operation(
                tx,
                &Operation {
                    id: op.clone(),
                    kind: "drill".into(),
                    actor: actor.into(),
                    reason: reason.into(),
                    scope: format!("names:{}", flippable.len()),
                    avoid_ca: None,
                    counts: serde_json::json!({ "swap": flippable.len(), "drill": drill, "way": kind }),
                    affected: flippable.len() as i64,
                    blocked: 0,
                    reprovision_open: false,
                    duration_ms: started.elapsed().as_millis() as i64,
                    created_at: now,
                },
            )
            .await?;
            insert_audit(
                tx,
                &AuditEvent::ok(
                    now,
                    actor,
                    match way {
                        DrillFlip::Away => "drill.swap",
                        DrillFlip::Back => "drill.swap_back",
                    },
                    ca,
                    Some(reason.into()),
                    Some(AuditDetails::DrillSwap {
                        drill: drill.into(),
                        operation: op.clone(),
                        names: flippable.len() as u64,
                    }),
                ),
            )
            .await?;
            Ok((flippable, op))
        })
        .await
    }
}
