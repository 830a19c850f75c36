//! PowerDNS Authoritative's HTTP API (`kind = "powerdns"`): TXT records
//! written with `PATCH /api/v1/servers/{server_id}/zones/{zone}.`,
//! authenticated with the `X-API-Key` header.
//!
//! The API changes whole RRsets (`changetype: REPLACE` sets every value at
//! a name and type), so appending one value is read-modify-write: read the
//! TXT RRset, add or remove exactly our value, write the result back (or
//! `DELETE` the RRset when nothing is left). Two writers of the same name
//! would lose each other's value, so calls for one name are serialized by a
//! mutex per name inside this process, and after each write the RRset is
//! read again and the change redone if another process (another replica)
//! overwrote it in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::rest::{self, unquote_txt};
use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone};

/// A PowerDNS server's API (`kind = "powerdns"`), as the
/// `[[dns_providers]]` configuration validated it.
#[derive(Clone)]
pub struct PowerDnsSettings {
    /// The API's base URL, e.g. `http://127.0.0.1:8081` (no `/api/v1`).
    pub api_url: url::Url,
    /// The server id in the API's paths (`localhost` unless configured).
    pub server_id: String,
    /// The API key (never logged).
    pub api_key: String,
}

impl std::fmt::Debug for PowerDnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDnsSettings")
            .field("api_url", &self.api_url.as_str())
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

/// TXT records for ACME live one minute.
const TTL: u32 = 60;
/// How often a write is redone when another writer overwrote it.
const ATTEMPTS: usize = 3;
/// How many per-owner locks may pile up before idle ones are dropped.
const IDLE_LOCKS: usize = 256;

/// A PowerDNS server twincert writes TXT records to.
pub struct PowerDns {
    id: String,
    zones: Vec<String>,
    settings: PowerDnsSettings,
    http: reqwest::Client,
    /// One lock per owner name: a read-modify-write of an RRset must not
    /// interleave with another one of the same RRset.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for PowerDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDns")
            .field("id", &self.id)
            .field("zones", &self.zones)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The part of a zone the provider reads: its RRsets.
#[derive(Debug, Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

/// One RRset as the API shows it.
#[derive(Debug, Deserialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    records: Vec<Record>,
}

/// One record of an RRset, as read and as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    content: String,
    #[serde(default)]
    disabled: bool,
}

/// The body of a PATCH: the changed RRsets.
#[derive(Debug, Serialize)]
struct Patch {
    rrsets: Vec<Change>,
}

/// One RRset change (`REPLACE` with records, or `DELETE`).
#[derive(Debug, Serialize)]
struct Change {
    name: String,
    #[serde(rename = "type")]
    rtype: &'static str,
    changetype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<Vec<Record>>,
}

/// The API's error document.
#[derive(Debug, Deserialize)]
struct ApiError {
    error: String,
}

/// A name with its trailing dot, as the API writes names.
fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// The TXT records at `owner` (absolute) in a zone document.
fn txt_records(zone: &Zone, owner: &str) -> Vec<Record> {
    zone.rrsets
        .iter()
        .filter(|r| r.rtype == "TXT" && r.name.eq_ignore_ascii_case(owner))
        .flat_map(|r| r.records.iter().cloned())
        .collect()
}

/// The PATCH that leaves `records` as the TXT RRset at `owner`.
fn patch_for(owner: &str, records: Vec<Record>) -> Patch {
    let change = if records.is_empty() {
        Change {
            name: owner.to_string(),
            rtype: "TXT",
            changetype: "DELETE",
            ttl: None,
            records: None,
        }
    } else {
        Change {
            name: owner.to_string(),
            rtype: "TXT",
            changetype: "REPLACE",
            ttl: Some(TTL),
            records: Some(records),
        }
    };
    Patch {
        rrsets: vec![change],
    }
}

