//! Emergency readiness: for a name active on CA X, whether losing X now
//! would be a non-event — its standby flips in at once and is served — and
//! if not, the first reason why; whether a CA's readiness calls for an
//! alert. Pure rules: the store groups names by the facts below, the
//! readiness controller applies these rules per group.

/// What is known about the standby of a name active on CA X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyFacts<'a> {
    /// The standby slot holds a certificate.
    pub present: bool,
    /// The CA that issued it (None when absent).
    pub ca: Option<&'a str>,
    /// Its CA's root group (None when absent or not configured).
    pub ca_root_group: Option<&'a str>,
    /// Its CA is distrusted.
    pub ca_distrusted: bool,
    /// It has expired.
    pub expired: bool,
    /// It expires soon ([`standby_expiring`]).
    pub expiring: bool,
    /// Found or made revoked.
    pub revoked: bool,
    /// Its key was reported compromised.
    pub key_compromised: bool,
    /// An emergency operation superseded it and it is not re-issued yet.
    pub superseded: bool,
    /// The last revocation check of it could not decide.
    pub status_unknown: bool,
    /// A deployment destination of the name is failing.
    pub deploy_failing: bool,
    /// An endpoint of the name could not be reached at its last check.
    pub endpoint_unreachable: bool,
}

/// Why a name active on X would (not) be safe if X were lost now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Readiness {
    /// The standby flips in at once and is served.
    Safe,
    /// No standby certificate.
    NoStandby,
    /// The standby has expired.
    StandbyExpired,
    /// The standby expires soon ([`standby_expiring`]): it would need
    /// re-issuing under pressure.
    StandbyExpiring,
    /// The standby is revoked.
    StandbyRevoked,
    /// The standby's key is compromised.
    StandbyCompromised,
    /// The standby comes from a distrusted CA.
    StandbyDistrusted,
    /// The standby comes from X itself.
    StandbySameCa,
    /// The standby's CA shares X's root group: a root-level event at X
    /// takes it too.
    StandbySameRootGroup,
    /// An emergency operation superseded the standby; it is not re-issued
    /// yet.
    StandbySuperseded,
    /// Whether the standby is revoked is unknown (its last check failed).
    StandbyStatusUnknown,
    /// A deployment destination of the name is failing: the flip would not
    /// reach the servers.
    DeployFailing,
    /// An endpoint of the name was unreachable at its last check: the flip
    /// could not be verified.
    EndpointUnreachable,
}

impl Readiness {
    /// The spelling in reports, metrics and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Safe => "safe",
            Readiness::NoStandby => "no_standby",
            Readiness::StandbyExpired => "standby_expired",
            Readiness::StandbyExpiring => "standby_expiring",
            Readiness::StandbyRevoked => "standby_revoked",
            Readiness::StandbyCompromised => "standby_compromised",
            Readiness::StandbyDistrusted => "standby_distrusted",
            Readiness::StandbySameCa => "standby_same_ca",
            Readiness::StandbySameRootGroup => "standby_same_root_group",
            Readiness::StandbySuperseded => "standby_superseded",
            Readiness::StandbyStatusUnknown => "standby_status_unknown",
            Readiness::DeployFailing => "deploy_failing",
            Readiness::EndpointUnreachable => "endpoint_unreachable",
        }
    }
}

/// Whether a standby valid until `not_after` (issued `not_before`) counts
/// as expiring at `now`: it expires within the revocation window
/// (`readiness.revocation_window_hours`, 5 days: the time the CA/B Forum
/// allows a CA to revoke) or within 1/4 of its own lifetime, whichever is
/// shorter. The window alone fits 90-day certificates; a 6-day standby
/// has less than 5 days left from its first day on, and would never count
/// as safe, though it is renewed by its own (healthy) CA like any other.
/// A quarter of the lifetime left means its renewal, due at 2/3, is late
/// by a twelfth of the life: then it is no standby to count on. The
/// store's readiness facts apply this in SQL.
pub fn standby_expiring(not_before: i64, not_after: i64, now: i64, window: i64) -> bool {
    let quarter = (not_after - not_before).max(0) / STANDBY_EXPIRING_LIFETIME_DIVISOR;
    not_after <= now + window.min(quarter)
}

