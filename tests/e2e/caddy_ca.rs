//! Caddy's `acme_server` (Debian `caddy` 2.6.2, smallstep's ACME library
//! inside) as a second, different ACME CA for the interop tests.
//!
//! Owns one Caddy process (started, restarted — optionally without its
//! ACME database —, killed on drop), its private view of the system files,
//! and the small relays in the test process; nothing machine-wide. Reads
//! what Caddy shows nowhere else: its root, and the revocations in its
//! ACME database.
//!
//! Why it needs more than Pebble does: Caddy's validator has no settings
//! for where it connects or which resolver it asks (2.6.2 has no
//! `resolvers` option). HTTP-01 always goes to **port 80** of the name,
//! and names and `_acme-challenge` TXT records are looked up through the
//! **system resolver** (`/etc/hosts`, `/etc/resolv.conf`, whose nameserver
//! is always asked on port 53). So:
//!
//! * Caddy runs in its **own mount namespace** (`unshare --mount
//!   --propagation private`), where a private `/etc/hosts` maps every test
//!   name to a loopback address of its own, `L` (one of 127.0.0.0/8, which
//!   Linux routes to `lo` without configuration), a private
//!   `/etc/resolv.conf` names `L` as the nameserver, and a private
//!   `/etc/nsswitch.conf` says `hosts: files dns`. Mounts made there are
//!   invisible to every other process and vanish with Caddy.
//! * The test process relays `L:80` (TCP) to twincert's HTTP-01 listener
//!   and `L:53` (UDP and TCP) to the test BIND. A network namespace was
//!   the other way (port 80 and 53 free inside it), but then twincert,
//!   outside, could not reach Caddy's ACME port without veth plumbing;
//!   a loopback address per instance keeps everything on `lo`, lets
//!   tests run in parallel (each Caddy has its own `L`), and never takes
//!   `127.0.0.1:80` or `:53` from the machine.
//! * **Trust stores.** Run as root, Caddy installs the root of every CA it
//!   runs into the machine's trust stores unless the CA says
//!   `install_trust: false` (the Caddyfile's `skip_install_trust`). The
//!   config defines the `local` CA that way, `HOME` and `XDG_*` point into
//!   the temporary directory (no NSS database of a real user is touched),
//!   and, should that ever fail, tmpfs mounts over
//!   `/usr/local/share/ca-certificates` and `/etc/ssl/certs` inside the
//!   namespace catch the write. [`TrustStores`] lets a test assert the
//!   real ones did not change.
//!
//! Caddy serves its ACME API over HTTPS with a certificate from the same
//! `local` CA (its `internal` issuer), so twincert trusts
//! [`CaddyCa::root_pem_path`] for the directory, as an operator of an
//! internal Caddy would. Facts of 2.6.2 (checked by starting it): the
//! handler accepts neither `lifetime` nor `resolvers` (unknown fields are
//! refused), certificates live 12 h, the directory's `meta` is empty (no
//! terms, no EAB, no ARI, no profiles).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::harness::{Proc, ZONE, ZONE_HOSTS, free_port, read_log, write};

