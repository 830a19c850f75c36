//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of what
//! the store knows (names, slots, CAs, revocation, the job queue, expiry)
//! and of this process's ACME requests, which reach the API as a value
//! through [`ApiState::acme_requests`] (the API does not know the ACME
//! client). Reading and rendering are separate: the handler reads
//! everything into a [`Scrape`], [`render`] turns it into text.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::problem::ProblemDoc;
use super::{ApiState, Problem};
use crate::domain::{ACME_LATENCY_BUCKETS, AcmeRequestStats};

/// The ACME request latency histogram.
const ACME_DURATION: &str = "twincert_acme_request_duration_seconds";

/// Everything one scrape shows, read before anything is rendered.
struct Scrape {
    /// Unlabelled gauges (`twincert_names`, …).
    totals: Vec<(String, i64)>,
    /// Per CA that holds slots: (CA, active names, slots).
    usage: Vec<(String, i64, i64)>,
    /// Per configured CA, in preference order: whether it is distrusted.
    distrusted: Vec<(String, bool)>,
    /// Labelled series (`name{labels}`, value), in any order.
    series: Vec<(String, f64)>,
    /// This process's ACME requests.
    acme: Vec<AcmeRequestStats>,
}

// `tag`: the one utoipa derived while this handler lived in `api/mod.rs`,
// kept so the served OpenAPI document (and clients generated from it) does
// not change.
#[utoipa::path(get, path = "/metrics", tag = "super", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn metrics(State(st): State<ApiState>) -> Result<Response, Problem> {
    let now = st.clock.now();
    // The aggregates as the `counts` controller last stored them. Before
    // its first pass has stored a set they are left out (a gap in the
    // graphs, not a guess): counting them here would take seconds per
    // scrape at a million names, past Prometheus' scrape timeout.
    let counts = st.store.metrics().load_counts().await?;
    let distrusted_ids = st.store.cas().distrusted_cas().await?;
    let distrusted = st
        .cas
        .iter()
        .map(|c| (c.id.clone(), distrusted_ids.contains(&c.id)))
        .collect();
    let (totals, usage, mut series) = match &counts {
        Some(c) => {
            let mut series = c.series.clone();
            series.extend(freshness_series(c.computed_at, c.pass_seconds, now));
            series.extend(sealed_series(&c.sealed, st.sealer.as_deref()));
            (c.totals.clone(), c.usage.clone(), series)
        }
        None => Default::default(),
    };
    if let Some(r) = st.store.readiness().latest().await? {
        series.extend(super::readiness::series(&r));
    }
    // Names with a preflight finding per check (`error`: a check that could
    // not be made), each an index range count over the stored reports.
    for (check, n) in st.store.preflights().findings().await? {
        series.push((
            format!("twincert_preflight_findings{{check=\"{check}\"}}"),
            n as f64,
        ));
    }
    let scrape = Scrape {
        totals,
        usage,
        distrusted,
        series,
        acme: (st.acme_requests)(),
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(scrape),
    )
        .into_response())
}

/// How old the counts are: when their pass began
/// (`twincert_counts_computed_at_seconds`), its age at this scrape and how
/// long the pass took — an alert on the age catches a `counts` controller
/// that stopped.
fn freshness_series(computed_at: i64, pass_seconds: f64, now: i64) -> Vec<(String, f64)> {
    vec![
        (
            "twincert_counts_computed_at_seconds".into(),
            computed_at as f64,
        ),
        (
            "twincert_counts_age_seconds".into(),
            (now - computed_at).max(0) as f64,
        ),
        ("twincert_counts_pass_seconds".into(), pass_seconds),
    ]
}

/// `twincert_sealed_secrets{key_id}`: how many stored secrets each master
/// key id seals, with 0 for a configured key that seals nothing (the sign
/// that it can be removed from the configuration).
fn sealed_series(
    used: &[(String, i64)],
    sealer: Option<&crate::keys::seal::Sealer>,
) -> Vec<(String, f64)> {
    let mut ids: Vec<(&str, i64)> = used.iter().map(|(id, n)| (id.as_str(), *n)).collect();
    for id in sealer.into_iter().flat_map(|s| s.key_ids()) {
        if !ids.iter().any(|(u, _)| *u == id) {
            ids.push((id, 0));
        }
    }
    ids.into_iter()
        .map(|(id, n)| {
            let id = crate::store::label(id);
            (
                format!("twincert_sealed_secrets{{key_id=\"{id}\"}}"),
                n as f64,
            )
        })
        .collect()
}

