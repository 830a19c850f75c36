//! Issue 17, item 3: dns-persist-01 (draft-ietf-acme-dns-persist-02)
//! end to end, both slots of a name validated by it.
//!
//! The CA pair is two acme2certifier instances (0.46.3, `[Challenge]
//! dns_persist_01_support`): the only local ACME server with the method —
//! Debian 12's Pebble 2.4 and Pebble 2.6 do not offer it (2.10 does, not
//! packaged). Each has its own issuing CA (a fresh key per start) and its
//! own issuer domain name (`[Directory] caaidentities`), so they are two
//! CAs, and each checks only the record that names it and twincert's
//! account there. The test Pebble `pebble-a` is configured beside them
//! without `dns_persist_01`: a name asking for it with that CA is refused.
//!
//! What is shown: the records are published once through the BIND
//! (rfc2136) provider and both slots issue; then twincert runs again with
//! no DNS provider at all (its write access gone) and a compromised key's
//! re-provisioning still issues — the zone's serial does not move; a new
//! name whose records nobody published waits, its order's `held` reason
//! naming the exact record, and issues once an operator publishes it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::a2c_ca::{A2cCa, A2cOptions};
use crate::emergency::sqlite_url;
use crate::harness::TwoCas;
use crate::interop_a2c::a2c_entry;
use crate::server::{ADMIN_TOKEN, Server, ServerOptions};

const A2C_1: &str = "a2c";
const A2C_2: &str = "a2c-2";
const ISSUER_1: &str = "ca1.a2c.test";
const ISSUER_2: &str = "ca2.a2c.test";

/// An acme2certifier offering dns-persist-01 (wildcard policy too) with
/// `issuer` as its issuer domain name.
fn persist_options(issuer: &str) -> A2cOptions {
    let mut o = A2cOptions::default();
    o.set("Challenge", "dns_persist_01_support", "True");
    o.set("Challenge", "dns_persist_allow_policy_wildcard", "True");
    o.set("Directory", "caaidentities", &format!(r#"["{issuer}"]"#));
    o
}

/// The zone's SOA serial as BIND answers it (every RFC 2136 update
/// raises it).
fn soa_serial(cas: &TwoCas) -> u64 {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &cas.dns.port().to_string()])
        .args([cas.dns.zone(), "SOA", "+short"])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial in {text:?}"))
}

