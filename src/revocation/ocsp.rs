//! OCSP (RFC 6960) for CAs that still run it: builds the request for one
//! certificate and believes a response only after checking who signed it.
//!
//! Pure: no I/O, the time comes in as `now`. x509-parser has no OCSP, so the
//! messages are read and written with the strict DER reader in
//! `revocation::der`; certificates inside them are parsed with x509-parser.
//! Invariant: an [`OcspAnswer`] is returned only if the response is signed by
//! the issuer's key or by a responder the issuer certified for OCSP signing
//! (§4.2.2.2), is about this certificate under this issuer, and is current.

use std::borrow::Cow;

use aws_lc_rs::digest;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;
use x509_parser::x509::AlgorithmIdentifier;

use super::der::{
    self, BIT_STRING, CLOCK_SKEW, ENUMERATED, GENERALIZED_TIME, OCTET_STRING, OID, Reader,
    SEQUENCE, SignatureError, Tlv, context, context_primitive, format_time,
};

/// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1 (encoded OID content).
const OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// id-sha1, 1.3.14.3.2.26: what every responder understands in a CertID.
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// id-sha256, 2.16.840.1.101.3.4.2.1.
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// What the CA says about the certificate (RFC 6960 §4.2.1 CertStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked, as of the answer's thisUpdate.
    Good,
    /// `at` in unix seconds; `reason` is the RFC 5280 CRLReason code, when
    /// the responder gave one (1 = keyCompromise: retire the key too).
    Revoked { at: i64, reason: Option<u8> },
    /// The responder does not know the certificate: not proof of anything.
    Unknown,
}

/// A verified OCSP answer for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspAnswer {
    pub status: CertStatus,
    /// Unix seconds (the responder's producedAt).
    pub produced_at: i64,
    /// Unix seconds (this certificate's thisUpdate).
    pub this_update: i64,
    /// Unix seconds; after it a fresher answer must exist. Absent means the
    /// responder always has newer information (§4.2.2.1).
    pub next_update: Option<i64>,
    /// `issuer` when signed by the issuer's key, else
    /// `delegated: <responder subject>`, so an operator can see who vouched.
    pub responder: String,
}

/// Why no OCSP answer can be believed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    /// The leaf or issuer certificate given by the caller does not parse.
    #[error("{which} certificate does not parse: {reason}")]
    BadCertificate { which: &'static str, reason: String },
    /// The caller paired a certificate with a CA that did not issue it.
    #[error("certificate issuer {leaf_issuer} is not the given issuer {issuer}")]
    NotIssuedBy { leaf_issuer: String, issuer: String },
    /// The bytes are not the OCSP structure they should be.
    #[error("malformed OCSP response: {0}")]
    Malformed(String),
    /// The responder refused (e.g. tryLater(3) is worth retrying later,
    /// unauthorized(6) means it does not serve this CA).
    #[error("OCSP responder answered status {name} ({code})")]
    ResponderStatus { code: u8, name: &'static str },
    /// Only id-pkix-ocsp-basic is defined for use.
    #[error("unsupported OCSP response type {0}")]
    UnsupportedResponseType(String),
    /// A signature we cannot check cannot be believed.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// Nobody we trust signed the response.
    #[error(
        "OCSP response signature does not verify against the issuer or a delegated responder it certified"
    )]
    BadSignature,
    /// A certificate in the response signed it, but the issuer did not
    /// authorize it to speak for the issuer (RFC 6960 §4.2.2.2).
    #[error("OCSP response signed by {responder}, which is not an authorized responder: {why}")]
    UnauthorizedResponder { responder: String, why: String },
    /// The response is about other certificates.
    #[error("OCSP response is for serial {found}, asked for {asked}")]
    WrongSerial { found: String, asked: String },
    /// Right serial, but under another issuer.
    #[error("OCSP response for serial {0} names a different issuer")]
    WrongIssuer(String),
    /// A CertID hash algorithm we do not compute.
    #[error("unsupported CertID hash algorithm {0}")]
    UnsupportedHash(String),
    /// thisUpdate lies in the future beyond clock skew.
    #[error("OCSP response not yet valid (thisUpdate {0})")]
    NotYetValid(String),
    /// nextUpdate has passed beyond clock skew: a newer answer should exist.
    #[error("OCSP response expired (nextUpdate {0})")]
    Expired(String),
}

