//! The HTTP client instant-acme talks through.
//!
//! Two reasons it is ours and not instant-acme's default: the connector sets
//! TCP_NODELAY (without it every JWS POST stalls ~40 ms on Nagle + delayed
//! ACK: 27 ms against 330+ ms per certificate when measured), and it
//! records a CA's `Retry-After` on 429/503 answers for the task that sent
//! the request, so `rateLimited` can be honoured (instant-acme keeps the
//! problem document but not the header). It also keeps what instant-acme
//! 0.8.5 drops from dns-persist-01 challenges (draft-ietf-acme-dns-persist
//! §4): their `issuer-domain-names` and `accounturi`, read from the JSON of
//! every authorization or challenge the CA sends ([`PersistSeen`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::RETRY_AFTER;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::domain::AcmeRequestStats;

tokio::task_local! {
    static CA_RETRY_AFTER: Cell<Option<SystemTime>>;
}

/// Runs `f` and returns, beside its output, the latest `Retry-After` a CA
/// sent with a 429 or 503 answer while `f` ran.
pub async fn with_retry_after<F: Future>(f: F) -> (F::Output, Option<SystemTime>) {
    CA_RETRY_AFTER
        .scope(Cell::new(None), async move {
            let out = f.await;
            let after = CA_RETRY_AFTER.try_with(Cell::get).ok().flatten();
            (out, after)
        })
        .await
}

/// Seconds from now until a `Retry-After` header's time (delta-seconds or
/// an HTTP date); 0 when it is in the past.
pub fn retry_after_secs_from_header(v: &str) -> Option<u64> {
    let at = parse_retry_after(v)?;
    Some(
        at.duration_since(SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

fn parse_retry_after(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        // A CA's "come back in a century" is a year here (no overflow).
        return SystemTime::now().checked_add(Duration::from_secs(secs.min(365 * 86_400)));
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?))
}

/// Builds the client for one CA. With `trust_roots_pem` only those roots
/// are trusted (local CAs such as Pebble); otherwise the public web PKI.
///
/// HTTP/1.1 with a keep-alive pool: concurrent orders use separate
/// connections, so one slow exchange never queues the others behind one
/// multiplexed connection. Every request is bounded by `request_timeout`,
/// so a CA that stops answering (Pebble 2.4.0 can deadlock under load; a
/// real CA can hang) becomes a retryable error, never a hung order.
pub fn client(
    ca_id: &str,
    trust_roots_pem: Option<&str>,
    request_timeout: Duration,
    persist_seen: Arc<PersistSeen>,
) -> Result<Box<dyn HttpClient>, String> {
    let builder = rustls::ClientConfig::builder();
    let tls = match trust_roots_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("trust roots: bad PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("trust roots: unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("trust roots: no CERTIFICATE in the file".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder.with_webpki_roots().with_no_client_auth(),
    };
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    let inner = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https);
    Ok(Box::new(AcmeHttp {
        inner,
        request_timeout,
        ca_id: ca_id.to_string(),
        persist_seen,
    }))
}

/// The fields of a dns-persist-01 challenge object that instant-acme does
/// not carry (draft-ietf-acme-dns-persist-02 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistChallenge {
    /// The issuer domain names the CA accepts in the record.
    pub issuer_domain_names: Vec<String>,
    /// The account URI the CA expects in the record (acme2certifier sends
    /// it; the draft lets the client use its own account URL).
    pub accounturi: Option<String>,
}

/// dns-persist-01 challenges seen in the CA's answers, by challenge URL.
/// Bounded: past [`PERSIST_SEEN_MAX`] entries it starts over (a challenge
/// is read again when its authorization is fetched again).
#[derive(Debug, Default)]
pub struct PersistSeen(std::sync::Mutex<HashMap<String, PersistChallenge>>);

const PERSIST_SEEN_MAX: usize = 10_000;

impl PersistSeen {
    /// What was seen of the challenge at `url`.
    pub fn get(&self, url: &str) -> Option<PersistChallenge> {
        self.0.lock().ok()?.get(url).cloned()
    }

