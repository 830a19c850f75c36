//! `twincert serve`: the composition root. Loads secrets, opens and migrates
//! the store, builds one ACME client per CA, and runs the worker, the
//! HTTP-01 responder and the API until SIGTERM / Ctrl-C, then drains.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::{self, ApiState};
use crate::ca::CaClient;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::seal::Sealer;
use crate::policy::CaChoice;
use crate::store::Store;
use crate::validation;
use crate::worker::Supervisor;

/// Secrets a server needs, loaded once.
pub struct Secrets {
    /// Seals keys and account credentials.
    pub sealer: Sealer,
    /// The admin bearer token.
    pub admin_token: String,
    /// Where the admin token can be read, when it came from a file.
    pub admin_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("admin_token_file", &self.admin_token_file)
            .finish_non_exhaustive()
    }
}

fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    Ok(text.trim().to_string())
}

fn random_token() -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| anyhow::anyhow!("system RNG failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Loads the master keys (see [`load_secrets`] for where from), for the
/// processes that seal or open secrets without serving
/// (`twincert keys reseal`).
pub fn load_sealer(cfg: &Config) -> anyhow::Result<Sealer> {
    let local_key = cfg.local_dir.join("master.key");
    let master_text = if let Ok(v) = std::env::var("TWINCERT_MASTER_KEY") {
        v
    } else if let Some(p) = &cfg.master_key_file {
        read_secret_file(p, "master key")?
    } else if cfg.local_mode {
        if !local_key.exists() {
            let text = Sealer::generate_text("local-1")
                .map_err(|e| anyhow::anyhow!("generating a master key: {e}"))?;
            write_secret_file(&local_key, &text)?;
            warn!(
                path = %local_key.display(),
                "local mode: generated a new master key (mode 0600); do not use local mode in production"
            );
        }
        read_secret_file(&local_key, "master key")?
    } else {
        bail!(
            "no master key: set TWINCERT_MASTER_KEY or secrets.master_key_file \
             (or secrets.local_mode = true for a local demo, which generates one)"
        );
    };
    Sealer::from_text(&master_text).map_err(|e| anyhow::anyhow!("master key: {e}"))
}

/// Refuses to serve when a stored secret is sealed under a master key id
/// that is not configured: every use of that secret would fail later, at
/// issuance or download time, far from the cause.
pub async fn check_sealed_key_ids(store: &Store, sealer: &Sealer) -> anyhow::Result<()> {
    let missing: Vec<(String, i64)> = store
        .keys()
        .sealed_by_key_id()
        .await?
        .into_iter()
        .filter(|(id, _)| !sealer.has_key_id(id))
        .collect();
    if let Some((id, n)) = missing.first() {
        bail!(
            "{n} sealed secret(s) in the store use master key id '{id}', which is not configured \
             (configured: {}); put '{id}:<base64 key>' back into TWINCERT_MASTER_KEY or \
             secrets.master_key_file after the current key, run `twincert keys reseal`, and \
             remove '{id}' only when twincert_sealed_secrets{{key_id=\"{id}\"}} is 0{}",
            sealer.key_ids().collect::<Vec<_>>().join(", "),
            if missing.len() > 1 {
                format!(
                    " (also missing: {})",
                    missing[1..]
                        .iter()
                        .map(|(id, n)| format!("'{id}' for {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Loads the master key and the admin token: from the environment
/// (`TWINCERT_MASTER_KEY`, `TWINCERT_ADMIN_TOKEN`), else from the configured
/// files, else — only in local/demo mode — generated into `local_dir` with
/// mode 0600. Without any of these, twincert refuses to start.
pub fn load_secrets(cfg: &Config) -> anyhow::Result<Secrets> {
    let sealer = load_sealer(cfg)?;
    let local_token = cfg.local_dir.join("admin.token");

    let (admin_token, admin_token_file) = if let Ok(v) = std::env::var("TWINCERT_ADMIN_TOKEN") {
        (v.trim().to_string(), None)
    } else if let Some(p) = &cfg.admin_token_file {
        (read_secret_file(p, "admin token")?, Some(p.clone()))
    } else if cfg.local_mode {
        if !local_token.exists() {
            write_secret_file(&local_token, &random_token()?)?;
            warn!(path = %local_token.display(), "local mode: generated an admin token (mode 0600)");
        }
        (
            read_secret_file(&local_token, "admin token")?,
            Some(local_token.clone()),
        )
    } else {
        bail!(
            "no admin token: set TWINCERT_ADMIN_TOKEN or secrets.admin_token_file \
             (or secrets.local_mode = true)"
        );
    };
    if admin_token.len() < 16 {
        bail!("the admin token is shorter than 16 characters; use a long random token");
    }
    Ok(Secrets {
        sealer,
        admin_token,
        admin_token_file,
    })
}

/// The configured CAs in preference order (`policy.ca_preference`, then the
/// rest by id).
pub fn ca_choices(cfg: &Config) -> Vec<CaChoice> {
    let mut ids: Vec<&String> = cfg
        .ca_preference
        .iter()
        .filter(|id| cfg.cas.contains_key(*id))
        .collect();
    for id in cfg.cas.keys() {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.into_iter()
        .filter_map(|id| cfg.cas.get(id))
        .map(|c| CaChoice {
            id: c.id.clone(),
            root_group: c.root_group.clone(),
            key_types: c.profile.key_types.clone(),
            distrusted: false,
        })
        .collect()
}

/// How long start waits for the CAs' directories (ACME profiles).
const PROFILE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads every CA's directory for the ACME profiles it offers
/// (`meta.profiles`) and checks each configured `acme_profile` against
/// them: a profile the CA does not offer, or a CA that offers none, stops
/// the start with the offered list. A directory that cannot be read
/// within [`PROFILE_CHECK_TIMEOUT`] (a CA down at start) is not fatal: its
/// offer stays unknown, orders send the profile and the CA judges it
/// (its refusal is the slot's error). Returns what each readable
/// directory offered, for checking names' overrides.
pub async fn check_acme_profiles(
    cas: &BTreeMap<String, Arc<CaClient>>,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let reads: Vec<_> = cas
        .values()
        .map(|ca| {
            let ca = ca.clone();
            tokio::spawn(async move {
                let got = tokio::time::timeout(PROFILE_CHECK_TIMEOUT, ca.offered_profiles())
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {PROFILE_CHECK_TIMEOUT:?}")));
                (ca, got)
            })
        })
        .collect();
    let mut offered = BTreeMap::new();
    for read in reads {
        let (ca, got) = read.await.context("reading a CA's directory")?;
        match got {
            Ok(list) => {
                if let Some(p) = ca.acme_profile() {
                    crate::policy::profiles::check_offered(p, Some(&list)).map_err(|why| {
                        anyhow::anyhow!(
                            "configuration: cas '{}' acme_profile: {why} (directory {})",
                            ca.id(),
                            ca.directory_url()
                        )
                    })?;
                }
                if !list.is_empty() {
                    info!(ca = ca.id(), profiles = %list.join(", "), acme_profile = ?ca.acme_profile(), "ACME profiles offered");
                }
                offered.insert(ca.id().to_string(), list);
            }
            Err(e) if ca.acme_profile().is_some() => warn!(
                ca = ca.id(),
                error = %e,
                "could not read the CA's directory to check acme_profile; orders will ask for it \
                 and the CA will judge"
            ),
            Err(e) => debug!(ca = ca.id(), error = %e, "directory not read at start"),
        }
    }
    Ok(offered)
}

/// Opens the store and applies migrations.
pub async fn open_store(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url).await?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

/// A unique id for this process in leases: `<replica_id>#<random>` when
/// the replica has a stable name, else host, pid and a random suffix.
fn worker_id(replica_id: Option<&str>) -> String {
    if let Some(id) = replica_id {
        return format!("{id}#{}", &crate::store::new_id()[..8]);
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &crate::store::new_id()[..8]
    )
}

/// What one `twincert serve` process does, so the API can scale apart
/// from the workers and only workers hold CA and DNS credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The REST API and the HTTP-01 responder (answers from the store); no
    /// worker.
    Api,
    /// The worker (orders, DNS-01, renewals, revocation checks) and the
    /// HTTP-01 responder; the API port serves only `/healthz` and `/readyz`.
    Worker,
    /// Both (the default; the single-process setup).
    All,
}

/// Holds an exclusive lock on `<database>.lock` for a SQLite store while
/// the process runs: SQLite serves one process (its single connection
/// serializes writers inside it); a second `serve` on the same file would
/// lease the same orders. `None` for PostgreSQL and in-memory SQLite.
pub fn lock_sqlite(store_url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(rest) = store_url
        .strip_prefix("sqlite://")
        .or_else(|| store_url.strip_prefix("sqlite:"))
    else {
        return Ok(None);
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(None);
    }
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening the SQLite lock file {lock_path}"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another twincert process is serving the SQLite database {path} (it holds \
             {lock_path}); SQLite serves one process — use PostgreSQL (store.url = \
             \"postgres://...\") to run several replicas"
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {lock_path}"))
        }
    }
}

/// Runs the server until a shutdown signal.
pub async fn serve(cfg: Config, role: Role) -> anyhow::Result<()> {
    let secrets = load_secrets(&cfg)?;
    let sqlite_lock = lock_sqlite(&cfg.store_url)?;
    let store = open_store(&cfg.store_url).await?;
    check_sealed_key_ids(&store, &secrets.sealer).await?;
    info!(backend = store.backend_name(), "store ready");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let owner = worker_id(cfg.worker.replica_id.as_deref());
    if let Some(replica) = &cfg.worker.replica_id {
        let n = store
            .leases()
            .take_back_leases(replica, &owner, clock.now())
            .await?;
        if n > 0 {
            info!(orders = n, replica = %replica, "orders leased by this replica's previous run resume now");
        }
    }
    if sqlite_lock.is_some() {
        // The lock file proves no other process uses this database: leases
        // left by a killed process are nobody's, so their orders resume now
        // rather than when the leases would have run out.
        let n = store.leases().release_all_leases(clock.now()).await?;
        if n > 0 {
            info!(
                orders = n,
                "orders left in flight by a stopped process resume now"
            );
        }
    }
    let timeout = Duration::from_secs(cfg.worker.acme_timeout_seconds);
    let cas: BTreeMap<String, Arc<CaClient>> = cfg
        .cas
        .values()
        .map(|c| (c.id.clone(), Arc::new(CaClient::new(c.clone(), timeout))))
        .collect();
    let acme_profiles_offered = Arc::new(check_acme_profiles(&cas).await?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let sealer = Arc::new(secrets.sealer);
    let mut dns_providers: Vec<Arc<dyn crate::providers::dns::DnsProvider>> = Vec::new();
    // acme-dns accounts live in the store, sealed (issue 16).
    let acme_dns_accounts: Arc<dyn crate::providers::dns::AcmeDnsAccounts> =
        Arc::new(crate::providers::dns::SealedAccounts::new(
            store.acme_dns().clone(),
            sealer.clone(),
            clock.clone(),
        ));
    // An API process runs no worker and was given no DNS credentials.
    for p in cfg.dns_providers.values().filter(|_| role != Role::Api) {
        dns_providers.push(
            crate::providers::dns::build_with_accounts(p, acme_dns_accounts.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let dns01_available = !cfg.dns_providers.is_empty();
    // Preflight's CAA and delegation checks need only lookups and the
    // configured zones, so an API-only process checks on demand too; its
    // provider check needs the providers, which only a worker-role process
    // builds (an API-only one repeats the worker's last provider check).
    let preflight = Arc::new(
        crate::validation::preflight::Preflight::new(
            &store,
            crate::validation::dns::DnsLookup::new(cfg.dns.clone()),
            cfg.cas
                .values()
                .map(|c| crate::validation::preflight::PreflightCa {
                    id: c.id.clone(),
                    identities: c.caa_identities.clone(),
                })
                .collect(),
            cfg.dns_providers
                .iter()
                .map(|(id, p)| crate::validation::preflight::ProviderZones {
                    id: id.clone(),
                    zones: p.zones.clone(),
                })
                .collect(),
            clock.clone(),
        )
        .with_providers(dns_providers.clone()),
    );
    let worker = Supervisor::builder(
        store.clone(),
        cas,
        sealer.clone(),
        clock.clone(),
        cfg.worker.clone(),
        cfg.renew_at_fraction,
        owner,
    );
    let delivery = crate::worker::Delivery::new(cfg.deploy.clone(), cfg.alerts.clone())
        .map(|d| d.with_public_url(cfg.public_url.clone()))
        .map_err(|e| anyhow::anyhow!("deployment/alert channels: {e}"))?;
    // Always there: manual DNS-01 needs the lookups even without providers.
    let worker = Arc::new(
        worker
            .with_delivery(delivery)
            .with_policy(ca_choices(&cfg), cfg.reprovision_same_ca_after_seconds)
            .with_readiness(cfg.readiness.clone(), cfg.deploy.concurrency)
            .with_preflight(cfg.preflight.clone(), preflight.clone())
            .with_revocation(cfg.revocation.clone())
            .with_dns01(Arc::new(crate::validation::dns::Dns01Solver::new(
                dns_providers,
                crate::validation::dns::DnsLookup::new(cfg.dns.clone()),
            )))
            .build(),
    );
    let worker_task = if cfg.worker.enabled && role != Role::Api {
        Some(tokio::spawn(worker.clone().run(stop_rx.clone())))
    } else {
        None
    };

    let http01 = TcpListener::bind(cfg.http01_listen)
        .await
        .with_context(|| format!("binding the HTTP-01 listener on {}", cfg.http01_listen))?;
    let api_listener = TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("binding the API listener on {}", cfg.api_listen))?;
    let answers = worker.http01_answers();
    let wake = worker.clone();
    let state = ApiState {
        destinations: Arc::new(
            cfg.deploy
                .destinations
                .iter()
                .map(|(id, d)| (id.clone(), d.kind().to_string()))
                .collect(),
        ),
        store: store.clone(),
        clock,
        cas: Arc::new(ca_choices(&cfg)),
        same_ca_hold_off: cfg.reprovision_same_ca_after_seconds,
        ca_views: Arc::new(
            cfg.cas
                .values()
                .map(|c| api::CaView {
                    id: c.id.clone(),
                    name: c.profile.name.clone(),
                    profile: c.profile.id.clone(),
                    directory_url: c.directory_url.clone(),
                    root_group: c.root_group.clone(),
                    staging: c.profile.staging,
                    distrusted: false,
                    active_names: 0,
                    slots: 0,
                    orders_per_hour: c.orders_per_hour,
                    concurrency: c.concurrency,
                    dns_persist_01: c.dns_persist_01,
                    dns_persist_until: c.dns_persist_until,
                    caa_identities: c.caa_identities.clone(),
                })
                .collect(),
        ),
        admin_token_sha256: api::token_digest(&secrets.admin_token),
        default_key_type: cfg.default_key_type,
        max_body_bytes: cfg.max_body_bytes,
        request_timeout_seconds: cfg.request_timeout_seconds,
        allow_cidrs: cfg.allow_cidrs.clone(),
        dns01_available,
        sealer: Some(sealer.clone()),
        dns: api::DelegationPolicy {
            zones: cfg
                .dns_providers
                .values()
                .flat_map(|p| p.zones.iter().cloned())
                .collect(),
            provider_ids: cfg.dns_providers.keys().cloned().collect(),
            delegation_zone: cfg.dns.delegation_zone.clone(),
        },
        wake_worker: Some(Arc::new(move || wake.wake())),
        acme_requests: Arc::new(crate::ca::acme_request_metrics),
        allow_drill_simulation: cfg.drills.allow_simulation,
        preflight: Some(preflight),
        acme_profiles_offered,
    };
    info!(
        api = %format!(
            "{}://{}",
            if cfg.api_tls.is_some() { "https" } else { "http" },
            api_listener.local_addr()?
        ),
        http01 = %http01.local_addr()?,
        admin_token_file = ?secrets.admin_token_file,
        role = ?role,
        "twincert serving"
    );

    let mut rx1 = stop_rx.clone();
    let http01_task = tokio::spawn(async move {
        axum::serve(http01, validation::http01_router(answers))
            .with_graceful_shutdown(async move {
                let _ = rx1.wait_for(|s| *s).await;
            })
            .await
    });
    let tls = match &cfg.api_tls {
        Some((cert, key)) => Some(api::tls::acceptor(cert, key).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    let mut rx2 = stop_rx.clone();
    let router = if role == Role::Worker {
        api::probes_app(state)
    } else if cfg.console.enabled {
        let oidc = cfg
            .console
            .oidc
            .clone()
            .map(|o| api::console::OidcClient::new(o, cfg.public_url.as_deref()))
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?;
        api::app_with_console(
            state,
            api::console::ConsoleSettings {
                idle_seconds: cfg.console.session_idle_seconds,
                absolute_seconds: cfg.console.session_absolute_seconds,
                tls: cfg.api_tls.is_some(),
                oidc,
            },
        )
    } else {
        api::app(state)
    };
    let api_task = tokio::spawn(async move {
        match tls {
            Some(acceptor) => {
                api::tls::serve(api_listener, acceptor, router, rx2).await;
                Ok(())
            }
            None => {
                // `tap_io` only to get axum's connection info (the peer
                // address for the allowlist) for a listener of our own.
                let listener = api::wire::ProblemListener(api_listener).tap_io(|_| {});
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = rx2.wait_for(|s| *s).await;
                })
                .await
            }
        }
    });

    shutdown_signal().await;
    info!("shutting down: draining requests");
    let _ = stop_tx.send(true);
    let _ = api_task.await;
    let _ = http01_task.await;
    if let Some(t) = worker_task {
        // In-flight orders are resumable from the store; do not wait long.
        // The worker waits up to 10 s for orders in flight, then hands the
        // rest back to the store for other replicas.
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
