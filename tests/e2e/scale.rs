//! Issue 8: processes by role on one PostgreSQL — an API process without a
//! worker beside a worker process without the API —, SQLite refusing a
//! second process, graceful shutdown, metrics, three replicas sharing the
//! work and one pace, and SIGKILL chaos.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::emergency::{all_names, sqlite_url, unix_now, wait_all};
use crate::harness::{TwoCas, free_port, fresh_pg_database, pg_url_or_skip};
use crate::server::{ADMIN_TOKEN, MASTER_KEY, Server, ServerOptions};

#[tokio::test(flavor = "multi_thread")]
async fn an_api_process_and_a_worker_process_share_one_postgres() {
    let Some(base) = pg_url_or_skip("an_api_process_and_a_worker_process_share_one_postgres")
    else {
        return;
    };
    let cas = TwoCas::start(0).await;
    let url = fresh_pg_database(&base).await;
    let mut opts = ServerOptions::new(url.clone());
    opts.env = vec![("TWINCERT_ROLE".into(), "worker".into())];
    let worker = Server::start(&cas, opts).await;
    let mut opts = ServerOptions::new(url);
    opts.env = vec![
        ("TWINCERT_ROLE".into(), "api".into()),
        // The worker answers the CAs' HTTP-01 requests on the test port.
        (
            "TWINCERT_SERVER_HTTP01_LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
    ];
    let api = Server::start(&cas, opts).await;

    let (st, body) = api.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");
    let v = api.wait_ready("a.example.test", 60).await;
    assert!(v["primary"]["serial"].is_string() && v["backup"]["serial"].is_string());
    let plain = api.log();
    assert!(plain.contains("role=Api"), "{plain}");
    assert!(
        !api.log().contains("worker started"),
        "the API process runs no worker:\n{}",
        api.log()
    );
    assert!(worker.log().contains("worker started"));

    // Preflight's provider check needs the DNS credentials only the worker
    // holds: the worker's pass checks a new DNS-01 name; an on-demand
    // check in the API process repeats that result, marked as such.
    let (st, body) = api
        .create(json!({"name": "d.example.test", "challenge": "dns-01"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let has_provider_check = |v: &serde_json::Value| {
        v["preflight"]["checks"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["check"] == "provider"))
    };
    let v = api.wait_for("d.example.test", 30, has_provider_check).await;
    let by_worker = crate::preflight::check(&v["preflight"], "provider", None, "d.example.test");
    assert_eq!(by_worker["status"], "ok", "{by_worker}");
    let (st, _, report) = crate::preflight::run_preflight(&api, "d.example.test").await;
    assert_eq!(st, 200, "{report}");
    crate::preflight::print_report("d.example.test (API process)", &report);
    let repeated = crate::preflight::check(&report, "provider", None, "d.example.test");
    assert_eq!(repeated["status"], "ok", "{repeated}");
    let detail = repeated["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(by_worker["detail"].as_str().unwrap_or_default())
            && detail.contains("(as a worker checked it at ")
            && detail.contains("this process holds no DNS provider credentials"),
        "{detail}"
    );

    // The worker's API port answers the probes and nothing else.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/names", worker.base()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    let p: serde_json::Value = r.json().await.expect("problem");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("--role worker"),
        "{p}"
    );
    let r = reqwest::get(format!("{}/readyz", worker.base()))
        .await
        .expect("readyz");
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_one_sqlite_database_is_refused() {
    let cas = TwoCas::start(0).await;
    let first = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let config = first.config_path().to_path_buf();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
                .arg("serve")
                .arg("--config")
                .arg(config)
                .env("TWINCERT_MASTER_KEY", MASTER_KEY)
                .env("TWINCERT_ADMIN_TOKEN", ADMIN_TOKEN)
                .env(
                    "TWINCERT_SERVER_API_LISTEN",
                    format!("127.0.0.1:{}", free_port()),
                )
                .env(
                    "TWINCERT_SERVER_HTTP01_LISTEN",
                    format!("127.0.0.1:{}", free_port()),
                )
                .output()
                .expect("run a second serve")
        }
    })
    .await
    .expect("join");
    assert!(!out.status.success(), "a second process must not start");
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another twincert process is serving the SQLite database"),
        "{err}"
    );
    assert!(err.contains("PostgreSQL"), "{err}");
    // The first one is unaffected.
    let (st, body) = first.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_the_leases_of_orders_in_flight_back() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    // Both orders hang after their ACME order is created (leased for 60 s).
    opts.env = vec![("TWINCERT_FAILPOINT".into(), "after_order_url".into())];
    let mut server = Server::start(&cas, opts).await;
    let (st, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.log().matches("failpoint after_order_url").count() < 2 {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = tokio::task::block_in_place(|| server.terminate(40));
    assert!(status.success(), "{status}");
    let plain = server.log();
    assert!(plain.contains("leases handed back"), "{plain}");
    assert!(plain.contains("released=2"), "{plain}");
    // Started again, the orders resume at once — not after their 60 s
    // leases would have expired.
    let t = Instant::now();
    server.restart(Vec::new()).await;
    // Waits past the leases, so the assertion below is what fails if the
    // leases were not handed back.
    server.wait_ready("a.example.test", 90).await;
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        _ => f64::NAN,
    }
}