/// Longest wait for Caddy to serve its directory.
const CADDY_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where `unreachable_names` point: a loopback address nothing binds (the
/// validation addresses are taken from 127.100.0.0–127.199.255.255).
pub const UNREACHABLE: Ipv4Addr = Ipv4Addr::new(127, 254, 254, 254);

/// The CA id inside Caddy (`pki.certificate_authorities`).
const CA_ID: &str = "local";

/// One Caddy `acme_server` on `127.0.0.1:<port>`, validating through its
/// own loopback address (see the module doc).
pub struct CaddyCa {
    proc: Option<Proc>,
    port: u16,
    loopback: Ipv4Addr,
    relays: Vec<JoinHandle<()>>,
    log: PathBuf,
    storage: PathBuf,
    dir: TempDir,
}

impl CaddyCa {
    /// Starts Caddy in a new temporary directory under `parent`. Its
    /// HTTP-01 validations reach `127.0.0.1:http01_port`, its DNS lookups
    /// the server on `127.0.0.1:dns_port`; `extra_names` are resolved to
    /// the validation address besides [`ZONE`], its [`ZONE_HOSTS`] and
    /// `*.example.test` names the tests commonly use; `unreachable_names`
    /// to [`UNREACHABLE`], where nothing listens (failed validations).
    pub async fn start(
        parent: &Path,
        http01_port: u16,
        dns_port: u16,
        extra_names: &[&str],
        unreachable_names: &[&str],
    ) -> CaddyCa {
        assert!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() } == 0,
            "the Caddy interop tests run Caddy in its own mount namespace and \
             relay port 80 and 53: they need root (CI runs as root)"
        );
        let dir = tempfile::Builder::new()
            .prefix("caddy-")
            .tempdir_in(parent)
            .expect("create Caddy temp dir");
        let d = dir.path();
        let (loopback, http, dns_udp, dns_tcp) = bind_validation_address().await;
        let bind: SocketAddr = ([127, 0, 0, 1], dns_port).into();
        let relays = vec![
            tokio::spawn(relay_tcp(http, ([127, 0, 0, 1], http01_port).into())),
            tokio::spawn(relay_udp(dns_udp, bind)),
            tokio::spawn(relay_tcp(dns_tcp, bind)),
        ];

        let mut names: Vec<String> = vec![ZONE.to_string()];
        names.extend(ZONE_HOSTS.iter().map(|h| format!("{h}.{ZONE}")));
        names.extend(extra_names.iter().map(|n| n.to_string()));
        let hosts = d.join("hosts");
        write(
            &hosts,
            &format!(
                "127.0.0.1 localhost\n::1 localhost\n{loopback} {}\n{UNREACHABLE} {}\n",
                names.join(" "),
                unreachable_names.join(" ")
            ),
        );
        let resolv = d.join("resolv.conf");
        write(
            &resolv,
            &format!("nameserver {loopback}\noptions timeout:2 attempts:3\n"),
        );
        let nsswitch = d.join("nsswitch.conf");
        write(&nsswitch, "hosts: files dns\n");

        let port = free_port();
        let storage = d.join("data");
        let config = d.join("caddy.json");
        let json = serde_json::json!({
            "admin": { "disabled": true },
            "storage": { "module": "file_system", "root": storage },
            "logging": { "logs": { "default": { "level": "DEBUG" } } },
            "apps": {
                // Never into the machine's trust stores (see module doc).
                "pki": { "certificate_authorities": { CA_ID: { "install_trust": false } } },
                "tls": {
                    "certificates": { "automate": ["127.0.0.1"] },
                    "automation": { "policies": [{
                        "subjects": ["127.0.0.1"],
                        "issuers": [{ "module": "internal", "ca": CA_ID }]
                    }] }
                },
                "http": { "servers": { "acme": {
                    "listen": [format!("127.0.0.1:{port}")],
                    // No HTTP/3: no UDP listener needed.
                    "protocols": ["h1", "h2"],
                    "automatic_https": { "disable": true },
                    "tls_connection_policies": [{}],
                    "routes": [{ "handle": [{ "handler": "acme_server", "ca": CA_ID }] }]
                } } }
            }
        });
        write(
            &config,
            &serde_json::to_string_pretty(&json).expect("serialize Caddy config"),
        );

        let log = d.join("caddy.log");
        let proc = Proc::spawn("caddy", command(d), &log);
        let mut caddy = CaddyCa {
            proc: Some(proc),
            port,
            loopback,
            relays,
            log,
            storage,
            dir,
        };
        caddy.wait_ready().await;
        caddy
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + CADDY_READY_TIMEOUT;
        let url = self.directory_url();
        loop {
            if let Some(why) = self.proc.as_mut().and_then(Proc::exited) {
                panic!(
                    "Caddy did not start: {why}\n--- caddy log ---\n{}",
                    self.log()
                );
            }
            // The root exists once the pki app has provisioned.
            let last = match std::fs::read_to_string(self.root_pem_path()) {
                Ok(root) => match client(&root).get(&url).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => format!("{e:?}"),
                },
                Err(e) => format!("no root yet: {e}"),
            };
            assert!(
                Instant::now() < deadline,
                "Caddy not ready at {url} after {CADDY_READY_TIMEOUT:?} ({last})\n--- caddy log ---\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops Caddy and starts it again on the same ports and storage (same
    /// root). With `forget_acme_database`, its ACME database — accounts,
    /// orders, revocations, kept under `$XDG_DATA_HOME`, not in the
    /// configured storage — is deleted first, as when the data directory
    /// of a container is not on a volume.
    pub async fn restart(&mut self, forget_acme_database: bool) {
        self.proc = None; // Drop kills and reaps.
        if forget_acme_database {
            let db = self.dir.path().join("xdg-data/caddy/acme_server");
            std::fs::remove_dir_all(&db).unwrap_or_else(|e| panic!("remove {}: {e}", db.display()));
        }
        self.proc = Some(Proc::spawn("caddy", command(self.dir.path()), &self.log));
        self.wait_ready().await;
    }

    /// `https://127.0.0.1:<port>/acme/local/directory`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/acme/{CA_ID}/directory", self.port)
    }

    /// The CA's root (PEM file): the trust anchor of its HTTPS and of the
    /// certificates it issues.
    pub fn root_pem_path(&self) -> PathBuf {
        self.storage
            .join(format!("pki/authorities/{CA_ID}/root.crt"))
    }

    pub fn root_pem(&self) -> String {
        read_log(&self.root_pem_path())
    }

    /// The address its validator connects to (HTTP-01) and asks (DNS).
    pub fn validation_address(&self) -> Ipv4Addr {
        self.loopback
    }

    /// An HTTP client trusting only this CA's root.
    pub fn client(&self) -> reqwest::Client {
        client(&self.root_pem())
    }

    /// The revocations Caddy's ACME database holds: (serial as lower-case
    /// hex without leading zeros, reason code). Caddy publishes no CRL and
    /// no OCSP, so its database is the only place a revocation shows. It is
    /// a bbolt file (`$XDG_DATA_HOME/caddy/acme_server/<ca>/db`) whose
    /// `revoked_x509_certs` values are JSON; they are found in the raw
    /// bytes rather than through a bbolt reader.
    pub fn revocations(&self) -> BTreeMap<String, i64> {
        let db = self
            .dir
            .path()
            .join(format!("xdg-data/caddy/acme_server/{CA_ID}/db"));
        let bytes = std::fs::read(&db).unwrap_or_default();
        let needle = br#"{"Serial":""#;
        let mut out = BTreeMap::new();
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
            let start = at + i;
            at = start + needle.len();
            let mut values = serde_json::Deserializer::from_slice(&bytes[start..])
                .into_iter::<serde_json::Value>();
            let Some(Ok(v)) = values.next() else {
                continue;
            };
            let (Some(serial), Some(reason)) = (
                v["Serial"].as_str().and_then(|s| s.parse::<u128>().ok()),
                v["ReasonCode"].as_i64(),
            ) else {
                continue;
            };
            out.insert(format!("{serial:x}"), reason);
        }
        out
    }

    /// Caddy's log so far (JSON lines, debug level).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for CaddyCa {
    fn drop(&mut self) {
        for r in &self.relays {
            r.abort();
        }
    }
}

