//! The emergency endpoints: mass swaps, CA distrust and trust, key
//! compromise (one slot or many), mass re-key, and the operation records
//! with their progress. Each handler parses, checks, delegates to one store
//! call and wakes the worker for the work it queued.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::problem::ProblemDoc;
use super::{ApiState, Principal, Problem, paging, parse_name};
use crate::domain::Slot;
use crate::store::{CompromiseReport, Operation, OperationProgress, SwapReport, SwapScope};

/// The most names one request may list (a CA or SPKI scope has no limit).
const MAX_LISTED: usize = 10_000;

/// The most keys one compromise request may name: each is a transaction,
/// a revocation and a re-issue, and the request must end within the
/// request timeout.
const MAX_COMPROMISED: usize = 1_000;

fn require_reason(reason: &str) -> Result<(), Problem> {
    if reason.trim().is_empty() {
        return Err(Problem::bad_request(
            "'reason' must not be empty: say why, for the audit log",
        ));
    }
    Ok(())
}

fn parse_spki(raw: &str) -> Result<String, Problem> {
    let spki = raw.to_ascii_lowercase();
    if spki.len() != 64 || !spki.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::bad_request(format!(
            "'spki_sha256' must be 64 hex digits; got '{}'",
            raw.chars().take(80).collect::<String>()
        )));
    }
    Ok(spki)
}

fn parse_names(names: &[String]) -> Result<Vec<String>, Problem> {
    if names.is_empty() || names.len() > MAX_LISTED {
        return Err(Problem::bad_request(format!(
            "'names' must list 1 to {MAX_LISTED} names; {} given",
            names.len()
        )));
    }
    names
        .iter()
        .map(|n| parse_name(n).map(|id| id.as_str().to_string()))
        .collect()
}

/// Exactly one of the scope fields, checked.
fn parse_scope(
    st: &ApiState,
    ca: Option<String>,
    names: Option<Vec<String>>,
    spki: Option<String>,
    all: bool,
) -> Result<SwapScope, Problem> {
    match (ca, names, spki, all) {
        (Some(ca), None, None, false) => {
            if !st.cas.iter().any(|c| c.id == ca) {
                return Err(Problem::bad_request(format!("unknown CA '{ca}'")));
            }
            Ok(SwapScope::Ca(ca))
        }
        (None, Some(names), None, false) => Ok(SwapScope::Names(parse_names(&names)?)),
        (None, None, Some(spki), false) => Ok(SwapScope::Spki(parse_spki(&spki)?)),
        (None, None, None, true) => Ok(SwapScope::All),
        _ => Err(Problem::bad_request(
            "give exactly one scope: 'ca', 'names', 'spki_sha256' (or, for a re-key, 'all': true)",
        )),
    }
}

fn wake(st: &ApiState) {
    if let Some(wake) = &st.wake_worker {
        wake();
    }
}

/// How long re-provisioning would take, from the CAs' configured limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReprovisionEstimate {
    /// Orders to place.
    pub orders: i64,
    /// CAs that may take them (trusted, not the one swapped away from).
    pub eligible_cas: Vec<String>,
    /// Orders per hour the eligible CAs can take together: per CA the
    /// smaller of its configured `orders_per_hour` and `concurrency` ×
    /// 3600 / its mean issuance time (last 100 orders; 10 s if none).
    pub orders_per_hour: i64,
    /// `orders` / `orders_per_hour`, in seconds (plus the hold-off when
    /// `same_ca` re-issues them); null when no CA can take them.
    pub seconds: Option<i64>,
    /// When no other CA can take the slots (the usual two-CA setup), the
    /// CA swapped away from re-issues them once
    /// `policy.reprovision_same_ca_after_seconds` has passed.
    pub same_ca: Option<SameCaReissue>,
}

/// Re-issuing from the CA swapped away from, after a hold-off.
#[derive(Debug, Serialize, ToSchema)]
pub struct SameCaReissue {
    /// The CA.
    pub ca: String,
    /// `policy.reprovision_same_ca_after_seconds`.
    pub hold_off_seconds: i64,
}

