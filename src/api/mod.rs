//! REST API v1, the front end: parses, authorizes, delegates to the store
//! and policy, and turns every error into `application/problem+json`.
//!
//! The router is built by [`app`] so tests drive it without a socket. Every
//! request passes the guards (client allowlist, timeout: `guard`) and the
//! bearer-token check against the route table (`auth`). Bodies arrive
//! through one extractor (`body::JsonBody`) that reads them under a hard
//! size limit, so a malformed or oversized body is a precise 4xx, never a
//! 5xx; list parameters go through `paging`. The name, token, event and CA
//! handlers live here; deployments, emergencies, incidents and `/metrics`
//! have their own files, `new_name` validates a new name, `views` shapes
//! records for clients, `openapi` only assembles the document. What hyper
//! refuses before the router (a URL or headers over its limits) is made a
//! problem document on the connection by `wire`.
//!
//! The API does not know the ACME client: what it shows of ACME requests is
//! handed in through [`ApiState::acme_requests`].

mod auth;
mod body;
pub mod console;
mod deploy;
mod drills;
mod emergency;
mod guard;
mod incidents;
mod install;
mod metrics;
mod new_name;
mod openapi;
mod paging;
mod preflight;
mod problem;
mod readiness;
pub mod tls;
mod views;
pub mod wire;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::domain::{
    AcmeRequestStats, ChallengeKind, Cidr, KeyType, ManagedNameId, NameState, Slot,
};
use crate::policy::CaChoice;
use crate::store::{AuditDetails, AuditEvent, NameFilter, NameRecord, Store, TokenRecord};

use body::JsonBody;
use new_name::{CreateName, Offer};
use problem::ProblemDoc;

pub use auth::{BOOTSTRAP_ADMIN, PUBLIC_ROUTES, Principal, ROUTES, required_role};
pub use openapi::ApiDoc;
pub use problem::Problem;
pub use views::{CaView, DelegationPolicy, NameView, SlotView, name_view};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Configured CAs, in preference order.
    pub cas: Arc<Vec<CaChoice>>,
    /// What `GET /v1/cas` shows of each configured CA (static part).
    pub ca_views: Arc<Vec<CaView>>,
    /// `policy.reprovision_same_ca_after_seconds`.
    pub same_ca_hold_off: i64,
    /// SHA-256 of the admin token.
    pub admin_token_sha256: [u8; 32],
    /// Key type when a request names none.
    pub default_key_type: KeyType,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest a request may take.
    pub request_timeout_seconds: u64,
    /// Client networks allowed (empty: all).
    pub allow_cidrs: Vec<Cidr>,
    /// Whether DNS-01 can be used (a DNS provider is configured).
    pub dns01_available: bool,
    /// Zones twincert controls, for the CNAME delegation hints.
    pub dns: DelegationPolicy,
    /// Opens sealed private keys for the key download (deployer+).
    pub sealer: Option<Arc<crate::keys::seal::Sealer>>,
    /// Wakes the local worker after a change that queued work (new name,
    /// compromise, delete with revocation) instead of waiting for its poll.
    pub wake_worker: Option<Arc<dyn Fn() + Send + Sync>>,
    /// `[drills] allow_simulation`: simulated CA events may be drilled.
    pub allow_drill_simulation: bool,
    /// Configured deployment destinations: (id, kind).
    pub destinations: Arc<Vec<(String, String)>>,
    /// This process's ACME requests by CA and answer status, for
    /// `/metrics`: the ACME clients record them, the API only reads them
    /// through this handle (a process that runs no ACME client has none).
    pub acme_requests: Arc<dyn Fn() -> Vec<AcmeRequestStats> + Send + Sync>,
    /// Runs a name's CAA, delegation and provider checks on demand (none: the
    /// on-demand check answers 409; stored reports are still shown).
    pub preflight: Option<Arc<crate::validation::preflight::Preflight>>,
    /// The ACME profiles each CA's directory offered at start (CA id →
    /// profiles; a CA whose directory could not be read is absent: its
    /// offer is not known and a name's override for it is not checked).
    pub acme_profiles_offered: Arc<std::collections::BTreeMap<String, Vec<String>>>,
}

