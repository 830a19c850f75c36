//! The CAA tree walk a CA makes (RFC 8659 §3): ask for the CAA RRset of
//! the domain, then of each parent, and stop at the first non-empty one —
//! the *relevant RRset*; `policy::caa` decides what it means.
//!
//! * **CNAME.** The lookup at each level is an ordinary DNS lookup, so
//!   when that level is an alias the records of its target answer for it
//!   (§3: "the CAA RRset ... is the one that a recursive resolver would
//!   return"). Climbing continues from the *original* name's parent, not
//!   the target's. Chains are followed explicitly (a resolver may return
//!   just the CNAME) and loop-safely, at most [`MAX_CNAME_CHAIN`] hops.
//! * **Failures.** NXDOMAIN and an empty NOERROR are "no records here,
//!   climb on"; SERVFAIL, REFUSED or a timeout is an error: the walk
//!   cannot tell whether issuance is allowed, and says so rather than
//!   guess (a CA would refuse too, RFC 8659 §3 last paragraph).
//!
//! The walking logic is written against [`CaaView`], so it is tested
//! without a network; [`DnsLookup`] is the real view over the configured
//! resolver.

use std::collections::HashSet;

use hickory_net::proto::rr::{RData, RecordType};

use super::dns::{DnsLookup, LookupFuture, MAX_CNAME_CHAIN};
use crate::policy::caa::{CaaRecord, RelevantCaa, search_names};

/// What one CAA lookup answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaaAnswer {
    /// The CAA records of the name, or of its alias target when it is a
    /// CNAME and the resolver followed it.
    pub records: Vec<CaaRecord>,
    /// Where the name's CNAME chain ends, as far as the answer shows: the
    /// owner of `records`, or (no records) the name to ask next.
    pub alias: Option<String>,
}

/// What the walk needs to know about the DNS.
pub trait CaaView: Sync {
    /// The CAA lookup of `name`.
    fn caa<'a>(&'a self, name: &'a str) -> LookupFuture<'a, CaaAnswer>;
}

use crate::providers::dns::normal;

/// The records answering a CAA lookup of `name` at one level, following
/// its CNAME chain: the records and the name that holds them.
async fn lookup_level(view: &dyn CaaView, name: &str) -> Result<(String, Vec<CaaRecord>), String> {
    let mut current = normal(name);
    let mut seen = HashSet::from([current.clone()]);
    for _ in 0..=MAX_CNAME_CHAIN {
        let answer = view.caa(&current).await?;
        let target = answer.alias.as_deref().map(normal);
        if !answer.records.is_empty() {
            // The resolver followed the chain: the records are the target's.
            return Ok((target.unwrap_or(current), answer.records));
        }
        match target {
            Some(target) if target != current => {
                if !seen.insert(target.clone()) {
                    return Err(format!(
                        "CNAME loop at {target} while looking up CAA of {}",
                        normal(name)
                    ));
                }
                current = target;
            }
            _ => return Ok((current, Vec::new())),
        }
    }
    Err(format!(
        "CNAME chain from {} is longer than {MAX_CNAME_CHAIN}",
        normal(name)
    ))
}

/// The relevant CAA RRset of `domain` (`*.` is ignored): None when no
/// level up to the top label has CAA records.
pub async fn relevant_caa(view: &dyn CaaView, domain: &str) -> Result<Option<RelevantCaa>, String> {
    for at in search_names(domain) {
        let (owner, records) = lookup_level(view, &at).await?;
        if !records.is_empty() {
            return Ok(Some(RelevantCaa { at, owner, records }));
        }
    }
    Ok(None)
}

