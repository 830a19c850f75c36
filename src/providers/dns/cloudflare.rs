//! Cloudflare's API v4 (`kind = "cloudflare"`) with a scoped API token
//! (`Authorization: Bearer`; the token needs Zone:Read and DNS:Edit on the
//! zones it serves).
//!
//! Cloudflare keeps every record under its own id, so appending and
//! deleting only our value needs no read-modify-write: present creates one
//! TXT record (`POST /zones/{zone_id}/dns_records`), cleanup lists the TXT
//! records at the name (`GET /zones/{zone_id}/dns_records?type=TXT&
//! name.exact=…`), keeps those whose content is our value and deletes each
//! by id (`DELETE /zones/{zone_id}/dns_records/{id}`). The zone id comes
//! from `GET /zones?name=<zone>` once and is cached. Every answer is the
//! documented envelope `{success, errors: [{code, message}], messages,
//! result}`; an error quotes Cloudflare's codes and messages.
//!
//! TXT content: Cloudflare documents TXT content as quoted character
//! strings and has lately returned it quoted, while older records read
//! back unquoted; we write it quoted and compare without the quotes.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::rest::{self, unquote_txt};
use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone, normal};

/// Cloudflare's public API.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";

/// A Cloudflare account's API (`kind = "cloudflare"`), as the
/// `[[dns_providers]]` configuration validated it.
#[derive(Clone)]
pub struct CloudflareSettings {
    /// The API's base URL ([`DEFAULT_API_URL`] unless configured).
    pub api_url: url::Url,
    /// The scoped API token (never logged).
    pub api_token: String,
}

impl std::fmt::Debug for CloudflareSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudflareSettings")
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

/// TXT records for ACME live one minute (Cloudflare's minimum TTL for
/// non-Enterprise zones).
const TTL: u32 = 60;
/// "An identical record already exists": presenting twice is no error.
const IDENTICAL_RECORD_EXISTS: i64 = 81058;

