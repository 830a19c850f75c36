//! Request guards in front of every route: the client-IP allowlist and the
//! request timeout. Both answer with problem documents.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiState, Problem};

/// Refuses clients outside `allow_cidrs` (when set; health probes exempt) and bounds every
/// request by `request_timeout_seconds`.
pub async fn guard(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    // Probes (kubelet) reveal nothing and must not need an allowlist entry.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if !st.allow_cidrs.is_empty() && !probe {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        match peer {
            Some(ip) if st.allow_cidrs.iter().any(|c| c.contains(ip)) => {}
            Some(ip) => {
                return Problem::forbidden(format!(
                    "client address {ip} is not in server.allow_cidrs"
                ))
                .into_response();
            }
            None => {
                return Problem::forbidden("client address unknown; refused by server.allow_cidrs")
                    .into_response();
            }
        }
    }
    let limit = Duration::from_secs(st.request_timeout_seconds.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(rsp) => rsp,
        Err(_) => Problem::timeout(limit.as_secs()).into_response(),
    }
}
