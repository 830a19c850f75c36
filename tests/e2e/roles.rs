//! Roles and tokens against a real server: the role matrix over every v1
//! route, token secrets shown once and stored only as hashes, audited key
//! downloads.

use serde_json::{Value, json};
use twincert::store::Store;

use crate::harness::TwoCas;
use crate::server::{ADMIN_TOKEN, Server, ServerOptions};

/// Every v1 route from the server's own access table, with a concrete path.
fn routes() -> Vec<(&'static str, String, &'static str)> {
    twincert::api::ROUTES
        .iter()
        .map(|(m, t, _)| {
            let name = if *m == "DELETE" {
                "gone.example.test"
            } else {
                "a.example.test"
            };
            let path = t
                .replace("{name}", name)
                .replace("{slot}", "primary")
                .replace("{token}", "nobody")
                .replace("{destination}", "web")
                .replace("{id}", "pebble-a");
            (*m, path, *t)
        })
        .collect()
}

async fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, format!("{}{path}", server.base()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let rsp = req.send().await.expect("request");
    let status = rsp.status().as_u16();
    let text = rsp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn make_token(server: &Server, name: &str, role: &str, expires: Option<u64>) -> String {
    let mut body = json!({"name": name, "role": role});
    if let Some(e) = expires {
        body["expires_in_seconds"] = json!(e);
    }
    let (status, v) = call(server, "POST", "/v1/tokens", Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().expect("token shown once").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn role_matrix_over_every_route() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    let (status, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server.wait_ready("a.example.test", 60).await;

    let roles = ["viewer", "deployer", "operator", "admin"];
    let mut tokens = Vec::new();
    for r in roles {
        tokens.push((r, make_token(&server, &format!("t-{r}"), r, None).await));
    }
    let expired = make_token(&server, "t-expired", "admin", Some(1)).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    for (method, path, template) in routes() {
        let (method, path, template) = (method, path.as_str(), template);
        let needed = twincert::api::required_role(
            &reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            template,
        )
        .unwrap_or_else(|| panic!("{method} {template} has no access rule"));
        // No token, a bad token, an expired token: 401 everywhere.
        for (label, t) in [
            ("none", None),
            ("bad", Some("tc_not-a-token")),
            ("expired", Some(expired.as_str())),
        ] {
            let (status, v) = call(&server, method, path, t, None).await;
            assert_eq!(status, 401, "{method} {path} with {label} token: {v}");
        }
        for (i, (role, token)) in tokens.iter().enumerate() {
            let (status, v) = call(&server, method, path, Some(token), None).await;
            let allowed = i >= needed as usize;
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role}: {status} {v}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}: {v}");
                let detail = v["detail"].as_str().unwrap_or_default();
                assert!(detail.contains(needed.as_str()), "{detail}");
            }
        }
    }

    // The store holds hashes only; listing never shows a secret.
    let (status, list) = call(&server, "GET", "/v1/tokens", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    let text = list.to_string();
    for (_, t) in &tokens {
        assert!(!text.contains(t.as_str()), "a token secret is listed");
    }
    let db = std::fs::read(cas.dir().join("twincert.db")).unwrap_or_default();
    let wal = std::fs::read(cas.dir().join("twincert.db-wal")).unwrap_or_default();
    for (_, t) in &tokens {
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                "a token secret is stored"
            );
        }
    }

    // A deployer downloads the key; it matches the certificate; audited.
    let deployer = &tokens[1].1;
    let (status, key) = call(
        &server,
        "GET",
        "/v1/names/a.example.test/certificates/active/key",
        Some(deployer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{key}");
    assert!(
        key.as_str()
            .unwrap_or_default()
            .contains("BEGIN PRIVATE KEY")
    );
    let store = Store::connect(&url).await.expect("store");
    let events = store.audit().events(200).await.expect("events");
    assert!(
        events.iter().any(|e| e.action == "key.download"
            && e.actor == "t-deployer"
            && e.target == "a.example.test"),
        "key download not audited"
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "token.create" && e.actor == "bootstrap-admin")
    );

    // Exactly one audit event per state-changing request, failed ones too.
    let before = store.audit().events(1000).await.expect("events").len();
    let operator = &tokens[2].1;
    let (status, _) = call(
        &server,
        "POST",
        "/v1/names",
        Some(operator),
        Some(json!({"name": "bad_name"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        "POST",
        "/v1/names/a.example.test/swap",
        Some(&tokens[0].1),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&server, "GET", "/v1/names", Some(operator), None).await;
    assert_eq!(status, 200);
    let events = store.audit().events(1000).await.expect("events");
    assert_eq!(
        events.len(),
        before + 2,
        "one event per state-changing request, none for reads"
    );
    assert_eq!(events[0].action, "name.swap");
    assert_eq!(events[0].result, "rejected: 403");
    assert_eq!(events[0].actor, "t-viewer");
    assert_eq!(events[1].action, "name.create");
    assert_eq!(events[1].result, "rejected: 400");
    assert_eq!(events[1].actor, "t-operator");

    // Token deletion takes effect at once.
    let (status, _) = call(
        &server,
        "DELETE",
        "/v1/tokens/t-viewer",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(&server, "GET", "/v1/names", Some(&tokens[0].1), None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_allowlist() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let mut opts = ServerOptions::new(url.clone());
    opts.allow_cidrs = Some(r#"["10.0.0.0/8", "fd00::/8"]"#.into());
    let server = Server::start(&cas, opts).await; // probes stay reachable
    let (status, v) = call(&server, "GET", "/v1/names", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1 is not in server.allow_cidrs"),
        "{v}"
    );
    drop(server);

    let mut opts = ServerOptions::new(url);
    opts.allow_cidrs = Some(r#"["127.0.0.0/8"]"#.into());
    let server = Server::start(&cas, opts).await;
    let (status, v) = call(&server, "GET", "/v1/names", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_over_tls() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let mut opts = ServerOptions::new(url);
    opts.api_tls = true;
    let server = Server::start(&cas, opts).await; // waits on https://.../readyz
    assert!(server.base().starts_with("https://"));
    let (status, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server.wait_ready("a.example.test", 60).await;
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(server.base().replacen("https://", "http://", 1) + "/healthz")
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_distrusted_ca_is_never_chosen_for_new_names() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let server = Server::start(&cas, ServerOptions::new(url)).await;
    let (status, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(status, 201, "{body}");

    let (status, v) = call(
        &server,
        "POST",
        "/v1/cas/pebble-b/distrust",
        Some(ADMIN_TOKEN),
        Some(json!({"reason": "CA incident drill"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(
        &server,
        "POST",
        "/v1/cas/nope/distrust",
        Some(ADMIN_TOKEN),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = call(&server, "GET", "/v1/cas", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    let b = v["items"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "pebble-b"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(b["distrusted"], true, "{v}");
    assert_eq!(b["slots"], 1, "{v}");
    assert_eq!(b["active_names"], 0, "{v}");

    let (status, _) = call(&server, "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    // The counts as stored after the name was created.
    let m = server.metrics_text().await;
    for line in [
        "twincert_names 1",
        "twincert_ca_distrusted{ca=\"pebble-b\"} 1",
        "twincert_ca_distrusted{ca=\"pebble-a\"} 0",
        "twincert_ca_slots{ca=\"pebble-a\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing '{line}' in:\n{m}");
    }

    // Only two CAs: with one distrusted, no diverse pair exists.
    let (status, v) = server.create(json!({"name": "b.example.test"})).await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = server
        .create(json!({"name": "b.example.test", "cas": ["pebble-a", "pebble-b"]}))
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("distrusted"),
        "{v}"
    );

    let (status, _) = call(
        &server,
        "POST",
        "/v1/cas/pebble-b/trust",
        Some(ADMIN_TOKEN),
        Some(json!({"reason": "incident over"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = server.create(json!({"name": "b.example.test"})).await;
    assert_eq!(status, 201, "{v}");
    let (_, events) = call(&server, "GET", "/v1/events", Some(ADMIN_TOKEN), None).await;
    let actions: Vec<&str> = events["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        actions.contains(&"ca.distrust") && actions.contains(&"ca.trust"),
        "{actions:?}"
    );
}
