//! CA-level incidents and alerts: what the revocation checks
//! raised, for dashboards and for the operator who must decide on a
//! waiting CA-wide swap. Parses, authorizes (by the route table) and
//! delegates to the store.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::problem::ProblemDoc;
use super::{ApiState, Principal, Problem, paging};
use crate::store::{Alert, Incident};

fn parse_id(id: &str) -> Result<(), Problem> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Problem::bad_request(format!(
            "'{}' is not an incident id (up to 64 letters and digits)",
            id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// At most this many (1–1000, default 50).
    limit: Option<u64>,
    /// Alerts only: only those still open (default true).
    open: Option<bool>,
}

/// `GET /v1/incidents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentList {
    /// Newest first.
    pub items: Vec<Incident>,
}

/// `GET /v1/alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Most recently raised first.
    pub items: Vec<Alert>,
}

#[utoipa::path(get, path = "/v1/incidents", params(ListQuery), responses((status = 200, description = "CA-level incidents, newest first", body = IncidentList), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn list_incidents(
    State(st): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    if q.open.is_some() {
        return Err(Problem::bad_request(
            "'open' applies to alerts; incidents carry their state",
        ));
    }
    let items = st
        .store
        .incidents()
        .list(paging::limit(q.limit, 50)?)
        .await?;
    Ok(Json(IncidentList { items }).into_response())
}

#[utoipa::path(get, path = "/v1/incidents/{id}", params(("id" = String, Path, description = "the incident id")), responses((status = 200, description = "the incident, with its CA-wide swap's operation or waiting dry run", body = Incident), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn show_incident(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    parse_id(&id)?;
    let inc = st
        .store
        .incidents()
        .incident(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("incident '{id}'")))?;
    Ok(Json(inc).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseIncident {
    /// Why (audit log): what was done about it.
    reason: String,
}

#[utoipa::path(post, path = "/v1/incidents/{id}/close", params(("id" = String, Path, description = "the incident id")), request_body = CloseIncident, responses((status = 200, description = "closed; automatic reactions for the CA resume", body = Incident), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "no such open incident", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn close_incident(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<JsonBody<CloseIncident>, Problem>,
) -> Result<Response, Problem> {
    parse_id(&id)?;
    // The id in the path is checked before the body.
    let JsonBody(req) = body?;
    if req.reason.trim().is_empty() {
        return Err(Problem::bad_request(
            "'reason' must not be empty: say what was done, for the audit log",
        ));
    }
    let inc = st
        .store
        .incidents()
        .close_incident(&id, &who.name, &req.reason, st.clock.now())
        .await?
        .ok_or_else(|| Problem::not_found(format!("open incident '{id}'")))?;
    Ok(Json(inc).into_response())
}

#[utoipa::path(get, path = "/v1/alerts", params(ListQuery), responses((status = 200, description = "alerts, most recently raised first", body = AlertList), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn list_alerts(
    State(st): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let items = st
        .store
        .alerts()
        .list(q.open.unwrap_or(true), paging::limit(q.limit, 50)?)
        .await?;
    Ok(Json(AlertList { items }).into_response())
}
