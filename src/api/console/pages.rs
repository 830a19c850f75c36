//! The console's pages and form actions. A page reads through the `/v1`
//! route it stands for (`Console::perform`) or, where the API has no such
//! read, through `store::Console` after the same role check; an action is
//! the `/v1` request it performs, after the CSRF check. A refusal is shown
//! in the page's `error` box with the API's status and detail text.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::html::{self, bar, csrf_field, error_box, page, respond, text, when, when_text};
use super::{
    Console, Fields, LOGIN_COOKIE, LOGIN_SECONDS, Peer, Refused, Session, cookie, csrf_ok, oidc,
    seg,
};
use crate::domain::{ChallengeKind, NameState};
use crate::store::{AuditEvent, NamePageFilter, OverviewCounts, PendingLogin};

/// Names per page of the names list.
const PAGE: u64 = 50;
/// Days the expiry timeline covers (counted by the `counts` controller).
const TIMELINE_DAYS: i64 = crate::store::OVERVIEW_DAYS;

fn refused(s: Option<&Session>, r: Refused) -> Response {
    html::error_page(s, r.status, &r.detail)
}

/// The session, or the answer for a request without one (to sign-in).
async fn signed_in(c: &Console, headers: &HeaderMap) -> Result<Session, Response> {
    match c.session(headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(Redirect::to("/ui/login").into_response()),
        Err(r) => Err(refused(None, r)),
    }
}

/// The session of a form post whose CSRF field is right, or the answer.
pub(super) async fn posted(
    c: &Console,
    headers: &HeaderMap,
    f: &Fields,
) -> Result<Session, Response> {
    let s = signed_in(c, headers).await?;
    if !csrf_ok(&s.csrf, f.get("csrf")) {
        return Err(html::error_page(
            Some(&s),
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong; nothing was changed — reload the page and submit again",
        ));
    }
    Ok(s)
}

/// Refuses a page whose `/v1` route the session's role may not use, with
/// the API's wording.
fn refusal(s: &Session, method: &str, v1: &str) -> Option<Response> {
    if s.may(method, v1) {
        return None;
    }
    let needed = super::required_role(
        &Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        v1,
    )
    .map(|r| r.as_str())
    .unwrap_or("a rule");
    Some(html::error_page(
        Some(s),
        StatusCode::FORBIDDEN,
        &format!(
            "'{}' has role {}; {method} {v1} needs {needed} or higher",
            s.principal.name,
            s.principal.role.as_str()
        ),
    ))
}

// ----- sign-in ----------------------------------------------------------

/// `GET /ui/login`.
pub async fn login_page(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = c.session(&headers).await {
        return Redirect::to("/ui/").into_response();
    }
    login_form(&c, StatusCode::OK, None)
}

fn login_form(c: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let Ok(nonce) = oidc::random(24) else {
        return html::error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "system RNG failed");
    };
    let body = html! {
        @if let Some(e) = error { (error_box(e)) }
        @if c.settings.oidc.is_some() {
            p { a href="/ui/login/oidc" data-testid="oidc-login" { "Sign in with SSO" } }
            p.muted { "or with an API token:" }
        }
        form.action method="post" action="/ui/login/token" {
            input type="hidden" name="csrf" value=(nonce);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required data-testid="token-input";
            " "
            button type="submit" data-testid="token-submit" { "Sign in" }
        }
        p.muted { "The token becomes a session; it is not kept in the browser." }
    };
    let mut rsp = respond(status, page(None, "Sign in", None, body));
    rsp.headers_mut().append(
        axum::http::header::SET_COOKIE,
        c.cookie_header(LOGIN_COOKIE, &nonce, Some(LOGIN_SECONDS)),
    );
    rsp
}

/// `POST /ui/login/token`: an API token becomes a session.
pub async fn login_token(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !csrf_ok(&expected, f.get("csrf")) {
        return login_form(
            &c,
            StatusCode::FORBIDDEN,
            Some("the sign-in form's CSRF token is missing or wrong; try again"),
        );
    }
    let token = f.get("token").map(|t| t.trim()).unwrap_or_default();
    if token.is_empty() {
        return login_form(
            &c,
            StatusCode::BAD_REQUEST,
            Some("'token' must not be empty: paste an API token"),
        );
    }
    let who = match super::super::auth::authenticate_token(&c.api, token).await {
        Ok(p) => p,
        Err(p) => {
            let r = Refused::from(p);
            return login_form(&c, r.status, Some(&r.detail));
        }
    };
    audit_sign_in(&c, &who.name, "token").await;
    c.sign_in(who.name, who.role)
        .await
        .unwrap_or_else(|r| refused(None, r))
}

async fn audit_sign_in(c: &Console, actor: &str, via: &str) {
    let e = AuditEvent::ok(c.api.clock.now(), actor, "console.signin", via, None, None);
    if let Err(e) = c.api.store.audit().record(&e).await {
        tracing::warn!(error = %e, "could not audit a console sign-in");
    }
}

/// The cookie that ties an OpenID Connect sign-in to the browser that
/// started it. `SameSite=Lax`: the IdP's redirect back is a cross-site
/// navigation, on which a `Strict` cookie is not sent.
const OIDC_COOKIE: &str = "twincert_oidc";

/// `GET /ui/login/oidc`: to the IdP, with state, nonce and PKCE.
pub async fn login_oidc(State(c): State<Console>) -> Response {
    let Some(client) = &c.settings.oidc else {
        return html::error_page(
            None,
            StatusCode::NOT_FOUND,
            "single sign-on is not configured ([console.oidc])",
        );
    };
    let (Ok(state), Ok(nonce), Ok(verifier)) =
        (oidc::random(32), oidc::random(32), oidc::random(32))
    else {
        return html::error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "system RNG failed");
    };
    let now = c.api.clock.now();
    let login = PendingLogin {
        nonce: nonce.clone(),
        pkce_verifier: verifier.clone(),
        created_at: now,
    };
    let digest = crate::keys::hex(&super::super::token_digest(&state));
    if let Err(e) = c
        .api
        .store
        .console()
        .put_login(&digest, &login, now - LOGIN_SECONDS)
        .await
    {
        return refused(None, e.into());
    }
    match client.authorize_url(&state, &nonce, &verifier, now).await {
        Ok(url) => {
            let mut rsp = Redirect::to(&url).into_response();
            let secure = if c.settings.tls { "; Secure" } else { "" };
            if let Ok(v) = format!(
                "{OIDC_COOKIE}={state}; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age={LOGIN_SECONDS}{secure}"
            )
            .parse()
            {
                rsp.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            rsp
        }
        Err(e) => html::error_page(None, StatusCode::BAD_GATEWAY, &e.0),
    }
}

