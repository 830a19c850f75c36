//! Proving control of names. For now HTTP-01 (RFC 8555 §8.3): a listener
//! that answers `/.well-known/acme-challenge/{token}` from the tokens in the
//! store, so whichever replica the CA reaches can answer for any order.
//! DNS-01 arrives with its own issue.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::store::Store;

/// The HTTP-01 responder's router.
pub fn http01_router(store: Store) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(store)
}

/// Tokens are base64url (RFC 8555 §8.1); anything else is not ours.
fn plausible_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn answer(State(store): State<Store>, Path(token): Path<String>) -> Response {
    if !plausible_token(&token) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match store.http01_key_authorization(&token).await {
        Ok(Some(ka)) => ([(header::CONTENT_TYPE, "application/octet-stream")], ka).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "http-01 lookup failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes() {
        assert!(plausible_token(
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
        ));
        assert!(!plausible_token(""));
        assert!(!plausible_token("../../etc/passwd"));
        assert!(!plausible_token(&"a".repeat(300)));
    }
}
