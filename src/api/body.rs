//! JSON request bodies. [`JsonBody`] is the one way a handler receives a
//! body: it reads it under the configured size limit, checks its media
//! type and deserializes it, and turns each failure into the problem the
//! API answers with:
//!
//! * over `server.max_body_bytes` (by Content-Length or while a chunked
//!   body is read): 413 `body-too-large`;
//! * otherwise unreadable: 400 `invalid-request`, "cannot read the body";
//! * a Content-Type that is not JSON (`application/json` or `…+json`, with
//!   any parameters): 415 `unsupported-media-type`; a body without a
//!   Content-Type is read as JSON;
//! * JSON that does not parse into `T` (syntax, types, missing fields, and
//!   unknown fields where `T` refuses them): 400 `invalid-request`,
//!   "invalid JSON body: ", the path of the field at fault
//!   (`endpoints[2].port: `) and serde's message; the problem's `field`
//!   member carries that path (for a missing, unknown or duplicate field,
//!   the path of that field).
//!
//! The checks run in that order, so an oversized body is a 413 whatever its
//! type. A handler that must report something else first (a malformed name
//! in the path) takes `Result<JsonBody<T>, Problem>` and uses `?` after
//! that check.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use super::{ApiState, Problem};

/// A request body parsed as JSON into `T`; see the module doc for what is
/// refused and how.
#[derive(Debug)]
pub(super) struct JsonBody<T>(pub T);

/// The largest request body accepted, in bytes (`server.max_body_bytes`);
/// the router's `DefaultBodyLimit` enforces it, this names it in the 413.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimit(pub usize);

impl FromRef<ApiState> for BodyLimit {
    fn from_ref(st: &ApiState) -> Self {
        BodyLimit(st.max_body_bytes)
    }
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(req, state).await;
        parse(limit, content_type.as_ref(), body).map(JsonBody)
    }
}

fn parse<T: DeserializeOwned>(
    limit: usize,
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let body = match body {
        Ok(b) => b,
        Err(BytesRejection::FailedToBufferBody(e)) if e.body_text().contains("length limit") => {
            return Err(Problem::too_large(limit));
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Problem::too_large(limit));
        }
        Err(e) => {
            return Err(Problem::bad_request(format!(
                "cannot read the body: {}",
                e.body_text()
            )));
        }
    };
    if let Some(ct) = content_type {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Problem::unsupported_media(format!(
                "expected Content-Type application/json, got '{ct}'"
            )));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_problem)?;
    // As `serde_json::from_slice`: nothing but whitespace may follow.
    de.end()
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The problem for a body that does not deserialize: serde's message after
/// the path of the value at fault, so `{"name": 5}` reads "name: invalid
/// type: integer `5`, expected a string" rather than leaving the client
/// to count columns.
fn json_problem(e: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    // A syntax error inside a key leaves an unknown segment ("?"): the path
    // is only known up to there.
    let segments: Vec<String> = e
        .path()
        .iter()
        .take_while(|s| !matches!(s, serde_path_to_error::Segment::Unknown))
        .map(|s| s.to_string())
        .collect();
    let message = e.inner().to_string();
    // serde names a missing, unknown or repeated field in its message. The
    // path ends at an unknown field (its key was being read), but at the
    // enclosing object for a missing or repeated one (found out once the
    // object is done): the detail names the object, `field` the field.
    let (within, field) = match named_field(&message) {
        Some((Named::AfterObject, name)) => {
            let object = join(&segments);
            let field = if object.is_empty() {
                name
            } else {
                format!("{object}.{name}")
            };
            (&segments[..], field)
        }
        Some((Named::AtKey, _)) if !segments.is_empty() => {
            (&segments[..segments.len() - 1], join(&segments))
        }
        _ => (&segments[..], join(&segments)),
    };
    let detail = match join(within) {
        within if within.is_empty() => format!("invalid JSON body: {message}"),
        within => format!("invalid JSON body: {within}: {message}"),
    };
    let problem = Problem::bad_request(detail);
    if field.is_empty() {
        problem
    } else {
        problem.at_field(field)
    }
}

/// A path as the API's other field errors write it: `endpoints[2].port`.
fn join(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && !s.starts_with('[') {
            out.push('.');
        }
        out.push_str(s);
    }
    out
}

/// How serde's message names a field.
enum Named {
    /// Missing or repeated: the path ends at the enclosing object.
    AfterObject,
    /// Unknown: the path ends at the field.
    AtKey,
}

