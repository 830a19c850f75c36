//! Install requests of `manual` destinations, seen from the API:
//!
//! * `GET /install/{token}` — the download link mailed to a server's
//!   administrator. Outside `/v1` and the bearer-token table: the
//!   unguessable token (256 bits, kept by the store only as its SHA-256)
//!   is the authorization. A bad token costs one SHA-256 and one indexed
//!   lookup and writes nothing; failed lookups are limited per client
//!   address ([`FAILED_PER_WINDOW`] per [`WINDOW`], then 429). Every
//!   answer that is not the package is a problem document: unknown token
//!   404, superseded / already downloaded / expired 410 — never a 5xx for
//!   a token. Each download is audited.
//! * `POST /v1/names/{name}/deploy/{destination}/password` — an operator
//!   is shown the package password of `password_delivery = "api"` once,
//!   audited; asking again answers 410.
//!
//! The worker builds, seals and mails packages (`worker::install`); this
//! module only opens and hands them out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::ProblemDoc;
use super::{ApiState, Principal, Problem, load_name};
use crate::keys::hex;
use crate::keys::seal::{install_package_purpose, install_password_purpose};
use crate::store::{AuditDetails, AuditEvent, PackageRecord};

/// Failed lookups a client address may make per [`WINDOW`].
pub const FAILED_PER_WINDOW: u32 = 20;
/// The window of [`FAILED_PER_WINDOW`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (then the table starts afresh).
const MAX_CLIENTS: usize = 10_000;
/// Length of a download token (32 bytes, base64url without padding).
const TOKEN_LEN: usize = 43;
/// The audit actor of link downloads (the link needs no account).
const LINK_ACTOR: &str = "install-link";

/// Failed lookups per client address in the current window.
static FAILURES: Mutex<Option<HashMap<IpAddr, (Instant, u32)>>> = Mutex::new(None);

/// Whether `ip` may look a token up now.
fn allowed(ip: IpAddr) -> bool {
    let mut guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    match map.get(&ip) {
        Some((start, n)) if start.elapsed() < WINDOW => *n < FAILED_PER_WINDOW,
        _ => true,
    }
}

/// Counts a failed lookup of `ip`.
fn failed(ip: IpAddr) {
    let mut guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_CLIENTS {
        map.retain(|_, (start, _)| start.elapsed() < WINDOW);
        if map.len() >= MAX_CLIENTS {
            map.clear();
        }
    }
    let e = map.entry(ip).or_insert((Instant::now(), 0));
    if e.0.elapsed() >= WINDOW {
        *e = (Instant::now(), 0);
    }
    e.1 += 1;
}

/// An install package as downloaded: a tar archive (documentation only;
/// the handler sends the bytes).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PackageArchive(#[allow(dead_code)] Vec<u8>);

/// Why a package cannot be had, as a 410 problem.
fn gone_reason(p: &PackageRecord, now: i64) -> Option<Problem> {
    let at = |t: Option<i64>| t.map(crate::clock::rfc3339).unwrap_or_default();
    match p.state.as_str() {
        "superseded" => Some(Problem::gone(
            "install-link-superseded",
            format!(
                "this install request for {} was superseded at {} by a newer one (a renewal or \
                 a swap changed the certificate); use the link in the newest install-request mail",
                p.name_id,
                at(p.superseded_at)
            ),
        )),
        "downloaded" => Some(Problem::gone(
            "install-link-used",
            format!(
                "this one-time link was already used at {}; ask the twincert operators for a \
                 new install request if the package is lost",
                at(p.downloaded_at)
            ),
        )),
        _ if p.expires_at <= now => Some(Problem::gone(
            "install-link-expired",
            format!(
                "this link expired at {}; ask the twincert operators for a new install request",
                crate::clock::rfc3339(p.expires_at)
            ),
        )),
        _ if p.package.is_none() => Some(Problem::gone(
            "install-link-used",
            "this package is no longer stored; ask the twincert operators for a new install request",
        )),
        _ => None,
    }
}

