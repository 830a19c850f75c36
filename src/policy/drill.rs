//! Drills: which names a live drill swaps, what a dry drill concludes for
//! one standby from what it checked, and whether a drill passed. Pure
//! rules; the drill controller gathers the facts and applies them.

use crate::domain::{DrillReport, DrillSample};

use super::readiness::Readiness;

/// The most names one live drill swaps: a drill proves the path, it is
/// not the emergency (and each name is one placeholder in one statement).
pub const MAX_SAMPLE: usize = 10_000;

/// The names a live drill swaps, from the names active on the drilled CA
/// (`active`, in name order): the listed ones that are active on it, in
/// the order listed, each once — never a name not active on it; or the
/// first `percent`% of them in name order, rounded down (never more than
/// asked: 10% of 5 names is none). At most [`MAX_SAMPLE`].
pub fn sample(active: &[String], asked: &DrillSample) -> Vec<String> {
    let mut out: Vec<String> = match asked {
        DrillSample::Names(listed) => {
            let mut seen = std::collections::BTreeSet::new();
            listed
                .iter()
                .filter(|n| active.binary_search(n).is_ok() && seen.insert(n.as_str()))
                .cloned()
                .collect()
        }
        DrillSample::Percent(p) => {
            let n = active.len() * usize::from((*p).min(100)) / 100;
            active.iter().take(n).cloned().collect()
        }
    };
    out.truncate(MAX_SAMPLE);
    out
}

/// What a dry drill checked of one standby beyond the stored facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandbyChecks {
    /// A fresh revocation check found it revoked.
    pub revoked_now: bool,
    /// Its chain does not verify (signatures, issuer names, dates).
    pub chain_invalid: bool,
    /// Its sealed key could not be opened.
    pub key_unopenable: bool,
    /// The opened key is not the certificate's key.
    pub key_mismatch: bool,
    /// An endpoint of the name could not be reached now.
    pub endpoint_unreachable: bool,
}

/// The drill's verdict for one name: `safe`, or the first reason it is
/// not — the readiness reason from the stored facts first (it is what the
/// real swap would refuse on), then what the drill found by checking:
/// revoked now (the stored status is stale), a chain that does not verify
/// (clients would refuse it), a key that cannot be opened or does not
/// match (the server could not use it), an unreachable endpoint (the flip
/// could not be verified).
pub fn verdict(stored: Readiness, c: &StandbyChecks) -> &'static str {
    if stored != Readiness::Safe {
        stored.as_str()
    } else if c.revoked_now {
        "standby_revoked_now"
    } else if c.chain_invalid {
        "chain_invalid"
    } else if c.key_unopenable {
        "key_unopenable"
    } else if c.key_mismatch {
        "key_mismatch"
    } else if c.endpoint_unreachable {
        "endpoint_unreachable"
    } else {
        "safe"
    }
}

/// `passed` when every name in scope was safe and no stage stopped the
/// drill, else `failed`. A drill over no names passes: nothing would be
/// lost with the CA.
pub fn drill_state(r: &DrillReport) -> &'static str {
    if r.error.is_none() && r.failures.is_empty() && r.safe == r.outcomes.values().sum::<i64>() {
        "passed"
    } else {
        "failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sample_never_takes_more_than_asked_nor_a_name_off_the_ca() {
        let active = names(&["a", "b", "c", "d", "e"]);
        let cases: &[(&str, DrillSample, &[&str])] = &[
            ("40% of 5 is 2", DrillSample::Percent(40), &["a", "b"]),
            (
                "10% of 5 rounds down to none",
                DrillSample::Percent(10),
                &[],
            ),
            (
                "100% is all",
                DrillSample::Percent(100),
                &["a", "b", "c", "d", "e"],
            ),
            (
                "over 100 is all",
                DrillSample::Percent(200),
                &["a", "b", "c", "d", "e"],
            ),
            (
                "listed, in the order listed",
                DrillSample::Names(names(&["d", "b"])),
                &["d", "b"],
            ),
            (
                "a listed name not on the CA is left out",
                DrillSample::Names(names(&["b", "zz"])),
                &["b"],
            ),
            (
                "a name listed twice is swapped once",
                DrillSample::Names(names(&["c", "c"])),
                &["c"],
            ),
        ];
        for (case, asked, want) in cases {
            assert_eq!(sample(&active, asked), names(want), "{case}");
        }
    }

    #[test]
    fn verdict_gives_the_stored_reason_first_then_what_the_drill_found() {
        let none = StandbyChecks::default();
        let all = StandbyChecks {
            revoked_now: true,
            chain_invalid: true,
            key_unopenable: true,
            key_mismatch: true,
            endpoint_unreachable: true,
        };
        let cases: &[(&str, Readiness, StandbyChecks, &str)] = &[
            ("all good", Readiness::Safe, none, "safe"),
            (
                "stored reason wins",
                Readiness::StandbyCompromised,
                all,
                "standby_compromised",
            ),
            ("no standby", Readiness::NoStandby, none, "no_standby"),
            (
                "revoked now before chain",
                Readiness::Safe,
                all,
                "standby_revoked_now",
            ),
            (
                "chain before key",
                Readiness::Safe,
                StandbyChecks {
                    revoked_now: false,
                    ..all
                },
                "chain_invalid",
            ),
            (
                "key mismatch",
                Readiness::Safe,
                StandbyChecks {
                    key_mismatch: true,
                    ..none
                },
                "key_mismatch",
            ),
            (
                "endpoint last",
                Readiness::Safe,
                StandbyChecks {
                    endpoint_unreachable: true,
                    ..none
                },
                "endpoint_unreachable",
            ),
        ];
        for (case, stored, checks, want) in cases {
            assert_eq!(verdict(*stored, checks), *want, "{case}");
        }
    }

    #[test]
    fn a_drill_passes_only_when_every_name_was_safe_and_nothing_stopped_it() {
        let mut r = DrillReport::default();
        assert_eq!(drill_state(&r), "passed", "no names: nothing to lose");
        r.outcomes.insert("safe".into(), 2);
        r.safe = 2;
        assert_eq!(drill_state(&r), "passed");
        r.error = Some("lease lost".into());
        assert_eq!(drill_state(&r), "failed", "stopped early");
        r.error = None;
        r.outcomes.insert("no_standby".into(), 1);
        assert_eq!(drill_state(&r), "failed", "one name not safe");
    }
}
