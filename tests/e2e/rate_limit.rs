//! Rate-limit realism (issue 17 item 6): a CA answers newOrder with HTTP
//! 429 `rateLimited` and a `Retry-After`, and twincert waits it out.
//!
//! Server: Pebble 2.4.0 behind the harness's ARI proxy
//! ([`AriProxy::rate_limit_new_orders`]): Pebble cannot rate-limit on
//! demand, so the proxy answers the first newOrder requests itself (a
//! fresh `Replay-Nonce` from Pebble on each) and passes the rest through.

use std::time::Duration;

use serde_json::{Value, json};

use crate::emergency::{get, post, sqlite_url, unix_now};
use crate::harness::TwoCas;
use crate::revocation_harness::{AriProxy, NewOrderHit, RetryAfter};
use crate::server::{Server, ServerOptions};

/// Asserts that no newOrder came before the `Retry-After` of the 429
/// answer before it, and returns the hits for the report.
fn assert_waited(hits: &[NewOrderHit]) {
    for pair in hits.windows(2) {
        if let Some(until) = pair[0].retry_after_until {
            assert!(
                pair[1].at >= until,
                "newOrder at {:.3} came before the Retry-After of the one before \
                 ({until:.3}): {hits:#?}",
                pair[1].at
            );
        }
    }
    eprintln!("newOrder hits: {hits:#?}");
}

async fn server_behind(cas: &TwoCas, proxy: &AriProxy, extra: Vec<(String, String)>) -> Server {
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.env = extra;
    opts.env.push((
        "TWINCERT_CA_PEBBLE_A_DIRECTORY_URL".into(),
        proxy.directory_url(),
    ));
    Server::start(cas, opts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_new_order_waits_for_retry_after_in_seconds_then_issues() {
    const RETRY_AFTER: u64 = 4;
    let cas = TwoCas::start(0).await;
    let proxy = AriProxy::start(&cas.a, &cas.tls).await;
    proxy.rate_limit_new_orders(2, RETRY_AFTER, RetryAfter::Seconds);
    let server = server_behind(&cas, &proxy, Vec::new()).await;
    let (st, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");

    // During the wait: the order names the rate limit and when it retries.
    let v = server
        .wait_for("a.example.test", 30, |v| {
            v["primary"]["order"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("rateLimited"))
        })
        .await;
    let order = &v["primary"]["order"];
    eprintln!("order while rate-limited: {order:#}");
    let first = proxy.new_order_hits()[0].clone();
    let next = time::OffsetDateTime::parse(
        order["next_attempt_at"].as_str().expect("next_attempt_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
    .unix_timestamp();
    assert!(
        next as f64 >= first.retry_after_until.expect("429"),
        "next_attempt_at {next} before the Retry-After: {order:#} {first:?}"
    );
    assert_eq!(order["state"], "pending", "{order:#}");

    let v = server.wait_ready("a.example.test", 60).await;
    assert_eq!(v["primary"]["ca"], "pebble-a", "{v:#}");
    let hits = proxy.new_order_hits();
    assert_eq!(
        hits.iter().filter(|h| h.rate_limited).count(),
        2,
        "{hits:#?}"
    );
    assert!(hits.last().is_some_and(|h| !h.rate_limited), "{hits:#?}");
    assert_waited(&hits);
}

/// A CA-wide swap away from A (two CAs: A re-issues after the hold-off),
/// A rate-limits the re-provisioning with an HTTP-date `Retry-After`, and
/// the operation shows per CA how long it waits.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_reprovisioning_shows_the_wait_per_ca_in_the_operation() {
    const RETRY_AFTER: u64 = 6;
    let cas = TwoCas::start(0).await;
    let proxy = AriProxy::start(&cas.a, &cas.tls).await;
    let server = server_behind(
        &cas,
        &proxy,
        vec![(
            "TWINCERT_POLICY_REPROVISION_SAME_CA_AFTER_SECONDS".into(),
            "1".into(),
        )],
    )
    .await;
    let (st, body) = server.create(json!({"name": "a.example.test"})).await;
    assert_eq!(st, 201, "{body}");
    server.wait_ready("a.example.test", 60).await;
    let before = proxy.new_order_hits().len();

    proxy.rate_limit_new_orders(1, RETRY_AFTER, RetryAfter::HttpDate);
    let (st, swap) = post(
        &server,
        "/v1/swaps",
        json!({"ca": "pebble-a", "reason": "rate-limit drill"}),
    )
    .await;
    assert_eq!(st, 200, "{swap:#}");
    let op = swap["report"]["operation_id"]
        .as_str()
        .expect("operation id")
        .to_string();

    // During the wait: the operation names the CA, its failing order and
    // the time left before A is tried again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seen: Value = loop {
        let v = get(&server, &format!("/v1/operations/{op}")).await;
        let a = v["progress"]["cas"]
            .as_array()
            .and_then(|cas| cas.iter().find(|c| c["ca"] == "pebble-a"))
            .cloned();
        if let Some(a) = a
            && a["failing"] == 1
        {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rate-limited: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("operation while rate-limited: {seen:#}");
    let a = seen["progress"]["cas"]
        .as_array()
        .and_then(|cas| cas.iter().find(|c| c["ca"] == "pebble-a"))
        .expect("pebble-a")
        .clone();
    assert_eq!(a["open"], 1, "{seen:#}");
    let limited = proxy.new_order_hits()[before].clone();
    assert!(limited.rate_limited, "{limited:?}");
    let until = limited.retry_after_until.expect("429");
    let retry_at = a["retry_at"].as_i64().expect("retry_at");
    assert!(retry_at as f64 >= until, "{a:#} vs Retry-After {until}");
    let t = seen["time_left"]
        .as_array()
        .and_then(|t| t.iter().find(|c| c["ca"] == "pebble-a"))
        .expect("time left for pebble-a")
        .clone();
    let left = t["wait_seconds"].as_i64().expect("wait_seconds");
    assert!(
        left > 0 && left <= RETRY_AFTER as i64 + 2,
        "{t:#} (Retry-After {RETRY_AFTER} s)"
    );
    assert!(
        t["seconds_left"].as_i64().expect("seconds_left") >= left,
        "{t:#}"
    );
    assert!(
        seen["progress"]["errors"][0][2]
            .as_str()
            .is_some_and(|e| e.contains("rateLimited")),
        "{seen:#}"
    );

    // Then A re-issues, no earlier than the date it gave.
    server
        .wait_for("a.example.test", 60, |v| {
            v["state"] == "ready" && v["primary"]["reprovision"].is_null()
        })
        .await;
    let hits = proxy.new_order_hits()[before..].to_vec();
    assert!(hits.last().is_some_and(|h| !h.rate_limited), "{hits:#?}");
    assert_waited(&hits);
    let v = get(&server, &format!("/v1/operations/{op}")).await;
    assert_eq!(v["progress"]["done"], true, "{v:#}");
    assert!(unix_now() as f64 >= until);
}
