//! `POST /v1/names`: the request body ([`CreateName`]) and its validation
//! into a [`NewName`], in two pure steps. [`check`] judges every field
//! against what this server offers ([`Offer`]); [`NameRequest::choose_cas`]
//! lets policy pick the CA pair once the handler has read the stored
//! distrust. The handler only reads the store between the two steps and
//! writes the result, so the rules are tested here without a server.
//!
//! The checks run in a fixed order and the first failure is the answer:
//! name, domains, challenge, DNS provider, key type, CA list, profile
//! names, CA pair, profile overrides against the pair ([`check_profiles`]).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Problem;
use crate::domain::{CaId, ChallengeKind, DnsName, KeyType, ManagedNameId, NewName};
use crate::policy::{self, CaChoice};

/// The most domains one certificate may carry.
const MAX_DOMAINS: usize = 100;

// The body of `POST /v1/names`. Its type name is part of the API: serde's
// messages ("expected struct CreateName") are sent to clients. (No doc
// comment: it would become the schema's description in the OpenAPI
// document.)
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateName {
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    key_type: Option<String>,
    #[serde(default)]
    cas: Option<Vec<String>>,
    #[serde(default)]
    dns_provider: Option<String>,
    #[serde(default)]
    acme_profiles: Option<BTreeMap<String, String>>,
}

/// What this server offers a new name.
pub(super) struct Offer<'a> {
    /// Whether DNS-01 can be used (a DNS provider is configured).
    pub dns01_available: bool,
    /// Ids of the configured DNS providers.
    pub dns_providers: &'a [String],
    /// Key type when the request names none.
    pub default_key_type: KeyType,
}

/// A request whose fields all passed their checks; only the CA pair is
/// left to choose.
#[derive(Debug)]
pub(super) struct NameRequest {
    id: ManagedNameId,
    domains: Vec<DnsName>,
    challenge: ChallengeKind,
    key_type: KeyType,
    /// `[primary, backup]` when the client chose them.
    cas: Option<(String, String)>,
    dns_provider: Option<String>,
    acme_profiles: BTreeMap<String, String>,
}

/// Checks every field of `req`; see the module doc for the order.
pub(super) fn check(req: CreateName, offer: &Offer<'_>) -> Result<NameRequest, Problem> {
    let id = ManagedNameId::parse(&req.name).map_err(|e| Problem::invalid_name(e.to_string()))?;
    let raw_domains = if req.domains.is_empty() {
        vec![req.name]
    } else {
        req.domains
    };
    if raw_domains.len() > MAX_DOMAINS {
        return Err(Problem::bad_request(format!(
            "{} domains given; at most {MAX_DOMAINS} fit in one certificate",
            raw_domains.len()
        )));
    }
    let mut domains: Vec<DnsName> = Vec::with_capacity(raw_domains.len());
    for d in &raw_domains {
        let d = DnsName::parse(d).map_err(|e| Problem::invalid_name(e.to_string()))?;
        if domains.contains(&d) {
            return Err(Problem::invalid_name(format!(
                "domain '{}' is listed twice",
                d.as_str()
            )));
        }
        domains.push(d);
    }
    let challenge = match req.challenge.as_deref() {
        None => ChallengeKind::Http01,
        Some(c) => c.parse::<ChallengeKind>().map_err(Problem::bad_request)?,
    };
    if challenge == ChallengeKind::Dns01 && !offer.dns01_available {
        return Err(Problem::bad_request(
            "challenge 'dns-01' is not available yet on this server: no [[dns_providers]] are configured; use 'http-01'",
        ));
    }
    if !challenge.is_dns()
        && challenge != ChallengeKind::DnsPersist01
        && let Some(w) = domains.iter().find(|d| d.is_wildcard())
    {
        return Err(Problem::invalid_name(format!(
            "wildcard '{}' can only be validated with dns-01 or dns-persist-01, not {}",
            w.as_str(),
            challenge.as_str()
        )));
    }
    if let Some(p) = &req.dns_provider {
        if challenge != ChallengeKind::Dns01 && challenge != ChallengeKind::DnsPersist01 {
            return Err(Problem::bad_request(format!(
                "'dns_provider' only applies to challenges 'dns-01' and 'dns-persist-01', not '{}'",
                challenge.as_str()
            )));
        }
        if !offer.dns_providers.contains(p) {
            return Err(Problem::bad_ca_choice(format!(
                "unknown DNS provider '{p}'"
            )));
        }
    }
    let key_type = match req.key_type.as_deref() {
        None => offer.default_key_type,
        Some(k) => k.parse::<KeyType>().map_err(Problem::bad_request)?,
    };
    let cas = match req.cas {
        None => None,
        Some(list) => match <[String; 2]>::try_from(list) {
            Ok([primary, backup]) => Some((primary, backup)),
            Err(other) => {
                return Err(Problem::bad_request(format!(
                    "'cas' must list exactly two CAs [primary, backup]; {} given",
                    other.len()
                )));
            }
        },
    };
    let acme_profiles = req.acme_profiles.unwrap_or_default();
    for (ca, p) in &acme_profiles {
        crate::domain::check_acme_profile_name(p)
            .map_err(|why| Problem::bad_field(format!("acme_profiles.{ca}"), why))?;
    }
    Ok(NameRequest {
        id,
        domains,
        challenge,
        key_type,
        cas,
        dns_provider: req.dns_provider,
        acme_profiles,
    })
}