/// DER OCSPRequest (RFC 6960 §4.1.1) for `leaf`: one CertID with SHA-1
/// hashes (the algorithm all responders accept), no nonce and no signature,
/// so the same bytes can be sent with GET and cached by a CDN.
pub fn request(leaf_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, OcspError> {
    build_request(
        leaf_der,
        issuer_der,
        SHA1,
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
    )
}

/// The request with CertID hashes made by `hash` (`hash_oid` its OID).
fn build_request(
    leaf_der: &[u8],
    issuer_der: &[u8],
    hash_oid: &[u8],
    hash: &'static digest::Algorithm,
) -> Result<Vec<u8>, OcspError> {
    let (leaf, issuer) = parse_pair(leaf_der, issuer_der)?;
    let (name_hash, key_hash) = issuer_hashes(&issuer, hash);
    let hash_algorithm = der::sequence(&[&der::oid(hash_oid), &der::null()]);
    let cert_id = der::sequence(&[
        &hash_algorithm,
        &der::octet_string(&name_hash),
        &der::octet_string(&key_hash),
        &der::integer_raw(leaf.raw_serial()),
    ]);
    let request = der::sequence(&[&cert_id]);
    let request_list = der::sequence(&[&request]);
    let tbs_request = der::sequence(&[&request_list]);
    Ok(der::sequence(&[&tbs_request]))
}

/// Parses an OCSPResponse (RFC 6960 §4.2.1) about `leaf` and believes it
/// only if the issuer or a responder it certified signed it, and it is
/// current at `now` (unix seconds, five minutes of clock skew tolerated).
pub fn verify_response(
    resp_der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: i64,
) -> Result<OcspAnswer, OcspError> {
    let (leaf, issuer) = parse_pair(leaf_der, issuer_der)?;
    let basic_der = response_bytes(resp_der)?;
    let basic = BasicResponse::parse(basic_der).map_err(OcspError::Malformed)?;
    let responder = identify_signer(&basic, &issuer, now)?;
    let single = find_single(&basic.responses, &leaf, &issuer)?;
    check_freshness(single, now)?;
    Ok(OcspAnswer {
        status: single.status,
        produced_at: basic.produced_at,
        this_update: single.this_update,
        next_update: single.next_update,
        responder,
    })
}

fn parse_pair<'a>(
    leaf_der: &'a [u8],
    issuer_der: &'a [u8],
) -> Result<(X509Certificate<'a>, X509Certificate<'a>), OcspError> {
    let parse = |which, der| {
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| OcspError::BadCertificate {
                which,
                reason: e.to_string(),
            })
    };
    let leaf = parse("leaf", leaf_der)?;
    let issuer = parse("issuer", issuer_der)?;
    if leaf.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(OcspError::NotIssuedBy {
            leaf_issuer: leaf.issuer().to_string(),
            issuer: issuer.subject().to_string(),
        });
    }
    Ok((leaf, issuer))
}

/// (issuerNameHash, issuerKeyHash) as a CertID carries them (§4.1.1): the
/// hash of the issuer's subject Name DER, and of its subjectPublicKey BIT
/// STRING contents without the unused-bits byte.
fn issuer_hashes(
    issuer: &X509Certificate<'_>,
    alg: &'static digest::Algorithm,
) -> (Vec<u8>, Vec<u8>) {
    let name = digest::digest(alg, issuer.subject().as_raw());
    let key = digest::digest(alg, &issuer.public_key().subject_public_key.data);
    (name.as_ref().to_vec(), key.as_ref().to_vec())
}

