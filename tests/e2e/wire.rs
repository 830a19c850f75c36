//! Requests the HTTP library refuses before the router sees them, sent to a
//! real `twincert serve` over a raw socket: a request target over hyper's
//! fixed limit (65,534 bytes), headers over its read buffer or more than
//! 100 of them, a request line that is not HTTP. Each must still be answered
//! with an `application/problem+json` 4xx naming what to change, like every
//! other error of the API (issue 20: a 100,000-character URL got a bare 414
//! without a body or a Content-Type). So must what axum refuses on its own
//! inside the router (a path segment that is not UTF-8 was `text/plain`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::TwoCas;
use crate::server::{Server, ServerOptions};

/// Status, Content-Type and body of the answer to `request`, sent as is on
/// a fresh plain connection that the server closes (or the request asks it
/// to).
async fn raw(server: &Server, request: &[u8]) -> (u16, String, String) {
    let addr = server.base().trim_start_matches("http://").to_string();
    let conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    exchange(conn, request).await
}

/// As [`raw`], over TLS (HTTP/1.1 by ALPN) trusting the harness's CA.
async fn raw_tls(server: &Server, ca_pem: &str, request: &[u8]) -> (u16, String, String) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    crate::harness::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("trust the CA");
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = server.base().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    exchange(conn, request).await
}

async fn exchange<S>(mut conn: S, request: &[u8]) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The server may answer before it has read everything: a failed write
    // is not the test's concern, the answer is.
    let _ = conn.write_all(request).await;
    let mut out = Vec::new();
    // A TLS peer that closes without close_notify ends the read with an
    // error after the data: what was read counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await;
    parse_response(&String::from_utf8_lossy(&out))
}

/// An HTTP/1.1 answer as (status, content type, body).
pub(crate) fn parse_response(out: &str) -> (u16, String, String) {
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        panic!(
            "no response head in {:?}",
            out.chars().take(300).collect::<String>()
        );
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    let ct = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ct, body.to_string())
}

/// Why the answer is not the problem document wanted, if it is not.
fn check(what: &str, got: (u16, String, String), status: u16, detail: &str) -> Option<String> {
    let (st, ct, body) = got;
    let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let ok = st == status
        && ct == "application/problem+json"
        && doc["status"] == status
        && doc["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://twincert.dev/problems/"))
        && doc["detail"].as_str().is_some_and(|d| d.contains(detail));
    (!ok).then(|| {
        format!(
            "{what}: got {st} '{ct}' {:?}, want {status} problem+json with '{detail}'",
            body.chars().take(300).collect::<String>()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_refused_below_the_router_are_answered_with_problems() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let server = Server::start(&cas, ServerOptions::new(url)).await;

    let long_target = format!("/v1/names?cursor={}", "a".repeat(100_000));
    let big_header = format!("X-Big: {}\r\n", "b".repeat(500_000));
    let many_headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "a 100,000-character URL",
            format!("GET {long_target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            414,
            "shorten the URL",
        ),
        (
            "a 500,000-byte header",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{big_header}Connection: close\r\n\r\n"),
            431,
            "send fewer or smaller headers",
        ),
        (
            "101 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}Connection: close\r\n\r\n"),
            431,
            "send fewer or smaller headers",
        ),
        (
            "a request line that is not HTTP",
            "HELLO THERE\r\n\r\n".to_string(),
            400,
            "not a valid HTTP/1.1 request",
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, status, detail) in cases {
        let got = raw(&server, request.as_bytes()).await;
        failures.extend(check(what, got, status, detail));
    }
    // What the framework refuses by itself inside the router (a path
    // segment that is not UTF-8) is a problem document too.
    let not_utf8 = format!(
        "GET /v1/names/%FF%FE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        crate::server::ADMIN_TOKEN
    );
    failures.extend(check(
        "a path segment that is not UTF-8",
        raw(&server, not_utf8.as_bytes()).await,
        400,
        "Invalid UTF-8 in `name`",
    ));
    // The server is still there, and an ordinary long URL (under the limit)
    // still reaches the router.
    let ok = format!(
        "GET /v1/names?cursor={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        "a".repeat(60_000),
        crate::server::ADMIN_TOKEN
    );
    failures.extend(check(
        "a 60,000-character URL",
        raw(&server, ok.as_bytes()).await,
        400,
        "invalid cursor",
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_too_long_url_over_tls_is_a_problem_too() {
    let cas = TwoCas::start(0).await;
    let url = format!("sqlite://{}", cas.dir().join("twincert.db").display());
    let mut opts = ServerOptions::new(url);
    opts.api_tls = true;
    let server = Server::start(&cas, opts).await;
    let request = format!(
        "GET /v1/names?cursor={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let got = raw_tls(&server, &cas.tls.ca_pem, request.as_bytes()).await;
    if let Some(why) = check("over TLS", got, 414, "shorten the URL") {
        panic!("{why}");
    }
}
