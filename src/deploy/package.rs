//! Install packages for `manual` destinations: what a server's
//! administrator receives when twincert cannot write to the server itself.
//!
//! A package is one tar archive holding
//!
//! * `NAME.p12` — PKCS#12 (RFC 7292) with the private key and the full
//!   chain, both encrypted with PBES2 (RFC 8018 §6.2): PBKDF2-HMAC-SHA256
//!   and AES-256-CBC, the way OpenSSL 3 writes it by default — never the
//!   legacy RC2/3DES schemes OpenSSL 3 refuses; integrity by an
//!   HMAC-SHA256 MAC keyed through the PKCS#12 KDF (RFC 7292 Appendix B);
//! * `NAME.pem` — the same key as an encrypted PKCS#8 block
//!   (`-----BEGIN ENCRYPTED PRIVATE KEY-----`, RFC 5958 §3, same PBES2
//!   parameters) followed by the full chain, leaf first: the form nginx,
//!   Apache, HAProxy and Postfix accept with a pass phrase;
//! * `README.txt` — what to install where (written by the caller).
//!
//! Both are encrypted under one random [`new_password`]; the password
//! never travels with the package.
//!
//! The DER is assembled here by hand (a dozen fixed structures) with the
//! primitives of aws-lc-rs, which twincert already links, rather than
//! pulling a PKCS#12 crate and its RustCrypto cipher stack: the output is
//! checked against the system `openssl` in the tests.
//!
//! Nothing here reads the store, the configuration or the clock; the
//! plaintext key only passes through.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{AES_256, EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey};
use aws_lc_rs::{digest, hmac, pbkdf2, rand};
use base64::Engine as _;

/// PBKDF2 rounds. The password is random (120 bits), so the work factor
/// matters little; it is well above OpenSSL's default (2048) and cheap
/// for the administrator's one import.
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// Rounds of the PKCS#12 MAC key derivation (OpenSSL's default; some
/// importers are slow with more).
const MAC_ITERATIONS: u32 = 2048;
/// Characters of a package password: no look-alikes (0/O, 1/l/I).
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
/// Length of a package password: 24 × log2(57) ≈ 140 bits.
pub const PASSWORD_LEN: usize = 24;

/// Why a package could not be built. Never contains key material or the
/// password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The stored chain holds no certificate.
    #[error("the certificate chain holds no PEM certificate")]
    NoCertificate,
    /// The stored chain is not valid PEM.
    #[error("the certificate chain is unreadable: {0}")]
    Chain(String),
    /// The crypto backend (RNG, cipher) failed.
    #[error("the crypto backend failed while building the package")]
    Crypto,
}

/// A built package's two files.
pub struct Package {
    /// PKCS#12 (DER).
    pub p12: Vec<u8>,
    /// Encrypted PKCS#8 key, then the chain (PEM).
    pub pem: String,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("p12_len", &self.p12.len())
            .field("pem_len", &self.pem.len())
            .finish()
    }
}

