//! The command line: `serve` and `migrate` run the service; `names ...` is a
//! client of the REST API, so a runbook step is the same typed or scripted.
//! Raw arguments (clap) are turned into requests here; the binary's `main`
//! only calls [`run`].

mod backup;
mod bench;
mod bench_console;
mod bench_deploy;
mod bench_idle;
mod bench_readiness;
mod bench_revocation;
mod bench_scale;
mod emergency;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

/// twincert: a primary and a backup certificate from two CAs for every name.
#[derive(Debug, Parser)]
#[command(name = "twincert", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the HTTP-01 responder and the worker.
    Serve {
        /// The TOML configuration file.
        #[arg(long, env = "TWINCERT_CONFIG")]
        config: PathBuf,
        /// `api` (REST API + HTTP-01, no worker), `worker` (worker +
        /// HTTP-01; the API port serves only the probes) or `all`.
        #[arg(long, env = "TWINCERT_ROLE", value_enum, default_value_t = crate::server::Role::All)]
        role: crate::server::Role,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// The TOML configuration file (its store.url is used).
        #[arg(long, env = "TWINCERT_CONFIG")]
        config: PathBuf,
    },
    /// Write an encrypted, consistent snapshot of the store (while
    /// twincert serves) to FILE, readable only with the age identity of
    /// RECIPIENT; restorable into SQLite or PostgreSQL.
    Backup {
        /// The TOML configuration file (its store.url is backed up).
        #[arg(long, env = "TWINCERT_CONFIG")]
        config: PathBuf,
        /// Where to write the backup (must not exist).
        #[arg(long)]
        to: PathBuf,
        /// The age X25519 public key (age1…) to encrypt to.
        #[arg(long)]
        recipient: String,
    },
    /// Restore a backup into an empty store, in one transaction, after
    /// checking its schema version and checksum. Stop twincert first.
    Restore {
        /// The TOML configuration file (its store.url is restored into).
        #[arg(long, env = "TWINCERT_CONFIG")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The age identity file (AGE-SECRET-KEY-1…) that decrypts it.
        #[arg(long)]
        identity: PathBuf,
        /// Replace whatever the store holds (default: refuse a non-empty
        /// store).
        #[arg(long)]
        force: bool,
    },
    /// Master keys and backup identities.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage names through the API.
    Names {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: NamesAction,
    },
    /// Make standbys active: one name, a list (`--names-file`), every name
    /// active on a CA (`--ca`) or on a key (`--spki`); one transaction;
    /// audited. The abandoned slots are re-provisioned under new keys (for
    /// `--ca`, from another CA). A real run over many names asks for
    /// confirmation after showing its dry run, unless `--yes`.
    Swap {
        #[command(flatten)]
        api: ApiArgs,
        /// One name's id (swapped at once, no confirmation; `--wait` follows
        /// the re-provisioning of the slot it left).
        name: Option<String>,
        /// Every name whose active certificate is from this CA.
        #[arg(long, conflicts_with_all = ["name", "spki", "names_file"])]
        ca: Option<String>,
        /// Every name whose active key has this SPKI SHA-256.
        #[arg(long, conflicts_with_all = ["name", "ca", "names_file"])]
        spki: Option<String>,
        /// The names listed in this file (one per line, `#` comments).
        #[arg(long, conflicts_with_all = ["name", "ca", "spki"])]
        names_file: Option<PathBuf>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        run: emergency::RunArgs,
    },
    /// Replace every key (Heartbleed-class): each name's standby first, then
    /// its active slot, so every name keeps a valid certificate throughout;
    /// paced by the CAs' limits.
    Rekey {
        #[command(flatten)]
        api: ApiArgs,
        /// Every name.
        #[arg(long)]
        all: bool,
        /// Names whose active certificate is from this CA.
        #[arg(long)]
        ca: Option<String>,
        /// Names whose active key has this SPKI SHA-256.
        #[arg(long)]
        spki: Option<String>,
        /// The names listed in this file.
        #[arg(long)]
        names_file: Option<PathBuf>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        run: emergency::RunArgs,
    },
    /// Report compromised keys in bulk, by SPKI or by a list of names: each
    /// is swapped away from where active, revoked (keyCompromise) and
    /// re-issued under a new key.
    Compromise {
        #[command(flatten)]
        api: ApiArgs,
        /// A compromised key's SPKI SHA-256; repeat for several.
        #[arg(long = "spki")]
        spkis: Vec<String>,
        /// Names whose key in --slot is compromised (one per line).
        #[arg(long)]
        names_file: Option<PathBuf>,
        /// primary or backup: the slot holding the compromised key (needed
        /// with --names-file).
        #[arg(long, requires = "names_file")]
        slot: Option<String>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        run: emergency::RunArgs,
    },
    /// Benchmarks that need no CA.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
        /// Output: key: value lines (default) or JSON.
        #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Emergency operations and their progress.
    Operations {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: emergency::OperationsAction,
    },
    /// CA incidents raised by the revocation checks: list, show, close.
    Incidents {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: emergency::IncidentsAction,
    },
    /// Emergency readiness: per CA, how many names active on it would be
    /// safe at once if it were lost now, why the others would not, and how
    /// long safety and full redundancy would take.
    Readiness {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Drills that prove readiness: run one (dry by default; live on a
    /// sample), list them, show one's report and timeline.
    Drill {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: emergency::DrillAction,
    },
    /// Alerts (revoked certificates, rejected CRL/OCSP data, CA incidents,
    /// expiry, names without a usable standby); open ones by default.
    Alerts {
        #[command(flatten)]
        api: ApiArgs,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// CAs: list, distrust, trust.
    Cas {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: CasAction,
    },
    /// Manage API tokens (admin).
    Tokens {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Show the audit log, newest first.
    Events {
        #[command(flatten)]
        api: ApiArgs,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns for lists, key: value for one object.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// An API call that got an error answer; its status picks the exit code.
#[derive(Debug, thiserror::Error)]
#[error("the API answered {status}")]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
}

/// Exit codes (documented in the README): 0 success, 1 local error
/// (config, arguments, files), 2 a drill ran and failed, 3 the API refused the request (4xx other
/// than 401/403), 4 not authenticated or not allowed (401/403), 5 the
/// server failed or could not be reached.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<emergency::DrillFailed>().is_some() {
        return 2;
    }
    if let Some(f) = err.downcast_ref::<ApiFailure>() {
        return match f.status {
            401 | 403 => 4,
            400..=499 => 3,
            _ => 5,
        };
    }
    if err
        .chain()
        .any(|e| e.downcast_ref::<reqwest::Error>().is_some())
    {
        return 5;
    }
    1
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Re-seal every stored secret (certificate keys, ACME accounts) under
    /// the current (first) master key, in batches; resumable and safe to
    /// run twice. Afterwards twincert_sealed_secrets shows 0 for the old key.
    Reseal {
        /// The TOML configuration file (store.url and the master keys).
        #[arg(long, env = "TWINCERT_CONFIG")]
        config: PathBuf,
        /// Secrets per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u64,
    },
    /// Create an age X25519 identity for backups in FILE (mode 0600) and
    /// print its public key (the --recipient of `twincert backup`).
    BackupIdentity {
        /// The identity file to create.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Time a CA-wide swap of N synthetic names (and its dry run).
    Swap(bench::SwapBench),
    /// Time the revocation check pass over N names (2N real certificates)
    /// and the CA incident a CRL revoking a share of them opens.
    Revocation(bench_revocation::RevocationBench),
    /// Memory and CPU of one serving process managing N synthetic names
    /// with nothing to do.
    Idle(bench_idle::IdleBench),
    /// Time to safety: a CA-wide swap of N names written to a files
    /// destination and verified over TLS on loopback.
    Deploy(bench_deploy::DeployBench),
    /// One emergency readiness computation over N synthetic names.
    Readiness(bench_readiness::ReadinessBench),
    /// Server render time of the console's overview and names pages over
    /// N synthetic names.
    Console(bench_console::ConsoleBench),
    /// Issue 21's table at one size on one store: idle footprint, scrape,
    /// list page, GET one name, CA-wide swap, a deployment wave and the
    /// revocation passes.
    Scale(bench_scale::ScaleBench),
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a token; its secret is printed once.
    Add {
        /// Unique token name (the actor in audit events).
        name: String,
        /// viewer, deployer, operator or admin.
        #[arg(long)]
        role: String,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List tokens (never their secrets).
    List,
    /// Delete a token.
    Delete {
        /// The token's name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// The API base URL (else the CLI config file's `url`, else
    /// http://127.0.0.1:8443).
    #[arg(long, env = "TWINCERT_URL", global = true)]
    url: Option<String>,
    /// CLI config file with `url` and `token_file` (default:
    /// $XDG_CONFIG_HOME/twincert/cli.toml or ~/.config/twincert/cli.toml).
    #[arg(long, env = "TWINCERT_CLI_CONFIG", global = true)]
    cli_config: Option<PathBuf>,
    /// A bearer token (prefer TWINCERT_TOKEN or --token-file: arguments are visible in ps).
    #[arg(long, env = "TWINCERT_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Output: human tables (default) or the API's JSON.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Subcommand)]
enum NamesAction {
    /// Create a managed name.
    Add {
        /// The name's id (also its first domain unless --domain is given).
        name: String,
        /// A SAN; repeat for several.
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// http-01 (default) or dns-01.
        #[arg(long)]
        challenge: Option<String>,
        /// ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072.
        #[arg(long)]
        key_type: Option<String>,
        /// Explicit CAs: give --ca twice, primary first.
        #[arg(long = "ca")]
        cas: Vec<String>,
    },
    /// List names.
    List {
        /// Only names in this state.
        #[arg(long)]
        state: Option<String>,
        /// Only names using this CA.
        #[arg(long)]
        ca: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Show one name (with its latest preflight report).
    Show {
        /// The name's id.
        name: String,
    },
    /// Run the name's preflight now: CAA for each domain and each of its
    /// two CAs, and `_acme-challenge` delegation for DNS-01 (operator+).
    Check {
        /// The name's id.
        name: String,
    },
    /// Stop managing a name.
    Delete {
        /// The name's id.
        name: String,
        /// Revoke both certificates (cessationOfOperation).
        #[arg(long)]
        revoke: bool,
    },
    /// Print a slot's PEM chain (or, with --key, its private key: deployer+, audited).
    Cert {
        /// The name's id.
        name: String,
        /// primary, backup or active.
        #[arg(default_value = "active")]
        slot: String,
        /// The private key instead of the chain.
        #[arg(long)]
        key: bool,
    },
    /// Report a key compromise: swap away, revoke (keyCompromise), re-issue.
    Compromise {
        /// The name's id.
        name: String,
        /// primary or backup.
        #[arg(long)]
        slot: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum CasAction {
    /// List the configured CAs with usage and distrust.
    List,
    /// Distrust a CA: never chosen again; names active on it swap away;
    /// every slot it holds is re-provisioned from another CA.
    Distrust {
        /// The CA id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        run: emergency::RunArgs,
    },
    /// Trust a CA again for future choices.
    Trust {
        /// The CA id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// Parses arguments and runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, role } => {
            // The API never talks to a CA or a DNS server: its pods need no
            // EAB or TSIG secrets.
            let cfg = load_config(&config, role != crate::server::Role::Api)?;
            crate::server::serve(cfg, role).await
        }
        Command::Migrate { config } => {
            let cfg = load_config(&config, false)?;
            let store = crate::server::open_store(&cfg.store_url).await?;
            println!("migrations applied ({})", store.backend_name());
            Ok(())
        }
        Command::Backup {
            config,
            to,
            recipient,
        } => {
            let cfg = load_config(&config, false)?;
            backup::backup(&cfg.store_url, &to, &recipient).await
        }
        Command::Restore {
            config,
            from,
            identity,
            force,
        } => {
            let cfg = load_config(&config, false)?;
            backup::restore(&cfg.store_url, &from, &identity, force).await
        }
        Command::Keys { action } => match action {
            KeysAction::Reseal { config, batch } => {
                let cfg = load_config(&config, false)?;
                backup::reseal(&cfg, batch).await
            }
            KeysAction::BackupIdentity { out } => backup::backup_identity(&out),
        },
        Command::Names { api, action } => names(api, action).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "twincert",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Swap {
            api,
            name,
            ca,
            spki,
            names_file,
            reason,
            run,
        } => {
            if let (Some(name), false, None, None, None) =
                (&name, run.dry_run, &ca, &spki, &names_file)
            {
                let body = serde_json::json!({ "reason": reason });
                let path = format!("/v1/names/{name}/swap");
                if !run.wait {
                    return call(&api, reqwest::Method::POST, &path, Some(body)).await;
                }
                // One name needs no confirmation; --wait follows the
                // re-provisioning of its abandoned slot.
                let run = emergency::RunArgs {
                    yes: true,
                    ..run.clone()
                };
                let mass = emergency::Mass {
                    path,
                    body,
                    has_dry_run: false,
                    what: format!("swap '{name}'"),
                };
                return emergency::run_mass(&api, &run, mass).await;
            }
            let what = match (&ca, &spki) {
                (Some(c), _) => format!("swap every name active on CA '{c}'"),
                (_, Some(k)) => format!("swap every name active on key {k}"),
                _ => "swap the listed names".into(),
            };
            let body = emergency::scope_body(
                &reason,
                ca,
                spki,
                names_file,
                name.into_iter().collect(),
                false,
            )?;
            let mass = emergency::Mass {
                path: "/v1/swaps".into(),
                body,
                has_dry_run: true,
                what,
            };
            emergency::run_mass(&api, &run, mass).await
        }
        Command::Rekey {
            api,
            all,
            ca,
            spki,
            names_file,
            reason,
            run,
        } => {
            let body = emergency::scope_body(&reason, ca, spki, names_file, Vec::new(), all)?;
            let mass = emergency::Mass {
                path: "/v1/rekeys".into(),
                body,
                has_dry_run: true,
                what: "re-key these names".into(),
            };
            emergency::run_mass(&api, &run, mass).await
        }
        Command::Compromise {
            api,
            spkis,
            names_file,
            slot,
            reason,
            run,
        } => {
            let mut body = serde_json::json!({ "reason": reason });
            if !spkis.is_empty() {
                body["spki_sha256"] = serde_json::json!(spkis);
            }
            if let Some(f) = names_file {
                body["names"] = serde_json::json!(emergency::read_names_file(&f)?);
            }
            if let Some(s) = slot {
                body["slot"] = serde_json::json!(s);
            }
            let mass = emergency::Mass {
                path: "/v1/compromises".into(),
                body,
                has_dry_run: false,
                what: "mark these keys compromised, revoke and replace them".into(),
            };
            emergency::run_mass(&api, &run, mass).await
        }
        Command::Operations { api, action } => emergency::operations(&api, action).await,
        Command::Incidents { api, action } => emergency::incidents(&api, action).await,
        Command::Alerts { api, all, limit } => emergency::alerts(&api, all, limit).await,
        Command::Readiness { api } => emergency::readiness(&api).await,
        Command::Drill { api, action } => emergency::drill(&api, action).await,
        Command::Bench { what, output } => match what {
            BenchWhat::Swap(opts) => bench::swap(opts, output).await,
            BenchWhat::Revocation(opts) => bench_revocation::revocation(opts, output).await,
            BenchWhat::Idle(opts) => bench_idle::idle(opts, output).await,
            BenchWhat::Deploy(opts) => bench_deploy::deploy(opts, output).await,
            BenchWhat::Readiness(opts) => bench_readiness::readiness(opts, output).await,
            BenchWhat::Console(opts) => bench_console::console(opts, output).await,
            BenchWhat::Scale(opts) => bench_scale::scale(opts, output).await,
        },
        Command::Events { api, limit } => {
            call(
                &api,
                reqwest::Method::GET,
                &format!("/v1/events?limit={limit}"),
                None,
            )
            .await
        }
        Command::Cas { api, action } => match action {
            CasAction::List => call(&api, reqwest::Method::GET, "/v1/cas", None).await,
            CasAction::Distrust { id, reason, run } => {
                let mass = emergency::Mass {
                    path: format!("/v1/cas/{id}/distrust"),
                    body: serde_json::json!({ "reason": reason }),
                    has_dry_run: true,
                    what: format!("distrust CA '{id}' and move every name off it"),
                };
                emergency::run_mass(&api, &run, mass).await
            }
            CasAction::Trust { id, reason } => {
                let body = serde_json::json!({ "reason": reason });
                let path = format!("/v1/cas/{id}/trust");
                call(&api, reqwest::Method::POST, &path, Some(body)).await
            }
        },
        Command::Tokens { api, action } => match action {
            TokensAction::Add {
                name,
                role,
                expires_in,
            } => {
                let mut body = serde_json::json!({ "name": name, "role": role });
                if let Some(e) = expires_in {
                    body["expires_in_seconds"] = serde_json::json!(e);
                }
                call(&api, reqwest::Method::POST, "/v1/tokens", Some(body)).await
            }
            TokensAction::List => call(&api, reqwest::Method::GET, "/v1/tokens", None).await,
            TokensAction::Delete { name } => {
                call(
                    &api,
                    reqwest::Method::DELETE,
                    &format!("/v1/tokens/{name}"),
                    None,
                )
                .await
            }
        },
    }
}

/// Loads and validates the configuration and starts logging as it says.
/// Loads the configuration; `credentials: false` leaves the CA and DNS
/// secrets unread (processes that never use them).
fn load_config(path: &std::path::Path, credentials: bool) -> anyhow::Result<Config> {
    let cfg = if credentials {
        Config::load(path)
    } else {
        Config::load_without_credentials(path)
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(cfg.log_json, &cfg.log_level);
    Ok(cfg)
}

/// Starts `tracing` output: text or JSON, filter from `TWINCERT_LOG` or the
/// configured level.
pub fn init_logging(json: bool, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("TWINCERT_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colour only on a terminal: log files and container logs get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// What the CLI config file may hold; flags and environment win over it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CliFile {
    url: Option<String>,
    token_file: Option<PathBuf>,
}

fn cli_file(api: &ApiArgs) -> anyhow::Result<CliFile> {
    let (path, explicit) = match &api.cli_config {
        Some(p) => (p.clone(), true),
        None => {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
            match base {
                Some(b) => (b.join("twincert").join("cli.toml"), false),
                None => return Ok(CliFile::default()),
            }
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("CLI config {}", path.display())),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(CliFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading the CLI config {}", path.display())),
    }
}

/// The API base URL: flag/env, else the CLI config file, else the default.
fn base_url(api: &ApiArgs) -> anyhow::Result<String> {
    let url = match &api.url {
        Some(u) => u.clone(),
        None => cli_file(api)?
            .url
            .unwrap_or_else(|| "http://127.0.0.1:8443".into()),
    };
    Ok(url.trim_end_matches('/').to_string())
}

fn token(api: &ApiArgs) -> anyhow::Result<String> {
    if let Some(t) = &api.token {
        return Ok(t.clone());
    }
    let file = match &api.token_file {
        Some(p) => Some(p.clone()),
        None => cli_file(api)?.token_file,
    };
    if let Some(p) = file {
        return Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading the token file {}", p.display()))?
            .trim()
            .to_string());
    }
    bail!(
        "no token: pass --token-file FILE, set TWINCERT_TOKEN, or put token_file in the CLI config"
    )
}

/// One API request; prints the (pretty) JSON answer, fails on non-2xx.
async fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let token = token(api)?;
    let base = base_url(api)?;
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(&token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let rsp = req
        .send()
        .await
        .with_context(|| format!("calling the API at {base}"))?;
    print_answer(rsp, api.output).await
}

async fn print_answer(rsp: reqwest::Response, output: Output) -> anyhow::Result<()> {
    let status = rsp.status();
    let text = rsp.text().await.context("reading the API's answer")?;
    let value = serde_json::from_str::<serde_json::Value>(&text).ok();
    let pretty = value
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or(text);
    if status.is_success() {
        match (output, &value) {
            (Output::Table, Some(v)) => print!("{}", table(v)),
            _ if !pretty.is_empty() => println!("{pretty}"),
            _ => {}
        }
        Ok(())
    } else {
        match (&value, output) {
            (Some(v), Output::Table) if v["detail"].is_string() => {
                eprintln!("error: {}", v["detail"].as_str().unwrap_or_default());
            }
            _ => eprintln!("{pretty}"),
        }
        Err(ApiFailure {
            status: status.as_u16(),
        }
        .into())
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Human rendering of the API's answers: lists of names, tokens and events
/// as columns, one name as `key: value` lines, anything else as JSON.
fn table(v: &serde_json::Value) -> String {
    let slot =
        |n: &serde_json::Value, s: &str| format!("{}/{}", cell(&n[s]["ca"]), cell(&n[s]["state"]));
    if let Some(items) = v["items"].as_array() {
        let first = items.first();
        let mut rows: Vec<Vec<String>> = Vec::new();
        if first.is_some_and(|i| i["primary"].is_object()) {
            rows.push(vec![
                "NAME".into(),
                "STATE".into(),
                "ACTIVE".into(),
                "PRIMARY".into(),
                "BACKUP".into(),
            ]);
            for n in items {
                rows.push(vec![
                    cell(&n["name"]),
                    cell(&n["state"]),
                    cell(&n["active"]),
                    slot(n, "primary"),
                    slot(n, "backup"),
                ]);
            }
        } else if first.is_some_and(|i| i["role"].is_string()) {
            rows.push(vec![
                "NAME".into(),
                "ROLE".into(),
                "CREATED".into(),
                "LAST USED".into(),
                "EXPIRES".into(),
            ]);
            for t in items {
                rows.push(vec![
                    cell(&t["name"]),
                    cell(&t["role"]),
                    cell(&t["created_at"]),
                    cell(&t["last_used_at"]),
                    cell(&t["expires_at"]),
                ]);
            }
        } else if first.is_some_and(|i| i["directory_url"].is_string()) {
            rows.push(vec![
                "ID".into(),
                "PROFILE".into(),
                "ROOT GROUP".into(),
                "DISTRUSTED".into(),
                "ACTIVE".into(),
                "SLOTS".into(),
            ]);
            for c in items {
                rows.push(vec![
                    cell(&c["id"]),
                    cell(&c["profile"]),
                    cell(&c["root_group"]),
                    cell(&c["distrusted"]),
                    cell(&c["active_names"]),
                    cell(&c["slots"]),
                ]);
            }
        } else if first.is_some_and(|i| i["action"].is_string()) {
            rows.push(vec![
                "AT".into(),
                "ACTOR".into(),
                "ACTION".into(),
                "TARGET".into(),
                "RESULT".into(),
                "REASON".into(),
            ]);
            for e in items {
                rows.push(vec![
                    cell(&e["at"]),
                    cell(&e["actor"]),
                    cell(&e["action"]),
                    cell(&e["target"]),
                    cell(&e["result"]),
                    cell(&e["reason"]),
                ]);
            }
        } else if first.is_some_and(|i| i["kind"].is_string()) {
            rows.push(vec![
                "ID".into(),
                "KIND".into(),
                "SCOPE".into(),
                "ACTOR".into(),
                "AFFECTED".into(),
                "BLOCKED".into(),
                "MS".into(),
                "AT".into(),
            ]);
            for o in items {
                rows.push(vec![
                    cell(&o["id"]),
                    cell(&o["kind"]),
                    cell(&o["scope"]),
                    cell(&o["actor"]),
                    cell(&o["affected"]),
                    cell(&o["blocked"]),
                    cell(&o["duration_ms"]),
                    cell(&o["created_at"]),
                ]);
            }
        } else if items.is_empty() {
            return "(none)\n".into();
        } else {
            return format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
        }
        let mut out = columns(&rows);
        if let Some(c) = v["next_cursor"].as_str() {
            out.push_str(&format!("(more: --cursor {c})\n"));
        }
        return out;
    }
    if v.is_object() {
        let mut rows = Vec::new();
        flatten("", v, &mut rows);
        return columns(&rows);
    }
    format!("{}\n", cell(v))
}

/// One object as `key: value` rows, nested values included — they are
/// what a runbook says to check (`report.counts.swap`,
/// `estimate.eligible_cas`): objects as dotted keys, a list of plain
/// values on one row joined by ", " (`(none)` when empty), a list of
/// anything else as indexed keys (`items[0].name`).
fn flatten(key: &str, v: &serde_json::Value, rows: &mut Vec<Vec<String>>) {
    let join = |k: &str| {
        if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(obj) if obj.is_empty() && !key.is_empty() => {
            rows.push(vec![format!("{key}:"), "(none)".into()]);
        }
        serde_json::Value::Object(obj) => {
            for (k, val) in obj {
                flatten(&join(k), val, rows);
            }
        }
        serde_json::Value::Array(items) if items.is_empty() => {
            rows.push(vec![format!("{key}:"), "(none)".into()]);
        }
        serde_json::Value::Array(items)
            if items.iter().all(|i| !i.is_object() && !i.is_array()) =>
        {
            let joined: Vec<String> = items.iter().map(cell).collect();
            rows.push(vec![format!("{key}:"), joined.join(", ")]);
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{key}[{i}]"), item, rows);
            }
        }
        scalar => rows.push(vec![format!("{key}:"), cell(scalar)]),
    }
}

async fn names(api: ApiArgs, action: NamesAction) -> anyhow::Result<()> {
    let token = token(&api)?;
    let base = base_url(&api)?;
    let http = reqwest::Client::new();
    let rsp = match action {
        NamesAction::Add {
            name,
            domains,
            challenge,
            key_type,
            cas,
        } => {
            let mut body = serde_json::json!({ "name": name });
            if !domains.is_empty() {
                body["domains"] = serde_json::json!(domains);
            }
            if let Some(c) = challenge {
                body["challenge"] = serde_json::json!(c);
            }
            if let Some(k) = key_type {
                body["key_type"] = serde_json::json!(k);
            }
            if !cas.is_empty() {
                body["cas"] = serde_json::json!(cas);
            }
            http.post(format!("{base}/v1/names"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
        }
        NamesAction::List { state, ca, limit } => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(s) = state {
                q.push(("state", s));
            }
            if let Some(c) = ca {
                q.push(("ca", c));
            }
            let mut url = url::Url::parse(&format!("{base}/v1/names"))
                .with_context(|| format!("bad API URL {base}"))?;
            url.query_pairs_mut()
                .extend_pairs(q.iter().map(|(k, v)| (*k, v.as_str())));
            http.get(url).bearer_auth(&token).send().await
        }
        NamesAction::Show { name } => {
            http.get(format!("{base}/v1/names/{name}"))
                .bearer_auth(&token)
                .send()
                .await
        }
        NamesAction::Check { name } => {
            http.post(format!("{base}/v1/names/{name}/preflight"))
                .bearer_auth(&token)
                .send()
                .await
        }
        NamesAction::Delete { name, revoke } => {
            http.delete(format!("{base}/v1/names/{name}?revoke={revoke}"))
                .bearer_auth(&token)
                .send()
                .await
        }
        NamesAction::Cert { name, slot, key } => {
            let suffix = if key { "/key" } else { "" };
            let rsp = http
                .get(format!(
                    "{base}/v1/names/{name}/certificates/{slot}{suffix}"
                ))
                .bearer_auth(&token)
                .header("Accept", "application/pem-certificate-chain")
                .send()
                .await
                .with_context(|| format!("calling the API at {base}"))?;
            if rsp.status().is_success() {
                // PEM goes to stdout as is, for redirection into a file.
                print!("{}", rsp.text().await.context("reading the API's answer")?);
                return Ok(());
            }
            return print_answer(rsp, api.output).await;
        }
        NamesAction::Compromise { name, slot, reason } => {
            http.post(format!("{base}/v1/names/{name}/compromise"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "slot": slot, "reason": reason }))
                .send()
                .await
        }
    }
    .with_context(|| format!("calling the API at {base}"))?;
    print_answer(rsp, api.output).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::table;

    #[test]
    fn one_object_is_shown_with_every_nested_value() {
        // (case, the API's answer, the rows, padded to the widest key)
        let cases: [(&str, serde_json::Value, &[&str]); 4] = [
            (
                "nested objects as dotted keys",
                json!({ "report": { "counts": { "swap": 12, "no_standby": 1 } } }),
                &[
                    "report.counts.swap:        12",
                    "report.counts.no_standby:  1",
                ],
            ),
            (
                "a list of plain values on one row",
                json!({ "estimate": { "eligible_cas": ["b", "c"] } }),
                &["estimate.eligible_cas:  b, c"],
            ),
            (
                "empty lists and objects say so",
                json!({ "a": [], "b": {} }),
                &["a:  (none)", "b:  (none)"],
            ),
            (
                "a list of lists or objects as indexed keys",
                json!({ "sample": [["x", "swap"]], "errors": [{ "ca": "b", "n": 2 }] }),
                &[
                    "sample[0]:     x, swap",
                    "errors[0].ca:  b",
                    "errors[0].n:   2",
                ],
            ),
        ];
        for (name, v, rows) in cases {
            let out = table(&v);
            let mut got: Vec<&str> = out.lines().collect();
            got.sort();
            let mut want: Vec<&str> = rows.to_vec();
            want.sort();
            assert_eq!(got, want, "{name}:\n{out}");
        }
    }
}
