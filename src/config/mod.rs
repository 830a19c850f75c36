//! Configuration: one TOML file plus `TWINCERT_*` environment overrides,
//! validated once at start-up into [`Config`]. Every error names the key and
//! the value that is wrong. Secrets (master key, admin token, EAB HMACs) are
//! read from files or the environment and are never echoed in errors.
//!
//! Environment overrides: `TWINCERT_<SECTION>_<KEY>` sets `[section] key`
//! (e.g. `TWINCERT_STORE_URL`, `TWINCERT_WORKER_CONCURRENCY`), and
//! `TWINCERT_CA_<ID>_<KEY>` sets a key of the CA with that id (id upper-cased,
//! `-` written `_`, e.g. `TWINCERT_CA_PEBBLE_A_DIRECTORY_URL`).
//! `TWINCERT_MASTER_KEY` and `TWINCERT_ADMIN_TOKEN` carry secrets directly.
//!
//! One source file per part of the configuration file, each turning its
//! raw sections into the validated settings the roles read: `server` (the
//! process's own `[server]`, `[store]`, `[secrets]` and `[logging]`), `cas`
//! (`[[cas]]` and `[policy]`), `worker`, `dns` (`[dns]` and
//! `[[dns_providers]]`), `revocation`, `deploy` (`[deploy]` and
//! `[[destinations]]`) and `alerts`; `env` applies the environment
//! overrides before any of them runs.
//!
//! Invariant: this module sits below the roles. It imports only `domain`
//! and `providers` (a DNS provider's settings type is the provider's own);
//! `api`, `worker`, `deploy`, `notify` and the others read their settings
//! from here, never the other way round.

mod alerts;
mod cas;
mod deploy;
mod dns;
mod drills;
mod env;
mod preflight;
mod readiness;
mod revocation;
mod server;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{Cidr, KeyType};
use crate::providers;

pub use crate::providers::dns::DnsProviderConfig;
pub use alerts::{AlertsConfig, SmtpConfig, SmtpSecurity};
pub use cas::{CaConfig, DEFAULT_SAME_CA_HOLD_OFF};
pub use deploy::{
    DEFAULT_KEEP_VERSIONS, DEFAULT_POST_DEPLOY_TIMEOUT, DeployConfig, Destination, FilesTarget,
    KubeSource, KubeTarget, ManualTarget, PasswordDelivery, WebhookTarget,
};
pub use dns::DnsConfig;
pub use drills::DrillsConfig;
pub use preflight::PreflightConfig;
pub use readiness::ReadinessConfig;
pub use revocation::{IncidentPolicy, RevocationConfig, RevokedActivePolicy};
pub use worker::WorkerConfig;

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// TOML syntax or a type mismatch (the message names the key).
    #[error("config: {0}")]
    Parse(String),
    /// A value is present but not acceptable.
    #[error("config: {key} = {value}: {reason}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// The offending value (never a secret).
        value: String,
        /// Why it is not acceptable.
        reason: String,
    },
    /// A CA profile file is broken.
    #[error(transparent)]
    Profile(#[from] providers::ProfileError),
    /// Settings that must be present are not: every one of them, each
    /// with what to set, so one attempt shows them all.
    #[error("config: {} missing:{}", plural(.0.len()), .0.iter().map(|m| format!("\n  {m}")).collect::<String>())]
    Missing(Vec<Missing>),
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 setting is".into()
    } else {
        format!("{n} settings are")
    }
}

/// One setting that must be present and is not.
#[derive(Debug, Clone)]
pub struct Missing {
    /// Dotted key path (`cas[2].directory_url`).
    pub key: String,
    /// Why it is needed and what to set.
    pub fix: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.fix)
    }
}

