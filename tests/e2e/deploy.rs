//! Issue 7: deployment to destinations (files with an atomic switch,
//! signed webhooks, Kubernetes Secrets by server-side apply against a
//! recording API server), deployment checks against real TLS servers on
//! loopback, and alert mail delivered to a real SMTP server (aiosmtpd).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use twincert::certs::inspect_chain;
use twincert::domain::KeyFingerprint;
use twincert::keys::spki_fingerprint;

use crate::emergency::{get, post, put};
use crate::harness::{TwoCas, free_port};
use crate::server::{Server, ServerOptions};

/// A server with `extra_config`, and `name` issued and ready: the server
/// and the name's view.
async fn ready_name(cas: &TwoCas, extra_config: String, name: &str) -> (Server, Value) {
    let mut opts = ServerOptions::new(crate::emergency::sqlite_url(cas.dir()));
    opts.extra_config = extra_config;
    let server = Server::start(cas, opts).await;
    let (st, body) = server.create(json!({"name": name})).await;
    assert_eq!(st, 201, "{body}");
    let view = server.wait_ready(name, 60).await;
    (server, view)
}

/// A slot's serial in a name's view.
fn serial(view: &Value, slot: &str) -> String {
    view[slot]["serial"].as_str().expect("serial").to_string()
}

/// `PUT /v1/names/{name}/deploy`, which must succeed.
pub(crate) async fn set_deploy(server: &Server, name: &str, body: Value) {
    let (st, body) = put(server, &format!("/v1/names/{name}/deploy"), body).await;
    assert_eq!(st, 200, "{body}");
}

/// Polls `GET /v1/names/{name}/deploy` until `pred` holds.
pub(crate) async fn wait_deploy(
    server: &Server,
    name: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = get(server, &format!("/v1/names/{name}/deploy")).await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "deploy state never matched: {v:#}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The SubjectPublicKeyInfo fingerprint of the first certificate in a PEM
/// text (other blocks, such as a key, are skipped).
fn cert_spki(pem: &str) -> Option<KeyFingerprint> {
    inspect_chain(pem).ok().map(|f| f.spki_sha256)
}

/// The SubjectPublicKeyInfo fingerprint of the private key in a PEM text.
fn key_spki(pem: &str) -> Option<KeyFingerprint> {
    let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).ok()?;
    let kp = rcgen::KeyPair::try_from(&der).ok()?;
    Some(spki_fingerprint(
        &rcgen::PublicKeyData::subject_public_key_info(&kp),
    ))
}

fn leaf_serial(pem: &str) -> String {
    inspect_chain(pem).expect("a certificate chain").serial
}

use rustls_pki_types::pem::PemObject;

