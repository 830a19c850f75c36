//! The emergency commands: swap, distrust, re-key, bulk compromise, and
//! following an operation's progress. A real run of anything that touches
//! many names first shows its dry run and asks for confirmation (or takes
//! `--yes`); `--wait` follows the re-provisioning with a progress bar.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::{ApiArgs, ApiFailure, Output, base_url, table, token};

/// How a mass operation is confirmed and followed.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct RunArgs {
    /// Only report what would happen.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (scripts, runbooks).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// After a real run, follow the re-provisioning until it is done.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit code 1).
    #[arg(long, default_value_t = 3600)]
    pub wait_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub(super) enum OperationsAction {
    /// List operations, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Show an operation and its progress; `latest` is the newest one.
    Show {
        /// The operation id, or `latest`.
        id: String,
        /// Follow it until its work is done.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit code 1).
        #[arg(long, default_value_t = 3600)]
        wait_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum IncidentsAction {
    /// List CA incidents, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Show an incident: its counts and the CA-wide swap it ran, or the
    /// dry run that waits for you.
    Show {
        /// The incident id.
        id: String,
    },
    /// Close an incident once handled; automatic reactions for its CA
    /// resume.
    Close {
        /// The incident id.
        id: String,
        /// What was done (audit log).
        #[arg(long)]
        reason: String,
    },
}

/// `twincert incidents …`.
pub(super) async fn incidents(api: &ApiArgs, action: IncidentsAction) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let v = match action {
        IncidentsAction::List { limit } => {
            client
                .request(
                    reqwest::Method::GET,
                    &format!("/v1/incidents?limit={limit}"),
                    None,
                )
                .await?
        }
        IncidentsAction::Show { id } => {
            client
                .request(reqwest::Method::GET, &format!("/v1/incidents/{id}"), None)
                .await?
        }
        IncidentsAction::Close { id, reason } => {
            client
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/incidents/{id}/close"),
                    Some(&serde_json::json!({ "reason": reason })),
                )
                .await?
        }
    };
    client.print(&v);
    Ok(())
}

/// `twincert alerts [--all]`.
pub(super) async fn alerts(api: &ApiArgs, all: bool, limit: u64) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let v = client
        .request(
            reqwest::Method::GET,
            &format!("/v1/alerts?open={}&limit={limit}", !all),
            None,
        )
        .await?;
    client.print(&v);
    Ok(())
}

/// Reads a names file: one name per line; blank lines and `#` comments
/// are skipped.
pub(super) fn read_names_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the names file {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        bail!("the names file {} lists no names", path.display());
    }
    Ok(names)
}

/// An API client for one command.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    output: Output,
}

impl Client {
    fn new(api: &ApiArgs) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::new(),
            base: base_url(api)?,
            token: token(api)?,
            output: api.output,
        })
    }

    /// One request; the JSON answer, or the problem printed and an
    /// [`ApiFailure`].
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let rsp = req
            .send()
            .await
            .with_context(|| format!("calling the API at {}", self.base))?;
        let status = rsp.status();
        let text = rsp.text().await.context("reading the API's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        match (&value["detail"], self.output) {
            (Value::String(d), Output::Table) => eprintln!("error: {d}"),
            _ => eprintln!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            ),
        }
        Err(ApiFailure {
            status: status.as_u16(),
        }
        .into())
    }

    fn print(&self, v: &Value) {
        match self.output {
            Output::Table => print!("{}", table(v)),
            Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        }
    }
}

/// A mass operation: its endpoint, its body without `dry_run`, and
/// whether the API can dry-run it.
pub(super) struct Mass {
    pub path: String,
    pub body: Value,
    pub has_dry_run: bool,
    /// What it does, for the confirmation question.
    pub what: String,
}

