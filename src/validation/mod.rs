//! Proving control of names. For now HTTP-01 (RFC 8555 §8.3): a listener
//! that answers `/.well-known/acme-challenge/{token}` from the tokens in the
//! store, so whichever replica the CA reaches can answer for any order.
//! DNS-01 arrives with its own issue.
//!
//! [`Http01Answers`] keeps the answers this process published in memory as
//! well: the CA usually asks the replica that published (Pebble asks three
//! times per name), and those lookups then skip the database; answers
//! published by other replicas are read from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::store::{Challenges, StoreError};

pub mod caa;
pub mod dns;
pub mod dns01;
pub mod preflight;

/// HTTP-01 answers: the store (shared by replicas) plus this process's own.
pub struct Http01Answers {
    challenges: Challenges,
    /// token → (key authorization, order id), for orders in flight here.
    local: Mutex<HashMap<String, (String, String)>>,
}

impl std::fmt::Debug for Http01Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http01Answers").finish_non_exhaustive()
    }
}

impl Http01Answers {
    /// Answers backed by the store's `challenges`.
    pub fn new(challenges: Challenges) -> Arc<Http01Answers> {
        Arc::new(Http01Answers {
            challenges,
            local: Mutex::new(HashMap::new()),
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an answer: to the store first (so every replica can serve
    /// it), then locally.
    pub async fn publish(
        &self,
        token: &str,
        key_authorization: &str,
        order_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.challenges
            .put_http01_token(token, key_authorization, order_id, now)
            .await?;
        self.local().insert(
            token.to_string(),
            (key_authorization.to_string(), order_id.to_string()),
        );
        Ok(())
    }

    /// Drops the local answers of an order that ended (the store deletes
    /// its rows in the same transaction that ends the order).
    pub fn forget_order(&self, order_id: &str) {
        self.local().retain(|_, (_, o)| o != order_id);
    }

    /// The key authorization to serve for `token`, if any.
    pub async fn answer(&self, token: &str) -> Result<Option<String>, StoreError> {
        if let Some((ka, _)) = self.local().get(token) {
            return Ok(Some(ka.clone()));
        }
        self.challenges.http01_key_authorization(token).await
    }
}

/// The HTTP-01 responder's router.
pub fn http01_router(answers: Arc<Http01Answers>) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(answers)
}

/// Tokens are base64url (RFC 8555 §8.1); anything else is not ours.
fn plausible_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn answer(State(answers): State<Arc<Http01Answers>>, Path(token): Path<String>) -> Response {
    if !plausible_token(&token) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match answers.answer(&token).await {
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

    #[tokio::test]
    async fn answers_come_from_memory_or_from_another_replica_via_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("v.db").display());
        let store = crate::store::Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let here = Http01Answers::new(store.challenges().clone());
        let other_replica = Http01Answers::new(store.challenges().clone());
        here.publish("tok", "tok.thumb", "order-1", 1)
            .await
            .expect("publish");
        assert_eq!(
            here.answer("tok").await.expect("local").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(
            other_replica.answer("tok").await.expect("store").as_deref(),
            Some("tok.thumb")
        );
        here.forget_order("order-1");
        // The store row is still there until the order's end deletes it.
        assert_eq!(
            here.answer("tok").await.expect("store").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(here.answer("nope").await.expect("store"), None);
    }
}