/// `GET /ui/oidc/callback`: the code exchanged, the ID token verified, the
/// role mapped, a session started.
pub async fn oidc_callback(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Fields>,
) -> Response {
    let Some(client) = &c.settings.oidc else {
        return html::error_page(
            None,
            StatusCode::NOT_FOUND,
            "single sign-on is not configured",
        );
    };
    if let Some(e) = q.get("error") {
        let d = q.get("error_description").map(String::as_str).unwrap_or("");
        return html::error_page(
            None,
            StatusCode::UNAUTHORIZED,
            &format!("the identity provider refused the sign-in: {e} {d}"),
        );
    }
    let (Some(state), Some(code)) = (q.get("state"), q.get("code")) else {
        return html::error_page(
            None,
            StatusCode::BAD_REQUEST,
            "the identity provider's answer lacks 'state' or 'code'; start the sign-in again",
        );
    };
    let bound = cookie(&headers, OIDC_COOKIE).unwrap_or_default();
    if !csrf_ok(&bound, Some(state)) {
        return html::error_page(
            None,
            StatusCode::BAD_REQUEST,
            "this sign-in was not started in this browser; start it again",
        );
    }
    let digest = crate::keys::hex(&super::super::token_digest(state));
    let login = match c.api.store.console().take_login(&digest).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return html::error_page(
                None,
                StatusCode::BAD_REQUEST,
                "this sign-in is unknown or was used already; start it again",
            );
        }
        Err(e) => return refused(None, e.into()),
    };
    let now = c.api.clock.now();
    if now - login.created_at > LOGIN_SECONDS {
        return html::error_page(
            None,
            StatusCode::BAD_REQUEST,
            "this sign-in took longer than 10 minutes; start it again",
        );
    }
    let (who, role) = match client
        .finish(code, &login.pkce_verifier, &login.nonce, now)
        .await
    {
        Ok(x) => x,
        Err(e) => return html::error_page(None, StatusCode::UNAUTHORIZED, &e.0),
    };
    let actor = who.actor();
    audit_sign_in(&c, &actor, "oidc").await;
    match c.sign_in(actor, role).await {
        // The IdP's redirect made this a cross-site navigation: a redirect
        // now would reach /ui/ without the SameSite=Strict session cookie.
        // A page that moves on by itself starts a same-site navigation.
        Ok(mut rsp) => {
            let body = page(
                None,
                "Signed in",
                Some((0, Some("/ui/"))),
                html! { p { a href="/ui/" { "Continue to the console" } } },
            );
            let cookies: Vec<_> = rsp
                .headers_mut()
                .get_all(axum::http::header::SET_COOKIE)
                .iter()
                .cloned()
                .collect();
            let mut ok = respond(StatusCode::OK, body);
            for v in cookies {
                ok.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            rsp = ok;
            rsp
        }
        Err(r) => refused(None, r),
    }
}

/// `POST /ui/logout`: the session is deleted in the store.
pub async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = c.api.store.console().delete_session(&s.id_sha256).await {
        return refused(Some(&s), e.into());
    }
    let mut rsp = Redirect::to("/ui/login").into_response();
    rsp.headers_mut().append(
        axum::http::header::SET_COOKIE,
        c.cookie_header(super::SESSION_COOKIE, "", Some(0)),
    );
    rsp
}

// ----- overview ---------------------------------------------------------

/// `GET /ui/`.
pub async fn overview(State(c): State<Console>, headers: HeaderMap, peer: Peer) -> Response {
    let s = match signed_in(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refusal(&s, "GET", "/v1/names") {
        return r;
    }
    // The counts the `counts` controller stored (at a million names its
    // pass takes seconds; a page never counts).
    let stored = match c.api.store.console().stored_overview().await {
        Ok(x) => x,
        Err(e) => return refused(Some(&s), e.into()),
    };
    let now = c.api.clock.now();
    let alerts = c
        .perform(&s, peer, Method::GET, "/v1/alerts?open=true&limit=20", None)
        .await;
    let incidents = c
        .perform(&s, peer, Method::GET, "/v1/incidents?limit=20", None)
        .await;
    let distrusted = c.api.store.cas().distrusted_cas().await.unwrap_or_default();
    let open_incidents: Vec<Value> = incidents
        .as_ref()
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["state"] == "open")
        .collect();
    let alert_items: Vec<Value> = alerts
        .as_ref()
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default();
    let (at, counts) = stored.clone().unwrap_or_default();
    let total: i64 = counts.states.iter().map(|(_, n)| n).sum();
    let body = html! {
        section data-testid="overview-alerts" {
            @if open_incidents.is_empty() && alert_items.is_empty() {
                p.notice { "No open incidents or alerts." }
            }
            @for i in &open_incidents {
                p.error {
                    strong { "Incident at " (text(&i["ca_id"])) ": " }
                    (text(&i["summary"])) " "
                    a href="/ui/incidents" { "see incidents" }
                }
            }
            @if !alert_items.is_empty() {
                details open {
                    summary { (alert_items.len()) " open alert(s)" }
                    ul {
                        @for a in &alert_items {
                            li class=(severity_class(&a["severity"])) {
                                (text(&a["severity"])) " · " (text(&a["kind"])) " · "
                                (text(&a["subject"])) ": " (text(&a["message"]))
                            }
                        }
                    }
                }
            }
            @if let Err(r) = &alerts { (error_box(&r.detail)) }
        }
        @if stored.is_some() {
            p.muted data-testid="overview-counted" {
                "Counted " (human_seconds((now - at).max(0))) " ago (" (when(at)) ") by the worker's counts controller."
            }
        } @else {
            p.notice data-testid="overview-not-counted" {
                "Not counted yet: the worker's counts controller stores the first counts of names, \
                 standby posture, CA mix and expiries shortly after a worker starts. \
                 Until then these tables are empty; the names list below works meanwhile."
            }
        }
        div.grid {
            section.card data-testid="overview-states" {
                h2 { "Names by state" }
                table {
                    tbody {
                        @for (state, n) in &counts.states {
                            tr {
                                th { a href=(format!("/ui/names?state={state}")) { (state) } }
                                td { (n) }
                                td { (bar(*n, total)) }
                            }
                        }
                        tr { th { "total" } td { (total) } td {} }
                    }
                }
            }
            section.card data-testid="overview-posture" {
                h2 { "Standby posture" }
                p.muted { "Whether each name's standby could take over now." }
                table {
                    tbody {
                        @for (p, n) in &counts.posture {
                            tr {
                                th class=(if p == "usable" { "ok" } else { "bad" }) { (posture_label(p)) }
                                td { (n) }
                                td { (bar(*n, total)) }
                            }
                        }
                    }
                }
            }
            section.card data-testid="overview-ca-mix" {
                h2 { "CA mix" }
                table {
                    thead { tr { th { "active on" } th { "standby on" } th { "names" } } }
                    tbody {
                        @for ((a, b), n) in &counts.mix {
                            tr {
                                td { (ca_label(&c, a, &distrusted)) }
                                td { (ca_label(&c, b, &distrusted)) }
                                td { (n) }
                            }
                        }
                    }
                }
            }
        }
        section data-testid="overview-expiry" {
            h2 { "Expiry timeline (next " (TIMELINE_DAYS) " days)" }
            (timeline(&counts))
        }
    };
    respond(StatusCode::OK, page(Some(&s), "Overview", None, body))
}

