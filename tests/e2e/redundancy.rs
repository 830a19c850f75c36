//! Issue 20: redundancy after emergencies. With exactly two CAs, a CA-wide
//! swap re-issues the abandoned slots from the CA swapped away from after
//! the hold-off, and says so meanwhile (operation not done, names
//! degraded, slots waiting with a time, a `no_standby` alert); a distrust
//! with nowhere to go is blocked and says so; and during a distrust every
//! slot shows the CA of the certificate it holds, not where its order goes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emergency::{all_names, cli, get, post, sqlite_url, wait_all};
use crate::harness::{PebbleOptions, TwoCas};
use crate::server::{Server, ServerOptions};

const NAMES: [&str; 2] = ["r1.example.test", "r2.example.test"];

async fn operation(server: &Server, id: &str) -> Value {
    get(server, &format!("/v1/operations/{id}")).await
}

/// Polls `what` until `pred` holds for it.
async fn until(
    server: &Server,
    secs: u64,
    what: &str,
    mut f: impl AsyncFnMut() -> Value,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = f().await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last seen {v:#}\n--- log tail ---\n{}",
            server
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn open_alerts_of(alerts: &Value, kind: &str) -> Vec<String> {
    alerts["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == kind && a["resolved_at"].is_null())
        .filter_map(|a| a["subject"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_ca_wide_swap_with_two_cas_redundancy_comes_back_from_the_same_ca() {
    const HOLD_OFF: i64 = 6;
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![
        (
            "TWINCERT_POLICY_REPROVISION_SAME_CA_AFTER_SECONDS".into(),
            HOLD_OFF.to_string(),
        ),
        (
            "TWINCERT_REVOCATION_CHECK_INTERVAL_SECONDS".into(),
            "1".into(),
        ),
        // One second without a real standby raises the alert.
        (
            "TWINCERT_REVOCATION_NO_STANDBY_ALERT_HOURS".into(),
            "0.0003".into(),
        ),
    ];
    let mut server = Server::start(&cas, opts).await;
    for n in NAMES {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
    }
    let mut before = Vec::new();
    for n in NAMES {
        before.push(server.wait_ready(n, 120).await);
    }

    // The estimate says who restores the standbys, and when.
    let (st, dry) = post(
        &server,
        "/v1/swaps",
        json!({"ca": "pebble-a", "reason": "INC-7 A revokes", "dry_run": true}),
    )
    .await;
    assert_eq!(st, 200, "{dry:#}");
    assert_eq!(dry["estimate"]["eligible_cas"], json!([]), "{dry:#}");
    assert_eq!(dry["estimate"]["same_ca"]["ca"], "pebble-a", "{dry:#}");
    assert_eq!(dry["estimate"]["same_ca"]["hold_off_seconds"], HOLD_OFF);
    assert!(
        dry["estimate"]["seconds"].as_i64().unwrap_or(0) >= HOLD_OFF,
        "{dry:#}"
    );

    let (st, swap) = post(
        &server,
        "/v1/swaps",
        json!({"ca": "pebble-a", "reason": "INC-7 A revokes"}),
    )
    .await;
    assert_eq!(st, 200, "{swap:#}");
    assert_eq!(swap["report"]["swapped"], 2, "{swap:#}");
    let op = swap["report"]["operation_id"]
        .as_str()
        .expect("operation id")
        .to_string();

    // During the hold-off: not done, the slots wait with a time and a
    // reason, the names are degraded (no real standby), the alert fires.
    let progress = until(
        &server,
        HOLD_OFF as u64 - 1,
        "both abandoned slots wait for A",
        async || operation(&server, &op).await,
        |v| v["progress"]["waiting"] == 2,
    )
    .await;
    assert_eq!(progress["progress"]["done"], false, "{progress:#}");
    assert!(
        progress["progress"]["waiting_until"].as_i64().unwrap_or(0) > 0,
        "{progress:#}"
    );
    for n in NAMES {
        let v = server.name(n).await;
        assert_eq!(v["active"], "backup", "{v:#}");
        assert_eq!(v["state"], "degraded", "no real standby: {v:#}");
        let r = &v["primary"]["reprovision"];
        assert_eq!(r["operation"], op.as_str(), "{v:#}");
        assert_eq!(r["state"], "waiting", "{v:#}");
        assert!(r["until"].is_string(), "{v:#}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("pebble-a"),
            "{v:#}"
        );
        assert_eq!(v["primary"]["ca"], "pebble-a", "{v:#}");
        assert_eq!(v["primary"]["order"]["ca"], "pebble-a", "{v:#}");
        assert!(v["primary"]["order"]["held"].is_string(), "{v:#}");
    }
    let (code, out, err) = cli(&server, &["names", "list", "--state", "degraded"]);
    assert_eq!(code, 0, "{out}{err}");
    for n in NAMES {
        assert!(out.contains(n), "{out}{err}");
    }
    let alerts = until(
        &server,
        30,
        "a no_standby alert per name",
        async || get(&server, "/v1/alerts").await,
        |v| open_alerts_of(v, "no_standby").len() == 2,
    )
    .await;
    assert!(
        alerts.to_string().contains("superseded"),
        "the alert says why: {alerts:#}"
    );

    // After the hold-off, A re-issues both under new keys: redundant again.
    wait_all(
        &server,
        2,
        90,
        "ready again with a new A certificate",
        |v| v["state"] == "ready" && v["primary"]["reprovision"].is_null(),
    )
    .await;
    for (old, new) in before.iter().zip(all_names(&server).await) {
        assert_eq!(new["primary"]["ca"], "pebble-a", "{new:#}");
        assert_ne!(new["primary"]["serial"], old["primary"]["serial"]);
        assert_ne!(new["primary"]["spki_sha256"], old["primary"]["spki_sha256"]);
        assert_eq!(new["active"], "backup");
    }
    let done = operation(&server, &op).await;
    assert_eq!(done["progress"]["done"], true, "{done:#}");
    assert_eq!(done["progress"]["waiting"], 0, "{done:#}");
    assert_eq!(done["progress"]["blocked"], 0, "{done:#}");
    until(
        &server,
        30,
        "the no_standby alerts resolve",
        async || get(&server, "/v1/alerts").await,
        |v| open_alerts_of(v, "no_standby").is_empty(),
    )
    .await;

    // Distrusting A with only two CAs: nothing can take its slots. Blocked,
    // said so per slot, the operation not done — and still so after a
    // restart (blocked slots are retried with the CAs configured then).
    let (st, out) = post(
        &server,
        "/v1/cas/pebble-a/distrust",
        json!({"reason": "A distrusted"}),
    )
    .await;
    assert_eq!(st, 200, "{out:#}");
    let dop = out["report"]["operation_id"]
        .as_str()
        .expect("operation id")
        .to_string();
    for round in 0..2 {
        let p = until(
            &server,
            30,
            "both A slots blocked",
            async || operation(&server, &dop).await,
            |v| v["progress"]["blocked"] == 2 && v["progress"]["queued"] == 0,
        )
        .await;
        assert_eq!(p["progress"]["done"], false, "round {round}: {p:#}");
        for n in NAMES {
            let v = server.name(n).await;
            assert_eq!(v["state"], "degraded", "{v:#}");
            let r = &v["primary"]["reprovision"];
            assert_eq!(r["state"], "blocked", "{v:#}");
            assert!(
                r["reason"].as_str().unwrap_or_default().contains("blocked"),
                "{v:#}"
            );
        }
        if round == 0 {
            server.restart(Vec::new()).await;
        }
    }
}

/// While a distrust moves slots to another CA, each slot still shows the
/// CA of the certificate it holds (`ca`), and where its order goes
/// separately (`order.ca`); the CA filter and counts agree.
#[tokio::test(flavor = "multi_thread")]
async fn during_a_distrust_slots_show_the_ca_of_their_certificate() {
    let mut cas = TwoCas::start_three(PebbleOptions::default()).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    for n in NAMES {
        let (st, body) = server
            .create(json!({ "name": n, "cas": ["pebble-a", "pebble-b"] }))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    for n in NAMES {
        server.wait_ready(n, 120).await;
    }
    // C is down: re-provisioning to C cannot finish while we look.
    cas.c.as_mut().expect("CA C").stop();
    let (st, out) = post(
        &server,
        "/v1/cas/pebble-a/distrust",
        json!({"reason": "A distrusted"}),
    )
    .await;
    assert_eq!(st, 200, "{out:#}");
    wait_all(&server, 2, 30, "orders to C opened", |v| {
        v["primary"]["order"]["ca"] == "pebble-c"
    })
    .await;
    for v in all_names(&server).await {
        assert_eq!(
            v["primary"]["ca"], "pebble-a",
            "holds A's certificate: {v:#}"
        );
        assert_eq!(v["cas"], json!(["pebble-a", "pebble-b"]), "{v:#}");
        assert_eq!(v["state"], "degraded", "{v:#}");
        assert_eq!(v["primary"]["reprovision"]["state"], "ordering", "{v:#}");
    }
    // "Does any slot still hold a certificate from A?" — yes, both.
    let page = get(&server, "/v1/names?ca=pebble-a").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2), "{page:#}");
    let page = get(&server, "/v1/names?ca=pebble-c").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page:#}");
    let cas_view = get(&server, "/v1/cas").await;
    let a = cas_view["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == "pebble-a")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(a["slots"], 2, "{cas_view:#}");
    let (code, out, err) = cli(&server, &["names", "list"]);
    assert_eq!(code, 0, "{err}");
    for line in out.lines().filter(|l| l.contains("example.test")) {
        assert!(line.contains("pebble-a"), "{out}");
        assert!(!line.contains("pebble-c"), "{out}");
    }
}
