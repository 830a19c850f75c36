//! A `twincert serve` process for end-to-end tests: the real binary, with a
//! config written for a [`TwoCas`] pair, secrets from the environment, logs
//! in a file, and an API client. Killed (SIGKILL) on drop or on demand, so
//! crash tests can restart it on the same store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TwoCas, free_port};

/// Test master key: fixed so a test can open the store's ciphertexts.
pub const MASTER_KEY: &str = "test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Test admin token.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// How a server is started.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `sqlite://...` or `postgres://...`.
    pub store_url: String,
    /// `[worker] lease_seconds`.
    pub lease_seconds: i64,
    /// `[worker] min_backoff_seconds` / max.
    pub backoff: (u64, u64),
    /// Override CA b's directory URL (e.g. a dead port).
    pub b_directory_url: Option<String>,
    /// Replaces CA b (`pebble-b`) by another ACME server, under its own id
    /// (interop tests: Caddy's `acme_server` as one of the two CAs).
    pub b_ca: Option<CaEntry>,
    /// Extra environment (e.g. TWINCERT_FAILPOINT).
    pub env: Vec<(String, String)>,
    /// Replaces the TSIG secret of the BIND DNS provider (negative tests).
    pub tsig_secret: Option<String>,
    /// Replaces the port authoritative servers are asked on.
    pub authoritative_port: Option<u16>,
    /// Replaces the port of `[dns] resolver` (BIND's by default).
    pub resolver_port: Option<u16>,
    /// Whether the `bind` RFC 2136 provider (zone `example.test`) is
    /// configured; off when another provider serves that zone.
    pub bind_provider: bool,
    /// `dns.propagation_timeout_seconds`.
    pub propagation_timeout: u64,
    /// `server.allow_cidrs`, as TOML array text.
    pub allow_cidrs: Option<String>,
    /// Serve the API over HTTPS with the harness's localhost certificate.
    pub api_tls: bool,
    /// TOML appended to the config (sections the environment cannot set,
    /// such as `[[destinations]]`).
    pub extra_config: String,
    /// `[[dns_providers]]` entries that replace the BIND (`rfc2136`) one,
    /// so another provider may claim the test zone (it writes into the
    /// same BIND, which the CAs resolve through).
    pub dns_providers: Option<String>,
}

impl ServerOptions {
    /// Defaults for `store_url`.
    pub fn new(store_url: impl Into<String>) -> Self {
        ServerOptions {
            store_url: store_url.into(),
            lease_seconds: 60,
            backoff: (1, 2),
            b_directory_url: None,
            b_ca: None,
            env: Vec::new(),
            tsig_secret: None,
            authoritative_port: None,
            resolver_port: None,
            bind_provider: true,
            propagation_timeout: 10,
            allow_cidrs: None,
            api_tls: false,
            extra_config: String::new(),
            dns_providers: None,
        }
    }
}

/// A `[[cas]]` entry written instead of CA b's.
#[derive(Clone, Debug)]
pub struct CaEntry {
    pub id: String,
    /// A profile id (`generic` for a private ACME server).
    pub profile: String,
    pub directory_url: String,
    /// The PEM roots its HTTPS chains to.
    pub trust_roots_file: PathBuf,
    pub root_group: String,
    /// More TOML lines of the `[[cas]]` entry (e.g. `contact = [...]`).
    pub extra: String,
}

/// A running `twincert serve`.
pub struct Server {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    opts: ServerOptions,
    api_port: u16,
    http: reqwest::Client,
}

