//! Issue 17, item 5a: Caddy's `acme_server` (2.6.2, smallstep inside) as
//! one of a name's two CAs, the other a test Pebble — a second ACME server
//! implementation end to end: HTTP-01 and DNS-01 issuance (a wildcard
//! too), renewal, a CA-wide swap away from Caddy with re-provisioning
//! back from it after the hold-off, and revocation; then its quirks: a
//! failed validation, a burst (`serverInternal`), a restart and a lost
//! ACME database, an External Account Binding it ignores.
//!
//! How Caddy is run (its own mount namespace with private `/etc/hosts`,
//! `/etc/resolv.conf` and trust-store directories; relays from a loopback
//! address of its own to twincert's HTTP-01 port and to the test BIND)
//! and why is in [`crate::caddy_ca`]. twincert configures it with the
//! `generic` profile: the entry names the directory URL, the root group
//! and the root its HTTPS chains to (Caddy's own `local` root), nothing
//! else. Every test asserts that the machine's trust stores are unchanged.
//!
//! Issuance times per slot are printed (`cargo test -- --nocapture`).
//! What Caddy does differently from Pebble, and how twincert copes, is in
//! `docs/interop.md`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::caddy_ca::{CaddyCa, TrustStores};
use crate::emergency::{get, post, sqlite_url};
use crate::harness::TwoCas;
use crate::server::{CaEntry, Server, ServerOptions};

/// The id twincert knows Caddy's CA by.
const CADDY: &str = "caddy";

/// libfaketime (Debian `faketime`, `/usr/lib/<arch>/faketime/`), to move
/// twincert's clock forward.
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libfaketime not found: apt-get install faketime"))
        .display()
        .to_string()
}

/// Pebble pair + BIND, a Caddy CA beside them, and the options for a
/// twincert whose CAs are `pebble-a` and `caddy`.
async fn start(
    extra_names: &[&str],
    unreachable_names: &[&str],
) -> (TwoCas, CaddyCa, ServerOptions) {
    let cas = TwoCas::start(0).await;
    let caddy = CaddyCa::start(
        cas.dir(),
        cas.http01_port,
        cas.dns.port(),
        extra_names,
        unreachable_names,
    )
    .await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.b_ca = Some(CaEntry {
        id: CADDY.into(),
        profile: "generic".into(),
        directory_url: caddy.directory_url(),
        trust_roots_file: caddy.root_pem_path(),
        root_group: "caddy-local".into(),
        extra: String::new(),
    });
    (cas, caddy, opts)
}

