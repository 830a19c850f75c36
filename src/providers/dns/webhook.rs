//! `kind = "webhook"`: an HTTPS POST per record change to the operator's
//! receiver, which publishes the record wherever it likes.
//!
//! The body is JSON, `{"action": "present"|"cleanup", "fqdn": …,
//! "value": …, "zone": …}` (`fqdn` and `zone` without a trailing dot),
//! signed exactly as deploy and alert webhooks are (the same code,
//! `crate::webhook_signature`): `X-Twincert-Timestamp` and
//! `X-Twincert-Signature: v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
//! A 2xx answer means done. One attempt per call, bounded by
//! `timeout_seconds`: a 5xx, 429 or unreachable receiver is a retryable
//! error and the order tries again later; any other answer is reported
//! with its status.
//!
//! The receiver keeps the provider contract: `present` appends (another
//! value may already be at that name), `cleanup` deletes only the value in
//! the request.

use std::time::Duration;

use serde::Serialize;

use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone};
use crate::clock::{Clock, SystemClock};
use crate::webhook_signature::signed_headers;

/// The receiver and the shared secret (`kind = "webhook"`), as the
/// configuration validated them.
#[derive(Clone)]
pub struct WebhookSettings {
    /// `https://…`, or `http://` to a loopback address.
    pub url: url::Url,
    /// The HMAC key (never logged).
    pub secret: String,
    /// How long one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url.origin().ascii_serialization())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the receiver is asked to do (the JSON body).
#[derive(Debug, Serialize, PartialEq)]
struct Request<'a> {
    action: &'a str,
    fqdn: &'a str,
    value: &'a str,
    zone: &'a str,
}

/// A provider that calls a signed webhook.
#[derive(Debug)]
pub struct Webhook {
    id: String,
    zones: Vec<String>,
    settings: WebhookSettings,
    http: reqwest::Client,
}

impl Webhook {
    /// A provider from its configuration.
    pub fn new(
        id: &str,
        zones: &[String],
        settings: &WebhookSettings,
    ) -> Result<Webhook, DnsError> {
        let http = super::rest::client_with(id, settings.timeout)?;
        Ok(Webhook {
            id: id.to_string(),
            zones: zones.to_vec(),
            settings: settings.clone(),
            http,
        })
    }

    /// The body of one call.
    fn body(&self, action: &str, fqdn: &str, value: &str) -> Result<Vec<u8>, DnsError> {
        let fqdn = fqdn.trim_end_matches('.');
        let zone = longest_zone(&self.zones, fqdn).ok_or_else(|| {
            DnsError(format!(
                "DNS provider {}: no configured zone holds {fqdn}",
                self.id
            ))
        })?;
        let request = Request {
            action,
            fqdn,
            value,
            zone: &zone,
        };
        serde_json::to_vec(&request).map_err(|e| DnsError(format!("DNS provider {}: {e}", self.id)))
    }

    async fn call(&self, action: &str, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let body = self.body(action, fqdn, value)?;
        let what = format!(
            "DNS provider {} (webhook {}, {action} {})",
            self.id,
            self.settings.url.origin().ascii_serialization(),
            fqdn.trim_end_matches('.')
        );
        let timestamp = SystemClock.now();
        let sent = self
            .http
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(signed_headers(
                self.settings.secret.as_bytes(),
                timestamp,
                &body,
            ))
            .body(body)
            .send()
            .await;
        let status = match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => response.status().as_u16(),
            Err(e) => {
                // Without the URL: its query may hold a token.
                let e = e.without_url();
                let how = if e.is_timeout() {
                    format!("no answer within {:?}", self.settings.timeout)
                } else {
                    crate::error_chain(&e)
                };
                return Err(DnsError(format!(
                    "{what}: the receiver is unreachable or too slow ({how}); will retry"
                )));
            }
        };
        Err(DnsError(format!("{what}: {}", explain(status))))
    }
}

/// A refusal in the operator's words: what it means, and whether it will
/// be tried again.
fn explain(status: u16) -> String {
    match status {
        401 | 403 => format!(
            "the receiver refused the request (HTTP {status}): check that the provider's \
             secret is the one the receiver verifies signatures with"
        ),
        429 | 500..=599 => format!("the receiver failed (HTTP {status}); will retry"),
        _ => format!("the receiver answered HTTP {status}, not 2xx"),
    }
}

