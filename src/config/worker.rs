//! The `[worker]` section: how many orders a process works at once, how
//! often it looks for work, how long its leases last and how it backs off.

use serde::Deserialize;

use super::{ConfigError, invalid};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorker {
    enabled: Option<bool>,
    concurrency: Option<usize>,
    poll_interval_ms: Option<u64>,
    lease_seconds: Option<i64>,
    min_backoff_seconds: Option<u64>,
    max_backoff_seconds: Option<u64>,
    acme_timeout_seconds: Option<u64>,
    replica_id: Option<String>,
    counts_interval_seconds: Option<u64>,
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Whether this process runs the planner and order processor.
    pub enabled: bool,
    /// Orders processed at once by this process.
    pub concurrency: usize,
    /// How often the worker looks for due work when idle.
    pub poll_interval_ms: u64,
    /// How long a leased order belongs to a worker before others may take it.
    pub lease_seconds: i64,
    /// First retry delay after a failed attempt.
    pub min_backoff_seconds: u64,
    /// Retry delays never exceed this.
    pub max_backoff_seconds: u64,
    /// How long one attempt may wait on the CA (polling included).
    pub acme_timeout_seconds: u64,
    /// A stable name of this replica across restarts (e.g. the pod name):
    /// at start it takes back at once the leases its previous incarnation
    /// held, instead of waiting them out. Unique among live replicas.
    pub replica_id: Option<String>,
    /// How often one replica recounts the aggregates `/metrics` shows
    /// (at most every ten times a recount's own duration).
    pub counts_interval_seconds: u64,
}

/// `[worker]` with its defaults, refusing values that cannot work.
pub(super) fn validate_worker(w: RawWorker) -> Result<WorkerConfig, ConfigError> {
    let worker = WorkerConfig {
        enabled: w.enabled.unwrap_or(true),
        concurrency: w.concurrency.unwrap_or(32),
        poll_interval_ms: w.poll_interval_ms.unwrap_or(500),
        lease_seconds: w.lease_seconds.unwrap_or(120),
        min_backoff_seconds: w.min_backoff_seconds.unwrap_or(2),
        max_backoff_seconds: w.max_backoff_seconds.unwrap_or(3600),
        acme_timeout_seconds: w.acme_timeout_seconds.unwrap_or(90),
        replica_id: w.replica_id.filter(|s| !s.is_empty()),
        counts_interval_seconds: w.counts_interval_seconds.unwrap_or(30),
    };
    if let Some(id) = &worker.replica_id
        && (id.len() > 253
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(invalid(
            "worker.replica_id",
            id,
            "must be 1 to 253 letters, digits, '.', '-' or '_' (e.g. the pod name)",
        ));
    }
    if !(1..=4096).contains(&worker.concurrency) {
        return Err(invalid(
            "worker.concurrency",
            worker.concurrency,
            "must be between 1 and 4096",
        ));
    }
    if !(10..=60_000).contains(&worker.poll_interval_ms) {
        return Err(invalid(
            "worker.poll_interval_ms",
            worker.poll_interval_ms,
            "must be between 10 and 60000",
        ));
    }
    if !(1..=3600).contains(&worker.counts_interval_seconds) {
        return Err(invalid(
            "worker.counts_interval_seconds",
            worker.counts_interval_seconds,
            "must be between 1 and 3600",
        ));
    }
    if worker.lease_seconds < 2 {
        return Err(invalid(
            "worker.lease_seconds",
            worker.lease_seconds,
            "must be at least 2 (leases are renewed every third of it)",
        ));
    }
    if worker.min_backoff_seconds == 0 || worker.max_backoff_seconds < worker.min_backoff_seconds {
        return Err(invalid(
            "worker.max_backoff_seconds",
            worker.max_backoff_seconds,
            "must be >= min_backoff_seconds >= 1",
        ));
    }
    Ok(worker)
}
