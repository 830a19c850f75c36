//! Every runbook in `docs/runbooks/` is executed: its `sh` blocks, in
//! order, as one bash script (`set -euo pipefail`) with the real CLI on
//! PATH, against a server on local Pebbles; then the test checks the state
//! the runbook promises.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{PebbleOptions, TwoCas};
use crate::server::{ADMIN_TOKEN, Server, ServerOptions};

fn runbook_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks")
}

/// The `sh` blocks of a runbook, joined.
fn script_of(file: &str) -> String {
    let text = std::fs::read_to_string(runbook_dir().join(file)).expect("read runbook");
    let mut out = String::new();
    let (mut in_block, mut in_sh) = (false, false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_block && t == "```sh";
            in_block = !in_block;
            continue;
        }
        if in_sh {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The `sh` blocks of a runbook, one string each, for the runbooks whose
/// prose stops or restarts twincert between blocks (the test does that
/// part).
fn blocks_of(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(runbook_dir().join(file)).expect("read runbook");
    let mut out = Vec::new();
    let (mut in_block, mut in_sh) = (false, false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_block && t == "```sh";
            in_block = !in_block;
            if in_sh {
                out.push(String::new());
            }
            continue;
        }
        if in_sh && let Some(b) = out.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    out
}

/// Runs a runbook's commands; panics with their output on failure.
fn run(server: &Server, file: &str, vars: &[(&str, &str)]) -> String {
    run_script(server, file, &script_of(file), vars)
}

fn run_script(server: &Server, file: &str, script: &str, vars: &[(&str, &str)]) -> String {
    assert!(script.contains("twincert "), "{file} has commands");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_twincert"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euxo pipefail\n{script}"))
        .env("PATH", path)
        .env("TWINCERT_CONFIG", server.config_path())
        .env("TWINCERT_URL", server.base())
        .env("TWINCERT_TOKEN", ADMIN_TOKEN)
        .envs(vars.iter().copied())
        .output()
        .expect("run bash");
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{file} failed:\n{text}\n--- server ---\n{}",
        server.log()
    );
    text
}

/// Whether `out` has a `key: value` row of the CLI's table, however the
/// columns were padded.
fn has_row(out: &str, row: &str) -> bool {
    let (key, value) = row.split_once(": ").expect("key: value");
    out.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k == key && v.trim() == value)
    })
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("twincert.db").display())
}

const NAMES: [&str; 3] = ["a.example.test", "b.example.test", "c.example.test"];

