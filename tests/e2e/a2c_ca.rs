//! acme2certifier (PyPI 0.46.3, with its local OpenSSL CA handler) as
//! another ACME server implementation beside the test Pebbles: the server
//! for the profile tests (issue 17, item 1) and for dns-persist-01
//! (item 3).
//!
//! Owns one acme2certifier process (killed on drop), its configuration
//! (`acme_srv.cfg`, written from [`A2cOptions`]), its issuing CA (an
//! ECDSA P-256 root made with `openssl req -x509` at start), its SQLite
//! database and the directory the CA handler saves certificates in; all
//! in a temporary directory. Nothing machine-wide: it listens on
//! `127.0.0.1` only and installs nothing.
//!
//! How it runs: the venv from `TWINCERT_TEST_A2C_VENV` (scripts/test.sh
//! installs `acme2certifier==0.46.3` there, like moto) runs
//! `tests/e2e/a2c/serve.py`, a small wsgiref wrapper around
//! acme2certifier's own WSGI application that serves HTTPS with the
//! harness's localhost certificate ([`LocalTls`]; twincert trusts its CA
//! for the directory, as for Pebble) and makes acme2certifier's DNS
//! resolver ask the test BIND on its port (its `dns_server_list` takes
//! bare addresses, asked on port 53; see serve.py).
//!
//! Facts of 0.46.3 the tests rely on (checked in its source and by
//! running it): `newAccount` needs a `mailto:` contact (twincert sends the
//! `[[cas]] contact`); DNS-01 is checked with a plain TXT lookup of
//! `_acme-challenge.<name>` through the configured resolver; HTTP-01
//! always connects to port 80 (the tests use DNS-01); `renewalInfo` is
//! served but `replaces` is not honoured; `[Order] profiles` is shown as
//! the directory's `meta.profiles`, an unknown profile is refused with
//! `invalidProfile`, and the order object never echoes the profile; a
//! per-profile lifetime needs its multi-handler (`[CAhandler]
//! multi_handler`, `[CAhandler:<name>]` sections, `[Order]
//! profile_cahandler`), whole days only.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::{LocalTls, Proc, free_port, read_log, write};

/// Longest wait for acme2certifier to serve its directory (the Python
/// imports take a second or two on a loaded machine).
const A2C_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The CAA identity / issuer domain name acme2certifier announces
/// (`[Directory] caaidentities`; dns-persist-01's issuer domain name).
pub const A2C_ISSUER: &str = "ca.a2c.test";

/// The venv acme2certifier is installed in.
pub fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("TWINCERT_TEST_A2C_VENV")
            .unwrap_or_else(|_| "/tmp/twincert-a2c-venv".to_string()),
    )
}

