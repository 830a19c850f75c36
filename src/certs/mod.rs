//! Facts about an issued certificate chain, read from its PEM: serial,
//! issuer, validity, SANs, the leaf's key fingerprint and the identity of the
//! root the chain leads to. The policy's diversity check and the API's slot
//! view are built from these facts. Nothing here decides to trust a chain;
//! [`verify_chain`] only checks that it hangs together (a drill's check).

use x509_parser::extensions::ParsedExtension;
use x509_parser::pem::Pem;
use x509_parser::prelude::{GeneralName, X509Certificate};

use crate::domain::KeyFingerprint;
use crate::keys::{hex, spki_fingerprint};

/// What twincert records about an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// The leaf's issuer DN (the intermediate), RFC 4514 string.
    pub issuer: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The DNS names in the leaf's subjectAltName, as issued.
    pub dns_names: Vec<String>,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo.
    pub spki_sha256: KeyFingerprint,
    /// The root the chain leads to: the authority key identifier of the
    /// topmost certificate in the chain (hex), or its issuer DN when it has
    /// none. Two chains with the same value end at the same root.
    pub root_id: String,
    /// The leaf's authority key identifier (hex), needed for ARI/`replaces`.
    pub authority_key_id: Option<String>,
    /// Number of certificates in the chain (leaf included).
    pub chain_len: usize,
}

/// Why a chain could not be read.
#[derive(Debug, thiserror::Error)]
#[error("certificate chain from the CA is unreadable: {0}")]
pub struct ChainError(pub String);

/// The authority key identifier's keyIdentifier bytes, if any.
fn aki_bytes<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
}

fn aki(cert: &X509Certificate<'_>) -> Option<String> {
    aki_bytes(cert).map(hex)
}

/// The RFC 9773 §4.1 certificate identifier: base64url(AKI keyIdentifier)
/// "." base64url(serial DER bytes); `None` without an AKI.
fn ari_id(cert: &X509Certificate<'_>) -> Option<String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Some(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(aki_bytes(cert)?),
        URL_SAFE_NO_PAD.encode(cert.raw_serial())
    ))
}

/// The ARI certificate identifier of a leaf (DER), for renewal windows
/// and `replaces` (RFC 9773 §4.1); `None` when it has no AKI or does not
/// parse.
pub fn ari_cert_id(leaf_der: &[u8]) -> Option<String> {
    parse(leaf_der).ok().as_ref().and_then(ari_id)
}

/// Splits a PEM chain into DER certificates, leaf first.
pub fn chain_ders(chain_pem: &str) -> Result<Vec<Vec<u8>>, ChainError> {
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(chain_pem.as_bytes()) {
        let pem = pem.map_err(|e| ChainError(format!("bad PEM: {e}")))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(ChainError("no CERTIFICATE block".into()));
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ChainError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| ChainError(format!("bad certificate: {e}")))
}

/// Reads the facts of a PEM chain (leaf first, as ACME returns it,
/// RFC 8555 §7.4.2).
pub fn inspect_chain(chain_pem: &str) -> Result<CertFacts, ChainError> {
    let ders = chain_ders(chain_pem)?;
    let leaf = parse(&ders[0])?;
    let top = parse(ders.last().map(Vec::as_slice).unwrap_or(&ders[0]))?;
    let dns_names = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(ChainError(format!("bad subjectAltName: {e}"))),
    };
    Ok(CertFacts {
        serial: hex(leaf.raw_serial()),
        issuer: leaf.issuer().to_string(),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        dns_names,
        spki_sha256: spki_fingerprint(leaf.public_key().raw),
        root_id: aki(&top).unwrap_or_else(|| top.issuer().to_string()),
        authority_key_id: aki(&leaf),
        chain_len: ders.len(),
    })
}

/// Where a certificate's standing is published, read from the leaf in one
/// parse: the URLs of its CRL distribution points (RFC 5280 §4.2.1.13),
/// its OCSP responder (authority information access, RFC 5280 §4.2.2.1) —
/// http(s) only, LDAP is not fetched — and its ARI certificate id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSources {
    /// CRL distribution point URLs.
    pub crl_urls: Vec<String>,
    /// The OCSP responder URL.
    pub ocsp_url: Option<String>,
    /// The RFC 9773 certificate id (see [`ari_cert_id`]).
    pub ari_cert_id: Option<String>,
}

