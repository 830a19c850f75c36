//! What the scheduling rules come to for one certificate lifetime: when
//! twincert renews, how long it can retry before the certificate expires,
//! when it alerts, how often it asks ARI. Nothing here decides anything
//! new: every figure comes from the functions the controllers use
//! ([`renew_at`], [`expiry_alert_due`], [`ari_max_poll_seconds`],
//! [`no_standby_alert_after`]), so the table in `docs/lifetimes.md`,
//! rendered by [`markdown_table`] and checked by a test here, cannot
//! drift from the code.
//!
//! Every rule is a fraction of the lifetime (or a fixed cap that only
//! long lifetimes reach), so 6-, 45-, 64- and 90-day certificates — Let's
//! Encrypt's `shortlived`, `tlsserver` and `classic` of 2026–2027 — are
//! scheduled alike.

use super::readiness::standby_expiring;
use super::{
    ari_max_poll_seconds, ari_poll_delay, expiry_alert_due, max_backoff_seconds,
    no_standby_alert_after, renew_at,
};

/// The settings the figures depend on (the configuration's values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleSettings {
    /// `policy.renew_at_fraction`.
    pub renew_at_fraction: f64,
    /// `revocation.expiry_alert_fraction`.
    pub expiry_alert_fraction: f64,
    /// `revocation.no_standby_alert_hours`, in seconds.
    pub no_standby_alert_seconds: i64,
    /// `revocation.ari_min_poll_seconds`.
    pub ari_min_poll_seconds: u64,
    /// `readiness.revocation_window_hours`, in seconds.
    pub revocation_window_seconds: i64,
    /// `worker.min_backoff_seconds`.
    pub min_backoff_seconds: u64,
    /// `worker.max_backoff_seconds`.
    pub max_backoff_seconds: u64,
}

impl ScheduleSettings {
    /// The configuration's defaults (`config::RevocationConfig::default`,
    /// `config::WorkerConfig`, `policy.renew_at_fraction`).
    pub const DEFAULTS: ScheduleSettings = ScheduleSettings {
        renew_at_fraction: 2.0 / 3.0,
        expiry_alert_fraction: 1.0 / 3.0,
        no_standby_alert_seconds: 24 * 3600,
        ari_min_poll_seconds: 60,
        revocation_window_seconds: 5 * 86_400,
        min_backoff_seconds: 2,
        max_backoff_seconds: 3600,
    };
}

/// The schedule of a certificate living `lifetime` seconds; all times are
/// seconds after its `notBefore`, durations in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// notAfter − notBefore.
    pub lifetime: i64,
    /// When the renewal is due without ARI ([`renew_at`]).
    pub renew_at: i64,
    /// From the renewal point to expiry: the time renewals can be retried.
    pub retry_budget: i64,
    /// The longest wait between two attempts ([`max_backoff_seconds`]).
    pub max_backoff: u64,
    /// Failed attempts that fit in the retry budget at the longest backoff.
    pub attempts_at_max_backoff: i64,
    /// When `expiry_soon` fires if no renewal succeeded
    /// ([`expiry_alert_due`] first true).
    pub expiry_alert_at: i64,
    /// The longest wait between two ARI polls, for a CA sending six hours
    /// ([`ari_poll_delay`] with [`ari_max_poll_seconds`]).
    pub ari_poll: u64,
    /// How long a name may lack a standby before `no_standby`
    /// ([`no_standby_alert_after`]).
    pub no_standby_after: i64,
    /// A standby with this little left is not counted safe by readiness
    /// ([`standby_expiring`] first true).
    pub standby_expiring_left: i64,
}

/// The schedule for `lifetime` seconds under `s`.
pub fn schedule(lifetime: i64, s: &ScheduleSettings) -> Schedule {
    let renew = renew_at(0, lifetime, s.renew_at_fraction);
    // The first second at which each rule holds (it holds from then on:
    // time only moves towards expiry).
    let first_alert = first_true(lifetime, |now| {
        expiry_alert_due(0, lifetime, renew, s.expiry_alert_fraction, now)
    });
    let expiring_from = first_true(lifetime, |now| {
        standby_expiring(0, lifetime, now, s.revocation_window_seconds)
    });
    let max_backoff =
        max_backoff_seconds(s.max_backoff_seconds, s.min_backoff_seconds, Some(lifetime));
    Schedule {
        lifetime,
        max_backoff,
        renew_at: renew,
        retry_budget: lifetime - renew,
        attempts_at_max_backoff: (lifetime - renew) / max_backoff.max(1) as i64,
        expiry_alert_at: first_alert,
        ari_poll: ari_poll_delay(
            Some(6 * 3600),
            s.ari_min_poll_seconds,
            ari_max_poll_seconds(lifetime),
        ),
        no_standby_after: no_standby_alert_after(s.no_standby_alert_seconds, Some(lifetime)),
        standby_expiring_left: lifetime - expiring_from,
    }
}