/// After a swap the `live/NAME` link points at a directory holding the
/// backup; a reader opening the files while twincert switches them never
/// sees one certificate with the other's key; the post-deploy command ran
/// each time and its status is shown.
#[tokio::test(flavor = "multi_thread")]
async fn files_follow_a_swap_atomically_and_run_the_reload_command() {
    let cas = TwoCas::start(0).await;
    let dir = cas.dir().join("deploy-files");
    let reloads = cas.dir().join("reloads.txt");
    let config = format!(
        "[deploy]\ncheck_interval_seconds = 3600\n\n[[destinations]]\nid = \"web\"\nkind = \"files\"\n\
         dir = \"{}\"\npost_deploy_command = [\"sh\", \"-c\", \"echo $TWINCERT_NAME >> {}\"]\n",
        dir.display(),
        reloads.display()
    );
    let name = "files.example.test";
    let (server, view) = ready_name(&cas, config, name).await;
    let primary = serial(&view, "primary");
    let backup = serial(&view, "backup");

    set_deploy(&server, name, json!({"destinations": ["web"]})).await;
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["serial"] == primary
    })
    .await;
    assert_eq!(v["destinations"][0]["kind"], "files");
    assert_eq!(
        v["destinations"][0]["state"], "requested",
        "no endpoint has seen it yet"
    );
    assert_eq!(
        v["destinations"][0]["detail"]["post_deploy"]["ok"], true,
        "{v:#}"
    );
    let live = dir.join("live").join(name);
    assert!(
        std::fs::symlink_metadata(&live)
            .expect("live link")
            .file_type()
            .is_symlink()
    );
    let cert = std::fs::read_to_string(live.join("cert.pem")).expect("cert.pem");
    assert_eq!(leaf_serial(&cert), primary);
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["privkey.pem", "bundle.pem"] {
            let mode = std::fs::metadata(live.join(f))
                .expect(f)
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
    // The key twincert wrote belongs to the certificate it wrote.
    let key = std::fs::read_to_string(live.join("privkey.pem")).expect("privkey.pem");
    assert_eq!(cert_spki(&cert), key_spki(&key));

    // A reader checks pairs while the name swaps back and forth.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, reads, bad, live) = (stop.clone(), reads.clone(), bad.clone(), live.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // A server reading both files from the directory it resolved.
                if let Ok(resolved) = std::fs::canonicalize(&live) {
                    let c = std::fs::read_to_string(resolved.join("fullchain.pem"));
                    let k = std::fs::read_to_string(resolved.join("privkey.pem"));
                    match (c, k) {
                        (Ok(c), Ok(k))
                            if cert_spki(&c).is_some() && cert_spki(&c) == key_spki(&k) => {}
                        (Ok(c), Ok(k)) => bad
                            .lock()
                            .expect("lock")
                            .push(format!("pair mismatch: {c}\n{k}")),
                        (c, k) => bad.lock().expect("lock").push(format!(
                            "missing: {:?} {:?}",
                            c.err(),
                            k.err()
                        )),
                    }
                }
                // One that reads the single bundle file.
                match std::fs::read_to_string(live.join("bundle.pem")) {
                    Ok(b) if cert_spki(&b).is_some() && cert_spki(&b) == key_spki(&b) => {}
                    other => bad.lock().expect("lock").push(format!("bundle: {other:?}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Each swap flips to the standby; the abandoned slot is then re-issued
    // under a new key (so every swap deploys a different certificate).
    // Each swap flips to the standby; the abandoned slot is then re-issued
    // under a new key (and a swap that lands before that re-issue began
    // re-issues the slot it activated): wait until the destination holds
    // whatever is active once nothing is pending.
    let mut deployed = vec![primary.clone()];
    for i in 0..4 {
        let (st, body) = post(
            &server,
            &format!("/v1/names/{name}/swap"),
            json!({"reason": format!("drill {i}")}),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let serial = settled(&server, name).await;
        let cert = std::fs::read_to_string(live.join("cert.pem")).expect("cert.pem");
        assert_eq!(
            leaf_serial(&cert),
            serial,
            "the link points at the active one"
        );
        deployed.push(serial);
    }
    assert_eq!(deployed[1], backup, "the first swap deploys the backup");
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    let bad = bad.lock().expect("lock").clone();
    assert!(bad.is_empty(), "{} bad reads, first: {}", bad.len(), bad[0]);
    assert!(reads.load(Ordering::Relaxed) > 50, "the reader ran");
    // One reload per write (the version directories are numbered).
    let v = get(&server, &format!("/v1/names/{name}/deploy")).await;
    let writes: usize = v["destinations"][0]["detail"]["version_dir"]
        .as_str()
        .and_then(|d| d.rsplit('-').next())
        .and_then(|n| n.parse().ok())
        .expect("numbered version directory");
    assert!(writes >= 5, "the first deployment and four swaps: {writes}");
    let lines = std::fs::read_to_string(&reloads).expect("reloads");
    assert_eq!(
        lines.lines().filter(|l| *l == name).count(),
        writes,
        "{lines}"
    );
    // Every swap was alerted and recorded; with no channel configured the
    // one-shot alerts are closed at once.
    let alerts = get(&server, "/v1/alerts?open=false&limit=100").await;
    let swaps = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["kind"] == "swap_executed")
        .count();
    assert_eq!(swaps, 4, "{alerts:#}");
}

/// Waits until the name is ready with no order open and its destination
/// holds the active certificate; returns that serial.
async fn settled(server: &Server, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = server.name(name).await;
        let active = v["active"].as_str().unwrap_or("primary").to_string();
        let serial = v[active.as_str()]["serial"].as_str().map(str::to_string);
        let quiet = v["state"] == "ready"
            && v["primary"]["order"].is_null()
            && v["backup"]["order"].is_null();
        if quiet && let Some(serial) = serial {
            let d = get(server, &format!("/v1/names/{name}/deploy")).await;
            if d["destinations"][0]["serial"] == serial.as_str() {
                return serial;
            }
        }
        assert!(Instant::now() < deadline, "never settled: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TLS server on loopback serving one chain and key; replaced by
/// dropping it (the task is aborted).
pub(crate) struct TlsServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve_tls(port: u16, chain_pem: &str, key_pem: &str) -> TlsServer {
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener = listener.expect("bind TLS port");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    TlsServer { task }
}

/// The tests' SMTP server (aiosmtpd): each message appended, decoded.
const SINK: &str = include_str!("../smtp_sink.py");

pub(crate) async fn smtp_sink(port: u16, spool: &Path) -> tokio::process::Child {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(SINK)
        .arg(port.to_string())
        .arg(spool)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the aiosmtpd sink (apt-get install python3-aiosmtpd)");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).lines().next_line(),
    )
    .await;
    assert!(
        matches!(&line, Ok(Ok(Some(l))) if l == "ready"),
        "aiosmtpd sink did not start ({line:?}); is python3-aiosmtpd installed?"
    );
    child
}

/// The endpoint serves the right certificate → the deployment is
/// confirmed, step by step; it starts serving a snake-oil one → the check
/// fails with its steps, the deployment is `failed`, and a mail naming
/// the name, the endpoint, the steps and what to do reaches both the
/// certificate admins and the endpoint's admin, through a real SMTP
/// server.
#[tokio::test(flavor = "multi_thread")]
async fn deployment_checks_confirm_then_fail_and_mail_the_admins() {
    let cas = TwoCas::start(0).await;
    let smtp_port = free_port();
    let spool = cas.dir().join("mail.txt");
    let _sink = smtp_sink(smtp_port, &spool).await;
    let name = "check.example.test";
    let (server, view) = ready_name(
        &cas,
        format!(
            "[deploy]\ncheck_interval_seconds = 3600\nrecheck_failed_seconds = 1\n\n\
         [[destinations]]\nid = \"web\"\nkind = \"files\"\ndir = \"{}\"\n\n\
         [alerts]\nemails = [\"certs@example.test\"]\n\n\
         [alerts.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
         from = \"twincert@example.test\"\n",
            cas.dir().join("deploy-check").display()
        ),
        name,
    )
    .await;
    let serial = serial(&view, "primary");
    let chain = server.chain_pem(name, "active").await;
    let key = server.key_pem(name, "active").await;
    let tls_port = free_port();
    let tls = serve_tls(tls_port, &chain, &key).await;

    set_deploy(&server, name, json!({"destinations": ["web"], "endpoints": [
            {"host": name, "port": tls_port, "ip": "127.0.0.1", "admin_contact": "web-admin@example.test"}
        ]})).await;
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["state"] == "confirmed"
    })
    .await;
    let ep = &v["endpoints"][0];
    assert_eq!(ep["outcome"], "matched", "{v:#}");
    assert_eq!(ep["served_serial"], serial.as_str());
    let summary = ep["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with(&format!("Resolved OK 127.0.0.1:{tls_port}")),
        "{summary}"
    );
    for step in [
        "Connected OK",
        "TLS OK",
        "Certificate matched OK",
        "Chain complete OK",
    ] {
        assert!(summary.contains(step), "{summary}");
    }

    // The server now serves a snake-oil certificate.
    drop(tls);
    let snake = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("snake oil");
    let _tls = serve_tls(
        tls_port,
        &snake.cert.pem(),
        &snake.signing_key.serialize_pem(),
    )
    .await;
    let (st, body) = post(
        &server,
        &format!("/v1/names/{name}/deploy/check"),
        json!({}),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["endpoints"], 1);
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["state"] == "failed"
    })
    .await;
    let ep = &v["endpoints"][0];
    assert_eq!(ep["outcome"], "mismatch", "{v:#}");
    let summary = ep["summary"].as_str().expect("summary").to_string();
    assert!(summary.contains("Certificate matched NG"), "{summary}");
    assert!(summary.contains(&format!("{serial} expected")), "{summary}");

    // And in /metrics.
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("twincert_deployments{state=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("twincert_endpoint_checks{outcome=\"mismatch\"} 1"),
        "{metrics}"
    );

    // One mail to the certificate admins, one to the endpoint's admin.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let text = std::fs::read_to_string(&spool).unwrap_or_default();
        let failures = text
            .split("\n.\n")
            .filter(|m| m.contains("Certificate matched NG"))
            .count();
        if failures >= 2 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{failures} of 2 alert mails; spool: {text}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let msgs: Vec<&str> = mail
        .split("\n.\n")
        .filter(|m| m.contains("Certificate matched NG"))
        .collect();
    assert_eq!(msgs.len(), 2, "{mail}");
    let to_certs = msgs
        .iter()
        .find(|m| m.contains("RCPT TO: certs@example.test"))
        .expect("to the certificate admins");
    let to_web = msgs
        .iter()
        .find(|m| m.contains("RCPT TO: web-admin@example.test"))
        .expect("to the endpoint admin");
    assert!(
        !to_web.contains("certs@example.test"),
        "the endpoint admin does not see the admins' address: {to_web}"
    );
    for msg in [to_certs, to_web] {
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains(&format!("{name}:{tls_port}")), "{msg}");
        assert!(msg.contains("What to do"), "{msg}");
        assert!(
            msg.contains("critical"),
            "a confirmed deployment now failing: {msg}"
        );
    }
    // Recorded, and not repeated while the rate limit holds.
    let alerts = get(&server, "/v1/alerts?limit=100").await;
    let a = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["kind"] == "deploy_check_failed")
        .expect("deploy_check_failed alert")
        .clone();
    assert_eq!(
        a["subject"],
        format!("{name} {name}:{tls_port} via 127.0.0.1")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&spool).unwrap_or_default();
    let failures = text
        .split("\n.\n")
        .filter(|m| m.contains("deploy_check_failed"))
        .count();
    assert_eq!(
        failures, 2,
        "one mail per recipient group within the rate limit:\n{text}"
    );
}

