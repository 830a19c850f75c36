//! Issue 16, item 3: preflight against the real test BIND. The zone
//! `caa.test` (`harness::caa_template`) carries the CAA matrix; the two
//! Pebbles are configured with the identities `pebble-a.test` and
//! `pebble-b.test`. Pebble 2.4.0 does not check CAA itself, so orders do
//! not fail here: what is asserted is that preflight decides each case as
//! a CA would, that the finding is there within seconds of creation
//! (before a first order could have failed at a CA that checks), that the
//! fix it names works when applied, and the alert's lifecycle.

use serde_json::{Value, json};

use crate::harness::{BROKEN_ZONE, CAA_ZONE, TwoCas};
use crate::server::{ADMIN_TOKEN, Server, ServerOptions};

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("twincert.db").display())
}

/// `POST /v1/names/{name}/preflight`: (status, content type, body).
pub(crate) async fn run_preflight(server: &Server, name: &str) -> (u16, String, Value) {
    let r = server
        .client()
        .post(format!("{}/v1/names/{name}/preflight", server.base()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST preflight");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, r.json().await.unwrap_or(Value::Null))
}

/// The one check of `kind` for `domain` (and `ca` for CAA) in `report`.
pub(crate) fn check<'a>(
    report: &'a Value,
    kind: &str,
    ca: Option<&str>,
    domain: &str,
) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|cs| {
            cs.iter().find(|c| {
                c["check"] == kind && c["domain"] == domain && ca.is_none_or(|ca| c["ca"] == ca)
            })
        })
        .unwrap_or_else(|| panic!("no {kind} check for {domain} {ca:?} in {report}"))
}

/// Prints every check of `report`, for the record of the CAA matrix.
pub(crate) fn print_report(name: &str, report: &Value) {
    for c in report["checks"].as_array().into_iter().flatten() {
        eprintln!(
            "preflight {name}: {} {} {} {}: {}{}",
            c["check"].as_str().unwrap_or_default(),
            c["ca"].as_str().unwrap_or("-"),
            c["domain"].as_str().unwrap_or_default(),
            c["status"].as_str().unwrap_or_default(),
            c["detail"].as_str().unwrap_or_default(),
            c["fix"]
                .as_str()
                .map(|f| format!(" | fix: {f}"))
                .unwrap_or_default()
        );
    }
}

/// Adds `record` (zone-file form, `owner. CAA ...` / `owner. CNAME ...`)
/// to [`CAA_ZONE`] with nsupdate and the test key, as an operator would.
async fn add_record(cas: &TwoCas, record: &str) {
    let (owner, rest) = record.split_once(' ').expect("owner and data");
    let lines = format!("zone {CAA_ZONE}\nupdate add {owner} 5 {rest}\n");
    cas.dns
        .update(&lines)
        .await
        .unwrap_or_else(|e| panic!("nsupdate {record}: {e}"));
}

