//! Test harness: real local servers for the end-to-end tests.
//!
//! Owns the lifecycle of the external processes the tests run against — two
//! Pebble ACME CAs, one authoritative BIND9 for `example.test` with RFC 2136
//! updates under a TSIG key, and throw-away PostgreSQL databases — and
//! nothing else; it never touches the crate under test.
//!
//! Invariants:
//! * Loopback only: every server listens on `127.0.0.1` on a port from
//!   [`free_port`], so any number of tests (and test binaries) can run at once.
//! * Each object owns its processes and its temporary directory: dropping it
//!   kills the children (`kill` + `wait`) and then removes the directory.
//! * A server that does not become ready panics with its own log, so a
//!   failed start says why.
//!
//! Facts about the tools (Pebble 2.4.0, BIND 9.18) the harness relies on
//! are noted where it relies on them.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// The zone BIND serves.
pub const ZONE: &str = "example.test";

/// Labels under [`ZONE`] with their own explicit `A 127.0.0.1` record.
///
/// Use these for issuance: with only the wildcard, adding
/// `_acme-challenge.<name> TXT` turns `<name>` into an empty non-terminal
/// whose A lookup returns NODATA (see TESTENV.md, "Wildcard trap").
/// A zone on the same BIND that no test key may change: its names are
/// validated through `_acme-challenge` CNAMEs into [`ZONE`] (see
/// [`DELEGATED_CNAMES`]).
pub const DELEGATED_ZONE: &str = "delegated.test";
/// (host in [`DELEGATED_ZONE`], CNAME target of its `_acme-challenge`).
pub const DELEGATED_CNAMES: &[(&str, &str)] = &[
    ("x", "x-delegated-test.acme.example.test."),
    ("y", "hop.delegated.test."),
];

/// A zone on the same BIND with CAA records for the preflight tests
/// (`caa_template`); the test key may change its CAA and CNAME records.
pub const CAA_ZONE: &str = "caa.test";

/// A zone whose every lookup fails (SERVFAIL): BIND forwards it to a port
/// nobody answers on.
pub const BROKEN_ZONE: &str = "broken.invalid";

pub const ZONE_HOSTS: &[&str] = &["a", "b", "c", "d", "e", "www", "api", "app", "mail", "shop"];

/// Name of the TSIG key allowed to change TXT records in [`ZONE`].
pub const TSIG_KEY_NAME: &str = "twincert-test";

/// Longest wait for BIND to answer.
const BIND_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for Pebble to serve its directory.
const PEBBLE_READY_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Ports and processes
// ---------------------------------------------------------------------------

/// A loopback port that is free for both TCP and UDP right now.
///
/// The port is released before it is returned, so another process could
/// take it in between; within this process no port is handed out twice.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..200 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local_addr").port();
        // UDP too: DNS listens on both.
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found after 200 tries");
}

/// A child process killed and reaped on drop.
pub(crate) struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}; is it installed?"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// `Some(description)` when the process has already exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited early: {status}", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: wait failed: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The contents of a log file, for panic messages.
pub(crate) fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// Runs a short command to completion; panics if it cannot be started.
fn run(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}; is it installed?"))
}

pub(crate) fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// TLS for Pebble's own HTTPS listeners
// ---------------------------------------------------------------------------

/// Installs the process-wide rustls crypto provider (both `ring` and
/// `aws-lc-rs` are compiled in, so rustls cannot pick one by itself).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A local CA and a server certificate for `localhost`, `127.0.0.1` and `::1`
/// signed by it: what Pebble serves its ACME and management APIs with.
pub struct LocalTls {
    /// The CA certificate; clients of Pebble's HTTPS must trust it.
    pub ca_pem: String,
    pub ca_pem_path: PathBuf,
    /// Server certificate (leaf only) and its PKCS#8 key.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl LocalTls {
    /// Generates the CA and server certificate and writes them into `dir`
    /// (`ca.pem`, `server.pem`, `server.key`).
    pub fn generate(dir: &Path) -> LocalTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "twincert test local CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("generate CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generate server key");
        let cert = params.signed_by(&key, &issuer).expect("sign server cert");

