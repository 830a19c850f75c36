//! Drills (issue 22): `POST /v1/drills` records a drill for a worker to
//! run (state `running`), `GET /v1/drills` lists them, `GET
//! /v1/drills/{id}` shows one with its report so far. A drill can take
//! minutes (a live one waits for deployments), so no request waits for
//! it; the API never runs one (it imports neither `worker` nor `ca`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::problem::ProblemDoc;
use super::{ApiState, Principal, Problem, paging, parse_name};
use crate::domain::{DrillMode, DrillRequest, DrillSample};
use crate::policy::drill::MAX_SAMPLE;
use crate::store::{Drill, new_id};

/// Longest a live drill may wait for its sample to be served.
const MAX_VERIFY_TIMEOUT: u64 = 3_600;
/// Its default.
const DEFAULT_VERIFY_TIMEOUT: u64 = 300;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDrill {
    /// The CA to drill losing: names active on it are (or would be)
    /// swapped away from it.
    ca: String,
    /// `dry` (default: changes nothing), `live`, or `simulate` (only with
    /// `[drills] allow_simulation`).
    #[serde(default)]
    mode: Option<String>,
    /// Live: swap these names (those active on the CA; never others).
    #[serde(default)]
    names: Option<Vec<String>>,
    /// Live: swap this percentage (1–100) of the names active on the CA,
    /// rounded down.
    #[serde(default)]
    percent: Option<u64>,
    /// Live: keep the sample on its standby instead of swapping back.
    #[serde(default)]
    keep: Option<bool>,
    /// Live: seconds to wait for the sample to be served; simulate: for
    /// every name to leave the CA (default 300).
    #[serde(default)]
    verify_timeout_seconds: Option<u64>,
    /// Why (recorded in the audit log).
    reason: String,
}

/// `GET /v1/drills`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrillList {
    /// Newest first.
    pub items: Vec<Drill>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListDrills {
    /// At most this many (1–1000, default 50).
    limit: Option<u64>,
}

fn verify_timeout(raw: Option<u64>) -> Result<u64, Problem> {
    let timeout = raw.unwrap_or(DEFAULT_VERIFY_TIMEOUT);
    if !(1..=MAX_VERIFY_TIMEOUT).contains(&timeout) {
        return Err(Problem::bad_field(
            "verify_timeout_seconds",
            format!("must be 1 to {MAX_VERIFY_TIMEOUT}; got {timeout}"),
        ));
    }
    Ok(timeout)
}

