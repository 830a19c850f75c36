//! Issue 17 item 4: ACME Renewal Information (RFC 9773) from a real ACME
//! server, Pebble 2.6.0 (Debian 13's package, unpacked by
//! `scripts/pebble26.sh`; see docs/testing.md), with no proxy in between:
//! its `renewalInfo` windows are polled and used, a certificate revoked at
//! the CA gets Pebble's immediate window and is renewed at once with
//! `replaces`, which Pebble checks.
//!
//! What Pebble cannot do — move the window of a certificate that is not
//! revoked — stays with the harness proxy (`revocation_harness::AriProxy`,
//! test `revocation::ari_windows_schedule_renewal_inside_them_…`).
//!
//! Also issue 17 item 2 end to end: a certificate of a few minutes is
//! scheduled by the same fractions as a 90-day one (`policy::renew_at`),
//! and one without a CRL or OCSP URL is shown as "not checked", not as an
//! error.

use std::time::Duration;

use serde_json::{Value, json};
use twincert::store::Store;

use crate::emergency::{ca_client, get, revoke_at_ca, sqlite_url};
use crate::harness::{PebbleOptions, TwoCas, pebble26_bin};
use crate::revocation_harness::ari_cert_id;
use crate::server::{Server, ServerOptions};

fn unix(rfc: &Value) -> i64 {
    let s = rfc.as_str().unwrap_or_else(|| panic!("not a time: {rfc}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .unix_timestamp()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    twincert::certs::chain_ders(pem)
        .expect("chain")
        .into_iter()
        .next()
        .expect("leaf")
}

/// CA B's lifetime: short enough that ARI is polled every 30 s
/// (`policy::ari_max_poll_seconds`: 1/24 of it) and the test ends long
/// before the renewal point (2/3: 8 minutes).
const SHORT: i64 = 720;
/// CA A's lifetime: long enough that Pebble's `notAfter − lifetime/3 ±
/// 24 h` window lies inside it.
const LONG: i64 = 4 * 86_400;

/// Server: **Pebble 2.6.0** for both CAs, no proxy. A issues 4-day
/// certificates, B 12-minute ones.
#[tokio::test(flavor = "multi_thread")]
async fn pebble_26_windows_are_polled_and_a_revoked_certificate_is_renewed_at_once_with_replaces() {
    let Some(bin) = pebble26_bin("pebble_26_windows_are_polled_…") else {
        return;
    };
    let opts = |validity: i64| PebbleOptions {
        binary: Some(bin.clone()),
        validity_seconds: Some(validity as u64),
        ..PebbleOptions::default()
    };
    let cas = TwoCas::start_each(opts(LONG), opts(SHORT)).await;
    let dir: Value = cas
        .a
        .client()
        .get(cas.a.directory_url())
        .send()
        .await
        .expect("directory")
        .json()
        .await
        .expect("directory JSON");
    let base = dir["renewalInfo"].as_str().expect("Pebble 2.6 offers ARI");
    assert!(
        base.ends_with("/draft-ietf-acme-ari-03/renewalInfo"),
        "{base}"
    );

    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = vec![
        (
            "TWINCERT_REVOCATION_CHECK_INTERVAL_SECONDS".into(),
            "1".into(),
        ),
        (
            "TWINCERT_REVOCATION_ARI_MIN_POLL_SECONDS".into(),
            "1".into(),
        ),
    ];
    let server = Server::start(&cas, opts).await;
    let (st, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");

    let v = server
        .wait_for("a.example.test", 60, |v| {
            // The ARI windows and the revocation status are written by
            // the same pass, but not in one transaction: wait for both.
            v["state"] == "ready"
                && ["primary", "backup"].iter().all(|s| {
                    v[s]["ari"]["window_start"].is_string()
                        && v[s]["revocation"]["status"] != "unchecked"
                })
        })
        .await;

    // A (4 days): Pebble's window is notAfter − lifetime/3 ± 24 h, inside
    // the lifetime: the renewal point is a random one in it.
    let p = &v["primary"];
    assert_eq!(p["ca"], "pebble-a");
    let (nb, na) = (unix(&p["not_before"]), unix(&p["not_after"]));
    let (ws, we) = (
        unix(&p["ari"]["window_start"]),
        unix(&p["ari"]["window_end"]),
    );
    let ideal = na - (na - nb + 1) / 3;
    assert!((ws - (ideal - 86_400)).abs() <= 2, "{p:#}");
    assert!((we - (ideal + 86_400)).abs() <= 2, "{p:#}");
    let renew = unix(&p["renew_after"]);
    assert!(
        (ws..=we).contains(&renew),
        "renewal not in the window: {p:#}"
    );

    // B (12 minutes): the same ±24 h window is wider than the whole life
    // (it starts before issuance): shown, but the lifetime-based point
    // (2/3, policy::renew_at) stands — else a random point in it would
    // renew at once, again and again.
    let b = &v["backup"];
    assert_eq!(b["ca"], "pebble-b");
    let (nb, na) = (unix(&b["not_before"]), unix(&b["not_after"]));
    assert!((na - nb - SHORT).abs() <= 1, "{b:#}");
    let (ws, we) = (
        unix(&b["ari"]["window_start"]),
        unix(&b["ari"]["window_end"]),
    );
    assert!(ws < nb && we > na, "{b:#}");
    assert_eq!(
        unix(&b["renew_after"]),
        twincert::policy::renew_at(nb, na, 2.0 / 3.0),
        "{b:#}"
    );
    // Pebble puts no CRL distribution point and (no ocspResponderURL
    // configured) no OCSP URL in its certificates: not checked, no error.
    for slot in [p, b] {
        let r = &slot["revocation"];
        assert_eq!(r["status"], "no_source", "{slot:#}");
        assert!(r["check_error"].is_null(), "{slot:#}");
        assert!(
            r["note"].as_str().is_some_and(
                |n| n.starts_with("not checked: the CA publishes no revocation source")
            ),
            "{slot:#}"
        );
    }
    let a_renew = p["renew_after"].clone();

    // Revoke B's certificate at the CA (ACME revokeCert with twincert's
    // account): Pebble's next window for it is [now − 1 h, now − 30 min],
    // and twincert renews at once, naming the revoked one in `replaces`.
    let old_serial = b["serial"].as_str().expect("serial").to_string();
    let chain = server.chain_pem("a.example.test", "backup").await;
    let old_id = ari_cert_id(&leaf_der(&chain));
    let store = Store::connect(&sqlite_url(cas.dir())).await.expect("store");
    revoke_at_ca(&server, &store, "pebble-b", &chain).await;
    let status = cas.b.cert_status(&old_serial).await;
    assert!(
        status["Status"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("revoked")),
        "{status:#}"
    );
    let v = server
        .wait_for("a.example.test", 90, |v| {
            v["backup"]["serial"]
                .as_str()
                .is_some_and(|s| s != old_serial)
                && v["state"] == "ready"
        })
        .await;
    assert_eq!(v["backup"]["ca"], "pebble-b", "{v:#}");
    assert_eq!(v["active"], "primary", "the standby was renewed, no swap");
    assert_eq!(v["primary"]["renew_after"], a_renew, "A untouched: {v:#}");

    // What twincert sent, and that Pebble took it as a replacement.
    let sent = store
        .orders()
        .order_replaces("a.example.test", twincert::domain::Slot::Backup)
        .await
        .expect("orders");
    assert_eq!(sent.last(), Some(&Some(old_id.clone())), "{sent:?}");
    let new_serial = v["backup"]["serial"].as_str().expect("serial");
    assert!(cas.b.issued(new_serial).await);
    let log = cas.b.log();
    assert!(
        log.contains("is a replacement of"),
        "Pebble did not record a replacement:\n{log}"
    );
    // Pebble enforces `replaces`: the revoked certificate now has a
    // finalized replacement, so naming it again is refused — 409 with type
    // `malformed` (not RFC 9773's `alreadyReplaced`), which twincert's ACME
    // client classifies as final (the issuer then orders once more without
    // `replaces`). A certID whose AKI is not this CA's is `malformed` too.
    let ca = ca_client(&server, &store, "pebble-b").await;
    let domains = vec!["a.example.test".to_string()];
    for (replaces, says) in [
        (old_id.as_str(), "already has a replacement order"),
        ("AAAA.AQ", "Authority Key Identifier"),
    ] {
        let err = match ca.new_order(&domains, Some(replaces), None).await {
            Ok(_) => panic!("Pebble 2.6 accepted replaces = {replaces}"),
            Err(e) => e,
        };
        assert_eq!(err.kind, twincert::ca::AcmeErrorKind::Final, "{err:?}");
        assert!(err.message.contains(says), "{replaces}: {err:?}");
    }

    // The renewal was ARI's doing, audited with Pebble's window.
    let page = get(&server, "/v1/events?limit=1000").await;
    let ev = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "ari.renew_now" && e["target"] == "a.example.test/backup")
        .cloned()
        .unwrap_or_else(|| panic!("no ari.renew_now for the backup: {page:#}"));
    let d: Value = serde_json::from_str(ev["details"].as_str().expect("details")).expect("json");
    let (ws, we) = (unix(&d["window_start"]), unix(&d["window_end"]));
    assert_eq!(we - ws, 1800, "Pebble's immediate window: {d:#}");

    // The new certificate gets its own (normal) window in turn.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server
        .wait_for("a.example.test", 60, |v| {
            v["backup"]["ari"]["window_end"].as_str().is_some_and(|_| {
                unix(&v["backup"]["ari"]["window_end"]) > unix(&v["backup"]["not_after"])
            })
        })
        .await;
}