        let tls = LocalTls {
            ca_pem: ca_cert.pem(),
            ca_pem_path: dir.join("ca.pem"),
            cert_path: dir.join("server.pem"),
            key_path: dir.join("server.key"),
        };
        write(&tls.ca_pem_path, &tls.ca_pem);
        write(&tls.cert_path, &cert.pem());
        write(&tls.key_path, &key.serialize_pem());
        tls
    }

    /// An HTTP client that trusts only this local CA.
    pub fn client(&self) -> reqwest::Client {
        install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("parse local CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build reqwest client")
    }
}

// ---------------------------------------------------------------------------
// BIND9
// ---------------------------------------------------------------------------

/// An authoritative BIND9 for [`ZONE`] on `127.0.0.1:<port>` (TCP and UDP).
///
/// The zone has the SOA, `NS ns`, `A 127.0.0.1` at the apex, on `ns`, on
/// `*` and on every label in [`ZONE_HOSTS`]. The TSIG key
/// [`TSIG_KEY_NAME`] (hmac-sha256, fresh secret per instance) may change
/// TXT records anywhere in the zone, and CNAMEs (a test plays the operator
/// who delegates `_acme-challenge` to acme-dns), and nothing else.
pub struct Bind {
    proc: Proc,
    port: u16,
    secret_b64: String,
    log: PathBuf,
    dir: TempDir,
}

