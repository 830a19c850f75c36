//! `twincert bench idle`: what one serving process costs while it manages
//! N names and has nothing to do. It seeds N synthetic names (two valid
//! certificates each, none due) into a store, starts this binary's `serve`
//! on it as a child process (API, HTTP-01 and worker on loopback; the CAs
//! are never contacted because nothing is due), lets it settle, and reads
//! the child's resident memory and CPU time from `/proc`: idle, after a
//! `/metrics` scrape and a page of `/v1/names`, and the peak.
//!
//! Linux only (it reads `/proc/<pid>/status` and `/proc/<pid>/stat`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::Output;
use super::bench::{round, scratch};
use crate::store::Store;

/// The CA ids the synthetic names use; the child's config names them.
const CA_A: &str = "bench-a";
const CA_B: &str = "bench-b";

/// Options of `bench idle`.
#[derive(Debug, clap::Args)]
pub(super) struct IdleBench {
    /// How many synthetic names (each with a primary and a backup).
    #[arg(long, default_value_t = 100_000)]
    names: u64,
    /// The store: default a new SQLite file in the temp directory;
    /// `postgres://…` to measure against PostgreSQL (rows removed after).
    #[arg(long)]
    store_url: Option<String>,
    /// How long the process runs idle before it is measured.
    #[arg(long, default_value_t = 30)]
    settle_seconds: u64,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn idle(opts: IdleBench, output: Output) -> anyhow::Result<()> {
    super::bench::print(&idle_figures(&opts).await?, output)
}

impl IdleBench {
    /// The benchmark at `names` on `store_url` (for `bench scale`).
    pub(super) fn sized(names: u64, store_url: Option<String>, settle_seconds: u64) -> IdleBench {
        IdleBench {
            names,
            store_url,
            settle_seconds,
        }
    }
}

/// Runs the benchmark and returns its figures.
pub(super) async fn idle_figures(opts: &IdleBench) -> anyhow::Result<serde_json::Value> {
    if opts.names == 0 {
        bail!("--names must be at least 1");
    }
    let given = opts.store_url.clone();
    scratch("idle", given.as_deref(), |url, dir| async move {
        run(opts, &url, &dir).await
    })
    .await
}

/// The child process, killed when dropped (also on an early error).
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(opts: &IdleBench, url: &str, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let store = Store::connect(url).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let prefix = format!("i{}-", &crate::store::new_id()[..8]);
    let t = Instant::now();
    store
        .seed_synthetic(&prefix, opts.names, CA_A, CA_B, now)
        .await
        .context("seeding synthetic names")?;
    let seed_s = t.elapsed().as_secs_f64();
    if url.starts_with("sqlite:") {
        store.emergency().checkpoint().await.context("checkpoint")?;
    }
    let measured = measure(opts, url, dir, &prefix).await;
    if std::env::var_os("TWINCERT_BENCH_LOG").is_some() {
        // The scratch directory goes away: keep the serving process's log.
        let kept = Path::new("bench-idle-serve.log");
        match std::fs::copy(dir.join("serve.log"), kept) {
            Ok(_) => eprintln!("the serving process's log: {}", kept.display()),
            Err(e) => eprintln!("could not keep the serving process's log: {e}"),
        }
    }
    let purge = if url.starts_with("sqlite:") {
        Ok(())
    } else {
        store.purge_synthetic(&prefix).await
    };
    let mut out = measured?;
    purge.context("removing the synthetic names")?;
    out["names"] = json!(opts.names);
    out["backend"] = json!(store.backend_name());
    out["seed_seconds"] = json!(round(seed_s));
    Ok(out)
}

/// Requests timed for the API figures: one name each (spread over the
/// names), the p99 of which is reported.
const GETS: u64 = 200;

async fn measure(
    opts: &IdleBench,
    url: &str,
    dir: &Path,
    prefix: &str,
) -> anyhow::Result<serde_json::Value> {
    let api_port = free_port()?;
    let config = write_config(dir, url, api_port, free_port()?)?;
    let token = format!("bench-{}", crate::store::new_id());
    let master = crate::keys::seal::Sealer::generate_text("bench")?;
    let exe = std::env::current_exe().context("locating this binary")?;
    let log = std::fs::File::create(dir.join("serve.log")).context("creating the log")?;
    let started = Instant::now();
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("TWINCERT_MASTER_KEY", &master)
        .env("TWINCERT_ADMIN_TOKEN", &token)
        // `TWINCERT_BENCH_LOG=debug` shows what the idle process does
        // (each controller's pass and its time) in the kept `serve.log`.
        .env(
            "TWINCERT_LOG",
            std::env::var("TWINCERT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log")?)
        .stderr(log)
        .spawn()
        .context("starting twincert serve")?;
    let mut child = Serving(child);
    let pid = child.0.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("HTTP client")?;
    let base = format!("http://127.0.0.1:{api_port}");
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
            bail!("twincert serve exited with {status}:\n{log}");
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("twincert serve not ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_s = started.elapsed().as_secs_f64();
    // A scrape shows the store's aggregates once the counts controller has
    // stored its first set (`twincert_counts_computed_at_seconds`); until
    // then those series are absent and a scrape would time nothing. The
    // idle figures are taken after it, over the steady state (which
    // includes the periodic recounts).
    let counted = Instant::now();
    loop {
        let text = scrape(&http, &base, &token).await?;
        if text
            .lines()
            .any(|l| l.starts_with("twincert_counts_computed_at_seconds "))
        {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!("twincert serve exited with {status} before its first count");
        }
        if counted.elapsed() > Duration::from_secs(3600) {
            bail!("no stored counts after an hour");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let first_count_s = counted.elapsed().as_secs_f64();
    let cpu_at_ready = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(opts.settle_seconds)).await;
    let idle_rss = status_kib(pid, "VmRSS")?;
    let idle_cpu = cpu_seconds(pid)? - cpu_at_ready;

    let t = Instant::now();
    let metrics = scrape(&http, &base, &token).await?;
    let scrape_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    http.get(format!("{base}/v1/names?limit=100"))
        .bearer_auth(&token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("listing names")?
        .bytes()
        .await
        .context("reading the list")?;
    let list_s = t.elapsed().as_secs_f64();
    // GET one name, spread over the key range (a cold row each time).
    let mut gets = Vec::with_capacity(GETS as usize);
    let step = (opts.names / GETS).max(1);
    for k in 0..GETS.min(opts.names) {
        let name = format!("{prefix}{}.synthetic.test", k * step);
        let t = Instant::now();
        http.get(format!("{base}/v1/names/{name}"))
            .bearer_auth(&token)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET /v1/names/{name}"))?
            .bytes()
            .await
            .context("reading the name")?;
        gets.push(t.elapsed().as_secs_f64());
    }
    gets.sort_by(f64::total_cmp);
    let p99 = gets
        .get((gets.len() * 99 / 100).min(gets.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    let after_rss = status_kib(pid, "VmRSS")?;
    let peak = status_kib(pid, "VmHWM")?;
    if let Ok(Some(status)) = child.0.try_wait() {
        bail!("twincert serve exited with {status} during the run");
    }
    drop(child);
    let mib = |kib: u64| round(kib as f64 / 1024.0);
    Ok(json!({
        "ready_seconds": round(ready_s),
        "settle_seconds": opts.settle_seconds,
        "first_count_seconds": round(first_count_s),
        "idle_rss_mib": mib(idle_rss),
        "idle_cpu_percent": round(100.0 * idle_cpu / opts.settle_seconds.max(1) as f64),
        "metrics_scrape_seconds": round(scrape_s),
        "metrics_bytes": metrics.len(),
        "list_page_seconds": round(list_s),
        "get_name_p99_ms": round(p99 * 1000.0),
        "rss_after_scrape_mib": mib(after_rss),
        "peak_rss_mib": mib(peak),
    }))
}

/// A config for the child: loopback listeners, the store, two CAs that
/// are never contacted (nothing is due), revocation checks off (their
/// cost is `bench revocation`'s subject).
fn write_config(dir: &Path, url: &str, api_port: u16, http01_port: u16) -> anyhow::Result<PathBuf> {
    let text = format!(
        r#"[server]
api_listen = "127.0.0.1:{api_port}"
http01_listen = "127.0.0.1:{http01_port}"

[store]
url = "{url}"

[policy]
ca_preference = ["{CA_A}", "{CA_B}"]

[revocation]
enabled = false

[[cas]]
id = "{CA_A}"
profile = "pebble"
directory_url = "https://127.0.0.1:9/dir"
root_group = "{CA_A}"

[[cas]]
id = "{CA_B}"
profile = "pebble"
directory_url = "https://127.0.0.1:9/dir"
root_group = "{CA_B}"
"#
    );
    let path = dir.join("twincert.toml");
    std::fs::write(&path, text).context("writing the config")?;
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// A `kB` field of `/proc/<pid>/status` (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/<pid>/status (Linux only)")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{field} not in /proc/{pid}/status"))
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat` fields 14
/// and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("reading /proc/<pid>/stat (Linux only)")?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("unexpected /proc/<pid>/stat")
    };
    // After ')': state is field 3, so utime (14) and stime (15) are 11, 12.
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// One `/metrics` scrape's text.
async fn scrape(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<String> {
    http.get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("scraping /metrics")?
        .text()
        .await
        .context("reading /metrics")
}