fn records(v: &Value) -> Vec<(String, String, String)> {
    v["dns_persist_records"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["ca"].as_str().unwrap_or_default().to_string(),
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["value"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .client()
        .post(format!("{}{path}", server.base()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn options(cas: &TwoCas, a2c_1: &A2cCa, a2c_2: &A2cCa, persist_until: i64) -> ServerOptions {
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.b_ca = Some(a2c_entry(
        a2c_1,
        &format!("dns_persist_01 = true\ncaa_identities = [\"{ISSUER_1}\"]"),
    ));
    let second = a2c_entry(a2c_2, "");
    opts.extra_config = format!(
        "\n[[cas]]\nid = \"{A2C_2}\"\nprofile = \"generic\"\ndirectory_url = \"{}\"\n\
         trust_roots_file = \"{}\"\nroot_group = \"a2c-2-test\"\n{}\n\
         dns_persist_01 = true\ndns_persist_until = {persist_until}\n",
        second.directory_url,
        second.trust_roots_file.display(),
        second.extra,
    );
    opts
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_persist_records_published_once_then_reprovisioning_needs_no_dns_write() {
    let cas = TwoCas::start(0).await;
    let a2c_1 = A2cCa::start(
        cas.dir(),
        &cas.tls,
        cas.dns.port(),
        &persist_options(ISSUER_1),
    )
    .await;
    let a2c_2 = A2cCa::start(
        cas.dir(),
        &cas.tls,
        cas.dns.port(),
        &persist_options(ISSUER_2),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    // 20 days ahead: inside the 30-day warning, outside the 7-day critical.
    let persist_until = now + 20 * 86_400;
    let mut server = Server::start(&cas, options(&cas, &a2c_1, &a2c_2, persist_until)).await;

    // A CA without dns-persist-01 is refused for such a name, by name.
    let (st, body) = server
        .create(json!({"name": "x.example.test", "challenge": "dns-persist-01", "cas": [A2C_1, "pebble-a"]}))
        .await;
    assert_eq!(st, 422, "{body:#}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("CA 'pebble-a' does not offer dns-persist-01"),
        "{body:#}"
    );

    // Both slots by dns-persist-01, the records published through the
    // BIND provider (once), one per CA at the same owner name.
    let name = "p.example.test";
    let owner = format!("_validation-persist.{name}");
    let (st, body) = server
        .create(json!({"name": name, "domains": [name, format!("*.{name}")], "challenge": "dns-persist-01", "cas": [A2C_1, A2C_2]}))
        .await;
    assert_eq!(st, 201, "{body:#}");
    let v = server.wait_ready(name, 120).await;
    assert_eq!(v["primary"]["ca"], A2C_1, "{v:#}");
    assert_eq!(v["backup"]["ca"], A2C_2, "{v:#}");
    let shown = records(&v);
    assert_eq!(shown.len(), 2, "one record per CA: {v:#}");
    let mut published = cas.dns.txt(&owner);
    published.sort();
    let mut values: Vec<String> = shown.iter().map(|(_, _, val)| val.clone()).collect();
    values.sort();
    assert_eq!(
        published, values,
        "what the API shows is what stands: {v:#}"
    );
    for (ca, n, val) in &shown {
        assert_eq!(n, &owner);
        let (issuer, until) = if ca == A2C_1 {
            (ISSUER_1, String::new())
        } else {
            (ISSUER_2, format!("; persistUntil={persist_until}"))
        };
        assert!(
            val.starts_with(&format!("{issuer}; accounturi=https://127.0.0.1:"))
                && val.ends_with(&format!("; policy=wildcard{until}")),
            "{ca}: {val}"
        );
    }
    // No _acme-challenge record was ever needed.
    assert_eq!(
        cas.dns.txt(&format!("_acme-challenge.{name}")),
        Vec::<String>::new()
    );

    // persistUntil within 30 days: a warning alert naming the CA.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = server
            .client()
            .get(format!("{}/v1/alerts", server.base()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET alerts");
        let alerts: Value = r.json().await.unwrap_or(Value::Null);
        let found = alerts["items"].as_array().and_then(|a| {
            a.iter()
                .find(|x| x["kind"] == "dns_persist_expiring" && x["subject"] == A2C_2)
                .cloned()
        });
        if let Some(a) = found {
            assert_eq!(a["severity"], "warning", "{a:#}");
            assert!(
                a["message"].as_str().unwrap_or_default().contains(&owner)
                    || a["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("persistUntil"),
                "{a:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dns_persist_expiring alert: {alerts:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The DNS write access goes: twincert runs again without any DNS
    // provider. The compromised primary is re-provisioned (a new key, a
    // new order, a fresh validation at acme2certifier) with no DNS write.
    let serial_before = soa_serial(&cas);
    let old_primary = v["primary"]["serial"].clone();
    server.kill();
    let mut opts = options(&cas, &a2c_1, &a2c_2, persist_until);
    opts.bind_provider = false;
    let server = Server::start(&cas, opts).await;
    let (st, body) = post(
        &server,
        &format!("/v1/names/{name}/compromise"),
        json!({"slot": "primary", "reason": "drill: key leaked"}),
    )
    .await;
    assert_eq!(st, 202, "{body:#}");
    let v = server
        .wait_for(name, 120, |v| {
            v["primary"]["serial"] != old_primary
                && v["primary"]["serial"].is_string()
                && v["state"] == "ready"
        })
        .await;
    assert_eq!(v["primary"]["ca"], A2C_1, "{v:#}");
    assert_eq!(
        soa_serial(&cas),
        serial_before,
        "no DNS write for the re-provisioning"
    );

    // A new name whose records nobody published waits, naming them...
    let name = "m.example.test";
    let owner = format!("_validation-persist.{name}");
    let (st, body) = server
        .create(json!({"name": name, "challenge": "dns-persist-01", "cas": [A2C_1, A2C_2]}))
        .await;
    assert_eq!(st, 201, "{body:#}");
    let v = server
        .wait_for(name, 60, |v| {
            v["primary"]["order"]["held"]
                .as_str()
                .is_some_and(|e| e.contains("waiting for the dns-persist-01 record"))
        })
        .await;
    // A wait, not a failure: shown as the order's `held` reason.
    assert!(v["primary"]["last_error"].is_null(), "{v:#}");
    let err = v["primary"]["order"]["held"].as_str().unwrap_or_default();
    let shown = records(&v);
    let (_, _, want) = shown
        .iter()
        .find(|(ca, _, _)| ca == A2C_1)
        .unwrap_or_else(|| panic!("no record for {A2C_1}: {v:#}"))
        .clone();
    assert!(
        err.contains(&format!("{owner} TXT \"{want}\"")),
        "the error names the exact record: {err}"
    );
    // ... until the operator publishes them.
    let mut lines = format!("zone {}\n", cas.dns.zone());
    for (_, n, val) in &shown {
        lines.push_str(&format!("update add {n}. 300 TXT \"{val}\"\n"));
    }
    lines.push_str("send\n");
    cas.dns.update(&lines).await.expect("operator publishes");
    server.wait_ready(name, 120).await;
}
