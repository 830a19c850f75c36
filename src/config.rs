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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::KeyType;
pub use crate::providers::dns::DnsProviderConfig;
use crate::providers::{self, CaProfile};

/// Environment variables that are not `[section] key` overrides.
const RESERVED_ENV: &[&str] = &[
    "TWINCERT_MASTER_KEY",
    "TWINCERT_ADMIN_TOKEN",
    "TWINCERT_CONFIG",
    "TWINCERT_URL",
    "TWINCERT_TOKEN",
    "TWINCERT_FAILPOINT",
    "TWINCERT_LOG",
    "TWINCERT_ROLE",
];

const SECTIONS: &[&str] = &[
    "server",
    "store",
    "secrets",
    "worker",
    "policy",
    "logging",
    "dns",
    "revocation",
];

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
}

pub(crate) fn invalid(
    key: &str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    logging: RawLogging,
    providers_dir: Option<PathBuf>,
    #[serde(default)]
    cas: Vec<RawCa>,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    dns_providers: Vec<RawDnsProvider>,
    #[serde(default)]
    revocation: RawRevocation,
    #[serde(default)]
    deploy: crate::deploy::settings::RawDeploy,
    #[serde(default)]
    destinations: Vec<crate::deploy::settings::RawDestination>,
    #[serde(default)]
    alerts: crate::deploy::settings::RawAlerts,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    enabled: Option<bool>,
    check_interval_seconds: Option<u64>,
    on_active_revoked: Option<String>,
    refresh_seconds: Option<u64>,
    ocsp: Option<bool>,
    ari: Option<bool>,
    ari_min_poll_seconds: Option<u64>,
    incident_percent: Option<f64>,
    incident_count: Option<i64>,
    incident_min_count: Option<i64>,
    incident_window_seconds: Option<i64>,
    incident_policy: Option<String>,
    expiry_alert_fraction: Option<f64>,
    no_standby_alert_hours: Option<f64>,
}

/// What to do when a name's *active* certificate is found revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedActivePolicy {
    /// Swap the name to its standby at once (and re-provision the slot).
    Swap,
    /// Only alert; an operator swaps.
    Alert,
}

/// What a CA-level incident does besides alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentPolicy {
    /// Swap every name active on the CA away from it, in one operation.
    Swap,
    /// Record a dry run of that swap and wait for an operator.
    Manual,
}

/// Revocation checking (CRL, OCSP), ARI polling, CA-level incidents and
/// expiry alerts (`[revocation]`).
#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// Whether the periodic checks run at all (in worker processes).
    pub enabled: bool,
    /// How often every current certificate's status is checked.
    pub check_interval_seconds: u64,
    /// Reaction to a revoked active certificate.
    pub on_active_revoked: RevokedActivePolicy,
    /// A cached CRL or OCSP answer is fetched again (CRLs conditionally)
    /// after this long even before its nextUpdate: CAs publish new CRLs
    /// long before the old one expires, and a revocation must not wait
    /// days to be seen.
    pub refresh_seconds: u64,
    /// ARI's Retry-After is clamped to at least this (RFC 9773 §4.3.3
    /// suggests one minute) and at most a day.
    pub ari_min_poll_seconds: u64,
    /// Ask OCSP responders for certificates no CRL covers.
    pub ocsp: bool,
    /// Poll ARI renewal windows where the CA's directory offers them.
    pub ari: bool,
    /// A CA incident opens when, within `incident_window_seconds`, this
    /// percentage of the CA's current certificates were found revoked or
    /// had their ARI window moved into the past …
    pub incident_percent: f64,
    /// … or this many of them (whichever comes first) …
    pub incident_count: i64,
    /// … and never for fewer than this many (one revoked certificate of a
    /// CA holding fifty is 2%, not an incident).
    pub incident_min_count: i64,
    /// See `incident_percent`.
    pub incident_window_seconds: i64,
    /// What an incident does besides alerting.
    pub incident_policy: IncidentPolicy,
    /// Alert when a slot's certificate has less than this fraction of its
    /// lifetime left (no renewal succeeded in time).
    pub expiry_alert_fraction: f64,
    /// Alert when a name has had no usable standby for this long.
    pub no_standby_alert_seconds: i64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            enabled: true,
            check_interval_seconds: 300,
            on_active_revoked: RevokedActivePolicy::Swap,
            refresh_seconds: 3600,
            ari_min_poll_seconds: 60,
            ocsp: true,
            ari: true,
            incident_percent: 1.0,
            incident_count: 100,
            incident_min_count: 5,
            incident_window_seconds: 3600,
            incident_policy: IncidentPolicy::Swap,
            expiry_alert_fraction: 1.0 / 3.0,
            no_standby_alert_seconds: 24 * 3600,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    resolver: Option<String>,
    authoritative_port: Option<u16>,
    propagation_timeout_seconds: Option<u64>,
    propagation_interval_ms: Option<u64>,
    delegation_zone: Option<String>,
    manual_poll_seconds: Option<u64>,
    manual_expiry_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawDnsProvider {
    id: String,
    kind: String,
    server: String,
    zones: Vec<String>,
    tsig_key_name: String,
    tsig_algorithm: Option<String>,
    tsig_secret_file: Option<PathBuf>,
    tsig_secret: Option<String>,
}

