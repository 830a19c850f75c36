//! Issue 6 end to end: revocation seen in real signed data — CRLs and OCSP
//! responses signed with the Pebble intermediate's own key, ARI windows
//! served beside Pebble — and what twincert does about it: swap the name,
//! re-provision the slot, renew with `replaces`, raise one CA incident
//! instead of many reactions, and alert when the data cannot be trusted.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use twincert::store::Store;

use crate::emergency::{all_names, get, post, revoke_at_ca, sqlite_url, unix_now, wait_all};
use crate::harness::{PebbleOptions, TwoCas, free_port, fresh_pg_database, pg_url_or_skip};
use crate::revocation_harness::{AriProxy, RevocationAuthority, ari_cert_id, ocsp_url_for};
use crate::server::{Server, ServerOptions};

/// Checks run every second; cached CRLs and OCSP answers are re-fetched
/// after a second.
fn fast_checks() -> Vec<(String, String)> {
    vec![
        (
            "TWINCERT_REVOCATION_CHECK_INTERVAL_SECONDS".into(),
            "1".into(),
        ),
        ("TWINCERT_REVOCATION_REFRESH_SECONDS".into(), "1".into()),
    ]
}

/// Creates `<label>.example.test` for each label (default CA pair).
async fn create_names(server: &Server, labels: &[&str]) {
    for n in labels {
        let (st, body) = server
            .create(json!({"name": format!("{n}.example.test")}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
}

fn leaf_der(pem: &str) -> Vec<u8> {
    twincert::certs::chain_ders(pem)
        .expect("chain")
        .into_iter()
        .next()
        .expect("leaf")
}

/// Audit events with `action`, newest first.
async fn events(server: &Server, action: &str) -> Vec<Value> {
    let page = get(server, "/v1/events?limit=1000").await;
    page["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

fn details(e: &Value) -> Value {
    serde_json::from_str(e["details"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

async fn open_alerts(server: &Server, kind: &str) -> Vec<Value> {
    get(server, "/v1/alerts?open=true&limit=1000").await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["kind"] == kind)
        .collect()
}

/// Polls `f` until it yields `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, server: &Server, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s\n--- log tail ---\n{}",
            server
                .log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn checked_good_via(v: &Value, slot: &str, via: &str) -> bool {
    v[slot]["revocation"]["status"] == "good" && v[slot]["revocation"]["checked_via"] == via
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_in_a_signed_crl_swaps_the_name_and_a_badly_signed_crl_only_alerts() {
    let cas = TwoCas::start(0).await;
    let ra = RevocationAuthority::new(&cas.a).await;
    let rb = RevocationAuthority::new(&cas.b).await;
    ra.publish_crl(3600);
    rb.publish_crl(3600);
    let url = sqlite_url(cas.dir());
    let mut opts = ServerOptions::new(url.clone());
    opts.env = fast_checks();
    opts.env
        .push(("TWINCERT_CA_PEBBLE_A_CRL_URLS".into(), ra.crl_url()));
    opts.env
        .push(("TWINCERT_CA_PEBBLE_B_CRL_URLS".into(), rb.crl_url()));
    let server = Server::start(&cas, opts).await;
    create_names(&server, &["a", "b", "c"]).await;
    for n in ["a", "b", "c"] {
        let name = format!("{n}.example.test");
        let v = server
            .wait_for(&name, 60, |v| {
                v["state"] == "ready"
                    && checked_good_via(v, "primary", "crl")
                    && checked_good_via(v, "backup", "crl")
            })
            .await;
        assert_eq!(v["active"], "primary", "{v:#}");
        assert_eq!(v["primary"]["ca"], "pebble-a");
    }

    // CA A revokes a's active certificate (through ACME) and lists it in
    // its next CRL.
    let store = Store::connect(&url).await.expect("store");
    let a = server.name("a.example.test").await;
    let a_serial = a["primary"]["serial"].as_str().expect("serial").to_string();
    let pem = server.chain_pem("a.example.test", "primary").await;
    revoke_at_ca(&server, &store, "pebble-a", &pem).await;
    ra.revoke(&a_serial, "superseded");
    let published = Instant::now();
    ra.publish_crl(3600);
    server
        .wait_for("a.example.test", 15, |v| v["active"] == "backup")
        .await;
    let took = published.elapsed();
    // One check interval (1 s) plus the pass itself.
    assert!(took < Duration::from_secs(6), "swap took {took:?}");

    // The evidence is in the audit log: the CRL's number and URL.
    let found = events(&server, "certificate.revoked_detected").await;
    let ev = found
        .iter()
        .find(|e| e["target"] == "a.example.test/primary")
        .expect("revocation recorded");
    let d = details(ev);
    assert_eq!(d["evidence"]["crl_url"], ra.crl_url(), "{d:#}");
    assert!(d["evidence"]["crl_number"].is_string(), "{d:#}");
    assert_eq!(d["reason"], 4, "superseded: {d:#}");
    let reacted = events(&server, "revocation.react").await;
    assert_eq!(reacted.len(), 1, "{reacted:#?}");
    assert_eq!(details(&reacted[0])["counts"]["swap"], 1);
    let raised: Vec<Value> = eventually(10, "certificate_revoked alert", &server, || async {
        let all: Vec<Value> = get(&server, "/v1/alerts?open=false&limit=1000").await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["kind"] == "certificate_revoked")
            .collect();
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0]["subject"], "a.example.test/primary");
    assert_eq!(raised[0]["severity"], "critical");

    // The revoked slot is re-provisioned under a new certificate.
    let v = server
        .wait_for("a.example.test", 60, |v| {
            v["primary"]["serial"]
                .as_str()
                .is_some_and(|s| s != a_serial)
                && v["state"] == "ready"
        })
        .await;
    assert_eq!(v["primary"]["ca"], "pebble-a", "{v:#}");
    // Re-issued: the alert about it resolves itself.
    eventually(15, "certificate_revoked resolved", &server, || async {
        open_alerts(&server, "certificate_revoked")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    for n in ["b", "c"] {
        let v = server.name(&format!("{n}.example.test")).await;
        assert_eq!(v["active"], "primary", "{n} untouched: {v:#}");
    }

    // A revoked standby (CA B lists c's backup): no swap, the slot is
    // re-issued.
    let c = server.name("c.example.test").await;
    let c_backup = c["backup"]["serial"].as_str().expect("serial").to_string();
    rb.revoke(&c_backup, "superseded");
    rb.publish_crl(3600);
    let v = server
        .wait_for("c.example.test", 60, |v| {
            v["backup"]["serial"]
                .as_str()
                .is_some_and(|s| s != c_backup)
                && v["state"] == "ready"
        })
        .await;
    assert_eq!(v["active"], "primary", "{v:#}");
    assert_eq!(v["backup"]["ca"], "pebble-b", "{v:#}");

    // A CRL whose signature does not verify is rejected — even though it
    // lists b's certificate — and raises an alert naming it.
    let b = server.name("b.example.test").await;
    let b_serial = b["primary"]["serial"].as_str().expect("serial").to_string();
    ra.revoke(&b_serial, "keyCompromise");
    ra.publish_corrupt_crl(3600);
    let alert = eventually(15, "crl_invalid alert", &server, || async {
        open_alerts(&server, "crl_invalid").await.into_iter().next()
    })
    .await;
    assert_eq!(alert["subject"], ra.crl_url(), "{alert:#}");
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or_default()
            .contains("signature"),
        "{alert:#}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = server.name("b.example.test").await;
    assert_eq!(b["active"], "primary", "a bad CRL must not swap: {b:#}");
    assert_eq!(
        b["primary"]["revocation"]["status"], "undetermined",
        "{b:#}"
    );

    // The CA fixes its CRL: b swaps now and the alert is resolved.
    ra.publish_crl(3600);
    server
        .wait_for("b.example.test", 15, |v| v["active"] == "backup")
        .await;
    eventually(15, "crl_invalid resolved", &server, || async {
        open_alerts(&server, "crl_invalid")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    // (The slot may already hold its re-issued certificate: the audit
    // log keeps the revocation.)
    let found = events(&server, "certificate.revoked_detected").await;
    let ev = found
        .iter()
        .find(|e| e["target"] == "b.example.test/primary")
        .expect("b's revocation recorded");
    assert_eq!(details(ev)["reason"], 1, "keyCompromise: {ev:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ocsp_revoked_swaps_while_unknown_and_badly_signed_answers_only_alert() {
    let port = free_port();
    let cas = TwoCas::start_with(PebbleOptions {
        ocsp_responder_url: Some(ocsp_url_for(port)),
        ..PebbleOptions::default()
    })
    .await;
    let ra = RevocationAuthority::new(&cas.a).await;
    ra.start_ocsp(port).await;
    // CA B's certificates carry the same OCSP URL; its CRL covers them, so
    // they are never asked about (CRL first).
    let rb = RevocationAuthority::new(&cas.b).await;
    rb.publish_crl(3600);
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = fast_checks();
    opts.env
        .push(("TWINCERT_CA_PEBBLE_B_CRL_URLS".into(), rb.crl_url()));
    let server = Server::start(&cas, opts).await;
    create_names(&server, &["a", "b", "c"]).await;
    let mut serials = std::collections::BTreeMap::new();
    for n in ["a", "b", "c"] {
        let v = server.wait_ready(&format!("{n}.example.test"), 60).await;
        serials.insert(
            n,
            v["primary"]["serial"].as_str().expect("serial").to_string(),
        );
    }
    // The CA knows a and b; c's certificate is unknown to its responder.
    ra.mark_valid(&serials["a"]);
    ra.mark_valid(&serials["b"]);
    for n in ["a", "b"] {
        server
            .wait_for(&format!("{n}.example.test"), 15, |v| {
                checked_good_via(v, "primary", "ocsp") && checked_good_via(v, "backup", "crl")
            })
            .await;
    }
    let unknown = eventually(15, "ocsp_unknown alert", &server, || async {
        open_alerts(&server, "ocsp_unknown")
            .await
            .into_iter()
            .find(|a| a["subject"] == "c.example.test/primary")
    })
    .await;
    assert_eq!(unknown["severity"], "warning", "{unknown:#}");
    let c = server.name("c.example.test").await;
    assert_eq!(c["active"], "primary", "unknown must not swap: {c:#}");
    assert_eq!(
        c["primary"]["revocation"]["status"], "undetermined",
        "{c:#}"
    );

    // revoked → swap, with the OCSP response's times as evidence.
    ra.revoke(&serials["a"], "keyCompromise");
    let t = Instant::now();
    server
        .wait_for("a.example.test", 15, |v| v["active"] == "backup")
        .await;
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let ev = events(&server, "certificate.revoked_detected").await;
    let d = details(ev.first().expect("recorded"));
    assert_eq!(d["evidence"]["ocsp_url"], ocsp_url_for(port), "{d:#}");
    assert!(d["evidence"]["produced_at"].is_string(), "{d:#}");
    assert_eq!(d["evidence"]["responder"], "issuer", "{d:#}");
    assert_eq!(d["reason"], 1, "{d:#}");

    // A responder signing with a key the CA never certified says b is
    // revoked: not believed — no swap, an alert.
    ra.start_ocsp_with_wrong_key(port).await;
    ra.revoke(&serials["b"], "keyCompromise");
    let bad = eventually(15, "ocsp_invalid alert", &server, || async {
        open_alerts(&server, "ocsp_invalid")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(bad["subject"], ocsp_url_for(port), "{bad:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = server.name("b.example.test").await;
    assert_eq!(
        b["active"], "primary",
        "a forged answer must not swap: {b:#}"
    );
}

/// Server: Pebble 2.4.0 behind the harness's **ARI proxy**
/// (`AriProxy`), which serves the windows the test sets. The proxy stays
/// for what no Pebble can do: moving the window of a certificate that is
/// not revoked (Pebble 2.6 only answers its fixed window or, once revoked,
/// an immediate one; `ari_pebble26` tests those against Pebble 2.6 itself).
#[tokio::test(flavor = "multi_thread")]
async fn ari_windows_schedule_renewal_inside_them_and_a_past_window_renews_now_with_replaces() {
    let cas = TwoCas::start(0).await;
    let proxy = AriProxy::start(&cas.a, &cas.tls).await;
    let now = unix_now();
    let (start, end) = (now + 3000, now + 4000);
    proxy.set_default_window(Some((start, end)), Some("https://ca.test/ari/normal"));
    proxy.set_retry_after(1);
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = fast_checks();
    opts.env.push((
        "TWINCERT_CA_PEBBLE_A_DIRECTORY_URL".into(),
        proxy.directory_url(),
    ));
    opts.env.push((
        "TWINCERT_REVOCATION_ARI_MIN_POLL_SECONDS".into(),
        "1".into(),
    ));
    let server = Server::start(&cas, opts).await;
    create_names(&server, &["a", "b"]).await;
    let rfc = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let mut renew_at = Vec::new();
    for n in ["a", "b"] {
        let v = server
            .wait_for(&format!("{n}.example.test"), 60, |v| {
                v["state"] == "ready" && v["primary"]["ari"]["window_start"].is_string()
            })
            .await;
        // A future window: renewal scheduled at a point inside it.
        assert_eq!(v["primary"]["ari"]["window_start"], rfc(start), "{v:#}");
        assert_eq!(v["primary"]["ari"]["window_end"], rfc(end), "{v:#}");
        assert_eq!(
            v["primary"]["ari"]["explanation_url"],
            "https://ca.test/ari/normal"
        );
        let r = v["primary"]["renew_after"]
            .as_str()
            .expect("renew_after")
            .to_string();
        assert!(r >= rfc(start) && r <= rfc(end), "{r} not in the window");
        // CA B offers no ARI: lifetime-based renewal, no window.
        assert!(v["backup"]["ari"].is_null(), "{v:#}");
        renew_at.push(r);
    }
    assert!(
        proxy
            .new_orders()
            .iter()
            .all(|o| o.get("replaces").is_none()),
        "first issuance replaces nothing: {:#?}",
        proxy.new_orders()
    );

    // The CA moves a's window into the past: renew now, saying which
    // certificate this replaces.
    let a = server.name("a.example.test").await;
    let old = a["primary"]["serial"].as_str().expect("serial").to_string();
    let id = ari_cert_id(&leaf_der(
        &server.chain_pem("a.example.test", "primary").await,
    ));
    proxy.set_window(
        &id,
        now - 600,
        now - 60,
        Some("https://ca.test/ari/incident"),
    );
    let v = server
        .wait_for("a.example.test", 30, |v| {
            v["primary"]["serial"].as_str().is_some_and(|s| s != old) && v["state"] == "ready"
        })
        .await;
    assert_eq!(v["primary"]["ca"], "pebble-a");
    // twincert recorded what it sent, and the CA saw it on the wire.
    let store = Store::connect(&sqlite_url(cas.dir())).await.expect("store");
    let sent = store
        .orders()
        .order_replaces("a.example.test", twincert::domain::Slot::Primary)
        .await
        .expect("orders");
    assert_eq!(sent.last(), Some(&Some(id.clone())), "{sent:?}");
    let orders = proxy.new_orders();
    let replacing: Vec<&Value> = orders
        .iter()
        .filter(|o| o.get("replaces").is_some())
        .collect();
    assert_eq!(replacing.len(), 1, "{:#?}", proxy.new_orders());
    assert_eq!(replacing[0]["replaces"], id.as_str());
    let ev = events(&server, "ari.renew_now").await;
    let ev = ev
        .iter()
        .find(|e| e["target"] == "a.example.test/primary")
        .expect("audited");
    assert_eq!(
        details(ev)["explanation_url"],
        "https://ca.test/ari/incident",
        "{ev:#}"
    );
    // b's window is still in the future: untouched.
    let b = server.name("b.example.test").await;
    assert_eq!(b["primary"]["renew_after"], renew_at[1].as_str(), "{b:#}");
    // The new certificate gets its own window (the default again).
    server
        .wait_for("a.example.test", 15, |v| {
            v["primary"]["ari"]["window_start"] == rfc(start)
        })
        .await;
}

/// 30 of CA A's 100 certificates revoked at once: one CA incident, and
/// per `policy` one CA-wide swap or one waiting dry run — never 30
/// separate reactions.
async fn thirty_of_a_hundred(cas: &TwoCas, store_url: String, policy: &str) -> Server {
    const N: usize = 100;
    let ra = RevocationAuthority::new(&cas.a).await;
    let rb = RevocationAuthority::new(&cas.b).await;
    ra.publish_crl(3600);
    rb.publish_crl(3600);
    let mut opts = ServerOptions::new(store_url);
    opts.env = fast_checks();
    opts.env.extend([
        ("TWINCERT_CA_PEBBLE_A_CRL_URLS".to_string(), ra.crl_url()),
        ("TWINCERT_CA_PEBBLE_B_CRL_URLS".to_string(), rb.crl_url()),
        ("TWINCERT_REVOCATION_INCIDENT_PERCENT".into(), "10".into()),
        ("TWINCERT_REVOCATION_INCIDENT_POLICY".into(), policy.into()),
        ("TWINCERT_WORKER_CONCURRENCY".into(), "8".into()),
    ]);
    let server = Server::start(cas, opts).await;
    for i in 0..N {
        let (st, body) = server
            .create(
                json!({"name": format!("m{i:03}.example.test"), "cas": ["pebble-a", "pebble-b"]}),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    wait_all(&server, N, 300, "all ready and checked", |v| {
        v["state"] == "ready" && checked_good_via(v, "primary", "crl")
    })
    .await;
    let names = all_names(&server).await;
    for v in names.iter().take(30) {
        ra.revoke(
            v["primary"]["serial"].as_str().expect("serial"),
            "keyCompromise",
        );
    }
    ra.publish_crl(3600);
    eventually(20, "a CA incident", &server, || async {
        get(&server, "/v1/incidents").await["items"]
            .as_array()
            .and_then(|a| a.first().cloned())
    })
    .await;
    // Several more passes: nothing else may happen.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let incidents = get(&server, "/v1/incidents").await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let incident = incidents[0].clone();
    assert_eq!(incident["ca_id"], "pebble-a");
    assert_eq!(incident["state"], "open");
    assert_eq!(incident["policy"], policy);
    assert_eq!(incident["revoked"], 30, "{incident:#}");
    assert_eq!(incident["total"], N as i64, "{incident:#}");
    let alerts = open_alerts(&server, "ca_incident").await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(
        open_alerts(&server, "certificate_revoked").await.is_empty(),
        "no per-certificate reactions"
    );
    assert!(events(&server, "revocation.react").await.is_empty());
    let ops = get(&server, "/v1/operations?limit=100").await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if policy == "swap" {
        assert_eq!(ops.len(), 1, "{ops:#?}");
        assert_eq!(ops[0]["kind"], "swap");
        assert_eq!(ops[0]["scope"], "ca:pebble-a");
        assert_eq!(ops[0]["affected"], N as i64);
        assert_eq!(ops[0]["actor"], "twincert:revocation-check");
        assert_eq!(incident["operation_id"], ops[0]["id"]);
        wait_all(&server, N, 10, "all swapped", |v| v["active"] == "backup").await;
    } else {
        let metrics = server.metrics_text().await;
        for line in [
            "twincert_ca_incidents_open{ca=\"pebble-a\"} 1",
            "twincert_alerts_open{kind=\"ca_incident\"} 1",
            "twincert_certificates_by_status{ca=\"pebble-a\",state=\"revoked\"} 30",
            "twincert_certificates_by_status{ca=\"pebble-a\",state=\"good\"} 70",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
        assert!(ops.is_empty(), "manual: nothing runs: {ops:#?}");
        let dry = &incident["dry_run"];
        assert_eq!(dry["counts"]["swap"], N as i64, "{incident:#}");
        wait_all(&server, N, 10, "none swapped", |v| v["active"] == "primary").await;
    }
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_of_a_hundred_revoked_is_one_incident_and_one_ca_wide_swap() {
    let cas = TwoCas::start_three(PebbleOptions::default()).await;
    let url = sqlite_url(cas.dir());
    let _server = thirty_of_a_hundred(&cas, url, "swap").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_of_a_hundred_revoked_on_postgres_waits_for_an_operator_with_one_dry_run() {
    let Some(base) = pg_url_or_skip(
        "thirty_of_a_hundred_revoked_on_postgres_waits_for_an_operator_with_one_dry_run",
    ) else {
        return;
    };
    let cas = TwoCas::start(0).await;
    let url = fresh_pg_database(&base).await;
    let server = thirty_of_a_hundred(&cas, url, "manual").await;
    // The operator closes it after handling it; reactions resume.
    let id = get(&server, "/v1/incidents").await["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (st, body) = post(
        &server,
        &format!("/v1/incidents/{id}/close"),
        json!({"reason": "handled: swapped by hand"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "closed");
    assert_eq!(body["closed_by"], "bootstrap-admin", "{body}");
    assert!(open_alerts(&server, "ca_incident").await.is_empty());
    // The 30 revocations held for the operator now get their per-name
    // reaction: those names swap to their standby, the others stay.
    let revoked: std::collections::BTreeSet<String> = all_names(&server)
        .await
        .iter()
        .filter(|v| v["primary"]["revocation"]["status"] == "revoked")
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(revoked.len(), 30);
    wait_all(
        &server,
        100,
        30,
        "revoked ones swapped after the close",
        |v| {
            let name = v["name"].as_str().unwrap_or_default();
            (v["active"] == "backup") == revoked.contains(name)
        },
    )
    .await;
    let incidents = get(&server, "/v1/incidents").await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(incidents.len(), 1, "no second incident: {incidents:#?}");
    let (st, _) = post(
        &server,
        &format!("/v1/incidents/{id}/close"),
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_cannot_be_renewed_and_a_name_without_a_standby_raise_alerts() {
    let mut cas = TwoCas::start_with(PebbleOptions {
        validity_seconds: Some(30),
        ..PebbleOptions::default()
    })
    .await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    // CA B is unreachable: the name never gets a standby.
    opts.b_directory_url = Some(format!("https://127.0.0.1:{}/dir", free_port()));
    // No `no_standby_alert_hours`: the default 24 h is bounded by 1/12 of
    // the active certificate's 30 s lifetime (policy::no_standby_alert_after),
    // so the alert comes after 2 s.
    opts.env = fast_checks();
    let server = Server::start(&cas, opts).await;
    let (st, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");
    server
        .wait_for("a.example.test", 60, |v| v["primary"]["serial"].is_string())
        .await;
    let alert = eventually(20, "no_standby alert", &server, || async {
        open_alerts(&server, "no_standby").await.into_iter().next()
    })
    .await;
    assert_eq!(alert["subject"], "a.example.test", "{alert:#}");

    // CA A goes away: the renewal (at 2/3 of 30 s) cannot succeed; with a
    // third of the lifetime left the expiry alert is raised.
    cas.a.stop();
    let alert = eventually(40, "expiry_soon alert", &server, || async {
        open_alerts(&server, "expiry_soon").await.into_iter().next()
    })
    .await;
    assert_eq!(alert["subject"], "a.example.test/primary", "{alert:#}");
    let msg = alert["message"].as_str().unwrap_or_default();
    assert!(msg.contains("no renewal has succeeded"), "{msg}");
    assert!(msg.contains("pebble-a"), "{msg}");
}

/// `twincert bench revocation` runs the real check pass: a CRL revoking 1%
/// of 600 active certificates is one incident and one CA-wide swap of all
/// 600 names.
#[test]
fn the_revocation_benchmark_detects_and_swaps() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["bench", "revocation", "--names", "600", "-o", "json"])
        .output()
        .expect("run the benchmark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON figures");
    assert_eq!(v["certificates"], 1200, "{v:#}");
    assert_eq!(v["revoked_in_crl"], 6, "{v:#}");
    assert_eq!(v["incident_revoked"], 6, "{v:#}");
    assert_eq!(v["incident_total"], 600, "{v:#}");
    assert_eq!(v["incident_swapped"], 600, "{v:#}");
    assert!(v["steady_pass_seconds"].as_f64().is_some(), "{v:#}");
}
