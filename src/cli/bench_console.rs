//! `twincert bench console`: how long the operator console's pages take at
//! scale. It seeds N synthetic names (two certificates each) into a store
//! (a fresh SQLite file by default), serves the API with the console on a
//! loopback port in this process, signs a session in through the store,
//! and times each page over HTTP (server render time plus a loopback
//! round trip): the overview (its first render, which waits for the count
//! pass the console starts with the server, and later renders, which use
//! the counts kept for 30 s), the names list
//! (first page, a page from the middle by keyset, filtered by state and by
//! prefix) and one name's page. The overview's count pass is timed on its
//! own too: it runs in the background once its counts are 30 s old.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use super::Output;
use super::bench::{round, with_scratch};
use crate::api::{self, ApiState};
use crate::clock::{Clock, SystemClock};
use crate::domain::{KeyType, Role};
use crate::store::{SessionRecord, Store};

/// The CA ids the synthetic names use.
const CA_A: &str = "bench-a";
const CA_B: &str = "bench-b";

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
        cas: Arc::new(vec![ca(CA_A), ca(CA_B)]),
        ca_views: Arc::new(vec![view(CA_A), view(CA_B)]),
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
    // The overview's count pass on its own, then the router, which starts
    // one at once (the first overview waits for it).
    let t = Instant::now();
    store.console().overview_counts(now, 90).await?;
    let counts_s = t.elapsed().as_secs_f64();
    let started = Instant::now();
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
    let (overview_first_ms, _) = get("/ui/").await?;
    let first_after_start_s = started.elapsed().as_secs_f64();
    // Names are `<prefix><i>.synthetic.test`.
    let stem = format!("{prefix}{}", opts.names / 2);
    let middle = format!("{stem}.synthetic.test");
    let out = json!({
        "overview_count_pass_seconds": round(counts_s),
        "overview_first_render_ms": (overview_first_ms * 10.0).round() / 10.0,
        "overview_first_shown_after_start_seconds": round(first_after_start_s),
        "overview": times("/ui/").await?,
        "names_first_page": times("/ui/names").await?,
        "names_page_from_the_middle": times(&format!("/ui/names?after={middle}")).await?,
        "names_state_ready": times("/ui/names?state=ready").await?,
        "names_prefix_search": times(&format!("/ui/names?q={stem}")).await?,
        "name_detail": times(&format!("/ui/names/{middle}")).await?,
    });
    server.abort();
    Ok(out)
}
