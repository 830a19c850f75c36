//! What twincert does about revoked certificates and CA incidents,
//! decided from facts the revocation check gathered: which CA
//! incidents to open, which revocations get the per-name reaction (swap
//! the active slot away, re-provision the revoked slots) and which are
//! held, which alerts to raise with what text, and what an open incident
//! does (the CA-wide swap, or a stored dry run waiting for an operator).
//!
//! Pure, like the rest of `policy`: no store, no configuration types, no
//! clock of its own. `worker::revocation` gathers the facts with its store
//! reads, calls [`plan`], and applies the [`Plan`] with its store writes.
//! Evidence is carried through as the opaque JSON the store recorded; it
//! is never looked at here.

use std::collections::{BTreeMap, BTreeSet};

use super::is_ca_incident;
use crate::domain::Slot;

/// What to do when a name's *active* certificate is found revoked
/// (`[revocation] on_active_revoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnActiveRevoked {
    /// Swap the name to its standby at once (and re-provision the slot).
    Swap,
    /// Only alert; an operator swaps.
    Alert,
}

/// What a CA-level incident does besides alerting (`[revocation]
/// incident_policy`, stored on the incident as `swap` or `manual`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnIncident {
    /// Swap every name active on the CA away from it, in one operation.
    Swap,
    /// Record a dry run of that swap and wait for an operator.
    Manual,
}

impl OnIncident {
    /// The spelling stored on the incident.
    pub fn as_str(self) -> &'static str {
        match self {
            OnIncident::Swap => "swap",
            OnIncident::Manual => "manual",
        }
    }

    /// Reads the stored spelling. Anything but `swap` is `Manual`: an
    /// incident whose policy cannot be read moves nothing without an
    /// operator.
    pub fn from_stored(s: &str) -> OnIncident {
        if s == "swap" {
            OnIncident::Swap
        } else {
            OnIncident::Manual
        }
    }
}

/// A revoked certificate recorded and not yet reacted to.
#[derive(Debug, Clone, PartialEq)]
pub struct Revoked<'a> {
    /// The name.
    pub name: &'a str,
    /// The slot holding it.
    pub slot: Slot,
    /// The issuing CA.
    pub ca: &'a str,
    /// The certificate's row id.
    pub cert_id: &'a str,
    /// Whether it is the name's active certificate.
    pub active: bool,
    /// What showed it revoked (recorded with the reaction, not read here).
    pub evidence: &'a serde_json::Value,
}

/// A CA's incident signals within the window: certificates found revoked,
/// certificates whose ARI window moved into the past (and not revoked),
/// and the CA's current certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    /// Found revoked.
    pub revoked: i64,
    /// ARI window moved into the past.
    pub ari_past: i64,
    /// The CA's current certificates.
    pub total: i64,
}

/// Where a CA stands before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStanding {
    /// The CA has an open incident, with this policy.
    OpenIncident(OnIncident),
    /// No open incident; its signals since [`signal_since`].
    NoIncident(Signal),
}

/// The `[revocation]` settings the decision uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// See [`OnActiveRevoked`].
    pub on_active_revoked: OnActiveRevoked,
    /// See [`OnIncident`].
    pub on_incident: OnIncident,
    /// Share of a CA's current certificates that makes an incident.
    pub incident_percent: f64,
    /// Count that makes an incident.
    pub incident_count: i64,
    /// Never an incident below this count.
    pub incident_min_count: i64,
    /// The window signals are counted in, seconds.
    pub incident_window_seconds: i64,
}

/// A CA incident to open.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident<'a> {
    /// The CA.
    pub ca: String,
    /// Its counts.
    pub signal: Signal,
    /// What it does (the configured policy).
    pub on_incident: OnIncident,
    /// One line for people.
    pub summary: String,
    /// The first 20 of the CA's pending revocations, as evidence.
    pub evidence: Vec<&'a Revoked<'a>>,
}

