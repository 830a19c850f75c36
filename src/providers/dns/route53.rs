//! `kind = "route53"`: AWS Route 53's REST API (version 2013-04-01),
//! signed with SigV4 ([`super::aws`]; service `route53`, region
//! `us-east-1`, Route 53's signing region whatever the zone).
//!
//! Route 53 has no "add one value" change: a `ChangeResourceRecordSets`
//! UPSERT replaces the whole TXT record set. So, per `_acme-challenge`
//! name and under one lock per name in this process:
//! - present: read the record set (`ListResourceRecordSets` starting at
//!   the name and type), UPSERT it with our value added;
//! - cleanup: read it, UPSERT it without our value, or DELETE it (with
//!   exactly the values and TTL it has now, as Route 53 demands) when ours
//!   is the only one;
//! - wait until the change is `INSYNC` (`GetChange`), then read once more
//!   and start over (bounded) if a writer outside this process raced us
//!   and our value is missing (present) or back (cleanup). Route 53's own
//!   races (`PriorRequestNotComplete`, an `InvalidChangeBatch` because the
//!   set changed between read and write, `Throttling`) are retried the
//!   same way.
//!
//! The hosted zone comes from `hosted_zone_id` or is looked up once per
//! zone with `ListHostedZonesByName` (the public zone when a private one
//! has the same name: the CAs see only the public one) and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::aws::{self, CredentialChain, Credentials, Source, xml};
use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone};
use crate::clock::{Clock, SystemClock};

/// Route 53's endpoint (global; signed for `us-east-1`).
pub const DEFAULT_ENDPOINT: &str = "https://route53.amazonaws.com";
/// STS's global endpoint (for web identity).
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.amazonaws.com";
/// The API version in every path.
const API: &str = "/2013-04-01";
/// TTL of the records: resolvers must not keep stale challenge values.
const TTL: u32 = 60;
/// Read-modify-write rounds before giving up on a contended record set.
const ROUNDS: u32 = 5;

/// The account, endpoints and timing (`kind = "route53"`), as the
/// configuration validated them.
#[derive(Clone)]
pub struct Route53Settings {
    /// Static keys from the configuration; `None`: the environment, web
    /// identity, then the shared credentials file.
    pub credentials: Option<Credentials>,
    /// `Z…` (the `/hostedzone/` prefix is accepted); `None`: looked up.
    pub hosted_zone_id: Option<String>,
    /// Route 53's endpoint (tests point it at moto).
    pub endpoint: url::Url,
    /// STS's endpoint for web identity.
    pub sts_endpoint: url::Url,
    /// How long one HTTP call may take.
    pub timeout: Duration,
    /// How long to wait for a change to be `INSYNC`.
    pub insync_timeout: Duration,
    /// How often to ask.
    pub insync_interval: Duration,
}

impl std::fmt::Debug for Route53Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53Settings")
            .field("credentials", &self.credentials)
            .field("hosted_zone_id", &self.hosted_zone_id)
            .field("endpoint", &self.endpoint.as_str())
            .field("sts_endpoint", &self.sts_endpoint.as_str())
            .field("timeout", &self.timeout)
            .field("insync_timeout", &self.insync_timeout)
            .field("insync_interval", &self.insync_interval)
            .finish()
    }
}

/// A TXT record set as Route 53 holds it.
#[derive(Debug, Clone, PartialEq, Default)]
struct RecordSet {
    ttl: u32,
    /// The values, unquoted.
    values: Vec<String>,
}

/// A provider writing to Route 53.
pub struct Route53 {
    id: String,
    zones: Vec<String>,
    settings: Route53Settings,
    http: reqwest::Client,
    credentials: CredentialChain,
    /// Zone → hosted zone id.
    hosted_zones: Mutex<HashMap<String, String>>,
    /// One lock per record set name: read-modify-write in this process is
    /// serialized.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Route53 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53")
            .field("id", &self.id)
            .field("zones", &self.zones)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A failed call: the operator's message, and whether Route 53 said the
/// record set changed under us (worth another round).
#[derive(Debug)]
enum CallError {
    Race(String),
    Final(String),
}

impl CallError {
    fn message(self) -> String {
        match self {
            CallError::Race(m) | CallError::Final(m) => m,
        }
    }
}

impl Route53 {
    /// A provider from its configuration; the credential source is chosen
    /// now, from the configuration or the process environment.
    pub fn new(
        id: &str,
        zones: &[String],
        settings: &Route53Settings,
    ) -> Result<Route53, DnsError> {
        Self::with_env(id, zones, settings, |k| std::env::var(k).ok())
    }

