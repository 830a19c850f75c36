//! The store's contract, run against real SQLite and real PostgreSQL: the
//! same assertions on both backends, since one SQL text serves both.

use twincert::domain::{CaId, ChallengeKind, DnsName, KeyType, ManagedNameId, Slot};
use twincert::keys::seal::Sealed;
use twincert::store::{NewCertificate, NewName, Store, StoreError};

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
    }
}

async fn contract(store: Store) {
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrations are idempotent");
    let t0 = 1_000_000;

    // Names: create, duplicate, same-CA rejected by the schema itself.
    store
        .create_name(&name("n1.example.test", "a", "b"), "t", t0)
        .await
        .expect("create");
    let dup = store
        .create_name(&name("n1.example.test", "a", "b"), "t", t0)
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))), "{dup:?}");
    let same = store
        .create_name(&name("n2.example.test", "a", "a"), "t", t0)
        .await;
    assert!(same.is_err(), "CHECK (primary_ca <> backup_ca) must refuse");
    assert!(store.name("n2.example.test").await.expect("read").is_none());

    let rec = store
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

    // Leasing: two workers never get the same order.
    let w1 = store.lease_orders("w1", t0, 30, 1).await.expect("lease w1");
    let w2 = store
        .lease_orders("w2", t0, 30, 10)
        .await
        .expect("lease w2");
    assert_eq!(w1.len(), 1);
    assert_eq!(w2.len(), 1);
    assert_ne!(w1[0].id, w2[0].id);
    assert!(
        store
            .lease_orders("w3", t0, 30, 10)
            .await
            .expect("lease w3")
            .is_empty()
    );

    // A lease that ran out can be taken over; the old owner then loses.
    let taken = store
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
        .set_acme_order_url(&job.id, "w1", "https://ca/order/1", t0 + 31)
        .await;
    assert!(matches!(lost, Err(StoreError::LeaseLost(_))), "{lost:?}");

    // Key, URL, tokens, failure.
    let key_id = store
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
        .private_key(&key_id)
        .await
        .expect("read key")
        .expect("key row");
    assert_eq!(kt, KeyType::EcdsaP256);
    assert_eq!(back, sealed(1));
    store
        .set_acme_order_url(&job.id, "w3", "https://ca/order/1", t0 + 31)
        .await
        .expect("url");
    store
        .put_http01_token("tok1", "tok1.thumb", &job.id, t0 + 31)
        .await
        .expect("token");
    assert_eq!(
        store
            .http01_key_authorization("tok1")
            .await
            .expect("read token")
            .as_deref(),
        Some("tok1.thumb")
    );
    store
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
            .http01_key_authorization("tok1")
            .await
            .expect("read")
            .is_none()
    );
    let rec = store
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
            .lease_orders("w4", t0 + 99, 30, 10)
            .await
            .expect("lease")
            .iter()
            .all(|j| j.id != job.id)
    );

    // Retry: resumes with the stored URL and key, then completes.
    let again = store
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
        .put_http01_token("tok2", "tok2.thumb", &job.id, t0 + 100)
        .await
        .expect("token");
    store
        .complete_order(&job.id, "w4", &cert("01", t0, t0 + 300, t0 + 200), t0 + 101)
        .await
        .expect("complete");
    assert!(
        store
            .http01_key_authorization("tok2")
            .await
            .expect("read")
            .is_none()
    );
    let rec = store
        .name("n1.example.test")
        .await
        .expect("read")
        .expect("exists");
    let p = rec.slot(Slot::Primary).expect("primary");
    assert!(p.last_error.is_none());
    assert!(p.order.is_none());
    assert_eq!(p.cert.as_ref().map(|c| c.serial.as_str()), Some("01"));
    assert_eq!(store.orphan_key_count().await.expect("count"), 0);

    // Swap needs a usable standby; the backup has none yet.
    let no = store.swap("n1.example.test", "t", "drill", t0 + 102).await;
    assert!(matches!(no, Err(StoreError::Conflict(_))), "{no:?}");

    // Planner: nothing due before renew_after, a renewal order after.
    assert_eq!(store.plan_due_orders(t0 + 150, 100).await.expect("plan"), 0);
    assert_eq!(store.plan_due_orders(t0 + 200, 100).await.expect("plan"), 1);
    assert_eq!(
        store.plan_due_orders(t0 + 200, 100).await.expect("plan"),
        0,
        "one open order per slot"
    );
    let orders = store
        .orders_of("n1.example.test", Slot::Primary)
        .await
        .expect("orders");
    assert_eq!(orders.len(), 2);

    // Listing, pagination, CA filter.
    store
        .create_name(&name("n3.example.test", "b", "c"), "t", t0)
        .await
        .expect("create n3");
    let page = store.list_names(1, None, None).await.expect("list");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "n1.example.test");
    let page = store
        .list_names(10, Some("n1.example.test"), None)
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n3.example.test"]
    );
    let by_c = store.list_names(10, None, Some("c")).await.expect("list");
    assert_eq!(by_c.len(), 1);

    // Delete removes the name, its certificates and their keys.
    store
        .delete_name("n1.example.test", false, "t", t0 + 300)
        .await
        .expect("delete");
    assert!(store.name("n1.example.test").await.expect("read").is_none());
    assert!(store.private_key(&key_id).await.expect("read").is_none());
    let gone = store
        .delete_name("n1.example.test", false, "t", t0 + 300)
        .await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))));

    let events = store.audit_events(10).await.expect("audit");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["name.delete", "name.create", "name.create"]);
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

