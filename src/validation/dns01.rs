//! The DNS-01 sequence of one order (RFC 8555 §8.4): each TXT record is
//! recorded in the store, then published where CNAME delegation points,
//! then awaited on every authoritative server of its zone; when the order
//! ends the records are removed, and a sweep removes those a crashed
//! order left behind. Manual DNS-01 lists the records a person publishes
//! and only checks that they are visible.
//!
//! The issuer drives the sequence (it alone talks to the CA): it asks the
//! CA for the answers, calls [`Dns01Challenges::present`] and
//! [`Dns01Challenges::wait_visible`] (or [`Dns01Challenges::check_manual`]),
//! tells the CA, and calls [`Dns01Challenges::cleanup`] at the end.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::dns::{Dns01Solver, find_zone};
use crate::clock::Clock;
use crate::store::{Challenges, DnsRecord, StoreError};

/// The provider id recorded for manually published DNS-01 records.
pub const MANUAL_PROVIDER: &str = "manual";

/// Why a DNS-01 step did not succeed, and how the order goes on.
#[derive(Debug)]
pub enum Dns01Error {
    /// Retrying cannot help (nothing configured; records expired).
    Final(String),
    /// Retry with backoff (a provider or server failed).
    Transient(String),
    /// Waiting for a person: retry after exactly this many seconds.
    Waiting(String, u64),
}

impl From<StoreError> for Dns01Error {
    fn from(e: StoreError) -> Self {
        Dns01Error::Transient(format!("store: {e}"))
    }
}

/// One answer the CA asked for: `_acme-challenge.<domain>` TXT `value`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The validated domain.
    pub domain: String,
    /// The TXT value.
    pub value: String,
}

/// A record published for an order, to be awaited.
#[derive(Debug, Clone)]
pub struct Placed {
    zone: String,
    fqdn: String,
    value: String,
}

/// DNS-01 records of orders: the store's record of them plus the solver
/// that writes and looks them up.
pub struct Dns01Challenges {
    challenges: Challenges,
    solver: Option<Arc<Dns01Solver>>,
    clock: Arc<dyn Clock>,
}

impl Dns01Challenges {
    /// Records through `challenges`, DNS through `solver` (none: DNS-01
    /// is refused with a clear error).
    pub fn new(
        challenges: Challenges,
        solver: Option<Arc<Dns01Solver>>,
        clock: Arc<dyn Clock>,
    ) -> Dns01Challenges {
        Dns01Challenges {
            challenges,
            solver,
            clock,
        }
    }

    fn solver(&self, what: &str) -> Result<&Arc<Dns01Solver>, Dns01Error> {
        self.solver
            .as_ref()
            .ok_or_else(|| Dns01Error::Final(what.into()))
    }

    /// Records, then publishes each answer where CNAME delegation points
    /// (through `pinned` when the name names its provider). Leftovers of
    /// an earlier attempt of this order are removed first.
    pub async fn present(
        &self,
        order_id: &str,
        pinned: Option<&str>,
        answers: &[Answer],
    ) -> Result<Vec<Placed>, Dns01Error> {
        let solver = self.solver("dns-01 needs a DNS provider; none is configured")?;
        self.cleanup(order_id).await;
        let mut placed = Vec::with_capacity(answers.len());
        for a in answers {
            let p = solver
                .place(&a.domain, pinned)
                .await
                .map_err(Dns01Error::Transient)?;
            self.challenges
                .add_dns_record(
                    order_id,
                    p.provider.id(),
                    &p.fqdn,
                    &a.value,
                    self.clock.now(),
                )
                .await?;
            p.provider
                .present(&p.fqdn, &a.value)
                .await
                .map_err(|e| Dns01Error::Transient(e.0))?;
            placed.push(Placed {
                zone: p.zone,
                fqdn: p.fqdn,
                value: a.value.clone(),
            });
        }
        Ok(placed)
    }

    /// Waits until every authoritative server shows every placed record;
    /// returns how long that took.
    pub async fn wait_visible(&self, placed: &[Placed]) -> Result<Duration, Dns01Error> {
        let solver = self.solver("dns-01 needs a DNS provider; none is configured")?;
        let started = std::time::Instant::now();
        for p in placed {
            solver
                .wait_visible(&p.zone, &p.fqdn, &p.value)
                .await
                .map_err(Dns01Error::Transient)?;
        }
        let waited = started.elapsed();
        info!(
            records = placed.len(),
            propagation_ms = waited.as_millis() as u64,
            "dns-01 records visible"
        );
        Ok(waited)
    }

