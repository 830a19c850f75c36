//! The console's page frame and shared pieces, as `maud` templates
//! (checked and escaped at compile time), and its one stylesheet, compiled
//! into the binary. No script anywhere.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Session;

const STYLE: &str = include_str!("style.css");

/// `GET /ui/style.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// Where each page is in the navigation (`nav` marks the current one).
const NAV: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/names", "Names"),
    ("/ui/emergency", "Emergency"),
    ("/ui/cas", "CAs"),
    ("/ui/alerts", "Alerts"),
    ("/ui/incidents", "Incidents"),
    ("/ui/operations", "Operations"),
    ("/ui/audit", "Audit log"),
    ("/ui/tokens", "Tokens"),
];

/// A whole page: header with the person and sign-out, navigation, body.
/// `refresh`: reload after that many seconds — this page again, or the
/// given console path.
pub fn page(
    s: Option<&Session>,
    title: &str,
    refresh: Option<(u32, Option<&str>)>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some((secs, to)) = refresh {
                    @match to {
                        Some(to) => meta http-equiv="refresh" content=(format!("{secs};url={to}"));,
                        None => meta http-equiv="refresh" content=(secs);,
                    }
                }
                title { (title) " · twincert" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header.top {
                    a.brand href="/ui/" { "twincert" }
                    @if let Some(s) = s {
                        nav aria-label="Pages" {
                            @for (href, label) in NAV {
                                @if *href != "/ui/tokens" || s.may("GET", "/v1/tokens") {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        div.who {
                            span data-testid="signed-in-as" {
                                (s.principal.name) " · " (s.principal.role.as_str())
                            }
                            form method="post" action="/ui/logout" {
                                (csrf_field(s))
                                button type="submit" data-testid="sign-out" { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden CSRF field of a session's forms.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// The error box (`data-testid="error"`) with the problem's detail text.
pub fn error_box(detail: &str) -> Markup {
    html! { p.error role="alert" data-testid="error" { (detail) } }
}

/// An HTML answer with a status.
pub fn respond(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// A page that only says what went wrong, with the status of the problem.
pub fn error_page(s: Option<&Session>, status: StatusCode, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            s,
            title,
            None,
            html! {
                (error_box(detail))
                @if s.is_none() { p { a href="/ui/login" { "Sign in" } } }
            },
        ),
    )
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn when(t: i64) -> String {
    when_text(&serde_json::Value::String(crate::clock::rfc3339(t)))
}

/// An RFC 3339 text from the API, shortened to the minute.
pub fn when_text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(|s| s.replacen('T', " ", 1).chars().take(16).collect::<String>() + " UTC")
        .unwrap_or_else(|| "—".into())
}

/// A JSON value as text (strings without quotes, null as a dash).
pub fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A bar of `n` out of `total` (a native `meter`: no script, no inline
/// style, which the CSP forbids).
pub fn bar(n: i64, total: i64) -> Markup {
    html! { meter min="0" max=(total.max(1)) value=(n) { (n) " of " (total) } }
}
