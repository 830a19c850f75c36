//! The low-level pieces [`super::crl`] and [`super::ocsp`] share: a strict
//! DER reader/writer (OCSP, RFC 6960, is not in x509-parser, so its messages
//! are read and written here), signature verification with aws-lc-rs, and
//! the clock-skew rule both apply to thisUpdate/nextUpdate.
//!
//! The reader accepts only DER: single-byte tags, definite minimal lengths,
//! every read bounds-checked. It never panics on input; it has no notion of
//! ASN.1 modules — callers walk the structure they expect, tag by tag.
//! Under `cfg(test)` it also holds the certificate fixtures both test suites
//! use (`test_pki`).

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// Seconds of disagreement between our clock and the CA's that we tolerate
/// on thisUpdate / nextUpdate before calling an answer premature or stale.
pub(crate) const CLOCK_SKEW: i64 = 5 * 60;

/// RFC 3339 rendering of unix seconds, for error messages.
pub(crate) fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const ENUMERATED: u8 = 0x0a;
pub(crate) const GENERALIZED_TIME: u8 = 0x18;
pub(crate) const SEQUENCE: u8 = 0x30;

/// Tag of a context-specific constructed field `[n]` (EXPLICIT tagging, or
/// IMPLICIT tagging of a SEQUENCE).
pub(crate) const fn context(n: u8) -> u8 {
    0xa0 | n
}

/// Tag of a context-specific primitive field `[n]` (IMPLICIT tagging of a
/// primitive type, e.g. OCSP's `good [0] IMPLICIT NULL`).
pub(crate) const fn context_primitive(n: u8) -> u8 {
    0x80 | n
}

/// One decoded element: its tag, its content, and its whole encoding (the
/// bytes a signature covers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads consecutive elements from a byte slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element, whatever its tag.
    pub(crate) fn read(&mut self) -> Result<Tlv<'a>, String> {
        let (&tag, after_tag) = self.rest.split_first().ok_or("unexpected end of data")?;
        if tag & 0x1f == 0x1f {
            return Err(format!("multi-byte tag 0x{tag:02x} not supported"));
        }
        let (len, header_len) = read_length(after_tag)?;
        let total = 1 + header_len + len;
        if self.rest.len() < total {
            return Err(format!(
                "element with tag 0x{tag:02x} claims {len} bytes, only {} left",
                self.rest.len() - 1 - header_len
            ));
        }
        let raw = &self.rest[..total];
        self.rest = &self.rest[total..];
        Ok(Tlv {
            tag,
            content: &raw[1 + header_len..],
            raw,
        })
    }

    /// The next element, which must carry `tag`.
    pub(crate) fn take(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let tlv = self.read().map_err(|e| format!("{what}: {e}"))?;
        if tlv.tag != tag {
            return Err(format!(
                "{what}: expected tag 0x{tag:02x}, found 0x{:02x}",
                tlv.tag
            ));
        }
        Ok(tlv)
    }

    /// The next element if it carries `tag` (an OPTIONAL or DEFAULT field).
    pub(crate) fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, String> {
        match self.rest.first() {
            Some(&t) if t == tag => self.read().map(Some),
            _ => Ok(None),
        }
    }

    /// Fails if anything is left: trailing bytes mean we misread the structure.
    pub(crate) fn finish(&self, what: &str) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {} unexpected trailing bytes",
                self.rest.len()
            ))
        }
    }
}

/// Decodes a definite, minimally encoded length; returns (length, bytes used).
fn read_length(bytes: &[u8]) -> Result<(usize, usize), String> {
    let (&first, rest) = bytes.split_first().ok_or("missing length")?;
    if first < 0x80 {
        return Ok((usize::from(first), 1));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 {
        return Err("indefinite length is not DER".into());
    }
    if count > 4 || rest.len() < count {
        return Err(format!("unsupported or truncated {count}-byte length"));
    }
    let len = rest[..count]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if len < 0x80 || rest[0] == 0 {
        return Err("non-minimal length is not DER".into());
    }
    Ok((len, 1 + count))
}

/// Encodes one element.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already encoded elements.
pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

pub(crate) fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, content)
}

/// An INTEGER from its content bytes as found in a certificate (already
/// two's-complement and minimal, so copied as they are).
pub(crate) fn integer_raw(content: &[u8]) -> Vec<u8> {
    tlv(INTEGER, content)
}

/// An OBJECT IDENTIFIER from its encoded content bytes.
pub(crate) fn oid(content: &[u8]) -> Vec<u8> {
    tlv(OID, content)
}

pub(crate) fn null() -> Vec<u8> {
    tlv(NULL, &[])
}

/// Why a signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The signature algorithm (OID given) or the key's curve is not one we
    /// verify; the caller cannot tell good from bad, so it must not believe.
    Unsupported(String),
    /// The signature is wrong, or the key cannot have made it.
    Invalid,
}

