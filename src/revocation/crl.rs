//! CRL verification (RFC 5280 §5): turns the bytes fetched from a CRL
//! distribution point into a [`VerifiedCrl`] only if the issuing CA signed
//! them and they are current. Since Let's Encrypt ended OCSP (2025) this is
//! the primary revocation signal.
//!
//! Pure: no I/O, the time comes in as `now`. Fetching and caching are not
//! here. Invariant: nothing from a CRL is returned unless its issuer name is
//! the issuer certificate's subject and its signature verifies with that
//! certificate's key.

use std::collections::HashMap;

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::der::{self, CLOCK_SKEW, SignatureError, format_time};

/// A CRL whose signature was verified against its issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCrl {
    /// The cRLNumber extension in decimal; lets a cache refuse to go back
    /// to an older CRL.
    pub number: Option<String>,
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds; after it a fresher CRL must exist.
    pub next_update: Option<i64>,
    /// RFC 4514 string of the CRL issuer, for messages.
    pub issuer: String,
    /// Revoked serials. Key: lowercase hex of the serial's DER INTEGER
    /// content bytes, i.e. `crate::keys::hex(cert.raw_serial())`, so a
    /// lookup needs no big-integer arithmetic.
    pub revoked: HashMap<String, RevokedEntry>,
}

impl VerifiedCrl {
    /// The entry for a certificate with these raw serial bytes, if revoked.
    pub fn lookup(&self, raw_serial: &[u8]) -> Option<&RevokedEntry> {
        self.revoked.get(&crate::keys::hex(raw_serial))
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code (1 = keyCompromise) from the entry's
    /// reasonCode extension; a key compromise means the key must be retired,
    /// not just the certificate replaced.
    pub reason: Option<u8>,
}

/// Why a CRL was not believed. Every variant is final for these bytes;
/// fetching again may help only for [`CrlError::Stale`] and
/// [`CrlError::NotYetValid`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// The bytes are not a DER or PEM CRL.
    #[error("not a CRL: {0}")]
    NotACrl(String),
    /// The issuer certificate given to check against does not parse.
    #[error("issuer certificate does not parse: {0}")]
    BadIssuerCertificate(String),
    /// The CRL was issued by someone else (wrong URL or wrong issuer given).
    #[error("CRL issuer {crl_issuer} is not the certificate's issuer {issuer}")]
    WrongIssuer { crl_issuer: String, issuer: String },
    /// A delta CRL lists only changes; believing it as complete would miss
    /// revocations.
    #[error("delta CRLs are not supported (CRL from {0})")]
    DeltaCrl(String),
    /// The signed algorithm and the outer algorithm differ (RFC 5280
    /// §5.1.1.2): a sign of tampering.
    #[error("CRL signatureAlgorithm {outer} differs from the signed algorithm {inner}")]
    AlgorithmMismatch { outer: String, inner: String },
    /// We cannot check this signature, so we cannot believe the CRL.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// Forged, corrupted, or signed by another key under the same name.
    #[error("CRL signature does not verify against issuer {0}")]
    BadSignature(String),
    /// thisUpdate is in the future beyond clock skew.
    #[error("CRL not yet valid: thisUpdate {0} is after now")]
    NotYetValid(String),
    /// nextUpdate has passed beyond clock skew: a newer CRL should exist.
    #[error("CRL expired: nextUpdate {0} is before now")]
    Stale(String),
}

/// Parses `crl` (DER, or PEM labelled "X509 CRL") and believes it only if
/// `issuer_der` (the certificate of the CA that issued the certificates we
/// ask about) signed it and it is current at `now` (unix seconds, with
/// five minutes of clock-skew tolerance either way).
pub fn verify(crl: &[u8], issuer_der: &[u8], now: i64) -> Result<VerifiedCrl, CrlError> {
    let der = to_der(crl)?;
    let (_, parsed) =
        CertificateRevocationList::from_der(&der).map_err(|e| CrlError::NotACrl(e.to_string()))?;
    let (_, issuer) = X509Certificate::from_der(issuer_der)
        .map_err(|e| CrlError::BadIssuerCertificate(e.to_string()))?;
    check_issuer(&parsed, &issuer)?;
    check_signature(&parsed, &issuer)?;
    check_freshness(&parsed, now)?;
    Ok(collect(&parsed))
}

