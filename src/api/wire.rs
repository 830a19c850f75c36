//! What the HTTP library answers by itself, made a problem document.
//!
//! A request hyper cannot parse never reaches the router: a request target
//! over 65,534 bytes (a limit fixed in hyper), a head larger than its read
//! buffer or with more than 100 headers, a request line that is not HTTP.
//! hyper writes a bare `414`, `431` or `400` head itself — no body, no
//! Content-Type — and closes the connection. [`ProblemIo`] wraps each
//! connection of the API port and puts the problem document the router
//! would have sent in place of exactly those heads, so every error the API
//! answers is `application/problem+json`.
//!
//! Recognised, and nothing else: one write that holds a whole HTTP/1
//! response head and nothing more, with status 400, 414 or 431,
//! `content-length: 0` and no `content-type`. The router never sends such
//! a response (each of its errors is a problem document with a body);
//! hyper's automatic answers always look like that. Not covered: HTTP/2,
//! whose limits the h2 library enforces with stream resets, not responses.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::Problem;

/// hyper's fixed limit on the request target (`MAX_URI_LEN`).
const MAX_TARGET_BYTES: usize = 65_534;
/// hyper's default limits on a request head: at most this many headers, in
/// a read buffer of this many bytes (`DEFAULT_MAX_HEADERS`,
/// `DEFAULT_MAX_BUFFER_SIZE`).
const MAX_HEADERS: usize = 100;
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// A connection whose automatic error answers from hyper are replaced by
/// problem documents (see the module doc); everything else passes as is.
#[derive(Debug)]
pub struct ProblemIo<T> {
    inner: T,
    /// A replacement answer still to be written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl<T> ProblemIo<T> {
    /// Wraps one accepted connection.
    pub fn new(inner: T) -> Self {
        ProblemIo {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    /// Writes what is left of a replacement answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` in place of hyper's automatic answer if it is one: the
    /// replacement is queued (and started) and all of `buf` reported written.
    fn poll_replace(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        let replacement = replacement(buf)?;
        self.pending = replacement;
        self.written = 0;
        // What does not go out now goes out on the next write, flush or
        // shutdown, each of which drains first.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Some(Poll::Ready(Err(e)));
        }
        Some(Poll::Ready(Ok(buf.len())))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(done) = this.poll_replace(cx, buf) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        // hyper queues a response head as a buffer of its own.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(done) = this.poll_replace(cx, first)
        {
            return done;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The problem answer to put in place of `buf`, if `buf` is one of hyper's
/// automatic answers (see the module doc).
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<(&str, &str)> = lines
        .map(|l| l.split_once(':').map(|(k, v)| (k.trim(), v.trim())))
        .collect::<Option<_>>()?;
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let empty = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-length") && *v == "0");
    if has("content-type") || !empty || headers.len() > 8 {
        return None;
    }
    let problem = match status_line.get(9..12)? {
        "400" => Problem::bad_request(
            "not a valid HTTP/1.1 request: the request line or a header could not be parsed",
        ),
        "414" => Problem::uri_too_long(format!(
            "the URL is longer than the {MAX_TARGET_BYTES} bytes accepted; shorten the URL \
             (fewer or shorter query parameters)"
        )),
        "431" => Problem::headers_too_large(format!(
            "the request headers exceed what is accepted (at most {MAX_HEADERS} headers, \
             {MAX_HEAD_BYTES} bytes in all); send fewer or smaller headers"
        )),
        _ => return None,
    };
    let (_, body) = problem.document();
    let mut out = format!("{status_line}\r\n");
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("content-length") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if !has("connection") {
        // hyper closes the connection after an automatic answer.
        out.push_str("connection: close\r\n");
    }
    out.push_str(&format!(
        "content-type: application/problem+json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// The API's TCP listener for `axum::serve`: each connection is a
/// [`ProblemIo`].
#[derive(Debug)]
pub struct ProblemListener(pub TcpListener);

impl axum::serve::Listener for ProblemListener {
    type Io = ProblemIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, peer) = axum::serve::Listener::accept(&mut self.0).await;
        (ProblemIo::new(io), peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (case, what hyper wrote, the status of the replacement or `None`).
    const CASES: &[(&str, &str, Option<&str>)] = &[
        (
            "hyper's 414",
            "HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
            Some("HTTP/1.1 414 URI Too Long"),
        ),
        (
            "hyper's 431",
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
            Some("HTTP/1.1 431 Request Header Fields Too Large"),
        ),
        (
            "hyper's 400",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            Some("HTTP/1.1 400 Bad Request"),
        ),
        (
            "a problem from the router",
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n",
            None,
        ),
        (
            "a head followed by a body",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            None,
        ),
        (
            "a success",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            None,
        ),
        (
            "a body that happens to start like a head",
            "HTTP/1.1 414 x\r\ncontent-length: 0\r\n",
            None,
        ),
    ];

    #[test]
    fn only_hyper_automatic_answers_are_replaced_by_problems() {
        for (name, wrote, want) in CASES {
            let got = replacement(wrote.as_bytes());
            match (want, got) {
                (None, None) => {}
                (Some(status_line), Some(out)) => {
                    let out = String::from_utf8(out).expect("UTF-8");
                    let (head, body) = out.split_once("\r\n\r\n").expect("head");
                    assert!(head.starts_with(status_line), "{name}: {head}");
                    assert!(
                        head.contains("content-type: application/problem+json"),
                        "{name}: {head}"
                    );
                    assert!(
                        head.contains(&format!("content-length: {}", body.len())),
                        "{name}: {head}"
                    );
                    assert!(!head.contains("content-length: 0"), "{name}: {head}");
                    let doc: serde_json::Value = serde_json::from_str(body).expect("JSON");
                    assert_eq!(
                        doc["status"].as_u64().map(|s| s.to_string()).as_deref(),
                        status_line.get(9..12),
                        "{name}"
                    );
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }
}
