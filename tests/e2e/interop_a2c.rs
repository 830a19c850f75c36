//! Issue 17, items 1 and 5b: acme2certifier (0.46.3, OpenSSL CA handler)
//! as one of a name's two CAs, the other a test Pebble — a third ACME
//! server implementation end to end, and the server the profile tests
//! run against (it offers ACME profiles; Pebble 2.4 and Caddy do not).
//!
//! How it is run (a venv, a wsgiref wrapper serving HTTPS on loopback,
//! its resolver pointed at the test BIND) is in [`crate::a2c_ca`].
//! twincert configures it with the `generic` CA profile: directory URL,
//! root group, the harness's local CA for its HTTPS, and a contact
//! (acme2certifier refuses accounts without one). DNS-01 only: its
//! HTTP-01 validator always connects to port 80.

use std::time::Instant;

use serde_json::json;

use crate::a2c_ca::{A2cCa, A2cOptions};
use crate::emergency::sqlite_url;
use crate::harness::TwoCas;
use crate::interop_caddy::{lifetime, ready_with_times, verifies};
use crate::server::{CaEntry, Server, ServerOptions};

/// The id twincert knows acme2certifier's CA by.
pub const A2C: &str = "a2c";

/// The `[[cas]]` entry for `a2c` (profile `generic`), with `extra` TOML
/// lines (e.g. `acme_profile = "..."`).
pub fn a2c_entry(a2c: &A2cCa, extra: &str) -> CaEntry {
    CaEntry {
        id: A2C.into(),
        profile: "generic".into(),
        directory_url: a2c.directory_url(),
        trust_roots_file: a2c.https_roots_path(),
        root_group: "a2c-test".into(),
        extra: format!("contact = [\"mailto:ops@example.test\"]\n{extra}"),
    }
}

/// Pebble pair + BIND, an acme2certifier beside them started with `a2c`,
/// and the options for a twincert whose CAs are `pebble-a` and `a2c`.
pub async fn start(a2c: &A2cOptions, extra: &str) -> (TwoCas, A2cCa, ServerOptions) {
    let cas = TwoCas::start(0).await;
    let ca = A2cCa::start(cas.dir(), &cas.tls, cas.dns.port(), a2c).await;
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.b_ca = Some(a2c_entry(&ca, extra));
    (cas, ca, opts)
}