/// `/metrics` parsed by a Prometheus text-format parser matches what the
/// API says.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_text_and_match_the_api() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    for n in ["a", "b"] {
        let (st, body) = server
            .create(json!({"name": format!("{n}.example.test")}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let mut views = Vec::new();
    for n in ["a", "b"] {
        views.push(server.wait_ready(&format!("{n}.example.test"), 60).await);
    }
    let text = server.metrics_text().await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    // A histogram's bucket lines parse into one sample per label set.
    let samples_in_text = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("_bucket{"))
        .count();
    let histograms = scrape
        .samples
        .iter()
        .filter(|s| matches!(s.value, prometheus_parse::Value::Histogram(_)))
        .count();
    assert!(histograms >= 2, "ACME latency per CA:\n{text}");
    assert_eq!(
        scrape.samples.len(),
        samples_in_text + histograms,
        "every line parsed:\n{text}"
    );
    let find = |metric: &str, labels: &[(&str, &str)]| -> Vec<f64> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| value(&s.value))
            .collect()
    };
    assert_eq!(find("twincert_names", &[]), vec![2.0], "{text}");
    assert_eq!(
        find("twincert_names_by_state", &[("state", "ready")]),
        vec![2.0]
    );
    assert_eq!(
        find("twincert_names_by_state", &[("state", "degraded")]),
        vec![0.0]
    );
    assert_eq!(
        find("twincert_ca_active_names", &[("ca", "pebble-a")]),
        vec![2.0]
    );
    let valid: f64 = find("twincert_orders", &[("state", "valid")]).iter().sum();
    assert_eq!(valid, 4.0, "{text}");
    for v in &views {
        let name = v["name"].as_str().expect("name");
        for slot in ["primary", "backup"] {
            let not_after = time::OffsetDateTime::parse(
                v[slot]["not_after"].as_str().expect("not_after"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339")
            .unix_timestamp() as f64;
            let ca = v[slot]["ca"].as_str().expect("ca");
            assert_eq!(
                find(
                    "twincert_certificate_expiration_timestamp_seconds",
                    &[("name", name), ("slot", slot), ("ca", ca)]
                ),
                vec![not_after],
                "{text}"
            );
        }
    }
    // The ACME traffic of this process, by CA and answer status.
    for ca in ["pebble-a", "pebble-b"] {
        let created: f64 = find(
            "twincert_acme_requests_total",
            &[("ca", ca), ("status", "201")],
        )
        .iter()
        .sum();
        assert!(created >= 2.0, "{ca}: {text}");
        // The latency histogram counts the same requests: its +Inf bucket
        // and its _count equal the counter.
        let inf: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "twincert_acme_request_duration_seconds")
            .filter(|s| s.labels.get("ca") == Some(ca) && s.labels.get("status") == Some("201"))
            .filter_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b.last().map(|c| c.count),
                _ => None,
            })
            .collect();
        assert_eq!(inf, vec![created], "{ca}: {text}");
        assert_eq!(
            find(
                "twincert_acme_request_duration_seconds_count",
                &[("ca", ca), ("status", "201")]
            ),
            vec![created]
        );
    }
    // Nothing is leased or waiting once both names are ready.
    assert_eq!(
        find("twincert_order_lease_oldest_age_seconds", &[]),
        vec![0.0]
    );
    assert_eq!(
        find("twincert_order_queue_oldest_due_seconds", &[]),
        vec![0.0]
    );
}