/// The first second in `[0, end]` from which `rule` holds (it must hold
/// from some second on and never stop).
fn first_true(end: i64, rule: impl Fn(i64) -> bool) -> i64 {
    let (mut lo, mut hi) = (0, end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if rule(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// `4 d 16 h`, `2 h 52 min`, `45 s`: the two largest non-zero units.
pub fn human(seconds: i64) -> String {
    let units = [("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)];
    let mut left = seconds.max(0);
    let first = units
        .iter()
        .position(|(_, size)| left >= *size)
        .unwrap_or(units.len() - 1);
    let mut parts = Vec::new();
    for (name, size) in units[first..].iter().take(2) {
        let n = left / size;
        left %= size;
        if n > 0 || parts.is_empty() {
            parts.push(format!("{n} {name}"));
        }
    }
    parts.join(" ")
}

/// The lifetimes the docs' table covers, in days: Let's Encrypt's
/// `shortlived`, `tlsserver`, `classic` from 2027-02-10, and `classic`
/// until then.
pub const TABLE_DAYS: [i64; 4] = [6, 45, 64, 90];

/// The docs' table (GitHub Markdown) for [`TABLE_DAYS`] under `s`.
pub fn markdown_table(s: &ScheduleSettings) -> String {
    let mut out = String::from(
        "| lifetime | renews at (no ARI) | can retry for | longest wait between attempts | attempts at that wait | `expiry_soon` alert at | ARI polled at least every | `no_standby` alert after | a standby counts for readiness until |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for days in TABLE_DAYS {
        let r = schedule(days * 86_400, s);
        out.push_str(&format!(
            "| {days} days | {} after issuance ({}) | {} | {} | {} | {} after issuance ({} before expiry) | {} | {} | {} before expiry |\n",
            human(r.renew_at),
            fraction(r.renew_at, r.lifetime),
            human(r.retry_budget),
            human(r.max_backoff as i64),
            r.attempts_at_max_backoff,
            human(r.expiry_alert_at),
            human(r.lifetime - r.expiry_alert_at),
            human(r.ari_poll as i64),
            human(r.no_standby_after),
            human(r.standby_expiring_left),
        ));
    }
    out
}

fn fraction(part: i64, whole: i64) -> String {
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn every_rule_scales_with_the_lifetime() {
        let s = ScheduleSettings::DEFAULTS;
        // (days, renew at, retry budget, expiry alert at, ARI poll, no standby)
        let cases: [(i64, i64, i64, i64, u64, i64); 4] = [
            (
                6,
                4 * DAY,
                2 * DAY,
                4 * DAY + 6 * DAY / 50 + 1,
                6 * 3600,
                12 * 3600,
            ),
            (
                45,
                30 * DAY,
                15 * DAY,
                30 * DAY + 45 * DAY / 50 + 1,
                6 * 3600,
                DAY,
            ),
            (
                64,
                64 * DAY * 2 / 3,
                64 * DAY - 64 * DAY * 2 / 3,
                64 * DAY * 2 / 3 + 64 * DAY / 50 + 1,
                6 * 3600,
                DAY,
            ),
            (
                90,
                60 * DAY,
                30 * DAY,
                60 * DAY + 90 * DAY / 50 + 1,
                6 * 3600,
                DAY,
            ),
        ];
        for (days, renew, budget, alert, poll, standby) in cases {
            let r = schedule(days * DAY, &s);
            assert_eq!(r.renew_at, renew, "{days} d: renewal point");
            assert_eq!(r.retry_budget, budget, "{days} d: retry budget");
            assert_eq!(r.expiry_alert_at, alert, "{days} d: expiry alert");
            assert_eq!(r.ari_poll, poll, "{days} d: ARI poll");
            assert_eq!(r.no_standby_after, standby, "{days} d: no_standby");
            // The same fractions at every lifetime (to the second).
            assert!((r.renew_at as f64 / r.lifetime as f64 - 2.0 / 3.0).abs() < 1e-6);
            assert!((r.retry_budget as f64 / r.lifetime as f64 - 1.0 / 3.0).abs() < 1e-6);
            // The alert comes after the renewal point, before expiry.
            assert!(r.renew_at < r.expiry_alert_at && r.expiry_alert_at < r.lifetime);
        }
        // Short lifetimes shrink the caps too: a 12-hour certificate
        // (Caddy's) is polled every 30 min and alerted after 1 h without
        // a standby; a 4-minute test certificate every minute (the floor).
        let r = schedule(12 * 3600, &s);
        assert_eq!((r.ari_poll, r.no_standby_after), (1800, 3600));
        assert_eq!((r.max_backoff, r.attempts_at_max_backoff), (600, 24));
        let r = schedule(240, &s);
        assert_eq!((r.ari_poll, r.max_backoff), (60, 3));
        // Readiness: the 5-day revocation window, or a quarter of a short
        // life (6 days: 1 d 12 h; 12 hours: 3 h).
        assert_eq!(schedule(6 * DAY, &s).standby_expiring_left, 3 * DAY / 2);
        assert_eq!(schedule(DAY / 2, &s).standby_expiring_left, 3 * 3600);
        for days in [45, 64, 90] {
            assert_eq!(schedule(days * DAY, &s).standby_expiring_left, 5 * DAY);
        }
        // At the table's lifetimes the configured hour is the cap, and the
        // retry budget holds at least 48 attempts at it.
        for days in TABLE_DAYS {
            let r = schedule(days * DAY, &s);
            assert_eq!(r.max_backoff, 3600, "{days} d");
            assert!(r.attempts_at_max_backoff >= 48, "{days} d");
        }
    }

    #[test]
    fn the_docs_table_is_the_code_s_output() {
        let doc = include_str!("../../docs/lifetimes.md");
        let table = markdown_table(&ScheduleSettings::DEFAULTS);
        assert!(
            doc.contains(&table),
            "docs/lifetimes.md is stale; its table must read:\n{table}"
        );
    }

    #[test]
    fn durations_read_as_two_units() {
        assert_eq!(human(4 * DAY), "4 d");
        assert_eq!(human(42 * DAY + 16 * 3600 + 5), "42 d 16 h");
        assert_eq!(human(2 * 3600 + 52 * 60 + 48), "2 h 52 min");
        assert_eq!(human(3600 + 30), "1 h");
        assert_eq!(human(45), "45 s");
        assert_eq!(human(0), "0 s");
    }
}
