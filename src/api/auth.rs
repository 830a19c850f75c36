//! Who is calling and what they may do.
//!
//! A bearer token is either the bootstrap admin token (from the environment
//! or a file, compared in constant time) or a token created through
//! `/v1/tokens`, found by the SHA-256 of its secret (the store never holds a
//! secret). Every route has an explicit minimum [`Role`] in
//! [`required_role`]; a route without a decision is refused (fail closed),
//! and a test enumerates the routes against this table.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiState, Problem, token_digest};
use crate::domain::Role;
use crate::keys::hex;

/// The authenticated caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token name: the actor in audit events.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The principal of a console session, attached by the console to the
/// `/v1` request it performs for a page or form, so the request passes this
/// same route table and audit. Only code of this crate can attach it.
#[derive(Debug, Clone)]
pub(crate) struct ConsolePrincipal(pub(crate) Principal);

/// The name audit events use for the bootstrap admin token.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

/// Every `/v1` route with its minimum role: the one access table. The
/// OpenAPI document and the router are tested against it, so a route
/// cannot exist without a decision.
pub const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/v1/names", Role::Viewer),
    ("POST", "/v1/names", Role::Operator),
    ("GET", "/v1/names/{name}", Role::Viewer),
    ("DELETE", "/v1/names/{name}", Role::Operator),
    ("GET", "/v1/names/{name}/certificates/{slot}", Role::Viewer),
    (
        "GET",
        "/v1/names/{name}/certificates/{slot}/key",
        Role::Deployer,
    ),
    ("POST", "/v1/names/{name}/swap", Role::Operator),
    ("GET", "/v1/names/{name}/deploy", Role::Viewer),
    ("PUT", "/v1/names/{name}/deploy", Role::Deployer),
    ("POST", "/v1/names/{name}/deploy/check", Role::Deployer),
    (
        "POST",
        "/v1/names/{name}/deploy/{destination}/redeploy",
        Role::Deployer,
    ),
    (
        "POST",
        "/v1/names/{name}/deploy/{destination}/password",
        Role::Operator,
    ),
    ("POST", "/v1/names/{name}/preflight", Role::Operator),
    ("GET", "/v1/events", Role::Viewer),
    ("GET", "/v1/tokens", Role::Admin),
    ("POST", "/v1/tokens", Role::Admin),
    ("DELETE", "/v1/tokens/{token}", Role::Admin),
    ("POST", "/v1/swaps", Role::Operator),
    ("POST", "/v1/names/{name}/compromise", Role::Operator),
    ("GET", "/v1/cas", Role::Viewer),
    ("GET", "/metrics", Role::Viewer),
    ("POST", "/v1/cas/{id}/distrust", Role::Admin),
    ("POST", "/v1/cas/{id}/trust", Role::Admin),
    ("POST", "/v1/compromises", Role::Operator),
    ("POST", "/v1/rekeys", Role::Operator),
    ("GET", "/v1/operations", Role::Viewer),
    ("GET", "/v1/operations/{id}", Role::Viewer),
    ("GET", "/v1/incidents", Role::Viewer),
    ("GET", "/v1/incidents/{id}", Role::Viewer),
    ("POST", "/v1/incidents/{id}/close", Role::Operator),
    ("GET", "/v1/alerts", Role::Viewer),
    ("GET", "/v1/readiness", Role::Viewer),
    ("POST", "/v1/drills", Role::Operator),
    ("GET", "/v1/drills", Role::Viewer),
    ("GET", "/v1/drills/{id}", Role::Viewer),
];

/// Routes outside the bearer-token table: their own secret in the path is
/// the authorization (an install request's download link). The OpenAPI
/// document lists them beside [`ROUTES`].
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[("GET", "/install/{token}")];

/// The minimum role for a route (method + path template), or `None` when
/// the route has no decision (refused). HEAD is treated as GET.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let m = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(rm, rp, _)| *rm == m && *rp == path)
        .map(|(_, _, role)| *role)
}