/// An alert to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `certificate_revoked`, `ca_incident`.
    pub kind: &'static str,
    /// What it is about (`name/slot`, a CA id).
    pub subject: String,
    /// `critical` or `warning`.
    pub severity: &'static str,
    /// The text people read.
    pub message: String,
}

/// One per-name reaction (one operation).
#[derive(Debug, Clone, PartialEq)]
pub struct PerName<'a> {
    /// The revocations it handles, in the order they were found.
    pub revoked: Vec<&'a Revoked<'a>>,
    /// Why (names the CAs).
    pub reason: String,
    /// Names whose revoked active slot flips to a usable standby.
    pub swap_names: Vec<&'a str>,
    /// Slots to re-provision: (name, slot, the revoked certificate).
    pub reprovision: Vec<(&'a str, Slot, &'a str)>,
    /// Certificates that count as reacted to once it ran.
    pub cert_ids: Vec<&'a str>,
    /// The CA re-provisioning must avoid (its incident's CA-wide swap ran).
    pub avoid_ca: Option<String>,
    /// One alert per revoked slot, with the revocation it is about.
    pub alerts: Vec<(&'a Revoked<'a>, Alert)>,
}

/// What the check pass does about its revocations, in this order: open
/// the incidents, then run the per-name reactions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan<'a> {
    /// Incidents to open, by CA.
    pub incidents: Vec<NewIncident<'a>>,
    /// Per-name reactions: revocations at CAs without an incident first,
    /// then one per CA whose open incident swapped away from it.
    pub reactions: Vec<PerName<'a>>,
}

impl Plan<'_> {
    /// Revoked certificates reacted to.
    pub fn reacted(&self) -> usize {
        self.reactions.iter().map(|r| r.revoked.len()).sum()
    }
}

/// The CAs whose standing is read: those with pending revocations and
/// those whose ARI windows moved into the past — either is an incident
/// signal, and a CA with neither has nothing to decide.
pub fn cas_to_examine<'a>(
    pending: &'a [Revoked<'a>],
    ari_moved: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<&'a str> {
    pending.iter().map(|r| r.ca).chain(ari_moved).collect()
}

/// From when a CA's signals count: the window, but never from before the
/// CA's last incident was closed — the signals that incident was about
/// must not open another.
pub fn signal_since(now: i64, window_seconds: i64, last_closed_at: Option<i64>) -> i64 {
    (now - window_seconds).max(last_closed_at.map_or(i64::MIN, |t| t + 1))
}

/// Decides what the pending revocations lead to, CA by CA (a CA missing
/// from `cas` is treated as having no incident and no signal):
///
/// * An open incident with policy `swap`: its CA-wide swap already ran, so
///   later revocations at that CA get the per-name reaction, re-provisioned
///   *away* from the CA.
/// * An open incident with policy `manual`: its revocations are held —
///   they stay pending until an operator closes the incident, so nothing
///   moves behind the operator's back.
/// * No open incident and the signals reach the threshold
///   ([`is_ca_incident`] on revoked + ARI-moved): a new incident, with
///   the configured policy; its revocations are held, because the
///   incident's CA-wide swap (or dry run) covers them — one reaction
///   instead of thousands.
/// * Otherwise each revocation gets the plain per-name reaction.
pub fn plan<'a>(
    pending: &'a [Revoked<'a>],
    cas: &BTreeMap<String, CaStanding>,
    settings: &Settings,
) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut held: BTreeSet<&str> = BTreeSet::new();
    let mut away_from: Vec<&str> = Vec::new();
    for (ca, standing) in cas {
        match *standing {
            CaStanding::OpenIncident(OnIncident::Swap) => away_from.push(ca),
            CaStanding::OpenIncident(OnIncident::Manual) => {
                held.insert(ca);
            }
            CaStanding::NoIncident(signal) => {
                if !is_ca_incident(
                    signal.revoked + signal.ari_past,
                    signal.total,
                    settings.incident_percent,
                    settings.incident_count,
                    settings.incident_min_count,
                ) {
                    continue;
                }
                held.insert(ca);
                plan.incidents.push(NewIncident {
                    ca: ca.clone(),
                    signal,
                    on_incident: settings.on_incident,
                    summary: format!(
                        "{} of {} current certificates from {ca} found revoked and {} asked for \
                         early renewal (ARI) within {} s",
                        signal.revoked,
                        signal.total,
                        signal.ari_past,
                        settings.incident_window_seconds
                    ),
                    evidence: pending.iter().filter(|r| r.ca == ca).take(20).collect(),
                });
            }
        }
    }
    let plain: Vec<&Revoked> = pending
        .iter()
        .filter(|r| !held.contains(r.ca) && !away_from.contains(&r.ca))
        .collect();
    plan.reactions
        .extend(per_name(plain, None, settings.on_active_revoked));
    for ca in away_from {
        let group = pending.iter().filter(|r| r.ca == ca).collect();
        plan.reactions
            .extend(per_name(group, Some(ca), settings.on_active_revoked));
    }
    plan
}