#[utoipa::path(get, path = "/install/{token}", params(("token" = String, Path, description = "the download token from the install-request mail")), responses((status = 200, description = "the install package: a tar archive with NAME.p12, NAME.pem and README.txt, encrypted with the package password", content_type = "application/x-tar", body = PackageArchive), (status = 404, description = "no such link", body = ProblemDoc, content_type = "application/problem+json"), (status = 410, description = "the link was superseded, already used, or expired", body = ProblemDoc, content_type = "application/problem+json"), (status = 429, description = "too many failed lookups from this address", body = ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn download(
    State(st): State<ApiState>,
    extensions: axum::http::Extensions,
    Path(token): Path<String>,
) -> Result<Response, Problem> {
    // Without a socket (tests driving the router) all callers share one
    // address.
    let ip = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if !allowed(ip) {
        return Err(Problem::too_many_requests(format!(
            "too many unknown install links from {ip}; try again in {} seconds",
            WINDOW.as_secs()
        )));
    }
    let unknown = || {
        Problem::not_found("no install request has this link; check that the whole link was copied")
    };
    let well_formed = token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        failed(ip);
        return Err(unknown());
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let Some(p) = st
        .store
        .packages()
        .package_by_token(&hex(digest.as_ref()))
        .await?
    else {
        failed(ip);
        return Err(unknown());
    };
    let now = st.clock.now();
    if let Some(gone) = gone_reason(&p, now) {
        return Err(gone);
    }
    let (Some(sealer), Some(sealed)) = (st.sealer.as_ref(), p.package.as_ref()) else {
        return Err(Problem::gone(
            "install-link-used",
            "this package is no longer stored; ask the twincert operators for a new install request",
        ));
    };
    let tar = sealer
        .open(&install_package_purpose(&p.id), sealed)
        .map_err(|e| {
            tracing::warn!(package = %p.id, error = %e, "an install package cannot be opened");
            Problem::gone(
                "install-package-unreadable",
                "this package can no longer be opened (the master key it was sealed under is \
                 gone); ask the twincert operators for a new install request",
            )
        })?;
    // Counted (and for one-time links closed) and audited before it leaves.
    let audit = AuditEvent::ok(
        now,
        LINK_ACTOR,
        "install.download",
        p.name_id.clone(),
        None,
        Some(AuditDetails::InstallPackage {
            destination: p.destination.clone(),
            package: p.id.clone(),
            serial: p.serial.clone(),
        }),
    );
    if !st
        .store
        .packages()
        .record_download(&p.id, now, &audit)
        .await?
    {
        // Someone else was first (a one-time link), or it just expired.
        let again = st
            .store
            .packages()
            .package_by_token(&hex(digest.as_ref()))
            .await?;
        return Err(again.and_then(|p| gone_reason(&p, now)).unwrap_or_else(|| {
            Problem::gone("install-link-used", "this link can no longer be used")
        }));
    }
    let stem = match p.name_id.strip_prefix("*.") {
        Some(rest) => format!("{}{rest}", crate::deploy::files::WILDCARD_PREFIX),
        None => p.name_id.clone(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{stem}-{}.tar\"", p.serial))
    {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((headers, tar).into_response())
}

/// `POST /v1/names/{name}/deploy/{destination}/password`: the password,
/// shown once.
#[derive(Serialize, ToSchema)]
pub struct PackagePassword {
    /// The install package it opens.
    pub package: String,
    /// Serial (hex) of the certificate in the package.
    pub serial: String,
    /// The password of the PKCS#12 file and of the PEM bundle's key. Pass
    /// it to the server's administrator by a channel other than the mail
    /// that carried the link. Shown once.
    pub password: String,
}

#[utoipa::path(post, path = "/v1/names/{name}/deploy/{destination}/password", params(("name" = String, Path, description = "the managed name"), ("destination" = String, Path, description = "a manual destination of the name")), responses((status = 200, description = "the password of the newest install package, shown once", body = PackagePassword), (status = 400, description = "invalid input", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "no or bad token", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "role too low", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "no such name or no install request for it", body = ProblemDoc, content_type = "application/problem+json"), (status = 409, description = "this destination mails its passwords", body = ProblemDoc, content_type = "application/problem+json"), (status = 410, description = "the password was shown already, or the package was superseded", body = ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn password(
    State(st): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path((name, destination)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let rec = load_name(&st, &name).await?;
    let shown: String = destination.chars().take(80).collect();
    let p = st
        .store
        .packages()
        .latest_package(&rec.id, &destination)
        .await?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no install request for {} at destination '{shown}' (is it a manual destination \
                 of this name, and was the certificate requested yet?)",
                rec.id
            ))
        })?;
    if p.password_delivery != "api" {
        return Err(Problem::conflict(
            "password-mailed",
            format!(
                "destination '{shown}' mails the password to the administrator \
                 (password_delivery = \"mail\"); it is not kept"
            ),
        ));
    }
    if p.state == "superseded" {
        return Err(Problem::gone(
            "install-link-superseded",
            "the newest package of this destination was superseded; ask again once the new one is made",
        ));
    }
    let Some(sealed) = p.password.clone() else {
        return Err(Problem::gone(
            "password-shown",
            format!(
                "the password of package {} was shown already at {}; it is shown once",
                p.id,
                p.password_shown_at
                    .map(crate::clock::rfc3339)
                    .unwrap_or_default()
            ),
        ));
    };
    let sealer = st
        .sealer
        .as_ref()
        .ok_or_else(|| Problem::internal(&"password request without a sealer"))?;
    let plain = sealer
        .open(&install_password_purpose(&p.id), &sealed)
        .map_err(|e| Problem::internal(&e))?;
    let password = String::from_utf8(plain).map_err(|e| Problem::internal(&e))?;
    let audit = AuditEvent::ok(
        st.clock.now(),
        who.name.clone(),
        "install.password",
        rec.id.clone(),
        None,
        Some(AuditDetails::InstallPackage {
            destination: p.destination.clone(),
            package: p.id.clone(),
            serial: p.serial.clone(),
        }),
    );
    if !st
        .store
        .packages()
        .take_password(&p.id, &sealed.nonce, &audit)
        .await?
    {
        return Err(Problem::gone(
            "password-shown",
            format!(
                "the password of package {} was shown already; it is shown once",
                p.id
            ),
        ));
    }
    let mut rsp = Json(PackagePassword {
        package: p.id,
        serial: p.serial,
        password,
    })
    .into_response();
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(state: &str, expires_at: i64, stored: bool) -> PackageRecord {
        PackageRecord {
            id: "p1".into(),
            name_id: "a.example.test".into(),
            destination: "appliances".into(),
            serial: "01".into(),
            state: state.into(),
            one_time: true,
            password_delivery: "api".into(),
            created_at: 0,
            expires_at,
            downloads: 0,
            downloaded_at: Some(50),
            superseded_at: Some(60),
            password_shown_at: None,
            package: stored.then(|| crate::keys::seal::Sealed {
                key_id: "k".into(),
                nonce: vec![0; 12],
                ciphertext: vec![1],
            }),
            password: None,
        }
    }

    #[test]
    fn a_link_is_gone_when_superseded_used_expired_or_wiped() {
        let now = 100;
        let cases = [
            ("open, unexpired", package("open", 200, true), None),
            (
                "superseded",
                package("superseded", 200, false),
                Some("install-link-superseded"),
            ),
            (
                "used once",
                package("downloaded", 200, false),
                Some("install-link-used"),
            ),
            (
                "expired",
                package("open", 100, true),
                Some("install-link-expired"),
            ),
            (
                "superseded wins over expired",
                package("superseded", 10, false),
                Some("install-link-superseded"),
            ),
            (
                "wiped",
                package("open", 200, false),
                Some("install-link-used"),
            ),
        ];
        for (label, p, want) in cases {
            let got = gone_reason(&p, now);
            assert_eq!(got.as_ref().map(Problem::kind), want, "{label}");
            if let Some(g) = got {
                assert_eq!(g.status().as_u16(), 410, "{label}");
                assert!(
                    g.detail().contains("twincert") || g.detail().contains("newest"),
                    "{label}: {}",
                    g.detail()
                );
            }
        }
    }

    #[test]
    fn failed_lookups_are_limited_per_address() {
        let ip: IpAddr = "192.0.2.77".parse().expect("ip");
        let other: IpAddr = "192.0.2.78".parse().expect("ip");
        for _ in 0..FAILED_PER_WINDOW {
            assert!(allowed(ip));
            failed(ip);
        }
        assert!(!allowed(ip), "over the limit");
        assert!(allowed(other), "another address is not affected");
    }
}