/// See [`standby_expiring`].
pub const STANDBY_EXPIRING_LIFETIME_DIVISOR: i64 = 4;

/// Whether a name active on CA `x` (root group `x_group`) is safe if `x`
/// is lost now; the first reason that applies, in this order: the swap's
/// own reasons (as `policy::swap::swap_outcome`), then what would make the
/// flipped-to certificate fail soon or not reach the servers.
pub fn readiness(s: &StandbyFacts<'_>, x: &str, x_group: &str) -> Readiness {
    if !s.present {
        Readiness::NoStandby
    } else if s.expired {
        Readiness::StandbyExpired
    } else if s.revoked {
        Readiness::StandbyRevoked
    } else if s.key_compromised {
        Readiness::StandbyCompromised
    } else if s.ca_distrusted {
        Readiness::StandbyDistrusted
    } else if s.ca == Some(x) {
        Readiness::StandbySameCa
    } else if s.ca_root_group == Some(x_group) {
        Readiness::StandbySameRootGroup
    } else if s.superseded {
        Readiness::StandbySuperseded
    } else if s.expiring {
        Readiness::StandbyExpiring
    } else if s.status_unknown {
        Readiness::StandbyStatusUnknown
    } else if s.deploy_failing {
        Readiness::DeployFailing
    } else if s.endpoint_unreachable {
        Readiness::EndpointUnreachable
    } else {
        Readiness::Safe
    }
}