/// A name issued with its primary at acme2certifier and its backup at
/// Pebble over DNS-01 through the test BIND: both certificates verify to
/// their CA's root, acme2certifier's lives the 30 days its handler is
/// configured with, and no TXT record is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a2c_as_primary_over_dns01_beside_pebble() {
    let (cas, a2c, opts) = start(&A2cOptions::default(), "").await;
    let server = Server::start(&cas, opts).await;
    let name = "b.example.test";
    let t0 = Instant::now();
    let (st, body) = server
        .create(json!({"name": name, "challenge": "dns-01", "cas": [A2C, "pebble-a"]}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (v, _) = ready_with_times(&server, name, t0, 120).await;
    assert_eq!(v["primary"]["ca"], A2C, "{v:#}");
    assert_eq!(v["backup"]["ca"], "pebble-a", "{v:#}");
    let chain = server.chain_pem(name, "primary").await;
    verifies(&chain, &a2c.root_pem(), name).unwrap_or_else(|e| {
        panic!(
            "acme2certifier's chain: {e}\n{chain}\n--- a2c log ---\n{}",
            a2c.log()
        )
    });
    // openssl_ca_handler: notBefore is now, notAfter now + 30 days.
    let l = lifetime(&v, "primary");
    assert!((l - 30 * 86_400).abs() <= 120, "lifetime {l} s: {v:#}");
    assert_eq!(
        cas.dns.txt(&format!("_acme-challenge.{name}")),
        Vec::<String>::new()
    );
}

/// acme2certifier with two profiles of different lifetimes (its
/// multi-handler: `classic` 30 days, `shortlived` 6 days), offered in its
/// directory's `meta.profiles`.
fn two_profiles() -> A2cOptions {
    let mut o = A2cOptions::default();
    o.profiles(&[("classic", 30), ("shortlived", 6)]);
    o
}

/// Issue 17, item 1: the `[[cas]] acme_profile` (`classic`) for one name
/// and a name-level override (`shortlived`) for another; each certificate
/// lives what its profile's handler issues (checked in the certificate),
/// and the slot shows the profile it was ordered with, unconfirmed —
/// acme2certifier never echoes the profile in the order. Overrides for a
/// profile the CA does not offer, or for a CA that is not the name's, are
/// refused at creation with the CA and its offered profiles.
#[tokio::test(flavor = "multi_thread")]
async fn a2c_profiles_with_two_lifetimes_and_a_name_level_override() {
    let (cas, a2c, opts) = start(&two_profiles(), "acme_profile = \"classic\"").await;
    let server = Server::start(&cas, opts).await;
    let t0 = Instant::now();
    let (st, body) = server
        .create(json!({"name": "a.example.test", "challenge": "dns-01", "cas": [A2C, "pebble-a"]}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = server
        .create(json!({
            "name": "b.example.test",
            "challenge": "dns-01",
            "cas": [A2C, "pebble-a"],
            "acme_profiles": {A2C: "shortlived"},
        }))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(
        body["acme_profiles"],
        json!({A2C: "shortlived"}),
        "{body:#}"
    );

    // Refusals at creation, naming the field, the CA and its offer.
    let (st, body) = server
        .create(json!({
            "name": "c.example.test",
            "challenge": "dns-01",
            "cas": [A2C, "pebble-a"],
            "acme_profiles": {A2C: "tlsserver"},
        }))
        .await;
    assert_eq!(st, 422, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("acme_profiles.a2c: CA 'a2c': profile 'tlsserver' is not offered")
            && detail.contains("it offers: classic, shortlived"),
        "{body:#}"
    );
    assert_eq!(body["field"], "acme_profiles.a2c", "{body:#}");
    let (st, body) = server
        .create(json!({
            "name": "c.example.test",
            "challenge": "dns-01",
            "cas": [A2C, "pebble-a"],
            "acme_profiles": {"pebble-a": "classic"},
        }))
        .await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("the CA's directory offers no profiles"),
        "Pebble 2.4 offers none: {body:#}"
    );
    let (st, body) = server
        .create(json!({
            "name": "c.example.test",
            "challenge": "dns-01",
            "cas": [A2C, "pebble-a"],
            "acme_profiles": {"pebble-b": "classic"},
        }))
        .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["field"], "acme_profiles.pebble-b", "{body:#}");
    let (st, body) = server
        .create(json!({
            "name": "c.example.test",
            "cas": [A2C, "pebble-a"],
            "acme_profiles": {A2C: "short lived"},
        }))
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["field"], "acme_profiles.a2c", "{body:#}");

    let (classic, _) = ready_with_times(&server, "a.example.test", t0, 120).await;
    let (short, _) = ready_with_times(&server, "b.example.test", t0, 120).await;
    for (v, profile, days) in [(&classic, "classic", 30), (&short, "shortlived", 6)] {
        assert_eq!(v["primary"]["ca"], A2C, "{v:#}");
        let l = lifetime(v, "primary");
        assert!(
            (l - days * 86_400).abs() <= 120,
            "{profile}: lifetime {l} s, want {days} days: {v:#}"
        );
        assert_eq!(v["primary"]["acme_profile"], profile, "{v:#}");
        assert_eq!(v["primary"]["acme_profile_confirmed"], false, "{v:#}");
        // Pebble's slot asked for no profile.
        assert!(v["backup"]["acme_profile"].is_null(), "{v:#}");
        assert!(v["backup"]["acme_profile_confirmed"].is_null(), "{v:#}");
    }
    // The lifetimes in the certificates themselves, not only in the view.
    for (name, days) in [("a.example.test", 30), ("b.example.test", 6)] {
        let chain = server.chain_pem(name, "primary").await;
        verifies(&chain, &a2c.root_pem(), name).expect("acme2certifier chain");
        let facts = twincert::certs::inspect_chain(&chain).expect("chain facts");
        let l = facts.not_after - facts.not_before;
        assert!((l - days * 86_400).abs() <= 120, "{name}: {l} s");
    }
}

/// An `acme_profile` the CA does not offer stops the start with the
/// profiles it does offer; one asked of a CA that offers no profiles, too.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_acme_profile_is_refused_at_start_with_the_offered_ones() {
    let (cas, _a2c, opts) = start(&two_profiles(), "acme_profile = \"tlsserver\"").await;
    let (status, out) = Server::start_refused(&cas, opts).await;
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("cas 'a2c' acme_profile: profile 'tlsserver' is not offered by the CA; it offers: classic, shortlived"),
        "{out}"
    );

    let (cas, _a2c, opts) = start(&A2cOptions::default(), "acme_profile = \"classic\"").await;
    let (status, out) = Server::start_refused(&cas, opts).await;
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("cas 'a2c' acme_profile: profile 'classic' requested, but the CA's directory offers no profiles"),
        "{out}"
    );
}
