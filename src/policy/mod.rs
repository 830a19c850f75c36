//! Pure decisions, no I/O and no clock of their own: which two CAs serve a
//! name, when a certificate is due for renewal, whether an issued pair keeps
//! the diversity promise (DESIGN.md invariant 1), and what state a slot and
//! a name are in. Each decision is a small function with its reasons written
//! next to it, so that "why did twincert do that?" has one place to look.

use crate::domain::{KeyType, NameState, SlotState};

pub mod caa;
pub mod dns_persist;
pub mod drill;
pub mod lifetime;
pub mod profiles;
pub mod reaction;
pub mod readiness;
pub mod swap;
pub mod wave;

/// What policy needs to know about one configured CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaChoice {
    /// The configured id.
    pub id: String,
    /// CAs sharing a root group are never paired.
    pub root_group: String,
    /// Key types the CA issues for.
    pub key_types: Vec<KeyType>,
    /// A distrusted CA is never chosen.
    pub distrusted: bool,
}

/// Why no acceptable pair exists. The text is shown to API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// A CA id in an explicit pair is not configured.
    #[error("unknown CA '{0}'")]
    UnknownCa(String),
    /// Both entries of an explicit pair are the same CA.
    #[error("primary and backup must come from different CAs; '{0}' was given for both")]
    SameCa(String),
    /// The two CAs chain to the same root.
    #[error(
        "CAs '{0}' and '{1}' share the root group '{2}'; a backup from the same root does not survive that root's incident"
    )]
    SameRoot(String, String, String),
    /// A CA cannot issue this key type.
    #[error("CA '{0}' does not issue {1} certificates")]
    KeyType(String, KeyType),
    /// A CA is distrusted.
    #[error("CA '{0}' is distrusted and cannot be chosen")]
    Distrusted(String),
    /// Not enough diverse, trusted CAs are configured.
    #[error("no two trusted CAs from different root groups can issue {0} certificates")]
    NoPair(KeyType),
}

fn usable(ca: &CaChoice, key_type: KeyType) -> Result<(), PairError> {
    if ca.distrusted {
        return Err(PairError::Distrusted(ca.id.clone()));
    }
    if !ca.key_types.contains(&key_type) {
        return Err(PairError::KeyType(ca.id.clone(), key_type));
    }
    Ok(())
}

/// Picks (primary, backup) CAs for a new name.
///
/// * An explicit pair is checked, never silently replaced: the user asked
///   for those CAs, and a refusal with the reason beats a surprise.
/// * Otherwise the first usable CA in preference order is primary and the
///   next usable one from a *different root group* is backup, so both slots
///   never depend on one root.
pub fn choose_pair(
    cas_in_preference: &[CaChoice],
    explicit: Option<(&str, &str)>,
    key_type: KeyType,
) -> Result<(String, String), PairError> {
    let find = |id: &str| {
        cas_in_preference
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| PairError::UnknownCa(id.to_string()))
    };
    if let Some((p, b)) = explicit {
        let (pc, bc) = (find(p)?, find(b)?);
        if p == b {
            return Err(PairError::SameCa(p.to_string()));
        }
        usable(pc, key_type)?;
        usable(bc, key_type)?;
        if pc.root_group == bc.root_group {
            return Err(PairError::SameRoot(
                p.into(),
                b.into(),
                pc.root_group.clone(),
            ));
        }
        return Ok((p.to_string(), b.to_string()));
    }
    let mut usable_cas = cas_in_preference
        .iter()
        .filter(|c| usable(c, key_type).is_ok());
    let primary = usable_cas.next().ok_or(PairError::NoPair(key_type))?;
    let backup = usable_cas
        .find(|c| c.root_group != primary.root_group)
        .ok_or(PairError::NoPair(key_type))?;
    Ok((primary.id.clone(), backup.id.clone()))
}

/// The configured CAs with the ones distrusted at run time (`distrusted`,
/// from the store) marked so.
pub fn with_distrusted(cas: &[CaChoice], distrusted: &[String]) -> Vec<CaChoice> {
    cas.iter()
        .map(|c| CaChoice {
            distrusted: c.distrusted || distrusted.contains(&c.id),
            ..c.clone()
        })
        .collect()
}

/// The CA a CA-wide operation moved away from, and from when it may
/// re-issue the slots it lost if no other CA can (the operation's time
/// plus `policy.reprovision_same_ca_after_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avoid<'a> {
    /// The CA's id.
    pub ca: &'a str,
    /// Unix seconds.
    pub usable_from: i64,
}

/// Where a slot is re-provisioned and, when it must wait, until when and
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReprovisionChoice {
    /// The CA that re-issues the slot.
    pub ca: String,
    /// Unix seconds before which its order makes no attempt, and why.
    pub hold: Option<(i64, String)>,
}