    /// As [`Route53::new`], with the environment given.
    pub fn with_env(
        id: &str,
        zones: &[String],
        settings: &Route53Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Route53, DnsError> {
        if settings.hosted_zone_id.is_some() && zones.len() != 1 {
            return Err(DnsError(format!(
                "DNS provider {id}: hosted_zone_id names one hosted zone; list exactly one zone, \
                 or leave it out to look each zone up"
            )));
        }
        let http = super::rest::client_with(id, settings.timeout)?;
        let source = Source::choose(settings.credentials.clone(), env);
        let mut hosted_zones = HashMap::new();
        if let (Some(zone), Some(hz)) = (zones.first(), &settings.hosted_zone_id) {
            hosted_zones.insert(zone.clone(), bare_zone_id(hz).to_string());
        }
        Ok(Route53 {
            id: id.to_string(),
            zones: zones.to_vec(),
            settings: settings.clone(),
            credentials: CredentialChain::new(source, settings.sts_endpoint.clone(), http.clone()),
            http,
            hosted_zones: Mutex::new(hosted_zones),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// One signed call; `Ok` carries a 2xx answer's body.
    async fn call(
        &self,
        action: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<String, CallError> {
        let what = format!("DNS provider {} (Route 53 {action})", self.id);
        let now = SystemClock.now();
        let creds = self
            .credentials
            .get(now)
            .await
            .map_err(|e| CallError::Final(format!("{what}: {e}")))?;
        let mut url = self.settings.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        let query_text = aws::canonical_query(query);
        url.set_query((!query_text.is_empty()).then_some(query_text.as_str()));
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(CallError::Final(format!(
                    "{what}: the endpoint has no host"
                )));
            }
        };
        let payload = body.unwrap_or_default();
        let content_type = [("content-type", "application/xml")];
        let signed_path = format!("{base}{path}");
        let signing = aws::Request {
            method: method.as_str(),
            host: &host,
            path: &signed_path,
            query,
            headers: if payload.is_empty() {
                &[]
            } else {
                &content_type
            },
            payload: payload.as_bytes(),
        };
        let mut request = self.http.request(method.clone(), url);
        for (name, value) in aws::sign(&creds, "us-east-1", "route53", &signing, now) {
            request = request.header(name, value);
        }
        if !payload.is_empty() {
            request = request
                .header("content-type", "application/xml")
                .body(payload);
        }
        let response = request.send().await.map_err(|e| {
            let e = e.without_url();
            let how = if e.is_timeout() {
                format!("no answer within {:?}", self.settings.timeout)
            } else {
                crate::error_chain(&e)
            };
            CallError::Final(format!("{what}: Route 53 unreachable ({how}); will retry"))
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Final(format!("{what}: reading the answer: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let code = xml::tag(&text, "Code").unwrap_or_default();
        let message = xml::tag(&text, "Message")
            .map(xml::unescape)
            .unwrap_or_default();
        Err(match (status, code) {
            (_, "PriorRequestNotComplete" | "Throttling" | "InvalidChangeBatch") => {
                CallError::Race(format!("{what}: {code}: {message}"))
            }
            (401 | 403, _)
            | (
                _,
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "IncompleteSignature"
                | "ExpiredToken"
                | "UnrecognizedClientException",
            ) => CallError::Final(format!(
                "{what}: AWS refused the credentials ({}) with HTTP {status} {code}: {message}",
                self.credentials.source().describe()
            )),
            (500..=599, _) => CallError::Final(format!(
                "{what}: Route 53 failed (HTTP {status} {code}); will retry"
            )),
            _ if code.is_empty() => CallError::Final(format!(
                "{what}: Route 53 answered HTTP {status} without an AWS error document"
            )),
            _ => CallError::Final(format!("{what}: HTTP {status} {code}: {message}")),
        })
    }

    /// The hosted zone id of `zone` (cached).
    async fn hosted_zone(&self, zone: &str) -> Result<String, String> {
        if let Some(id) = self
            .hosted_zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
        {
            return Ok(id.clone());
        }
        let dns_name = format!("{zone}.");
        let text = self
            .call(
                "ListHostedZonesByName",
                reqwest::Method::GET,
                &format!("{API}/hostedzonesbyname"),
                &[("dnsname", &dns_name), ("maxitems", "10")],
                None,
            )
            .await
            .map_err(CallError::message)?;
        let id = parse_hosted_zone(&text, zone).map_err(|e| {
            format!(
                "DNS provider {} (Route 53 ListHostedZonesByName): {e}",
                self.id
            )
        })?;
        self.hosted_zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(zone.to_string(), id.clone());
        Ok(id)
    }

    /// The TXT record set at `name` (empty when there is none).
    async fn read(&self, hz: &str, name: &str) -> Result<RecordSet, CallError> {
        let text = self
            .call(
                "ListResourceRecordSets",
                reqwest::Method::GET,
                &format!("{API}/hostedzone/{hz}/rrset"),
                &[("name", name), ("type", "TXT"), ("maxitems", "1")],
                None,
            )
            .await?;
        parse_record_set(&text, name).map_err(|e| {
            CallError::Final(format!(
                "DNS provider {} (Route 53 ListResourceRecordSets): {e}",
                self.id
            ))
        })
    }

    /// Writes one change and waits until it is `INSYNC`.
    async fn change(
        &self,
        hz: &str,
        action: &str,
        name: &str,
        set: &RecordSet,
    ) -> Result<(), CallError> {
        let text = self
            .call(
                "ChangeResourceRecordSets",
                reqwest::Method::POST,
                &format!("{API}/hostedzone/{hz}/rrset/"),
                &[],
                Some(change_batch(action, name, set)),
            )
            .await?;
        let what = format!("DNS provider {} (Route 53 GetChange)", self.id);
        let change_id = xml::tag(&text, "ChangeInfo")
            .and_then(|info| xml::tag(info, "Id"))
            .map(|id| id.trim().trim_start_matches("/change/").to_string())
            .ok_or_else(|| {
                CallError::Final(format!(
                    "DNS provider {}: Route 53's answer to ChangeResourceRecordSets has no ChangeInfo Id",
                    self.id
                ))
            })?;
        let mut status = xml::tag(&text, "Status").unwrap_or_default().to_string();
        let deadline = tokio::time::Instant::now() + self.settings.insync_timeout;
        while status != "INSYNC" {
            if tokio::time::Instant::now() >= deadline {
                return Err(CallError::Final(format!(
                    "{what}: change {change_id} still {status} after {:?}; will retry",
                    self.settings.insync_timeout
                )));
            }
            tokio::time::sleep(self.settings.insync_interval).await;
            let text = self
                .call(
                    "GetChange",
                    reqwest::Method::GET,
                    &format!("{API}/change/{change_id}"),
                    &[],
                    None,
                )
                .await?;
            status = xml::tag(&text, "Status")
                .ok_or_else(|| CallError::Final(format!("{what}: the answer has no Status")))?
                .to_string();
        }
        Ok(())
    }

    /// Adds (`add`) or removes `value` at `fqdn`, read-modify-write, until
    /// a read after the change shows it done.
    async fn update(&self, fqdn: &str, value: &str, add: bool) -> Result<(), DnsError> {
        let name = format!("{}.", fqdn.trim_end_matches('.').to_ascii_lowercase());
        let zone = longest_zone(&self.zones, fqdn).ok_or_else(|| {
            DnsError(format!(
                "DNS provider {}: no configured zone holds {fqdn}",
                self.id
            ))
        })?;
        let hz = self.hosted_zone(&zone).await.map_err(DnsError)?;
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(name.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        let mut last = String::new();
        for round in 0..=ROUNDS {
            let current = match self.read(&hz, &name).await {
                Ok(set) => set,
                Err(e) => return Err(DnsError(e.message())),
            };
            let has = current.values.iter().any(|v| v == value);
            if has == add {
                return Ok(());
            }
            if round == ROUNDS {
                break;
            }
            if round > 0 {
                // Let the other writer finish before trying again.
                tokio::time::sleep(Duration::from_millis(200) * round).await;
            }
            let (action, set) = next_change(&current, value, add);
            match self.change(&hz, action, &name, &set).await {
                Ok(()) => continue,
                Err(CallError::Race(m)) => last = m,
                Err(CallError::Final(m)) => return Err(DnsError(m)),
            }
        }
        Err(DnsError(if last.is_empty() {
            format!(
                "DNS provider {}: the TXT set at {name} kept changing under other writers ({ROUNDS} rounds); will retry",
                self.id
            )
        } else {
            format!("{last} ({ROUNDS} rounds); will retry")
        }))
    }
}

/// The change that adds or removes `value` given the `current` set:
/// UPSERT of the union / the rest, or DELETE of exactly the current set
/// when only ours is left.
fn next_change(current: &RecordSet, value: &str, add: bool) -> (&'static str, RecordSet) {
    if add {
        let mut values = current.values.clone();
        values.push(value.to_string());
        return ("UPSERT", RecordSet { ttl: TTL, values });
    }
    let rest: Vec<String> = current
        .values
        .iter()
        .filter(|v| *v != value)
        .cloned()
        .collect();
    if rest.is_empty() {
        ("DELETE", current.clone())
    } else {
        (
            "UPSERT",
            RecordSet {
                ttl: current.ttl,
                values: rest,
            },
        )
    }
}

/// `Z123` from `Z123` or `/hostedzone/Z123`.
fn bare_zone_id(id: &str) -> &str {
    id.trim().trim_start_matches("/hostedzone/")
}

/// A TXT value in Route 53's presentation: quoted, `"` and `\` escaped.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A presentation value back to its text: the quoted strings joined
/// (`"a" "b"` → `ab`), escapes undone (`\"`, `\\`, and Route 53's
/// three-digit octal `\DDD`).
fn unquote(value: &str) -> String {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_quotes = !in_quotes,
            b'\\' if i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit) => {
                let n = std::str::from_utf8(&bytes[i + 1..i + 4])
                    .ok()
                    .and_then(|d| u8::from_str_radix(d, 8).ok())
                    .unwrap_or(b'?');
                out.push(n);
                i += 3;
            }
            b'\\' if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 1;
            }
            b if in_quotes => out.push(b),
            _ => {}
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `ChangeResourceRecordSets` request body.
fn change_batch(action: &str, name: &str, set: &RecordSet) -> String {
    let records: String = set
        .values
        .iter()
        .map(|v| {
            format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                xml::escape(&quote(v))
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <ChangeBatch><Comment>twincert DNS-01</Comment><Changes><Change><Action>{action}</Action>\
         <ResourceRecordSet><Name>{}</Name><Type>TXT</Type><TTL>{}</TTL>\
         <ResourceRecords>{records}</ResourceRecords></ResourceRecordSet></Change></Changes>\
         </ChangeBatch></ChangeResourceRecordSetsRequest>",
        xml::escape(name),
        set.ttl
    )
}

/// Route 53 writes names in lower case with a trailing dot and some
/// characters as `\DDD` octal escapes (`*` is `\052`).
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().replace("\\052", "*").to_ascii_lowercase();
        format!("{}.", s.trim_end_matches('.'))
    };
    norm(a) == norm(b)
}

/// The TXT set at `name` in a `ListResourceRecordSets` answer that started
/// there (the first set listed may be a later name: then there is none).
fn parse_record_set(text: &str, name: &str) -> Result<RecordSet, String> {
    let sets = xml::tag(text, "ResourceRecordSets")
        .ok_or("the answer has no ResourceRecordSets (not a Route 53 answer?)")?;
    for set in xml::all(sets, "ResourceRecordSet") {
        let set_name = xml::tag(set, "Name").map(xml::unescape).unwrap_or_default();
        if xml::tag(set, "Type") != Some("TXT") || !same_name(&set_name, name) {
            continue;
        }
        let ttl = xml::tag(set, "TTL")
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| format!("the TXT set at {name} has no TTL"))?;
        let values = xml::all(set, "Value")
            .into_iter()
            .map(|v| unquote(&xml::unescape(v)))
            .collect();
        return Ok(RecordSet { ttl, values });
    }
    Ok(RecordSet::default())
}

/// The id of hosted zone `zone` in a `ListHostedZonesByName` answer.
fn parse_hosted_zone(text: &str, zone: &str) -> Result<String, String> {
    let zones = xml::tag(text, "HostedZones")
        .ok_or("the answer has no HostedZones (not a Route 53 answer?)")?;
    // A private zone of the same name is invisible to the CAs: the public
    // one is the one to write to.
    let named: Vec<&str> = xml::all(zones, "HostedZone")
        .into_iter()
        .filter(|z| xml::tag(z, "Name").is_some_and(|n| same_name(&xml::unescape(n), zone)))
        .collect();
    named
        .iter()
        .find(|z| xml::tag(z, "PrivateZone") != Some("true"))
        .or(named.first())
        .and_then(|z| xml::tag(z, "Id"))
        .map(|id| bare_zone_id(id).to_string())
        .ok_or_else(|| {
            format!(
                "no hosted zone named {zone} is visible to these credentials; create it or set hosted_zone_id"
            )
        })
}

impl Route53 {
    /// The hosted zone of `zone` (looked up with `ListHostedZonesByName`
    /// unless configured or cached), then `GetHostedZone`, SigV4-signed
    /// with the configured credentials: both are reads.
    async fn probe(&self, zone: &str) -> ProviderCheck {
        // `call` ends a transient failure (unreachable, 5xx) with "will
        // retry"; everything else is AWS refusing or not finding.
        let outcome = |message: String| {
            if message.ends_with("will retry") {
                ProviderCheck::Unreachable(message)
            } else {
                ProviderCheck::Refused {
                    detail: message,
                    fix: format!(
                        "check the credentials ({}) and zones/hosted_zone_id of DNS provider \
                         '{}' for zone {zone}",
                        self.credentials.source().describe(),
                        self.id
                    ),
                }
            }
        };
        let hz = match self.hosted_zone(zone).await {
            Ok(hz) => hz,
            Err(e) => return outcome(e),
        };
        match self
            .call(
                "GetHostedZone",
                reqwest::Method::GET,
                &format!("{API}/hostedzone/{hz}"),
                &[],
                None,
            )
            .await
        {
            Ok(_) => ProviderCheck::Verified(format!(
                "DNS provider '{}' (Route 53 GetHostedZone {hz}): the credentials ({}) may read \
                 hosted zone {zone} (ChangeResourceRecordSets is not checked without a change)",
                self.id,
                self.credentials.source().describe()
            )),
            Err(e) => outcome(e.message()),
        }
    }
}

impl DnsProvider for Route53 {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.update(fqdn, value, true))
    }

    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.update(fqdn, value, false))
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        Box::pin(self.probe(zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    #[test]
    fn change_batches_and_answers_are_route53_s_shapes() {
        let set = RecordSet {
            ttl: 60,
            values: vec!["v1".into(), "a\"b".into()],
        };
        let body = change_batch("UPSERT", "_acme-challenge.a.example.test.", &set);
        assert!(body.contains(
            "<Change><Action>UPSERT</Action><ResourceRecordSet><Name>_acme-challenge.a.example.test.</Name>\
             <Type>TXT</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>\"v1\"</Value></ResourceRecord>\
             <ResourceRecord><Value>\"a\\\"b\"</Value></ResourceRecord></ResourceRecords>"
        ), "{body}");
        assert!(body.contains("xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\""));
        let answer = "<ListResourceRecordSetsResponse><ResourceRecordSets>\
            <ResourceRecordSet><Name>_acme-challenge.a.example.test.</Name><Type>TXT</Type><TTL>300</TTL>\
            <ResourceRecords><ResourceRecord><Value>&quot;v1&quot;</Value></ResourceRecord>\
            <ResourceRecord><Value>\"par\" \"ts\"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>\
            </ResourceRecordSets></ListResourceRecordSetsResponse>";
        assert_eq!(
            parse_record_set(answer, "_acme-challenge.A.example.test."),
            Ok(RecordSet {
                ttl: 300,
                values: vec!["v1".into(), "parts".into()]
            })
        );
        // The listing starts at the name: a later name means none.
        assert_eq!(
            parse_record_set(answer, "_acme-challenge.b.example.test."),
            Ok(RecordSet::default())
        );
        assert!(parse_record_set("<html>proxy error</html>", "x.").is_err());
        assert_eq!(unquote(&quote("a\"b\\c")), "a\"b\\c");
        assert_eq!(unquote("\"\\052.x\""), "*.x");
        let zones = "<ListHostedZonesByNameResponse><HostedZones>\
            <HostedZone><Id>/hostedzone/ZPRIVATE</Id><Name>example.test.</Name>\
            <Config><PrivateZone>true</PrivateZone></Config></HostedZone>\
            <HostedZone><Id>/hostedzone/Z0EXAMPLE</Id><Name>example.test.</Name>\
            <Config><PrivateZone>false</PrivateZone></Config></HostedZone>\
            <HostedZone><Id>/hostedzone/ZLATER</Id><Name>example.tests.</Name></HostedZone>\
            </HostedZones></ListHostedZonesByNameResponse>";
        assert_eq!(
            parse_hosted_zone(zones, "example.test"),
            Ok("Z0EXAMPLE".into())
        );
        let err = parse_hosted_zone(zones, "other.test").expect_err("not listed");
        assert!(err.contains("no hosted zone named other.test"), "{err}");
    }

    #[test]
    fn present_upserts_the_union_and_cleanup_deletes_exactly_what_is_there() {
        let two = RecordSet {
            ttl: 60,
            values: vec!["theirs".into(), "ours".into()],
        };
        let cases = [
            (RecordSet::default(), true, ("UPSERT", vec!["ours"], 60)),
            (
                RecordSet {
                    ttl: 60,
                    values: vec!["theirs".into()],
                },
                true,
                ("UPSERT", vec!["theirs", "ours"], 60),
            ),
            (two.clone(), false, ("UPSERT", vec!["theirs"], 60)),
            (
                RecordSet {
                    ttl: 120,
                    values: vec!["ours".into()],
                },
                false,
                ("DELETE", vec!["ours"], 120),
            ),
        ];
        for (current, add, (action, values, ttl)) in cases {
            let (got_action, set) = next_change(&current, "ours", add);
            assert_eq!(
                (
                    got_action,
                    set.values.iter().map(String::as_str).collect::<Vec<_>>(),
                    set.ttl
                ),
                (action, values, ttl),
                "{current:?} add={add}"
            );
        }
    }

    /// A small Route 53 in memory: one hosted zone, TXT sets replaced as a
    /// whole, changes INSYNC after one GetChange; or fixed answers.
    #[derive(Clone, Default)]
    struct Fake {
        sets: Arc<Mutex<HashMap<String, Vec<String>>>>,
        /// When set: (status, body, delay) for every request.
        fixed: Option<(u16, &'static str, Duration)>,
    }

    async fn list(
        State(f): State<Fake>,
        Query(q): Query<HashMap<String, String>>,
    ) -> (StatusCode, String) {
        if let Some((status, body, delay)) = f.fixed {
            tokio::time::sleep(delay).await;
            return (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                body.to_string(),
            );
        }
        let name = q.get("name").cloned().unwrap_or_default();
        let values = f
            .sets
            .lock()
            .expect("lock")
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let records: String = values
            .iter()
            .map(|v| {
                format!(
                    "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                    quote(v)
                )
            })
            .collect();
        let set = if values.is_empty() {
            String::new()
        } else {
            format!(
                "<ResourceRecordSet><Name>{name}</Name><Type>TXT</Type><TTL>60</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>"
            )
        };
        (
            StatusCode::OK,
            format!(
                "<ListResourceRecordSetsResponse><ResourceRecordSets>{set}</ResourceRecordSets></ListResourceRecordSetsResponse>"
            ),
        )
    }

    async fn change(State(f): State<Fake>, body: String) -> (StatusCode, String) {
        let name = xml::tag(&body, "Name").unwrap_or_default().to_string();
        let values: Vec<String> = xml::all(&body, "Value")
            .into_iter()
            .map(|v| unquote(&xml::unescape(v)))
            .collect();
        let mut sets = f.sets.lock().expect("lock");
        match xml::tag(&body, "Action") {
            Some("DELETE") => {
                if sets.get(&name) != Some(&values) {
                    return (StatusCode::BAD_REQUEST, "<ErrorResponse><Error><Code>InvalidChangeBatch</Code><Message>values do not match</Message></Error></ErrorResponse>".into());
                }
                sets.remove(&name);
            }
            _ => {
                sets.insert(name, values);
            }
        }
        (StatusCode::OK, "<ChangeResourceRecordSetsResponse><ChangeInfo><Id>/change/C1</Id><Status>PENDING</Status></ChangeInfo></ChangeResourceRecordSetsResponse>".into())
    }

    async fn get_change() -> String {
        "<GetChangeResponse><ChangeInfo><Id>/change/C1</Id><Status>INSYNC</Status></ChangeInfo></GetChangeResponse>".into()
    }

    async fn route53(fake: Fake, timeout_ms: u64) -> Route53 {
        let app = Router::new()
            .route("/2013-04-01/hostedzone/Z1/rrset", get(list))
            .route("/2013-04-01/hostedzone/Z1/rrset/", post(change))
            .route("/2013-04-01/change/C1", get(get_change))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let settings = Route53Settings {
            credentials: Some(Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
                expires: None,
            }),
            hosted_zone_id: Some("/hostedzone/Z1".into()),
            endpoint: format!("http://{addr}").parse().expect("url"),
            sts_endpoint: format!("http://{addr}/sts").parse().expect("url"),
            timeout: Duration::from_millis(timeout_ms),
            insync_timeout: Duration::from_secs(5),
            insync_interval: Duration::from_millis(10),
        };
        Route53::with_env("r53", &["example.test".into()], &settings, |_| None).expect("provider")
    }

    #[tokio::test]
    async fn concurrent_values_coexist_and_each_cleanup_removes_only_its_own() {
        let fake = Fake::default();
        let r = route53(fake.clone(), 2000).await;
        let fqdn = "_acme-challenge.a.example.test";
        let (a, b) = tokio::join!(r.present(fqdn, "primary"), r.present(fqdn, "backup"));
        a.expect("present primary");
        b.expect("present backup");
        let name = "_acme-challenge.a.example.test.";
        let mut now: Vec<String> = fake.sets.lock().expect("lock")[name].clone();
        now.sort();
        assert_eq!(now, ["backup", "primary"]);
        r.present(fqdn, "primary").await.expect("idempotent");
        r.cleanup(fqdn, "primary").await.expect("cleanup primary");
        assert_eq!(fake.sets.lock().expect("lock")[name], ["backup"]);
        r.cleanup(fqdn, "backup")
            .await
            .expect("cleanup backup: DELETE");
        assert!(!fake.sets.lock().expect("lock").contains_key(name));
        r.cleanup(fqdn, "backup").await.expect("already gone");
    }

    #[tokio::test]
    async fn failed_garbage_slow_and_refused_answers_are_clear_errors() {
        let cases: [(u16, &'static str, u64, &str); 4] = [
            (
                503,
                "<ErrorResponse><Error><Code>ServiceUnavailable</Code></Error></ErrorResponse>",
                0,
                "Route 53 failed (HTTP 503 ServiceUnavailable); will retry",
            ),
            (
                200,
                "<html>captive portal</html>",
                0,
                "no ResourceRecordSets (not a Route 53 answer?)",
            ),
            (
                200,
                "",
                1500,
                "Route 53 unreachable (no answer within 300ms); will retry",
            ),
            (
                403,
                "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>\
                   <Message>The request signature we calculated does not match</Message></Error></ErrorResponse>",
                0,
                "AWS refused the credentials (static key AKIDEXAMPLE from the configuration) with HTTP 403 SignatureDoesNotMatch",
            ),
        ];
        for (status, body, delay, want) in cases {
            let fake = Fake {
                fixed: Some((status, body, Duration::from_millis(delay))),
                ..Fake::default()
            };
            let err = route53(fake, 300)
                .await
                .present("_acme-challenge.a.example.test", "v")
                .await
                .expect_err(want)
                .0;
            assert!(
                err.starts_with("DNS provider r53 (Route 53 ListResourceRecordSets)"),
                "{err}"
            );
            assert!(err.contains(want), "{want:?} not in {err}");
            assert!(!err.contains("EXAMPLEKEY"), "{err}");
        }
    }

    #[test]
    fn one_hosted_zone_id_is_for_one_zone() {
        let settings = Route53Settings {
            credentials: None,
            hosted_zone_id: Some("Z1".into()),
            endpoint: DEFAULT_ENDPOINT.parse().expect("url"),
            sts_endpoint: DEFAULT_STS_ENDPOINT.parse().expect("url"),
            timeout: Duration::from_secs(1),
            insync_timeout: Duration::from_secs(1),
            insync_interval: Duration::from_secs(1),
        };
        let err = Route53::with_env(
            "r53",
            &["a.test".into(), "b.test".into()],
            &settings,
            |_| None,
        )
        .expect_err("two zones")
        .0;
        assert!(err.contains("list exactly one zone"), "{err}");
    }
}
