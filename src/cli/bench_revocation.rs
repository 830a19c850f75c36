//! `twincert bench revocation`: how long the revocation check pass takes
//! over N names (2N real certificates), and how long from a CA's CRL
//! listing a share of them to the CA-wide swap. It makes a local CA
//! (rcgen), signs 2N leaves, seeds synthetic names carrying them, serves
//! a CRL signed by that CA on loopback, and runs the worker's check pass —
//! the same code a server runs — three times: *first* (a fresh process:
//! the CRL fetched and verified, the issuer read once; the certificates'
//! CRL/OCSP/ARI sources were stored at seeding as issuance stores them,
//! or with `--sources-unread` are read from every certificate now, as
//! for rows written before issue 21; the CRL is still empty), then,
//! once the CA publishes a CRL revoking `--revoked-percent` of the active
//! certificates, *detect and swap* (the CRL fetched and verified, the
//! revocations recorded with their evidence, the CA incident opened and
//! its CA-wide swap run), then *steady* (nothing new).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SerialNumber,
};
use serde_json::json;

use super::Output;
use super::bench::{remove_sqlite, round, temp_store_url};
use crate::ca::CaClient;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::hex;
use crate::keys::seal::Sealer;
use crate::store::Store;
use crate::worker::Supervisor;

/// Options of `bench revocation`.
#[derive(Debug, clap::Args)]
pub(super) struct RevocationBench {
    /// How many synthetic names (each with a primary and a backup
    /// certificate, all signed by the benchmark's CA).
    #[arg(long, default_value_t = 10_000)]
    names: u64,
    /// Share of the active certificates the CRL revokes (percent).
    #[arg(long, default_value_t = 1.0)]
    revoked_percent: f64,
    /// The store: default a new SQLite file in the temp directory;
    /// `postgres://…` for an empty PostgreSQL database (the pass checks
    /// every certificate in the store).
    #[arg(long)]
    store_url: Option<String>,
    /// Leave the certificates' status sources unread, as in a store
    /// written before they were read at issuance (issue 21): the first
    /// pass then parses every certificate and stores its sources.
    #[arg(long)]
    sources_unread: bool,
}