/// Picks the CA that re-provisions a slot after a swap, a distrust or a
/// compromise (`current` is the slot's CA now, `other` the other slot's).
///
/// * Never the other slot's CA, nor one sharing its root group: the pair
///   must stay diverse (invariant 1).
/// * Never a distrusted CA or one that cannot issue the key type.
/// * The slot's current CA when it is still eligible (a swap of one name
///   or by key keeps its CAs; only the key changes), else the first
///   eligible CA in preference order — but not `avoid`, the CA a CA-wide
///   operation moved away from, while another CA is eligible.
/// * When only `avoid` is left (the usual two-CA setup), `avoid` itself
///   once its hold-off has passed: a CA that mass-revokes stays trusted
///   and issues at once, and one certificate per name is no redundancy.
///   Until then the slot waits (`hold`), so a CA in mid-incident is not
///   hammered.
pub fn choose_reprovision_ca(
    cas_in_preference: &[CaChoice],
    key_type: KeyType,
    current: &str,
    other: &str,
    avoid: Option<Avoid<'_>>,
    now: i64,
) -> Result<ReprovisionChoice, String> {
    let other_group = cas_in_preference
        .iter()
        .find(|c| c.id == other)
        .map(|c| c.root_group.as_str());
    let diverse_and_usable = |c: &&CaChoice| {
        c.id != other && Some(c.root_group.as_str()) != other_group && usable(c, key_type).is_ok()
    };
    let avoided = |c: &&CaChoice| Some(c.id.as_str()) == avoid.map(|a| a.ca);
    let now_ok = |c: &&CaChoice| diverse_and_usable(c) && !avoided(c);
    let chosen = cas_in_preference
        .iter()
        .filter(now_ok)
        .find(|c| c.id == current)
        .or_else(|| cas_in_preference.iter().find(now_ok));
    if let Some(c) = chosen {
        return Ok(ReprovisionChoice {
            ca: c.id.clone(),
            hold: None,
        });
    }
    if let Some(a) = avoid
        && let Some(c) = cas_in_preference
            .iter()
            .filter(diverse_and_usable)
            .find(|c| c.id == a.ca)
    {
        let hold = (now < a.usable_from).then(|| {
            (
                a.usable_from,
                format!(
                    "no CA other than '{}' can take this slot (the other slot is on '{other}'): \
                     it is re-issued from '{}' once policy.reprovision_same_ca_after_seconds \
                     has passed since the operation",
                    a.ca, a.ca
                ),
            )
        });
        return Ok(ReprovisionChoice {
            ca: c.id.clone(),
            hold,
        });
    }
    let avoid = avoid
        .map(|a| format!(", not '{}' (distrusted or unable to)", a.ca))
        .unwrap_or_default();
    Err(format!(
        "re-provisioning is blocked: no trusted CA can issue {key_type} certificates \
         outside the root group of '{other}' (the other slot's CA){avoid}; configure one \
         and restart the workers (blocked slots are retried at start) or repeat the operation"
    ))
}

/// Which CAs can take the slots a CA-wide operation moved away from
/// `avoid` (an estimate from configuration alone: the standbys may be on
/// any other CA): a trusted CA that can pair with some other CA of a
/// different root group. When none can, the CA moved away from re-issues
/// them after its hold-off, if it is trusted and can pair (returned
/// second).
pub fn reprovision_candidates(
    cas_in_preference: &[CaChoice],
    avoid: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let can_pair = |c: &CaChoice| {
        !c.distrusted
            && cas_in_preference.iter().any(|p| {
                p.id != c.id && Some(p.id.as_str()) != avoid && p.root_group != c.root_group
            })
    };
    let eligible: Vec<String> = cas_in_preference
        .iter()
        .filter(|c| Some(c.id.as_str()) != avoid && can_pair(c))
        .map(|c| c.id.clone())
        .collect();
    let fallback = if eligible.is_empty() {
        cas_in_preference
            .iter()
            .find(|c| Some(c.id.as_str()) == avoid && can_pair(c))
            .map(|c| c.id.clone())
    } else {
        None
    };
    (eligible, fallback)
}

/// A CA's pace for estimates: its configured limits and its measured mean
/// issuance time (None before any order finished).
#[derive(Debug, Clone, PartialEq)]
pub struct CaPace {
    /// The CA's id.
    pub id: String,
    /// Configured `orders_per_hour`.
    pub orders_per_hour: u32,
    /// Configured `concurrency`.
    pub concurrency: u32,
    /// Mean seconds per issuance, measured.
    pub mean_issue_seconds: Option<f64>,
}

/// Seconds per issuance before any was measured.
pub const DEFAULT_ISSUE_SECONDS: f64 = 10.0;

/// How re-provisioning `orders` slots a CA-wide operation away from
/// `avoid` would go: which CAs take them, how fast, how long.
#[derive(Debug, Clone, PartialEq)]
pub struct ReprovisionForecast {
    /// CAs other than `avoid` that can take them.
    pub eligible: Vec<String>,
    /// When none can: `avoid` itself, after the hold-off.
    pub same_ca: Option<String>,
    /// Orders per hour the CAs that take them manage together.
    pub orders_per_hour: f64,
    /// Seconds until done (the hold-off included); None when no CA can.
    pub seconds: Option<i64>,
}

