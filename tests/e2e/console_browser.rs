//! Issue 18: the operator console in a real browser, signed in through a
//! real OpenID Provider, against a server with real certificates.
//!
//! Three Pebbles and BIND (the harness), `twincert serve` over HTTPS with four
//! names issued on both CAs, an OpenID Provider (`tests/console/idp.mjs`:
//! oidc-provider on loopback HTTPS, PKCE required, accounts with a `groups`
//! claim) and headless Chromium (Debian's, driven by playwright-core from
//! `tests/console/run.mjs`). The scenarios (sign-in by token and by OIDC,
//! viewer refused, CSRF refused, bad input, the CA-wide emergency swap, then
//! the distrust of the CA swapped away from, token create and delete, sign-
//! out) run in the browser; this test checks their JSON verdict, then checks
//! the swap and the distrust through the API itself, and the screenshots.
//!
//! Needs `node` (>= 20), `/usr/bin/chromium` and the npm packages that
//! `scripts/console-node.sh` installs (its directory in
//! `TWINCERT_TEST_CONSOLE_NODE`, set by `scripts/test.sh`). Without them
//! the test says so and returns — except under CI (`CI` set), where it
//! fails: CI must run it. `TWINCERT_TEST_CONSOLE_SCREENSHOTS=docs/console`
//! copies the screenshots there (how the committed ones are made).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{PebbleOptions, Proc, TwoCas, free_port, read_log};
use crate::server::{ADMIN_TOKEN, Server, ServerOptions};

/// Environment variable with the directory holding the tests' node_modules.
const NODE_MODULES_ENV: &str = "TWINCERT_TEST_CONSOLE_NODE";
/// The scenarios `run.mjs` must report, every one passed.
const SCENARIOS: &[&str] = &[
    "security_headers",
    "token_sign_in",
    "keyboard_sign_in",
    "without_javascript",
    "pages",
    "oidc_operator",
    "oidc_callback_moves_on",
    "oidc_unmapped_refused",
    "viewer_refused",
    "oidc_viewer",
    "csrf_refused",
    "bad_input",
    "emergency_swap",
    "emergency_distrust",
    "tokens",
    "sign_out",
    "no_server_errors",
];
/// Screenshots taken at 1280×800 (the `-phone` ones at 390×844).
const SCREENSHOTS: &[&str] = &[
    "login.png",
    "overview.png",
    "names.png",
    "name.png",
    "emergency.png",
    "cas.png",
    "alerts.png",
    "incidents.png",
    "operations.png",
    "audit.png",
    "tokens.png",
    "overview-phone.png",
    "name-phone.png",
    "name-viewer.png",
    "error-missing-reason.png",
    "emergency-dry-run.png",
    "operation-done.png",
    "distrust-dry-run.png",
];

/// The screenshots committed under `docs/console/` (refreshed by
/// `TWINCERT_TEST_CONSOLE_SCREENSHOTS=docs/console`): one per page, two at
/// phone width.
const DOCS_SCREENSHOTS: &[&str] = &[
    "login.png",
    "overview.png",
    "names.png",
    "name.png",
    "emergency.png",
    "emergency-dry-run.png",
    "operation-done.png",
    "distrust-dry-run.png",
    "cas.png",
    "alerts.png",
    "incidents.png",
    "operations.png",
    "audit.png",
    "tokens.png",
    "overview-phone.png",
    "name-phone.png",
];

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// (node, chromium, node_modules directory), or `None` (the caller
/// returns) when one is missing outside CI.
fn browser_tools(test: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let node = which("node");
    let chromium = Some(PathBuf::from("/usr/bin/chromium"))
        .filter(|p| p.exists())
        .or_else(|| which("chromium"));
    let modules = std::env::var_os(NODE_MODULES_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(console_dir()).filter(|d| d.join("node_modules").is_dir()));
    let missing: Vec<&str> = [
        ("node", node.is_some()),
        ("chromium (apt-get install chromium)", chromium.is_some()),
        (
            "the npm packages (scripts/console-node.sh, TWINCERT_TEST_CONSOLE_NODE)",
            modules.is_some(),
        ),
    ]
    .iter()
    .filter(|(_, ok)| !ok)
    .map(|(what, _)| *what)
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "browser test {test} not run: missing {} (scripts/test.sh installs them)",
            missing.join(", ")
        );
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the console browser tests: missing {}",
            missing.join(", ")
        );
        return None;
    }
    Some((node?, chromium?, modules?))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// Starts `idp.mjs` and waits for its issuer line.
