//! `twincert bench deploy`: time-to-safety end to end. N synthetic names
//! get real certificates (a local CA signs a primary and a backup per
//! name, each with its own key, sealed like issued keys), a `files`
//! destination and one TLS endpoint each. A TLS server on loopback serves
//! every name from the files twincert wrote (it reads `live/NAME` on each
//! handshake, as a server does after a reload). Then, timed:
//!
//! * **initial**: write every name's active certificate and check every
//!   endpoint until all deployments are `confirmed`;
//! * **checks**: every endpoint checked once more (endpoints per second);
//! * **time to safety**: a CA-wide swap away from the primary CA, the
//!   backups written to the files destination, and every endpoint verified
//!   over TLS to serve its backup — all deployments `confirmed` again.
//!
//! The deployment and check passes are the worker's own code. The
//! figures end with where the time to safety went, stage by stage
//! (`wave_*`: due-queue reads, keys, file writes, syncs, switches,
//! bookkeeping, endpoint reads, TLS checks, and the wall time of the
//! write and check loops, which run side by side).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::Output;
use super::bench::{round, scratch};
use crate::ca::CaClient;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::KeyType;
use crate::keys::CertKey;
use crate::keys::seal::Sealer;
use crate::store::{EndpointSpec, Store, SwapScope};
use crate::worker::{Delivery, Supervisor};

/// Options of `bench deploy`.
#[derive(Debug, clap::Args)]
pub(super) struct DeployBench {
    /// How many names (each with a primary and a backup certificate).
    #[arg(long, default_value_t = 10_000)]
    names: u64,
    /// Writes and checks at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The store: default a new SQLite file in the temp directory.
    #[arg(long)]
    store_url: Option<String>,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn deploy(opts: DeployBench, output: Output) -> anyhow::Result<()> {
    super::bench::print(&deploy_figures(&opts).await?, output)
}

impl DeployBench {
    /// The benchmark at `names` on `store_url` (for `bench scale`).
    pub(super) fn sized(names: u64, store_url: Option<String>) -> DeployBench {
        DeployBench {
            names,
            concurrency: 64,
            store_url,
        }
    }
}

/// Runs the benchmark and returns its figures.
pub(super) async fn deploy_figures(opts: &DeployBench) -> anyhow::Result<serde_json::Value> {
    if opts.names == 0 {
        bail!("--names must be at least 1");
    }
    let given = opts.store_url.clone();
    scratch("deploy", given.as_deref(), |url, dir| async move {
        run(opts, &url, &dir).await
    })
    .await
}

/// The sealed key and PEM chain of one synthetic certificate.
struct Signed {
    cert_id: String,
    serial: String,
    chain_pem: String,
    key_der: Vec<u8>,
}

fn sign_all(prefix: &str, names: u64) -> anyhow::Result<(String, Vec<Signed>)> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "twincert deploy benchmark CA");
    let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
    let ca_pem = ca_cert.pem();
    let issuer_dn = x509_parser::parse_x509_certificate(ca_cert.der())
        .map(|(_, c)| c.subject().to_string())
        .map_err(|e| anyhow::anyhow!("CA certificate: {e}"))?;
    let issuer = Arc::new(Issuer::new(ca, ca_key));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let per = names.div_ceil(threads);
    let mut handles = Vec::new();
    for t in 0..threads {
        let (issuer, prefix, ca_pem) = (issuer.clone(), prefix.to_string(), ca_pem.clone());
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<Vec<Signed>> {
                let mut out = Vec::new();
                for i in t * per..((t + 1) * per).min(names) {
                    for slot in ["primary", "backup"] {
                        let key = KeyPair::generate().context("leaf key")?;
                        let mut p =
                            CertificateParams::new(vec![format!("{prefix}{i}.synthetic.test")])
                                .context("leaf params")?;
                        let mut serial = [0u8; 12];
                        aws_lc_rs::rand::fill(&mut serial).map_err(|_| anyhow::anyhow!("rng"))?;
                        serial[0] = (serial[0] & 0x7f) | 0x01;
                        p.serial_number = Some(SerialNumber::from_slice(&serial));
                        let cert = p.signed_by(&key, &issuer).context("sign leaf")?;
                        out.push(Signed {
                            cert_id: Store::synthetic_cert_id(&prefix, i, slot),
                            serial: crate::keys::hex(&serial),
                            chain_pem: format!("{}{ca_pem}", cert.pem()),
                            key_der: key.serialize_der(),
                        });
                    }
                }
                Ok(out)
            },
        ));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??,
        );
    }
    Ok((issuer_dn, all))
}