impl NameRequest {
    /// Lets policy choose the pair among `cas` (in preference order, with
    /// the stored distrust applied): the client's pair if it named one,
    /// else the preferred diverse pair. The result is the name to create.
    /// A dns-persist-01 name needs two CAs that offer it (`persist_cas`):
    /// a client's pair with another is refused naming the CA; the
    /// automatic choice looks only among them.
    pub(super) fn choose_cas(
        self,
        cas: &[CaChoice],
        persist_cas: &[String],
    ) -> Result<NewName, Problem> {
        let explicit = self
            .cas
            .as_ref()
            .map(|(primary, backup)| (primary.as_str(), backup.as_str()));
        let offers = |ca: &str| persist_cas.iter().any(|p| p == ca);
        if let Some((primary, backup)) = explicit {
            policy::dns_persist::check_pair(self.challenge, [primary, backup], offers)
                .map_err(Problem::bad_ca_choice)?;
        }
        let among: Vec<CaChoice> = if self.challenge == ChallengeKind::DnsPersist01 {
            cas.iter().filter(|c| offers(&c.id)).cloned().collect()
        } else {
            cas.to_vec()
        };
        let (primary_ca, backup_ca) = policy::choose_pair(&among, explicit, self.key_type)
            .map_err(|e| {
                if self.challenge == ChallengeKind::DnsPersist01 && explicit.is_none() {
                    Problem::bad_ca_choice(format!(
                        "{e} among the CAs that offer dns-persist-01 ({})",
                        if persist_cas.is_empty() {
                            "none configured".to_string()
                        } else {
                            persist_cas.join(", ")
                        }
                    ))
                } else {
                    Problem::bad_ca_choice(e.to_string())
                }
            })?;
        Ok(NewName {
            id: self.id,
            domains: self.domains,
            challenge: self.challenge,
            key_type: self.key_type,
            primary_ca: CaId(primary_ca),
            backup_ca: CaId(backup_ca),
            dns_provider: self.dns_provider,
            acme_profiles: self.acme_profiles,
        })
    }
}