impl Bind {
    /// Starts named in a new temporary directory under `parent` and waits
    /// until it answers for the zone's SOA (panics with the log after 10 s).
    pub fn start(parent: &Path) -> Bind {
        let dir = tempfile::Builder::new()
            .prefix("bind-")
            .tempdir_in(parent)
            .expect("create BIND temp dir");
        let d = dir.path();
        let port = free_port();
        let secret_b64 = generate_tsig_secret();

        let zone_file = d.join(format!("{ZONE}.zone"));
        write(&zone_file, &zone_template());
        let delegated_file = d.join(format!("{DELEGATED_ZONE}.zone"));
        write(&delegated_file, &delegated_template());
        let caa_file = d.join(format!("{CAA_ZONE}.zone"));
        write(&caa_file, &caa_template());
        let tld_file = d.join("test.zone");
        write(&tld_file, &tld_template());
        let conf = d.join("named.conf");
        write(
            &conf,
            &format!(
                r#"options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    // Recursion for loopback only: this BIND is also the CAs' resolver
    // (`pebble -dnsserver`), and a resolver chases CNAME delegation from
    // delegated.test into example.test, as a real CA's resolver does.
    recursion yes;
    allow-recursion {{ 127.0.0.1; }};
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{secret_b64}";
}};
zone "{ZONE}" {{
    type primary;
    file "{zone}";
    update-policy {{ grant {TSIG_KEY_NAME} zonesub TXT CNAME; }};
}};
zone "{DELEGATED_ZONE}" {{
    type primary;
    file "{delegated}";
}};
zone "{CAA_ZONE}" {{
    type primary;
    file "{caa}";
    update-policy {{ grant {TSIG_KEY_NAME} zonesub CAA CNAME; }};
}};
// Names here fail to resolve (SERVFAIL): forwarded to a port nobody
// answers on, for the preflight's "could not check".
zone "{BROKEN_ZONE}" {{
    type forward;
    forward only;
    forwarders {{ 127.0.0.1 port 9; }};
}};
// The TLD itself, empty: a CA's CAA tree walk climbs to `test.`, which
// must answer (NOERROR, no records), not time out in recursion.
zone "test" {{
    type primary;
    file "{tld}";
}};
"#,
                dir = d.display(),
                zone = zone_file.display(),
                delegated = delegated_file.display(),
                caa = caa_file.display(),
                tld = tld_file.display(),
            ),
        );

        let log = d.join("named.log");
        let mut cmd = Command::new("named");
        // -g: foreground, log to stderr; -n 1: one worker thread is plenty.
        cmd.args(["-g", "-n", "1", "-u", "root", "-c"]).arg(&conf);
        let proc = Proc::spawn("named", cmd, &log);
        let mut bind = Bind {
            proc,
            port,
            secret_b64,
            log,
            dir,
        };
        bind.wait_ready();
        bind
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + BIND_READY_TIMEOUT;
        loop {
            if let Some(why) = self.proc.exited() {
                panic!(
                    "BIND did not start: {why}\n--- named log ---\n{}",
                    self.log()
                );
            }
            let out = run(self.dig().args([ZONE, "SOA", "+short"]));
            if out.status.success() && !out.stdout.trim_ascii().is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "BIND not ready on 127.0.0.1:{} after {BIND_READY_TIMEOUT:?}\n--- named log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `dig` aimed at this server, one quick try per call.
    fn dig(&self) -> Command {
        let mut cmd = Command::new("dig");
        cmd.arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+time=1", "+tries=1", "+norecurse"]);
        cmd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as the DNS server address for clients and Pebble.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn tsig_key_name(&self) -> &str {
        TSIG_KEY_NAME
    }

    /// The TSIG secret, standard base64 as BIND writes it.
    pub fn tsig_secret_b64(&self) -> &str {
        &self.secret_b64
    }

    pub fn zone(&self) -> &str {
        ZONE
    }

    /// What [`nsupdate`] needs to change this BIND: its port, key name and
    /// secret (owned, for the fake servers the tests run).
    pub fn update_key(&self) -> UpdateKey {
        (
            self.port,
            TSIG_KEY_NAME.to_string(),
            self.secret_b64.clone(),
        )
    }

    /// Runs nsupdate `lines` (`zone …`, `update …`) against this BIND,
    /// signed with its TSIG key, as an operator would.
    pub async fn update(&self, lines: &str) -> Result<(), String> {
        nsupdate(self.update_key(), lines).await
    }

    /// named's log so far (stderr of `named -g`).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// The TXT values at `name` (absolute, e.g.
    /// `_acme-challenge.a.example.test`), each with its character strings
    /// joined; empty when there are none. Order is as BIND returns it.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let out = run(self.dig().args([name, "TXT", "+short"]));
        assert!(
            out.status.success(),
            "dig TXT {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(join_txt_strings)
            .collect()
    }
}

/// `"abc" "def"` (dig's presentation of one TXT record) → `abcdef`.
fn join_txt_strings(line: &str) -> String {
    let mut value = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes => {
                if let Some(next) = chars.next() {
                    value.push(next);
                }
            }
            c if in_quotes => value.push(c),
            _ => {}
        }
    }
    value
}

/// A fresh hmac-sha256 secret from `tsig-keygen`.
fn generate_tsig_secret() -> String {
    let out = run(Command::new("tsig-keygen").args(["-a", "hmac-sha256", TSIG_KEY_NAME]));
    assert!(
        out.status.success(),
        "tsig-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_once("secret \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(secret, _)| secret.to_owned())
        .unwrap_or_else(|| panic!("no secret in tsig-keygen output:\n{text}"))
}

/// The unkeyed zone with delegating CNAMEs (`y` goes through a second hop).
fn delegated_template() -> String {
    let mut z = format!(
        "$ORIGIN {DELEGATED_ZONE}.\n\
         $TTL 5\n\
         @ IN SOA ns.{ZONE}. hostmaster.{ZONE}. ( 1 3600 600 86400 5 )\n\
         @ IN NS ns.{ZONE}.\n\
         hop IN CNAME y-delegated-test.acme.example.test.\n"
    );
    for (host, target) in DELEGATED_CNAMES {
        z.push_str(&format!(
            "{host} IN A 127.0.0.1\n_acme-challenge.{host} IN CNAME {target}\n"
        ));
    }
    z
}

