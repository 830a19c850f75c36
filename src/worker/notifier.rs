//! The notifier: on the replica that holds the `deploy` lease, after each
//! deployment pass, new alerts (and open ones raised again, at most once
//! per rate-limit period) go out by mail and webhook; every delivery is
//! recorded. Once a minute it also raises `issuance_failing` for orders
//! that have failed for longer than configured.
//!
//! *Observes*: alerts due for delivery (`store::Alerts`), long-failing
//! orders (`store::Orders`). *Writes*: deliveries (mail, webhooks), their
//! records, and the `issuance_failing` alerts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracing::warn;

use super::delivery::Delivery;
use crate::clock::Clock;
use crate::notify::Message;
use crate::store::{Alerts, Orders, StoreError};

/// Alerts about a single event: delivered once, then closed.
const ONE_SHOT: [&str; 2] = ["swap_executed", "deploy_confirmed"];
/// Retry of an alert no channel could deliver.
const NOTIFY_RETRY_SECONDS: i64 = 60;
/// How often long-failing orders are looked for.
const FAILING_SCAN: Duration = Duration::from_secs(60);

/// The notifier controller and what it needs.
pub struct Notifier {
    alerts: Alerts,
    orders: Orders,
    clock: Arc<dyn Clock>,
    delivery: Arc<Delivery>,
    last_failing_scan: Mutex<Option<tokio::time::Instant>>,
}

impl Notifier {
    pub(super) fn new(
        store: &crate::store::Store,
        clock: Arc<dyn Clock>,
        delivery: Arc<Delivery>,
    ) -> Notifier {
        Notifier {
            alerts: store.alerts().clone(),
            orders: store.orders().clone(),
            clock,
            delivery,
            last_failing_scan: Mutex::new(None),
        }
    }