/// Unwraps PEM if the input looks like PEM; DER passes through.
fn to_der(input: &[u8]) -> Result<Vec<u8>, CrlError> {
    if !input.starts_with(b"-----BEGIN") {
        return Ok(input.to_vec());
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(input)
        .map_err(|e| CrlError::NotACrl(format!("bad PEM: {e}")))?;
    if pem.label != "X509 CRL" {
        return Err(CrlError::NotACrl(format!("PEM label is {:?}", pem.label)));
    }
    Ok(pem.contents)
}

/// Names are compared as raw DER, as the CA wrote them, so two
/// differently-encoded but equal-looking names are not confused.
fn check_issuer(
    crl: &CertificateRevocationList<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), CrlError> {
    if crl.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(CrlError::WrongIssuer {
            crl_issuer: crl.issuer().to_string(),
            issuer: issuer.subject().to_string(),
        });
    }
    let delta_crl_indicator = x509_parser::oid_registry::OID_X509_EXT_DELTA_CRL_INDICATOR;
    if crl
        .extensions()
        .iter()
        .any(|e| e.oid == delta_crl_indicator)
    {
        return Err(CrlError::DeltaCrl(crl.issuer().to_string()));
    }
    Ok(())
}

fn check_signature(
    crl: &CertificateRevocationList<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), CrlError> {
    let outer = &crl.signature_algorithm;
    let inner = &crl.tbs_cert_list.signature;
    if outer != inner {
        return Err(CrlError::AlgorithmMismatch {
            outer: outer.algorithm.to_id_string(),
            inner: inner.algorithm.to_id_string(),
        });
    }
    der::verify_signature(
        outer,
        issuer.public_key(),
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
    )
    .map_err(|e| match e {
        SignatureError::Unsupported(oid) => CrlError::UnsupportedAlgorithm(oid),
        SignatureError::Invalid => CrlError::BadSignature(issuer.subject().to_string()),
    })
}

fn check_freshness(crl: &CertificateRevocationList<'_>, now: i64) -> Result<(), CrlError> {
    let this_update = crl.last_update().timestamp();
    if this_update > now + CLOCK_SKEW {
        return Err(CrlError::NotYetValid(format_time(this_update)));
    }
    match crl.next_update().map(|t| t.timestamp()) {
        Some(next) if next < now - CLOCK_SKEW => Err(CrlError::Stale(format_time(next))),
        _ => Ok(()),
    }
}

