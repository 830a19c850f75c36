//! Issue 3 end to end: DNS-01 through RFC 2136 + TSIG on a real BIND9,
//! validated by both Pebble CAs (which resolve through that BIND).

use serde_json::json;

use crate::harness::TwoCas;
use crate::server::{Server, ServerOptions};

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("twincert.db").display())
}

#[tokio::test(flavor = "multi_thread")]
async fn dns01_for_a_name_and_for_apex_plus_wildcard_then_no_txt_remains() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    // Per-name choices: an unknown provider, or a provider with http-01,
    // are refused; a known one is pinned and shown.
    let (status, body) = server
        .create(json!({"name": "a.example.test", "challenge": "dns-01", "dns_provider": "nope"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown DNS provider 'nope'")
    );
    let (status, body) = server
        .create(json!({"name": "a.example.test", "dns_provider": "bind"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .create(json!({"name": "a.example.test", "challenge": "dns-01", "dns_provider": "bind"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["dns_provider"], "bind");
    let (status, body) = server
        .create(json!({"name": "example.test", "domains": ["example.test", "*.example.test"], "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");

    let a = server.wait_ready("a.example.test", 90).await;
    assert_eq!(a["challenge"], "dns-01");
    let apex = server.wait_ready("example.test", 90).await;
    assert_ne!(
        apex["primary"]["spki_sha256"],
        apex["backup"]["spki_sha256"]
    );
    for slot in ["primary", "backup"] {
        let chain = server.chain_pem("example.test", slot).await;
        let facts = twincert::certs::inspect_chain(&chain).expect("chain facts");
        assert!(
            facts.dns_names.contains(&"*.example.test".to_string()),
            "{:?}",
            facts.dns_names
        );
        assert!(
            facts.dns_names.contains(&"example.test".to_string()),
            "{:?}",
            facts.dns_names
        );
    }
    // Cleanup always runs: no challenge TXT is left in the zone.
    for name in [
        "_acme-challenge.a.example.test",
        "_acme-challenge.example.test",
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = cas.dns.txt(name);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} still has {left:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_tsig_secret_is_named_and_breaks_nothing_else() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    // A valid base64 secret that is not the zone's key.
    opts.tsig_secret = Some("c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1rZXktMDEyMzQ1Ng==".into());
    let server = Server::start(&cas, opts).await;
    let (status, body) = server
        .create(json!({"name": "b.example.test", "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.create(json!({"name": "c.example.test"})).await;
    assert_eq!(status, 201, "{body}");

    let n = server
        .wait_for("b.example.test", 60, |v| {
            v["primary"]["last_error"].is_string() && v["backup"]["last_error"].is_string()
        })
        .await;
    for slot in ["primary", "backup"] {
        let err = n[slot]["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("bad TSIG"), "{slot}: {err}");
        assert!(err.contains("twincert-test"), "names the key: {err}");
        assert!(!err.contains("c2VjcmV0"), "never the secret: {err}");
    }
    assert_eq!(n["state"], "degraded");
    // HTTP-01 names are untouched.
    server.wait_ready("c.example.test", 60).await;
    assert!(cas.dns.txt("_acme-challenge.b.example.test").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cname_delegation_validates_names_in_a_zone_without_a_key() {
    // x.delegated.test: one CNAME into example.test; y: a two-hop chain.
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let (status, body) = server
        .create(json!({"name": "x.delegated.test", "domains": ["x.delegated.test", "y.delegated.test"], "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    // The API tells the owner which CNAMEs to create, once.
    let hints = body["dns01_delegations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(hints.len(), 2, "{body}");
    assert_eq!(hints[0]["name"], "_acme-challenge.x.delegated.test");
    assert_eq!(hints[0]["cname_to"], "x-delegated-test.acme.example.test");
    let n = server.wait_ready("x.delegated.test", 90).await;
    assert_ne!(n["primary"]["spki_sha256"], n["backup"]["spki_sha256"]);
    for name in [
        "x-delegated-test.acme.example.test",
        "y-delegated-test.acme.example.test",
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cas.dns.txt(name).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} not cleaned up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Publishes a TXT record the way a person would, with nsupdate and the
/// zone's key (twincert itself is not involved).
async fn publish_by_hand(cas: &TwoCas, name: &str, value: &str) {
    let lines = format!(
        "zone {}\nupdate add {name} 60 TXT \"{value}\"\n",
        cas.dns.zone()
    );
    cas.dns.update(&lines).await.expect("nsupdate");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_dns01_lists_records_and_issues_once_they_are_published() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let (status, body) = server
        .create(json!({"name": "d.example.test", "challenge": "dns-01-manual"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = server
        .wait_for("d.example.test", 60, |v| {
            v["dns01_manual_records"].as_array().map(Vec::len) == Some(2)
                && v["primary"]["order"]["held"].is_string()
                && v["backup"]["order"]["held"].is_string()
        })
        .await;
    // Waiting for a person is neither a failure nor an outage.
    assert_eq!(n["state"], "waiting", "nothing published yet: {n:#}");
    for slot in ["primary", "backup"] {
        assert_eq!(n[slot]["state"], "waiting", "{n:#}");
        assert!(n[slot]["last_error"].is_null(), "{n:#}");
        let held = n[slot]["order"]["held"].as_str().unwrap_or_default();
        assert!(
            held.contains("waiting for manual DNS-01 records")
                && held.contains("_acme-challenge.d.example.test"),
            "{n:#}"
        );
    }
    let page = crate::emergency::get(&server, "/v1/names?state=waiting").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page:#}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("twincert_names_by_state{state=\"waiting\"} 1")
            && metrics.contains("twincert_names_by_state{state=\"degraded\"} 0"),
        "{metrics}"
    );
    assert!(
        !server
            .log()
            .lines()
            .any(|l| l.contains("attempt failed") && l.contains("manual DNS-01")),
        "a wait is not logged as a failure:\n{}",
        server.log()
    );
    let records = n["dns01_manual_records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut slots = Vec::new();
    for r in &records {
        assert_eq!(r["name"], "_acme-challenge.d.example.test");
        assert_eq!(r["type"], "TXT");
        slots.push(r["slot"].as_str().unwrap_or_default().to_string());
        publish_by_hand(
            &cas,
            "_acme-challenge.d.example.test",
            r["value"].as_str().unwrap_or_default(),
        )
        .await;
    }
    slots.sort();
    assert_eq!(slots, ["backup", "primary"]);
    let n = server.wait_ready("d.example.test", 60).await;
    assert!(
        n["dns01_manual_records"].is_null(),
        "records listed after issuance: {n}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_propagation_timeout_is_a_clear_retryable_error() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    // The authoritative servers are asked on a port where nothing answers.
    opts.authoritative_port = Some(crate::harness::free_port());
    opts.propagation_timeout = 1;
    let server = Server::start(&cas, opts).await;
    let (status, body) = server
        .create(json!({"name": "e.example.test", "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = server
        .wait_for("e.example.test", 60, |v| {
            v["primary"]["last_error"].is_string()
        })
        .await;
    let err = n["primary"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("propagation timeout"), "{err}");
    assert!(err.contains("_acme-challenge.e.example.test"), "{err}");
    // Retryable: the order stays open with its ACME order kept.
    let state = n["primary"]["order"]["state"].as_str().unwrap_or_default();
    assert!(state == "pending" || state == "processing", "{n}");
    assert_eq!(n["primary"]["order"]["acme_orders"], 1, "{n}");
    // And the record it could not confirm was cleaned up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cas.dns.txt("_acme-challenge.e.example.test").is_empty() {
        assert!(std::time::Instant::now() < deadline, "TXT left behind");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_left_by_a_crash_are_cleaned_up_after_restart() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.lease_seconds = 2;
    opts.env = vec![("TWINCERT_FAILPOINT".into(), "after_dns_present".into())];
    let mut server = Server::start(&cas, opts).await;
    let (status, body) = server
        .create(json!({"name": "a.example.test", "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let owner = "_acme-challenge.a.example.test";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cas.dns.txt(owner).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "records never published"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // SIGKILL with both values published. Counted before the restart: the
    // new process may take the expired 2 s lease and clean up while it
    // starts.
    server.kill();
    assert_eq!(cas.dns.txt(owner).len(), 2, "the crash left the records");
    server.restart(Vec::new()).await;
    server.wait_ready("a.example.test", 60).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cas.dns.txt(owner).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "leftovers not cleaned: {:?}",
            cas.dns.txt(owner)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
