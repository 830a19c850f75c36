//! The OpenAPI 3.1 document, generated from the handlers' annotations
//! (utoipa) and served at `/openapi.json`. Tests hold it, the router and
//! the access table ([`super::ROUTES`]) to each other, so they cannot drift.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::views::{
    AriView, CaView, Delegation, ManualRecord, NameView, OrderView, RevocationView, SlotView,
};
use crate::store::{AuditEvent, TokenRecord};

/// An RFC 7807 problem document, as every error is answered.
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    /// Stable problem type URI.
    pub r#type: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What exactly was wrong.
    pub detail: String,
}

/// A page of names.
#[derive(Serialize, ToSchema)]
pub struct NamePage {
    /// The names.
    pub items: Vec<NameView>,
    /// Opaque cursor of the next page, `null` on the last.
    pub next_cursor: Option<String>,
}

/// A page of audit events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// The events, newest first.
    pub items: Vec<AuditEvent>,
    /// Opaque cursor of the next page, `null` on the last.
    pub next_cursor: Option<String>,
}

/// All tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// The tokens (never their secrets).
    pub items: Vec<TokenRecord>,
}

/// A token just created: the record plus its secret, shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// Row id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: crate::domain::Role,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// The bearer secret.
    pub token: String,
}

/// All configured CAs.
#[derive(Serialize, ToSchema)]
pub struct CaList {
    /// The CAs.
    pub items: Vec<CaView>,
}

/// The answer to distrust / trust.
#[derive(Serialize, ToSchema)]
pub struct TrustResult {
    /// The CA.
    pub id: String,
    /// Its new state.
    pub distrusted: bool,
}

/// The answer to a compromise report.
#[derive(Serialize, ToSchema)]
pub struct CompromiseResult {
    /// The name.
    pub name: String,
    /// The compromised slot.
    pub slot: crate::domain::Slot,
    /// Whether the name swapped away from it.
    pub swapped: bool,
    /// `queued`.
    pub revocation: String,
    /// `queued`.
    pub reissue: String,
}

/// The answer to a swap.
#[derive(Serialize, ToSchema)]
pub struct SwapResult {
    /// The name.
    pub name: String,
    /// The now active slot.
    pub active: crate::domain::Slot,
    /// The operation record; the abandoned slot is re-provisioned under it.
    pub operation_id: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "twincert", description = "Primary and backup certificates from two ACME CAs for every name."),
    paths(
        super::create_name,
        super::list_names,
        super::show_name,
        super::delete_name,
        super::certificate,
        super::swap,
        super::private_key,
        super::events,
        super::create_token,
        super::list_tokens,
        super::delete_token,
        super::list_cas,
        super::emergency::distrust_ca,
        super::emergency::trust_ca,
        super::metrics::metrics,
        super::emergency::mass_swap,
        super::emergency::compromise,
        super::emergency::bulk_compromise,
        super::emergency::rekey,
        super::emergency::list_operations,
        super::emergency::show_operation,
        super::incidents::list_incidents,
        super::incidents::show_incident,
        super::incidents::close_incident,
        super::incidents::list_alerts,
        super::deploy::show_deploy,
        super::deploy::set_deploy,
        super::deploy::request_check,
    ),
    components(schemas(
        super::deploy::DeploySettings, super::deploy::DeployView, super::deploy::DestinationState,
        super::deploy::CheckRequested, crate::store::DeploymentView, crate::store::EndpointView,
        crate::store::EndpointSpec,
        ProblemDoc, NamePage, EventPage, TokenList, CreatedToken, SwapResult, NameView, SlotView,
        OrderView, RevocationView, AriView, Delegation, ManualRecord, AuditEvent, TokenRecord, CaView, CaList, TrustResult,
        crate::store::SwapReport, CompromiseResult, super::emergency::SwapOutcome,
        super::emergency::ReprovisionEstimate, super::emergency::RekeyOutcome,
        super::emergency::OperationList, super::emergency::OperationView,
        crate::store::Operation, crate::store::OperationProgress, crate::store::CompromiseReport,
        crate::store::Incident, crate::store::Alert, super::incidents::IncidentList,
        super::incidents::AlertList, super::incidents::CloseIncident
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_access_table() {
        let doc = ApiDoc::openapi();
        let mut documented = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    documented.insert((method.to_string(), path.clone()));
                }
            }
        }
        let table: BTreeSet<(String, String)> = crate::api::ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, table);
        let json = serde_json::to_value(&doc).expect("serializes");
        assert!(
            json["openapi"]
                .as_str()
                .unwrap_or_default()
                .starts_with("3.1")
        );
    }
}
