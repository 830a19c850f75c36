//! The operator console: server-rendered HTML under `/ui/`, served by the
//! API role beside `/v1`. Its contract with the browser tests (routes,
//! `data-testid` hooks, configuration) is `docs/console.md`.
//!
//! The console is an in-process client of the API: every page read and
//! every form action is performed as the `/v1` request it stands for
//! (`perform`), carrying the session's principal, so it passes the same
//! route table (`auth::ROUTES`), the same handler, the same audit and the
//! same problem texts as a curl call would — a viewer's swap is refused by
//! the very rule that refuses a viewer's token. Only what the API has no
//! route for is read from the store directly: the names page's search and
//! filters and the overview's counts (`store::Console`), each still
//! authorized against the `/v1` route it corresponds to (`CONSOLE_ROUTES`).
//!
//! Sessions live in the store (the cookie holds a random secret; the store
//! its SHA-256), end after `session_idle_seconds` without a request or
//! `session_absolute_seconds` after sign-in, and at sign-out. Every POST
//! carries the session's CSRF secret in a hidden `csrf` field (the sign-in
//! form a double-submit cookie); the cookie is `SameSite=Strict`,
//! `HttpOnly` and `Secure` over HTTPS. Plain HTTP is refused except from a
//! loopback client; `server.allow_cidrs` applies as to `/v1`. Every answer
//! carries a CSP without inline script, `frame-ancestors 'none'`,
//! `Referrer-Policy: no-referrer` and `nosniff`. No JavaScript is needed;
//! the operation page refreshes itself with `<meta http-equiv=refresh>`.

mod actions;
mod html;
pub mod oidc;
mod pages;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tower::ServiceExt as _;

use super::auth::ConsolePrincipal;
use super::{ApiState, Principal, Problem, required_role};
use crate::domain::Role;
use crate::store::SessionRecord;

pub use oidc::OidcClient;

/// The session cookie (contract: `twincert_session`).
const SESSION_COOKIE: &str = "twincert_session";
/// The sign-in form's double-submit CSRF cookie.
const LOGIN_COOKIE: &str = "twincert_login";
/// How long an OpenID Connect sign-in may take at the IdP.
const LOGIN_SECONDS: i64 = 600;

/// Every console route that reads or acts, with the `/v1` route whose
/// rule authorizes it: a page or button is shown, and a request served,
/// only to a role the API's table allows for that route.
pub const CONSOLE_ROUTES: &[(&str, &str, &str, &str)] = &[
    ("GET", "/ui/", "GET", "/v1/names"),
    ("GET", "/ui/names", "GET", "/v1/names"),
    ("GET", "/ui/names/{name}", "GET", "/v1/names/{name}"),
    (
        "POST",
        "/ui/names/{name}/swap",
        "POST",
        "/v1/names/{name}/swap",
    ),
    (
        "POST",
        "/ui/names/{name}/check",
        "POST",
        "/v1/names/{name}/deploy/check",
    ),
    (
        "POST",
        "/ui/names/{name}/compromise",
        "POST",
        "/v1/names/{name}/compromise",
    ),
    ("GET", "/ui/emergency", "POST", "/v1/swaps"),
    ("POST", "/ui/emergency/dry-run", "POST", "/v1/swaps"),
    ("POST", "/ui/emergency/swap", "POST", "/v1/swaps"),
    (
        "POST",
        "/ui/emergency/distrust/dry-run",
        "POST",
        "/v1/cas/{id}/distrust",
    ),
    (
        "POST",
        "/ui/emergency/distrust",
        "POST",
        "/v1/cas/{id}/distrust",
    ),
    ("POST", "/ui/emergency/rekey/dry-run", "POST", "/v1/rekeys"),
    ("POST", "/ui/emergency/rekey", "POST", "/v1/rekeys"),
    ("GET", "/ui/operations", "GET", "/v1/operations"),
    ("GET", "/ui/operations/{id}", "GET", "/v1/operations/{id}"),
    ("GET", "/ui/cas", "GET", "/v1/cas"),
    ("GET", "/ui/alerts", "GET", "/v1/alerts"),
    ("GET", "/ui/incidents", "GET", "/v1/incidents"),
    (
        "POST",
        "/ui/incidents/{id}/close",
        "POST",
        "/v1/incidents/{id}/close",
    ),
    ("GET", "/ui/audit", "GET", "/v1/events"),
    ("GET", "/ui/tokens", "GET", "/v1/tokens"),
    ("POST", "/ui/tokens", "POST", "/v1/tokens"),
    (
        "POST",
        "/ui/tokens/{name}/delete",
        "DELETE",
        "/v1/tokens/{token}",
    ),
];

/// What the console needs beyond the API's state.
pub struct ConsoleSettings {
    /// A session unused this long ends.
    pub idle_seconds: i64,
    /// A session ends this long after sign-in.
    pub absolute_seconds: i64,
    /// Whether the listener serves HTTPS (else only loopback clients are
    /// served, and the cookie is not `Secure`).
    pub tls: bool,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<OidcClient>,
}