/// A Cloudflare account twincert writes TXT records through.
pub struct Cloudflare {
    id: String,
    zones: Vec<String>,
    settings: CloudflareSettings,
    http: reqwest::Client,
    /// Zone name → Cloudflare zone id, looked up once.
    zone_ids: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("id", &self.id)
            .field("zones", &self.zones)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The envelope of every answer (`result` is read as the call's type only
/// once the envelope says it succeeded).
#[derive(Debug, Deserialize)]
struct Envelope {
    /// Absent in some documented answers (Delete DNS Record shows only
    /// `result`); the HTTP status decides then.
    success: Option<bool>,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<serde_json::Value>,
}

/// One entry of `errors`.
#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// The fields of a zone we read.
#[derive(Debug, Deserialize)]
struct ZoneInfo {
    id: String,
    name: String,
}

/// The fields of a DNS record we read.
#[derive(Debug, Deserialize)]
struct DnsRecord {
    id: String,
    #[serde(rename = "type")]
    rtype: String,
    name: String,
    content: String,
}

/// The body of a record creation.
#[derive(Debug, Serialize)]
struct NewRecord<'a> {
    #[serde(rename = "type")]
    rtype: &'static str,
    name: &'a str,
    content: String,
    ttl: u32,
}

/// Cloudflare's errors as `code message; code message`.
fn api_errors(errors: &[ApiMessage]) -> String {
    if errors.is_empty() {
        return "no error given".into();
    }
    errors
        .iter()
        .map(|e| format!("{} {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `result` of a successful answer, or an operator's error naming the
/// status and Cloudflare's error codes and messages.
fn result_of<T: serde::de::DeserializeOwned>(
    what: &str,
    answer: &rest::Answer,
) -> Result<T, DnsError> {
    let envelope: Envelope = serde_json::from_slice(&answer.body).map_err(|e| {
        // A proxy's error page, a truncated answer: not the API speaking.
        let retry = if answer.status.is_success() {
            "; will retry"
        } else {
            hint(answer.status)
        };
        DnsError(format!(
            "{what}: Cloudflare answered HTTP {}: {} (not the API's JSON envelope: {e}){retry}",
            answer.status,
            answer.quote(),
        ))
    })?;
    match envelope.result {
        Some(r) if envelope.success != Some(false) && answer.status.is_success() => {
            serde_json::from_value(r).map_err(|e| {
                DnsError(format!(
                    "{what}: Cloudflare's result (HTTP {}) is not the documented shape ({e}): \
                     {}; will retry",
                    answer.status,
                    answer.quote()
                ))
            })
        }
        _ => Err(DnsError(format!(
            "{what}: Cloudflare answered HTTP {}: {}{}",
            answer.status,
            api_errors(&envelope.errors),
            hint(answer.status)
        ))),
    }
}

fn hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => {
            "; check api_token (a token with Zone:Read and DNS:Edit on this zone, not the global API key)"
        }
        429 => "; rate limited, will retry",
        s if s >= 500 => "; will retry",
        _ => "",
    }
}

impl Cloudflare {
    /// A provider from its configuration.
    pub fn new(
        id: &str,
        zones: &[String],
        settings: &CloudflareSettings,
    ) -> Result<Cloudflare, DnsError> {
        Ok(Cloudflare {
            id: id.to_string(),
            zones: zones.to_vec(),
            settings: settings.clone(),
            http: rest::client(id)?,
            zone_ids: Mutex::new(HashMap::new()),
        })
    }

    /// The API URL with `segments` appended.
    fn url(&self, segments: &[&str]) -> Result<url::Url, DnsError> {
        let mut url = self.settings.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| {
                DnsError(format!(
                    "DNS provider {}: api_url cannot be a base",
                    self.id
                ))
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, DnsError> {
        let answer = rest::send(
            what,
            request
                .bearer_auth(&self.settings.api_token)
                .header(reqwest::header::ACCEPT, "application/json"),
        )
        .await?;
        result_of(what, &answer)
    }

    /// The zone id of `zone` (cached).
    async fn zone_id(&self, what: &str, zone: &str) -> Result<String, DnsError> {
        if let Some(id) = self
            .zone_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
        {
            return Ok(id.clone());
        }
        let mut url = self.url(&["zones"])?;
        url.query_pairs_mut().append_pair("name", zone);
        let found: Vec<ZoneInfo> = self.call(what, self.http.get(url)).await?;
        let id = found
            .into_iter()
            .find(|z| normal(&z.name) == zone)
            .map(|z| z.id)
            .ok_or_else(|| {
                DnsError(format!(
                    "{what}: Cloudflare has no zone {zone} that this token can see; check the \
                     zone name and the token's Zone:Read permission"
                ))
            })?;
        self.zone_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(zone.to_string(), id.clone());
        Ok(id)
    }

    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let what = format!(
            "DNS provider {} (cloudflare): adding TXT at {fqdn}",
            self.id
        );
        let zone = longest_zone(&self.zones, fqdn)
            .ok_or_else(|| DnsError(format!("{what}: no configured zone holds this name")))?;
        let zone_id = self.zone_id(&what, &zone).await?;
        let body = NewRecord {
            rtype: "TXT",
            name: &normal(fqdn),
            content: format!("\"{value}\""),
            ttl: TTL,
        };
        let url = self.url(&["zones", &zone_id, "dns_records"])?;
        let answer = rest::send(
            &what,
            self.http
                .post(url)
                .bearer_auth(&self.settings.api_token)
                .json(&body),
        )
        .await?;
        match result_of::<DnsRecord>(&what, &answer) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Present twice (a retried attempt): the record is there.
                let identical = serde_json::from_slice::<Envelope>(&answer.body)
                    .is_ok_and(|env| env.errors.iter().any(|e| e.code == IDENTICAL_RECORD_EXISTS));
                if identical { Ok(()) } else { Err(e) }
            }
        }
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let what = format!(
            "DNS provider {} (cloudflare): removing TXT at {fqdn}",
            self.id
        );
        let zone = longest_zone(&self.zones, fqdn)
            .ok_or_else(|| DnsError(format!("{what}: no configured zone holds this name")))?;
        let zone_id = self.zone_id(&what, &zone).await?;
        let name = normal(fqdn);
        let mut url = self.url(&["zones", &zone_id, "dns_records"])?;
        url.query_pairs_mut()
            .append_pair("type", "TXT")
            .append_pair("name.exact", &name)
            .append_pair("per_page", "100");
        let records: Vec<DnsRecord> = self.call(&what, self.http.get(url)).await?;
        for r in ours(&records, &name, value) {
            let url = self.url(&["zones", &zone_id, "dns_records", &r.id])?;
            let _: serde_json::Value = self.call(&what, self.http.delete(url)).await?;
        }
        Ok(())
    }
}

/// The records in a listing that hold exactly our value at our name (the
/// content compared without quotes; other values are never touched).
fn ours<'a>(records: &'a [DnsRecord], name: &str, value: &str) -> Vec<&'a DnsRecord> {
    records
        .iter()
        .filter(|r| r.rtype == "TXT" && normal(&r.name) == name && unquote_txt(&r.content) == value)
        .collect()
}