/// The empty `test.` zone (SOA, NS and the name server's address only).
fn tld_template() -> String {
    "$ORIGIN test.\n\
     $TTL 5\n\
     @ IN SOA ns.test. hostmaster.test. ( 1 3600 600 86400 5 )\n\
     @ IN NS ns.test.\n\
     ns IN A 127.0.0.1\n"
        .to_string()
}

/// The CAA matrix of the preflight tests (CA identities `pebble-a.test`,
/// `pebble-b.test`, as `tests/e2e/server.rs` configures them):
///
/// * `only-a`: only CA A may issue;
/// * `wild`: `issue` allows both, `issuewild` only B;
/// * `vm`: A only with `validationmethods=http-01` (names here use
///   DNS-01), B plainly; `_acme-challenge` delegated into [`ZONE`];
/// * `parent`: B only, for `host.parent` below it (no CAA of its own);
/// * `alias`: a CNAME to `only-a` (whose CAA then applies);
/// * `none`, `acct`, `nodeleg`: no CAA (the tests add records to `acct`).
fn caa_template() -> String {
    format!(
        "$ORIGIN {CAA_ZONE}.\n\
         $TTL 5\n\
         @ IN SOA ns.{ZONE}. hostmaster.{ZONE}. ( 1 3600 600 86400 5 )\n\
         @ IN NS ns.{ZONE}.\n\
         @ IN A 127.0.0.1\n\
         only-a IN A 127.0.0.1\n\
         only-a IN CAA 0 issue \"pebble-a.test\"\n\
         wild IN A 127.0.0.1\n\
         wild IN CAA 0 issue \"pebble-a.test\"\n\
         wild IN CAA 0 issue \"pebble-b.test\"\n\
         wild IN CAA 0 issuewild \"pebble-b.test\"\n\
         _acme-challenge.wild IN CNAME wild-caa-test.acme.{ZONE}.\n\
         vm IN A 127.0.0.1\n\
         vm IN CAA 0 issue \"pebble-a.test; validationmethods=http-01\"\n\
         vm IN CAA 0 issue \"pebble-b.test\"\n\
         _acme-challenge.vm IN CNAME vm-caa-test.acme.{ZONE}.\n\
         parent IN CAA 0 issue \"pebble-b.test\"\n\
         host.parent IN A 127.0.0.1\n\
         alias IN CNAME only-a.{CAA_ZONE}.\n\
         none IN A 127.0.0.1\n\
         acct IN A 127.0.0.1\n\
         nodeleg IN A 127.0.0.1\n"
    )
}

/// The zone file, copied in fresh for every instance (named rewrites it from
/// its journal).
fn zone_template() -> String {
    let mut z = format!(
        "$ORIGIN {ZONE}.\n\
         $TTL 5\n\
         @ IN SOA ns.{ZONE}. hostmaster.{ZONE}. ( 1 3600 600 86400 5 )\n\
         @ IN NS ns.{ZONE}.\n\
         @ IN A 127.0.0.1\n\
         ns IN A 127.0.0.1\n\
         * IN A 127.0.0.1\n"
    );
    for host in ZONE_HOSTS {
        z.push_str(&format!("{host} IN A 127.0.0.1\n"));
    }
    z
}

// ---------------------------------------------------------------------------
// Pebble
// ---------------------------------------------------------------------------

