//! OCSP (RFC 6960) for CAs that still run it: builds the request for one
//! certificate and believes a response only after checking who signed it.
//!
//! Pure: no I/O, the time comes in as `now`. x509-parser has no OCSP, so the
//! messages are read and written with the strict DER reader in
//! [`super::der`]; certificates inside them are parsed with x509-parser.
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
    Good,
    /// `at` in unix seconds; `reason` is the RFC 5280 CRLReason code, when
    /// the responder gave one (1 = keyCompromise: retire the key too).
    Revoked {
        at: i64,
        reason: Option<u8>,
    },
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
    /// "issuer" when signed by the issuer's key, else
    /// "delegated: <responder subject>", so an operator can see who vouched.
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
    let (leaf, issuer) = parse_pair(leaf_der, issuer_der)?;
    let (name_hash, key_hash) = issuer_hashes(&issuer, &digest::SHA1_FOR_LEGACY_USE_ONLY);
    let hash_algorithm = der::sequence(&[&der::oid(SHA1), &der::null()]);
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
    let response = outer.expect(SEQUENCE, "OCSPResponse").map_err(malformed)?;
    outer.finish("OCSPResponse").map_err(malformed)?;
    let mut fields = Reader::new(response.content);
    let status = fields
        .expect(ENUMERATED, "responseStatus")
        .and_then(small_unsigned)
        .map_err(malformed)?;
    if status != 0 {
        return Err(OcspError::ResponderStatus {
            code: status,
            name: status_name(status),
        });
    }
    let bytes = fields
        .expect(context(0), "responseBytes")
        .map_err(malformed)?;
    fields.finish("OCSPResponse").map_err(malformed)?;
    let mut explicit = Reader::new(bytes.content);
    let seq = explicit
        .expect(SEQUENCE, "ResponseBytes")
        .map_err(malformed)?;
    explicit.finish("responseBytes").map_err(malformed)?;
    let mut rb = Reader::new(seq.content);
    let response_type = rb.expect(OID, "responseType").map_err(malformed)?;
    let response = rb.expect(OCTET_STRING, "response").map_err(malformed)?;
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
        let basic = outer.expect(SEQUENCE, "BasicOCSPResponse")?;
        outer.finish("BasicOCSPResponse")?;
        let mut fields = Reader::new(basic.content);
        let tbs = fields.expect(SEQUENCE, "tbsResponseData")?;
        let alg = fields.expect(SEQUENCE, "signatureAlgorithm")?;
        let signature = fields.expect(BIT_STRING, "signature")?;
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
    if let Some(version) = fields.optional(context(0))? {
        if version.content != [der::INTEGER, 1, 0] {
            return Err("unsupported ResponseData version".into());
        }
    }
    let responder_id = fields.read()?;
    if responder_id.tag != context(1) && responder_id.tag != context(2) {
        return Err(format!(
            "responderID: unexpected tag 0x{:02x}",
            responder_id.tag
        ));
    }
    let produced_at = generalized_time(fields.expect(GENERALIZED_TIME, "producedAt")?)?;
    let list = fields.expect(SEQUENCE, "responses")?;
    fields.optional(context(1))?; // responseExtensions (e.g. a nonce): not used
    fields.finish("ResponseData")?;
    let mut items = Reader::new(list.content);
    let mut responses = Vec::new();
    while !items.is_empty() {
        responses.push(parse_single(items.expect(SEQUENCE, "SingleResponse")?)?);
    }
    Ok((produced_at, responses))
}

fn parse_single(single: Tlv<'_>) -> Result<SingleResponse<'_>, String> {
    let mut fields = Reader::new(single.content);
    let cert_id = fields.expect(SEQUENCE, "certID")?;
    let status = parse_cert_status(fields.read()?)?;
    let this_update = generalized_time(fields.expect(GENERALIZED_TIME, "thisUpdate")?)?;
    let next_update = match fields.optional(context(0))? {
        Some(explicit) => Some(generalized_time(
            Reader::new(explicit.content).expect(GENERALIZED_TIME, "nextUpdate")?,
        )?),
        None => None,
    };
    fields.optional(context(1))?; // singleExtensions: not used
    fields.finish("SingleResponse")?;

    let mut id = Reader::new(cert_id.content);
    let alg = id.expect(SEQUENCE, "hashAlgorithm")?;
    let issuer_name_hash = id.expect(OCTET_STRING, "issuerNameHash")?.content;
    let issuer_key_hash = id.expect(OCTET_STRING, "issuerKeyHash")?.content;
    let serial = id.expect(der::INTEGER, "serialNumber")?.content;
    id.finish("CertID")?;
    // Parameters are NULL or absent for SHA-1/SHA-2; neither matters here.
    let hash_algorithm = Reader::new(alg.content)
        .expect(OID, "hashAlgorithm")?
        .content;
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
            let at = generalized_time(info.expect(GENERALIZED_TIME, "revocationTime")?)?;
            let reason = match info.optional(context(0))? {
                Some(explicit) => Some(small_unsigned(
                    Reader::new(explicit.content).expect(ENUMERATED, "revocationReason")?,
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
    let list = outer.expect(SEQUENCE, "certs")?;
    outer.finish("certs")?;
    let mut items = Reader::new(list.content);
    let mut certs = Vec::new();
    while !items.is_empty() {
        certs.push(items.expect(SEQUENCE, "certs")?.raw);
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
