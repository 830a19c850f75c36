//! The console's actions beyond a name's page and the CA-wide swap: CA
//! distrust and mass re-key on the emergency page, token creation and
//! deletion on the tokens page. Each action is the `/v1` request it stands
//! for (`Console::perform`, the session's principal), after the CSRF check:
//! the API's route table decides who may (distrust and tokens need admin,
//! a re-key operator), and the API's problem text is what a refusal shows.
//!
//! A distrust or re-key is always shown as a dry run first (the API's
//! `dry_run`), and runs only after a typed confirmation (the CA id, or the
//! number of names); then the browser goes to the operation's live page. A
//! token's secret appears once, in the answer to its creation, and nowhere
//! else: not in a later page, not in a log (the console logs no bodies).

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::html::{csrf_field, error_box, page, respond, text, when};
use super::pages::{estimate_cell, list_page, posted, scope_form};
use super::{Console, Fields, Peer, Refused, Session, seg};

/// The `/v1` route of a distrust (its role rule: admin).
const DISTRUST: &str = "/v1/cas/{id}/distrust";

fn field(f: &Fields, k: &str) -> String {
    f.get(k).cloned().unwrap_or_default()
}

/// The confirmation a person typed, trimmed.
fn typed(f: &Fields) -> String {
    f.get("confirm")
        .map(|x| x.trim().to_string())
        .unwrap_or_default()
}

/// Where a real run leads: the operation's live page, or a note when the
/// API started none.
fn to_operation(s: &Session, id: Option<&str>, what: &str) -> Response {
    match id {
        Some(id) => Redirect::to(&format!("/ui/operations/{}", seg(id))).into_response(),
        None => respond(
            StatusCode::OK,
            page(
                Some(s),
                "Emergency",
                None,
                html! { p.notice role="status" { (what) } },
            ),
        ),
    }
}

/// A page of the emergency section with an error or the form again.
fn emergency_refused(s: &Session, r: &Refused, form: Markup) -> Response {
    respond(
        r.status,
        page(
            Some(s),
            "Emergency",
            None,
            html! { (error_box(&r.detail)) (form) },
        ),
    )
}

// ----- CA distrust ------------------------------------------------------

/// The distrust form of the emergency page; nothing for a role the API
/// would refuse.
pub(super) fn distrust_form(c: &Console, s: &Session, ca: &str, reason: &str) -> Markup {
    if !s.may("POST", DISTRUST) {
        return html! {};
    }
    html! {
        h2 { "Distrust a CA" }
        form.action method="post" action="/ui/emergency/distrust/dry-run" data-testid="distrust-form" {
            (csrf_field(s))
            label for="distrust-ca" { "CA never to be chosen again" }
            select #distrust-ca name="ca" data-testid="distrust-ca" {
                @for v in c.api.cas.iter() {
                    option value=(v.id) selected[v.id == ca] { (v.id) }
                }
            }
            label for="distrust-reason" { "Reason (for the audit log)" }
            input #distrust-reason type="text" name="reason" value=(reason) data-testid="distrust-reason";
            " "
            button type="submit" data-testid="distrust-dry-run-submit" { "Dry run" }
        }
        p.muted { "Distrust swaps every name active on the CA to its standby and re-provisions every slot the CA holds at another CA. The dry run changes nothing." }
    }
}

/// `POST /ui/emergency/distrust/dry-run` → `POST /v1/cas/{id}/distrust`
/// with `dry_run`.
pub async fn distrust_dry_run(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (ca, reason) = (field(&f, "ca"), field(&f, "reason"));
    distrust_preview(&c, &s, peer, &ca, &reason, None).await
}

