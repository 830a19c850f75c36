//! `twincert bench console`: how long the operator console's pages take at
//! scale. It seeds N synthetic names (two certificates each) into a store
//! (a fresh SQLite file by default), serves the API with the console on a
//! loopback port in this process, signs a session in through the store,
//! and times each page over HTTP (server render time plus a loopback
//! round trip): the overview (before any counts are stored, and from the
//! stored counts), the names list (first page, the next page, a page from
//! the middle by keyset, each filter — a common state, rare states, a
//! rare CA, a rare challenge, preflight findings, a prefix), one name's
//! page and the audit log filtered by actor and by name. A few names of
//! each rare kind are seeded spread over the key space
//! (`Store::seed_console_rarities`), so a filter that walked the names
//! in key order would have to walk them all. The `counts` controller's
//! pass (`Store::recount` + `save_counts`, which the overview reads) is
//! timed on its own: it runs in the worker, never in a request.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use super::Output;
use super::bench::{round, with_scratch};
use crate::api::{self, ApiState};
use crate::clock::{Clock, SystemClock};
use crate::domain::{KeyType, Role};
use crate::store::{EXPIRY_SERIES, NamePageFilter, SessionRecord, Store};

/// The CA ids the synthetic names use.
const CA_A: &str = "bench-a";
const CA_B: &str = "bench-b";
/// The CA a few names have their standby on (the rare-CA filter).
const CA_RARE: &str = "bench-c";
/// Names of each rare kind.
const RARE: u64 = 10;