fn collect(crl: &CertificateRevocationList<'_>) -> VerifiedCrl {
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| {
            let reason = entry.reason_code().map(|(_, code)| code.0);
            let value = RevokedEntry {
                revoked_at: entry.revocation_date.timestamp(),
                reason,
            };
            (crate::keys::hex(entry.raw_serial()), value)
        })
        .collect();
    VerifiedCrl {
        number: crl.crl_number().map(|n| n.to_string()),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        issuer: crl.issuer().to_string(),
        revoked,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
        SerialNumber,
    };
    use time::OffsetDateTime;

    use super::super::der::test_pki::{self, Ca};
    use super::*;

    const NOW: i64 = 1_760_000_000;
    const HOUR: i64 = 3600;
    const LEAF_SERIAL: &[u8] = &[0x0a, 0x1b, 0x2c, 0x3d];

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).expect("valid test time")
    }

    /// A CRL from `ca` valid from `this_update` to `next_update`, listing
    /// LEAF_SERIAL as revoked for keyCompromise an hour before `this_update`.
    fn crl(ca: &Ca, this_update: i64, next_update: i64) -> Vec<u8> {
        let params = CertificateRevocationListParams {
            this_update: at(this_update),
            next_update: at(next_update),
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from_slice(LEAF_SERIAL),
                revocation_time: at(this_update - HOUR),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&ca.issuer).expect("CRL").der().to_vec()
    }

    fn current_crl(ca: &Ca) -> Vec<u8> {
        crl(ca, NOW - HOUR, NOW + 24 * HOUR)
    }

    fn assert_lists_leaf(ca: &Ca, crl_bytes: &[u8]) {
        let leaf = test_pki::leaf(ca, LEAF_SERIAL);
        let (_, leaf) = X509Certificate::from_der(&leaf.der).expect("leaf parses");
        let verified = verify(crl_bytes, &ca.der, NOW).expect("CRL verifies");
        assert_eq!(
            verified.lookup(leaf.raw_serial()),
            Some(&RevokedEntry {
                revoked_at: NOW - 2 * HOUR,
                reason: Some(1),
            })
        );
        assert_eq!(verified.number.as_deref(), Some("7"));
        assert_eq!(verified.this_update, NOW - HOUR);
        assert_eq!(verified.next_update, Some(NOW + 24 * HOUR));
        assert_eq!(verified.issuer, "CN=Test CA");
        assert_eq!(verified.revoked.len(), 1);
        assert!(verified.lookup(&[0x01]).is_none());
    }

    #[test]
    fn finds_revoked_leaf_with_time_and_reason() {
        let ca = test_pki::ca("Test CA");
        assert_lists_leaf(&ca, &current_crl(&ca));
    }

    #[test]
    fn verifies_rsa_signed_crl() {
        let ca = test_pki::rsa_ca("Test CA");
        assert_lists_leaf(&ca, &current_crl(&ca));
    }

    #[test]
    fn accepts_pem() {
        let ca = test_pki::ca("Test CA");
        let text = format!(
            "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            base64_lines(&current_crl(&ca))
        );
        assert_lists_leaf(&ca, text.as_bytes());
    }

    fn base64_lines(bytes: &[u8]) -> String {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        lines.join("\n")
    }

    #[test]
    fn tolerates_five_minutes_of_clock_skew() {
        let ca = test_pki::ca("Test CA");
        let early = crl(&ca, NOW + 4 * 60, NOW + HOUR);
        let late = crl(&ca, NOW - HOUR, NOW - 4 * 60);
        verify(&early, &ca.der, NOW).expect("thisUpdate 4 min ahead is skew");
        verify(&late, &ca.der, NOW).expect("nextUpdate 4 min ago is skew");
    }

    #[test]
    fn rejects_what_it_must_not_believe() {
        let ca = test_pki::ca("Test CA");
        let impostor = test_pki::ca("Test CA"); // same name, other key
        let other = test_pki::ca("Other CA");
        let mut flipped = current_crl(&ca);
        if let Some(last) = flipped.last_mut() {
            *last ^= 0x01; // the signature is the last field
        }
        type Check = fn(&CrlError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check, &str)> = vec![
            (
                "signature byte flipped",
                flipped,
                |e| matches!(e, CrlError::BadSignature(_)),
                "CRL signature does not verify against issuer CN=Test CA",
            ),
            (
                "same name, other key",
                current_crl(&impostor),
                |e| matches!(e, CrlError::BadSignature(_)),
                "CRL signature does not verify against issuer CN=Test CA",
            ),
            (
                "other issuer name",
                current_crl(&other),
                |e| matches!(e, CrlError::WrongIssuer { .. }),
                "CRL issuer CN=Other CA is not the certificate's issuer CN=Test CA",
            ),
            (
                "nextUpdate in the past",
                crl(&ca, NOW - 48 * HOUR, NOW - 6 * 60),
                |e| matches!(e, CrlError::Stale(_)),
                "CRL expired: nextUpdate 2025-10-09T08:47:20Z is before now",
            ),
            (
                "thisUpdate in the future",
                crl(&ca, NOW + 6 * 60, NOW + 48 * HOUR),
                |e| matches!(e, CrlError::NotYetValid(_)),
                "CRL not yet valid: thisUpdate 2025-10-09T08:59:20Z is after now",
            ),
            (
                "not a CRL",
                ca.der.clone(),
                |e| matches!(e, CrlError::NotACrl(_)),
                "",
            ),
            (
                "PEM of something else",
                ca.pem.clone().into_bytes(),
                |e| matches!(e, CrlError::NotACrl(_)),
                "not a CRL: PEM label is \"CERTIFICATE\"",
            ),
        ];
        for (name, crl_bytes, check, message) in cases {
            match verify(&crl_bytes, &ca.der, NOW) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => {
                    assert!(check(&e), "{name}: wrong error {e:?}");
                    if !message.is_empty() {
                        assert_eq!(e.to_string(), message, "{name}");
                    }
                }
            }
        }
    }
}
