//! May this CA issue for this domain? The CAA decision of RFC 8659, with
//! the `accounturi` and `validationmethods` parameters of RFC 8657, made
//! from facts alone: the relevant CAA RRset the tree walk found
//! (`validation::caa` does the lookups), the CA's issuer domain names
//! (its *identities*, from its `providers/ca/*.toml` profile or its
//! `[[cas]]` entry), our ACME account URI at that CA and the challenge we
//! use.
//!
//! What it decides, in order (each rule cites its section):
//!
//! 1. No relevant RRset: anyone may issue (RFC 8659 §3).
//! 2. A record with the critical flag (128) and a tag we do not know:
//!    nobody may issue (§4.1 "Issuer Critical").
//! 3. For a wildcard, the `issuewild` records when there are any, else the
//!    `issue` records (§4.3); for other names the `issue` records. None of
//!    those: the set does not restrict issuance (§4.2, "contains no
//!    Property tags that restrict issuance").
//! 4. The CA may issue if one of those records names one of its
//!    identities (case-insensitively) and every parameter it understands is
//!    met: `accounturi` equal to our account URI (RFC 8657 §3),
//!    `validationmethods` listing our challenge (RFC 8657 §4). An empty
//!    issuer (`;`) or a malformed value grants nobody (§4.2).
//! 5. A restricting set but no identity known for the CA: a finding that
//!    says so, never a silent pass.
//!
//! The fix a finding proposes is one plain record for the CA's first
//! identity, at the name that holds the relevant set (adding it there
//! keeps every grant the set already makes): `example.com. CAA 0 issue
//! "pki.goog"` (`issuewild` when the wildcard rule chose `issuewild`). When
//! the set's records for this CA already bind an account (`accounturi`) and
//! our account URI is known, the fix keeps that binding and adds
//! `; accounturi=<ours>`; otherwise a plain record, the simplest one that
//! is correct.

use crate::domain::ChallengeKind;

/// One CAA record as found in DNS (RFC 8659 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaRecord {
    /// Flags; 128 is "issuer critical".
    pub flags: u8,
    /// Property tag, e.g. `issue`.
    pub tag: String,
    /// Property value, as text.
    pub value: String,
}

impl CaaRecord {
    /// The record in zone-file form, owned by `owner`.
    pub fn presentation(&self, owner: &str) -> String {
        format!(
            "{}. CAA {} {} \"{}\"",
            owner.trim_end_matches('.'),
            self.flags,
            self.tag,
            self.value
        )
    }
}

/// The relevant RRset of a domain: the first non-empty CAA set found
/// climbing from the domain toward the root (RFC 8659 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelevantCaa {
    /// The level of the domain's tree where the set was found.
    pub at: String,
    /// The name that holds the records (differs from `at` when `at` is a
    /// CNAME: the lookup at that level resolves at the alias target).
    pub owner: String,
    /// The records.
    pub records: Vec<CaaRecord>,
}

/// What the decision needs to know of the CA and of how we validate.
#[derive(Debug, Clone, Copy)]
pub struct CaaAsk<'a> {
    /// The domain as ordered (`*.example.com` for a wildcard).
    pub domain: &'a str,
    /// The configured CA id, for messages.
    pub ca: &'a str,
    /// The CA's issuer domain names.
    pub identities: &'a [String],
    /// Our ACME account URI at the CA, once the account exists.
    pub account_uri: Option<&'a str>,
    /// The challenge we validate with.
    pub challenge: ChallengeKind,
}

/// The outcome of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaaDecision {
    /// The CA may issue; why.
    Allowed(String),
    /// The CA may not issue; why, and the record (or setting) that fixes it.
    Refused {
        /// Why, for people.
        detail: String,
        /// The exact record to add (or the setting to change).
        fix: String,
    },
}

/// The names whose CAA sets a CA consults for `domain`, closest first:
/// the domain itself (without `*.`), then each parent, excluding the root
/// (RFC 8659 §3).
pub fn search_names(domain: &str) -> Vec<String> {
    let base = domain
        .trim_start_matches("*.")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut out = Vec::new();
    let mut rest = base.as_str();
    while !rest.is_empty() {
        out.push(rest.to_string());
        match rest.split_once('.') {
            Some((_, parent)) => rest = parent,
            None => break,
        }
    }
    out
}