/// Runs a mass operation: a dry run when asked; else (unless `--yes`) the
/// dry run's summary and a confirmation question, the real run, and with
/// `--wait` its progress until done.
pub(super) async fn run_mass(api: &ApiArgs, run: &RunArgs, mass: Mass) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let mut body = mass.body.clone();
    if run.dry_run {
        if !mass.has_dry_run {
            bail!("{} has no dry run", mass.what);
        }
        body["dry_run"] = json!(true);
        let v = client
            .request(reqwest::Method::POST, &mass.path, Some(&body))
            .await?;
        client.print(&v);
        return Ok(());
    }
    if !run.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to {} without confirmation: stdin is not a terminal; \
                 look at --dry-run first, then pass --yes",
                mass.what
            );
        }
        if mass.has_dry_run {
            body["dry_run"] = json!(true);
            let preview = client
                .request(reqwest::Method::POST, &mass.path, Some(&body))
                .await?;
            eprint!("{}", summary(&preview));
            body["dry_run"] = json!(false);
        }
        eprint!("{}? Type 'yes' to proceed: ", mass.what);
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        if answer.trim() != "yes" {
            bail!("not confirmed; nothing was changed");
        }
    }
    let v = client
        .request(reqwest::Method::POST, &mass.path, Some(&body))
        .await?;
    client.print(&v);
    if run.wait {
        let id = v["report"]["operation_id"]
            .as_str()
            .or_else(|| v["operation_id"].as_str())
            .context("the answer carries no operation id to follow")?
            .to_string();
        follow(&client, &id, run.wait_timeout).await?;
    }
    Ok(())
}

/// A few lines on what a dry run found.
fn summary(v: &Value) -> String {
    let mut out = String::from("dry run:\n");
    if let Some(counts) = v["report"]["counts"].as_object() {
        for (k, n) in counts {
            out.push_str(&format!("  {k}: {n}\n"));
        }
        out.push_str(&format!(
            "  slots to re-provision: {}\n",
            v["report"]["reprovision"]
        ));
    }
    if let Some(n) = v["names"].as_i64() {
        out.push_str(&format!("  names to re-key: {n}\n"));
    }
    if let Some(s) = v["estimate"]["seconds"].as_i64() {
        out.push_str(&format!(
            "  estimated re-provisioning time: {s} s at {} orders/hour\n",
            v["estimate"]["orders_per_hour"]
        ));
    }
    out
}

/// `operations list|show`.
pub(super) async fn operations(api: &ApiArgs, action: OperationsAction) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    match action {
        OperationsAction::List { limit } => {
            let v = client
                .request(
                    reqwest::Method::GET,
                    &format!("/v1/operations?limit={limit}"),
                    None,
                )
                .await?;
            client.print(&v);
        }
        OperationsAction::Show {
            id,
            wait,
            wait_timeout,
        } => {
            let id = latest_or(&client, id, "/v1/operations", "operation").await?;
            if wait {
                follow(&client, &id, wait_timeout).await?;
            } else {
                let v = client
                    .request(reqwest::Method::GET, &format!("/v1/operations/{id}"), None)
                    .await?;
                client.print(&v);
            }
        }
    }
    Ok(())
}

/// (done, total, failing) of an operation's progress.
fn counts(p: &Value) -> (i64, i64, i64) {
    let n = |k: &str| p["orders"][k].as_i64().unwrap_or(0);
    let failing = p["failing"].as_i64().unwrap_or(0);
    let total_rekey = p["rekey_total"].as_i64().unwrap_or(0);
    if total_rekey > 0 {
        return (p["rekey_done"].as_i64().unwrap_or(0), total_rekey, failing);
    }
    let queued = p["queued"].as_i64().unwrap_or(0);
    let done = n("valid") + n("abandoned");
    (
        done,
        queued + done + n("pending") + n("processing"),
        failing,
    )
}