/// Reads a leaf's [`StatusSources`].
pub fn status_sources(leaf_der: &[u8]) -> Result<StatusSources, ChainError> {
    use x509_parser::extensions::DistributionPointName;
    let leaf = parse(leaf_der)?;
    let mut crls = Vec::new();
    let mut ocsp = None;
    let web = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(points) => {
                for p in &points.points {
                    if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n
                                && web(u)
                            {
                                crls.push(u.to_string());
                            }
                        }
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for d in aia.iter() {
                    if d.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1"
                        && let GeneralName::URI(u) = &d.access_location
                        && web(u)
                        && ocsp.is_none()
                    {
                        ocsp = Some(u.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(StatusSources {
        crl_urls: crls,
        ocsp_url: ocsp,
        ari_cert_id: ari_id(&leaf),
    })
}

/// Checks that a stored chain (leaf first) hangs together at `now`: every
/// certificate is within its validity, is issued by the next one (names)
/// and carries a signature that verifies with the next one's key. Says
/// nothing about the root being trusted. A signature algorithm that is not
/// verified here is an error too: a drill must not pass what it could not
/// check.
pub fn verify_chain(chain_pem: &str, now: i64) -> Result<(), ChainError> {
    use crate::revocation::der::{SignatureError, verify_signature};
    let ders = chain_ders(chain_pem)?;
    let parsed = ders
        .iter()
        .map(|d| parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in parsed.iter().enumerate() {
        let v = c.validity();
        if now < v.not_before.timestamp() || now >= v.not_after.timestamp() {
            return Err(ChainError(format!(
                "certificate {i} ({}) is not valid now (valid {} to {})",
                c.subject(),
                v.not_before,
                v.not_after
            )));
        }
    }
    if parsed.len() < 2 {
        return Err(ChainError(
            "the chain holds the leaf only; clients cannot build a path to a root".into(),
        ));
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(ChainError(format!(
                "certificate {i} ({}) is issued by {}, but the next one is {}",
                child.subject(),
                child.issuer(),
                parent.subject()
            )));
        }
        match verify_signature(
            &child.signature_algorithm,
            parent.public_key(),
            child.tbs_certificate.as_ref(),
            &child.signature_value.data,
        ) {
            Ok(()) => {}
            Err(SignatureError::Unsupported(alg)) => {
                return Err(ChainError(format!(
                    "the signature on certificate {i} uses {alg}, which is not verified here"
                )));
            }
            Err(SignatureError::Invalid) => {
                return Err(ChainError(format!(
                    "the signature on certificate {i} ({}) does not verify with the key of {}",
                    child.subject(),
                    parent.subject()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, IsCa, KeyPair};

    /// A root, an intermediate and a leaf made with rcgen, as a CA would
    /// return them (leaf first, root not included).
    fn chain() -> (String, KeyPair) {
        let root_key = KeyPair::generate().expect("key");
        let mut rp = CertificateParams::new(Vec::<String>::new()).expect("params");
        rp.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = rp.self_signed(&root_key).expect("root");
        let root_issuer = rcgen::Issuer::new(rp, &root_key);

        let int_key = KeyPair::generate().expect("key");
        let mut ip = CertificateParams::new(Vec::<String>::new()).expect("params");
        ip.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ip.use_authority_key_identifier_extension = true;
        let int = ip.signed_by(&int_key, &root_issuer).expect("int");
        let int_issuer = rcgen::Issuer::new(ip, &int_key);

        let leaf_key = KeyPair::generate().expect("key");
        let mut lp = CertificateParams::new(vec!["a.example.test".into(), "b.example.test".into()])
            .expect("params");
        lp.use_authority_key_identifier_extension = true;
        let leaf = lp.signed_by(&leaf_key, &int_issuer).expect("leaf");
        let _ = root;
        (format!("{}{}", leaf.pem(), int.pem()), leaf_key)
    }

    #[test]
    fn reads_the_facts_of_a_chain() {
        let (pem, leaf_key) = chain();
        let facts = inspect_chain(&pem).expect("facts");
        assert_eq!(facts.dns_names, ["a.example.test", "b.example.test"]);
        assert_eq!(facts.chain_len, 2);
        use rcgen::PublicKeyData;
        assert_eq!(
            facts.spki_sha256,
            spki_fingerprint(&leaf_key.subject_public_key_info())
        );
        assert!(facts.not_after > facts.not_before);
        assert!(facts.authority_key_id.is_some());
        assert_ne!(
            facts.root_id,
            facts.authority_key_id.clone().unwrap_or_default()
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(inspect_chain("not a pem").is_err());
        assert!(inspect_chain("").is_err());
    }

    #[test]
    fn ari_cert_id_is_aki_dot_serial_in_base64url() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![0x69, 0x88, 0x5b, 0x6b]);
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["a.test".to_string()]).expect("leaf");
        leaf.use_authority_key_identifier_extension = true;
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[
            0x00, 0x87, 0x65, 0x43, 0x21,
        ]));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &issuer).expect("sign");
        // The example of RFC 9773 §4.1: keyIdentifier 69:88:5B:6B…, serial
        // 00:87:65:43:21 → "aYhba…" "." "AIdlQyE".
        let id = ari_cert_id(cert.der()).expect("has AKI");
        assert_eq!(id, "aYhbaw.AIdlQyE");
        assert_eq!(
            status_sources(cert.der()).expect("sources").ari_cert_id,
            Some(id)
        );
    }
}