    /// Records the dns-persist-01 challenges in one JSON body (an
    /// authorization with its `challenges`, or one challenge object).
    fn observe(&self, body: &[u8]) {
        const NEEDLE: &[u8] = b"dns-persist-01";
        if !body.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let challenges: Vec<&serde_json::Value> = match v.get("challenges") {
            Some(serde_json::Value::Array(a)) => a.iter().collect(),
            _ => vec![&v],
        };
        let Ok(mut seen) = self.0.lock() else { return };
        for c in challenges {
            if c.get("type").and_then(|t| t.as_str()) != Some("dns-persist-01") {
                continue;
            }
            let Some(url) = c.get("url").and_then(|u| u.as_str()) else {
                continue;
            };
            let issuer_domain_names = c
                .get("issuer-domain-names")
                .and_then(|n| n.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let accounturi = c
                .get("accounturi")
                .and_then(|a| a.as_str())
                .map(str::to_string);
            if seen.len() >= PERSIST_SEEN_MAX {
                seen.clear();
            }
            seen.insert(
                url.to_string(),
                PersistChallenge {
                    issuer_domain_names,
                    accounturi,
                },
            );
        }
    }
}

type StatsMap = std::collections::BTreeMap<(String, String), AcmeRequestStats>;

/// Per process, for `/metrics`.
static ACME_REQUESTS: std::sync::Mutex<StatsMap> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn record_request(ca: &str, status: &str, seconds: f64) {
    if let Ok(mut m) = ACME_REQUESTS.lock() {
        m.entry((ca.to_string(), status.to_string()))
            .or_insert_with(|| AcmeRequestStats::new(ca, status))
            .observe(seconds);
    }
}

/// This process's ACME requests so far, by CA and status.
pub fn acme_request_metrics() -> Vec<AcmeRequestStats> {
    ACME_REQUESTS
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

struct AcmeHttp {
    inner: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    request_timeout: Duration,
    ca_id: String,
    persist_seen: Arc<PersistSeen>,
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let limit = self.request_timeout;
        let ca = self.ca_id.clone();
        let persist_seen = self.persist_seen.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let rsp = match tokio::time::timeout(limit, fut).await {
                Err(_) => {
                    record_request(&ca, "timeout", started.elapsed().as_secs_f64());
                    return Err(instant_acme::Error::Other(
                        format!("no answer from the CA within {} s", limit.as_secs()).into(),
                    ));
                }
                Ok(Err(e)) => {
                    record_request(&ca, "error", started.elapsed().as_secs_f64());
                    return Err(e);
                }
                Ok(Ok(rsp)) => rsp,
            };
            let status = rsp.parts.status.as_u16();
            record_request(&ca, &status.to_string(), started.elapsed().as_secs_f64());
            if status == 429 || status == 503 {
                let after = rsp
                    .parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                if after.is_some() {
                    let _ = CA_RETRY_AFTER.try_with(|c| c.set(after));
                }
            }
            let json = rsp
                .parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("json"));
            if status == 200 && json {
                // Read whole (instant-acme reads it whole too), looked at,
                // and handed on unchanged.
                let mut rsp = rsp;
                let body = rsp
                    .body
                    .into_bytes()
                    .await
                    .map_err(instant_acme::Error::Other)?;
                persist_seen.observe(&body);
                return Ok(BytesResponse {
                    parts: rsp.parts,
                    body: Box::new(body),
                });
            }
            Ok(rsp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The authorization acme2certifier 0.46.3 sends for a dns-persist-01
    /// capable identifier (its `ChallengeService` output, shortened).
    #[test]
    fn dns_persist_fields_are_kept_from_authorizations_and_challenges() {
        let seen = PersistSeen::default();
        seen.observe(
            br#"{"identifier":{"type":"dns","value":"a.example.test"},"status":"pending",
            "challenges":[{"type":"http-01","url":"https://ca/chall/h","token":"t","status":"pending"},
            {"type":"dns-persist-01","url":"https://ca/chall/p","status":"pending",
             "accounturi":"https://ca/acme/acct/x","issuer-domain-names":["ca.example.test","alt.test"]}]}"#,
        );
        assert_eq!(
            seen.get("https://ca/chall/p"),
            Some(PersistChallenge {
                issuer_domain_names: vec!["ca.example.test".into(), "alt.test".into()],
                accounturi: Some("https://ca/acme/acct/x".into()),
            })
        );
        assert_eq!(seen.get("https://ca/chall/h"), None);
        seen.observe(
            br#"{"type":"dns-persist-01","url":"https://ca/chall/q","status":"valid","issuer-domain-names":["q.test"]}"#,
        );
        assert_eq!(
            seen.get("https://ca/chall/q")
                .map(|c| c.issuer_domain_names),
            Some(vec!["q.test".to_string()])
        );
        // Bodies without the method, or not JSON, change nothing.
        seen.observe(b"not json dns-persist-01");
        seen.observe(br#"{"status":"valid"}"#);
        assert_eq!(seen.0.lock().map(|m| m.len()).unwrap_or(0), 2);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::now();
        let t = parse_retry_after("120").expect("seconds");
        assert!(t >= now + Duration::from_secs(119));
        let t = parse_retry_after("Fri, 31 Dec 2049 23:59:59 GMT").expect("date");
        assert!(t > now);
        assert!(parse_retry_after("soon").is_none());
    }

    #[tokio::test]
    async fn retry_after_is_scoped_to_the_task() {
        let ((), after) = with_retry_after(async {
            let _ = CA_RETRY_AFTER.try_with(|c| c.set(Some(SystemTime::UNIX_EPOCH)));
        })
        .await;
        assert_eq!(after, Some(SystemTime::UNIX_EPOCH));
        let ((), after) = with_retry_after(async {}).await;
        assert_eq!(after, None);
    }
}