impl Cloudflare {
    /// `GET /zones?name=<zone>`, uncached: the token is valid and has
    /// Zone:Read on the zone (DNS:Edit cannot be seen without a change).
    async fn probe(&self, zone: &str) -> ProviderCheck {
        let what = format!(
            "DNS provider '{}' (cloudflare): zone lookup of {zone}",
            self.id
        );
        let mut url = match self.url(&["zones"]) {
            Ok(u) => u,
            Err(e) => return ProviderCheck::Unreachable(e.0),
        };
        url.query_pairs_mut().append_pair("name", zone);
        let answer = match rest::send(
            &what,
            self.http
                .get(url)
                .bearer_auth(&self.settings.api_token)
                .header(reqwest::header::ACCEPT, "application/json"),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => return ProviderCheck::Unreachable(e.0),
        };
        let status = answer.status.as_u16();
        if status == 429 || status >= 500 {
            return ProviderCheck::Unreachable(
                result_of::<serde_json::Value>(&what, &answer)
                    .err()
                    .map(|e| e.0)
                    .unwrap_or_else(|| format!("{what}: HTTP {status}")),
            );
        }
        match result_of::<Vec<ZoneInfo>>(&what, &answer) {
            Ok(found) if found.iter().any(|z| normal(&z.name) == zone) => {
                ProviderCheck::Verified(format!(
                    "{what}: HTTP {}: the token sees zone {zone} (Zone:Read; DNS:Edit is not \
                     checked without a change)",
                    answer.status
                ))
            }
            Ok(_) => ProviderCheck::Refused {
                detail: format!("{what}: Cloudflare has no zone {zone} that this token can see"),
                fix: format!(
                    "check api_token of DNS provider '{}': it needs Zone:Read and DNS:Edit on \
                     zone {zone}",
                    self.id
                ),
            },
            Err(e) if !answer.status.is_success() => ProviderCheck::Refused {
                detail: e.0,
                fix: format!(
                    "check api_token of DNS provider '{}': HTTP {status}",
                    self.id
                ),
            },
            Err(e) => ProviderCheck::Unreachable(e.0),
        }
    }
}

