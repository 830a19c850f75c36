//! Alerts over HTTP: Slack-compatible incoming webhooks ([`post_slack`];
//! Mattermost and Rocket.Chat accept the same JSON) and generic webhooks
//! signed with a shared secret ([`post_signed`]).
//!
//! A signed delivery carries [`TIMESTAMP_HEADER`] (Unix seconds) and
//! [`SIGNATURE_HEADER`] = `v1=` + hex HMAC-SHA256 of
//! `"{timestamp}.{body}"`: the scheme of `crate::webhook_signature`, shared
//! with `webhook` DNS providers and re-exported here.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Message, NotifyError, describe};
use crate::clock::{Clock, SystemClock};
pub use crate::webhook_signature::{
    SIGNATURE_HEADER, SIGNATURE_SCHEME, TIMESTAMP_HEADER, sign, signed_headers, verify,
};

/// A delivery the receiver accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts made, the accepted one included.
    pub attempts: u32,
    /// The receiver's success status.
    pub status: u16,
}

/// Posts `msg` to a Slack-compatible incoming webhook `url` as
/// `{"text": "*subject*\nbody"}`, with the fields as an attachment when
/// there are any. One attempt; the caller's alert queue retries.
pub async fn post_slack(
    client: &reqwest::Client,
    url: &str,
    msg: &Message,
) -> Result<(), NotifyError> {
    let response = client
        .post(url)
        .json(&slack_payload(msg))
        .send()
        .await
        .map_err(|e| request_error(e, 1))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return Err(NotifyError::Status {
            status,
            attempts: 1,
        });
    }
    Ok(())
}

/// Slack's "mrkdwn" treats `&`, `<` and `>` as markup; escaped as Slack
/// documents, so a name or an error text shows as written.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack_payload(msg: &Message) -> Value {
    let text = format!(
        "*{}*\n{}",
        slack_escape(msg.subject.trim()),
        slack_escape(msg.body.trim_end())
    );
    if msg.fields.is_empty() {
        return json!({ "text": text });
    }
    let fields: Vec<Value> = msg
        .fields
        .iter()
        .map(
            |(title, value)| json!({ "title": title, "value": slack_escape(value), "short": true }),
        )
        .collect();
    json!({ "text": text, "attachments": [{ "fields": fields }] })
}

/// Posts `body` (JSON) to `url`, signed with `secret`, up to `attempts`
/// times: a 429, a 5xx or an unreachable receiver is tried again after
/// `base_backoff`, then twice that, and so on; any other answer is final.
/// Each attempt is signed afresh, so a late retry is not refused as a
/// replay. The timestamp is the wall clock's: it is checked by the
/// receiver against its own, nothing here decides on it.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: &[u8],
    body: &[u8],
    attempts: u32,
    base_backoff: Duration,
) -> Result<Delivery, NotifyError> {
    let attempts = attempts.max(1);
    let mut last = None;
    for attempt in 1..=attempts {
        if attempt > 1 {
            tokio::time::sleep(backoff(base_backoff, attempt - 1)).await;
        }
        let timestamp = SystemClock.now();
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(signed_headers(secret, timestamp, body))
            .body(body.to_vec())
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().is_success() => {
                return Ok(Delivery {
                    attempts: attempt,
                    status: response.status().as_u16(),
                });
            }
            Ok(response) => NotifyError::Status {
                status: response.status().as_u16(),
                attempts: attempt,
            },
            Err(e) => request_error(e, attempt),
        };
        if !error.is_retryable() {
            return Err(error);
        }
        last = Some(error);
    }
    Err(last.unwrap_or(NotifyError::Unreachable {
        attempts,
        message: "no attempt was made".into(),
    }))
}

/// The pause before retry number `retry` (1 for the second attempt):
/// `base * 2^(retry-1)`, the exponent capped so it cannot overflow.
fn backoff(base: Duration, retry: u32) -> Duration {
    base.saturating_mul(1u32 << retry.saturating_sub(1).min(16))
}