/// A server with three ready names (primary on pebble-a).
async fn ready(cas: &TwoCas) -> (Server, Vec<Value>) {
    let server = Server::start(cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    for n in NAMES {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
    }
    let mut out = Vec::new();
    for n in NAMES {
        out.push(server.wait_ready(n, 120).await);
    }
    (server, out)
}

#[test]
fn every_runbook_has_commands_and_a_roll_back_section() {
    let mut seen = 0;
    for entry in std::fs::read_dir(runbook_dir()).expect("runbooks") {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if file == "README.md" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(script_of(file).contains("twincert "), "{file}: commands");
        assert!(text.contains("## Decide"), "{file}: a decision list");
        assert!(text.contains("## Roll back"), "{file}: how to roll back");
        assert!(text.contains("Check:"), "{file}: what to check");
        seen += 1;
    }
    assert_eq!(seen, 8);
}

/// The usual setup of exactly two CAs: with no third CA, the abandoned
/// slots are re-issued from the revoking CA after the hold-off, so every
/// name ends with two fresh-enough certificates again.
#[tokio::test(flavor = "multi_thread")]
async fn runbook_ca_mass_revocation() {
    let cas = TwoCas::start(0).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![(
        "TWINCERT_POLICY_REPROVISION_SAME_CA_AFTER_SECONDS".into(),
        "3".into(),
    )];
    let server = Server::start(&cas, opts).await;
    for n in NAMES {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
    }
    let mut before = Vec::new();
    for n in NAMES {
        before.push(server.wait_ready(n, 120).await);
    }
    let out = run(
        &server,
        "ca-mass-revocation.md",
        &[
            ("CA", "pebble-a"),
            ("REASON", "INC-1 drill"),
            ("NAME", "a.example.test"),
        ],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("report.swapped:") && l.trim_end().ends_with(" 3")),
        "{out}"
    );
    // What the runbook says to check, in the table output (issue 20: the
    // table printed scalars only, none of these). Two CAs: nothing else
    // can take the abandoned slots, so A re-issues them after its hold-off.
    for want in [
        "report.counts.swap: 3",
        "report.reprovision_from.pebble-a: 3",
        "report.sample[0]: a.example.test, swap",
        "estimate.eligible_cas: (none)",
        "estimate.same_ca.ca: pebble-a",
        "estimate.same_ca.hold_off_seconds: 3",
        "report.counts: (none)",
    ] {
        assert!(has_row(&out, want), "no row '{want}' in:\n{out}");
    }
    // After the roll-back step, a is back on its primary: a new
    // certificate from A, re-issued after the hold-off.
    let a = server.name("a.example.test").await;
    assert_eq!(a["active"], "primary", "{a:#}");
    assert_eq!(a["primary"]["ca"], "pebble-a", "{a:#}");
    assert_ne!(a["primary"]["serial"], before[0]["primary"]["serial"]);
    for (i, n) in NAMES.iter().enumerate().skip(1) {
        let v = server.name(n).await;
        assert_eq!(v["active"], "backup", "{v:#}");
        assert_eq!(v["state"], "ready", "redundant again: {v:#}");
        assert_eq!(v["primary"]["ca"], "pebble-a", "{v:#}");
        assert!(v["primary"]["reprovision"].is_null(), "{v:#}");
        assert_ne!(
            v["primary"]["spki_sha256"], before[i]["primary"]["spki_sha256"],
            "re-issued under a new key: {v:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runbook_key_compromise() {
    let cas = TwoCas::start(0).await;
    let (server, before) = ready(&cas).await;
    let list = cas.dir().join("compromised.txt");
    std::fs::write(&list, "# leaked in INC-2\nb.example.test\n").expect("write list");
    let spki = before[2]["primary"]["spki_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    run(
        &server,
        "key-compromise.md",
        &[
            ("NAME", "a.example.test"),
            ("NAMES_FILE", list.to_str().unwrap_or_default()),
            ("SPKI", &spki),
            ("REASON", "INC-2 drill"),
        ],
    );
    for (i, n) in NAMES.iter().enumerate() {
        let v = server.wait_ready(n, 60).await;
        assert_eq!(v["active"], "backup", "swapped away: {v:#}");
        assert_ne!(
            v["primary"]["spki_sha256"],
            before[i]["primary"]["spki_sha256"]
        );
        let serial = before[i]["primary"]["serial"].as_str().unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let st = cas.a.cert_status(serial).await;
            if st["Status"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("revoked")
            {
                assert_eq!(st["Reason"], 1, "keyCompromise: {st}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} not revoked: {st}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runbook_ca_distrust() {
    let cas = TwoCas::start_three(PebbleOptions::default()).await;
    let (server, _) = ready(&cas).await;
    run(
        &server,
        "ca-distrust.md",
        &[("CA", "pebble-a"), ("REASON", "INC-3 drill")],
    );
    for n in NAMES {
        let v = server.name(n).await;
        assert_eq!(v["active"], "backup", "{v:#}");
        assert_eq!(v["primary"]["ca"], "pebble-c", "{v:#}");
        assert_eq!(v["state"], "ready", "{v:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runbook_ca_outage() {
    let mut cas = TwoCas::start(0).await;
    let (server, _) = ready(&cas).await;
    cas.a.stop();
    let (st, body) = server.create(json!({"name": "d.example.test"})).await;
    assert_eq!(st, 201, "{body}");
    let out = run(
        &server,
        "ca-outage.md",
        &[("CA", "pebble-a"), ("REASON", "INC-4 drill")],
    );
    assert!(
        out.contains("connection refused") || out.contains("d.example.test"),
        "{out}"
    );
    for n in NAMES {
        let v = server.name(n).await;
        assert_eq!(v["active"], "backup", "swapped to the standby: {v:#}");
        assert_eq!(v["backup"]["state"], "valid", "{v:#}");
    }
}

/// Issue 22: the weekly dry drill and a live drill on a sample pass on a
/// healthy fleet, and the live drill leaves every name where it was.
#[tokio::test(flavor = "multi_thread")]
async fn runbook_drill() {
    let cas = TwoCas::start(0).await;
    let (server, before) = ready(&cas).await;
    let out = run(
        &server,
        "drill.md",
        &[("CA", "pebble-a"), ("REASON", "OPS-7"), ("PERCENT", "50")],
    );
    assert!(
        out.contains("dry drill of losing pebble-a): passed"),
        "{out}"
    );
    assert!(
        out.contains("live drill of losing pebble-a): passed"),
        "{out}"
    );
    assert!(out.contains("time to safety:"), "{out}");
    for (i, n) in NAMES.iter().enumerate() {
        let v = server.name(n).await;
        assert_eq!(v["active"], "primary", "swapped back: {v:#}");
        assert_eq!(v["primary"]["serial"], before[i]["primary"]["serial"]);
        assert_eq!(v["backup"]["serial"], before[i]["backup"]["serial"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runbook_mass_rekey() {
    let cas = TwoCas::start(0).await;
    let (server, before) = ready(&cas).await;
    run(&server, "mass-rekey.md", &[("REASON", "INC-5 drill")]);
    for (i, n) in NAMES.iter().enumerate() {
        let v = server.wait_ready(n, 60).await;
        for slot in ["primary", "backup"] {
            assert_ne!(
                v[slot]["spki_sha256"], before[i][slot]["spki_sha256"],
                "{n} {slot}"
            );
        }
    }
}

/// Issue 20: the CLI's table dropped nested fields, so the dry run the
/// mass-revocation runbook has the operator check showed none of what it
/// names. With a name that cannot swap (its backup never issued: the
/// backup CA was down), the runbook's dry-run command prints the counts
/// per outcome with the skip reason, the sample (skipped names first),
/// where re-provisioning orders from, and the CAs it could order from.
#[tokio::test(flavor = "multi_thread")]
async fn the_runbook_dry_run_table_shows_counts_skips_sample_and_eligible_cas() {
    let mut cas = TwoCas::start(0).await;
    let server = Server::start(&cas, ServerOptions::new(sqlite_url(cas.dir()))).await;
    for n in ["a.example.test", "b.example.test"] {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
        server.wait_ready(n, 120).await;
    }
    cas.b.stop();
    let (st, body) = server.create(json!({ "name": "c.example.test" })).await;
    assert_eq!(st, 201, "{body}");
    server
        .wait_for("c.example.test", 120, |v| {
            v["primary"]["state"] == "valid" && v["backup"]["last_error"].is_string()
        })
        .await;

    // The runbook's own dry-run command line.
    let dry_run = script_of("ca-mass-revocation.md")
        .lines()
        .find(|l| l.contains("twincert swap --ca") && l.contains("--dry-run"))
        .expect("the runbook's dry run")
        .to_string();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_twincert"));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{dry_run}"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.parent().expect("bin dir").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("TWINCERT_URL", server.base())
        .env("TWINCERT_TOKEN", ADMIN_TOKEN)
        .env("CA", "pebble-a")
        .env("REASON", "INC-2 drill")
        .output()
        .expect("run the dry run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "report.counts.swap: 2",
        "report.counts.no_standby: 1",
        "report.sample[0]: c.example.test, no_standby",
        "report.sample[1]: a.example.test, swap",
        "report.reprovision_from.pebble-a: 3",
        // Two CAs: nothing but A can re-issue A's abandoned slots, after
        // its hold-off.
        "estimate.eligible_cas: (none)",
        "estimate.same_ca.ca: pebble-a",
    ] {
        assert!(has_row(&text, want), "no row '{want}' in:\n{text}");
    }
}

/// Issue 19: the restore runbook, block by block: identity and backup while
/// serving; (stop, new empty database) restore; (start) check.
#[tokio::test(flavor = "multi_thread")]
async fn runbook_restore_from_backup() {
    let cas = TwoCas::start(0).await;
    let server = Server::start(&cas, crate::backup::quiet(sqlite_url(cas.dir()))).await;
    for n in NAMES {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
    }
    let mut before = Vec::new();
    for n in NAMES {
        before.push(server.wait_ready(n, 120).await);
    }
    let blocks = blocks_of("restore-from-backup.md");
    assert_eq!(blocks.len(), 3, "backup, restore, check: {blocks:?}");
    let identity = cas.dir().join("backup-identity.txt");
    let backup = cas.dir().join("twincert.backup");
    let vars = [
        ("IDENTITY", identity.to_str().unwrap_or_default()),
        ("BACKUP", backup.to_str().unwrap_or_default()),
        ("TWINCERT_MASTER_KEY", crate::server::MASTER_KEY),
    ];
    let out = run_script(&server, "restore-from-backup.md", &blocks[0], &vars);
    assert!(out.contains("backup written:"), "{out}");
    // Stop; the store is lost; a new empty database.
    let fresh = format!("sqlite://{}", cas.dir().join("restored.db").display());
    let mut vars_restore = vars.to_vec();
    vars_restore.push(("TWINCERT_STORE_URL", &fresh));
    let mut server = server;
    server.kill();
    let out = run_script(&server, "restore-from-backup.md", &blocks[1], &vars_restore);
    assert!(
        out.contains("restored ") && out.contains("(3 names)"),
        "{out}"
    );
    let server = Server::start(&cas, crate::backup::quiet(fresh.clone())).await;
    let out = run_script(&server, "restore-from-backup.md", &blocks[2], &vars);
    assert!(out.contains("store.restore"), "{out}");
    for (i, n) in NAMES.iter().enumerate() {
        assert_eq!(server.name(n).await, before[i], "{n} is back as it was");
    }
}

/// Issue 19: the master key runbook: k1 seals; (k2 first, restart)
/// re-seal and check; (k1 removed, restart) check.
#[tokio::test(flavor = "multi_thread")]
async fn runbook_retire_master_key() {
    const K1: &str = "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let cas = TwoCas::start(0).await;
    let url = sqlite_url(cas.dir());
    let with_key = |keys: &str| {
        let mut o = ServerOptions::new(url.clone());
        o.env = vec![("TWINCERT_MASTER_KEY".into(), keys.into())];
        o
    };
    let mut server = Server::start(&cas, with_key(K1)).await;
    for n in NAMES {
        let (st, body) = server.create(json!({ "name": n })).await;
        assert_eq!(st, 201, "{body}");
    }
    for n in NAMES {
        server.wait_ready(n, 120).await;
    }
    let blocks = blocks_of("retire-master-key.md");
    assert_eq!(blocks.len(), 3, "reseal, check, after: {blocks:?}");
    let both = format!("{K2},{K1}");
    server
        .restart(vec![("TWINCERT_MASTER_KEY".into(), both.clone())])
        .await;
    let vars = [("TWINCERT_MASTER_KEY", both.as_str()), ("OLD_KEY_ID", "k1")];
    let out = run_script(&server, "retire-master-key.md", &blocks[0], &vars);
    assert!(
        out.contains("re-sealed 6 private keys and 2 ACME accounts"),
        "{out}"
    );
    run_script(&server, "retire-master-key.md", &blocks[1], &vars);
    let m = server.metrics_text().await;
    assert!(
        m.contains("twincert_sealed_secrets{key_id=\"k1\"} 0"),
        "{m}"
    );
    server
        .restart(vec![("TWINCERT_MASTER_KEY".into(), K2.into())])
        .await;
    let out = run_script(
        &server,
        "retire-master-key.md",
        &blocks[2],
        &[("TWINCERT_MASTER_KEY", K2)],
    );
    for n in NAMES {
        assert!(out.contains(n), "{out}");
        assert!(server.key_pem(n, "primary").await.contains("PRIVATE KEY"));
    }
}
