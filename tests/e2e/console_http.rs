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

async fn distrusted(server: &Server, ca: &str) -> bool {
    let (status, v) = api(server, "GET", "/v1/cas", ADMIN_TOKEN, None).await;
    assert_eq!(status, 200, "{v}");
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == ca)
        .map(|c| c["distrusted"] == true)
        .expect("the CA is listed")
}

async fn operation_count(server: &Server) -> usize {
    let (_, v) = api(server, "GET", "/v1/operations", ADMIN_TOKEN, None).await;
    v["items"].as_array().map(Vec::len).unwrap_or(0)
}

/// The confirmation form of a re-key of a.example.test.
fn rekey_one<'a>(csrf: &'a str, confirm: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("scope", "names"),
        ("names", "a.example.test"),
        ("reason", "one key leaked"),
        ("expected", "1"),
        ("confirm", confirm),
    ]
}

fn testid_text(p: &Page, id: &str) -> String {
    between(&p.body, &format!("data-testid=\"{id}\">"), "<")
        .unwrap_or_else(|| panic!("no {id} on the page: {}", p.body))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_distrusts_a_ca_rekeys_and_manages_tokens_as_the_api_allows() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let server = Server::start(&cas, ServerOptions::new(url)).await;
    let names = ["a.example.test", "b.example.test"];
    for name in names {
        let (status, body) = server.create(json!({ "name": name })).await;
        assert_eq!(status, 201, "{body}");
    }
    for name in names {
        server.wait_ready(name, 60).await;
    }
    let mut on_a = Vec::new();
    for name in names {
        let v = server.name(name).await;
        if v[v["active"].as_str().unwrap_or_default()]["ca"] == "pebble-a" {
            on_a.push((name, v["active"].as_str().unwrap_or_default().to_string()));
        }
    }
    let operator = token(&server, "t-operator", "operator").await;
    let viewer = token(&server, "t-viewer", "viewer").await;

    let mut admin = Browser::new(&server);
    admin.sign_in(ADMIN_TOKEN).await;
    let e = admin.get("/ui/emergency").await;
    assert_eq!(e.status, StatusCode::OK);
    for id in [
        "scope-ca",
        "rekey-form",
        "rekey-scope",
        "rekey-dry-run-submit",
        "distrust-form",
        "distrust-ca",
        "distrust-dry-run-submit",
    ] {
        assert!(e.has(id), "the admin's emergency page lacks {id}");
    }
    let csrf = e.csrf();

    // An operator may re-key but not distrust: no distrust form, and a
    // forged one is refused by the API's rule, naming the role.
    let mut op = Browser::new(&server);
    op.sign_in(&operator).await;
    let e = op.get("/ui/emergency").await;
    assert!(e.has("rekey-form") && !e.has("distrust-form"));
    let op_csrf = e.csrf();
    for path in ["/ui/emergency/distrust/dry-run", "/ui/emergency/distrust"] {
        let p = op
            .post(
                path,
                &[
                    ("csrf", &op_csrf),
                    ("ca", "pebble-a"),
                    ("reason", "forged"),
                    ("confirm", "pebble-a"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}: {}", p.body);
        let err = p.error().unwrap_or_default();
        assert!(
            err.contains("t-operator") && err.contains("needs admin"),
            "{err}"
        );
    }
    assert!(!distrusted(&server, "pebble-a").await);

    // A viewer sees no emergency page, and a forged re-key is refused.
    let mut v = Browser::new(&server);
    v.sign_in(&viewer).await;
    assert_eq!(v.get("/ui/emergency").await.status, StatusCode::FORBIDDEN);
    let v_csrf = v.get("/ui/").await.csrf();
    let ops_before = operation_count(&server).await;
    let p = v
        .post(
            "/ui/emergency/rekey",
            &[
                ("csrf", &v_csrf),
                ("scope", "all"),
                ("reason", "forged"),
                ("expected", "2"),
                ("confirm", "2"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(
        p.error().unwrap_or_default().contains("needs operator"),
        "{}",
        p.body
    );

    // Without the session's CSRF value nothing is done.
    for (path, form) in [
        (
            "/ui/emergency/distrust",
            vec![("ca", "pebble-a"), ("reason", "x"), ("confirm", "pebble-a")],
        ),
        (
            "/ui/emergency/rekey",
            vec![("scope", "all"), ("reason", "x"), ("confirm", "2")],
        ),
        ("/ui/tokens", vec![("name", "t-nocsrf"), ("role", "admin")]),
    ] {
        let p = admin.post(path, &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}");
        assert!(p.error().unwrap_or_default().contains("CSRF"), "{path}");
    }
    assert!(!distrusted(&server, "pebble-a").await);
    assert_eq!(operation_count(&server).await, ops_before);
    let (_, list) = api(&server, "GET", "/v1/tokens", ADMIN_TOKEN, None).await;
    assert!(!list.to_string().contains("t-nocsrf"), "{list}");

    // Re-key: bad input gets the API's words; the dry run counts; a wrong
    // confirmation changes nothing; the right one starts the operation.
    let p = admin
        .post(
            "/ui/emergency/rekey/dry-run",
            &[
                ("csrf", &csrf),
                ("scope", "spki"),
                ("spki_sha256", "abc"),
                ("reason", "r"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        p.error().as_deref(),
        Some("'spki_sha256' must be 64 hex digits; got 'abc'")
    );
    assert!(p.has("rekey-form"), "the form is shown again");
    let p = admin
        .post(
            "/ui/emergency/rekey/dry-run",
            &[("csrf", &csrf), ("scope", "all"), ("reason", "")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        p.error().as_deref(),
        Some("'reason' must not be empty: say why, for the audit log")
    );
    let dry = admin
        .post(
            "/ui/emergency/rekey/dry-run",
            &[("csrf", &csrf), ("scope", "all"), ("reason", "heartbleed")],
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(testid_text(&dry, "rekey-name-count"), "2");
    assert!(dry.has("rekey-confirm-input") && dry.has("rekey-confirm-submit"));
    let dry = admin
        .post(
            "/ui/emergency/rekey/dry-run",
            &[
                ("csrf", &csrf),
                ("scope", "names"),
                ("names", "a.example.test\r\n"),
                ("reason", "one key leaked"),
            ],
        )
        .await;
    assert_eq!(testid_text(&dry, "rekey-name-count"), "1");
    assert_eq!(operation_count(&server).await, ops_before, "dry runs only");
    let p = admin
        .post("/ui/emergency/rekey", &rekey_one(&csrf, "2"))
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(
        p.error()
            .unwrap_or_default()
            .contains("'confirm' must be the number of names to re-key (1)"),
        "{}",
        p.body
    );
    assert_eq!(
        testid_text(&p, "rekey-name-count"),
        "1",
        "the dry run again"
    );
    assert_eq!(operation_count(&server).await, ops_before);
    let p = admin
        .post("/ui/emergency/rekey", &rekey_one(&csrf, "1"))
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(
        p.location().starts_with("/ui/operations/"),
        "{}",
        p.location()
    );
    let page = admin.get(p.location()).await;
    assert!(page.has("operation-progress") && page.has("rekey-progress"));
    assert!(page.body.contains("of 1"), "{}", page.body);
    let (_, ops) = api(&server, "GET", "/v1/operations", ADMIN_TOKEN, None).await;
    assert_eq!(ops["items"][0]["kind"], "rekey", "{ops}");
    assert_eq!(ops["items"][0]["actor"], "bootstrap-admin", "{ops}");

    // Distrust: unknown CA and missing reason get the API's words; the dry
    // run shows what flips and what is re-provisioned and changes nothing;
    // only the typed CA id runs it.
    let p = admin
        .post(
            "/ui/emergency/distrust/dry-run",
            &[("csrf", &csrf), ("ca", "nope"), ("reason", "r")],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert_eq!(p.error().as_deref(), Some("CA 'nope' is not configured"));
    let p = admin
        .post(
            "/ui/emergency/distrust/dry-run",
            &[("csrf", &csrf), ("ca", "pebble-a"), ("reason", " ")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        p.error().as_deref(),
        Some("'reason' must not be empty: say why, for the audit log")
    );
    let dry = admin
        .post(
            "/ui/emergency/distrust/dry-run",
            &[("csrf", &csrf), ("ca", "pebble-a"), ("reason", "CA breach")],
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(
        testid_text(&dry, "distrust-flip-count"),
        on_a.len().to_string()
    );
    // Every name holds one slot on pebble-a (its pair is pebble-a + b).
    assert_eq!(testid_text(&dry, "distrust-reprovision"), "2");
    assert!(dry.has("distrust-confirm-input") && dry.has("distrust-confirm-submit"));
    assert!(!distrusted(&server, "pebble-a").await, "a dry run");
    for confirm in ["", "pebble-b", "2"] {
        let p = admin
            .post(
                "/ui/emergency/distrust",
                &[
                    ("csrf", &csrf),
                    ("ca", "pebble-a"),
                    ("reason", "CA breach"),
                    ("confirm", confirm),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{confirm}: {}", p.body);
        assert!(
            p.error()
                .unwrap_or_default()
                .contains("'confirm' must be the CA id 'pebble-a'"),
            "{}",
            p.body
        );
        assert!(p.has("distrust-flip-count"), "the dry run again");
    }
    assert!(!distrusted(&server, "pebble-a").await);
    for (name, slot) in &on_a {
        assert_eq!(&active_slot(&server, name).await, slot);
    }
    let p = admin
        .post(
            "/ui/emergency/distrust",
            &[
                ("csrf", &csrf),
                ("ca", "pebble-a"),
                ("reason", "CA breach"),
                ("confirm", " pebble-a "),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(
        p.location().starts_with("/ui/operations/"),
        "{}",
        p.location()
    );
    let page = admin.get(p.location()).await;
    assert!(page.has("operation-progress"), "{}", page.body);
    assert!(page.body.contains("distrust"), "{}", page.body);
    assert!(distrusted(&server, "pebble-a").await);
    for (name, slot) in &on_a {
        assert_ne!(&active_slot(&server, name).await, slot, "{name} flipped");
    }
    let (_, events) = api(&server, "GET", "/v1/events?limit=50", ADMIN_TOKEN, None).await;
    assert!(
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["action"] == "ca.distrust" && e["actor"] == "bootstrap-admin"),
        "{events}"
    );

    // Tokens: the page is the admin's; others are refused by the API.
    assert_eq!(op.get("/ui/tokens").await.status, StatusCode::FORBIDDEN);
    for (path, form) in [
        (
            "/ui/tokens",
            vec![
                ("csrf", op_csrf.as_str()),
                ("name", "t-forged"),
                ("role", "admin"),
            ],
        ),
        (
            "/ui/tokens/t-viewer/delete",
            vec![("csrf", op_csrf.as_str()), ("confirm", "t-viewer")],
        ),
    ] {
        let p = op.post(path, &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}: {}", p.body);
        assert!(
            p.error().unwrap_or_default().contains("needs admin"),
            "{path}: {}",
            p.body
        );
    }
    let (status, _) = api(&server, "GET", "/v1/names", &viewer, None).await;
    assert_eq!(
        status, 200,
        "the operator could not delete the viewer's token"
    );
    let t = admin.get("/ui/tokens").await;
    assert_eq!(t.status, StatusCode::OK);
    assert!(t.has("token-create-form") && t.has("token-delete-submit"));
    assert!(t.body.contains("data-name=\"t-viewer\""), "{}", t.body);

    // Bad input: the API's words (and status); a forged expiry the
    // console's own.
    for (form, status) in [
        (vec![("name", "Bad Name!"), ("role", "viewer")], 400),
        (vec![("name", "t-x"), ("role", "root")], 400),
        (vec![("name", "t-viewer"), ("role", "viewer")], 409),
    ] {
        let body = json!({"name": form[0].1, "role": form[1].1});
        let (api_status, doc) = api(&server, "POST", "/v1/tokens", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(api_status, status, "{doc}");
        let mut form = form.clone();
        form.push(("csrf", &csrf));
        let p = admin.post("/ui/tokens", &form).await;
        assert_eq!(p.status.as_u16(), status, "{}", p.body);
        assert_eq!(p.error().as_deref(), doc["detail"].as_str());
        assert!(!p.has("token-secret"));
    }
    let p = admin
        .post(
            "/ui/tokens",
            &[
                ("csrf", &csrf),
                ("name", "t-y"),
                ("role", "viewer"),
                ("expires_in_seconds", "soon"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.error()
            .unwrap_or_default()
            .contains("'expires_in_seconds' must be a whole number"),
        "{}",
        p.body
    );

    // Create: the secret is shown once, works against /v1, and is on no
    // later page and in no log.
    let p = admin
        .post(
            "/ui/tokens",
            &[
                ("csrf", &csrf),
                ("name", "t-new"),
                ("role", "viewer"),
                ("expires_in_seconds", "86400"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.has("token-created"));
    let secret = testid_text(&p, "token-secret");
    assert!(secret.starts_with("tc_") && secret.len() > 40, "{secret}");
    assert_eq!(
        p.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let (status, _) = api(&server, "GET", "/v1/names", &secret, None).await;
    assert_eq!(status, 200, "the new token works");
    let (status, _) = api(
        &server,
        "POST",
        "/v1/names/a.example.test/swap",
        &secret,
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, 403, "with the role it was given");
    let t = admin.get("/ui/tokens").await;
    assert!(t.body.contains("data-name=\"t-new\""), "{}", t.body);
    assert!(!t.body.contains(&secret) && !t.has("token-secret"));
    let (_, list) = api(&server, "GET", "/v1/tokens", ADMIN_TOKEN, None).await;
    let new = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "t-new")
        .cloned()
        .expect("listed");
    assert!(new["expires_at"].as_i64().is_some(), "{new}");
    assert!(!server.log().contains(&secret), "the secret is in the log");

    // A console session signed in with it, then delete: a wrong
    // confirmation deletes nothing; the right one ends the token and the
    // session.
    let mut n = Browser::new(&server);
    n.sign_in(&secret).await;
    assert_eq!(n.get("/ui/").await.status, StatusCode::OK);
    let p = admin
        .post(
            "/ui/tokens/t-new/delete",
            &[("csrf", &csrf), ("confirm", "t-viewer")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.error()
            .unwrap_or_default()
            .contains("'confirm' must be the token name 't-new'"),
        "{}",
        p.body
    );
    let (status, _) = api(&server, "GET", "/v1/names", &secret, None).await;
    assert_eq!(status, 200);
    let p = admin
        .post(
            "/ui/tokens/t-new/delete",
            &[("csrf", &csrf), ("confirm", "t-new")],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.has("token-deleted"));
    assert!(!p.body.contains("data-name=\"t-new\""));
    let (status, _) = api(&server, "GET", "/v1/names", &secret, None).await;
    assert_eq!(status, 401, "a deleted token stops working");
    let p = n.get("/ui/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "its console session ended");
    assert_eq!(p.location(), "/ui/login");
    let p = admin
        .post(
            "/ui/tokens/t-new/delete",
            &[("csrf", &csrf), ("confirm", "t-new")],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert_eq!(p.error().as_deref(), Some("token 't-new' not found"));
}