/// The distrust's dry run, shown with `error` (a refused confirmation)
/// and that status, or the API's refusal of the dry run itself.
async fn distrust_preview(
    c: &Console,
    s: &Session,
    peer: Peer,
    ca: &str,
    reason: &str,
    error: Option<&str>,
) -> Response {
    let got = c
        .perform(
            s,
            peer,
            Method::POST,
            &format!("/v1/cas/{}/distrust", seg(ca)),
            Some(json!({ "reason": reason, "dry_run": true })),
        )
        .await;
    match got {
        Err(r) => emergency_refused(s, &r, distrust_form(c, s, ca, reason)),
        Ok(v) => {
            let status = if error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            respond(
                status,
                page(
                    Some(s),
                    "Emergency: distrust dry run",
                    None,
                    distrust_dry_run_page(s, ca, reason, &v, error),
                ),
            )
        }
    }
}

fn distrust_dry_run_page(
    s: &Session,
    ca: &str,
    reason: &str,
    v: &Value,
    error: Option<&str>,
) -> Markup {
    let report = &v["report"];
    let counts = report["counts"].as_object().cloned().unwrap_or_default();
    let flips = counts.get("swap").and_then(Value::as_i64).unwrap_or(0);
    let skipped: i64 = counts
        .iter()
        .filter(|(k, _)| *k != "swap")
        .filter_map(|(_, n)| n.as_i64())
        .sum();
    let from = report["reprovision_from"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let sample = report["sample"].as_array().cloned().unwrap_or_default();
    html! {
        @if let Some(e) = error { (error_box(e)) }
        p { "Distrust " strong { (ca) } ": it is never chosen again. Reason: " (reason) }
        table {
            tbody {
                tr { th { "names that flip to their standby" } td data-testid="distrust-flip-count" { (flips) } }
                tr { th { "names that cannot flip (no usable standby)" } td data-testid="distrust-skipped" { (skipped) } }
                @for (k, n) in &counts {
                    @if k != "swap" { tr { td { "  skipped: " (k) } td { (text(n)) } } }
                }
                tr { th { "slots re-provisioned at another CA" } td data-testid="distrust-reprovision" { (text(&report["reprovision"])) } }
                @for (k, n) in &from { tr { td { "  now on " (k) } td { (text(n)) } } }
                tr { th { "re-provisioning estimate" } td { (estimate_cell(&v["estimate"])) } }
            }
        }
        @if !sample.is_empty() {
            p.muted { "For example: "
                (sample.iter().map(|p| format!("{} ({})", text(&p[0]), text(&p[1]))).collect::<Vec<_>>().join(", ")) }
        }
        form.action method="post" action="/ui/emergency/distrust" {
            (csrf_field(s))
            input type="hidden" name="ca" value=(ca);
            input type="hidden" name="reason" value=(reason);
            label for="distrust-confirm" { "To distrust, type the CA id (" code { (ca) } ")" }
            input #distrust-confirm type="text" name="confirm" autocomplete="off" data-testid="distrust-confirm-input";
            " "
            button.danger type="submit" data-testid="distrust-confirm-submit" { "Distrust now" }
        }
    }
}

/// `POST /ui/emergency/distrust` → `POST /v1/cas/{id}/distrust`, after the
/// CA id was typed; then the operation's page.
pub async fn distrust(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (ca, reason) = (field(&f, "ca"), field(&f, "reason"));
    // A role the API refuses is refused by the API, with its words.
    if s.may("POST", DISTRUST) && typed(&f) != ca {
        let detail = format!(
            "'confirm' must be the CA id '{ca}', typed, to distrust it; nothing was changed"
        );
        return distrust_preview(&c, &s, peer, &ca, &reason, Some(&detail)).await;
    }
    match c
        .perform(
            &s,
            peer,
            Method::POST,
            &format!("/v1/cas/{}/distrust", seg(&ca)),
            Some(json!({ "reason": reason })),
        )
        .await
    {
        Ok(v) => to_operation(
            &s,
            v["report"]["operation_id"].as_str(),
            &format!("{ca} is distrusted; nothing needed re-provisioning"),
        ),
        Err(r) => emergency_refused(&s, &r, distrust_form(&c, &s, &ca, &reason)),
    }
}

// ----- re-key -----------------------------------------------------------

/// The scopes `POST /v1/rekeys` takes, as the form's `scope` values.
const REKEY_SCOPES: &[(&str, &str)] = &[
    ("ca", "names active on a CA"),
    ("names", "listed names"),
    ("spki", "names whose active key has this SPKI SHA-256"),
    ("all", "every name"),
];

/// The `/v1/rekeys` body of a re-key form: only the chosen scope's field
/// (an unknown scope sends none, so the API names the choices).
fn rekey_body(f: &Fields, dry_run: bool) -> Value {
    let mut body = json!({ "reason": field(f, "reason"), "dry_run": dry_run });
    match f.get("scope").map(String::as_str) {
        Some("ca") => body["ca"] = json!(field(f, "ca")),
        Some("names") => body["names"] = json!(listed_names(&field(f, "names"))),
        Some("spki") => body["spki_sha256"] = json!(field(f, "spki_sha256").trim()),
        Some("all") => body["all"] = json!(true),
        _ => {}
    }
    body
}

/// Names typed one per line (or separated by spaces or commas).
fn listed_names(raw: &str) -> Vec<&str> {
    raw.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|n| !n.is_empty())
        .collect()
}

