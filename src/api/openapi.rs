//! The OpenAPI 3.1 document, assembled from the handlers' annotations and
//! the response types that live beside them (utoipa), and served at
//! `/openapi.json`. Nothing here is used by a handler: this module only
//! collects. Tests hold the document, the router and the access table
//! ([`super::ROUTES`]) to each other, so they cannot drift.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::emergency::{CompromiseResult, TrustResult};
use super::problem::ProblemDoc;
use super::views::{
    AriView, CaView, Delegation, ManualRecord, NameView, OrderView, PersistRecordView,
    RevocationView, SlotView,
};
use super::{CaList, CreatedToken, EventPage, NamePage, SwapResult, TokenList};
use crate::store::{AuditEvent, TokenRecord};

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
        super::readiness::show,
        super::drills::create,
        super::drills::list,
        super::drills::show,
        super::deploy::show_deploy,
        super::deploy::set_deploy,
        super::deploy::request_check,
        super::install::password,
        super::deploy::redeploy,
        super::install::download,
        super::preflight::run,
    ),
    components(schemas(
        super::deploy::DeploySettings, super::deploy::DeployView, super::deploy::DestinationState,
        super::deploy::CheckRequested, crate::store::DeploymentView, crate::store::EndpointView,
        crate::store::EndpointSpec, super::install::PackagePassword,
        super::install::PackageArchive,
        ProblemDoc, NamePage, EventPage, TokenList, CreatedToken, SwapResult, NameView, SlotView,
        OrderView, RevocationView, AriView, Delegation, ManualRecord, PersistRecordView, AuditEvent, TokenRecord, CaView, CaList, TrustResult,
        crate::store::SwapReport, CompromiseResult, super::emergency::SwapOutcome,
        super::emergency::ReprovisionEstimate, super::emergency::SameCaReissue,
        super::emergency::RekeyOutcome,
        super::emergency::OperationList, super::emergency::OperationView,
        crate::store::Operation, crate::store::OperationProgress, crate::store::CaOrders,
        super::emergency::CaTimeLeftView, crate::store::CompromiseReport,
        crate::store::Incident, crate::store::Alert, super::incidents::IncidentList,
        super::incidents::AlertList, super::incidents::CloseIncident,
        super::readiness::ReadinessView, crate::domain::CaReadiness,
        super::drills::NewDrill, super::drills::DrillList, crate::store::Drill,
        crate::domain::DrillMode, crate::domain::DrillRequest, crate::domain::DrillSample,
        crate::domain::DrillReport, crate::domain::DrillStage, crate::domain::DrillFailure,
        crate::domain::PreflightReport, crate::domain::PreflightCheck,
        crate::domain::PreflightStatus
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
            .chain(
                crate::api::PUBLIC_ROUTES
                    .iter()
                    .map(|(m, p)| (m.to_string(), p.to_string())),
            )
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

    #[test]
    fn the_install_link_is_documented_as_a_binary_download_without_a_token() {
        let json = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        let op = &json["paths"]["/install/{token}"]["get"];
        assert!(op["security"].is_null(), "needs no bearer token: {op}");
        let content = &op["responses"]["200"]["content"]["application/x-tar"]["schema"];
        let schema = if let Some(r) = content["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap_or_default();
            json["components"]["schemas"][name].clone()
        } else {
            content.clone()
        };
        assert_eq!(schema["type"], "string", "{schema}");
        assert_eq!(schema["format"], "binary", "{schema}");
        for status in ["404", "410", "429"] {
            assert!(
                op["responses"][status]["content"]["application/problem+json"].is_object(),
                "{status}: {op}"
            );
        }
    }
}
