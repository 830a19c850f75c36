//! Where a name's certificate is deployed and which TLS endpoints should
//! serve it: parses, authorizes (by the route table) and
//! delegates to the store; the worker does the writing and checking.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::problem::ProblemDoc;
use super::{ApiState, Principal, Problem, load_name};
use crate::domain::{DnsName, check_mail_address};
use crate::store::{AuditEvent, DeploymentView, EndpointSpec, EndpointView};

/// At most this many destinations and endpoints per name.
const MAX_DESTINATIONS: usize = 16;
const MAX_ENDPOINTS: usize = 64;

/// `PUT /v1/names/{name}/deploy`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeploySettings {
    /// Ids of destinations in the configuration (`[[destinations]]`).
    #[serde(default)]
    destinations: Vec<String>,
    /// TLS endpoints that should serve the active certificate.
    #[serde(default)]
    endpoints: Vec<EndpointSpec>,
}

/// A name's deployment: destinations with their state, endpoints with
/// their last check.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployView {
    /// The managed name.
    pub name: String,
    /// One per destination.
    pub destinations: Vec<DestinationState>,
    /// One per endpoint.
    pub endpoints: Vec<EndpointView>,
}

/// A destination of a name.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationState {
    /// `files`, `webhook`, `kubernetes-secret` (or `unconfigured`).
    pub kind: String,
    /// Its state.
    #[serde(flatten)]
    pub deployment: DeploymentView,
}

/// `POST /v1/names/{name}/deploy/check`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckRequested {
    /// Endpoints that will be checked within seconds.
    pub endpoints: u64,
}

fn validate(st: &ApiState, s: &DeploySettings) -> Result<(), Problem> {
    if s.destinations.len() > MAX_DESTINATIONS || s.endpoints.len() > MAX_ENDPOINTS {
        return Err(Problem::bad_request(format!(
            "at most {MAX_DESTINATIONS} destinations and {MAX_ENDPOINTS} endpoints per name"
        )));
    }
    for (i, d) in s.destinations.iter().enumerate() {
        if s.destinations[..i].contains(d) {
            return Err(Problem::bad_request(format!(
                "destination '{d}' listed twice"
            )));
        }
        if !st.destinations.iter().any(|(id, _)| id == d) {
            let known: Vec<&str> = st.destinations.iter().map(|(id, _)| id.as_str()).collect();
            return Err(Problem::bad_request(format!(
                "unknown destination '{}'; configured: [{}]",
                d.chars().take(80).collect::<String>(),
                known.join(", ")
            )));
        }
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        if e.host.parse::<IpAddr>().is_err() {
            DnsName::parse(&e.host).map_err(|err| Problem::bad_field(format!("{at}.host"), err))?;
        }
        if e.port == 0 {
            return Err(Problem::bad_field(format!("{at}.port"), "must be 1-65535"));
        }
        if let Some(sni) = &e.sni {
            DnsName::parse(sni).map_err(|err| Problem::bad_field(format!("{at}.sni"), err))?;
        }
        if let Some(ip) = &e.ip {
            ip.parse::<IpAddr>().map_err(|_| {
                Problem::bad_field(
                    format!("{at}.ip"),
                    format!(
                        "'{}' is not an IP address",
                        ip.chars().take(80).collect::<String>()
                    ),
                )
            })?;
        }
        if let Some(c) = &e.admin_contact {
            // One plain address, as the mailer will parse it.
            let ok = c.len() <= 254 && check_mail_address(c).is_ok();
            if !ok {
                return Err(Problem::bad_field(
                    format!("{at}.admin_contact"),
                    "not an e-mail address",
                ));
            }
        }
        if s.endpoints[..i]
            .iter()
            .any(|o| o.host == e.host && o.port == e.port && o.sni == e.sni && o.ip == e.ip)
        {
            return Err(Problem::bad_field(at, "listed twice"));
        }
    }
    Ok(())
}

async fn view(st: &ApiState, name: &str) -> Result<DeployView, Problem> {
    let (deployments, endpoints) = st.store.deployments().deploy_targets(name).await?;
    let destinations = deployments
        .into_iter()
        .map(|d| DestinationState {
            kind: st
                .destinations
                .iter()
                .find(|(id, _)| *id == d.destination)
                .map_or_else(|| "unconfigured".into(), |(_, k)| k.clone()),
            deployment: d,
        })
        .collect();
    Ok(DeployView {
        name: name.to_string(),
        destinations,
        endpoints,
    })
}

#[utoipa::path(get, path = "/v1/names/{name}/deploy", params(("name" = String, Path, description = "the managed name")), responses((status = 200, description = "destinations and endpoints with their state", body = DeployView), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn show_deploy(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    Ok(Json(view(&st, &rec.id).await?).into_response())
}

#[utoipa::path(put, path = "/v1/names/{name}/deploy", params(("name" = String, Path, description = "the managed name")), request_body = DeploySettings, responses((status = 200, description = "set; the active certificate is deployed and the endpoints checked within seconds", body = DeployView), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"), (status = 413, description = "body too large", body = ProblemDoc, content_type = "application/problem+json"), (status = 415, description = "not JSON", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn set_deploy(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<JsonBody<DeploySettings>, Problem>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    // The name is looked up before the body is judged: an unknown name is a
    // 404 whatever was sent.
    let JsonBody(req) = body?;
    validate(&st, &req)?;
    let audit = AuditEvent {
        at: st.clock.now(),
        actor: who.name.clone(),
        action: "name.deploy".into(),
        target: rec.id.clone(),
        reason: None,
        result: "ok".into(),
        details: Some(
            serde_json::json!({
                "destinations": req.destinations,
                "endpoints": req.endpoints.len(),
            })
            .to_string(),
        ),
    };
    st.store
        .deployments()
        .set_deploy_targets(&rec.id, &req.destinations, &req.endpoints, &audit)
        .await?;
    Ok(Json(view(&st, &rec.id).await?).into_response())
}

#[utoipa::path(post, path = "/v1/names/{name}/deploy/check", params(("name" = String, Path, description = "the managed name")), responses((status = 202, description = "the endpoints are checked within seconds", body = CheckRequested), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn request_check(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let endpoints = st
        .store
        .deployments()
        .request_checks(&rec.id, st.clock.now())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(CheckRequested { endpoints })).into_response())
}

#[utoipa::path(post, path = "/v1/names/{name}/deploy/{destination}/redeploy", params(("name" = String, Path, description = "the managed name"), ("destination" = String, Path, description = "one of the name's destinations")), responses((status = 202, description = "the active certificate is written there again within seconds (a manual destination: a new install request that supersedes the last)", body = DeployView), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "no such name, or the name does not deploy there", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn redeploy(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path((name, destination)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let audit = AuditEvent {
        at: st.clock.now(),
        actor: who.name.clone(),
        action: "name.redeploy".into(),
        target: rec.id.clone(),
        reason: None,
        result: "ok".into(),
        details: Some(serde_json::json!({ "destination": destination }).to_string()),
    };
    if !st
        .store
        .deployments()
        .redeploy(&rec.id, &destination, &audit)
        .await?
    {
        return Err(Problem::not_found(format!(
            "{} does not deploy to '{}'; its destinations are set with PUT /v1/names/{}/deploy",
            rec.id,
            destination.chars().take(80).collect::<String>(),
            rec.id
        )));
    }
    Ok((StatusCode::ACCEPTED, Json(view(&st, &rec.id).await?)).into_response())
}
