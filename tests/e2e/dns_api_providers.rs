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
    assert!(!bad.log().contains("sekrit"), "never the key in the log");
    assert!(pdns.txt_records().await.is_empty());
}