/// SHA-256 of a token, the only form in which tokens are kept in memory.
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The API router.
pub fn app(state: ApiState) -> Router {
    let limit = state.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/names", post(create_name).get(list_names))
        .route("/v1/names/{name}", get(show_name).delete(delete_name))
        .route("/v1/names/{name}/certificates/{slot}", get(certificate))
        .route("/v1/names/{name}/swap", post(swap))
        .route(
            "/v1/names/{name}/deploy",
            get(deploy::show_deploy).put(deploy::set_deploy),
        )
        .route("/v1/names/{name}/deploy/check", post(deploy::request_check))
        .route(
            "/v1/names/{name}/deploy/{destination}/password",
            post(install::password),
        )
        .route(
            "/v1/names/{name}/deploy/{destination}/redeploy",
            post(deploy::redeploy),
        )
        .route("/v1/names/{name}/preflight", post(preflight::run))
        .route("/v1/names/{name}/certificates/{slot}/key", get(private_key))
        .route("/v1/events", get(events))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{token}", axum::routing::delete(delete_token))
        .route("/v1/swaps", post(emergency::mass_swap))
        .route("/v1/names/{name}/compromise", post(emergency::compromise))
        .route("/v1/compromises", post(emergency::bulk_compromise))
        .route("/v1/rekeys", post(emergency::rekey))
        .route("/v1/operations", get(emergency::list_operations))
        .route("/v1/operations/{id}", get(emergency::show_operation))
        .route("/v1/cas", get(list_cas))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/cas/{id}/distrust", post(emergency::distrust_ca))
        .route("/v1/cas/{id}/trust", post(emergency::trust_ca))
        .route("/v1/incidents", get(incidents::list_incidents))
        .route("/v1/incidents/{id}", get(incidents::show_incident))
        .route("/v1/incidents/{id}/close", post(incidents::close_incident))
        .route("/v1/alerts", get(incidents::list_alerts))
        .route("/v1/readiness", get(readiness::show))
        .route("/v1/drills", post(drills::create).get(drills::list))
        .route("/v1/drills/{id}", get(drills::show))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(openapi::document))
        // The token in the path authorizes (see `install`).
        .route("/install/{token}", get(install::download))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        // `JsonBody` reads bodies under this limit and reports an overflow
        // as a 413 problem.
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn(problem::only_problems))
        .with_state(state)
}

/// The API router with the operator console under `/ui/` (`console`),
/// which performs its reads and actions through the API router itself.
pub fn app_with_console(state: ApiState, settings: console::ConsoleSettings) -> Router {
    let api = app(state.clone());
    let ui = console::router(state, settings, api.clone());
    api.merge(ui)
}

/// The API port of a worker-only process (`serve --role worker`): the
/// probes, nothing else — no `/v1` API, so a worker pod can be kept off
/// every network path but the orchestrator's.
pub fn probes_app(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            Problem::not_found("this process runs as --role worker: only /healthz and /readyz")
        })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(middleware::from_fn(problem::only_problems))
        .with_state(state)
}

async fn readyz(State(st): State<ApiState>) -> Response {
    match st.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => Problem::unavailable(&e).into_response(),
    }
}

