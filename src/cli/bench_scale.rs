//! `twincert bench scale`: the figures of issue 21's table at one size, in
//! one run, on one store: the seed, one idle serving process (RSS, CPU,
//! a `/metrics` scrape, a page of `/v1/names`, the p99 of GET one name),
//! the CA-wide swap, a deployment wave (files written and every endpoint
//! verified over TLS) and the revocation passes. Each part is the
//! benchmark of its own name (`bench idle`, `swap`, `deploy`,
//! `revocation`) run in turn on the same store — each seeds its own
//! synthetic names under its own prefix and removes them after — so the
//! figures mean the same here as there. Prints a table (measure, figure,
//! target) or, with `-o json`, every part's figures.
//!
//! It is a benchmark, never part of the timed test suite; the e2e suite
//! runs it at a small size as a smoke test (`tests/e2e/scale.rs`).

use anyhow::bail;
use serde_json::{Value, json};

use super::Output;
use super::bench::{SwapBench, swap_figures};
use super::bench_deploy::{DeployBench, deploy_figures};
use super::bench_idle::{IdleBench, idle_figures};
use super::bench_revocation::{RevocationBench, revocation_figures};

/// Options of `bench scale`.
#[derive(Debug, clap::Args)]
pub(super) struct ScaleBench {
    /// How many synthetic names for the idle process, the API and the
    /// swap.
    #[arg(long, default_value_t = 1_000_000)]
    names: u64,
    /// Names in the deployment wave (each written to a files destination
    /// and checked over TLS); default the smaller of `--names` and
    /// 100,000.
    #[arg(long)]
    wave: Option<u64>,
    /// Names (2 certificates each, really signed) for the revocation
    /// passes; default `--names`.
    #[arg(long)]
    revocation_names: Option<u64>,
    /// How long the serving process runs idle before it is measured.
    #[arg(long, default_value_t = 30)]
    settle_seconds: u64,
    /// The store: default a new SQLite file per part in the temp
    /// directory; `postgres://…` for PostgreSQL (rows removed after).
    #[arg(long)]
    store_url: Option<String>,
}

/// Runs every part and prints the table.
pub(super) async fn scale(opts: ScaleBench, output: Output) -> anyhow::Result<()> {
    if opts.names == 0 {
        bail!("--names must be at least 1");
    }
    let wave = opts.wave.unwrap_or(opts.names.min(100_000));
    let revocation_names = opts.revocation_names.unwrap_or(opts.names);
    if wave == 0 || revocation_names == 0 {
        bail!("--wave and --revocation-names must be at least 1");
    }
    let url = opts.store_url.clone();
    let idle = idle_figures(&IdleBench::sized(
        opts.names,
        url.clone(),
        opts.settle_seconds,
    ))
    .await?;
    let swap = swap_figures(&SwapBench::sized(opts.names, url.clone())).await?;
    let deploy = deploy_figures(&DeployBench::sized(wave, url.clone())).await?;
    let revocation =
        revocation_figures(&RevocationBench::sized(revocation_names, url.clone())).await?;
    let rows = table(&idle, &swap, &deploy, &revocation, opts.names, wave);
    match output {
        Output::Json => {
            let figures = json!({
                "backend": swap["backend"],
                "names": opts.names,
                "wave": wave,
                "revocation_names": revocation_names,
                "idle": idle,
                "swap": swap,
                "deploy": deploy,
                "revocation": revocation,
                "table": rows
                    .iter()
                    .map(|(m, f, t)| json!({"measure": m, "figure": f, "target": t}))
                    .collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&figures)?);
        }
        Output::Table => {
            let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
            let fwidth = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
            println!(
                "backend {}, {} names, wave {wave}, revocation {revocation_names} names",
                swap["backend"].as_str().unwrap_or("?"),
                opts.names
            );
            println!("{:width$}  {:fwidth$}  target", "measure", "figure");
            for (m, f, t) in &rows {
                println!("{m:width$}  {f:fwidth$}  {t}");
            }
        }
    }
    Ok(())
}

/// The table's rows: (measure, figure, issue 21's target at this size).
fn table(
    idle: &Value,
    swap: &Value,
    deploy: &Value,
    revocation: &Value,
    names: u64,
    wave: u64,
) -> Vec<(String, String, String)> {
    let s = |v: &Value, k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    let ten_m = names > 1_000_000;
    let row = |m: &str, f: String, t: &str| (m.to_string(), f, t.to_string());
    vec![
        row("seed (s)", s(swap, "seed_seconds"), ""),
        row(
            "idle RSS (MiB)",
            s(idle, "idle_rss_mib"),
            if ten_m { "<= 64" } else { "" },
        ),
        row(
            "idle CPU (% of a core)",
            s(idle, "idle_cpu_percent"),
            if ten_m { "<= 2" } else { "" },
        ),
        row(
            "/metrics scrape (s)",
            s(idle, "metrics_scrape_seconds"),
            if ten_m { "<= 1" } else { "<= 0.5" },
        ),
        row(
            "list page of 100 (s)",
            s(idle, "list_page_seconds"),
            "<= 0.05",
        ),
        row("GET one name p99 (ms)", s(idle, "get_name_p99_ms"), "<= 5"),
        row(
            "CA-wide swap (s)",
            s(swap, "swap_seconds"),
            if ten_m {
                "<= 20"
            } else {
                "<= 2 (PostgreSQL), <= 1.5 (SQLite)"
            },
        ),
        row(
            &format!("deployment wave of {wave}: time to safety (s)"),
            s(deploy, "time_to_safety_seconds"),
            if wave >= 100_000 { "<= 60" } else { "" },
        ),
        row(
            "revocation first pass (s)",
            s(revocation, "first_pass_seconds"),
            "<= 60 at 1M",
        ),
        row(
            "revocation detect + swap pass (s)",
            s(revocation, "detect_and_swap_pass_seconds"),
            "",
        ),
        row(
            "revocation steady pass (s)",
            s(revocation, "steady_pass_seconds"),
            "<= 15 at 1M",
        ),
    ]
}
