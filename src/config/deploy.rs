//! The `[deploy]` section and the `[[destinations]]` entries: where
//! certificates go (files, a webhook, a Kubernetes Secret) and how often
//! endpoints are checked. Destinations are configured here, not through the
//! API, because they carry secrets (webhook HMAC keys) and paths on the
//! worker's host; a name only refers to them by id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, read_secret, resolve};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeploy {
    check_interval_seconds: Option<u64>,
    recheck_failed_seconds: Option<u64>,
    check_timeout_seconds: Option<u64>,
    check_delay_seconds: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    id: String,
    kind: String,
    // files
    dir: Option<PathBuf>,
    post_deploy_command: Option<Vec<String>>,
    post_deploy_timeout_seconds: Option<u64>,
    keep_versions: Option<usize>,
    // webhook
    url: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    include_key: Option<bool>,
    // kubernetes-secret
    namespace: Option<String>,
    secret_name: Option<String>,
    api_server: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    // manual
    password_delivery: Option<String>,
    link_ttl_hours: Option<f64>,
    one_time_link: Option<bool>,
    remind_after_hours: Option<f64>,
}

/// How many version directories per name are kept when not configured:
/// enough to roll back by hand a few times, few enough not to pile up keys.
pub const DEFAULT_KEEP_VERSIONS: usize = 5;

/// How long a post-deploy command may run when not configured; a reload
/// that takes longer is stuck.
pub const DEFAULT_POST_DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how one name's files are deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesTarget {
    /// The root of the `archive/` and `live/` trees; created if missing.
    pub dir: PathBuf,
    /// Run after each deploy, as argv (no shell), e.g.
    /// `["systemctl", "reload", "nginx"]`.
    pub post_deploy_command: Option<Vec<String>>,
    /// The command is killed after this long.
    pub post_deploy_timeout: Duration,
    /// Version directories kept per name (at least the current and the
    /// replaced one are always kept).
    pub keep_versions: usize,
}

impl FilesTarget {
    /// A target at `dir` with no command and the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FilesTarget {
            dir: dir.into(),
            post_deploy_command: None,
            post_deploy_timeout: DEFAULT_POST_DEPLOY_TIMEOUT,
            keep_versions: DEFAULT_KEEP_VERSIONS,
        }
    }
}

/// A webhook destination: the chain (and the key only when asked) POSTed
/// as JSON, signed with HMAC-SHA256.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    /// HMAC key. Secret.
    pub secret: Vec<u8>,
    /// Whether the private key travels too.
    pub include_key: bool,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("include_key", &self.include_key)
            .finish()
    }
}

/// Where a Kubernetes Secret destination's credentials come from.
#[derive(Debug, Clone)]
pub enum KubeSource {
    /// The pod's service account.
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// An API server URL, a bearer token file (re-read by the client) and
    /// PEM roots for the server's certificate.
    Explicit {
        api_server: String,
        token_file: Option<PathBuf>,
        ca_pem: Option<String>,
    },
}

/// A Kubernetes Secret destination.
#[derive(Debug, Clone)]
pub struct KubeTarget {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Secret name; `{name}` is replaced by the managed name with `.`
    /// and `*` made DNS-label safe.
    pub secret_name: String,
    /// Credentials.
    pub source: KubeSource,
}

/// How the password of an install package reaches the server's
/// administrator: never in the message that carries the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordDelivery {
    /// Shown once to an operator who asks through the API
    /// (`POST /v1/names/{name}/deploy/{destination}/password`), who passes
    /// it on by another channel.
    Api,
    /// Mailed to the administrator in a second message.
    Mail,
}

impl PasswordDelivery {
    /// `api` or `mail`, as configured and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordDelivery::Api => "api",
            PasswordDelivery::Mail => "mail",
        }
    }
}

/// A `manual` destination: twincert cannot write to the server, so it
/// mails the endpoints' `admin_contact` an install request with a download
/// link to an encrypted package (see `deploy::package`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualTarget {
    /// Where the package's password goes.
    pub password_delivery: PasswordDelivery,
    /// A download link works this long after it was mailed.
    pub link_ttl_seconds: i64,
    /// The link works once (the default) or until it expires.
    pub one_time_link: bool,
    /// A reminder is mailed when the deployment is still `requested`
    /// after this long (once per package).
    pub remind_after_seconds: i64,
}

/// One configured destination.
#[derive(Debug, Clone)]
pub enum Destination {
    Files(FilesTarget),
    Webhook(WebhookTarget),
    KubernetesSecret(KubeTarget),
    Manual(ManualTarget),
}