/// The console's handler state.
#[derive(Clone)]
pub(crate) struct Console {
    api: ApiState,
    settings: Arc<ConsoleSettings>,
    /// The API router, which every page read and action goes through.
    v1: Router,
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    id_sha256: String,
    principal: Principal,
    csrf: String,
}

impl Session {
    /// Whether this session's role may perform `method path` of `/v1`.
    fn may(&self, method: &str, v1_path: &str) -> bool {
        let m = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        required_role(&m, v1_path).is_some_and(|r| self.principal.role >= r)
    }
}

/// The console router (all paths under `/ui`), with its own guards: the
/// security headers, `server.allow_cidrs`, the HTTPS-or-loopback rule.
pub fn router(api: ApiState, settings: ConsoleSettings, v1: Router) -> Router {
    let limit = api.max_body_bytes;
    let console = Console {
        api: api.clone(),
        settings: Arc::new(settings),
        v1,
    };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/style.css", get(html::stylesheet))
        .route("/ui/login", get(pages::login_page))
        .route("/ui/login/token", post(pages::login_token))
        .route("/ui/login/oidc", get(pages::login_oidc))
        .route("/ui/oidc/callback", get(pages::oidc_callback))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/names", get(pages::names))
        .route("/ui/names/{name}", get(pages::name_detail))
        .route("/ui/names/{name}/swap", post(pages::swap))
        .route("/ui/names/{name}/check", post(pages::check))
        .route("/ui/names/{name}/compromise", post(pages::compromise))
        .route("/ui/emergency", get(pages::emergency))
        .route("/ui/emergency/dry-run", post(pages::emergency_dry_run))
        .route("/ui/emergency/swap", post(pages::emergency_swap))
        .route(
            "/ui/emergency/distrust/dry-run",
            post(actions::distrust_dry_run),
        )
        .route("/ui/emergency/distrust", post(actions::distrust))
        .route("/ui/emergency/rekey/dry-run", post(actions::rekey_dry_run))
        .route("/ui/emergency/rekey", post(actions::rekey))
        .route("/ui/operations", get(pages::operations))
        .route("/ui/operations/{id}", get(pages::operation))
        .route("/ui/cas", get(pages::cas))
        .route("/ui/alerts", get(pages::alerts))
        .route("/ui/incidents", get(pages::incidents))
        .route("/ui/incidents/{id}/close", post(pages::close_incident))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/tokens", get(pages::tokens).post(actions::create_token))
        .route("/ui/tokens/{name}/delete", post(actions::delete_token))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(console.clone(), transport))
        .layer(middleware::from_fn_with_state(api, super::guard::guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

async fn not_found(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = c.session(&headers).await.ok().flatten();
    html::error_page(s.as_ref(), StatusCode::NOT_FOUND, "no such console page")
}

/// Every answer of the console: no framing, no inline script, no referrer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut rsp = next.run(req).await;
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rsp
}

/// Plain HTTP only from a loopback client: a session cookie must not
/// cross a network in clear.
async fn transport(State(c): State<Console>, req: Request, next: Next) -> Response {
    if !c.settings.tls {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip());
        if !peer.is_some_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback()) {
            return html::error_page(
                None,
                StatusCode::FORBIDDEN,
                "the console is served over plain HTTP to loopback clients only; \
                 configure server.tls_cert_file and server.tls_key_file to reach it from elsewhere",
            );
        }
    }
    next.run(req).await
}

/// A `/v1` request the console performed that the API refused.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    status: StatusCode,
    detail: String,
}

impl From<Problem> for Refused {
    fn from(p: Problem) -> Self {
        let status = p.status();
        let (_, body) = p.document();
        Refused {
            status,
            detail: detail_of(&body),
        }
    }
}

impl From<crate::store::StoreError> for Refused {
    fn from(e: crate::store::StoreError) -> Self {
        Problem::from(e).into()
    }
}

fn detail_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| "the request failed".into())
}