/// The CAs an operation's orders wait for (a CA's `Retry-After`, a
/// backoff, the hold-off), from its `time_left`: `; pebble-a waits 6 s`.
fn waits(v: &Value) -> String {
    let mut out = String::new();
    for c in v["time_left"].as_array().into_iter().flatten() {
        let secs = c["wait_seconds"].as_i64().unwrap_or(0);
        if secs > 0 {
            out.push_str(&format!(
                "; {} waits {secs} s",
                c["ca"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

fn bar(done: i64, total: i64) -> String {
    const WIDTH: i64 = 30;
    let filled = if total > 0 {
        done * WIDTH / total
    } else {
        WIDTH
    };
    format!(
        "[{}{}]",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize)
    )
}

/// Polls an operation until its work is done, drawing a progress bar on
/// stderr (redrawn in place on a terminal, a line per change otherwise);
/// prints the final state like `operations show`.
async fn follow(client: &Client, id: &str, timeout_s: u64) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = None;
    loop {
        let v = client
            .request(reqwest::Method::GET, &format!("/v1/operations/{id}"), None)
            .await?;
        let p = &v["progress"];
        let (done, total, failing) = counts(p);
        let line = format!(
            "{} {done}/{total} done, {failing} failing, {} queued{}",
            bar(done, total),
            p["queued"].as_i64().unwrap_or(0),
            waits(&v)
        );
        if tty {
            eprint!("\r{line}   ");
        } else if last.as_ref() != Some(&line) {
            eprintln!("{line}");
        }
        last = Some(line);
        if p["done"].as_bool() == Some(true) {
            if tty {
                eprintln!();
            }
            client.print(&v);
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(timeout_s) {
            if tty {
                eprintln!();
            }
            client.print(&v);
            bail!("operation {id} is not done after {timeout_s} s; it goes on in the service");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The body of a scoped request (swap, re-key) from the command line.
pub(super) fn scope_body(
    reason: &str,
    ca: Option<String>,
    spki: Option<String>,
    names_file: Option<PathBuf>,
    names: Vec<String>,
    all: bool,
) -> anyhow::Result<Value> {
    let mut body = json!({ "reason": reason });
    let mut listed = names;
    if let Some(f) = names_file {
        listed.extend(read_names_file(&f)?);
    }
    let given = usize::from(ca.is_some())
        + usize::from(spki.is_some())
        + usize::from(!listed.is_empty())
        + usize::from(all);
    if given != 1 {
        bail!("give exactly one scope: a name, --names-file, --ca or --spki (or --all)");
    }
    if let Some(c) = ca {
        body["ca"] = json!(c);
    }
    if let Some(s) = spki {
        body["spki_sha256"] = json!(s);
    }
    if !listed.is_empty() {
        body["names"] = json!(listed);
    }
    if all {
        body["all"] = json!(true);
    }
    Ok(body)
}

/// `twincert readiness`: per CA, how many names active on it would be
/// safe if it were lost now, why the others would not, and how long
/// safety and full redundancy would take.
pub(super) async fn readiness(api: &ApiArgs) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let v = client
        .request(reqwest::Method::GET, "/v1/readiness", None)
        .await?;
    if api.output == Output::Json {
        client.print(&v);
        return Ok(());
    }
    print!("{}", readiness_table(&v));
    Ok(())
}

/// The readiness report as text: a summary line, one row per CA, then per
/// CA the reasons with their counts and sample names.
fn readiness_table(v: &Value) -> String {
    let Some(at) = v["computed_at"].as_str() else {
        return "readiness has not been computed yet (a worker computes it within seconds \
                of starting)\n"
            .into();
    };
    let mut out = format!(
        "computed at {at} in {} ms: {} of {} names safe if their active CA were lost now\n\n",
        v["duration_ms"], v["safe"], v["names"]
    );
    out.push_str(&format!(
        "{:<20} {:>8} {:>8} {:>7} {:>16} {:>19}  {}\n",
        "CA", "ACTIVE", "SAFE", "SHARE", "TO SAFETY (s)", "TO REDUNDANCY (s)", "ALERT"
    ));
    let cas = v["cas"].as_array().cloned().unwrap_or_default();
    for c in &cas {
        // Numbers as numbers: a JSON value ignores the column width.
        let int = |k: &str| c[k].as_i64().unwrap_or(0);
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>6.1}% {:>16} {:>19}  {}\n",
            c["ca"].as_str().unwrap_or_default(),
            int("active"),
            int("safe"),
            c["safe_share"].as_f64().unwrap_or(1.0) * 100.0,
            int("time_to_safety_seconds"),
            c["time_to_redundancy_seconds"]
                .as_i64()
                .map_or_else(|| "never (no CA)".to_string(), |t| t.to_string()),
            c["alert"].as_str().unwrap_or("-"),
        ));
    }
    for c in &cas {
        let reasons: Vec<(&String, &Value)> = c["outcomes"]
            .as_object()
            .map(|o| o.iter().filter(|(k, _)| *k != "safe").collect())
            .unwrap_or_default();
        if reasons.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\nif {} were lost, not safe:\n",
            c["ca"].as_str().unwrap_or_default()
        ));
        for (reason, n) in reasons {
            let sample: Vec<&str> = c["samples"][reason.as_str()]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "  {reason:<26} {:>8}  {}\n",
                n.as_i64().unwrap_or(0),
                sample.join(", ")
            ));
        }
    }
    out
}