/// Where DNS-01 lookups go and how long propagation may take.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The resolver asked for SOA, NS, CNAME and A records (not for the
    /// propagation check, which asks the authoritative servers directly).
    pub resolver: SocketAddr,
    /// The port authoritative servers answer on (53 outside tests).
    pub authoritative_port: u16,
    /// How long to wait for every authoritative server to show a record.
    pub propagation_timeout_seconds: u64,
    /// How often to ask them.
    pub propagation_interval_ms: u64,
    /// The zone (controlled by a DNS provider) that delegated
    /// `_acme-challenge` CNAMEs should point into; shown by the API.
    pub delegation_zone: Option<String>,
    /// How often a `dns-01-manual` order looks for its records.
    pub manual_poll_seconds: u64,
    /// After how long unpublished manual records expire (the request is
    /// then renewed with fresh values).
    pub manual_expiry_seconds: i64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    api_listen: Option<String>,
    http01_listen: Option<String>,
    max_body_bytes: Option<usize>,
    request_timeout_seconds: Option<u64>,
    allow_cidrs: Option<Vec<String>>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    master_key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    local_mode: Option<bool>,
    local_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    enabled: Option<bool>,
    concurrency: Option<usize>,
    poll_interval_ms: Option<u64>,
    lease_seconds: Option<i64>,
    min_backoff_seconds: Option<u64>,
    max_backoff_seconds: Option<u64>,
    acme_timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    ca_preference: Option<Vec<String>>,
    renew_at_fraction: Option<f64>,
    default_key_type: Option<KeyType>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawCa {
    id: String,
    profile: String,
    directory_url: Option<String>,
    trust_roots_file: Option<PathBuf>,
    root_group: Option<String>,
    contact: Option<Vec<String>>,
    eab_kid: Option<String>,
    eab_hmac_file: Option<PathBuf>,
    eab_hmac: Option<String>,
    orders_per_hour: Option<u32>,
    concurrency: Option<u32>,
    crl_urls: Option<Vec<String>>,
}

/// One CA twincert orders from: a profile plus this deployment's overrides.
#[derive(Clone)]
pub struct CaConfig {
    /// Configured id (unique; what the API shows and names refer to).
    pub id: String,
    /// The profile it is based on.
    pub profile: CaProfile,
    /// Effective directory URL.
    pub directory_url: String,
    /// Extra PEM roots to trust for this CA's HTTPS (local CAs).
    pub trust_roots_pem: Option<String>,
    /// Effective root group (see [`CaProfile::root_group`]).
    pub root_group: String,
    /// Account contact URLs (`mailto:`).
    pub contact: Vec<String>,
    /// External Account Binding: key id and the base64url HMAC key.
    pub eab: Option<(String, String)>,
    /// Effective pacing.
    pub orders_per_hour: u32,
    /// Effective concurrency.
    pub concurrency: u32,
    /// CRLs to check besides those named in the certificates (CAs whose
    /// certificates carry no CRL distribution point, e.g. Let's Encrypt's
    /// sharded CRLs listed in CCADB).
    pub crl_urls: Vec<String>,
}