/// Unwraps OCSPResponse down to the BasicOCSPResponse DER, turning a
/// non-successful responseStatus into its named error.
fn response_bytes(resp_der: &[u8]) -> Result<&[u8], OcspError> {
    let malformed = OcspError::Malformed;
    let mut outer = Reader::new(resp_der);
    let response = outer.take(SEQUENCE, "OCSPResponse").map_err(malformed)?;
    outer.finish("OCSPResponse").map_err(malformed)?;
    let mut fields = Reader::new(response.content);
    let status = fields
        .take(ENUMERATED, "responseStatus")
        .and_then(small_unsigned)
        .map_err(malformed)?;
    if status != 0 {
        return Err(OcspError::ResponderStatus {
            code: status,
            name: status_name(status),
        });
    }
    let bytes = fields
        .take(context(0), "responseBytes")
        .map_err(malformed)?;
    fields.finish("OCSPResponse").map_err(malformed)?;
    let mut explicit = Reader::new(bytes.content);
    let seq = explicit
        .take(SEQUENCE, "ResponseBytes")
        .map_err(malformed)?;
    explicit.finish("responseBytes").map_err(malformed)?;
    let mut rb = Reader::new(seq.content);
    let response_type = rb.take(OID, "responseType").map_err(malformed)?;
    let response = rb.take(OCTET_STRING, "response").map_err(malformed)?;
    rb.finish("ResponseBytes").map_err(malformed)?;
    if response_type.content != OCSP_BASIC {
        return Err(OcspError::UnsupportedResponseType(oid_string(
            response_type.content,
        )));
    }
    Ok(response.content)
}

fn status_name(code: u8) -> &'static str {
    match code {
        0 => "successful",
        1 => "malformedRequest",
        2 => "internalError",
        3 => "tryLater",
        5 => "sigRequired",
        6 => "unauthorized",
        _ => "undefined",
    }
}

/// BasicOCSPResponse (§4.2.1), with the parts we check kept as slices.
struct BasicResponse<'a> {
    /// The exact tbsResponseData encoding, which the signature covers.
    tbs_raw: &'a [u8],
    produced_at: i64,
    responses: Vec<SingleResponse<'a>>,
    signature_algorithm: AlgorithmIdentifier<'a>,
    signature: &'a [u8],
    /// DER certificates from the optional `certs` field.
    certs: Vec<&'a [u8]>,
}

struct SingleResponse<'a> {
    hash_algorithm: &'a [u8],
    issuer_name_hash: &'a [u8],
    issuer_key_hash: &'a [u8],
    serial: &'a [u8],
    status: CertStatus,
    this_update: i64,
    next_update: Option<i64>,
}

impl<'a> BasicResponse<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let mut outer = Reader::new(bytes);
        let basic = outer.take(SEQUENCE, "BasicOCSPResponse")?;
        outer.finish("BasicOCSPResponse")?;
        let mut fields = Reader::new(basic.content);
        let tbs = fields.take(SEQUENCE, "tbsResponseData")?;
        let alg = fields.take(SEQUENCE, "signatureAlgorithm")?;
        let signature = fields.take(BIT_STRING, "signature")?;
        let certs = fields.optional(context(0))?;
        fields.finish("BasicOCSPResponse")?;

        let (_, signature_algorithm) = AlgorithmIdentifier::from_der(alg.raw)
            .map_err(|e| format!("signatureAlgorithm: {e}"))?;
        let signature = match signature.content.split_first() {
            Some((0, bits)) => bits,
            _ => return Err("signature: BIT STRING with unused bits".into()),
        };
        let (produced_at, responses) = parse_response_data(tbs.content)?;
        Ok(BasicResponse {
            tbs_raw: tbs.raw,
            produced_at,
            responses,
            signature_algorithm,
            signature,
            certs: certs.map(parse_certs).transpose()?.unwrap_or_default(),
        })
    }

    fn verify_with(&self, cert: &X509Certificate<'_>) -> Result<(), SignatureError> {
        der::verify_signature(
            &self.signature_algorithm,
            cert.public_key(),
            self.tbs_raw,
            self.signature,
        )
    }
}