    /// Once a minute the `issuance_failing` scan (and, with no channel
    /// configured, the closing of one-shot alerts nobody will be told
    /// of); then the deliveries.
    pub(super) async fn pass(&self) {
        let d = &self.delivery;
        let scan = {
            let mut last = self
                .last_failing_scan
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= FAILING_SCAN);
            if due {
                *last = Some(tokio::time::Instant::now());
            }
            due
        };
        if scan {
            if let Err(e) = self.issuance_failing_alerts().await {
                warn!(error = %e, "issuance alert scan failed");
            }
            if !d.has_channel() {
                // Nobody is told: one-shot alerts stay recorded but do not
                // pile up as open.
                let now = self.clock.now();
                if let Err(e) = self.alerts.resolve_open_alerts_of(&ONE_SHOT, now).await {
                    warn!(error = %e, "closing one-shot alerts failed");
                }
            }
        }
        if let Err(e) = self.notify_pass().await {
            warn!(error = %e, "notification pass failed");
        }
    }

    /// `issuance_failing` for orders failing longer than configured.
    async fn issuance_failing_alerts(&self) -> Result<(), StoreError> {
        let d = &self.delivery;
        let now = self.clock.now();
        let failing = self
            .orders
            .long_failing_orders(now, d.alerts.issuance_failing_seconds, 1000)
            .await?;
        let mut subjects = Vec::new();
        for f in failing {
            let (name, slot, ca, error, since) =
                (f.name_id, f.slot, f.ca_id, f.last_error, f.failing_since);
            let subject = format!("{name}/{slot}");
            let details = json!({
                "name": name, "slot": slot, "ca": ca, "error": error,
                "failing_since": crate::clock::rfc3339(since),
                "what_to_do": "Look at the order's last error (GET /v1/names/{name}); fix validation or the CA account, or swap the slot to another CA.",
            });
            self.alerts
                .raise_alert(
                    "issuance_failing",
                    &subject,
                    "warning",
                    &format!(
                        "{subject}: issuance at {ca} failing since {}: {error}",
                        crate::clock::rfc3339(since)
                    ),
                    Some(&details),
                    now,
                )
                .await?;
            subjects.push(subject);
        }
        self.alerts
            .resolve_alerts_except("issuance_failing", &subjects, now)
            .await?;
        Ok(())
    }

    /// Delivers new alerts and due reminders: one mail to the certificate
    /// admins, one to the endpoint's admin (so neither sees the other's
    /// address and a bad address does not block the other), one post per
    /// webhook. An alert no channel delivered is tried again a minute
    /// later; one-shot alerts (an executed swap, a confirmation) are
    /// closed once told — at once when no channel is configured.
    async fn notify_pass(&self) -> Result<(), StoreError> {
        let d = &self.delivery;
        if !d.has_channel() {
            return Ok(());
        }
        let now = self.clock.now();
        let pending = self
            .alerts
            .alerts_to_notify(now, d.alerts.rate_limit_seconds as i64, 50)
            .await?;
        for p in pending {
            let a = &p.alert;
            let msg = message(a, p.reminder);
            // (channel, recipient, outcome) of every delivery attempt.
            let mut sent = Vec::new();
            if let Some(smtp) = &d.smtp {
                let mut groups: Vec<Vec<String>> = Vec::new();
                if !d.alerts.emails.is_empty() {
                    groups.push(d.alerts.emails.clone());
                }
                if let Some(extra) = a
                    .details
                    .as_ref()
                    .and_then(|v| v["notify"].as_str())
                    .filter(|s| !d.alerts.emails.iter().any(|t| t == s))
                {
                    groups.push(vec![extra.to_string()]);
                }
                for to in groups {
                    let r = smtp.send(&to, &msg).await;
                    sent.push(("email", to.join(", "), r));
                }
            }
            for url in &d.alerts.webhooks {
                let r = crate::notify::webhook::post_slack(&d.http, url, &msg).await;
                sent.push(("webhook", redact(url), r));
            }
            let mut delivered = false;
            let mut retry = false;
            for (channel, recipient, r) in &sent {
                let err = r.as_ref().err();
                match err {
                    None => delivered = true,
                    Some(e) => {
                        retry |= e.is_retryable();
                        warn!(alert = %a.id, channel, error = %e, "alert not delivered");
                    }
                }
                let err = err.map(|e| e.to_string());
                self.note_delivery(&a.id, channel, recipient, err.as_deref(), now)
                    .await;
            }
            // Nobody was told and trying again can help: in a minute. A
            // refusal that will not change (a rejected address) is final.
            if !delivered && retry {
                self.alerts
                    .defer_notification(&a.id, now + NOTIFY_RETRY_SECONDS)
                    .await?;
                continue;
            }
            self.alerts.mark_notified(&a.id, now).await?;
            if a.severity == "info" || ONE_SHOT.contains(&a.kind.as_str()) {
                // Told once; nothing stays open.
                self.alerts
                    .resolve_alerts(&a.kind, std::slice::from_ref(&a.subject), now)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records one delivery attempt; a store error is logged, not fatal
    /// (the message is out; the next pass must not send it again).
    async fn note_delivery(
        &self,
        alert_id: &str,
        channel: &str,
        recipient: &str,
        error: Option<&str>,
        now: i64,
    ) {
        if let Err(e) = self
            .alerts
            .record_notification(alert_id, channel, recipient, error, now)
            .await
        {
            warn!(alert = %alert_id, error = %e, "could not record an alert delivery");
        }
    }
}

/// A webhook URL without its path (Slack's secret lives there).
fn redact(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
        .unwrap_or_else(|_| "webhook".into())
}

/// The message people get for an alert.
fn message(a: &crate::store::Alert, reminder: bool) -> Message {
    let again = if reminder {
        format!(" (still open, raised {} times)", a.count)
    } else {
        String::new()
    };
    let mut body = format!("{}{again}\n", a.message);
    let mut fields = vec![
        ("kind".to_string(), a.kind.clone()),
        ("severity".to_string(), a.severity.clone()),
        ("subject".to_string(), a.subject.clone()),
        ("first seen".to_string(), crate::clock::rfc3339(a.first_at)),
    ];
    if let Some(serde_json::Value::Object(m)) = &a.details {
        if let Some(todo) = m.get("what_to_do").and_then(|v| v.as_str()) {
            body.push_str(&format!("\nWhat to do: {todo}\n"));
        }
        for (k, v) in m {
            if k == "what_to_do" || v.is_null() {
                continue;
            }
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            fields.push((k.clone(), v));
        }
    }
    Message {
        subject: format!(
            "[twincert] {}: {}",
            a.severity,
            a.message.chars().take(150).collect::<String>()
        ),
        body,
        kind: a.kind.clone(),
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_urls_are_redacted_in_records() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/SECRET"),
            "https://hooks.slack.com/…"
        );
    }
}
