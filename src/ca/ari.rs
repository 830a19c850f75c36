//! ACME Renewal Information (RFC 9773): the CA's suggested renewal window
//! for a certificate. Plain HTTPS GETs (no JWS), so they go through a small
//! reqwest client that trusts what the CA's ACME client trusts; the
//! directory is read once (and again hourly) to learn whether the CA offers
//! `renewalInfo` at all.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a directory's `renewalInfo` (or its absence) is believed.
const DIRECTORY_TTL: Duration = Duration::from_secs(3600);

/// A suggested renewal window and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AriWindow {
    /// Window start, unix seconds.
    pub start: i64,
    /// Window end, unix seconds.
    pub end: i64,
    /// The CA's page explaining the window, if any.
    pub explanation_url: Option<String>,
    /// The server's Retry-After in seconds (before clamping), if sent.
    pub retry_after: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawWindow {
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRenewalInfo {
    suggested_window: RawWindow,
    #[serde(rename = "explanationURL")]
    explanation_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDirectory {
    renewal_info: Option<String>,
    #[serde(default)]
    meta: Option<RawMeta>,
}

#[derive(Deserialize)]
struct RawMeta {
    /// draft-ietf-acme-profiles: name → description (a URL or text).
    #[serde(default)]
    profiles: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// The ARI side of one CA.
pub(super) struct Ari {
    http: Result<reqwest::Client, String>,
    directory_url: String,
    renewal_info: tokio::sync::Mutex<Option<(Option<String>, Instant)>>,
}

impl Ari {
    pub(super) fn new(
        directory_url: &str,
        trust_roots_pem: Option<&str>,
        timeout: Duration,
    ) -> Ari {
        Ari {
            http: client(trust_roots_pem, timeout),
            directory_url: directory_url.to_string(),
            renewal_info: tokio::sync::Mutex::new(None),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, String> {
        self.http.as_ref().map_err(Clone::clone)
    }

    /// The CA's `renewalInfo` URL, `None` when its directory has none.
    /// A directory that cannot be read counts as "no ARI" until the next
    /// try (the caller falls back to lifetime-based renewal).
    pub(super) async fn renewal_info_url(&self) -> Result<Option<String>, String> {
        let mut cached = self.renewal_info.lock().await;
        if let Some((url, at)) = cached.as_ref()
            && at.elapsed() < DIRECTORY_TTL
        {
            return Ok(url.clone());
        }
        let dir = self.directory().await?;
        *cached = Some((dir.renewal_info.clone(), Instant::now()));
        Ok(dir.renewal_info)
    }

    /// The CA's directory, read now.
    async fn directory(&self) -> Result<RawDirectory, String> {
        let rsp = self
            .http()?
            .get(&self.directory_url)
            .send()
            .await
            .map_err(|e| format!("directory {}: {e}", self.directory_url))?;
        if !rsp.status().is_success() {
            return Err(format!(
                "directory {}: HTTP {}",
                self.directory_url,
                rsp.status()
            ));
        }
        let dir: RawDirectory = rsp
            .json()
            .await
            .map_err(|e| format!("directory {}: {e}", self.directory_url))?;
        Ok(dir)
    }

    /// The profiles the CA's directory lists in `meta.profiles`, sorted
    /// (empty when it lists none). Always a fresh read.
    pub(super) async fn profiles(&self) -> Result<Vec<String>, String> {
        let dir = self.directory().await?;
        Ok(dir
            .meta
            .and_then(|m| m.profiles)
            .map(|p| p.into_keys().collect())
            .unwrap_or_default())
    }

    /// Asks for the renewal window of certificate `cert_id`.
    pub(super) async fn window(&self, base: &str, cert_id: &str) -> Result<AriWindow, String> {
        let url = format!("{}/{cert_id}", base.trim_end_matches('/'));
        let rsp = self
            .http()?
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("ARI {url}: {e}"))?;
        let retry_after = rsp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(super::http::retry_after_secs_from_header);
        if !rsp.status().is_success() {
            return Err(format!("ARI {url}: HTTP {}", rsp.status()));
        }
        let body: RawRenewalInfo = rsp
            .json()
            .await
            .map_err(|e| format!("ARI {url}: bad renewal info: {e}"))?;
        let parse = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|e| format!("ARI {url}: bad time {s:?}: {e}"))
        };
        let start = parse(&body.suggested_window.start)?;
        let end = parse(&body.suggested_window.end)?;
        if end < start {
            // RFC 9773 §4.2: the end must be after the start.
            return Err(format!("ARI {url}: window ends before it starts"));
        }
        Ok(AriWindow {
            start,
            end,
            explanation_url: body.explanation_url,
            retry_after,
        })
    }
}

fn client(trust_roots_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("twincert/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = trust_roots_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("trust roots: {e}"))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}
