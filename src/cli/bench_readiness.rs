//! `twincert bench readiness`: how long one emergency readiness
//! computation takes over N names. It seeds N synthetic names (two valid
//! certificates each, every name active on one CA, its standby on the
//! other, so every name is safe and no sample is drawn), then times the
//! computation the readiness controller runs.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use super::Output;
use super::bench::{round, with_scratch};
use crate::domain::KeyType;
use crate::policy::CaChoice;
use crate::store::Store;

const CA_A: &str = "bench-a";
const CA_B: &str = "bench-b";

/// Options of `bench readiness`.
#[derive(Debug, clap::Args)]
pub(super) struct ReadinessBench {
    /// How many synthetic names.
    #[arg(long, default_value_t = 100_000)]
    names: u64,
    /// The store: default a new SQLite file in the temp directory;
    /// `postgres://…` to measure against PostgreSQL (rows removed after).
    #[arg(long)]
    store_url: Option<String>,
    /// Computations to time (the first one also warms the caches).
    #[arg(long, default_value_t = 3)]
    runs: u32,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn readiness(opts: ReadinessBench, output: Output) -> anyhow::Result<()> {
    if opts.names == 0 || opts.runs == 0 {
        bail!("--names and --runs must be at least 1");
    }
    let given = opts.store_url.clone();
    with_scratch(
        "readiness",
        given.as_deref(),
        output,
        |url, _dir| async move { run(&opts, &url).await },
    )
    .await
}

async fn run(opts: &ReadinessBench, url: &str) -> anyhow::Result<serde_json::Value> {
    let store = Store::connect(url).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let now = clock.now();
    let prefix = format!("r{}-", &crate::store::new_id()[..8]);
    let t = Instant::now();
    store
        .seed_synthetic(&prefix, opts.names, CA_A, CA_B, now)
        .await
        .context("seeding synthetic names")?;
    let seed_s = t.elapsed().as_secs_f64();
    let cas = [(CA_A, "bench-group-a"), (CA_B, "bench-group-b")]
        .iter()
        .map(|(id, group)| CaChoice {
            id: (*id).into(),
            root_group: (*group).into(),
            key_types: vec![KeyType::EcdsaP256],
            distrusted: false,
        })
        .collect::<Vec<_>>();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..opts.runs {
        let t = Instant::now();
        let r = crate::worker::readiness_once(
            &store,
            cas.clone(),
            crate::config::ReadinessConfig::default(),
            clock.clone(),
        )
        .await
        .context("computing readiness")?;
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let purge = if url.starts_with("sqlite:") {
        Ok(())
    } else {
        store.purge_synthetic(&prefix).await
    };
    purge.context("removing the synthetic names")?;
    let r = last.unwrap_or_default();
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(json!({
        "names": opts.names,
        "backend": store.backend_name(),
        "seed_seconds": round(seed_s),
        "readiness_seconds": times.iter().map(|t| round(*t)).collect::<Vec<_>>(),
        "best_seconds": round(best),
        "names_per_second": round(opts.names as f64 / best.max(1e-9)),
        "report_names": r.names,
        "report_safe": r.safe,
    }))
}
