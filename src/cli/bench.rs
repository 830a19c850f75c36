//! `twincert bench swap`: how long the emergency swap takes at scale. It
//! seeds N synthetic names (two certificates each) into a store — a fresh
//! SQLite file by default, or the database `--store-url` names — then
//! times the dry run and the real CA-wide swap through the same store
//! calls the API makes, and removes what it wrote.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use super::Output;
use crate::store::{Store, SwapScope};

/// The two CA ids the synthetic names use.
const CA_A: &str = "bench-a";
const CA_B: &str = "bench-b";

/// Options of `bench swap`.
#[derive(Debug, clap::Args)]
pub(super) struct SwapBench {
    /// How many synthetic names (each with a primary and a backup).
    #[arg(long, default_value_t = 10_000)]
    names: u64,
    /// The store: default a new SQLite file in the temp directory;
    /// `postgres://…` to measure PostgreSQL (its rows are removed after).
    #[arg(long)]
    store_url: Option<String>,
    /// Measured time to issue one certificate (e.g. from `cargo bench
    /// --bench issue`), to compare swapping with re-issuing all 2×N.
    #[arg(long)]
    reissue_ms_per_cert: Option<f64>,
    /// Leave the synthetic names in the store (with --store-url), to look
    /// at the database afterwards.
    #[arg(long, requires = "store_url")]
    keep: bool,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn swap(opts: SwapBench, output: Output) -> anyhow::Result<()> {
    print(&swap_figures(&opts).await?, output)
}

impl SwapBench {
    /// The benchmark at `names` on `store_url` (for `bench scale`).
    pub(super) fn sized(names: u64, store_url: Option<String>) -> SwapBench {
        SwapBench {
            names,
            store_url,
            reissue_ms_per_cert: None,
            keep: false,
        }
    }
}

/// Runs the benchmark and returns its figures.
pub(super) async fn swap_figures(opts: &SwapBench) -> anyhow::Result<serde_json::Value> {
    if opts.names == 0 {
        bail!("--names must be at least 1");
    }
    let (url, file) = temp_store_url("swap", opts.store_url.as_deref());
    let result = run(opts, &url).await;
    if let Some(path) = file {
        remove_sqlite(&path);
    }
    result
}

/// The store URL a benchmark uses: `given`, or a new SQLite file in the
/// temp directory (returned too, to be removed afterwards).
pub(super) fn temp_store_url(
    kind: &str,
    given: Option<&str>,
) -> (String, Option<std::path::PathBuf>) {
    match given {
        Some(u) => (u.to_string(), None),
        None => {
            let path = std::env::temp_dir().join(format!(
                "twincert-bench-{kind}-{}-{}.db",
                std::process::id(),
                crate::store::new_id()
            ));
            (format!("sqlite://{}", path.display()), Some(path))
        }
    }
}

/// Runs a benchmark `run(url, dir)` on its store (`given` or a new SQLite
/// file) with a scratch directory, removes both afterwards, prints the
/// figures.
pub(super) async fn with_scratch<F, Fut>(
    kind: &str,
    given: Option<&str>,
    output: Output,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(String, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<serde_json::Value>>,
{
    print(&scratch(kind, given, run).await?, output)
}

/// [`with_scratch`] returning the figures instead of printing them.
pub(super) async fn scratch<F, Fut>(
    kind: &str,
    given: Option<&str>,
    run: F,
) -> anyhow::Result<serde_json::Value>
where
    F: FnOnce(String, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<serde_json::Value>>,
{
    let (url, file) = temp_store_url(kind, given);
    let dir = std::env::temp_dir().join(format!(
        "twincert-bench-{kind}-{}-{}",
        std::process::id(),
        crate::store::new_id()
    ));
    std::fs::create_dir_all(&dir).context("creating the bench directory")?;
    let result = run(url, dir.clone()).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = file {
        remove_sqlite(&path);
    }
    result
}

/// Removes a SQLite database file and its WAL files.
pub(super) fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Prints benchmark figures as JSON or `key: value` lines.
pub(super) fn print(figures: &serde_json::Value, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(figures)?),
        Output::Table => {
            for (k, v) in figures.as_object().into_iter().flatten() {
                println!("{k}: {v}");
            }
        }
    }
    Ok(())
}

async fn run(opts: &SwapBench, url: &str) -> anyhow::Result<serde_json::Value> {
    let store = Store::connect(url).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    // A per-run prefix: a shared database may hold earlier runs' leftovers.
    let prefix = format!("b{}-", &crate::store::new_id()[..8]);
    let t = Instant::now();
    store
        .seed_synthetic(&prefix, opts.names, CA_A, CA_B, now)
        .await
        .context("seeding synthetic names")?;
    let seed_s = t.elapsed().as_secs_f64();
    let scope = SwapScope::Ca(CA_A.into());
    let t = Instant::now();
    let dry = store
        .emergency()
        .mass_swap(&scope, "benchmark dry run", "bench", true, now)
        .await?;
    let dry_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let real = store
        .emergency()
        .mass_swap(&scope, "benchmark", "bench", false, now)
        .await?;
    let swap_s = t.elapsed().as_secs_f64();
    // SQLite copies the swap's WAL pages into the database file after the
    // transaction (see Store::mass_swap); timed on its own.
    let t = Instant::now();
    store.emergency().checkpoint().await.context("checkpoint")?;
    let checkpoint_s = t.elapsed().as_secs_f64();
    let purge = if opts.keep {
        Ok(())
    } else {
        store.purge_synthetic(&prefix).await
    };
    if real.swapped != opts.names as i64 {
        bail!(
            "the swap flipped {} names, expected {} (a shared store with other names active on '{CA_A}'?)",
            real.swapped,
            opts.names
        );
    }
    purge.context("removing the synthetic names")?;
    let mut out = json!({
        "backend": store.backend_name(),
        "names": opts.names,
        "seed_seconds": round(seed_s),
        "dry_run_seconds": round(dry_s),
        "dry_run_would_swap": dry.counts.get("swap").copied().unwrap_or(0),
        "swap_seconds": round(swap_s),
        "checkpoint_after_seconds": round(checkpoint_s),
        "swapped": real.swapped,
        "names_per_second": (opts.names as f64 / swap_s.max(1e-9)).round(),
    });
    if let Some(ms) = opts.reissue_ms_per_cert {
        // Re-issuing instead of swapping: the active certificate of every
        // name, at the measured rate.
        let reissue_s = ms * opts.names as f64 / 1000.0;
        out["reissue_ms_per_cert"] = json!(ms);
        out["reissue_seconds_extrapolated"] = json!(round(reissue_s));
        out["swap_speedup"] = json!((reissue_s / swap_s.max(1e-9)).round());
    }
    Ok(out)
}

/// Seconds rounded to milliseconds, for reports.
pub(super) fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
