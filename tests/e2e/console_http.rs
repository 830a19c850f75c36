//! The operator console (issue 18) over HTTP without a browser, against
//! the real binary and two Pebbles: token sign-in, sessions, CSRF, the
//! role rules of the API route table, the API's problem texts in the
//! page's error box, security headers, sign-out. The browser tests
//! (headless Chromium, a real OpenID Provider) live under `tests/console/`.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::harness::TwoCas;
use crate::server::{ADMIN_TOKEN, Server, ServerOptions};

const CSP: &str = "default-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A browser-like client for the console: keeps its cookies by hand,
/// follows no redirect, and fails the test on any 5xx.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        between(&self.body, "name=\"csrf\" value=\"", "\"").unwrap_or_default()
    }

    /// The text of the `error` box, unescaped.
    fn error(&self) -> Option<String> {
        between(&self.body, "data-testid=\"error\">", "<").map(|t| unescape(&t))
    }

    fn has(&self, testid: &str) -> bool {
        self.body.contains(&format!("data-testid=\"{testid}\""))
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(s[i..i + j].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: server.base(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take_cookies(&mut self, h: &HeaderMap) {
        for v in h.get_all(SET_COOKIE) {
            let v = v.to_str().unwrap_or_default();
            let Some((kv, _)) = v.split_once(';').or(Some((v, ""))) else {
                continue;
            };
            let Some((k, val)) = kv.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(n, _)| n != k);
            if !val.is_empty() && !v.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, what: &str) -> Page {
        let rsp = req
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .expect(what);
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let body = rsp.text().await.unwrap_or_default();
        assert!(!status.is_server_error(), "{what}: {status} {body}");
        self.take_cookies(&headers);
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req, &format!("GET {path}")).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, &format!("POST {path}")).await
    }

    /// Signs in with `token`; asserts the redirect and the cookie's flags.
    async fn sign_in(&mut self, token: &str) -> Page {
        let login = self.get("/ui/login").await;
        assert_eq!(login.status, StatusCode::OK);
        assert!(login.has("token-input") && login.has("token-submit"));
        let csrf = login.csrf();
        let p = self
            .post("/ui/login/token", &[("csrf", &csrf), ("token", token)])
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        assert_eq!(p.location(), "/ui/");
        p
    }
}

async fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(m, format!("{}{path}", server.base()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let rsp = req.send().await.expect("API request");
    let status = rsp.status().as_u16();
    (status, rsp.json().await.unwrap_or(Value::Null))
}

async fn token(server: &Server, name: &str, role: &str) -> String {
    let (status, v) = api(
        server,
        "POST",
        "/v1/tokens",
        ADMIN_TOKEN,
        Some(json!({"name": name, "role": role})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().expect("token").to_string()
}

async fn active_slot(server: &Server, name: &str) -> String {
    server.name(name).await["active"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_with_a_token_and_refuses_what_the_api_refuses() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let server = Server::start(&cas, ServerOptions::new(url)).await;
    for name in ["a.example.test", "b.example.test"] {
        let (status, body) = server.create(json!({ "name": name })).await;
        assert_eq!(status, 201, "{body}");
    }
    server.wait_ready("a.example.test", 60).await;
    server.wait_ready("b.example.test", 60).await;
    let viewer = token(&server, "t-viewer", "viewer").await;
    let operator = token(&server, "t-operator", "operator").await;

    // Not signed in: every page leads to the sign-in page.
    let mut b = Browser::new(&server);
    let p = b.get("/ui/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/ui/login");

    // Security headers on every answer, the sign-in page included.
    let login = b.get("/ui/login").await;
    for (h, want) in [
        ("content-security-policy", CSP),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(
            login.headers.get(h).and_then(|v| v.to_str().ok()),
            Some(want),
            "{h}"
        );
    }
    assert!(!login.body.contains("<script"), "no script on the page");

    // A sign-in without the form's CSRF value, and with a bad token.
    let p = b
        .post(
            "/ui/login/token",
            &[("csrf", "forged"), ("token", &operator)],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(!b.cookies.iter().any(|(k, _)| k == "twincert_session"));
    let csrf = b.get("/ui/login").await.csrf();
    let p = b
        .post("/ui/login/token", &[("csrf", &csrf), ("token", "tc_wrong")])
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert_eq!(p.error().as_deref(), Some("invalid token"));

    // The operator signs in: a session cookie with the contract's flags.
    let p = b.sign_in(&operator).await;
    let cookie = p
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("twincert_session="))
        .expect("session cookie")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );
    let home = b.get("/ui/").await;
    assert_eq!(home.status, StatusCode::OK);
    let who = between(&home.body, "data-testid=\"signed-in-as\">", "<").expect("signed-in-as");
    assert!(
        who.contains("t-operator") && who.contains("operator"),
        "{who}"
    );
    for id in [
        "overview-states",
        "overview-posture",
        "overview-ca-mix",
        "overview-expiry",
        "overview-alerts",
    ] {
        assert!(home.has(id), "overview lacks {id}");
    }
    let list = b.get("/ui/names?q=a.").await;
    assert!(
        list.body.contains("data-name=\"a.example.test\""),
        "{}",
        list.body
    );
    let detail = b.get("/ui/names/a.example.test").await;
    assert!(detail.has("slot-primary") && detail.has("slot-backup") && detail.has("swap-submit"));
    let csrf = detail.csrf();
    let before = active_slot(&server, "a.example.test").await;

    // A form post without the session's CSRF value changes nothing.
    for form in [
        vec![("reason", "no csrf")],
        vec![("csrf", "forged"), ("reason", "x")],
    ] {
        let p = b.post("/ui/names/a.example.test/swap", &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
        assert!(p.error().unwrap_or_default().contains("CSRF"));
    }
    assert_eq!(active_slot(&server, "a.example.test").await, before);

    // Bad input: the API's status and detail, in the page's error box.
    let (api_status, api_doc) = api(
        &server,
        "POST",
        "/v1/names/a.example.test/swap",
        &operator,
        Some(json!({"reason": ""})),
    )
    .await;
    let p = b
        .post("/ui/names/a.example.test/swap", &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status.as_u16(), api_status);
    assert_eq!(p.error().as_deref(), api_doc["detail"].as_str());
    assert_eq!(
        p.error().as_deref(),
        Some("'reason' must not be empty: say why, for the audit log")
    );
    let (api_status, api_doc) = api(
        &server,
        "POST",
        "/v1/names/-bad_/swap",
        &operator,
        Some(json!({"reason": "x"})),
    )
    .await;
    let p = b
        .post("/ui/names/-bad_/swap", &[("csrf", &csrf), ("reason", "x")])
        .await;
    assert_eq!((p.status.as_u16(), api_status), (400, 400));
    assert_eq!(p.error().as_deref(), api_doc["detail"].as_str());
    let p = b.get("/ui/names?state=sleeping").await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        p.error().as_deref(),
        Some("unknown state 'sleeping': expected provisioning, ready, degraded or waiting")
    );
    let p = b
        .post(
            "/ui/names/a.example.test/compromise",
            &[
                ("csrf", &csrf),
                ("slot", "backup"),
                ("reason", "x"),
                ("confirm", "wrong"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.error()
            .unwrap_or_default()
            .contains("'confirm' must be the name")
    );
    assert_eq!(active_slot(&server, "a.example.test").await, before);

    // A viewer sees no action, and a swap it posts anyway is refused by the
    // API's route table, audited, and changes nothing.
    let mut v = Browser::new(&server);
    v.sign_in(&viewer).await;
    let detail = v.get("/ui/names/a.example.test").await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.has("swap-submit") && !detail.has("swap-form"));
    assert!(!detail.body.contains("BEGIN PRIVATE KEY"));
    let p = v
        .post(
            "/ui/names/a.example.test/swap",
            &[("csrf", &detail.csrf()), ("reason", "viewer tries")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let refusal = p.error().unwrap_or_default();
    assert!(
        refusal.contains("t-viewer") && refusal.contains("needs operator"),
        "{refusal}"
    );
    assert_eq!(active_slot(&server, "a.example.test").await, before);
    let p = v.get("/ui/emergency").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(v.get("/ui/tokens").await.status, StatusCode::FORBIDDEN);

    // The operator's swap goes through, audited under the person's name.
    let p = b
        .post(
            "/ui/names/a.example.test/swap",
            &[("csrf", &csrf), ("reason", "console test")],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("swapped"), "{}", p.body);
    assert_ne!(active_slot(&server, "a.example.test").await, before);
    let (_, events) = api(&server, "GET", "/v1/events?limit=50", ADMIN_TOKEN, None).await;
    let events = events["items"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["action"] == "name.swap"
            && e["actor"] == "t-operator"
            && e["result"] == "ok"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["actor"] == "t-viewer" && e["result"] == "rejected: 403"),
        "{events:?}"
    );

    // The emergency page: dry run, a wrong confirmation, then the swap of
    // every name active on pebble-a (b.example.test; a.example.test is on
    // pebble-b since its swap).
    let e = b.get("/ui/emergency").await;
    assert!(e.has("scope-ca") && e.has("dry-run-submit"));
    let dry = b
        .post(
            "/ui/emergency/dry-run",
            &[("csrf", &csrf), ("ca", "pebble-a"), ("reason", "drill")],
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    let flips = between(&dry.body, "data-testid=\"dry-run-flip-count\">", "<").expect("count");
    assert_eq!(flips, "1", "{}", dry.body);
    assert!(dry.has("confirm-input") && dry.has("confirm-submit"));
    let p = b
        .post(
            "/ui/emergency/dry-run",
            &[("csrf", &csrf), ("ca", "pebble-a"), ("reason", " ")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        p.error().as_deref(),
        Some("'reason' must not be empty: say why, for the audit log")
    );
    let p = b
        .post(
            "/ui/emergency/swap",
            &[
                ("csrf", &csrf),
                ("ca", "pebble-a"),
                ("reason", "drill"),
                ("expected", "1"),
                ("confirm", "7"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(active_slot(&server, "b.example.test").await, "primary");
    let p = b
        .post(
            "/ui/emergency/swap",
            &[
                ("csrf", &csrf),
                ("ca", "pebble-a"),
                ("reason", "drill"),
                ("expected", "1"),
                ("confirm", "1"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(p.location().starts_with("/ui/operations/"));
    let op = b.get(p.location()).await;
    assert!(op.has("operation-progress"), "{}", op.body);
    assert_eq!(active_slot(&server, "b.example.test").await, "backup");
    assert_eq!(active_slot(&server, "a.example.test").await, "backup");

    // Every other page answers.
    for path in [
        "/ui/cas",
        "/ui/alerts",
        "/ui/incidents",
        "/ui/operations",
        "/ui/audit?actor=t-operator",
    ] {
        assert_eq!(b.get(path).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(b.get("/ui/tokens").await.status, StatusCode::FORBIDDEN);

    // Sign-out ends the session on the server: the old cookie is dead.
    let old = b.cookies.clone();
    let p = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/ui/login");
    b.cookies = old;
    let p = b.get("/ui/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/ui/login");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_obeys_the_client_allowlist() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let mut opts = ServerOptions::new(url);
    opts.allow_cidrs = Some("[\"10.0.0.0/8\"]".into());
    let server = Server::start(&cas, opts).await;
    let mut b = Browser::new(&server);
    let p = b.get("/ui/login").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("server.allow_cidrs"), "{}", p.body);
    assert_eq!(
        p.headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok()),
        Some(CSP)
    );
}