/// Serves every name from `DIR/live/NAME` (fullchain.pem + privkey.pem),
/// read again whenever the link points somewhere new.
#[derive(Debug)]
struct FromFiles {
    live: PathBuf,
    cache: Mutex<HashMap<PathBuf, Arc<CertifiedKey>>>,
}

impl FromFiles {
    fn load(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let dir = std::fs::canonicalize(self.live.join(name)).ok()?;
        if let Some(k) = self.cache.lock().ok()?.get(&dir) {
            return Some(k.clone());
        }
        let chain = std::fs::read(dir.join("fullchain.pem")).ok()?;
        let key = std::fs::read(dir.join("privkey.pem")).ok()?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<_, _>>()
            .ok()?;
        let key = PrivateKeyDer::from_pem_slice(&key).ok()?;
        let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).ok()?;
        let ck = Arc::new(CertifiedKey::new(certs, signer));
        self.cache.lock().ok()?.insert(dir, ck.clone());
        Some(ck)
    }
}

impl ResolvesServerCert for FromFiles {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.load(hello.server_name()?)
    }
}

async fn serve_files(live: PathBuf) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FromFiles {
            live,
            cache: Mutex::new(HashMap::new()),
        }));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the TLS server")?;
    let port = listener.local_addr().context("TLS port")?.port();
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
    Ok((port, task))
}

fn config(dir: &Path, concurrency: usize) -> anyhow::Result<Config> {
    let toml = format!(
        r#"
[policy]
ca_preference = ["bench-a", "bench-b"]
[revocation]
enabled = false
[deploy]
concurrency = {concurrency}
check_timeout_seconds = 30
[[destinations]]
id = "files"
kind = "files"
dir = "{}"
[[cas]]
id = "bench-a"
profile = "pebble"
directory_url = "https://127.0.0.1:9/dir"
root_group = "bench-a"
[[cas]]
id = "bench-b"
profile = "pebble"
directory_url = "https://127.0.0.1:9/dir"
root_group = "bench-b"
"#,
        dir.join("files").display()
    );
    Config::from_toml(&toml, &[], None).context("benchmark config")
}