    /// Manual DNS-01: the TXT records a person must publish are stored (the
    /// API lists them); each call asks the authoritative servers once and
    /// succeeds only when all are visible, else the order waits
    /// `dns.manual_poll_seconds`. Records nobody published within
    /// `dns.manual_expiry_seconds` expire: a final error, so the next
    /// attempt starts a fresh ACME order with fresh values.
    pub async fn check_manual(&self, order_id: &str, answers: &[Answer]) -> Result<(), Dns01Error> {
        let solver = self.solver("dns-01-manual needs the [dns] lookups")?;
        let cfg = solver.lookup().config().clone();
        let now = self.clock.now();
        let mut records = self.challenges.dns_records_of(order_id).await?;
        // Values of an earlier ACME order are no longer wanted.
        for r in &records {
            if !answers.iter().any(|a| a.value == r.value) {
                self.challenges.delete_dns_record(&r.id).await?;
            }
        }
        records.retain(|r| answers.iter().any(|a| a.value == r.value));
        for a in answers {
            if !records.iter().any(|r| r.value == a.value) {
                let fqdn = format!("_acme-challenge.{}", a.domain);
                let id = self
                    .challenges
                    .add_dns_record(order_id, MANUAL_PROVIDER, &fqdn, &a.value, now)
                    .await?;
                records.push(DnsRecord {
                    id,
                    order_id: order_id.to_string(),
                    provider_id: MANUAL_PROVIDER.into(),
                    fqdn,
                    value: a.value.clone(),
                    created_at: now,
                });
            }
        }
        let oldest = records.iter().map(|r| r.created_at).min().unwrap_or(now);
        let mut missing = Vec::new();
        for r in &records {
            let zone = find_zone(solver.lookup(), &r.fqdn)
                .await
                .map_err(|e| Dns01Error::Waiting(e, cfg.manual_poll_seconds))?;
            let visible = solver
                .lookup()
                .txt_visible(&zone, &r.fqdn, &r.value)
                .await
                .unwrap_or(false);
            if !visible {
                missing.push(format!("{} TXT \"{}\"", r.fqdn, r.value));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if now - oldest >= cfg.manual_expiry_seconds {
            for r in &records {
                self.challenges.delete_dns_record(&r.id).await?;
            }
            return Err(Dns01Error::Final(format!(
                "manual DNS-01 expired: the TXT records were not published within {} s; \
                 a new request with new values follows",
                cfg.manual_expiry_seconds
            )));
        }
        Err(Dns01Error::Waiting(
            format!("waiting for manual DNS-01 records: {}", missing.join(", ")),
            cfg.manual_poll_seconds,
        ))
    }

    /// dns-persist-01 (draft-ietf-acme-dns-persist-02): makes sure every
    /// record stands on every authoritative server of its zone, looking
    /// first and writing only what is missing. A record already visible is
    /// left alone — so once the records are published, renewals and
    /// re-provisioning write nothing to DNS. A missing record is presented
    /// through the DNS provider that controls its owner name (through
    /// `pinned` when the name names one) and awaited; it is not recorded
    /// for clean-up: a persistent record stays. Without such a provider it
    /// is the operator's to publish, and the order waits
    /// `dns.manual_poll_seconds` with an error naming each missing record.
    /// Returns how many records were written.
    pub async fn ensure_persist(
        &self,
        records: &[crate::policy::dns_persist::PersistRecord],
        pinned: Option<&str>,
    ) -> Result<usize, Dns01Error> {
        let solver = self.solver("dns-persist-01 needs the [dns] lookups")?;
        let poll = solver.lookup().config().manual_poll_seconds;
        let mut written = 0;
        let mut missing = Vec::new();
        for r in records {
            let fqdn = super::dns::follow_cname(solver.lookup(), &r.owner)
                .await
                .map_err(|e| Dns01Error::Waiting(e, poll))?;
            let zone = find_zone(solver.lookup(), &fqdn)
                .await
                .map_err(|e| Dns01Error::Waiting(e, poll))?;
            if solver
                .lookup()
                .txt_visible(&zone, &fqdn, &r.value)
                .await
                .unwrap_or(false)
            {
                continue;
            }
            let placement = if solver.has_providers() {
                solver.place_owner(&r.owner, pinned).await.ok()
            } else {
                None
            };
            let Some(p) = placement else {
                missing.push(format!("{} TXT \"{}\"", r.owner, r.value));
                continue;
            };
            p.provider.present(&p.fqdn, &r.value).await.map_err(|e| {
                Dns01Error::Transient(format!(
                    "cannot publish the dns-persist-01 record {} TXT \"{}\" through DNS \
                     provider '{}': {}",
                    r.owner,
                    r.value,
                    p.provider.id(),
                    e.0
                ))
            })?;
            solver
                .wait_visible(&p.zone, &p.fqdn, &r.value)
                .await
                .map_err(Dns01Error::Transient)?;
            info!(owner = %r.owner, provider = p.provider.id(), "dns-persist-01 record published");
            written += 1;
        }
        if missing.is_empty() {
            return Ok(written);
        }
        Err(Dns01Error::Waiting(
            format!(
                "waiting for the dns-persist-01 record(s) to be published (no DNS provider \
                 controls them): {}",
                missing.join(", ")
            ),
            poll,
        ))
    }

    /// Removes the TXT records an order published; a record whose removal
    /// fails stays recorded for the sweep.
    pub async fn cleanup(&self, order_id: &str) {
        let Some(solver) = &self.solver else { return };
        let Ok(records) = self.challenges.dns_records_of(order_id).await else {
            return;
        };
        self.remove_records(solver, records).await;
    }

    /// Crash recovery: removes records of orders that are no longer open.
    pub async fn sweep(&self) {
        let Some(solver) = &self.solver else { return };
        if let Ok(records) = self.challenges.stale_dns_records(100).await
            && !records.is_empty()
        {
            info!(count = records.len(), "sweeping leftover dns-01 records");
            self.remove_records(solver, records).await;
        }
    }

    async fn remove_records(&self, solver: &Dns01Solver, records: Vec<DnsRecord>) {
        for r in records {
            if r.provider_id == MANUAL_PROVIDER {
                // Published by a person: nothing for twincert to remove.
                let _ = self.challenges.delete_dns_record(&r.id).await;
                continue;
            }
            let Some(p) = solver.provider(&r.provider_id) else {
                warn!(provider = %r.provider_id, fqdn = %r.fqdn, "cannot clean up: DNS provider no longer configured");
                continue;
            };
            match p.cleanup(&r.fqdn, &r.value).await {
                Ok(()) => {
                    let _ = self.challenges.delete_dns_record(&r.id).await;
                }
                Err(e) => warn!(error = %e, "dns-01 cleanup failed; the sweep will retry"),
            }
        }
    }
}