impl Destination {
    /// `files`, `webhook`, `kubernetes-secret`.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Files(_) => "files",
            Destination::Webhook(_) => "webhook",
            Destination::KubernetesSecret(_) => "kubernetes-secret",
            Destination::Manual(_) => "manual",
        }
    }
}

/// `[deploy]` and `[[destinations]]`.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// How often a confirmed endpoint is checked again (default daily).
    pub check_interval_seconds: u64,
    /// How soon a failing endpoint is checked again.
    pub recheck_failed_seconds: u64,
    /// Limit on each step of an endpoint check (resolve, each connect,
    /// the handshake).
    pub check_timeout: Duration,
    /// Pause between writing a certificate and checking its endpoints
    /// (a server or ingress controller reloading).
    pub check_delay_seconds: u64,
    /// Writes and checks run at once.
    pub concurrency: usize,
    /// Destinations by id.
    pub destinations: BTreeMap<String, Destination>,
}

pub(super) fn validate_deploy(
    raw: RawDeploy,
    dests: Vec<RawDestination>,
    base: &Path,
    credentials: bool,
) -> Result<DeployConfig, ConfigError> {
    let check_interval_seconds = raw.check_interval_seconds.unwrap_or(86_400);
    if !(1..=30 * 86_400).contains(&check_interval_seconds) {
        return Err(invalid(
            "deploy.check_interval_seconds",
            check_interval_seconds,
            "must be between 1 and 2592000",
        ));
    }
    let recheck_failed_seconds = raw.recheck_failed_seconds.unwrap_or(300);
    if !(1..=86_400).contains(&recheck_failed_seconds) {
        return Err(invalid(
            "deploy.recheck_failed_seconds",
            recheck_failed_seconds,
            "must be between 1 and 86400",
        ));
    }
    let timeout = raw.check_timeout_seconds.unwrap_or(10);
    if !(1..=120).contains(&timeout) {
        return Err(invalid(
            "deploy.check_timeout_seconds",
            timeout,
            "must be between 1 and 120",
        ));
    }
    let check_delay_seconds = raw.check_delay_seconds.unwrap_or(2);
    if check_delay_seconds > 3600 {
        return Err(invalid(
            "deploy.check_delay_seconds",
            check_delay_seconds,
            "must be at most 3600",
        ));
    }
    let concurrency = raw.concurrency.unwrap_or(32);
    if !(1..=1024).contains(&concurrency) {
        return Err(invalid(
            "deploy.concurrency",
            concurrency,
            "must be between 1 and 1024",
        ));
    }
    let mut destinations = BTreeMap::new();
    for d in dests {
        let key = format!("destinations.{}", d.id);
        if d.id.is_empty()
            || d.id.len() > 64
            || !d
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "destinations.id",
                &d.id,
                "1-64 letters, digits, '-' or '_'",
            ));
        }
        let dest = match d.kind.as_str() {
            "files" => {
                let dir = d
                    .dir
                    .clone()
                    .ok_or_else(|| invalid(&format!("{key}.dir"), "", "required for files"))?;
                let dir = resolve(base, dir);
                let mut t = FilesTarget::new(dir);
                if let Some(cmd) = d.post_deploy_command.clone() {
                    if cmd.is_empty() || cmd[0].is_empty() {
                        return Err(invalid(
                            &format!("{key}.post_deploy_command"),
                            "[]",
                            "give the program and its arguments, e.g. [\"systemctl\", \"reload\", \"nginx\"]",
                        ));
                    }
                    t.post_deploy_command = Some(cmd);
                }
                if let Some(s) = d.post_deploy_timeout_seconds {
                    t.post_deploy_timeout = Duration::from_secs(s.clamp(1, 3600));
                }
                if let Some(k) = d.keep_versions {
                    t.keep_versions = k.clamp(2, 100);
                }
                Destination::Files(t)
            }
            "webhook" => {
                let url = d
                    .url
                    .clone()
                    .ok_or_else(|| invalid(&format!("{key}.url"), "", "required for webhook"))?;
                let parsed = url::Url::parse(&url)
                    .map_err(|e| invalid(&format!("{key}.url"), &url, e.to_string()))?;
                // Certificates (and maybe keys) travel here: https only,
                // except to this machine (a local agent, tests).
                let loopback = matches!(
                    parsed.host(),
                    Some(url::Host::Ipv4(a)) if a.is_loopback()
                ) || matches!(parsed.host(), Some(url::Host::Ipv6(a)) if a.is_loopback())
                    || parsed.host_str() == Some("localhost");
                if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                    return Err(invalid(
                        &format!("{key}.url"),
                        &url,
                        "must be https:// (http:// only to a loopback address)",
                    ));
                }
                let secret = read_secret(
                    &format!("{key}.secret_file"),
                    d.secret_file.as_deref(),
                    d.secret_env.as_deref(),
                    base,
                    credentials,
                )?;
                if credentials && secret.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(
                        &format!("{key}.secret_file"),
                        "",
                        "a webhook destination needs an HMAC secret (secret_file or secret_env)",
                    ));
                }
                Destination::Webhook(WebhookTarget {
                    url,
                    secret: secret.unwrap_or_default().into_bytes(),
                    include_key: d.include_key.unwrap_or(false),
                })
            }
            "kubernetes-secret" => {
                let namespace = d.namespace.clone().ok_or_else(|| {
                    invalid(
                        &format!("{key}.namespace"),
                        "",
                        "required for kubernetes-secret",
                    )
                })?;
                let abs = |f: &PathBuf| resolve(base, f.clone());
                let source = match (&d.api_server, &d.kubeconfig) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            &format!("{key}.kubeconfig"),
                            "",
                            "give api_server or kubeconfig, not both",
                        ));
                    }
                    (Some(api), None) => {
                        url::Url::parse(api).map_err(|e| {
                            invalid(&format!("{key}.api_server"), api, e.to_string())
                        })?;
                        let ca_pem = match &d.ca_file {
                            Some(f) if credentials => {
                                Some(std::fs::read_to_string(abs(f)).map_err(|e| {
                                    invalid(
                                        &format!("{key}.ca_file"),
                                        f.display(),
                                        format!("cannot read: {e}"),
                                    )
                                })?)
                            }
                            _ => None,
                        };
                        KubeSource::Explicit {
                            api_server: api.clone(),
                            token_file: d.token_file.as_ref().map(abs),
                            ca_pem,
                        }
                    }
                    (None, Some(kc)) => KubeSource::Kubeconfig(abs(kc)),
                    (None, None) => KubeSource::InCluster,
                };
                Destination::KubernetesSecret(KubeTarget {
                    namespace,
                    secret_name: d.secret_name.clone().unwrap_or_else(|| "{name}-tls".into()),
                    source,
                })
            }
            "manual" => {
                let password_delivery = match d.password_delivery.as_deref().unwrap_or("api") {
                    "api" => PasswordDelivery::Api,
                    "mail" => PasswordDelivery::Mail,
                    other => {
                        return Err(invalid(
                            &format!("{key}.password_delivery"),
                            other,
                            "must be 'api' (shown once to an operator) or 'mail' (a second message)",
                        ));
                    }
                };
                Destination::Manual(ManualTarget {
                    password_delivery,
                    link_ttl_seconds: hours(
                        &format!("{key}.link_ttl_hours"),
                        d.link_ttl_hours,
                        72.0,
                    )?,
                    one_time_link: d.one_time_link.unwrap_or(true),
                    remind_after_seconds: hours(
                        &format!("{key}.remind_after_hours"),
                        d.remind_after_hours,
                        24.0,
                    )?,
                })
            }
            other => {
                return Err(invalid(
                    &format!("{key}.kind"),
                    other,
                    "must be 'files', 'webhook', 'kubernetes-secret' or 'manual'",
                ));
            }
        };
        if destinations.insert(d.id.clone(), dest).is_some() {
            return Err(invalid("destinations.id", &d.id, "defined twice"));
        }
    }
    Ok(DeployConfig {
        check_interval_seconds,
        recheck_failed_seconds,
        check_timeout: Duration::from_secs(timeout),
        check_delay_seconds,
        concurrency,
        destinations,
    })
}

/// A duration in hours (fractions allowed: 0.5 is 30 minutes) as whole
/// seconds, at least one; more than 30 days is refused.
fn hours(key: &str, v: Option<f64>, default: f64) -> Result<i64, ConfigError> {
    let h = v.unwrap_or(default);
    if !h.is_finite() || h <= 0.0 || h > 720.0 {
        return Err(invalid(
            key,
            h,
            "must be more than 0 and at most 720 hours (fractions allowed, e.g. 0.5)",
        ));
    }
    Ok(((h * 3600.0).round() as i64).max(1))
}