/// The environment of replica `i` of a group sharing one store: only the
/// first listens where the CAs validate (the answers come from the store,
/// so it answers for all).
fn replica_env(i: usize, http01_ports: &[u16], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if i > 0 {
        env.push((
            "TWINCERT_SERVER_HTTP01_LISTEN".into(),
            format!("127.0.0.1:{}", http01_ports[i]),
        ));
    }
    env
}

/// Three processes on one PostgreSQL issue 300 names. First with CA B's
/// pace at 100 new orders per hour: every primary is issued, exactly 100
/// backups — the three hold one pace together, not 300. Then restarted
/// without the limit: every name ends ready with exactly one order and one
/// ACME order per slot (no duplicate issuance), and every process issued
/// some of them.
#[tokio::test(flavor = "multi_thread")]
async fn three_processes_issue_300_names_once_each_at_one_pace_per_ca() {
    const N: usize = 300;
    const PACE: usize = 100;
    let Some(base) = pg_url_or_skip("three_processes_issue_300_names_once_each_at_one_pace_per_ca")
    else {
        return;
    };
    let cas = TwoCas::start(0).await;
    let url = fresh_pg_database(&base).await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let paced = [
        ("TWINCERT_WORKER_CONCURRENCY", "3"),
        ("TWINCERT_CA_PEBBLE_B_ORDERS_PER_HOUR", "100"),
    ];
    let mut servers = Vec::new();
    for i in 0..3 {
        let mut opts = ServerOptions::new(url.clone());
        opts.env = replica_env(i, &ports, &paced);
        servers.push(Server::start(&cas, opts).await);
    }
    for i in 0..N {
        let (st, body) = servers[i % 3]
            .create(json!({"name": format!("w{i:03}.example.test")}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    wait_all(&servers[0], N, 300, "primaries issued", |v| {
        v["primary"]["state"] == "valid"
    })
    .await;
    let backups = |names: &[serde_json::Value]| {
        names
            .iter()
            .filter(|v| v["backup"]["state"] == "valid")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while backups(&all_names(&servers[0]).await) < PACE {
        assert!(Instant::now() < deadline, "{}", servers[0].log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Several poll rounds of three processes later: still 100.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backups(&all_names(&servers[0]).await), PACE);

    // The limit lifted: the deferred backups are ordered, once each.
    for (i, s) in servers.iter_mut().enumerate() {
        s.restart(replica_env(
            i,
            &ports,
            &[("TWINCERT_WORKER_CONCURRENCY", "3")],
        ))
        .await;
    }
    wait_all(&servers[0], N, 300, "all ready", |v| v["state"] == "ready").await;

    let store = twincert::store::Store::connect(&url).await.expect("store");
    for i in 0..N {
        let name = format!("w{i:03}.example.test");
        for slot in [
            twincert::domain::Slot::Primary,
            twincert::domain::Slot::Backup,
        ] {
            let o = store.orders().orders_of(&name, slot).await.expect("orders");
            assert_eq!(o.len(), 1, "{name} {slot:?}: one order: {o:?}");
            assert_eq!(
                o[0].acme_orders, 1,
                "{name} {slot:?}: one ACME order: {o:?}"
            );
        }
    }
    // Every process issued some of them.
    for s in &servers {
        assert!(s.log().contains("certificate stored"), "{}", s.log());
    }
}

/// A small deterministic generator for the chaos schedule (the seed is
/// printed, so a failing schedule can be replayed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Chaos: three worker processes on one PostgreSQL issue 200 names (added
/// 4 at a time during the run) while a random one is SIGKILLed every
/// 0.4–1.2 s and started again, 50 times. Every name converges; no private
/// key is left outside a certificate or an open order; no two slots share
/// a key; no order is left open — pending, or processing on a lease nobody
/// renews.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_kills_during_issuance_lose_nothing() {
    const N: usize = 200;
    const KILLS: usize = 50;
    let Some(base) = pg_url_or_skip("fifty_kills_during_issuance_lose_nothing") else {
        return;
    };
    let seed = std::env::var("TWINCERT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9)
        });
    eprintln!("chaos seed: {seed} (TWINCERT_CHAOS_SEED={seed} replays the schedule)");
    let mut rng = XorShift(seed);
    let cas = TwoCas::start(0).await;
    let url = fresh_pg_database(&base).await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let extra = [("TWINCERT_WORKER_CONCURRENCY", "3")];
    let mut servers = Vec::new();
    for i in 0..3 {
        let mut opts = ServerOptions::new(url.clone());
        // Short leases: a killed worker's orders are taken over quickly.
        opts.lease_seconds = 4;
        opts.backoff = (1, 3);
        opts.env = replica_env(i, &ports, &extra);
        servers.push(Server::start(&cas, opts).await);
    }
    let mut created = 0;
    for k in 0..KILLS {
        let victim = rng.next(3) as usize;
        let other = (victim + 1) % 3;
        for _ in 0..N / KILLS {
            let (st, body) = servers[other]
                .create(json!({"name": format!("c{created:03}.example.test")}))
                .await;
            assert_eq!(st, 201, "{body}");
            created += 1;
        }
        tokio::time::sleep(Duration::from_millis(400 + rng.next(800))).await;
        servers[victim].kill();
        tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
        servers[victim]
            .restart(replica_env(victim, &ports, &extra))
            .await;
        if k % 10 == 9 {
            eprintln!("chaos: {} kills", k + 1);
        }
    }
    assert_eq!(created, N);
    wait_all(&servers[0], N, 300, "all ready after the kills", |v| {
        v["state"] == "ready"
    })
    .await;

    let names = all_names(&servers[0]).await;
    let mut spkis = std::collections::HashSet::new();
    for v in &names {
        for slot in ["primary", "backup"] {
            let spki = v[slot]["spki_sha256"].as_str().expect("spki").to_string();
            assert!(spkis.insert(spki), "a key serves two slots: {v:#}");
        }
    }
    assert_eq!(spkis.len(), 2 * N);
    let store = twincert::store::Store::connect(&url).await.expect("store");
    assert_eq!(store.keys().orphan_key_count().await.expect("orphans"), 0);
    let now = unix_now();
    let metrics = store.metrics().scale_metrics(now).await.expect("metrics");
    let metric = |name: &str| -> f64 {
        metrics
            .iter()
            .filter(|(k, _)| k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(metric("twincert_orders_lease_expired"), 0.0, "{metrics:?}");
    for state in ["pending", "processing"] {
        let open: f64 = metrics
            .iter()
            .filter(|(k, _)| {
                k.starts_with("twincert_orders{") && k.contains(&format!("state=\"{state}\""))
            })
            .map(|(_, v)| v)
            .sum();
        assert_eq!(open, 0.0, "{state} orders left: {metrics:?}");
    }
    for i in 0..N {
        let name = format!("c{i:03}.example.test");
        for slot in [
            twincert::domain::Slot::Primary,
            twincert::domain::Slot::Backup,
        ] {
            let o = store.orders().orders_of(&name, slot).await.expect("orders");
            assert_eq!(o.len(), 1, "{name} {slot:?}: one order row: {o:?}");
        }
    }
}

/// Primary and backup of a name often complete at the same moment. On
/// PostgreSQL both transactions insert a certificate row (its foreign key
/// takes a key-share lock on the name's row) and then lock the name's row
/// to refresh its swap facts: with `FOR UPDATE` each waited for the
/// other's key-share lock, PostgreSQL broke the deadlock after a second and
/// the loser retried after its backoff. 60 names issued at once must see
/// no deadlock at all — neither in twincert's log nor in the database's
/// own count.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_completions_on_postgres_never_deadlock() {
    let Some(base) = pg_url_or_skip("concurrent_completions_on_postgres_never_deadlock") else {
        return;
    };
    let cas = TwoCas::start(0).await;
    let url = fresh_pg_database(&base).await;
    let server = Server::start(&cas, ServerOptions::new(url.clone())).await;
    let names: Vec<String> = (0..60).map(|i| format!("dl{i}.example.test")).collect();
    for n in &names {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
    }
    for n in &names {
        server.wait_ready(n, 120).await;
    }
    let log = server.log();
    assert!(
        !log.contains("deadlock detected"),
        "issuance hit a deadlock on PostgreSQL:\n{}",
        log.lines()
            .filter(|l| l.contains("deadlock"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The server's connections end with it; their counters are flushed.
    drop(server);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-tAc",
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "PostgreSQL counted deadlocks in the issuance database"
    );
}

/// On PostgreSQL a replica with a stable name (`[worker] replica_id`, the
/// pod name on Kubernetes) takes back at start the leases of its previous
/// run: after `kill -9` and a restart its orders in flight resume at once,
/// not after `worker.lease_seconds` (120 s here).
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_a_stable_name_resumes_its_orders_at_once_after_a_restart() {
    let Some(base) = pg_url_or_skip("a_replica_with_a_stable_name_resumes_its_orders") else {
        return;
    };
    let cas = TwoCas::start(0).await;
    let url = fresh_pg_database(&base).await;
    let mut opts = ServerOptions::new(url);
    opts.lease_seconds = 120;
    opts.env = vec![
        ("TWINCERT_FAILPOINT".into(), "after_order_url".into()),
        (
            "TWINCERT_WORKER_REPLICA_ID".into(),
            "twincert-worker-0".into(),
        ),
    ];
    let mut server = Server::start(&cas, opts).await;
    let (status, body) = server.create(json!({"name": "p.example.test"})).await;
    assert_eq!(status, 201, "{body}");
    server
        .wait_for("p.example.test", 30, |v| {
            v["primary"]["order"]["acme_orders"] == 1 && v["backup"]["order"]["acme_orders"] == 1
        })
        .await;
    let restarted = Instant::now();
    // SIGKILL, then the same replica name without the failpoint.
    server
        .restart(vec![(
            "TWINCERT_WORKER_REPLICA_ID".into(),
            "twincert-worker-0".into(),
        )])
        .await;
    server.wait_ready("p.example.test", 20).await;
    let resumed = restarted.elapsed();
    println!("restart to both certificates on PostgreSQL: {resumed:?}");
    assert!(
        resumed < Duration::from_secs(10),
        "resumed after {resumed:?}: the previous run's leases were waited out"
    );
    assert!(server.log().contains("previous run resume now"));
}

/// Issue 21: `twincert bench scale` runs every part (idle process, API,
/// CA-wide swap, deployment wave, revocation passes) on one PostgreSQL
/// store at a small size and prints a figure for each row of its table.
/// A smoke test of the benchmark, not a timing: no figure is compared
/// with its target here.
#[tokio::test(flavor = "multi_thread")]
async fn the_scale_benchmark_runs_every_part_on_postgres() {
    let Some(base) = pg_url_or_skip("the_scale_benchmark_runs_every_part_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
            .args([
                "bench",
                "scale",
                "--names",
                "300",
                "--wave",
                "40",
                "--revocation-names",
                "200",
                "--settle-seconds",
                "1",
                "--store-url",
                &url,
                "-o",
                "json",
            ])
            .output()
            .expect("run the benchmark")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON figures");
    assert_eq!(v["backend"], "postgres", "{v:#}");
    assert_eq!(v["swap"]["swapped"], 300, "{v:#}");
    assert_eq!(v["deploy"]["swapped"], 40, "{v:#}");
    assert_eq!(v["deploy"]["confirmed_after_swap"], 40, "{v:#}");
    assert_eq!(v["revocation"]["certificates"], 400, "{v:#}");
    assert!(v["idle"]["get_name_p99_ms"].as_f64().is_some(), "{v:#}");
    assert!(v["idle"]["list_page_seconds"].as_f64().is_some(), "{v:#}");
    // The scrape is timed only once the counts controller stored a set.
    assert!(v["idle"]["first_count_seconds"].as_f64().is_some(), "{v:#}");
    let table = v["table"].as_array().expect("table");
    assert_eq!(table.len(), 11, "{v:#}");
    for row in table {
        assert!(
            row["figure"].as_str().is_some_and(|f| f != "-"),
            "every row has a figure: {row}"
        );
    }
}
