//! Scale-out throughput: names per second to `ready` with 1, 2, 3 …
//! `twincert serve` processes sharing one PostgreSQL, against the same two
//! local Pebble CAs (loopback only).
//!
//! ```text
//! bash scripts/test.sh --bench scale -- --bench --names 300 --workers 1,2,3 --concurrency 4
//! ```
//!
//! (`scripts/test.sh` starts the throw-away PostgreSQL and exports
//! `TWINCERT_TEST_PG_URL`; with a PostgreSQL of your own, set that and run
//! `cargo bench --bench scale -- …`.)
//!
//! For each process count: both CAs restarted empty, a fresh database, the
//! processes started (release binary; the first one answers HTTP-01 for
//! all, as one Service would in Kubernetes), one warm-up name issued
//! (accounts registered), then the clock runs from the first of N
//! `POST /v1/names` (spread over the processes) until every name is
//! `ready` (both slots hold a certificate), read from the store.
//!
//! Run by `cargo test --all-targets` (no `--bench`), it does a small smoke
//! run, and skips with a message when no PostgreSQL URL is set.

#[path = "../tests/e2e/harness.rs"]
mod harness;
#[path = "../tests/e2e/server.rs"]
mod server;

use std::time::{Duration, Instant};

use harness::{TwoCas, free_port, fresh_pg_database};
use serde_json::json;
use server::{Server, ServerOptions};
use twincert::store::Store;

/// Give up when the run made no progress for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(180);

struct Args {
    names: usize,
    workers: Vec<usize>,
    concurrency: usize,
}

fn parse_args() -> Args {
    let benching = std::env::args().any(|a| a == "--bench");
    let mut args = if benching {
        Args {
            names: 300,
            workers: vec![1, 2, 3],
            concurrency: 4,
        }
    } else {
        Args {
            names: 6,
            workers: vec![1, 2],
            concurrency: 2,
        }
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let positive = |v: &str| -> usize {
            v.trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| panic!("{flag} {v}: expected a positive integer"))
        };
        match flag.as_str() {
            "--names" => args.names = positive(&inline.or_else(|| it.next()).unwrap_or_default()),
            "--concurrency" => {
                args.concurrency = positive(&inline.or_else(|| it.next()).unwrap_or_default())
            }
            "--workers" => {
                let v = inline.or_else(|| it.next()).unwrap_or_default();
                args.workers = v.split(',').map(positive).collect();
            }
            // `--bench` (passed by cargo) and anything else: not ours.
            _ => {}
        }
    }
    args
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    harness::install_crypto_provider();
    let Some(base) = harness::pg_url() else {
        println!(
            "scale bench: TWINCERT_TEST_PG_URL not set, skipped (run it through scripts/test.sh)"
        );
        return;
    };
    let args = parse_args();
    println!(
        "scale bench: {} names (2 certificates each) per run, {} concurrent orders per process, \
         processes {:?}, one PostgreSQL",
        args.names, args.concurrency, args.workers
    );
    let mut cas = TwoCas::start(0).await;
    let mut rows = Vec::new();
    for (i, &k) in args.workers.iter().enumerate() {
        if i > 0 {
            // Pebble's new-order scans every stored authorization: each run
            // starts from empty CAs.
            tokio::join!(cas.a.restart(), cas.b.restart());
        }
        let secs = run(&cas, &base, k, &args).await;
        rows.push((k, secs));
    }
    println!();
    println!(
        "{:>9} {:>7} {:>9} {:>9} {:>9}",
        "processes", "names", "seconds", "names/s", "certs/s"
    );
    for (k, secs) in &rows {
        println!(
            "{:>9} {:>7} {:>9.2} {:>9.1} {:>9.1}",
            k,
            args.names,
            secs,
            args.names as f64 / secs,
            2.0 * args.names as f64 / secs
        );
    }
    if let Some((_, one)) = rows.first() {
        for (k, secs) in rows.iter().skip(1) {
            println!("speed-up with {k} processes: {:.2}x", one / secs);
        }
    }
}

/// One run with `k` processes; the seconds until every name is ready.
async fn run(cas: &TwoCas, base: &str, k: usize, args: &Args) -> f64 {
    let url = fresh_pg_database(base).await;
    let mut servers = Vec::new();
    for i in 0..k {
        let mut opts = ServerOptions::new(url.clone());
        opts.env = vec![
            (
                "TWINCERT_WORKER_CONCURRENCY".into(),
                args.concurrency.to_string(),
            ),
            ("TWINCERT_LOG".into(), "warn".into()),
        ];
        if i > 0 {
            opts.env.push((
                "TWINCERT_SERVER_HTTP01_LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ));
        }
        servers.push(Server::start(cas, opts).await);
    }
    let (st, body) = servers[0]
        .create(json!({"name": "warm.example.test"}))
        .await;
    assert_eq!(st, 201, "{body}");
    servers[0].wait_ready("warm.example.test", 60).await;
    let store = Store::connect(&url).await.expect("store");

    let t = Instant::now();
    for i in 0..args.names {
        let (st, body) = servers[i % k]
            .create(json!({"name": format!("s{i:05}.example.test")}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let want = args.names as f64 + 1.0;
    let mut last = (0.0, Instant::now());
    loop {
        let ready = ready_names(&store).await;
        if ready >= want {
            break;
        }
        if ready > last.0 {
            last = (ready, Instant::now());
        }
        assert!(
            last.1.elapsed() < STALL_TIMEOUT,
            "no progress for {STALL_TIMEOUT:?} at {ready} ready names (Pebble 2.4.0 can \
             deadlock under load; run again):\n{}",
            servers[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{k} process(es): {} names ready in {secs:.2} s", args.names);
    secs
}

/// Names `ready`, as `/metrics` counts them.
async fn ready_names(store: &Store) -> f64 {
    use twincert::clock::{Clock, SystemClock};
    store
        .metrics()
        .names_by_state(SystemClock.now())
        .await
        .expect("names by state")
        .into_iter()
        .find(|(k, _)| k == "ready")
        .map_or(0.0, |(_, n)| n as f64)
}
