//! Fetching CRLs and OCSP responses over HTTP, with the CRL cache.
//!
//! A CRL is kept until its `nextUpdate`, but fetched again (conditionally:
//! `If-None-Match` / `If-Modified-Since`, so an unchanged CRL costs a 304)
//! after `refresh` even before that: CAs publish a new CRL within hours of
//! a revocation while the old one's `nextUpdate` can be a week away. A
//! fetch that fails while the cached copy is still current keeps the copy
//! (and says so), so a flapping CRL server does not blind the checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

/// Largest CRL accepted (Let's Encrypt's shards are far smaller; a CA's
/// full CRL of a few hundred thousand entries is ~10 MB).
const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;
/// Largest OCSP response accepted.
const MAX_OCSP_BYTES: usize = 64 * 1024;

/// A CRL as fetched (not yet verified: that needs the issuer).
#[derive(Clone)]
pub struct FetchedCrl {
    /// DER or PEM bytes as served.
    pub bytes: Arc<Vec<u8>>,
    /// Changes whenever new bytes arrive, so verified results can be
    /// cached per version.
    pub version: u64,
    /// Set when the fetch failed and the still-current cached copy is
    /// used instead.
    pub stale_reason: Option<String>,
}

struct Cached {
    crl: FetchedCrl,
    fetched_at: i64,
    next_update: Option<i64>,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// HTTP access to CRLs and OCSP responders.
pub struct Fetcher {
    http: reqwest::Client,
    refresh: i64,
    crls: Mutex<HashMap<String, Cached>>,
    versions: std::sync::atomic::AtomicU64,
}

impl Fetcher {
    /// A fetcher whose CRLs are re-fetched after `refresh` at the latest.
    pub fn new(refresh: Duration, timeout: Duration) -> Result<Fetcher, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("twincert/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Fetcher {
            http,
            refresh: refresh.as_secs() as i64,
            crls: Mutex::new(HashMap::new()),
            versions: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Notes a verified CRL's `nextUpdate`: the cached copy is not used
    /// past it.
    pub fn note_next_update(&self, url: &str, next_update: Option<i64>) {
        if let Ok(mut crls) = self.crls.lock()
            && let Some(c) = crls.get_mut(url)
        {
            c.next_update = next_update;
        }
    }

    /// Forgets the copy of `url` (it did not verify): the next request
    /// fetches it again instead of serving it from the cache.
    pub fn reject(&self, url: &str) {
        if let Ok(mut crls) = self.crls.lock() {
            crls.remove(url);
        }
    }

    /// Keeps only the cached CRLs whose URL `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut crls) = self.crls.lock() {
            crls.retain(|url, _| keep(url));
        }
    }

    /// The CRL at `url`: from the cache while it is fresh, else fetched.
    pub async fn crl(&self, url: &str, now: i64) -> Result<FetchedCrl, String> {
        let (validators, cached) = {
            let crls = self
                .crls
                .lock()
                .map_err(|_| "CRL cache poisoned".to_string())?;
            match crls.get(url) {
                Some(c) => {
                    let current = c.next_update.is_none_or(|n| now < n);
                    if current && now - c.fetched_at < self.refresh {
                        return Ok(c.crl.clone());
                    }
                    (
                        (c.etag.clone(), c.last_modified.clone()),
                        Some((c.crl.clone(), current)),
                    )
                }
                None => ((None, None), None),
            }
        };
        let mut req = self.http.get(url);
        if cached.is_some() {
            if let Some(e) = &validators.0 {
                req = req.header(IF_NONE_MATCH, e);
            }
            if let Some(m) = &validators.1 {
                req = req.header(IF_MODIFIED_SINCE, m);
            }
        }
        let outcome = fetch_body(req, MAX_CRL_BYTES).await;
        let mut crls = self
            .crls
            .lock()
            .map_err(|_| "CRL cache poisoned".to_string())?;
        match outcome {
            Ok(Body::NotModified) => match crls.get_mut(url) {
                Some(c) => {
                    c.fetched_at = now;
                    Ok(c.crl.clone())
                }
                None => Err(format!("CRL {url}: 304 Not Modified without a cached copy")),
            },
            Ok(Body::Bytes {
                bytes,
                etag,
                last_modified,
            }) => {
                let crl = FetchedCrl {
                    bytes: Arc::new(bytes),
                    version: self
                        .versions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    stale_reason: None,
                };
                crls.insert(
                    url.to_string(),
                    Cached {
                        crl: crl.clone(),
                        fetched_at: now,
                        next_update: None,
                        etag,
                        last_modified,
                    },
                );
                Ok(crl)
            }
            Err(e) => match cached {
                Some((mut crl, true)) => {
                    crl.stale_reason = Some(format!("CRL {url}: {e}; using the cached copy"));
                    Ok(crl)
                }
                _ => Err(format!("CRL {url}: {e}")),
            },
        }
    }

    /// POSTs an OCSP request (RFC 6960 Appendix A.1) and returns the
    /// response bytes.
    pub async fn ocsp(&self, url: &str, request_der: Vec<u8>) -> Result<Vec<u8>, String> {
        let req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/ocsp-request")
            .body(request_der);
        match fetch_body(req, MAX_OCSP_BYTES).await {
            Ok(Body::Bytes { bytes, .. }) => Ok(bytes),
            Ok(Body::NotModified) => Err(format!("OCSP {url}: unexpected 304")),
            Err(e) => Err(format!("OCSP {url}: {e}")),
        }
    }
}

enum Body {
    NotModified,
    Bytes {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

async fn fetch_body(req: reqwest::RequestBuilder, limit: usize) -> Result<Body, String> {
    let mut rsp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            format!("connection failed: {e}")
        } else {
            e.to_string()
        }
    })?;
    if rsp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Body::NotModified);
    }
    if !rsp.status().is_success() {
        return Err(format!("HTTP {}", rsp.status()));
    }
    let header = |r: &reqwest::Response, h| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(&rsp, ETAG);
    let last_modified = header(&rsp, LAST_MODIFIED);
    let mut bytes = Vec::new();
    while let Some(chunk) = rsp
        .chunk()
        .await
        .map_err(|e| format!("reading body: {e}"))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body::Bytes {
        bytes,
        etag,
        last_modified,
    })
}