/// The per-name reaction to `revoked` (none for none):
///
/// * Every revoked slot is re-provisioned — a revoked certificate is
///   useless in either slot — away from `avoid_ca` when given.
/// * A name whose *active* certificate is revoked swaps to its standby
///   (where usable) when the policy says so; alert-only leaves the swap to
///   an operator, told so by a critical alert.
/// * One alert per slot: critical for an active certificate (clients see
///   it), a warning for a standby (the name has no instant swap for now).
fn per_name<'a>(
    revoked: Vec<&'a Revoked<'a>>,
    avoid_ca: Option<&str>,
    on_active: OnActiveRevoked,
) -> Option<PerName<'a>> {
    if revoked.is_empty() {
        return None;
    }
    let swap = on_active == OnActiveRevoked::Swap;
    let cas: BTreeSet<&str> = revoked.iter().map(|r| r.ca).collect();
    let alerts = revoked
        .iter()
        .map(|r| {
            let subject = format!("{}/{}", r.name, r.slot.as_str());
            let (severity, what) = match (r.active, swap) {
                (true, true) => (
                    "critical",
                    "active certificate revoked; swapped to the standby where usable, re-issuing",
                ),
                (true, false) => (
                    "critical",
                    "active certificate revoked; policy is alert-only: swap it (twincert swap) — re-issuing",
                ),
                (false, _) => ("warning", "standby certificate revoked; re-issuing"),
            };
            let message = format!("{subject} ({}): {what}", r.ca);
            let alert = Alert {
                kind: "certificate_revoked",
                subject,
                severity,
                message,
            };
            (*r, alert)
        })
        .collect();
    Some(PerName {
        reason: format!(
            "{} certificate(s) found revoked by their CA ({})",
            revoked.len(),
            cas.into_iter().collect::<Vec<_>>().join(", ")
        ),
        swap_names: if swap {
            revoked
                .iter()
                .filter(|r| r.active)
                .map(|r| r.name)
                .collect()
        } else {
            Vec::new()
        },
        reprovision: revoked
            .iter()
            .map(|r| (r.name, r.slot, r.cert_id))
            .collect(),
        cert_ids: revoked.iter().map(|r| r.cert_id).collect(),
        avoid_ca: avoid_ca.map(str::to_string),
        alerts,
        revoked,
    })
}

/// What an open incident does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentOutcome {
    /// Every name active on the CA swaps away from it now, then the CA's
    /// revoked standbys are re-provisioned elsewhere
    /// ([`after_ca_wide_swap`]).
    CaWideSwap,
    /// A dry run of that swap is stored for an operator; nothing moves.
    DryRun,
}

/// An incident's outcome follows its policy: `swap` trusts the threshold
/// to act at once; `manual` lets an operator look first.
pub fn incident_outcome(on: OnIncident) -> IncidentOutcome {
    match on {
        OnIncident::Swap => IncidentOutcome::CaWideSwap,
        OnIncident::Manual => IncidentOutcome::DryRun,
    }
}

