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
    let verb = match action {
        "present" => format!("update add {fqdn} 60 TXT \"{value}\""),
        "cleanup" => format!("update delete {fqdn} TXT \"{value}\""),
        other => return Err(format!("unknown action {other}")),
    };
    crate::harness::nsupdate(
        (cas_port, key.to_string(), secret.to_string()),
        &format!("zone {}\n{verb}\n", crate::harness::ZONE),
    )
    .await
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

/// Issues `a.example.test` and, at the same time, `example.test` +
/// `*.example.test` (two values at one name per slot, four at once).
async fn issue_a_name_and_apex_plus_wildcard(server: &Server, provider: &str) {
    let started = Instant::now();
    let (status, body) = server
        .create(json!({"name": "example.test", "domains": ["example.test", "*.example.test"], "challenge": "dns-01"}))
        .await;
    assert_eq!(status, 201, "{body}");
    issue_both_slots(server, provider, "a.example.test").await;
    server.wait_ready("example.test", 90).await;
    println!(
        "{provider}: apex + wildcard, both slots, ready {:.2?} after creation",
        started.elapsed()
    );
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

    issue_a_name_and_apex_plus_wildcard(&server, "exec").await;
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tolerance = Duration::from_secs(300);
    if !twincert::webhook_signature::verify_headers(
        r.secret.as_bytes(),
        &headers,
        &body,
        now,
        tolerance,
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

// ---------------------------------------------------------------------------
// route53 against moto
// ---------------------------------------------------------------------------

/// The moto venv `scripts/test.sh` creates (`TWINCERT_TEST_MOTO_VENV`
/// overrides).
fn moto_server_bin() -> std::path::PathBuf {
    let venv = std::env::var("TWINCERT_TEST_MOTO_VENV")
        .unwrap_or_else(|_| "/tmp/twincert-moto-venv".to_string());
    let bin = Path::new(&venv).join("bin/moto_server");
    assert!(
        bin.exists(),
        "{} missing: run the tests through scripts/test.sh, which installs moto[server] into {venv}",
        bin.display()
    );
    bin
}

/// moto picks the service of a request from its Authorization header's
/// credential scope; this one is not a valid signature (the test's own
/// reads and the zone's creation are not the provider under test).
const MOTO_ROUTING_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/route53/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";

/// `moto_server` on a loopback port: a reimplementation of the AWS APIs
/// (Route 53, STS, IAM) in Python — not AWS itself.
struct Moto {
    child: std::process::Child,
    endpoint: String,
    http: reqwest::Client,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto; with `unauthenticated_actions`, moto answers that many
    /// actions without checking credentials and then refuses unknown keys
    /// (`INITIAL_NO_AUTH_ACTION_COUNT`).
    async fn start(dir: &Path, unauthenticated_actions: Option<u32>) -> Moto {
        let port = crate::harness::free_port();
        let log = std::fs::File::create(dir.join(format!("moto-{port}.log"))).expect("moto log");
        let mut cmd = std::process::Command::new(moto_server_bin());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(n) = unauthenticated_actions {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = cmd.spawn().expect("start moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto
            .http
            .get(format!("{}/moto-api/", moto.endpoint))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    /// Creates hosted zone `zone` and returns its id.
    async fn create_zone(&self, zone: &str) -> String {
        let body = format!(
            "<CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <Name>{zone}.</Name><CallerReference>twincert-{zone}</CallerReference></CreateHostedZoneRequest>"
        );
        let text = self
            .http
            .post(format!("{}/2013-04-01/hostedzone", self.endpoint))
            .header("authorization", MOTO_ROUTING_AUTH)
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .expect("CreateHostedZone")
            .text()
            .await
            .expect("answer");
        let id = xml::tag(&text, "Id").unwrap_or_else(|| panic!("no Id in {text}"));
        id.trim_start_matches("/hostedzone/").to_string()
    }

    /// The TXT record sets moto holds in zone `id`: name → values.
    async fn txt_sets(&self, id: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        txt_sets(&self.http, &self.endpoint, id).await
    }
}

/// The TXT record sets in hosted zone `id` at `endpoint` (unsigned).
async fn txt_sets(
    http: &reqwest::Client,
    endpoint: &str,
    id: &str,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let text = http
        .get(format!("{endpoint}/2013-04-01/hostedzone/{id}/rrset"))
        .header("authorization", MOTO_ROUTING_AUTH)
        .send()
        .await
        .expect("ListResourceRecordSets")
        .text()
        .await
        .expect("answer");
    let mut out = std::collections::BTreeMap::new();
    for set in xml::all(&text, "ResourceRecordSet") {
        if xml::tag(set, "Type") != Some("TXT") {
            continue;
        }
        let name = xml::tag(set, "Name")
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_string();
        let values = xml::all(set, "Value")
            .into_iter()
            .map(|v| xml::unescape(v).trim_matches('"').to_string())
            .collect();
        out.insert(name, values);
    }
    out
}

use twincert::providers::dns::aws::xml;

/// Copies moto's TXT records into the test BIND until dropped.
///
/// Why a mirror and not a DNS responder answering from moto: the Pebbles
/// and twincert's propagation check already resolve through the test
/// BIND, so a mirror leaves the whole DNS side exactly as in the other
/// DNS-01 tests and needs no DNS server written for the test; and, like
/// Route 53's own name servers, BIND only shows a record after the API
/// accepted it (here up to one 50 ms poll plus an nsupdate later), so the
/// provider's INSYNC wait and twincert's propagation check are exercised
/// rather than bypassed. The mirror also records the most values it saw
/// at once at one name: two or more proves the provider appended instead
/// of replacing.
struct Mirror {
    task: tokio::task::JoinHandle<()>,
    most_at_once: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirror {
    fn start(moto: &Moto, zone_id: &str, cas: &TwoCas) -> Mirror {
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (endpoint, zone_id, most_in) =
            (moto.endpoint.clone(), zone_id.to_string(), most.clone());
        let (port, key, secret) = (
            cas.dns.port(),
            cas.dns.tsig_key_name().to_string(),
            cas.dns.tsig_secret_b64().to_string(),
        );
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut mirrored: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            loop {
                let now = txt_sets(&http, &endpoint, &zone_id).await;
                for values in now.values() {
                    most_in.fetch_max(values.len(), std::sync::atomic::Ordering::Relaxed);
                }
                let names: std::collections::BTreeSet<String> =
                    now.keys().chain(mirrored.keys()).cloned().collect();
                for name in names {
                    let want = now.get(&name).cloned().unwrap_or_default();
                    let have = mirrored.get(&name).cloned().unwrap_or_default();
                    for v in want.iter().filter(|v| !have.contains(v)) {
                        nsupdate(port, &key, &secret, "present", &name, v)
                            .await
                            .expect("mirror add");
                    }
                    for v in have.iter().filter(|v| !want.contains(v)) {
                        nsupdate(port, &key, &secret, "cleanup", &name, v)
                            .await
                            .expect("mirror delete");
                    }
                }
                mirrored = now;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Mirror {
            task,
            most_at_once: most,
        }
    }
}

fn route53_entry(id: &str, zone: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "\n[[dns_providers]]\nid = \"{id}\"\nkind = \"route53\"\nzones = [\"{zone}\"]\n\
         endpoint = \"{endpoint}\"\ninsync_interval_ms = 100\ntimeout_seconds = 10\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn route53_provider_issues_both_slots_through_moto_with_static_keys_and_web_identity() {
    let cas = TwoCas::start(0).await;
    let moto = Moto::start(cas.dir(), None).await;
    let zone_id = moto.create_zone("example.test").await;
    // A second moto that checks credentials after its first action (the
    // zone's creation): a key it does not know is refused. (moto 5.2.6
    // also recomputes signatures there, but refuses even botocore's own
    // correct signatures for Route 53's REST paths, so signature
    // correctness is checked against AWS's published vectors instead, in
    // providers::dns::aws.)
    let locked = Moto::start(cas.dir(), Some(1)).await;
    locked.create_zone("locked.example.test").await;
    let mirror = Mirror::start(&moto, &zone_id, &cas);

    let mut opts = ServerOptions::new(sqlite_url(cas.dir()));
    opts.dns_providers = Some(format!(
        "{}{}",
        route53_entry(
            "aws",
            "example.test",
            &moto.endpoint,
            "access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\""
        ),
        route53_entry(
            "aws-locked",
            "locked.example.test",
            &locked.endpoint,
            "access_key_id = \"AKIAUNKNOWNEXAMPLE00\"\nsecret_access_key = \"not-a-key-moto-knows\""
        ),
    ));
    let server = Server::start(&cas, opts).await;
    issue_a_name_and_apex_plus_wildcard(&server, "route53 (static keys)").await;
    assert!(
        mirror
            .most_at_once
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2,
        "values at one name never coexisted in moto"
    );
    // Cleaned up in moto (the source), then in the mirror.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = moto.txt_sets(&zone_id).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "TXT left in moto: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in [
        "_acme-challenge.a.example.test",
        "_acme-challenge.example.test",
    ] {
        wait_no_txt(&cas, name).await;
    }
    let err = slot_error(&server, "x.locked.example.test").await;
    assert!(err.contains("DNS provider aws-locked"), "{err}");
    assert!(
        err.contains(
            "AWS refused the credentials (static key AKIAUNKNOWNEXAMPLE00 from the configuration)"
        ) && err.contains("InvalidClientTokenId"),
        "{err}"
    );
    assert!(
        !err.contains("not-a-key-moto-knows") && !server.log().contains("not-a-key-moto-knows")
    );
    // Preflight's provider check: GetHostedZone with the known key is ok,
    // the unknown key is a finding naming the key id, never the secret.
    let (status, _, report) = crate::preflight::run_preflight(&server, "example.test").await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report("example.test", &report);
    let ok = crate::preflight::check(&report, "provider", None, "example.test");
    assert_eq!(ok["status"], "ok", "{ok}");
    assert!(
        ok["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("DNS provider 'aws' (Route 53 GetHostedZone "),
        "{ok}"
    );
    let (status, _, report) =
        crate::preflight::run_preflight(&server, "x.locked.example.test").await;
    assert_eq!(status, 200, "{report}");
    crate::preflight::print_report("x.locked.example.test", &report);
    let refused = crate::preflight::check(&report, "provider", None, "x.locked.example.test");
    assert_eq!(refused["status"], "finding", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("InvalidClientTokenId"),
        "{refused}"
    );
    assert!(
        refused["fix"].as_str().unwrap_or_default().starts_with(
            "check the credentials (static key AKIAUNKNOWNEXAMPLE00 from the configuration)"
        ),
        "{refused}"
    );
    assert!(!report.to_string().contains("not-a-key-moto-knows"));
    drop(server);

    // Web identity, as EKS sets it up: a token file and a role ARN in the
    // environment, exchanged at (moto's) STS for temporary keys.
    let wi_dir = tempfile::Builder::new()
        .prefix("web-identity-")
        .tempdir_in(cas.dir())
        .expect("temp dir");
    let token = wi_dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").expect("token");
    let mut opts = ServerOptions::new(sqlite_url(wi_dir.path()));
    let entry = |id: &str, zone: &str, sts: &str| {
        route53_entry(
            id,
            zone,
            &moto.endpoint,
            &format!("sts_endpoint = \"{sts}\""),
        )
    };
    opts.dns_providers = Some(format!(
        "{}{}",
        entry("aws", "example.test", &moto.endpoint),
        // The same chain with STS unreachable: the error says so.
        entry(
            "aws-no-sts",
            "nosts.example.test",
            &format!("http://127.0.0.1:{}", crate::harness::free_port())
        ),
    ));
    opts.env = vec![
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
            token.display().to_string(),
        ),
        (
            "AWS_ROLE_ARN".into(),
            "arn:aws:iam::123456789012:role/twincert-dns".into(),
        ),
        ("AWS_ROLE_SESSION_NAME".into(), "twincert-e2e".into()),
    ];
    let server = Server::start(&cas, opts).await;
    issue_both_slots(&server, "route53 (web identity)", "b.example.test").await;
    let err = slot_error(&server, "x.nosts.example.test").await;
    assert!(
        err.contains("DNS provider aws-no-sts")
            && err.contains(
                "STS AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role/twincert-dns"
            ),
        "{err}"
    );
    assert!(
        !err.contains("eyJhbGciOiJSUzI1NiJ9"),
        "never the token: {err}"
    );
}