/// ResponseData: version, responderID, producedAt, responses, extensions.
/// The responderID is not used to choose a key: every candidate is tried.
fn parse_response_data(content: &[u8]) -> Result<(i64, Vec<SingleResponse<'_>>), String> {
    let mut fields = Reader::new(content);
    if let Some(version) = fields.optional(context(0))?
        && version.content != [der::INTEGER, 1, 0]
    {
        return Err("unsupported ResponseData version".into());
    }
    let responder_id = fields.read()?;
    if responder_id.tag != context(1) && responder_id.tag != context(2) {
        return Err(format!(
            "responderID: unexpected tag 0x{:02x}",
            responder_id.tag
        ));
    }
    let produced_at = generalized_time(fields.take(GENERALIZED_TIME, "producedAt")?)?;
    let list = fields.take(SEQUENCE, "responses")?;
    fields.optional(context(1))?; // responseExtensions (e.g. a nonce): not used
    fields.finish("ResponseData")?;
    let mut items = Reader::new(list.content);
    let mut responses = Vec::new();
    while !items.is_empty() {
        responses.push(parse_single(items.take(SEQUENCE, "SingleResponse")?)?);
    }
    Ok((produced_at, responses))
}

fn parse_single(single: Tlv<'_>) -> Result<SingleResponse<'_>, String> {
    let mut fields = Reader::new(single.content);
    let cert_id = fields.take(SEQUENCE, "certID")?;
    let status = parse_cert_status(fields.read()?)?;
    let this_update = generalized_time(fields.take(GENERALIZED_TIME, "thisUpdate")?)?;
    let next_update = match fields.optional(context(0))? {
        Some(explicit) => Some(generalized_time(
            Reader::new(explicit.content).take(GENERALIZED_TIME, "nextUpdate")?,
        )?),
        None => None,
    };
    fields.optional(context(1))?; // singleExtensions: not used
    fields.finish("SingleResponse")?;

    let mut id = Reader::new(cert_id.content);
    let alg = id.take(SEQUENCE, "hashAlgorithm")?;
    let issuer_name_hash = id.take(OCTET_STRING, "issuerNameHash")?.content;
    let issuer_key_hash = id.take(OCTET_STRING, "issuerKeyHash")?.content;
    let serial = id.take(der::INTEGER, "serialNumber")?.content;
    id.finish("CertID")?;
    // Parameters are NULL or absent for SHA-1/SHA-2; neither matters here.
    let hash_algorithm = Reader::new(alg.content).take(OID, "hashAlgorithm")?.content;
    Ok(SingleResponse {
        hash_algorithm,
        issuer_name_hash,
        issuer_key_hash,
        serial,
        status,
        this_update,
        next_update,
    })
}

/// CertStatus (§4.2.1): good [0] IMPLICIT NULL, revoked [1] IMPLICIT
/// RevokedInfo, unknown [2] IMPLICIT NULL.
fn parse_cert_status(tlv: Tlv<'_>) -> Result<CertStatus, String> {
    match tlv.tag {
        t if t == context_primitive(0) && tlv.content.is_empty() => Ok(CertStatus::Good),
        t if t == context_primitive(2) && tlv.content.is_empty() => Ok(CertStatus::Unknown),
        t if t == context(1) => {
            let mut info = Reader::new(tlv.content);
            let at = generalized_time(info.take(GENERALIZED_TIME, "revocationTime")?)?;
            let reason = match info.optional(context(0))? {
                Some(explicit) => Some(small_unsigned(
                    Reader::new(explicit.content).take(ENUMERATED, "revocationReason")?,
                )?),
                None => None,
            };
            info.finish("RevokedInfo")?;
            Ok(CertStatus::Revoked { at, reason })
        }
        t => Err(format!("certStatus: unexpected tag 0x{t:02x}")),
    }
}

/// The `[0] EXPLICIT SEQUENCE OF Certificate` field, as DER certificates.
fn parse_certs(explicit: Tlv<'_>) -> Result<Vec<&[u8]>, String> {
    let mut outer = Reader::new(explicit.content);
    let list = outer.take(SEQUENCE, "certs")?;
    outer.finish("certs")?;
    let mut items = Reader::new(list.content);
    let mut certs = Vec::new();
    while !items.is_empty() {
        certs.push(items.take(SEQUENCE, "certs")?.raw);
    }
    Ok(certs)
}

/// A one-byte non-negative ENUMERATED (responseStatus, CRLReason).
fn small_unsigned(tlv: Tlv<'_>) -> Result<u8, String> {
    match tlv.content {
        [v] if *v < 0x80 => Ok(*v),
        _ => Err("ENUMERATED out of range".into()),
    }
}

fn generalized_time(tlv: Tlv<'_>) -> Result<i64, String> {
    ASN1Time::from_der(tlv.raw)
        .map(|(_, t)| t.timestamp())
        .map_err(|e| format!("bad GeneralizedTime: {e}"))
}

fn oid_string(content: &[u8]) -> String {
    Oid::new(Cow::Borrowed(content)).to_id_string()
}

/// Who signed (§4.2.2.2): the issuer itself, or a certificate from `certs`
/// that the issuer signed for id-kp-OCSPSigning and that is valid now.
fn identify_signer(
    basic: &BasicResponse<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<String, OcspError> {
    match basic.verify_with(issuer) {
        Ok(()) => return Ok("issuer".into()),
        Err(SignatureError::Unsupported(oid)) => return Err(OcspError::UnsupportedAlgorithm(oid)),
        Err(SignatureError::Invalid) => {}
    }
    for cert_der in &basic.certs {
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| OcspError::Malformed(format!("certificate in certs: {e}")))?;
        if basic.verify_with(&cert).is_ok() {
            authorize_delegate(&cert, issuer, now)?;
            return Ok(format!("delegated: {}", cert.subject()));
        }
    }
    Err(OcspError::BadSignature)
}

/// The three conditions under which a responder certificate may speak for
/// the issuer; the first one that fails is named in the error.
fn authorize_delegate(
    responder: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<(), OcspError> {
    let refuse = |why: String| OcspError::UnauthorizedResponder {
        responder: responder.subject().to_string(),
        why,
    };
    let certified = responder.issuer().as_raw() == issuer.subject().as_raw()
        && responder.signature_algorithm == responder.tbs_certificate.signature
        && der::verify_signature(
            &responder.signature_algorithm,
            issuer.public_key(),
            responder.tbs_certificate.as_ref(),
            &responder.signature_value.data,
        )
        .is_ok();
    if !certified {
        return Err(refuse(format!("not certified by {}", issuer.subject())));
    }
    let ocsp_signing = responder
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.ocsp_signing);
    if !ocsp_signing {
        return Err(refuse(
            "lacks extendedKeyUsage id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9)".into(),
        ));
    }
    let validity = responder.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if not_before > now + CLOCK_SKEW || not_after < now - CLOCK_SKEW {
        return Err(refuse(format!(
            "outside its validity {} .. {}",
            format_time(not_before),
            format_time(not_after)
        )));
    }
    Ok(())
}

/// The SingleResponse whose CertID is the leaf's: same serial, and issuer
/// hashes (SHA-1 or SHA-256) that match the issuer.
fn find_single<'r, 'a>(
    responses: &'r [SingleResponse<'a>],
    leaf: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<&'r SingleResponse<'a>, OcspError> {
    let serial = leaf.raw_serial();
    let mut same_serial = responses.iter().filter(|r| r.serial == serial).peekable();
    if same_serial.peek().is_none() {
        let found: Vec<String> = responses
            .iter()
            .map(|r| crate::keys::hex(r.serial))
            .collect();
        return Err(OcspError::WrongSerial {
            found: if found.is_empty() {
                "<none>".into()
            } else {
                found.join(", ")
            },
            asked: crate::keys::hex(serial),
        });
    }
    for single in same_serial {
        let alg = match single.hash_algorithm {
            SHA1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            SHA256 => &digest::SHA256,
            other => return Err(OcspError::UnsupportedHash(oid_string(other))),
        };
        let (name_hash, key_hash) = issuer_hashes(issuer, alg);
        if single.issuer_name_hash == name_hash && single.issuer_key_hash == key_hash {
            return Ok(single);
        }
    }
    Err(OcspError::WrongIssuer(crate::keys::hex(serial)))
}

fn check_freshness(single: &SingleResponse<'_>, now: i64) -> Result<(), OcspError> {
    if single.this_update > now + CLOCK_SKEW {
        return Err(OcspError::NotYetValid(format_time(single.this_update)));
    }
    match single.next_update {
        Some(next) if next < now - CLOCK_SKEW => Err(OcspError::Expired(format_time(next))),
        _ => Ok(()),
    }
}

/// Responses come from the `openssl ocsp` responder, fed the request that
/// [`request`] built: a real independent implementation on both sides.
#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use time::OffsetDateTime;

    use super::super::der::test_pki::{self, Ca, Issued};
    use super::*;

    const SERIAL: &[u8] = &[0x5a, 0x1b, 0x2c, 0x3d];
    const DAY: i64 = 86_400;
    /// 2025-01-01T00:00:00Z, the revocation time written in index.txt.
    const REVOKED_AT: i64 = 1_735_689_600;

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    /// How the openssl index lists the leaf.
    enum Listed {
        Valid,
        RevokedForKeyCompromise,
        Absent,
    }

    /// PEM inputs for `openssl ocsp`: the CA, and who signs the response.
    struct Signer<'a> {
        ca_pem: &'a str,
        cert_pem: &'a str,
        key_pem: &'a str,
    }

    fn by_ca(ca: &Ca) -> Signer<'_> {
        Signer {
            ca_pem: &ca.pem,
            cert_pem: &ca.pem,
            key_pem: &ca.key_pem,
        }
    }

    fn by<'a>(ca: &'a Ca, responder: &'a Issued) -> Signer<'a> {
        Signer {
            ca_pem: &ca.pem,
            cert_pem: &responder.pem,
            key_pem: &responder.key_pem,
        }
    }

    fn index_line(listed: &Listed) -> String {
        let serial = crate::keys::hex(SERIAL).to_uppercase();
        match listed {
            Listed::Valid => format!("V\t301231235959Z\t\t{serial}\tunknown\t/CN=leaf.example\n"),
            Listed::RevokedForKeyCompromise => format!(
                "R\t301231235959Z\t250101000000Z,keyCompromise\t{serial}\tunknown\t/CN=leaf.example\n"
            ),
            // Another certificate, so the index is not empty.
            Listed::Absent => "V\t301231235959Z\t\t0BADBEEF\tunknown\t/CN=other\n".into(),
        }
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("these tests need the `openssl` command-line tool on PATH: {e}")
            });
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The DER OCSPResponse `openssl ocsp` gives to `req`.
    fn respond(signer: &Signer<'_>, listed: &Listed, req: &[u8], extra: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.path().join(name), bytes).expect("write test file");
        };
        write("ca.pem", signer.ca_pem.as_bytes());
        write("rsigner.pem", signer.cert_pem.as_bytes());
        write("rsigner.key", signer.key_pem.as_bytes());
        write("index.txt", index_line(listed).as_bytes());
        write("req.der", req);
        let mut args = vec![
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            "rsigner.pem",
            "-rkey",
            "rsigner.key",
            "-reqin",
            "req.der",
            "-respout",
            "resp.der",
            "-ndays",
            "1",
        ];
        args.extend_from_slice(extra);
        openssl(dir.path(), &args);
        std::fs::read(dir.path().join("resp.der")).expect("openssl wrote resp.der")
    }

    /// Asks openssl about `leaf` and verifies its answer at `at`.
    fn ask(
        signer: &Signer<'_>,
        listed: Listed,
        leaf: &[u8],
        issuer: &[u8],
        at: i64,
    ) -> Result<OcspAnswer, OcspError> {
        let req = request(leaf, issuer).expect("request builds");
        let resp = respond(signer, &listed, &req, &[]);
        verify_response(&resp, leaf, issuer, at)
    }

    #[test]
    fn good_revoked_and_unknown_from_the_issuer() {
        let ca = test_pki::ca("Test CA");
        let leaf = test_pki::leaf(&ca, SERIAL);
        let cases = [
            (Listed::Valid, CertStatus::Good),
            (
                Listed::RevokedForKeyCompromise,
                CertStatus::Revoked {
                    at: REVOKED_AT,
                    reason: Some(1),
                },
            ),
            (Listed::Absent, CertStatus::Unknown),
        ];
        for (listed, expected) in cases {
            let t = now();
            let answer = ask(&by_ca(&ca), listed, &leaf.der, &ca.der, t).expect("verifies");
            assert_eq!(answer.status, expected);
            assert_eq!(answer.responder, "issuer");
            assert!((answer.this_update - t).abs() < 120, "{answer:?}");
            assert!((answer.produced_at - t).abs() < 120, "{answer:?}");
            let next = answer.next_update.expect("openssl -ndays sets nextUpdate");
            assert!((next - (t + DAY)).abs() < 120, "{answer:?}");
        }
    }

    #[test]
    fn rsa_ca_made_by_openssl() {
        let dir = tempfile::tempdir().expect("tempdir");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/O=Test/CN=RSA Test CA",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ],
        );
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.pem",
                "-subj",
                "/CN=leaf.example",
                "-days",
                "1",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "0x5A1B2C3D",
            ],
        );
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect(name);
        let der = |pem: &str| {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
            p.contents
        };
        let (ca_pem, ca_key, leaf_pem) = (read("ca.pem"), read("ca.key"), read("leaf.pem"));
        let signer = Signer {
            ca_pem: &ca_pem,
            cert_pem: &ca_pem,
            key_pem: &ca_key,
        };
        let answer = ask(
            &signer,
            Listed::RevokedForKeyCompromise,
            &der(&leaf_pem),
            &der(&ca_pem),
            now(),
        )
        .expect("RSA-signed response verifies");
        assert_eq!(
            answer.status,
            CertStatus::Revoked {
                at: REVOKED_AT,
                reason: Some(1)
            }
        );
        assert_eq!(answer.responder, "issuer");
    }

    #[test]
    fn delegated_responder_certified_for_ocsp_signing() {
        let ca = test_pki::ca("Test CA");
        let leaf = test_pki::leaf(&ca, SERIAL);
        let responder = test_pki::responder(&ca, true);
        let answer = ask(
            &by(&ca, &responder),
            Listed::Valid,
            &leaf.der,
            &ca.der,
            now(),
        )
        .expect("delegated response verifies");
        assert_eq!(answer.status, CertStatus::Good);
        assert_eq!(answer.responder, "delegated: CN=Test OCSP Responder");
    }

    #[test]
    fn rejects_signers_the_issuer_did_not_authorize() {
        let ca = test_pki::ca("Test CA");
        let leaf = test_pki::leaf(&ca, SERIAL);
        let without_eku = test_pki::responder(&ca, false);
        let stranger = test_pki::ca("Stranger");
        let stranger_responder = test_pki::responder(&stranger, true);
        let req = request(&leaf.der, &ca.der).expect("request builds");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "responder without id-kp-OCSPSigning",
                respond(&by(&ca, &without_eku), &Listed::Valid, &req, &[]),
                "OCSP response signed by CN=Test OCSP Responder, which is not an authorized \
                 responder: lacks extendedKeyUsage id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9)",
            ),
            (
                "responder certified by another CA",
                respond(&by(&ca, &stranger_responder), &Listed::Valid, &req, &[]),
                "OCSP response signed by CN=Test OCSP Responder, which is not an authorized \
                 responder: not certified by CN=Test CA",
            ),
            (
                "unrelated key, its certificate included",
                respond(
                    &by(&ca, &stranger_as_issued(&stranger)),
                    &Listed::Valid,
                    &req,
                    &[],
                ),
                "OCSP response signed by CN=Stranger, which is not an authorized responder: \
                 not certified by CN=Test CA",
            ),
            (
                "unrelated key, no certificate included",
                respond(
                    &by(&ca, &stranger_as_issued(&stranger)),
                    &Listed::Valid,
                    &req,
                    &["-resp_no_certs"],
                ),
                "OCSP response signature does not verify against the issuer or a delegated \
                 responder it certified",
            ),
        ];
        for (name, resp, message) in cases {
            match verify_response(&resp, &leaf.der, &ca.der, now()) {
                Ok(answer) => panic!("{name}: accepted {answer:?}"),
                Err(e) => assert_eq!(e.to_string(), message, "{name}"),
            }
        }
    }

    fn stranger_as_issued(ca: &Ca) -> Issued {
        Issued {
            der: ca.der.clone(),
            pem: ca.pem.clone(),
            key_pem: ca.key_pem.clone(),
        }
    }

    #[test]
    fn rejects_responses_about_something_else_or_out_of_date() {
        let ca = test_pki::ca("Test CA");
        let leaf = test_pki::leaf(&ca, SERIAL);
        let sibling = test_pki::leaf(&ca, &[0x11, 0x22]);
        let twin_ca = test_pki::ca("Test CA"); // same name, other key
        let twin_leaf = test_pki::leaf(&twin_ca, SERIAL);
        let req = request(&leaf.der, &ca.der).expect("request builds");
        let good = respond(&by_ca(&ca), &Listed::Valid, &req, &["-resp_no_certs"]);
        // Signed by the twin CA, but about the leaf of the original one.
        let twin_signed = respond(
            &Signer {
                ca_pem: &ca.pem,
                cert_pem: &twin_ca.pem,
                key_pem: &twin_ca.key_pem,
            },
            &Listed::Valid,
            &req,
            &[],
        );
        let mut tampered = good.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 0x01; // without certs, the signature is the last field
        }
        let t = now();
        let hex = crate::keys::hex(SERIAL);
        type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8], i64, String);
        let cases: Vec<Case<'_>> = vec![
            (
                "signature byte flipped",
                &tampered,
                &leaf.der,
                &ca.der,
                t,
                "OCSP response signature does not verify against the issuer or a delegated \
                 responder it certified"
                    .into(),
            ),
            (
                "another serial",
                &good,
                &sibling.der,
                &ca.der,
                t,
                format!("OCSP response is for serial {hex}, asked for 1122"),
            ),
            (
                "same serial and issuer name, other issuer key",
                &twin_signed,
                &twin_leaf.der,
                &twin_ca.der,
                t,
                format!("OCSP response for serial {hex} names a different issuer"),
            ),
            (
                "nextUpdate passed",
                &good,
                &leaf.der,
                &ca.der,
                t + 2 * DAY,
                "OCSP response expired (nextUpdate ".into(),
            ),
            (
                "thisUpdate ahead",
                &good,
                &leaf.der,
                &ca.der,
                t - DAY,
                "OCSP response not yet valid (thisUpdate ".into(),
            ),
            (
                "responder refused",
                &[0x30, 0x03, 0x0a, 0x01, 0x06],
                &leaf.der,
                &ca.der,
                t,
                "OCSP responder answered status unauthorized (6)".into(),
            ),
            (
                "truncated",
                &good[..good.len() - 1],
                &leaf.der,
                &ca.der,
                t,
                "malformed OCSP response: ".into(),
            ),
        ];
        for (name, resp, leaf_der, issuer_der, at, message) in cases {
            match verify_response(resp, leaf_der, issuer_der, at) {
                Ok(answer) => panic!("{name}: accepted {answer:?}"),
                Err(e) => assert!(
                    e.to_string().starts_with(&message),
                    "{name}: got {e:?} / {e}"
                ),
            }
        }
    }

    #[test]
    fn matches_a_sha256_cert_id() {
        let ca = test_pki::ca("Test CA");
        let leaf = test_pki::leaf(&ca, SERIAL);
        let req = build_request(&leaf.der, &ca.der, SHA256, &digest::SHA256).expect("builds");
        let resp = respond(&by_ca(&ca), &Listed::Valid, &req, &[]);
        let answer = verify_response(&resp, &leaf.der, &ca.der, now()).expect("verifies");
        assert_eq!(answer.status, CertStatus::Good);
    }

    #[test]
    fn request_refuses_a_leaf_from_another_issuer() {
        let ca = test_pki::ca("Test CA");
        let other = test_pki::ca("Other CA");
        let leaf = test_pki::leaf(&ca, SERIAL);
        let err = request(&leaf.der, &other.der).expect_err("wrong pair");
        assert_eq!(
            err.to_string(),
            "certificate issuer CN=Test CA is not the given issuer CN=Other CA"
        );
    }
}
