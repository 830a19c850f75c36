//! Encryption at rest (invariant 5): private keys and ACME account
//! credentials are sealed with AES-256-GCM under a master key before they
//! reach the store. Every ciphertext carries the id of the master key that
//! sealed it, so keys can be rotated: configure the new key first and the
//! old ones after it; new data is sealed with the first, old data still
//! opens with its own.
//!
//! The associated data binds a ciphertext to its purpose (`"cert-key:<spki>"`,
//! `"account:<ca>"`), so a row's ciphertext copied into another row does not
//! decrypt.
//!
//! Master keys come from `TWINCERT_MASTER_KEY` or a file, in the form
//! `<key-id>:<base64 of 32 bytes>`, one per line or comma-separated.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The AEAD purpose (associated data) of a CA's sealed ACME account
/// credentials.
pub fn account_purpose(ca_id: &str) -> String {
    format!("acme account {ca_id}")
}

/// The AEAD purpose of an install package (`deploy::package`) while it
/// waits to be downloaded.
pub fn install_package_purpose(package_id: &str) -> String {
    format!("install package {package_id}")
}

/// The AEAD purpose of an install package's password while it waits to be
/// shown to an operator.
pub fn install_password_purpose(package_id: &str) -> String {
    format!("install package password {package_id}")
}

/// The AEAD purpose (associated data) of the sealed credentials of an
/// acme-dns account (provider id and domain).
pub fn acme_dns_purpose(provider_id: &str, domain: &str) -> String {
    format!("acme-dns account {provider_id} {domain}")
}

/// A sealed secret as stored: which master key, the nonce, the ciphertext
/// (with its GCM tag).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the master key that sealed it.
    pub key_id: String,
    /// 96-bit random nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 128-bit tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

/// Why sealing or opening failed. Messages never include key material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The master key text is malformed.
    #[error("invalid master key: {0}")]
    BadMasterKey(String),
    /// The ciphertext names a master key that is not configured.
    #[error("no master key with id '{0}' is configured (was it rotated out too early?)")]
    UnknownKeyId(String),
    /// Authentication failed: wrong key, tampered data or wrong purpose.
    #[error("decryption failed for a secret sealed under master key '{0}'")]
    Open(String),
    /// The crypto backend failed.
    #[error("encryption failed")]
    Seal,
}

struct MasterKey {
    id: String,
    key: LessSafeKey,
}

/// Seals with the current master key and opens with any configured one.
pub struct Sealer {
    keys: Vec<MasterKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

impl Sealer {
    /// Parses master keys from `text` (`id:base64`, newline- or
    /// comma-separated; `#` starts a comment line). The first is current.
    pub fn from_text(text: &str) -> Result<Sealer, SealError> {
        let mut keys = Vec::new();
        for (i, entry) in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
        {
            let (id, b64) = entry.split_once(':').ok_or_else(|| {
                SealError::BadMasterKey(format!(
                    "entry {} is not of the form <key-id>:<base64 of 32 bytes>",
                    i + 1
                ))
            })?;
            let id = id.trim();
            if id.is_empty() || id.len() > 64 {
                return Err(SealError::BadMasterKey(format!(
                    "entry {}: key id must be 1-64 characters",
                    i + 1
                )));
            }
            let raw = STANDARD.decode(b64.trim()).map_err(|_| {
                SealError::BadMasterKey(format!("key '{id}': value is not valid base64"))
            })?;
            if raw.len() != 32 {
                return Err(SealError::BadMasterKey(format!(
                    "key '{id}': decodes to {} bytes; AES-256 needs exactly 32",
                    raw.len()
                )));
            }
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(SealError::BadMasterKey(format!(
                    "key id '{id}' appears twice"
                )));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::Seal)?;
            keys.push(MasterKey {
                id: id.to_string(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(SealError::BadMasterKey("no key given".into()));
        }
        Ok(Sealer {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// A new random master key in the text form [`Sealer::from_text`] reads,
    /// for the local/demo mode and for operators rotating keys.
    pub fn generate_text(id: &str) -> Result<String, SealError> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| SealError::Seal)?;
        Ok(format!("{id}:{}", STANDARD.encode(raw)))
    }

    /// Every configured master key id, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Whether a master key with this id is configured.
    pub fn has_key_id(&self, id: &str) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Opens `sealed` and seals its plaintext again under the current
    /// master key, for the same `purpose`; the plaintext never leaves this
    /// module. Used by `twincert keys reseal` to retire an old master key.
    pub fn reseal(&self, purpose: &str, sealed: &Sealed) -> Result<Sealed, SealError> {
        let mut plain = self.open(purpose, sealed)?;
        let out = self.seal(purpose, &plain);
        plain.iter_mut().for_each(|b| *b = 0);
        out
    }

    /// The id new ciphertexts are sealed under.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Encrypts `plaintext` for `purpose` under the current master key.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut buf = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    /// Decrypts `sealed`, which must have been sealed for the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKeyId(sealed.key_id.clone()))?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce)
            .map_err(|_| SealError::Open(sealed.key_id.clone()))?;
        let mut buf = sealed.ciphertext.clone();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open(sealed.key_id.clone()))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_rotation() {
        let old = Sealer::generate_text("k1").expect("gen");
        let new = Sealer::generate_text("k2").expect("gen");
        let s1 = Sealer::from_text(&old).expect("parse");
        let sealed = s1.seal("cert-key:abc", b"secret").expect("seal");
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"secret"));

        let rotated = Sealer::from_text(&format!("{new}\n{old}")).expect("parse");
        assert_eq!(rotated.current_key_id(), "k2");
        assert_eq!(
            rotated.open("cert-key:abc", &sealed).expect("open"),
            b"secret"
        );
        assert_eq!(rotated.seal("p", b"x").expect("seal").key_id, "k2");
    }

    #[test]
    fn reseal_moves_a_secret_to_the_current_key_for_the_same_purpose() {
        let old = Sealer::generate_text("k1").expect("gen");
        let new = Sealer::generate_text("k2").expect("gen");
        let sealed = Sealer::from_text(&old)
            .expect("parse")
            .seal("p", b"secret")
            .expect("seal");
        let both = Sealer::from_text(&format!("{new},{old}")).expect("parse");
        let moved = both.reseal("p", &sealed).expect("reseal");
        assert_eq!(moved.key_id, "k2");
        let only_new = Sealer::from_text(&new).expect("parse");
        assert_eq!(only_new.open("p", &moved).expect("open"), b"secret");
        assert!(both.reseal("other purpose", &sealed).is_err());
        assert_eq!(both.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
    }

    #[test]
    fn wrong_purpose_or_missing_key_fails() {
        let s = Sealer::from_text(&Sealer::generate_text("k1").expect("gen")).expect("parse");
        let sealed = s.seal("account:a", b"creds").expect("seal");
        assert!(matches!(
            s.open("account:b", &sealed),
            Err(SealError::Open(_))
        ));
        let other = Sealer::from_text(&Sealer::generate_text("k9").expect("gen")).expect("parse");
        assert!(matches!(
            other.open("account:a", &sealed),
            Err(SealError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn malformed_master_keys_are_named() {
        let cases = [
            ("", "no key"),
            ("nocolon", "form"),
            ("k1:!!!", "base64"),
            ("k1:AAAA", "32"),
        ];
        for (text, why) in cases {
            let e = Sealer::from_text(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(!e.contains("AAAA"), "must not echo key material: {e}");
        }
    }
}
