//! Tests of the harness itself: if these fail, every end-to-end test would,
//! and these say which piece of the environment is broken.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{Bind, TwoCas};

#[tokio::test(flavor = "multi_thread")]
async fn two_pebbles_are_two_different_cas() {
    let cas = TwoCas::start(0).await;

    for pebble in [&cas.a, &cas.b] {
        let dir: serde_json::Value = pebble
            .client()
            .get(pebble.directory_url())
            .send()
            .await
            .expect("GET directory")
            .error_for_status()
            .expect("directory status")
            .json()
            .await
            .expect("directory JSON");
        assert!(
            dir["newOrder"].as_str().is_some(),
            "Pebble {} directory has no newOrder: {dir}",
            pebble.name()
        );
    }
    assert_ne!(cas.a.port(), cas.b.port());

    let (root_a, root_b) = (cas.a.root_pem().await, cas.b.root_pem().await);
    assert!(root_a.contains("BEGIN CERTIFICATE"), "root a: {root_a}");
    assert!(root_b.contains("BEGIN CERTIFICATE"), "root b: {root_b}");
    assert_ne!(root_a, root_b, "the two Pebbles share a root");
    assert_ne!(
        cas.a.intermediate_pem().await,
        cas.b.intermediate_pem().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pebble_restart_keeps_port_and_makes_new_root() {
    let cas = TwoCas::start(0).await;
    let mut a = cas.a;
    let (port, root) = (a.port(), a.root_pem().await);

    a.stop();
    assert!(!a.is_running());
    a.restart().await;

    assert_eq!(a.port(), port);
    assert_ne!(a.root_pem().await, root, "restart kept the root");
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_accepts_tsig_signed_txt_update() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dns = Bind::start(parent.path());
    let name = format!("_acme-challenge.a.{}", dns.zone());
    assert!(dns.txt(&name).is_empty());

    let nsupdate = |key: &str, script: &str| {
        let mut child = Command::new("nsupdate")
            .arg("-y")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsupdate");
        child
            .stdin
            .take()
            .expect("nsupdate stdin")
            .write_all(script.as_bytes())
            .expect("write nsupdate script");
        child.wait_with_output().expect("wait for nsupdate")
    };
    let key = format!(
        "hmac-sha256:{}:{}",
        dns.tsig_key_name(),
        dns.tsig_secret_b64()
    );
    let script = |rr: &str| {
        format!(
            "server 127.0.0.1 {}\nzone {}\nupdate add {rr}\nsend\n",
            dns.port(),
            dns.zone()
        )
    };

    let out = nsupdate(&key, &script(&format!("{name} 60 TXT \"token-1\"")));
    assert!(
        out.status.success(),
        "nsupdate failed: {}\n--- named log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        dns.log()
    );
    assert_eq!(dns.txt(&name), vec!["token-1".to_owned()]);

    // The key may change TXT records only.
    let out = nsupdate(&key, &script(&format!("x.{} 60 A 127.0.0.2", dns.zone())));
    assert!(!out.status.success(), "A update was accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_pg_databases_are_separate() {
    let Some(base) = crate::harness::pg_url() else {
        eprintln!("skipped: TWINCERT_TEST_PG_URL not set (run scripts/test.sh)");
        return;
    };
    let (one, two) = (
        crate::harness::fresh_pg_database(&base).await,
        crate::harness::fresh_pg_database(&base).await,
    );
    assert_ne!(one, two);
    for url in [&one, &two] {
        let out = Command::new("psql")
            .arg(url)
            .args(["-qAt", "-c", "SELECT current_database()"])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {url}: {out:?}");
        let db = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(url.ends_with(&format!("/{db}")), "{url} is database {db}");
    }
}