/// A reqwest failure: a malformed URL is configuration, the rest is an
/// unreachable receiver.
/// The error without the URL: a Slack webhook's path is its secret, and
/// these messages are stored and shown.
fn request_error(e: reqwest::Error, attempts: u32) -> NotifyError {
    let e = e.without_url();
    if e.is_builder() {
        NotifyError::Config(format!("webhook URL: {}", describe(&e)))
    } else {
        NotifyError::Unreachable {
            attempts,
            message: describe(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    const SECRET: &[u8] = b"whsec_test";

    #[test]
    fn backoff_doubles_and_saturates() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, 4), Duration::from_millis(800));
        assert_eq!(backoff(base, 1000), base * (1 << 16));
        assert_eq!(backoff(Duration::MAX, 3), Duration::MAX);
    }

    /// What the receiver saw, and the statuses it answers with in turn (the
    /// last one repeats).
    #[derive(Clone, Default)]
    struct Receiver {
        seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
        answers: Arc<Vec<u16>>,
    }

    impl Receiver {
        fn seen(&self) -> Vec<(HeaderMap, Bytes)> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let n = match r.seen.lock() {
            Ok(mut seen) => {
                seen.push((headers, body));
                seen.len()
            }
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR,
        };
        let status = r
            .answers
            .get(n - 1)
            .or(r.answers.last())
            .copied()
            .unwrap_or(200);
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    async fn receiver(answers: &[u16]) -> (String, Receiver) {
        let r = Receiver {
            seen: Arc::default(),
            answers: Arc::new(answers.to_vec()),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), r)
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn signed_posts_retry_what_may_pass_later() {
        let client = reqwest::Client::new();
        let body = br#"{"kind":"deploy_failed","name":"example.com"}"#;
        struct Case {
            answers: &'static [u16],
            attempts: u32,
            /// The delivery, or the final (status, attempts).
            want: Result<Delivery, (u16, u32)>,
            requests: usize,
        }
        let delivered = |attempts, status| Ok(Delivery { attempts, status });
        let cases = [
            Case {
                answers: &[500, 500, 200],
                attempts: 5,
                want: delivered(3, 200),
                requests: 3,
            },
            Case {
                answers: &[429, 204],
                attempts: 5,
                want: delivered(2, 204),
                requests: 2,
            },
            Case {
                answers: &[400],
                attempts: 5,
                want: Err((400, 1)),
                requests: 1,
            },
            Case {
                answers: &[404],
                attempts: 5,
                want: Err((404, 1)),
                requests: 1,
            },
            Case {
                answers: &[503],
                attempts: 3,
                want: Err((503, 3)),
                requests: 3,
            },
        ];
        for Case {
            answers,
            attempts,
            want,
            requests,
        } in cases
        {
            let (url, r) = receiver(answers).await;
            let got = post_signed(
                &client,
                &url,
                SECRET,
                body,
                attempts,
                Duration::from_millis(5),
            )
            .await
            .map_err(|e| match e {
                NotifyError::Status { status, attempts } => (status, attempts),
                other => panic!("{answers:?}: {other}"),
            });
            assert_eq!(got, want, "{answers:?}");
            let seen = r.seen();
            assert_eq!(seen.len(), requests, "{answers:?}");
            let now = SystemClock.now();
            for (headers, got_body) in &seen {
                assert_eq!(got_body.as_ref(), body);
                assert_eq!(header(headers, "content-type"), "application/json");
                let ts: i64 = header(headers, TIMESTAMP_HEADER)
                    .parse()
                    .expect("timestamp");
                let sig = header(headers, SIGNATURE_HEADER);
                assert!(
                    verify(SECRET, ts, got_body, sig, now, Duration::from_secs(60)),
                    "{answers:?}: signature {sig} does not verify"
                );
            }
        }
    }

    #[tokio::test]
    async fn unreachable_receiver_is_retried_then_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/hook");
        let err = post_signed(&client, &url, SECRET, b"{}", 2, Duration::from_millis(5))
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(err, NotifyError::Unreachable { attempts: 2, .. }),
            "{err}"
        );
        assert!(err.is_retryable());
        let err = post_signed(&client, "not a url", SECRET, b"{}", 3, Duration::ZERO)
            .await
            .expect_err("bad url");
        assert!(matches!(err, NotifyError::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn slack_body_shape() {
        let plain = Message {
            subject: "Deploy failed".into(),
            body: "nginx reload exited 1 <see log>\n".into(),
            kind: "deploy_failed".into(),
            fields: vec![],
        };
        assert_eq!(
            slack_payload(&plain),
            json!({ "text": "*Deploy failed*\nnginx reload exited 1 &lt;see log&gt;" })
        );

        let mut with_fields = plain.clone();
        with_fields.fields = vec![
            ("name".into(), "example.com".into()),
            ("slot".into(), "backup".into()),
        ];
        let (url, r) = receiver(&[200]).await;
        post_slack(&reqwest::Client::new(), &url, &with_fields)
            .await
            .expect("posted");
        let seen = r.seen();
        assert_eq!(seen.len(), 1);
        let got: Value = serde_json::from_slice(&seen[0].1).expect("json");
        assert_eq!(
            got,
            json!({
                "text": "*Deploy failed*\nnginx reload exited 1 &lt;see log&gt;",
                "attachments": [{ "fields": [
                    { "title": "name", "value": "example.com", "short": true },
                    { "title": "slot", "value": "backup", "short": true },
                ]}]
            })
        );

        let (url, _) = receiver(&[404]).await;
        let err = post_slack(&reqwest::Client::new(), &url, &plain)
            .await
            .expect_err("404");
        assert!(
            matches!(
                err,
                NotifyError::Status {
                    status: 404,
                    attempts: 1
                }
            ),
            "{err}"
        );
    }
}
