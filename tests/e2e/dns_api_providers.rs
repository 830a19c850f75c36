//! Issue 16, item 1: DNS-01 through the API-based DNS providers, end to
//! end with both Pebble CAs validating for real.
//!
//! * **powerdns** — a real PowerDNS Authoritative (`pdns_server` with the
//!   gsqlite3 backend) started here as a child process on loopback, with
//!   its own config dir and database in the test's temp dir. It is
//!   authoritative for [`PDNS_ZONE`]; the two Pebbles use it as their DNS
//!   server (`-dnsserver`), and twincert's resolver and propagation check
//!   ask it too, so nothing else is involved: the least invasive way to
//!   make the CAs see what the provider wrote.
//! * **cloudflare** and **acme-dns** — no local server exists, so fakes of
//!   exactly their documented endpoints run in this process (modules `cf`
//!   and `adns`): they check every request and write what they were given
//!   into the test BIND with nsupdate, where the CAs look. These two are
//!   verified against the documented APIs, not the live services.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{PebbleOptions, TwoCas, free_port};
use crate::server::{Server, ServerOptions};

fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(format!("{name}.db")).display())
}

/// Waits until `server`'s `name` is ready and says how long DNS-01
/// issuance of both slots took (printed, for the closing note).
async fn ready_timed(server: &Server, provider: &str, name: &str, since: Instant) -> Value {
    let n = server.wait_ready(name, 90).await;
    println!(
        "DNS-01 via {provider}: both slots of {name} issued in {:.2} s",
        since.elapsed().as_secs_f64()
    );
    assert_ne!(n["primary"]["spki_sha256"], n["backup"]["spki_sha256"]);
    assert_ne!(n["primary"]["ca"], n["backup"]["ca"]);
    n
}

// ---------------------------------------------------------------------------
// PowerDNS
// ---------------------------------------------------------------------------

/// The zone the test PowerDNS serves.
const PDNS_ZONE: &str = "pdns.test";

