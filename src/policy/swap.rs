//! Whether a name can swap to its standby certificate, and if not, why
//! (DESIGN.md invariant 4: a swap needs no CA, so it can only go to a
//! certificate already stored). The store classifies a million names in
//! one SQL statement (`store::operations`, its `classified` and
//! `swappable` texts); this is the same rule for one name, which the
//! store contract test (`tests/e2e/store_backends.rs`) holds the SQL to.

/// What a swap knows about a name's standby certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standby<'a> {
    /// The CA that issued it.
    pub ca: &'a str,
    /// Its expiry, unix seconds.
    pub not_after: i64,
    /// Found or made revoked.
    pub revoked: bool,
    /// Its key was reported compromised.
    pub key_compromised: bool,
    /// Its CA is distrusted.
    pub ca_distrusted: bool,
}

/// A name's outcome in a swap; the store's spelling is [`SwapOutcome::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwapOutcome {
    /// The standby is usable: the name swaps.
    Swap,
    /// The standby slot holds no certificate yet.
    NoStandby,
    /// The standby certificate has expired.
    StandbyExpired,
    /// The standby certificate is revoked.
    StandbyRevoked,
    /// The standby's key is compromised.
    StandbyCompromised,
    /// The standby comes from a distrusted CA.
    StandbyDistrusted,
    /// The standby comes from the CA a CA-wide swap moves away from.
    StandbySameCa,
}

impl SwapOutcome {
    /// The spelling in swap reports and operation counts.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapOutcome::Swap => "swap",
            SwapOutcome::NoStandby => "no_standby",
            SwapOutcome::StandbyExpired => "standby_expired",
            SwapOutcome::StandbyRevoked => "standby_revoked",
            SwapOutcome::StandbyCompromised => "standby_compromised",
            SwapOutcome::StandbyDistrusted => "standby_distrusted",
            SwapOutcome::StandbySameCa => "standby_same_ca",
        }
    }
}

/// Whether a name swaps to `standby` at `now`, moving away from CA
/// `away_from` for a CA-wide swap. The first reason that applies is the
/// one reported, in this order:
///
/// * no certificate: there is nothing to serve;
/// * expired (`not_after <= now`): clients would reject it;
/// * revoked: clients checking revocation would reject it;
/// * key compromised: serving it serves a key an attacker may hold;
/// * from a distrusted CA: clients will stop trusting it, if they have not;
/// * from `away_from`: the swap exists to leave that CA.
pub fn swap_outcome(
    standby: Option<&Standby<'_>>,
    away_from: Option<&str>,
    now: i64,
) -> SwapOutcome {
    let Some(s) = standby else {
        return SwapOutcome::NoStandby;
    };
    if s.not_after <= now {
        SwapOutcome::StandbyExpired
    } else if s.revoked {
        SwapOutcome::StandbyRevoked
    } else if s.key_compromised {
        SwapOutcome::StandbyCompromised
    } else if s.ca_distrusted {
        SwapOutcome::StandbyDistrusted
    } else if Some(s.ca) == away_from {
        SwapOutcome::StandbySameCa
    } else {
        SwapOutcome::Swap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_that_applies_is_reported() {
        let now = 1000;
        let ok = Standby {
            ca: "b",
            not_after: 2000,
            revoked: false,
            key_compromised: false,
            ca_distrusted: false,
        };
        let with = |f: fn(&mut Standby<'static>)| {
            let mut s = ok;
            f(&mut s);
            s
        };
        use SwapOutcome::*;
        let cases: [(&str, Option<Standby>, Option<&str>, SwapOutcome); 11] = [
            ("usable standby", Some(ok), None, Swap),
            (
                "usable standby, away from another CA",
                Some(ok),
                Some("a"),
                Swap,
            ),
            ("no certificate", None, Some("a"), NoStandby),
            (
                "expired at now",
                Some(with(|s| s.not_after = 1000)),
                None,
                StandbyExpired,
            ),
            (
                "revoked",
                Some(with(|s| s.revoked = true)),
                None,
                StandbyRevoked,
            ),
            (
                "key compromised",
                Some(with(|s| s.key_compromised = true)),
                None,
                StandbyCompromised,
            ),
            (
                "distrusted CA",
                Some(with(|s| s.ca_distrusted = true)),
                None,
                StandbyDistrusted,
            ),
            (
                "from the CA swapped away from",
                Some(ok),
                Some("b"),
                StandbySameCa,
            ),
            (
                "expired wins over revoked",
                Some(with(|s| {
                    s.not_after = 10;
                    s.revoked = true
                })),
                None,
                StandbyExpired,
            ),
            (
                "revoked wins over compromised",
                Some(with(|s| {
                    s.revoked = true;
                    s.key_compromised = true
                })),
                None,
                StandbyRevoked,
            ),
            (
                "distrusted wins over same CA",
                Some(with(|s| s.ca_distrusted = true)),
                Some("b"),
                StandbyDistrusted,
            ),
        ];
        for (name, standby, away_from, want) in cases {
            assert_eq!(
                swap_outcome(standby.as_ref(), away_from, now),
                want,
                "{name}"
            );
        }
        assert_eq!(StandbySameCa.as_str(), "standby_same_ca");
    }
}