/// `caddy run` on `<dir>/caddy.json` inside its own mount namespace with
/// the private files of `dir` (see the module doc).
fn command(d: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "set -e; \
             mount --bind \"$1\" /etc/hosts; \
             mount --bind \"$2\" /etc/resolv.conf; \
             mount --bind \"$3\" /etc/nsswitch.conf; \
             mount -t tmpfs -o size=1m tmpfs /usr/local/share/ca-certificates; \
             mount -t tmpfs -o size=1m tmpfs /etc/ssl/certs; \
             exec caddy run --config \"$4\"",
        )
        .arg("caddy-ns")
        .arg(d.join("hosts"))
        .arg(d.join("resolv.conf"))
        .arg(d.join("nsswitch.conf"))
        .arg(d.join("caddy.json"))
        .env("HOME", d)
        .env("XDG_DATA_HOME", d.join("xdg-data"))
        .env("XDG_CONFIG_HOME", d.join("xdg-config"))
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
    cmd
}

fn client(root_pem: &str) -> reqwest::Client {
    crate::harness::install_crypto_provider();
    let root = reqwest::Certificate::from_pem(root_pem.as_bytes()).expect("parse Caddy root");
    reqwest::Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

/// A loopback address of our own with port 80 (TCP) and 53 (UDP, TCP)
/// bound on it. Tries addresses derived from the process id and a counter
/// until one is free, so parallel tests and test binaries do not collide.
async fn bind_validation_address() -> (Ipv4Addr, TcpListener, UdpSocket, TcpListener) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    let mut last = String::new();
    for _ in 0..50 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let seed = pid
            .wrapping_mul(2_654_435_761)
            .wrapping_add(n.wrapping_mul(40_503));
        let ip = Ipv4Addr::new(
            127,
            100 + (seed % 100) as u8,
            (seed >> 8) as u8,
            1 + (n % 250) as u8,
        );
        let http = match TcpListener::bind((ip, 80)).await {
            Ok(l) => l,
            Err(e) => {
                last = format!("{ip}:80: {e}");
                continue;
            }
        };
        let (Ok(udp), Ok(tcp)) = (
            UdpSocket::bind((ip, 53)).await,
            TcpListener::bind((ip, 53)).await,
        ) else {
            last = format!("{ip}:53 in use");
            continue;
        };
        return (ip, http, udp, tcp);
    }
    panic!(
        "no loopback address with ports 80 and 53 free ({last}); does a service listen \
         on *:80 or *:53 (e.g. the caddy package's own service: systemctl stop caddy)?"
    );
}