/// Options of `bench console`.
#[derive(Debug, clap::Args)]
pub(super) struct ConsoleBench {
    /// How many synthetic names (each with a primary and a backup).
    #[arg(long, default_value_t = 100_000)]
    names: u64,
    /// The store: default a new SQLite file in the temp directory;
    /// `postgres://…` to measure PostgreSQL (its rows are removed after).
    #[arg(long)]
    store_url: Option<String>,
    /// Requests per page (the median and the slowest are reported).
    #[arg(long, default_value_t = 5)]
    repeat: u32,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn console(opts: ConsoleBench, output: Output) -> anyhow::Result<()> {
    if opts.names == 0 || opts.repeat == 0 {
        bail!("--names and --repeat must be at least 1");
    }
    let given = opts.store_url.clone();
    with_scratch(
        "console",
        given.as_deref(),
        output,
        |url, _dir| async move { run(&opts, &url).await },
    )
    .await
}

fn state(store: Store) -> ApiState {
    let ca = |id: &str| crate::policy::CaChoice {
        id: id.into(),
        root_group: id.into(),
        key_types: vec![KeyType::EcdsaP256],
        distrusted: false,
    };
    let view = |id: &str| api::CaView {
        id: id.into(),
        name: id.into(),
        profile: "pebble".into(),
        directory_url: "https://127.0.0.1:1/dir".into(),
        root_group: id.into(),
        staging: true,
        distrusted: false,
        active_names: 0,
        slots: 0,
        orders_per_hour: 0,
        concurrency: 1,
        dns_persist_01: false,
        dns_persist_until: None,
        caa_identities: Vec::new(),
    };
    ApiState {
        store,
        clock: Arc::new(SystemClock),
        cas: Arc::new(vec![ca(CA_A), ca(CA_B), ca(CA_RARE)]),
        ca_views: Arc::new(vec![view(CA_A), view(CA_B), view(CA_RARE)]),
        same_ca_hold_off: 3600,
        admin_token_sha256: api::token_digest(&crate::store::new_id()),
        default_key_type: KeyType::EcdsaP256,
        max_body_bytes: 64 * 1024,
        request_timeout_seconds: 60,
        allow_cidrs: Vec::new(),
        dns01_available: false,
        dns: api::DelegationPolicy::default(),
        sealer: None,
        wake_worker: None,
        allow_drill_simulation: false,
        destinations: Arc::new(Vec::new()),
        acme_requests: Arc::new(Vec::new),
        preflight: None,
        acme_profiles_offered: Arc::new(Default::default()),
    }
}

async fn run(opts: &ConsoleBench, url: &str) -> anyhow::Result<serde_json::Value> {
    let store = Store::connect(url).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let now = SystemClock.now();
    let prefix = format!("c{}-", &crate::store::new_id()[..8]);
    let t = Instant::now();
    store
        .seed_synthetic(&prefix, opts.names, CA_A, CA_B, now)
        .await
        .context("seeding synthetic names")?;
    store
        .seed_console_rarities(&prefix, opts.names, RARE, CA_RARE, now)
        .await
        .context("seeding the rare names")?;
    let seed_s = t.elapsed().as_secs_f64();
    if url.starts_with("sqlite:") {
        store.emergency().checkpoint().await.context("checkpoint")?;
    }
    let measured = measure(opts, &store, &prefix).await;
    let purge = if url.starts_with("sqlite:") {
        Ok(())
    } else {
        store.purge_synthetic(&prefix).await
    };
    let mut out = measured?;
    purge.context("removing the synthetic names")?;
    out["backend"] = json!(store.backend_name());
    out["names"] = json!(opts.names);
    out["seed_seconds"] = json!(round(seed_s));
    Ok(out)
}

async fn measure(
    opts: &ConsoleBench,
    store: &Store,
    prefix: &str,
) -> anyhow::Result<serde_json::Value> {
    // A session, as a sign-in would store it.
    let secret = crate::store::new_id();
    let now = SystemClock.now();
    store
        .console()
        .create_session(
            &crate::keys::hex(&api::token_digest(&secret)),
            &SessionRecord {
                actor: "bench".into(),
                role: Role::Viewer,
                csrf: crate::store::new_id(),
                created_at: now,
                last_seen_at: now,
            },
            now - 3600,
            now - 3600,
        )
        .await?;
    let router = api::app_with_console(
        state(store.clone()),
        api::console::ConsoleSettings {
            idle_seconds: 3600,
            absolute_seconds: 3600,
            tls: false,
            oidc: None,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = format!("twincert_session={secret}");
    let get = async |path: &str| -> anyhow::Result<(f64, usize)> {
        let t = Instant::now();
        let rsp = http
            .get(format!("http://{addr}{path}"))
            .header("Cookie", &cookie)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = rsp.status();
        let body = rsp.text().await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !status.is_success() {
            bail!(
                "GET {path}: {status}: {}",
                body.chars().take(300).collect::<String>()
            );
        }
        Ok((ms, body.len()))
    };
    let times = async |path: &str| -> anyhow::Result<serde_json::Value> {
        let mut ms = Vec::new();
        for _ in 0..opts.repeat {
            ms.push(get(path).await?.0);
        }
        ms.sort_by(f64::total_cmp);
        Ok(json!({
            "median_ms": (ms[ms.len() / 2] * 10.0).round() / 10.0,
            "max_ms": (ms[ms.len() - 1] * 10.0).round() / 10.0,
        }))
    };
    // Before the counts controller stored a set, the overview says so.
    let overview_uncounted = times("/ui/").await?;
    // The counts controller's pass, as the worker runs it.
    let t = Instant::now();
    let counts = store.recount(now, EXPIRY_SERIES).await?;
    store.metrics().save_counts(&counts).await?;
    let counts_s = t.elapsed().as_secs_f64();
    // Names are `<prefix><i>.synthetic.test`.
    let stem = format!("{prefix}{}", opts.names / 2);
    let middle = format!("{stem}.synthetic.test");
    // The first page's last name: where "next page" starts.
    let first = store
        .console()
        .names_page(&NamePageFilter::default(), None, 50)
        .await?;
    let after_first = first.names.last().map(|r| r.id.clone()).unwrap_or_default();
    let mut out = json!({
        "counts_pass_seconds": round(counts_s),
        "overview_before_counts": overview_uncounted,
        "overview": times("/ui/").await?,
        "names_first_page": times("/ui/names").await?,
        "names_next_page": times(&format!("/ui/names?after={after_first}")).await?,
        "names_page_from_the_middle": times(&format!("/ui/names?after={middle}")).await?,
        "names_state_ready": times("/ui/names?state=ready").await?,
        "names_state_degraded_rare": times("/ui/names?state=degraded").await?,
        "names_state_waiting_none": times("/ui/names?state=waiting").await?,
        "names_state_provisioning_none": times("/ui/names?state=provisioning").await?,
        "names_ca_common": times(&format!("/ui/names?ca={CA_A}")).await?,
        "names_ca_rare": times(&format!("/ui/names?ca={CA_RARE}")).await?,
        "names_challenge_dns01_rare": times("/ui/names?challenge=dns-01").await?,
        "names_with_findings_rare": times("/ui/names?findings=yes").await?,
        "names_ca_rare_and_state_ready": times(&format!("/ui/names?ca={CA_RARE}&state=ready")).await?,
        "names_prefix_search": times(&format!("/ui/names?q={stem}")).await?,
        "name_detail": times(&format!("/ui/names/{middle}")).await?,
        "audit_first_page": times("/ui/audit").await?,
        "audit_by_actor_rare": times("/ui/audit?actor=bench-rare").await?,
        "audit_by_name": times(&format!("/ui/audit?name={middle}")).await?,
    });
    // How many rows each rare filter found (all of them, on one page).
    let found = async |path: &str| -> anyhow::Result<usize> {
        let rsp = http
            .get(format!("http://{addr}{path}"))
            .header("Cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        Ok(rsp.matches("data-testid=\"name-row\"").count())
    };
    out["rare_rows_found"] = json!({
        "state_degraded": found("/ui/names?state=degraded").await?,
        "ca_rare": found(&format!("/ui/names?ca={CA_RARE}")).await?,
        "challenge_dns01": found("/ui/names?challenge=dns-01").await?,
        "findings": found("/ui/names?findings=yes").await?,
        "seeded_each": RARE,
    });
    server.abort();
    Ok(out)
}
