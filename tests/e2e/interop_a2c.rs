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