/// Copies every connection on `listener` to `to`, both ways.
async fn relay_tcp(listener: TcpListener, to: SocketAddr) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Forwards every datagram on `socket` to `to` from a fresh socket and
/// sends the answer back (one DNS query, one answer).
async fn relay_udp(socket: UdpSocket, to: SocketAddr) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let query = buf[..n].to_vec();
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                return;
            };
            if up.send_to(&query, to).await.is_err() {
                return;
            }
            let mut answer = vec![0u8; 65_535];
            if let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_secs(3), up.recv(&mut answer)).await
            {
                let _ = socket.send_to(&answer[..m], from).await;
            }
        });
    }
}

/// The machine's trust stores as they are: every entry of
/// `/usr/local/share/ca-certificates` and `/etc/ssl/certs` with its size,
/// modification time and (for links) target. Taken before and after a
/// test to show Caddy installed nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct TrustStores(BTreeMap<PathBuf, String>);

impl TrustStores {
    pub fn snapshot() -> TrustStores {
        let mut out = BTreeMap::new();
        for dir in ["/usr/local/share/ca-certificates", "/etc/ssl/certs"] {
            let mut stack = vec![PathBuf::from(dir)];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    out.insert(d.clone(), "<unreadable>".into());
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    let Ok(meta) = std::fs::symlink_metadata(&p) else {
                        continue;
                    };
                    if meta.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    let link = std::fs::read_link(&p)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|t| t.as_nanos())
                        .unwrap_or(0);
                    out.insert(p, format!("{} {mtime} {link}", meta.len()));
                }
            }
        }
        TrustStores(out)
    }

    /// What differs between two snapshots, for an assertion message.
    pub fn diff(&self, later: &TrustStores) -> Vec<String> {
        let mut out = Vec::new();
        for (p, v) in &later.0 {
            match self.0.get(p) {
                None => out.push(format!("added {}", p.display())),
                Some(old) if old != v => out.push(format!("changed {}", p.display())),
                _ => {}
            }
        }
        for p in self.0.keys().filter(|p| !later.0.contains_key(*p)) {
            out.push(format!("removed {}", p.display()));
        }
        out
    }
}
