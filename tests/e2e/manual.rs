//! Issue 19, item 1: `manual` destinations (install requests), end to end
//! against two Pebble CAs and a real SMTP server (aiosmtpd): the mail
//! with the link reaches the endpoint's admin contact, the password comes
//! separately (mail, or once through the API), the link downloads the
//! package once, `openssl` opens it with the password only and its key is
//! the certificate's; the deployment stays `requested` (no failure, no
//! check alert) until a TLS server started from the package's contents is
//! seen, then it is `confirmed` with the confirmation alert; a reminder
//! goes out while it waits; a swap supersedes an unclaimed package (the
//! old link answers 410); bad links answer 404 problems.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::deploy::{serve_tls, set_deploy, smtp_sink, wait_deploy};
use crate::emergency::{get, post};
use crate::harness::{TwoCas, free_port, fresh_pg_database, pg_url_or_skip};
use crate::server::{Server, ServerOptions};

/// Where install links point (`server.public_url`); the tests fetch the
/// same path from the server's real address.
const PUBLIC_URL: &str = "https://twincert.example.test";
const ADMIN: &str = "appliance-admin@example.test";

/// `[deploy]`, one manual destination `appliance` with `extra` lines, and
/// alert mail through the sink on `smtp_port`.
fn config(smtp_port: u16, extra: &str) -> String {
    format!(
        "[deploy]\ncheck_interval_seconds = 3600\nrecheck_failed_seconds = 1\ncheck_delay_seconds = 0\n\n\
         [[destinations]]\nid = \"appliance\"\nkind = \"manual\"\n{extra}\n\n\
         [alerts]\nemails = [\"certs@example.test\"]\n\n\
         [alerts.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
         from = \"twincert@example.test\"\n"
    )
}

/// The spool's messages (the sink ends each with a lone `.`).
fn messages(spool: &Path) -> Vec<String> {
    std::fs::read_to_string(spool)
        .unwrap_or_default()
        .split("\n.\n")
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits for the `n`-th (1-based) message whose subject starts with
/// `subject`; returns it.
async fn wait_mail(server: &Server, spool: &Path, subject: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: Vec<String> = messages(spool)
            .into_iter()
            .filter(|m| m.contains(&format!("Subject: {subject}")))
            .collect();
        if found.len() >= n {
            return found[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no mail #{n} '{subject}'; spool:\n{}\n{}",
            std::fs::read_to_string(spool).unwrap_or_default(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The install link in a request mail.
fn link_of(mail: &str) -> String {
    mail.split_whitespace()
        .find(|w| w.starts_with(&format!("{PUBLIC_URL}/install/")))
        .unwrap_or_else(|| panic!("no install link in:\n{mail}"))
        .to_string()
}

/// GET of an install link's path on the real server: (status, content
/// type, body).
async fn download(server: &Server, link: &str) -> (u16, String, Vec<u8>) {
    let path = link
        .strip_prefix(PUBLIC_URL)
        .expect("a link under public_url");
    let rsp = reqwest::Client::new()
        .get(format!("{}{path}", server.base()))
        .send()
        .await
        .expect("GET install link");
    let status = rsp.status().as_u16();
    let ct = rsp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, rsp.bytes().await.expect("body").to_vec())
}

/// Asserts a problem document with `status` and a `type` ending in `kind`.
fn assert_problem(got: &(u16, String, Vec<u8>), status: u16, kind: &str) -> Value {
    assert_eq!(got.0, status, "{}", String::from_utf8_lossy(&got.2));
    assert_eq!(got.1, "application/problem+json");
    let v: Value = serde_json::from_slice(&got.2).expect("problem JSON");
    assert!(
        v["type"].as_str().unwrap_or_default().ends_with(kind),
        "{v}"
    );
    assert_eq!(v["status"], status);
    v
}

/// Runs a program; (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Unpacks a downloaded package into a new directory under `dir`.
fn unpack(dir: &Path, label: &str, tar: &[u8]) -> PathBuf {
    let out = dir.join(label);
    std::fs::create_dir_all(&out).expect("mkdir");
    let file = dir.join(format!("{label}.tar"));
    std::fs::write(&file, tar).expect("write tar");
    let (ok, text) = run(
        "tar",
        &[
            "-xf",
            file.to_str().expect("utf-8"),
            "-C",
            out.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "{text}");
    out
}

/// The public key (PEM) of a certificate text.
fn cert_pubkey(dir: &Path, cert_pem: &str) -> String {
    let f = dir.join("leaf-for-pubkey.pem");
    std::fs::write(&f, cert_pem).expect("write");
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-in",
            f.to_str().expect("utf-8"),
            "-noout",
            "-pubkey",
        ],
    );
    assert!(ok, "{out}");
    out
}

/// Opens a package's PKCS#12 with `password`: its `-info` text and the
/// private key (unencrypted PEM, for the test's TLS server).
fn open_p12(p12: &Path, password: &str) -> (String, String) {
    let pass = format!("pass:{password}");
    let p = p12.to_str().expect("utf-8");
    let (ok, info) = run(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            p,
            "-passin",
            &pass,
            "-passout",
            "pass:unused",
        ],
    );
    assert!(ok, "{info}");
    let (ok, key) = run(
        "openssl",
        &["pkcs12", "-in", p, "-passin", &pass, "-nocerts", "-nodes"],
    );
    assert!(ok, "{key}");
    let start = key
        .find("-----BEGIN PRIVATE KEY-----")
        .expect("a PKCS#8 key");
    (info, key[start..].to_string())
}

/// The public key (PEM) of a private key (PEM, maybe encrypted).
fn key_pubkey(dir: &Path, key_pem: &str, password: Option<&str>) -> (bool, String) {
    let f = dir.join("key-for-pubkey.pem");
    std::fs::write(&f, key_pem).expect("write");
    let pass = format!("pass:{}", password.unwrap_or("wrong-password"));
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            f.to_str().expect("utf-8"),
            "-passin",
            &pass,
            "-pubout",
        ],
    )
}