fn severity_class(v: &Value) -> &'static str {
    match v.as_str() {
        Some("critical") => "bad",
        Some("warning") => "warn",
        _ => "",
    }
}

fn posture_label(p: &str) -> &str {
    match p {
        "usable" => "usable standby",
        "no_standby" => "no standby certificate",
        "standby_expired" => "standby expired",
        "standby_revoked_or_compromised" => "standby revoked or key compromised",
        "standby_superseded" => "standby being replaced",
        other => other,
    }
}

fn ca_label(c: &Console, id: &str, distrusted: &[String]) -> Markup {
    let group = c
        .api
        .ca_views
        .iter()
        .find(|v| v.id == id)
        .map(|v| v.root_group.clone());
    html! {
        (id)
        @if let Some(g) = group { span.muted { " (root group " (g) ")" } }
        @if distrusted.iter().any(|d| d == id) { strong.bad { " distrusted" } }
    }
}

/// The expiry timeline as an SVG bar chart: one column per day, stacked
/// by CA (drawn on the server; no script).
fn timeline(counts: &OverviewCounts) -> Markup {
    let mut cas: Vec<&String> = counts.expiry.keys().map(|(ca, _)| ca).collect();
    cas.dedup();
    cas.sort();
    cas.dedup();
    let mut per_day = vec![0i64; TIMELINE_DAYS as usize + 1];
    for ((_, d), n) in &counts.expiry {
        if let Some(x) = per_day.get_mut(*d as usize) {
            *x += n;
        }
    }
    let max = per_day.iter().copied().max().unwrap_or(0).max(1);
    const COLORS: &[&str] = &["#0550ae", "#bf8700", "#8250df", "#1a7f37", "#cf222e"];
    let (w, h, col) = (920.0, 180.0, 10.0);
    let mut rects = Vec::new();
    for d in 0..=TIMELINE_DAYS {
        let mut y = h;
        for (i, ca) in cas.iter().enumerate() {
            let n = counts.expiry.get(&((*ca).clone(), d)).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let bh = n as f64 * (h - 10.0) / max as f64;
            y -= bh;
            rects.push((
                d as f64 * col + 10.0,
                y,
                bh,
                COLORS[i % COLORS.len()],
                format!("{ca}: {n} on day {d}"),
            ));
        }
    }
    let total: i64 = per_day.iter().sum();
    html! {
        @if total == 0 {
            p.muted { "No certificate expires in the next " (TIMELINE_DAYS) " days." }
        } @else {
            svg.timeline viewBox=(format!("0 0 {w} {}", h + 20.0)) role="img"
                aria-label=(format!("{total} certificates expire in the next {TIMELINE_DAYS} days")) {
                @for (x, y, bh, color, label) in &rects {
                    rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width="8" height=(format!("{bh:.1}")) fill=(color) {
                        title { (label) }
                    }
                }
                @for d in [0, 30, 60, 90] {
                    text x=(d as f64 * col + 10.0) y=(h + 15.0) font-size="11" fill="#57606a" { "+" (d) "d" }
                }
            }
            p {
                @for (i, ca) in cas.iter().enumerate() {
                    span { svg width="10" height="10" { rect width="10" height="10" fill=(COLORS[i % COLORS.len()]) {} } " " (ca) " " }
                }
                span.muted { "— highest day: " (max) " certificates" }
            }
        }
    }
}

// ----- names ------------------------------------------------------------