/// The error for a present but unacceptable value (never pass a secret as
/// `value`).
fn invalid(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The `[section]` tables of the file — every one `TWINCERT_<SECTION>_<KEY>`
/// can override. A unit test holds it to [`RawConfig`]'s fields, so a new
/// section cannot be left out.
const SECTIONS: &[&str] = &[
    "server",
    "store",
    "secrets",
    "worker",
    "policy",
    "logging",
    "dns",
    "revocation",
    "deploy",
    "alerts",
    "readiness",
    "drills",
    "preflight",
];

/// Tables inside a section: `TWINCERT_ALERTS_SMTP_HOST` sets `[alerts.smtp]
/// host`.
const SUBTABLES: &[(&str, &str)] = &[("alerts", "smtp")];

/// The top-level keys that are not `[section]` tables: arrays of tables
/// (`[[cas]]` has its own `TWINCERT_CA_<ID>_<KEY>` overrides) and plain
/// keys.
#[cfg(test)]
const NOT_SECTIONS: &[&str] = &["providers_dir", "cas", "dns_providers", "destinations"];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    store: server::RawStore,
    #[serde(default)]
    secrets: server::RawSecrets,
    #[serde(default)]
    worker: worker::RawWorker,
    #[serde(default)]
    policy: cas::RawPolicy,
    #[serde(default)]
    logging: server::RawLogging,
    providers_dir: Option<PathBuf>,
    #[serde(default)]
    cas: Vec<cas::RawCa>,
    #[serde(default)]
    dns: dns::RawDns,
    #[serde(default)]
    dns_providers: Vec<dns::RawDnsProvider>,
    #[serde(default)]
    revocation: revocation::RawRevocation,
    #[serde(default)]
    deploy: deploy::RawDeploy,
    #[serde(default)]
    destinations: Vec<deploy::RawDestination>,
    #[serde(default)]
    alerts: alerts::RawAlerts,
    #[serde(default)]
    readiness: readiness::RawReadiness,
    #[serde(default)]
    drills: drills::RawDrills,
    #[serde(default)]
    preflight: preflight::RawPreflight,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the REST API listens.
    pub api_listen: SocketAddr,
    /// Where the HTTP-01 responder listens (port 80 in production).
    pub http01_listen: SocketAddr,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Longest an API request may take before it is answered 503.
    pub request_timeout_seconds: u64,
    /// Client networks allowed to call the API (empty: everyone).
    pub allow_cidrs: Vec<Cidr>,
    /// PEM certificate chain and key for HTTPS on the API listener.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// `server.public_url`: the API's address as people outside reach it
    /// (no trailing `/`); the base of install-request download links.
    pub public_url: Option<String>,
    /// `sqlite://…` or `postgres://…`.
    pub store_url: String,
    /// Master key file (when not given by `TWINCERT_MASTER_KEY`).
    pub master_key_file: Option<PathBuf>,
    /// Admin token file (when not given by `TWINCERT_ADMIN_TOKEN`).
    pub admin_token_file: Option<PathBuf>,
    /// Demo mode: generate a master key and admin token into `local_dir`.
    pub local_mode: bool,
    /// Where local mode keeps its generated secrets.
    pub local_dir: PathBuf,
    /// Worker tuning.
    pub worker: WorkerConfig,
    /// CA ids in order of preference for new names.
    pub ca_preference: Vec<String>,
    /// Renew when this fraction of a certificate's lifetime has passed.
    pub renew_at_fraction: f64,
    /// Key type of names that do not say.
    pub default_key_type: KeyType,
    /// After a CA-wide swap, how long re-provisioning waits before it
    /// re-issues the abandoned slots from the CA swapped away from, when
    /// no other CA is eligible (a distrusted CA is never used again).
    pub reprovision_same_ca_after_seconds: i64,
    /// `text` or `json`.
    pub log_json: bool,
    /// `tracing` filter directive.
    pub log_level: String,
    /// The configured CAs by id.
    pub cas: BTreeMap<String, CaConfig>,
    /// DNS lookups for DNS-01.
    pub dns: DnsConfig,
    /// DNS providers by id.
    pub dns_providers: BTreeMap<String, DnsProviderConfig>,
    /// Revocation checks, ARI, incidents, expiry alerts.
    pub revocation: RevocationConfig,
    /// Deployment destinations and endpoint checks.
    pub deploy: DeployConfig,
    /// Who is told about alerts, and how.
    pub alerts: AlertsConfig,
    /// Emergency readiness.
    pub readiness: ReadinessConfig,
    /// CAA and delegation preflight.
    pub preflight: PreflightConfig,
    /// What drills may do.
    pub drills: DrillsConfig,
}

impl Config {
    /// Like [`Config::load`], but without reading the CA and DNS
    /// credentials (EAB HMAC keys, TSIG secrets): for processes that never
    /// talk to a CA or a DNS server (`serve --role api`, `migrate`), so
    /// those secrets can stay with the workers. The EAB key id is kept;
    /// the secrets read as empty and must not be used.
    pub fn load_without_credentials(path: &Path) -> Result<Config, ConfigError> {
        Config::read(path, false)
    }