async fn estimate(
    st: &ApiState,
    orders: i64,
    avoid: Option<&str>,
) -> Result<ReprovisionEstimate, Problem> {
    let distrusted = st.store.cas().distrusted_cas().await?;
    let cas = crate::policy::with_distrusted(&st.cas, &distrusted);
    let mut paces = Vec::with_capacity(st.ca_views.len());
    for ca in st.ca_views.iter() {
        paces.push(crate::policy::CaPace {
            id: ca.id.clone(),
            orders_per_hour: ca.orders_per_hour,
            concurrency: ca.concurrency,
            mean_issue_seconds: st.store.pacing().mean_issue_seconds(&ca.id).await?,
        });
    }
    let f = crate::policy::reprovision_forecast(&cas, avoid, &paces, orders, st.same_ca_hold_off);
    Ok(ReprovisionEstimate {
        orders,
        eligible_cas: f.eligible,
        orders_per_hour: f.orders_per_hour as i64,
        seconds: f.seconds,
        same_ca: f.same_ca.map(|ca| SameCaReissue {
            ca,
            hold_off_seconds: st.same_ca_hold_off,
        }),
    })
}

/// A swap's or a distrust's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct SwapOutcome {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// What was (or would be) done.
    pub report: SwapReport,
    /// Time to re-provision the abandoned slots.
    pub estimate: ReprovisionEstimate,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MassSwap {
    ca: Option<String>,
    names: Option<Vec<String>>,
    spki_sha256: Option<String>,
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

#[utoipa::path(post, path = "/v1/swaps", request_body = MassSwap, responses((status = 200, description = "what was (or, for a dry run, would be) swapped, what was skipped and why, and how long re-provisioning takes", body = SwapOutcome), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn mass_swap(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<MassSwap>,
) -> Result<Response, Problem> {
    require_reason(&req.reason)?;
    let scope = parse_scope(&st, req.ca, req.names, req.spki_sha256, false)?;
    let report = st
        .store
        .emergency()
        .mass_swap(&scope, &req.reason, &who.name, req.dry_run, st.clock.now())
        .await?;
    let avoid = match &scope {
        SwapScope::Ca(ca) => Some(ca.as_str()),
        _ => None,
    };
    let estimate = estimate(&st, report.reprovision, avoid).await?;
    if !req.dry_run {
        wake(&st);
    }
    Ok(Json(SwapOutcome {
        dry_run: req.dry_run,
        report,
        estimate,
    })
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TrustChange {
    reason: String,
    /// Distrust only: report what would happen, change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// The answer to distrust / trust.
#[derive(Serialize, ToSchema)]
pub struct TrustResult {
    /// The CA.
    pub id: String,
    /// Its new state.
    pub distrusted: bool,
}

fn configured_ca(st: &ApiState, id: &str) -> Result<(), Problem> {
    if !st.cas.iter().any(|c| c.id == id) {
        return Err(Problem::not_found(format!("CA '{id}' is not configured")));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/cas/{id}/distrust", params(("id" = String, Path, description = "the CA id")), request_body = TrustChange, responses((status = 200, description = "distrusted: never chosen again; names active on it swapped away; every slot it holds queued for re-provisioning elsewhere", body = SwapOutcome), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not configured", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn distrust_ca(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TrustChange>,
) -> Result<Response, Problem> {
    require_reason(&req.reason)?;
    configured_ca(&st, &id)?;
    let report = st
        .store
        .emergency()
        .distrust_ca(&id, &req.reason, &who.name, req.dry_run, st.clock.now())
        .await?;
    let estimate = estimate(&st, report.reprovision, Some(&id)).await?;
    if !req.dry_run {
        wake(&st);
    }
    Ok(Json(SwapOutcome {
        dry_run: req.dry_run,
        report,
        estimate,
    })
    .into_response())
}

#[utoipa::path(post, path = "/v1/cas/{id}/trust", params(("id" = String, Path, description = "the CA id")), request_body = TrustChange, responses((status = 200, description = "trusted again for future choices", body = TrustResult), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not configured", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn trust_ca(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TrustChange>,
) -> Result<Response, Problem> {
    require_reason(&req.reason)?;
    configured_ca(&st, &id)?;
    if req.dry_run {
        return Err(Problem::bad_request(
            "'dry_run' applies to distrust only; trust changes nothing but future choices",
        ));
    }
    st.store
        .cas()
        .trust_ca(&id, &req.reason, &who.name, st.clock.now())
        .await?;
    Ok(Json(serde_json::json!({ "id": id, "distrusted": false })).into_response())
}

/// The answer to a compromise report.
#[derive(Serialize, ToSchema)]
pub struct CompromiseResult {
    /// The name.
    pub name: String,
    /// The compromised slot.
    pub slot: Slot,
    /// Whether the name swapped away from it.
    pub swapped: bool,
    /// `queued`.
    pub revocation: String,
    /// `queued`.
    pub reissue: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Compromise {
    slot: String,
    reason: String,
}

#[utoipa::path(post, path = "/v1/names/{name}/compromise", params(("name" = String, Path, description = "the managed name")), request_body = Compromise, responses((status = 202, description = "recorded: swapped away if it was active; revocation (keyCompromise) and re-issue under a new key are queued", body = CompromiseResult), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "no certificate in that slot", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn compromise(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<JsonBody<Compromise>, Problem>,
) -> Result<Response, Problem> {
    let id = parse_name(&name)?;
    // The name in the path is checked before the body.
    let JsonBody(req) = body?;
    let slot: Slot = req.slot.parse().map_err(Problem::bad_request)?;
    require_reason(&req.reason)?;
    let swapped = st
        .store
        .emergency()
        .report_compromise(id.as_str(), slot, &req.reason, &who.name, st.clock.now())
        .await?;
    wake(&st);
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "name": id.as_str(),
            "slot": slot,
            "swapped": swapped,
            "revocation": "queued",
            "reissue": "queued",
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkCompromise {
    /// Names whose key in `slot` is compromised.
    names: Option<Vec<String>>,
    /// `primary` or `backup`: the slot holding the compromised key (needed
    /// with `names`).
    slot: Option<String>,
    /// Compromised keys, by SPKI SHA-256.
    spki_sha256: Option<Vec<String>>,
    reason: String,
}

#[utoipa::path(post, path = "/v1/compromises", request_body = BulkCompromise, responses((status = 202, description = "each key marked compromised, swapped away from where active, revocation (keyCompromise) and re-issue queued; targets that failed are listed", body = CompromiseReport), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn bulk_compromise(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<BulkCompromise>,
) -> Result<Response, Problem> {
    require_reason(&req.reason)?;
    let names = match &req.names {
        Some(n) => parse_names(n)?,
        None => Vec::new(),
    };
    let slot: Option<Slot> = match req.slot.as_deref() {
        None => None,
        // Which slot is active changes when a compromise is reported, so
        // a repeated request must name the key's slot, not its role.
        Some(s) => Some(s.parse().map_err(|_| {
            Problem::bad_request(format!(
                "'slot' must be primary or backup (the slot holding the compromised key); got '{}'",
                s.chars().take(40).collect::<String>()
            ))
        })?),
    };
    if !names.is_empty() && slot.is_none() {
        return Err(Problem::bad_request(
            "'names' needs 'slot': primary or backup, the slot holding the compromised key",
        ));
    }
    let spkis = match &req.spki_sha256 {
        Some(s) if s.is_empty() || s.len() > MAX_COMPROMISED => {
            return Err(Problem::bad_request(format!(
                "'spki_sha256' must list 1 to {MAX_COMPROMISED} keys; {} given",
                s.len()
            )));
        }
        Some(s) => s.iter().map(|k| parse_spki(k)).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    if names.is_empty() && spkis.is_empty() {
        return Err(Problem::bad_request(
            "give 'names' (with an optional 'slot') or 'spki_sha256', or both",
        ));
    }
    if req.slot.is_some() && names.is_empty() {
        return Err(Problem::bad_request("'slot' applies to 'names' only"));
    }
    if names.len() + spkis.len() > MAX_COMPROMISED {
        return Err(Problem::bad_request(format!(
            "at most {MAX_COMPROMISED} keys per request ({} given): each is revoked and \
             re-issued; split the list",
            names.len() + spkis.len()
        )));
    }
    let targets: Vec<(String, Slot)> = match slot {
        Some(slot) => names.into_iter().map(|n| (n, slot)).collect(),
        None => Vec::new(),
    };
    let report = st
        .store
        .emergency()
        .bulk_compromise(&targets, &spkis, &req.reason, &who.name, st.clock.now())
        .await?;
    wake(&st);
    Ok((StatusCode::ACCEPTED, Json(report)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Rekey {
    ca: Option<String>,
    names: Option<Vec<String>>,
    spki_sha256: Option<String>,
    /// Every name.
    #[serde(default)]
    all: bool,
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

/// A re-key's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct RekeyOutcome {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Names whose two keys will be replaced.
    pub names: i64,
    /// The operation record (not for a dry run).
    pub operation_id: Option<String>,
    /// Time to re-key them all (two orders per name).
    pub estimate: ReprovisionEstimate,
}

#[utoipa::path(post, path = "/v1/rekeys", request_body = Rekey, responses((status = 202, description = "re-key queued: each name's standby first, then its active slot, every new certificate under a new key", body = RekeyOutcome), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn rekey(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<Rekey>,
) -> Result<Response, Problem> {
    require_reason(&req.reason)?;
    let scope = parse_scope(&st, req.ca, req.names, req.spki_sha256, req.all)?;
    let (names, operation_id) = st
        .store
        .emergency()
        .start_rekey(&scope, &req.reason, &who.name, req.dry_run, st.clock.now())
        .await?;
    let estimate = estimate(&st, names * 2, None).await?;
    if !req.dry_run {
        wake(&st);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RekeyOutcome {
            dry_run: req.dry_run,
            names,
            operation_id,
            estimate,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListOperations {
    /// At most this many (1–1000, default 50).
    limit: Option<u64>,
}

/// `GET /v1/operations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationList {
    /// Newest first.
    pub items: Vec<Operation>,
}

#[utoipa::path(get, path = "/v1/operations", params(ListOperations), responses((status = 200, description = "emergency operations, newest first", body = OperationList), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn list_operations(
    State(st): State<ApiState>,
    query: Result<Query<ListOperations>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let items = st
        .store
        .operations()
        .list(paging::limit(q.limit, 50)?)
        .await?;
    Ok(Json(OperationList { items }).into_response())
}

/// `GET /v1/operations/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    /// The record.
    pub operation: Operation,
    /// How far the work it queued has got.
    pub progress: OperationProgress,
    /// Per CA with open orders (as `progress.cas`), the time left.
    pub time_left: Vec<CaTimeLeftView>,
}

/// How long one CA still needs for an operation's open orders
/// (`policy::ca_time_left`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaTimeLeftView {
    /// The CA.
    pub ca: String,
    /// Seconds until its `retry_at` (e.g. the CA's `Retry-After` after
    /// `rateLimited`); 0 when nothing is held back.
    pub wait_seconds: i64,
    /// The wait plus its open orders at its pace (configured limits and
    /// measured issuance time, as in a swap's estimate): an upper bound;
    /// null when the CA is not configured or takes no orders.
    pub seconds_left: Option<i64>,
}

#[utoipa::path(get, path = "/v1/operations/{id}", params(("id" = String, Path, description = "the operation id")), responses((status = 200, description = "the operation and its progress", body = OperationView), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn show_operation(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Problem::bad_request(format!(
            "'{}' is not an operation id (up to 64 letters and digits)",
            id.chars().take(80).collect::<String>()
        )));
    }
    let (operation, progress) = st
        .store
        .operations()
        .operation(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("operation '{id}'")))?;
    let now = st.clock.now();
    let mut time_left = Vec::with_capacity(progress.cas.len());
    for c in &progress.cas {
        let pace = match st.ca_views.iter().find(|v| v.id == c.ca) {
            Some(v) => crate::policy::CaPace {
                id: v.id.clone(),
                orders_per_hour: v.orders_per_hour,
                concurrency: v.concurrency,
                mean_issue_seconds: st.store.pacing().mean_issue_seconds(&v.id).await?,
            },
            // A CA no longer configured: its orders wait for nobody.
            None => crate::policy::CaPace {
                id: c.ca.clone(),
                orders_per_hour: 0,
                concurrency: 0,
                mean_issue_seconds: None,
            },
        };
        let t = crate::policy::ca_time_left(c.open, c.retry_at, now, &pace);
        time_left.push(CaTimeLeftView {
            ca: c.ca.clone(),
            wait_seconds: t.wait_seconds,
            seconds_left: t.seconds_left,
        });
    }
    Ok(Json(OperationView {
        operation,
        progress,
        time_left,
    })
    .into_response())
}