/// Checks a new name's ACME profile overrides (`acme_profiles`, CA id →
/// profile) once its CA pair is chosen: each must be for one of its two
/// CAs and, where the CA's offer is known (`offered`: CA id → the
/// profiles its directory listed at start), one it offers. 422 naming
/// the field, the CA and what it offers.
pub(super) fn check_profiles(
    new: &NewName,
    offered: &BTreeMap<String, Vec<String>>,
) -> Result<(), Problem> {
    for (ca, profile) in &new.acme_profiles {
        let field = format!("acme_profiles.{ca}");
        if ca != new.primary_ca.as_str() && ca != new.backup_ca.as_str() {
            return Err(Problem::bad_ca_choice(format!(
                "{field}: CA '{ca}' is not one of this name's CAs ({}, {}); \
                 a profile override is per CA of the name",
                new.primary_ca, new.backup_ca
            ))
            .at_field(field));
        }
        policy::profiles::check_offered(profile, offered.get(ca).map(Vec::as_slice)).map_err(
            |why| {
                Problem::bad_ca_choice(format!("{field}: CA '{ca}': {why}")).at_field(field.clone())
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn offer() -> Offer<'static> {
        static PROVIDERS: [String; 0] = [];
        Offer {
            dns01_available: false,
            dns_providers: &PROVIDERS,
            default_key_type: KeyType::EcdsaP384,
        }
    }

    fn ca(id: &str, root_group: &str, distrusted: bool) -> CaChoice {
        CaChoice {
            id: id.into(),
            root_group: root_group.into(),
            key_types: KeyType::ALL.to_vec(),
            distrusted,
        }
    }

    fn request(body: Value) -> CreateName {
        serde_json::from_value(body).expect("a CreateName body")
    }

    /// The problem's `type` (last path segment) and `detail`.
    fn refusal(p: &Problem) -> (&str, &str) {
        (p.kind(), p.detail())
    }

    #[test]
    fn a_name_alone_is_its_only_domain_with_the_defaults() {
        let r = check(request(json!({ "name": "shop.example.test" })), &offer()).expect("valid");
        assert_eq!(r.id.as_str(), "shop.example.test");
        assert_eq!(
            r.domains,
            [DnsName::parse("shop.example.test").expect("dns")]
        );
        assert_eq!(r.challenge, ChallengeKind::Http01);
        assert_eq!(r.key_type, KeyType::EcdsaP384, "the server's default");
        assert!(r.cas.is_none() && r.dns_provider.is_none());
    }

    #[test]
    fn domains_are_normalised_and_fields_parsed_into_their_types() {
        let r = check(
            request(json!({
                "name": "shop",
                "domains": ["WWW.Example.TEST", "Shop.Example.Test."],
                "challenge": "dns-01-manual",
                "key_type": "rsa-2048",
                "cas": ["b", "a"],
            })),
            &offer(),
        )
        .expect("valid");
        let domains: Vec<&str> = r.domains.iter().map(DnsName::as_str).collect();
        assert_eq!(domains, ["www.example.test", "shop.example.test"]);
        assert_eq!(r.challenge, ChallengeKind::Dns01Manual);
        assert_eq!(r.key_type, KeyType::Rsa2048);
        assert_eq!(r.cas, Some(("b".to_string(), "a".to_string())));
    }

    #[test]
    fn each_rule_refuses_with_its_own_problem() {
        let providers = ["bind".to_string()];
        let with_dns = Offer {
            dns01_available: true,
            dns_providers: &providers,
            default_key_type: KeyType::EcdsaP256,
        };
        let too_many: Vec<String> = (0..101).map(|i| format!("d{i}.example.test")).collect();
        let cases = [
            (
                "a bad name",
                json!({ "name": "Shop" }),
                offer(),
                "invalid-name",
                "contains 'S'",
            ),
            (
                "the name is checked first",
                json!({ "name": "Shop", "challenge": "tls-alpn-01" }),
                offer(),
                "invalid-name",
                "name 'Shop'",
            ),
            (
                "too many domains",
                json!({ "name": "x", "domains": too_many }),
                offer(),
                "invalid-request",
                "101 domains given; at most 100 fit in one certificate",
            ),
            (
                "a bad domain",
                json!({ "name": "x", "domains": ["a..example.test"] }),
                offer(),
                "invalid-name",
                "a..example.test",
            ),
            (
                "a domain twice after normalising",
                json!({ "name": "x", "domains": ["a.example.test", "A.example.test."] }),
                offer(),
                "invalid-name",
                "domain 'a.example.test' is listed twice",
            ),
            (
                "an unknown challenge",
                json!({ "name": "c.example.test", "challenge": "tls-alpn-01" }),
                offer(),
                "invalid-request",
                "unknown challenge 'tls-alpn-01'",
            ),
            (
                "dns-01 without a DNS provider",
                json!({ "name": "d.example.test", "challenge": "dns-01" }),
                offer(),
                "invalid-request",
                "challenge 'dns-01' is not available yet",
            ),
            (
                "a wildcard over http-01",
                json!({ "name": "w", "domains": ["*.example.test"] }),
                offer(),
                "invalid-name",
                "wildcard '*.example.test' can only be validated with dns-01 or dns-persist-01, not http-01",
            ),
            (
                "a DNS provider for http-01",
                json!({ "name": "p.example.test", "dns_provider": "bind" }),
                offer(),
                "invalid-request",
                "'dns_provider' only applies to challenges 'dns-01' and 'dns-persist-01', not 'http-01'",
            ),
            (
                "an unknown DNS provider",
                json!({ "name": "p.example.test", "challenge": "dns-01", "dns_provider": "nsd" }),
                with_dns,
                "bad-ca-choice",
                "unknown DNS provider 'nsd'",
            ),
            (
                "an unknown key type",
                json!({ "name": "k.example.test", "key_type": "ed25519" }),
                offer(),
                "invalid-request",
                "unknown key type 'ed25519'",
            ),
            (
                "three CAs",
                json!({ "name": "c.example.test", "cas": ["a", "b", "c"] }),
                offer(),
                "invalid-request",
                "'cas' must list exactly two CAs [primary, backup]; 3 given",
            ),
        ];
        for (name, body, offer, kind, detail) in cases {
            let err = check(request(body), &offer).expect_err(name);
            let (k, d) = refusal(&err);
            assert_eq!(k, kind, "{name}: {d}");
            assert!(d.contains(detail), "{name}: {d}");
        }
    }

    #[test]
    fn the_pair_is_the_clients_or_the_preferred_diverse_trusted_one() {
        let cas = [
            ca("a", "g1", true),
            ca("a2", "g1", false),
            ca("b", "g2", false),
        ];
        let chosen = |body: Value| {
            check(request(body), &offer())
                .expect("valid")
                .choose_cas(&cas, &[])
                .map(|n| (n.primary_ca.0, n.backup_ca.0))
        };
        assert_eq!(
            chosen(json!({ "name": "x.example.test" })).expect("a pair"),
            ("a2".to_string(), "b".to_string()),
            "the distrusted 'a' is passed over"
        );
        assert_eq!(
            chosen(json!({ "name": "x.example.test", "cas": ["b", "a2"] })).expect("a pair"),
            ("b".to_string(), "a2".to_string())
        );
        let err =
            chosen(json!({ "name": "x.example.test", "cas": ["a2", "a2"] })).expect_err("same CA");
        assert_eq!(refusal(&err).0, "bad-ca-choice");
    }

    /// A dns-persist-01 name gets only CAs that offer it: a client's pair
    /// with another is refused naming that CA (422); the automatic choice
    /// skips the others, and says which CAs offer it when no pair is left.
    #[test]
    fn a_dns_persist_name_gets_only_cas_that_offer_it() {
        let cas = [
            ca("p", "g1", false),
            ca("a", "g2", false),
            ca("b", "g3", false),
        ];
        let persist = ["a".to_string(), "b".to_string()];
        let chosen = |body: Value, persist: &[String]| {
            check(request(body), &offer())
                .expect("valid")
                .choose_cas(&cas, persist)
                .map(|n| (n.primary_ca.0, n.backup_ca.0))
        };
        let name = |cas: Option<[&str; 2]>| {
            let mut v = json!({ "name": "x.example.test", "domains": ["x.example.test", "*.x.example.test"], "challenge": "dns-persist-01" });
            if let Some(c) = cas {
                v["cas"] = json!(c);
            }
            v
        };
        assert_eq!(
            chosen(name(None), &persist).expect("a pair"),
            ("a".to_string(), "b".to_string()),
            "the preferred 'p' does not offer dns-persist-01"
        );
        let err = chosen(name(Some(["a", "p"])), &persist).expect_err("p refused");
        let (kind, detail) = refusal(&err);
        assert_eq!(kind, "bad-ca-choice");
        assert!(
            detail.contains("CA 'p' does not offer dns-persist-01"),
            "{detail}"
        );
        let err = chosen(name(None), &persist[..1]).expect_err("one CA only");
        assert!(
            refusal(&err)
                .1
                .contains("among the CAs that offer dns-persist-01 (a)")
        );
        // Other challenges are not affected.
        assert_eq!(
            chosen(json!({ "name": "x.example.test" }), &[]).expect("a pair"),
            ("p".to_string(), "a".to_string())
        );
    }

    #[test]
    fn profile_overrides_are_for_the_names_cas_and_offered_by_them() {
        let cas = [ca("a", "g1", false), ca("b", "g2", false)];
        let offered: BTreeMap<String, Vec<String>> = [
            ("a".to_string(), vec!["classic".into(), "shortlived".into()]),
            ("b".to_string(), vec![]),
        ]
        .into();
        let judged = |profiles: Value| {
            let new = check(
                request(json!({ "name": "x.example.test", "cas": ["a", "b"], "acme_profiles": profiles })),
                &offer(),
            )?
            .choose_cas(&cas, &[])?;
            check_profiles(&new, &offered).map(|()| new.acme_profiles)
        };
        // (overrides, Ok or (problem kind, field, detail)).
        type Want = Result<(), (&'static str, &'static str, &'static str)>;
        let cases: &[(Value, Want)] = &[
            (json!({}), Ok(())),
            (json!({ "a": "shortlived" }), Ok(())),
            (
                json!({ "a": "tlsserver" }),
                Err((
                    "bad-ca-choice",
                    "acme_profiles.a",
                    "acme_profiles.a: CA 'a': profile 'tlsserver' is not offered by the CA; it offers: classic, shortlived",
                )),
            ),
            (
                json!({ "b": "classic" }),
                Err(("bad-ca-choice", "acme_profiles.b", "offers no profiles")),
            ),
            (
                json!({ "c": "classic" }),
                Err((
                    "bad-ca-choice",
                    "acme_profiles.c",
                    "CA 'c' is not one of this name's CAs (a, b)",
                )),
            ),
            (
                json!({ "a": "" }),
                Err(("invalid-request", "acme_profiles.a", "must not be empty")),
            ),
        ];
        for (profiles, want) in cases {
            match (judged(profiles.clone()), want) {
                (Ok(got), Ok(())) => {
                    let given: BTreeMap<String, String> =
                        serde_json::from_value(profiles.clone()).expect("map");
                    assert_eq!(got, given, "{profiles}");
                }
                (Err(p), Err((kind, field, detail))) => {
                    assert_eq!(p.kind(), *kind, "{profiles}: {}", p.detail());
                    assert_eq!(p.field(), Some(*field), "{profiles}");
                    assert!(p.detail().contains(detail), "{profiles}: {}", p.detail());
                }
                (got, want) => panic!("{profiles}: got {got:?}, want {want:?}"),
            }
        }
    }
}