/// How to run one Pebble.
#[derive(Clone, Debug)]
pub struct PebbleOptions {
    /// The port Pebble's validator connects to on `127.0.0.1`-resolving
    /// names for HTTP-01 (`httpPort`; Pebble does not listen on it).
    pub http01_port: u16,
    /// Port of the DNS server on 127.0.0.1 used for all validation lookups
    /// (`-dnsserver`). Practically required: without it Pebble asks the
    /// system resolver, which knows nothing of `example.test`. Pass
    /// [`Bind::port`].
    pub dns_port: Option<u16>,
    /// Percentage of good nonces rejected with `badNonce`
    /// (`PEBBLE_WFE_NONCEREJECT`; Pebble's own default is 5, ours 0).
    pub nonce_reject_percent: u8,
    /// `certificateValidityPeriod` in seconds (Pebble's default: 5 years).
    pub validity_seconds: Option<u64>,
    /// The port the validator connects to for TLS-ALPN-01 (`tlsPort`);
    /// `None` picks an unused port.
    pub tls_alpn01_port: Option<u16>,
    /// EAB keys (key id, base64url HMAC key); non-empty makes EAB required.
    pub eab_keys: Vec<(String, String)>,
    /// `ocspResponderURL`: written into every issued certificate as the AIA
    /// OCSP URL (Pebble serves no OCSP itself). Pick the port with
    /// [`free_port`] before Pebble starts and serve it later with
    /// `revocation_harness::RevocationAuthority::start_ocsp`. `None`: no AIA
    /// OCSP URL.
    pub ocsp_responder_url: Option<String>,
    /// The Pebble executable; `None` is Debian 12's `pebble` (2.4.0) from
    /// `PATH`. [`pebble26_bin`] gives Pebble 2.6.0 (ARI), which takes the
    /// same flags and configuration keys.
    pub binary: Option<PathBuf>,
}

/// Environment variable with the path of a Pebble 2.6.0 executable (set by
/// `scripts/test.sh` from `scripts/pebble26.sh`; `TWINCERT_TEST_` variables
/// are not configuration overrides).
pub const PEBBLE26_ENV: &str = "TWINCERT_TEST_PEBBLE26_BIN";

/// The Pebble 2.6.0 executable for a test, or `None` (the caller returns)
/// outside `scripts/test.sh`. Under CI (`CI` set) a missing one fails the
/// test instead: CI must run the ARI tests against it.
///
/// Pebble 2.6.0 differs from 2.4.0 in what the tests rely on (read from
/// its source at tag v2.6.0, `wfe/wfe.go`, `core/types.go`):
/// * the directory has `renewalInfo` =
///   `https://<host>/draft-ietf-acme-ari-03/renewalInfo` (draft 03 path,
///   RFC 9773 certID `base64url(AKI).base64url(serial)`), GET only;
/// * every window comes with `Retry-After: 21600` (6 h);
/// * a revoked certificate's window is `[now − 1 h, now − 30 min]`
///   (already over: renew at once); any other is the middle third's end
///   ± 24 h (`notAfter − lifetime/3 ± 24 h`), whatever the lifetime;
/// * an unknown certificate's window is a 500 `serverInternal`;
/// * newOrder `replaces` is checked (unparsable → `malformed`; a
///   certificate already replaced by a finalized order → 409 `malformed`;
///   another account's → `unauthorized`; no shared identifier or an
///   unknown certificate → 500 `serverInternal`) and echoed in the order.
pub fn pebble26_bin(test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os(PEBBLE26_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if bin.is_none() {
        eprintln!("{PEBBLE26_ENV} not set: Pebble 2.6 test {test} not run");
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the Pebble 2.6 tests (use scripts/test.sh)"
        );
    }
    bin
}

impl Default for PebbleOptions {
    fn default() -> Self {
        PebbleOptions {
            http01_port: 5002,
            dns_port: None,
            nonce_reject_percent: 0,
            validity_seconds: None,
            tls_alpn01_port: None,
            eab_keys: Vec::new(),
            ocsp_responder_url: None,
            binary: None,
        }
    }
}

/// One Pebble ACME CA on `127.0.0.1`, HTTPS with [`LocalTls`].
///
/// Every (re)start makes a new root and intermediate and forgets all
/// accounts, orders and certificates; the ports stay the same.
pub struct Pebble {
    name: String,
    proc: Option<Proc>,
    port: u16,
    management_port: u16,
    opts: PebbleOptions,
    config: PathBuf,
    log: PathBuf,
    client: reqwest::Client,
    dir: TempDir,
}