/// `records` with `value` added (`add`) or removed; `None` when nothing
/// changes. Only our exact value is touched; other values stay.
fn merged(records: &[Record], value: &str, add: bool) -> Option<Vec<Record>> {
    let ours = |r: &Record| unquote_txt(&r.content) == value;
    let present = records.iter().any(ours);
    match (add, present) {
        (true, true) | (false, false) => None,
        (true, false) => {
            let mut out = records.to_vec();
            out.push(Record {
                content: format!("\"{value}\""),
                disabled: false,
            });
            Some(out)
        }
        (false, true) => Some(records.iter().filter(|r| !ours(r)).cloned().collect()),
    }
}

/// An operator's message for a refused call: the status, the API's own
/// error text, and what to check.
fn refusal(what: &str, answer: &rest::Answer) -> DnsError {
    let detail = serde_json::from_slice::<ApiError>(&answer.body)
        .map(|e| format!("'{}'", e.error))
        .unwrap_or_else(|_| answer.quote());
    let hint = match answer.status.as_u16() {
        401 | 403 => "; check api_key (the server's api-key setting)",
        404 | 422 => "; check server_id and that the zone exists on this server",
        s if s >= 500 => "; will retry",
        _ => "",
    };
    DnsError(format!(
        "{what}: PowerDNS answered HTTP {}: {detail}{hint}",
        answer.status
    ))
}