    /// Reads `path`, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::read(path, true)
    }

    fn read(path: &Path, credentials: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        let raw = parse_raw(&text, &env)?;
        validate(raw, path.parent().unwrap_or(Path::new(".")), credentials)
    }

    /// Parses `text`, applies `env` overrides, validates. Relative paths are
    /// resolved against `base`.
    pub fn from_toml(
        text: &str,
        env: &[(String, String)],
        base: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, env)?;
        validate(raw, base.unwrap_or(Path::new(".")), true)
    }
}

fn parse_raw(text: &str, env: &[(String, String)]) -> Result<RawConfig, ConfigError> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
    let set = env::apply_env(&mut doc, env)?;
    toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse(env::attribute(e.to_string(), &set)))
}

/// `p` relative to the config file's directory unless absolute.
fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

fn read_secret(
    key: &str,
    file: Option<&Path>,
    env: Option<&str>,
    base: &Path,
    credentials: bool,
) -> Result<Option<String>, ConfigError> {
    if !credentials {
        return Ok(None);
    }
    if let Some(var) = env {
        let v = std::env::var(var)
            .map_err(|_| invalid(key, var, "the environment variable is not set"))?;
        return Ok(Some(v.trim().to_string()));
    }
    if let Some(f) = file {
        let path = resolve(base, f.to_path_buf());
        let v = std::fs::read_to_string(&path)
            .map_err(|e| invalid(key, path.display(), format!("cannot read: {e}")))?;
        return Ok(Some(v.trim().to_string()));
    }
    Ok(None)
}

