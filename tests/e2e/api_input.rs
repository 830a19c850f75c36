//! How the REST API v1 answers bad input, driven through the real router
//! over a loopback socket with a fresh SQLite store per test.
//!
//! Every rejection must be a precise 4xx `application/problem+json` document
//! (RFC 7807) whose `detail` names the offending value or the rule it broke,
//! never a 5xx. The cases are tables: one row per request, checked in order,
//! and every failing row is reported, not just the first.
//!
//! Needs no CA and no DNS: nothing here issues a certificate, so names stay
//! `provisioning` and both slots stay empty.

use std::sync::Arc;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use twincert::api::{ApiState, app, token_digest};
use twincert::clock::SystemClock;
use twincert::domain::KeyType;
use twincert::policy::CaChoice;
use twincert::store::Store;

/// The admin token the test server accepts.
const TOKEN: &str = "api-input-test-token-5f1c";
/// The body limit of the test server.
const MAX_BODY: usize = 4096;
/// Every problem `type` starts with this.
const PROBLEM_BASE: &str = "https://twincert.dev/problems/";

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// The API served on `127.0.0.1:<ephemeral>` with its own store.
struct Api {
    base: String,
    http: reqwest::Client,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn ca(id: &str, root_group: &str) -> CaChoice {
    CaChoice {
        id: id.into(),
        root_group: root_group.into(),
        key_types: KeyType::ALL.to_vec(),
        distrusted: false,
    }
}

impl Api {
    /// Three CAs in preference order: `ca-a` and `ca-a2` share the root group
    /// `g1`, `ca-b` is alone in `g2`.
    async fn start() -> Api {
        crate::harness::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("twincert.db");
        let store = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open SQLite store");
        store.migrate().await.expect("migrate");
        let state = ApiState {
            store,
            clock: Arc::new(SystemClock),
            cas: Arc::new(vec![ca("ca-a", "g1"), ca("ca-b", "g2"), ca("ca-a2", "g1")]),
            admin_token_sha256: token_digest(TOKEN),
            default_key_type: KeyType::EcdsaP256,
            max_body_bytes: MAX_BODY,
            dns01_available: false,
            ca_views: std::sync::Arc::new(Vec::new()),
            same_ca_hold_off: 900,
            request_timeout_seconds: 30,
            allow_cidrs: Vec::new(),
            sealer: None,
            dns: twincert::api::DelegationPolicy::default(),
            wake_worker: None,
            destinations: Arc::new(vec![("files".into(), "files".into())]),
            acme_requests: Arc::new(Vec::new),
            allow_drill_simulation: false,
            preflight: None,
            acme_profiles_offered: Arc::new(Default::default()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind API listener");
        let addr = listener.local_addr().expect("listener address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app(state)).await.expect("API server");
        });
        // No pool: a request the server answers before reading its whole
        // body (413) may leave the connection closed, and the next case must
        // not inherit that.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("HTTP client");
        Api {
            base: format!("http://{addr}"),
            http,
            server,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An authorized request.
    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    /// POSTs a name and returns the status and the JSON body.
    async fn create(&self, body: Value) -> (StatusCode, Value) {
        let rsp = self
            .admin(Method::POST, "/v1/names")
            .json(&body)
            .send()
            .await
            .expect("POST /v1/names");
        let status = rsp.status();
        let text = rsp.text().await.expect("response body");
        assert!(!text.contains("PRIVATE"), "key material in {text}");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {body} answered non-JSON ({e}): {text}"));
        (status, json)
    }

    /// Creates a name that must succeed.
    async fn create_ok(&self, body: Value) -> Value {
        let (status, json) = self.create(body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "POST {body}: {json}");
        json
    }

    /// Sends `request` as is on a fresh connection (which it must close with
    /// `Connection: close`) and returns the status, Content-Type and body.
    /// For what reqwest will not send: chunked bodies, non-UTF-8 headers.
    async fn raw(&self, request: &[u8]) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(request).await.expect("write request");
        let mut out = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            conn.read_to_end(&mut out),
        )
        .await
        .expect("response within 10 s")
        .expect("read response");
        crate::wire::parse_response(&String::from_utf8(out).expect("UTF-8 response"))
    }

    /// Runs every case and panics with all the failures.
    async fn check(&self, cases: &[Case]) {
        let mut failures = Vec::new();
        for c in cases {
            if let Err(why) = self.run(c).await {
                failures.push(format!("{} {} [{}]: {why}", c.method, c.path, c.what));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    async fn run(&self, c: &Case) -> Result<(), String> {
        let mut req = self.http.request(c.method.clone(), self.url(&c.path));
        req = match c.auth {
            Auth::Admin => req.bearer_auth(TOKEN),
            Auth::Absent => req,
            Auth::Raw(v) => req.header(header::AUTHORIZATION, v),
        };
        req = match &c.body {
            Payload::Empty => req,
            Payload::Json(v) => req.json(v),
            Payload::Raw {
                content_type,
                bytes,
            } => {
                let req = match content_type {
                    Some(ct) => req.header(header::CONTENT_TYPE, *ct),
                    None => req,
                };
                req.body(bytes.clone())
            }
        };
        let rsp = req
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        expect_problem(rsp, c.status, c.kind, &c.detail, c.field).await
    }
}

/// Checks that `rsp` is the problem document described, and returns why not.
async fn expect_problem(
    rsp: reqwest::Response,
    status: u16,
    kind: &str,
    detail: &str,
    field: Option<&str>,
) -> Result<(), String> {
    let got = rsp.status();
    let ct = rsp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = rsp.text().await.map_err(|e| format!("reading body: {e}"))?;
    check_problem(got.as_u16(), &ct, &text, status, kind, detail)?;
    match field {
        None => Ok(()),
        Some(want) => {
            let body: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if body["field"].as_str() == Some(want) {
                Ok(())
            } else {
                Err(format!("field {}, want \"{want}\": {text}", body["field"]))
            }
        }
    }
}

/// The checks of [`expect_problem`] on a response already taken apart
/// (all but the optional `field` member).
fn check_problem(
    got: u16,
    ct: &str,
    text: &str,
    status: u16,
    kind: &str,
    detail: &str,
) -> Result<(), String> {
    if got >= 500 {
        return Err(format!("server error {got}: {text}"));
    }
    if got != status {
        return Err(format!("status {got}, want {status}: {text}"));
    }
    if ct != "application/problem+json" {
        return Err(format!(
            "Content-Type '{ct}', want application/problem+json"
        ));
    }
    let body: Value =
        serde_json::from_str(text).map_err(|e| format!("body is not JSON ({e}): {text}"))?;
    let fields: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let expected = ["type", "title", "status", "detail", "field"];
    if fields.len() < 4 || fields.iter().any(|f| !expected.contains(f)) {
        return Err(format!(
            "want type/title/status/detail and at most a field: {text}"
        ));
    }
    let want_type = format!("{PROBLEM_BASE}{kind}");
    if body["type"].as_str() != Some(want_type.as_str()) {
        return Err(format!("type {}, want {want_type}", body["type"]));
    }
    if body["title"].as_str().is_none_or(str::is_empty) {
        return Err(format!("no title: {text}"));
    }
    if body["status"].as_u64() != Some(u64::from(status)) {
        return Err(format!("body status {}, want {status}", body["status"]));
    }
    let got_detail = body["detail"].as_str().unwrap_or("");
    if !got_detail.contains(detail) {
        return Err(format!("detail '{got_detail}' lacks '{detail}'"));
    }
    if text.contains("PRIVATE") {
        return Err(format!("key material in {text}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Auth {
    /// `Authorization: Bearer <TOKEN>`.
    Admin,
    /// No `Authorization` header.
    Absent,
    /// This exact header value.
    Raw(&'static str),
}

enum Payload {
    Empty,
    Json(Value),
    Raw {
        content_type: Option<&'static str>,
        bytes: Vec<u8>,
    },
}

/// One request and the problem it must produce.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    body: Payload,
    status: u16,
    kind: &'static str,
    detail: String,
    /// The problem's `field` member, when the case checks it.
    field: Option<&'static str>,
}

impl Case {
    fn new(what: &'static str, method: Method, path: impl Into<String>) -> Case {
        Case {
            what,
            method,
            path: path.into(),
            auth: Auth::Admin,
            body: Payload::Empty,
            status: 0,
            kind: "",
            detail: String::new(),
            field: None,
        }
    }

    fn get(what: &'static str, path: impl Into<String>) -> Case {
        Case::new(what, Method::GET, path)
    }

    /// `POST /v1/names` with this JSON body.
    fn create(what: &'static str, body: Value) -> Case {
        Case::new(what, Method::POST, "/v1/names").json(body)
    }

    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }

    fn json(mut self, v: Value) -> Case {
        self.body = Payload::Json(v);
        self
    }

    fn raw(mut self, content_type: Option<&'static str>, bytes: impl Into<Vec<u8>>) -> Case {
        self.body = Payload::Raw {
            content_type,
            bytes: bytes.into(),
        };
        self
    }

    fn expect(mut self, status: u16, kind: &'static str, detail: impl Into<String>) -> Case {
        self.status = status;
        self.kind = kind;
        self.detail = detail.into();
        self
    }

    /// A 400 `invalid-request` about one field: the detail names its path
    /// and the `field` member is that path.
    fn expect_field(self, field: &'static str, detail: impl Into<String>) -> Case {
        let mut c = self.expect(400, "invalid-request", detail);
        c.field = Some(field);
        c
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_admin_token_are_401() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "shop.example.test" })).await;

    let endpoints: [(Method, &str); 6] = [
        (Method::GET, "/v1/names"),
        (Method::POST, "/v1/names"),
        (Method::GET, "/v1/names/shop.example.test"),
        (Method::DELETE, "/v1/names/shop.example.test"),
        (
            Method::GET,
            "/v1/names/shop.example.test/certificates/primary",
        ),
        (Method::POST, "/v1/names/shop.example.test/swap"),
    ];
    let credentials: [(&'static str, Auth, &str); 9] = [
        ("no header", Auth::Absent, "missing Authorization header"),
        (
            "wrong token",
            Auth::Raw("Bearer not-the-token"),
            "invalid token",
        ),
        (
            "token with a suffix",
            Auth::Raw("Bearer api-input-test-token-5f1cX"),
            "invalid token",
        ),
        // HTTP drops trailing whitespace, so this arrives as "Bearer".
        (
            "empty bearer token",
            Auth::Raw("Bearer "),
            "must be 'Bearer <token>'",
        ),
        (
            "token of blanks",
            Auth::Raw("Bearer  \t "),
            "must be 'Bearer <token>'",
        ),
        (
            "Basic scheme",
            Auth::Raw("Basic YWRtaW46YXBpLWlucHV0LXRlc3QtdG9rZW4tNWYxYw=="),
            "must be 'Bearer <token>'",
        ),
        (
            "token without a scheme",
            Auth::Raw(TOKEN),
            "must be 'Bearer <token>'",
        ),
        (
            "scheme without a token",
            Auth::Raw("Bearer"),
            "must be 'Bearer <token>'",
        ),
        ("empty header", Auth::Raw(""), "must be 'Bearer <token>'"),
    ];
    let mut cases = Vec::new();
    for (method, path) in &endpoints {
        for (what, auth, detail) in &credentials {
            // A valid body, so only the credentials can be what is wrong.
            let body = if path.ends_with("/swap") {
                json!({ "reason": "drill" })
            } else {
                json!({ "name": "sneaky.example.test" })
            };
            let mut case = Case::new(what, method.clone(), *path).auth(*auth).expect(
                401,
                "unauthorized",
                *detail,
            );
            if *method == Method::POST {
                case = case.json(body);
            }
            cases.push(case);
        }
    }
    api.check(&cases).await;

    // Nothing was created or deleted by the rejected requests.
    let list: Value = api
        .admin(Method::GET, "/v1/names")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list JSON");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["shop.example.test"], "{list}");

    // The scheme is case-insensitive (RFC 9110 §11.1), and a 401 says
    // which scheme to use (RFC 9110 §11.6.1).
    let rsp = api
        .http
        .get(api.url("/v1/names"))
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("lower-case scheme");
    assert_eq!(rsp.status(), StatusCode::OK);
    let rsp = api
        .http
        .get(api.url("/v1/names"))
        .send()
        .await
        .expect("no token");
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
    let challenge = rsp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge}"
    );

    // Health endpoints are open.
    for path in ["/healthz", "/readyz"] {
        let rsp = api.http.get(api.url(path)).send().await.expect(path);
        assert_eq!(rsp.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_names_and_domains_are_400() {
    let api = Api::start().await;
    let too_long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(62)
    );
    assert_eq!(too_long.len(), 254);
    let long_label = format!("{}.example.test", "x".repeat(64));
    let long_id = "n".repeat(129);
    let many: Vec<String> = (0..101).map(|i| format!("h{i}.example.test")).collect();

    let cases = [
        Case::create("empty label", json!({ "name": "a..example.test" }))
            .expect(400, "invalid-name", "'a..example.test' has an empty label"),
        Case::create(
            "empty label in domains",
            json!({ "name": "web", "domains": ["ok.example.test", "a..example.test"] }),
        )
        .expect(400, "invalid-name", "'a..example.test' has an empty label"),
        Case::create(
            "name of 254 characters",
            json!({ "name": "long", "domains": [too_long] }),
        )
        .expect(400, "invalid-name", "is 254 characters long; the limit is 253"),
        Case::create(
            "label of 64 characters",
            json!({ "name": "label", "domains": [long_label] }),
        )
        .expect(400, "invalid-name", "is 64 characters long; the limit is 63"),
        Case::create(
            "underscore",
            json!({ "name": "under", "domains": ["foo_bar.example.test"] }),
        )
        .expect(
            400,
            "invalid-name",
            "'foo_bar.example.test': underscores are not allowed in hostnames",
        ),
        Case::create("IPv4 literal", json!({ "name": "192.0.2.1" })).expect(
            400,
            "invalid-name",
            "'192.0.2.1' is an IP address",
        ),
        Case::create(
            "IPv6 literal",
            json!({ "name": "v6", "domains": ["2001:db8::1"] }),
        )
        .expect(400, "invalid-name", "'2001:db8::1' is an IP address"),
        Case::create(
            "bracketed IPv6 literal",
            json!({ "name": "v6b", "domains": ["[::1]"] }),
        )
        .expect(400, "invalid-name", "'[::1]' is an IP address"),
        Case::create(
            "non-ASCII IDN",
            json!({ "name": "idn", "domains": ["bücher.example"] }),
        )
        .expect(
            400,
            "invalid-name",
            "'bücher.example' contains non-ASCII characters; give internationalized names in their A-label (xn--) form",
        ),
        Case::create("single label", json!({ "name": "localhost" })).expect(
            400,
            "invalid-name",
            "'localhost' must have at least two labels",
        ),
        Case::create(
            "leading hyphen",
            json!({ "name": "hy", "domains": ["-a.example.test"] }),
        )
        .expect(400, "invalid-name", "label '-a' in domain name '-a.example.test' starts or ends with a hyphen"),
        Case::create(
            "inner wildcard",
            json!({ "name": "inner", "domains": ["a.*.example.test"] }),
        )
        .expect(400, "invalid-name", "'a.*.example.test' has a '*' that is not the whole leftmost label"),
        Case::create(
            "surrounding whitespace",
            json!({ "name": "ws", "domains": [" ws.example.test"] }),
        )
        .expect(400, "invalid-name", "leading or trailing whitespace"),
        Case::create(
            "empty domain",
            json!({ "name": "empty", "domains": [""] }),
        )
        .expect(400, "invalid-name", "domain name is empty"),
        Case::create(
            "all-numeric TLD",
            json!({ "name": "num", "domains": ["example.123"] }),
        )
        .expect(400, "invalid-name", "ends in an all-numeric label '123'"),
        Case::create(
            "duplicate domain",
            json!({ "name": "dup", "domains": ["a.example.test", "b.example.test", "a.example.test"] }),
        )
        .expect(400, "invalid-name", "domain 'a.example.test' is listed twice"),
        Case::create(
            "duplicate domain after case folding",
            json!({ "name": "dupcase", "domains": ["a.example.test", "A.Example.Test."] }),
        )
        .expect(400, "invalid-name", "domain 'a.example.test' is listed twice"),
        Case::create(
            "too many domains",
            json!({ "name": "many", "domains": many }),
        )
        .expect(400, "invalid-request", "101 domains given; at most 100"),
        Case::create(
            "wildcard with http-01",
            json!({ "name": "wild", "domains": ["*.example.test"] }),
        )
        .expect(
            400,
            "invalid-name",
            "wildcard '*.example.test' can only be validated with dns-01 or dns-persist-01, not http-01",
        ),
        Case::create(
            "wildcard with explicit http-01",
            json!({ "name": "wild2", "domains": ["*.example.test"], "challenge": "http-01" }),
        )
        .expect(400, "invalid-name", "can only be validated with dns-01"),
        Case::create("upper-case managed name id", json!({ "name": "Shop" }))
            .expect(400, "invalid-name", "name 'Shop' contains 'S'"),
        Case::create("slash in managed name id", json!({ "name": "a/b" }))
            .expect(400, "invalid-name", "name 'a/b' contains '/'"),
        Case::create("managed name id starting with a dot", json!({ "name": ".hidden" }))
            .expect(400, "invalid-name", "'.hidden' must start with a letter or digit"),
        Case::create("empty managed name id", json!({ "name": "" }))
            .expect(400, "invalid-name", "name is empty"),
        Case::create("managed name id of 129 characters", json!({ "name": long_id }))
            .expect(400, "invalid-name", "is 129 characters long; the limit is 128"),
    ];
    api.check(&cases).await;

    let list: Value = api
        .admin(Method::GET, "/v1/names")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list JSON");
    assert_eq!(list["items"], json!([]), "a rejected name was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ca_key_and_challenge_choices_are_rejected() {
    let api = Api::start().await;
    let cases = [
        Case::create(
            "unknown CA",
            json!({ "name": "u.example.test", "cas": ["ca-a", "ca-zz"] }),
        )
        .expect(422, "bad-ca-choice", "unknown CA 'ca-zz'"),
        Case::create(
            "unknown primary CA",
            json!({ "name": "u2.example.test", "cas": ["nope", "ca-b"] }),
        )
        .expect(422, "bad-ca-choice", "unknown CA 'nope'"),
        Case::create(
            "same CA twice",
            json!({ "name": "s.example.test", "cas": ["ca-b", "ca-b"] }),
        )
        .expect(
            422,
            "bad-ca-choice",
            "primary and backup must come from different CAs; 'ca-b' was given for both",
        ),
        Case::create(
            "CAs sharing a root group",
            json!({ "name": "r.example.test", "cas": ["ca-a", "ca-a2"] }),
        )
        .expect(
            422,
            "bad-ca-choice",
            "CAs 'ca-a' and 'ca-a2' share the root group 'g1'",
        ),
        Case::create(
            "three CAs",
            json!({ "name": "t.example.test", "cas": ["ca-a", "ca-b", "ca-a2"] }),
        )
        .expect(400, "invalid-request", "'cas' must list exactly two CAs [primary, backup]; 3 given"),
        Case::create(
            "one CA",
            json!({ "name": "o.example.test", "cas": ["ca-a"] }),
        )
        .expect(400, "invalid-request", "exactly two CAs [primary, backup]; 1 given"),
        Case::create(
            "no CAs",
            json!({ "name": "z.example.test", "cas": [] }),
        )
        .expect(400, "invalid-request", "exactly two CAs [primary, backup]; 0 given"),
        Case::create(
            "unknown key type",
            json!({ "name": "k.example.test", "key_type": "ed25519" }),
        )
        .expect(
            400,
            "invalid-request",
            "unknown key type 'ed25519': expected one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072",
        ),
        Case::create(
            "key type in the wrong case",
            json!({ "name": "k2.example.test", "key_type": "ECDSA-P256" }),
        )
        .expect(400, "invalid-request", "unknown key type 'ECDSA-P256'"),
        Case::create(
            "unknown challenge",
            json!({ "name": "c.example.test", "challenge": "tls-alpn-01" }),
        )
        .expect(400, "invalid-request", "unknown challenge 'tls-alpn-01'"),
        Case::create(
            "dns-01 not yet available",
            json!({ "name": "d.example.test", "challenge": "dns-01" }),
        )
        .expect(400, "invalid-request", "challenge 'dns-01' is not available yet"),
    ];
    api.check(&cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_oversized_and_mistyped_bodies_are_4xx() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "shop.example.test" })).await;
    let swap = "/v1/names/shop.example.test/swap";
    let padding = "x".repeat(MAX_BODY);
    let big_create = json!({ "name": "big.example.test", "domains": [padding] }).to_string();
    let big_swap = json!({ "reason": padding }).to_string();
    assert!(big_create.len() > MAX_BODY && big_swap.len() > MAX_BODY);
    let json_ct = Some("application/json");
    // A valid body of exactly the limit, padded with JSON whitespace.
    let small = r#"{"name": "edge.example.test"}"#;
    let at_limit = format!("{small}{}", " ".repeat(MAX_BODY - small.len()));

    let cases = [
        Case::new("malformed JSON", Method::POST, "/v1/names")
            .raw(json_ct, r#"{"name": "x.example.test""#)
            .expect(
                400,
                "invalid-request",
                "invalid JSON body: EOF while parsing",
            ),
        Case::new("trailing garbage", Method::POST, "/v1/names")
            .raw(json_ct, r#"{"name": "x.example.test"} {}"#)
            .expect(
                400,
                "invalid-request",
                "invalid JSON body: trailing characters",
            ),
        Case::new("empty body", Method::POST, "/v1/names")
            .raw(json_ct, "")
            .expect(
                400,
                "invalid-request",
                "invalid JSON body: EOF while parsing a value",
            ),
        Case::new("JSON array instead of object", Method::POST, "/v1/names")
            .raw(json_ct, "[]")
            .expect(
                400,
                "invalid-request",
                "invalid JSON body: invalid length 0, expected struct CreateName",
            ),
        Case::new("JSON string instead of object", Method::POST, "/v1/names")
            .raw(json_ct, r#""x.example.test""#)
            .expect(
                400,
                "invalid-request",
                "invalid JSON body: invalid type: string \"x.example.test\", expected struct CreateName",
            ),
        Case::create(
            "unknown field",
            json!({ "name": "x.example.test", "colour": "blue" }),
        )
        .expect(400, "invalid-request", "unknown field `colour`"),
        Case::new("duplicate key", Method::POST, "/v1/names")
            .raw(json_ct, r#"{"name": "a.example.test", "name": "b.example.test"}"#)
            .expect(400, "invalid-request", "invalid JSON body: duplicate field `name`"),
        Case::create("null domains", json!({ "name": "x.example.test", "domains": null }))
            .expect(400, "invalid-request", "invalid type: null, expected a sequence"),
        Case::create("missing name", json!({ "domains": ["x.example.test"] })).expect(
            400,
            "invalid-request",
            "missing field `name`",
        ),
        Case::create("name of the wrong type", json!({ "name": 5 })).expect(
            400,
            "invalid-request",
            "invalid type: integer `5`, expected a string",
        ),
        Case::create(
            "domains not a list",
            json!({ "name": "x", "domains": "x.example.test" }),
        )
        .expect(
            400,
            "invalid-request",
            "invalid type: string \"x.example.test\", expected a sequence",
        ),
        Case::new("one byte over the limit", Method::POST, "/v1/names")
            .raw(json_ct, format!("{at_limit} "))
            .expect(413, "body-too-large", format!("exceeds the limit of {MAX_BODY} bytes")),
        Case::new("body over the limit", Method::POST, "/v1/names")
            .raw(json_ct, big_create.clone())
            .expect(
                413,
                "body-too-large",
                format!("exceeds the limit of {MAX_BODY} bytes"),
            ),
        Case::new("text/plain", Method::POST, "/v1/names")
            .raw(Some("text/plain"), r#"{"name": "x.example.test"}"#)
            .expect(
                415,
                "unsupported-media-type",
                "expected Content-Type application/json, got 'text/plain'",
            ),
        Case::new("a look-alike media type", Method::POST, "/v1/names")
            .raw(Some("application/jsonx"), r#"{"name": "x.example.test"}"#)
            .expect(415, "unsupported-media-type", "got 'application/jsonx'"),
        Case::new("form encoding", Method::POST, "/v1/names")
            .raw(
                Some("application/x-www-form-urlencoded"),
                "name=x.example.test",
            )
            .expect(
                415,
                "unsupported-media-type",
                "got 'application/x-www-form-urlencoded'",
            ),
        Case::new("swap: malformed JSON", Method::POST, swap)
            .raw(json_ct, "{reason: drill}")
            .expect(
                400,
                "invalid-request",
                "invalid JSON body: key must be a string",
            ),
        Case::new("swap: missing reason", Method::POST, swap)
            .json(json!({}))
            .expect(400, "invalid-request", "missing field `reason`"),
        Case::new("swap: unknown field", Method::POST, swap)
            .json(json!({ "reason": "drill", "force": true }))
            .expect(400, "invalid-request", "unknown field `force`"),
        Case::new("swap: body over the limit", Method::POST, swap)
            .raw(json_ct, big_swap)
            .expect(
                413,
                "body-too-large",
                format!("exceeds the limit of {MAX_BODY} bytes"),
            ),
        Case::new("swap: text/plain", Method::POST, swap)
            .raw(Some("text/plain"), r#"{"reason": "drill"}"#)
            .expect(415, "unsupported-media-type", "got 'text/plain'"),
    ];
    api.check(&cases).await;

    // The limit itself is allowed, and a media-type parameter is fine.
    let rsp = api
        .admin(Method::POST, "/v1/names")
        .header(header::CONTENT_TYPE, "application/json")
        .body(at_limit)
        .send()
        .await
        .expect("POST at the limit");
    assert_eq!(rsp.status(), StatusCode::CREATED, "{MAX_BODY} bytes");
    let rsp = api
        .admin(Method::POST, "/v1/names")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(r#"{"name": "charset.example.test"}"#)
        .send()
        .await
        .expect("POST with charset");
    assert_eq!(rsp.status(), StatusCode::CREATED, "charset parameter");

    // The server still answers after the oversized bodies.
    let rsp = api
        .admin(Method::GET, "/v1/names/shop.example.test")
        .send()
        .await
        .expect("GET after 413");
    assert_eq!(rsp.status(), StatusCode::OK);
}

/// Issue 20: a body of the wrong shape used to be answered with serde's
/// message alone ("invalid type: integer `5`, expected a string at line 1
/// column 10"), which names no field; in a list of endpoints the client had
/// to count columns. Every endpoint that takes JSON names the path.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_of_the_wrong_shape_names_the_field_path() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "shop.example.test" })).await;
    let deploy = "/v1/names/shop.example.test/deploy";
    let put = |what, body| Case::new(what, Method::PUT, deploy).json(body);
    let cases = [
        Case::create("name a number", json!({ "name": 5 })).expect_field(
            "name",
            "invalid JSON body: name: invalid type: integer `5`, expected a string",
        ),
        Case::create(
            "domains a string",
            json!({ "name": "x.example.test", "domains": "a.example.test" }),
        )
        .expect_field(
            "domains",
            "invalid JSON body: domains: invalid type: string \"a.example.test\", expected a sequence",
        ),
        Case::create(
            "a number among the domains",
            json!({ "name": "x.example.test", "domains": ["a.example.test", 7] }),
        )
        .expect_field(
            "domains[1]",
            "invalid JSON body: domains[1]: invalid type: integer `7`, expected a string",
        ),
        Case::create("missing name", json!({ "domains": ["x.example.test"] }))
            .expect_field("name", "invalid JSON body: missing field `name`"),
        Case::create(
            "unknown field",
            json!({ "name": "x.example.test", "colour": "blue" }),
        )
        .expect_field("colour", "invalid JSON body: unknown field `colour`"),
        put(
            "a port as a string in the third endpoint",
            json!({ "endpoints": [
                { "host": "a.example.test" },
                { "host": "b.example.test", "port": 8443 },
                { "host": "c.example.test", "port": "443" },
            ] }),
        )
        .expect_field(
            "endpoints[2].port",
            "invalid JSON body: endpoints[2].port: invalid type: string \"443\", expected u16",
        ),
        put(
            "an endpoint without a host",
            json!({ "endpoints": [{ "host": "a.example.test" }, { "port": 443 }] }),
        )
        .expect_field(
            "endpoints[1].host",
            "invalid JSON body: endpoints[1]: missing field `host`",
        ),
        put(
            "an unknown endpoint field",
            json!({ "endpoints": [{ "host": "a.example.test", "prot": 443 }] }),
        )
        .expect_field(
            "endpoints[0].prot",
            "invalid JSON body: endpoints[0]: unknown field `prot`",
        ),
        put(
            "destinations an object",
            json!({ "destinations": { "files": true } }),
        )
        .expect_field(
            "destinations",
            "invalid JSON body: destinations: invalid type: map, expected a sequence",
        ),
        // A value of the right type that fails validation names its field
        // the same way.
        put("port 0", json!({ "endpoints": [{ "host": "a.example.test", "port": 0 }] }))
            .expect_field("endpoints[0].port", "endpoints[0].port: must be 1-65535"),
        Case::new("swap: reason a number", Method::POST, "/v1/names/shop.example.test/swap")
            .json(json!({ "reason": 5 }))
            .expect_field(
                "reason",
                "invalid JSON body: reason: invalid type: integer `5`, expected a string",
            ),
        Case::new("token: role a list", Method::POST, "/v1/tokens")
            .json(json!({ "name": "ci", "role": ["admin"] }))
            .expect_field(
                "role",
                "invalid JSON body: role: invalid type: sequence, expected a string",
            ),
    ];
    api.check(&cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_normalises_and_refuses_a_second_name_of_the_same_id() {
    let api = Api::start().await;

    let rsp = api
        .admin(Method::POST, "/v1/names")
        .json(&json!({ "name": "shop", "domains": ["WWW.Example.TEST", "Shop.Example.Test."] }))
        .send()
        .await
        .expect("POST");
    assert_eq!(rsp.status(), StatusCode::CREATED);
    assert_eq!(
        rsp.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/v1/names/shop")
    );
    assert!(
        rsp.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        rsp.headers()
    );
    let text = rsp.text().await.expect("body");
    assert!(!text.contains("PRIVATE"), "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["name"], "shop");
    assert_eq!(
        v["domains"],
        json!(["www.example.test", "shop.example.test"])
    );
    assert_eq!(v["state"], "provisioning");
    assert_eq!(
        v["cas"],
        json!(["ca-a", "ca-b"]),
        "preference order, distinct roots"
    );
    assert_eq!(v["challenge"], "http-01");
    assert_eq!(v["key_type"], "ecdsa-p256");
    assert_eq!(v["active"], "primary");
    assert_eq!(v["primary"]["ca"], "ca-a");
    assert_eq!(v["backup"]["ca"], "ca-b");
    assert_eq!(v["primary"]["serial"], Value::Null);

    // The domain list defaults to the name itself.
    let v = api.create_ok(json!({ "name": "upper.example.test" })).await;
    assert_eq!(v["domains"], json!(["upper.example.test"]));

    // An explicit, diverse pair is taken as given; so is a key type.
    let v = api
        .create_ok(json!({
            "name": "pair.example.test",
            "cas": ["ca-a2", "ca-b"],
            "key_type": "rsa-2048",
        }))
        .await;
    assert_eq!(v["cas"], json!(["ca-a2", "ca-b"]));
    assert_eq!(v["key_type"], "rsa-2048");
    assert_eq!(v["state"], "provisioning");

    // The shown name matches the stored one.
    let shown = api
        .admin(Method::GET, "/v1/names/shop")
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("GET body");
    assert!(!shown.contains("PRIVATE"), "{shown}");
    let shown: Value = serde_json::from_str(&shown).expect("GET JSON");
    assert_eq!(
        shown["domains"],
        json!(["www.example.test", "shop.example.test"])
    );

    api.check(&[
        Case::create(
            "duplicate name",
            json!({ "name": "shop", "domains": ["shop.example.test"] }),
        )
            .expect(409, "duplicate", "name 'shop' already exists"),
        Case::create(
            "duplicate name with other domains and CAs",
            json!({ "name": "pair.example.test", "domains": ["other.example.test"], "cas": ["ca-b", "ca-a"] }),
        )
        .expect(409, "duplicate", "name 'pair.example.test' already exists"),
    ])
    .await;

    // The refused duplicate left the original alone.
    let v: Value = api
        .admin(Method::GET, "/v1/names/pair.example.test")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("GET JSON");
    assert_eq!(v["cas"], json!(["ca-a2", "ca-b"]));
    assert_eq!(v["domains"], json!(["pair.example.test"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_certificates_and_swaps_of_missing_things() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "shop.example.test" })).await;
    let name = "/v1/names/shop.example.test";

    let cases = [
        Case::get("unknown name", "/v1/names/nope.example.test").expect(
            404,
            "not-found",
            "name 'nope.example.test' not found",
        ),
        Case::get("invalid name id", "/v1/names/Shop").expect(
            400,
            "invalid-name",
            "name 'Shop' contains 'S'",
        ),
        Case::get("percent-encoded space", "/v1/names/a%20b").expect(
            400,
            "invalid-name",
            "name 'a b' contains ' '",
        ),
        Case::get("percent-encoded leading dot", "/v1/names/%2Eenv").expect(
            400,
            "invalid-name",
            "name '.env' must start with a letter or digit",
        ),
        Case::get("bad slot", format!("{name}/certificates/tertiary")).expect(
            400,
            "invalid-request",
            "unknown slot 'tertiary': expected primary, backup or active",
        ),
        Case::get(
            "slot in the wrong case",
            format!("{name}/certificates/Primary"),
        )
        .expect(400, "invalid-request", "unknown slot 'Primary'"),
        Case::get(
            "primary has no certificate yet",
            format!("{name}/certificates/primary"),
        )
        .expect(
            404,
            "not-found",
            "the primary slot of 'shop.example.test' has no certificate yet",
        ),
        Case::get(
            "backup has no certificate yet",
            format!("{name}/certificates/backup"),
        )
        .expect(
            404,
            "not-found",
            "the backup slot of 'shop.example.test' has no certificate yet",
        ),
        Case::get(
            "active has no certificate yet",
            format!("{name}/certificates/active"),
        )
        .expect(
            404,
            "not-found",
            "the primary slot of 'shop.example.test' has no certificate yet",
        ),
        Case::get(
            "certificate of an unknown name",
            "/v1/names/nope.example.test/certificates/primary",
        )
        .expect(404, "not-found", "name 'nope.example.test' not found"),
        Case::new(
            "swap to an empty standby",
            Method::POST,
            format!("{name}/swap"),
        )
        .json(json!({ "reason": "drill" }))
        .expect(
            409,
            "conflict",
            "the backup slot of 'shop.example.test' has no certificate yet; nothing to swap to",
        ),
        Case::new(
            "swap with an empty reason",
            Method::POST,
            format!("{name}/swap"),
        )
        .json(json!({ "reason": "" }))
        .expect(400, "invalid-request", "'reason' must not be empty"),
        Case::new(
            "swap with a blank reason",
            Method::POST,
            format!("{name}/swap"),
        )
        .json(json!({ "reason": " \t\n" }))
        .expect(400, "invalid-request", "'reason' must not be empty"),
        Case::new(
            "swap of an unknown name",
            Method::POST,
            "/v1/names/nope.example.test/swap",
        )
        .json(json!({ "reason": "drill" }))
        .expect(404, "not-found", "name 'nope.example.test' not found"),
        Case::new(
            "swap of an invalid name id",
            Method::POST,
            "/v1/names/Nope/swap",
        )
        .json(json!({ "reason": "drill" }))
        .expect(400, "invalid-name", "name 'Nope' contains 'N'"),
    ];
    api.check(&cases).await;

    // Asking for PEM does not change a missing certificate into something
    // else.
    let rsp = api
        .admin(Method::GET, &format!("{name}/certificates/primary"))
        .header(header::ACCEPT, "application/pem-certificate-chain")
        .send()
        .await
        .expect("GET PEM");
    expect_problem(rsp, 404, "not-found", "has no certificate yet", None)
        .await
        .expect("PEM of an empty slot");

    // The refused swap changed nothing.
    let v: Value = api
        .admin(Method::GET, name)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("GET JSON");
    assert_eq!(v["active"], "primary", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_and_methods_are_problems() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "shop.example.test" })).await;
    let cases = [
        Case::get("unknown path", "/v2/names").expect(404, "not-found", "no such endpoint"),
        Case::get("unknown path without a token", "/nope")
            .auth(Auth::Absent)
            .expect(404, "not-found", "no such endpoint"),
        Case::get("unknown sub-resource", "/v1/names/shop.example.test/keys").expect(
            404,
            "not-found",
            "no such endpoint",
        ),
        Case::get("root", "/").expect(404, "not-found", "no such endpoint"),
        Case::new("PUT on the collection", Method::PUT, "/v1/names")
            .json(json!({ "name": "x.example.test" }))
            .expect(405, "method-not-allowed", "not allowed on this path"),
        Case::new("DELETE on the collection", Method::DELETE, "/v1/names").expect(
            405,
            "method-not-allowed",
            "not allowed on this path",
        ),
        Case::new(
            "PATCH on a name",
            Method::PATCH,
            "/v1/names/shop.example.test",
        )
        .json(json!({}))
        .expect(405, "method-not-allowed", "not allowed on this path"),
        Case::get("GET on swap", "/v1/names/shop.example.test/swap").expect(
            405,
            "method-not-allowed",
            "not allowed on this path",
        ),
        Case::new(
            "POST on a certificate",
            Method::POST,
            "/v1/names/shop.example.test/certificates/primary",
        )
        .json(json!({}))
        .expect(405, "method-not-allowed", "not allowed on this path"),
        Case::new("POST on healthz", Method::POST, "/healthz")
            .auth(Auth::Absent)
            .expect(405, "method-not-allowed", "not allowed on this path"),
    ];
    api.check(&cases).await;

    // A 405 says what is allowed (RFC 9110 §15.5.6).
    let rsp = api
        .admin(Method::PUT, "/v1/names")
        .send()
        .await
        .expect("PUT");
    let allow = rsp
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: '{allow}'"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_rejects_bad_queries() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "a.example.test" })).await;
    api.create_ok(json!({ "name": "b.example.test", "cas": ["ca-b", "ca-a2"] }))
        .await;

    let cases = [
        Case::get("limit 0", "/v1/names?limit=0").expect(
            400,
            "invalid-request",
            "limit 0 is out of range 1..=1000",
        ),
        Case::get("limit 1001", "/v1/names?limit=1001").expect(
            400,
            "invalid-request",
            "limit 1001 is out of range 1..=1000",
        ),
        Case::get("negative limit", "/v1/names?limit=-1").expect(
            400,
            "invalid-request",
            "limit: invalid digit found in string",
        ),
        Case::get("non-numeric limit", "/v1/names?limit=ten").expect(
            400,
            "invalid-request",
            "limit: invalid digit found in string",
        ),
        Case::get("unknown state", "/v1/names?state=broken").expect(
            400,
            "invalid-request",
            "unknown state 'broken': expected provisioning, ready, degraded or waiting",
        ),
        Case::get("state in the wrong case", "/v1/names?state=Ready").expect(
            400,
            "invalid-request",
            "unknown state 'Ready'",
        ),
        Case::get("unknown CA", "/v1/names?ca=ca-zz").expect(
            400,
            "invalid-request",
            "unknown CA 'ca-zz'",
        ),
        Case::get("empty limit", "/v1/names?limit=").expect(
            400,
            "invalid-request",
            "limit: cannot parse integer from empty string",
        ),
        Case::get("unknown parameter", "/v1/names?sort=name").expect(
            400,
            "invalid-request",
            "unknown field `sort`",
        ),
    ];
    api.check(&cases).await;

    // The same filters with good values work.
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_string())
            .collect()
    };
    for (query, want) in [
        ("", vec!["a.example.test", "b.example.test"]),
        ("?ca=ca-a2", vec!["b.example.test"]),
        (
            "?state=provisioning",
            vec!["a.example.test", "b.example.test"],
        ),
        ("?state=ready", vec![]),
        ("?limit=1", vec!["a.example.test"]),
    ] {
        let rsp = api
            .admin(Method::GET, &format!("/v1/names{query}"))
            .send()
            .await
            .expect("list");
        assert_eq!(rsp.status(), StatusCode::OK, "{query}");
        let text = rsp.text().await.expect("list body");
        assert!(!text.contains("PRIVATE"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("list JSON");
        assert_eq!(names(&v), want, "{query}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_the_name() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "gone.example.test" })).await;
    let path = "/v1/names/gone.example.test";

    api.check(&[
        Case::new(
            "revoke not a bool",
            Method::DELETE,
            format!("{path}?revoke=maybe"),
        )
        .expect(400, "invalid-request", "revoke"),
        Case::new(
            "unknown parameter",
            Method::DELETE,
            format!("{path}?force=1"),
        )
        .expect(400, "invalid-request", "unknown field `force`"),
        Case::new("invalid name id", Method::DELETE, "/v1/names/Gone").expect(
            400,
            "invalid-name",
            "name 'Gone' contains 'G'",
        ),
        Case::new(
            "unknown name",
            Method::DELETE,
            "/v1/names/never.example.test",
        )
        .expect(404, "not-found", "name 'never.example.test' not found"),
    ])
    .await;

    let rsp = api
        .admin(Method::DELETE, path)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(rsp.status(), StatusCode::NO_CONTENT);
    assert_eq!(rsp.text().await.expect("DELETE body"), "");

    api.check(&[
        Case::get("GET after delete", path).expect(
            404,
            "not-found",
            "name 'gone.example.test' not found",
        ),
        Case::new("DELETE after delete", Method::DELETE, path).expect(
            404,
            "not-found",
            "name 'gone.example.test' not found",
        ),
        Case::get(
            "certificate after delete",
            format!("{path}/certificates/primary"),
        )
        .expect(404, "not-found", "name 'gone.example.test' not found"),
        Case::new("swap after delete", Method::POST, format!("{path}/swap"))
            .json(json!({ "reason": "drill" }))
            .expect(404, "not-found", "name 'gone.example.test' not found"),
    ])
    .await;

    // The id is free again.
    let v = api.create_ok(json!({ "name": "gone.example.test" })).await;
    assert_eq!(v["state"], "provisioning");
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_level_bodies_and_headers() {
    let api = Api::start().await;
    api.create_ok(json!({ "name": "shop.example.test" })).await;

    // A chunked body has no Content-Length to refuse up front; the limit
    // must still hold while it is read.
    let chunk = "x".repeat(3000);
    let chunked = format!(
        "POST /v1/names HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{n:x}\r\n{chunk}\r\n{n:x}\r\n{chunk}\r\n0\r\n\r\n",
        n = chunk.len()
    );
    let (status, ct, body) = api.raw(chunked.as_bytes()).await;
    check_problem(
        status,
        &ct,
        &body,
        413,
        "body-too-large",
        &format!("exceeds the limit of {MAX_BODY} bytes"),
    )
    .expect("chunked body over the limit");

    // A small chunked body is read like any other.
    let small = r#"{"name": "chunked.example.test"}"#;
    let chunked = format!(
        "POST /v1/names HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{n:x}\r\n{small}\r\n0\r\n\r\n",
        n = small.len()
    );
    let (status, _, body) = api.raw(chunked.as_bytes()).await;
    assert_eq!(status, 201, "small chunked body: {body}");

    // An Authorization header that is not even text (obs-text bytes).
    let (status, ct, body) = api
        .raw(b"GET /v1/names HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
        .await;
    check_problem(
        status,
        &ct,
        &body,
        401,
        "unauthorized",
        "must be 'Bearer <token>'",
    )
    .expect("non-UTF-8 Authorization");

    // A JSON body that is not UTF-8.
    let bad_utf8: &[u8] = b"{\"name\": \"\xff\xfe\"}";
    let mut invalid = format!(
        "POST /v1/names HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bad_utf8.len()
    )
    .into_bytes();
    invalid.extend_from_slice(bad_utf8);
    let (status, ct, body) = api.raw(&invalid).await;
    check_problem(
        status,
        &ct,
        &body,
        400,
        "invalid-request",
        "invalid JSON body: name: invalid unicode code point",
    )
    .expect("non-UTF-8 JSON");
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_uses_opaque_cursors() {
    let api = Api::start().await;
    for n in ["p1.example.test", "p2.example.test", "p3.example.test"] {
        api.create_ok(json!({ "name": n })).await;
    }
    let get = |path: String| {
        let req = api.admin(Method::GET, &path);
        async move {
            let rsp = req.send().await.expect("GET");
            let status = rsp.status();
            (status, rsp.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, page1) = get("/v1/names?limit=2".into()).await;
    assert_eq!(status, StatusCode::OK);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_string();
    assert!(!cursor.contains("example"), "cursor is opaque: {cursor}");
    let (_, page2) = get(format!("/v1/names?limit=2&cursor={cursor}")).await;
    let names: Vec<&str> = page2["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["p3.example.test"]);
    assert!(page2["next_cursor"].is_null());
    for bad in ["!!!", "%20", "AAAA%3D%3D"] {
        let (status, v) = get(format!("/v1/names?cursor={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("invalid cursor"),
            "{v}"
        );
    }

    let (_, ev1) = get("/v1/events?limit=2".into()).await;
    let c = ev1["next_cursor"]
        .as_str()
        .expect("events cursor")
        .to_string();
    let (_, ev2) = get(format!("/v1/events?limit=2&cursor={c}")).await;
    let targets = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["target"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(targets(&ev1), ["p3.example.test", "p2.example.test"]);
    assert_eq!(targets(&ev2), ["p1.example.test"]);
    let (status, _) = get("/v1/events?cursor=bm90LWEtbnVtYmVy".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_in_the_access_table_is_routed_and_documented() {
    let api = Api::start().await;
    let spec: Value = api
        .http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("spec JSON");
    assert!(
        spec["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{spec}"
    );
    for (method, template, _) in twincert::api::ROUTES {
        let path = template
            .replace("{name}", "a.example.test")
            .replace("{slot}", "primary")
            .replace("{token}", "t")
            .replace("{destination}", "web")
            .replace("{id}", "ca-a");
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        // Routed: the auth layer answers 401 (an unrouted path would be a
        // 404, a wrong method a 405).
        let rsp = api
            .http
            .request(m, api.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let op = &spec["paths"][*template][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {template} missing from /openapi.json"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_json_is_a_400_not_a_crash() {
    let api = Api::start().await;
    // 1,000 levels deep, well under the body limit. Typed parsing refuses at
    // the first level; serde_json's recursion limit (128) bounds the rest.
    let body = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let rsp = api
        .admin(Method::POST, "/v1/names")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    let v: Value = rsp.json().await.expect("problem");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid JSON body"),
        "{v}"
    );
}