/// A fresh random package password, [`PASSWORD_LEN`] characters from an
/// alphabet without look-alikes.
pub fn new_password() -> Result<String, PackageError> {
    let mut out = String::with_capacity(PASSWORD_LEN);
    // Rejection sampling: no bias toward the first characters.
    let limit = 256 - 256 % PASSWORD_ALPHABET.len();
    while out.len() < PASSWORD_LEN {
        let mut b = [0u8; 32];
        rand::fill(&mut b).map_err(|_| PackageError::Crypto)?;
        for x in b {
            if (x as usize) < limit && out.len() < PASSWORD_LEN {
                out.push(PASSWORD_ALPHABET[x as usize % PASSWORD_ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Builds the PKCS#12 file and the encrypted PEM bundle for the key
/// (PKCS#8 DER) and its chain (PEM, leaf first), both under `password`.
/// `friendly_name` labels the key and leaf inside the PKCS#12 (what
/// Windows and Java key stores show).
pub fn build(
    friendly_name: &str,
    key_pkcs8_der: &[u8],
    chain_pem: &str,
    password: &str,
) -> Result<Package, PackageError> {
    let certs =
        crate::certs::chain_ders(chain_pem).map_err(|e| PackageError::Chain(e.to_string()))?;
    let leaf = certs.first().ok_or(PackageError::NoCertificate)?;
    let local_key_id = digest::digest(&digest::SHA256, leaf).as_ref().to_vec();
    let pw = password.as_bytes();

    let epki = encrypted_private_key_info(pw, key_pkcs8_der)?;
    let mut pem = pem_block("ENCRYPTED PRIVATE KEY", &epki);
    for c in &certs {
        pem.push_str(&pem_block("CERTIFICATE", c));
    }

    let attrs = |with: bool| -> Vec<u8> {
        if !with {
            return Vec::new();
        }
        set(&[
            &seq(&[
                &oid(OID_FRIENDLY_NAME),
                &set(&[&tlv(0x1E, &bmp_string(friendly_name))]),
            ]),
            &seq(&[&oid(OID_LOCAL_KEY_ID), &set(&[&octets(&local_key_id)])]),
        ])
    };
    // The certificates: one SafeContents, encrypted (EncryptedData).
    let mut cert_bags = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let cert_bag = seq(&[&oid(OID_X509_CERTIFICATE), &explicit0(&octets(c))]);
        cert_bags.push(seq(&[
            &oid(OID_CERT_BAG),
            &explicit0(&cert_bag),
            &attrs(i == 0),
        ]));
    }
    let cert_contents = seq(&cert_bags.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let (alg, ct) = pbes2_encrypt(pw, &cert_contents)?;
    let encrypted_data = seq(&[&int(0), &seq(&[&oid(OID_DATA), &alg, &tlv(0x80, &ct)])]);
    let certs_ci = seq(&[&oid(OID_ENCRYPTED_DATA), &explicit0(&encrypted_data)]);
    // The key: a shrouded key bag in a plain SafeContents (the bag itself
    // is the encryption, as OpenSSL writes it).
    let key_bag = seq(&[&oid(OID_SHROUDED_KEY_BAG), &explicit0(&epki), &attrs(true)]);
    let key_ci = seq(&[&oid(OID_DATA), &explicit0(&octets(&seq(&[&key_bag])))]);
    let auth_safe = seq(&[&certs_ci, &key_ci]);

    // RFC 7292 §4: the MAC covers the AuthenticatedSafe's encoding.
    let mut mac_salt = [0u8; 16];
    rand::fill(&mut mac_salt).map_err(|_| PackageError::Crypto)?;
    let mac_key = pkcs12_kdf_sha256(password, &mac_salt, 3, MAC_ITERATIONS);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mac_key), &auth_safe);
    let mac_data = seq(&[
        &seq(&[&seq(&[&oid(OID_SHA256), &NULL]), &octets(tag.as_ref())]),
        &octets(&mac_salt),
        &int(MAC_ITERATIONS),
    ]);
    let pfx = seq(&[
        &int(3),
        &seq(&[&oid(OID_DATA), &explicit0(&octets(&auth_safe))]),
        &mac_data,
    ]);
    Ok(Package { p12: pfx, pem })
}

/// A ustar archive of `files` (name, content), each readable by its owner
/// only once unpacked (mode 0600), with `mtime` as their time.
pub fn tar(files: &[(&str, &[u8])], mtime: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let name = name.as_bytes();
        let n = name.len().min(99);
        h[..n].copy_from_slice(&name[..n]);
        put_octal(&mut h[100..108], 0o600);
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[124..136], data.len() as u64);
        put_octal(&mut h[136..148], mtime.max(0) as u64);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Writes `v` as zero-padded octal digits and a NUL into `field`.
fn put_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s);
    field[digits] = 0;
}

/// `-----BEGIN label-----`, base64 in 64-column lines, `-----END label-----`.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// EncryptedPrivateKeyInfo (RFC 5958 §3) under PBES2.
fn encrypted_private_key_info(password: &[u8], pkcs8: &[u8]) -> Result<Vec<u8>, PackageError> {
    let (alg, ct) = pbes2_encrypt(password, pkcs8)?;
    Ok(seq(&[&alg, &octets(&ct)]))
}

/// Encrypts with PBES2 (RFC 8018 §6.2): PBKDF2-HMAC-SHA256 with a random
/// 16-byte salt, AES-256-CBC with a random IV and PKCS#7 padding. Returns
/// the AlgorithmIdentifier and the ciphertext.
fn pbes2_encrypt(password: &[u8], plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), PackageError> {
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::fill(&mut salt).map_err(|_| PackageError::Crypto)?;
    rand::fill(&mut iv).map_err(|_| PackageError::Crypto)?;
    let mut key = [0u8; 32];
    let rounds = NonZeroU32::new(PBKDF2_ITERATIONS).ok_or(PackageError::Crypto)?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password,
        &mut key,
    );
    let cipher = UnboundCipherKey::new(&AES_256, &key)
        .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
        .map_err(|_| PackageError::Crypto)?;
    key.iter_mut().for_each(|b| *b = 0);
    let mut buf = plain.to_vec();
    cipher
        .less_safe_encrypt(&mut buf, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| PackageError::Crypto)?;
    let alg = seq(&[
        &oid(OID_PBES2),
        &seq(&[
            &seq(&[
                &oid(OID_PBKDF2),
                &seq(&[
                    &octets(&salt),
                    &int(PBKDF2_ITERATIONS),
                    &seq(&[&oid(OID_HMAC_SHA256), &NULL]),
                ]),
            ]),
            &seq(&[&oid(OID_AES256_CBC), &octets(&iv)]),
        ]),
    ]);
    Ok((alg, buf))
}

/// The PKCS#12 key derivation (RFC 7292 Appendix B.2) with SHA-256
/// (u = 32, v = 64), for one 32-byte key: the MAC key when `id` is 3.
fn pkcs12_kdf_sha256(password: &str, salt: &[u8], id: u8, iterations: u32) -> [u8; 32] {
    const V: usize = 64;
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = V * src.len().div_ceil(V);
        src.iter().cycle().take(len).copied().collect()
    };
    // The password as a BMPString with its two-byte terminator.
    let mut p = bmp_string(password);
    p.extend_from_slice(&[0, 0]);
    let mut input = vec![id; V];
    input.extend(fill(salt));
    input.extend(fill(&p));
    let mut a = digest::digest(&digest::SHA256, &input);
    for _ in 1..iterations {
        a = digest::digest(&digest::SHA256, a.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(a.as_ref());
    out
}

/// UTF-16 big-endian, as BMPString holds it.
fn bmp_string(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

// Object identifiers, as arcs.
const OID_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
const OID_ENCRYPTED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 6];
const OID_SHROUDED_KEY_BAG: &[u64] = &[1, 2, 840, 113549, 1, 12, 10, 1, 2];
const OID_CERT_BAG: &[u64] = &[1, 2, 840, 113549, 1, 12, 10, 1, 3];
const OID_X509_CERTIFICATE: &[u64] = &[1, 2, 840, 113549, 1, 9, 22, 1];
const OID_FRIENDLY_NAME: &[u64] = &[1, 2, 840, 113549, 1, 9, 20];
const OID_LOCAL_KEY_ID: &[u64] = &[1, 2, 840, 113549, 1, 9, 21];
const OID_PBES2: &[u64] = &[1, 2, 840, 113549, 1, 5, 13];
const OID_PBKDF2: &[u64] = &[1, 2, 840, 113549, 1, 5, 12];
const OID_HMAC_SHA256: &[u64] = &[1, 2, 840, 113549, 2, 9];
const OID_AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];

const NULL: [u8; 2] = [0x05, 0x00];

// A minimal DER writer: definite lengths, the few types PKCS#12 needs.

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A SET OF; DER wants the elements sorted by their encoding.
fn set(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    tlv(0x31, &sorted.concat())
}

fn octets(b: &[u8]) -> Vec<u8> {
    tlv(0x04, b)
}

fn explicit0(content: &[u8]) -> Vec<u8> {
    tlv(0xA0, content)
}

fn int(v: u32) -> Vec<u8> {
    let mut bytes: Vec<u8> = v
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|&b| b == 0)
        .collect();
    if bytes.first().is_none_or(|&b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    tlv(0x02, &bytes)
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        tmp.reverse();
        body.extend(tmp);
    };
    push(arcs[0] * 40 + arcs[1]);
    for &a in &arcs[2..] {
        push(a);
    }
    tlv(0x06, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn der_primitives_encode_as_x690_says() {
        let cases: [(&str, Vec<u8>, Vec<u8>); 6] = [
            ("int 0", int(0), vec![2, 1, 0]),
            ("int 3", int(3), vec![2, 1, 3]),
            ("int 2048", int(2048), vec![2, 2, 0x08, 0x00]),
            ("int 128 needs a sign byte", int(128), vec![2, 2, 0, 0x80]),
            (
                "sha256 oid",
                oid(OID_SHA256),
                vec![6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 1],
            ),
            (
                "long length",
                tlv(4, &[0; 200])[..3].to_vec(),
                vec![4, 0x81, 200],
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn passwords_are_long_random_and_unambiguous() {
        let a = new_password().expect("password");
        let b = new_password().expect("password");
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)), "{a}");
    }

    #[test]
    fn tar_headers_carry_names_sizes_and_checksums() {
        let t = tar(&[("a.txt", b"hello"), ("b.bin", &[1u8; 600])], 0);
        assert_eq!(t.len(), 512 + 512 + 512 + 1024 + 1024);
        assert_eq!(&t[..5], b"a.txt");
        assert_eq!(&t[124..136], b"00000000005\0");
        assert_eq!(&t[512..517], b"hello");
        let sum: u64 = t[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        assert_eq!(&t[148..155], format!("{sum:06o}\0").as_bytes());
    }

    /// Runs openssl with `args`; (success, stdout + stderr).
    fn openssl(args: &[&str]) -> Option<(bool, String)> {
        let out = Command::new("openssl").args(args).output().ok()?;
        Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// A key and a two-certificate chain (leaf signed by a local CA).
    fn material() -> (Vec<u8>, String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = crate::keys::CertKey::generate(crate::domain::KeyType::EcdsaP256).expect("key");
        let leaf_key = rcgen::KeyPair::try_from(key.pkcs8_der().as_slice()).expect("leaf key pair");
        let leaf = rcgen::CertificateParams::new(vec!["pkg.example.test".to_string()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        let chain = format!("{}{}", leaf.pem(), ca.pem());
        (key.pkcs8_der(), chain, leaf.pem())
    }

    /// The package opens with openssl and the password only, shows PBES2
    /// with PBKDF2-HMAC-SHA256 and AES-256-CBC for key and certificates,
    /// passes the MAC, and its key is the certificate's; the PEM bundle's
    /// encrypted key opens too. Without (or with a wrong) password, nothing
    /// opens.
    #[test]
    fn packages_round_trip_through_openssl() {
        if openssl(&["version"]).is_none() {
            assert!(std::env::var("CI").is_err(), "CI must have openssl");
            eprintln!("skipping: no openssl");
            return;
        }
        let (key_der, chain, leaf_pem) = material();
        let password = new_password().expect("password");
        let pkg = build("pkg.example.test", &key_der, &chain, &password).expect("package");
        let dir = tempfile::tempdir().expect("tempdir");
        let p12 = dir.path().join("p.p12");
        let pem = dir.path().join("p.pem");
        let leaf = dir.path().join("leaf.pem");
        std::fs::write(&p12, &pkg.p12).expect("write");
        std::fs::write(&pem, &pkg.pem).expect("write");
        std::fs::write(&leaf, &leaf_pem).expect("write");
        let (p12s, pems, leafs) = (
            p12.to_str().expect("utf-8"),
            pem.to_str().expect("utf-8"),
            leaf.to_str().expect("utf-8"),
        );
        let pass = format!("pass:{password}");

        // openssl verifies the MAC unless told not to (-nomacver): a wrong
        // MAC fails the command ("Mac verify error").
        let (ok, info) = openssl(&[
            "pkcs12", "-info", "-in", p12s, "-passin", &pass, "-passout", "pass:x",
        ])
        .expect("openssl");
        assert!(ok, "{info}");
        for want in [
            "MAC: sha256, Iteration 2048",
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256",
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256",
            "friendlyName: pkg.example.test",
        ] {
            assert!(info.contains(want), "missing {want:?} in:\n{info}");
        }
        assert_eq!(info.matches("BEGIN CERTIFICATE").count(), 2, "{info}");

        // The key inside is the leaf's.
        let (ok, key_pub) = openssl(&[
            "pkcs12", "-in", p12s, "-passin", &pass, "-nocerts", "-nodes",
        ])
        .expect("openssl");
        assert!(ok, "{key_pub}");
        let keyfile = dir.path().join("k.pem");
        std::fs::write(&keyfile, &key_pub).expect("write");
        let (_, from_key) = openssl(&["pkey", "-in", keyfile.to_str().expect("utf-8"), "-pubout"])
            .expect("openssl");
        let (_, from_cert) =
            openssl(&["x509", "-in", leafs, "-noout", "-pubkey"]).expect("openssl");
        assert!(from_key.contains("BEGIN PUBLIC KEY"), "{from_key}");
        assert_eq!(from_key, from_cert);

        // The PEM bundle: an encrypted PKCS#8 key, then the chain.
        assert!(
            pkg.pem
                .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
        );
        assert_eq!(pkg.pem.matches("BEGIN CERTIFICATE").count(), 2);
        let (ok, out) =
            openssl(&["pkey", "-in", pems, "-passin", &pass, "-pubout"]).expect("openssl");
        assert!(ok, "{out}");
        assert_eq!(out, from_cert);

        // A package altered in transit fails its MAC. The file ends with
        // the tag (32 bytes), the salt (16) and the iteration count.
        let mut altered = pkg.p12.clone();
        let at = altered.len() - 30;
        altered[at] ^= 1;
        let bad = dir.path().join("altered.p12");
        std::fs::write(&bad, &altered).expect("write");
        let (ok, out) = openssl(&[
            "pkcs12",
            "-in",
            bad.to_str().expect("utf-8"),
            "-passin",
            &pass,
            "-nokeys",
        ])
        .expect("openssl");
        assert!(!ok && out.contains("Mac verify error"), "{out}");

        // Without the password, neither opens.
        for args in [
            vec![
                "pkcs12",
                "-info",
                "-in",
                p12s,
                "-passin",
                "pass:wrong",
                "-nokeys",
            ],
            vec!["pkey", "-in", pems, "-passin", "pass:wrong"],
        ] {
            let (ok, out) = openssl(&args).expect("openssl");
            assert!(!ok, "{args:?} opened without the password: {out}");
        }
    }
}