/// Validates the sections one after the other, always in this order, so a
/// file with several mistakes reports the same one first every time.
fn validate(raw: RawConfig, base: &Path, credentials: bool) -> Result<Config, ConfigError> {
    let server = server::validate_server(raw.server, base)?;
    let store_url = server::validate_store_url(raw.store)?;
    let cas = cas::validate_cas(&raw.cas, raw.providers_dir, base, credentials)?;
    let policy = cas::validate_policy(raw.policy, &raw.cas, &cas)?;
    let worker = worker::validate_worker(raw.worker)?;
    let logging = server::validate_logging(raw.logging)?;
    let dns = dns::validate_dns(raw.dns)?;
    let dns_providers = dns::validate_dns_providers(&raw.dns_providers, base, credentials)?;
    let secrets = server::validate_secrets(raw.secrets, base);
    let deploy = deploy::validate_deploy(raw.deploy, raw.destinations, base, credentials)?;
    let alerts = alerts::validate_alerts(raw.alerts, base, credentials)?;
    // Install requests are mailed with a link to this API.
    if let Some((id, _)) = deploy
        .destinations
        .iter()
        .find(|(_, d)| matches!(d, Destination::Manual(_)))
    {
        if server.public_url.is_none() {
            return Err(invalid(
                "server.public_url",
                "",
                format!(
                    "destination '{id}' is manual: its download links need the address people \
                     reach this API at, e.g. public_url = \"https://twincert.example.com\""
                ),
            ));
        }
        if alerts.smtp.is_none() {
            return Err(invalid(
                "alerts.smtp",
                "",
                format!(
                    "destination '{id}' is manual: install requests are mailed; configure [alerts.smtp]"
                ),
            ));
        }
    }
    Ok(Config {
        api_listen: server.api_listen,
        http01_listen: server.http01_listen,
        max_body_bytes: server.max_body_bytes,
        request_timeout_seconds: server.request_timeout_seconds,
        allow_cidrs: server.allow_cidrs,
        api_tls: server.api_tls,
        public_url: server.public_url,
        store_url,
        master_key_file: secrets.master_key_file,
        admin_token_file: secrets.admin_token_file,
        local_mode: secrets.local_mode,
        local_dir: secrets.local_dir,
        worker,
        ca_preference: policy.ca_preference,
        renew_at_fraction: policy.renew_at_fraction,
        default_key_type: policy.default_key_type,
        reprovision_same_ca_after_seconds: policy.reprovision_same_ca_after_seconds,
        log_json: logging.json,
        log_level: logging.level,
        cas,
        dns,
        dns_providers,
        revocation: revocation::validate_revocation(raw.revocation)?,
        deploy,
        alerts,
        readiness: readiness::validate_readiness(raw.readiness)?,
        drills: drills::validate_drills(raw.drills)?,
        preflight: preflight::validate_preflight(raw.preflight)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[store]
url = "sqlite://x.db"
[[cas]]
id = "a"
profile = "pebble"
directory_url = "https://127.0.0.1:14000/dir"
[[cas]]
id = "b"
profile = "pebble"
root_group = "other"
"#;

    #[test]
    fn api_processes_and_migrations_need_no_ca_or_dns_secrets() {
        let text = r#"
[store]
url = "sqlite://x.db"
[[cas]]
id = "gts"
profile = "google"
eab_kid = "kid-1"
eab_hmac_file = "/nonexistent/eab"
[[cas]]
id = "b"
profile = "pebble"
directory_url = "https://127.0.0.1:14000/dir"
[[dns_providers]]
id = "bind"
kind = "rfc2136"
server = "127.0.0.1:53"
zones = ["example.test"]
tsig_key_name = "k"
tsig_secret_file = "/nonexistent/tsig"
"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("twincert.toml");
        std::fs::write(&path, text).expect("write");
        // A worker must read them, and says which one is missing.
        let err = Config::load(&path)
            .expect_err("secrets missing")
            .to_string();
        assert!(err.contains("eab_hmac_file"), "{err}");
        // An API process or a migration does not read them.
        let cfg = Config::load_without_credentials(&path).expect("loads");
        let gts = &cfg.cas["gts"];
        assert_eq!(gts.eab.as_ref().map(|(kid, _)| kid.as_str()), Some("kid-1"));
        let crate::providers::dns::DnsProviderKind::Rfc2136(s) = &cfg.dns_providers["bind"].kind
        else {
            panic!("bind is an rfc2136 provider")
        };
        assert_eq!(s.tsig_secret_b64, "");
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(text, &env, None)
    }

    #[test]
    fn every_table_of_the_file_is_a_section_the_environment_can_override() {
        // serde names every field it expects when it meets an unknown one.
        let err = parse_raw("no_such_section = 1", &[])
            .expect_err("unknown key")
            .to_string();
        let expected = err
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("serde's message changed: {err}"));
        let fields: std::collections::BTreeSet<&str> =
            expected.split('`').skip(1).step_by(2).collect();
        let listed: std::collections::BTreeSet<&str> =
            SECTIONS.iter().chain(NOT_SECTIONS).copied().collect();
        assert_eq!(fields, listed, "config::SECTIONS must list every [section]");
    }

    #[test]
    fn the_failpoint_hook_is_known_only_to_builds_with_the_feature() {
        let got = load(BASE, &[("TWINCERT_FAILPOINT", "after_order_url")]);
        if cfg!(feature = "failpoints") {
            assert!(got.is_ok(), "{:?}", got.err());
        } else {
            let err = got.expect_err("refused").to_string();
            assert!(
                err.contains("TWINCERT_FAILPOINT") && err.contains("unknown override"),
                "{err}"
            );
        }
    }

    #[test]
    fn deploy_alerts_and_smtp_come_from_the_environment_and_typos_say_so() {
        let c = load(
            BASE,
            &[
                ("TWINCERT_DEPLOY_CONCURRENCY", "8"),
                ("TWINCERT_ALERTS_RATE_LIMIT_SECONDS", "60"),
                ("TWINCERT_ALERTS_SMTP_HOST", "mail.example.test"),
                ("TWINCERT_ALERTS_SMTP_FROM", "twincert@example.test"),
            ],
        )
        .expect("valid");
        assert_eq!(c.deploy.concurrency, 8);
        assert_eq!(c.alerts.rate_limit_seconds, 60);
        assert_eq!(
            c.alerts.smtp.as_ref().map(|s| s.host.as_str()),
            Some("mail.example.test")
        );
        let err = load(BASE, &[("TWINCERT_DEPLOY_CONCURENCY", "8")])
            .expect_err("misspelt")
            .to_string();
        assert!(
            err.contains("concurency")
                && err.contains("environment variable TWINCERT_DEPLOY_CONCURENCY"),
            "{err}"
        );
        let err = load(BASE, &[("TWINCERT_DEPLOYS_CONCURRENCY", "8")])
            .expect_err("unknown section")
            .to_string();
        assert!(err.contains("environment variable"), "{err}");
    }

    #[test]
    fn defaults_and_env_overrides() {
        let c = load(
            BASE,
            &[
                ("TWINCERT_WORKER_CONCURRENCY", "7"),
                ("TWINCERT_STORE_URL", "postgres://u@h/db"),
                ("TWINCERT_CA_B_DIRECTORY_URL", "https://127.0.0.1:15000/dir"),
                ("PATH", "/bin"),
            ],
        )
        .expect("valid");
        assert_eq!(c.worker.concurrency, 7);
        assert_eq!(c.store_url, "postgres://u@h/db");
        assert_eq!(c.cas["b"].directory_url, "https://127.0.0.1:15000/dir");
        assert_eq!(c.ca_preference, ["a", "b"]);
        assert!((c.renew_at_fraction - 2.0 / 3.0).abs() < 1e-9);
        // The defaults docs/lifetimes.md's table is computed with
        // (ScheduleSettings::DEFAULTS in the policy's lifetime module).
        assert!((c.revocation.expiry_alert_fraction - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(c.revocation.no_standby_alert_seconds, 24 * 3600);
        assert_eq!(c.revocation.ari_min_poll_seconds, 60);
        assert_eq!(c.readiness.revocation_window_seconds, 5 * 86_400);
        assert_eq!(
            (c.worker.min_backoff_seconds, c.worker.max_backoff_seconds),
            (2, 3600)
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of named cases reads best inline
    fn errors_name_the_key_and_value() {
        let cases: Vec<(String, Vec<(&str, &str)>, &str)> = vec![
            (
                BASE.replace(
                    "profile = \"pebble\"\ndirectory",
                    "profile = \"nope\"\ndirectory",
                ),
                vec![],
                "cas[0].profile = nope",
            ),
            (
                BASE.to_string(),
                vec![("TWINCERT_WORKER_CONCURRENCY", "0")],
                "worker.concurrency = 0",
            ),
            (
                BASE.to_string(),
                vec![("TWINCERT_SERVER_API_LISTEN", "nowhere")],
                "server.api_listen",
            ),
            (
                BASE.to_string(),
                vec![("TWINCERT_BOGUS_X", "1")],
                "TWINCERT_BOGUS_X",
            ),
            (
                BASE.to_string(),
                vec![("TWINCERT_CA_Z_DIRECTORY_URL", "https://x")],
                "TWINCERT_CA_Z_DIRECTORY_URL",
            ),
            (
                format!("{BASE}\n[policy]\nca_preference = [\"a\", \"c\"]\n"),
                vec![],
                "policy.ca_preference = c",
            ),
            (
                BASE.replace("https://127.0.0.1:14000/dir", "http://127.0.0.1/dir"),
                vec![],
                "https://",
            ),
            (format!("{BASE}\nbogus = 1\n"), vec![], "bogus"),
            (
                "[[cas]]\nid = \"a\"\nprofile = \"pebble\"\n".to_string(),
                vec![],
                "at least two CAs",
            ),
            (
                format!("{BASE}\n[[cas]]\nid = \"z\"\nprofile = \"zerossl\"\n"),
                vec![],
                "External Account Binding",
            ),
        ];
        for (text, env, want) in cases {
            let e = load(&text, &env).expect_err(want).to_string();
            assert!(e.contains(want), "want '{want}' in: {e}");
        }
    }

    /// A manual destination: its defaults, fractional hours, and every
    /// refusal naming its key (the destination needs server.public_url
    /// and mail).
    #[test]
    #[allow(clippy::type_complexity)] // a table of named cases reads best inline
    fn manual_destinations_need_a_public_url_and_mail_and_name_bad_fields() {
        const SMTP: &str = "[alerts.smtp]\nhost = \"127.0.0.1\"\nport = 25\n\
                            security = \"none\"\nfrom = \"t@example.test\"\n";
        let manual = |extra: &str| {
            format!(
                "{BASE}\n[[destinations]]\nid = \"appliances\"\nkind = \"manual\"\n{extra}\n{SMTP}"
            )
        };
        let url = [(
            "TWINCERT_SERVER_PUBLIC_URL",
            "https://twincert.example.test/",
        )];
        let c = load(&manual(""), &url).expect("defaults");
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://twincert.example.test")
        );
        let Some(Destination::Manual(t)) = c.deploy.destinations.get("appliances") else {
            panic!("not manual: {:?}", c.deploy.destinations);
        };
        assert_eq!(
            *t,
            ManualTarget {
                password_delivery: PasswordDelivery::Api,
                link_ttl_seconds: 72 * 3600,
                one_time_link: true,
                remind_after_seconds: 24 * 3600,
            }
        );
        let c = load(
            &manual(
                "password_delivery = \"mail\"\nlink_ttl_hours = 0.5\n\
                 one_time_link = false\nremind_after_hours = 0.002",
            ),
            &url,
        )
        .expect("set");
        let Some(Destination::Manual(t)) = c.deploy.destinations.get("appliances") else {
            panic!("not manual");
        };
        assert_eq!(t.password_delivery, PasswordDelivery::Mail);
        assert_eq!((t.link_ttl_seconds, t.remind_after_seconds), (1800, 7));
        assert!(!t.one_time_link);

        let cases: Vec<(String, Vec<(&str, &str)>, &str)> = vec![
            (manual(""), vec![], "server.public_url"),
            (manual("").replace(SMTP, ""), url.to_vec(), "alerts.smtp"),
            (
                manual("password_delivery = \"sms\""),
                url.to_vec(),
                "destinations.appliances.password_delivery = sms",
            ),
            (
                manual("link_ttl_hours = 0"),
                url.to_vec(),
                "destinations.appliances.link_ttl_hours = 0",
            ),
            (
                manual("remind_after_hours = 1000"),
                url.to_vec(),
                "destinations.appliances.remind_after_hours = 1000",
            ),
            (
                manual(""),
                vec![("TWINCERT_SERVER_PUBLIC_URL", "http://twincert.example.test")],
                "only to a loopback address",
            ),
            (
                manual(""),
                vec![("TWINCERT_SERVER_PUBLIC_URL", "https://x.example.test/?a=1")],
                "no query",
            ),
            (
                manual(""),
                vec![("TWINCERT_SERVER_PUBLIC_URL", "twincert.example.test")],
                "server.public_url = twincert.example.test",
            ),
        ];
        for (text, env, want) in cases {
            let e = load(&text, &env).expect_err(want).to_string();
            assert!(e.contains(want), "want '{want}' in: {e}");
        }
        // http to this machine is fine (tests, a local proxy).
        let c = load(
            &manual(""),
            &[("TWINCERT_SERVER_PUBLIC_URL", "http://127.0.0.1:8443")],
        )
        .expect("loopback");
        assert_eq!(c.public_url.as_deref(), Some("http://127.0.0.1:8443"));
    }

    #[test]
    fn every_missing_ca_setting_is_named_in_one_error() {
        let text = format!(
            "{BASE}
[[cas]]
id = \"internal\"
profile = \"generic\"
[[cas]]
id = \"internal-2\"
profile = \"generic\"
root_group = \"corp\"
[[cas]]
id = \"z\"
profile = \"zerossl\"
[[cas]]
directory_url = \"https://acme.corp.example/dir\"
"
        );
        let err = load(&text, &[]).expect_err("missing settings").to_string();
        let want = [
            "6 settings are missing",
            "cas[2].directory_url: CA 'internal': profile 'generic' names no ACME server",
            "cas[2].root_group: CA 'internal': profile 'generic' cannot know",
            "cas[3].directory_url:",
            "cas[4].eab_kid: CA 'z': profile 'zerossl' requires External Account Binding",
            "cas[5].id: set id",
            "cas[5].profile: set profile = \"generic\"",
        ];
        for w in want {
            assert!(err.contains(w), "want '{w}' in:\n{err}");
        }
        assert!(!err.contains("cas[3].root_group"), "{err}");

        // With both named, the generic profile is a CA like any other.
        let text = format!(
            "{BASE}
[[cas]]
id = \"internal\"
profile = \"generic\"
directory_url = \"https://acme.corp.example/dir\"
root_group = \"corp\"
"
        );
        let c = load(&text, &[]).expect("generic CA");
        let ca = &c.cas["internal"];
        assert_eq!(ca.directory_url, "https://acme.corp.example/dir");
        assert_eq!(ca.root_group, "corp");
        assert_eq!((ca.orders_per_hour, ca.concurrency), (300, 10));
        assert_eq!(ca.acme_profile, None);
    }

    #[test]
    fn acme_profile_is_taken_as_given_and_its_form_checked() {
        let entry = |p: &str| {
            format!(
                "{BASE}
[[cas]]
id = \"internal\"
profile = \"generic\"
directory_url = \"https://acme.corp.example/dir\"
root_group = \"corp\"
acme_profile = \"{p}\"
"
            )
        };
        let c = load(&entry("shortlived"), &[]).expect("profile");
        assert_eq!(
            c.cas["internal"].acme_profile.as_deref(),
            Some("shortlived")
        );
        let c = load(
            &entry("shortlived"),
            &[("TWINCERT_CA_INTERNAL_ACME_PROFILE", "tlsserver")],
        )
        .expect("profile from the environment");
        assert_eq!(c.cas["internal"].acme_profile.as_deref(), Some("tlsserver"));
        for bad in ["", "short lived"] {
            let e = load(&entry(bad), &[]).expect_err(bad).to_string();
            assert!(e.contains("acme_profile"), "{e}");
        }
    }
}