/// Whether a CA's readiness calls for an alert, and the message: its safe
/// share below `min_safe_share`, or the time to safety above
/// `max_time_to_safety` seconds. A CA no name is active on needs none.
pub fn readiness_alert(
    ca: &str,
    active: i64,
    safe: i64,
    time_to_safety: Option<i64>,
    min_safe_share: f64,
    max_time_to_safety: i64,
) -> Option<String> {
    if active <= 0 {
        return None;
    }
    let share = safe as f64 / active as f64;
    let mut why = Vec::new();
    if share < min_safe_share {
        why.push(format!(
            "only {safe} of {active} names active on {ca} ({:.1}%) would be safe if {ca} were \
             lost now (threshold {:.1}%)",
            share * 100.0,
            min_safe_share * 100.0
        ));
    }
    match time_to_safety {
        Some(t) if t > max_time_to_safety => why.push(format!(
            "the estimated time to safety is {t} s (threshold {max_time_to_safety} s)"
        )),
        _ => {}
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Estimated seconds from deciding to swap away from a CA until the names
/// active on it are safe: the swap (`names` × `swap_ms_per_name`), then
/// pushing to the destinations of `deployed` names at `deploy_per_second`,
/// then the endpoint checks (`verify_seconds`).
pub fn time_to_safety(
    names: i64,
    swap_ms_per_name: f64,
    deployed: i64,
    deploy_per_second: f64,
    verify_seconds: i64,
) -> i64 {
    let swap = (names as f64 * swap_ms_per_name / 1000.0).ceil() as i64;
    let deploy = if deployed > 0 && deploy_per_second > 0.0 {
        (deployed as f64 / deploy_per_second).ceil() as i64 + verify_seconds
    } else {
        0
    };
    swap + deploy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_expiring_within_the_revocation_window_or_a_quarter_of_its_life() {
        const DAY: i64 = 86_400;
        let window = 5 * DAY;
        // (lifetime, seconds left, expiring)
        let cases = [
            // 90 days: the 5-day window decides.
            (90 * DAY, 5 * DAY + 1, false),
            (90 * DAY, 5 * DAY, true),
            (45 * DAY, 5 * DAY + 1, false),
            // 6 days: a quarter (1.5 days) decides; 4 days left is fine.
            (6 * DAY, 4 * DAY, false),
            (6 * DAY, 2 * DAY, false),
            (6 * DAY, 3 * DAY / 2 + 1, false),
            (6 * DAY, 3 * DAY / 2, true),
            // 12 hours: 3 hours.
            (DAY / 2, 3 * 3600 + 1, false),
            (DAY / 2, 3 * 3600, true),
        ];
        for (lifetime, left, want) in cases {
            let now = 1_000_000;
            let not_after = now + left;
            assert_eq!(
                standby_expiring(not_after - lifetime, not_after, now, window),
                want,
                "lifetime {lifetime} s, {left} s left"
            );
        }
    }

    #[test]
    fn the_first_reason_that_applies_is_reported() {
        let ok = StandbyFacts {
            present: true,
            ca: Some("b"),
            ca_root_group: Some("gb"),
            ca_distrusted: false,
            expired: false,
            expiring: false,
            revoked: false,
            key_compromised: false,
            superseded: false,
            status_unknown: false,
            deploy_failing: false,
            endpoint_unreachable: false,
        };
        let with = |f: fn(&mut StandbyFacts<'static>)| {
            let mut s = ok;
            f(&mut s);
            s
        };
        use Readiness::*;
        let cases: [(&str, StandbyFacts, Readiness); 14] = [
            ("usable", ok, Safe),
            ("absent", with(|s| s.present = false), NoStandby),
            (
                "expired",
                with(|s| {
                    s.expired = true;
                    s.expiring = true
                }),
                StandbyExpired,
            ),
            (
                "expires in 2 days",
                with(|s| s.expiring = true),
                StandbyExpiring,
            ),
            ("revoked", with(|s| s.revoked = true), StandbyRevoked),
            (
                "revoked and compromised",
                with(|s| {
                    s.revoked = true;
                    s.key_compromised = true
                }),
                StandbyRevoked,
            ),
            (
                "compromised",
                with(|s| s.key_compromised = true),
                StandbyCompromised,
            ),
            (
                "distrusted",
                with(|s| s.ca_distrusted = true),
                StandbyDistrusted,
            ),
            ("from x", with(|s| s.ca = Some("a")), StandbySameCa),
            (
                "x's root group",
                with(|s| s.ca_root_group = Some("ga")),
                StandbySameRootGroup,
            ),
            (
                "superseded",
                with(|s| s.superseded = true),
                StandbySuperseded,
            ),
            (
                "unknown",
                with(|s| s.status_unknown = true),
                StandbyStatusUnknown,
            ),
            ("deploy", with(|s| s.deploy_failing = true), DeployFailing),
            (
                "endpoint",
                with(|s| s.endpoint_unreachable = true),
                EndpointUnreachable,
            ),
        ];
        for (what, facts, want) in cases {
            assert_eq!(readiness(&facts, "a", "ga"), want, "{what}");
        }
    }

    #[test]
    fn alerts_fire_below_the_safe_share_or_above_the_time_to_safety() {
        assert_eq!(readiness_alert("a", 0, 0, None, 0.99, 600), None);
        assert_eq!(readiness_alert("a", 100, 100, Some(10), 0.99, 600), None);
        let low = readiness_alert("a", 100, 90, Some(10), 0.99, 600).unwrap_or_default();
        assert!(low.contains("90 of 100") && low.contains("99.0%"), "{low}");
        let slow = readiness_alert("a", 100, 100, Some(601), 0.99, 600).unwrap_or_default();
        assert!(slow.contains("601 s"), "{slow}");
    }

    #[test]
    fn time_to_safety_adds_the_swap_the_deployment_and_the_check() {
        assert_eq!(time_to_safety(1_000_000, 0.01, 0, 0.0, 30), 10);
        assert_eq!(time_to_safety(1000, 0.01, 100, 10.0, 30), 1 + 10 + 30);
    }
}