/// The RFC 8657 §4 method label for a challenge.
pub fn method_label(challenge: ChallengeKind) -> &'static str {
    match challenge {
        ChallengeKind::Http01 => "http-01",
        ChallengeKind::Dns01 | ChallengeKind::Dns01Manual => "dns-01",
        ChallengeKind::DnsPersist01 => "dns-persist-01",
    }
}

/// An `issue`/`issuewild` value parsed per RFC 8659 §4.2.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IssuerValue {
    /// The issuer domain name, lower-case; None for `;` (nobody).
    issuer: Option<String>,
    /// Parameters (tag lower-case, value as written).
    params: Vec<(String, String)>,
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// Parses `issuer-domain-name ; tag=value ; …`; None when malformed
/// (§4.2: such a record is treated as granting nobody).
fn parse_issuer_value(value: &str) -> Option<IssuerValue> {
    let (name, params) = match value.split_once(';') {
        Some((n, p)) => (n.trim(), Some(p)),
        None => (value.trim(), None),
    };
    let issuer = if name.is_empty() {
        None
    } else {
        let ok = name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(is_label_char));
        if !ok {
            return None;
        }
        Some(name.to_ascii_lowercase())
    };
    let mut out = Vec::new();
    for p in params.unwrap_or("").split(';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (tag, val) = p.split_once('=')?;
        let (tag, val) = (tag.trim(), val.trim());
        if tag.is_empty()
            || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || val
                .chars()
                .any(|c| !('\x21'..='\x7e').contains(&c) || c == ';')
        {
            return None;
        }
        out.push((tag.to_ascii_lowercase(), val.to_string()));
    }
    Some(IssuerValue {
        issuer,
        params: out,
    })
}

/// Tags this decision understands (RFC 8659 §4.2–4.4).
const KNOWN_TAGS: [&str; 3] = ["issue", "issuewild", "iodef"];

/// Why one record does not grant the CA, or None when it does.
fn record_refusal(v: &IssuerValue, ask: &CaaAsk<'_>) -> Option<String> {
    let Some(issuer) = &v.issuer else {
        return Some("grants nobody (empty issuer)".into());
    };
    if !ask
        .identities
        .iter()
        .any(|i| i.eq_ignore_ascii_case(issuer))
    {
        return Some(format!("names {issuer}, not {}", ask.identities.join(", ")));
    }
    for (tag, val) in &v.params {
        match tag.as_str() {
            "accounturi" => match ask.account_uri {
                Some(ours) if ours == val => {}
                Some(ours) => {
                    return Some(format!(
                        "binds account {val}; our account at {} is {ours}",
                        ask.ca
                    ));
                }
                None => {
                    return Some(format!(
                        "binds account {val}; our account at {} does not exist yet",
                        ask.ca
                    ));
                }
            },
            "validationmethods" => {
                let ours = method_label(ask.challenge);
                if !val.split(',').any(|m| m.trim().eq_ignore_ascii_case(ours)) {
                    return Some(format!(
                        "allows only validation methods {val}, we use {ours}"
                    ));
                }
            }
            // Other parameters are not ours to judge (RFC 8659 §4.2).
            _ => {}
        }
    }
    None
}

