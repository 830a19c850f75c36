//! Certificate keys: generation (a fresh key for every issuance, invariant 2),
//! CSRs, SubjectPublicKeyInfo fingerprints, and encryption at rest
//! ([`seal`]). Nothing here does I/O; the store persists what this module
//! produces and never sees a plaintext key.

pub mod seal;

use aws_lc_rs::digest;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, RsaKeySize};

use crate::domain::{DnsName, KeyFingerprint, KeyType};

/// Why a key or CSR could not be made. These are bugs or resource problems,
/// never user input errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// rcgen or the crypto backend refused.
    #[error("key operation failed: {0}")]
    Crypto(String),
    /// A stored key could not be decrypted.
    #[error("cannot unseal the key: {0}")]
    Unseal(#[from] seal::SealError),
}

/// The AEAD purpose (associated data) of sealed certificate keys.
pub const KEY_PURPOSE: &str = "twincert private key";

/// A freshly generated certificate key. `Debug` never shows the secret.
pub struct CertKey {
    key_type: KeyType,
    pair: KeyPair,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("key_type", &self.key_type)
            .field("spki_sha256", &self.fingerprint().0)
            .finish_non_exhaustive()
    }
}

impl CertKey {
    /// Generates a new key of `key_type`. Each call returns a key never seen
    /// before (the store additionally refuses a repeated fingerprint).
    pub fn generate(key_type: KeyType) -> Result<CertKey, KeyError> {
        let pair = match key_type {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
        }
        .map_err(|e| KeyError::Crypto(format!("generating {key_type} key: {e}")))?;
        Ok(CertKey { key_type, pair })
    }

    /// Restores a key from its PKCS#8 DER (after [`seal::Sealer::open`]).
    pub fn from_pkcs8_der(key_type: KeyType, der: &[u8]) -> Result<CertKey, KeyError> {
        let alg = match key_type {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        };
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, alg)
            .map_err(|e| KeyError::Crypto(format!("loading {key_type} key: {e}")))?;
        Ok(CertKey { key_type, pair })
    }

    /// Decrypts a stored key (sealed by [`CertKey::seal`]): the one way a
    /// certificate key leaves the store in the clear.
    pub fn unseal(
        sealer: &seal::Sealer,
        key_type: KeyType,
        sealed: &seal::Sealed,
    ) -> Result<CertKey, KeyError> {
        CertKey::from_pkcs8_der(key_type, &sealer.open(KEY_PURPOSE, sealed)?)
    }

    /// The key encrypted for storage.
    pub fn seal(&self, sealer: &seal::Sealer) -> Result<seal::Sealed, KeyError> {
        Ok(sealer.seal(KEY_PURPOSE, &self.pkcs8_der())?)
    }

    /// The key's algorithm.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The private key as PKCS#8 DER: the plaintext to seal. Callers must
    /// not log or persist it unsealed.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.pair.serialize_der()
    }

    /// The private key as PEM, for the key download endpoint only.
    pub fn pkcs8_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// SHA-256 of the SPKI: what the diversity and fresh-key checks compare.
    pub fn fingerprint(&self) -> KeyFingerprint {
        spki_fingerprint(&self.spki_der())
    }

    /// A DER CSR for `domains` (all of them as SANs, empty subject as CAs
    /// ignore it), signed by this key; passed to `finalize_csr`.
    pub fn csr_der(&self, domains: &[DnsName]) -> Result<Vec<u8>, KeyError> {
        let sans: Vec<String> = domains.iter().map(|d| d.as_str().to_string()).collect();
        let mut params = CertificateParams::new(sans)
            .map_err(|e| KeyError::Crypto(format!("building CSR: {e}")))?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&self.pair)
            .map_err(|e| KeyError::Crypto(format!("signing CSR: {e}")))?;
        Ok(csr.der().to_vec())
    }
}

/// SHA-256 over a DER SubjectPublicKeyInfo, as lower-case hex.
pub fn spki_fingerprint(spki_der: &[u8]) -> KeyFingerprint {
    KeyFingerprint(hex(digest::digest(&digest::SHA256, spki_der).as_ref()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_generates_fresh_keys_and_round_trips() {
        for kt in KeyType::ALL {
            let a = CertKey::generate(kt).expect("generate");
            let b = CertKey::generate(kt).expect("generate");
            assert_ne!(a.fingerprint(), b.fingerprint(), "{kt}: keys must differ");
            let back = CertKey::from_pkcs8_der(kt, &a.pkcs8_der()).expect("reload");
            assert_eq!(back.fingerprint(), a.fingerprint());
            let domains = [DnsName::parse("a.example.test").expect("name")];
            assert!(!a.csr_der(&domains).expect("csr").is_empty());
        }
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let k = CertKey::generate(KeyType::EcdsaP256).expect("generate");
        let shown = format!("{k:?}");
        assert!(!shown.contains("PRIVATE"));
        assert!(shown.contains(&k.fingerprint().0));
    }
}