/// The re-provisioning forecast from [`reprovision_candidates`], the CAs'
/// paces ([`ca_orders_per_hour`] each) and the same-CA `hold_off`.
pub fn reprovision_forecast(
    cas_in_preference: &[CaChoice],
    avoid: Option<&str>,
    paces: &[CaPace],
    orders: i64,
    hold_off: i64,
) -> ReprovisionForecast {
    let (eligible, same_ca) = reprovision_candidates(cas_in_preference, avoid);
    let takers: Vec<&String> = if eligible.is_empty() {
        same_ca.iter().collect()
    } else {
        eligible.iter().collect()
    };
    let per_hour: f64 = paces
        .iter()
        .filter(|p| takers.contains(&&p.id))
        .map(|p| {
            ca_orders_per_hour(
                p.orders_per_hour,
                p.concurrency,
                p.mean_issue_seconds.unwrap_or(DEFAULT_ISSUE_SECONDS),
            )
        })
        .sum();
    let wait = if same_ca.is_some() { hold_off } else { 0 };
    ReprovisionForecast {
        seconds: orders_duration_seconds(orders, per_hour).map(|s| s + wait),
        eligible,
        same_ca,
        orders_per_hour: per_hour,
    }
}

/// How long one CA still needs for an operation's open orders: first the
/// wait until `retry_at` (the latest time one of them is held back to: a
/// CA's `Retry-After` after `rateLimited`, a backoff, pacing or the
/// same-CA hold-off), then `open` orders at the CA's pace. The wait is
/// counted in full though the other orders may go meanwhile: an upper
/// bound, not a promise. `seconds_left` is None when the CA takes no
/// orders at all (pace 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaTimeLeft {
    /// Seconds until `retry_at` (0 when past or none).
    pub wait_seconds: i64,
    /// The wait plus `open` orders at the CA's pace.
    pub seconds_left: Option<i64>,
}

/// See [`CaTimeLeft`].
pub fn ca_time_left(open: i64, retry_at: Option<i64>, now: i64, pace: &CaPace) -> CaTimeLeft {
    let wait_seconds = retry_at.map_or(0, |t| (t - now).max(0));
    let per_hour = ca_orders_per_hour(
        pace.orders_per_hour,
        pace.concurrency,
        pace.mean_issue_seconds.unwrap_or(DEFAULT_ISSUE_SECONDS),
    );
    CaTimeLeft {
        wait_seconds,
        seconds_left: orders_duration_seconds(open, per_hour).map(|s| s + wait_seconds),
    }
}

/// Orders per hour a CA can take: the smaller of its configured
/// `orders_per_hour` and what `concurrency` orders in flight achieve at
/// `mean_issue_seconds` each (at least 1 s: a CA never issues faster).
pub fn ca_orders_per_hour(orders_per_hour: u32, concurrency: u32, mean_issue_seconds: f64) -> f64 {
    let by_concurrency = f64::from(concurrency) * 3600.0 / mean_issue_seconds.max(1.0);
    f64::from(orders_per_hour).min(by_concurrency)
}

/// Seconds `orders` take at `per_hour` orders per hour; `None` when
/// nothing can take them.
pub fn orders_duration_seconds(orders: i64, per_hour: f64) -> Option<i64> {
    (per_hour > 0.0).then(|| (orders as f64 / per_hour * 3600.0).ceil() as i64)
}

/// When a certificate valid from `not_before` to `not_after` should be
/// renewed: after `fraction` of its lifetime (2/3 by default, as certbot and
/// cert-manager do), leaving a third of the lifetime for retries.
pub fn renew_at(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    not_before + (lifetime * fraction) as i64
}

/// When to renew inside an ARI suggested window (RFC 9773 §4.2): a
/// uniformly random point in `[start, end]` (`random` is any u64), kept
/// from an earlier poll (`previous`) when that still lies in the window,
/// so every poll does not move it. A point already past means "renew
/// immediately": it is returned as it is (the planner renews anything due
/// at or before now), never moved to the present, so a renewal that keeps
/// failing still shows how long it has been due.
pub fn ari_renewal_time(start: i64, end: i64, previous: Option<i64>, random: u64) -> i64 {
    match previous {
        Some(p) if (start..=end).contains(&p) => p,
        _ => {
            let span = (end - start).max(0) as u64;
            start + (random % (span + 1)) as i64
        }
    }
}

/// How long until ARI is asked again, from the server's Retry-After
/// (RFC 9773 §4.3.3): clamped to `[min, max]` (one minute and
/// [`ari_max_poll_seconds`] by default), six hours when the server sent
/// none.
pub fn ari_poll_delay(retry_after: Option<u64>, min: u64, max: u64) -> u64 {
    retry_after.unwrap_or(6 * 3600).clamp(min, max.max(min))
}