impl CaaView for DnsLookup {
    fn caa<'a>(&'a self, name: &'a str) -> LookupFuture<'a, CaaAnswer> {
        Box::pin(async move {
            let msg = self
                .query(self.config().resolver, name, RecordType::CAA)
                .await?;
            // The resolver may have followed the chain (CNAMEs then CAA
            // records of the target) or stopped at the first CNAME.
            let mut end = normal(name);
            let mut hops = 0;
            while let Some(target) = msg.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if normal(&r.name.to_ascii()) == end => {
                    Some(normal(&c.0.to_ascii()))
                }
                _ => None,
            }) {
                hops += 1;
                if hops > MAX_CNAME_CHAIN || target == end {
                    break;
                }
                end = target;
            }
            let records: Vec<CaaRecord> = msg
                .answers
                .iter()
                .filter(|r| normal(&r.name.to_ascii()) == end)
                .filter_map(|r| match &r.data {
                    RData::CAA(caa) => Some(CaaRecord {
                        flags: caa.flags(),
                        tag: caa.tag.clone(),
                        value: String::from_utf8_lossy(&caa.value).into_owned(),
                    }),
                    _ => None,
                })
                .collect();
            let alias = (end != normal(name)).then_some(end);
            Ok(CaaAnswer { records, alias })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// name → answer; a name absent from the map has no records; a name
    /// in `failing` answers SERVFAIL.
    struct MapView {
        answers: HashMap<&'static str, CaaAnswer>,
        failing: Vec<&'static str>,
    }

    impl CaaView for MapView {
        fn caa<'a>(&'a self, name: &'a str) -> LookupFuture<'a, CaaAnswer> {
            let r = if self.failing.contains(&name) {
                Err(format!("DNS server: CAA {name}: SERVFAIL"))
            } else {
                Ok(self.answers.get(name).cloned().unwrap_or_default())
            };
            Box::pin(async move { r })
        }
    }

    fn issue(ca: &str) -> CaaAnswer {
        CaaAnswer {
            records: vec![CaaRecord {
                flags: 0,
                tag: "issue".into(),
                value: ca.into(),
            }],
            alias: None,
        }
    }

    fn alias(to: &str) -> CaaAnswer {
        CaaAnswer {
            records: vec![],
            alias: Some(to.into()),
        }
    }

    #[tokio::test]
    async fn the_walk_stops_at_the_first_set_and_follows_aliases_at_each_level() {
        let view = MapView {
            answers: HashMap::from([
                ("example.test", issue("ca-a.test")),
                ("sub.other.test", issue("ca-b.test")),
                ("alias.example.test", alias("target.other.test")),
                (
                    "followed.example.test",
                    CaaAnswer {
                        alias: Some("sub.other.test".into()),
                        ..issue("ca-b.test")
                    },
                ),
                ("target.other.test", alias("sub.other.test")),
                ("empty-alias.example.test", alias("nothing.other.test")),
                ("loop.example.test", alias("loop2.example.test")),
                ("loop2.example.test", alias("loop.example.test")),
            ]),
            failing: vec!["broken.example.test"],
        };
        // (domain, Ok(Some((level, owner, value))) | Ok(None) | Err(text)).
        type Want = Result<Option<(&'static str, &'static str, &'static str)>, &'static str>;
        let cases: [(&str, Want); 9] = [
            (
                "example.test",
                Ok(Some(("example.test", "example.test", "ca-a.test"))),
            ),
            (
                "www.example.test",
                Ok(Some(("example.test", "example.test", "ca-a.test"))),
            ),
            (
                "*.example.test",
                Ok(Some(("example.test", "example.test", "ca-a.test"))),
            ),
            (
                "alias.example.test",
                Ok(Some(("alias.example.test", "sub.other.test", "ca-b.test"))),
            ),
            (
                // The resolver followed the alias itself.
                "followed.example.test",
                Ok(Some((
                    "followed.example.test",
                    "sub.other.test",
                    "ca-b.test",
                ))),
            ),
            (
                // An alias to a name without CAA: climb from the alias's
                // parent, not the target's.
                "empty-alias.example.test",
                Ok(Some(("example.test", "example.test", "ca-a.test"))),
            ),
            ("none.nowhere.test", Ok(None)),
            ("x.broken.example.test", Err("SERVFAIL")),
            ("loop.example.test", Err("CNAME loop")),
        ];
        for (domain, want) in cases {
            let got = relevant_caa(&view, domain).await;
            match (got, want) {
                (Ok(Some(g)), Ok(Some((at, owner, value)))) => {
                    assert_eq!(g.at, at, "{domain}");
                    assert_eq!(g.owner, owner, "{domain}");
                    assert_eq!(g.records[0].value, value, "{domain}");
                }
                (Ok(None), Ok(None)) => {}
                (Err(g), Err(w)) => assert!(g.contains(w), "{domain}: {g}"),
                (g, w) => panic!("{domain}: got {g:?}, want {w:?}"),
            }
        }
    }
}