fn write_config(dir: &Path, cas: &TwoCas, opts: &ServerOptions, api_port: u16) -> PathBuf {
    let b = opts.b_ca.clone().unwrap_or_else(|| CaEntry {
        id: "pebble-b".into(),
        profile: "pebble".into(),
        directory_url: opts
            .b_directory_url
            .clone()
            .unwrap_or_else(|| cas.b.directory_url()),
        trust_roots_file: cas.tls.ca_pem_path.clone(),
        root_group: "pebble-b".into(),
        extra: String::new(),
    });
    let text = format!(
        r#"
[server]
api_listen = "127.0.0.1:{api_port}"
http01_listen = "127.0.0.1:{http01}"
{allow}

[store]
url = "{store}"

[worker]
lease_seconds = {lease}
min_backoff_seconds = {bmin}
max_backoff_seconds = {bmax}
poll_interval_ms = 100
acme_timeout_seconds = 20
counts_interval_seconds = 1

[policy]
ca_preference = ["pebble-a", "{b_id}"{c_pref}]

[dns]
resolver = "127.0.0.1:{resolver}"
authoritative_port = {auth}
propagation_timeout_seconds = {ptimeout}
propagation_interval_ms = 100
manual_poll_seconds = 1
delegation_zone = "acme.example.test"

{dns_providers}

[[cas]]
id = "pebble-a"
profile = "pebble"
directory_url = "{a}"
trust_roots_file = "{roots}"
root_group = "pebble-a"
caa_identities = ["pebble-a.test"]

[[cas]]
id = "{b_id}"
profile = "{b_profile}"
directory_url = "{b_url}"
trust_roots_file = "{b_roots}"
root_group = "{b_group}"
{b_caa}
{b_extra}
{c_block}
{extra}"#,
        extra = opts.extra_config,
        http01 = cas.http01_port,
        c_pref = if cas.c.is_some() {
            ", \"pebble-c\""
        } else {
            ""
        },
        c_block = match &cas.c {
            Some(c) => format!(
                "\n[[cas]]\nid = \"pebble-c\"\nprofile = \"pebble\"\ndirectory_url = \"{}\"\n\
                 trust_roots_file = \"{}\"\nroot_group = \"pebble-c\"\n\
                 caa_identities = [\"pebble-c.test\"]\n",
                c.directory_url(),
                cas.tls.ca_pem_path.display()
            ),
            None => String::new(),
        },
        allow = {
            let mut extra = opts
                .allow_cidrs
                .as_ref()
                .map(|a| format!("allow_cidrs = {a}\n"))
                .unwrap_or_default();
            if opts.api_tls {
                extra.push_str(&format!(
                    "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                    cas.tls.cert_path.display(),
                    cas.tls.key_path.display()
                ));
            }
            extra
        },
        store = opts.store_url,
        lease = opts.lease_seconds,
        bmin = opts.backoff.0,
        bmax = opts.backoff.1,
        a = cas.a.directory_url(),
        b_id = b.id,
        b_profile = b.profile,
        b_url = b.directory_url,
        b_roots = b.trust_roots_file.display(),
        b_group = b.root_group,
        b_extra = b.extra,
        // The test Pebbles' CAA identities (preflight); another CA b has none.
        b_caa = if opts.b_ca.is_none() {
            "caa_identities = [\"pebble-b.test\"]"
        } else {
            ""
        },
        roots = cas.tls.ca_pem_path.display(),
        resolver = opts.resolver_port.unwrap_or(cas.dns.port()),
        auth = opts.authoritative_port.unwrap_or(cas.dns.port()),
        ptimeout = opts.propagation_timeout,
        dns_providers = match (&opts.dns_providers, opts.bind_provider) {
            (Some(entries), _) => entries.clone(),
            (None, true) => format!(
                "\n[[dns_providers]]\nid = \"bind\"\nkind = \"rfc2136\"\nserver = \"127.0.0.1:{dns}\"\n\
                 zones = [\"{zone}\"]\ntsig_key_name = \"{key}\"\ntsig_secret = \"{secret}\"\n",
                dns = cas.dns.port(),
                zone = cas.dns.zone(),
                key = cas.dns.tsig_key_name(),
                secret = opts
                    .tsig_secret
                    .clone()
                    .unwrap_or_else(|| cas.dns.tsig_secret_b64().to_string()),
            ),
            (None, false) => String::new(),
        },
    );
    let path = dir.join(format!("twincert-{api_port}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

impl Server {
    /// Starts a server for `cas` and waits until `/readyz` answers.
    pub async fn start(cas: &TwoCas, opts: ServerOptions) -> Server {
        let api_port = free_port();
        let config = write_config(cas.dir(), cas, &opts, api_port);
        let log = cas.dir().join(format!("twincert-{api_port}.log"));
        let mut s = Server {
            child: None,
            config,
            log,
            http: if opts.api_tls {
                cas.tls.client()
            } else {
                reqwest::Client::new()
            },
            opts,
            api_port,
        };
        s.spawn().await;
        s
    }

    /// Runs `twincert serve` with the config for `cas` and `opts`,
    /// expecting it to refuse to start: returns its exit status and log
    /// (panics if it is still running after 20 s).
    pub async fn start_refused(
        cas: &TwoCas,
        opts: ServerOptions,
    ) -> (std::process::ExitStatus, String) {
        let api_port = free_port();
        let config = write_config(cas.dir(), cas, &opts, api_port);
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_twincert"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("TWINCERT_MASTER_KEY", MASTER_KEY)
                .env("TWINCERT_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("TWINCERT_LOG", "info")
                .env_remove("TWINCERT_FAILPOINT")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("twincert still running after 20 s: it did not refuse to start")
        .expect("run twincert");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_twincert"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("TWINCERT_MASTER_KEY", MASTER_KEY)
            .env("TWINCERT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TWINCERT_LOG", "info,twincert=debug")
            .env_remove("TWINCERT_FAILPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        for (k, v) in &self.opts.env {
            // Failpoints exist only in builds with the feature; say so
            // rather than let the server refuse an unknown variable.
            assert!(
                k != "TWINCERT_FAILPOINT" || cfg!(feature = "failpoints"),
                "this test drives a failpoint: run it with `--features failpoints` \
                 (scripts/test.sh does)"
            );
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn twincert"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("twincert exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "twincert not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; returns the exit status once the
    /// process is gone (panics if it does not exit within `secs`).
    pub fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        let pid = libc::pid_t::try_from(c.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("twincert did not exit on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again on the same config and store, with `env`
    /// replacing the extra environment.
    pub async fn restart(&mut self, env: Vec<(String, String)>) {
        self.kill();
        self.opts.env = env;
        self.spawn().await;
    }

    /// API base URL.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn base(&self) -> String {
        let scheme = if self.opts.api_tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.api_port)
    }

    /// `GET /metrics` as text (admin token).
    pub async fn metrics_text(&self) -> String {
        // The aggregates are the `counts` controller's (every second
        // here): wait for a set counted after this call began, so what the
        // test did before is in it (before the first set, they are absent).
        let asked = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as f64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let text = self
                .http
                .get(format!("{}/metrics", self.base()))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("text");
            let computed_at = text
                .lines()
                .find_map(|l| l.strip_prefix("twincert_counts_computed_at_seconds "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if computed_at.is_some_and(|t| t > asked) || std::time::Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The client the fixture uses (trusts the harness CA under TLS).
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POST /v1/names.
    pub async fn create(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/names", self.base()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /v1/names");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GET /v1/names/{name}.
    pub async fn name(&self, name: &str) -> Value {
        self.http
            .get(format!("{}/v1/names/{name}", self.base()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET name")
            .json()
            .await
            .expect("name JSON")
    }

    /// Polls the name until `pred` holds; panics with the log on timeout.
    pub async fn wait_for(&self, name: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.name(name).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {name}: {v:#}\n--- server log ---\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the name is `ready`.
    pub async fn wait_ready(&self, name: &str, secs: u64) -> Value {
        self.wait_for(name, secs, |v| v["state"] == "ready").await
    }

    /// The PEM chain of a slot.
    /// The private key (PKCS#8 PEM) of a name's slot, by the key download.
    pub async fn key_pem(&self, name: &str, slot: &str) -> String {
        let r = self
            .http
            .get(format!(
                "{}/v1/names/{name}/certificates/{slot}/key",
                self.base()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET key");
        assert_eq!(r.status().as_u16(), 200, "key {slot} of {name}");
        r.text().await.expect("PEM body")
    }

    pub async fn chain_pem(&self, name: &str, slot: &str) -> String {
        let r = self
            .http
            .get(format!(
                "{}/v1/names/{name}/certificates/{slot}",
                self.base()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .header("Accept", "application/pem-certificate-chain")
            .send()
            .await
            .expect("GET certificate");
        assert_eq!(r.status().as_u16(), 200, "certificate {slot} of {name}");
        r.text().await.expect("PEM body")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