/// The longest wait between two ARI polls of a certificate that lives
/// `lifetime` seconds: RFC 9773 §4.3.3's one day, but never more than
/// 1/24 of the lifetime. A CA's fixed Retry-After (Let's Encrypt and
/// Pebble 2.6 send six hours) fits a 90-day certificate; for a 6-day one
/// it is already 1/24 of its life, and for a certificate of a few hours
/// it would mean a revocation (an immediate window) seen after the
/// certificate is gone.
pub fn ari_max_poll_seconds(lifetime: i64) -> u64 {
    (lifetime.max(0) as u64 / 24).min(86_400)
}

/// Whether an ARI window says anything about *when in this certificate's
/// life* to renew. A window already over is always heeded (the CA asks
/// for renewal now: RFC 9773 §4.2). Otherwise it must be shorter than the
/// certificate's whole lifetime and end by its expiry:
/// * Pebble 2.6 serves `notAfter − lifetime/3 ± 24 h` whatever the
///   lifetime, so a certificate of a few hours gets a window from before
///   its issuance to after its expiry; a random point in it renews at
///   once (and again for each new certificate) or after the certificate
///   has expired;
/// * a point after `notAfter` is an expired certificate, whatever the CA
///   suggested.
///
/// Such a window is shown but the lifetime-based renewal point stands.
pub fn ari_window_usable(window: (i64, i64), validity: (i64, i64), now: i64) -> bool {
    let (start, end) = window;
    let (not_before, not_after) = validity;
    end <= now || (end - start < not_after - not_before && end <= not_after)
}

/// After how long without a usable standby a name is alerted
/// (`no_standby`): the configured time (`revocation.no_standby_alert_hours`,
/// a day by default), but never more than 1/12 of the active
/// certificate's lifetime (`None` when there is none), so a name on
/// 6-day certificates is alerted after 12 hours and one on 12-hour
/// certificates after one. The store's `Status::track_standby` applies
/// this in SQL (same divisor, [`NO_STANDBY_LIFETIME_DIVISOR`]).
pub fn no_standby_alert_after(configured: i64, active_lifetime: Option<i64>) -> i64 {
    match active_lifetime {
        Some(l) => configured.min(l.max(0) / NO_STANDBY_LIFETIME_DIVISOR),
        None => configured,
    }
}

/// The longest wait between two attempts of an order whose slot holds a
/// certificate living `lifetime` seconds (`None`: a first issuance): the
/// configured `worker.max_backoff_seconds`, but at most 1/72 of the
/// lifetime, so the third of the life left after the renewal point holds
/// at least 24 attempts at the cap (a 12-hour certificate: one every 10
/// minutes instead of every hour, 24 instead of 4); never below `min`.
/// A CA's Retry-After still comes on top.
pub fn max_backoff_seconds(configured: u64, min: u64, lifetime: Option<i64>) -> u64 {
    match lifetime {
        Some(l) => configured.min(l.max(0) as u64 / 72).max(min),
        None => configured,
    }
}

/// See [`no_standby_alert_after`].
pub const NO_STANDBY_LIFETIME_DIVISOR: i64 = 12;

/// Whether a slot's certificate gets the `expiry_soon` alert: less than
/// `fraction` of its lifetime is left and its renewal has been due for
/// more than 1/50 of the lifetime without succeeding (a renewal that
/// merely takes its usual minutes is no news). The store's
/// `Status::expiring_slots` applies this in SQL.
pub fn expiry_alert_due(
    not_before: i64,
    not_after: i64,
    renew_after: i64,
    fraction: f64,
    now: i64,
) -> bool {
    let lifetime = not_after - not_before;
    let per_mille = (fraction * 1000.0).round() as i64;
    (not_after - now) * 1000 < lifetime * per_mille && renew_after + lifetime / 50 < now
}

/// Whether an ARI window counts as *moved into the past* — the CA asks
/// for early renewal, a CA-incident signal — as opposed to the usual
/// window a CA serves around its normal renewal point (Let's Encrypt: 2/3
/// of the lifetime, 1/2 for short-lived certificates, ±1%): the window has
/// started and either it starts earlier than the one served before, which
/// still lay ahead, or it already ended before the certificate reached the
/// middle of its life.
pub fn ari_moved_past(
    window: (i64, i64),
    previous_start: Option<i64>,
    validity: (i64, i64),
    now: i64,
) -> bool {
    let (start, end) = window;
    let (not_before, not_after) = validity;
    if start > now {
        return false;
    }
    let moved_earlier = previous_start.is_some_and(|p| start < p && p > now);
    let over_early = end <= now && now < not_before + (not_after - not_before) / 2;
    moved_earlier || over_early
}

/// Whether `affected` of a CA's `total` current certificates within the
/// window make a CA-level incident: at least `min_count`, and either
/// `count` of them or `percent` of the CA's certificates.
pub fn is_ca_incident(affected: i64, total: i64, percent: f64, count: i64, min_count: i64) -> bool {
    if affected < min_count || affected <= 0 {
        return false;
    }
    affected >= count || (total > 0 && affected as f64 * 100.0 / total as f64 >= percent)
}