/// Waits until `name` is ready and returns it with the seconds from
/// `since` at which each slot first showed a valid certificate.
pub(crate) async fn ready_with_times(
    server: &Server,
    name: &str,
    since: Instant,
    secs: u64,
) -> (Value, [(String, f64); 2]) {
    let deadline = since + Duration::from_secs(secs);
    let mut at: [Option<f64>; 2] = [None, None];
    loop {
        let v = server.name(name).await;
        for (i, slot) in ["primary", "backup"].iter().enumerate() {
            if at[i].is_none() && v[slot]["state"] == "valid" {
                at[i] = Some(since.elapsed().as_secs_f64());
            }
        }
        if v["state"] == "ready" {
            let slot = |i: usize, s: &str| {
                (
                    format!("{s} ({})", v[s]["ca"].as_str().unwrap_or("?")),
                    at[i].unwrap_or_default(),
                )
            };
            let times = [slot(0, "primary"), slot(1, "backup")];
            for (what, t) in &times {
                println!("issuance {name} {what}: {t:.2} s");
            }
            return (v, times);
        }
        assert!(
            Instant::now() < deadline,
            "{name} not ready after {secs} s: {v:#}\n--- twincert log tail ---\n{}",
            tail(&server.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every name is ready, polling all of them together, and
/// returns each with the seconds from `since` at which its primary and
/// backup first showed a valid certificate.
async fn all_ready_with_times(
    server: &Server,
    names: &[&str],
    since: Instant,
    secs: u64,
) -> Vec<(Value, [f64; 2])> {
    let deadline = since + Duration::from_secs(secs);
    let mut out: Vec<(Value, [Option<f64>; 2])> = vec![(Value::Null, [None, None]); names.len()];
    loop {
        for (i, n) in names.iter().enumerate() {
            if out[i].0["state"] == "ready" {
                continue;
            }
            let v = server.name(n).await;
            let t = since.elapsed().as_secs_f64();
            for (j, slot) in ["primary", "backup"].iter().enumerate() {
                if out[i].1[j].is_none() && v[slot]["state"] == "valid" {
                    out[i].1[j] = Some(t);
                }
            }
            out[i].0 = v;
        }
        if out.iter().all(|(v, _)| v["state"] == "ready") {
            return out
                .into_iter()
                .map(|(v, t)| (v, [t[0].unwrap_or_default(), t[1].unwrap_or_default()]))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "not all ready after {secs} s\n--- twincert log tail ---\n{}",
            tail(&server.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn tail(log: &str, n: usize) -> String {
    let mut lines: Vec<&str> = log.lines().rev().take(n).collect();
    lines.reverse();
    lines.join("\n")
}

pub(crate) fn str_of<'a>(v: &'a Value, slot: &str, field: &str) -> &'a str {
    v[slot][field].as_str().unwrap_or_default()
}

/// Seconds between the slot's `not_before` and `not_after`.
pub(crate) fn lifetime(v: &Value, slot: &str) -> i64 {
    let t = |f: &str| {
        time::OffsetDateTime::parse(
            str_of(v, slot, f),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{slot}.{f}: {e}: {v:#}"))
        .unix_timestamp()
    };
    t("not_after") - t("not_before")
}

/// Whether the chain verifies for `dns` up to the PEM root.
pub(crate) fn verifies(chain_pem: &str, root_pem: &str, dns: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, UnixTime};
    let ders = |pem: &str| {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    let chain = ders(chain_pem)?;
    let roots = ders(root_pem)?;
    let anchor = webpki::anchor_from_trusted_cert(&roots[0]).map_err(|e| e.to_string())?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| e.to_string())?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let name =
        rustls_pki_types::ServerName::try_from(dns.to_string()).map_err(|e| e.to_string())?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|e| e.to_string())
}

/// HTTP-01 with Caddy as the backup CA: both slots issue, Caddy's
/// certificate chains to Caddy's root and lives 12 h; twincert renews it
/// on its own when its clock reaches the renewal point (two thirds: 8 h,
/// reached by running twincert under libfaketime 8 h 20 min ahead); a key
/// reported compromised is revoked at Caddy with reason keyCompromise and
/// re-issued under a new key; deleting the name with `?revoke=true`
/// revokes both certificates (cessationOfOperation), as Caddy's database
/// shows.
#[tokio::test(flavor = "multi_thread")]
async fn caddy_as_backup_ca_issues_over_http01_renews_and_revokes() {
    let stores = TrustStores::snapshot();
    let (cas, caddy, opts) = start(&[], &[]).await;
    let mut server = Server::start(&cas, opts).await;
    let name = "a.example.test";
    let t0 = Instant::now();
    let (st, body) = server
        .create(json!({
            "name": name,
            "domains": [name, "www.example.test"],
            "cas": ["pebble-a", CADDY],
        }))
        .await;
    assert_eq!(st, 201, "{body}");
    let (first, _) = ready_with_times(&server, name, t0, 90).await;
    assert_eq!(first["primary"]["ca"], "pebble-a", "{first:#}");
    assert_eq!(first["backup"]["ca"], CADDY, "{first:#}");
    assert!(first["diversity_error"].is_null(), "{first:#}");
    // Caddy's certificates name no CRL and no OCSP responder: nothing to
    // watch, and twincert says so rather than guess.
    assert_eq!(
        first["backup"]["revocation"]["status"], "unchecked",
        "{first:#}"
    );
    assert_ne!(
        str_of(&first, "primary", "spki_sha256"),
        str_of(&first, "backup", "spki_sha256")
    );
    // Caddy 2.6.2: 12-hour certificates (no option to change it), with
    // `notBefore` backdated one minute.
    assert_eq!(lifetime(&first, "backup"), 12 * 3600 + 60, "{first:#}");
    let chain = server.chain_pem(name, "backup").await;
    let root = caddy.root_pem();
    for dns in [name, "www.example.test"] {
        verifies(&chain, &root, dns).expect("Caddy's certificate chains to Caddy's root");
    }
    assert!(
        verifies(&chain, &cas.a.root_pem().await, name).is_err(),
        "not to Pebble's"
    );

    // Renewal: twincert's clock 8 h 20 min ahead puts Caddy's slot past
    // its renewal point (8 h of 12), not Pebble's (5 years).
    let t1 = Instant::now();
    server
        .restart(vec![
            ("LD_PRELOAD".into(), libfaketime()),
            ("FAKETIME".into(), "+30000".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_DONT_RESET".into(), "1".into()),
        ])
        .await;
    let renewed = server
        .wait_for(name, 90, |v| {
            v["state"] == "ready"
                && !str_of(v, "backup", "serial").is_empty()
                && str_of(v, "backup", "serial") != str_of(&first, "backup", "serial")
        })
        .await;
    println!(
        "renewal {name} backup ({CADDY}): {:.2} s after the clock moved",
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(renewed["backup"]["ca"], CADDY);
    assert_eq!(
        renewed["primary"]["serial"], first["primary"]["serial"],
        "Pebble's 5-year certificate is not due"
    );
    let keys = [
        str_of(&first, "primary", "spki_sha256"),
        str_of(&first, "backup", "spki_sha256"),
        str_of(&renewed, "backup", "spki_sha256"),
    ];
    assert!(
        keys[2] != keys[0] && keys[2] != keys[1],
        "renewed under a fresh key: {keys:?}"
    );
    // Every Caddy certificate is due again at once under this clock: back
    // to real time before looking further.
    server.restart(Vec::new()).await;
    let now = server.wait_ready(name, 30).await;

    // Revocation at Caddy: the backup's key is reported compromised.
    let old = now["backup"]["serial"].clone();
    let (st, v) = post(
        &server,
        &format!("/v1/names/{name}/compromise"),
        json!({"slot": "backup", "reason": "interop: key leaked"}),
    )
    .await;
    assert_eq!(st, 202, "{v:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let log = server.log();
        if log.contains("certificate revoked") {
            break Ok(());
        }
        if let Some(line) = log.lines().find(|l| l.contains("revocation failed")) {
            break Err(line.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "no revocation result\n{}",
            tail(&log, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        outcome,
        Ok(()),
        "Caddy refused the revocation\n--- caddy ---\n{}",
        tail(&caddy.log(), 20)
    );
    // Caddy recorded it, with the reason (keyCompromise = 1).
    let hex = |v: &Value| {
        v.as_str()
            .unwrap_or_default()
            .trim_start_matches('0')
            .to_string()
    };
    assert_eq!(
        caddy.revocations().get(&hex(&old)),
        Some(&1),
        "{:?}",
        caddy.revocations()
    );
    let after = server
        .wait_for(name, 90, |v| {
            v["state"] == "ready" && v["backup"]["serial"] != old && v["backup"]["ca"] == CADDY
        })
        .await;
    assert_ne!(
        str_of(&after, "backup", "spki_sha256"),
        str_of(&now, "backup", "spki_sha256")
    );

    // Deleting with `?revoke=true` revokes both (cessationOfOperation) —
    // at Pebble and at Caddy.
    let revoked = |log: &str, ca: &str| {
        log.lines()
            .filter(|l| l.contains("certificate revoked") && l.contains(&format!("ca={ca}")))
            .count()
    };
    let before = (
        revoked(&server.log(), "pebble-a"),
        revoked(&server.log(), CADDY),
    );
    let rsp = server
        .client()
        .delete(format!("{}/v1/names/{name}?revoke=true", server.base()))
        .bearer_auth(crate::server::ADMIN_TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(rsp.status().as_u16(), 204);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = server.log();
        if (revoked(&log, "pebble-a"), revoked(&log, CADDY)) == (before.0 + 1, before.1 + 1) {
            break;
        }
        assert!(!log.contains("revocation failed"), "{}", tail(&log, 20));
        assert!(Instant::now() < deadline, "{}", tail(&log, 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // cessationOfOperation = 5.
    assert_eq!(
        caddy.revocations().get(&hex(&after["backup"]["serial"])),
        Some(&5),
        "{:?}",
        caddy.revocations()
    );

    drop(server);
    drop(caddy);
    assert_eq!(
        stores.diff(&TrustStores::snapshot()),
        Vec::<String>::new(),
        "the machine's trust stores changed"
    );
}

/// DNS-01 (RFC 2136 on the test BIND, which Caddy reaches through its
/// private resolv.conf) with Caddy as the primary CA, for a name and for
/// an apex plus wildcard; then a CA-wide swap away from Caddy: both names
/// flip to Pebble, and — with only two CAs — the abandoned slots come back
/// from Caddy after the hold-off, under new keys.
#[tokio::test(flavor = "multi_thread")]
async fn caddy_as_primary_over_dns01_then_a_swap_away_and_reprovisioning_back() {
    const HOLD_OFF: u64 = 4;
    let stores = TrustStores::snapshot();
    let (cas, caddy, mut opts) = start(&[], &[]).await;
    opts.env = vec![(
        "TWINCERT_POLICY_REPROVISION_SAME_CA_AFTER_SECONDS".into(),
        HOLD_OFF.to_string(),
    )];
    let server = Server::start(&cas, opts).await;
    let names = ["b.example.test", "example.test"];
    let t0 = Instant::now();
    let (st, body) = server
        .create(json!({"name": names[0], "challenge": "dns-01", "cas": [CADDY, "pebble-a"]}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = server
        .create(json!({
            "name": names[1],
            "domains": ["example.test", "*.example.test"],
            "challenge": "dns-01",
            "cas": [CADDY, "pebble-a"],
        }))
        .await;
    assert_eq!(st, 201, "{body}");
    let mut before = Vec::new();
    for n in names {
        let (v, _) = ready_with_times(&server, n, t0, 120).await;
        assert_eq!(v["primary"]["ca"], CADDY, "{v:#}");
        assert_eq!(v["backup"]["ca"], "pebble-a", "{v:#}");
        before.push(v);
    }
    let chain = server.chain_pem("example.test", "primary").await;
    verifies(&chain, &caddy.root_pem(), "x.example.test").expect("wildcard from Caddy");
    verifies(&chain, &caddy.root_pem(), "example.test").expect("apex from Caddy");
    // No TXT record is left behind.
    for n in ["b.example.test", "example.test"] {
        assert_eq!(
            cas.dns.txt(&format!("_acme-challenge.{n}")),
            Vec::<String>::new()
        );
    }

    let t1 = Instant::now();
    let (st, swap) = post(
        &server,
        "/v1/swaps",
        json!({"ca": CADDY, "reason": "interop: Caddy CA incident"}),
    )
    .await;
    assert_eq!(st, 200, "{swap:#}");
    assert_eq!(swap["report"]["swapped"], 2, "{swap:#}");
    let op = swap["report"]["operation_id"]
        .as_str()
        .expect("operation id")
        .to_string();
    for n in names {
        let v = server.name(n).await;
        assert_eq!(v["active"], "backup", "{v:#}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = get(&server, &format!("/v1/operations/{op}")).await;
        if p["progress"]["done"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "re-provisioning not done: {p:#}\n{}",
            tail(&server.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "swap away from {CADDY} and re-provisioning back (hold-off {HOLD_OFF} s): {:.2} s",
        t1.elapsed().as_secs_f64()
    );
    for (old, n) in before.iter().zip(names) {
        let v = server.wait_ready(n, 30).await;
        assert_eq!(v["active"], "backup", "{v:#}");
        assert_eq!(v["primary"]["ca"], CADDY, "{v:#}");
        assert_ne!(v["primary"]["serial"], old["primary"]["serial"], "{v:#}");
        assert_ne!(
            v["primary"]["spki_sha256"], old["primary"]["spki_sha256"],
            "{v:#}"
        );
        assert!(v["primary"]["reprovision"].is_null(), "{v:#}");
    }

    drop(server);
    drop(caddy);
    assert_eq!(
        stores.diff(&TrustStores::snapshot()),
        Vec::<String>::new(),
        "the machine's trust stores changed"
    );
}

/// Caddy (smallstep) validates inside the "challenge ready" POST and, when
/// it cannot reach the name, answers with the challenge still `pending`
/// and an `error` (type `connection`, no identifier in the detail), the
/// order pending too. twincert treats that as this order's end: the slot
/// shows which name and which method failed, and a later attempt opens a
/// fresh order (new tokens) instead of waiting on the pending one; the
/// other slot is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn a_validation_caddy_cannot_make_is_shown_with_the_name_and_retried_with_a_new_order() {
    let name = "dead.example.test";
    let stores = TrustStores::snapshot();
    let (cas, caddy, opts) = start(&[], &[name]).await;
    let server = Server::start(&cas, opts).await;
    let (st, body) = server
        .create(json!({"name": name, "cas": ["pebble-a", CADDY]}))
        .await;
    assert_eq!(st, 201, "{body}");
    let v = server
        .wait_for(name, 30, |v| {
            v["primary"]["state"] == "valid" && !v["backup"]["last_error"].is_null()
        })
        .await;
    let error = str_of(&v, "backup", "last_error");
    assert!(
        error.contains("http-01 validation of dead.example.test failed: connection:"),
        "{v:#}"
    );
    assert_eq!(v["state"], "degraded", "{v:#}");
    let store = twincert::store::Store::connect(&sqlite_url(cas.dir()))
        .await
        .expect("store");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let orders = store
            .orders()
            .orders_of(name, twincert::domain::Slot::Backup)
            .await
            .expect("orders");
        // One twincert order for the slot; each attempt a new ACME order.
        if orders.first().is_some_and(|o| o.acme_orders >= 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second ACME order: {orders:?}\n{}",
            tail(&server.log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        caddy.log().contains(r#"\"status\":\"pending\""#)
            && caddy
                .log()
                .contains("urn:ietf:params:acme:error:connection"),
        "Caddy answered the challenge pending with a connection error"
    );
    drop(server);
    drop(caddy);
    assert_eq!(
        stores.diff(&TrustStores::snapshot()),
        Vec::<String>::new(),
        "the machine's trust stores changed"
    );
}

/// A burst: 20 names at once, every key type, Caddy as the backup CA with
/// twincert allowed 20 orders in flight there. Every slot issues; Caddy's
/// occasional `serverInternal` under load (seen by others with smallstep)
/// would be retried as transient. Prints per-slot times and how many
/// attempts failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_names_with_every_key_type_issues_at_caddy() {
    const N: usize = 20;
    let names: Vec<String> = (0..N).map(|i| format!("burst{i}.example.test")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let stores = TrustStores::snapshot();
    let (cas, caddy, mut opts) = start(&refs, &[]).await;
    opts.env = vec![("TWINCERT_CA_CADDY_CONCURRENCY".into(), N.to_string())];
    let server = Server::start(&cas, opts).await;
    let key_types = ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"];
    let t0 = Instant::now();
    for (i, n) in names.iter().enumerate() {
        let (st, body) = server
            .create(json!({"name": n, "cas": ["pebble-a", CADDY], "key_type": key_types[i % 4]}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let times = all_ready_with_times(&server, &refs, t0, 180).await;
    let (mut pebble_times, mut caddy_times) = (Vec::new(), Vec::new());
    for (i, (v, [primary, backup])) in times.iter().enumerate() {
        assert_eq!(v["backup"]["ca"], CADDY, "{v:#}");
        assert_eq!(v["key_type"], key_types[i % 4], "{v:#}");
        pebble_times.push(*primary);
        caddy_times.push(*backup);
    }
    let log = server.log();
    let failed = log.matches("attempt failed").count();
    let internal = log.matches("serverInternal").count();
    caddy_times.sort_by(f64::total_cmp);
    pebble_times.sort_by(f64::total_cmp);
    println!(
        "burst of {N}: all ready in {:.2} s; primary (pebble-a) median {:.2} s, max {:.2} s; \
         backup ({CADDY}) median {:.2} s, max {:.2} s; {failed} failed attempts \
         ({internal} serverInternal)",
        t0.elapsed().as_secs_f64(),
        pebble_times[N / 2],
        pebble_times[N - 1],
        caddy_times[N / 2],
        caddy_times[N - 1],
    );
    for l in log.lines().filter(|l| l.contains("attempt failed")) {
        println!("  {l}");
    }
    // Caddy's problem documents carry no `status`: serverInternal must
    // still be retried as transient, not end the order as final.
    assert!(
        !log.lines()
            .any(|l| l.contains("serverInternal") && l.contains("kind=Final")),
        "serverInternal taken as final"
    );
    drop(server);
    drop(caddy);
    assert_eq!(
        stores.diff(&TrustStores::snapshot()),
        Vec::<String>::new(),
        "the machine's trust stores changed"
    );
}

/// Caddy keeps its ACME database (accounts, orders, revocations) under
/// its data directory (`$XDG_DATA_HOME/caddy/acme_server/`), apart from
/// the configured storage that holds its CA. A restart with the database
/// kept changes nothing: twincert goes on with its account. A restart
/// without it (a container whose data directory is not on a volume) keeps
/// the root but forgets the account; smallstep then answers every request
/// signed by it with an error body that is no ACME problem (no type, no
/// detail; Caddy logs "not found") instead of RFC 8555's
/// `accountDoesNotExist`, and the slot says so (twincert does not
/// re-register on its own yet: docs/interop.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_caddy_restart_keeps_the_account_and_a_lost_acme_database_is_reported() {
    let stores = TrustStores::snapshot();
    let (cas, mut caddy, opts) = start(&[], &[]).await;
    let server = Server::start(&cas, opts).await;
    let create = async |n: &str| {
        let (st, body) = server
            .create(json!({"name": n, "cas": ["pebble-a", CADDY]}))
            .await;
        assert_eq!(st, 201, "{body}");
    };
    create("b.example.test").await;
    server.wait_ready("b.example.test", 30).await;

    caddy.restart(false).await;
    create("c.example.test").await;
    let v = server.wait_ready("c.example.test", 30).await;
    assert_eq!(v["backup"]["ca"], CADDY, "{v:#}");
    // One account object ever answered (its JSON names its orders URL).
    assert_eq!(
        caddy.log().matches(r#"\"orders\":\"https://"#).count(),
        1,
        "no second account"
    );

    caddy.restart(true).await;
    create("d.example.test").await;
    let v = server
        .wait_for("d.example.test", 30, |v| {
            v["primary"]["state"] == "valid" && v["backup"]["last_error"].is_string()
        })
        .await;
    let error = str_of(&v, "backup", "last_error");
    assert!(
        error.contains("CA caddy") && error.contains("error answer without an ACME problem type"),
        "{v:#}"
    );
    assert_eq!(v["state"], "degraded", "{v:#}");

    drop(server);
    drop(caddy);
    assert_eq!(
        stores.diff(&TrustStores::snapshot()),
        Vec::<String>::new(),
        "the machine's trust stores changed"
    );
}

/// Caddy 2.6.2 neither asks for External Account Binding (`meta` is
/// empty) nor checks one it is sent: an account registered with an EAB
/// key id and HMAC Caddy has never heard of is created, and issues. A
/// wrong EAB setting for a Caddy CA is therefore not caught by Caddy.
#[tokio::test(flavor = "multi_thread")]
async fn caddy_accepts_and_ignores_an_external_account_binding() {
    let stores = TrustStores::snapshot();
    let (cas, caddy, mut opts) = start(&[], &[]).await;
    opts.env = vec![
        ("TWINCERT_CA_CADDY_EAB_KID".into(), "unknown-kid".into()),
        (
            "TWINCERT_CA_CADDY_EAB_HMAC".into(),
            "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W".into(),
        ),
    ];
    let server = Server::start(&cas, opts).await;
    let (st, body) = server
        .create(json!({"name": "b.example.test", "cas": ["pebble-a", CADDY]}))
        .await;
    assert_eq!(st, 201, "{body}");
    let v = server.wait_ready("b.example.test", 30).await;
    assert_eq!(v["backup"]["ca"], CADDY, "{v:#}");
    drop(server);
    drop(caddy);
    assert_eq!(
        stores.diff(&TrustStores::snapshot()),
        Vec::<String>::new(),
        "the machine's trust stores changed"
    );
}