/// Verifies `signature` over `message` with `spki`, `alg` being the signed
/// object's outer signatureAlgorithm. Covers what public CAs use: RSA PKCS#1
/// v1.5 with SHA-256/384/512, ECDSA P-256/P-384 with SHA-256/384, Ed25519.
pub(crate) fn verify_signature(
    alg: &AlgorithmIdentifier<'_>,
    spki: &SubjectPublicKeyInfo<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let verifier = algorithm_for(alg, spki)?;
    // RSA wants the RSAPublicKey DER, ECDSA the uncompressed point, Ed25519
    // the raw key: in each case the BIT STRING contents.
    UnparsedPublicKey::new(verifier, &spki.subject_public_key.data)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

fn algorithm_for(
    alg: &AlgorithmIdentifier<'_>,
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static dyn VerificationAlgorithm, SignatureError> {
    let sig_oid = alg.algorithm.to_id_string();
    let key_oid = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    const RSA: &str = "1.2.840.113549.1.1.1";
    const EC: &str = "1.2.840.10045.2.1";
    const ED25519: &str = "1.3.101.112";
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    let ecdsa = |p256: &'static dyn VerificationAlgorithm,
                 p384: &'static dyn VerificationAlgorithm| {
        if key_oid != EC {
            return Err(SignatureError::Invalid);
        }
        match curve.as_deref() {
            Some(P256) => Ok(p256),
            Some(P384) => Ok(p384),
            other => Err(SignatureError::Unsupported(format!(
                "{sig_oid} on curve {}",
                other.unwrap_or("<none>")
            ))),
        }
    };
    let rsa = |v: &'static dyn VerificationAlgorithm| {
        if key_oid == RSA {
            Ok(v)
        } else {
            Err(SignatureError::Invalid)
        }
    };
    match sig_oid.as_str() {
        "1.2.840.113549.1.1.11" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "1.2.840.113549.1.1.12" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "1.2.840.113549.1.1.13" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "1.2.840.10045.4.3.2" => ecdsa(
            &signature::ECDSA_P256_SHA256_ASN1,
            &signature::ECDSA_P384_SHA256_ASN1,
        ),
        "1.2.840.10045.4.3.3" => ecdsa(
            &signature::ECDSA_P256_SHA384_ASN1,
            &signature::ECDSA_P384_SHA384_ASN1,
        ),
        ED25519 if key_oid == ED25519 => Ok(&signature::ED25519),
        ED25519 => Err(SignatureError::Invalid),
        _ => Err(SignatureError::Unsupported(sig_oid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_including_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![0x42; len];
            let encoded = octet_string(&content);
            let mut r = Reader::new(&encoded);
            let t = r.take(OCTET_STRING, "test").expect("reads back");
            assert_eq!(t.content, &content[..], "length {len}");
            assert_eq!(t.raw, &encoded[..]);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_what_is_not_der() {
        let cases: &[(&str, &[u8])] = &[
            ("empty", &[]),
            ("no length", &[0x04]),
            ("indefinite", &[0x30, 0x80, 0x00, 0x00]),
            ("non-minimal long form", &[0x04, 0x81, 0x01, 0x00]),
            ("leading zero length", &[0x04, 0x82, 0x00, 0x80]),
            ("content past end", &[0x04, 0x05, 0x00]),
            ("long length past end", &[0x04, 0x82, 0x01]),
            ("multi-byte tag", &[0x1f, 0x81, 0x01, 0x00]),
        ];
        for (name, bytes) in cases {
            assert!(Reader::new(bytes).read().is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn take_optional_and_finish() {
        let encoded = sequence(&[&null(), &integer_raw(&[0x01])]);
        let mut outer = Reader::new(&encoded);
        let seq = outer.take(SEQUENCE, "seq").expect("sequence");
        let mut inner = Reader::new(seq.content);
        assert!(inner.optional(INTEGER).expect("ok").is_none());
        assert!(inner.take(INTEGER, "int").is_err());
        let mut inner = Reader::new(seq.content);
        inner.take(NULL, "null").expect("null");
        assert!(inner.finish("seq").is_err());
        inner.take(INTEGER, "int").expect("int");
        inner.finish("seq").expect("nothing left");
    }
}

/// Certificates for the CRL and OCSP tests: CAs, leaves and OCSP responder
/// certificates made with rcgen, each with its PEM and key so the `openssl`
/// CLI can use them too.
#[cfg(test)]
pub(crate) mod test_pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
    };

    /// A CA able to sign certificates and CRLs.
    pub(crate) struct Ca {
        pub der: Vec<u8>,
        pub pem: String,
        pub key_pem: String,
        pub issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate issued by a [`Ca`], with its key.
    pub(crate) struct Issued {
        pub der: Vec<u8>,
        pub pem: String,
        pub key_pem: String,
    }

    fn named(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params
    }

    /// A self-signed ECDSA P-256 CA.
    pub(crate) fn ca(cn: &str) -> Ca {
        ca_with_key(cn, KeyPair::generate().expect("P-256 key"))
    }

    /// A self-signed RSA-2048 CA signing with sha256WithRSAEncryption, as
    /// Pebble's.
    pub(crate) fn rsa_ca(cn: &str) -> Ca {
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .expect("RSA key");
        ca_with_key(cn, key)
    }

    fn ca_with_key(cn: &str, key: KeyPair) -> Ca {
        let mut params = named(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(ca: &Ca, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("P-256 key");
        let cert = params.signed_by(&key, &ca.issuer).expect("signed by CA");
        Issued {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// An end-entity certificate with this serial (INTEGER content bytes).
    pub(crate) fn leaf(ca: &Ca, serial: &[u8]) -> Issued {
        let mut params = named("leaf.example");
        params.serial_number = Some(SerialNumber::from_slice(serial));
        issue(ca, params)
    }

    /// A delegated OCSP responder certificate, with or without the
    /// id-kp-OCSPSigning extended key usage.
    pub(crate) fn responder(ca: &Ca, ocsp_signing: bool) -> Issued {
        let mut params = named("Test OCSP Responder");
        if ocsp_signing {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        issue(ca, params)
    }
}
