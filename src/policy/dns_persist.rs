//! dns-persist-01 (draft-ietf-acme-dns-persist-02): the persistent TXT
//! record that binds a domain to one CA and one ACME account, and the
//! decisions around it — which issuer domain name to use, which records a
//! name needs per CA, whether a CA pair may serve a dns-persist-01 name,
//! and when a record's `persistUntil` is close enough to alert.
//!
//! The record (draft §3): at `_validation-persist.<domain>`,
//! `"<issuer-domain-name>; accounturi=<account URL>[; policy=wildcard][; persistUntil=<unix seconds>]"`.
//! One record per CA may stand at the same owner name; a CA uses only the
//! record whose issuer domain name is one of its own and whose
//! `accounturi` is the account asking.

use crate::domain::ChallengeKind;

/// The owner label the draft defines (§3).
pub const LABEL: &str = "_validation-persist";

/// Alert `persistUntil` this long ahead: time for a person to change a
/// record in a zone twincert may not control (a customer's).
pub const WARN_BEFORE_SECONDS: i64 = 30 * 86_400;
/// Within this, the alert is critical: the next renewal may already fail.
pub const CRITICAL_BEFORE_SECONDS: i64 = 7 * 86_400;

/// One record a name needs at one CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistRecord {
    /// The validated domain (a wildcard's base name).
    pub domain: String,
    /// `_validation-persist.<domain>`.
    pub owner: String,
    /// The TXT value.
    pub value: String,
    /// Whether the record carries `policy=wildcard`.
    pub wildcard: bool,
}

/// `_validation-persist.<domain>` for a domain or a wildcard (its base
/// name: the draft validates `*.example.com` at `example.com`).
pub fn owner(domain: &str) -> String {
    format!("{LABEL}.{}", base(domain))
}

fn base(domain: &str) -> String {
    domain
        .trim_start_matches("*.")
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The TXT value (draft §3). The issuer domain name is compared
/// case-insensitively by CAs; it is written lower-case without a trailing
/// dot. `policy=wildcard` only when a wildcard is covered: without it the
/// record authorizes the name itself and nothing below it, which is the
/// narrower grant. `persistUntil` only when the operator set one.
pub fn record_value(
    issuer: &str,
    account_uri: &str,
    wildcard: bool,
    persist_until: Option<i64>,
) -> String {
    let mut v = format!(
        "{}; accounturi={account_uri}",
        issuer.trim_end_matches('.').to_ascii_lowercase()
    );
    if wildcard {
        v.push_str("; policy=wildcard");
    }
    if let Some(t) = persist_until {
        v.push_str(&format!("; persistUntil={t}"));
    }
    v
}

/// The records a name with `domains` needs at one CA: one per base domain
/// (a name listing `example.com` and `*.example.com` needs one record,
/// with `policy=wildcard`), in the order the domains are listed.
pub fn records(
    domains: &[&str],
    issuer: &str,
    account_uri: &str,
    persist_until: Option<i64>,
) -> Vec<PersistRecord> {
    let mut out: Vec<PersistRecord> = Vec::new();
    for d in domains {
        let b = base(d);
        if out.iter().any(|r| r.domain == b) {
            continue;
        }
        let wildcard = domains.iter().any(|o| o.starts_with("*.") && base(o) == b);
        out.push(PersistRecord {
            owner: owner(&b),
            value: record_value(issuer, account_uri, wildcard, persist_until),
            domain: b,
            wildcard,
        });
    }
    out
}

/// Which issuer domain name goes into the record. The CA lists the names
/// it accepts in the challenge's `issuer-domain-names` (draft §4); the
/// client picks one. Preferred: the first the CA offers that the operator
/// configured as the CA's CAA identity (the name CAA records already use
/// for it, so one name stands for the CA in both places); else the CA's
/// first; before any challenge was seen, the first configured CAA
/// identity; none when neither is known.
pub fn choose_issuer(offered: &[String], configured: &[String]) -> Option<String> {
    let norm = |s: &String| s.trim_end_matches('.').to_ascii_lowercase();
    offered
        .iter()
        .find(|o| configured.iter().any(|c| norm(c) == norm(o)))
        .or_else(|| offered.first())
        .or_else(|| configured.first())
        .map(norm)
}

/// A dns-persist-01 name needs both of its CAs to offer the method:
/// `Err` names the first that does not (the API answers 422 with it).
pub fn check_pair(
    challenge: ChallengeKind,
    pair: [&str; 2],
    offers: impl Fn(&str) -> bool,
) -> Result<(), String> {
    if challenge != ChallengeKind::DnsPersist01 {
        return Ok(());
    }
    for ca in pair {
        if !offers(ca) {
            return Err(format!(
                "CA '{ca}' does not offer dns-persist-01; choose CAs whose [[cas]] entry or \
                 profile sets dns_persist_01 = true, or another challenge"
            ));
        }
    }
    Ok(())
}

/// How urgent a CA's `persistUntil` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistAlert {
    /// Far off, or no `persistUntil`: nothing to say.
    None,
    /// Within [`WARN_BEFORE_SECONDS`]: change the records soon.
    Warning,
    /// Within [`CRITICAL_BEFORE_SECONDS`] or past: the CA stops (or has
    /// stopped) accepting the records, and renewals wait on them.
    Critical,
}