/// Gives every open order a key and a certificate; `expired` names get a
/// backup that expired before `now`.
async fn issue_all(store: &Store, now: i64, expired: &[&str]) {
    let jobs = store.lease_orders("w", now, 60, 1000).await.expect("lease");
    for (i, job) in jobs.iter().enumerate() {
        let spki = format!("{:064x}", i + 1000 * now as usize);
        store
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
            .create_name(&name(n, "a", "b"), "t", now)
            .await
            .expect("create");
    }
    store
        .create_name(&name("m4.example.test", "b", "c"), "t", now)
        .await
        .expect("create");
    issue_all(&store, now, &["m3.example.test"]).await;

    let dry = store
        .mass_swap(&SwapScope::Ca("a".into()), "drill", "t", true, now)
        .await
        .expect("dry run");
    assert_eq!(dry.counts.get("swap"), Some(&2), "{dry:?}");
    assert_eq!(dry.counts.get("standby_expired"), Some(&1), "{dry:?}");
    assert_eq!(dry.swapped, 0);
    assert!(dry.operation_id.is_none());
    let still = store
        .name("m1.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(still.active, Slot::Primary, "a dry run changes nothing");

    let real = store
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
        let rec = store.name(n).await.expect("read").expect("exists");
        assert_eq!(rec.active, want, "{n}");
    }
    let again = store
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
        .mass_swap(&SwapScope::Spki(spki), "key compromise", "op", false, now)
        .await
        .expect("by spki");
    assert_eq!(by_key.swapped, 1);
    // By names: swapping m1 back.
    let by_names = store
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
    let events = store.audit_events(10).await.expect("audit");
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
            .create_name(&name(n, "a", "b"), "t", now2)
            .await
            .expect("create");
    }
    issue_all(&store, now2, &[]).await;
    store
        .report_compromise("m5.example.test", Slot::Backup, "leak", "op", now2)
        .await
        .expect("compromise");
    for (id, _, _, reason) in store.pending_revocations(10).await.expect("pending") {
        assert_eq!(reason, 1);
        store
            .revocation_result(&id, None, now2)
            .await
            .expect("revoked");
    }
    let pair = SwapScope::Names(vec!["m5.example.test".into(), "m6.example.test".into()]);
    let dry = store
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
    let jobs = store.reprovision_jobs("", 100).await.expect("jobs");
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
    assert!(
        store
            .start_reprovision(&m6, "c", now2)
            .await
            .expect("start")
    );
    assert!(
        !store
            .start_reprovision(&m6, "c", now2)
            .await
            .expect("again"),
        "a marker is taken once"
    );
    let rec = store
        .name("m6.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(rec.primary_ca, "c");
    assert_eq!(rec.slot(Slot::Primary).map(|s| s.ca_id.as_str()), Some("c"));
    let (record, progress) = store.operation(&op).await.expect("read").expect("exists");
    assert_eq!(record.kind, "swap");
    assert_eq!(record.avoid_ca.as_deref(), Some("a"));
    assert_eq!(progress.orders.get("pending"), Some(&1), "{progress:?}");
    assert!(progress.queued >= 1 && !progress.done, "{progress:?}");
    let job = store
        .reprovision_jobs("", 100)
        .await
        .expect("jobs")
        .into_iter()
        .find(|j| j.name_id == "m5.example.test")
        .expect("m5 still marked");
    store
        .block_reprovision(&job, "no CA", now2)
        .await
        .expect("block");
    let (record, _) = store.operation(&op).await.expect("read").expect("exists");
    assert_eq!(record.blocked, 1);

    // Distrusting b moves m6 off it; a standby from a distrusted CA is
    // then never swapped to.
    let d = store
        .distrust_ca("b", "b distrusted", "admin", false, now2)
        .await
        .expect("distrust");
    assert!(d.swapped >= 1, "{d:?}");
    let m6 = store
        .name("m6.example.test")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(m6.active, Slot::Primary);
    let dry = store
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
        .swap("m6.example.test", "op", "back to b?", now2)
        .await;
    assert!(
        matches!(&one, Err(StoreError::Conflict(m)) if m.contains("distrusted")),
        "{one:?}"
    );
    // The swaps are counted in the metrics (a BIGINT sum: NUMERIC on
    // PostgreSQL unless cast).
    let swapped: i64 = store
        .operations(1000)
        .await
        .expect("operations")
        .iter()
        .filter(|o| ["swap", "distrust", "revocation", "incident"].contains(&o.kind.as_str()))
        .map(|o| o.affected)
        .sum();
    assert!(swapped > 0);
    let metrics = store.scale_metrics(now2).await.expect("metrics");
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