/// A path segment, percent-encoded for a `/v1` URL.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Console {
    /// Performs a `/v1` request as the session's principal through the
    /// API's own router: its route table, handler, audit and problems.
    async fn perform(
        &self,
        s: &Session,
        peer: Peer,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Refused> {
        let mut b = Request::builder().method(method).uri(path);
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = b
            .body(body)
            .map_err(|e| Refused::from(Problem::internal(&e)))?;
        req.extensions_mut()
            .insert(ConsolePrincipal(s.principal.clone()));
        if let Some(p) = peer {
            req.extensions_mut().insert(p.0);
        }
        let rsp = match self.v1.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = rsp.status();
        let bytes = axum::body::to_bytes(rsp.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|e| Refused::from(Problem::internal(&e)))?;
        if !status.is_success() {
            return Err(Refused {
                status,
                detail: detail_of(&bytes),
            });
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Refused::from(Problem::internal(&e)))
    }

    /// The session the request's cookie names, if it is alive; an expired
    /// one is deleted.
    async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, Refused> {
        let Some(secret) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let id_sha256 = crate::keys::hex(&super::token_digest(&secret));
        let store = self.api.store.console();
        let Some(rec) = store.session(&id_sha256).await? else {
            return Ok(None);
        };
        let now = self.api.clock.now();
        if !session_alive(&rec, now, &self.settings) {
            store.delete_session(&id_sha256).await?;
            return Ok(None);
        }
        // Last seen to the quarter minute: one write per 15 s of activity.
        if now - rec.last_seen_at >= 15 {
            store.touch_session(&id_sha256, now).await?;
        }
        Ok(Some(Session {
            id_sha256,
            principal: Principal {
                name: rec.actor,
                role: rec.role,
            },
            csrf: rec.csrf,
        }))
    }

    /// Starts a session for `actor` and answers with its cookie and a
    /// redirect to the overview.
    async fn sign_in(&self, actor: String, role: Role) -> Result<Response, Refused> {
        let secret = oidc::random(32).map_err(|e| Refused::from(Problem::internal(&e)))?;
        let csrf = oidc::random(32).map_err(|e| Refused::from(Problem::internal(&e)))?;
        let now = self.api.clock.now();
        let id_sha256 = crate::keys::hex(&super::token_digest(&secret));
        self.api
            .store
            .console()
            .create_session(
                &id_sha256,
                &SessionRecord {
                    actor,
                    role,
                    csrf,
                    created_at: now,
                    last_seen_at: now,
                },
                now - self.settings.idle_seconds,
                now - self.settings.absolute_seconds,
            )
            .await?;
        let mut rsp = Redirect::to("/ui/").into_response();
        rsp.headers_mut().append(
            header::SET_COOKIE,
            self.cookie_header(SESSION_COOKIE, &secret, None),
        );
        rsp.headers_mut().append(
            header::SET_COOKIE,
            self.cookie_header(LOGIN_COOKIE, "", Some(0)),
        );
        Ok(rsp)
    }

    fn cookie_header(&self, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
        let secure = if self.settings.tls { "; Secure" } else { "" };
        let age = max_age
            .map(|a| format!("; Max-Age={a}"))
            .unwrap_or_default();
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict{secure}{age}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Path=/ui"))
    }
}

/// Whether a session may still be used at `now`.
fn session_alive(rec: &SessionRecord, now: i64, s: &ConsoleSettings) -> bool {
    now - rec.last_seen_at < s.idle_seconds && now - rec.created_at < s.absolute_seconds
}

/// A cookie's value from the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether `given` is the expected CSRF secret (constant time).
fn csrf_ok(expected: &str, given: Option<&String>) -> bool {
    given.is_some_and(|g| {
        !expected.is_empty()
            && aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), g.as_bytes())
                .is_ok()
    })
}

/// The client's address, when the listener attached it (the API's
/// allowlist reads it again on the `/v1` request the console performs).
pub(crate) type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

/// A submitted form: every field as text (a missing field reads empty,
/// so the API's own check names it).
type Fields = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_route_maps_to_a_v1_route_of_the_table() {
        for (m, ui, vm, v1) in CONSOLE_ROUTES {
            let method = Method::from_bytes(vm.as_bytes()).expect("method");
            assert!(
                required_role(&method, v1).is_some(),
                "{m} {ui} maps to {vm} {v1}, which the route table does not have"
            );
        }
    }

    #[test]
    fn sessions_end_after_idle_or_absolute_time() {
        let s = ConsoleSettings {
            idle_seconds: 100,
            absolute_seconds: 1000,
            tls: false,
            oidc: None,
        };
        let rec = |created, seen| SessionRecord {
            actor: "a".into(),
            role: Role::Viewer,
            csrf: "c".into(),
            created_at: created,
            last_seen_at: seen,
        };
        let cases = [
            ("fresh", rec(0, 0), 50, true),
            ("idle too long", rec(0, 0), 100, false),
            ("busy but old", rec(0, 950), 1000, false),
            ("busy and young", rec(0, 900), 990, true),
        ];
        for (case, r, now, want) in cases {
            assert_eq!(session_alive(&r, now, &s), want, "{case}");
        }
    }

    #[test]
    fn cookies_and_csrf_are_read_exactly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; twincert_session=abc; twincert_sessionx=no"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
        assert!(csrf_ok("abc", Some(&"abc".to_string())));
        assert!(!csrf_ok("abc", Some(&"abd".to_string())));
        assert!(!csrf_ok("abc", None));
        assert!(!csrf_ok("", Some(&String::new())));
        assert_eq!(seg("a.example.test"), "a.example.test");
        assert_eq!(seg("a/../b c"), "a%2F..%2Fb%20c");
    }
}
