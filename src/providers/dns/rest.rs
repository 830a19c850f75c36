//! The HTTP side shared by the providers that write records through a
//! JSON API (PowerDNS, Cloudflare, acme-dns): one client with a connect
//! timeout and a whole-request timeout, and one way of turning a failed
//! exchange into an operator's error. Credentials travel in headers, never
//! in URLs, so the URL in a message is safe to show; no message ever holds
//! a request header.

use std::time::Duration;

use super::DnsError;

/// How long one request may take, connection included. A provider that
/// answers slower than this fails the attempt; the order retries.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an unparseable answer is quoted in an error.
const BODY_QUOTE: usize = 200;

/// A client for one provider.
pub(super) fn client(id: &str) -> Result<reqwest::Client, DnsError> {
    client_with(id, REQUEST_TIMEOUT)
}

/// A client whose requests may take `timeout` (a provider's configured
/// timeout; tests shorten it).
pub(super) fn client_with(id: &str, timeout: Duration) -> Result<reqwest::Client, DnsError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| DnsError(format!("DNS provider {id}: HTTP client: {e}")))
}

/// An answer read in full.
pub(super) struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON of type `T`, or an error quoting what came instead.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, DnsError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            DnsError(format!(
                "{what}: the answer (HTTP {}) is not the expected JSON ({e}): {}; will retry",
                self.status,
                self.quote()
            ))
        })
    }

    /// The start of the body, for an error message.
    pub fn quote(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() {
            return "(empty body)".into();
        }
        let mut end = text.len().min(BODY_QUOTE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < text.len() { "…" } else { "" };
        format!("'{}{cut}'", &text[..end])
    }
}

/// Sends `request` and reads the whole answer; a timeout, a refused
/// connection or a broken answer is an error naming `what` (it carries the
/// provider id) and saying it will be retried.
pub(super) async fn send(what: &str, request: reqwest::RequestBuilder) -> Result<Answer, DnsError> {
    let failed = |e: reqwest::Error| {
        let why = if e.is_timeout() {
            format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "the request failed".to_string()
        };
        // reqwest's own text names the URL and the cause (never headers).
        DnsError(format!("{what}: {why} ({e}); will retry"))
    };
    let response = request.send().await.map_err(failed)?;
    let status = response.status();
    let body = response.bytes().await.map_err(failed)?.to_vec();
    Ok(Answer { status, body })
}

/// `"abc"` or `"ab" "c"` (TXT content in zone-file presentation, as
/// PowerDNS and, lately, Cloudflare return it) → `abc`; an unquoted text
/// is returned as it is.
pub(super) fn unquote_txt(content: &str) -> String {
    let content = content.trim();
    if !content.starts_with('"') {
        return content.to_string();
    }
    let mut value = String::new();
    let mut in_quotes = false;
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes => {
                if let Some(next) = chars.next() {
                    value.push(next);
                }
            }
            c if in_quotes => value.push(c),
            _ => {}
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_content_is_compared_without_its_quotes() {
        let cases = [
            ("abc", "abc"),
            ("\"abc\"", "abc"),
            ("\"ab\" \"c\"", "abc"),
            ("\"a\\\"b\"", "a\"b"),
            ("  \"x\"  ", "x"),
        ];
        for (given, want) in cases {
            assert_eq!(unquote_txt(given), want, "{given}");
        }
    }

    #[tokio::test]
    async fn a_provider_that_does_not_answer_is_a_retryable_timeout() {
        // Accepts the connection, reads the request, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let http = client_with("slow", Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let err = send(
            "DNS provider slow (powerdns): adding TXT at x",
            http.get(format!("http://{addr}/api")),
        )
        .await
        .err()
        .expect("a timeout")
        .0;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.starts_with("DNS provider slow (powerdns): adding TXT at x: no answer within")
                && err.ends_with("will retry"),
            "{err}"
        );
        held.abort();
        let _ = held.await;
        // Nobody listening: a refused connection, also retryable.
        let err = send("x", http.get(format!("http://{addr}/api")))
            .await
            .err()
            .expect("refused")
            .0;
        assert!(
            err.contains("cannot connect") && err.ends_with("will retry"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_is_quoted_briefly() {
        let long = Answer {
            status: reqwest::StatusCode::BAD_GATEWAY,
            body: "é".repeat(300).into_bytes(),
        };
        assert!(long.quote().ends_with("…'"));
        let empty = Answer {
            status: reqwest::StatusCode::OK,
            body: Vec::new(),
        };
        assert_eq!(empty.quote(), "(empty body)");
        let err = empty.json::<serde_json::Value>("adding TXT").unwrap_err();
        assert!(err.0.contains("HTTP 200 OK") && err.0.contains("will retry"));
    }
}
