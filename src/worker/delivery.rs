//! Deployment destinations and alert channels, built once from the
//! configuration and shared by the deployer and the notifier: the HTTP
//! client (webhooks, no redirects), the SMTP sender, one Kubernetes client
//! per Secret destination.

use std::time::Duration;

use crate::config::{AlertsConfig, DeployConfig, Destination};
use crate::notify::smtp::SmtpSender;

/// Destinations, channels and their clients, built once.
pub struct Delivery {
    pub(super) cfg: DeployConfig,
    pub(super) alerts: AlertsConfig,
    pub(super) http: reqwest::Client,
    pub(super) smtp: Option<SmtpSender>,
    /// `server.public_url`: the base of install-request download links.
    pub(super) public_url: Option<String>,
    /// One Kubernetes client per destination, made on first use.
    pub(super) kube: std::collections::BTreeMap<String, tokio::sync::OnceCell<::kube::Client>>,
}

impl Delivery {
    /// Builds the clients; a misconfigured channel is an error at start.
    pub fn new(cfg: DeployConfig, alerts: AlertsConfig) -> Result<Delivery, String> {
        // No redirects: a signed body (maybe with a key) goes only where
        // it was configured to go.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let smtp = match &alerts.smtp {
            Some(c) => Some(SmtpSender::new(c.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut kube = std::collections::BTreeMap::new();
        for (id, d) in &cfg.destinations {
            if let Destination::KubernetesSecret(_) = d {
                kube.insert(id.clone(), tokio::sync::OnceCell::new());
            }
        }
        Ok(Delivery {
            cfg,
            alerts,
            http,
            smtp,
            public_url: None,
            kube,
        })
    }

    /// Where people reach the API (`server.public_url`), for the download
    /// links of `manual` destinations.
    pub fn with_public_url(mut self, public_url: Option<String>) -> Delivery {
        self.public_url = public_url;
        self
    }

    /// Whether alerts go anywhere (mail or webhook).
    pub(super) fn has_channel(&self) -> bool {
        self.smtp.is_some() || !self.alerts.webhooks.is_empty()
    }
}