impl DnsProvider for Webhook {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.call("present", fqdn, value))
    }

    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.call("cleanup", fqdn, value))
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        let detail = format!(
            "DNS provider '{}' (webhook) for zone {zone}: not checkable without a change: the webhook receiver is only ever POSTed a present or cleanup, so preflight does not call it",
            self.id
        );
        Box::pin(async move { ProviderCheck::NotCheckable(detail) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook_signature::verify_headers;
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use std::sync::{Arc, Mutex};

    fn webhook(url: &str, secret: &str, timeout_ms: u64) -> Webhook {
        let settings = WebhookSettings {
            url: url.parse().expect("url"),
            secret: secret.into(),
            timeout: Duration::from_millis(timeout_ms),
        };
        Webhook::new("hook", &["example.test".into()], &settings).expect("client")
    }

    #[tokio::test]
    async fn the_check_posts_nothing_and_says_so() {
        // Nobody listens there: a POST would be an error, not this.
        let w = webhook("http://127.0.0.1:9/dns", "s3cret", 200);
        let ProviderCheck::NotCheckable(detail) = w.check("example.test").await else {
            panic!("webhook is not checkable");
        };
        assert!(
            detail
                .starts_with("DNS provider 'hook' (webhook) for zone example.test: not checkable")
                && !detail.contains("s3cret"),
            "{detail}"
        );
    }

    #[test]
    fn the_body_names_action_fqdn_value_and_zone_and_debug_hides_the_secret() {
        let w = webhook("https://hooks.example.net/dns?token=x", "s3cret", 1000);
        let body = w
            .body("present", "_acme-challenge.a.example.test.", "v1")
            .expect("body");
        let got: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            got,
            serde_json::json!({"action": "present", "fqdn": "_acme-challenge.a.example.test",
                "value": "v1", "zone": "example.test"})
        );
        assert!(w.body("cleanup", "other.test", "v").is_err());
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("token=x"),
            "{shown}"
        );
    }

    /// A receiver answering `status` after `delay`, checking signatures
    /// with `secret` (401 when they do not verify).
    async fn receiver(
        secret: &'static str,
        status: u16,
        delay: Duration,
    ) -> (String, Arc<Mutex<Vec<Bytes>>>) {
        #[derive(Clone)]
        struct R {
            secret: &'static str,
            status: u16,
            delay: Duration,
            seen: Arc<Mutex<Vec<Bytes>>>,
        }
        async fn receive(State(r): State<R>, headers: HeaderMap, body: Bytes) -> StatusCode {
            tokio::time::sleep(r.delay).await;
            let now = crate::clock::Clock::now(&crate::clock::SystemClock);
            let tolerance = Duration::from_secs(300);
            if !verify_headers(r.secret.as_bytes(), &headers, &body, now, tolerance) {
                return StatusCode::UNAUTHORIZED;
            }
            r.seen.lock().expect("lock").push(body);
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/dns", post(receive)).with_state(R {
            secret,
            status,
            delay,
            seen: seen.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/dns"), seen)
    }

    #[tokio::test]
    async fn answers_become_clear_errors_and_a_signed_2xx_is_done() {
        let fqdn = "_acme-challenge.a.example.test";
        let (url, seen) = receiver("good", 204, Duration::ZERO).await;
        webhook(&url, "good", 2000)
            .present(fqdn, "v")
            .await
            .expect("delivered");
        assert_eq!(seen.lock().expect("lock").len(), 1);
        let cases: [(&str, u16, u64, &str); 4] = [
            (
                "bad",
                204,
                0,
                "refused the request (HTTP 401): check that the provider's secret",
            ),
            ("good", 500, 0, "the receiver failed (HTTP 500); will retry"),
            ("good", 404, 0, "answered HTTP 404, not 2xx"),
            ("good", 204, 3000, "unreachable or too slow"),
        ];
        for (secret, status, delay_ms, want) in cases {
            let (url, _) = receiver("good", status, Duration::from_millis(delay_ms)).await;
            let err = webhook(&url, secret, 500)
                .cleanup(fqdn, "v")
                .await
                .expect_err(want)
                .0;
            assert!(
                err.starts_with("DNS provider hook (webhook http://127.0.0.1:"),
                "{err}"
            );
            assert!(err.contains(want), "{want:?} not in {err}");
            assert!(!err.contains("good"), "never the secret: {err}");
        }
    }
}