struct Leaves {
    chains: Vec<(String, String, String, String)>,
    /// What issuance stores for each (id, CRL URLs, OCSP URL, ARI id).
    sources: Vec<(String, String, String, String)>,
    revoked: Vec<Vec<u8>>,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn revocation(opts: RevocationBench, output: Output) -> anyhow::Result<()> {
    super::bench::print(&revocation_figures(&opts).await?, output)
}

impl RevocationBench {
    /// The benchmark at `names` on `store_url` (for `bench scale`).
    pub(super) fn sized(names: u64, store_url: Option<String>) -> RevocationBench {
        RevocationBench {
            names,
            revoked_percent: 1.0,
            store_url,
            sources_unread: false,
        }
    }
}

/// Runs the benchmark and returns its figures.
pub(super) async fn revocation_figures(
    opts: &RevocationBench,
) -> anyhow::Result<serde_json::Value> {
    if opts.names == 0 {
        bail!("--names must be at least 1");
    }
    if !(0.0..=100.0).contains(&opts.revoked_percent) {
        bail!("--revoked-percent must be between 0 and 100");
    }
    let (url, file) = temp_store_url("revocation", opts.store_url.as_deref());
    let result = run(opts, &url).await;
    if let Some(path) = file {
        remove_sqlite(&path);
    }
    result
}

/// Signs 2N leaves with `issuer` (on all cores); the first `revoke` active
/// ones are listed in the CRL.
fn sign_leaves(
    prefix: &str,
    names: u64,
    revoke: u64,
    ca_pem: &str,
    issuer_dn: &str,
    issuer: &Arc<Issuer<'static, KeyPair>>,
) -> anyhow::Result<Leaves> {
    let leaf_key = Arc::new(KeyPair::generate().context("leaf key")?);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = names.div_ceil(threads as u64);
    let mut handles = Vec::new();
    for t in 0..threads as u64 {
        let (issuer, leaf_key) = (issuer.clone(), leaf_key.clone());
        let (prefix, ca_pem, issuer_dn) = (
            prefix.to_string(),
            ca_pem.to_string(),
            issuer_dn.to_string(),
        );
        handles.push(std::thread::spawn(move || -> anyhow::Result<Leaves> {
            let mut out = Leaves {
                chains: Vec::new(),
                sources: Vec::new(),
                revoked: Vec::new(),
            };
            for i in t * per..((t + 1) * per).min(names) {
                for slot in ["primary", "backup"] {
                    let mut p = CertificateParams::new(vec![format!("{prefix}{i}.synthetic.test")])
                        .context("leaf params")?;
                    p.use_authority_key_identifier_extension = true;
                    let mut serial = [0u8; 12];
                    aws_lc_rs::rand::fill(&mut serial).map_err(|_| anyhow::anyhow!("rng"))?;
                    serial[0] &= 0x7f;
                    serial[0] |= 0x01;
                    p.serial_number = Some(SerialNumber::from_slice(&serial));
                    let cert = p
                        .signed_by(leaf_key.as_ref(), &issuer)
                        .context("sign leaf")?;
                    if slot == "primary" && i < revoke {
                        out.revoked.push(serial.to_vec());
                    }
                    let id = Store::synthetic_cert_id(&prefix, i, slot);
                    let found = crate::certs::status_sources(cert.der()).context("sources")?;
                    out.sources.push((
                        id.clone(),
                        found.crl_urls.join(" "),
                        found.ocsp_url.unwrap_or_default(),
                        found.ari_cert_id.unwrap_or_default(),
                    ));
                    out.chains.push((
                        id,
                        hex(&serial),
                        issuer_dn.clone(),
                        format!("{}{ca_pem}", cert.pem()),
                    ));
                }
            }
            Ok(out)
        }));
    }
    let mut all = Leaves {
        chains: Vec::new(),
        sources: Vec::new(),
        revoked: Vec::new(),
    };
    for h in handles {
        let part = h
            .join()
            .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??;
        all.chains.extend(part.chains);
        all.sources.extend(part.sources);
        all.revoked.extend(part.revoked);
    }
    Ok(all)
}

/// Serves the CRL in `crl` at a loopback URL (the benchmark replaces it
/// between passes, as a CA publishes a new one).
async fn serve_crl(crl: Arc<std::sync::Mutex<Vec<u8>>>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the CRL server")?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().route(
        "/bench.crl",
        axum::routing::get(move || {
            let der = crl.lock().map(|d| d.clone()).unwrap_or_default();
            async move { der }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://127.0.0.1:{port}/bench.crl"))
}

/// A CRL number `number` signed by `issuer` revoking `serials` (reason
/// keyCompromise).
fn make_crl(
    issuer: &Issuer<'static, KeyPair>,
    number: u64,
    serials: &[Vec<u8>],
    now: i64,
) -> anyhow::Result<Vec<u8>> {
    let time = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let crl = CertificateRevocationListParams {
        this_update: time(now - 60),
        next_update: time(now + 86_400),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: time(now - 30),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .context("signing the CRL")?;
    Ok(crl.der().to_vec())
}

async fn run(opts: &RevocationBench, url: &str) -> anyhow::Result<serde_json::Value> {
    let store = Store::connect(url).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let now = SystemClock.now();
    let prefix = format!("r{}-", &crate::store::new_id()[..8]);
    let (ca_a, ca_b) = (format!("{prefix}a"), format!("{prefix}b"));

    // The CA.
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "twincert benchmark CA");
    let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
    let ca_pem = ca_cert.pem();
    let issuer_dn = x509_parser::parse_x509_certificate(ca_cert.der())
        .map(|(_, c)| c.subject().to_string())
        .map_err(|e| anyhow::anyhow!("CA certificate: {e}"))?;
    let issuer = Arc::new(Issuer::new(ca, ca_key));

    let revoke = ((opts.names as f64) * opts.revoked_percent / 100.0).round() as u64;
    let t = Instant::now();
    let leaves = {
        let (prefix, ca_pem, issuer_dn, issuer) = (
            prefix.clone(),
            ca_pem.clone(),
            issuer_dn.clone(),
            issuer.clone(),
        );
        let names = opts.names;
        tokio::task::spawn_blocking(move || {
            sign_leaves(&prefix, names, revoke, &ca_pem, &issuer_dn, &issuer)
        })
        .await
        .context("signing")??
    };
    let sign_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    store
        .seed_synthetic(&prefix, opts.names, &ca_a, &ca_b, now)
        .await
        .context("seeding synthetic names")?;
    store
        .attach_synthetic_chains(&leaves.chains)
        .await
        .context("storing the chains")?;
    if !opts.sources_unread {
        // As the issuer stores them with each new certificate.
        store
            .status()
            .set_status_sources(&leaves.sources)
            .await
            .context("storing the status sources")?;
    }
    let seed_s = t.elapsed().as_secs_f64();

    // Whatever happens from here, the synthetic names are removed.
    let measured: anyhow::Result<serde_json::Value> = async {
        // First an empty CRL; the revoking one is published after the first
        // pass.
        let served = Arc::new(std::sync::Mutex::new(make_crl(&issuer, 1, &[], now)?));
        let crl_url = serve_crl(served.clone()).await?;

        let toml = format!(
            r#"
    [store]
    url = "{url}"
    [revocation]
    ari = false
    ocsp = false
    refresh_seconds = 1
    [[cas]]
    id = "{ca_a}"
    profile = "pebble"
    directory_url = "https://127.0.0.1:9/dir"
    root_group = "{ca_a}"
    crl_urls = ["{crl_url}"]
    [[cas]]
    id = "{ca_b}"
    profile = "pebble"
    directory_url = "https://127.0.0.1:9/dir"
    root_group = "{ca_b}"
    crl_urls = ["{crl_url}"]
    "#
        );
        let cfg = Config::from_toml(&toml, &[], None).context("benchmark config")?;
        let timeout = Duration::from_secs(30);
        let cas: BTreeMap<String, Arc<CaClient>> = cfg
            .cas
            .values()
            .map(|c| (c.id.clone(), Arc::new(CaClient::new(c.clone(), timeout))))
            .collect();
        let sealer = Sealer::from_text(&Sealer::generate_text("bench")?)?;
        let worker = Supervisor::builder(
            store.clone(),
            cas,
            Arc::new(sealer),
            Arc::new(SystemClock),
            cfg.worker.clone(),
            cfg.renew_at_fraction,
            "bench".into(),
        )
        .with_revocation(cfg.revocation.clone())
        .build();

        let t = Instant::now();
        worker.check_pass(now).await.context("first check pass")?;
        let first_s = t.elapsed().as_secs_f64();
        // The CA publishes a CRL revoking a share of the active certificates.
        let revoking = make_crl(&issuer, 2, &leaves.revoked, now)?;
        if let Ok(mut d) = served.lock() {
            *d = revoking;
        }
        let t = Instant::now();
        worker
            .check_pass(now + 10)
            .await
            .context("detecting check pass")?;
        let detect_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        worker
            .check_pass(now + 20)
            .await
            .context("steady check pass")?;
        let steady_s = t.elapsed().as_secs_f64();

        // No incident (too few revoked for the thresholds) is a result too.
        let incident = store.incidents().open_incident(&ca_a).await?;
        let swapped = match incident.as_ref().and_then(|i| i.operation_id.as_ref()) {
            Some(op) => store
                .operations()
                .operation(op)
                .await?
                .map_or(0, |(o, _)| o.affected),
            None => 0,
        };
        let certs = 2 * opts.names;
        Ok(json!({
            "backend": store.backend_name(),
            "names": opts.names,
            "certificates": certs,
            "revoked_in_crl": leaves.revoked.len(),
            "sign_seconds": round(sign_s),
            "seed_seconds": round(seed_s),
            "sources_read_at_issuance": !opts.sources_unread,
            "first_pass_seconds": round(first_s),
            "detect_and_swap_pass_seconds": round(detect_s),
            "steady_pass_seconds": round(steady_s),
            "steady_certificates_per_second": (certs as f64 / steady_s.max(1e-9)).round(),
            "incident_revoked": incident.as_ref().map(|i| i.revoked),
            "incident_total": incident.as_ref().map(|i| i.total),
            "incident_swapped": swapped,
        }))
    }
    .await;
    let purged = store.purge_synthetic(&prefix).await;
    let figures = measured?;
    purged.context("removing the synthetic names")?;
    Ok(figures)
}