/// The exposition text: one `# TYPE` line per metric name, its series
/// after it; `_total` series are counters, the rest gauges, and the ACME
/// latencies a histogram.
fn render(scrape: Scrape) -> String {
    let Scrape {
        totals,
        usage,
        distrusted,
        mut series,
        acme,
    } = scrape;
    let mut out = String::new();
    for (metric, value) in totals {
        out.push_str(&format!("# TYPE {metric} gauge\n{metric} {value}\n"));
    }
    out.push_str("# TYPE twincert_ca_active_names gauge\n");
    for (ca, active, _) in &usage {
        out.push_str(&format!(
            "twincert_ca_active_names{{ca=\"{ca}\"}} {active}\n"
        ));
    }
    out.push_str("# TYPE twincert_ca_slots gauge\n");
    for (ca, _, slots) in &usage {
        out.push_str(&format!("twincert_ca_slots{{ca=\"{ca}\"}} {slots}\n"));
    }
    out.push_str("# TYPE twincert_ca_distrusted gauge\n");
    for (ca, distrusted) in &distrusted {
        out.push_str(&format!(
            "twincert_ca_distrusted{{ca=\"{ca}\"}} {}\n",
            u8::from(*distrusted)
        ));
    }
    for r in &acme {
        series.push((
            format!(
                "twincert_acme_requests_total{{ca=\"{}\",status=\"{}\"}}",
                r.ca, r.status
            ),
            r.count as f64,
        ));
    }
    // Labelled series grouped by metric name, one TYPE line each.
    series.sort_by(|a, b| {
        let name = |s: &str| s.split('{').next().unwrap_or_default().to_string();
        name(&a.0).cmp(&name(&b.0))
    });
    let mut last = String::new();
    for (series, value) in series {
        let name = series.split('{').next().unwrap_or_default().to_string();
        if name != last {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            last = name;
        }
        out.push_str(&format!("{series} {value}\n"));
    }
    acme_latency_histogram(&acme, &mut out);
    out
}

/// `twincert_acme_request_duration_seconds` as a Prometheus histogram
/// (cumulative buckets, `_sum`, `_count`) per CA and answer status.
fn acme_latency_histogram(stats: &[AcmeRequestStats], out: &mut String) {
    if stats.is_empty() {
        return;
    }
    out.push_str(&format!("# TYPE {ACME_DURATION} histogram\n"));
    for r in stats {
        let labels = format!("ca=\"{}\",status=\"{}\"", r.ca, r.status);
        let mut cumulative = 0;
        for (i, n) in r.buckets.iter().enumerate() {
            cumulative += n;
            let le = ACME_LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            out.push_str(&format!(
                "{ACME_DURATION}_bucket{{{labels},le=\"{le}\"}} {cumulative}\n"
            ));
        }
        out.push_str(&format!("{ACME_DURATION}_sum{{{labels}}} {}\n", r.seconds));
        out.push_str(&format!("{ACME_DURATION}_count{{{labels}}} {}\n", r.count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(acme: Vec<AcmeRequestStats>) -> Scrape {
        Scrape {
            totals: vec![("twincert_names".into(), 3)],
            usage: vec![("a".into(), 2, 3)],
            distrusted: vec![("a".into(), false), ("b".into(), true)],
            series: vec![
                ("twincert_x_total{ca=\"b\"}".into(), 1.0),
                ("twincert_y{ca=\"a\"}".into(), 0.5),
                ("twincert_x_total{ca=\"a\"}".into(), 2.0),
            ],
            acme,
        }
    }

    #[test]
    fn every_metric_name_gets_one_type_line_before_its_series() {
        let text = render(scrape(Vec::new()));
        assert_eq!(
            text,
            "# TYPE twincert_names gauge\ntwincert_names 3\n\
             # TYPE twincert_ca_active_names gauge\ntwincert_ca_active_names{ca=\"a\"} 2\n\
             # TYPE twincert_ca_slots gauge\ntwincert_ca_slots{ca=\"a\"} 3\n\
             # TYPE twincert_ca_distrusted gauge\n\
             twincert_ca_distrusted{ca=\"a\"} 0\ntwincert_ca_distrusted{ca=\"b\"} 1\n\
             # TYPE twincert_x_total counter\n\
             twincert_x_total{ca=\"b\"} 1\ntwincert_x_total{ca=\"a\"} 2\n\
             # TYPE twincert_y gauge\ntwincert_y{ca=\"a\"} 0.5\n"
        );
        assert!(
            !text.contains(ACME_DURATION),
            "no ACME requests, no histogram"
        );
    }

    #[test]
    fn acme_requests_are_a_counter_and_a_cumulative_histogram() {
        let mut stats = AcmeRequestStats::new("a", "200");
        stats.observe(0.02);
        stats.observe(0.02);
        stats.observe(60.0);
        let text = render(scrape(vec![stats]));
        for line in [
            "# TYPE twincert_acme_requests_total counter",
            "twincert_acme_requests_total{ca=\"a\",status=\"200\"} 3",
            "# TYPE twincert_acme_request_duration_seconds histogram",
            "twincert_acme_request_duration_seconds_bucket{ca=\"a\",status=\"200\",le=\"0.01\"} 0",
            "twincert_acme_request_duration_seconds_bucket{ca=\"a\",status=\"200\",le=\"0.025\"} 2",
            "twincert_acme_request_duration_seconds_bucket{ca=\"a\",status=\"200\",le=\"30\"} 2",
            "twincert_acme_request_duration_seconds_bucket{ca=\"a\",status=\"200\",le=\"+Inf\"} 3",
            "twincert_acme_request_duration_seconds_count{ca=\"a\",status=\"200\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