impl DnsProvider for Cloudflare {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(Cloudflare::present(self, fqdn, value))
    }

    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(Cloudflare::cleanup(self, fqdn, value))
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        Box::pin(self.probe(zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> rest::Answer {
        rest::Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_envelope_decides_success_and_its_errors_are_quoted() {
        // Shapes from Cloudflare's API documentation.
        let listing = answer(
            200,
            r#"{"success": true, "errors": [], "messages": [],
                "result": [{"id": "023e105f4ecef8ad9ca31a8372d0c353", "name": "_acme-challenge.example.com",
                            "type": "TXT", "content": "\"ours\"", "ttl": 60, "proxied": false}],
                "result_info": {"page": 1, "per_page": 100, "count": 1, "total_count": 1}}"#,
        );
        let records: Vec<DnsRecord> = result_of("x", &listing).unwrap();
        assert_eq!(records[0].id, "023e105f4ecef8ad9ca31a8372d0c353");
        // Delete DNS Record as documented: only `result`.
        let deleted = answer(
            200,
            r#"{"result": {"id": "023e105f4ecef8ad9ca31a8372d0c353"}}"#,
        );
        assert!(result_of::<serde_json::Value>("x", &deleted).is_ok());
        let cases = [
            (
                "bad token",
                answer(
                    403,
                    r#"{"success": false, "errors": [{"code": 10000, "message": "Authentication error"}], "messages": [], "result": null}"#,
                ),
                &["HTTP 403", "10000 Authentication error", "check api_token"][..],
            ),
            (
                "success false in a 200",
                answer(
                    200,
                    r#"{"success": false, "errors": [{"code": 1004, "message": "DNS Validation Error"}], "result": null}"#,
                ),
                &["1004 DNS Validation Error"][..],
            ),
            (
                "a result without success in an error status",
                answer(404, r#"{"result": {"id": "x"}}"#),
                &["HTTP 404", "no error given"][..],
            ),
            (
                "a 5xx page",
                answer(502, "<html>Bad gateway</html>"),
                &["HTTP 502", "<html>Bad gateway", "will retry"][..],
            ),
            (
                "garbage with 200",
                answer(200, "not json"),
                &["not the API's JSON envelope", "will retry"][..],
            ),
        ];
        for (name, a, wants) in cases {
            let err = result_of::<Vec<DnsRecord>>("DNS provider cf (cloudflare): adding", &a)
                .unwrap_err()
                .0;
            for want in wants {
                assert!(err.contains(want), "{name}: {want:?} not in {err}");
            }
            assert!(err.contains("DNS provider cf"), "{name}: {err}");
        }
    }

    #[test]
    fn only_records_with_our_value_at_our_name_are_deleted() {
        let rec = |id: &str, name: &str, rtype: &str, content: &str| DnsRecord {
            id: id.into(),
            name: name.into(),
            rtype: rtype.into(),
            content: content.into(),
        };
        let name = "_acme-challenge.example.com";
        let records = [
            rec("1", name, "TXT", "\"ours\""),
            rec("2", name, "TXT", "ours"),
            rec("3", name, "TXT", "\"other-ca\""),
            rec("4", "_acme-challenge.www.example.com", "TXT", "\"ours\""),
            rec("5", name, "CNAME", "ours"),
        ];
        let ids: Vec<&str> = ours(&records, name, "ours")
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn the_new_record_is_quoted_txt_with_ttl_60() {
        let body = serde_json::to_value(NewRecord {
            rtype: "TXT",
            name: "_acme-challenge.example.com",
            content: "\"v\"".into(),
            ttl: TTL,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "TXT", "name": "_acme-challenge.example.com", "content": "\"v\"", "ttl": 60})
        );
        let p = Cloudflare::new(
            "cf",
            &["example.com".into()],
            &CloudflareSettings {
                api_url: DEFAULT_API_URL.parse().unwrap(),
                api_token: "tok-sekrit".into(),
            },
        )
        .unwrap();
        assert_eq!(
            p.url(&["zones", "abc", "dns_records"]).unwrap().as_str(),
            "https://api.cloudflare.com/client/v4/zones/abc/dns_records"
        );
        assert!(!format!("{p:?}").contains("sekrit"));
    }
}