/// The request, checked: every field that does not fit the mode is
/// refused, naming it, rather than ignored.
fn validate(st: &ApiState, req: NewDrill) -> Result<(String, String, DrillRequest), Problem> {
    if req.reason.trim().is_empty() {
        return Err(Problem::bad_field(
            "reason",
            "must not be empty: say why, for the audit log",
        ));
    }
    if !st.cas.iter().any(|c| c.id == req.ca) {
        let known: Vec<&str> = st.cas.iter().map(|c| c.id.as_str()).collect();
        return Err(Problem::bad_field(
            "ca",
            format!(
                "unknown CA '{}'; configured: {}",
                req.ca.chars().take(80).collect::<String>(),
                known.join(", ")
            ),
        ));
    }
    let mode = match req.mode.as_deref().unwrap_or("dry") {
        "dry" => DrillMode::Dry,
        "live" => DrillMode::Live,
        "simulate" if st.allow_drill_simulation => DrillMode::Simulate,
        "simulate" => {
            return Err(Problem::conflict(
                "simulation-disabled",
                "mode: a simulated CA event makes the revocation checks see the CA's \
                 certificates revoked and the automatic reactions run for real; it is for \
                 test and training environments only and off here (set [drills] \
                 allow_simulation = true to allow it)",
            )
            .at_field("mode"));
        }
        other => {
            return Err(Problem::bad_field(
                "mode",
                format!(
                    "'{}' is not a drill mode; use 'dry' (changes nothing), 'live' \
                     (swaps a sample and back) or, where allowed, 'simulate'",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    if mode != DrillMode::Live {
        for (field, given) in [
            ("names", req.names.is_some()),
            ("percent", req.percent.is_some()),
            ("keep", req.keep.is_some()),
            (
                "verify_timeout_seconds",
                mode == DrillMode::Dry && req.verify_timeout_seconds.is_some(),
            ),
        ] {
            if given {
                return Err(Problem::bad_field(
                    field,
                    "applies to live drills only; add \"mode\": \"live\" or leave it out",
                ));
            }
        }
        let timeout = match mode {
            DrillMode::Simulate => verify_timeout(req.verify_timeout_seconds)?,
            _ => 0,
        };
        return Ok((
            req.ca,
            req.reason,
            DrillRequest {
                mode,
                sample: None,
                keep: false,
                verify_timeout_seconds: timeout,
            },
        ));
    }
    let sample = match (req.names, req.percent) {
        (Some(names), None) => {
            if names.is_empty() || names.len() > MAX_SAMPLE {
                return Err(Problem::bad_field(
                    "names",
                    format!("must list 1 to {MAX_SAMPLE} names; {} given", names.len()),
                ));
            }
            let mut ids = Vec::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                let id = parse_name(n).map_err(|p| p.at_field(format!("names[{i}]")))?;
                ids.push(id.as_str().to_string());
            }
            DrillSample::Names(ids)
        }
        (None, Some(p)) => {
            if !(1..=100).contains(&p) {
                return Err(Problem::bad_field(
                    "percent",
                    format!("must be 1 to 100; got {p}"),
                ));
            }
            DrillSample::Percent(p as u8)
        }
        _ => {
            return Err(Problem::bad_request(
                "a live drill needs exactly one sample: 'names' (a list) or 'percent' (1-100)",
            )
            .at_field("names"));
        }
    };
    let timeout = verify_timeout(req.verify_timeout_seconds)?;
    Ok((
        req.ca,
        req.reason,
        DrillRequest {
            mode,
            sample: Some(sample),
            keep: req.keep.unwrap_or(false),
            verify_timeout_seconds: timeout,
        },
    ))
}

#[utoipa::path(post, path = "/v1/drills", request_body = NewDrill, responses((status = 202, description = "recorded (state running); a worker runs it — follow GET /v1/drills/{id}", body = Drill), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "another drill of the CA is running, or (live, simulate) the CA has an open incident, or simulation is not allowed here", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn create(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<NewDrill>,
) -> Result<Response, Problem> {
    let (ca, reason, request) = validate(&st, req)?;
    let drill = Drill {
        id: new_id(),
        ca,
        mode: request.mode,
        state: "running".into(),
        actor: who.name.clone(),
        reason,
        request,
        report: None,
        created_at: st.clock.now(),
        started_at: None,
        finished_at: None,
    };
    st.store.drills().request(&drill).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/drills/{}", drill.id))],
        Json(drill),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/drills", params(ListDrills), responses((status = 200, description = "drills, newest first, with their reports", body = DrillList), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn list(
    State(st): State<ApiState>,
    query: Result<Query<ListDrills>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let items = st.store.drills().list(paging::limit(q.limit, 50)?).await?;
    Ok(Json(DrillList { items }).into_response())
}

#[utoipa::path(get, path = "/v1/drills/{id}", params(("id" = String, Path, description = "the drill id")), responses((status = 200, description = "the drill: its state and its report (the timeline so far while running)", body = Drill), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn show(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Problem::bad_request(format!(
            "'{}' is not a drill id (up to 64 letters and digits)",
            id.chars().take(80).collect::<String>()
        )));
    }
    let d = st
        .store
        .drills()
        .drill(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("drill '{id}'")))?;
    Ok(Json(d).into_response())
}
