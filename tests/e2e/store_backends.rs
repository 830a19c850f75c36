//! The store's contract, run against real SQLite and real PostgreSQL: the
//! same assertions on both backends, since one SQL text serves both.

use std::collections::BTreeMap;

use twincert::domain::{
    CaId, ChallengeKind, DnsName, KeyType, ManagedNameId, NameState, Slot, SlotState,
};
use twincert::keys::seal::Sealed;
use twincert::policy::swap::{Standby, SwapOutcome, swap_outcome};
use twincert::policy::{self, SlotFacts};
use twincert::store::{
    AuditEvent, NameFilter, NameRecord, NewCertificate, NewName, NewPackage, OrderJob,
    RevocationFinding, SecretKind, Store, StoreError, StoredSources, SwapScope,
};

use crate::harness::{fresh_pg_database, pg_url_or_skip};

fn name(id: &str, primary: &str, backup: &str) -> NewName {
    NewName {
        id: ManagedNameId::parse(id).expect("name id"),
        domains: vec![DnsName::parse(id).expect("domain")],
        challenge: ChallengeKind::Http01,
        key_type: KeyType::EcdsaP256,
        primary_ca: CaId(primary.into()),
        backup_ca: CaId(backup.into()),
        dns_provider: None,
        acme_profiles: Default::default(),
    }
}

fn sealed(tag: u8) -> Sealed {
    Sealed {
        key_id: "k1".into(),
        nonce: vec![tag; 12],
        ciphertext: vec![tag; 48],
    }
}

fn cert(serial: &str, not_before: i64, not_after: i64, renew_after: i64) -> NewCertificate {
    NewCertificate {
        serial: serial.into(),
        issuer: "CN=test".into(),
        root_id: format!("root-{serial}"),
        not_before,
        not_after,
        renew_after,
        spki_sha256: format!("{serial:0>64}"),
        chain_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        status_sources: None,
    }
}