/// Deliveries a webhook receiver accepted: (serial, had a key).
type Deliveries = Arc<Mutex<Vec<(String, bool)>>>;

/// A webhook destination: a loopback receiver verifies the HMAC signature
/// and gets exactly one accepted delivery per change (after a 500, the
/// retry); the key travels only when configured (it is not here).
#[tokio::test(flavor = "multi_thread")]
async fn webhook_destination_is_signed_retried_and_delivered_once_per_change() {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    const SECRET: &str = "hook-secret-0123456789";
    let cas = TwoCas::start(0).await;
    let secret_file = cas.dir().join("hook.secret");
    std::fs::write(&secret_file, SECRET).expect("secret");
    let accepted: Deliveries = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let fail_next = Arc::new(AtomicBool::new(true));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((acc, reqs, fail)): State<(
                    Deliveries,
                    Arc<AtomicUsize>,
                    Arc<AtomicBool>,
                )>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    reqs.fetch_add(1, Ordering::SeqCst);
                    let ts: i64 = headers
                        .get(twincert::notify::webhook::TIMESTAMP_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let sig = headers
                        .get(twincert::notify::webhook::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let now = crate::emergency::unix_now();
                    if !twincert::notify::webhook::verify(
                        SECRET.as_bytes(),
                        ts,
                        &body,
                        sig,
                        now,
                        Duration::from_secs(300),
                    ) {
                        return StatusCode::UNAUTHORIZED;
                    }
                    if fail.swap(false, Ordering::SeqCst) {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    acc.lock().expect("lock").push((
                        v["serial"].as_str().unwrap_or_default().to_string(),
                        v.get("key_pem").is_some(),
                    ));
                    StatusCode::OK
                },
            ),
        )
        .with_state((accepted.clone(), requests.clone(), fail_next.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_port = listener.local_addr().expect("addr").port();
    let _receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let name = "hook.example.test";
    let (server, view) = ready_name(&cas, format!(
        "[[destinations]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
         secret_file = \"{}\"\n",
        secret_file.display()
    ), name).await;
    let primary = serial(&view, "primary");
    let backup = serial(&view, "backup");
    set_deploy(&server, name, json!({"destinations": ["hook"]})).await;
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["serial"] == primary
    })
    .await;
    assert_eq!(
        v["destinations"][0]["detail"]["attempts"], 2,
        "a 500, then accepted: {v:#}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);

    let (st, body) = post(
        &server,
        &format!("/v1/names/{name}/swap"),
        json!({"reason": "drill"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["serial"] == backup
    })
    .await;
    // Quiet afterwards: nothing changes, nothing is sent again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = accepted.lock().expect("lock").clone();
    assert_eq!(
        got,
        vec![(primary.clone(), false), (backup.clone(), false)],
        "one accepted delivery per change, no key"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

/// What the recording Kubernetes API server saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

/// Method, URI, content type, Authorization, body.
type Request = (String, String, String, String, String);

/// A `kubernetes-secret` destination: the apply request against a
/// recording server that speaks the Kubernetes API paths — method, path,
/// query (field manager, force), content type, bearer token, and the
/// Secret (type, keys, annotations naming slot, CA and serial). No real
/// API server exists on this machine.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secret_is_applied_server_side() {
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use base64::Engine;
    let cas = TwoCas::start(0).await;
    let token_file = cas.dir().join("k8s.token");
    // As the kubelet writes it (no newline): the client reads it itself.
    std::fs::write(&token_file, "sa-token-123").expect("token");
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(
            |State(seen): State<Seen>,
             method: Method,
             uri: Uri,
             headers: HeaderMap,
             body: String| async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                seen.0.lock().expect("lock").push((
                    method.to_string(),
                    uri.to_string(),
                    h("content-type"),
                    h("authorization"),
                    body,
                ));
                axum::Json(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "x", "resourceVersion": "4711"}
                }))
            },
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _api = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let name = "kube.example.test";
    let (server, view) = ready_name(
        &cas,
        format!(
            "[[destinations]]\nid = \"k8s\"\nkind = \"kubernetes-secret\"\nnamespace = \"web\"\n\
         api_server = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
        name,
    )
    .await;
    let serial = serial(&view, "primary");
    set_deploy(&server, name, json!({"destinations": ["k8s"]})).await;
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["serial"] == serial
    })
    .await;
    assert_eq!(
        v["destinations"][0]["detail"]["resource_version"], "4711",
        "{v:#}"
    );
    assert_eq!(
        v["destinations"][0]["detail"]["secret"],
        "kube.example.test-tls"
    );
    let seen = seen.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one apply");
    let (method, uri, ctype, auth, body) = &seen[0];
    assert_eq!(method, "PATCH");
    let (path, query) = uri.split_once('?').expect("a query");
    assert_eq!(path, "/api/v1/namespaces/web/secrets/kube.example.test-tls");
    let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    assert!(params.contains(&"fieldManager=twincert"), "{query}");
    assert!(params.contains(&"force=true"), "{query}");
    assert_eq!(ctype, "application/apply-patch+yaml");
    assert_eq!(auth, "Bearer sa-token-123");
    let secret: Value = serde_json::from_str(body).expect("JSON is YAML");
    assert_eq!(secret["apiVersion"], "v1");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ann = &secret["metadata"]["annotations"];
    assert_eq!(ann["twincert.io/slot"], "primary");
    assert_eq!(ann["twincert.io/ca"], view["primary"]["ca"]);
    assert_eq!(ann["twincert.io/serial"], serial.as_str());
    let dec = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(secret["data"][k].as_str().expect(k))
                .expect("base64"),
        )
        .expect("UTF-8")
    };
    let chain = server.chain_pem(name, "primary").await;
    assert_eq!(
        dec("tls.crt").trim(),
        chain.trim(),
        "tls.crt is the full chain"
    );
    assert_eq!(leaf_serial(&dec("tls.crt")), serial);
    assert_eq!(cert_spki(&dec("tls.crt")), key_spki(&dec("tls.key")));
    assert!(dec("ca.crt").contains("BEGIN CERTIFICATE"));
    assert!(
        !dec("ca.crt").contains(&dec("tls.crt")[..80]),
        "ca.crt is the intermediates only"
    );
}

