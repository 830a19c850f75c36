//! What this process has asked of each CA: requests counted by answer
//! status with a latency histogram. The ACME client records them (`ca`),
//! the API renders them for `/metrics`; this type is what passes between
//! the two, so neither knows the other.

/// Upper bounds (seconds) of the ACME request latency histogram's buckets:
/// from a loopback CA's milliseconds to a loaded public CA's seconds.
pub const ACME_LATENCY_BUCKETS: [f64; 11] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Requests to one CA with one answer status (`200`, `429`, … or
/// `timeout`, `error`) made by this process: count, total seconds and the
/// non-cumulative count per latency bucket (the last one is +Inf).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AcmeRequestStats {
    /// The configured CA id.
    pub ca: String,
    /// The HTTP status, or `timeout` / `error` when there was no answer.
    pub status: String,
    /// Requests so far.
    pub count: u64,
    /// Their total duration.
    pub seconds: f64,
    /// Requests per bucket of [`ACME_LATENCY_BUCKETS`], then +Inf.
    pub buckets: [u64; ACME_LATENCY_BUCKETS.len() + 1],
}

impl AcmeRequestStats {
    /// No requests yet to `ca` answered with `status`.
    pub fn new(ca: &str, status: &str) -> Self {
        AcmeRequestStats {
            ca: ca.to_string(),
            status: status.to_string(),
            ..AcmeRequestStats::default()
        }
    }

    /// Counts one request that took `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        self.count += 1;
        self.seconds += seconds;
        let i = ACME_LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(ACME_LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_lands_in_the_first_bucket_that_holds_it() {
        let cases = [
            ("fast", 0.001, 0),
            ("on a bound", 0.01, 0),
            ("just over", 0.011, 1),
            ("a second", 1.0, 6),
            ("slowest bound", 30.0, 10),
            ("beyond every bound", 31.0, 11),
        ];
        for (name, seconds, bucket) in cases {
            let mut s = AcmeRequestStats::new("a", "200");
            s.observe(seconds);
            assert_eq!(s.count, 1, "{name}");
            assert_eq!(s.buckets.iter().sum::<u64>(), 1, "{name}");
            assert_eq!(s.buckets[bucket], 1, "{name}");
        }
    }
}
