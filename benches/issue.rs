//! Issuance throughput: a bare instant-acme loop against twincert end to
//! end, both against the same two local Pebble CAs (loopback only).
//!
//! ```text
//! cargo bench --bench issue -- --names N --concurrency C [--store-url postgres://…/empty_db]
//! ```
//!
//! Each run issues 2N certificates (a primary from CA a and a backup from
//! CA b for each of N names, two SANs each) with C orders in flight:
//!
//! * **bare instant-acme loop** — one account per CA, a TCP_NODELAY hyper
//!   client as twincert builds it, new_order → HTTP-01 from an in-memory map
//!   → set_ready → poll_ready → P-256 key + CSR → finalize_csr →
//!   poll_certificate. The floor: what ACME itself costs on this machine.
//! * **twincert** — the real library in process: SQLite store, sealed keys,
//!   the worker with `concurrency = C`, and its store-backed HTTP-01
//!   responder. Timed from the first `create_name` until every slot of every
//!   name has a certificate.
//!
//! Both warm up with one name (accounts exist, connections are open) before
//! the clock starts; both CAs are restarted (emptied) between the runs.
//!
//! Pebble 2.4.0 sometimes deadlocks under this load (at `--names 200
//! --concurrency 32`, in about a third of the runs here): a goroutine dump
//! showed new-order's authorization scan (`FindValidAuthorization`) holding
//! its in-memory store's read lock while waiting on a per-object lock, a
//! finalization (`CompleteOrder` -> `AddCertificate`) waiting for the write
//! lock, and every other handler queued behind it; no request to that CA
//! returns again. A run that stops making progress fails after
//! [`STALL_TIMEOUT`] instead of hanging; run it again.
//!
//! Set `TWINCERT_LOG` (a tracing filter such as `twincert=debug`) to see the
//! worker's log.

#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use harness::TwoCas;
use twincert::ca::CaClient;
use twincert::clock::{Clock, SystemClock};
use twincert::config::Config;
use twincert::domain::{CaId, ChallengeKind, DnsName, KeyType, ManagedNameId};
use twincert::keys::seal::Sealer;
use twincert::store::{NewName, Store};
use twincert::worker::Supervisor;

/// lego 4.9.1 against the same Pebble pair (TESTENV.md): ~6 s per cert.
const LEGO_MS_PER_CERT: f64 = 6000.0;
/// Longest a run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Give up when one bare certificate, or the twincert run as a whole, made
/// no progress for this long (longer than twincert's 120 s lease, so a
/// stuck order could have been picked up again).
const STALL_TIMEOUT: Duration = Duration::from_secs(180);

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Args {
    names: usize,
    concurrency: usize,
    /// `--challenge dns-01`: twincert over DNS-01 (RFC 2136 on the test
    /// BIND) beside lego's rfc2136 provider, instead of the HTTP-01 runs.
    dns01: bool,
    /// `--swap-names 10000,100000,1000000`: after the HTTP-01 runs, time
    /// `twincert bench swap` at these sizes and set them beside re-issuing
    /// that many names at the rate just measured.
    swap_names: Vec<u64>,
}

/// `--store-url postgres://…`: the store of twincert's run (an empty
/// database), instead of a new SQLite file — to compare the backends.
static STORE_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn parse_args() -> Args {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and then a small smoke run is enough to prove the
    // benchmark still works.
    let benching = std::env::args().any(|a| a == "--bench");
    let mut args = if benching {
        Args {
            names: 100,
            concurrency: 16,
            dns01: false,
            swap_names: Vec::new(),
        }
    } else {
        Args {
            names: 3,
            concurrency: 2,
            dns01: false,
            // The smoke run proves the swap comparison still works too.
            swap_names: vec![1000],
        }
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if flag == "--challenge" {
            let value = inline.or_else(|| it.next()).unwrap_or_default();
            match value.as_str() {
                "dns-01" => args.dns01 = true,
                "http-01" => args.dns01 = false,
                other => panic!("--challenge {other}: expected http-01 or dns-01"),
            }
            continue;
        }
        if flag == "--store-url" {
            let value = inline
                .or_else(|| it.next())
                .unwrap_or_else(|| panic!("--store-url needs a value"));
            let _ = STORE_URL.set(value);
            continue;
        }
        if flag == "--swap-names" {
            let value = inline.or_else(|| it.next()).unwrap_or_default();
            args.swap_names = value
                .split(',')
                .map(|n| {
                    n.trim().parse().unwrap_or_else(|_| {
                        panic!("--swap-names {value}: expected sizes like 10000,100000")
                    })
                })
                .collect();
            continue;
        }
        let target = match flag.as_str() {
            "--names" => &mut args.names,
            "--concurrency" => &mut args.concurrency,
            // `--bench` (passed by cargo) and anything else: not ours.
            _ => continue,
        };
        let value = inline
            .or_else(|| it.next())
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        *target = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{flag} {value}: expected a positive integer"));
    }
    args
}