/// Facts of one issued certificate that the diversity check compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFacts<'a> {
    /// Which CA issued it.
    pub ca: &'a str,
    /// The root the chain leads to.
    pub root_id: &'a str,
    /// SHA-256 of the key's SPKI.
    pub spki_sha256: &'a str,
}

/// Why a pair of certificates breaks invariant 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiversityViolation {
    /// Both slots were issued by one CA.
    #[error("primary and backup were both issued by CA '{0}'")]
    SameCa(String),
    /// Both chains end at one root, so one root incident takes out both.
    #[error("primary and backup chain to the same root ({0})")]
    SameRoot(String),
    /// Both certificates certify one key, so one key compromise takes out
    /// both.
    #[error("primary and backup share the key with SPKI SHA-256 {0}")]
    SameKey(String),
}

/// Checks DESIGN.md invariant 1 on an issued pair.
pub fn check_diversity(a: &IssuedFacts<'_>, b: &IssuedFacts<'_>) -> Result<(), DiversityViolation> {
    if a.ca == b.ca {
        return Err(DiversityViolation::SameCa(a.ca.to_string()));
    }
    if a.root_id == b.root_id {
        return Err(DiversityViolation::SameRoot(a.root_id.to_string()));
    }
    if a.spki_sha256 == b.spki_sha256 {
        return Err(DiversityViolation::SameKey(a.spki_sha256.to_string()));
    }
    Ok(())
}

/// What the slot-state decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotFacts {
    /// Validity of the current certificate, if any.
    pub current: Option<(i64, i64)>,
    /// An order for this slot is open (pending or processing).
    pub order_open: bool,
    /// The open order's last attempt failed.
    pub last_attempt_failed: bool,
    /// The open order waits for a person (manual DNS-01 records).
    pub waiting: bool,
}

/// The state of one slot at `now`.
pub fn slot_state(f: SlotFacts, now: i64) -> SlotState {
    match f.current {
        Some((_, not_after)) if not_after <= now => SlotState::Expired,
        Some(_) if f.order_open => SlotState::Renewing,
        Some(_) => SlotState::Valid,
        None if f.waiting => SlotState::Waiting,
        None if f.last_attempt_failed => SlotState::Failed,
        None => SlotState::Issuing,
    }
}

/// The state of a name from its two slots and its diversity check.
///
/// A name is `ready` only when both slots hold a usable certificate and the
/// pair is diverse: a name with one certificate has no instant swap, which is
/// the whole point. A slot whose certificate an emergency operation
/// superseded (`superseded`: a swap away from its CA, a distrust, a
/// compromise) is no standby however valid it still is: the name is
/// `degraded` until the new certificate is in.
pub fn name_state(
    primary: SlotState,
    backup: SlotState,
    diversity_ok: bool,
    superseded: bool,
) -> NameState {
    let usable = |s| matches!(s, SlotState::Valid | SlotState::Renewing);
    let broken = |s| matches!(s, SlotState::Failed | SlotState::Expired);
    if !diversity_ok || superseded || broken(primary) || broken(backup) {
        NameState::Degraded
    } else if primary == SlotState::Waiting || backup == SlotState::Waiting {
        NameState::Waiting
    } else if usable(primary) && usable(backup) {
        NameState::Ready
    } else {
        NameState::Provisioning
    }
}

#[cfg(test)]
mod ari_tests {
    use super::*;

    #[test]
    fn ari_renewal_time_is_inside_the_window() {
        // Future window: a point inside it, stable across polls.
        let t = ari_renewal_time(1000, 2000, None, 123_456);
        assert!((1000..=2000).contains(&t), "{t}");
        assert_eq!(ari_renewal_time(1000, 2000, Some(t), 999), t);
        // The previous choice is outside a moved window: choose again.
        let t2 = ari_renewal_time(3000, 4000, Some(t), 7);
        assert!((3000..=4000).contains(&t2), "{t2}");
        // Window in the past: a point in it, due at once (not moved).
        let t = ari_renewal_time(100, 200, None, 42);
        assert!((100..=200).contains(&t), "{t}");
        // Kept while it stays in the window, even once past.
        assert_eq!(ari_renewal_time(100, 1000, Some(150), 0), 150);
        // Different random values spread over the window.
        let picks: std::collections::BTreeSet<i64> = (0..50u64)
            .map(|r| ari_renewal_time(1000, 2000, None, r * 7919))
            .collect();
        assert!(picks.len() > 40);
    }

