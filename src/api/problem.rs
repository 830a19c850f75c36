//! RFC 7807 problem documents: the only place an error becomes HTTP.
//!
//! Bad input is echoed precisely; internal failures are logged here and
//! answered with a generic text, so no SQL, path or secret reaches a client.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// An API error with a stable `type` and a human `detail`.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    field: Option<String>,
}

// The body `Problem` serializes is this type, so the schema the OpenAPI
// document shows cannot drift from what is sent. (Its doc line below is the
// schema's description.)
/// An RFC 7807 problem document, as every error is answered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// Stable problem type URI.
    pub r#type: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What exactly was wrong.
    pub detail: String,
    /// The request field at fault, when one is: its path in the body, as
    /// `detail` writes it (`name`, `domains[0]`, `endpoints[2].port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            status,
            kind,
            title,
            detail,
            field: None,
        }
    }

    /// One field of the request body is invalid (400): the detail starts
    /// with the field's path, and `field` carries it for programs.
    pub fn bad_field(path: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let path = path.into();
        Self::bad_request(format!("{path}: {detail}")).at_field(path)
    }

    /// The same problem, naming `path` as the field at fault.
    pub fn at_field(mut self, path: impl Into<String>) -> Self {
        self.field = Some(path.into());
        self
    }

    /// The request is malformed or a field is invalid (400).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            detail.into(),
        )
    }

    /// A domain or name failed validation (400).
    pub fn invalid_name(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-name",
            "Invalid name",
            detail.into(),
        )
    }

    /// The CA choice is not acceptable (422).
    pub fn bad_ca_choice(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-ca-choice",
            "Unacceptable CA choice",
            detail.into(),
        )
    }

    /// No or a wrong bearer token (401).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail.into(),
        )
    }

    /// Authenticated, but the role does not allow this (403).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            detail.into(),
        )
    }

    /// No such resource (404).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            detail.into(),
        )
    }

    /// The resource existed and is gone for good (410): a superseded,
    /// used or expired install link, a password already shown.
    pub fn gone(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, kind, "Gone", detail.into())
    }

    /// Too many requests from one client (429).
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail.into(),
        )
    }

    /// The resource exists already, or the state forbids the request (409).
    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, "Conflict", detail.into())
    }

    /// The body is larger than allowed (413).
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    /// The request target is longer than accepted (414).
    pub fn uri_too_long(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            detail.into(),
        )
    }

    /// The request headers are more or larger than accepted (431).
    pub fn headers_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            detail.into(),
        )
    }

    /// Wrong content type (415).
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail.into(),
        )
    }

    /// Method not allowed on this path (405).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this method is not allowed on this path".into(),
        )
    }

    /// The request took longer than allowed (503).
    pub fn timeout(secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            format!("the request did not finish within {secs} s; try again"),
        )
    }

    /// Something failed on our side (500); `cause` is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred; it has been logged".into(),
        )
    }

    /// The store is unreachable (503).
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "store unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "the store is not reachable".into(),
        )
    }

    /// An error response of another kind (an extractor's rejection as
    /// plain text) as a problem of the same status; see [`only_problems`].
    fn from_status(status: StatusCode, text: &str) -> Self {
        if status.is_server_error() {
            let mut p = Self::internal(&text);
            p.status = status;
            return p;
        }
        let detail = if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text.trim().chars().take(500).collect()
        };
        match status.as_u16() {
            400 => Self::bad_request(detail),
            404 => Self::not_found(detail),
            _ => Self::new(
                status,
                "http-error",
                status.canonical_reason().unwrap_or("Error"),
                detail,
            ),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The last segment of the problem `type` (`invalid-name`, …).
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &str {
        self.kind
    }

    /// What exactly was wrong.
    #[cfg(test)]
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }

    /// The field at fault, if one is.
    #[cfg(test)]
    pub(crate) fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(what) => {
                Problem::conflict("duplicate", format!("{what} already exists"))
            }
            StoreError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            StoreError::Conflict(why) => Problem::conflict("conflict", why),
            other => Problem::internal(&other),
        }
    }
}

impl Problem {
    /// The status and the JSON document, for what answers below the router
    /// (`wire`); the router's answers go through `IntoResponse`.
    pub(super) fn document(self) -> (StatusCode, Vec<u8>) {
        let body = ProblemDoc {
            r#type: format!("https://twincert.dev/problems/{}", self.kind),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        (self.status, json)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, json) = self.document();
        let mut rsp = (status, json).into_response();
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1 / RFC 6750 §3.
            rsp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"twincert\""),
            );
        }
        rsp
    }
}

/// The outermost layer of the router: an error response that is not a
/// problem document — the plain-text rejection of an axum extractor, such
/// as a path segment that is not UTF-8 — is answered as one, with the same
/// status and its text as the detail. Every handler error is a [`Problem`]
/// already; this catches what the framework answers on its own.
pub(super) async fn only_problems(req: Request, next: Next) -> Response {
    let rsp = next.run(req).await;
    let status = rsp.status();
    let is_problem = rsp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return rsp;
    }
    // Rejection texts are a line; more is not read.
    let text = axum::body::to_bytes(rsp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Problem::from_status(status, &text).into_response()
}
