//! The process's own sections: `[server]` (listeners, body limit, request
//! timeout, client allowlist, API TLS), `[store]` (the database URL),
//! `[secrets]` (where the master key and admin token come from) and
//! `[logging]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, invalid, resolve};
use crate::domain::Cidr;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    api_listen: Option<String>,
    http01_listen: Option<String>,
    max_body_bytes: Option<usize>,
    request_timeout_seconds: Option<u64>,
    allow_cidrs: Option<Vec<String>>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    public_url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecrets {
    master_key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    local_mode: Option<bool>,
    local_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    format: Option<String>,
    level: Option<String>,
}

/// `[server]`, validated (copied into [`super::Config`]'s fields).
pub(super) struct Server {
    pub api_listen: SocketAddr,
    pub http01_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    pub allow_cidrs: Vec<Cidr>,
    pub api_tls: Option<(PathBuf, PathBuf)>,
    pub public_url: Option<String>,
}

/// `[secrets]`, with paths resolved.
pub(super) struct Secrets {
    pub master_key_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    pub local_mode: bool,
    pub local_dir: PathBuf,
}

/// `[logging]`.
pub(super) struct Logging {
    pub json: bool,
    pub level: String,
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

/// `[server]`: listener addresses, timeout, allowlist, TLS files and body
/// limit.
pub(super) fn validate_server(raw: RawServer, base: &Path) -> Result<Server, ConfigError> {
    let api_listen = parse_addr(
        "server.api_listen",
        raw.api_listen.as_deref().unwrap_or("127.0.0.1:8443"),
    )?;
    let http01_listen = parse_addr(
        "server.http01_listen",
        raw.http01_listen.as_deref().unwrap_or("0.0.0.0:80"),
    )?;
    let request_timeout_seconds = raw.request_timeout_seconds.unwrap_or(30);
    if request_timeout_seconds == 0 {
        return Err(invalid(
            "server.request_timeout_seconds",
            0,
            "must be at least 1",
        ));
    }
    let mut allow_cidrs = Vec::new();
    for c in raw.allow_cidrs.unwrap_or_default() {
        allow_cidrs.push(
            c.parse::<Cidr>()
                .map_err(|e| invalid("server.allow_cidrs", &c, e))?,
        );
    }
    let api_tls = match (&raw.tls_cert_file, &raw.tls_key_file) {
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
    let max_body_bytes = raw.max_body_bytes.unwrap_or(64 * 1024);
    if !(256..=16 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(invalid(
            "server.max_body_bytes",
            max_body_bytes,
            "must be between 256 and 16777216",
        ));
    }
    let public_url = raw.public_url.as_deref().map(public_url).transpose()?;
    Ok(Server {
        api_listen,
        http01_listen,
        max_body_bytes,
        request_timeout_seconds,
        allow_cidrs,
        api_tls,
        public_url,
    })
}

/// `server.public_url`: where people outside reach this API (links in
/// install-request mails). https, or http only to a loopback address (a
/// test, a local proxy); no query, fragment or credentials. Returned
/// without a trailing `/`.
fn public_url(v: &str) -> Result<String, ConfigError> {
    const KEY: &str = "server.public_url";
    let u = url::Url::parse(v).map_err(|e| {
        invalid(
            KEY,
            v,
            format!("{e}; give an absolute URL like https://twincert.example.com"),
        )
    })?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
        return Err(invalid(
            KEY,
            v,
            "must be https:// (http:// only to a loopback address)",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(invalid(
            KEY,
            v,
            "must have no query, fragment or credentials",
        ));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

/// `store.url`: SQLite or PostgreSQL; an error shows the URL without its
/// credentials.
pub(super) fn validate_store_url(raw: RawStore) -> Result<String, ConfigError> {
    let store_url = raw.url.unwrap_or_else(|| "sqlite://twincert.db".into());
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
    Ok(store_url)
}

/// `[secrets]`: nothing to refuse, paths resolved against the file's
/// directory.
pub(super) fn validate_secrets(raw: RawSecrets, base: &Path) -> Secrets {
    Secrets {
        master_key_file: raw.master_key_file.map(|p| resolve(base, p)),
        admin_token_file: raw.admin_token_file.map(|p| resolve(base, p)),
        local_mode: raw.local_mode.unwrap_or(false),
        local_dir: resolve(
            base,
            raw.local_dir
                .unwrap_or_else(|| PathBuf::from(".twincert-local")),
        ),
    }
}

/// `[logging]`: `text` or `json`, and a `tracing` filter (default `info`).
pub(super) fn validate_logging(raw: RawLogging) -> Result<Logging, ConfigError> {
    let log_json = match raw.format.as_deref().unwrap_or("text") {
        "text" => false,
        "json" => true,
        other => return Err(invalid("logging.format", other, "must be 'text' or 'json'")),
    };
    Ok(Logging {
        json: log_json,
        level: raw.level.unwrap_or_else(|| "info".into()),
    })
}