impl std::fmt::Debug for CaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaConfig")
            .field("id", &self.id)
            .field("profile", &self.profile.id)
            .field("directory_url", &self.directory_url)
            .field("root_group", &self.root_group)
            .field("eab_kid", &self.eab.as_ref().map(|(kid, _)| kid))
            .finish_non_exhaustive()
    }
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Whether this process runs the planner and order processor.
    pub enabled: bool,
    /// Orders processed at once by this process.
    pub concurrency: usize,
    /// How often the worker looks for due work when idle.
    pub poll_interval_ms: u64,
    /// How long a leased order belongs to a worker before others may take it.
    pub lease_seconds: i64,
    /// First retry delay after a failed attempt.
    pub min_backoff_seconds: u64,
    /// Retry delays never exceed this.
    pub max_backoff_seconds: u64,
    /// How long one attempt may wait on the CA (polling included).
    pub acme_timeout_seconds: u64,
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
    pub allow_cidrs: Vec<crate::domain::Cidr>,
    /// PEM certificate chain and key for HTTPS on the API listener.
    pub api_tls: Option<(PathBuf, PathBuf)>,
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
    pub deploy: crate::deploy::settings::DeployConfig,
    /// Who is told about alerts, and how.
    pub alerts: crate::deploy::settings::AlertsConfig,
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
    apply_env(&mut doc, env)?;
    toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))
}

fn env_value(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_string()),
    }
}

fn apply_env(doc: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("TWINCERT_") else {
            continue;
        };
        if RESERVED_ENV.contains(&name.as_str()) || name.starts_with("TWINCERT_TEST_") {
            continue;
        }
        if let Some(ca_rest) = rest.strip_prefix("CA_") {
            let cas = doc
                .get_mut("cas")
                .and_then(|v| v.as_array_mut())
                .ok_or_else(|| invalid(name, "…", "no [[cas]] entries to override"))?;
            let mut applied = false;
            for ca in cas.iter_mut() {
                let Some(table) = ca.as_table_mut() else {
                    continue;
                };
                let id = table.get("id").and_then(|v| v.as_str()).unwrap_or_default();
                let prefix = format!("{}_", id.to_ascii_uppercase().replace('-', "_"));
                if let Some(key) = ca_rest.strip_prefix(&prefix) {
                    let key = key.to_ascii_lowercase();
                    let v = if key == "contact" || key == "crl_urls" {
                        toml::Value::Array(vec![toml::Value::String(value.clone())])
                    } else {
                        env_value(value)
                    };
                    table.insert(key, v);
                    applied = true;
                    break;
                }
            }
            if !applied {
                return Err(invalid(name, "…", "names no configured CA id"));
            }
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
        else {
            if lower == "providers_dir" {
                doc.insert(lower, toml::Value::String(value.clone()));
                continue;
            }
            return Err(invalid(
                name,
                "…",
                format!(
                    "unknown override; expected TWINCERT_<SECTION>_<KEY> with SECTION one of {}",
                    SECTIONS.join(", ")
                ),
            ));
        };
        let key = lower[section.len() + 1..].to_string();
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(table) = table.as_table_mut() else {
            return Err(invalid(section, "…", "must be a table"));
        };
        let v = if key == "ca_preference" {
            toml::Value::Array(
                value
                    .split(',')
                    .map(|s| toml::Value::String(s.trim().to_string()))
                    .collect(),
            )
        } else if key == "url"
            || key.ends_with("_file")
            || key.ends_with("_listen")
            || key.ends_with("_dir")
        {
            toml::Value::String(value.clone())
        } else {
            env_value(value)
        };
        table.insert(key, v);
    }
    Ok(())
}

/// `p` relative to the config file's directory unless absolute.
pub(crate) fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        invalid(
            key,
            format!("\"{v}\""),
            "expected an address like 127.0.0.1:8443 or [::]:80",
        )
    })
}