/// `twincert bench deploy` as a test: a CA-wide swap of 200 names written
/// to a files destination and verified over TLS on loopback — every
/// deployment confirmed with the backup, written in batches and checked
/// once each.
#[test]
fn the_deploy_benchmark_swaps_writes_and_verifies() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
        .args(["bench", "deploy", "--names", "200", "-o", "json"])
        .output()
        .expect("run the benchmark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON figures");
    assert_eq!(v["names"], 200, "{v:#}");
    assert_eq!(v["swapped"], 200, "{v:#}");
    assert_eq!(v["confirmed_after_swap"], 200, "{v:#}");
    assert!(v["time_to_safety_seconds"].as_f64().is_some(), "{v:#}");
    assert!(v["checks_per_second"].as_f64().is_some(), "{v:#}");
    // The wave after the swap: every name written through the files
    // destination in batches (one barrier each, not one per name), every
    // endpoint verified over TLS once, each serving its new certificate.
    assert_eq!(v["wave_written"], 200, "{v:#}");
    assert_eq!(v["wave_write_failed"], 0, "{v:#}");
    let batches = v["wave_file_batches"].as_u64().expect("batches");
    assert!((1..=10).contains(&batches), "{batches} batches: {v:#}");
    assert_eq!(v["wave_checked"], 200, "{v:#}");
    assert_eq!(v["wave_matched"], 200, "{v:#}");
    for stage in [
        "file_syncs",
        "tls_checks",
        "write_loop_wall",
        "check_loop_wall",
    ] {
        let s = v[format!("wave_{stage}_seconds")].as_f64();
        assert!(s.is_some_and(|s| s > 0.0), "{stage}: {v:#}");
    }
}

