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
