//! `GET /v1/readiness`: the latest emergency readiness report, and its
//! metric series.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::problem::ProblemDoc;
use super::{ApiState, Problem};
use crate::clock::rfc3339;
use crate::domain::{CaReadiness, ReadinessReport};

/// The readiness report as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadinessView {
    /// RFC 3339: when it was computed; null before the first computation
    /// (a worker with `readiness.enabled` computes it within seconds of
    /// starting, then every `readiness.interval_seconds` and after every
    /// emergency operation).
    pub computed_at: Option<String>,
    /// How long the computation took.
    pub duration_ms: i64,
    /// Names serving a certificate.
    pub names: i64,
    /// Of those, the ones that would be safe at once if their active CA
    /// were lost now.
    pub safe: i64,
    /// Per CA: names active on it, how many would be safe and why the
    /// others would not (`outcomes`, `samples`), the estimated time to
    /// safety and to full redundancy.
    pub cas: Vec<CaReadiness>,
}

#[utoipa::path(get, path = "/v1/readiness", responses((status = 200, description = "the latest readiness report: per CA, how many names active on it would be safe at once if it were lost now, why the others would not, and the estimated time to safety and to full redundancy", body = ReadinessView), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn show(State(st): State<ApiState>) -> Result<Response, Problem> {
    let view = match st.store.readiness().latest().await? {
        Some(r) => ReadinessView {
            computed_at: Some(rfc3339(r.computed_at)),
            duration_ms: r.duration_ms,
            names: r.names,
            safe: r.safe,
            cas: r.cas,
        },
        None => ReadinessView {
            computed_at: None,
            duration_ms: 0,
            names: 0,
            safe: 0,
            cas: Vec::new(),
        },
    };
    Ok(Json(view).into_response())
}

/// The report as metric series: names per CA and outcome, the safe share
/// and the estimated times per CA.
pub(super) fn series(r: &ReadinessReport) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for c in &r.cas {
        for (outcome, n) in &c.outcomes {
            out.push((
                format!(
                    "twincert_readiness_names{{ca=\"{}\",outcome=\"{outcome}\"}}",
                    c.ca
                ),
                *n as f64,
            ));
        }
        out.push((
            format!("twincert_readiness_safe_share{{ca=\"{}\"}}", c.ca),
            c.safe_share,
        ));
        out.push((
            format!(
                "twincert_readiness_time_to_safety_seconds{{ca=\"{}\"}}",
                c.ca
            ),
            c.time_to_safety_seconds as f64,
        ));
        if let Some(t) = c.time_to_redundancy_seconds {
            out.push((
                format!(
                    "twincert_readiness_time_to_redundancy_seconds{{ca=\"{}\"}}",
                    c.ca
                ),
                t as f64,
            ));
        }
    }
    out.push((
        "twincert_readiness_computed_at_seconds".into(),
        r.computed_at as f64,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_name_every_outcome_per_ca() {
        let mut c = CaReadiness {
            ca: "a".into(),
            active: 3,
            safe: 2,
            safe_share: 2.0 / 3.0,
            time_to_safety_seconds: 4,
            ..CaReadiness::default()
        };
        c.outcomes.insert("safe".into(), 2);
        c.outcomes.insert("no_standby".into(), 1);
        let r = ReadinessReport {
            computed_at: 100,
            cas: vec![c],
            ..ReadinessReport::default()
        };
        let s = series(&r);
        assert!(s.contains(&(
            "twincert_readiness_names{ca=\"a\",outcome=\"no_standby\"}".into(),
            1.0
        )));
        assert!(s.contains(&(
            "twincert_readiness_time_to_safety_seconds{ca=\"a\"}".into(),
            4.0
        )));
        assert!(
            s.iter()
                .any(|(k, _)| k == "twincert_readiness_computed_at_seconds")
        );
    }
}