impl Pebble {
    /// Starts Pebble `name` in a new temporary directory under `parent` and
    /// waits until its directory answers 200 (panics with its log after 15 s).
    pub async fn start(parent: &Path, name: &str, tls: &LocalTls, opts: PebbleOptions) -> Pebble {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pebble-{name}-"))
            .tempdir_in(parent)
            .expect("create Pebble temp dir");
        let port = free_port();
        let management_port = free_port();
        let tls_port = opts.tls_alpn01_port.unwrap_or_else(free_port);

        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": tls.cert_path,
            "privateKey": tls.key_path,
            "httpPort": opts.http01_port,
            "tlsPort": tls_port,
            "ocspResponderURL": opts.ocsp_responder_url.as_deref().unwrap_or(""),
            "externalAccountBindingRequired": !opts.eab_keys.is_empty(),
        });
        if let Some(seconds) = opts.validity_seconds {
            pebble["certificateValidityPeriod"] = seconds.into();
        }
        if !opts.eab_keys.is_empty() {
            let keys: serde_json::Map<_, _> = opts
                .eab_keys
                .iter()
                .map(|(kid, key)| (kid.clone(), key.clone().into()))
                .collect();
            pebble["externalAccountMACKeys"] = keys.into();
        }
        let config = dir.path().join("pebble.json");
        write(
            &config,
            &serde_json::to_string_pretty(&serde_json::json!({ "pebble": pebble }))
                .expect("serialize Pebble config"),
        );

        let mut p = Pebble {
            name: name.to_owned(),
            proc: None,
            port,
            management_port,
            opts,
            config,
            log: dir.path().join("pebble.log"),
            client: tls.client(),
            dir,
        };
        p.spawn_and_wait().await;
        p
    }

    async fn spawn_and_wait(&mut self) {
        let mut cmd = Command::new(
            self.opts
                .binary
                .as_deref()
                .unwrap_or_else(|| Path::new("pebble")),
        );
        cmd.arg("-config").arg(&self.config);
        if let Some(dns_port) = self.opts.dns_port {
            cmd.arg("-dnsserver").arg(format!("127.0.0.1:{dns_port}"));
        }
        cmd.env("PEBBLE_VA_NOSLEEP", "1")
            .env(
                "PEBBLE_WFE_NONCEREJECT",
                self.opts.nonce_reject_percent.to_string(),
            )
            .env("PEBBLE_AUTHZREUSE", "0")
            // Deterministic: nothing from the caller's environment changes
            // what the CA does.
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .env_remove("PEBBLE_CHAIN_LENGTH")
            .env_remove("PEBBLE_ALTERNATE_ROOTS")
            .current_dir(self.dir.path());
        self.proc = Some(Proc::spawn(
            &format!("pebble {}", self.name),
            cmd,
            &self.log,
        ));

        let url = self.directory_url();
        let deadline = Instant::now() + PEBBLE_READY_TIMEOUT;
        loop {
            if let Some(why) = self.proc.as_mut().and_then(Proc::exited) {
                panic!(
                    "Pebble {} did not start: {why}\n--- pebble log ---\n{}",
                    self.name,
                    self.log()
                );
            }
            let last_error = match self.client.get(&url).send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => return,
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(e) => format!("{e:?}"),
            };
            if Instant::now() > deadline {
                panic!(
                    "Pebble {} not ready at {url} after {PEBBLE_READY_TIMEOUT:?} ({last_error})\n--- pebble log ---\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ACME directory URL, `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The ACME API port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The management API port.
    pub fn management_port(&self) -> u16 {
        self.management_port
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An HTTP client trusting the local CA Pebble serves HTTPS with.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Pebble's stdout and stderr so far (all runs).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    async fn management_get(&self, path: &str) -> reqwest::Response {
        let url = format!("https://127.0.0.1:{}{path}", self.management_port);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            panic!("GET {url}: HTTP {status}: {body}");
        }
        resp
    }

    async fn management_text(&self, path: &str) -> String {
        self.management_get(path)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("read body of {path}: {e:?}"))
    }

    /// The current root certificate (PEM); new after every restart.
    pub async fn root_pem(&self) -> String {
        self.management_text("/roots/0").await
    }

    /// The current intermediate certificate (PEM).
    pub async fn intermediate_pem(&self) -> String {
        self.management_text("/intermediates/0").await
    }

    /// The root's private key (PEM), to sign test OCSP responses or CRLs as
    /// this CA.
    pub async fn root_key_pem(&self) -> String {
        self.management_text("/root-keys/0").await
    }

    /// The intermediate's private key (PEM).
    pub async fn intermediate_key_pem(&self) -> String {
        self.management_text("/intermediate-keys/0").await
    }

    /// `GET /cert-status-by-serial/<hex>`; per TESTENV.md the JSON has
    /// `Status`, `Reason` and `RevokedAt` (not yet exercised by a test here).
    /// Panics on a non-2xx answer (e.g. an unknown serial).
    pub async fn cert_status(&self, serial_hex: &str) -> serde_json::Value {
        let path = format!("/cert-status-by-serial/{serial_hex}");
        self.management_get(&path)
            .await
            .json()
            .await
            .unwrap_or_else(|e| panic!("parse JSON of {path}: {e:?}"))
    }

    /// Whether this Pebble issued the certificate with this serial.
    pub async fn issued(&self, serial_hex: &str) -> bool {
        let path = format!("/cert-status-by-serial/{serial_hex}");
        self.management_get(&path).await.status().is_success()
    }

    /// Kills Pebble (its state is lost); [`Pebble::restart`] starts it again.
    pub fn stop(&mut self) {
        self.proc = None; // Drop kills and reaps.
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Stops Pebble if it runs and starts it again on the same ports, with a
    /// new root and empty state.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait().await;
    }
}