#[derive(Debug, Subcommand)]
pub(super) enum DrillAction {
    /// Start a drill of losing a CA: dry by default (every check of a
    /// CA-wide swap but the flip; changes nothing), or live on a sample
    /// (swapped away, verified, swapped back).
    Run {
        /// The CA whose loss is drilled.
        #[arg(long)]
        ca: String,
        /// Really swap a sample (`--names` or `--percent`) and back.
        #[arg(long)]
        live: bool,
        /// Simulate the CA revoking everything (test and training
        /// environments with `[drills] allow_simulation`): the automatic
        /// reactions run for real.
        #[arg(long, conflicts_with = "live")]
        simulate: bool,
        /// Live: these names (comma-separated; only those active on the CA).
        #[arg(long, value_delimiter = ',', conflicts_with = "percent")]
        names: Option<Vec<String>>,
        /// Live: this percentage of the names active on the CA, rounded down.
        #[arg(long)]
        percent: Option<u64>,
        /// Live: leave the sample on its standby.
        #[arg(long)]
        keep: bool,
        /// Live: seconds to wait for the sample to be served.
        #[arg(long)]
        verify_timeout: Option<u64>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Follow the drill and print its report; exit code 2 if it failed.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit code 1).
        #[arg(long, default_value_t = 1800)]
        wait_timeout: u64,
    },
    /// List drills, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Show a drill's report and timeline; `latest` is the newest one.
    Show {
        /// The drill id, or `latest`.
        id: String,
        /// Follow it until it ends; exit code 2 if it failed.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit code 1).
        #[arg(long, default_value_t = 1800)]
        wait_timeout: u64,
    },
}

/// A drill ended `failed` (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("drill {0} failed: see its report")]
pub struct DrillFailed(pub String);