/// After a CA-wide swap away from `ca`: what is left of the CA's pending
/// revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterCaWideSwap<'a> {
    /// The CA's revoked *standbys*, re-provisioned elsewhere: the CA-wide
    /// swap only moves (and re-provisions) active slots.
    pub reprovision: Vec<(&'a str, Slot, &'a str)>,
    /// Every pending revocation at the CA counts as reacted to: the swap
    /// took care of the active ones, `reprovision` of the rest.
    pub cert_ids: Vec<&'a str>,
}

/// See [`AfterCaWideSwap`].
pub fn after_ca_wide_swap<'a>(ca: &str, pending: &'a [Revoked<'a>]) -> AfterCaWideSwap<'a> {
    let at_ca = || pending.iter().filter(move |r| r.ca == ca);
    AfterCaWideSwap {
        reprovision: at_ca()
            .filter(|r| !r.active)
            .map(|r| (r.name, r.slot, r.cert_id))
            .collect(),
        cert_ids: at_ca().map(|r| r.cert_id).collect(),
    }
}

/// What an incident's outcome did, for the log and the alert:
/// `operation` is the CA-wide swap's operation.
pub fn incident_outcome_text(
    outcome: IncidentOutcome,
    ca: &str,
    incident_id: &str,
    operation: Option<&str>,
) -> String {
    match outcome {
        IncidentOutcome::CaWideSwap => format!(
            "every name active on {ca} swapped away (operation {})",
            operation.unwrap_or("?")
        ),
        IncidentOutcome::DryRun => format!(
            "a dry run of `twincert swap --ca {ca}` waits for an operator \
             (twincert incidents show {incident_id})"
        ),
    }
}

/// The alert an incident raises: always critical — a CA-level incident
/// affects every name on the CA, whatever its outcome.
pub fn incident_alert(ca: &str, summary: &str, outcome_text: &str) -> Alert {
    Alert {
        kind: "ca_incident",
        subject: ca.to_string(),
        severity: "critical",
        message: format!("CA incident at {ca}: {summary}; {outcome_text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        on_active_revoked: OnActiveRevoked::Swap,
        on_incident: OnIncident::Swap,
        incident_percent: 10.0,
        incident_count: 100,
        incident_min_count: 3,
        incident_window_seconds: 3600,
    };

    /// `name/slot@ca` (`*` marks the active slot); the cert id is
    /// `cert-name-slot`.
    fn revoked(spec: &str) -> (String, Slot, String, bool, String) {
        let (slot_part, ca) = spec.split_once('@').expect("name/slot@ca");
        let active = slot_part.ends_with('*');
        let (name, slot) = slot_part
            .trim_end_matches('*')
            .split_once('/')
            .expect("name/slot");
        (
            name.to_string(),
            slot.parse().expect("slot"),
            ca.to_string(),
            active,
            format!("cert-{name}-{slot}"),
        )
    }

    /// The plan in a few lines, so a table row says what it expects.
    fn render(p: &Plan<'_>) -> Vec<String> {
        let mut out = Vec::new();
        for i in &p.incidents {
            out.push(format!(
                "incident {} {} revoked={} ari={} total={} evidence={}",
                i.ca,
                i.on_incident.as_str(),
                i.signal.revoked,
                i.signal.ari_past,
                i.signal.total,
                i.evidence.len()
            ));
        }
        for r in &p.reactions {
            out.push(format!(
                "react avoid={} swap=[{}] reprovision=[{}] certs={}",
                r.avoid_ca.as_deref().unwrap_or("-"),
                r.swap_names.join(","),
                r.reprovision
                    .iter()
                    .map(|(n, s, _)| format!("{n}/{s}"))
                    .collect::<Vec<_>>()
                    .join(","),
                r.cert_ids.len()
            ));
            for (_, a) in &r.alerts {
                out.push(format!("alert {} {} {}", a.kind, a.subject, a.severity));
            }
        }
        out
    }

    struct Case<'a> {
        name: &'a str,
        pending: &'a [&'a str],
        ari_moved: &'a [&'a str],
        cas: &'a [(&'a str, CaStanding)],
        on_active: OnActiveRevoked,
        want: &'a [&'a str],
    }

    const fn signal(revoked: i64, ari_past: i64, total: i64) -> CaStanding {
        CaStanding::NoIncident(Signal {
            revoked,
            ari_past,
            total,
        })
    }

    const SWAP: OnActiveRevoked = OnActiveRevoked::Swap;

    #[test]
    fn reactions_follow_the_rules() {
        let cases = [
            Case {
                name: "nothing pending, nothing done",
                pending: &[],
                ari_moved: &[],
                cas: &[],
                on_active: SWAP,
                want: &[],
            },
            Case {
                name: "plain revocations below the threshold: one per-name reaction",
                pending: &["n1/primary*@a", "n2/backup@b"],
                ari_moved: &[],
                cas: &[("a", signal(1, 0, 1000)), ("b", signal(1, 0, 1000))],
                on_active: SWAP,
                want: &[
                    "react avoid=- swap=[n1] reprovision=[n1/primary,n2/backup] certs=2",
                    "alert certificate_revoked n1/primary critical",
                    "alert certificate_revoked n2/backup warning",
                ],
            },
            Case {
                name: "a standby only: re-provisioned, not swapped",
                pending: &["n1/backup@a"],
                ari_moved: &[],
                cas: &[("a", signal(1, 0, 1000))],
                on_active: SWAP,
                want: &[
                    "react avoid=- swap=[] reprovision=[n1/backup] certs=1",
                    "alert certificate_revoked n1/backup warning",
                ],
            },
            Case {
                name: "alert-only policy: nothing swapped, still re-provisioned",
                pending: &["n1/primary*@a"],
                ari_moved: &[],
                cas: &[("a", signal(1, 0, 1000))],
                on_active: OnActiveRevoked::Alert,
                want: &[
                    "react avoid=- swap=[] reprovision=[n1/primary] certs=1",
                    "alert certificate_revoked n1/primary critical",
                ],
            },
            Case {
                name: "a CA over the threshold opens an incident and its revocations are held",
                pending: &[
                    "n1/primary*@a",
                    "n2/primary*@a",
                    "n3/backup@a",
                    "n4/primary*@b",
                ],
                ari_moved: &[],
                cas: &[("a", signal(3, 0, 10)), ("b", signal(1, 0, 1000))],
                on_active: SWAP,
                want: &[
                    "incident a swap revoked=3 ari=0 total=10 evidence=3",
                    "react avoid=- swap=[n4] reprovision=[n4/primary] certs=1",
                    "alert certificate_revoked n4/primary critical",
                ],
            },
            Case {
                name: "below min count: no incident even at 100%",
                pending: &["n1/primary*@a", "n2/primary*@a"],
                ari_moved: &[],
                cas: &[("a", signal(2, 0, 2))],
                on_active: SWAP,
                want: &[
                    "react avoid=- swap=[n1,n2] reprovision=[n1/primary,n2/primary] certs=2",
                    "alert certificate_revoked n1/primary critical",
                    "alert certificate_revoked n2/primary critical",
                ],
            },
            Case {
                name: "an open manual incident holds its CA's revocations",
                pending: &["n1/primary*@a", "n2/primary*@b"],
                ari_moved: &[],
                cas: &[
                    ("a", CaStanding::OpenIncident(OnIncident::Manual)),
                    ("b", signal(1, 0, 1000)),
                ],
                on_active: SWAP,
                want: &[
                    "react avoid=- swap=[n2] reprovision=[n2/primary] certs=1",
                    "alert certificate_revoked n2/primary critical",
                ],
            },
            Case {
                name: "an open swap incident: re-provision away from its CA, after the plain ones",
                pending: &["n1/backup@a", "n2/primary*@b", "n3/primary*@a"],
                ari_moved: &[],
                cas: &[
                    ("a", CaStanding::OpenIncident(OnIncident::Swap)),
                    ("b", signal(1, 0, 1000)),
                ],
                on_active: SWAP,
                want: &[
                    "react avoid=- swap=[n2] reprovision=[n2/primary] certs=1",
                    "alert certificate_revoked n2/primary critical",
                    "react avoid=a swap=[n3] reprovision=[n1/backup,n3/primary] certs=2",
                    "alert certificate_revoked n1/backup warning",
                    "alert certificate_revoked n3/primary critical",
                ],
            },
            Case {
                name: "an ARI-moved CA without revocations can open an incident on ARI alone",
                pending: &[],
                ari_moved: &["a"],
                cas: &[("a", signal(0, 50, 100))],
                on_active: SWAP,
                want: &["incident a swap revoked=0 ari=50 total=100 evidence=0"],
            },
            Case {
                name: "ARI and revocations add up to the threshold",
                pending: &["n1/primary*@a"],
                ari_moved: &["a"],
                cas: &[("a", signal(1, 2, 20))],
                on_active: SWAP,
                want: &["incident a swap revoked=1 ari=2 total=20 evidence=1"],
            },
            Case {
                name: "an ARI-moved CA below the threshold does nothing",
                pending: &[],
                ari_moved: &["a"],
                cas: &[("a", signal(0, 1, 100))],
                on_active: SWAP,
                want: &[],
            },
            Case {
                name: "a CA without gathered facts gets the plain reaction",
                pending: &["n1/primary*@a"],
                ari_moved: &[],
                cas: &[],
                on_active: SWAP,
                want: &[
                    "react avoid=- swap=[n1] reprovision=[n1/primary] certs=1",
                    "alert certificate_revoked n1/primary critical",
                ],
            },
        ];
        let null = serde_json::Value::Null;
        for case in cases {
            let rows: Vec<_> = case.pending.iter().map(|s| revoked(s)).collect();
            let pending: Vec<Revoked> = rows
                .iter()
                .map(|(name, slot, ca, active, id)| Revoked {
                    name,
                    slot: *slot,
                    ca,
                    cert_id: id,
                    active: *active,
                    evidence: &null,
                })
                .collect();
            let cas: BTreeMap<String, CaStanding> = case
                .cas
                .iter()
                .map(|(ca, s)| (ca.to_string(), *s))
                .collect();
            let settings = Settings {
                on_active_revoked: case.on_active,
                ..SETTINGS
            };
            let p = plan(&pending, &cas, &settings);
            assert_eq!(render(&p), case.want, "{}", case.name);
            let held: usize = p.incidents.iter().map(|i| i.evidence.len()).sum();
            assert!(
                p.reacted() + held <= pending.len(),
                "{}: a revocation is handled once",
                case.name
            );
            let examined = cas_to_examine(&pending, case.ari_moved.iter().copied());
            let mut want_examined: BTreeSet<&str> = pending.iter().map(|r| r.ca).collect();
            want_examined.extend(case.ari_moved.iter().copied());
            assert_eq!(examined, want_examined, "{}", case.name);
        }
    }

    #[test]
    fn incident_evidence_is_the_first_twenty_of_its_ca() {
        let null = serde_json::Value::Null;
        let names: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
        let pending: Vec<Revoked> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Revoked {
                name: n,
                slot: Slot::Primary,
                ca: if i % 3 == 0 { "b" } else { "a" },
                cert_id: n,
                active: true,
                evidence: &null,
            })
            .collect();
        let cas = BTreeMap::from([("a".to_string(), signal(20, 0, 20))]);
        let p = plan(&pending, &cas, &SETTINGS);
        let evidence: Vec<&str> = p.incidents[0].evidence.iter().map(|r| r.name).collect();
        let want: Vec<&str> = pending
            .iter()
            .filter(|r| r.ca == "a")
            .take(20)
            .map(|r| r.name)
            .collect();
        assert_eq!(evidence, want);
        assert_eq!(
            p.incidents[0].summary,
            "20 of 20 current certificates from a found revoked and 0 asked for early renewal \
             (ARI) within 3600 s"
        );
        assert_eq!(p.incidents[0].on_incident, OnIncident::Swap);
    }

    #[test]
    fn per_name_texts_are_the_ones_people_read() {
        let null = serde_json::Value::Null;
        let pending = [
            Revoked {
                name: "n1",
                slot: Slot::Primary,
                ca: "b",
                cert_id: "c1",
                active: true,
                evidence: &null,
            },
            Revoked {
                name: "n2",
                slot: Slot::Backup,
                ca: "a",
                cert_id: "c2",
                active: false,
                evidence: &null,
            },
        ];
        let messages = |on_active| {
            let settings = Settings {
                on_active_revoked: on_active,
                ..SETTINGS
            };
            let p = plan(&pending, &BTreeMap::new(), &settings);
            let r = &p.reactions[0];
            assert_eq!(
                r.reason,
                "2 certificate(s) found revoked by their CA (a, b)"
            );
            r.alerts
                .iter()
                .map(|(_, a)| a.message.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            messages(OnActiveRevoked::Swap),
            [
                "n1/primary (b): active certificate revoked; swapped to the standby where \
                 usable, re-issuing",
                "n2/backup (a): standby certificate revoked; re-issuing",
            ]
        );
        assert_eq!(
            messages(OnActiveRevoked::Alert)[0],
            "n1/primary (b): active certificate revoked; policy is alert-only: swap it \
             (twincert swap) — re-issuing"
        );
    }

    #[test]
    fn signals_count_from_the_window_or_after_the_last_closed_incident() {
        // (now, window, last closed, since)
        let cases = [
            (10_000, 3600, None, 6400),
            (10_000, 3600, Some(5000), 6400),
            (10_000, 3600, Some(8000), 8001),
        ];
        for (now, window, closed, want) in cases {
            assert_eq!(signal_since(now, window, closed), want, "{closed:?}");
        }
    }

    #[test]
    fn incident_outcomes() {
        assert_eq!(OnIncident::from_stored("swap"), OnIncident::Swap);
        assert_eq!(OnIncident::from_stored("manual"), OnIncident::Manual);
        assert_eq!(
            OnIncident::from_stored("unknown"),
            OnIncident::Manual,
            "an unreadable policy moves nothing"
        );
        for on in [OnIncident::Swap, OnIncident::Manual] {
            assert_eq!(OnIncident::from_stored(on.as_str()), on);
        }
        assert_eq!(
            incident_outcome(OnIncident::Swap),
            IncidentOutcome::CaWideSwap
        );
        assert_eq!(
            incident_outcome(OnIncident::Manual),
            IncidentOutcome::DryRun
        );
        let swap = incident_outcome_text(IncidentOutcome::CaWideSwap, "a", "i1", Some("op1"));
        assert_eq!(swap, "every name active on a swapped away (operation op1)");
        let dry = incident_outcome_text(IncidentOutcome::DryRun, "a", "i1", None);
        assert_eq!(
            dry,
            "a dry run of `twincert swap --ca a` waits for an operator (twincert incidents show i1)"
        );
        let alert = incident_alert("a", "3 of 10", &dry);
        assert_eq!(
            (alert.kind, alert.subject.as_str(), alert.severity),
            ("ca_incident", "a", "critical")
        );
        assert_eq!(alert.message, format!("CA incident at a: 3 of 10; {dry}"));

        let null = serde_json::Value::Null;
        let r = |name, slot, ca, active| Revoked {
            name,
            slot,
            ca,
            cert_id: name,
            active,
            evidence: &null,
        };
        let pending = [
            r("n1", Slot::Primary, "a", true),
            r("n2", Slot::Backup, "a", false),
            r("n3", Slot::Backup, "b", false),
        ];
        assert_eq!(
            after_ca_wide_swap("a", &pending),
            AfterCaWideSwap {
                reprovision: vec![("n2", Slot::Backup, "n2")],
                cert_ids: vec!["n1", "n2"],
            }
        );
    }
}