// ---------------------------------------------------------------------------
// Two CAs and a DNS server
// ---------------------------------------------------------------------------

/// Two independent Pebble CAs (`a` and `b`) sharing one HTTP-01 port and
/// one BIND, as a primary and a backup CA do in production.
///
/// The HTTP-01 responder under test must listen on `127.0.0.1:http01_port`;
/// both CAs validate there. Every name in [`ZONE`] resolves to 127.0.0.1.
pub struct TwoCas {
    pub tls: LocalTls,
    pub dns: Bind,
    pub a: Pebble,
    pub b: Pebble,
    /// A third CA, for re-provisioning drills ([`TwoCas::start_three`]).
    pub c: Option<Pebble>,
    pub http01_port: u16,
    dir: TempDir,
}

impl TwoCas {
    /// Starts BIND and two Pebbles rejecting `nonce_reject_percent` % of
    /// nonces.
    pub async fn start(nonce_reject_percent: u8) -> TwoCas {
        TwoCas::start_with(PebbleOptions {
            nonce_reject_percent,
            ..PebbleOptions::default()
        })
        .await
    }

    /// Starts BIND and two Pebbles with `opts` (its `http01_port` is
    /// replaced by the shared one; its `dns_port` is BIND's unless set, e.g.
    /// to a PowerDNS the CAs must resolve through).
    pub async fn start_with(opts: PebbleOptions) -> TwoCas {
        TwoCas::start_n(opts, false).await
    }

    /// Starts BIND and three Pebbles (CA C for re-provisioning after a CA
    /// is swapped away from or distrusted).
    pub async fn start_three(opts: PebbleOptions) -> TwoCas {
        TwoCas::start_n(opts, true).await
    }