/// Middleware on every `/v1` route: authenticate, then authorize.
pub async fn authorize(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let header_value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_string).unwrap_or_default());
    // A console request carries its session's principal (an extension:
    // set only by the console in this process, never from the wire).
    let from_console = req
        .extensions()
        .get::<ConsolePrincipal>()
        .map(|c| c.0.clone());
    let principal = match from_console {
        Some(p) => p,
        None => match authenticate(&st, header_value).await {
            Ok(p) => p,
            Err(p) => return p.into_response(),
        },
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let Some(needed) = required_role(req.method(), &path) else {
        return Problem::forbidden(format!(
            "no access rule for {} {path}; refused",
            req.method()
        ))
        .into_response();
    };
    if principal.role < needed {
        if let Some(action) = audited_action(req.method(), &path) {
            let event = crate::store::AuditEvent {
                at: st.clock.now(),
                actor: principal.name.clone(),
                action: action.into(),
                target: req.uri().path().to_string(),
                reason: None,
                result: "rejected: 403".into(),
                details: None,
            };
            if let Err(e) = st.store.audit().record(&event).await {
                tracing::warn!(error = %e, "could not audit a refused request");
            }
        }
        return Problem::forbidden(format!(
            "token '{}' has role {}; {} {path} needs {} or higher",
            principal.name,
            principal.role.as_str(),
            req.method(),
            needed.as_str()
        ))
        .into_response();
    }
    let method = req.method().clone();
    let concrete = req.uri().path().to_string();
    req.extensions_mut().insert(principal.clone());
    let rsp = next.run(req).await;
    // A state-changing request that failed is audited too (its success is
    // audited by the store, in the transaction of the change). Reads are
    // not, except key downloads, which the handler audits.
    if let Some(action) = audited_action(&method, &path)
        && (rsp.status().is_client_error() || rsp.status().is_server_error())
    {
        let event = crate::store::AuditEvent {
            at: st.clock.now(),
            actor: principal.name.clone(),
            action: action.into(),
            target: concrete,
            reason: None,
            result: format!("rejected: {}", rsp.status().as_u16()),
            details: None,
        };
        if let Err(e) = st.store.audit().record(&event).await {
            tracing::warn!(error = %e, "could not audit a rejected request");
        }
    }
    rsp
}

/// The audit action of a state-changing route.
pub fn audited_action(method: &Method, path: &str) -> Option<&'static str> {
    match (method.as_str(), path) {
        ("POST", "/v1/names") => Some("name.create"),
        ("DELETE", "/v1/names/{name}") => Some("name.delete"),
        ("POST", "/v1/names/{name}/swap") => Some("name.swap"),
        ("PUT", "/v1/names/{name}/deploy") => Some("name.deploy"),
        ("POST", "/v1/names/{name}/deploy/{destination}/password") => Some("install.password"),
        ("POST", "/v1/names/{name}/deploy/{destination}/redeploy") => Some("name.redeploy"),
        ("POST", "/v1/swaps") => Some("swap.mass"),
        ("POST", "/v1/names/{name}/compromise") => Some("name.compromise"),
        ("POST", "/v1/tokens") => Some("token.create"),
        ("DELETE", "/v1/tokens/{token}") => Some("token.delete"),
        ("POST", "/v1/cas/{id}/distrust") => Some("ca.distrust"),
        ("POST", "/v1/cas/{id}/trust") => Some("ca.trust"),
        ("POST", "/v1/compromises") => Some("compromise.bulk"),
        ("POST", "/v1/rekeys") => Some("rekey.start"),
        ("POST", "/v1/drills") => Some("drill.request"),
        _ => None,
    }
}

async fn authenticate(st: &ApiState, value: Option<String>) -> Result<Principal, Problem> {
    let value = value.ok_or_else(|| {
        Problem::unauthorized("missing Authorization header; send 'Authorization: Bearer <token>'")
    })?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let token = Some(value.as_str())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Problem::unauthorized("the Authorization header must be 'Bearer <token>'")
        })?;
    authenticate_token(st, token).await
}

/// The principal a bearer token stands for (the console's token sign-in
/// uses it too), or why it stands for none.
pub(super) async fn authenticate_token(st: &ApiState, token: &str) -> Result<Principal, Problem> {
    let digest = token_digest(token);
    if aws_lc_rs::constant_time::verify_slices_are_equal(&digest, &st.admin_token_sha256).is_ok() {
        return Ok(Principal {
            name: BOOTSTRAP_ADMIN.into(),
            role: Role::Admin,
        });
    }
    let now = st.clock.now();
    match st.store.tokens().token_by_hash(&hex(&digest), now).await {
        Ok(Some(t)) if t.expires_at.is_some_and(|e| e <= now) => Err(Problem::unauthorized(
            format!("token '{}' has expired", t.name),
        )),
        Ok(Some(t)) => Ok(Principal {
            name: t.name,
            role: t.role,
        }),
        Ok(None) => Err(Problem::unauthorized("invalid token")),
        Err(e) => Err(Problem::unavailable(&e)),
    }
}

/// A new random token: 256 bits, base64url, with a `tc_` prefix so it is
/// recognisable in a secret scanner.
pub fn new_token_secret() -> Result<String, Problem> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| Problem::internal(&"system RNG failed"))?;
    Ok(format!(
        "tc_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_every_route_has_a_rule() {
        assert!(Role::Viewer < Role::Deployer);
        assert!(Role::Deployer < Role::Operator);
        assert!(Role::Operator < Role::Admin);
        let cases = [
            (Method::GET, "/v1/names", Some(Role::Viewer)),
            (Method::POST, "/v1/names", Some(Role::Operator)),
            (Method::DELETE, "/v1/names/{name}", Some(Role::Operator)),
            (
                Method::GET,
                "/v1/names/{name}/certificates/{slot}/key",
                Some(Role::Deployer),
            ),
            (Method::POST, "/v1/tokens", Some(Role::Admin)),
            (Method::PUT, "/v1/names", None),
            (Method::GET, "/v1/unknown", None),
        ];
        for (m, p, want) in cases {
            assert_eq!(required_role(&m, p), want, "{m} {p}");
        }
    }
}