fn start_idp(
    node: &Path,
    modules: &Path,
    cas: &TwoCas,
    redirect: &str,
    secret: &str,
) -> (Proc, String, PathBuf) {
    let port = free_port();
    let log = cas.dir().join("idp.log");
    let mut cmd = Command::new(node);
    cmd.arg(console_dir().join("idp.mjs"))
        .args(["--port", &port.to_string()])
        .arg("--cert")
        .arg(&cas.tls.cert_path)
        .arg("--key")
        .arg(&cas.tls.key_path)
        .args(["--redirect", redirect, "--secret", secret])
        .env(NODE_MODULES_ENV, modules);
    let mut proc = Proc::spawn("idp.mjs", cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read_log(&log);
        if let Some(issuer) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v["issuer"].as_str().map(str::to_owned))
        {
            return (proc, issuer, log);
        }
        if let Some(why) = proc.exited() {
            panic!("{why}:\n{text}");
        }
        assert!(Instant::now() < deadline, "idp.mjs not ready:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn make_token(server: &Server, name: &str, role: &str) -> String {
    let r = server
        .client()
        .post(format!("{}/v1/tokens", server.base()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": name, "role": role}))
        .send()
        .await
        .expect("POST /v1/tokens");
    assert_eq!(r.status().as_u16(), 201, "create token {name}");
    let v: Value = r.json().await.expect("token JSON");
    v["token"].as_str().expect("token shown once").to_owned()
}

/// Width and height from a PNG's IHDR.
fn png_size(path: &Path) -> (u32, u32) {
    let mut head = [0u8; 24];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        &head[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        path.display()
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&head[16..20]), be(&head[20..24]))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn console_in_a_real_browser_with_a_real_identity_provider() {
    let Some((node, chromium, modules)) =
        browser_tools("console_in_a_real_browser_with_a_real_identity_provider")
    else {
        return;
    };
    // A third CA re-issues the slots the emergency swap abandons, so its
    // operation can reach `done` (as in emergency.rs).
    // 60-day certificates, so the overview's 90-day expiry timeline has
    // something to draw.
    let cas = TwoCas::start_three(PebbleOptions {
        validity_seconds: Some(60 * 86_400),
        ..PebbleOptions::default()
    })
    .await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let mut opts = ServerOptions::new(url);
    // Served over HTTPS as in production: Secure cookies, and the console
    // and the IdP are one site (https://127.0.0.1).
    opts.api_tls = true;
    let mut server = Server::start(&cas, opts).await;

    // Four names, three active on pebble-a (the preferred CA), one on
    // pebble-b: the emergency swap away from pebble-a flips three.
    let names = [
        "a.example.test",
        "b.example.test",
        "c.example.test",
        "d.example.test",
    ];
    for (i, name) in names.iter().enumerate() {
        let body = if i == 3 {
            json!({"name": name, "cas": ["pebble-b", "pebble-a"]})
        } else {
            json!({"name": name})
        };
        let (status, v) = server.create(body).await;
        assert_eq!(status, 201, "{v}");
    }
    for name in names {
        server.wait_ready(name, 120).await;
    }
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for name in names {
            v.push(server.name(name).await);
        }
        v
    };
    let active_ca = |v: &Value| v[v["active"].as_str().unwrap_or_default()]["ca"].clone();
    let on_a = before.iter().filter(|v| active_ca(v) == "pebble-a").count();
    assert_eq!(on_a, 3, "{before:#?}");

    let operator = make_token(&server, "browser-operator", "operator").await;
    let viewer = make_token(&server, "browser-viewer", "viewer").await;

    // The IdP, then the console's OIDC settings (the redirect URL needs the
    // API's port, known only now) and a restart on the same store.
    let secret = "browser-test-client-secret-0123456789";
    let redirect = format!("{}/ui/oidc/callback", server.base());
    let (_idp, issuer, idp_log) = start_idp(&node, &modules, &cas, &redirect, secret);
    let mut config = std::fs::read_to_string(server.config_path()).expect("read config");
    config.push_str(&format!(
        r#"
[console.oidc]
issuer = "{issuer}"
client_id = "twincert"
client_secret = "{secret}"
redirect_url = "{redirect}"
role_claim = "groups"
role_map = {{ "twincert-operators" = "operator", "twincert-viewers" = "viewer", "twincert-admins" = "admin" }}
ca_file = "{ca}"
"#,
        ca = cas.tls.ca_pem_path.display()
    ));
    std::fs::write(server.config_path(), config).expect("write config");
    server.restart(Vec::new()).await;

    let shots = cas.dir().join("screenshots");
    let run_config = cas.dir().join("run.json");
    let cfg = json!({
        "base": server.base(),
        "issuer": issuer,
        "chromium": chromium,
        "trust_cert": cas.tls.cert_path,
        "tokens": {"admin": ADMIN_TOKEN, "operator": operator, "viewer": viewer},
        "names": names,
        "swap_ca": "pebble-a",
        "expect_flip": on_a,
        "screenshots": shots,
    });
    std::fs::write(&run_config, cfg.to_string()).expect("write run.json");

    let mut cmd = Command::new(&node);
    cmd.arg(console_dir().join("run.mjs"))
        .arg(&run_config)
        .env(NODE_MODULES_ENV, &modules)
        // Node's own HTTPS calls (the API checks) trust the harness CA.
        .env("NODE_EXTRA_CA_CERTS", &cas.tls.ca_pem_path)
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run node run.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = || {
        format!(
            "--- run.mjs stderr ---\n{stderr}\n--- twincert log (tail) ---\n{}\n--- idp log (tail) ---\n{}",
            tail(&server.log(), 60),
            tail(&read_log(&idp_log), 30)
        )
    };
    // Copied before the verdict is judged, so a failing scenario's pages
    // can be looked at too.
    if let Some(dest) = std::env::var_os("TWINCERT_TEST_CONSOLE_SCREENSHOTS") {
        let dest = PathBuf::from(dest);
        std::fs::create_dir_all(&dest).expect("create screenshot dir");
        for file in DOCS_SCREENSHOTS {
            if shots.join(file).exists() {
                std::fs::copy(shots.join(file), dest.join(file)).expect("copy screenshot");
            }
        }
    }
    let verdict: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("run.mjs printed no JSON ({e}): {stdout}\n{}", context()));
    eprintln!("run.mjs: {} in {:?}", verdict["ok"], started.elapsed());
    let results = verdict["scenarios"].as_array().cloned().unwrap_or_default();
    let unexpected: Vec<String> = results
        .iter()
        .filter(|r| r["ok"] != true)
        .map(|r| format!("{}: {}", r["name"], r["detail"]))
        .collect();
    assert!(
        unexpected.is_empty(),
        "failed scenarios:\n{}\n{}",
        unexpected.join("\n"),
        context()
    );
    for s in SCENARIOS {
        assert!(
            results.iter().any(|r| r["name"] == *s && r["ok"] == true),
            "scenario {s} not reported as passed: {verdict:#}"
        );
    }
    // run.mjs exits 0 only when every scenario passed.
    assert_eq!(
        out.status.code(),
        Some(0),
        "run.mjs exit {}\n{}",
        out.status,
        context()
    );

    // The API agrees with what the browser did: the three names active on
    // pebble-a are active on pebble-b now; the fourth did not move; pebble-a
    // is distrusted and holds no slot (the fourth name's backup was
    // re-issued by the third CA).
    let cas_now = server
        .client()
        .get(format!("{}/v1/cas", server.base()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /v1/cas")
        .json::<Value>()
        .await
        .expect("CA list");
    let a = cas_now["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == "pebble-a")
        .cloned()
        .expect("pebble-a listed");
    assert_eq!(a["distrusted"], true, "{a}");
    let d = server.name("d.example.test").await;
    assert_eq!(d["backup"]["ca"], "pebble-c", "{d:#}");
    for old in &before {
        let now = server.name(old["name"].as_str().expect("name")).await;
        assert_eq!(active_ca(&now), "pebble-b", "{now:#}");
        if active_ca(old) == "pebble-a" {
            assert_ne!(now["active"], old["active"], "{now:#}");
            // The abandoned slot was re-issued by the third CA.
            let name = old["name"].as_str().expect("name");
            let slot = old["active"].as_str().expect("active").to_owned();
            server
                .wait_for(name, 120, |v| {
                    v[&slot]["ca"] == "pebble-c" && v["state"] == "ready"
                })
                .await;
        } else {
            assert_eq!(now["active"], old["active"], "{now:#}");
        }
    }

    // Every page was photographed, at desktop and phone width.
    for file in SCREENSHOTS {
        let path = shots.join(file);
        let (w, h) = png_size(&path);
        if file.contains("-phone") {
            assert_eq!((w, h), (390, 844), "{file}");
        } else if *file == "name.png" {
            assert_eq!(w, 1280, "{file} (full page)");
        } else {
            assert_eq!((w, h), (1280, 800), "{file}");
        }
    }
}