/// The re-key form of the emergency page, filled with `f`; nothing for a
/// role the API would refuse.
pub(super) fn rekey_form(c: &Console, s: &Session, f: &Fields) -> Markup {
    if !s.may("POST", "/v1/rekeys") {
        return html! {};
    }
    let scope = f.get("scope").map(String::as_str).unwrap_or("ca");
    html! {
        h2 { "Re-key" }
        form.action method="post" action="/ui/emergency/rekey/dry-run" data-testid="rekey-form" {
            (csrf_field(s))
            label for="rekey-scope" { "Replace both keys of" }
            select #rekey-scope name="scope" data-testid="rekey-scope" {
                @for (v, label) in REKEY_SCOPES {
                    option value=(v) selected[*v == scope] { (label) }
                }
            }
            label for="rekey-ca" { "CA (scope: names active on a CA)" }
            select #rekey-ca name="ca" data-testid="rekey-ca" {
                @for v in c.api.cas.iter() {
                    option value=(v.id) selected[Some(&v.id) == f.get("ca")] { (v.id) }
                }
            }
            label for="rekey-names" { "Names, one per line (scope: listed names)" }
            textarea #rekey-names name="names" rows="3" data-testid="rekey-names" { (field(f, "names")) }
            label for="rekey-spki" { "SPKI SHA-256, 64 hex digits (scope: key)" }
            input #rekey-spki type="text" name="spki_sha256" value=(field(f, "spki_sha256")) data-testid="rekey-spki";
            label for="rekey-reason" { "Reason (for the audit log)" }
            input #rekey-reason type="text" name="reason" value=(field(f, "reason")) data-testid="rekey-reason";
            " "
            button type="submit" data-testid="rekey-dry-run-submit" { "Dry run" }
        }
        p.muted { "A re-key orders two new certificates per name under new keys: the standby first, then the active slot once the standby holds its new certificate. The dry run changes nothing." }
    }
}

/// `POST /ui/emergency/rekey/dry-run` → `POST /v1/rekeys` with `dry_run`.
pub async fn rekey_dry_run(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    rekey_preview(&c, &s, peer, &f, None).await
}

async fn rekey_preview(
    c: &Console,
    s: &Session,
    peer: Peer,
    f: &Fields,
    error: Option<&str>,
) -> Response {
    match c
        .perform(
            s,
            peer,
            Method::POST,
            "/v1/rekeys",
            Some(rekey_body(f, true)),
        )
        .await
    {
        Err(r) => emergency_refused(s, &r, rekey_form(c, s, f)),
        Ok(v) => {
            let status = if error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            respond(
                status,
                page(
                    Some(s),
                    "Emergency: re-key dry run",
                    None,
                    rekey_dry_run_page(s, f, &v, error),
                ),
            )
        }
    }
}