/// The machine's 1, 5 and 15 minute load averages (Linux), as printed
/// beside the figures: the benchmark shares the cores with whatever else
/// runs.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the worker's deployment and check passes until every deployment
/// is confirmed with the name's active certificate.
async fn until_confirmed(worker: &Arc<Supervisor>, store: &Store, n: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        worker
            .clone()
            .deliver_once()
            .await
            .context("delivery pass")?;
        let (total, confirmed) = store.deployments_settled().await?;
        if total == n && confirmed == n {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("only {confirmed} of {n} deployments confirmed after 900 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(opts: &DeployBench, url: &str, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let store = Store::connect(url).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let now = crate::clock::Clock::now(&SystemClock);
    let prefix = format!("d{}-", &crate::store::new_id()[..8]);
    let n = opts.names;

    let t = Instant::now();
    let (issuer_dn, signed) = sign_all(&prefix, n)?;
    let sign_s = t.elapsed().as_secs_f64();
    let sealer = Sealer::from_text(&Sealer::generate_text("bench")?)?;
    let t = Instant::now();
    store
        .seed_synthetic(&prefix, n, "bench-a", "bench-b", now)
        .await
        .context("seeding names")?;
    // Whatever happens next, a shared database gets its rows back.
    let result: anyhow::Result<serde_json::Value> = async {
        let chains: Vec<(String, String, String, String)> = signed
            .iter()
            .map(|s| {
                (
                    s.cert_id.clone(),
                    s.serial.clone(),
                    issuer_dn.clone(),
                    s.chain_pem.clone(),
                )
            })
            .collect();
        store.attach_synthetic_chains(&chains).await?;
        let mut keys = Vec::with_capacity(signed.len());
        for s in &signed {
            let key = CertKey::from_pkcs8_der(KeyType::EcdsaP256, &s.key_der)?;
            keys.push((s.cert_id.clone(), key.seal(&sealer)?));
        }
        store.attach_synthetic_keys(&keys).await?;
        drop(signed);
        let (tls_port, tls) = serve_files(dir.join("files").join("live")).await?;
        let mut targets = Vec::with_capacity(n as usize);
        for i in 0..n {
            targets.push((
                format!("{prefix}{i}.synthetic.test"),
                EndpointSpec {
                    host: format!("{prefix}{i}.synthetic.test"),
                    port: tls_port,
                    sni: None,
                    ip: Some("127.0.0.1".into()),
                    admin_contact: None,
                },
            ));
        }
        store
            .bulk_deploy_targets(&targets, "files", now)
            .await
            .context("deployment targets")?;
        let setup_s = t.elapsed().as_secs_f64();

        let cfg = config(dir, opts.concurrency)?;
        let cas: BTreeMap<String, Arc<CaClient>> = cfg
            .cas
            .values()
            .map(|c| {
                (
                    c.id.clone(),
                    Arc::new(CaClient::new(c.clone(), Duration::from_secs(30))),
                )
            })
            .collect();
        let delivery = Delivery::new(cfg.deploy.clone(), cfg.alerts.clone())
            .map_err(|e| anyhow::anyhow!("delivery: {e}"))?;
        let worker = Arc::new(
            Supervisor::builder(
                store.clone(),
                cas,
                Arc::new(sealer),
                Arc::new(SystemClock),
                cfg.worker.clone(),
                cfg.renew_at_fraction,
                "bench".into(),
            )
            .with_delivery(delivery)
            .build(),
        );

        let t = Instant::now();
        until_confirmed(&worker, &store, n as i64).await?;
        let initial_s = t.elapsed().as_secs_f64();
        let _ = worker.deploy_stages();

        // Every endpoint once more: the check rate alone.
        store
            .request_all_checks(crate::clock::Clock::now(&SystemClock))
            .await?;
        let t = Instant::now();
        worker.clone().deliver_once().await?;
        let checks_s = t.elapsed().as_secs_f64();

        // The emergency: swap away from bench-a, write, verify.
        let _ = worker.deploy_stages();
        let t = Instant::now();
        let swap = store
            .emergency()
            .mass_swap(
                &SwapScope::Ca("bench-a".into()),
                "benchmark",
                "bench",
                false,
                crate::clock::Clock::now(&SystemClock),
            )
            .await?;
        let swap_s = t.elapsed().as_secs_f64();
        until_confirmed(&worker, &store, n as i64).await?;
        let safety_s = t.elapsed().as_secs_f64();
        let stages = worker.deploy_stages().unwrap_or_default();
        let (_, confirmed) = store.deployments_settled().await?;
        tls.abort();
        if swap.swapped != n as i64 {
            bail!("the swap flipped {} names, expected {n}", swap.swapped);
        }
        let mut figures = json!({
            "backend": store.backend_name(),
            "names": n,
            "concurrency": opts.concurrency,
            "sign_seconds": round(sign_s),
            "setup_seconds": round(setup_s),
            "initial_deploy_and_confirm_seconds": round(initial_s),
            "check_pass_seconds": round(checks_s),
            "checks_per_second": (n as f64 / checks_s.max(1e-9)).round(),
            "swap_seconds": round(swap_s),
            "swapped": swap.swapped,
            "confirmed_after_swap": confirmed,
            "time_to_safety_seconds": round(safety_s),
            "time_to_safety_target_seconds": 30,
            "load_average": load_average(),
        });
        // Where the time to safety went, stage by stage (the write and
        // check loops run side by side, so stages overlap).
        for (k, v) in stages.as_object().into_iter().flatten() {
            figures[format!("wave_{k}")] = v.clone();
        }
        Ok(figures)
    }
    .await;
    if !url.starts_with("sqlite:") {
        store.purge_synthetic(&prefix).await?;
    }
    result
}