async fn contract(store: Store) {
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrations are idempotent");
    let t0 = 1_000_000;

    // Names: create, duplicate, same-CA rejected by the schema itself.
    store
        .names()
        .create_name(&name("n1.example.test", "a", "b"), "t", t0)
        .await
        .expect("create");
    let dup = store
        .names()
        .create_name(&name("n1.example.test", "a", "b"), "t", t0)
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))), "{dup:?}");
    let same = store
        .names()
        .create_name(&name("n2.example.test", "a", "a"), "t", t0)
        .await;
    assert!(same.is_err(), "CHECK (primary_ca <> backup_ca) must refuse");
    assert!(
        store
            .names()
            .name("n2.example.test")
            .await
            .expect("read")
            .is_none()
    );

    let rec = store
        .names()
        .name("n1.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(rec.slots.len(), 2);
    assert_eq!(rec.active, Slot::Primary);
    assert!(
        rec.slots.iter().all(|s| s.order.is_some()),
        "both slots get an order"
    );
    assert!(rec.acme_profiles.is_empty(), "no profile overrides given");
    assert!(rec.slots.iter().all(|s| s.acme_profile.is_none()));

    // Leasing: two workers never get the same order.
    let w1 = store
        .leases()
        .lease_orders("w1", t0, 30, 1)
        .await
        .expect("lease w1");
    let w2 = store
        .leases()
        .lease_orders("w2", t0, 30, 10)
        .await
        .expect("lease w2");
    assert_eq!(w1.len(), 1);
    assert_eq!(w2.len(), 1);
    assert_ne!(w1[0].id, w2[0].id);
    assert!(
        store
            .leases()
            .lease_orders("w3", t0, 30, 10)
            .await
            .expect("lease w3")
            .is_empty()
    );

    // A lease that ran out can be taken over; the old owner then loses.
    let taken = store
        .leases()
        .lease_orders("w3", t0 + 31, 30, 10)
        .await
        .expect("take over");
    assert_eq!(taken.len(), 2);
    let job = taken
        .iter()
        .find(|j| j.slot == Slot::Primary)
        .expect("primary job")
        .clone();
    let lost = store
        .orders()
        .set_acme_order_url(&job.id, "w1", "https://ca/order/1", t0 + 31)
        .await;
    assert!(matches!(lost, Err(StoreError::LeaseLost(_))), "{lost:?}");

    // Key, URL, tokens, failure.
    let key_id = store
        .orders()
        .attach_key(
            &job.id,
            "w3",
            KeyType::EcdsaP256,
            &"aa".repeat(32),
            &sealed(1),
            t0 + 31,
        )
        .await
        .expect("attach key");
    let reuse = store
        .orders()
        .attach_key(
            &job.id,
            "w3",
            KeyType::EcdsaP256,
            &"aa".repeat(32),
            &sealed(2),
            t0 + 31,
        )
        .await;
    assert!(
        matches!(reuse, Err(StoreError::Conflict(_))),
        "a key SPKI is never stored twice"
    );
    let (kt, back) = store
        .keys()
        .private_key(&key_id)
        .await
        .expect("read key")
        .expect("key row");
    assert_eq!(kt, KeyType::EcdsaP256);
    assert_eq!(back, sealed(1));
    store
        .orders()
        .set_acme_order_url(&job.id, "w3", "https://ca/order/1", t0 + 31)
        .await
        .expect("url");
    store
        .challenges()
        .put_http01_token("tok1", "tok1.thumb", &job.id, t0 + 31)
        .await
        .expect("token");
    assert_eq!(
        store
            .challenges()
            .http01_key_authorization("tok1")
            .await
            .expect("read token")
            .as_deref(),
        Some("tok1.thumb")
    );
    store
        .orders()
        .fail_attempt(
            &job.id,
            "w3",
            "CA a: connection refused",
            t0 + 100,
            false,
            t0 + 32,
        )
        .await
        .expect("fail");
    assert!(
        store
            .challenges()
            .http01_key_authorization("tok1")
            .await
            .expect("read")
            .is_none()
    );
    let rec = store
        .names()
        .name("n1.example.test")
        .await
        .expect("read")
        .expect("exists");
    let p = rec.slot(Slot::Primary).expect("primary");
    assert_eq!(p.last_error.as_deref(), Some("CA a: connection refused"));
    let o = p.order.as_ref().expect("order stays open");
    assert_eq!(o.attempts, 1);
    assert_eq!(o.next_attempt_at, t0 + 100);
    assert_eq!(o.acme_orders, 1);
    assert!(
        store
            .leases()
            .lease_orders("w4", t0 + 99, 30, 10)
            .await
            .expect("lease")
            .iter()
            .all(|j| j.id != job.id)
    );

    // Retry: resumes with the stored URL and key, then completes.
    let again = store
        .leases()
        .lease_orders("w4", t0 + 100, 30, 10)
        .await
        .expect("lease");
    let job = again
        .into_iter()
        .find(|j| j.id == job.id)
        .expect("due again");
    assert_eq!(job.acme_order_url.as_deref(), Some("https://ca/order/1"));
    assert_eq!(job.private_key_id.as_deref(), Some(key_id.as_str()));
    store
        .challenges()
        .put_http01_token("tok2", "tok2.thumb", &job.id, t0 + 100)
        .await
        .expect("token");
    store
        .orders()
        .complete_order(
            &job.id,
            "w4",
            &NewCertificate {
                status_sources: Some(StoredSources {
                    crl_urls: "http://crl.test/1.crl http://crl.test/2.crl".into(),
                    ocsp_url: String::new(),
                    ari_cert_id: "aki.01".into(),
                }),
                ..cert("01", t0, t0 + 300, t0 + 200)
            },
            t0 + 101,
        )
        .await
        .expect("complete");
    // The status sources read at issuance come back to the checker with
    // the certificate (no pass parses it again); a recorded check comes
    // back too, so an unchanged outcome is not written again.
    let targets = |now: i64| {
        let store = store.clone();
        async move {
            let (page, _) = store
                .status()
                .status_targets(None, 100, now)
                .await
                .expect("targets");
            page.into_iter()
                .find(|t| t.name_id == "n1.example.test" && t.slot == Slot::Primary)
                .expect("the new certificate is a target")
        }
    };
    let t = targets(t0 + 101).await;
    assert_eq!(
        t.crl_urls.as_deref(),
        Some("http://crl.test/1.crl http://crl.test/2.crl")
    );
    assert_eq!(t.ocsp_url.as_deref(), Some(""));
    assert_eq!(t.ari_cert_id.as_deref(), Some("aki.01"));
    assert!(t.checked.is_none());
    assert!(t.needs_record("crl", None, t0));
    store
        .status()
        .record_checks(std::slice::from_ref(&t.cert_id), "crl", None, t0 + 101, 60)
        .await
        .expect("record");
    let t = targets(t0 + 102).await;
    assert_eq!(t.checked, Some((t0 + 101, "crl".to_string(), None)));
    assert!(
        !t.needs_record("crl", None, t0 + 102 - 60),
        "fresh and unchanged"
    );
    assert!(t.needs_record("crl", None, t0 + 102), "past the heartbeat");
    assert!(t.needs_record("ocsp", None, t0), "another source");
    assert!(
        t.needs_record("crl", Some("CRL down"), t0),
        "another outcome"
    );
    assert!(
        store
            .challenges()
            .http01_key_authorization("tok2")
            .await
            .expect("read")
            .is_none()
    );
    let rec = store
        .names()
        .name("n1.example.test")
        .await
        .expect("read")
        .expect("exists");
    let p = rec.slot(Slot::Primary).expect("primary");
    assert!(p.last_error.is_none());
    assert!(p.order.is_none());
    assert_eq!(p.cert.as_ref().map(|c| c.serial.as_str()), Some("01"));
    assert_eq!(store.keys().orphan_key_count().await.expect("count"), 0);

    // Swap needs a usable standby; the backup has none yet.
    let no = store
        .emergency()
        .swap("n1.example.test", "t", "drill", t0 + 102)
        .await;
    assert!(matches!(no, Err(StoreError::Conflict(_))), "{no:?}");

    // Planner: nothing due before renew_after, a renewal order after.
    assert_eq!(
        store
            .orders()
            .plan_due_orders(t0 + 150, 100)
            .await
            .expect("plan"),
        0
    );
    assert_eq!(
        store
            .orders()
            .plan_due_orders(t0 + 200, 100)
            .await
            .expect("plan"),
        1
    );
    assert_eq!(
        store
            .orders()
            .plan_due_orders(t0 + 200, 100)
            .await
            .expect("plan"),
        0,
        "one open order per slot"
    );
    let orders = store
        .orders()
        .orders_of("n1.example.test", Slot::Primary)
        .await
        .expect("orders");
    assert_eq!(orders.len(), 2);

    // Listing, pagination, CA filter.
    store
        .names()
        .create_name(&name("n3.example.test", "b", "c"), "t", t0)
        .await
        .expect("create n3");
    let page = store
        .names()
        .list_names(1, None, NameFilter::default())
        .await
        .expect("list");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "n1.example.test");
    let page = store
        .names()
        .list_names(10, Some("n1.example.test"), NameFilter::default())
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n3.example.test"]
    );
    let by_c = store
        .names()
        .list_names(
            10,
            None,
            NameFilter {
                ca: Some("c"),
                state: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(by_c.len(), 1);

    // Delete removes the name, its certificates and their keys.
    store
        .names()
        .delete_name("n1.example.test", false, "t", t0 + 300)
        .await
        .expect("delete");
    assert!(
        store
            .names()
            .name("n1.example.test")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .keys()
            .private_key(&key_id)
            .await
            .expect("read")
            .is_none()
    );
    let gone = store
        .names()
        .delete_name("n1.example.test", false, "t", t0 + 300)
        .await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))));

    let events = store.audit().events(10).await.expect("audit");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["name.delete", "name.create", "name.create"]);

    // Singleton leases a stopped process left: its next run (same replica
    // name) takes them back; a process alone on the database drops all.
    let leases = store.leases();
    let hold = |owner: &'static str| leases.singleton_lease("deploy", owner, t0, 300);
    assert!(hold("r1#old").await.expect("take"));
    assert!(!hold("r1#new").await.expect("held by the old run"));
    leases
        .take_back_leases("r1", "r1#new", t0)
        .await
        .expect("take back");
    assert!(hold("r1#new").await.expect("taken back"));
    assert!(!hold("r2#x").await.expect("held by r1"));
    leases.release_all_leases(t0).await.expect("release all");
    assert!(hold("r2#x").await.expect("free after release_all_leases"));
    // ACME profile overrides (M0022) come back as given.
    let mut with_profiles = name("p1.example.test", "a", "b");
    with_profiles
        .acme_profiles
        .insert("b".into(), "shortlived".into());
    store
        .names()
        .create_name(&with_profiles, "t", t0)
        .await
        .expect("create with profiles");
    let p1 = store
        .names()
        .name("p1.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(p1.acme_profiles, with_profiles.acme_profiles);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_contract_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn store_contract_on_postgres() {
    let Some(base) = pg_url_or_skip("store_contract_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    contract(Store::connect(&url).await.expect("connect")).await;
}

/// Deleting a token ends the console sessions signed in with it, and only
/// those.
async fn token_delete_contract(store: Store) {
    use twincert::domain::Role;
    use twincert::store::{NewToken, SessionRecord};
    store.migrate().await.expect("migrate");
    for name in ["t-gone", "t-kept"] {
        store
            .tokens()
            .create_token(
                &NewToken {
                    name: name.into(),
                    role: Role::Viewer,
                    secret_sha256: format!("{name}-sha"),
                    expires_at: None,
                },
                "admin",
                100,
            )
            .await
            .expect("create token");
    }
    let console = store.console();
    for (id, actor) in [
        ("s1", "t-gone"),
        ("s2", "t-gone"),
        ("s3", "t-kept"),
        ("s4", "alice@example.test"),
    ] {
        let rec = SessionRecord {
            actor: actor.into(),
            role: Role::Viewer,
            csrf: "c".into(),
            created_at: 100,
            last_seen_at: 100,
        };
        console
            .create_session(id, &rec, 0, 0)
            .await
            .expect("session");
    }
    store
        .tokens()
        .delete_token("t-gone", "admin", 101)
        .await
        .expect("delete");
    for (id, alive) in [("s1", false), ("s2", false), ("s3", true), ("s4", true)] {
        assert_eq!(
            console.session(id).await.expect("read").is_some(),
            alive,
            "session {id}"
        );
    }
    assert!(matches!(
        store.tokens().delete_token("t-gone", "admin", 102).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(console.session("s3").await.expect("read").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_token_ends_its_console_sessions_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    token_delete_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_token_ends_its_console_sessions_on_postgres() {
    let Some(base) = pg_url_or_skip("deleting_a_token_ends_its_console_sessions_on_postgres")
    else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    token_delete_contract(Store::connect(&url).await.expect("connect")).await;
}

/// Preflight reports: stored per name, replaced by the next, due when
/// never checked / stale / made for another CA pair, counted per check
/// kind for `/metrics`, gone with the name.
async fn preflight_contract(store: Store) {
    use twincert::domain::{PreflightCheck, PreflightReport, PreflightStatus};
    store.migrate().await.expect("migrate");
    let t0 = 1_000_000;
    for id in ["p1.example.test", "p2.example.test", "p3.example.test"] {
        store
            .names()
            .create_name(&name(id, "a", "b"), "t", t0)
            .await
            .expect("create name");
    }
    let p = store.preflights();
    let mut new = p.never_checked(i64::MIN, 10).await.expect("never checked");
    new.sort();
    assert_eq!(
        new,
        vec!["p1.example.test", "p2.example.test", "p3.example.test"],
        "never checked: all new"
    );
    assert_eq!(p.never_checked(i64::MIN, 2).await.expect("limit").len(), 2);
    // Only names created since the given time: the controller's look
    // between full sweeps.
    store
        .names()
        .create_name(&name("p4.example.test", "a", "b"), "t", t0 + 100)
        .await
        .expect("create name");
    assert_eq!(
        p.never_checked(t0 + 50, 10).await.expect("since"),
        vec!["p4.example.test"],
        "names created before the watermark are left to the full sweep"
    );
    store
        .names()
        .delete_name("p4.example.test", false, "t", t0 + 100)
        .await
        .expect("delete");
    assert!(p.stale(t0, 10).await.expect("stale").is_empty());
    let check = |kind: &str, status| PreflightCheck {
        check: kind.into(),
        slot: Some("backup".into()),
        ca: Some("b".into()),
        domain: "p1.example.test".into(),
        status,
        detail: "d".into(),
        fix: Some("p1.example.test. CAA 0 issue \"b.test\"".into()),
    };
    let report = PreflightReport {
        checked_at: t0,
        checks: vec![
            check("caa", PreflightStatus::Finding),
            check("caa", PreflightStatus::Finding),
            check("delegation", PreflightStatus::Error),
            check("provider", PreflightStatus::Finding),
        ],
    };
    p.save("p1.example.test", ("a", "b"), &report)
        .await
        .expect("save");
    p.save(
        "p2.example.test",
        ("a", "other"),
        &PreflightReport {
            checked_at: t0,
            checks: vec![check("delegation", PreflightStatus::Finding)],
        },
    )
    .await
    .expect("save");
    // A name that does not exist stores nothing (deleted meanwhile).
    p.save("gone.example.test", ("a", "b"), &report)
        .await
        .expect("save of a deleted name is a no-op");
    assert_eq!(
        p.latest("p1.example.test").await.expect("latest"),
        Some(report.clone())
    );
    assert_eq!(p.latest("gone.example.test").await.expect("latest"), None);
    assert_eq!(
        p.findings().await.expect("findings"),
        vec![("caa", 1), ("delegation", 1), ("provider", 1), ("error", 1)],
        "names with findings, per check"
    );
    assert_eq!(
        p.never_checked(i64::MIN, 10).await.expect("never checked"),
        vec!["p3.example.test"]
    );
    // Fresh until the interval has passed; oldest first then.
    assert!(p.stale(t0 - 1, 10).await.expect("stale").is_empty());
    assert_eq!(
        p.stale(t0, 10).await.expect("stale"),
        vec!["p1.example.test", "p2.example.test"]
    );
    // The next report replaces the last, counts follow.
    let clean = PreflightReport {
        checked_at: t0 + 10,
        checks: vec![check("caa", PreflightStatus::Ok)],
    };
    p.save("p1.example.test", ("a", "b"), &clean)
        .await
        .expect("save");
    assert_eq!(
        p.findings().await.expect("findings"),
        vec![("caa", 0), ("delegation", 1), ("provider", 0), ("error", 0)]
    );
    // Deleting the name deletes its report.
    store
        .names()
        .delete_name("p2.example.test", false, "t", t0)
        .await
        .expect("delete");
    assert_eq!(
        p.findings().await.expect("findings"),
        vec![("caa", 0), ("delegation", 0), ("provider", 0), ("error", 0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_store_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    preflight_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_store_on_postgres() {
    let Some(base) = pg_url_or_skip("preflight_store_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    preflight_contract(Store::connect(&url).await.expect("connect")).await;
}

/// Gives every open order a key and a certificate; `expired` names get a
/// backup that expired before `now`.
async fn issue_all(store: &Store, now: i64, expired: &[&str]) {
    let jobs = store
        .leases()
        .lease_orders("w", now, 60, 1000)
        .await
        .expect("lease");
    for (i, job) in jobs.iter().enumerate() {
        let spki = format!("{:064x}", i + 1000 * now as usize);
        store
            .orders()
            .attach_key(
                &job.id,
                "w",
                KeyType::EcdsaP256,
                &spki,
                &sealed(i as u8),
                now,
            )
            .await
            .expect("key");
        let not_after = if job.slot == Slot::Backup && expired.contains(&job.name_id.as_str()) {
            now - 1
        } else {
            now + 1000
        };
        let mut c = cert(&format!("{:02x}", i + 1), now - 10, not_after, now + 500);
        c.spki_sha256 = spki;
        store
            .orders()
            .complete_order(&job.id, "w", &c, now)
            .await
            .expect("complete");
    }
}

async fn mass_swap_contract(store: Store) {
    use twincert::store::SwapScope;
    store.migrate().await.expect("migrate");
    let now = 5_000;
    for n in ["m1.example.test", "m2.example.test", "m3.example.test"] {
        store
            .names()
            .create_name(&name(n, "a", "b"), "t", now)
            .await
            .expect("create");
    }
    store
        .names()
        .create_name(&name("m4.example.test", "b", "c"), "t", now)
        .await
        .expect("create");
    issue_all(&store, now, &["m3.example.test"]).await;

    let dry = store
        .emergency()
        .mass_swap(&SwapScope::Ca("a".into()), "drill", "t", true, now)
        .await
        .expect("dry run");
    assert_eq!(dry.counts.get("swap"), Some(&2), "{dry:?}");
    assert_eq!(dry.counts.get("standby_expired"), Some(&1), "{dry:?}");
    assert_eq!(dry.swapped, 0);
    assert!(dry.operation_id.is_none());
    let still = store
        .names()
        .name("m1.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(still.active, Slot::Primary, "a dry run changes nothing");

    let real = store
        .emergency()
        .mass_swap(
            &SwapScope::Ca("a".into()),
            "CA a incident",
            "op",
            false,
            now,
        )
        .await
        .expect("swap");
    assert_eq!(real.swapped, 2);
    assert!(real.operation_id.is_some());
    for (n, want) in [
        ("m1.example.test", Slot::Backup),
        ("m2.example.test", Slot::Backup),
        ("m3.example.test", Slot::Primary),
        ("m4.example.test", Slot::Primary),
    ] {
        let rec = store.names().name(n).await.expect("read").expect("exists");
        assert_eq!(rec.active, want, "{n}");
    }
    let again = store
        .emergency()
        .mass_swap(&SwapScope::Ca("a".into()), "again", "op", false, now)
        .await
        .expect("swap again");
    assert_eq!(again.swapped, 0);
    assert_eq!(
        again.counts.get("standby_expired"),
        Some(&1),
        "only m3 is still on a"
    );

    // By SPKI: m4's active key.
    let m4 = store
        .names()
        .name("m4.example.test")
        .await
        .expect("read")
        .expect("exists");
    let spki = m4
        .slot(Slot::Primary)
        .and_then(|s| s.cert.as_ref())
        .map(|c| c.spki_sha256.clone())
        .expect("spki");
    let by_key = store
        .emergency()
        .mass_swap(&SwapScope::Spki(spki), "key compromise", "op", false, now)
        .await
        .expect("by spki");
    assert_eq!(by_key.swapped, 1);
    // By names: swapping m1 back.
    let by_names = store
        .emergency()
        .mass_swap(
            &SwapScope::Names(vec!["m1.example.test".into(), "nope".into()]),
            "back",
            "op",
            false,
            now,
        )
        .await
        .expect("by names");
    assert_eq!(by_names.swapped, 1);
    assert_eq!(by_names.counts.get("not_found"), Some(&1), "{by_names:?}");
    let events = store.audit().events(10).await.expect("audit");
    assert_eq!(events[0].action, "swap.mass");
    assert!(
        events[0]
            .details
            .as_deref()
            .unwrap_or_default()
            .contains("names:2")
    );

    // A revoked standby is skipped and reported, not swapped to.
    let now2 = now + 10;
    for n in ["m5.example.test", "m6.example.test"] {
        store
            .names()
            .create_name(&name(n, "a", "b"), "t", now2)
            .await
            .expect("create");
    }
    issue_all(&store, now2, &[]).await;
    store
        .emergency()
        .report_compromise("m5.example.test", Slot::Backup, "leak", "op", now2)
        .await
        .expect("compromise");
    for job in store
        .ca_revocations()
        .pending_revocations(10)
        .await
        .expect("pending")
    {
        assert_eq!(job.reason_code, 1);
        store
            .ca_revocations()
            .revocation_result(&job.id, None, now2)
            .await
            .expect("revoked");
    }
    let pair = SwapScope::Names(vec!["m5.example.test".into(), "m6.example.test".into()]);
    let dry = store
        .emergency()
        .mass_swap(&pair, "drill", "op", true, now2)
        .await
        .expect("dry run");
    assert_eq!(dry.counts.get("standby_revoked"), Some(&1), "{dry:?}");
    assert_eq!(dry.counts.get("swap"), Some(&1), "{dry:?}");
    assert_eq!(dry.sample[0].0, "m5.example.test", "skipped names first");
    assert_eq!(
        dry.reprovision, 1,
        "a list swap re-provisions what it flips"
    );

    // A CA swap marks the abandoned slots, and the skipped names' active
    // slots (first in line), for re-provisioning away from the CA.
    let real = store
        .emergency()
        .mass_swap(
            &SwapScope::Ca("a".into()),
            "CA a incident",
            "op",
            false,
            now2,
        )
        .await
        .expect("swap");
    assert_eq!(real.counts.get("standby_revoked"), Some(&1), "{real:?}");
    let op = real.operation_id.clone().expect("operation");
    let jobs = store
        .operations()
        .reprovision_jobs("", 100)
        .await
        .expect("jobs");
    let m5 = jobs
        .iter()
        .find(|j| j.name_id == "m5.example.test")
        .expect("m5 marked");
    assert!(m5.is_active && m5.slot == Slot::Primary && m5.avoid_ca.as_deref() == Some("a"));
    let m6 = jobs
        .iter()
        .find(|j| j.name_id == "m6.example.test")
        .expect("m6 marked")
        .clone();
    assert!(!m6.is_active && m6.slot == Slot::Primary && m6.other_ca == "b");
    // A preflight report made for the old pair is stale once the slot moves.
    let fresh = twincert::domain::PreflightReport {
        checked_at: now2,
        checks: Vec::new(),
    };
    store
        .preflights()
        .save("m6.example.test", ("a", "b"), &fresh)
        .await
        .expect("save preflight");
    assert!(
        store
            .preflights()
            .stale(now2 - 1, 100)
            .await
            .expect("stale")
            .is_empty()
    );
    assert!(
        store
            .operations()
            .start_reprovision(&m6, "c", None, now2)
            .await
            .expect("start")
    );
    assert_eq!(
        store
            .preflights()
            .stale(now2 - 1, 100)
            .await
            .expect("stale"),
        vec!["m6.example.test"],
        "the new CA pair is preflighted at once"
    );
    assert!(
        !store
            .operations()
            .start_reprovision(&m6, "c", None, now2)
            .await
            .expect("again"),
        "a marker is taken once"
    );
    let rec = store
        .names()
        .name("m6.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(rec.primary_ca, "c");
    assert_eq!(rec.slot(Slot::Primary).map(|s| s.ca_id.as_str()), Some("c"));
    let (record, progress) = store
        .operations()
        .operation(&op)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.kind, "swap");
    assert_eq!(record.avoid_ca.as_deref(), Some("a"));
    assert_eq!(progress.orders.get("pending"), Some(&1), "{progress:?}");
    assert!(progress.queued >= 1 && !progress.done, "{progress:?}");
    let job = store
        .operations()
        .reprovision_jobs("", 100)
        .await
        .expect("jobs")
        .into_iter()
        .find(|j| j.name_id == "m5.example.test")
        .expect("m5 still marked");
    store
        .operations()
        .block_reprovision(&job, "no CA", now2)
        .await
        .expect("block");
    let (record, _) = store
        .operations()
        .operation(&op)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.blocked, 1);

    // Distrusting b moves m6 off it; a standby from a distrusted CA is
    // then never swapped to.
    let d = store
        .emergency()
        .distrust_ca("b", "b distrusted", "admin", false, now2)
        .await
        .expect("distrust");
    assert!(d.swapped >= 1, "{d:?}");
    let m6 = store
        .names()
        .name("m6.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(m6.active, Slot::Primary);
    let dry = store
        .emergency()
        .mass_swap(
            &SwapScope::Names(vec!["m6.example.test".into()]),
            "back to b?",
            "op",
            true,
            now2,
        )
        .await
        .expect("dry run");
    assert_eq!(dry.counts.get("standby_distrusted"), Some(&1), "{dry:?}");
    let one = store
        .emergency()
        .swap("m6.example.test", "op", "back to b?", now2)
        .await;
    assert!(
        matches!(&one, Err(StoreError::Conflict(m)) if m.contains("distrusted")),
        "{one:?}"
    );
    // The swaps are counted in the metrics (a BIGINT sum: NUMERIC on
    // PostgreSQL unless cast).
    let swapped: i64 = store
        .operations()
        .list(1000)
        .await
        .expect("operations")
        .iter()
        .filter(|o| ["swap", "distrust", "revocation", "incident"].contains(&o.kind.as_str()))
        .map(|o| o.affected)
        .sum();
    assert!(swapped > 0);
    let metrics = store.metrics().scale_metrics(now2).await.expect("metrics");
    let total = metrics
        .iter()
        .find(|(k, _)| k == "twincert_names_swapped_total")
        .map(|(_, v)| *v);
    assert_eq!(total, Some(swapped as f64), "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_swap_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    mass_swap_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_swap_on_postgres() {
    let Some(base) = pg_url_or_skip("mass_swap_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    mass_swap_contract(Store::connect(&url).await.expect("connect")).await;
}

/// A distrust marks every slot the CA holds, and the flip marks the slot
/// it abandons, in one row version per flipped name (the flip carries the
/// distrust's markers; the marker statement skips the names it flipped):
/// flipped, not in scope and skipped names all end up marked as the rule
/// says, and the report counts each marked name once.
async fn distrust_marks_contract(store: Store) {
    store.migrate().await.expect("migrate");
    let now = 5_000;
    let id = |short: &str| format!("{short}.distrust.test");
    for (short, primary, backup) in [
        ("flipped", "a", "b"),
        ("standby-on-a", "b", "a"),
        ("skipped", "a", "c"),
        ("untouched", "b", "c"),
    ] {
        store
            .names()
            .create_name(&name(&id(short), primary, backup), "t", now)
            .await
            .expect("create");
    }
    issue_all(&store, now, &[id("skipped").as_str()]).await;

    let report = store
        .emergency()
        .distrust_ca("a", "a distrusted", "admin", false, now)
        .await
        .expect("distrust");
    let op = report.operation_id.clone().expect("operation");
    assert_eq!(report.swapped, 1, "{report:?}");
    assert_eq!(report.counts.get("swap"), Some(&1), "{report:?}");
    assert_eq!(report.counts.get("standby_expired"), Some(&1), "{report:?}");
    assert_eq!(report.reprovision, 3, "one per marked name: {report:?}");

    // (name, active slot after, slot expected marked by the distrust)
    for (short, active, marked) in [
        ("flipped", Slot::Backup, Some(Slot::Primary)),
        ("standby-on-a", Slot::Primary, Some(Slot::Backup)),
        ("skipped", Slot::Primary, Some(Slot::Primary)),
        ("untouched", Slot::Primary, None),
    ] {
        let rec = store
            .names()
            .name(&id(short))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(rec.active, active, "{short}");
        for slot in [Slot::Primary, Slot::Backup] {
            let s = rec.slot(slot).expect("slot");
            let want = (Some(slot) == marked).then(|| op.clone());
            assert_eq!(s.reprovision_op, want, "{short} {slot} re-provisioning");
            assert_eq!(s.superseded_by, want, "{short} {slot} superseded");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn distrust_marks_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    distrust_marks_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn distrust_marks_on_postgres() {
    let Some(base) = pg_url_or_skip("distrust_marks_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    distrust_marks_contract(Store::connect(&url).await.expect("connect")).await;
}

/// Issues a certificate for a leased order: a fresh key (`n` makes its
/// SPKI and serial unique), then the certificate.
async fn issue(store: &Store, job: &OrderJob, owner: &str, n: usize, validity: (i64, i64, i64)) {
    let (not_before, not_after, renew_after) = validity;
    let spki = format!("{:064x}", 0xc0de_0000 + n);
    store
        .orders()
        .attach_key(
            &job.id,
            owner,
            KeyType::EcdsaP256,
            &spki,
            &sealed(n as u8),
            not_before,
        )
        .await
        .expect("key");
    let mut c = cert(&format!("c0de{n:04x}"), not_before, not_after, renew_after);
    c.spki_sha256 = spki;
    store
        .orders()
        .complete_order(&job.id, owner, &c, not_before)
        .await
        .expect("complete");
}

/// A name's state by the API's rule: `policy::slot_state` of each slot as
/// `api::views` builds its facts, then `policy::name_state`.
fn state_by_policy(rec: &NameRecord, now: i64) -> NameState {
    let slot = |slot| {
        rec.slot(slot).map_or(SlotState::Issuing, |s| {
            policy::slot_state(
                SlotFacts {
                    current: s.cert.as_ref().map(|c| (c.not_before, c.not_after)),
                    order_open: s.order.is_some(),
                    last_attempt_failed: s.last_error.is_some(),
                    waiting: s.order.as_ref().is_some_and(|o| o.held_reason.is_some()),
                },
                now,
            )
        })
    };
    policy::name_state(
        slot(Slot::Primary),
        slot(Slot::Backup),
        rec.diversity_error.is_none(),
        rec.slots.iter().any(|s| s.superseded_by.is_some()),
    )
}

/// A name's outcome in a CA-wide swap away from `ca` by
/// `policy::swap::swap_outcome`; `None` when the name is not in the swap's
/// scope (its active certificate is not from `ca`). The name record does
/// not carry a key's compromise flag: `compromised_keys` are the keys the
/// test reported.
fn swap_by_policy(
    rec: &NameRecord,
    ca: &str,
    distrusted: &[String],
    compromised_keys: &[String],
    now: i64,
) -> Option<SwapOutcome> {
    let active = rec.slot(rec.active)?.cert.as_ref()?;
    if active.ca_id != ca {
        return None;
    }
    let standby = rec
        .slot(rec.active.other())
        .and_then(|s| s.cert.as_ref())
        .map(|c| Standby {
            ca: &c.ca_id,
            not_after: c.not_after,
            revoked: c.status.revoked_at.is_some(),
            key_compromised: compromised_keys.contains(&c.private_key_id),
            ca_distrusted: distrusted.contains(&c.ca_id),
        });
    Some(swap_outcome(standby.as_ref(), Some(ca), now))
}

/// The store classifies names in SQL in two places — `names_by_state` for
/// the metrics, the CA-wide swap's skip/swap classification — restating
/// `policy::name_state` and `policy::swap::swap_outcome`. Names in every
/// state those tell apart, built through the store's own calls, must be
/// counted the same by the SQL and by the policy applied to each name's
/// record read back.
async fn sql_agrees_with_policy(store: Store) {
    store.migrate().await.expect("migrate");
    let now = 100_000;
    let t0 = now - 1000;
    let valid = (t0, now + 100_000, now + 50_000);
    // (name, its CAs, its state by policy, its outcome in a swap away
    // from CA a: None when not active on a).
    #[allow(clippy::type_complexity)] // a table of named cases reads best inline
    let table: [(&str, (&str, &str), NameState, Option<SwapOutcome>); 13] = [
        ("fresh", ("a", "b"), NameState::Provisioning, None),
        // Its primary waits for a person (manual DNS-01), after a failure.
        ("primary-waiting", ("a", "b"), NameState::Waiting, None),
        ("primary-failed", ("a", "b"), NameState::Degraded, None),
        (
            "one-slot",
            ("a", "b"),
            NameState::Provisioning,
            Some(SwapOutcome::NoStandby),
        ),
        (
            "backup-failed",
            ("a", "b"),
            NameState::Degraded,
            Some(SwapOutcome::NoStandby),
        ),
        (
            "ready",
            ("a", "b"),
            NameState::Ready,
            Some(SwapOutcome::Swap),
        ),
        (
            "renewing",
            ("a", "b"),
            NameState::Ready,
            Some(SwapOutcome::Swap),
        ),
        (
            "backup-expired",
            ("a", "b"),
            NameState::Degraded,
            Some(SwapOutcome::StandbyExpired),
        ),
        (
            "backup-revoked",
            ("a", "b"),
            NameState::Ready,
            Some(SwapOutcome::StandbyRevoked),
        ),
        (
            "backup-compromised",
            ("a", "b"),
            NameState::Ready,
            Some(SwapOutcome::StandbyCompromised),
        ),
        (
            "diversity-error",
            ("a", "b"),
            NameState::Degraded,
            Some(SwapOutcome::Swap),
        ),
        // Its standby is superseded by the distrust: no real standby.
        (
            "backup-distrusted",
            ("a", "d"),
            NameState::Degraded,
            Some(SwapOutcome::StandbyDistrusted),
        ),
        // Its backup, superseded by the swaps, is not re-issued yet.
        (
            "same-ca",
            ("b", "a"),
            NameState::Degraded,
            Some(SwapOutcome::StandbySameCa),
        ),
    ];
    let id = |short: &str| format!("{short}.state.test");
    for (short, (p, b), _, _) in &table {
        store
            .names()
            .create_name(&name(&id(short), p, b), "t", t0)
            .await
            .expect("create");
    }
    // Two benchmark-style names: ready, active on a.
    store
        .seed_synthetic("contract-", 2, "a", "b", t0)
        .await
        .expect("seed");

    // First issuance: issued, failed, or still in flight (the lease
    // outlasts the test).
    for (n, job) in store
        .leases()
        .lease_orders("w", t0, 1_000_000, 1000)
        .await
        .expect("lease")
        .iter()
        .enumerate()
    {
        let short = job.name_id.trim_end_matches(".state.test");
        match (short, job.slot) {
            ("fresh", _) | ("primary-failed" | "one-slot", Slot::Backup) => {}
            ("primary-failed", Slot::Primary) | ("backup-failed", Slot::Backup) => store
                .orders()
                .fail_attempt(&job.id, "w", "CA refused", now + 100_000, false, t0)
                .await
                .expect("fail"),
            ("primary-waiting", Slot::Primary) => {
                let orders = store.orders();
                orders
                    .fail_attempt(&job.id, "w", "CA refused", t0, false, t0)
                    .await
                    .expect("fail");
                let again = store
                    .leases()
                    .lease_orders("w", t0, 1_000_000, 1000)
                    .await
                    .expect("lease again")
                    .into_iter()
                    .find(|j| j.id == job.id)
                    .expect("the failed order again");
                orders
                    .wait_order(
                        &again.id,
                        "w",
                        "waiting for manual DNS-01 records",
                        now + 60,
                        t0,
                    )
                    .await
                    .expect("wait");
            }
            ("backup-expired", Slot::Backup) => {
                issue(&store, job, "w", n, (t0, now - 1, now - 100)).await
            }
            ("renewing", _) => issue(&store, job, "w", n, (t0, now + 100_000, now - 1)).await,
            _ => issue(&store, job, "w", n, valid).await,
        }
    }
    let record = |short: &str| {
        let store = store.clone();
        let id = id(short);
        async move {
            store
                .names()
                .name(&id)
                .await
                .expect("read")
                .expect("exists")
        }
    };
    let backup_cert = |rec: &NameRecord| {
        rec.slot(Slot::Backup)
            .and_then(|s| s.cert.clone())
            .expect("backup certificate")
    };
    assert_eq!(
        store
            .orders()
            .plan_due_orders(now, 100)
            .await
            .expect("plan"),
        3,
        "renewal orders for both slots of renewing and for the expired backup"
    );
    let revoked = backup_cert(&record("backup-revoked").await);
    store
        .status()
        .record_revocations(
            &[RevocationFinding {
                cert_id: revoked.id,
                revoked_at: now - 5,
                reason: Some(4),
                source: "crl".into(),
                evidence: serde_json::json!({ "crl": "test" }),
            }],
            "t",
            now,
        )
        .await
        .expect("revoked");
    let compromised_keys = vec![backup_cert(&record("backup-compromised").await).private_key_id];
    store
        .emergency()
        .report_compromise(&id("backup-compromised"), Slot::Backup, "leak", "t", now)
        .await
        .expect("compromise");
    store
        .names()
        .set_diversity_error(
            &id("diversity-error"),
            Some("primary and backup chain to the same root"),
            now,
        )
        .await
        .expect("diversity error");
    store
        .emergency()
        .distrust_ca("d", "drill", "t", false, now)
        .await
        .expect("distrust d");
    // same-ca: both slots end up holding certificates from a — swap
    // twice to mark both slots, move the backup slot to c and the primary
    // to a (never both on one CA at once), issue only the primary.
    let same = id("same-ca");
    for _ in 0..2 {
        store
            .emergency()
            .swap(&same, "t", "drill", now)
            .await
            .expect("swap");
    }
    let job_of = |slot: Slot| {
        let store = store.clone();
        let same = same.clone();
        async move {
            store
                .operations()
                .reprovision_jobs("", 100)
                .await
                .expect("jobs")
                .into_iter()
                .find(|j| j.name_id == same && j.slot == slot)
                .expect("marked")
        }
    };
    let backup = job_of(Slot::Backup).await;
    assert!(
        store
            .operations()
            .start_reprovision(&backup, "c", None, now)
            .await
            .expect("to c")
    );
    let primary = job_of(Slot::Primary).await;
    assert!(
        store
            .operations()
            .start_reprovision(&primary, "a", None, now)
            .await
            .expect("to a")
    );
    let job = store
        .leases()
        .lease_orders("w2", now, 1_000_000, 100)
        .await
        .expect("lease")
        .into_iter()
        .find(|j| j.name_id == same && j.slot == Slot::Primary)
        .expect("primary order on a");
    issue(
        &store,
        &job,
        "w2",
        200,
        (now - 10, now + 100_000, now + 50_000),
    )
    .await;

    // Every name read back; the policy applied to each.
    let records = store
        .names()
        .list_names(1000, None, NameFilter::default())
        .await
        .expect("list");
    assert_eq!(records.len(), table.len() + 2);
    for (short, _, state, _) in &table {
        let rec = records.iter().find(|r| r.id == id(short)).expect("listed");
        assert_eq!(state_by_policy(rec, now), *state, "{short}: the setup");
    }

    // names_by_state counts as policy::name_state does.
    let mut by_policy: BTreeMap<String, i64> = [
        NameState::Ready,
        NameState::Degraded,
        NameState::Provisioning,
        NameState::Waiting,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), 0))
    .collect();
    for rec in &records {
        *by_policy
            .get_mut(state_by_policy(rec, now).as_str())
            .expect("a known state") += 1;
    }
    let by_sql: BTreeMap<String, i64> = store
        .metrics()
        .names_by_state(now)
        .await
        .expect("names by state")
        .into_iter()
        .collect();
    assert_eq!(
        by_sql, by_policy,
        "names_by_state disagrees with policy::name_state"
    );

    // Listing by state finds, page by full page, exactly the names the
    // policy puts in that state.
    for state in [
        NameState::Ready,
        NameState::Degraded,
        NameState::Provisioning,
    ] {
        let want: Vec<&str> = records
            .iter()
            .filter(|r| state_by_policy(r, now) == state)
            .map(|r| r.id.as_str())
            .collect();
        let filter = NameFilter {
            ca: None,
            state: Some((state, now)),
        };
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .names()
                .list_names(2, cursor.as_deref(), filter)
                .await
                .expect("list by state");
            let ids: Vec<String> = page.iter().map(|r| r.id.clone()).collect();
            let full = ids.len() == 2;
            got.extend(ids);
            match (full, got.last()) {
                (true, Some(last)) => cursor = Some(last.clone()),
                _ => break,
            }
        }
        assert_eq!(got, want, "list_names by state {state:?}");
    }

    // The console's names page (issue 18) finds, page by page, exactly the
    // names the policy puts in each state — a non-ready state through its
    // indexed causes, not a walk — and exactly the names with a slot on a
    // CA (its certificate's, or before one its order's).
    let console_page = async |filter: twincert::store::NamePageFilter| {
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .console()
                .names_page(&filter, cursor.as_deref(), 2)
                .await
                .expect("names page");
            assert!(page.names.len() <= 2);
            got.extend(page.names.iter().map(|r| r.id.clone()));
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        got
    };
    for state in [
        NameState::Ready,
        NameState::Degraded,
        NameState::Provisioning,
        NameState::Waiting,
    ] {
        let want: Vec<String> = records
            .iter()
            .filter(|r| state_by_policy(r, now) == state)
            .map(|r| r.id.clone())
            .collect();
        assert!(!want.is_empty(), "{state:?}: the table covers it");
        let got = console_page(twincert::store::NamePageFilter {
            state: Some((state, now)),
            ..Default::default()
        })
        .await;
        assert_eq!(got, want, "console names page by state {state:?}");
    }
    for ca in ["a", "b", "d"] {
        let slot_ca = |r: &NameRecord, slot: Slot| {
            r.slots
                .iter()
                .find(|s| s.slot == slot)
                .and_then(|s| s.cert.as_ref().map(|c| c.ca_id.clone()))
                .unwrap_or_else(|| match slot {
                    Slot::Primary => r.primary_ca.clone(),
                    Slot::Backup => r.backup_ca.clone(),
                })
        };
        let want: Vec<String> = records
            .iter()
            .filter(|r| slot_ca(r, Slot::Primary) == ca || slot_ca(r, Slot::Backup) == ca)
            .map(|r| r.id.clone())
            .collect();
        let got = console_page(twincert::store::NamePageFilter {
            ca: Some(ca.into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, want, "console names page on CA {ca}");
    }

    // The CA-wide swap's dry run classifies as policy::swap::swap_outcome.
    let distrusted = store.cas().distrusted_cas().await.expect("distrusted");
    assert_eq!(distrusted, ["d"]);
    let outcomes: BTreeMap<String, SwapOutcome> = records
        .iter()
        .filter_map(|rec| {
            swap_by_policy(rec, "a", &distrusted, &compromised_keys, now)
                .map(|o| (rec.id.clone(), o))
        })
        .collect();
    for (short, _, _, outcome) in &table {
        assert_eq!(
            outcomes.get(&id(short)),
            outcome.as_ref(),
            "{short}: the setup"
        );
    }
    let mut want_counts: BTreeMap<String, i64> = BTreeMap::new();
    for o in outcomes.values() {
        *want_counts.entry(o.as_str().to_string()).or_default() += 1;
    }
    let dry = store
        .emergency()
        .mass_swap(&SwapScope::Ca("a".into()), "contract", "t", true, now)
        .await
        .expect("dry run");
    assert_eq!(
        dry.counts, want_counts,
        "the CA-wide swap's classification disagrees with policy::swap::swap_outcome"
    );
    assert!(!dry.sample.is_empty());
    for (name, outcome) in &dry.sample {
        assert_eq!(
            outcomes.get(name).map(|o| o.as_str()),
            Some(outcome.as_str()),
            "{name} in the dry run's sample"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_agrees_with_policy_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    sql_agrees_with_policy(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_agrees_with_policy_on_postgres() {
    let Some(base) = pg_url_or_skip("sql_agrees_with_policy_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    sql_agrees_with_policy(Store::connect(&url).await.expect("connect")).await;
}

/// A package for `n1.example.test` at `appliance`, sealed under `key_id`.
fn package(id: &str, token: &str, cert_id: &str, now: i64, key_id: &str) -> NewPackage {
    let s = |tag: u8| Sealed {
        key_id: key_id.into(),
        nonce: vec![tag; 12],
        ciphertext: vec![tag; 40],
    };
    NewPackage {
        id: id.into(),
        name_id: "n1.example.test".into(),
        destination: "appliance".into(),
        cert_id: cert_id.into(),
        serial: "01".into(),
        token_sha256: token.into(),
        one_time: true,
        password_delivery: "api".into(),
        contacts: vec!["admin@example.test".into()],
        package: s(1),
        password: Some(s(2)),
        created_at: now,
        expires_at: now + 100,
        remind_at: now + 10,
    }
}

/// Install packages (issue 19) on both backends: a new package
/// supersedes the last in its transaction and wipes its secrets; a
/// one-time download counts once (and is audited once); a password is
/// taken once; reminders come only while the deployment is `requested`
/// for the package's certificate; re-sealing finds and moves package
/// secrets like every other secret.
async fn package_contract(store: Store) {
    store.migrate().await.expect("migrate");
    let t0 = 2_000_000;
    store
        .names()
        .create_name(&name("n1.example.test", "a", "b"), "t", t0)
        .await
        .expect("create");
    issue_all(&store, t0, &[]).await;
    let rec = store
        .names()
        .name("n1.example.test")
        .await
        .expect("read")
        .expect("exists");
    let active = rec
        .slots
        .iter()
        .find(|s| s.slot == rec.active)
        .and_then(|s| s.cert.clone())
        .expect("active certificate");
    let audit = |action: &str| AuditEvent::ok(t0, "test", action, "n1.example.test", None, None);
    store
        .deployments()
        .set_deploy_targets(
            "n1.example.test",
            &["appliance".to_string()],
            &[],
            &audit("name.deploy"),
        )
        .await
        .expect("targets");
    store
        .deployments()
        .record_deployed(
            "n1.example.test",
            "appliance",
            &active.id,
            &serde_json::json!({}),
            t0,
            t0,
        )
        .await
        .expect("deployed");

    let packages = store.packages();
    let gone = packages
        .create_package(&package("p1", "h1", &active.id, t0, "k1"), |s| {
            assert!(s.is_empty());
            audit("install.request")
        })
        .await
        .expect("p1");
    assert!(gone.is_empty());
    let by_key = store.keys().sealed_by_key_id().await.expect("count");
    assert!(
        by_key.iter().any(|(k, n)| k == "k1" && *n >= 2),
        "package and password counted: {by_key:?}"
    );

    // Re-sealing sees the package and its password and moves them.
    let due = store
        .keys()
        .sealed_not_under("k2", 1000)
        .await
        .expect("due");
    let mine: Vec<_> = due
        .iter()
        .filter(|s| s.id == "p1")
        .map(|s| s.kind)
        .collect();
    assert_eq!(
        mine,
        [SecretKind::InstallPackage, SecretKind::InstallPassword]
    );
    let pairs: Vec<_> = due
        .into_iter()
        .filter(|s| s.id == "p1")
        .map(|s| {
            let mut new = s.sealed.clone();
            new.key_id = "k2".into();
            new.nonce = vec![9; 12];
            (s, new)
        })
        .collect();
    let (_, _, moved) = store
        .keys()
        .replace_sealed(&pairs, |_, _, _| audit("keys.reseal"))
        .await
        .expect("reseal");
    assert_eq!(moved, 2);
    let p = packages
        .package_by_token("h1")
        .await
        .expect("read")
        .expect("p1");
    assert_eq!(p.package.as_ref().map(|s| s.key_id.as_str()), Some("k2"));
    assert_eq!(p.password.as_ref().map(|s| s.key_id.as_str()), Some("k2"));

    // The password, once.
    let nonce = p.password.as_ref().expect("password").nonce.clone();
    assert!(
        packages
            .take_password("p1", &nonce, &audit("install.password"))
            .await
            .expect("take")
    );
    assert!(
        !packages
            .take_password("p1", &nonce, &audit("install.password"))
            .await
            .expect("again")
    );

    // A reminder is due while the deployment waits; once sent, no other.
    let due = packages.due_reminders(t0 + 10, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].contacts, ["admin@example.test"]);
    packages
        .record_reminded("p1", t0 + 10)
        .await
        .expect("reminded");
    assert!(
        packages
            .due_reminders(t0 + 20, 10)
            .await
            .expect("due")
            .is_empty()
    );

    // A second package supersedes the first: its secrets are wiped.
    let gone = packages
        .create_package(&package("p2", "h2", &active.id, t0 + 1, "k2"), |s| {
            assert_eq!(s, ["p1".to_string()]);
            audit("install.request")
        })
        .await
        .expect("p2");
    assert_eq!(gone, ["p1"]);
    let p1 = packages
        .package_by_token("h1")
        .await
        .expect("read")
        .expect("p1");
    assert_eq!(p1.state, "superseded");
    assert!(p1.package.is_none() && p1.password.is_none());
    assert!(
        !packages
            .record_download("p1", t0 + 2, &audit("install.download"))
            .await
            .expect("superseded")
    );
    let latest = packages
        .latest_package("n1.example.test", "appliance")
        .await
        .expect("latest")
        .expect("p2");
    assert_eq!(latest.id, "p2");

    // One-time: the first download counts, the second does not; expired
    // links do not count either.
    assert!(
        packages
            .record_download("p2", t0 + 2, &audit("install.download"))
            .await
            .expect("first")
    );
    assert!(
        !packages
            .record_download("p2", t0 + 3, &audit("install.download"))
            .await
            .expect("second")
    );
    let p2 = packages
        .package_by_token("h2")
        .await
        .expect("read")
        .expect("p2");
    assert_eq!((p2.state.as_str(), p2.downloads), ("downloaded", 1));
    assert!(p2.package.is_none(), "a used one-time package is wiped");
    let mut reusable = package("p3", "h3", &active.id, t0 + 4, "k2");
    reusable.one_time = false;
    packages
        .create_package(&reusable, |_| audit("install.request"))
        .await
        .expect("p3");
    for at in [t0 + 5, t0 + 6] {
        assert!(
            packages
                .record_download("p3", at, &audit("install.download"))
                .await
                .expect("reusable")
        );
    }
    assert!(
        !packages
            .record_download("p3", t0 + 104, &audit("install.download"))
            .await
            .expect("expired")
    );
    let downloads = store
        .audit()
        .events(100)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.action == "install.download")
        .count();
    assert_eq!(downloads, 3, "one audit event per counted download");

    // Only the package not superseded is reminded of.
    let waiting = packages.due_reminders(t0 + 1000, 10).await.expect("due");
    let ids: Vec<&str> = waiting.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["p3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn install_packages_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    package_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn install_packages_on_postgres() {
    let Some(base) = pg_url_or_skip("install_packages_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    package_contract(Store::connect(&url).await.expect("connect")).await;
}

// acme-dns registrations (issue 16).

/// acme-dns accounts: one per (provider, domain), the first saved wins,
/// found by domain and by fulldomain, counted by master key id and
/// re-sealed like every other sealed secret.
async fn acme_dns_contract(store: Store) {
    use twincert::store::{AcmeDnsRegistration, AuditEvent, SecretKind};
    store.migrate().await.expect("migrate");
    let reg = |domain: &str, tag: u8| AcmeDnsRegistration {
        domain: domain.into(),
        fulldomain: format!("sub-{tag}.auth.example.test"),
        subdomain: format!("sub-{tag}"),
        sealed: sealed(tag),
    };
    let regs = store.acme_dns();
    let kept = regs
        .save("adns", &reg("a.example.test", 1), 10)
        .await
        .expect("save");
    assert_eq!(kept.fulldomain, "sub-1.auth.example.test");
    // A second registration of the same domain (another replica) loses.
    let again = regs
        .save("adns", &reg("a.example.test", 2), 11)
        .await
        .expect("save again");
    assert_eq!(again.subdomain, "sub-1");
    assert_eq!(again.sealed, sealed(1));
    // Another provider has its own accounts.
    regs.save("other", &reg("a.example.test", 3), 12)
        .await
        .expect("other provider");
    let by_full = regs
        .by_fulldomain("adns", "sub-1.auth.example.test")
        .await
        .expect("by fulldomain")
        .expect("found");
    assert_eq!(by_full.domain, "a.example.test");
    assert!(
        regs.by_fulldomain("adns", "sub-3.auth.example.test")
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        regs.by_domain("adns", "b.example.test")
            .await
            .expect("lookup")
            .is_none()
    );
    // Counted under its master key, found for re-sealing, re-sealed.
    let counts = store.keys().sealed_by_key_id().await.expect("counts");
    assert_eq!(counts, vec![("k1".to_string(), 2)]);
    let due = store.keys().sealed_not_under("k2", 10).await.expect("due");
    let ids: Vec<(SecretKind, String)> = due.iter().map(|s| (s.kind, s.id.clone())).collect();
    assert_eq!(
        ids,
        [
            (
                SecretKind::AcmeDnsAccount,
                "adns a.example.test".to_string()
            ),
            (
                SecretKind::AcmeDnsAccount,
                "other a.example.test".to_string()
            ),
        ]
    );
    let new = Sealed {
        key_id: "k2".into(),
        nonce: vec![9; 12],
        ciphertext: vec![9; 48],
    };
    let batch: Vec<_> = due.into_iter().map(|s| (s, new.clone())).collect();
    let (keys, accounts, packages) = store
        .keys()
        .replace_sealed(&batch, |_, _, _| {
            AuditEvent::ok(20, "test", "keys.reseal", "k2", None, None)
        })
        .await
        .expect("reseal");
    assert_eq!((keys, accounts, packages), (0, 2, 0));
    let now = regs
        .by_domain("adns", "a.example.test")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(now.sealed, new);
    assert!(
        store
            .keys()
            .sealed_not_under("k2", 10)
            .await
            .expect("due")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_dns_registrations_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    acme_dns_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_dns_registrations_on_postgres() {
    let Some(base) = pg_url_or_skip("acme_dns_registrations_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    acme_dns_contract(Store::connect(&url).await.expect("connect")).await;
}

/// The lifetime-scaled alerts in SQL agree with the policy functions they
/// mirror, on both backends: `Status::track_standby` with
/// `policy::no_standby_alert_after` and `Status::expiring_slots` with
/// `policy::expiry_alert_due`, for 12-hour, 6-, 45-, 64- and 90-day
/// certificates, at every lifetime's own boundaries (issue 17, item 2).
async fn lifetime_alerts_contract(store: Store) {
    store.migrate().await.expect("migrate");
    const DAY: i64 = 86_400;
    let t0 = 1_000_000_000;
    let lifetimes: BTreeMap<String, i64> = [
        ("h12.example.test", DAY / 2),
        ("d6.example.test", 6 * DAY),
        ("d45.example.test", 45 * DAY),
        ("d64.example.test", 64 * DAY),
        ("d90.example.test", 90 * DAY),
    ]
    .into_iter()
    .map(|(n, l)| (n.to_string(), l))
    .collect();
    for n in lifetimes.keys() {
        store
            .names()
            .create_name(&name(n, "a", "b"), "t", t0)
            .await
            .expect("create");
    }
    // Only the primary (active) slot is issued: no name has a standby.
    let jobs = store
        .leases()
        .lease_orders("w", t0, 60, 100)
        .await
        .expect("lease");
    let settings = policy::lifetime::ScheduleSettings::DEFAULTS;
    for (i, job) in jobs.iter().filter(|j| j.slot == Slot::Primary).enumerate() {
        let l = lifetimes[job.name_id.as_str()];
        let renew = policy::renew_at(t0, t0 + l, settings.renew_at_fraction);
        issue(&store, job, "w", i, (t0, t0 + l, renew)).await;
    }
    let status = store.status();
    let max = settings.no_standby_alert_seconds;
    let divisor = policy::NO_STANDBY_LIFETIME_DIVISOR;
    // The first pass notes when each standby went missing (t0).
    let first = status
        .track_standby(t0, max, divisor, 100)
        .await
        .expect("track");
    assert!(first.is_empty(), "{first:?}");

    // Every boundary of every lifetime, and a second either side.
    let mut times: Vec<i64> = Vec::new();
    for l in lifetimes.values() {
        let s = policy::lifetime::schedule(*l, &settings);
        for at in [s.no_standby_after, s.expiry_alert_at, s.renew_at] {
            times.extend([t0 + at - 1, t0 + at, t0 + at + 1]);
        }
    }
    times.sort();
    times.dedup();
    for now in times {
        let mut sql: Vec<String> = status
            .track_standby(now, max, divisor, 100)
            .await
            .expect("track")
            .into_iter()
            .map(|(n, since)| {
                assert_eq!(since, t0, "{n}");
                n
            })
            .collect();
        sql.sort();
        let want: Vec<String> = lifetimes
            .iter()
            .filter(|(_, l)| now - t0 >= policy::no_standby_alert_after(max, Some(**l)))
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(sql, want, "no_standby at t0 + {} s", now - t0);

        let mut sql: Vec<String> = status
            .expiring_slots(now, settings.expiry_alert_fraction, 100)
            .await
            .expect("expiring")
            .into_iter()
            .map(|(n, slot, ..)| {
                assert_eq!(slot, Slot::Primary);
                n
            })
            .collect();
        sql.sort();
        let want: Vec<String> = lifetimes
            .iter()
            .filter(|(_, l)| {
                let renew = policy::renew_at(t0, t0 + **l, settings.renew_at_fraction);
                // Past expiry too: the alert then says "has EXPIRED".
                policy::expiry_alert_due(t0, t0 + **l, renew, settings.expiry_alert_fraction, now)
            })
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(sql, want, "expiry_soon at t0 + {} s", now - t0);
    }
}

/// Readiness counts a standby as expiring in SQL exactly when
/// `policy::readiness::standby_expiring` says so, for standbys of 12
/// hours to 90 days, around each one's boundary, on both backends.
async fn readiness_expiring_contract(store: Store) {
    store.migrate().await.expect("migrate");
    const DAY: i64 = 86_400;
    let t0 = 1_000_000_000;
    let window = policy::lifetime::ScheduleSettings::DEFAULTS.revocation_window_seconds;
    let lifetimes: BTreeMap<String, i64> = [
        ("h12.example.test", DAY / 2),
        ("d6.example.test", 6 * DAY),
        ("d45.example.test", 45 * DAY),
        ("d64.example.test", 64 * DAY),
        ("d90.example.test", 90 * DAY),
    ]
    .into_iter()
    .map(|(n, l)| (n.to_string(), l))
    .collect();
    for n in lifetimes.keys() {
        store
            .names()
            .create_name(&name(n, "a", "b"), "t", t0)
            .await
            .expect("create");
    }
    let jobs = store
        .leases()
        .lease_orders("w", t0, 60, 100)
        .await
        .expect("lease");
    for (i, job) in jobs.iter().enumerate() {
        // The active primary lives long; the standby has the lifetime.
        let l = match job.slot {
            Slot::Primary => 365 * DAY,
            Slot::Backup => lifetimes[job.name_id.as_str()],
        };
        issue(&store, job, "w", i, (t0, t0 + l, t0 + l * 2 / 3)).await;
    }
    let mut times = Vec::new();
    for l in lifetimes.values() {
        let s = policy::lifetime::schedule(*l, &policy::lifetime::ScheduleSettings::DEFAULTS);
        let at = t0 + l - s.standby_expiring_left;
        times.extend([t0, at - 1, at, at + 1]);
    }
    for now in times {
        let facts = store
            .readiness()
            .name_facts("a", now, now + window, "", 100)
            .await
            .expect("facts");
        assert_eq!(facts.len(), lifetimes.len(), "{facts:?}");
        for (n, g) in facts {
            let l = lifetimes[&n];
            assert_eq!(
                g.expiring,
                policy::readiness::standby_expiring(t0, t0 + l, now, window),
                "{n} at t0 + {} s",
                now - t0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_expiring_agrees_with_policy_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    readiness_expiring_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_expiring_agrees_with_policy_on_postgres() {
    let Some(base) = pg_url_or_skip("readiness_expiring_agrees_with_policy_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    readiness_expiring_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_alerts_agree_with_policy_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    lifetime_alerts_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_alerts_agree_with_policy_on_postgres() {
    let Some(base) = pg_url_or_skip("lifetime_alerts_agree_with_policy_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    lifetime_alerts_contract(Store::connect(&url).await.expect("connect")).await;
}

/// ACME accounts: the first stored wins; a forgotten one is replaced only
/// while it is still the stored one, so replicas that find the loss at
/// once end up on one new account.
async fn account_contract(store: Store) {
    store.migrate().await.expect("migrate");
    let keys = store.keys();
    let (url, _) = keys
        .save_account("a", "https://ca/dir", "https://ca/acct/1", &sealed(1), 10)
        .await
        .expect("save");
    assert_eq!(url, "https://ca/acct/1");
    let (url, kept) = keys
        .save_account("a", "https://ca/dir", "https://ca/acct/2", &sealed(2), 11)
        .await
        .expect("save again");
    assert_eq!((url.as_str(), kept), ("https://ca/acct/1", sealed(1)));
    // Two replicas replace the dead account 1: the first wins.
    let (url, now) = keys
        .replace_account(
            "a",
            "https://ca/acct/1",
            "https://ca/acct/3",
            &sealed(3),
            12,
        )
        .await
        .expect("replace");
    assert_eq!((url.as_str(), now), ("https://ca/acct/3", sealed(3)));
    let (url, now) = keys
        .replace_account(
            "a",
            "https://ca/acct/1",
            "https://ca/acct/4",
            &sealed(4),
            13,
        )
        .await
        .expect("replace late");
    assert_eq!((url.as_str(), now), ("https://ca/acct/3", sealed(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    account_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_on_postgres() {
    let Some(base) = pg_url_or_skip("accounts_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    account_contract(Store::connect(&url).await.expect("connect")).await;
}

/// The stored `/metrics` counts and the deployer's due queue (issue 21):
/// a stored set reads back as counted and equals a full recount after
/// issuance, a swap and a deletion; an issuance or renewal marks its
/// name's deployments due in its own transaction; after a swap the
/// deployer's `mark_stale` marks exactly the deployments (and the
/// undeployed names' endpoint checks) the swap made stale; a write
/// unmarks.
async fn counts_and_due_contract(store: Store) {
    use twincert::store::{CheckRecord, EXPIRY_SERIES, EndpointSpec};
    store.migrate().await.expect("migrate");
    let now = 7_000;
    let sorted = |mut c: twincert::store::Counts| {
        c.totals.sort();
        c.usage.sort();
        c.sealed.sort();
        c.series.sort_by(|a, b| a.0.cmp(&b.0));
        c.pass_seconds = 0.0;
        c.overview.seconds = 0.0;
        c
    };
    // Stores a recount and checks that it reads back equal to a new one.
    let stored_equals_recount = async |at: i64| {
        let counted = store.recount(at, EXPIRY_SERIES).await.expect("recount");
        assert!(
            store
                .metrics()
                .save_counts(&counted)
                .await
                .expect("save counts")
        );
        let loaded = store
            .metrics()
            .load_counts()
            .await
            .expect("load")
            .expect("a stored set");
        let fresh = store.recount(at, EXPIRY_SERIES).await.expect("recount");
        assert_eq!(sorted(loaded), sorted(fresh.clone()));
        // The counts maintained by bucket agree with the full recount.
        let (maintained, _) = store
            .count_maintained(at, EXPIRY_SERIES)
            .await
            .expect("maintained counts");
        // (The console overview's counts are the controller's, taken at
        // their own pace: not part of the maintained set.)
        let mut full = sorted(fresh.clone());
        full.overview = Default::default();
        assert_eq!(sorted(maintained), full, "maintained at {at}");
        fresh
    };
    let total = |c: &twincert::store::Counts, metric: &str| {
        c.totals
            .iter()
            .find(|(k, _)| k == metric)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{metric} in {:?}", c.totals))
    };
    let series = |c: &twincert::store::Counts, s: &str| {
        c.series
            .iter()
            .find(|(k, _)| k == s)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    assert!(
        store.metrics().load_counts().await.expect("load").is_none(),
        "nothing stored before the first pass"
    );
    assert!(
        store
            .console()
            .stored_overview()
            .await
            .expect("overview")
            .is_none(),
        "the console's overview has no counts before the first pass"
    );

    let names = [
        ("d1.example.test", "a", "b", true),
        ("d2.example.test", "a", "b", true),
        ("d3.example.test", "a", "b", false),
        ("d4.example.test", "b", "c", true),
    ];
    for (n, p, b, _) in names {
        store
            .names()
            .create_name(&name(n, p, b), "t", now)
            .await
            .expect("create");
    }
    let audit = |n: &str| AuditEvent::ok(now, "t", "deploy.set", n, None, None);
    for (n, _, _, deployed) in names {
        let destinations = if deployed {
            vec!["files-1".to_string()]
        } else {
            vec![]
        };
        let endpoint = EndpointSpec {
            host: n.into(),
            port: 443,
            sni: None,
            ip: None,
            admin_contact: None,
        };
        store
            .deployments()
            .set_deploy_targets(n, &destinations, &[endpoint], &audit(n))
            .await
            .expect("targets");
    }
    let c = stored_equals_recount(now).await;
    assert_eq!(total(&c, "twincert_names"), 4);
    // The console's overview reads the same pass: states from its series,
    // posture and CA mix from its own rows.
    let (at, overview) = store
        .console()
        .stored_overview()
        .await
        .expect("overview")
        .expect("a stored set");
    assert_eq!(at, now);
    assert_eq!(
        overview.states,
        [
            ("ready".to_string(), 0),
            ("degraded".to_string(), 0),
            ("provisioning".to_string(), 4),
            ("waiting".to_string(), 0)
        ]
    );
    assert_eq!(overview.posture.get("no_standby"), Some(&4));
    assert_eq!(overview.mix.get(&("a".into(), "b".into())), Some(&3));
    assert_eq!(overview.mix.get(&("b".into(), "c".into())), Some(&1));
    assert_eq!(overview.superseded, 0);
    assert_eq!(
        series(&c, "twincert_names_by_state{state=\"provisioning\"}"),
        4.0
    );

    issue_all(&store, now, &[]).await;
    let c = stored_equals_recount(now).await;
    assert_eq!(total(&c, "twincert_slots_with_certificate"), 8);
    assert_eq!(series(&c, "twincert_names_by_state{state=\"ready\"}"), 4.0);
    let active_on = |c: &twincert::store::Counts, ca: &str| {
        c.usage
            .iter()
            .find(|(id, _, _)| id == ca)
            .map(|(_, a, _)| *a)
            .unwrap_or(0)
    };
    assert_eq!(active_on(&c, "a"), 3);
    let expiry = c
        .series
        .iter()
        .filter(|(k, _)| k.starts_with("twincert_certificate_expiration_timestamp_seconds"))
        .count();
    assert_eq!(expiry, 8, "one expiry series per slot with a certificate");

    // Issuance marked the deployments due (they also were at creation).
    let due_names = |due: &[twincert::store::DueDeployment]| {
        let mut v: Vec<String> = due.iter().map(|d| d.name_id.clone()).collect();
        v.sort();
        v
    };
    let due = store
        .deployments()
        .due_deployments(now, 100)
        .await
        .expect("due");
    assert_eq!(
        due_names(&due),
        ["d1.example.test", "d2.example.test", "d4.example.test"]
    );
    // Written as a batch, recorded in one transaction (the deployer's
    // files batches).
    let written: Vec<twincert::store::Deployed> = due
        .iter()
        .map(|d| twincert::store::Deployed {
            name_id: d.name_id.clone(),
            destination: d.destination.clone(),
            cert_id: d.cert_id.clone(),
            detail: serde_json::json!({}),
        })
        .collect();
    store
        .deployments()
        .record_deployed_many(&written, now + 1, now)
        .await
        .expect("deployed");
    // Every endpoint checked: it saw the active certificate, next check
    // in a day; a page of checks recorded in one transaction.
    let check = CheckRecord {
        outcome: "matched".into(),
        summary: "ok".into(),
        steps: serde_json::json!([]),
        served_serial: None,
    };
    let endpoints = store
        .deployments()
        .due_endpoints(now + 1, 100)
        .await
        .expect("due endpoints");
    let checks: Vec<twincert::store::Checked> = endpoints
        .iter()
        .map(|e| twincert::store::Checked {
            endpoint_id: e.id.clone(),
            cert_id: e.cert_id.clone(),
            record: check.clone(),
            next_check_at: now + 86_400,
        })
        .collect();
    store
        .deployments()
        .record_checks(&checks, now + 1)
        .await
        .expect("checks");
    let quiet = now + 2;
    assert!(
        store
            .deployments()
            .due_deployments(quiet, 100)
            .await
            .expect("due")
            .is_empty(),
        "written deployments are not due"
    );
    assert_eq!(
        store.deployments().mark_stale(quiet).await.expect("mark"),
        (0, 0),
        "nothing is stale before a swap"
    );
    assert!(
        store
            .deployments()
            .due_endpoints(quiet, 100)
            .await
            .expect("due endpoints")
            .is_empty()
    );

    // A CA-wide swap of `a`: d1, d2 (deployed) and d3 (endpoint only).
    let swap = store
        .emergency()
        .mass_swap(&SwapScope::Ca("a".into()), "incident", "op", false, quiet)
        .await
        .expect("swap");
    assert_eq!(swap.swapped, 3);
    let c = stored_equals_recount(quiet).await;
    assert_eq!(active_on(&c, "a"), 0);
    assert_eq!(active_on(&c, "b"), 4);
    assert_eq!(
        store.deployments().mark_stale(quiet).await.expect("mark"),
        (2, 1),
        "d1's and d2's deployments, d3's endpoint"
    );
    let due = store
        .deployments()
        .due_deployments(quiet, 100)
        .await
        .expect("due");
    assert_eq!(due_names(&due), ["d1.example.test", "d2.example.test"]);
    for d in &due {
        let rec = store
            .names()
            .name(&d.name_id)
            .await
            .expect("read")
            .expect("exists");
        let active = rec
            .slot(Slot::Backup)
            .and_then(|s| s.cert.as_ref())
            .map(|c| c.id.clone());
        assert_eq!(Some(d.cert_id.clone()), active, "the backup is written");
    }
    let endpoints = store
        .deployments()
        .due_endpoints(quiet, 100)
        .await
        .expect("due endpoints");
    assert_eq!(
        endpoints
            .iter()
            .map(|e| e.name_id.as_str())
            .collect::<Vec<_>>(),
        ["d3.example.test"]
    );
    // An endpoint whose name waits for its write is not checked yet, even
    // when asked to be: it would see the old certificate.
    store
        .deployments()
        .request_checks("d1.example.test", quiet)
        .await
        .expect("request checks");
    let endpoints = store
        .deployments()
        .due_endpoints(quiet, 100)
        .await
        .expect("due endpoints");
    assert_eq!(
        endpoints
            .iter()
            .map(|e| e.name_id.as_str())
            .collect::<Vec<_>>(),
        ["d3.example.test"]
    );
    for d in &due {
        store
            .deployments()
            .record_deployed(
                &d.name_id,
                &d.destination,
                &d.cert_id,
                &serde_json::json!({}),
                quiet + 1,
                quiet,
            )
            .await
            .expect("deployed");
    }
    assert!(
        store
            .deployments()
            .due_deployments(quiet, 100)
            .await
            .expect("due")
            .is_empty()
    );

    // Deletion.
    store
        .names()
        .delete_name("d2.example.test", false, "t", quiet)
        .await
        .expect("delete");
    let c = stored_equals_recount(quiet).await;
    assert_eq!(total(&c, "twincert_names"), 3);
    assert_eq!(series(&c, "twincert_deployments{state=\"requested\"}"), 2.0);

    // Renewal of every slot: each issuance marks its name's deployments
    // in its own transaction, no `mark_stale` needed.
    let later = now + 600;
    store
        .orders()
        .plan_due_orders(later, 100)
        .await
        .expect("plan renewals");
    issue_all(&store, later, &[]).await;
    let due = store
        .deployments()
        .due_deployments(later, 100)
        .await
        .expect("due");
    assert_eq!(due_names(&due), ["d1.example.test", "d4.example.test"]);
    stored_equals_recount(later).await;

    // An older set does not replace a newer one (two replicas' passes).
    let old = store.recount(quiet, EXPIRY_SERIES).await.expect("recount");
    assert!(!store.metrics().save_counts(&old).await.expect("save"));
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_and_due_queue_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    counts_and_due_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_and_due_queue_on_postgres() {
    let Some(base) = pg_url_or_skip("counts_and_due_queue_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    counts_and_due_contract(Store::connect(&url).await.expect("connect")).await;
}

/// Counts maintained by bucket (issue 21) equal a full recount after every
/// kind of change — new names, issuance, a failed attempt, a one-name
/// swap, a CA-wide swap, revocation checks, endpoint outcomes, a deletion
/// — and after time alone moved figures (a certificate entering its last
/// week, expiring); a pass with nothing changed recounts no bucket.
async fn maintained_counts_contract(store: Store) {
    use twincert::store::{CheckRecord, Counts, EXPIRY_SERIES, EndpointSpec};
    store.migrate().await.expect("migrate");
    let sorted = |mut c: Counts| {
        c.totals.sort();
        c.usage.sort();
        c.sealed.sort();
        c.series.sort_by(|a, b| a.0.cmp(&b.0));
        c.pass_seconds = 0.0;
        c.overview.seconds = 0.0;
        c
    };
    // One pass of maintained counts at `at`, compared with a full
    // recount; how many buckets it recounted.
    let agree = async |at: i64, what: &str| -> usize {
        let (maintained, pass) = store
            .count_maintained(at, EXPIRY_SERIES)
            .await
            .expect("maintained counts");
        let mut full = sorted(store.recount(at, EXPIRY_SERIES).await.expect("recount"));
        full.overview = Default::default();
        assert_eq!(sorted(maintained), full, "after {what}");
        pass.buckets
    };
    let now = 100_000;
    // Until a partial is stored, a pass counts everything.
    assert_eq!(agree(now, "an empty store").await, 4096);

    let names = [
        ("c1.example.test", "a", "b"),
        ("c2.example.test", "a", "b"),
        ("c3.example.test", "a", "b"),
        ("c4.example.test", "b", "c"),
    ];
    for (n, p, b) in names {
        store
            .names()
            .create_name(&name(n, p, b), "t", now)
            .await
            .expect("create");
    }
    assert!(agree(now, "new names").await > 0);
    issue_all(&store, now, &["c3.example.test"]).await;
    assert!(agree(now, "issuance").await > 0);
    let audit = |n: &str| AuditEvent::ok(now, "t", "deploy.set", n, None, None);
    for (n, _, _) in names {
        let endpoint = EndpointSpec {
            host: n.into(),
            port: 443,
            sni: None,
            ip: None,
            admin_contact: None,
        };
        store
            .deployments()
            .set_deploy_targets(n, &["files-1".to_string()], &[endpoint], &audit(n))
            .await
            .expect("targets");
    }
    agree(now, "deployment targets").await;
    assert_eq!(
        agree(now, "nothing").await,
        0,
        "an idle pass recounts nothing"
    );

    // A new name whose first attempt fails: degraded, a failing order.
    store
        .names()
        .create_name(&name("c5.example.test", "a", "c"), "t", now)
        .await
        .expect("create");
    let jobs = store
        .leases()
        .lease_orders("w", now, 60, 10)
        .await
        .expect("lease");
    assert_eq!(jobs.len(), 2, "c5's two orders");
    store
        .orders()
        .fail_attempt(&jobs[0].id, "w", "CA refused", now + 100, false, now)
        .await
        .expect("fail");
    agree(now, "a failed attempt").await;
    store
        .orders()
        .set_propagation_ms(&jobs[1].id, 1500)
        .await
        .expect("propagation");
    agree(now, "a propagation time").await;

    // One name swapped, then every name active on CA `a`.
    store
        .emergency()
        .swap("c1.example.test", "t", "drill", now + 1)
        .await
        .expect("swap one");
    assert_eq!(agree(now + 1, "a one-name swap").await, 1);
    store
        .emergency()
        .mass_swap(&SwapScope::Ca("b".into()), "incident", "op", false, now + 2)
        .await
        .expect("swap CA b");
    assert_eq!(agree(now + 2, "a CA-wide swap").await, 4096);

    // Revocation checks: the first check of a certificate changes its
    // status; the same outcome again later (a heartbeat) does not.
    let certs: Vec<String> = {
        let mut ids = Vec::new();
        for (n, _, _) in names {
            let rec = store.names().name(n).await.expect("read").expect("exists");
            for slot in [Slot::Primary, Slot::Backup] {
                if let Some(c) = rec.slot(slot).and_then(|s| s.cert.as_ref()) {
                    ids.push(c.id.clone());
                }
            }
        }
        ids
    };
    store
        .status()
        .record_checks(&certs[..3], "crl", None, now + 3, 60)
        .await
        .expect("checks");
    store
        .status()
        .record_checks(&certs[3..5], "ocsp", Some("responder down"), now + 3, 60)
        .await
        .expect("checks");
    assert!(agree(now + 3, "first revocation checks").await > 0);
    store
        .status()
        .record_checks(&certs[..3], "crl", None, now + 100, 60)
        .await
        .expect("heartbeat");
    assert_eq!(
        agree(now + 100, "a heartbeat").await,
        0,
        "a heartbeat changes no count (each CA's newest check is read live)"
    );
    store
        .status()
        .track_standby(now + 100, 3600, 3, 100)
        .await
        .expect("track standby");
    agree(now + 100, "standby tracking").await;

    // Endpoint checks: a new outcome changes the counts, the same one
    // again does not.
    let check = |outcome: &str| CheckRecord {
        outcome: outcome.into(),
        summary: "s".into(),
        steps: serde_json::json!([]),
        served_serial: None,
    };
    for d in store
        .deployments()
        .due_deployments(now + 200, 100)
        .await
        .expect("due deployments")
    {
        store
            .deployments()
            .record_deployed(
                &d.name_id,
                &d.destination,
                &d.cert_id,
                &serde_json::json!({}),
                now + 200,
                now + 200,
            )
            .await
            .expect("deployed");
    }
    agree(now + 200, "deployments written").await;
    let due = store
        .deployments()
        .due_endpoints(now + 200, 100)
        .await
        .expect("due endpoints");
    assert!(due.len() >= 2, "{} endpoints due", due.len());
    for (i, e) in due.iter().enumerate() {
        let outcome = if i == 0 { "mismatch" } else { "matched" };
        store
            .deployments()
            .record_check(
                &e.id,
                e.cert_id.as_deref(),
                &check(outcome),
                now + 300,
                now + 200,
            )
            .await
            .expect("check");
    }
    assert!(agree(now + 200, "endpoint outcomes").await > 0);
    if let Some(e) = due.get(1) {
        store
            .deployments()
            .record_check(
                &e.id,
                e.cert_id.as_deref(),
                &check("matched"),
                now + 400,
                now + 300,
            )
            .await
            .expect("check again");
    }
    assert_eq!(agree(now + 300, "the same outcome").await, 0);

    // Time alone: the certificates (not_after now + 1000) enter their
    // last week at once, then expire; c3's backup expired already.
    agree(now + 999, "just before expiry").await;
    assert!(
        agree(now + 1000, "expiry").await > 0,
        "the expired certificates' buckets are recounted by time"
    );
    assert_eq!(agree(now + 1001, "nothing").await, 0);

    store
        .names()
        .delete_name("c2.example.test", false, "t", now + 1001)
        .await
        .expect("delete");
    assert_eq!(agree(now + 1001, "a deletion").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn maintained_counts_equal_a_full_recount_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    maintained_counts_contract(Store::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn maintained_counts_equal_a_full_recount_on_postgres() {
    let Some(base) = pg_url_or_skip("maintained_counts_equal_a_full_recount_on_postgres") else {
        return;
    };
    let url = fresh_pg_database(&base).await;
    maintained_counts_contract(Store::connect(&url).await.expect("connect")).await;
}