/// acme2certifier's configuration as INI sections (section → key →
/// value), written to `acme_srv.cfg` at start. [`A2cOptions::default`]
/// is one CA handler issuing 30-day certificates, DNS-01 against the test
/// BIND; tests change or add keys with [`A2cOptions::set`] (`{ca_key}`,
/// `{ca_cert}`, `{ca_crl}` and `{dir}` in values are replaced by the
/// issuing CA's files and the temporary directory).
#[derive(Clone, Debug)]
pub struct A2cOptions {
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for A2cOptions {
    fn default() -> Self {
        let mut o = A2cOptions {
            sections: BTreeMap::new(),
        };
        o.set("DEFAULT", "debug", "False");
        o.set("DEFAULT", "dns_server_list", r#"["127.0.0.1"]"#);
        o.set("Nonce", "nonce_check_disable", "False");
        o.set(
            "CAhandler",
            "handler_module",
            "acme2certifier.cahandlers.openssl_ca_handler",
        );
        o.handler("CAhandler", 30, "certs");
        o.set("DBhandler", "handler", "wsgi");
        o.set("DBhandler", "dbfile", "{dir}/acme_srv.db");
        o.set(
            "Directory",
            "caaidentities",
            &format!(r#"["{A2C_ISSUER}"]"#),
        );
        o.set("Challenge", "challenge_validation_disable", "False");
        o.set("Order", "tnauthlist_support", "False");
        o
    }
}

impl A2cOptions {
    /// Sets `key = value` in `[section]`.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> &mut Self {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self
    }

    /// The OpenSSL CA handler's keys in `[section]`: the harness's issuing
    /// CA, `validity_days`, certificates saved under `{dir}/<save_dir>`.
    fn handler(&mut self, section: &str, validity_days: u32, save_dir: &str) -> &mut Self {
        self.set(section, "issuing_ca_key", "{ca_key}");
        self.set(section, "issuing_ca_cert", "{ca_cert}");
        self.set(section, "issuing_ca_crl", "{ca_crl}");
        self.set(section, "cert_save_path", &format!("{{dir}}/{save_dir}"));
        self.set(section, "cert_validity_days", &validity_days.to_string())
    }

    /// ACME profiles (`[Order] profiles`, shown as the directory's
    /// `meta.profiles`), each issued by its own OpenSSL CA handler with its
    /// own lifetime in days (acme2certifier's multi-handler: the first
    /// profile's handler is the default one, used for orders without a
    /// profile). `(name, validity_days)`.
    pub fn profiles(&mut self, profiles: &[(&str, u32)]) -> &mut Self {
        self.sections.remove("CAhandler");
        self.set("CAhandler", "multi_handler", "True");
        let mut meta = serde_json::Map::new();
        let mut map = serde_json::Map::new();
        for (i, (name, days)) in profiles.iter().enumerate() {
            let section = format!("CAhandler:{name}");
            if i == 0 {
                self.set("CAhandler", "default_handler", name);
            }
            self.set(
                &section,
                "handler_module",
                "acme2certifier.cahandlers.openssl_ca_handler",
            );
            self.handler(&section, *days, &format!("certs-{name}"));
            meta.insert(
                name.to_string(),
                format!("https://a2c.test/profiles/{name} ({days} days)").into(),
            );
            map.insert(name.to_string(), name.to_string().into());
        }
        self.set(
            "Order",
            "profiles",
            &serde_json::Value::Object(meta).to_string(),
        );
        self.set(
            "Order",
            "profile_cahandler",
            &serde_json::Value::Object(map).to_string(),
        )
    }

    fn render(&self, dir: &Path) -> String {
        let subst = |v: &str| {
            v.replace("{ca_key}", &dir.join("ca/ca.key").display().to_string())
                .replace("{ca_cert}", &dir.join("ca/ca.pem").display().to_string())
                .replace("{ca_crl}", &dir.join("ca/crl.pem").display().to_string())
                .replace("{dir}", &dir.display().to_string())
        };
        let mut out = String::new();
        // DEFAULT first: configparser reads it as the defaults section.
        let order = self
            .sections
            .keys()
            .filter(|s| *s == "DEFAULT")
            .chain(self.sections.keys().filter(|s| *s != "DEFAULT"));
        for s in order {
            out.push_str(&format!("[{s}]\n"));
            for (k, v) in &self.sections[s] {
                out.push_str(&format!("{k}: {}\n", subst(v)));
            }
            out.push('\n');
        }
        out
    }

    /// Every `cert_save_path` (relative to the temporary directory, after
    /// substitution), created before start.
    fn save_dirs(&self, dir: &Path) -> Vec<PathBuf> {
        self.sections
            .values()
            .filter_map(|kv| kv.get("cert_save_path"))
            .map(|p| PathBuf::from(p.replace("{dir}", &dir.display().to_string())))
            .collect()
    }
}

/// One acme2certifier on `https://127.0.0.1:<port>/`.
pub struct A2cCa {
    proc: Option<Proc>,
    port: u16,
    log: PathBuf,
    https_roots: PathBuf,
    dir: TempDir,
}

impl A2cCa {
    /// Starts acme2certifier in a new temporary directory under `parent`,
    /// serving HTTPS with `tls`'s localhost certificate, resolving through
    /// the DNS server on `127.0.0.1:dns_port`.
    pub async fn start(parent: &Path, tls: &LocalTls, dns_port: u16, opts: &A2cOptions) -> A2cCa {
        let python = venv().join("bin/python");
        assert!(
            python.exists(),
            "acme2certifier's venv not found at {} (scripts/test.sh installs it: \
             python3 -m venv DIR && DIR/bin/pip install acme2certifier==0.46.3; \
             TWINCERT_TEST_A2C_VENV=DIR)",
            venv().display()
        );
        let dir = tempfile::Builder::new()
            .prefix("a2c-")
            .tempdir_in(parent)
            .expect("create acme2certifier temp dir");
        let d = dir.path();
        let ca = d.join("ca");
        std::fs::create_dir_all(&ca).expect("create ca dir");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .args(["-nodes", "-days", "3650", "-subj"])
            .arg("/CN=twincert test acme2certifier CA")
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(ca.join("ca.key"))
            .arg("-out")
            .arg(ca.join("ca.pem"))
            .output()
            .expect("run openssl req (is openssl installed?)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for p in opts.save_dirs(d) {
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        }
        let config = d.join("acme_srv.cfg");
        write(&config, &opts.render(d));

        let port = free_port();
        let log = d.join("a2c.log");
        let mut cmd = Command::new(&python);
        cmd.arg(serve_py())
            .arg(port.to_string())
            .arg(&tls.cert_path)
            .arg(&tls.key_path)
            .env("ACME_SRV_CONFIGFILE", &config)
            .env("A2C_DNS_PORT", dns_port.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(d);
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(v);
        }
        let proc = Proc::spawn("acme2certifier", cmd, &log);
        let mut a2c = A2cCa {
            proc: Some(proc),
            port,
            log,
            https_roots: tls.ca_pem_path.clone(),
            dir,
        };
        a2c.wait_ready(tls).await;
        a2c
    }

    async fn wait_ready(&mut self, tls: &LocalTls) {
        let deadline = Instant::now() + A2C_READY_TIMEOUT;
        let url = self.directory_url();
        let client = tls.client();
        loop {
            if let Some(why) = self.proc.as_mut().and_then(Proc::exited) {
                panic!(
                    "acme2certifier did not start: {why}\n--- log ---\n{}",
                    self.log()
                );
            }
            let last = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => format!("{e:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "acme2certifier not ready at {url} after {A2C_READY_TIMEOUT:?} ({last})\n--- log ---\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `https://127.0.0.1:<port>/directory`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/directory", self.port)
    }

    /// The PEM root its HTTPS chains to (the harness's local CA).
    pub fn https_roots_path(&self) -> PathBuf {
        self.https_roots.clone()
    }

    /// The issuing CA (self-signed root) its certificates chain to.
    pub fn root_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    pub fn root_pem(&self) -> String {
        read_log(&self.root_pem_path())
    }

    /// The temporary directory (config, database, saved certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far (requests and acme2certifier's own logging).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

/// `tests/e2e/a2c/serve.py` in the source tree.
fn serve_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/a2c/serve.py")
}