/// A name twincert does not deploy itself (endpoints, no destinations):
/// a swap is checked at once, not at the next daily check — the endpoint
/// still serving the old certificate shows as a mismatch within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_rechecks_endpoints_of_names_without_destinations() {
    let cas = TwoCas::start(0).await;
    let name = "external.example.test";
    let (server, _view) = ready_name(
        &cas,
        "[deploy]\ncheck_interval_seconds = 86400\n".into(),
        name,
    )
    .await;
    let chain = server.chain_pem(name, "active").await;
    let key = server.key_pem(name, "active").await;
    let port = free_port();
    let _tls = serve_tls(port, &chain, &key).await;
    set_deploy(
        &server,
        name,
        json!({"endpoints": [{"host": "127.0.0.1", "port": port}]}),
    )
    .await;
    wait_deploy(&server, name, 30, |v| {
        v["endpoints"][0]["outcome"] == "matched"
    })
    .await;
    let (st, body) = post(
        &server,
        &format!("/v1/names/{name}/swap"),
        json!({"reason": "drill"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let v = wait_deploy(&server, name, 15, |v| {
        v["endpoints"][0]["outcome"] == "mismatch"
    })
    .await;
    let summary = v["endpoints"][0]["summary"].as_str().expect("summary");
    assert!(summary.contains("Certificate matched NG"), "{summary}");
}

/// A renewal is deployed like an issuance: with 12 s certificates the
/// active slot renews and the files follow it. A post-deploy command that
/// fails leaves the files written (the write is not repeated) and raises
/// `deploy_failed` naming the command's status.
#[tokio::test(flavor = "multi_thread")]
async fn renewals_are_deployed_and_a_failing_reload_alerts() {
    let cas = TwoCas::start_with(crate::harness::PebbleOptions {
        validity_seconds: Some(12),
        ..Default::default()
    })
    .await;
    let dir = cas.dir().join("deploy-renew");
    let config = format!(
        "[[destinations]]\nid = \"web\"\nkind = \"files\"\ndir = \"{}\"\n\
         post_deploy_command = [\"false\"]\n",
        dir.display()
    );
    let name = "renew.example.test";
    let (server, view) = ready_name(&cas, config, name).await;
    let first = serial(&view, "primary");
    set_deploy(&server, name, json!({"destinations": ["web"]})).await;
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["serial"] == first.as_str()
    })
    .await;
    assert_eq!(
        v["destinations"][0]["detail"]["post_deploy"]["ok"], false,
        "{v:#}"
    );
    let alerts = get(&server, "/v1/alerts?limit=100").await;
    let failed = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["kind"] == "deploy_failed")
        .unwrap_or_else(|| panic!("no deploy_failed alert: {alerts:#}"))
        .clone();
    assert_eq!(failed["subject"], format!("{name} web"));
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("post-deploy command") && m.contains("status 1")),
        "{failed:#}"
    );

    // The active slot renews (at 8 s of 12): the new certificate is written.
    let renewed = server
        .wait_for(name, 60, |v| {
            v["active"] == "primary" && v["primary"]["serial"] != first.as_str()
        })
        .await;
    let second = serial(&renewed, "primary");
    wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["serial"] == second.as_str()
    })
    .await;
    let cert =
        std::fs::read_to_string(dir.join("live").join(name).join("cert.pem")).expect("cert.pem");
    assert_eq!(leaf_serial(&cert), second);
}
