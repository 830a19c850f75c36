//! The signature on every webhook twincert sends (deploy and alert
//! deliveries, `webhook` DNS providers): [`TIMESTAMP_HEADER`] (Unix
//! seconds) and [`SIGNATURE_HEADER`] = `v1=` + hex HMAC-SHA256 (RFC 2104)
//! of `"{timestamp}.{body}"` under the shared secret, the scheme Stripe and
//! Slack use: the timestamp inside the MAC lets a receiver refuse replays
//! ([`verify`] with a tolerance), the `v1=` prefix lets the scheme change.
//! Receivers should compare in constant time, as [`verify`] does. Sending
//! is the caller's business; this module only signs and verifies.

use std::time::Duration;

use aws_lc_rs::hmac;

use crate::keys::hex;

/// Header with the Unix time the delivery was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Twincert-Timestamp";
/// Header with the signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Twincert-Signature";
/// The version prefix of a signature in [`SIGNATURE_HEADER`].
pub const SIGNATURE_SCHEME: &str = "v1=";

/// The hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex(ctx.sign().as_ref())
}

/// Whether `header` (a [`SIGNATURE_HEADER`] value; several comma-separated
/// `v1=` signatures are allowed, for secret rotation) signs `body` at
/// `timestamp` under `secret`, and `timestamp` is within `tolerance` of
/// `now`. The comparison is constant-time.
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance: Duration,
) -> bool {
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix(SIGNATURE_SCHEME))
        .filter_map(unhex)
        .any(|tag| hmac::verify(&key, &signed, &tag).is_ok())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The two headers that sign `body` at `timestamp`.
pub fn signed_headers(secret: &[u8], timestamp: i64, body: &[u8]) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let values = [
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (
            SIGNATURE_HEADER,
            format!("{SIGNATURE_SCHEME}{}", sign(secret, timestamp, body)),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Whether a received request's [`TIMESTAMP_HEADER`] and
/// [`SIGNATURE_HEADER`] sign `body` under `secret` within `tolerance` of
/// `now` (Unix seconds): [`verify`] for a receiver holding the headers.
pub fn verify_headers(
    secret: &[u8],
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (
        text(TIMESTAMP_HEADER).and_then(|t| t.parse().ok()),
        text(SIGNATURE_HEADER),
    ) {
        (Some(timestamp), Some(signature)) => {
            verify(secret, timestamp, body, signature, now, tolerance)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";

    #[test]
    fn signature_known_vector_and_tampering() {
        let body = br#"{"kind":"expiry"}"#;
        // Python: hmac.new(b"whsec_test", b'1700000000.{"kind":"expiry"}',
        // hashlib.sha256).hexdigest()
        let want = "198939c9e78f84f2f4763c610d12a9379d0a856192d73e7ca3f9645cf9ae20a0";
        assert_eq!(sign(SECRET, 1_700_000_000, body), want);
        let header = format!("v1={want}");
        let tolerance = Duration::from_secs(300);
        let now = 1_700_000_100;
        assert!(verify(SECRET, 1_700_000_000, body, &header, now, tolerance));
        struct Tampered {
            what: &'static str,
            secret: &'static [u8],
            timestamp: i64,
            body: &'static [u8],
            header: String,
            now: i64,
        }
        let good = Tampered {
            what: "",
            secret: SECRET,
            timestamp: 1_700_000_000,
            body,
            header: header.clone(),
            now,
        };
        let cases = [
            Tampered {
                what: "body",
                body: br#"{"kind":"expirx"}"#,
                ..good
            },
            Tampered {
                what: "timestamp",
                timestamp: 1_700_000_001,
                header: header.clone(),
                ..good
            },
            Tampered {
                what: "secret",
                secret: b"whsec_other",
                header: header.clone(),
                ..good
            },
            Tampered {
                what: "too old",
                now: 1_700_000_301,
                header: header.clone(),
                ..good
            },
            Tampered {
                what: "from the future",
                now: 1_699_999_000,
                header: header.clone(),
                ..good
            },
            Tampered {
                what: "no scheme",
                header: want.to_string(),
                ..good
            },
            Tampered {
                what: "not hex",
                header: "v1=zz".into(),
                ..good
            },
            Tampered {
                what: "truncated",
                header: header[..40].to_string(),
                ..good
            },
        ];
        for t in cases {
            assert!(
                !verify(t.secret, t.timestamp, t.body, &t.header, t.now, tolerance),
                "{} passed",
                t.what
            );
        }
        let rotated = format!("v1={}, v1={want}", "00".repeat(32));
        assert!(verify(
            SECRET,
            1_700_000_000,
            body,
            &rotated,
            now,
            tolerance
        ));
    }

    #[test]
    fn signed_headers_carry_the_timestamp_and_the_v1_signature() {
        let h = signed_headers(SECRET, 1_700_000_000, br#"{"kind":"expiry"}"#);
        assert_eq!(h[TIMESTAMP_HEADER], "1700000000");
        assert_eq!(
            h[SIGNATURE_HEADER],
            "v1=198939c9e78f84f2f4763c610d12a9379d0a856192d73e7ca3f9645cf9ae20a0"
        );
        let tolerance = Duration::from_secs(300);
        let body = br#"{"kind":"expiry"}"#;
        assert!(verify_headers(SECRET, &h, body, 1_700_000_100, tolerance));
        assert!(!verify_headers(
            b"other",
            &h,
            body,
            1_700_000_100,
            tolerance
        ));
        assert!(!verify_headers(
            SECRET,
            &reqwest::header::HeaderMap::new(),
            body,
            1_700_000_100,
            tolerance
        ));
    }
}