impl PowerDns {
    /// A provider from its configuration.
    pub fn new(
        id: &str,
        zones: &[String],
        settings: &PowerDnsSettings,
    ) -> Result<PowerDns, DnsError> {
        Ok(PowerDns {
            id: id.to_string(),
            zones: zones.to_vec(),
            settings: settings.clone(),
            http: rest::client(id)?,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// `…/api/v1/servers/{server_id}/zones/{zone}.`
    fn zone_url(&self, zone: &str) -> Result<url::Url, DnsError> {
        let mut url = self.settings.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| {
                DnsError(format!(
                    "DNS provider {}: api_url cannot be a base",
                    self.id
                ))
            })?
            .pop_if_empty()
            .extend(["api", "v1", "servers", &self.settings.server_id, "zones"])
            .push(&absolute(zone));
        Ok(url)
    }

    /// The lock of `owner`. Locks nobody holds or waits for (the map's
    /// reference is the only one) are dropped once the map grows past
    /// [`IDLE_LOCKS`], so a long-running worker that validated a million
    /// names keeps a few entries, not a million.
    fn lock_for(&self, owner: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() >= IDLE_LOCKS {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(owner.to_string()).or_default().clone()
    }

    /// The TXT records at `owner` now.
    async fn read(&self, what: &str, url: &url::Url, owner: &str) -> Result<Vec<Record>, DnsError> {
        let mut url = url.clone();
        // PowerDNS 4.8+ narrows the answer to this RRset; older servers
        // ignore the parameters and send the zone, filtered below.
        url.query_pairs_mut()
            .append_pair("rrset_name", owner)
            .append_pair("rrset_type", "TXT");
        let answer = rest::send(
            what,
            self.http
                .get(url)
                .header("X-API-Key", &self.settings.api_key)
                .header(reqwest::header::ACCEPT, "application/json"),
        )
        .await?;
        if !answer.status.is_success() {
            return Err(refusal(what, &answer));
        }
        Ok(txt_records(&answer.json::<Zone>(what)?, owner))
    }

    async fn write(&self, what: &str, url: &url::Url, patch: &Patch) -> Result<(), DnsError> {
        let answer = rest::send(
            what,
            self.http
                .patch(url.clone())
                .header("X-API-Key", &self.settings.api_key)
                .json(patch),
        )
        .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(refusal(what, &answer))
        }
    }

    async fn change(&self, fqdn: &str, value: &str, add: bool) -> Result<(), DnsError> {
        let verb = if add { "adding" } else { "removing" };
        let what = format!("DNS provider {} (powerdns): {verb} TXT at {fqdn}", self.id);
        let zone = longest_zone(&self.zones, fqdn)
            .ok_or_else(|| DnsError(format!("{what}: no configured zone holds this name")))?;
        let url = self.zone_url(&zone)?;
        let owner = absolute(fqdn);
        let lock = self.lock_for(&owner);
        let _held = lock.lock().await;
        for _ in 0..ATTEMPTS {
            let records = self.read(&what, &url, &owner).await?;
            let Some(next) = merged(&records, value, add) else {
                return Ok(());
            };
            self.write(&what, &url, &patch_for(&owner, next)).await?;
            // Another replica may have replaced the RRset between our read
            // and our write; check that our change is what the server holds.
            let now = self.read(&what, &url, &owner).await?;
            if merged(&now, value, add).is_none() {
                return Ok(());
            }
        }
        Err(DnsError(format!(
            "{what}: the RRset kept changing under us ({ATTEMPTS} attempts); will retry"
        )))
    }

    /// `GET …/zones/{zone}.` (without its RRsets where the server supports
    /// `rrsets=false`): the key is valid and the zone is on this server.
    async fn probe(&self, zone: &str) -> ProviderCheck {
        let what = format!("DNS provider '{}' (powerdns): GET zone {zone}", self.id);
        let mut url = match self.zone_url(zone) {
            Ok(u) => u,
            Err(e) => return ProviderCheck::Unreachable(e.0),
        };
        url.query_pairs_mut().append_pair("rrsets", "false");
        let answer = match rest::send(
            &what,
            self.http
                .get(url)
                .header("X-API-Key", &self.settings.api_key)
                .header(reqwest::header::ACCEPT, "application/json"),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => return ProviderCheck::Unreachable(e.0),
        };
        let status = answer.status.as_u16();
        match status {
            200..=299 => ProviderCheck::Verified(format!(
                "{what}: HTTP {}: the API key may read zone {zone} on server '{}'",
                answer.status, self.settings.server_id
            )),
            401 | 403 => ProviderCheck::Refused {
                detail: refusal(&what, &answer).0,
                fix: format!("check api_key of DNS provider '{}': HTTP {status}", self.id),
            },
            404 | 422 => ProviderCheck::Refused {
                detail: refusal(&what, &answer).0,
                fix: format!(
                    "check server_id '{}' of DNS provider '{}' and that zone {zone} exists on \
                     that server: HTTP {status}",
                    self.settings.server_id, self.id
                ),
            },
            _ => ProviderCheck::Unreachable(refusal(&what, &answer).0),
        }
    }
}

impl DnsProvider for PowerDns {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.change(fqdn, value, true))
    }

    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.change(fqdn, value, false))
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        Box::pin(self.probe(zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(content: &str) -> Record {
        Record {
            content: content.into(),
            disabled: false,
        }
    }

    #[test]
    fn idle_locks_are_dropped_and_held_ones_kept() -> Result<(), Box<dyn std::error::Error>> {
        let settings = PowerDnsSettings {
            api_url: "http://127.0.0.1:8081".parse()?,
            server_id: "localhost".into(),
            api_key: "k".into(),
        };
        let pdns = PowerDns::new("p", &["example.test".into()], &settings)?;
        let held = pdns.lock_for("held.example.test.");
        for i in 0..(3 * IDLE_LOCKS) {
            drop(pdns.lock_for(&format!("n{i}.example.test.")));
        }
        let locks = pdns.locks.lock().unwrap_or_else(|p| p.into_inner());
        assert!(locks.len() <= IDLE_LOCKS, "{} locks kept", locks.len());
        let kept = locks.get("held.example.test.").ok_or("held lock dropped")?;
        assert!(Arc::ptr_eq(kept, &held), "a held lock was replaced");
        Ok(())
    }

    #[test]
    fn only_our_value_is_added_or_removed() {
        let other = rec("\"other-ca\"");
        let ours = rec("\"ours\"");
        // (case, records now, add?, the RRset to write or None)
        type Case<'a> = (&'a str, &'a [Record], bool, Option<Vec<Record>>);
        let cases: &[Case] = &[
            ("add to nothing", &[], true, Some(vec![ours.clone()])),
            (
                "add beside another value",
                std::slice::from_ref(&other),
                true,
                Some(vec![other.clone(), ours.clone()]),
            ),
            (
                "add again is no change",
                &[other.clone(), ours.clone()],
                true,
                None,
            ),
            (
                "remove keeps the other value",
                &[other.clone(), ours.clone()],
                false,
                Some(vec![other.clone()]),
            ),
            (
                "remove the last leaves none",
                std::slice::from_ref(&ours),
                false,
                Some(vec![]),
            ),
            (
                "remove what is not there is no change",
                std::slice::from_ref(&other),
                false,
                None,
            ),
            (
                "an unquoted value is still ours",
                &[rec("ours")],
                false,
                Some(vec![]),
            ),
        ];
        for (name, records, add, want) in cases {
            assert_eq!(&merged(records, "ours", *add), want, "{name}");
        }
    }

    #[test]
    fn the_patch_replaces_the_rrset_with_ttl_60_or_deletes_it() {
        let owner = absolute("_acme-challenge.A.example.test");
        assert_eq!(owner, "_acme-challenge.a.example.test.");
        let replace = serde_json::to_value(patch_for(&owner, vec![rec("\"v\"")])).unwrap();
        assert_eq!(
            replace,
            serde_json::json!({"rrsets": [{
                "name": "_acme-challenge.a.example.test.", "type": "TXT",
                "changetype": "REPLACE", "ttl": 60,
                "records": [{"content": "\"v\"", "disabled": false}]
            }]})
        );
        let delete = serde_json::to_value(patch_for(&owner, vec![])).unwrap();
        assert_eq!(
            delete,
            serde_json::json!({"rrsets": [{
                "name": "_acme-challenge.a.example.test.", "type": "TXT", "changetype": "DELETE"
            }]})
        );
    }

    #[test]
    fn a_zone_document_yields_the_txt_records_of_one_name() {
        // Shape of GET /api/v1/servers/localhost/zones/example.test.
        let zone: Zone = serde_json::from_str(
            r#"{"id": "example.test.", "name": "example.test.", "kind": "Native",
                "rrsets": [
                  {"name": "example.test.", "type": "SOA", "ttl": 3600, "records": [{"content": "a. b. 1 2 3 4 5", "disabled": false}], "comments": []},
                  {"name": "_acme-challenge.a.example.test.", "type": "TXT", "ttl": 60, "records": [{"content": "\"one\"", "disabled": false}, {"content": "\"two\"", "disabled": false}], "comments": []},
                  {"name": "_acme-challenge.b.example.test.", "type": "TXT", "ttl": 60, "records": [{"content": "\"three\"", "disabled": false}], "comments": []}
                ]}"#,
        )
        .unwrap();
        let got = txt_records(&zone, "_acme-challenge.a.example.test.");
        assert_eq!(got, vec![rec("\"one\""), rec("\"two\"")]);
    }

    #[test]
    fn urls_and_errors_name_the_provider_and_never_the_key() {
        let p = PowerDns::new(
            "pdns",
            &["example.test".into()],
            &PowerDnsSettings {
                api_url: "http://127.0.0.1:8081/".parse().unwrap(),
                server_id: "localhost".into(),
                api_key: "sekrit-key".into(),
            },
        )
        .unwrap();
        assert_eq!(
            p.zone_url("example.test").unwrap().as_str(),
            "http://127.0.0.1:8081/api/v1/servers/localhost/zones/example.test."
        );
        assert!(!format!("{p:?}").contains("sekrit"));
        let answer = rest::Answer {
            status: reqwest::StatusCode::UNAUTHORIZED,
            body: b"Unauthorized".to_vec(),
        };
        let e = refusal("DNS provider pdns (powerdns): adding TXT at x", &answer).0;
        assert!(
            e.contains("pdns") && e.contains("401") && e.contains("api_key"),
            "{e}"
        );
        let answer = rest::Answer {
            status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            body: br#"{"error": "Could not find domain 'nope.test.'"}"#.to_vec(),
        };
        let e = refusal("x", &answer).0;
        assert!(e.contains("Could not find domain"), "{e}");
        let answer = rest::Answer {
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
            body: b"<html>down</html>".to_vec(),
        };
        let e = refusal("x", &answer).0;
        assert!(
            e.contains("HTTP 503") && e.contains("<html>down") && e.ends_with("will retry"),
            "{e}"
        );
    }
}