/// `GET /ui/names`.
pub async fn names(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Fields>,
) -> Response {
    let s = match signed_in(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refusal(&s, "GET", "/v1/names") {
        return r;
    }
    let now = c.api.clock.now();
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let filter = match names_filter(&c, &q, now) {
        Ok(f) => f,
        Err(detail) => {
            let body = html! { (error_box(&detail)) (names_form(&c, &q)) };
            return respond(StatusCode::BAD_REQUEST, page(Some(&s), "Names", None, body));
        }
    };
    let listed = match c
        .api
        .store
        .console()
        .names_page(&filter, get("after"), PAGE)
        .await
    {
        Ok(r) => r,
        Err(e) => return refused(Some(&s), e.into()),
    };
    let views: Vec<_> = listed
        .names
        .iter()
        .map(|r| super::super::name_view(r, now, &c.api.dns))
        .collect();
    let next = listed.next.map(|after| {
        let mut params: Vec<(String, String)> = q
            .iter()
            .filter(|(k, v)| *k != "after" && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.push(("after".into(), after));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        format!("/ui/names?{qs}")
    });
    let body = html! {
        (names_form(&c, &q))
        div.table-wrap {
            table data-testid="names-table" {
                thead { tr { th { "name" } th { "state" } th { "active" } th { "primary" } th { "backup" } } }
                tbody {
                    @for v in &views {
                        tr data-testid="name-row" data-name=(v.name) {
                            td { a href=(format!("/ui/names/{}", seg(&v.name))) { (v.name) } }
                            td { (v.state.as_str()) }
                            td { (v.active.as_str()) }
                            @for slot in [&v.primary, &v.backup] {
                                td {
                                    (slot.ca) " · " (format!("{:?}", slot.state).to_lowercase())
                                    @if let Some(na) = &slot.not_after {
                                        br; span.muted { "until " (when_text(&Value::String(na.clone()))) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if views.is_empty() { p.muted { "No names match." } }
        @if let Some(n) = next { p { a href=(n) data-testid="names-next" { "Next page →" } } }
    };
    respond(StatusCode::OK, page(Some(&s), "Names", None, body))
}

fn names_filter(c: &Console, q: &Fields, now: i64) -> Result<NamePageFilter, String> {
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let state = match get("state") {
        None => None,
        Some(st) => Some((
            serde_json::from_value::<NameState>(Value::String(st.to_string())).map_err(|_| {
                format!("unknown state '{st}': expected provisioning, ready, degraded or waiting")
            })?,
            now,
        )),
    };
    if let Some(ca) = get("ca")
        && !c.api.cas.iter().any(|x| x.id == ca)
    {
        return Err(format!("unknown CA '{ca}'"));
    }
    let challenge = get("challenge")
        .map(|ch| ch.parse::<ChallengeKind>())
        .transpose()?;
    let with_findings = match get("findings") {
        None | Some("any") => false,
        Some("yes") => true,
        Some(o) => {
            return Err(format!(
                "unknown findings filter '{o}': expected 'yes' or nothing"
            ));
        }
    };
    Ok(NamePageFilter {
        prefix: get("q").map(|p| p.to_ascii_lowercase()),
        state,
        ca: get("ca").map(str::to_string),
        challenge,
        with_findings,
    })
}

fn names_form(c: &Console, q: &Fields) -> Markup {
    let v = |k: &str| q.get(k).cloned().unwrap_or_default();
    let sel = |k: &str, o: &str| v(k) == o;
    html! {
        form.filters method="get" action="/ui/names" role="search" {
            label { "Name starts with" br;
                input type="search" name="q" value=(v("q")) data-testid="names-search"; }
            label { "State" br;
                select name="state" {
                    option value="" { "any" }
                    @for st in ["ready", "provisioning", "degraded", "waiting"] {
                        option value=(st) selected[sel("state", st)] { (st) }
                    }
                } }
            label { "CA" br;
                select name="ca" {
                    option value="" { "any" }
                    @for ca in c.api.cas.iter() {
                        option value=(ca.id) selected[sel("ca", &ca.id)] { (ca.id) }
                    }
                } }
            label { "Challenge" br;
                select name="challenge" {
                    option value="" { "any" }
                    @for ch in ["http-01", "dns-01", "dns-01-manual"] {
                        option value=(ch) selected[sel("challenge", ch)] { (ch) }
                    }
                } }
            label { "Preflight findings" br;
                select name="findings" {
                    option value="" { "any" }
                    option value="yes" selected[sel("findings", "yes")] { "with findings" }
                } }
            button type="submit" { "Filter" }
        }
    }
}

// ----- name detail and its actions --------------------------------------

/// `GET /ui/names/{name}`.
pub async fn name_detail(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Path(name): Path<String>,
) -> Response {
    let s = match signed_in(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    name_page(&c, &s, peer, &name, None, StatusCode::OK).await
}

async fn name_page(
    c: &Console,
    s: &Session,
    peer: Peer,
    name: &str,
    outcome: Option<Result<String, Refused>>,
    status: StatusCode,
) -> Response {
    let path = format!("/v1/names/{}", seg(name));
    let view = match c.perform(s, peer, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(r) => {
            // The action's own refusal first, when there was one.
            let r = match outcome {
                Some(Err(first)) => first,
                _ => r,
            };
            return refused(Some(s), r);
        }
    };
    let deploy = c
        .perform(s, peer, Method::GET, &format!("{path}/deploy"), None)
        .await
        .ok();
    let id = text(&view["name"]);
    let trail = c
        .api
        .store
        .console()
        .audit_page(None, None, Some(&id), None, 20)
        .await
        .unwrap_or_default();
    let may_swap = s.may("POST", "/v1/names/{name}/swap");
    let may_check = s.may("POST", "/v1/names/{name}/deploy/check");
    let may_compromise = s.may("POST", "/v1/names/{name}/compromise");
    let action = |a: &str| format!("/ui/names/{}/{a}", seg(&id));
    let body = html! {
        @match &outcome {
            Some(Err(r)) => (error_box(&r.detail)),
            Some(Ok(msg)) => p.notice role="status" { (msg) },
            None => {},
        }
        dl.facts {
            dt { "state" } dd { (text(&view["state"])) }
            dt { "active slot" } dd { (text(&view["active"])) }
            dt { "domains" } dd { (view["domains"].as_array().map(|d| d.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
            dt { "challenge" } dd { (text(&view["challenge"])) }
            dt { "key type" } dd { (text(&view["key_type"])) }
            @if !view["diversity_error"].is_null() { dt { "diversity" } dd.bad { (text(&view["diversity_error"])) } }
        }
        div.grid {
            @for slot in ["primary", "backup"] {
                (slot_card(slot, &view[slot], view["active"] == slot))
            }
        }
        @if let Some(records) = view["dns01_manual_records"].as_array() {
            h2 { "DNS-01 records to publish" }
            table { thead { tr { th { "slot" } th { "name" } th { "type" } th { "value" } } }
                tbody { @for r in records { tr { td { (text(&r["slot"])) } td { code { (text(&r["name"])) } } td { "TXT" } td { code { (text(&r["value"])) } } } } } }
        }
        @if let Some(d) = view["dns01_delegations"].as_array() {
            h2 { "DNS-01 delegations to create once" }
            ul { @for r in d { li { code { (text(&r["name"])) } " CNAME " code { (text(&r["cname_to"])) } } } }
        }
        @if let Some(d) = &deploy { (deploy_section(d)) }
        h2 { "Actions" }
        @if !(may_swap || may_check || may_compromise) {
            p.muted { "Your role (" (s.principal.role.as_str()) ") can look, not act." }
        }
        @if may_swap {
            form.action method="post" action=(action("swap")) data-testid="swap-form" {
                (csrf_field(s))
                label for="swap-reason" { "Swap to the standby — reason (for the audit log)" }
                input #swap-reason type="text" name="reason" data-testid="swap-reason";
                " "
                button type="submit" data-testid="swap-submit" { "Swap" }
            }
        }
        @if may_check {
            form.action method="post" action=(action("check")) {
                (csrf_field(s))
                button type="submit" data-testid="check-submit" { "Check endpoints now" }
            }
        }
        @if may_compromise {
            form.action method="post" action=(action("compromise")) data-testid="compromise-form" {
                (csrf_field(s))
                label { "Report a key compromise — slot "
                    select name="slot" { option value="primary" { "primary" } option value="backup" { "backup" } } }
                label { "Reason " input type="text" name="reason"; }
                label { "Type the name to confirm " input type="text" name="confirm" autocomplete="off" data-testid="compromise-confirm"; }
                button.danger type="submit" data-testid="compromise-submit" { "Report compromise" }
            }
        }
        h2 { "Audit trail" }
        (audit_table(&trail))
    };
    respond(status, page(Some(s), &id, None, body))
}

fn slot_card(slot: &str, v: &Value, active: bool) -> Markup {
    let o = &v["order"];
    let r = &v["revocation"];
    let ari = &v["ari"];
    html! {
        section.card data-testid=(format!("slot-{slot}")) {
            h2 { (slot) @if active { " (active)" } }
            dl.facts {
                dt { "CA" } dd { (text(&v["ca"])) }
                dt { "state" } dd { (text(&v["state"])) }
                dt { "serial" } dd { code { (text(&v["serial"])) } }
                dt { "issuer" } dd { (text(&v["issuer"])) }
                dt { "valid" } dd { (when_text(&v["not_before"])) " → " (when_text(&v["not_after"])) }
                dt { "renews after" } dd { (when_text(&v["renew_after"])) }
                dt { "SPKI SHA-256" } dd { code { (text(&v["spki_sha256"])) } }
                @if !v["profile"].is_null() { dt { "profile" } dd { (text(&v["profile"])) } }
                dt { "revocation" } dd {
                    @if r.is_null() { "—" } @else {
                        (text(&r["status"]))
                        @if !r["source"].is_null() { " via " (text(&r["source"])) }
                        @if !r["checked_at"].is_null() { span.muted { " (checked " (when_text(&r["checked_at"])) ")" } }
                        @if !r["evidence"].is_null() { br; code { (r["evidence"].to_string()) } }
                        @if !r["check_error"].is_null() { br; span.warn { (text(&r["check_error"])) } }
                        @if !r["note"].is_null() { br; span.muted { (text(&r["note"])) } }
                    }
                }
                dt { "ARI window" } dd {
                    @if ari.is_null() { "—" } @else { (when_text(&ari["window_start"])) " → " (when_text(&ari["window_end"])) }
                }
                @if !v["last_error"].is_null() { dt { "last error" } dd.bad { (text(&v["last_error"])) } }
                @if !v["reprovision"].is_null() {
                    dt { "re-provisioning" } dd { (text(&v["reprovision"]["state"])) " " (text(&v["reprovision"]["reason"])) }
                }
            }
            @if !o.is_null() {
                h3 { "Open order" }
                dl.facts {
                    dt { "order" } dd { code { (text(&o["id"])) } " at " (text(&o["ca"])) }
                    dt { "state" } dd { (text(&o["state"])) ", " (text(&o["attempts"])) " failed attempt(s)" }
                    dt { "next attempt" } dd { (when_text(&o["next_attempt_at"])) }
                    @if !o["held"].is_null() { dt { "held" } dd { (text(&o["held"])) } }
                    @if !o["last_error"].is_null() { dt { "last error" } dd.bad { (text(&o["last_error"])) } }
                }
            }
        }
    }
}

fn deploy_section(d: &Value) -> Markup {
    let dests = d["destinations"].as_array().cloned().unwrap_or_default();
    let eps = d["endpoints"].as_array().cloned().unwrap_or_default();
    html! {
        h2 { "Deployment" }
        @if dests.is_empty() && eps.is_empty() { p.muted { "No destinations or endpoints." } }
        @if !dests.is_empty() {
            table { thead { tr { th { "destination" } th { "kind" } th { "state" } th { "serial" } th { "last error" } } }
                tbody { @for x in &dests { tr {
                    td { (text(&x["destination"])) } td { (text(&x["kind"])) } td { (text(&x["state"])) }
                    td { code { (text(&x["serial"])) } } td.bad { (text(&x["last_error"])) }
                } } } }
        }
        @for e in &eps {
            div.card {
                strong { (text(&e["host"])) ":" (text(&e["port"])) }
                " — " (text(&e["outcome"]))
                @if !e["checked_at"].is_null() { span.muted { " (checked " (when(e["checked_at"].as_i64().unwrap_or_default())) ")" } }
                @if let Some(steps) = e["steps"].as_array() {
                    ol { @for st in steps { li { (step_line(st)) } } }
                } @else if !e["summary"].is_null() {
                    p { code { (text(&e["summary"])) } }
                }
            }
        }
    }
}

/// One endpoint check step: `Resolved OK 127.0.0.1:8443`, whatever fields
/// the step carries.
fn step_line(st: &Value) -> String {
    match st {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                Value::Bool(b) => format!("{k}: {}", if *b { "OK" } else { "NG" }),
                other => format!("{k}: {}", text(other)),
            })
            .collect::<Vec<_>>()
            .join(" · "),
        other => text(other),
    }
}

fn audit_table(events: &[(i64, AuditEvent)]) -> Markup {
    html! {
        @if events.is_empty() { p.muted { "No events." } } @else {
            div.table-wrap { table data-testid="audit-table" {
                thead { tr { th { "when" } th { "who" } th { "action" } th { "target" } th { "reason" } th { "result" } } }
                tbody { @for (_, e) in events { tr {
                    td { (when(e.at)) } td { (e.actor) } td { (e.action) } td { (e.target) }
                    td { (e.reason.clone().unwrap_or_default()) } td { (e.result) }
                } } }
            } }
        }
    }
}

/// `POST /ui/names/{name}/swap` → `POST /v1/names/{name}/swap`.
pub async fn swap(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reason = f.get("reason").cloned().unwrap_or_default();
    let got = c
        .perform(
            &s,
            peer,
            Method::POST,
            &format!("/v1/names/{}/swap", seg(&name)),
            Some(json!({ "reason": reason })),
        )
        .await;
    after_action(
        &c,
        &s,
        peer,
        &name,
        got.map(|v| {
            format!(
                "swapped: the {} slot is active now (operation {})",
                text(&v["active"]),
                text(&v["operation_id"])
            )
        }),
    )
    .await
}

/// `POST /ui/names/{name}/check` → `POST /v1/names/{name}/deploy/check`.
pub async fn check(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let got = c
        .perform(
            &s,
            peer,
            Method::POST,
            &format!("/v1/names/{}/deploy/check", seg(&name)),
            None,
        )
        .await;
    after_action(
        &c,
        &s,
        peer,
        &name,
        got.map(|v| {
            format!(
                "{} endpoint check(s) requested; they run within seconds",
                text(&v["endpoints"])
            )
        }),
    )
    .await
}

/// `POST /ui/names/{name}/compromise` → `POST /v1/names/{name}/compromise`,
/// after the name was typed to confirm.
pub async fn compromise(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !s.may("POST", "/v1/names/{name}/compromise") {
        // Let the API refuse it, with its words and its audit.
    } else if f.get("confirm").map(|x| x.trim()) != Some(name.as_str()) {
        let r = Refused {
            status: StatusCode::BAD_REQUEST,
            detail: format!("'confirm' must be the name '{name}', typed, to report a compromise"),
        };
        return after_action(&c, &s, peer, &name, Err(r)).await;
    }
    let got = c
        .perform(
            &s,
            peer,
            Method::POST,
            &format!("/v1/names/{}/compromise", seg(&name)),
            Some(json!({
                "slot": f.get("slot").cloned().unwrap_or_default(),
                "reason": f.get("reason").cloned().unwrap_or_default(),
            })),
        )
        .await;
    after_action(&c, &s, peer, &name, got.map(|v| {
        format!(
            "compromise of the {} key recorded; swapped away: {}; revocation and re-issue queued",
            text(&v["slot"]),
            text(&v["swapped"])
        )
    }))
    .await
}

async fn after_action(
    c: &Console,
    s: &Session,
    peer: Peer,
    name: &str,
    got: Result<String, Refused>,
) -> Response {
    let status = match &got {
        Ok(_) => StatusCode::OK,
        Err(r) => r.status,
    };
    name_page(c, s, peer, name, Some(got), status).await
}

// ----- emergency --------------------------------------------------------

pub(super) fn scope_form(c: &Console, s: &Session, ca: &str, reason: &str) -> Markup {
    html! {
        form.action method="post" action="/ui/emergency/dry-run" {
            (csrf_field(s))
            label for="scope-ca" { "Swap every name active on CA" }
            select #scope-ca name="ca" data-testid="scope-ca" {
                @for v in c.api.cas.iter() {
                    option value=(v.id) selected[v.id == ca] { (v.id) }
                }
            }
            label for="reason" { "Reason (for the audit log)" }
            input #reason type="text" name="reason" value=(reason) data-testid="scope-reason";
            " "
            button type="submit" data-testid="dry-run-submit" { "Dry run" }
        }
        p.muted { "A dry run changes nothing: it shows how many names would flip, how many are skipped and why." }
    }
}

/// `GET /ui/emergency`.
pub async fn emergency(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = match signed_in(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refusal(&s, "POST", "/v1/swaps") {
        return r;
    }
    let body = super::actions::emergency_forms(&c, &s);
    respond(StatusCode::OK, page(Some(&s), "Emergency", None, body))
}

/// `POST /ui/emergency/dry-run` → `POST /v1/swaps` with `dry_run`.
pub async fn emergency_dry_run(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ca = f.get("ca").cloned().unwrap_or_default();
    let reason = f.get("reason").cloned().unwrap_or_default();
    let got = c
        .perform(
            &s,
            peer,
            Method::POST,
            "/v1/swaps",
            Some(json!({ "ca": ca, "reason": reason, "dry_run": true })),
        )
        .await;
    let (status, body) = match got {
        Err(r) => (
            r.status,
            html! { (error_box(&r.detail)) (scope_form(&c, &s, &ca, &reason)) },
        ),
        Ok(v) => (StatusCode::OK, dry_run_result(&s, &ca, &reason, &v, None)),
    };
    respond(status, page(Some(&s), "Emergency: dry run", None, body))
}

fn dry_run_result(s: &Session, ca: &str, reason: &str, v: &Value, error: Option<&str>) -> Markup {
    let counts = v["report"]["counts"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let flips = counts.get("swap").and_then(Value::as_i64).unwrap_or(0);
    let skipped: i64 = counts
        .iter()
        .filter(|(k, _)| *k != "swap")
        .filter_map(|(_, n)| n.as_i64())
        .sum();
    let est = &v["estimate"];
    html! {
        @if let Some(e) = error { (error_box(e)) }
        p { "Scope: every name active on " strong { (ca) } ". Reason: " (reason) }
        table {
            tbody {
                tr { th { "would flip" } td data-testid="dry-run-flip-count" { (flips) } }
                tr { th { "skipped" } td data-testid="dry-run-skipped" { (skipped) } }
                @for (k, n) in &counts {
                    @if k != "swap" { tr { td { "  skipped: " (k) } td { (text(n)) } } }
                }
                tr { th { "slots to re-provision" } td { (text(&v["report"]["reprovision"])) } }
                tr { th { "re-provisioning estimate" } td { (estimate_cell(est)) } }
            }
        }
        form.action method="post" action="/ui/emergency/swap" {
            (csrf_field(s))
            input type="hidden" name="ca" value=(ca);
            input type="hidden" name="reason" value=(reason);
            input type="hidden" name="expected" value=(flips);
            label for="confirm" { "To swap, type the CA id (" code { (ca) } ") or the number of names to flip (" code { (flips) } ")" }
            input #confirm type="text" name="confirm" autocomplete="off" data-testid="confirm-input";
            " "
            button.danger type="submit" data-testid="confirm-submit" { "Swap now" }
        }
    }
}

/// A re-provisioning estimate of the API (`ReprovisionEstimate`), in words.
pub(super) fn estimate_cell(est: &Value) -> Markup {
    html! {
        @match est["seconds"].as_i64() {
            Some(sec) => { "about " (human_seconds(sec)) " at " (text(&est["orders_per_hour"])) " orders/hour via " (est["eligible_cas"].as_array().map(|a| a.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default()) },
            None => { "no CA can take them now" },
        }
        @if !est["same_ca"].is_null() {
            br; span.muted { "re-issued from " (text(&est["same_ca"]["ca"])) " after its hold-off of " (human_seconds(est["same_ca"]["hold_off_seconds"].as_i64().unwrap_or(0))) }
        }
    }
}

fn human_seconds(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// `POST /ui/emergency/swap` → `POST /v1/swaps`, after the typed
/// confirmation; then the operation's page.
pub async fn emergency_swap(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ca = f.get("ca").cloned().unwrap_or_default();
    let reason = f.get("reason").cloned().unwrap_or_default();
    let expected = f.get("expected").cloned().unwrap_or_default();
    let confirm = f
        .get("confirm")
        .map(|x| x.trim().to_string())
        .unwrap_or_default();
    if s.may("POST", "/v1/swaps") && (confirm.is_empty() || (confirm != ca && confirm != expected))
    {
        // Show the dry run again (it also says what to type).
        let v = c
            .perform(
                &s,
                peer,
                Method::POST,
                "/v1/swaps",
                Some(json!({ "ca": ca, "reason": reason, "dry_run": true })),
            )
            .await;
        let detail = format!(
            "'confirm' must be the CA id '{ca}' or the number of names to flip ({expected}); nothing was swapped"
        );
        let body = match v {
            Ok(v) => dry_run_result(&s, &ca, &reason, &v, Some(&detail)),
            Err(r) => html! { (error_box(&r.detail)) (scope_form(&c, &s, &ca, &reason)) },
        };
        return respond(
            StatusCode::BAD_REQUEST,
            page(Some(&s), "Emergency: dry run", None, body),
        );
    }
    match c
        .perform(
            &s,
            peer,
            Method::POST,
            "/v1/swaps",
            Some(json!({ "ca": ca, "reason": reason })),
        )
        .await
    {
        Ok(v) => match v["report"]["operation_id"].as_str() {
            Some(id) => Redirect::to(&format!("/ui/operations/{}", seg(id))).into_response(),
            None => {
                let body = html! { p.notice { "Nothing was swapped: " (v["report"]["counts"].to_string()) } };
                respond(StatusCode::OK, page(Some(&s), "Emergency", None, body))
            }
        },
        Err(r) => {
            let body = html! { (error_box(&r.detail)) (scope_form(&c, &s, &ca, &reason)) };
            respond(r.status, page(Some(&s), "Emergency", None, body))
        }
    }
}

// ----- operations -------------------------------------------------------

/// `GET /ui/operations/{id}`: progress, refreshing itself until done.
pub async fn operation(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
) -> Response {
    let s = match signed_in(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let v = match c
        .perform(
            &s,
            peer,
            Method::GET,
            &format!("/v1/operations/{}", seg(&id)),
            None,
        )
        .await
    {
        Ok(v) => v,
        Err(r) => return refused(Some(&s), r),
    };
    let op = &v["operation"];
    let p = &v["progress"];
    let done = p["done"].as_bool().unwrap_or(false);
    let orders = p["orders"].as_object().cloned().unwrap_or_default();
    let n = |k: &str| p[k].as_i64().unwrap_or(0);
    let valid = orders.get("valid").and_then(Value::as_i64).unwrap_or(0);
    let open = orders.get("pending").and_then(Value::as_i64).unwrap_or(0)
        + orders
            .get("processing")
            .and_then(Value::as_i64)
            .unwrap_or(0);
    let total = (n("queued") + n("waiting") + n("blocked") + open + valid).max(1);
    let body = html! {
        dl.facts {
            dt { "kind" } dd { (text(&op["kind"])) }
            dt { "scope" } dd { (text(&op["scope"])) }
            dt { "by" } dd { (text(&op["actor"])) }
            dt { "reason" } dd { (text(&op["reason"])) }
            dt { "started" } dd { (when(op["created_at"].as_i64().unwrap_or(0))) }
            dt { "names changed" } dd { (text(&op["affected"])) }
            dt { "counts" } dd { code { (op["counts"].to_string()) } }
        }
        section data-testid="operation-progress" data-state=(if done { "done" } else { "running" }) {
            h2 { @if done { "Done" } @else { "Re-provisioning…" } }
            p { "Slots with a new certificate: " (valid) " of " (total) }
            @if n("rekey_total") > 0 {
                p data-testid="rekey-progress" { "Names with both keys new: " (n("rekey_done")) " of " (n("rekey_total")) " " (bar(n("rekey_done"), n("rekey_total"))) }
            }
            progress max=(total) value=(valid) { (valid) " of " (total) }
            table {
                tbody {
                    tr { th { "queued (no CA chosen yet)" } td { (n("queued")) } }
                    tr { th { "waiting (hold-off)" } td { (n("waiting")) @if let Some(u) = p["waiting_until"].as_i64() { span.muted { " until " (when(u)) } } } }
                    tr { th { "ordering" } td { (open) } }
                    tr { th { "failing (retried)" } td { (n("failing")) } }
                    tr { th { "blocked (no CA can take them)" } td class=(if n("blocked") > 0 { "bad" } else { "" }) { (n("blocked")) } }
                    @for (k, x) in &orders { tr { td { "orders " (k) } td { (text(x)) } } }
                }
            }
            @if let Some(errors) = p["errors"].as_array() {
                @if !errors.is_empty() {
                    h3 { "Failing orders" }
                    ul { @for e in errors { li { (text(&e[0])) " " (text(&e[1])) ": " span.bad { (text(&e[2])) } } } }
                }
            }
            @if let Some(tl) = v["time_left"].as_array() {
                @for t in tl { p.muted { (text(&t["ca"])) ": about " (t["seconds_left"].as_i64().map(human_seconds).unwrap_or_else(|| "unknown time".into())) " left" } }
            }
        }
        @if !done { p.muted { "This page refreshes every 2 seconds until the operation is done." } }
    };
    respond(
        StatusCode::OK,
        page(
            Some(&s),
            &format!("Operation {id}"),
            (!done).then_some((2, None)),
            body,
        ),
    )
}

/// `GET /ui/operations`.
pub async fn operations(State(c): State<Console>, headers: HeaderMap, peer: Peer) -> Response {
    list_page(&c, &headers, peer, "Operations", "/v1/operations?limit=100", |_, items| {
        html! { table { thead { tr { th { "started" } th { "kind" } th { "scope" } th { "by" } th { "reason" } th { "changed" } th { "open" } } }
            tbody { @for o in items { tr {
                td { a href=(format!("/ui/operations/{}", seg(&text(&o["id"])))) { (when(o["created_at"].as_i64().unwrap_or(0))) } }
                td { (text(&o["kind"])) } td { (text(&o["scope"])) } td { (text(&o["actor"])) }
                td { (text(&o["reason"])) } td { (text(&o["affected"])) } td { (text(&o["reprovision_open"])) }
            } } } } }
    })
    .await
}

/// `GET /ui/cas`.
pub async fn cas(State(c): State<Console>, headers: HeaderMap, peer: Peer) -> Response {
    list_page(&c, &headers, peer, "CAs", "/v1/cas", |_, items| {
        html! { table { thead { tr { th { "id" } th { "name" } th { "root group" } th { "active names" } th { "slots" } th { "orders/hour" } th { "trust" } } }
            tbody { @for x in items { tr {
                td { (text(&x["id"])) } td { (text(&x["name"])) } td { (text(&x["root_group"])) }
                td { (text(&x["active_names"])) } td { (text(&x["slots"])) } td { (text(&x["orders_per_hour"])) }
                td { @if x["distrusted"] == true { strong.bad { "distrusted" } } @else { "trusted" } }
            } } } } }
    })
    .await
}

/// `GET /ui/alerts`.
pub async fn alerts(State(c): State<Console>, headers: HeaderMap, peer: Peer) -> Response {
    list_page(&c, &headers, peer, "Alerts", "/v1/alerts?open=false&limit=200", |_, items| {
        html! { table { thead { tr { th { "last" } th { "severity" } th { "kind" } th { "subject" } th { "message" } th { "resolved" } } }
            tbody { @for a in items { tr class=(severity_class(&a["severity"])) {
                td { (when(a["last_at"].as_i64().unwrap_or(0))) } td { (text(&a["severity"])) } td { (text(&a["kind"])) }
                td { (text(&a["subject"])) } td { (text(&a["message"])) }
                td { @if let Some(t) = a["resolved_at"].as_i64() { (when(t)) } @else { "open" } }
            } } } } }
    })
    .await
}

/// `GET /ui/incidents`.
pub async fn incidents(State(c): State<Console>, headers: HeaderMap, peer: Peer) -> Response {
    incidents_page(&c, &headers, peer, None).await
}

async fn incidents_page(
    c: &Console,
    headers: &HeaderMap,
    peer: Peer,
    outcome: Option<Result<String, Refused>>,
) -> Response {
    let status = match &outcome {
        Some(Err(r)) => r.status,
        _ => StatusCode::OK,
    };
    let r = list_page(c, headers, peer, "Incidents", "/v1/incidents?limit=100", |s, items| {
        let may_close = s.may("POST", "/v1/incidents/{id}/close");
        html! {
            @match &outcome { Some(Err(r)) => (error_box(&r.detail)), Some(Ok(m)) => p.notice { (m) }, None => {} }
            table { thead { tr { th { "opened" } th { "CA" } th { "state" } th { "summary" } th { "" } } }
            tbody { @for i in items { tr {
                td { (when(i["opened_at"].as_i64().unwrap_or(0))) } td { (text(&i["ca_id"])) } td { (text(&i["state"])) }
                td { (text(&i["summary"]))
                    @if !i["close_reason"].is_null() { br; span.muted { "closed by " (text(&i["closed_by"])) ": " (text(&i["close_reason"])) } } }
                td { @if may_close && i["state"] == "open" {
                    form.inline method="post" action=(format!("/ui/incidents/{}/close", seg(&text(&i["id"])))) {
                        (csrf_field(s))
                        input type="text" name="reason" placeholder="reason" aria-label="reason";
                        " " button type="submit" { "Close" }
                    }
                } }
            } } } }
        }
    })
    .await;
    if status != StatusCode::OK && r.status() == StatusCode::OK {
        let (mut parts, body) = r.into_parts();
        parts.status = status;
        return Response::from_parts(parts, body);
    }
    r
}

/// `POST /ui/incidents/{id}/close` → `POST /v1/incidents/{id}/close`.
pub async fn close_incident(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let got = c
        .perform(
            &s,
            peer,
            Method::POST,
            &format!("/v1/incidents/{}/close", seg(&id)),
            Some(json!({ "reason": f.get("reason").cloned().unwrap_or_default() })),
        )
        .await
        .map(|_| format!("incident {id} closed"));
    incidents_page(&c, &headers, peer, Some(got)).await
}

/// `GET /ui/tokens` (admin): the list, and create and delete forms
/// (`actions::tokens_page`).
pub async fn tokens(State(c): State<Console>, headers: HeaderMap, peer: Peer) -> Response {
    super::actions::tokens_page(&c, &headers, peer, None).await
}

/// A page showing the `items` of one `/v1` list.
pub(super) async fn list_page(
    c: &Console,
    headers: &HeaderMap,
    peer: Peer,
    title: &str,
    v1: &str,
    render: impl FnOnce(&Session, &[Value]) -> Markup,
) -> Response {
    let s = match signed_in(c, headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c.perform(&s, peer, Method::GET, v1, None).await {
        Ok(v) => {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let body = html! {
                @if items.is_empty() { p.muted { "None." } }
                div.table-wrap { (render(&s, &items)) }
            };
            respond(StatusCode::OK, page(Some(&s), title, None, body))
        }
        Err(r) => refused(Some(&s), r),
    }
}

/// `GET /ui/audit?actor=&action=&name=`.
pub async fn audit(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Fields>,
) -> Response {
    let s = match signed_in(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refusal(&s, "GET", "/v1/events") {
        return r;
    }
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let before = match get("before").map(str::parse::<i64>).transpose() {
        Ok(b) => b,
        Err(_) => {
            return html::error_page(
                Some(&s),
                StatusCode::BAD_REQUEST,
                "'before' must be an event number",
            );
        }
    };
    let events = match c
        .api
        .store
        .console()
        .audit_page(get("actor"), get("action"), get("name"), before, 100)
        .await
    {
        Ok(e) => e,
        Err(e) => return refused(Some(&s), e.into()),
    };
    let v = |k: &str| q.get(k).cloned().unwrap_or_default();
    let next = (events.len() == 100)
        .then(|| events.last().map(|(id, _)| *id))
        .flatten();
    let body = html! {
        form.filters method="get" action="/ui/audit" {
            label { "Actor" br; input type="text" name="actor" value=(v("actor")); }
            label { "Action" br; input type="text" name="action" value=(v("action")) placeholder="name.swap"; }
            label { "Name" br; input type="text" name="name" value=(v("name")); }
            button type="submit" { "Filter" }
        }
        (audit_table(&events))
        @if let Some(n) = next {
            @let qs = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q.iter().filter(|(k, _)| *k != "before"))
                .append_pair("before", &n.to_string())
                .finish();
            p { a href=(format!("/ui/audit?{qs}")) { "Older →" } }
        }
    };
    respond(StatusCode::OK, page(Some(&s), "Audit log", None, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_draws_one_rect_per_ca_and_day_with_counts() {
        let mut c = OverviewCounts::default();
        c.expiry.insert(("a".into(), 3), 10);
        c.expiry.insert(("b".into(), 3), 5);
        c.expiry.insert(("a".into(), 89), 1);
        let svg = timeline(&c).into_string();
        assert_eq!(svg.matches("<rect x=").count(), 3, "{svg}");
        assert!(svg.contains("a: 10 on day 3"), "{svg}");
        assert!(svg.contains("16 certificates expire"), "{svg}");
        let empty = timeline(&OverviewCounts::default()).into_string();
        assert!(empty.contains("No certificate expires"));
    }

    #[test]
    fn step_lines_say_ok_and_ng() {
        let st = json!({"step": "TLS", "ok": false, "detail": "handshake"});
        let line = step_line(&st);
        assert!(line.contains("ok: NG"), "{line}");
        assert!(line.contains("detail: handshake"), "{line}");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_seconds(30), "30 s");
        assert_eq!(human_seconds(600), "10 min");
        assert_eq!(human_seconds(7200), "2.0 h");
    }
}