/// Decides whether the CA in `ask` may issue for its domain, given the
/// domain's relevant CAA RRset (None: no CAA anywhere up the tree).
pub fn may_issue(ask: &CaaAsk<'_>, relevant: Option<&RelevantCaa>) -> CaaDecision {
    let Some(set) = relevant.filter(|s| !s.records.is_empty()) else {
        return CaaDecision::Allowed("no CAA records up the tree".into());
    };
    let owner = set.owner.trim_end_matches('.');
    // Rule 2: an unknown critical property forbids issuance outright.
    if let Some(r) = set
        .records
        .iter()
        .find(|r| r.flags & 128 != 0 && !KNOWN_TAGS.iter().any(|t| t.eq_ignore_ascii_case(&r.tag)))
    {
        return CaaDecision::Refused {
            detail: format!(
                "{} carries a critical CAA property '{}' no CA is required to understand: \
                 nobody may issue",
                owner, r.tag
            ),
            fix: format!(
                "remove or correct {} (or clear its critical flag)",
                r.presentation(owner)
            ),
        };
    }
    // Rule 3: which records speak for this name.
    let wildcard = ask.domain.starts_with("*.");
    let is = |r: &&CaaRecord, tag: &str| r.tag.eq_ignore_ascii_case(tag);
    let wild: Vec<&CaaRecord> = set.records.iter().filter(|r| is(r, "issuewild")).collect();
    let (tag, chosen): (&str, Vec<&CaaRecord>) = if wildcard && !wild.is_empty() {
        ("issuewild", wild)
    } else {
        (
            "issue",
            set.records.iter().filter(|r| is(r, "issue")).collect(),
        )
    };
    if chosen.is_empty() {
        return CaaDecision::Allowed(format!(
            "the CAA records at {owner} do not restrict issuance (no {tag} records)"
        ));
    }
    // Rule 5: a restricting set needs the CA's identity.
    let Some(identity) = ask.identities.first() else {
        return CaaDecision::Refused {
            detail: format!(
                "unknown CAA identity for CA {}; the {tag} records at {owner} restrict issuance",
                ask.ca
            ),
            fix: format!(
                "set caa_identities in the [[cas]] entry '{}' (or its profile) to the issuer \
                 domain names the CA checks",
                ask.ca
            ),
        };
    };
    // Rule 4: one granting record is enough.
    let mut why = Vec::new();
    let mut binds_account = false;
    for r in &chosen {
        match parse_issuer_value(&r.value) {
            None => why.push(format!(
                "{}: malformed, grants nobody",
                r.presentation(owner)
            )),
            Some(v) => {
                let ours = v
                    .issuer
                    .as_ref()
                    .is_some_and(|i| ask.identities.iter().any(|x| x.eq_ignore_ascii_case(i)));
                binds_account |= ours && v.params.iter().any(|(t, _)| t == "accounturi");
                match record_refusal(&v, ask) {
                    None => {
                        return CaaDecision::Allowed(format!(
                            "{} grants {}",
                            r.presentation(owner),
                            ask.ca
                        ));
                    }
                    Some(reason) => why.push(format!("{} {reason}", r.presentation(owner))),
                }
            }
        }
    }
    let value = match (binds_account, ask.account_uri) {
        (true, Some(uri)) => format!("{identity}; accounturi={uri}"),
        _ => identity.clone(),
    };
    CaaDecision::Refused {
        detail: format!(
            "CA {} may not issue for {}: {}",
            ask.ca,
            ask.domain,
            why.join("; ")
        ),
        fix: format!("{owner}. CAA 0 {tag} \"{value}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(flags: u8, tag: &str, value: &str) -> CaaRecord {
        CaaRecord {
            flags,
            tag: tag.into(),
            value: value.into(),
        }
    }

    fn set(owner: &str, records: Vec<CaaRecord>) -> Option<RelevantCaa> {
        Some(RelevantCaa {
            at: owner.into(),
            owner: owner.into(),
            records,
        })
    }

    const OURS: &str = "https://acme.example/acct/1";

    /// (case, domain, identities, account, challenge, set, Ok(why) | Err(fix)).
    type Case = (
        &'static str,
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
        ChallengeKind,
        Option<RelevantCaa>,
        Result<&'static str, &'static str>,
    );

    #[test]
    fn caa_decisions() {
        use ChallengeKind::{Dns01, Dns01Manual, Http01};
        let gts: &[&str] = &["pki.goog"];
        let le: &[&str] = &["letsencrypt.org"];
        let cases: Vec<Case> = vec![
            (
                "no CAA anywhere: allowed",
                "example.com",
                gts,
                None,
                Http01,
                None,
                Ok("no CAA records"),
            ),
            (
                "an empty set counts as none",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![]),
                Ok("no CAA records"),
            ),
            (
                "issue names the CA",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "pki.goog")]),
                Ok("grants"),
            ),
            (
                "issuer match ignores case and the tag's case",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "ISSUE", "PKI.Goog")]),
                Ok("grants"),
            ),
            (
                "issue names another CA: the fix is the record to add",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "letsencrypt.org")]),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "the fix goes where the set is (a parent)",
                "www.example.com",
                le,
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "pki.goog")]),
                Err("example.com. CAA 0 issue \"letsencrypt.org\""),
            ),
            (
                "one of several identities is enough",
                "example.com",
                &["sectigo.com", "zerossl.com"],
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "zerossl.com")]),
                Ok("grants"),
            ),
            (
                "empty issuer ';' forbids everyone",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", ";")]),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "empty issuer beside a grant: the grant wins",
                "example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![rec(0, "issue", ";"), rec(0, "issue", "pki.goog")],
                ),
                Ok("grants"),
            ),
            (
                "only iodef: not restricted",
                "example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![rec(0, "iodef", "mailto:security@example.com")],
                ),
                Ok("do not restrict"),
            ),
            (
                "only issuewild: a plain name is not restricted",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "issuewild", ";")]),
                Ok("no issue records"),
            ),
            (
                "wildcard: issuewild takes precedence over issue",
                "*.example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![
                        rec(0, "issue", "pki.goog"),
                        rec(0, "issuewild", "letsencrypt.org"),
                    ],
                ),
                Err("example.com. CAA 0 issuewild \"pki.goog\""),
            ),
            (
                "wildcard allowed by issuewild although issue forbids it",
                "*.example.com",
                gts,
                None,
                Dns01,
                set(
                    "example.com",
                    vec![rec(0, "issue", ";"), rec(0, "issuewild", "pki.goog")],
                ),
                Ok("issuewild"),
            ),
            (
                "wildcard without issuewild falls back to issue",
                "*.example.com",
                gts,
                None,
                Dns01,
                set("example.com", vec![rec(0, "issue", "letsencrypt.org")]),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "unknown critical tag forbids everyone",
                "example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![rec(0, "issue", "pki.goog"), rec(128, "tbs", "x")],
                ),
                Err("remove or correct example.com. CAA 128 tbs \"x\""),
            ),
            (
                "unknown non-critical tag is ignored",
                "example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![rec(0, "issue", "pki.goog"), rec(0, "tbs", "x")],
                ),
                Ok("grants"),
            ),
            (
                "critical issue is understood",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(128, "issue", "pki.goog")]),
                Ok("grants"),
            ),
            (
                "accounturi matching ours",
                "example.com",
                gts,
                Some(OURS),
                Http01,
                set(
                    "example.com",
                    vec![rec(
                        0,
                        "issue",
                        "pki.goog; accounturi=https://acme.example/acct/1",
                    )],
                ),
                Ok("grants"),
            ),
            (
                "accounturi of another account: the fix keeps the binding, with ours",
                "example.com",
                gts,
                Some(OURS),
                Http01,
                set(
                    "example.com",
                    vec![rec(
                        0,
                        "issue",
                        "pki.goog; accounturi=https://acme.example/acct/2",
                    )],
                ),
                Err(
                    "example.com. CAA 0 issue \"pki.goog; accounturi=https://acme.example/acct/1\"",
                ),
            ),
            (
                "accounturi while our account does not exist yet: a plain record",
                "example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![rec(
                        0,
                        "issue",
                        "pki.goog; accounturi=https://acme.example/acct/2",
                    )],
                ),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "validationmethods lists ours (spaces and case tolerated)",
                "example.com",
                gts,
                None,
                Dns01,
                set(
                    "example.com",
                    vec![rec(
                        0,
                        "issue",
                        " pki.goog ;validationmethods=http-01,DNS-01 ",
                    )],
                ),
                Ok("grants"),
            ),
            (
                "validationmethods=http-01 with a DNS-01 name",
                "example.com",
                gts,
                None,
                Dns01,
                set(
                    "example.com",
                    vec![rec(0, "issue", "pki.goog; validationmethods=http-01")],
                ),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "manual DNS-01 is dns-01 too",
                "example.com",
                gts,
                None,
                Dns01Manual,
                set(
                    "example.com",
                    vec![rec(0, "issue", "pki.goog; validationmethods=dns-01")],
                ),
                Ok("grants"),
            ),
            (
                "unknown parameters are ignored",
                "example.com",
                gts,
                None,
                Http01,
                set(
                    "example.com",
                    vec![rec(0, "issue", "pki.goog; policy=ev; x-y=1")],
                ),
                Ok("grants"),
            ),
            (
                "malformed value grants nobody",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "pki.goog; accounturi")]),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "malformed issuer name grants nobody",
                "example.com",
                gts,
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "pki goog")]),
                Err("example.com. CAA 0 issue \"pki.goog\""),
            ),
            (
                "no identity known and a restricting set: a finding, not a pass",
                "example.com",
                &[],
                None,
                Http01,
                set("example.com", vec![rec(0, "issue", "pki.goog")]),
                Err("set caa_identities in the [[cas]] entry 'ca-x'"),
            ),
            (
                "no identity known and no CAA: allowed",
                "example.com",
                &[],
                None,
                Http01,
                None,
                Ok("no CAA records"),
            ),
        ];
        for (case, domain, ids, account, challenge, relevant, want) in cases {
            let identities: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            let ask = CaaAsk {
                domain,
                ca: "ca-x",
                identities: &identities,
                account_uri: account,
                challenge,
            };
            let got = may_issue(&ask, relevant.as_ref());
            match (&got, want) {
                (CaaDecision::Allowed(why), Ok(w)) => assert!(why.contains(w), "{case}: {why}"),
                (CaaDecision::Refused { fix, .. }, Err(w)) => {
                    assert!(fix.contains(w), "{case}: fix {fix:?}, want {w:?}")
                }
                _ => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_says_why_each_record_does_not_grant() {
        let ids = vec!["pki.goog".to_string()];
        let ask = CaaAsk {
            domain: "example.com",
            ca: "gts",
            identities: &ids,
            account_uri: Some(OURS),
            challenge: ChallengeKind::Dns01,
        };
        let relevant = set(
            "example.com",
            vec![
                rec(0, "issue", "letsencrypt.org"),
                rec(0, "issue", "pki.goog; validationmethods=http-01"),
            ],
        );
        let CaaDecision::Refused { detail, .. } = may_issue(&ask, relevant.as_ref()) else {
            panic!("refused expected");
        };
        assert!(
            detail.contains("names letsencrypt.org, not pki.goog"),
            "{detail}"
        );
        assert!(
            detail.contains("allows only validation methods http-01, we use dns-01"),
            "{detail}"
        );
    }

    #[test]
    fn search_names_climb_to_the_top_label() {
        let cases: [(&str, &[&str]); 4] = [
            (
                "www.example.com",
                &["www.example.com", "example.com", "com"],
            ),
            ("*.Example.COM.", &["example.com", "com"]),
            ("test", &["test"]),
            ("", &[]),
        ];
        for (domain, want) in cases {
            assert_eq!(search_names(domain), want, "{domain}");
        }
    }

    #[test]
    fn issuer_values_parse_per_rfc_8659() {
        /// (value, None when malformed | Some((issuer, parameters))).
        type Parsed = Option<(
            Option<&'static str>,
            &'static [(&'static str, &'static str)],
        )>;
        let cases: [(&str, Parsed); 6] = [
            ("pki.goog", Some((Some("pki.goog"), &[]))),
            (";", Some((None, &[]))),
            ("", Some((None, &[]))),
            (
                "ca.example; Accounturi=https://x/1 ; validationmethods=dns-01",
                Some((
                    Some("ca.example"),
                    &[
                        ("accounturi", "https://x/1"),
                        ("validationmethods", "dns-01"),
                    ],
                )),
            ),
            ("ca.example; novalue", None),
            ("ca..example", None),
        ];
        for (value, want) in cases {
            let got = parse_issuer_value(value);
            let want = want.map(|(i, p)| IssuerValue {
                issuer: i.map(str::to_string),
                params: p
                    .iter()
                    .map(|(t, v)| (t.to_string(), v.to_string()))
                    .collect(),
            });
            assert_eq!(got, want, "{value}");
        }
    }
}