/// The field serde's message names as missing, unknown or repeated
/// (``missing field `name` ``, as `serde::de::Error` words them).
fn named_field(message: &str) -> Option<(Named, String)> {
    let (named, rest) = if let Some(rest) = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))
    {
        (Named::AfterObject, rest)
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        (Named::AtKey, rest)
    } else {
        return None;
    };
    rest.split_once('`')
        .map(|(name, _)| (named, name.to_string()))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        reason: String,
    }

    /// The outcome as (status, problem type, detail), or the parsed value.
    async fn extract(
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Result<Probe, (u16, String, String)> {
        let mut req = Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(body.into()).expect("request");
        match JsonBody::<Probe>::from_request(req, &BodyLimit(64)).await {
            Ok(JsonBody(v)) => Ok(v),
            Err(problem) => {
                let rsp = problem.into_response();
                let status = rsp.status().as_u16();
                let bytes = axum::body::to_bytes(rsp.into_body(), 4096)
                    .await
                    .expect("problem body");
                let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("problem JSON");
                Err((
                    status,
                    doc["type"].as_str().unwrap_or_default().to_string(),
                    doc["detail"].as_str().unwrap_or_default().to_string(),
                ))
            }
        }
    }

    /// `None`: parsed; else the problem's status, type and part of its detail.
    type Want = Option<(u16, &'static str, &'static str)>;

    #[tokio::test]
    async fn json_bodies_are_parsed_and_everything_else_is_a_precise_problem() {
        let ok = r#"{"reason": "drill"}"#;
        let cases: [(&str, Option<&str>, &str, Want); 9] = [
            ("JSON", Some("application/json"), ok, None),
            (
                "a charset parameter",
                Some("application/json; charset=utf-8"),
                ok,
                None,
            ),
            (
                "a +json media type",
                Some("application/merge-patch+json"),
                ok,
                None,
            ),
            ("no Content-Type", None, ok, None),
            (
                "text/plain",
                Some("text/plain"),
                ok,
                Some((
                    415,
                    "unsupported-media-type",
                    "expected Content-Type application/json, got 'text/plain'",
                )),
            ),
            (
                "a look-alike media type",
                Some("application/jsonx"),
                ok,
                Some((415, "unsupported-media-type", "got 'application/jsonx'")),
            ),
            (
                "malformed JSON",
                Some("application/json"),
                r#"{"reason": "#,
                Some((400, "invalid-request", "EOF while parsing")),
            ),
            (
                "an unknown field",
                Some("application/json"),
                r#"{"reason": "drill", "force": true}"#,
                Some((
                    400,
                    "invalid-request",
                    "invalid JSON body: unknown field `force`",
                )),
            ),
            (
                "a field of the wrong type",
                Some("application/json"),
                r#"{"reason": 5}"#,
                Some((
                    400,
                    "invalid-request",
                    "invalid JSON body: reason: invalid type: integer `5`",
                )),
            ),
        ];
        for (name, ct, body, want) in cases {
            let got = extract(ct, body.to_string()).await;
            match (want, got) {
                (None, Ok(v)) => assert_eq!(v.reason, "drill", "{name}"),
                (Some((status, kind, detail)), Err((s, k, d))) => {
                    assert_eq!(s, status, "{name}");
                    assert_eq!(k, format!("https://twincert.dev/problems/{kind}"), "{name}");
                    assert!(d.contains(detail), "{name}: {d}");
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized
    struct Nested {
        endpoints: Vec<Endpoint>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized
    struct Endpoint {
        host: String,
        port: u16,
    }

    #[test]
    fn a_body_that_does_not_parse_names_the_field_at_fault() {
        // (case, body, detail, field)
        let cases: [(&str, &str, &str, Option<&str>); 9] = [
            (
                "a syntax error in a key",
                r#"{"endpoints": [{host: "a"}]}"#,
                "invalid JSON body: endpoints[0]: key must be a string",
                Some("endpoints[0]"),
            ),
            (
                "a syntax error in a value",
                r#"{"endpoints": [{"host": "a", "port": }]}"#,
                "invalid JSON body: endpoints[0].port: expected value",
                Some("endpoints[0].port"),
            ),
            (
                "a repeated field in a list element",
                r#"{"endpoints": [{"host": "a", "host": "b", "port": 1}]}"#,
                "invalid JSON body: endpoints[0]: duplicate field `host`",
                Some("endpoints[0].host"),
            ),
            (
                "a wrong type deep in a list",
                r#"{"endpoints": [{"host": "a", "port": 1}, {"host": "b", "port": "443"}]}"#,
                "invalid JSON body: endpoints[1].port: invalid type: string \"443\", expected u16",
                Some("endpoints[1].port"),
            ),
            (
                "a missing field in a list element",
                r#"{"endpoints": [{"host": "a"}]}"#,
                "invalid JSON body: endpoints[0]: missing field `port`",
                Some("endpoints[0].port"),
            ),
            (
                "an unknown field in a list element",
                r#"{"endpoints": [{"host": "a", "port": 1, "colour": 2}]}"#,
                "invalid JSON body: endpoints[0]: unknown field `colour`",
                Some("endpoints[0].colour"),
            ),
            (
                "a missing field at the top",
                r#"{}"#,
                "invalid JSON body: missing field `endpoints`",
                Some("endpoints"),
            ),
            (
                "not an object",
                r#"[]"#,
                "invalid JSON body: invalid length 0, expected struct Nested",
                None,
            ),
            (
                "trailing characters",
                r#"{"endpoints": []} x"#,
                "invalid JSON body: trailing characters",
                None,
            ),
        ];
        for (name, body, detail, field) in cases {
            let Err(problem) = parse::<Nested>(1024, None, Ok(Bytes::from(body))) else {
                panic!("{name}: accepted");
            };
            assert!(
                problem.detail().starts_with(detail),
                "{name}: {}",
                problem.detail()
            );
            assert_eq!(problem.field(), field, "{name}");
            assert_eq!(problem.kind(), "invalid-request", "{name}");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_naming_the_limit() {
        // Without the router's DefaultBodyLimit layer axum's own default
        // (2 MiB) applies; the 413 names the configured limit.
        let big = format!(r#"{{"reason": "{}"}}"#, "x".repeat(3 * 1024 * 1024));
        let got = extract(Some("application/json"), big).await;
        let Err((status, kind, detail)) = got else {
            panic!("accepted an oversized body");
        };
        assert_eq!(status, 413);
        assert_eq!(kind, "https://twincert.dev/problems/body-too-large");
        assert_eq!(detail, "the request body exceeds the limit of 64 bytes");
    }
}
