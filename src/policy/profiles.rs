//! ACME profiles (draft-ietf-acme-profiles): which profile an order asks
//! for, whether a configured or requested profile is one the CA offers,
//! and what the CA's answer in the order object means. Facts in, a
//! decision out; the table tests below are the specification.
//!
//! Decisions (docs/profiles.md):
//! * An order asks for the name's override for that CA if it has one,
//!   else the `[[cas]] acme_profile`, else nothing (the CA's default).
//! * A profile must be one the CA's directory lists in `meta.profiles`;
//!   a CA that lists none offers none.
//! * The order the CA answers with must carry the requested profile. A
//!   different one is refused (the certificate would not be what was
//!   asked for); none at all is accepted and recorded as unconfirmed —
//!   some servers (acme2certifier 0.46) apply a profile without echoing
//!   it.
//! * Policy does not prefer or avoid CAs or slots by profile: the CA pair,
//!   renewal, swaps and re-provisioning are decided from the certificate's
//!   actual lifetime (`policy::lifetime`), which is what a profile changes.

use std::collections::BTreeMap;

pub use crate::domain::check_acme_profile_name as check_profile_name;

/// The profile an order at `ca` asks for: the name's override for that
/// CA, else the CA's configured one, else none.
pub fn profile_for<'a>(
    overrides: &'a BTreeMap<String, String>,
    ca: &str,
    ca_default: Option<&'a str>,
) -> Option<&'a str> {
    overrides.get(ca).map(String::as_str).or(ca_default)
}

/// Whether `profile` may be asked of a CA whose directory offers
/// `offered` (`None`: not known — the directory could not be read; the
/// CA will judge). `Err` says why not, naming what the CA offers.
pub fn check_offered(profile: &str, offered: Option<&[String]>) -> Result<(), String> {
    match offered {
        None => Ok(()),
        Some([]) => Err(format!(
            "profile '{profile}' requested, but the CA's directory offers no profiles \
             (meta.profiles is absent); remove the profile"
        )),
        Some(list) if list.iter().any(|p| p == profile) => Ok(()),
        Some(list) => Err(format!(
            "profile '{profile}' is not offered by the CA; it offers: {}",
            list.join(", ")
        )),
    }
}

/// What the CA's order object says about the requested profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileAnswer {
    /// Nothing was requested: nothing to check.
    NotRequested,
    /// The order carries the requested profile.
    Confirmed,
    /// The order carries no `profile` field: accepted, recorded as
    /// unconfirmed.
    NotEchoed,
    /// The order carries another profile: refused.
    Different(String),
}

impl ProfileAnswer {
    /// Whether the order may go on.
    pub fn acceptable(&self) -> bool {
        !matches!(self, ProfileAnswer::Different(_))
    }
}

/// Judges the `profile` of the order the CA created (`answered`) against
/// the one requested.
pub fn judge_answer(requested: Option<&str>, answered: Option<&str>) -> ProfileAnswer {
    match (requested, answered) {
        (None, _) => ProfileAnswer::NotRequested,
        (Some(_), None) => ProfileAnswer::NotEchoed,
        (Some(r), Some(a)) if r == a => ProfileAnswer::Confirmed,
        (Some(_), Some(a)) => ProfileAnswer::Different(a.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names() {
        let cases: &[(&str, bool)] = &[
            ("classic", true),
            ("shortlived", true),
            ("tls-server_v2.1", true),
            ("", false),
            ("short lived", false),
            (" classic", false),
            ("kurzlebig\u{e9}", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ];
        for (name, ok) in cases {
            assert_eq!(check_profile_name(name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn the_override_for_the_ca_wins_over_the_ca_default() {
        let mut o = BTreeMap::new();
        o.insert("le".to_string(), "shortlived".to_string());
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("le", Some("classic"), Some("shortlived")),
            ("le", None, Some("shortlived")),
            ("google", Some("classic"), Some("classic")),
            ("google", None, None),
        ];
        for (ca, default, want) in cases {
            assert_eq!(profile_for(&o, ca, *default), *want, "{ca} {default:?}");
        }
        assert_eq!(profile_for(&BTreeMap::new(), "le", None), None);
    }

    #[test]
    fn offered_profiles() {
        let offered = vec!["classic".to_string(), "shortlived".to_string()];
        type Case<'a> = (&'a str, Option<&'a [String]>, Result<(), &'a str>);
        let cases: &[Case] = &[
            ("classic", Some(&offered), Ok(())),
            ("shortlived", Some(&offered), Ok(())),
            (
                "tlsserver",
                Some(&offered),
                Err("profile 'tlsserver' is not offered by the CA; it offers: classic, shortlived"),
            ),
            (
                "classic",
                Some(&[]),
                Err(
                    "profile 'classic' requested, but the CA's directory offers no profiles \
                     (meta.profiles is absent); remove the profile",
                ),
            ),
            ("anything", None, Ok(())),
        ];
        for (p, list, want) in cases {
            assert_eq!(
                check_offered(p, *list),
                want.map_err(str::to_string),
                "{p} {list:?}"
            );
        }
    }

    #[test]
    fn the_cas_answer() {
        use ProfileAnswer::*;
        let cases: &[(Option<&str>, Option<&str>, ProfileAnswer, bool)] = &[
            (None, None, NotRequested, true),
            (None, Some("classic"), NotRequested, true),
            (Some("shortlived"), Some("shortlived"), Confirmed, true),
            (Some("shortlived"), None, NotEchoed, true),
            (
                Some("shortlived"),
                Some("classic"),
                Different("classic".into()),
                false,
            ),
        ];
        for (req, ans, want, ok) in cases {
            let got = judge_answer(*req, *ans);
            assert_eq!(&got, want, "{req:?} {ans:?}");
            assert_eq!(got.acceptable(), *ok, "{req:?} {ans:?}");
        }
    }
}