    /// Starts BIND and two Pebbles with their own options each (e.g. two
    /// lifetimes, or another Pebble binary for one of them); the shared
    /// `http01_port` and `dns_port` replace theirs.
    pub async fn start_each(a: PebbleOptions, b: PebbleOptions) -> TwoCas {
        TwoCas::start_n_each(a, b, None).await
    }

    async fn start_n(opts: PebbleOptions, third: bool) -> TwoCas {
        let c = third.then(|| opts.clone());
        TwoCas::start_n_each(opts.clone(), opts, c).await
    }

    async fn start_n_each(a: PebbleOptions, b: PebbleOptions, c: Option<PebbleOptions>) -> TwoCas {
        let dir = tempfile::Builder::new()
            .prefix("twincert-e2e-")
            .tempdir()
            .expect("create test temp dir");
        let tls = LocalTls::generate(dir.path());
        let dns = Bind::start(dir.path());
        let http01_port = free_port();
        let shared = |opts: PebbleOptions| PebbleOptions {
            http01_port,
            dns_port: opts.dns_port.or(Some(dns.port())),
            ..opts
        };
        let (a, b, c) = tokio::join!(
            Pebble::start(dir.path(), "a", &tls, shared(a)),
            Pebble::start(dir.path(), "b", &tls, shared(b)),
            async {
                match c {
                    Some(c) => Some(Pebble::start(dir.path(), "c", &tls, shared(c)).await),
                    None => None,
                }
            },
        );
        TwoCas {
            tls,
            dns,
            a,
            b,
            c,
            http01_port,
            dir,
        }
    }

    /// The shared temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// Environment variable with the URL of a PostgreSQL server whose user may
/// create databases (set by `scripts/test.sh`).
pub const PG_URL_ENV: &str = "TWINCERT_TEST_PG_URL";

/// The PostgreSQL URL from [`PG_URL_ENV`], if set and non-empty.
pub fn pg_url() -> Option<String> {
    std::env::var(PG_URL_ENV).ok().filter(|s| !s.is_empty())
}

/// The PostgreSQL URL for a test, or `None` (the caller returns) outside
/// `scripts/test.sh` — a bare `cargo test` has no PostgreSQL. Under CI
/// (`CI` set) a missing URL fails the test instead: CI must run them.
pub fn pg_url_or_skip(test: &str) -> Option<String> {
    let url = pg_url();
    if url.is_none() {
        eprintln!("{PG_URL_ENV} not set: PostgreSQL test {test} not run");
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the PostgreSQL tests (use scripts/test.sh)"
        );
    }
    url
}

/// Creates a uniquely named, empty database on the server of `base_url`
/// (with `psql`) and returns the URL of that database. Tests running in
/// parallel each get their own.
pub async fn fresh_pg_database(base_url: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let name = format!(
        "tc_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let out = run(Command::new("psql")
        .arg(base_url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .env("PGCONNECT_TIMEOUT", "10"));
    assert!(
        out.status.success(),
        "CREATE DATABASE {name} on {base_url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut url = url::Url::parse(base_url)
        .unwrap_or_else(|e| panic!("{PG_URL_ENV} is not a URL ({base_url}): {e}"));
    url.set_path(&format!("/{name}"));
    url.into()
}

/// A test BIND's port, TSIG key name and secret ([`Bind::update_key`]).
pub type UpdateKey = (u16, String, String);

/// Runs one nsupdate script (`lines` without `server` and `send`) against
/// the test BIND with its TSIG key; nsupdate's error output on failure. The
/// tests' fake DNS APIs and hooks use it to make what they were given
/// visible to the CAs.
pub async fn nsupdate(bind: UpdateKey, lines: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let (port, key, secret) = bind;
    let script = format!("server 127.0.0.1 {port}\n{lines}send\n");
    let mut child = tokio::process::Command::new("nsupdate")
        .arg("-y")
        .arg(format!("hmac-sha256:{key}:{secret}"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("nsupdate: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("nsupdate: no stdin")?;
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