/// With `password_delivery = "mail"`: link mail and password mail to the
/// admin contact (neither holds the other's secret), the package once,
/// opened by openssl with the password only, PBES2/AES-256-CBC; `requested`
/// without a failure or a check alert while the endpoint serves nothing;
/// a reminder; then a TLS server built from the package confirms it, with
/// the confirmation alert; downloads and requests are audited. On SQLite
/// and on PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn a_manual_destination_mails_a_package_that_installs_and_confirms_on_sqlite() {
    let cas = TwoCas::start(0).await;
    let url = crate::emergency::sqlite_url(cas.dir());
    install_request_flow(cas, url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_destination_mails_a_package_that_installs_and_confirms_on_postgres() {
    let Some(base) = pg_url_or_skip(
        "a_manual_destination_mails_a_package_that_installs_and_confirms_on_postgres",
    ) else {
        return;
    };
    let cas = TwoCas::start(0).await;
    install_request_flow(cas, fresh_pg_database(&base).await).await;
}

async fn install_request_flow(cas: TwoCas, store_url: String) {
    let smtp_port = free_port();
    let spool = cas.dir().join("mail.txt");
    let _sink = smtp_sink(smtp_port, &spool).await;
    let name = "appliance.example.test";
    let cfg = config(
        smtp_port,
        "password_delivery = \"mail\"\nlink_ttl_hours = 1\nremind_after_hours = 0.002",
    );
    let (server, view) = ready_name(&cas, store_url, cfg, name).await;
    let serial = view["primary"]["serial"]
        .as_str()
        .expect("serial")
        .to_string();
    let tls_port = free_port();
    set_deploy(
        &server,
        name,
        json!({"destinations": ["appliance"], "endpoints": [
            {"host": name, "port": tls_port, "ip": "127.0.0.1", "admin_contact": ADMIN}
        ]}),
    )
    .await;

    // The request, to the admin contact, with the link and no password.
    let request = wait_mail(&server, &spool, "Install request", 1).await;
    assert!(
        request.contains(&format!("RCPT TO: {ADMIN}\n")),
        "{request}"
    );
    assert!(
        request.contains(name) && request.contains(&serial),
        "{request}"
    );
    assert!(request.contains(&format!("{name}:{tls_port}")), "{request}");
    assert!(request.contains(&format!("{name}.p12")), "{request}");
    assert!(request.contains(&format!("{name}.pem")), "{request}");
    let link = link_of(&request);
    let token = link.rsplit('/').next().expect("token").to_string();
    // The password, in its own message, without the link.
    let pw_mail = wait_mail(&server, &spool, "Password for the install package", 1).await;
    assert!(
        pw_mail.contains(&format!("RCPT TO: {ADMIN}\n")),
        "{pw_mail}"
    );
    assert!(
        !pw_mail.contains(&token),
        "the password mail holds the link"
    );
    let password = pw_mail
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 24 && l.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| panic!("no password in:\n{pw_mail}"))
        .to_string();
    assert!(
        !request.contains(&password),
        "the request mail holds the password"
    );

    // Requested, not failed, although the endpoint serves nothing.
    let v = wait_deploy(&server, name, 30, |v| {
        v["endpoints"][0]["outcome"].is_string()
    })
    .await;
    let dest = &v["destinations"][0];
    assert_eq!(dest["kind"], "manual", "{v:#}");
    assert_eq!(dest["state"], "requested", "{v:#}");
    assert_eq!(dest["serial"], serial.as_str());
    assert_eq!(dest["detail"]["password_delivery"], "mail");
    let detail = dest["detail"].to_string();
    assert!(
        !detail.contains(&token) && !detail.contains(&password),
        "{detail}"
    );

    // The package, once.
    let got = download(&server, &link).await;
    assert_eq!(got.0, 200, "{}", String::from_utf8_lossy(&got.2));
    assert_eq!(got.1, "application/x-tar");
    let again = download(&server, &link).await;
    let p = assert_problem(&again, 410, "install-link-used");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{p}"
    );
    // Unknown and malformed tokens: 404 problems.
    let mut other = token.clone().into_bytes();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    let other = String::from_utf8(other).expect("ascii");
    assert_problem(
        &download(&server, &format!("{PUBLIC_URL}/install/{other}")).await,
        404,
        "not-found",
    );
    assert_problem(
        &download(&server, &format!("{PUBLIC_URL}/install/short")).await,
        404,
        "not-found",
    );

    // openssl opens it with the password, and only with it.
    let dir = cas.dir().join("manual-package");
    let files = unpack(cas.dir(), "manual-package", &got.2);
    let p12 = files.join(format!("{name}.p12"));
    let pem = std::fs::read_to_string(files.join(format!("{name}.pem"))).expect("PEM bundle");
    let readme = std::fs::read_to_string(files.join("README.txt")).expect("README");
    assert!(readme.contains(&format!("{name}:{tls_port}")), "{readme}");
    let (info, key_pem) = open_p12(&p12, &password);
    for algo in [
        "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC",
        "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC",
        "PRF hmacWithSHA256",
        "MAC: sha256",
    ] {
        assert!(info.contains(algo), "{algo} missing:\n{info}");
    }
    let (ok, out) = run(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            p12.to_str().expect("utf-8"),
            "-passin",
            "pass:wrong-password",
            "-nokeys",
        ],
    );
    assert!(!ok, "the package opened without its password: {out}");
    let chain = server.chain_pem(name, "active").await;
    let leaf_pub = cert_pubkey(&cas.dir().join("."), &chain);
    let (ok, from_p12) = key_pubkey(&cas.dir().join("."), &key_pem, None);
    assert!(ok, "{from_p12}");
    assert_eq!(
        from_p12, leaf_pub,
        "the package's key is not the certificate's"
    );
    // The PEM bundle: an encrypted PKCS#8 key and the chain.
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    let pem_chain = &pem[pem.find("-----BEGIN CERTIFICATE-----").expect("chain")..];
    assert_eq!(pem_chain.trim(), chain.trim());
    assert!(
        !key_pubkey(&dir, &pem, None).0,
        "the PEM key opened without a password"
    );
    let (ok, from_pem) = key_pubkey(&cas.dir().join("."), &pem, Some(&password));
    assert!(ok, "{from_pem}");
    assert_eq!(from_pem, leaf_pub);

    // Still requested: a reminder goes out (remind_after_hours = 0.002).
    let reminder = wait_mail(&server, &spool, "Reminder: install the new certificate", 1).await;
    assert!(
        reminder.contains(&format!("RCPT TO: {ADMIN}\n")),
        "{reminder}"
    );
    assert!(reminder.contains("was downloaded"), "{reminder}");
    let v = get(&server, &format!("/v1/names/{name}/deploy")).await;
    assert_eq!(v["destinations"][0]["state"], "requested", "{v:#}");

    // The administrator installs it: a TLS server from the package.
    let _tls = serve_tls(tls_port, pem_chain, &key_pem).await;
    let (st, body) = post(
        &server,
        &format!("/v1/names/{name}/deploy/check"),
        json!({}),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let v = wait_deploy(&server, name, 30, |v| {
        v["destinations"][0]["state"] == "confirmed"
    })
    .await;
    let summary = v["endpoints"][0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("Certificate matched OK"), "{summary}");
    // The confirmation alert (one-shot: closed once mailed, so listed with
    // `open=false`), mailed to the certificate admins.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let found = messages(&spool)
            .into_iter()
            .find(|m| m.contains("is now served (confirmed by check)"));
        if let Some(m) = found {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation mail; spool:\n{}",
            std::fs::read_to_string(&spool).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(mail.contains("RCPT TO: certs@example.test"), "{mail}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let alerts = loop {
        let alerts = get(&server, "/v1/alerts?open=false&limit=100").await;
        let confirmed = alerts["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["kind"] == "deploy_confirmed");
        if confirmed {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "no deploy_confirmed alert: {alerts:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert!(
        !kinds.contains(&"deploy_check_failed"),
        "waiting for a person is not a failed check: {alerts:#}"
    );

    // Audited: the request and the download; no secret in the log.
    let events = get(&server, "/v1/events?limit=200").await.to_string();
    for action in ["install.request", "install.download"] {
        assert!(events.contains(action), "{action} not audited: {events}");
    }
    let log = server.log();
    for secret in [&token, &password] {
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
    assert!(!log.contains("ENCRYPTED PRIVATE KEY") && !log.contains("BEGIN PRIVATE KEY"));
}

/// A server with `extra_config` and `server.public_url` (through the
/// environment: the harness writes `[server]` itself), and `name` issued
/// and ready: the server and the name's view.
async fn ready_name(
    cas: &TwoCas,
    store_url: String,
    extra_config: String,
    name: &str,
) -> (Server, Value) {
    let mut opts = ServerOptions::new(store_url);
    opts.extra_config = extra_config;
    opts.env = vec![("TWINCERT_SERVER_PUBLIC_URL".into(), PUBLIC_URL.into())];
    let server = Server::start(cas, opts).await;
    let (st, body) = server.create(json!({"name": name})).await;
    assert_eq!(st, 201, "{body}");
    let view = server.wait_ready(name, 60).await;
    (server, view)
}

/// With `password_delivery = "api"`: no password mail; an operator is
/// shown it once (410 after), audited. A swap before the download
/// supersedes the package: the old link answers 410 saying so, a new
/// request mail (saying it replaces the first) carries the backup
/// certificate, whose package opens with the new password.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_supersedes_an_unclaimed_package_and_the_api_shows_the_password_once() {
    let cas = TwoCas::start(0).await;
    let smtp_port = free_port();
    let spool = cas.dir().join("mail.txt");
    let _sink = smtp_sink(smtp_port, &spool).await;
    let name = "mailhost.example.test";
    let cfg = config(smtp_port, "password_delivery = \"api\"");
    let url = crate::emergency::sqlite_url(cas.dir());
    let (server, view) = ready_name(&cas, url, cfg, name).await;
    let backup_serial = view["backup"]["serial"]
        .as_str()
        .expect("serial")
        .to_string();
    set_deploy(
        &server,
        name,
        json!({"destinations": ["appliance"], "endpoints": [
            {"host": name, "port": free_port(), "ip": "127.0.0.1", "admin_contact": ADMIN}
        ]}),
    )
    .await;
    let first = wait_mail(&server, &spool, "Install request", 1).await;
    assert!(
        first.contains("Ask the twincert operators for the password"),
        "{first}"
    );
    let link1 = link_of(&first);

    // Shown once, to an operator.
    let path = format!("/v1/names/{name}/deploy/appliance/password");
    let (st, pw1) = post(&server, &path, json!({})).await;
    assert_eq!(st, 200, "{pw1}");
    let password1 = pw1["password"].as_str().expect("password").to_string();
    assert_eq!(password1.len(), 24);
    let (st, again) = post(&server, &path, json!({})).await;
    assert_eq!(st, 410, "{again}");
    assert!(
        again["type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("password-shown")
    );
    let (st, _) = post(
        &server,
        &format!("/v1/names/{name}/deploy/nowhere/password"),
        json!({}),
    )
    .await;
    assert_eq!(st, 404);
    // A viewer may not ask.
    let (st, tok) = post(
        &server,
        "/v1/tokens",
        json!({"name": "v", "role": "viewer"}),
    )
    .await;
    assert_eq!(st, 201, "{tok}");
    let rsp = reqwest::Client::new()
        .post(format!("{}{path}", server.base()))
        .bearer_auth(tok["token"].as_str().expect("token"))
        .send()
        .await
        .expect("POST");
    assert_eq!(rsp.status().as_u16(), 403);

    // A swap before anyone downloaded: a new request, the old link is gone.
    let (st, body) = post(
        &server,
        &format!("/v1/names/{name}/swap"),
        json!({"reason": "test"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let second = wait_mail(&server, &spool, "Install request", 2).await;
    assert!(second.contains("replaces an earlier one"), "{second}");
    assert!(second.contains(&backup_serial), "{second}");
    let link2 = link_of(&second);
    assert_ne!(link1, link2);
    let old = download(&server, &link1).await;
    let p = assert_problem(&old, 410, "install-link-superseded");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("superseded"),
        "{p}"
    );
    let got = download(&server, &link2).await;
    assert_eq!(got.0, 200, "{}", String::from_utf8_lossy(&got.2));
    let v = get(&server, &format!("/v1/names/{name}/deploy")).await;
    assert_eq!(v["destinations"][0]["state"], "requested", "{v:#}");
    assert_eq!(v["destinations"][0]["serial"], backup_serial.as_str());

    // The new package opens with the new password, not the old one.
    let (st, pw2) = post(&server, &path, json!({})).await;
    assert_eq!(st, 200, "{pw2}");
    let password2 = pw2["password"].as_str().expect("password").to_string();
    assert_ne!(password1, password2);
    let files = unpack(cas.dir(), "swapped", &got.2);
    let p12 = files.join(format!("{name}.p12"));
    let (_, key_pem) = open_p12(&p12, &password2);
    let (ok, _) = run(
        "openssl",
        &[
            "pkcs12",
            "-in",
            p12.to_str().expect("utf-8"),
            "-passin",
            &format!("pass:{password1}"),
            "-nokeys",
        ],
    );
    assert!(!ok, "the new package opened with the old password");
    let chain = server.chain_pem(name, "backup").await;
    let (ok, from_key) = key_pubkey(cas.dir(), &key_pem, None);
    assert!(ok, "{from_key}");
    assert_eq!(from_key, cert_pubkey(cas.dir(), &chain));

    // A lost package: an operator redeploys, a new request supersedes it.
    let (st, v) = post(
        &server,
        &format!("/v1/names/{name}/deploy/appliance/redeploy"),
        json!({}),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let third = wait_mail(&server, &spool, "Install request", 3).await;
    assert!(third.contains("replaces an earlier one"), "{third}");
    assert_ne!(link_of(&third), link2);
    assert_problem(
        &download(&server, &link2).await,
        410,
        "install-link-superseded",
    );
    let (st, _) = post(
        &server,
        &format!("/v1/names/{name}/deploy/nowhere/redeploy"),
        json!({}),
    )
    .await;
    assert_eq!(st, 404);

    let events = get(&server, "/v1/events?limit=200").await.to_string();
    for action in ["install.password", "name.redeploy", "install.request"] {
        assert!(events.contains(action), "{action} not audited: {events}");
    }
}