/// Whether the records' `persistUntil` calls for an alert at `now`.
pub fn persist_alert(now: i64, persist_until: Option<i64>) -> PersistAlert {
    match persist_until {
        None => PersistAlert::None,
        Some(t) if t - now <= CRITICAL_BEFORE_SECONDS => PersistAlert::Critical,
        Some(t) if t - now <= WARN_BEFORE_SECONDS => PersistAlert::Warning,
        Some(_) => PersistAlert::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCT: &str = "https://ca.test/acme/acct/7";

    #[test]
    fn record_values_follow_the_draft_syntax() {
        let table = [
            // (issuer, wildcard, persistUntil, value)
            (
                "ca.test",
                false,
                None,
                "ca.test; accounturi=https://ca.test/acme/acct/7",
            ),
            (
                "CA.Test.",
                false,
                None,
                "ca.test; accounturi=https://ca.test/acme/acct/7",
            ),
            (
                "ca.test",
                true,
                None,
                "ca.test; accounturi=https://ca.test/acme/acct/7; policy=wildcard",
            ),
            (
                "ca.test",
                false,
                Some(1_830_297_600),
                "ca.test; accounturi=https://ca.test/acme/acct/7; persistUntil=1830297600",
            ),
            (
                "ca.test",
                true,
                Some(1),
                "ca.test; accounturi=https://ca.test/acme/acct/7; policy=wildcard; persistUntil=1",
            ),
        ];
        for (issuer, wildcard, until, want) in table {
            assert_eq!(record_value(issuer, ACCT, wildcard, until), want);
        }
    }

    #[test]
    fn one_record_per_base_domain_with_wildcard_policy_when_covered() {
        // (domains, [(record's domain, wildcard policy)])
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, bool)]);
        let table: [Case; 4] = [
            (&["a.test"], &[("a.test", false)]),
            (&["a.test", "*.a.test"], &[("a.test", true)]),
            (&["*.a.test"], &[("a.test", true)]),
            (
                &["a.test", "www.a.test", "*.b.test"],
                &[("a.test", false), ("www.a.test", false), ("b.test", true)],
            ),
        ];
        for (domains, want) in table {
            let got = records(domains, "ca.test", ACCT, None);
            let got: Vec<(&str, bool)> = got
                .iter()
                .map(|r| (r.domain.as_str(), r.wildcard))
                .collect();
            assert_eq!(got, want, "{domains:?}");
        }
        let r = &records(&["*.A.test"], "ca.test", ACCT, None)[0];
        assert_eq!(r.owner, "_validation-persist.a.test");
        assert!(r.value.ends_with("; policy=wildcard"));
    }

    #[test]
    fn the_issuer_prefers_the_configured_caa_identity_among_those_offered() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let table = [
            // (offered, configured, chosen)
            (s(&["a.ca", "b.ca"]), s(&["b.ca"]), Some("b.ca")),
            (s(&["a.ca", "B.CA."]), s(&["b.ca"]), Some("b.ca")),
            (s(&["a.ca", "b.ca"]), s(&["x.ca"]), Some("a.ca")),
            (s(&["a.ca"]), s(&[]), Some("a.ca")),
            (s(&[]), s(&["x.ca", "y.ca"]), Some("x.ca")),
            (s(&[]), s(&[]), None),
        ];
        for (offered, configured, want) in table {
            assert_eq!(
                choose_issuer(&offered, &configured).as_deref(),
                want,
                "{offered:?} {configured:?}"
            );
        }
    }

    #[test]
    fn a_pair_without_dns_persist_support_is_refused_naming_the_ca() {
        let offers = |ca: &str| ca != "pebble";
        let table = [
            (ChallengeKind::DnsPersist01, ["a2c-1", "a2c-2"], None),
            (
                ChallengeKind::DnsPersist01,
                ["a2c-1", "pebble"],
                Some("CA 'pebble'"),
            ),
            (ChallengeKind::Dns01, ["a2c-1", "pebble"], None),
            (ChallengeKind::Http01, ["pebble", "pebble"], None),
        ];
        for (challenge, pair, want) in table {
            let got = check_pair(challenge, pair, offers);
            match want {
                None => assert!(got.is_ok(), "{pair:?}"),
                Some(w) => assert!(got.unwrap_err().starts_with(w), "{pair:?}"),
            }
        }
    }

    #[test]
    fn persist_until_alerts_a_month_ahead_and_critically_a_week_ahead() {
        let day = 86_400;
        let now = 1_000 * day;
        let table = [
            (None, PersistAlert::None),
            (Some(now + 31 * day), PersistAlert::None),
            (Some(now + 30 * day), PersistAlert::Warning),
            (Some(now + 8 * day), PersistAlert::Warning),
            (Some(now + 7 * day), PersistAlert::Critical),
            (Some(now), PersistAlert::Critical),
            (Some(now - day), PersistAlert::Critical),
        ];
        for (until, want) in table {
            assert_eq!(persist_alert(now, until), want, "{until:?}");
        }
    }
}