    #[test]
    fn ari_windows_that_cannot_place_a_renewal_in_the_lifetime_are_not_used() {
        let now = 0;
        // (window, validity, usable)
        let cases = [
            // Pebble 2.6, 4-day certificate: notAfter − 32 h ± 24 h.
            ((40, 88), (0, 96), true),
            // Pebble 2.6, 12-minute certificate: ±24 h around it.
            ((-86_000, 86_900), (0, 720), false),
            // Ends after expiry (Pebble 2.6, 2.5-day certificate).
            ((10, 70), (0, 60), false),
            // A window over: renew now, whatever its shape.
            ((-3_600, -1_800), (-60, 660), true),
            ((-86_000, -10), (-60, 660), true),
            // An incident window running now, inside the lifetime.
            ((-100, 2_000), (-10 * 86_400, 80 * 86_400), true),
        ];
        for (window, validity, want) in cases {
            assert_eq!(
                ari_window_usable(window, validity, now),
                want,
                "{window:?} {validity:?}"
            );
        }
    }

    #[test]
    fn ari_poll_delay_clamps_retry_after() {
        assert_eq!(ari_poll_delay(Some(1), 60, 86_400), 60);
        assert_eq!(ari_poll_delay(Some(10_000_000), 60, 86_400), 86_400);
        assert_eq!(ari_poll_delay(Some(3600), 60, 86_400), 3600);
        assert_eq!(ari_poll_delay(None, 60, 86_400), 21_600);
    }

