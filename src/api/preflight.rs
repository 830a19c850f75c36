//! `POST /v1/names/{name}/preflight`: runs the CAA, delegation and provider checks of
//! one name now (`validation::preflight`), stores the report like the
//! worker's checks do, and returns it. `GET /v1/names/{name}` shows the
//! latest stored report.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::problem::ProblemDoc;
use super::{ApiState, Problem, load_name};
use crate::domain::PreflightReport;

#[utoipa::path(post, path = "/v1/names/{name}/preflight", params(("name" = String, Path, description = "the managed name")), responses((status = 200, description = "the checks ran; the report (also stored and shown by GET /v1/names/{name})", body = PreflightReport), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "this process cannot run preflight checks", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn run(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let Some(preflight) = &st.preflight else {
        return Err(Problem::conflict(
            "preflight-unavailable",
            "this process was started without DNS lookups; run the check on a process with \
             the [dns] settings (serve --role api or all)",
        ));
    };
    match preflight.check_name_now(&rec.id).await? {
        Some(report) => Ok(Json(report).into_response()),
        None => Err(Problem::not_found(format!("name '{}' not found", rec.id))),
    }
}