fn validate(raw: RawConfig, base: &Path, credentials: bool) -> Result<Config, ConfigError> {
    let api_listen = parse_addr(
        "server.api_listen",
        raw.server.api_listen.as_deref().unwrap_or("127.0.0.1:8443"),
    )?;
    let http01_listen = parse_addr(
        "server.http01_listen",
        raw.server.http01_listen.as_deref().unwrap_or("0.0.0.0:80"),
    )?;
    let request_timeout_seconds = raw.server.request_timeout_seconds.unwrap_or(30);
    if request_timeout_seconds == 0 {
        return Err(invalid(
            "server.request_timeout_seconds",
            0,
            "must be at least 1",
        ));
    }
    let mut allow_cidrs = Vec::new();
    for c in raw.server.allow_cidrs.clone().unwrap_or_default() {
        allow_cidrs.push(
            c.parse::<crate::domain::Cidr>()
                .map_err(|e| invalid("server.allow_cidrs", &c, e))?,
        );
    }
    let api_tls = match (&raw.server.tls_cert_file, &raw.server.tls_key_file) {
        (Some(c), Some(k)) => Some((resolve(base, c.clone()), resolve(base, k.clone()))),
        (None, None) => None,
        (Some(c), None) => {
            return Err(invalid(
                "server.tls_cert_file",
                c.display(),
                "needs server.tls_key_file too",
            ));
        }
        (None, Some(k)) => {
            return Err(invalid(
                "server.tls_key_file",
                k.display(),
                "needs server.tls_cert_file too",
            ));
        }
    };
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(64 * 1024);
    if !(256..=16 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(invalid(
            "server.max_body_bytes",
            max_body_bytes,
            "must be between 256 and 16777216",
        ));
    }
    let store_url = raw
        .store
        .url
        .unwrap_or_else(|| "sqlite://twincert.db".into());
    if !(store_url.starts_with("sqlite:")
        || store_url.starts_with("postgres://")
        || store_url.starts_with("postgresql://"))
    {
        let shown: String = store_url
            .split('@')
            .next_back()
            .unwrap_or_default()
            .to_string();
        return Err(invalid(
            "store.url",
            shown,
            "must start with sqlite:// or postgres://",
        ));
    }

    let profiles = providers::load(raw.providers_dir.map(|p| resolve(base, p)).as_deref())?;
    let mut cas = BTreeMap::new();
    for (i, ca) in raw.cas.iter().enumerate() {
        let key = |k: &str| format!("cas[{i}].{k}");
        if crate::domain::ManagedNameId::parse(&ca.id).is_err() {
            return Err(invalid(
                &key("id"),
                &ca.id,
                "must be lower-case letters, digits, '.', '_' or '-'",
            ));
        }
        if cas.contains_key(&ca.id) {
            return Err(invalid(&key("id"), &ca.id, "is used by two CA entries"));
        }
        let profile = profiles.get(&ca.profile).cloned().ok_or_else(|| {
            invalid(
                &key("profile"),
                &ca.profile,
                format!(
                    "no such profile; known: {}",
                    profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let directory_url = ca
            .directory_url
            .clone()
            .unwrap_or_else(|| profile.directory_url.clone());
        match url::Url::parse(&directory_url) {
            Ok(u) if u.scheme() == "https" => {}
            _ => {
                return Err(invalid(
                    &key("directory_url"),
                    &directory_url,
                    "must be an https:// URL (RFC 8555 §6.1)",
                ));
            }
        }
        let trust_roots_pem = match &ca.trust_roots_file {
            Some(p) => {
                let p = resolve(base, p.clone());
                let pem = std::fs::read_to_string(&p).map_err(|e| {
                    invalid(
                        &key("trust_roots_file"),
                        p.display(),
                        format!("cannot read: {e}"),
                    )
                })?;
                if !pem.contains("BEGIN CERTIFICATE") {
                    return Err(invalid(
                        &key("trust_roots_file"),
                        p.display(),
                        "contains no PEM certificate",
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        let hmac = match (&ca.eab_hmac, &ca.eab_hmac_file) {
            (Some(h), _) => Some(h.trim().to_string()),
            (None, Some(_)) if !credentials => Some(String::new()),
            (None, Some(p)) => {
                let p = resolve(base, p.clone());
                Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| {
                            invalid(
                                &key("eab_hmac_file"),
                                p.display(),
                                format!("cannot read: {e}"),
                            )
                        })?
                        .trim()
                        .to_string(),
                )
            }
            (None, None) => None,
        };
        let eab = match (&ca.eab_kid, hmac) {
            (Some(kid), Some(hmac)) => Some((kid.clone(), hmac)),
            (None, None) => None,
            (Some(kid), None) => {
                return Err(invalid(
                    &key("eab_kid"),
                    kid,
                    "needs eab_hmac_file (or TWINCERT_CA_<ID>_EAB_HMAC)",
                ));
            }
            (None, Some(_)) => return Err(invalid(&key("eab_hmac"), "(secret)", "needs eab_kid")),
        };
        if profile.eab_required && eab.is_none() {
            return Err(invalid(
                &key("eab_kid"),
                "(missing)",
                format!("profile '{}' requires External Account Binding", profile.id),
            ));
        }
        for c in ca.contact.iter().flatten() {
            if !c.starts_with("mailto:") {
                return Err(invalid(&key("contact"), c, "contacts must be mailto: URLs"));
            }
        }
        let orders_per_hour = ca
            .orders_per_hour
            .unwrap_or(profile.rate_limits.orders_per_hour);
        let concurrency = ca.concurrency.unwrap_or(profile.rate_limits.concurrency);
        if orders_per_hour == 0 || concurrency == 0 {
            return Err(invalid(
                &key("orders_per_hour"),
                orders_per_hour,
                "pacing values must be at least 1",
            ));
        }
        let crl_urls = ca.crl_urls.clone().unwrap_or_default();
        for u in &crl_urls {
            match url::Url::parse(u) {
                Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
                _ => {
                    return Err(invalid(
                        &key("crl_urls"),
                        u,
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        cas.insert(
            ca.id.clone(),
            CaConfig {
                crl_urls,
                id: ca.id.clone(),
                root_group: ca
                    .root_group
                    .clone()
                    .unwrap_or_else(|| profile.root_group.clone()),
                directory_url,
                trust_roots_pem,
                contact: ca.contact.clone().unwrap_or_default(),
                eab,
                orders_per_hour,
                concurrency,
                profile,
            },
        );
    }
    if cas.len() < 2 {
        return Err(invalid(
            "cas",
            format!("{} entries", cas.len()),
            "at least two CAs are needed: every name gets certificates from two different CAs",
        ));
    }
    let ca_preference = raw
        .policy
        .ca_preference
        .unwrap_or_else(|| raw.cas.iter().map(|c| c.id.clone()).collect());
    let mut seen = BTreeSet::new();
    for id in &ca_preference {
        if !cas.contains_key(id) {
            return Err(invalid(
                "policy.ca_preference",
                id,
                "is not a configured CA id",
            ));
        }
        if !seen.insert(id) {
            return Err(invalid("policy.ca_preference", id, "is listed twice"));
        }
    }
    let renew_at_fraction = raw.policy.renew_at_fraction.unwrap_or(2.0 / 3.0);
    if !(0.05..=0.95).contains(&renew_at_fraction) {
        return Err(invalid(
            "policy.renew_at_fraction",
            renew_at_fraction,
            "must be between 0.05 and 0.95",
        ));
    }
    let w = raw.worker;
    let worker = WorkerConfig {
        enabled: w.enabled.unwrap_or(true),
        concurrency: w.concurrency.unwrap_or(32),
        poll_interval_ms: w.poll_interval_ms.unwrap_or(500),
        lease_seconds: w.lease_seconds.unwrap_or(120),
        min_backoff_seconds: w.min_backoff_seconds.unwrap_or(2),
        max_backoff_seconds: w.max_backoff_seconds.unwrap_or(3600),
        acme_timeout_seconds: w.acme_timeout_seconds.unwrap_or(90),
    };
    if !(1..=4096).contains(&worker.concurrency) {
        return Err(invalid(
            "worker.concurrency",
            worker.concurrency,
            "must be between 1 and 4096",
        ));
    }
    if !(10..=60_000).contains(&worker.poll_interval_ms) {
        return Err(invalid(
            "worker.poll_interval_ms",
            worker.poll_interval_ms,
            "must be between 10 and 60000",
        ));
    }
    if worker.lease_seconds < 2 {
        return Err(invalid(
            "worker.lease_seconds",
            worker.lease_seconds,
            "must be at least 2 (leases are renewed every third of it)",
        ));
    }
    if worker.min_backoff_seconds == 0 || worker.max_backoff_seconds < worker.min_backoff_seconds {
        return Err(invalid(
            "worker.max_backoff_seconds",
            worker.max_backoff_seconds,
            "must be >= min_backoff_seconds >= 1",
        ));
    }
    let log_json = match raw.logging.format.as_deref().unwrap_or("text") {
        "text" => false,
        "json" => true,
        other => return Err(invalid("logging.format", other, "must be 'text' or 'json'")),
    };
    let dns = RawDns { ..raw.dns };
    let resolver_text = dns.resolver.as_deref().unwrap_or("127.0.0.1:53");
    let dns_config = DnsConfig {
        resolver: resolver_text
            .parse()
            .map_err(|_| invalid("dns.resolver", resolver_text, "must be IP:PORT"))?,
        authoritative_port: dns.authoritative_port.unwrap_or(53),
        propagation_timeout_seconds: dns.propagation_timeout_seconds.unwrap_or(120),
        propagation_interval_ms: dns.propagation_interval_ms.unwrap_or(500),
        manual_poll_seconds: dns.manual_poll_seconds.unwrap_or(30).max(1),
        manual_expiry_seconds: dns.manual_expiry_seconds.unwrap_or(7 * 24 * 3600).max(1),
        delegation_zone: match &dns.delegation_zone {
            Some(z) => Some(
                crate::domain::DnsName::parse(z)
                    .map_err(|e| invalid("dns.delegation_zone", z, e.to_string()))?
                    .as_str()
                    .to_string(),
            ),
            None => None,
        },
    };
    if dns_config.propagation_timeout_seconds == 0 || dns_config.propagation_interval_ms == 0 {
        return Err(invalid(
            "dns.propagation_timeout_seconds",
            dns_config.propagation_timeout_seconds,
            "timeout and interval must be positive",
        ));
    }
    let mut dns_providers = BTreeMap::new();
    for (i, p) in raw.dns_providers.iter().enumerate() {
        let key = |k: &str| format!("dns_providers[{i}].{k}");
        if crate::domain::ManagedNameId::parse(&p.id).is_err() || dns_providers.contains_key(&p.id)
        {
            return Err(invalid(&key("id"), &p.id, "must be a unique lower-case id"));
        }
        if p.kind != "rfc2136" {
            return Err(invalid(&key("kind"), &p.kind, "the only kind is 'rfc2136'"));
        }
        let server: SocketAddr = p
            .server
            .parse()
            .map_err(|_| invalid(&key("server"), &p.server, "must be IP:PORT"))?;
        let mut zones = Vec::new();
        for z in &p.zones {
            let zone = crate::domain::DnsName::parse(z)
                .map_err(|e| invalid(&key("zones"), z, e.to_string()))?;
            zones.push(zone.as_str().to_string());
        }
        if zones.is_empty() {
            return Err(invalid(&key("zones"), "[]", "list at least one zone"));
        }
        let algorithm = p
            .tsig_algorithm
            .clone()
            .unwrap_or_else(|| "hmac-sha256".into());
        if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&algorithm.as_str()) {
            return Err(invalid(
                &key("tsig_algorithm"),
                &algorithm,
                "must be hmac-sha256, hmac-sha384 or hmac-sha512",
            ));
        }
        let secret = match (&p.tsig_secret, &p.tsig_secret_file) {
            (Some(s), None) => s.trim().to_string(),
            (None, Some(_)) if !credentials => String::new(),
            (None, Some(f)) => {
                let f = resolve(base, f.clone());
                std::fs::read_to_string(&f)
                    .map_err(|e| invalid(&key("tsig_secret_file"), f.display(), e.to_string()))?
                    .trim()
                    .to_string()
            }
            _ => {
                return Err(invalid(
                    &key("tsig_secret"),
                    "(secret)",
                    "give exactly one of tsig_secret and tsig_secret_file",
                ));
            }
        };
        {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(&secret)
                .is_err()
            {
                return Err(invalid(&key("tsig_secret"), "(secret)", "is not base64"));
            }
        }
        dns_providers.insert(
            p.id.clone(),
            DnsProviderConfig {
                id: p.id.clone(),
                server,
                zones,
                tsig_key_name: p.tsig_key_name.clone(),
                tsig_algorithm: algorithm,
                tsig_secret_b64: secret,
            },
        );
    }
    let local_dir = resolve(
        base,
        raw.secrets
            .local_dir
            .unwrap_or_else(|| PathBuf::from(".twincert-local")),
    );
    Ok(Config {
        api_listen,
        http01_listen,
        max_body_bytes,
        request_timeout_seconds,
        allow_cidrs,
        api_tls,
        store_url,
        master_key_file: raw.secrets.master_key_file.map(|p| resolve(base, p)),
        admin_token_file: raw.secrets.admin_token_file.map(|p| resolve(base, p)),
        local_mode: raw.secrets.local_mode.unwrap_or(false),
        local_dir,
        worker,
        ca_preference,
        renew_at_fraction,
        default_key_type: raw.policy.default_key_type.unwrap_or_default(),
        log_json,
        log_level: raw.logging.level.unwrap_or_else(|| "info".into()),
        cas,
        dns: dns_config,
        dns_providers,
        revocation: validate_revocation(raw.revocation)?,
        deploy: crate::deploy::settings::validate_deploy(
            raw.deploy,
            raw.destinations,
            base,
            credentials,
        )?,
        alerts: crate::deploy::settings::validate_alerts(raw.alerts, base, credentials)?,
    })
}

fn validate_revocation(r: RawRevocation) -> Result<RevocationConfig, ConfigError> {
    let d = RevocationConfig::default();
    let on_active_revoked = match r.on_active_revoked.as_deref().unwrap_or("swap") {
        "swap" => RevokedActivePolicy::Swap,
        "alert" => RevokedActivePolicy::Alert,
        other => {
            return Err(invalid(
                "revocation.on_active_revoked",
                other,
                "must be 'swap' or 'alert'",
            ));
        }
    };
    let incident_policy = match r.incident_policy.as_deref().unwrap_or("swap") {
        "swap" => IncidentPolicy::Swap,
        "manual" => IncidentPolicy::Manual,
        other => {
            return Err(invalid(
                "revocation.incident_policy",
                other,
                "must be 'swap' or 'manual'",
            ));
        }
    };
    let c = RevocationConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        check_interval_seconds: r.check_interval_seconds.unwrap_or(d.check_interval_seconds),
        on_active_revoked,
        refresh_seconds: r.refresh_seconds.unwrap_or(d.refresh_seconds),
        ari_min_poll_seconds: r
            .ari_min_poll_seconds
            .unwrap_or(d.ari_min_poll_seconds)
            .clamp(1, 86_400),
        ocsp: r.ocsp.unwrap_or(d.ocsp),
        ari: r.ari.unwrap_or(d.ari),
        incident_percent: r.incident_percent.unwrap_or(d.incident_percent),
        incident_count: r.incident_count.unwrap_or(d.incident_count),
        incident_min_count: r.incident_min_count.unwrap_or(d.incident_min_count),
        incident_window_seconds: r
            .incident_window_seconds
            .unwrap_or(d.incident_window_seconds),
        incident_policy,
        expiry_alert_fraction: r.expiry_alert_fraction.unwrap_or(d.expiry_alert_fraction),
        no_standby_alert_seconds: match r.no_standby_alert_hours {
            Some(h) if h.is_finite() && h >= 0.0 => (h * 3600.0) as i64,
            Some(h) => {
                return Err(invalid(
                    "revocation.no_standby_alert_hours",
                    h,
                    "must be a number of hours >= 0",
                ));
            }
            None => d.no_standby_alert_seconds,
        },
    };
    if !(1..=86_400).contains(&c.check_interval_seconds) {
        return Err(invalid(
            "revocation.check_interval_seconds",
            c.check_interval_seconds,
            "must be between 1 and 86400",
        ));
    }
    if c.refresh_seconds == 0 {
        return Err(invalid(
            "revocation.refresh_seconds",
            0,
            "must be at least 1",
        ));
    }
    if !(c.incident_percent > 0.0 && c.incident_percent <= 100.0) {
        return Err(invalid(
            "revocation.incident_percent",
            c.incident_percent,
            "must be above 0 and at most 100",
        ));
    }
    if c.incident_count < 1 || c.incident_min_count < 1 {
        return Err(invalid(
            "revocation.incident_count",
            c.incident_count.min(c.incident_min_count),
            "incident_count and incident_min_count must be at least 1",
        ));
    }
    if c.incident_window_seconds < 1 {
        return Err(invalid(
            "revocation.incident_window_seconds",
            c.incident_window_seconds,
            "must be at least 1",
        ));
    }
    if !(c.expiry_alert_fraction > 0.0 && c.expiry_alert_fraction < 1.0) {
        return Err(invalid(
            "revocation.expiry_alert_fraction",
            c.expiry_alert_fraction,
            "must be between 0 and 1 (a fraction of the certificate's lifetime)",
        ));
    }
    Ok(c)
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
        assert_eq!(cfg.dns_providers["bind"].tsig_secret_b64, "");
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(text, &env, None)
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
}