    #[test]
    fn incident_threshold_needs_share_or_count_and_a_minimum() {
        assert!(is_ca_incident(30, 100, 10.0, 100, 5));
        assert!(
            !is_ca_incident(1, 50, 1.0, 100, 5),
            "2% but one certificate"
        );
        assert!(is_ca_incident(100, 1_000_000, 1.0, 100, 5), "count reached");
        assert!(!is_ca_incident(99, 1_000_000, 1.0, 100, 5));
        assert!(!is_ca_incident(0, 0, 1.0, 100, 1));
        // A 90-day certificate (0 .. 900 in these units).
        let life = (0, 900);
        // The normal window around 2/3, polled inside it: not moved.
        assert!(!ari_moved_past((594, 606), Some(594), life, 600));
        assert!(!ari_moved_past((594, 606), None, life, 600));
        // A 6-day certificate's normal window at 1/2, already over: not
        // moved (it ended after the middle of the life).
        assert!(!ari_moved_past((445, 455), Some(445), life, 460));
        // The CA moved a future window into the past.
        assert!(ari_moved_past((100, 110), Some(594), life, 200));
        // First poll: a window that ended long before mid-life.
        assert!(ari_moved_past((100, 110), None, life, 200));
        // A window that moved earlier but still lies ahead: not yet.
        assert!(!ari_moved_past((300, 310), Some(594), life, 200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(id: &str, group: &str) -> CaChoice {
        CaChoice {
            id: id.into(),
            root_group: group.into(),
            key_types: KeyType::ALL.to_vec(),
            distrusted: false,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of named cases reads best inline
    fn pair_choice() {
        let mut rsa_only = ca("r", "g3");
        rsa_only.key_types = vec![KeyType::Rsa2048];
        let mut gone = ca("d", "g4");
        gone.distrusted = true;
        let cas = vec![ca("a", "g1"), ca("a2", "g1"), ca("b", "g2"), rsa_only, gone];
        let p = KeyType::EcdsaP256;
        let cases: Vec<(
            Option<(&str, &str)>,
            KeyType,
            Result<(&str, &str), PairError>,
        )> = vec![
            (None, p, Ok(("a", "b"))),
            (None, KeyType::Rsa2048, Ok(("a", "b"))),
            (Some(("b", "a")), p, Ok(("b", "a"))),
            (Some(("a", "a")), p, Err(PairError::SameCa("a".into()))),
            (
                Some(("a", "a2")),
                p,
                Err(PairError::SameRoot("a".into(), "a2".into(), "g1".into())),
            ),
            (Some(("a", "zz")), p, Err(PairError::UnknownCa("zz".into()))),
            (Some(("a", "r")), p, Err(PairError::KeyType("r".into(), p))),
            (Some(("a", "d")), p, Err(PairError::Distrusted("d".into()))),
        ];
        for (explicit, kt, want) in cases {
            let got = choose_pair(&cas, explicit, kt);
            assert_eq!(
                got,
                want.map(|(a, b)| (a.to_string(), b.to_string())),
                "{explicit:?}"
            );
        }
        assert_eq!(
            choose_pair(&[ca("a", "g"), ca("b", "g")], None, p),
            Err(PairError::NoPair(p))
        );
    }

    #[test]
    fn renewal_at_two_thirds() {
        assert_eq!(renew_at(0, 90, 2.0 / 3.0), 60);
        assert_eq!(renew_at(100, 100, 0.5), 100);
    }

    #[test]
    fn diversity() {
        let a = IssuedFacts {
            ca: "a",
            root_id: "r1",
            spki_sha256: "k1",
        };
        let ok = IssuedFacts {
            ca: "b",
            root_id: "r2",
            spki_sha256: "k2",
        };
        assert_eq!(check_diversity(&a, &ok), Ok(()));
        let same_ca = IssuedFacts {
            ca: "a",
            ..ok.clone()
        };
        assert!(matches!(
            check_diversity(&a, &same_ca),
            Err(DiversityViolation::SameCa(_))
        ));
        let same_root = IssuedFacts {
            root_id: "r1",
            ..ok.clone()
        };
        assert!(matches!(
            check_diversity(&a, &same_root),
            Err(DiversityViolation::SameRoot(_))
        ));
        let same_key = IssuedFacts {
            spki_sha256: "k1",
            ..ok
        };
        assert!(matches!(
            check_diversity(&a, &same_key),
            Err(DiversityViolation::SameKey(_))
        ));
    }

    #[test]
    fn slot_and_name_states() {
        let now = 1000;
        let f = |current, order_open, failed| SlotFacts {
            current,
            order_open,
            last_attempt_failed: failed,
            waiting: false,
        };
        assert_eq!(slot_state(f(None, true, false), now), SlotState::Issuing);
        assert_eq!(slot_state(f(None, true, true), now), SlotState::Failed);
        // Waiting for a person is the latest news, not a failure.
        let waiting = SlotFacts {
            waiting: true,
            ..f(None, true, true)
        };
        assert_eq!(slot_state(waiting, now), SlotState::Waiting);
        // A stored certificate serves while its renewal waits.
        let renewing = SlotFacts {
            waiting: true,
            ..f(Some((0, 2000)), true, false)
        };
        assert_eq!(slot_state(renewing, now), SlotState::Renewing);
        assert_eq!(
            slot_state(f(Some((0, 2000)), false, false), now),
            SlotState::Valid
        );
        assert_eq!(
            slot_state(f(Some((0, 2000)), true, true), now),
            SlotState::Renewing
        );
        assert_eq!(
            slot_state(f(Some((0, 900)), true, false), now),
            SlotState::Expired
        );

        use SlotState::*;
        assert_eq!(name_state(Valid, Renewing, true, false), NameState::Ready);
        assert_eq!(
            name_state(Valid, Issuing, true, false),
            NameState::Provisioning
        );
        assert_eq!(name_state(Valid, Failed, true, false), NameState::Degraded);
        assert_eq!(name_state(Valid, Valid, false, false), NameState::Degraded);
        assert_eq!(name_state(Valid, Waiting, true, false), NameState::Waiting);
        assert_eq!(
            name_state(Failed, Waiting, true, false),
            NameState::Degraded
        );
        // A superseded standby is no standby, however valid.
        assert_eq!(name_state(Valid, Renewing, true, true), NameState::Degraded);
    }

    #[test]
    fn reprovision_keeps_the_pair_diverse_and_avoids_the_ca_swapped_away_from() {
        let ca = |id: &str, group: &str| CaChoice {
            id: id.into(),
            root_group: group.into(),
            key_types: vec![KeyType::EcdsaP256],
            distrusted: false,
        };
        let cas = vec![ca("a", "ga"), ca("b", "gb"), ca("c", "gc"), ca("b2", "gb")];
        let kt = KeyType::EcdsaP256;
        let now = 1000;
        let avoid_a = Some(Avoid {
            ca: "a",
            usable_from: 1900,
        });
        let at_once = |id: &str| {
            Ok(ReprovisionChoice {
                ca: id.into(),
                hold: None,
            })
        };
        // A name-scope swap keeps the slot's CA.
        assert_eq!(
            choose_reprovision_ca(&cas, kt, "a", "b", None, now),
            at_once("a")
        );
        // A CA-wide swap away from a: neither a nor b (active), nor b2 (b's root).
        assert_eq!(
            choose_reprovision_ca(&cas, kt, "a", "b", avoid_a, now),
            at_once("c")
        );
        // Two CAs (c distrusted): a re-issues, after its hold-off…
        let mut no_c = cas.clone();
        no_c[2].distrusted = true;
        let held = choose_reprovision_ca(&no_c, kt, "a", "b", avoid_a, now).unwrap();
        assert_eq!(held.ca, "a");
        let (until, why) = held.hold.unwrap();
        assert_eq!(until, 1900);
        assert!(why.contains("'a'") && why.contains("'b'"), "{why}");
        // …and at once when it has passed.
        assert_eq!(
            choose_reprovision_ca(&no_c, kt, "a", "b", avoid_a, 1900),
            at_once("a")
        );
        // A distrusted a is never used again: blocked.
        let mut only_distrusted = no_c.clone();
        only_distrusted[0].distrusted = true;
        let err = choose_reprovision_ca(&only_distrusted, kt, "a", "b", avoid_a, 5000).unwrap_err();
        assert!(
            err.contains("blocked") && err.contains("'b'") && err.contains("'a'"),
            "{err}"
        );
        // Never one in the other slot's root group, not even after the
        // hold-off.
        let one_group = vec![ca("b", "gb"), ca("b2", "gb")];
        let avoid_b2 = Some(Avoid {
            ca: "b2",
            usable_from: 0,
        });
        assert!(choose_reprovision_ca(&one_group, kt, "b2", "b", avoid_b2, now).is_err());
    }

    #[test]
    fn reprovision_candidates_fall_back_to_the_ca_swapped_away_from_only_when_none_is_left() {
        let ca = |id: &str, group: &str, distrusted: bool| CaChoice {
            id: id.into(),
            root_group: group.into(),
            key_types: vec![KeyType::EcdsaP256],
            distrusted,
        };
        let two = vec![ca("a", "ga", false), ca("b", "gb", false)];
        assert_eq!(
            reprovision_candidates(&two, Some("a")),
            (vec![], Some("a".into()))
        );
        let three = vec![
            ca("a", "ga", false),
            ca("b", "gb", false),
            ca("c", "gc", false),
        ];
        assert_eq!(
            reprovision_candidates(&three, Some("a")),
            (vec!["b".into(), "c".into()], None)
        );
        // One root group besides a: nothing can pair but a.
        let grouped = vec![
            ca("a", "ga", false),
            ca("b", "gb", false),
            ca("b2", "gb", false),
        ];
        assert_eq!(
            reprovision_candidates(&grouped, Some("a")),
            (vec![], Some("a".into()))
        );
        // Distrusted a: no fallback.
        let distrusted = vec![ca("a", "ga", true), ca("b", "gb", false)];
        assert_eq!(
            reprovision_candidates(&distrusted, Some("a")),
            (vec![], None)
        );
        // No CA-wide operation: every trusted CA that can pair.
        assert_eq!(
            reprovision_candidates(&two, None),
            (vec!["a".into(), "b".into()], None)
        );
    }

    #[test]
    fn the_forecast_counts_only_the_cas_that_take_the_slots_and_the_hold_off() {
        let ca = |id: &str| CaChoice {
            id: id.into(),
            root_group: format!("g{id}"),
            key_types: vec![KeyType::EcdsaP256],
            distrusted: false,
        };
        let pace = |id: &str| CaPace {
            id: id.into(),
            orders_per_hour: 3600,
            concurrency: 100,
            mean_issue_seconds: None,
        };
        let paces = [pace("a"), pace("b"), pace("c")];
        // Three CAs: b and c take A's slots, 7200/h together, no hold-off.
        let three =
            reprovision_forecast(&[ca("a"), ca("b"), ca("c")], Some("a"), &paces, 7200, 900);
        assert_eq!(three.eligible, vec!["b".to_string(), "c".to_string()]);
        assert_eq!((three.orders_per_hour, three.seconds), (7200.0, Some(3600)));
        // Two CAs: a itself after the hold-off, at its own pace.
        let two = reprovision_forecast(&[ca("a"), ca("b")], Some("a"), &paces, 3600, 900);
        assert_eq!(two.same_ca.as_deref(), Some("a"));
        assert_eq!(
            (two.orders_per_hour, two.seconds),
            (3600.0, Some(3600 + 900))
        );
        // Nobody: no time at all.
        let mut gone = vec![ca("a"), ca("b")];
        gone[0].distrusted = true;
        assert_eq!(
            reprovision_forecast(&gone, Some("a"), &paces, 10, 900).seconds,
            None
        );
    }

    #[test]
    fn a_cas_time_left_is_its_wait_then_its_orders_at_its_pace() {
        let pace = |per_hour: u32| CaPace {
            id: "a".into(),
            orders_per_hour: per_hour,
            concurrency: 100,
            mean_issue_seconds: None,
        };
        let left = |wait_seconds, seconds_left| CaTimeLeft {
            wait_seconds,
            seconds_left,
        };
        // (open, retry_at, now, orders per hour) → time left
        let table = [
            // rate-limited: Retry-After 6 s ahead, one order of 1 s
            (1, Some(1006), 1000, 3600, left(6, Some(7))),
            // the Retry-After has passed: only the orders
            (1, Some(990), 1000, 3600, left(0, Some(1))),
            // no order waits
            (360, None, 1000, 3600, left(0, Some(360))),
            // 10 orders at 60/h after a 60 s wait
            (10, Some(1060), 1000, 60, left(60, Some(660))),
            // a CA paced to nothing: the wait is known, the end is not
            (1, Some(1006), 1000, 0, left(6, None)),
        ];
        for (open, retry_at, now, per_hour, want) in table {
            assert_eq!(
                ca_time_left(open, retry_at, now, &pace(per_hour)),
                want,
                "{open} open, retry at {retry_at:?}, now {now}, {per_hour}/h"
            );
        }
    }

    #[test]
    fn reprovisioning_time_is_bounded_by_rate_and_by_concurrency() {
        // Rate-limited: 300/h even though 10 in flight could do 3600/h.
        assert_eq!(ca_orders_per_hour(300, 10, 10.0), 300.0);
        // Concurrency-bound: 2 in flight at 4 s each is 1800/h.
        assert_eq!(ca_orders_per_hour(1_000_000, 2, 4.0), 1800.0);
        assert_eq!(orders_duration_seconds(600, 1800.0), Some(1200));
        assert_eq!(orders_duration_seconds(600, 0.0), None);
    }
}