/// `twincert drill …`.
pub(super) async fn drill(api: &ApiArgs, action: DrillAction) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let (id, wait, wait_timeout) = match action {
        DrillAction::Run {
            ca,
            live,
            simulate,
            names,
            percent,
            keep,
            verify_timeout,
            reason,
            wait,
            wait_timeout,
        } => {
            let mut body = json!({ "ca": ca, "reason": reason });
            if live {
                body["mode"] = json!("live");
            }
            if simulate {
                body["mode"] = json!("simulate");
            }
            if let Some(n) = names {
                body["names"] = json!(n);
            }
            if let Some(p) = percent {
                body["percent"] = json!(p);
            }
            if keep {
                body["keep"] = json!(true);
            }
            if let Some(t) = verify_timeout {
                body["verify_timeout_seconds"] = json!(t);
            }
            let v = client
                .request(reqwest::Method::POST, "/v1/drills", Some(&body))
                .await?;
            let id = v["id"].as_str().context("no drill id in the answer")?;
            if !wait {
                client.print(&v);
                return Ok(());
            }
            eprintln!("drill {id} started");
            (id.to_string(), wait, wait_timeout)
        }
        DrillAction::List { limit } => {
            let v = client
                .request(
                    reqwest::Method::GET,
                    &format!("/v1/drills?limit={limit}"),
                    None,
                )
                .await?;
            if api.output == Output::Json {
                client.print(&v);
            } else {
                for d in v["items"].as_array().into_iter().flatten() {
                    println!("{}", drill_line(d));
                }
            }
            return Ok(());
        }
        DrillAction::Show {
            id,
            wait,
            wait_timeout,
        } => {
            let id = latest_or(&client, id, "/v1/drills", "drill").await?;
            (id, wait, wait_timeout)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(wait_timeout);
    let v = loop {
        let v = client
            .request(reqwest::Method::GET, &format!("/v1/drills/{id}"), None)
            .await?;
        if !wait || v["state"] != "running" {
            break v;
        }
        if Instant::now() >= deadline {
            bail!("drill {id} still running after {wait_timeout} s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if api.output == Output::Json {
        client.print(&v);
    } else {
        print!("{}", drill_text(&v));
    }
    if wait && v["state"] == "failed" {
        return Err(DrillFailed(id).into());
    }
    Ok(())
}

/// One line per drill for the list.
fn drill_line(d: &Value) -> String {
    let r = &d["report"];
    format!(
        "{:<32} {:<5} {:<14} {:<8} {}/{} safe  {}",
        d["id"].as_str().unwrap_or_default(),
        d["mode"].as_str().unwrap_or_default(),
        d["ca"].as_str().unwrap_or_default(),
        d["state"].as_str().unwrap_or_default(),
        r["safe"].as_i64().unwrap_or(0),
        r["outcomes"]
            .as_object()
            .map(|o| o.values().filter_map(Value::as_i64).sum::<i64>())
            .unwrap_or(0),
        d["reason"].as_str().unwrap_or_default(),
    )
}

/// A drill as text: the verdict, the timeline, the outcomes and the
/// names that were not safe.
fn drill_text(d: &Value) -> String {
    let r = &d["report"];
    let mut out = format!(
        "drill {} ({} drill of losing {}): {}\n",
        d["id"].as_str().unwrap_or_default(),
        d["mode"].as_str().unwrap_or_default(),
        d["ca"].as_str().unwrap_or_default(),
        d["state"].as_str().unwrap_or_default(),
    );
    out.push_str(&format!(
        "names active on the CA: {}; safe: {}\n",
        r["names"].as_i64().unwrap_or(0),
        r["safe"].as_i64().unwrap_or(0)
    ));
    if let Some(ms) = r["time_to_safety_ms"].as_i64() {
        out.push_str(&format!("time to safety: {ms} ms\n"));
    }
    if let Some(e) = r["error"].as_str() {
        out.push_str(&format!("stopped: {e}\n"));
    }
    out.push_str("\nSTAGE         OUTCOME   MS        DETAIL\n");
    for s in r["stages"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<13} {:<9} {:<9} {}\n",
            s["name"].as_str().unwrap_or_default(),
            s["outcome"].as_str().unwrap_or_default(),
            s["duration_ms"].as_i64().unwrap_or(0),
            s["detail"].as_str().unwrap_or_default(),
        ));
    }
    if let Some(o) = r["outcomes"].as_object() {
        out.push_str("\nOUTCOME                      NAMES\n");
        for (k, n) in o {
            out.push_str(&format!("{k:<28} {n}\n"));
        }
    }
    let failures = r["failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        out.push_str("\nNOT SAFE\n");
        for f in &failures {
            out.push_str(&format!(
                "{}  {}{}\n",
                f["name"].as_str().unwrap_or_default(),
                f["reason"].as_str().unwrap_or_default(),
                f["detail"]
                    .as_str()
                    .map(|d| format!("  ({d})"))
                    .unwrap_or_default(),
            ));
        }
    }
    out
}

/// `id`, or for `latest` the newest item of the list at `list` (an
/// operation, a drill).
async fn latest_or(client: &Client, id: String, list: &str, what: &str) -> anyhow::Result<String> {
    if id != "latest" {
        return Ok(id);
    }
    let v = client
        .request(reqwest::Method::GET, &format!("{list}?limit=1"), None)
        .await?;
    Ok(v["items"][0]["id"]
        .as_str()
        .with_context(|| format!("there is no {what} yet"))?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_names_the_cas_that_wait() {
        let v = json!({"time_left": [
            {"ca": "a", "wait_seconds": 6, "seconds_left": 7},
            {"ca": "b", "wait_seconds": 0, "seconds_left": 1},
        ]});
        assert_eq!(waits(&v), "; a waits 6 s");
        assert_eq!(waits(&json!({})), "");
    }
}
