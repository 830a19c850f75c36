//! Issue 22, drills that prove readiness: a dry drill changes nothing and
//! reports the defects a real CA-wide swap would meet; a live drill swaps
//! only its sample away and back (or keeps it), measuring the time to
//! safety; requests that do not fit are 4xx problems naming the field;
//! a second drill of a CA, or a live one during an incident, is refused.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use twincert::domain::{DrillMode, DrillReport, DrillRequest, DrillSample};
use twincert::store::{Drill, Incident, Store, StoreError};

use crate::emergency::{cli, get, post, put, sqlite_url};
use crate::harness::{TwoCas, fresh_pg_database, pg_url_or_skip};
use crate::revocation_harness::RevocationAuthority;
use crate::server::{Server, ServerOptions};

/// Follows a drill until it ends.
pub(crate) async fn wait_drill(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = get(server, &format!("/v1/drills/{id}")).await;
        if d["state"] != "running" {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "drill never ended: {d:#}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a drill must not change of a name: which slot is active and the
/// certificate in each slot.
async fn snapshot(server: &Server, names: &[String]) -> Vec<(String, Value, Value, Value)> {
    let mut out = Vec::new();
    for n in names {
        let v = server.name(n).await;
        out.push((
            n.clone(),
            v["active"].clone(),
            v["primary"]["serial"].clone(),
            v["backup"]["serial"].clone(),
        ));
    }
    out
}

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

fn stage_names(d: &Value) -> Vec<String> {
    d["report"]["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn dry_drill_changes_nothing(mut cas: TwoCas, store_url: String) {
    let server = Server::start(&cas, ServerOptions::new(store_url)).await;
    let n = |s: &str| format!("{s}-drill.example.test");
    for s in ["ok1", "ok2", "comp"] {
        let (st, body) = server
            .create(json!({"name": n(s), "cas": ["pebble-a", "pebble-b"]}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    for s in ["ok1", "ok2", "comp"] {
        server.wait_ready(&n(s), 120).await;
    }
    crate::readiness::break_standbys(&server, &mut cas, &n("comp"), &n("nostd")).await;
    let all: Vec<String> = ["ok1", "ok2", "comp", "nostd"]
        .iter()
        .map(|s| n(s))
        .collect();
    let before = snapshot(&server, &all).await;
    let ops_before = get(&server, "/v1/operations?limit=1000").await["items"]
        .as_array()
        .map(Vec::len);

    let (st, d) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "reason": "weekly drill"}),
    )
    .await;
    assert_eq!(st, 202, "{d}");
    assert_eq!(d["state"], "running", "{d}");
    assert_eq!(d["mode"], "dry", "{d}");
    let id = d["id"].as_str().expect("id").to_string();
    let d = wait_drill(&server, &id).await;
    let r = &d["report"];
    assert_eq!(d["state"], "failed", "two names are not safe: {d:#}");
    assert_eq!(r["names"], 4, "{d:#}");
    assert_eq!(r["safe"], 2, "{d:#}");
    assert_eq!(r["outcomes"]["safe"], 2, "{d:#}");
    assert_eq!(r["outcomes"]["standby_compromised"], 1, "{d:#}");
    assert_eq!(r["outcomes"]["no_standby"], 1, "{d:#}");
    let failures: Vec<(String, String)> = r["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                f["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        vec![
            (n("comp"), "standby_compromised".to_string()),
            (n("nostd"), "no_standby".to_string()),
        ],
        "{d:#}"
    );
    assert_eq!(
        stage_names(&d),
        ["scope", "revocation", "chains", "keys", "endpoints"],
        "{d:#}"
    );
    for s in r["stages"].as_array().into_iter().flatten() {
        assert!(s["duration_ms"].as_i64().is_some_and(|ms| ms >= 0), "{s}");
        assert!(s["started_at"].as_i64().is_some_and(|t| t > 0), "{s}");
    }
    // The three standbys present had their chains verified and keys
    // opened and matched: no chain or key failures.
    let chains = &r["stages"][2];
    assert_eq!(chains["outcome"], "ok", "{d:#}");
    assert!(
        chains["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3 chains verified, 0 failed"),
        "{d:#}"
    );
    assert_eq!(r["stages"][3]["outcome"], "ok", "{d:#}");

    // Nothing changed: same active slots, same certificates, no operation.
    assert_eq!(snapshot(&server, &all).await, before);
    let ops_after = get(&server, "/v1/operations?limit=1000").await["items"]
        .as_array()
        .map(Vec::len);
    assert_eq!(ops_after, ops_before, "a dry drill records no operation");

    // Listed, audited, and shown by the CLI.
    let list = get(&server, "/v1/drills").await;
    assert_eq!(list["items"][0]["id"], id.as_str(), "{list:#}");
    assert_eq!(events(&server, "drill.request").await.len(), 1);
    let finished = events(&server, "drill.finish").await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["result"], "drill failed", "{finished:?}");
    let (code, out, err) = cli(&server, &["drill", "show", "latest"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("failed"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&n("nostd")) && l.contains("no_standby")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("chains")), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_drill_changes_nothing_and_reports_the_defects_on_sqlite() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    dry_drill_changes_nothing(cas, url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_drill_changes_nothing_and_reports_the_defects_on_postgres() {
    let Some(base) =
        pg_url_or_skip("a_dry_drill_changes_nothing_and_reports_the_defects_on_postgres")
    else {
        return;
    };
    let cas = TwoCas::start(0).await;
    dry_drill_changes_nothing(cas, fresh_pg_database(&base).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_drill_swaps_only_its_sample_and_back_measuring_the_time_to_safety() {
    let cas = TwoCas::start(0).await;
    let deploy_dir = cas.dir().join("deploy");
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.extra_config = format!(
        "[[destinations]]\nid = \"files\"\nkind = \"files\"\ndir = \"{}\"\n",
        deploy_dir.display()
    );
    let server = Server::start(&cas, opts).await;
    let all: Vec<String> = (1..=4).map(|i| format!("live{i}.example.test")).collect();
    for n in &all {
        let (st, body) = server
            .create(json!({"name": n, "cas": ["pebble-a", "pebble-b"]}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    for n in &all {
        server.wait_ready(n, 120).await;
        let (st, body) = put(
            &server,
            &format!("/v1/names/{n}/deploy"),
            json!({"destinations": ["files"]}),
        )
        .await;
        assert_eq!(st, 200, "{body}");
    }
    let before = snapshot(&server, &all).await;

    // 50% of the four names active on A: the first two, swapped away,
    // written to their destination, and swapped back.
    let (st, d) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "mode": "live", "percent": 50,
               "reason": "quarterly live drill", "verify_timeout_seconds": 60}),
    )
    .await;
    assert_eq!(st, 202, "{d}");
    let d = wait_drill(&server, d["id"].as_str().expect("id")).await;
    let r = &d["report"];
    assert_eq!(d["state"], "passed", "{d:#}\n{}", server.log());
    assert_eq!(r["sample"], json!(all[..2]), "{d:#}");
    assert_eq!(r["names"], 4, "{d:#}");
    assert_eq!(r["safe"], 2, "{d:#}");
    assert_eq!(
        stage_names(&d),
        ["sample", "swap", "verify", "swap_back", "verify_back"],
        "{d:#}"
    );
    assert!(
        r["time_to_safety_ms"].as_i64().is_some_and(|ms| ms >= 0),
        "{d:#}"
    );
    assert_eq!(r["operations"].as_array().map(Vec::len), Some(2), "{d:#}");
    // Swapped back: as before, every name on its primary.
    assert_eq!(snapshot(&server, &all).await, before);
    assert_eq!(events(&server, "drill.swap").await.len(), 1);
    assert_eq!(events(&server, "drill.swap_back").await.len(), 1);
    // The destination holds the original certificate again.
    for (n, b) in all.iter().zip(&before).take(2) {
        let dep = get(&server, &format!("/v1/names/{n}/deploy")).await;
        assert_eq!(dep["destinations"][0]["serial"], b.2, "{dep:#}");
    }

    // Keep: one listed name stays on its standby, the others untouched.
    let (st, d) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "mode": "live", "names": [all[3].clone()], "keep": true,
               "reason": "move one name for a day"}),
    )
    .await;
    assert_eq!(st, 202, "{d}");
    let d = wait_drill(&server, d["id"].as_str().expect("id")).await;
    assert_eq!(d["state"], "passed", "{d:#}");
    assert_eq!(d["report"]["kept"], true, "{d:#}");
    assert_eq!(stage_names(&d), ["sample", "swap", "verify"], "{d:#}");
    for (i, n) in all.iter().enumerate() {
        let v = server.name(n).await;
        let want = if i == 3 { "backup" } else { "primary" };
        assert_eq!(v["active"], want, "{n}: {v:#}");
        // The standby kept its certificate: nothing was re-provisioned.
        assert_eq!(v["primary"]["serial"], before[i].2, "{v:#}");
        assert_eq!(v["backup"]["serial"], before[i].3, "{v:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_requests_that_do_not_fit_are_refused_naming_the_field() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let cases = [
        (json!({"ca": "nope", "reason": "r"}), "ca"),
        (json!({"ca": "pebble-a", "reason": " "}), "reason"),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "wet"}),
            "mode",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "percent": 10}),
            "percent",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "names": ["a.example.test"]}),
            "names",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "keep": true}),
            "keep",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "live"}),
            "names",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "live", "percent": 0}),
            "percent",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "live", "percent": 101}),
            "percent",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "live", "names": []}),
            "names",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "live", "names": ["not a name!"]}),
            "names[0]",
        ),
        (
            json!({"ca": "pebble-a", "reason": "r", "mode": "live", "percent": 5,
                   "verify_timeout_seconds": 0}),
            "verify_timeout_seconds",
        ),
    ];
    for (body, field) in cases {
        let (st, p) = post(&server, "/v1/drills", body.clone()).await;
        assert_eq!(st, 400, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}: {p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
    }
    let (st, p) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "reason": "r", "surprise": 1}),
    )
    .await;
    assert_eq!(st, 400, "{p}");
    // A simulated CA event is refused unless the configuration allows it.
    let (st, p) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "reason": "r", "mode": "simulate"}),
    )
    .await;
    assert_eq!(st, 409, "{p}");
    assert_eq!(p["field"], "mode", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("allow_simulation = true")),
        "{p}"
    );
    let r = reqwest::Client::new()
        .get(format!("{}/v1/drills/0123abcd", server.base()))
        .bearer_auth(crate::server::ADMIN_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 404);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/problem+json"))
    );
    // The CLI exits 3 on a refused request and says why.
    let (code, _, err) = cli(&server, &["drill", "run", "--ca", "nope", "--reason", "r"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unknown CA 'nope'"), "{err}");
}

/// The status checker is off, so only the drill looks at the CRL: a
/// standby the CA's CRL lists now is found by the dry drill's fresh check
/// although the store still believes it good — and the drill records
/// nothing about it but its report.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_drill_finds_a_standby_its_crl_revokes_now() {
    let cas = TwoCas::start(0).await;
    let rb = RevocationAuthority::new(&cas.b).await;
    rb.publish_crl(3600);
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![
        ("TWINCERT_REVOCATION_ENABLED".into(), "false".into()),
        ("TWINCERT_CA_PEBBLE_B_CRL_URLS".into(), rb.crl_url()),
    ];
    let server = Server::start(&cas, opts).await;
    let names = ["x-crl.example.test", "y-crl.example.test"];
    for n in names {
        let (st, body) = server
            .create(json!({"name": n, "cas": ["pebble-a", "pebble-b"]}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    for n in names {
        server.wait_ready(n, 120).await;
    }
    let y = server.name(names[1]).await;
    let serial = y["backup"]["serial"].as_str().expect("serial").to_string();
    rb.revoke(&serial, "keyCompromise");
    rb.publish_crl(3600);

    let (st, d) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "reason": "crl drill"}),
    )
    .await;
    assert_eq!(st, 202, "{d}");
    let d = wait_drill(&server, d["id"].as_str().expect("id")).await;
    let r = &d["report"];
    assert_eq!(d["state"], "failed", "{d:#}");
    assert_eq!(r["outcomes"]["safe"], 1, "{d:#}");
    assert_eq!(r["outcomes"]["standby_revoked_now"], 1, "{d:#}");
    assert_eq!(r["failures"][0]["name"], names[1], "{d:#}");
    let revocation = &r["stages"][1];
    assert_eq!(revocation["name"], "revocation", "{d:#}");
    assert_eq!(revocation["outcome"], "failed", "{d:#}");
    assert!(
        revocation["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("2 checked against a CRL now"),
        "{d:#}"
    );
    let after = server.name(names[1]).await;
    assert_eq!(after["active"], "primary", "{after:#}");
    assert_eq!(after["backup"]["serial"], serial.as_str(), "{after:#}");
    assert_ne!(
        after["backup"]["revocation"]["status"], "revoked",
        "{after:#}"
    );
}

/// The refusals a drill request meets, on both stores: another drill of
/// the CA still running; a live drill while the CA has an open incident
/// (a dry one is allowed: it changes nothing).
async fn drill_conflicts(store: Store) {
    store.migrate().await.expect("migrate");
    let drill = |id: &str, ca: &str, mode: DrillMode| Drill {
        id: id.into(),
        ca: ca.into(),
        mode,
        state: "running".into(),
        actor: "tester".into(),
        reason: "contract".into(),
        request: DrillRequest {
            mode,
            sample: (mode == DrillMode::Live).then_some(DrillSample::Percent(10)),
            keep: false,
            verify_timeout_seconds: 60,
        },
        report: None,
        created_at: 100,
        started_at: None,
        finished_at: None,
    };
    let drills = store.drills();
    drills
        .request(&drill("d1", "ca-a", DrillMode::Dry))
        .await
        .expect("first drill");
    match drills.request(&drill("d2", "ca-a", DrillMode::Dry)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("'d1'"), "{why}"),
        other => panic!("a second drill of ca-a: {other:?}"),
    }
    // Another CA is not blocked.
    drills
        .request(&drill("d3", "ca-b", DrillMode::Dry))
        .await
        .expect("a drill of another CA");
    let d1 = drills.drill("d1").await.expect("read").expect("d1");
    drills
        .finish(&d1, "passed", &DrillReport::default(), "tester", 101)
        .await
        .expect("finish");
    assert_eq!(
        drills.drill("d1").await.expect("read").expect("d1").state,
        "passed"
    );
    let opened = store
        .incidents()
        .create_incident(
            &Incident {
                id: "inc1".into(),
                ca_id: "ca-a".into(),
                state: "open".into(),
                policy: "manual".into(),
                revoked: 5,
                ari_past: 0,
                total: 10,
                window_seconds: 3600,
                summary: "test".into(),
                operation_id: None,
                dry_run: None,
                opened_at: 100,
                closed_at: None,
                closed_by: None,
                close_reason: None,
            },
            &json!({}),
            "tester",
        )
        .await
        .expect("incident");
    assert!(opened);
    match drills.request(&drill("d4", "ca-a", DrillMode::Live)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("incident 'inc1'"), "{why}"),
        other => panic!("a live drill during an incident: {other:?}"),
    }
    drills
        .request(&drill("d5", "ca-a", DrillMode::Dry))
        .await
        .expect("a dry drill during an incident");
    let listed: Vec<String> = drills
        .list(10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.contains(&"d4".to_string()), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_requests_conflict_with_a_running_drill_or_an_incident_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    drill_conflicts(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_requests_conflict_with_a_running_drill_or_an_incident_on_postgres() {
    let Some(base) =
        pg_url_or_skip("drill_requests_conflict_with_a_running_drill_or_an_incident_on_postgres")
    else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    drill_conflicts(Store::connect(&url).await.expect("connect")).await;
}

/// Test and training environments only (`[drills] allow_simulation`): the
/// revocation checks see every certificate of pebble-a revoked without
/// asking it, the automatic reaction swaps every name away, the drill
/// measures how long that took, and the audit log marks the revocations
/// as simulated.
#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_ca_event_runs_the_automatic_path_and_is_marked_in_the_audit_log() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![
        (
            "TWINCERT_REVOCATION_CHECK_INTERVAL_SECONDS".into(),
            "1".into(),
        ),
        ("TWINCERT_DRILLS_ALLOW_SIMULATION".into(), "true".into()),
    ];
    let server = Server::start(&cas, opts).await;
    let names: Vec<String> = (1..=3).map(|i| format!("sim{i}.example.test")).collect();
    for n in &names {
        let (st, body) = server
            .create(json!({"name": n, "cas": ["pebble-a", "pebble-b"]}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    for n in &names {
        server.wait_ready(n, 120).await;
    }
    let (code, out, err) = cli(
        &server,
        &[
            "drill",
            "run",
            "--ca",
            "pebble-a",
            "--simulate",
            "--verify-timeout",
            "60",
            "--reason",
            "training",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", server.log());
    assert!(
        out.contains("simulate drill of losing pebble-a): passed"),
        "{out}"
    );
    assert!(out.contains("time to safety:"), "{out}");
    for n in &names {
        let v = server.name(n).await;
        assert_eq!(v["active"], "backup", "swapped away by the reaction: {v:#}");
    }
    let found = events(&server, "certificate.revoked_detected").await;
    assert!(found.len() >= 3, "{found:#?}");
    for e in &found {
        let d: Value =
            serde_json::from_str(e["details"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        assert_eq!(d["evidence"]["simulated"], true, "{e:#}");
    }
    let list = get(&server, "/v1/drills").await;
    assert_eq!(list["items"][0]["mode"], "simulate", "{list:#}");
    assert!(
        list["items"][0]["report"]["time_to_safety_ms"]
            .as_i64()
            .is_some(),
        "{list:#}"
    );
}

/// Crash safety: the sample is written down before it is flipped, so a
/// live drill whose process is killed mid-way (waiting for a destination
/// that never takes the certificate) is finished by the restarted worker:
/// the sample swapped back, the drill `failed` saying it was interrupted.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_drill_killed_mid_way_swaps_its_sample_back_after_the_restart() {
    let cas = TwoCas::start(0).await;
    let not_a_dir = cas.dir().join("not-a-dir");
    std::fs::write(&not_a_dir, "a file where a directory should be").expect("write");
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.extra_config = format!(
        "[[destinations]]\nid = \"broken\"\nkind = \"files\"\ndir = \"{}\"\n",
        not_a_dir.join("deploy").display()
    );
    let mut server = Server::start(&cas, opts).await;
    let n = "crash-drill.example.test";
    let (st, body) = server
        .create(json!({"name": n, "cas": ["pebble-a", "pebble-b"]}))
        .await;
    assert_eq!(st, 201, "{body}");
    let before = server.wait_ready(n, 120).await;
    let (st, body) = put(
        &server,
        &format!("/v1/names/{n}/deploy"),
        json!({"destinations": ["broken"]}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, d) = post(
        &server,
        "/v1/drills",
        json!({"ca": "pebble-a", "mode": "live", "names": [n], "reason": "crash drill",
               "verify_timeout_seconds": 600}),
    )
    .await;
    assert_eq!(st, 202, "{d}");
    let id = d["id"].as_str().expect("id").to_string();
    // Swapped away and waiting for the broken destination: kill it there.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = get(&server, &format!("/v1/drills/{id}")).await;
        if stage_names(&d).contains(&"swap".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "never swapped: {d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.name(n).await["active"], "backup");
    server.kill();
    server.restart(Vec::new()).await;
    let d = wait_drill(&server, &id).await;
    assert_eq!(d["state"], "failed", "{d:#}");
    assert!(
        d["report"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted")),
        "{d:#}"
    );
    assert_eq!(
        stage_names(&d).last().map(String::as_str),
        Some("swap_back"),
        "{d:#}"
    );
    let v = server.name(n).await;
    assert_eq!(v["active"], "primary", "swapped back: {v:#}");
    assert_eq!(v["primary"]["serial"], before["primary"]["serial"], "{v:#}");
    assert_eq!(events(&server, "drill.swap_back").await.len(), 1);
}
