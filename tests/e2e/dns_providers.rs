//! Issue 16: the `exec`, `webhook` and `route53` DNS providers end to end.
//! Each one places the DNS-01 records for both slots (two CAs validating
//! the same `_acme-challenge` name at once) into the test BIND, which the
//! Pebbles resolve through; afterwards no TXT is left; failures are named.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::TwoCas;
use crate::server::{Server, ServerOptions};

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("twincert.db").display())
}

/// Adds (`present`) or removes exactly (`cleanup`) one TXT value in the
/// test BIND with nsupdate and the zone's TSIG key, the way an operator's
/// hook would.
async fn nsupdate(
    cas_port: u16,
    key: &str,
    secret: &str,
    action: &str,
    fqdn: &str,
    value: &str,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let verb = match action {
        "present" => format!("update add {fqdn} 60 TXT \"{value}\""),
        "cleanup" => format!("update delete {fqdn} TXT \"{value}\""),
        other => return Err(format!("unknown action {other}")),
    };
    let script = format!(
        "server 127.0.0.1 {cas_port}\nzone {}\n{verb}\nsend\n",
        crate::harness::ZONE
    );
    let mut child = tokio::process::Command::new("nsupdate")
        .arg("-y")
        .arg(format!("hmac-sha256:{key}:{secret}"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nsupdate: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits until BIND holds no TXT at `name`.
async fn wait_no_txt(cas: &TwoCas, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = cas.dns.txt(name);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{name} still has {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `name` with DNS-01, waits until both slots are issued and
/// returns how long that took (printed for the issue's closing note).
async fn issue_both_slots(server: &Server, provider: &str, name: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = server
        .create(json!({"name": name, "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = server.wait_ready(name, 90).await;
    let took = started.elapsed();
    assert_eq!(n["challenge"], "dns-01");
    assert_ne!(n["primary"]["spki_sha256"], n["backup"]["spki_sha256"]);
    println!("{provider}: DNS-01 issuance of both slots of {name} took {took:.2?}");
    took
}

/// Waits until both slots of `name` show an error and returns the
/// primary's.
async fn slot_error(server: &Server, name: &str) -> String {
    let (status, body) = server
        .create(json!({"name": name, "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let n = server
        .wait_for(name, 60, |v| {
            v["primary"]["last_error"].is_string() && v["backup"]["last_error"].is_string()
        })
        .await;
    assert_eq!(n["state"], "degraded", "{n:#}");
    n["primary"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_provider_runs_the_operators_program_for_both_slots_and_names_its_failures() {
    let cas = TwoCas::start(0).await;
    let dir = tempfile::Builder::new()
        .prefix("exec-")
        .tempdir_in(cas.dir())
        .expect("temp dir");
    let log = dir.path().join("calls.log");
    // A real hook as an operator writes it for lego's exec provider:
    // `present|cleanup FQDN VALUE`, nsupdate against the zone's server.
    let hook = dir.path().join("dns-hook.sh");
    std::fs::write(
        &hook,
        r#"#!/bin/sh
set -eu
action=$1 fqdn=$2 value=$3
case "$action" in
  present) verb="update add $fqdn 60 TXT \"$value\"" ;;
  cleanup) verb="update delete $fqdn TXT \"$value\"" ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
printf 'server 127.0.0.1 %s\nzone example.test\n%s\nsend\n' "$DNS_PORT" "$verb" \
  | nsupdate -y "hmac-sha256:$TSIG_NAME:$TSIG_SECRET"
echo "$action $fqdn $value" >> "$CALLS_LOG"
"#,
    )
    .expect("write hook");
    let failing = dir.path().join("failing-hook.sh");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'connecting to dns.internal' >&2\necho \"update of $2 refused: zone is frozen\" >&2\nexit 4\n",
    )
    .expect("write failing hook");
    for f in [&hook, &failing] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.dns_providers = Some(format!(
        r#"
[[dns_providers]]
id = "hook"
kind = "exec"
zones = ["example.test"]
command = ["{hook}"]
timeout_seconds = 20
env = {{ DNS_PORT = "{port}", TSIG_NAME = "{key}", TSIG_SECRET = "{secret}", CALLS_LOG = "{log}" }}

[[dns_providers]]
id = "broken"
kind = "exec"
zones = ["fail.example.test"]
command = ["{failing}"]

[[dns_providers]]
id = "stuck"
kind = "exec"
zones = ["slow.example.test"]
command = ["/bin/sh", "-c", "sleep 600", "hang"]
timeout_seconds = 1
"#,
        hook = hook.display(),
        failing = failing.display(),
        port = cas.dns.port(),
        key = cas.dns.tsig_key_name(),
        secret = cas.dns.tsig_secret_b64(),
        log = log.display(),
    ));
    let server = Server::start(&cas, opts).await;

    // Apex and wildcard: two values at one name per slot, four at once.
    let started = Instant::now();
    let (status, body) = server
        .create(json!({"name": "example.test", "domains": ["example.test", "*.example.test"], "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    issue_both_slots(&server, "exec", "a.example.test").await;
    server.wait_ready("example.test", 90).await;
    println!(
        "exec: apex + wildcard, both slots, ready {:.2?} after creation",
        started.elapsed()
    );
    for name in [
        "_acme-challenge.a.example.test",
        "_acme-challenge.example.test",
    ] {
        wait_no_txt(&cas, name).await;
    }
    let calls = std::fs::read_to_string(&log).expect("calls log");
    let presents: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("present _acme-challenge.a.example.test. "))
        .collect();
    let cleanups = calls
        .lines()
        .filter(|l| l.starts_with("cleanup _acme-challenge.a.example.test. "))
        .count();
    assert!(presents.len() >= 2, "one value per slot: {calls}");
    assert!(cleanups >= 2, "each value removed: {calls}");

    // A failing program: its stderr tail is the slot's error.
    let err = slot_error(&server, "x.fail.example.test").await;
    assert!(err.contains("DNS provider broken"), "{err}");
    assert!(err.contains("exited with status 4"), "{err}");
    assert!(
        err.contains("update of _acme-challenge.x.fail.example.test. refused: zone is frozen"),
        "{err}"
    );
    // A hanging one is killed after its timeout.
    let err = slot_error(&server, "x.slow.example.test").await;
    assert!(err.contains("DNS provider stuck"), "{err}");
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(
        !err.contains(cas.dns.tsig_secret_b64())
            && !server.log().contains(cas.dns.tsig_secret_b64()),
        "the secret stays out of errors and logs"
    );
}

/// The receiver side of the webhook provider, as an operator would write
/// it: verify the signature with the shared secret, then write the record
/// into BIND. `/fail` answers 500 after verifying.
#[derive(Clone)]
struct Receiver {
    secret: &'static str,
    dns_port: u16,
    key: String,
    tsig_secret: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    axum::extract::Path(route): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use twincert::notify::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let ts: i64 = h(TIMESTAMP_HEADER).parse().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if !verify(
        r.secret.as_bytes(),
        ts,
        &body,
        &h(SIGNATURE_HEADER),
        now,
        Duration::from_secs(300),
    ) {
        return (axum::http::StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not JSON".into());
    };
    r.seen.lock().expect("lock").push(req.clone());
    if route == "fail" {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "backend down".into(),
        );
    }
    let s = |k: &str| req[k].as_str().unwrap_or_default().to_string();
    match nsupdate(
        r.dns_port,
        &r.key,
        &r.tsig_secret,
        &s("action"),
        &s("fqdn"),
        &s("value"),
    )
    .await
    {
        Ok(()) => (axum::http::StatusCode::NO_CONTENT, String::new()),
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_provider_posts_signed_changes_for_both_slots_and_names_refusals() {
    let cas = TwoCas::start(0).await;
    let receiver = Receiver {
        secret: "whsec-dns-test",
        dns_port: cas.dns.port(),
        key: cas.dns.tsig_key_name().to_string(),
        tsig_secret: cas.dns.tsig_secret_b64().to_string(),
        seen: Default::default(),
    };
    let app = axum::Router::new()
        .route("/{route}", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.dns_providers = Some(format!(
        r#"
[[dns_providers]]
id = "hook"
kind = "webhook"
zones = ["example.test"]
url = "http://{addr}/dns"
secret = "whsec-dns-test"
timeout_seconds = 10

[[dns_providers]]
id = "flaky"
kind = "webhook"
zones = ["fail.example.test"]
url = "http://{addr}/fail"
secret = "whsec-dns-test"

[[dns_providers]]
id = "stale-secret"
kind = "webhook"
zones = ["bad.example.test"]
url = "http://{addr}/dns"
secret = "whsec-rotated-away"
"#
    ));
    let server = Server::start(&cas, opts).await;

    issue_both_slots(&server, "webhook", "a.example.test").await;
    wait_no_txt(&cas, "_acme-challenge.a.example.test").await;
    let seen = receiver.seen.lock().expect("lock").clone();
    let for_a: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|r| r["fqdn"] == "_acme-challenge.a.example.test")
        .collect();
    let presents = for_a.iter().filter(|r| r["action"] == "present").count();
    let cleanups = for_a.iter().filter(|r| r["action"] == "cleanup").count();
    assert!(presents >= 2 && cleanups >= 2, "{seen:#?}");
    assert!(
        for_a.iter().all(|r| r["zone"] == "example.test"),
        "{seen:#?}"
    );

    let err = slot_error(&server, "x.fail.example.test").await;
    assert!(err.contains("DNS provider flaky"), "{err}");
    assert!(
        err.contains("the receiver failed (HTTP 500); will retry"),
        "{err}"
    );
    let err = slot_error(&server, "x.bad.example.test").await;
    assert!(err.contains("DNS provider stale-secret"), "{err}");
    assert!(err.contains("refused the request (HTTP 401)"), "{err}");
    assert!(!err.contains("whsec"), "never the secret: {err}");
    assert!(
        !server.log().contains("whsec-rotated-away"),
        "never the secret in logs"
    );
}