#[utoipa::path(post, path = "/v1/names", request_body = CreateName, responses((status = 201, description = "created", body = NameView), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "duplicate", body = ProblemDoc, content_type = "application/problem+json"), (status = 413, description = "body too large", body = ProblemDoc, content_type = "application/problem+json"), (status = 415, description = "not JSON", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "unacceptable CA choice", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn create_name(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<CreateName>,
) -> Result<Response, Problem> {
    let offer = Offer {
        dns01_available: st.dns01_available,
        dns_providers: &st.dns.provider_ids,
        default_key_type: st.default_key_type,
    };
    let request = new_name::check(req, &offer)?;
    // Distrust is an operator decision stored in the store: apply it now.
    let distrusted = st.store.cas().distrusted_cas().await?;
    let cas = crate::policy::with_distrusted(&st.cas, &distrusted);
    let persist_cas: Vec<String> = st
        .ca_views
        .iter()
        .filter(|v| v.dns_persist_01)
        .map(|v| v.id.clone())
        .collect();
    let new = request.choose_cas(&cas, &persist_cas)?;
    new_name::check_profiles(&new, &st.acme_profiles_offered)?;
    let now = st.clock.now();
    st.store.names().create_name(&new, &who.name, now).await?;
    if let Some(wake) = &st.wake_worker {
        wake();
    }
    let rec = st
        .store
        .names()
        .name(new.id.as_str())
        .await?
        .ok_or_else(|| Problem::internal(&"name vanished after creation"))?;
    let mut rsp = (StatusCode::CREATED, Json(name_view(&rec, now, &st.dns))).into_response();
    if let Ok(v) = format!("/v1/names/{}", new.id).parse() {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(rsp)
}

/// A page of names.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NamePage {
    /// The names.
    pub items: Vec<NameView>,
    /// Opaque cursor of the next page, `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u64>,
    cursor: Option<String>,
    ca: Option<String>,
    state: Option<String>,
}