/// CPU time (user + system) this process has used so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One timed run.
struct Measured {
    label: &'static str,
    certs: usize,
    elapsed: Duration,
    /// CPU time of this process during the run (client side, bench included).
    cpu: Duration,
}

impl Measured {
    fn ms_per_cert(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0 / self.certs as f64
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    harness::install_crypto_provider();
    if let Ok(filter) = std::env::var("TWINCERT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args = parse_args();
    println!(
        "issue bench: {} names x 2 CAs = {} certificates per run, concurrency {}",
        args.names,
        2 * args.names,
        args.concurrency
    );
    let mut cas = TwoCas::start(0).await;
    if args.dns01 {
        return dns01_bench(&cas, args.names, args.concurrency).await;
    }
    println!(
        "pebble a: {}  pebble b: {}  http-01 port: {}",
        cas.a.directory_url(),
        cas.b.directory_url(),
        cas.http01_port
    );

    let bare = bare_loop(&cas, args.names, args.concurrency)
        .await
        .unwrap_or_else(|e| panic!("bare instant-acme loop failed: {e}"));
    // Fresh CAs for the second run: Pebble's new-order scans every stored
    // authorization, so (b) would otherwise pay for (a)'s leftovers.
    tokio::join!(cas.a.restart(), cas.b.restart());
    let tc = twincert_run(&cas, args.names, args.concurrency)
        .await
        .unwrap_or_else(|e| panic!("twincert run failed: {e}"));

    println!();
    println!(
        "{:<30} {:>6} {:>9} {:>9} {:>9}",
        "run", "certs", "seconds", "certs/s", "ms/cert"
    );
    for m in [&bare, &tc] {
        println!(
            "{:<30} {:>6} {:>9.3} {:>9.1} {:>9.2}",
            m.label,
            m.certs,
            m.elapsed.as_secs_f64(),
            m.certs as f64 / m.elapsed.as_secs_f64(),
            m.ms_per_cert()
        );
    }
    for m in [&bare, &tc] {
        println!(
            "client CPU (this process): {:.2} ms/cert ({})",
            m.cpu.as_secs_f64() * 1000.0 / m.certs as f64,
            m.label
        );
    }
    println!(
        "twincert / bare per-cert cost: {:.2}x",
        tc.ms_per_cert() / bare.ms_per_cert()
    );
    for m in [&bare, &tc] {
        println!(
            "vs lego (~6 s/cert measured on this Pebble pair, TESTENV.md): {:.0}x faster ({})",
            LEGO_MS_PER_CERT / m.ms_per_cert(),
            m.label
        );
    }
    if !args.swap_names.is_empty() {
        swap_beside_reissue(&args.swap_names, tc.ms_per_cert());
    }
}

/// Runs `twincert bench swap` (SQLite, and PostgreSQL when
/// `TWINCERT_TEST_PG_URL` is set) for each size and prints it beside the
/// time re-issuing one certificate per name would take at `ms_per_cert`
/// (measured above against Pebble).
fn swap_beside_reissue(sizes: &[u64], ms_per_cert: f64) {
    let mut stores = vec![None];
    if let Ok(pg) = std::env::var("TWINCERT_TEST_PG_URL") {
        stores.push(Some(pg));
    }
    println!();
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>14} {:>9}",
        "store", "names", "dry run s", "swap s", "re-issue s", "speedup"
    );
    for store in &stores {
        for n in sizes {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"));
            cmd.args(["bench", "swap", "--names", &n.to_string(), "-o", "json"])
                .args(["--reissue-ms-per-cert", &format!("{ms_per_cert:.3}")]);
            if let Some(url) = store {
                cmd.args(["--store-url", url]);
            }
            let out = cmd.output().expect("run twincert bench swap");
            assert!(
                out.status.success(),
                "twincert bench swap failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("bench swap JSON");
            assert_eq!(v["swapped"], *n, "{v}");
            println!(
                "{:<10} {:>9} {:>10.3} {:>10.3} {:>14.1} {:>8.0}x",
                v["backend"].as_str().unwrap_or("?"),
                n,
                v["dry_run_seconds"].as_f64().unwrap_or(f64::NAN),
                v["swap_seconds"].as_f64().unwrap_or(f64::NAN),
                v["reissue_seconds_extrapolated"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                v["swap_speedup"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP-01 responders
// ---------------------------------------------------------------------------

/// Serves `router` on the shared HTTP-01 port until the returned sender is
/// fired.
async fn serve_http01(
    port: u16,
    router: Router,
) -> AnyResult<(watch::Sender<bool>, JoinHandle<std::io::Result<()>>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).await?;
    let (tx, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    Ok((tx, task))
}

async fn stop_http01(tx: watch::Sender<bool>, task: JoinHandle<std::io::Result<()>>) {
    let _ = tx.send(true);
    let abort = task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

type Tokens = Arc<RwLock<HashMap<String, String>>>;

async fn answer_from_map(State(tokens): State<Tokens>, Path(token): Path<String>) -> Response {
    let found = tokens
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&token)
        .cloned();
    match found {
        Some(ka) => ka.into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

// ---------------------------------------------------------------------------
// (a) bare instant-acme loop
// ---------------------------------------------------------------------------

/// instant-acme's HTTP client as twincert's `src/ca/http.rs` builds it:
/// TCP_NODELAY, only the local CA trusted.
fn acme_http(ca_pem: &str) -> AnyResult<Box<dyn instant_acme::HttpClient>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client: HyperClient<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

/// Same schedule as twincert's `CaClient` (`src/ca/mod.rs`).
fn poll_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(15))
        .backoff(1.6)
        .timeout(Duration::from_secs(60))
}

async fn new_account(ca_pem: &str, directory_url: String) -> AnyResult<Account> {
    let (account, _creds) = Account::builder_with_http(acme_http(ca_pem)?)
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url,
            None,
        )
        .await?;
    Ok(account)
}

/// One certificate for `domains` from `account`, the plain way.
async fn issue_bare(
    account: &Account,
    domains: &[String],
    tokens: &Tokens,
    policy: &RetryPolicy,
) -> AnyResult<String> {
    let ids: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or("no http-01 challenge offered")?;
        let key_authorization = challenge.key_authorization().as_str().to_owned();
        tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(challenge.token.clone(), key_authorization);
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(policy).await?;
    if status != OrderStatus::Ready {
        return Err(format!("order for {domains:?} ended {status:?}").into());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    Ok(order.poll_certificate(policy).await?)
}

async fn bare_loop(cas: &TwoCas, n: usize, concurrency: usize) -> AnyResult<Measured> {
    println!("\n(a) bare instant-acme loop");
    let tokens: Tokens = Arc::default();
    let router = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer_from_map))
        .with_state(tokens.clone());
    let (stop, server) = serve_http01(cas.http01_port, router).await?;

    let (a, b) = tokio::join!(
        new_account(&cas.tls.ca_pem, cas.a.directory_url()),
        new_account(&cas.tls.ca_pem, cas.b.directory_url()),
    );
    let accounts = Arc::new([a?, b?]);
    let policy = poll_policy();

    // Warm-up: one name from both CAs.
    let warm = vec![
        "bare-warm.example.test".to_string(),
        "www-bare-warm.example.test".to_string(),
    ];
    let t = Instant::now();
    for account in accounts.iter() {
        issue_bare(account, &warm, &tokens, &policy).await?;
    }
    println!("  warm-up: 2 certificates in {:?}", t.elapsed());

    // Jobs: (name i, CA a), (name i, CA b), ... pulled by C tasks.
    let total = 2 * n;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let cpu_start = process_cpu();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.min(total) {
        let (next, accounts, tokens) = (next.clone(), accounts.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= total {
                    return Ok::<usize, String>(done);
                }
                let (i, ca) = (job / 2, job % 2);
                let domains = vec![
                    format!("bare{i}.example.test"),
                    format!("www-bare{i}.example.test"),
                ];
                let issued = tokio::time::timeout(
                    STALL_TIMEOUT,
                    issue_bare(&accounts[ca], &domains, &tokens, &policy),
                )
                .await
                .map_err(|_| {
                    format!(
                        "{domains:?} from CA {ca}: no answer for {STALL_TIMEOUT:?} \
                         (Pebble 2.4.0 can deadlock under concurrent load; see the module docs)"
                    )
                })?;
                issued.map_err(|e| format!("{domains:?} from CA {ca}: {e}"))?;
                done += 1;
            }
        }));
    }
    let mut issued = 0;
    for task in tasks {
        issued += tokio::time::timeout(RUN_TIMEOUT, task).await???;
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_start);
    stop_http01(stop, server).await;
    println!("  {issued} certificates in {elapsed:?}");
    Ok(Measured {
        label: "bare instant-acme loop",
        certs: issued,
        elapsed,
        cpu,
    })
}

// ---------------------------------------------------------------------------
// (b) twincert end to end
// ---------------------------------------------------------------------------

fn twincert_config(cas: &TwoCas, store_url: &str, concurrency: usize) -> String {
    format!(
        r#"
[server]
api_listen = "127.0.0.1:{api}"
http01_listen = "127.0.0.1:{http01}"

[store]
url = "{store_url}"

[worker]
concurrency = {concurrency}
poll_interval_ms = 20
lease_seconds = 120
min_backoff_seconds = 1
max_backoff_seconds = 2
acme_timeout_seconds = 60

[policy]
ca_preference = ["pebble-a", "pebble-b"]

[[cas]]
id = "pebble-a"
profile = "pebble"
directory_url = "{a}"
trust_roots_file = "{roots}"
root_group = "pebble-a"

[[cas]]
id = "pebble-b"
profile = "pebble"
directory_url = "{b}"
trust_roots_file = "{roots}"
root_group = "pebble-b"

[dns]
resolver = "127.0.0.1:{dns}"
authoritative_port = {dns}
propagation_timeout_seconds = 30
propagation_interval_ms = 20

[[dns_providers]]
id = "bind"
kind = "rfc2136"
server = "127.0.0.1:{dns}"
zones = ["{zone}"]
tsig_key_name = "{key}"
tsig_secret = "{secret}"
"#,
        dns = cas.dns.port(),
        zone = cas.dns.zone(),
        key = cas.dns.tsig_key_name(),
        secret = cas.dns.tsig_secret_b64(),
        api = harness::free_port(),
        http01 = cas.http01_port,
        a = cas.a.directory_url(),
        b = cas.b.directory_url(),
        roots = cas.tls.ca_pem_path.display(),
    )
}

fn new_name(id: &str, challenge: ChallengeKind) -> NewName {
    let domain = |d: &str| DnsName::parse(d).expect("bench domain");
    NewName {
        id: ManagedNameId::parse(id).expect("bench name id"),
        domains: vec![domain(id), domain(&format!("www-{id}"))],
        challenge,
        key_type: KeyType::EcdsaP256,
        primary_ca: CaId("pebble-a".into()),
        backup_ca: CaId("pebble-b".into()),
        dns_provider: None,
        acme_profiles: Default::default(),
    }
}

/// Progress of the names whose id starts with `prefix`: certificates in
/// their slots, and (for a stalled run's message) the open orders by state
/// and the slot errors seen.
struct Progress {
    certs: usize,
    open_orders: BTreeMap<String, usize>,
    errors: Vec<String>,
}

async fn progress(store: &Store, prefix: &str) -> AnyResult<Progress> {
    let names = store
        .names()
        .list_names(1000, None, twincert::store::NameFilter::default())
        .await?;
    let mut p = Progress {
        certs: 0,
        open_orders: BTreeMap::new(),
        errors: Vec::new(),
    };
    for name in names.iter().filter(|n| n.id.starts_with(prefix)) {
        for slot in &name.slots {
            if slot.cert.is_some() {
                p.certs += 1;
            }
            if let Some(o) = &slot.order {
                let key = format!("{:?} (attempts {})", o.state, o.attempts);
                *p.open_orders.entry(key).or_default() += 1;
            }
            if let Some(e) = &slot.last_error {
                p.errors.push(format!("{} {:?}: {e}", name.id, slot.slot));
            }
        }
    }
    Ok(p)
}

/// Polls the store every 20 ms until `want` certificates exist under
/// `prefix`; fails when no new certificate appeared for [`STALL_TIMEOUT`].
async fn wait_for_certs(store: &Store, prefix: &str, want: usize) -> AnyResult<()> {
    let mut last = (0, Instant::now());
    loop {
        let p = progress(store, prefix).await?;
        if p.certs >= want {
            return Ok(());
        }
        if p.certs > last.0 {
            last = (p.certs, Instant::now());
        } else if last.1.elapsed() > STALL_TIMEOUT {
            return Err(format!(
                "stalled: {} of {want} certificates, none new for {STALL_TIMEOUT:?}; \
                 open orders: {:?}; {} slot errors, the first: {:?} \
                 (Pebble 2.4.0 can deadlock under concurrent load; see the module docs)",
                p.certs,
                p.open_orders,
                p.errors.len(),
                &p.errors[..p.errors.len().min(3)]
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn twincert_run(cas: &TwoCas, n: usize, concurrency: usize) -> AnyResult<Measured> {
    twincert_run_with(cas, n, concurrency, ChallengeKind::Http01).await
}

async fn twincert_run_with(
    cas: &TwoCas,
    n: usize,
    concurrency: usize,
    challenge: ChallengeKind,
) -> AnyResult<Measured> {
    println!(
        "\n(b) twincert (store + seal + worker), {}",
        challenge.as_str()
    );
    let dir = tempfile::Builder::new()
        .prefix("twincert-bench-")
        .tempdir()?;
    let store_url = STORE_URL
        .get()
        .cloned()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()));
    println!(
        "  store: {}",
        store_url.split('@').next_back().unwrap_or("?")
    );
    let cfg = Config::from_toml(&twincert_config(cas, &store_url, concurrency), &[], None)?;
    let store = Store::connect(&cfg.store_url).await?;
    store.migrate().await?;

    let timeout = Duration::from_secs(cfg.worker.acme_timeout_seconds);
    let ca_clients: BTreeMap<String, Arc<CaClient>> = cfg
        .cas
        .values()
        .map(|c| (c.id.clone(), Arc::new(CaClient::new(c.clone(), timeout))))
        .collect();
    let sealer = Sealer::from_text(&Sealer::generate_text("bench")?)?;
    let clock = SystemClock;
    let mut providers: Vec<Arc<dyn twincert::providers::dns::DnsProvider>> = Vec::new();
    for p in cfg.dns_providers.values() {
        providers.push(twincert::providers::dns::build(p)?);
    }
    let worker = Arc::new(
        Supervisor::builder(
            store.clone(),
            ca_clients,
            Arc::new(sealer),
            Arc::new(clock),
            cfg.worker.clone(),
            cfg.renew_at_fraction,
            "bench".into(),
        )
        .with_dns01(Arc::new(twincert::validation::dns::Dns01Solver::new(
            providers,
            twincert::validation::dns::DnsLookup::new(cfg.dns.clone()),
        )))
        .build(),
    );

    let (stop, server) = serve_http01(
        cas.http01_port,
        twincert::validation::http01_router(worker.http01_answers()),
    )
    .await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let worker_task = tokio::spawn(worker.clone().run(shutdown_rx));

    // Warm-up: one name (accounts are created and stored here).
    let t = Instant::now();
    store
        .names()
        .create_name(
            &new_name("warm.example.test", challenge),
            "bench",
            clock.now(),
        )
        .await?;
    worker.wake();
    wait_for_certs(&store, "warm.", 2).await?;
    println!("  warm-up: 2 certificates in {:?}", t.elapsed());

    let start = Instant::now();
    let cpu_start = process_cpu();
    for i in 0..n {
        store
            .names()
            .create_name(
                &new_name(&format!("b{i}.example.test"), challenge),
                "bench",
                clock.now(),
            )
            .await?;
    }
    let created = start.elapsed();
    worker.wake();
    let result = wait_for_certs(&store, "b", 2 * n).await;
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_start);

    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), worker_task).await;
    stop_http01(stop, server).await;
    result?;
    println!(
        "  {} certificates in {elapsed:?} (creating the {n} names took {created:?})",
        2 * n
    );
    Ok(Measured {
        label: "twincert (store+seal+worker)",
        certs: 2 * n,
        elapsed,
        cpu,
    })
}

/// `--challenge dns-01`: twincert's DNS-01 throughput, then lego's rfc2136
/// provider issuing one certificate per name, one after another, against
/// the same Pebble and BIND (lego is a one-shot CLI: one process, one
/// certificate). lego runs only if it is on PATH.
async fn dns01_bench(cas: &TwoCas, n: usize, concurrency: usize) {
    let tc = twincert_run_with(cas, n, concurrency, ChallengeKind::Dns01)
        .await
        .unwrap_or_else(|e| panic!("twincert DNS-01 run failed: {e}"));
    println!(
        "\ntwincert dns-01: {} certificates in {:.3} s = {:.1} certs/s, {:.2} ms/cert",
        tc.certs,
        tc.elapsed.as_secs_f64(),
        tc.certs as f64 / tc.elapsed.as_secs_f64(),
        tc.ms_per_cert()
    );
    let lego_names = n.min(5);
    let has_lego = std::process::Command::new("lego")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_lego {
        println!("lego not installed (apt-get install lego): no comparison");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("twincert-lego-")
        .tempdir()
        .expect("temp dir");
    let dns = format!("127.0.0.1:{}", cas.dns.port());
    let start = Instant::now();
    let mut ok = 0;
    for i in 0..lego_names {
        let out = std::process::Command::new("lego")
            .args(["--accept-tos", "--email", "bench@example.test", "--server"])
            .arg(cas.a.directory_url())
            .arg("--path")
            .arg(dir.path())
            .args(["--domains", &format!("l{i}.example.test")])
            .args([
                "--dns",
                "rfc2136",
                "--dns.resolvers",
                &dns,
                "--dns.disable-cp",
                "run",
            ])
            .env("LEGO_CA_CERTIFICATES", &cas.tls.ca_pem_path)
            .env("RFC2136_NAMESERVER", &dns)
            .env("RFC2136_TSIG_KEY", format!("{}.", cas.dns.tsig_key_name()))
            .env("RFC2136_TSIG_SECRET", cas.dns.tsig_secret_b64())
            .env("RFC2136_TSIG_ALGORITHM", "hmac-sha256.")
            .env("RFC2136_PROPAGATION_TIMEOUT", "30")
            .env("RFC2136_POLLING_INTERVAL", "1")
            .output()
            .expect("run lego");
        if out.status.success() {
            ok += 1;
        } else {
            println!(
                "lego failed for l{i}: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            );
        }
    }
    let elapsed = start.elapsed();
    if ok == 0 {
        println!("lego issued nothing");
        return;
    }
    let lego_ms = elapsed.as_secs_f64() * 1000.0 / ok as f64;
    println!(
        "lego rfc2136 (sequential, one process per certificate): {ok} certificates in {:.3} s = {:.2} certs/s, {:.0} ms/cert",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        lego_ms
    );
    println!(
        "twincert dns-01 vs lego: {:.0}x the throughput",
        lego_ms / tc.ms_per_cert()
    );
}
