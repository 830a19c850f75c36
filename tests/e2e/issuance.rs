//! Issue 2 end to end: a primary and a backup certificate from two real
//! Pebble CAs over HTTP-01, on SQLite and on PostgreSQL; crash resume;
//! a CA rejecting half of all nonces; a CA that is down and comes back.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use twincert::domain::Slot;
use twincert::keys::seal::Sealer;
use twincert::store::Store;

use crate::harness::{TwoCas, fresh_pg_database, pg_url_or_skip};
use crate::server::{MASTER_KEY, Server, ServerOptions};

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM chain")
}

/// Whether `chain_pem` (leaf first) verifies up to the root in `root_pem`.
fn verifies(chain_pem: &str, root_pem: &str, dns: &str) -> Result<(), String> {
    let chain = ders(chain_pem);
    let roots = ders(root_pem);
    let anchor = webpki::anchor_from_trusted_cert(&roots[0])
        .map_err(|e| e.to_string())?
        .to_owned();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| e.to_string())?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let name =
        rustls_pki_types::ServerName::try_from(dns.to_string()).map_err(|e| e.to_string())?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|e| e.to_string())
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("twincert.db").display())
}

/// The shared check of the main scenario; returns the name's JSON.
async fn primary_and_backup(cas: &TwoCas, server: &Server) -> Value {
    let (status, created) = server
        .create(
            json!({"name": "a.example.test", "domains": ["a.example.test", "www.example.test"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "provisioning");

    let n = server.wait_ready("a.example.test", 60).await;
    assert_eq!(n["active"], "primary");
    assert_eq!(n["primary"]["ca"], "pebble-a");
    assert_eq!(n["backup"]["ca"], "pebble-b");
    assert_eq!(n["primary"]["state"], "valid");
    assert_eq!(n["backup"]["state"], "valid");
    assert!(n["diversity_error"].is_null(), "{n}");
    let spki_p = n["primary"]["spki_sha256"].as_str().expect("primary spki");
    let spki_b = n["backup"]["spki_sha256"].as_str().expect("backup spki");
    assert_eq!(spki_p.len(), 64);
    assert_ne!(spki_p, spki_b, "primary and backup share a key");
    assert_ne!(n["primary"]["serial"], n["backup"]["serial"]);

    let (root_a, root_b) = (cas.a.root_pem().await, cas.b.root_pem().await);
    let chain_p = server.chain_pem("a.example.test", "primary").await;
    let chain_b = server.chain_pem("a.example.test", "backup").await;
    for dns in ["a.example.test", "www.example.test"] {
        verifies(&chain_p, &root_a, dns).expect("primary chains to CA a's root");
        verifies(&chain_b, &root_b, dns).expect("backup chains to CA b's root");
    }
    assert!(
        verifies(&chain_p, &root_b, "a.example.test").is_err(),
        "primary must not verify against CA b's root"
    );
    assert!(
        verifies(&chain_b, &root_a, "a.example.test").is_err(),
        "backup must not verify against CA a's root"
    );
    // The active alias serves the primary.
    assert_eq!(server.chain_pem("a.example.test", "active").await, chain_p);
    n
}

/// Every private key the store holds, opened with the test master key.
async fn stored_key_ders(store_url: &str) -> Vec<Vec<u8>> {
    let store = Store::connect(store_url).await.expect("open store");
    let sealer = Sealer::from_text(MASTER_KEY).expect("master key");
    let name = store
        .names()
        .name("a.example.test")
        .await
        .expect("read name")
        .expect("name exists");
    let mut out = Vec::new();
    for slot in &name.slots {
        let cert = slot.cert.as_ref().expect("slot has a certificate");
        let (_, sealed) = store
            .keys()
            .private_key(&cert.private_key_id)
            .await
            .expect("read key")
            .expect("key row");
        assert_eq!(sealed.key_id, "test-1");
        out.push(
            sealer
                .open(twincert::keys::KEY_PURPOSE, &sealed)
                .expect("unseal"),
        );
    }
    assert_eq!(store.keys().orphan_key_count().await.expect("count"), 0);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_and_backup_from_two_cas_on_sqlite() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    primary_and_backup(&cas, &server).await;

    // Secrets at rest: no PEM key and no key DER anywhere in the SQLite
    // files (main database, WAL, shared memory).
    let keys = stored_key_ders(&url).await;
    assert_eq!(keys.len(), 2);
    let mut files = 0;
    for entry in std::fs::read_dir(cas.dir()).expect("read dir") {
        let path = entry.expect("entry").path();
        let fname = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if !fname.starts_with("twincert.db") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).expect("read db file");
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "{fname} holds a PEM private key"
        );
        for der in &keys {
            assert!(
                !contains(&bytes, der),
                "{fname} holds a key in plaintext DER"
            );
            // The PKCS#8 body alone (past its header) must not appear either.
            assert!(
                !contains(&bytes, &der[der.len() - 40..]),
                "{fname} holds key bytes"
            );
        }
    }
    assert!(files >= 1, "no SQLite file found");
    assert!(!server.log().contains("PRIVATE KEY"));
    assert!(!server.log().contains(crate::server::ADMIN_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_and_backup_from_two_cas_on_postgres() {
    let Some(base) = pg_url_or_skip("primary_and_backup_from_two_cas_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    primary_and_backup(&cas, &server).await;
    let keys = stored_key_ders(&url).await;
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_order_url_resumes_without_a_second_order() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let mut opts = ServerOptions::new(url.clone());
    opts.lease_seconds = 2;
    opts.env = vec![("TWINCERT_FAILPOINT".into(), "after_order_url".into())];
    let mut server = Server::start(&cas, opts).await;
    let (status, body) = server
        .create(json!({"name": "a.example.test", "domains": ["a.example.test", "b.example.test"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Both orders reach the failpoint: the ACME order exists and its URL is
    // stored, no certificate yet.
    let before = server
        .wait_for("a.example.test", 30, |v| {
            v["primary"]["order"]["acme_orders"] == 1 && v["backup"]["order"]["acme_orders"] == 1
        })
        .await;
    assert!(before["primary"]["serial"].is_null());

    server.restart(Vec::new()).await; // SIGKILL, then start without the failpoint
    let after = server.wait_ready("a.example.test", 60).await;
    assert_eq!(after["primary"]["ca"], "pebble-a");

    let store = Store::connect(&url).await.expect("open store");
    for slot in Slot::ALL {
        let orders = store
            .orders()
            .orders_of("a.example.test", slot)
            .await
            .expect("orders");
        assert_eq!(orders.len(), 1, "{slot}: one order row");
        assert_eq!(orders[0].acme_orders, 1, "{slot}: resumed, not re-ordered");
        assert_eq!(
            orders[0].id,
            before[slot.as_str()]["order"]["id"]
                .as_str()
                .unwrap_or_default()
        );
    }
    assert_eq!(store.keys().orphan_key_count().await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn issuance_completes_when_half_the_nonces_are_rejected() {
    let cas = TwoCas::start(50).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let (status, body) = server
        .create(json!({"name": "c.example.test", "domains": ["c.example.test", "d.example.test"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = server.wait_ready("c.example.test", 90).await;
    assert_ne!(n["primary"]["spki_sha256"], n["backup"]["spki_sha256"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_that_is_down_fails_its_slot_only_and_recovers() {
    let mut cas = TwoCas::start(0).await;
    cas.b.stop();
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.backoff = (1, 2);
    let server = Server::start(&cas, opts).await;
    let (status, body) = server.create(json!({"name": "e.example.test"})).await;
    assert_eq!(status, 201, "{body}");

    let n = server
        .wait_for("e.example.test", 60, |v| {
            v["primary"]["state"] == "valid" && v["backup"]["last_error"].is_string()
        })
        .await;
    let err = n["backup"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("pebble-b"), "error names the CA: {err}");
    assert!(
        err.contains(&cas.b.directory_url()),
        "error names the CA's URL: {err}"
    );
    assert!(
        err.to_lowercase().contains("connect"),
        "error says what failed: {err}"
    );
    assert_eq!(n["state"], "degraded");
    assert_eq!(n["backup"]["state"], "failed");
    assert!(n["backup"]["order"]["attempts"].as_i64().unwrap_or(0) >= 1);

    cas.b.restart().await;
    let n = server.wait_ready("e.example.test", 60).await;
    assert!(n["backup"]["last_error"].is_null(), "{n}");
    assert_eq!(n["backup"]["ca"], "pebble-b");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_adds_lists_and_shows_names() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let token_file = cas.dir().join("token");
    std::fs::write(&token_file, crate::server::ADMIN_TOKEN).expect("token file");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
            .args(["names", "--url", &server.base(), "--token-file"])
            .arg(&token_file)
            .args(args)
            .env_remove("TWINCERT_TOKEN")
            .output()
            .expect("run CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&[
        "add",
        "b.example.test",
        "--domain",
        "b.example.test",
        "-o",
        "json",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"provisioning\""), "{out}");
    server.wait_ready("b.example.test", 60).await;
    let (ok, out, _) = cli(&["show", "b.example.test", "-o", "json"]);
    assert!(ok && out.contains("\"ready\""), "{out}");
    // Human output: key: value lines for one name, columns for a list.
    let (ok, out, _) = cli(&["show", "b.example.test"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("state:") && l.ends_with("ready")),
        "{out}"
    );
    let (ok, out, _) = cli(&["list", "--state", "ready"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("b.example.test") && lines[1].contains("pebble-a/valid"),
        "{out}"
    );

    // Exit codes: 3 refused input, 4 auth, 5 unreachable, 1 local error.
    let code = |args: &[&str], url: &str, token: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
            .args(args)
            .args(["--url", url, "--token-file"])
            .arg(token)
            .env_remove("TWINCERT_TOKEN")
            .output()
            .expect("run CLI")
    };
    let out = code(
        &["names", "add", "bad_name.example.test"],
        &server.base(),
        &token_file,
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("underscore"), "{err}");
    let wrong = cas.dir().join("wrong-token");
    std::fs::write(&wrong, "tc_wrong").expect("write");
    assert_eq!(
        code(&["names", "list"], &server.base(), &wrong)
            .status
            .code(),
        Some(4)
    );
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    assert_eq!(
        code(&["names", "list"], &dead, &token_file).status.code(),
        Some(5)
    );
    let missing = cas.dir().join("no-such-file");
    assert_eq!(
        code(&["names", "list"], &server.base(), &missing)
            .status
            .code(),
        Some(1)
    );

    // URL and token from a CLI config file (flags and env unset).
    let cli_toml = cas.dir().join("cli.toml");
    std::fs::write(
        &cli_toml,
        format!(
            "url = \"{}\"\ntoken_file = \"{}\"\n",
            server.base(),
            token_file.display()
        ),
    )
    .expect("cli.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["names", "list", "-o", "json", "--cli-config"])
        .arg(&cli_toml)
        .env_remove("TWINCERT_TOKEN")
        .env_remove("TWINCERT_URL")
        .output()
        .expect("run CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("b.example.test"));

    // The other commands: swap, tokens, events (JSON and tables).
    let run = |args: &[&str]| {
        let out = code(args, &server.base(), &token_file);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, out) = run(&["swap", "b.example.test", "--reason", "drill", "-o", "json"]);
    assert!(ok && out.contains("\"backup\""), "{out}");
    let (ok, out) = run(&[
        "swap",
        "--ca",
        "pebble-b",
        "--reason",
        "drill",
        "--dry-run",
        "-o",
        "json",
    ]);
    assert!(
        ok && out.contains("\"swap\": 1") && out.contains("\"swapped\": 0"),
        "{out}"
    );
    let (ok, _) = run(&[
        "swap",
        "--ca",
        "pebble-b",
        "--reason",
        "CA b incident drill",
    ]);
    assert!(
        !ok,
        "a mass swap without --yes on a non-terminal stdin is refused"
    );
    let (ok, out) = run(&[
        "swap",
        "--ca",
        "pebble-b",
        "--reason",
        "CA b incident drill",
        "--yes",
    ]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("report.swapped:") && l.ends_with('1')),
        "{out}"
    );
    let (ok, out) = run(&["operations", "list"]);
    assert!(
        ok && out.starts_with("ID") && out.contains("ca:pebble-b"),
        "{out}"
    );
    let (ok, out) = run(&[
        "tokens",
        "add",
        "ci-viewer",
        "--role",
        "viewer",
        "-o",
        "json",
    ]);
    assert!(ok && out.contains("\"tc_"), "{out}");
    let (ok, out) = run(&["tokens", "list"]);
    assert!(
        ok && out.starts_with("NAME") && out.contains("ci-viewer") && !out.contains("tc_"),
        "{out}"
    );
    let (ok, out) = run(&["names", "cert", "b.example.test", "primary"]);
    assert!(
        ok && out.starts_with("-----BEGIN CERTIFICATE-----"),
        "{out}"
    );
    let (ok, out) = run(&["names", "cert", "b.example.test", "active", "--key"]);
    assert!(ok && out.contains("BEGIN PRIVATE KEY"), "key download");
    let (ok, out) = run(&["cas", "list"]);
    assert!(
        ok && out.starts_with("ID") && out.contains("pebble-a"),
        "{out}"
    );
    let (ok, _) = run(&["cas", "distrust", "pebble-a", "--reason", "drill", "--yes"]);
    assert!(ok);
    let (ok, _) = run(&["cas", "trust", "pebble-a", "--reason", "drill over"]);
    assert!(ok);
    let (ok, out) = run(&[
        "names",
        "compromise",
        "b.example.test",
        "--slot",
        "backup",
        "--reason",
        "drill",
        "-o",
        "json",
    ]);
    assert!(ok && out.contains("\"revocation\": \"queued\""), "{out}");
    let (ok, _) = run(&["tokens", "delete", "ci-viewer"]);
    assert!(ok);
    let (ok, out) = run(&["events", "--limit", "10"]);
    assert!(
        ok && out.starts_with("AT") && out.contains("name.swap") && out.contains("token.delete"),
        "{out}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["completions", "bash"])
        .output()
        .expect("completions");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("_twincert"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ca_entries_on_one_root_are_caught_after_issuance() {
    // Both configured CAs claim different root groups but are really the
    // same Pebble: policy cannot know before issuing; the post-issuance
    // check must catch it and mark the name degraded.
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.b_directory_url = Some(cas.a.directory_url());
    let server = Server::start(&cas, opts).await;
    let (status, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    let n = server
        .wait_for("a.example.test", 60, |v| {
            v["primary"]["serial"].is_string() && v["backup"]["serial"].is_string()
        })
        .await;
    let n = if n["diversity_error"].is_null() {
        server
            .wait_for("a.example.test", 10, |v| v["diversity_error"].is_string())
            .await
    } else {
        n
    };
    assert_eq!(n["state"], "degraded", "{n}");
    let why = n["diversity_error"].as_str().unwrap_or_default();
    assert!(why.contains("same root"), "{why}");
    assert!(server.log().contains("diversity check failed"));
}

/// A config whose CAs need not be reachable (start-up checks only).
fn offline_config(dir: &Path, secrets: &str) -> std::path::PathBuf {
    let path = dir.join("offline.toml");
    let text = format!(
        r#"
[server]
api_listen = "127.0.0.1:{api}"
http01_listen = "127.0.0.1:{h}"
[store]
url = "sqlite://{db}"
[secrets]
{secrets}
[[cas]]
id = "x"
profile = "pebble"
root_group = "x"
[[cas]]
id = "y"
profile = "pebble"
root_group = "y"
"#,
        api = crate::harness::free_port(),
        h = crate::harness::free_port(),
        db = dir.join("offline.db").display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn refuses_to_start_without_a_master_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = offline_config(dir.path(), "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("TWINCERT_MASTER_KEY")
        .env_remove("TWINCERT_ADMIN_TOKEN")
        .output()
        .expect("run twincert");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no master key"), "{err}");
    assert!(err.contains("TWINCERT_MASTER_KEY"), "{err}");
}

#[test]
fn local_mode_generates_private_secret_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("local");
    let cfg = offline_config(
        dir.path(),
        &format!("local_mode = true\nlocal_dir = \"{}\"", local.display()),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("TWINCERT_MASTER_KEY")
        .env_remove("TWINCERT_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run twincert");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !local.join("admin.token").exists() {
        assert!(std::time::Instant::now() < deadline, "no secrets generated");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    for f in ["master.key", "admin.token"] {
        let meta = std::fs::metadata(local.join(f)).expect("secret file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
    }
    assert!(log.contains("generated a new master key"), "{log}");
    let key = std::fs::read_to_string(local.join("master.key")).expect("read");
    assert!(!log.contains(key.trim()), "the key itself is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_slots_renew_at_two_thirds_under_fresh_keys() {
    // 12 s certificates: renewal opens at 8 s, each slot on its own clock.
    let cas = TwoCas::start_with(crate::harness::PebbleOptions {
        validity_seconds: Some(12),
        ..Default::default()
    })
    .await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let (status, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    let first = server.wait_ready("a.example.test", 60).await;
    let serial = |v: &Value, slot: &str| v[slot]["serial"].as_str().unwrap_or_default().to_string();
    let spki = |v: &Value, slot: &str| {
        v[slot]["spki_sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let renewed = server
        .wait_for("a.example.test", 60, |v| {
            v["state"] == "ready"
                && serial(v, "primary") != serial(&first, "primary")
                && serial(v, "backup") != serial(&first, "backup")
        })
        .await;
    let keys = [
        spki(&first, "primary"),
        spki(&first, "backup"),
        spki(&renewed, "primary"),
        spki(&renewed, "backup"),
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b, "a key was reused: {keys:?}");
        }
    }
    assert_eq!(renewed["primary"]["ca"], "pebble-a");
    assert_eq!(renewed["backup"]["ca"], "pebble-b");
    let store = Store::connect(&sqlite_url(cas.dir())).await.expect("store");
    for slot in Slot::ALL {
        let orders = store
            .orders()
            .orders_of("a.example.test", slot)
            .await
            .expect("orders");
        assert!(orders.len() >= 2, "{slot}: a renewal order was opened");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_order_fields_and_no_secrets() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![("TWINCERT_LOGGING_FORMAT".into(), "json".into())];
    let server = Server::start(&cas, opts).await;
    let (status, body) = server.create(json!({"name": "b.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server.wait_ready("b.example.test", 60).await;
    let log = server.log();
    let mut stored = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).expect("every log line is JSON");
        if v["message"] == "certificate stored" {
            stored += 1;
            let span = &v["span"];
            assert_eq!(span["managed_name"], "b.example.test", "{line}");
            assert!(
                span["slot"].is_string() && span["ca"].is_string() && span["order"].is_string(),
                "{line}"
            );
        }
    }
    assert_eq!(stored, 2, "{log}");
    assert!(!log.contains(crate::server::ADMIN_TOKEN));
    assert!(!log.contains(MASTER_KEY.split(':').nth(1).unwrap_or("x")));
    assert!(!log.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly_and_migrate_is_idempotent() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let mut server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    let (status, body) = server.create(json!({"name": "c.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server.wait_ready("c.example.test", 60).await;
    let status = server.terminate(15);
    assert!(status.success(), "exit status {status}\n{}", server.log());
    assert!(server.log().contains("shutting down"));

    // `migrate` on the existing store: nothing to do, and it says so.
    let config = cas.dir().join("migrate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\n[[cas]]\nid = \"x\"\nprofile = \"pebble\"\nroot_group = \"x\"\n\
             [[cas]]\nid = \"y\"\nprofile = \"pebble\"\nroot_group = \"y\"\n"
        ),
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied (sqlite)"));
    let store = Store::connect(&url).await.expect("store");
    assert!(
        store
            .names()
            .name("c.example.test")
            .await
            .expect("read")
            .is_some(),
        "data kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_compromise_swaps_away_revokes_and_reissues_under_a_new_key() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    let (status, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    let before = server.wait_ready("a.example.test", 60).await;
    let old_serial = before["primary"]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let old_spki = before["primary"]["spki_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let backup_spki = before["backup"]["spki_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let rsp = reqwest::Client::new()
        .post(format!(
            "{}/v1/names/a.example.test/compromise",
            server.base()
        ))
        .bearer_auth(crate::server::ADMIN_TOKEN)
        .json(&json!({"slot": "primary", "reason": "key found on a pastebin"}))
        .send()
        .await
        .expect("POST compromise");
    assert_eq!(rsp.status().as_u16(), 202);
    let v: Value = rsp.json().await.expect("JSON");
    assert_eq!(v["swapped"], true, "{v}");
    assert_eq!(server.name("a.example.test").await["active"], "backup");

    // Revoked at CA a with reason keyCompromise (1), per Pebble.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = cas.a.cert_status(&old_serial).await;
        let status = st["Status"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if status.contains("revoked") {
            assert_eq!(st["Reason"], 1, "{st}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not revoked: {st}\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Re-issued under a key the name never had.
    let after = server
        .wait_for("a.example.test", 60, |v| {
            v["primary"]["serial"].is_string()
                && v["primary"]["serial"] != old_serial.as_str()
                && v["state"] == "ready"
        })
        .await;
    let new_spki = after["primary"]["spki_sha256"].as_str().unwrap_or_default();
    assert_ne!(new_spki, old_spki);
    assert_ne!(new_spki, backup_spki);
    // Swapping back is allowed again (the new primary key is clean)...
    let rsp = reqwest::Client::new()
        .post(format!("{}/v1/names/a.example.test/swap", server.base()))
        .bearer_auth(crate::server::ADMIN_TOKEN)
        .json(&json!({"reason": "back to primary"}))
        .send()
        .await
        .expect("swap");
    assert_eq!(rsp.status().as_u16(), 200);
    let store = Store::connect(&url).await.expect("store");
    let events = store.audit().events(20).await.expect("events");
    assert!(
        events.iter().any(|e| e.action == "name.compromise"
            && e.reason.as_deref() == Some("key found on a pastebin"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_revoke_revokes_both_certificates() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let (status, body) = server.create(json!({"name": "c.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    let n = server.wait_ready("c.example.test", 60).await;
    let rsp = reqwest::Client::new()
        .delete(format!(
            "{}/v1/names/c.example.test?revoke=true",
            server.base()
        ))
        .bearer_auth(crate::server::ADMIN_TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(rsp.status().as_u16(), 204);
    for (slot, pebble) in [("primary", &cas.a), ("backup", &cas.b)] {
        let serial = n[slot]["serial"].as_str().unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let st = pebble.cert_status(serial).await;
            if st["Status"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("revoked")
            {
                assert_eq!(st["Reason"], 5, "cessationOfOperation: {st}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{slot} not revoked: {st}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// On SQLite the lock file proves that no other process holds the orders'
/// leases: after `kill -9` and a restart, the orders that were in flight
/// resume at once, not after `worker.lease_seconds` (120 s here, the
/// default).
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_on_sqlite_resumes_orders_in_flight_at_once() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let mut opts = ServerOptions::new(url.clone());
    opts.lease_seconds = 120;
    opts.env = vec![("TWINCERT_FAILPOINT".into(), "after_order_url".into())];
    let mut server = Server::start(&cas, opts).await;
    let (status, body) = server.create(json!({"name": "r.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server
        .wait_for("r.example.test", 30, |v| {
            v["primary"]["order"]["acme_orders"] == 1 && v["backup"]["order"]["acme_orders"] == 1
        })
        .await;
    let restarted = std::time::Instant::now();
    server.restart(Vec::new()).await; // SIGKILL, then start without the failpoint
    let after = server.wait_ready("r.example.test", 20).await;
    let resumed = restarted.elapsed();
    assert!(after["primary"]["serial"].is_string());
    println!("restart to both certificates: {resumed:?}");
    assert!(
        resumed < std::time::Duration::from_secs(10),
        "resumed after {resumed:?}; the leases of the killed process were waited out"
    );
}

/// Every documented section takes `TWINCERT_<SECTION>_<KEY>` overrides —
/// deployment and alert settings (SMTP included) too, so they can come
/// from a Kubernetes Secret as environment — and a misspelt variable's
/// error says it came from the environment.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_and_alert_settings_come_from_the_environment() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![
        ("TWINCERT_DEPLOY_CONCURRENCY".into(), "8".into()),
        ("TWINCERT_ALERTS_RATE_LIMIT_SECONDS".into(), "60".into()),
    ];
    let server = Server::start(&cas, opts).await;
    let (status, body) = server.create(json!({"name": "env.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server.wait_ready("env.example.test", 60).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["migrate", "--config"])
        .arg(server.config_path())
        .env("TWINCERT_DEPLOY_CONCURENCY", "8")
        .output()
        .expect("run twincert migrate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misspelt override is refused");
    assert!(
        err.contains("environment variable TWINCERT_DEPLOY_CONCURENCY"),
        "{err}"
    );
}

/// Issue 20: `TWINCERT_FAILPOINT`, a test hook that makes the process hang
/// at a chosen point, was read by the release binary and exempt from the
/// unknown-variable rule. It is compiled only into builds with the
/// `failpoints` feature; the product binary (default features) refuses it
/// like any misspelt `TWINCERT_` variable. scripts/test.sh builds that
/// binary and names it in `TWINCERT_TEST_PRODUCT_BIN`; a plain `cargo
/// test` (no feature) runs the binary under test, which is the product.
#[tokio::test(flavor = "multi_thread")]
async fn the_product_binary_refuses_the_failpoint_test_hook() {
    let product = match std::env::var("TWINCERT_TEST_PRODUCT_BIN") {
        Ok(p) => p,
        Err(_) if !cfg!(feature = "failpoints") => env!("CARGO_BIN_EXE_twincert").to_string(),
        Err(_) => {
            eprintln!(
                "skipped: the binary under test has failpoints and \
                 TWINCERT_TEST_PRODUCT_BIN names no product binary (scripts/test.sh sets it)"
            );
            return;
        }
    };
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let run = |bin: &str, failpoint: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["migrate", "--config"])
            .arg(server.config_path())
            .env("TWINCERT_MASTER_KEY", crate::server::MASTER_KEY)
            .env_remove("TWINCERT_FAILPOINT");
        if let Some(point) = failpoint {
            cmd.env("TWINCERT_FAILPOINT", point);
        }
        let out = cmd.output().expect("run twincert migrate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, err) = run(&product, None);
    assert!(ok, "the product binary migrates with this config: {err}");
    let (ok, err) = run(&product, Some("after_order_url"));
    assert!(!ok, "the product binary accepted TWINCERT_FAILPOINT");
    assert!(
        err.contains("TWINCERT_FAILPOINT") && err.contains("unknown override"),
        "{err}"
    );
    if cfg!(feature = "failpoints") {
        // The test build knows the hook (the crash tests rely on it).
        let (ok, err) = run(env!("CARGO_BIN_EXE_twincert"), Some("after_order_url"));
        assert!(ok, "the test build refused its own hook: {err}");
    }
}

/// Every page of `GET /v1/names?state=…&limit=2`, following `next_cursor`:
/// the ids on each page.
async fn pages_by_state(server: &Server, state: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/names?state={state}&limit=2", server.base());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = server
            .client()
            .get(url)
            .bearer_auth(crate::server::ADMIN_TOKEN)
            .send()
            .await
            .expect("GET /v1/names")
            .json()
            .await
            .expect("page JSON");
        let ids = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or_default().to_string())
            .collect();
        pages.push(ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 10, "no end to the pages: {pages:?}");
    }
}

/// Issue 20: the state filter applied within each page, so
/// `?state=degraded&limit=2` answered empty pages with a `next_cursor`
/// before the one degraded name, and a client that stopped at an empty
/// page missed it. The filter spans the list: a page is full unless the
/// list has ended, and an empty page is the end.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_filter_fills_pages_across_the_whole_list() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let ready = ["a", "b", "c", "d"].map(|h| format!("{h}.example.test"));
    // Last in id order; no DNS the CAs ask knows it, so its validation
    // fails and the name is degraded.
    let failing = "zz.nowhere.test";
    for n in ready.iter().map(String::as_str).chain([failing]) {
        let (status, body) = server.create(json!({ "name": n })).await;
        assert_eq!(status, 201, "{n}: {body}");
    }
    for n in &ready {
        server.wait_ready(n, 120).await;
    }
    server
        .wait_for(failing, 120, |v| v["state"] == "degraded")
        .await;

    assert_eq!(
        pages_by_state(&server, "degraded").await,
        [vec![failing.to_string()]],
        "the one degraded name on the first page"
    );
    assert_eq!(
        pages_by_state(&server, "ready").await,
        [ready[..2].to_vec(), ready[2..].to_vec()],
        "full pages of ready names, no empty page after them"
    );
    assert_eq!(
        pages_by_state(&server, "provisioning").await,
        [Vec::<String>::new()],
        "none provisioning: one empty page that ends the list"
    );
}

/// Issue 20: a private ACME CA needed a profile file written against an
/// undocumented schema in which every field was required, and a config
/// missing several settings was refused one setting per attempt. With
/// entries for two internal CAs that leave out what the `generic` profile
/// cannot know, `serve` refuses to start with one error that names every
/// missing setting and what to set.
#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_missing_settings_is_refused_naming_them_all() {
    let cas = TwoCas::start(0).await;
    let mut server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    server.kill();
    let text = std::fs::read_to_string(server.config_path()).expect("config");
    let config = cas.dir().join("private-ca.toml");
    std::fs::write(
        &config,
        format!(
            "{text}\n[[cas]]\nid = \"internal\"\nprofile = \"generic\"\n\
             \n[[cas]]\nid = \"internal-2\"\nprofile = \"generic\"\nroot_group = \"corp\"\n"
        ),
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TWINCERT_MASTER_KEY", MASTER_KEY)
        .env("TWINCERT_ADMIN_TOKEN", crate::server::ADMIN_TOKEN)
        .env_remove("TWINCERT_FAILPOINT")
        .output()
        .expect("run twincert serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without them:\n{err}");
    // One error, every missing setting on a line of its own with its fix.
    assert_eq!(err.matches("twincert: config:").count(), 1, "{err}");
    for want in [
        "3 settings are missing",
        "cas[2].directory_url: CA 'internal': profile 'generic' names no ACME server; \
         set directory_url = \"https://<your ACME server>/directory\"",
        "cas[2].root_group: CA 'internal': profile 'generic' cannot know which root the CA \
         chains to; set root_group = ",
        "cas[3].directory_url: CA 'internal-2':",
    ] {
        assert!(err.contains(want), "want '{want}' in:\n{err}");
    }
    assert!(!err.contains("cas[3].root_group"), "{err}");
}

/// The `generic` profile with only what an entry must say — directory URL,
/// root group, and the roots its HTTPS chains to — is a CA like any other:
/// both local Pebbles configured that way issue a name's two certificates.
#[tokio::test(flavor = "multi_thread")]
async fn two_private_cas_on_the_generic_profile_issue() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    // The test config's entries name directory_url, trust_roots_file and
    // root_group already; only the profile changes.
    opts.env = vec![
        ("TWINCERT_CA_PEBBLE_A_PROFILE".into(), "generic".into()),
        ("TWINCERT_CA_PEBBLE_B_PROFILE".into(), "generic".into()),
    ];
    let server = Server::start(&cas, opts).await;
    let listed: Value = server
        .client()
        .get(format!("{}/v1/cas", server.base()))
        .bearer_auth(crate::server::ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /v1/cas")
        .json()
        .await
        .expect("CA list");
    let profiles: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["profile"].as_str())
        .collect();
    assert_eq!(profiles, ["generic", "generic"], "{listed:#}");
    let (status, body) = server.create(json!({"name": "private.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    let n = server.wait_ready("private.example.test", 120).await;
    assert_eq!(n["primary"]["ca"], "pebble-a", "{n:#}");
    assert_eq!(n["backup"]["ca"], "pebble-b", "{n:#}");
}

/// A CA that loses its database forgets our account: its next answer is
/// `accountDoesNotExist`. twincert registers a new account, replaces the
/// stored one, and the slot issues from a fresh order — instead of failing
/// with the dead account forever (found with Caddy's `acme_server`; Pebble
/// forgets every account when it restarts).
#[tokio::test(flavor = "multi_thread")]
async fn an_account_the_ca_forgot_is_registered_again() {
    let mut cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    let (status, body) = server.create(json!({"name": "first.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server.wait_ready("first.example.test", 60).await;
    let old = stored_account_url(&url, "pebble-a").await;

    // Pebble keeps nothing across a restart: our account is gone.
    cas.a.restart().await;
    let (status, body) = server.create(json!({"name": "second.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    let n = server.wait_ready("second.example.test", 60).await;
    assert_eq!(n["primary"]["ca"], "pebble-a", "{n}");
    let new = stored_account_url(&url, "pebble-a").await;
    assert_ne!(new, old, "a new account replaced the forgotten one");
    assert!(
        server.log().contains("no longer knows our account"),
        "the re-registration is logged"
    );
}

/// The account URL stored for a CA.
async fn stored_account_url(store_url: &str, ca: &str) -> String {
    let store = Store::connect(store_url).await.expect("connect");
    store
        .keys()
        .account(ca)
        .await
        .expect("read")
        .expect("an account is stored")
        .0
}