/// What the scope of a re-key form says, in words.
fn rekey_scope_text(f: &Fields) -> String {
    match f.get("scope").map(String::as_str) {
        Some("ca") => format!("every name active on {}", field(f, "ca")),
        Some("names") => format!("{} listed name(s)", listed_names(&field(f, "names")).len()),
        Some("spki") => format!(
            "names whose active key is {}",
            field(f, "spki_sha256").trim()
        ),
        Some("all") => "every name".into(),
        _ => "no scope".into(),
    }
}

fn rekey_dry_run_page(s: &Session, f: &Fields, v: &Value, error: Option<&str>) -> Markup {
    let names = v["names"].as_i64().unwrap_or(0);
    let ca = (f.get("scope").map(String::as_str) == Some("ca")).then(|| field(f, "ca"));
    html! {
        @if let Some(e) = error { (error_box(e)) }
        p { "Re-key " (rekey_scope_text(f)) ". Reason: " (field(f, "reason")) }
        table {
            tbody {
                tr { th { "names whose two keys are replaced" } td data-testid="rekey-name-count" { (names) } }
                tr { th { "orders" } td { (text(&v["estimate"]["orders"])) } }
                tr { th { "estimate" } td { (estimate_cell(&v["estimate"])) } }
            }
        }
        form.action method="post" action="/ui/emergency/rekey" {
            (csrf_field(s))
            @for k in ["scope", "ca", "names", "spki_sha256", "reason"] {
                input type="hidden" name=(k) value=(field(f, k));
            }
            input type="hidden" name="expected" value=(names);
            label for="rekey-confirm" {
                "To re-key, type the number of names (" code { (names) } ")"
                @if let Some(ca) = &ca { " or the CA id (" code { (ca) } ")" }
            }
            input #rekey-confirm type="text" name="confirm" autocomplete="off" data-testid="rekey-confirm-input";
            " "
            button.danger type="submit" data-testid="rekey-confirm-submit" { "Re-key now" }
        }
    }
}

/// `POST /ui/emergency/rekey` → `POST /v1/rekeys`, after the count (or the
/// CA id) was typed; then the operation's page.
pub async fn rekey(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let confirm = typed(&f);
    let expected = field(&f, "expected");
    let ca_typed = f.get("scope").map(String::as_str) == Some("ca") && confirm == field(&f, "ca");
    if s.may("POST", "/v1/rekeys") && (confirm.is_empty() || (confirm != expected && !ca_typed)) {
        let detail = format!(
            "'confirm' must be the number of names to re-key ({expected}){}; nothing was changed",
            if f.get("scope").map(String::as_str) == Some("ca") {
                format!(" or the CA id '{}'", field(&f, "ca"))
            } else {
                String::new()
            }
        );
        return rekey_preview(&c, &s, peer, &f, Some(&detail)).await;
    }
    match c
        .perform(
            &s,
            peer,
            Method::POST,
            "/v1/rekeys",
            Some(rekey_body(&f, false)),
        )
        .await
    {
        Ok(v) => to_operation(
            &s,
            v["operation_id"].as_str(),
            "Nothing to re-key: the scope holds no name",
        ),
        Err(r) => emergency_refused(&s, &r, rekey_form(&c, &s, &f)),
    }
}

// ----- tokens -----------------------------------------------------------

/// Choices of the token form's expiry (`expires_in_seconds`; empty for
/// never).
const EXPIRIES: &[(&str, &str)] = &[
    ("", "never"),
    ("86400", "1 day"),
    ("2592000", "30 days"),
    ("7776000", "90 days"),
    ("31536000", "365 days"),
];

