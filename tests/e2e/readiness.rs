//! Issue 22: emergency readiness you can see. A fleet with deliberate
//! defects — a name with no standby, a standby whose key is compromised,
//! a destination that fails — on the local CAs: `GET /v1/readiness`, the
//! CLI and the metrics list exactly those with the right reasons and
//! counts, and the readiness alert fires under the threshold; on both
//! stores.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emergency::{cli, get, post, put, sqlite_url};
use crate::harness::{TwoCas, fresh_pg_database, pg_url_or_skip};
use crate::server::{Server, ServerOptions};

fn ca<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["cas"]
        .as_array()
        .and_then(|cas| cas.iter().find(|c| c["ca"] == id))
        .unwrap_or(&Value::Null)
}

/// Two defects in a fleet on A (primary) and B (backup): CA B goes away
/// (nothing re-issues a standby from it meanwhile), `compromised`'s backup
/// key is reported compromised, and `no_standby` is created then, so only
/// its primary is issued.
pub(crate) async fn break_standbys(
    server: &Server,
    cas: &mut TwoCas,
    compromised: &str,
    no_standby: &str,
) {
    cas.b.stop();
    let (st, body) = post(
        server,
        &format!("/v1/names/{compromised}/compromise"),
        json!({"slot": "backup", "reason": "key found in a paste"}),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let (st, body) = server
        .create(json!({"name": no_standby, "cas": ["pebble-a", "pebble-b"]}))
        .await;
    assert_eq!(st, 201, "{body}");
    server
        .wait_for(no_standby, 60, |v| v["primary"]["serial"].is_string())
        .await;
}

async fn fleet_with_defects(mut cas: TwoCas, store_url: String) {
    let not_a_dir = cas.dir().join("not-a-dir");
    std::fs::write(&not_a_dir, "a file where a directory should be").expect("write");
    let mut opts = ServerOptions::new(store_url);
    opts.extra_config = format!(
        "[readiness]\ninterval_seconds = 1\n\n[[destinations]]\nid = \"broken\"\nkind = \"files\"\n\
         dir = \"{}\"\n",
        not_a_dir.join("deploy").display()
    );
    let server = Server::start(&cas, opts).await;
    let n = |s: &str| format!("{s}-ready.example.test");
    for s in ["ok1", "ok2", "comp", "dep"] {
        let (st, body) = server
            .create(json!({"name": n(s), "cas": ["pebble-a", "pebble-b"]}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    for s in ["ok1", "ok2", "comp", "dep"] {
        server.wait_ready(&n(s), 120).await;
    }
    // ok2 is active on B (its standby on A is fine).
    let (st, body) = post(
        &server,
        &format!("/v1/names/{}/swap", n("ok2")),
        json!({"reason": "spread the fleet"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    // The slot it left is re-issued (from A, still up) before it counts.
    server
        .wait_for(&n("ok2"), 60, |v| {
            v["state"] == "ready" && v["primary"]["reprovision"].is_null()
        })
        .await;
    break_standbys(&server, &mut cas, &n("comp"), &n("nostd")).await;
    let (st, body) = put(
        &server,
        &format!("/v1/names/{}/deploy", n("dep")),
        json!({"destinations": ["broken"]}),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let r = get(&server, "/v1/readiness").await;
        let a = ca(&r, "pebble-a");
        if a["active"] == 4
            && ca(&r, "pebble-b")["active"] == 1
            && a["outcomes"]["deploy_failing"] == 1
            && a["outcomes"]["no_standby"] == 1
            && a["outcomes"]["standby_compromised"] == 1
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never showed the defects: {r:#}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let a = ca(&report, "pebble-a");
    assert_eq!(a["safe"], 1, "{report:#}");
    assert_eq!(a["outcomes"]["safe"], 1, "{report:#}");
    assert_eq!(
        a["samples"]["no_standby"],
        json!([n("nostd")]),
        "{report:#}"
    );
    assert_eq!(
        a["samples"]["standby_compromised"],
        json!([n("comp")]),
        "{report:#}"
    );
    assert_eq!(
        a["samples"]["deploy_failing"],
        json!([n("dep")]),
        "{report:#}"
    );
    assert!(a["samples"].get("safe").is_none(), "{report:#}");
    assert!(a["time_to_safety_seconds"].as_i64().is_some(), "{report:#}");
    // Two CAs: the abandoned slots would come back from A after its hold-off.
    assert_eq!(a["redundancy_from"], json!(["pebble-a"]), "{report:#}");
    assert!(
        a["alert"].as_str().unwrap_or_default().contains("1 of 4"),
        "{report:#}"
    );
    let b = ca(&report, "pebble-b");
    assert_eq!(b["active"], 1, "{report:#}");
    assert_eq!(b["safe"], 1, "{report:#}");
    assert!(b["alert"].is_null(), "{report:#}");
    assert_eq!(report["names"], 5, "{report:#}");
    assert_eq!(report["safe"], 2, "{report:#}");

    // The alert is open for A only.
    let alerts = get(&server, "/v1/alerts").await;
    let readiness: Vec<&Value> = alerts["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "readiness")
        .collect();
    assert_eq!(readiness.len(), 1, "{alerts:#}");
    assert_eq!(readiness[0]["subject"], "pebble-a", "{alerts:#}");

    let metrics = server.metrics_text().await;
    for line in [
        "twincert_readiness_names{ca=\"pebble-a\",outcome=\"no_standby\"} 1",
        "twincert_readiness_names{ca=\"pebble-a\",outcome=\"safe\"} 1",
        "twincert_readiness_names{ca=\"pebble-b\",outcome=\"safe\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    let (code, out, err) = cli(&server, &["readiness"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 of 5 names safe"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("no_standby") && l.contains(&n("nostd"))),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("pebble-a") && l.contains("25.0%")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_lists_every_defect_with_its_reason_on_sqlite() {
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    fleet_with_defects(cas, url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_lists_every_defect_with_its_reason_on_postgres() {
    let Some(base) = pg_url_or_skip("readiness_lists_every_defect_with_its_reason_on_postgres")
    else {
        return;
    };
    let cas = TwoCas::start(0).await;
    fleet_with_defects(cas, fresh_pg_database(&base).await).await;
}

/// `twincert bench readiness` as a test: every synthetic name is active
/// on one CA with a usable standby on the other, so all are counted safe.
#[test]
fn the_readiness_benchmark_counts_every_synthetic_name_safe() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args([
            "bench",
            "readiness",
            "--names",
            "300",
            "--runs",
            "1",
            "-o",
            "json",
        ])
        .output()
        .expect("run the benchmark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON figures");
    assert_eq!(v["names"], 300, "{v:#}");
    assert_eq!(v["report_names"], 300, "{v:#}");
    assert_eq!(v["report_safe"], 300, "{v:#}");
    assert!(v["best_seconds"].as_f64().is_some(), "{v:#}");
}
