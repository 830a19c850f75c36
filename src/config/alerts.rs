//! The `[alerts]` section: who is told about alerts (e-mail recipients,
//! Slack-compatible webhooks), how often a repeated alert is sent, when a
//! failing order becomes an alert, and the SMTP server mail goes through.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, read_secret, resolve};
use crate::domain::check_mail_address;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    webhooks: Vec<String>,
    rate_limit_seconds: Option<u64>,
    issuance_failing_hours: Option<f64>,
    smtp: Option<RawSmtp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    from: String,
    timeout_seconds: Option<u64>,
    ca_file: Option<PathBuf>,
}

/// `[alerts]`.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Certificate administrators: every alert goes to them.
    pub emails: Vec<String>,
    /// Slack-compatible incoming webhook URLs.
    pub webhooks: Vec<String>,
    /// An open alert raised again is repeated at most this often.
    pub rate_limit_seconds: u64,
    /// An order failing for longer than this raises `issuance_failing`.
    pub issuance_failing_seconds: i64,
    /// SMTP server, when mail is sent.
    pub smtp: Option<SmtpConfig>,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP: a local relay or a test sink only (credentials and
    /// alerts travel in clear).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Where and as whom alert e-mail is sent.
#[derive(Clone)]
pub struct SmtpConfig {
    /// The SMTP server's host name; also the name its certificate must have.
    pub host: String,
    /// The server's port (25, 465 or 587 usually).
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// The login, when the server wants one (given with `password`).
    pub username: Option<String>,
    /// The password. Secret: never shown by `Debug`.
    pub password: Option<String>,
    /// The sender, `alerts@example.com` or `twincert <alerts@example.com>`.
    pub from: String,
    /// Limit on each network operation of a send.
    pub timeout: Duration,
    /// PEM certificates of a private CA that issued the server's
    /// certificate, trusted in addition to the system's roots.
    pub extra_root_pem: Option<String>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("extra_root_pem", &self.extra_root_pem.is_some())
            .finish()
    }
}

pub(super) fn validate_alerts(
    raw: RawAlerts,
    base: &Path,
    credentials: bool,
) -> Result<AlertsConfig, ConfigError> {
    for w in &raw.webhooks {
        url::Url::parse(w).map_err(|e| invalid("alerts.webhooks", w, e.to_string()))?;
    }
    for e in &raw.emails {
        if let Err(err) = check_mail_address(e) {
            return Err(invalid("alerts.emails", e, err.to_string()));
        }
    }
    let smtp = match raw.smtp {
        None => None,
        Some(s) => {
            let security = match s.security.as_deref().unwrap_or("starttls") {
                "none" => SmtpSecurity::None,
                "starttls" => SmtpSecurity::StartTls,
                "tls" => SmtpSecurity::Tls,
                other => {
                    return Err(invalid(
                        "alerts.smtp.security",
                        other,
                        "must be 'starttls', 'tls' or 'none'",
                    ));
                }
            };
            let port = s.port.unwrap_or(match security {
                SmtpSecurity::Tls => 465,
                SmtpSecurity::StartTls => 587,
                SmtpSecurity::None => 25,
            });
            let password = read_secret(
                "alerts.smtp.password_file",
                s.password_file.as_deref(),
                s.password_env.as_deref(),
                base,
                credentials,
            )?;
            let extra_root_pem = match s.ca_file.map(|f| resolve(base, f)) {
                Some(f) => Some(std::fs::read_to_string(&f).map_err(|e| {
                    invalid(
                        "alerts.smtp.ca_file",
                        f.display(),
                        format!("cannot read: {e}"),
                    )
                })?),
                None => None,
            };
            Some(SmtpConfig {
                host: s.host,
                port,
                security,
                username: s.username,
                password,
                from: s.from,
                timeout: Duration::from_secs(s.timeout_seconds.unwrap_or(30).clamp(1, 300)),
                extra_root_pem,
            })
        }
    };
    if smtp.is_none() && !raw.emails.is_empty() {
        return Err(invalid(
            "alerts.emails",
            raw.emails.join(", "),
            "mail needs [alerts.smtp]",
        ));
    }
    let hours = raw.issuance_failing_hours.unwrap_or(24.0);
    if !(hours > 0.0 && hours <= 24.0 * 90.0) {
        return Err(invalid(
            "alerts.issuance_failing_hours",
            hours,
            "must be above 0 and at most 2160",
        ));
    }
    Ok(AlertsConfig {
        emails: raw.emails,
        webhooks: raw.webhooks,
        rate_limit_seconds: raw.rate_limit_seconds.unwrap_or(3600).clamp(1, 7 * 86_400),
        issuance_failing_seconds: (hours * 3600.0) as i64,
        smtp,
    })
}