/// What a tokens page shows above the list.
pub(super) enum TokenOutcome {
    /// A token was created: its one showing of the secret.
    Created { name: String, secret: String },
    /// A token was deleted.
    Deleted(String),
    /// The API (or the confirmation check) refused; the form is kept.
    Refused(Refused, Fields),
}

/// `GET /ui/tokens` (admin), and the page after a token action.
pub(super) async fn tokens_page(
    c: &Console,
    headers: &HeaderMap,
    peer: Peer,
    outcome: Option<TokenOutcome>,
) -> Response {
    let status = match &outcome {
        Some(TokenOutcome::Refused(r, _)) => r.status,
        _ => StatusCode::OK,
    };
    let r = list_page(c, headers, peer, "Tokens", "/v1/tokens", |s, items| {
        let may_create = s.may("POST", "/v1/tokens");
        let may_delete = s.may("DELETE", "/v1/tokens/{token}");
        let kept = match &outcome {
            Some(TokenOutcome::Refused(_, f)) => f.clone(),
            _ => Fields::new(),
        };
        html! {
            @match &outcome {
                Some(TokenOutcome::Created { name, secret }) => {
                    section.notice role="status" data-testid="token-created" {
                        p { "Token " strong { (name) } " created. Its secret is shown " strong { "only this once" } ": copy it now." }
                        p { code data-testid="token-secret" { (secret) } }
                    }
                },
                Some(TokenOutcome::Deleted(name)) => p.notice role="status" data-testid="token-deleted" { "Token " (name) " deleted: it no longer signs in." },
                Some(TokenOutcome::Refused(r, _)) => (error_box(&r.detail)),
                None => {},
            }
            @if may_create {
                form.action method="post" action="/ui/tokens" data-testid="token-create-form" {
                    (csrf_field(s))
                    label for="token-name" { "Name (a DNS-style label, e.g. deploy-bot)" }
                    input #token-name type="text" name="name" value=(field(&kept, "name")) data-testid="token-name";
                    label for="token-role" { "Role" }
                    select #token-role name="role" data-testid="token-role" {
                        @for r in ["viewer", "deployer", "operator", "admin"] {
                            option value=(r) selected[kept.get("role").map(String::as_str) == Some(r)] { (r) }
                        }
                    }
                    label for="token-expiry" { "Expires" }
                    select #token-expiry name="expires_in_seconds" data-testid="token-expiry" {
                        @for (v, label) in EXPIRIES {
                            option value=(v) selected[kept.get("expires_in_seconds").map(String::as_str) == Some(*v)] { (label) }
                        }
                    }
                    " "
                    button type="submit" data-testid="token-create-submit" { "Create token" }
                }
            }
            p.muted { "A token's secret is shown once, when it is created; only its hash is stored." }
            table { thead { tr { th { "name" } th { "role" } th { "created" } th { "last used" } th { "expires" } @if may_delete { th { "delete" } } } }
            tbody { @for t in items { tr data-testid="token-row" data-name=(text(&t["name"])) {
                td { (text(&t["name"])) } td { (text(&t["role"])) } td { (when(t["created_at"].as_i64().unwrap_or(0))) }
                td { @if let Some(u) = t["last_used_at"].as_i64() { (when(u)) } @else { "never" } }
                td { @if let Some(u) = t["expires_at"].as_i64() { (when(u)) } @else { "never" } }
                @if may_delete { td {
                    form.inline method="post" action=(format!("/ui/tokens/{}/delete", seg(&text(&t["name"])))) {
                        (csrf_field(s))
                        input type="text" name="confirm" autocomplete="off" placeholder="type the name" aria-label=(format!("type {} to confirm", text(&t["name"]))) data-testid="token-delete-confirm";
                        " " button.danger type="submit" data-testid="token-delete-submit" { "Delete" }
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

/// `POST /ui/tokens` → `POST /v1/tokens`; the answer shows the secret,
/// once.
pub async fn create_token(
    State(c): State<Console>,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&c, &headers, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut body = json!({ "name": field(&f, "name"), "role": field(&f, "role") });
    match f.get("expires_in_seconds").map(|x| x.trim()) {
        None | Some("") => {}
        Some(x) => match x.parse::<u64>() {
            Ok(n) => body["expires_in_seconds"] = json!(n),
            Err(_) => {
                let r = Refused {
                    status: StatusCode::BAD_REQUEST,
                    detail: format!(
                        "'expires_in_seconds' must be a whole number of seconds or empty for never; got '{}'",
                        x.chars().take(40).collect::<String>()
                    ),
                };
                return tokens_page(&c, &headers, peer, Some(TokenOutcome::Refused(r, f))).await;
            }
        },
    }
    let outcome = match c
        .perform(&s, peer, Method::POST, "/v1/tokens", Some(body))
        .await
    {
        Ok(v) => TokenOutcome::Created {
            name: text(&v["name"]),
            secret: text(&v["token"]),
        },
        Err(r) => TokenOutcome::Refused(r, f),
    };
    tokens_page(&c, &headers, peer, Some(outcome)).await
}

/// `POST /ui/tokens/{name}/delete` → `DELETE /v1/tokens/{name}`, after the
/// name was typed to confirm.
pub async fn delete_token(
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
    if s.may("DELETE", "/v1/tokens/{token}") && typed(&f) != name {
        let r = Refused {
            status: StatusCode::BAD_REQUEST,
            detail: format!(
                "'confirm' must be the token name '{name}', typed, to delete it; nothing was deleted"
            ),
        };
        return tokens_page(
            &c,
            &headers,
            peer,
            Some(TokenOutcome::Refused(r, Fields::new())),
        )
        .await;
    }
    let outcome = match c
        .perform(
            &s,
            peer,
            Method::DELETE,
            &format!("/v1/tokens/{}", seg(&name)),
            None,
        )
        .await
    {
        Ok(_) => TokenOutcome::Deleted(name),
        Err(r) => TokenOutcome::Refused(r, Fields::new()),
    };
    tokens_page(&c, &headers, peer, Some(outcome)).await
}

/// The emergency page's forms besides the CA-wide swap (which is
/// `scope_form`, kept where it was).
pub(super) fn emergency_forms(c: &Console, s: &Session) -> Markup {
    html! {
        h2 { "Swap every name active on a CA" }
        (scope_form(c, s, "", ""))
        (rekey_form(c, s, &Fields::new()))
        (distrust_form(c, s, "", ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_rekey_form_becomes_the_body_of_its_scope_only() {
        let cases = [
            (
                "ca",
                fields(&[
                    ("scope", "ca"),
                    ("ca", "pebble-a"),
                    ("names", "x.test"),
                    ("reason", "r"),
                ]),
                json!({"reason": "r", "dry_run": true, "ca": "pebble-a"}),
            ),
            (
                "names, several separators",
                fields(&[
                    ("scope", "names"),
                    ("names", "a.test\r\nb.test, c.test  \n"),
                    ("reason", "r"),
                ]),
                json!({"reason": "r", "dry_run": true, "names": ["a.test", "b.test", "c.test"]}),
            ),
            (
                "spki, trimmed",
                fields(&[("scope", "spki"), ("spki_sha256", " ab "), ("reason", "r")]),
                json!({"reason": "r", "dry_run": true, "spki_sha256": "ab"}),
            ),
            (
                "all",
                fields(&[("scope", "all"), ("ca", "pebble-a"), ("reason", "r")]),
                json!({"reason": "r", "dry_run": true, "all": true}),
            ),
            (
                "unknown scope: none, so the API names the choices",
                fields(&[("scope", "everything"), ("reason", "r")]),
                json!({"reason": "r", "dry_run": true}),
            ),
        ];
        for (case, f, want) in cases {
            assert_eq!(rekey_body(&f, true), want, "{case}");
        }
    }
}