#[utoipa::path(get, path = "/v1/names", params(ListQuery), responses((status = 200, description = "a page of names", body = NamePage), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn list_names(
    State(st): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = paging::limit(q.limit, 100)?;
    let state: Option<NameState> = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
                Problem::bad_request(format!(
                    "unknown state '{s}': expected provisioning, ready, degraded or waiting"
                ))
            })?,
        ),
    };
    if let Some(ca) = &q.ca
        && !st.cas.iter().any(|c| &c.id == ca)
    {
        return Err(Problem::bad_request(format!("unknown CA '{ca}'")));
    }
    let after = q.cursor.as_deref().map(paging::cursor_decode).transpose()?;
    let now = st.clock.now();
    // Both filters are applied by the store, so a page is full unless the
    // list has ended; one name more than the page says whether it has.
    let filter = NameFilter {
        ca: q.ca.as_deref(),
        state: state.map(|s| (s, now)),
    };
    let mut recs = st
        .store
        .names()
        .list_names(limit + 1, after.as_deref(), filter)
        .await?;
    let more = recs.len() as u64 > limit;
    recs.truncate(limit as usize);
    let next_cursor = if more {
        recs.last().map(|r| paging::cursor_encode(&r.id))
    } else {
        None
    };
    let items: Vec<NameView> = recs.iter().map(|r| name_view(r, now, &st.dns)).collect();
    Ok(Json(serde_json::json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

fn parse_name(raw: &str) -> Result<ManagedNameId, Problem> {
    ManagedNameId::parse(raw).map_err(|e| Problem::invalid_name(e.to_string()))
}

/// Parses a name from the path and loads it, or says precisely why not.
async fn load_name(st: &ApiState, raw: &str) -> Result<NameRecord, Problem> {
    let id = parse_name(raw)?;
    st.store
        .names()
        .name(id.as_str())
        .await?
        .ok_or_else(|| Problem::not_found(format!("name '{}' not found", id.as_str())))
}

/// The slot a path names (`primary`, `backup` or `active`) and its current
/// certificate, or the precise problem.
fn current_certificate(
    rec: &NameRecord,
    slot: &str,
) -> Result<(Slot, crate::store::CertRecord), Problem> {
    let slot = match slot {
        "active" => rec.active,
        other => other.parse::<Slot>().map_err(|_| {
            Problem::bad_request(format!(
                "unknown slot '{other}': expected primary, backup or active"
            ))
        })?,
    };
    let cert = rec.slot(slot).and_then(|s| s.cert.clone()).ok_or_else(|| {
        Problem::not_found(format!(
            "the {slot} slot of '{}' has no certificate yet",
            rec.id
        ))
    })?;
    Ok((slot, cert))
}

#[utoipa::path(get, path = "/v1/names/{name}", params(("name" = String, Path, description = "the managed name")), responses((status = 200, description = "the name", body = NameView), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn show_name(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let mut view = name_view(&rec, st.clock.now(), &st.dns);
    view.preflight = st.store.preflights().latest(&rec.id).await?;
    if rec.challenge == ChallengeKind::Dns01Manual {
        for slot in &rec.slots {
            let Some(order) = &slot.order else { continue };
            for r in st.store.challenges().dns_records_of(&order.id).await? {
                view.dns01_manual_records.push(views::ManualRecord {
                    slot: slot.slot,
                    name: r.fqdn,
                    r#type: "TXT",
                    value: r.value,
                });
            }
        }
    }
    if rec.challenge == ChallengeKind::DnsPersist01 {
        view.dns_persist_records = persist_records(&st, &rec).await?;
    }
    Ok(Json(view).into_response())
}

/// The dns-persist-01 records of a name, per CA of its slots: the issuer
/// domain name the CA's challenge named (stored by the issuer), else the
/// CA's configured CAA identity; the account URL of twincert's account
/// there; `policy=wildcard` where a wildcard is covered; the CA's
/// `persistUntil` (`policy::dns_persist`).
async fn persist_records(
    st: &ApiState,
    rec: &crate::store::NameRecord,
) -> Result<Vec<views::PersistRecordView>, Problem> {
    let issuers = st.store.cas().persist_issuers().await?;
    let accounts = st.store.cas().account_urls().await?;
    let domains: Vec<&str> = rec.domains.iter().map(String::as_str).collect();
    let mut cas: Vec<&str> = Vec::new();
    for slot in &rec.slots {
        if !cas.contains(&slot.ca_id.as_str()) {
            cas.push(slot.ca_id.as_str());
        }
    }
    let mut out = Vec::new();
    for ca in cas {
        let view = st.ca_views.iter().find(|v| v.id == ca);
        let configured = view.map(|v| v.caa_identities.clone()).unwrap_or_default();
        let offered: Vec<String> = issuers.get(ca).cloned().into_iter().collect();
        let issuer = crate::policy::dns_persist::choose_issuer(&offered, &configured);
        let until = view.and_then(|v| v.dns_persist_until);
        let (issuer, account) = match (issuer, accounts.get(ca)) {
            (Some(i), Some(a)) => (i, a.clone()),
            (issuer, account) => {
                let why = if account.is_none() {
                    "twincert has no ACME account at this CA yet (it is made with the first order)"
                } else {
                    let _ = issuer;
                    "the CA's issuer domain name is not known yet: set caa_identities in its [[cas]] entry"
                };
                for d in &domains {
                    let owner = crate::policy::dns_persist::owner(d);
                    if out
                        .iter()
                        .any(|r: &views::PersistRecordView| r.ca == ca && r.name == owner)
                    {
                        continue;
                    }
                    out.push(views::PersistRecordView {
                        ca: ca.to_string(),
                        name: owner,
                        r#type: "TXT",
                        value: None,
                        pending: Some(why.to_string()),
                    });
                }
                continue;
            }
        };
        for r in crate::policy::dns_persist::records(&domains, &issuer, &account, until) {
            out.push(views::PersistRecordView {
                ca: ca.to_string(),
                name: r.owner,
                r#type: "TXT",
                value: Some(r.value),
                pending: None,
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    revoke: Option<bool>,
}

#[utoipa::path(delete, path = "/v1/names/{name}", params(("name" = String, Path, description = "the managed name"), DeleteQuery), responses((status = 204, description = "deleted"), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn delete_name(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let id = parse_name(&name)?;
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let revoke = q.revoke.unwrap_or(false);
    st.store
        .names()
        .delete_name(id.as_str(), revoke, &who.name, st.clock.now())
        .await?;
    if revoke && let Some(wake) = &st.wake_worker {
        wake();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/v1/names/{name}/certificates/{slot}", params(("name" = String, Path, description = "the managed name"), ("slot" = String, Path, description = "primary, backup or active")), responses((status = 200, description = "PEM chain (Accept: application/pem-certificate-chain) or JSON facts", body = serde_json::Value), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn certificate(
    State(st): State<ApiState>,
    Path((name, slot)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let (slot, cert) = current_certificate(&rec, &slot)?;
    let wants_pem = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/pem-certificate-chain"));
    if wants_pem {
        let pem = st
            .store
            .names()
            .chain_pem(&cert.id)
            .await?
            .ok_or_else(|| Problem::not_found("certificate vanished"))?;
        return Ok((
            [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
            pem,
        )
            .into_response());
    }
    let mut v = serde_json::to_value(&cert).map_err(|e| Problem::internal(&e))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("slot".into(), serde_json::json!(slot));
        o.insert("active".into(), serde_json::json!(slot == rec.active));
        o.insert(
            "not_before".into(),
            serde_json::json!(crate::clock::rfc3339(cert.not_before)),
        );
        o.insert(
            "not_after".into(),
            serde_json::json!(crate::clock::rfc3339(cert.not_after)),
        );
        o.insert(
            "renew_after".into(),
            serde_json::json!(crate::clock::rfc3339(cert.renew_after)),
        );
        o.remove("created_at");
    }
    Ok(Json(v).into_response())
}

/// The answer to a swap.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SwapResult {
    /// The name.
    pub name: String,
    /// The now active slot.
    pub active: Slot,
    /// The operation record; the abandoned slot is re-provisioned under it.
    pub operation_id: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SwapRequest {
    reason: String,
}

#[utoipa::path(post, path = "/v1/names/{name}/swap", params(("name" = String, Path, description = "the managed name")), request_body = SwapRequest, responses((status = 200, description = "the new active slot", body = SwapResult), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "standby not usable", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn swap(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<JsonBody<SwapRequest>, Problem>,
) -> Result<Response, Problem> {
    let id = parse_name(&name)?;
    // The name in the path is checked before the body.
    let JsonBody(req) = body?;
    if req.reason.trim().is_empty() {
        return Err(Problem::bad_request(
            "'reason' must not be empty: say why, for the audit log",
        ));
    }
    let now = st.clock.now();
    let (active, operation_id) = st
        .store
        .emergency()
        .swap(id.as_str(), &who.name, &req.reason, now)
        .await?;
    // The abandoned slot is re-provisioned under a new key.
    if let Some(wake) = &st.wake_worker {
        wake();
    }
    Ok(Json(serde_json::json!({
        "name": id.as_str(),
        "active": active,
        "operation_id": operation_id,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/v1/names/{name}/certificates/{slot}/key", params(("name" = String, Path, description = "the managed name"), ("slot" = String, Path, description = "primary, backup or active")), responses((status = 200, description = "PKCS#8 PEM private key (audited)", body = String, content_type = "application/pkcs8"), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn private_key(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path((name, slot)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let (slot, cert) = current_certificate(&rec, &slot)?;
    let sealer = st
        .sealer
        .as_ref()
        .ok_or_else(|| Problem::internal(&"key download without a sealer"))?;
    let (key_type, sealed) = st
        .store
        .keys()
        .private_key(&cert.private_key_id)
        .await?
        .ok_or_else(|| Problem::not_found("the certificate's key is gone"))?;
    let key = crate::keys::CertKey::unseal(sealer, key_type, &sealed)
        .map_err(|e| Problem::internal(&e))?;
    // Audited before the key leaves: no record, no key.
    st.store
        .audit()
        .record(&AuditEvent {
            at: st.clock.now(),
            actor: who.name.clone(),
            action: "key.download".into(),
            target: rec.id.clone(),
            reason: None,
            result: "ok".into(),
            details: Some(
                AuditDetails::KeyRead {
                    slot,
                    spki_sha256: cert.spki_sha256.clone(),
                }
                .json(),
            ),
        })
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/pkcs8")],
        key.pkcs8_pem(),
    )
        .into_response())
}

/// A page of audit events.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The events, newest first.
    pub items: Vec<AuditEvent>,
    /// Opaque cursor of the next page, `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<u64>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", params(EventsQuery), responses((status = 200, description = "audit events, newest first", body = EventPage), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn events(
    State(st): State<ApiState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = paging::limit(q.limit, 100)?;
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            paging::cursor_decode(c)?
                .parse::<i64>()
                .map_err(|_| Problem::bad_request(format!("invalid cursor '{c}'")))?,
        ),
    };
    let page = st.store.audit().page(limit, before).await?;
    let next_cursor = if page.len() as u64 == limit {
        page.last()
            .map(|(id, _)| paging::cursor_encode(&id.to_string()))
    } else {
        None
    };
    let items: Vec<_> = page.into_iter().map(|(_, e)| e).collect();
    Ok(Json(serde_json::json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

/// All tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// The tokens (never their secrets).
    pub items: Vec<TokenRecord>,
}

/// A token just created: the record plus its secret, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// Row id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: crate::domain::Role,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// The bearer secret.
    pub token: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    role: String,
    expires_in_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = CreateToken, responses((status = 201, description = "the token; its secret is shown only here", body = CreatedToken), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "duplicate", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn create_token(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<CreateToken>,
) -> Result<Response, Problem> {
    let name = ManagedNameId::parse(&req.name)
        .map_err(|e| Problem::bad_request(format!("token name: {e}")))?;
    if name.as_str() == BOOTSTRAP_ADMIN {
        return Err(Problem::bad_request(format!(
            "the token name '{BOOTSTRAP_ADMIN}' is reserved"
        )));
    }
    let role: crate::domain::Role = req.role.parse().map_err(Problem::bad_request)?;
    let now = st.clock.now();
    let expires_at = match req.expires_in_seconds {
        None => None,
        Some(0) => return Err(Problem::bad_request("expires_in_seconds must be positive")),
        Some(s) => Some(now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
    };
    let secret = auth::new_token_secret()?;
    let rec = st
        .store
        .tokens()
        .create_token(
            &crate::store::NewToken {
                name: name.as_str().to_string(),
                role,
                secret_sha256: crate::keys::hex(&token_digest(&secret)),
                expires_at,
            },
            &who.name,
            now,
        )
        .await?;
    let mut v = serde_json::to_value(&rec).map_err(|e| Problem::internal(&e))?;
    if let Some(o) = v.as_object_mut() {
        // Shown once; only its hash is stored.
        o.insert("token".into(), serde_json::json!(secret));
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, description = "tokens, never their secrets", body = TokenList), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn list_tokens(State(st): State<ApiState>) -> Result<Response, Problem> {
    let items = st.store.tokens().list().await?;
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

#[utoipa::path(delete, path = "/v1/tokens/{token}", params(("token" = String, Path, description = "the token name")), responses((status = 204, description = "deleted"), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn delete_token(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    st.store
        .tokens()
        .delete_token(&name, &who.name, st.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// All configured CAs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CaList {
    /// The CAs.
    pub items: Vec<CaView>,
}

#[utoipa::path(get, path = "/v1/cas", responses((status = 200, description = "configured CAs", body = CaList), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn list_cas(State(st): State<ApiState>) -> Result<Response, Problem> {
    let distrusted = st.store.cas().distrusted_cas().await?;
    let usage = st.store.cas().ca_usage().await?;
    let items: Vec<CaView> = st
        .ca_views
        .iter()
        .map(|c| {
            let (active, slots) = usage
                .iter()
                .find(|(id, _, _)| *id == c.id)
                .map(|(_, a, s)| (*a, *s))
                .unwrap_or((0, 0));
            CaView {
                distrusted: distrusted.contains(&c.id),
                active_names: active,
                slots,
                ..c.clone()
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}