/// A PowerDNS Authoritative server on loopback (DNS and HTTP API), killed
/// on drop.
struct Pdns {
    child: Child,
    dns_port: u16,
    api_port: u16,
    api_key: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl Drop for Pdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pdns {
    /// Starts `pdns_server` in a new directory under `parent` and creates
    /// [`PDNS_ZONE`] through the API.
    async fn start(parent: &Path) -> Pdns {
        let dir = parent.join("pdns");
        std::fs::create_dir_all(&dir).expect("pdns dir");
        let db = dir.join("pdns.sqlite3");
        let schema =
            std::fs::read_to_string("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
                .expect("the gsqlite3 schema (Debian pdns-backend-sqlite3)");
        let mut sqlite = Command::new("sqlite3")
            .arg(&db)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sqlite3 (Debian sqlite3)");
        {
            use std::io::Write;
            sqlite
                .stdin
                .take()
                .expect("stdin")
                .write_all(schema.as_bytes())
                .expect("schema");
        }
        assert!(sqlite.wait().expect("sqlite3").success(), "schema load");
        let dns_port = free_port();
        let api_port = free_port();
        let api_key = format!("pdns-test-key-{}", std::process::id());
        std::fs::write(
            dir.join("pdns.conf"),
            format!(
                "launch=gsqlite3\n\
                 gsqlite3-database={db}\n\
                 local-address=127.0.0.1\n\
                 local-port={dns_port}\n\
                 api=yes\n\
                 api-key={api_key}\n\
                 webserver=yes\n\
                 webserver-address=127.0.0.1\n\
                 webserver-port={api_port}\n\
                 webserver-allow-from=127.0.0.0/8\n\
                 socket-dir={dir}\n\
                 guardian=no\n\
                 daemon=no\n\
                 # no caches: a changed record is answered at once\n\
                 cache-ttl=0\n\
                 negquery-cache-ttl=0\n\
                 query-cache-ttl=0\n\
                 zone-cache-refresh-interval=0\n\
                 # no lookups leave the machine\n\
                 security-poll-suffix=\n\
                 receiver-threads=1\n\
                 distributor-threads=1\n\
                 loglevel=4\n",
                db = db.display(),
                dir = dir.display(),
            ),
        )
        .expect("pdns.conf");
        let log = dir.join("pdns.log");
        let out = std::fs::File::create(&log).expect("pdns log");
        let child = Command::new("/usr/sbin/pdns_server")
            .arg(format!("--config-dir={}", dir.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("pdns_server (Debian pdns-server)");
        let mut pdns = Pdns {
            child,
            dns_port,
            api_port,
            api_key,
            log,
            http: reqwest::Client::new(),
        };
        pdns.create_zone().await;
        pdns
    }

    fn api(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/api/v1/servers/localhost{path}",
            self.api_port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates the zone with NS `ns.pdns.test` (127.0.0.1) once the API
    /// answers.
    async fn create_zone(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let body = json!({
            "name": format!("{PDNS_ZONE}."),
            "kind": "Native",
            "nameservers": [format!("ns.{PDNS_ZONE}.")],
            "rrsets": [
                {"name": format!("ns.{PDNS_ZONE}."), "type": "A", "ttl": 60, "changetype": "REPLACE",
                 "records": [{"content": "127.0.0.1", "disabled": false}]},
                {"name": format!("{PDNS_ZONE}."), "type": "A", "ttl": 60, "changetype": "REPLACE",
                 "records": [{"content": "127.0.0.1", "disabled": false}]},
            ]
        });
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pdns_server exited: {status}\n{}", self.log());
            }
            if let Ok(r) = self
                .http
                .post(self.api("/zones"))
                .header("X-API-Key", &self.api_key)
                .json(&body)
                .send()
                .await
            {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert_eq!(status, 201, "create zone: {text}\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PowerDNS API not up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every TXT record in the zone, as `(name, content)`, read through
    /// the API.
    async fn txt_records(&self) -> Vec<(String, String)> {
        let zone: Value = self
            .http
            .get(self.api(&format!("/zones/{PDNS_ZONE}.")))
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .expect("GET zone")
            .json()
            .await
            .expect("zone JSON");
        let mut out = Vec::new();
        for rrset in zone["rrsets"].as_array().cloned().unwrap_or_default() {
            if rrset["type"] == "TXT" {
                for r in rrset["records"].as_array().cloned().unwrap_or_default() {
                    out.push((
                        rrset["name"].as_str().unwrap_or_default().to_string(),
                        r["content"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        out
    }

    /// The `[[dns_providers]]` entry for this server with `api_key`.
    fn provider_toml(&self, api_key: &str) -> String {
        format!(
            "\n[[dns_providers]]\nid = \"pdns\"\nkind = \"powerdns\"\n\
             api_url = \"http://127.0.0.1:{}\"\nzones = [\"{PDNS_ZONE}\"]\napi_key = \"{api_key}\"\n",
            self.api_port
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn powerdns_concurrent_values_at_one_name_are_appended_and_deleted_one_by_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pdns = Pdns::start(dir.path()).await;
    let cfg = twincert::providers::dns::DnsProviderConfig {
        id: "pdns".into(),
        zones: vec![PDNS_ZONE.into()],
        kind: twincert::providers::dns::DnsProviderKind::PowerDns(
            twincert::providers::dns::PowerDnsSettings {
                api_url: format!("http://127.0.0.1:{}", pdns.api_port)
                    .parse()
                    .expect("url"),
                server_id: "localhost".into(),
                api_key: pdns.api_key.clone(),
            },
        ),
    };
    let provider = twincert::providers::dns::build(&cfg).expect("provider");
    let owner = format!("_acme-challenge.{PDNS_ZONE}");
    // A value someone else put there stays untouched throughout.
    provider.present(&owner, "not-ours").await.expect("present");
    let values: Vec<String> = (0..8).map(|i| format!("value-{i}")).collect();
    let mut tasks = Vec::new();
    for v in &values {
        let (p, o, v) = (Arc::clone(&provider), owner.clone(), v.clone());
        tasks.push(tokio::spawn(async move { p.present(&o, &v).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("present");
    }
    let mut contents: Vec<String> = pdns.txt_records().await.into_iter().map(|r| r.1).collect();
    contents.sort();
    assert_eq!(contents.len(), 9, "{contents:?}");
    let mut tasks = Vec::new();
    for v in &values[..4] {
        let (p, o, v) = (Arc::clone(&provider), owner.clone(), v.clone());
        tasks.push(tokio::spawn(async move { p.cleanup(&o, &v).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("cleanup");
    }
    let mut left: Vec<String> = pdns.txt_records().await.into_iter().map(|r| r.1).collect();
    left.sort();
    assert_eq!(
        left,
        [
            "\"not-ours\"",
            "\"value-4\"",
            "\"value-5\"",
            "\"value-6\"",
            "\"value-7\""
        ],
        "only the removed values are gone"
    );
    // Cleaning up twice is no error; the last value removes the RRset.
    for v in values[4..].iter().chain(&values[..1]) {
        provider.cleanup(&owner, v).await.expect("cleanup");
    }
    provider.cleanup(&owner, "not-ours").await.expect("cleanup");
    assert!(pdns.txt_records().await.is_empty());
    // The server answers DNS with the TTL 60 the provider set.
    provider
        .present(&owner, "ttl-check")
        .await
        .expect("present");
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &pdns.dns_port.to_string()])
        .args(["+noall", "+answer", &owner, "TXT"])
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        fields[1..],
        ["60", "IN", "TXT", "\"ttl-check\""],
        "dig: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn powerdns_both_cas_validate_through_a_real_powerdns_and_a_wrong_key_is_named() {
    let cas0 = tempfile::tempdir().expect("temp dir");
    let pdns = Pdns::start(cas0.path()).await;
    // Both Pebbles resolve through PowerDNS: it is authoritative for the
    // zone, which is all a CA's DNS-01 lookup asks.
    let cas = TwoCas::start_with(PebbleOptions {
        dns_port: Some(pdns.dns_port),
        ..PebbleOptions::default()
    })
    .await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir(), "good"));
    opts.resolver_port = Some(pdns.dns_port);
    opts.authoritative_port = Some(pdns.dns_port);
    opts.extra_config = pdns.provider_toml(&pdns.api_key);
    let server = Server::start(&cas, opts).await;
    let started = Instant::now();
    // Apex + wildcard: four values (two per CA) at one name at once.
    let (status, body) = server
        .create(json!({"name": PDNS_ZONE, "domains": [PDNS_ZONE, format!("*.{PDNS_ZONE}")], "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .create(json!({"name": format!("a.{PDNS_ZONE}"), "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    ready_timed(&server, "powerdns", PDNS_ZONE, started).await;
    ready_timed(&server, "powerdns", &format!("a.{PDNS_ZONE}"), started).await;
    assert!(
        server.log().contains("dns-01 records visible"),
        "{}",
        server.log()
    );
    // Every record is removed again: the API shows no TXT at all.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pdns.txt_records().await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "TXT left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Preflight's provider check: a GET of the zone with our key.
    let name = format!("a.{PDNS_ZONE}");
    let (status, _, report) = crate::preflight::run_preflight(&server, &name).await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report(&name, &report);
    let ok = crate::preflight::check(&report, "provider", None, &name);
    assert_eq!(ok["status"], "ok", "{ok}");
    assert!(
        ok["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!(
                "DNS provider 'pdns' (powerdns): GET zone {PDNS_ZONE}: HTTP 200"
            )),
        "{ok}"
    );

    // A second server with a wrong API key (the first one stops: they
    // share the HTTP-01 port): a clear error naming the provider and the
    // status, never the key.
    drop(server);
    let mut opts = ServerOptions::new(sqlite_url(cas.dir(), "bad"));
    opts.resolver_port = Some(pdns.dns_port);
    opts.authoritative_port = Some(pdns.dns_port);
    opts.extra_config = pdns.provider_toml("wrong-key-sekrit");
    let bad = Server::start(&cas, opts).await;
    let (status, body) = bad
        .create(json!({"name": format!("b.{PDNS_ZONE}"), "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = bad
        .wait_for(&format!("b.{PDNS_ZONE}"), 60, |v| {
            v["primary"]["last_error"].is_string() && v["backup"]["last_error"].is_string()
        })
        .await;
    for slot in ["primary", "backup"] {
        let err = n[slot]["last_error"].as_str().unwrap_or_default();
        assert!(
            err.contains("DNS provider pdns (powerdns)")
                && err.contains("401")
                && err.contains("check api_key"),
            "{slot}: {err}"
        );
        assert!(!err.contains("sekrit"), "never the key: {err}");
    }
    // Preflight names the provider, the status and the setting.
    let name = format!("b.{PDNS_ZONE}");
    let (status, _, report) = crate::preflight::run_preflight(&bad, &name).await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report(&name, &report);
    let refused = crate::preflight::check(&report, "provider", None, &name);
    assert_eq!(refused["status"], "finding", "{refused}");
    assert_eq!(
        refused["fix"], "check api_key of DNS provider 'pdns': HTTP 401",
        "{refused}"
    );
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("PowerDNS answered HTTP 401"),
        "{refused}"
    );
    assert!(!report.to_string().contains("sekrit"), "never the key");
    assert!(!bad.log().contains("sekrit"), "never the key in the log");
    assert!(pdns.txt_records().await.is_empty());
}

// ---------------------------------------------------------------------------
// Harness: the fake APIs write what they were given into the test BIND
// with `harness::nsupdate`, where the CAs look
// ---------------------------------------------------------------------------

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------
// Cloudflare: a fake of the documented API v4 endpoints
// ---------------------------------------------------------------------------

mod cf {
    //! Exactly the Cloudflare API v4 endpoints the provider uses, as
    //! documented (developers.cloudflare.com/api: List Zones, Create /
    //! List / Delete DNS Record), each answering the documented envelope
    //! `{success, errors, messages, result}`. Every request is checked
    //! (Bearer token, method, path, query keys, content type, the JSON
    //! body's fields and values); anything else gets a Cloudflare-shaped
    //! error and is recorded as a violation, which the tests assert is
    //! empty. Created records are written into the test BIND with nsupdate
    //! before the answer, deleted ones removed, so the CAs validate what
    //! the provider asked for.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{delete, get};
    use serde_json::{Value, json};

    /// Faults the fake can be told to answer with.
    pub const NORMAL: u8 = 0;
    pub const FAIL_500: u8 = 1;
    pub const GARBAGE: u8 = 2;

    pub struct Fake {
        pub token: String,
        pub zone: String,
        pub zone_id: String,
        pub bind: crate::harness::UpdateKey,
        /// (id, name, content as stored: quoted)
        pub records: Mutex<Vec<(String, String, String)>>,
        pub violations: Mutex<Vec<String>>,
        pub auth_failures: Mutex<usize>,
        pub fault: AtomicU8,
        next: Mutex<u64>,
    }

    type S = Arc<Fake>;

    fn envelope(status: StatusCode, result: Value) -> Response {
        (
            status,
            axum::Json(json!({"success": true, "errors": [], "messages": [], "result": result})),
        )
            .into_response()
    }

    fn error(status: StatusCode, code: i64, message: &str) -> Response {
        (
            status,
            axum::Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
        )
            .into_response()
    }

    impl Fake {
        pub fn new(token: &str, zone: &str, bind: crate::harness::UpdateKey) -> Arc<Fake> {
            Arc::new(Fake {
                token: token.into(),
                zone: zone.into(),
                zone_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
                bind,
                records: Mutex::new(Vec::new()),
                violations: Mutex::new(Vec::new()),
                auth_failures: Mutex::new(0),
                fault: AtomicU8::new(NORMAL),
                next: Mutex::new(0),
            })
        }

        fn violation(&self, what: String) -> Response {
            self.violations.lock().unwrap().push(what.clone());
            error(StatusCode::BAD_REQUEST, 1004, &what)
        }

        /// Checks the token and the injected fault; `Some` is the answer.
        fn gate(&self, headers: &HeaderMap) -> Option<Response> {
            match self.fault.load(Ordering::SeqCst) {
                FAIL_500 => {
                    return Some(
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "<html>500 Internal Server Error</html>",
                        )
                            .into_response(),
                    );
                }
                GARBAGE => return Some((StatusCode::OK, "{\"succ").into_response()),
                _ => {}
            }
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if auth != format!("Bearer {}", self.token) {
                *self.auth_failures.lock().unwrap() += 1;
                // What Cloudflare answers for an invalid token.
                return Some(error(StatusCode::FORBIDDEN, 10000, "Authentication error"));
            }
            None
        }

        fn check_query(&self, q: &HashMap<String, String>, allowed: &[&str]) -> Option<Response> {
            q.keys()
                .find(|k| !allowed.contains(&k.as_str()))
                .map(|k| self.violation(format!("unknown query parameter {k}")))
        }

        fn check_zone(&self, zid: &str) -> Option<Response> {
            (zid != self.zone_id).then(|| self.violation(format!("unknown zone id {zid}")))
        }

        fn record_json(&self, r: &(String, String, String)) -> Value {
            json!({"id": r.0, "zone_id": self.zone_id, "zone_name": self.zone, "name": r.1,
                   "type": "TXT", "content": r.2, "proxiable": false, "proxied": false,
                   "ttl": 60, "locked": false, "meta": {}, "comment": null, "tags": [],
                   "created_on": "2026-12-07T18:00:00.000000Z", "modified_on": "2026-12-07T18:00:00.000000Z"})
        }
    }

    async fn list_zones(
        State(s): State<S>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        if let Some(r) = s.gate(&headers).or_else(|| s.check_query(&q, &["name"])) {
            return r;
        }
        let zones: Vec<Value> = if q.get("name") == Some(&s.zone) {
            vec![
                json!({"id": s.zone_id, "name": s.zone, "status": "active", "paused": false, "type": "full"}),
            ]
        } else {
            vec![]
        };
        envelope(StatusCode::OK, Value::Array(zones))
    }

    async fn create_record(
        State(s): State<S>,
        Path(zid): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        if let Some(r) = s.gate(&headers).or_else(|| s.check_zone(&zid)) {
            return r;
        }
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct.starts_with("application/json") {
            return s.violation(format!("content-type {ct:?}"));
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
            return s.violation("body is not a JSON object".into());
        };
        if let Some(k) = body.keys().find(|k| {
            ![
                "type", "name", "content", "ttl", "proxied", "comment", "tags",
            ]
            .contains(&k.as_str())
        }) {
            return s.violation(format!("unknown field {k}"));
        }
        if body.get("type") != Some(&json!("TXT")) {
            return s.violation(format!("type {:?}", body.get("type")));
        }
        let ttl = body.get("ttl").and_then(Value::as_u64).unwrap_or(1);
        if ttl != 1 && !(60..=86400).contains(&ttl) {
            return s.violation(format!("ttl {ttl}"));
        }
        let (Some(name), Some(content)) = (
            body.get("name").and_then(Value::as_str),
            body.get("content").and_then(Value::as_str),
        ) else {
            return s.violation("name and content must be strings".into());
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.ends_with(&format!(".{}", s.zone)) && name != s.zone {
            return s.violation(format!("name {name} outside the zone"));
        }
        // Cloudflare stores TXT content quoted.
        let quoted = if content.starts_with('"') {
            content.to_string()
        } else {
            format!("\"{content}\"")
        };
        let record = {
            let mut records = s.records.lock().unwrap();
            if records.iter().any(|r| r.1 == name && r.2 == quoted) {
                return error(
                    StatusCode::BAD_REQUEST,
                    81058,
                    "An identical record already exists.",
                );
            }
            let mut next = s.next.lock().unwrap();
            *next += 1;
            let r = (format!("{:032x}", *next), name.clone(), quoted.clone());
            records.push(r.clone());
            r
        };
        if let Err(e) = crate::harness::nsupdate(
            s.bind.clone(),
            &format!("update add {name}. 60 TXT {quoted}\n"),
        )
        .await
        {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                1000,
                &format!("nsupdate: {e}"),
            );
        }
        envelope(StatusCode::OK, s.record_json(&record))
    }

    async fn list_records(
        State(s): State<S>,
        Path(zid): Path<String>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        if let Some(r) = s.gate(&headers).or_else(|| s.check_zone(&zid)).or_else(|| {
            s.check_query(
                &q,
                &[
                    "type",
                    "name.exact",
                    "content.exact",
                    "per_page",
                    "page",
                    "match",
                ],
            )
        }) {
            return r;
        }
        let records: Vec<Value> = s
            .records
            .lock()
            .unwrap()
            .iter()
            // Every record here is TXT.
            .filter(|_| q.get("type").is_none_or(|t| t == "TXT"))
            .filter(|r| {
                q.get("name.exact")
                    .is_none_or(|n| n.eq_ignore_ascii_case(&r.1))
            })
            .filter(|r| q.get("content.exact").is_none_or(|c| *c == r.2))
            .map(|r| s.record_json(r))
            .collect();
        let n = records.len();
        let answer = json!({"success": true, "errors": [], "messages": [], "result": records,
                            "result_info": {"page": 1, "per_page": 100, "count": n, "total_count": n, "total_pages": 1}});
        (StatusCode::OK, axum::Json(answer)).into_response()
    }

    async fn delete_record(
        State(s): State<S>,
        Path((zid, rid)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(r) = s.gate(&headers).or_else(|| s.check_zone(&zid)) {
            return r;
        }
        let removed = {
            let mut records = s.records.lock().unwrap();
            let pos = records.iter().position(|r| r.0 == rid);
            pos.map(|i| records.remove(i))
        };
        let Some((id, name, content)) = removed else {
            return error(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
        };
        if let Err(e) = crate::harness::nsupdate(
            s.bind.clone(),
            &format!("update delete {name}. TXT {content}\n"),
        )
        .await
        {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                1000,
                &format!("nsupdate: {e}"),
            );
        }
        envelope(StatusCode::OK, json!({"id": id}))
    }

    async fn fallback(
        State(s): State<S>,
        uri: axum::http::Uri,
        method: axum::http::Method,
    ) -> Response {
        s.violations.lock().unwrap().push(format!("{method} {uri}"));
        error(
            StatusCode::NOT_FOUND,
            7003,
            &format!(
                "Could not route to {}, perhaps your object identifier is invalid?",
                uri.path()
            ),
        )
    }

    pub fn app(fake: Arc<Fake>) -> Router {
        Router::new()
            .route("/client/v4/zones", get(list_zones))
            .route(
                "/client/v4/zones/{zid}/dns_records",
                get(list_records).post(create_record),
            )
            .route(
                "/client/v4/zones/{zid}/dns_records/{rid}",
                delete(delete_record),
            )
            .fallback(fallback)
            .with_state(fake)
    }
}

fn cloudflare_toml(base: &str, token: &str) -> String {
    format!(
        "\n[[dns_providers]]\nid = \"cf\"\nkind = \"cloudflare\"\nzones = [\"example.test\"]\n\
         api_url = \"{base}/client/v4\"\napi_token = \"{token}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudflare_both_cas_validate_through_the_documented_api_and_a_bad_token_is_named() {
    let cas = TwoCas::start(0).await;
    let token = "cf-scoped-token-0123456789";
    let fake = cf::Fake::new(token, "example.test", cas.dns.update_key());
    let base = serve(cf::app(Arc::clone(&fake))).await;

    // 5xx and garbage first, straight through the provider: clear,
    // retryable errors naming the provider; then it works.
    let provider = twincert::providers::dns::build(&twincert::providers::dns::DnsProviderConfig {
        id: "cf".into(),
        zones: vec!["example.test".into()],
        kind: twincert::providers::dns::DnsProviderKind::Cloudflare(
            twincert::providers::dns::CloudflareSettings {
                api_url: format!("{base}/client/v4").parse().expect("url"),
                api_token: token.into(),
            },
        ),
    })
    .expect("provider");
    let owner = "_acme-challenge.direct.example.test";
    fake.fault
        .store(cf::FAIL_500, std::sync::atomic::Ordering::SeqCst);
    let err = provider.present(owner, "v1").await.expect_err("500").0;
    assert!(
        err.contains("DNS provider cf (cloudflare): adding TXT at")
            && err.contains("HTTP 500")
            && err.contains("will retry"),
        "{err}"
    );
    fake.fault
        .store(cf::GARBAGE, std::sync::atomic::Ordering::SeqCst);
    let err = provider.present(owner, "v1").await.expect_err("garbage").0;
    assert!(
        err.contains("not the API's JSON envelope") && err.contains("will retry"),
        "{err}"
    );
    fake.fault
        .store(cf::NORMAL, std::sync::atomic::Ordering::SeqCst);
    provider.present(owner, "v1").await.expect("present");
    provider
        .present(owner, "v1")
        .await
        .expect("present twice is fine");
    provider.present(owner, "v2").await.expect("present");
    let mut seen = cas.dns.txt(owner);
    seen.sort();
    assert_eq!(seen, ["v1", "v2"]);
    provider.cleanup(owner, "v1").await.expect("cleanup");
    assert_eq!(cas.dns.txt(owner), ["v2"], "only v1 is gone");
    provider.cleanup(owner, "v2").await.expect("cleanup");
    provider
        .cleanup(owner, "v2")
        .await
        .expect("cleanup twice is fine");
    assert!(cas.dns.txt(owner).is_empty());

    let mut opts = ServerOptions::new(sqlite_url(cas.dir(), "good"));
    opts.bind_provider = false;
    opts.extra_config = cloudflare_toml(&base, token);
    let server = Server::start(&cas, opts).await;
    let started = Instant::now();
    let (status, body) = server
        .create(json!({"name": "cf.example.test", "domains": ["cf.example.test", "*.cf.example.test"], "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .create(json!({"name": "cf2.example.test", "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    ready_timed(&server, "cloudflare", "cf.example.test", started).await;
    ready_timed(&server, "cloudflare", "cf2.example.test", started).await;
    // Preflight's provider check: the zone lookup with our token.
    let (status, _, report) = crate::preflight::run_preflight(&server, "cf2.example.test").await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report("cf2.example.test", &report);
    let ok = crate::preflight::check(&report, "provider", None, "cf2.example.test");
    assert_eq!(ok["status"], "ok", "{ok}");
    assert!(
        ok["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("DNS provider 'cf' (cloudflare): zone lookup of example.test: HTTP 200"),
        "{ok}"
    );
    // A 5xx is "could not check", not a finding.
    fake.fault
        .store(cf::FAIL_500, std::sync::atomic::Ordering::SeqCst);
    let down = provider.check("example.test").await;
    fake.fault
        .store(cf::NORMAL, std::sync::atomic::Ordering::SeqCst);
    assert!(
        matches!(&down, twincert::providers::dns::ProviderCheck::Unreachable(m) if m.contains("HTTP 500")),
        "{down:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = fake.records.lock().unwrap().clone();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "records left: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The fake mirrors a deletion into BIND after dropping the record from
    // its own list: wait for BIND too (seen once under load).
    for name in [
        "_acme-challenge.cf.example.test",
        "_acme-challenge.cf2.example.test",
    ] {
        while !cas.dns.txt(name).is_empty() {
            assert!(Instant::now() < deadline, "{name} still in BIND");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(server);
    let violations = fake.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "requests off the documented API: {violations:?}"
    );
    assert_eq!(*fake.auth_failures.lock().unwrap(), 0);

    // A bad token: both slots fail with an error naming the provider, the
    // status and Cloudflare's message, never the token.
    let mut opts = ServerOptions::new(sqlite_url(cas.dir(), "bad"));
    opts.bind_provider = false;
    opts.extra_config = cloudflare_toml(&base, "wrong-sekrit-token");
    let bad = Server::start(&cas, opts).await;
    let (status, body) = bad
        .create(json!({"name": "cf3.example.test", "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = bad
        .wait_for("cf3.example.test", 60, |v| {
            v["primary"]["last_error"].is_string() && v["backup"]["last_error"].is_string()
        })
        .await;
    for slot in ["primary", "backup"] {
        let err = n[slot]["last_error"].as_str().unwrap_or_default();
        assert!(
            err.contains("DNS provider cf (cloudflare)")
                && err.contains("HTTP 403")
                && err.contains("10000 Authentication error")
                && err.contains("check api_token"),
            "{slot}: {err}"
        );
        assert!(!err.contains("sekrit"), "never the token: {err}");
    }
    // Preflight: the zone lookup is refused, naming the provider, the
    // status and the setting, never the token.
    let (status, _, report) = crate::preflight::run_preflight(&bad, "cf3.example.test").await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report("cf3.example.test", &report);
    let refused = crate::preflight::check(&report, "provider", None, "cf3.example.test");
    assert_eq!(refused["status"], "finding", "{refused}");
    assert_eq!(
        refused["fix"], "check api_token of DNS provider 'cf': HTTP 403",
        "{refused}"
    );
    assert!(!report.to_string().contains("sekrit"), "never the token");
    assert!(!bad.log().contains("sekrit"));
    assert!(*fake.auth_failures.lock().unwrap() > 0);
}

// ---------------------------------------------------------------------------
// acme-dns: a fake of its documented API
// ---------------------------------------------------------------------------

mod adns {
    //! Exactly the endpoints of joohoi/acme-dns the provider uses, as
    //! its README documents them: `POST /register` (optional JSON body
    //! `{"allowfrom": [...]}`) answering 201 with `{username, password,
    //! fulldomain, subdomain, allowfrom}`, and `POST /update` with the
    //! headers `X-Api-User` / `X-Api-Key` and the body `{subdomain, txt}`
    //! (a 43-character TXT, as acme-dns checks) answering `{"txt": ...}`;
    //! a wrong user or key gets 401 `{"error": "forbidden"}`; and `GET
    //! /health` (200, empty), which preflight's provider check calls. Like acme-dns
    //! it keeps the two newest values per account; it writes them into the
    //! test BIND at the account's fulldomain, so the CAs validate through
    //! the operator's CNAME. Anything off the API is a recorded violation.

    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use serde_json::{Value, json};

    pub struct Account {
        pub username: String,
        pub password: String,
        pub subdomain: String,
        pub fulldomain: String,
        pub txt: Vec<String>,
    }

    pub struct Fake {
        /// The zone the fulldomains are in (the server's own domain).
        pub domain: String,
        pub bind: crate::harness::UpdateKey,
        pub accounts: Mutex<Vec<Account>>,
        pub registrations: Mutex<usize>,
        pub updates: Mutex<usize>,
        pub violations: Mutex<Vec<String>>,
        /// Held from changing an account's values until BIND has them, so
        /// two updates reach BIND in the order they were made (acme-dns
        /// itself writes its database in one step).
        write: tokio::sync::Mutex<()>,
    }

    type S = Arc<Fake>;

    impl Fake {
        pub fn new(domain: &str, bind: crate::harness::UpdateKey) -> Arc<Fake> {
            Arc::new(Fake {
                domain: domain.into(),
                bind,
                accounts: Mutex::new(Vec::new()),
                registrations: Mutex::new(0),
                updates: Mutex::new(0),
                violations: Mutex::new(Vec::new()),
                write: tokio::sync::Mutex::new(()),
            })
        }

        fn violation(&self, what: String) -> Response {
            self.violations.lock().unwrap().push(what.clone());
            (StatusCode::BAD_REQUEST, axum::Json(json!({"error": what}))).into_response()
        }
    }

    fn uuid(n: usize, salt: u32) -> String {
        format!(
            "{salt:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            n,
            n,
            n,
            n * 7919
        )
    }

    async fn register(
        axum::extract::State(s): axum::extract::State<S>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        let mut allowfrom = Vec::new();
        if !body.is_empty() {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !ct.starts_with("application/json") {
                return s.violation(format!("register: content-type {ct:?}"));
            }
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(o)) if o.keys().all(|k| k == "allowfrom") => {
                    if let Some(a) = o.get("allowfrom") {
                        let Some(list) = a.as_array() else {
                            return s.violation("register: allowfrom is not a list".into());
                        };
                        allowfrom = list.clone();
                    }
                }
                other => return s.violation(format!("register: body {other:?}")),
            }
        }
        let mut n = s.registrations.lock().unwrap();
        *n += 1;
        let subdomain = uuid(*n, 0x8e5700ea);
        let account = Account {
            username: uuid(*n, 0xc36f50e8),
            password: format!("htB9mR9DYgcu9bX_afHF62erXaH2TS7bg9K{:05}", *n),
            fulldomain: format!("{subdomain}.{}", s.domain),
            subdomain,
            txt: Vec::new(),
        };
        let answer = json!({"username": account.username, "password": account.password,
                            "fulldomain": account.fulldomain, "subdomain": account.subdomain,
                            "allowfrom": allowfrom});
        s.accounts.lock().unwrap().push(account);
        (StatusCode::CREATED, axum::Json(answer)).into_response()
    }

    async fn update(
        axum::extract::State(s): axum::extract::State<S>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        let header = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (user, key) = (header("x-api-user"), header("x-api-key"));
        let ct = header("content-type");
        if !ct.starts_with("application/json") {
            return s.violation(format!("update: content-type {ct:?}"));
        }
        let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&body) else {
            return s.violation("update: body is not a JSON object".into());
        };
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort();
        if keys != ["subdomain", "txt"] {
            return s.violation(format!("update: fields {keys:?}"));
        }
        let (Some(subdomain), Some(txt)) = (o["subdomain"].as_str(), o["txt"].as_str()) else {
            return s.violation("update: subdomain and txt must be strings".into());
        };
        if txt.len() != 43 {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "bad_txt"})),
            )
                .into_response();
        }
        let _in_order = s.write.lock().await;
        let (fulldomain, values) = {
            let mut accounts = s.accounts.lock().unwrap();
            let Some(a) = accounts
                .iter_mut()
                .find(|a| a.username == user && a.password == key)
            else {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "forbidden"})),
                )
                    .into_response();
            };
            if a.subdomain != subdomain {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "forbidden"})),
                )
                    .into_response();
            }
            // The two newest values are kept, as acme-dns does.
            a.txt.push(txt.to_string());
            if a.txt.len() > 2 {
                a.txt.remove(0);
            }
            (a.fulldomain.clone(), a.txt.clone())
        };
        *s.updates.lock().unwrap() += 1;
        let mut script = format!("update delete {fulldomain}. TXT\n");
        for v in &values {
            script.push_str(&format!("update add {fulldomain}. 60 TXT \"{v}\"\n"));
        }
        if let Err(e) = crate::harness::nsupdate(s.bind.clone(), &script).await {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": e})),
            )
                .into_response();
        }
        (StatusCode::OK, axum::Json(json!({"txt": txt}))).into_response()
    }

    /// `GET /health`: 200 with an empty body, as acme-dns's README
    /// documents it (what preflight's provider check calls).
    async fn health() -> StatusCode {
        StatusCode::OK
    }

    async fn fallback(
        axum::extract::State(s): axum::extract::State<S>,
        uri: axum::http::Uri,
        method: axum::http::Method,
    ) -> Response {
        s.violations.lock().unwrap().push(format!("{method} {uri}"));
        (StatusCode::NOT_FOUND, "404 page not found").into_response()
    }

    pub fn app(fake: Arc<Fake>) -> Router {
        Router::new()
            .route("/register", post(register))
            .route("/update", post(update))
            .route("/health", axum::routing::get(health))
            .fallback(fallback)
            .with_state(fake)
    }
}

fn acme_dns_toml(base: &str) -> String {
    format!(
        "\n[[dns_providers]]\nid = \"adns\"\nkind = \"acme-dns\"\nzones = [\"example.test\"]\n\
         api_url = \"{base}\"\nallow_from = [\"127.0.0.0/8\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_dns_registers_once_names_the_cname_and_both_cas_validate_through_it() {
    let cas = TwoCas::start(0).await;
    let fake = adns::Fake::new("auth.example.test", cas.dns.update_key());
    let base = serve(adns::app(Arc::clone(&fake))).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir(), "adns"));
    opts.bind_provider = false;
    opts.extra_config = acme_dns_toml(&base);
    let mut server = Server::start(&cas, opts).await;
    let name = "adns.example.test";
    let (status, body) = server
        .create(json!({"name": name, "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    // No CNAME yet: twincert registers once and names the record to create.
    let cname_error = |v: &Value| {
        ["primary", "backup"].iter().all(|slot| {
            v[slot]["last_error"].as_str().is_some_and(|e| {
                e.contains("create the CNAME `_acme-challenge.adns.example.test. CNAME ")
            })
        })
    };
    let n = server.wait_for(name, 60, cname_error).await;
    let err = n["primary"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("DNS provider adns (acme-dns)"), "{err}");
    assert_eq!(
        *fake.registrations.lock().unwrap(),
        1,
        "one registration for both slots"
    );
    let (fulldomain, password) = {
        let accounts = fake.accounts.lock().unwrap();
        (accounts[0].fulldomain.clone(), accounts[0].password.clone())
    };
    assert!(err.contains(&format!("CNAME {fulldomain}.`")), "{err}");
    assert!(!err.contains(&password) && !server.log().contains(&password));
    // The credentials are sealed in the store, not readable in its files.
    // (The database file must be there; its WAL may be checkpointed away.)
    assert!(cas.dir().join("adns.db").is_file(), "the store file");
    for file in ["adns.db", "adns.db-wal"] {
        if let Ok(bytes) = std::fs::read(cas.dir().join(file)) {
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "the acme-dns password is in {file} in clear"
            );
        }
    }

    // A restart reuses the stored registration: the same CNAME is named
    // again, and nothing registers a second time.
    let before = server.wait_for(name, 5, |_| true).await;
    let attempts = |v: &Value| v["primary"]["order"]["attempts"].as_i64().unwrap_or(0);
    let attempts_before = attempts(&before);
    server.restart(Vec::new()).await;
    let after = server
        .wait_for(name, 60, |v| {
            attempts(v) > attempts_before && cname_error(v)
        })
        .await;
    assert!(attempts(&after) > attempts_before, "{after:#}");
    assert_eq!(
        *fake.registrations.lock().unwrap(),
        1,
        "no second /register"
    );

    // The operator creates the CNAME; both CAs validate through it.
    crate::harness::nsupdate(
        cas.dns.update_key(),
        &format!("update add _acme-challenge.{name}. 60 CNAME {fulldomain}.\n"),
    )
    .await
    .expect("create the CNAME");
    let started = Instant::now();
    ready_timed(&server, "acme-dns", name, started).await;
    assert_eq!(
        *fake.registrations.lock().unwrap(),
        1,
        "no second /register"
    );
    assert!(*fake.updates.lock().unwrap() >= 2, "both values were sent");
    // Preflight follows the CNAME to the acme-dns zone and asks the
    // server's documented `GET /health`.
    let (status, _, report) = crate::preflight::run_preflight(&server, name).await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report(name, &report);
    let ok = crate::preflight::check(&report, "provider", None, name);
    assert_eq!(ok["status"], "ok", "{ok}");
    assert!(
        ok["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("DNS provider 'adns' (acme-dns): GET /health for example.test: HTTP 200"),
        "{ok}"
    );
    let violations = fake.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "requests off the documented API: {violations:?}"
    );
}
