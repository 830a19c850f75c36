//! The `dns_persist_expiring` alert: a CA's dns-persist-01 records carry
//! the configured `persistUntil` (`[[cas]] dns_persist_until`); after it
//! the CA no longer accepts them (draft-ietf-acme-dns-persist-02 §3) and
//! every renewal and re-provisioning at that CA waits on records nobody
//! is going to write. `policy::dns_persist::persist_alert` decides when to
//! say so; this raises or resolves one alert per CA, checked by the
//! planning pass at most once a minute.
//!
//! *Observes*: the configuration only. *Writes*: `store::Alerts`.

use std::sync::Mutex;

use tracing::warn;

use crate::policy::dns_persist::{PersistAlert, persist_alert};
use crate::store::Alerts;

/// The alert kind; its subject is the CA id.
pub const ALERT: &str = "dns_persist_expiring";

/// How often the check runs at most.
const EVERY_SECONDS: i64 = 60;

pub(super) struct PersistExpiry {
    alerts: Alerts,
    /// `(CA id, persistUntil)` of the CAs that set one.
    untils: Vec<(String, i64)>,
    last: Mutex<Option<i64>>,
}

impl PersistExpiry {
    pub(super) fn new(alerts: Alerts, untils: Vec<(String, i64)>) -> PersistExpiry {
        PersistExpiry {
            alerts,
            untils,
            last: Mutex::new(None),
        }
    }

    /// Raises or resolves each CA's alert at `now`.
    pub(super) async fn pass(&self, now: i64) {
        if self.untils.is_empty() {
            return;
        }
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if last.is_some_and(|t| now - t < EVERY_SECONDS) {
                return;
            }
            *last = Some(now);
        }
        for (ca, until) in &self.untils {
            let severity = match persist_alert(now, Some(*until)) {
                PersistAlert::None => {
                    if let Err(e) = self
                        .alerts
                        .resolve_alerts(ALERT, std::slice::from_ref(ca), now)
                        .await
                    {
                        warn!(error = %e, "could not resolve the dns_persist_expiring alert");
                    }
                    continue;
                }
                PersistAlert::Warning => "warning",
                PersistAlert::Critical => "critical",
            };
            let when = time::OffsetDateTime::from_unix_timestamp(*until)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| until.to_string());
            let left = until - now;
            let message = if left > 0 {
                format!(
                    "the dns-persist-01 records of CA {ca} carry persistUntil={until} ({when}), \
                     {} days from now: after it the CA no longer accepts them and its renewals \
                     wait; set a later [[cas]] dns_persist_until and publish the new records \
                     (GET /v1/names/{{name}} lists them) before then",
                    left / 86_400
                )
            } else {
                format!(
                    "the dns-persist-01 records of CA {ca} expired at persistUntil={until} \
                     ({when}): the CA no longer accepts them; set a later [[cas]] \
                     dns_persist_until and publish the new records (GET /v1/names/{{name}} \
                     lists them)"
                )
            };
            let details = serde_json::json!({ "ca": ca, "persist_until": until });
            match self
                .alerts
                .raise_alert(ALERT, ca, severity, &message, Some(&details), now)
                .await
            {
                Ok(true) => warn!(alert = ALERT, ca = %ca, "{message}"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not raise the dns_persist_expiring alert"),
            }
        }
    }
}