/// The open `preflight_caa` alert of `name`, if any.
async fn open_caa_alert(server: &Server, name: &str) -> Option<Value> {
    let alerts: Value = server
        .client()
        .get(format!("{}/v1/alerts", server.base()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET alerts")
        .json()
        .await
        .expect("alerts JSON");
    alerts["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["kind"] == "preflight_caa" && a["subject"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_decides_the_caa_matrix_and_names_the_record_to_add() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let pair = json!(["pebble-a", "pebble-b"]);
    let names = [
        json!({"name": "only-a.caa.test", "cas": pair}),
        json!({"name": "wild.caa.test", "domains": ["wild.caa.test", "*.wild.caa.test"], "challenge": "dns-01", "cas": pair}),
        json!({"name": "vm.caa.test", "challenge": "dns-01", "cas": pair}),
        json!({"name": "host.parent.caa.test", "cas": pair}),
        json!({"name": "alias.caa.test", "cas": pair}),
        json!({"name": "none.caa.test", "cas": pair}),
        json!({"name": "nodeleg.caa.test", "challenge": "dns-01", "cas": pair}),
        json!({"name": "manual.caa.test", "challenge": "dns-01-manual", "cas": pair}),
    ];
    for body in &names {
        let (status, created) = server.create(body.clone()).await;
        assert_eq!(status, 201, "{created}");
    }

    // Checked by the worker within seconds of creation, unasked.
    let started = std::time::Instant::now();
    let only_a = server
        .wait_for("only-a.caa.test", 20, |v| v["preflight"].is_object())
        .await;
    eprintln!(
        "first preflight report {} ms after creation",
        started.elapsed().as_millis()
    );
    let report = &only_a["preflight"];
    print_report("only-a.caa.test", report);
    let a = check(report, "caa", Some("pebble-a"), "only-a.caa.test");
    assert_eq!(a["status"], "ok", "{a}");
    assert_eq!(a["slot"], "primary");
    let b = check(report, "caa", Some("pebble-b"), "only-a.caa.test");
    assert_eq!(b["status"], "finding", "{b}");
    assert_eq!(b["slot"], "backup");
    assert_eq!(b["fix"], "only-a.caa.test. CAA 0 issue \"pebble-b.test\"");
    // The backup's order has not been refused for it yet (Pebble ignores
    // CAA, but a real CA would refuse it only at order time): the finding
    // is already here, and an alert is open.
    let mut alert = None;
    for _ in 0..50 {
        alert = open_caa_alert(&server, "only-a.caa.test").await;
        if alert.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let alert = alert.expect("a preflight_caa alert for only-a.caa.test");
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or_default()
            .contains("only-a.caa.test. CAA 0 issue \"pebble-b.test\""),
        "{alert}"
    );

    // The rest, on demand (the same checks, returned and stored).
    let mut reports = std::collections::BTreeMap::new();
    for body in &names[1..] {
        let name = body["name"].as_str().unwrap_or_default();
        let (status, _, report) = run_preflight(&server, name).await;
        assert_eq!(status, 200, "{report}");
        print_report(name, &report);
        reports.insert(name.to_string(), report);
    }
    // issuewild differs from issue: the apex may come from both, the
    // wildcard only from B.
    let wild = &reports["wild.caa.test"];
    assert_eq!(
        check(wild, "caa", Some("pebble-a"), "wild.caa.test")["status"],
        "ok"
    );
    assert_eq!(
        check(wild, "caa", Some("pebble-b"), "wild.caa.test")["status"],
        "ok"
    );
    let wa = check(wild, "caa", Some("pebble-a"), "*.wild.caa.test");
    assert_eq!(wa["status"], "finding", "{wa}");
    assert_eq!(
        wa["fix"],
        "wild.caa.test. CAA 0 issuewild \"pebble-a.test\""
    );
    assert_eq!(
        check(wild, "caa", Some("pebble-b"), "*.wild.caa.test")["status"],
        "ok"
    );
    let d = check(wild, "delegation", None, "wild.caa.test");
    assert_eq!(d["status"], "ok", "{d}");
    // The provider the records go to (the test BIND, rfc2136) answers a
    // signed query with our key.
    let pv = check(wild, "provider", None, "wild.caa.test");
    assert_eq!(pv["status"], "ok", "{pv}");
    assert!(
        pv["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("DNS provider 'bind' (rfc2136, "),
        "{pv}"
    );
    assert!(
        d["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("CNAME to wild-caa-test.acme.example.test"),
        "{d}"
    );
    // validationmethods=http-01 on a DNS-01 name.
    let vm = &reports["vm.caa.test"];
    let va = check(vm, "caa", Some("pebble-a"), "vm.caa.test");
    assert_eq!(va["status"], "finding", "{va}");
    assert!(
        va["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("allows only validation methods http-01, we use dns-01"),
        "{va}"
    );
    assert_eq!(va["fix"], "vm.caa.test. CAA 0 issue \"pebble-a.test\"");
    assert_eq!(
        check(vm, "caa", Some("pebble-b"), "vm.caa.test")["status"],
        "ok"
    );
    // CAA at a parent: the fix goes where the set is.
    let parent = &reports["host.parent.caa.test"];
    let pa = check(parent, "caa", Some("pebble-a"), "host.parent.caa.test");
    assert_eq!(pa["status"], "finding", "{pa}");
    assert_eq!(pa["fix"], "parent.caa.test. CAA 0 issue \"pebble-a.test\"");
    assert_eq!(
        check(parent, "caa", Some("pebble-b"), "host.parent.caa.test")["status"],
        "ok"
    );
    // A CNAME to a CAA-carrying name: the target's set applies.
    let alias = &reports["alias.caa.test"];
    assert_eq!(
        check(alias, "caa", Some("pebble-a"), "alias.caa.test")["status"],
        "ok"
    );
    let ab = check(alias, "caa", Some("pebble-b"), "alias.caa.test");
    assert_eq!(ab["status"], "finding", "{ab}");
    assert_eq!(ab["fix"], "only-a.caa.test. CAA 0 issue \"pebble-b.test\"");
    // No CAA anywhere up the tree.
    let none = &reports["none.caa.test"];
    for ca in ["pebble-a", "pebble-b"] {
        let c = check(none, "caa", Some(ca), "none.caa.test");
        assert_eq!(c["status"], "ok", "{c}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("no CAA records"),
            "{c}"
        );
    }
    assert!(open_caa_alert(&server, "none.caa.test").await.is_none());
    // A DNS-01 name whose _acme-challenge no provider serves.
    let nodeleg = &reports["nodeleg.caa.test"];
    let nd = check(nodeleg, "delegation", None, "nodeleg.caa.test");
    assert_eq!(nd["status"], "finding", "{nd}");
    assert_eq!(
        nd["fix"],
        "_acme-challenge.nodeleg.caa.test. CNAME nodeleg-caa-test.acme.example.test."
    );

    // Manual DNS-01: where the records will have to go, not a finding.
    let manual = &reports["manual.caa.test"];
    let md = check(manual, "delegation", None, "manual.caa.test");
    assert_eq!(md["status"], "ok", "{md}");
    assert_eq!(
        md["detail"],
        "_acme-challenge.manual.caa.test has no CNAME: the TXT records will have to be \
         published at _acme-challenge.manual.caa.test"
    );

    // The metrics count names with findings per check.
    let metrics = server.metrics_text().await;
    let caa_line = metrics
        .lines()
        .find(|l| l.starts_with("twincert_preflight_findings{check=\"caa\"}"))
        .unwrap_or_else(|| panic!("no preflight metric in\n{metrics}"));
    assert_eq!(caa_line, "twincert_preflight_findings{check=\"caa\"} 5");
    assert!(
        metrics.contains("twincert_preflight_findings{check=\"delegation\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("twincert_preflight_findings{check=\"provider\"} 0"),
        "{metrics}"
    );

    // Applying the fixes as written clears the findings and the alert.
    add_record(&cas, b["fix"].as_str().unwrap_or_default()).await;
    add_record(&cas, nd["fix"].as_str().unwrap_or_default()).await;
    let (_, _, fixed_a) = run_preflight(&server, "only-a.caa.test").await;
    print_report("only-a.caa.test (fixed)", &fixed_a);
    for ca in ["pebble-a", "pebble-b"] {
        let c = check(&fixed_a, "caa", Some(ca), "only-a.caa.test");
        assert_eq!(c["status"], "ok", "{c}");
    }
    assert!(open_caa_alert(&server, "only-a.caa.test").await.is_none());
    let (_, _, fixed) = run_preflight(&server, "nodeleg.caa.test").await;
    let nd = check(&fixed, "delegation", None, "nodeleg.caa.test");
    assert_eq!(nd["status"], "ok", "{nd}");
    // GET shows the stored report of the last check.
    let shown = server.name("only-a.caa.test").await;
    assert_eq!(shown["preflight"], fixed_a);

    // The CLI: `names check` runs it, `names show` shows the stored report.
    let env = [
        ("TWINCERT_URL", server.base()),
        ("TWINCERT_TOKEN", ADMIN_TOKEN.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for args in [
        ["names", "check", "host.parent.caa.test"],
        ["names", "show", "host.parent.caa.test"],
    ] {
        let out = crate::backup::cli(&args, &env);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("twincert {}:\n{text}", args.join(" "));
        assert!(
            text.lines().any(|l| l.contains("checks[0].fix")
                && l.contains("parent.caa.test. CAA 0 issue \"pebble-a.test\"")),
            "{args:?}: {text}"
        );
    }

    // Bad input: an unknown name is a 404 problem.
    let (status, ctype, body) = run_preflight(&server, "nope.caa.test").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(ctype, "application/problem+json");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("name 'nope.caa.test' not found"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accounturi_is_checked_against_our_real_account_at_the_ca() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    // A record binding pebble-a to an account that is not ours; B plainly.
    add_record(
        &cas,
        "acct.caa.test. CAA 0 issue \"pebble-a.test; accounturi=https://127.0.0.1:1/my-account/999\"",
    )
    .await;
    add_record(&cas, "acct.caa.test. CAA 0 issue \"pebble-b.test\"").await;
    let (status, body) = server
        .create(json!({"name": "acct.caa.test", "cas": ["pebble-a", "pebble-b"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Issuance creates our accounts (Pebble does not check CAA).
    server.wait_ready("acct.caa.test", 90).await;
    let (status, _, report) = run_preflight(&server, "acct.caa.test").await;
    assert_eq!(status, 200, "{report}");
    print_report("acct.caa.test", &report);
    let a = check(&report, "caa", Some("pebble-a"), "acct.caa.test");
    assert_eq!(a["status"], "finding", "{a}");
    let detail = a["detail"].as_str().unwrap_or_default();
    let ours = detail
        .split("our account at pebble-a is ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("our account URI named in {detail}"));
    assert!(
        ours.starts_with(&format!("https://127.0.0.1:{}/", cas.a.port())),
        "our real Pebble account: {ours}"
    );
    // The fix keeps the account binding, with our account.
    let fix = a["fix"].as_str().unwrap_or_default();
    assert_eq!(
        fix,
        format!("acct.caa.test. CAA 0 issue \"pebble-a.test; accounturi={ours}\"")
    );
    assert_eq!(
        check(&report, "caa", Some("pebble-b"), "acct.caa.test")["status"],
        "ok"
    );
    // With our account's URI in the record, A may issue.
    add_record(&cas, fix).await;
    let (_, _, report) = run_preflight(&server, "acct.caa.test").await;
    print_report("acct.caa.test (matching)", &report);
    let a = check(&report, "caa", Some("pebble-a"), "acct.caa.test");
    assert_eq!(a["status"], "ok", "{a}");
    assert!(
        a["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("accounturi={ours}")),
        "{a}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_lookup_is_could_not_check_never_allowed() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let name = format!("x.{BROKEN_ZONE}");
    let (status, body) = server.create(json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    let (status, _, report) = run_preflight(&server, &name).await;
    assert_eq!(status, 200, "{report}");
    print_report(&name, &report);
    for ca in ["pebble-a", "pebble-b"] {
        let c = check(&report, "caa", Some(ca), &name);
        assert_eq!(c["status"], "error", "{c}");
        let detail = c["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("could not check CAA: "), "{detail}");
        assert!(
            detail.contains("Server Failure") || detail.contains("timed out"),
            "{detail}"
        );
        assert!(c["fix"].is_null(), "{c}");
    }
    // Not a CAA finding: no alert; counted apart in the metrics.
    assert!(open_caa_alert(&server, &name).await.is_none());
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("twincert_preflight_findings{check=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("twincert_preflight_findings{check=\"caa\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_provider_check_signs_a_query_to_the_rfc2136_server_with_our_key() {
    let cas = TwoCas::start(0).await;
    let name = format!("tsig.{}", cas.dns.zone());
    let domain = name.clone();
    // The right key: the test BIND answers the signed SOA query.
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let (status, body) = server
        .create(json!({"name": name, "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, report) = run_preflight(&server, &name).await;
    assert_eq!(status, 200, "{report}");
    print_report(&name, &report);
    let ok = check(&report, "provider", None, &domain);
    assert_eq!(ok["status"], "ok", "{ok}");
    let detail = ok["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!(
            "DNS provider 'bind' (rfc2136, 127.0.0.1:{}): signed SOA query for {}: answered \
             with a valid signature",
            cas.dns.port(),
            cas.dns.zone()
        )),
        "{detail}"
    );
    drop(server);

    // Another secret under the same key name: BIND refuses the signature.
    use base64::Engine as _;
    let wrong =
        base64::engine::general_purpose::STANDARD.encode(b"wrong-sekrit-wrong-sekrit-32byte");
    let mut opts = ServerOptions::new(format!("sqlite://{}", cas.dir().join("bad.db").display()));
    opts.tsig_secret = Some(wrong.clone());
    let bad = Server::start(&cas, opts).await;
    let (status, body) = bad
        .create(json!({"name": name, "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, report) = run_preflight(&bad, &name).await;
    assert_eq!(status, 200, "{report}");
    print_report(&name, &report);
    let refused = check(&report, "provider", None, &domain);
    assert_eq!(refused["status"], "finding", "{refused}");
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("DNS provider 'bind' (rfc2136")
            && detail.contains("the server refused the TSIG signature"),
        "{detail}"
    );
    let fix = refused["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains(&format!("tsig_key_name '{}'", cas.dns.tsig_key_name()))
            && fix.contains("DNS provider 'bind'"),
        "{fix}"
    );
    assert!(!report.to_string().contains(&wrong), "never the secret");
    assert!(
        !report.to_string().contains("wrong-sekrit"),
        "never the secret"
    );
    let metrics = bad.metrics_text().await;
    assert!(
        metrics.contains("twincert_preflight_findings{check=\"provider\"} 1"),
        "{metrics}"
    );
}
