//! Test harness: revocation and renewal information made *as a Pebble CA*.
//!
//! Pebble 2.4.0 has no CRLs, no OCSP responder and no ARI (`renewalInfo`),
//! yet twincert checks revocation through CRLs (RFC 5280) and OCSP
//! (RFC 6960) and polls ARI windows (RFC 9773). This module stands in for
//! those parts of a real CA, beside one running [`Pebble`]:
//!
//! * [`RevocationAuthority`] holds the Pebble intermediate's certificate and
//!   key (from Pebble's management API), keeps an OpenSSL `index.txt` of
//!   certificate states, signs CRLs with `openssl ca -gencrl` and answers
//!   OCSP with `openssl ocsp`, so every artefact is signed by the very key
//!   that signed the certificates.
//! * [`AriProxy`] is an HTTPS front for the Pebble ACME API whose directory
//!   adds `renewalInfo`, serves the windows a test sets, and records every
//!   newOrder payload (so a test can see `replaces`). ARI as a real server
//!   serves it is tested against Pebble 2.6.0 (`crate::ari_pebble26`); the
//!   proxy is kept for moving the window of an unrevoked certificate,
//!   which no Pebble can do.
//!
//! It owns only its own servers, files and `openssl` runs; it never touches
//! the crate under test, and it reads a Pebble only through its public APIs.
//!
//! Invariants (as in [`crate::harness`]):
//! * Loopback only: every server listens on `127.0.0.1`.
//! * Each object owns its servers and temporary directory: dropping it
//!   aborts the server tasks (open connections included) and removes the
//!   directory.
//! * The servers are tasks on the test's tokio runtime. A test that runs a
//!   blocking client against them (`std::process::Command` running
//!   `openssl ocsp`, say) needs `flavor = "multi_thread"` or
//!   `spawn_blocking`, else it waits on a server that cannot run.
//!
//! Facts found while building this (OpenSSL 3.0 on Debian 12, Pebble 2.4.0):
//! * Pebble's intermediate key comes as PKCS#1 (`BEGIN RSA PRIVATE KEY`),
//!   which `openssl` reads as is. Its certificate has key usage
//!   `digitalSignature, keyCertSign` but **no `cRLSign`**: `openssl crl
//!   -CAfile` (signature only) accepts these CRLs, but a verifier that
//!   enforces RFC 5280 §4.2.1.3 for CRL issuers rejects every one of them
//!   (rustls-webpki 0.103: `IssuerNotCrlSigner`; `openssl verify
//!   -crl_check`: "key usage does not include CRL signing"). Against Pebble
//!   only a check of the CRL signature with the issuer's key can pass.
//! * Pebble's serials are 8 bytes with the top bit clear, so their DER never
//!   has a leading `00`; [`RevocationAuthority::issue_leaf`] makes leaves
//!   whose serial does. Pebble's management API
//!   `/cert-status-by-serial/<hex>` takes either case.
//! * `openssl ocsp -port` listens on all interfaces (`[::]`), takes no bind
//!   address, and re-reads a changed `index.txt` only at the top of its
//!   loop, *before* waiting for the next request: a revocation shows from
//!   the second request after it. So the responder here is our own loopback
//!   HTTP server that runs `openssl ocsp -reqin … -respout …` once per
//!   request (≈ 10 ms): every answer reflects the index as it is.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::harness::{LocalTls, Pebble, install_crypto_provider};

/// The CRL path on [`RevocationAuthority::crl_url`].
const CRL_PATH: &str = "/intermediate.crl";

/// The OCSP URL a [`RevocationAuthority`] will answer on `port`, for
/// `PebbleOptions::ocsp_responder_url` (Pebble must know it before it
/// starts; the responder starts later with
/// [`RevocationAuthority::start_ocsp`]).
pub fn ocsp_url_for(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
}

/// The serial of a DER certificate as twincert writes it: lowercase hex of
/// the raw DER INTEGER content bytes, leading `00` included.
pub fn serial_hex(cert_der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).expect("parse certificate");
    hex(cert.tbs_certificate.raw_serial())
}

/// The RFC 9773 §4.1 certID of a DER certificate:
/// base64url(AKI keyIdentifier) `.` base64url(serial DER content bytes).
pub fn ari_cert_id(cert_der: &[u8]) -> String {
    let (aki, serial) = aki_and_serial(cert_der);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(aki),
        URL_SAFE_NO_PAD.encode(serial)
    )
}

/// The AKI keyIdentifier and the raw serial bytes of a DER certificate
/// (the two halves of an ARI certID, e.g. for
/// `instant_acme::CertificateIdentifier::new`).
pub fn aki_and_serial(cert_der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).expect("parse certificate");
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("certificate has no AKI keyIdentifier");
    (aki, cert.tbs_certificate.raw_serial().to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A twincert serial (lowercase hex of the DER content bytes, so `008f12`
/// for a serial whose top bit is set) as OpenSSL keys its `index.txt`:
/// `BN_bn2hex` of the number, i.e. uppercase, whole bytes, no leading zero
/// bytes (`8F12`). OpenSSL looks serials up by exact string, so both
/// `ca -gencrl` and `ocsp` need this form.
pub fn openssl_serial(serial_hex: &str) -> String {
    let s = serial_hex.trim();
    assert!(
        !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()),
        "serial {serial_hex:?} is not hex"
    );
    let mut s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    };
    // A DER INTEGER without the leading 00 and with the top bit set is
    // negative; certificates must not have those (RFC 5280 §4.1.2.2).
    assert!(
        u8::from_str_radix(&s[..2], 16).expect("hex") < 0x80,
        "serial {serial_hex:?} is negative as DER; give the DER content bytes"
    );
    while s.len() > 2 && s.starts_with("00") {
        s.drain(..2);
    }
    s.to_ascii_uppercase()
}

/// `YYMMDDHHMMSSZ`, OpenSSL's `index.txt` time format (UTCTime, so years
/// 1950–2049).
fn index_time(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).expect("time in range");
    assert!(
        (1950..2050).contains(&t.year()),
        "index.txt time must be UTCTime"
    );
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Runs a short `openssl` command; panics with its stderr when it fails.
fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl {args:?}: {e}; is it installed?"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Poison-tolerant lock: a panicking test must not turn every later call
/// into a second, unrelated panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// A server task: the accept loop and, in a `JoinSet` it owns, every
/// connection. Aborting it on drop closes keep-alive connections too, so a
/// stopped server really stops answering.
struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listener on `127.0.0.1:port` (port 0: any free one).
async fn bind(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"))
}

/// Serves `app` on `listener`, over TLS when `tls` is given.
fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, app: Router) -> ServerTask {
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // E.g. out of file descriptors: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (app, tls) = (app.clone(), tls.clone());
            conns.spawn(async move {
                let svc = TowerToHyperService::new(app);
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(tls) => {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
                        {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });
    ServerTask(task)
}

/// A TLS acceptor with the [`LocalTls`] server certificate (h2 and
/// HTTP/1.1), the certificate Pebble serves too.
fn tls_acceptor(tls: &LocalTls) -> TlsAcceptor {
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_path)
        .expect("read LocalTls certificate")
        .collect::<Result<_, _>>()
        .expect("parse LocalTls certificate");
    let key = PrivateKeyDer::from_pem_file(&tls.key_path).expect("read LocalTls key");
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(cfg))
}

// ---------------------------------------------------------------------------
// CRL and OCSP
// ---------------------------------------------------------------------------

/// Revocation reasons `openssl ca` accepts in `index.txt` (RFC 5280 §5.3.1
/// names). `certificateHold` and `removeFromCRL` need more fields and are
/// left out; `""` means "no reason" (the CRL entry then has no reasonCode;
/// `unspecified` *does* get reasonCode 0).
const REASONS: &[&str] = &[
    "",
    "unspecified",
    "keyCompromise",
    "CACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
];

/// Who signs the OCSP responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcspSigner {
    /// The Pebble intermediate itself, its certificate included (the
    /// CA-signed case of RFC 6960 §4.2.2.2): what a client must accept.
    Issuer,
    /// A fresh RSA key under a certificate named exactly like the
    /// intermediate, certificate *not* included: the responder ID matches
    /// the issuer, so only checking the signature against the issuer's key
    /// catches it.
    WrongKey,
    /// The same wrong key with its (self-signed, issuer-named) certificate
    /// included, for a client that would trust whatever certificate a
    /// response brings.
    WrongKeyWithCert,
}

/// One line of `index.txt`.
#[derive(Clone, Debug)]
enum CertState {
    Valid,
    Revoked { at_unix: i64, reason: String },
}

/// A certificate signed by the Pebble intermediate without ACME, from
/// [`RevocationAuthority::issue_leaf`].
#[derive(Clone, Debug)]
pub struct Leaf {
    pub pem: String,
    pub der: Vec<u8>,
    /// The PEM file (in the authority's directory).
    pub path: PathBuf,
    /// twincert's form (see [`serial_hex`]).
    pub serial_hex: String,
    /// RFC 9773 certID (see [`ari_cert_id`]).
    pub cert_id: String,
}

/// File names inside the authority's directory.
struct Files {
    dir: PathBuf,
    issuer_pem: PathBuf,
    issuer_key: PathBuf,
    index: PathBuf,
    ca_conf: PathBuf,
    wrong_pem: PathBuf,
    wrong_key: PathBuf,
}

/// What the servers and the test share.
struct Shared {
    files: Files,
    /// openssl serial → state; written out whole to `index.txt`.
    db: Mutex<BTreeMap<String, CertState>>,
    /// The CRL being served; `None` answers 503.
    crl: Mutex<Option<Vec<u8>>>,
    crl_fetches: AtomicUsize,
    ocsp_signer: Mutex<OcspSigner>,
    ocsp_next_update_mins: Mutex<Option<u32>>,
    ocsp_requests: AtomicUsize,
    /// Unique names for per-request files.
    seq: AtomicU64,
}

/// CRLs and OCSP for one Pebble CA, signed with its intermediate key.
///
/// Certificates are in one of three states: unknown (never mentioned:
/// OCSP says `unknown`, the CRL does not list it), valid
/// ([`RevocationAuthority::mark_valid`]: OCSP `good`) or revoked
/// ([`RevocationAuthority::revoke`]: OCSP `revoked`, listed on the next
/// CRL). Serials are given as twincert writes them (see [`serial_hex`]).
///
/// A Pebble restart makes a new intermediate: make a new authority then.
pub struct RevocationAuthority {
    shared: Arc<Shared>,
    crl_port: u16,
    crl_server: ServerTask,
    ocsp: Mutex<Option<(u16, ServerTask)>>,
    /// Last: removed after the servers are gone.
    dir: TempDir,
}

impl RevocationAuthority {
    /// Fetches the intermediate certificate and key from `pebble`'s
    /// management API, writes them with an empty `index.txt` into a new
    /// temporary directory, and starts the CRL server (serving an empty
    /// CRL, number 1, valid for an hour, until the test publishes another).
    /// OCSP starts separately ([`RevocationAuthority::start_ocsp`]) because
    /// its port has to be chosen before Pebble starts.
    pub async fn new(pebble: &Pebble) -> RevocationAuthority {
        let dir = tempfile::Builder::new()
            .prefix(&format!("revocation-{}-", pebble.name()))
            .tempdir()
            .expect("create revocation temp dir");
        let d = dir.path();
        let files = Files {
            dir: d.to_owned(),
            issuer_pem: d.join("interm.pem"),
            issuer_key: d.join("interm.key"),
            index: d.join("index.txt"),
            ca_conf: d.join("ca.cnf"),
            wrong_pem: d.join("wrong.pem"),
            wrong_key: d.join("wrong.key"),
        };
        write(&files.issuer_pem, pebble.intermediate_pem().await);
        // PKCS#1 (`BEGIN RSA PRIVATE KEY`); openssl reads it as is.
        write(&files.issuer_key, pebble.intermediate_key_pem().await);
        write(&files.index, "");
        write(&d.join("crlnumber"), "01\n");
        write(
            &files.ca_conf,
            format!(
                "[ ca ]\n\
                 default_ca = CA_default\n\
                 [ CA_default ]\n\
                 database = {index}\n\
                 crlnumber = {dir}/crlnumber\n\
                 certificate = {cert}\n\
                 private_key = {key}\n\
                 default_md = sha256\n\
                 crl_extensions = crl_ext\n\
                 [ crl_ext ]\n\
                 authorityKeyIdentifier = keyid:always\n",
                index = files.index.display(),
                dir = d.display(),
                cert = files.issuer_pem.display(),
                key = files.issuer_key.display(),
            ),
        );
        let shared = Arc::new(Shared {
            files,
            db: Mutex::new(BTreeMap::new()),
            crl: Mutex::new(None),
            crl_fetches: AtomicUsize::new(0),
            ocsp_signer: Mutex::new(OcspSigner::Issuer),
            ocsp_next_update_mins: Mutex::new(Some(1)),
            ocsp_requests: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        });
        let crl = shared.gencrl(3600);
        *lock(&shared.crl) = Some(crl);

        let app = Router::new()
            .route(CRL_PATH, get(serve_crl))
            .with_state(shared.clone());
        let listener = bind(0).await;
        let crl_port = listener.local_addr().expect("local_addr").port();
        let crl_server = serve(listener, None, app);
        RevocationAuthority {
            shared,
            crl_port,
            crl_server,
            ocsp: Mutex::new(None),
            dir,
        }
    }

    /// The intermediate certificate (PEM file), the CRL and OCSP issuer.
    pub fn issuer_pem_path(&self) -> &Path {
        &self.shared.files.issuer_pem
    }

    /// The intermediate's private key (PKCS#1 PEM file).
    pub fn issuer_key_path(&self) -> &Path {
        &self.shared.files.issuer_key
    }

    /// The intermediate certificate, PEM.
    pub fn issuer_pem(&self) -> String {
        fs::read_to_string(&self.shared.files.issuer_pem).expect("read intermediate")
    }

    /// The directory holding the index, keys and per-request files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // --- certificate states ------------------------------------------------

    /// Marks `serial_hex` revoked now for `reason` (an RFC 5280 reason name
    /// such as `keyCompromise`, `superseded`, `unspecified`; `""` for
    /// none). OCSP says so from the next request; CRLs list it from the
    /// next [`RevocationAuthority::publish_crl`].
    pub fn revoke(&self, serial_hex: &str, reason: &str) {
        self.revoke_at(serial_hex, reason, unix_now());
    }

    /// [`RevocationAuthority::revoke`] with an explicit revocation time.
    pub fn revoke_at(&self, serial_hex: &str, reason: &str, revoked_at_unix: i64) {
        assert!(
            REASONS.contains(&reason),
            "revocation reason {reason:?} is not one of {REASONS:?}"
        );
        self.shared.set_state(
            serial_hex,
            CertState::Revoked {
                at_unix: revoked_at_unix,
                reason: reason.to_owned(),
            },
        );
    }

    /// Marks `serial_hex` valid (OCSP `good`; off the next CRL).
    pub fn mark_valid(&self, serial_hex: &str) {
        self.shared.set_state(serial_hex, CertState::Valid);
    }

    // --- CRL -------------------------------------------------------------

    /// A new DER CRL signed by the intermediate (sha256WithRSA) listing
    /// every revoked serial with its revocation date and reasonCode, with
    /// an AKI, thisUpdate now, nextUpdate `next_update_secs` later, and a
    /// CRL number one higher than the last one made. Not served; see
    /// [`RevocationAuthority::publish_crl`].
    pub fn crl_der(&self, next_update_secs: u64) -> Vec<u8> {
        self.shared.gencrl(next_update_secs)
    }

    /// Makes a new CRL ([`RevocationAuthority::crl_der`]) and serves it at
    /// [`RevocationAuthority::crl_url`]; returns it.
    pub fn publish_crl(&self, next_update_secs: u64) -> Vec<u8> {
        let crl = self.crl_der(next_update_secs);
        *lock(&self.shared.crl) = Some(crl.clone());
        crl
    }

    /// Like [`RevocationAuthority::publish_crl`], but the served CRL has
    /// the last byte of its signature flipped: it parses, and its signature
    /// does not verify. Returns the corrupt CRL.
    pub fn publish_corrupt_crl(&self, next_update_secs: u64) -> Vec<u8> {
        let mut crl = self.crl_der(next_update_secs);
        // The signature BIT STRING ends the DER.
        *crl.last_mut().expect("non-empty CRL") ^= 0x01;
        *lock(&self.shared.crl) = Some(crl.clone());
        crl
    }

    /// Serves 503 at the CRL URL until the next publish (a CA whose CRL
    /// host is down).
    pub fn withdraw_crl(&self) {
        *lock(&self.shared.crl) = None;
    }

    /// `http://127.0.0.1:<port>/intermediate.crl` (plain HTTP, as CRL
    /// distribution points are; `Content-Type: application/pkix-crl`).
    pub fn crl_url(&self) -> String {
        format!("http://127.0.0.1:{}{CRL_PATH}", self.crl_port)
    }

    /// How many times the CRL URL was requested (any answer).
    pub fn crl_fetches(&self) -> usize {
        self.shared.crl_fetches.load(Ordering::SeqCst)
    }

    // --- OCSP ------------------------------------------------------------

    /// Starts the OCSP responder on `127.0.0.1:port` (the port given to
    /// Pebble through [`ocsp_url_for`]) signing as the intermediate. If it
    /// already runs on that port, only switches the signer back.
    ///
    /// RFC 6960 Appendix A: `POST` with `Content-Type:
    /// application/ocsp-request` and the DER request as body, on any path
    /// (what `openssl ocsp -url` sends, and what twincert should send), or
    /// `GET /<url-encoded base64 of the DER request>`. Answers 200
    /// `application/ocsp-response`; an unparsable request gets the
    /// `malformedRequest` OCSP response. Responses carry the request's
    /// nonce if it had one, and nextUpdate one minute after thisUpdate (see
    /// [`RevocationAuthority::set_ocsp_next_update_mins`]).
    pub async fn start_ocsp(&self, port: u16) {
        self.start_ocsp_signed_by(port, OcspSigner::Issuer).await;
    }

    /// Starts (or switches) the responder on `port` signing with a wrong
    /// key ([`OcspSigner::WrongKey`]): a client must not believe it.
    pub async fn start_ocsp_with_wrong_key(&self, port: u16) {
        self.start_ocsp_signed_by(port, OcspSigner::WrongKey).await;
    }

    /// Starts the responder on `port`, or switches the signer if it already
    /// runs there. Panics if it runs on another port.
    pub async fn start_ocsp_signed_by(&self, port: u16, signer: OcspSigner) {
        self.set_ocsp_signer(signer);
        if let Some((running, _)) = &*lock(&self.ocsp) {
            assert_eq!(
                *running, port,
                "OCSP responder already runs on another port"
            );
            return;
        }
        let app = Router::new()
            .fallback(answer_ocsp)
            .with_state(self.shared.clone());
        let server = serve(bind(port).await, None, app);
        *lock(&self.ocsp) = Some((port, server));
    }

    /// Changes who signs the following OCSP responses.
    pub fn set_ocsp_signer(&self, signer: OcspSigner) {
        if signer != OcspSigner::Issuer {
            self.shared.ensure_wrong_key();
        }
        *lock(&self.shared.ocsp_signer) = signer;
    }

    /// nextUpdate of OCSP responses in minutes after thisUpdate (`openssl
    /// ocsp -nmin`; minutes are its finest unit); `None` leaves nextUpdate
    /// out ("newer information is always available", RFC 6960 §2.4).
    pub fn set_ocsp_next_update_mins(&self, mins: Option<u32>) {
        *lock(&self.shared.ocsp_next_update_mins) = mins;
    }

    /// Stops the OCSP responder (connections refused from now on, open
    /// ones closed).
    pub fn stop_ocsp(&self) {
        *lock(&self.ocsp) = None;
    }

    /// The responder's URL while it runs.
    pub fn ocsp_url(&self) -> Option<String> {
        lock(&self.ocsp)
            .as_ref()
            .map(|(port, _)| ocsp_url_for(*port))
    }

    /// How many OCSP requests arrived (any method, any answer).
    pub fn ocsp_requests(&self) -> usize {
        self.shared.ocsp_requests.load(Ordering::SeqCst)
    }

    // --- certificates without ACME -----------------------------------------

    /// Signs a leaf for `dns_name` with the intermediate key, without ACME:
    /// P-256 key, one day valid, SAN, AKI (so it has an ARI certID) and, if
    /// given, an AIA OCSP URL. The 16-byte random serial has its top bit
    /// set, so its DER has a leading `00` (twincert's hex keeps it, OpenSSL's
    /// index drops it). Not entered in the index: OCSP says `unknown` until
    /// [`RevocationAuthority::mark_valid`] or `revoke`.
    pub fn issue_leaf(&self, dns_name: &str, ocsp_url: Option<&str>) -> Leaf {
        let d = &self.shared.files.dir;
        let n = self.shared.seq.fetch_add(1, Ordering::SeqCst);
        let key = d.join(format!("leaf-{n}.key"));
        let csr = d.join(format!("leaf-{n}.csr"));
        let ext = d.join(format!("leaf-{n}.ext"));
        let pem = d.join(format!("leaf-{n}.pem"));
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).expect("random serial");
        serial[0] |= 0x80;
        let mut extensions = format!(
            "subjectAltName = DNS:{dns_name}\n\
             authorityKeyIdentifier = keyid\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n"
        );
        if let Some(url) = ocsp_url {
            extensions.push_str(&format!("authorityInfoAccess = OCSP;URI:{url}\n"));
        }
        write(&ext, extensions);
        let p = |p: &Path| p.display().to_string();
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &p(&key),
                "-subj",
                &format!("/CN={dns_name}"),
                "-out",
                &p(&csr),
            ],
            d,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &p(&csr),
                "-CA",
                &p(&self.shared.files.issuer_pem),
                "-CAkey",
                &p(&self.shared.files.issuer_key),
                "-set_serial",
                &format!("0x{}", hex(&serial)),
                "-days",
                "1",
                "-sha256",
                "-extfile",
                &p(&ext),
                "-out",
                &p(&pem),
            ],
            d,
        );
        let text = fs::read_to_string(&pem).expect("read leaf");
        let der = CertificateDer::from_pem_slice(text.as_bytes())
            .expect("parse leaf PEM")
            .to_vec();
        Leaf {
            serial_hex: serial_hex(&der),
            cert_id: ari_cert_id(&der),
            pem: text,
            der,
            path: pem,
        }
    }
}

impl Shared {
    fn set_state(&self, serial_hex: &str, state: CertState) {
        let mut db = lock(&self.db);
        db.insert(openssl_serial(serial_hex), state);
        // Far-future expiry: `ca -gencrl` and `ocsp` ignore it, and serials
        // alone do not tell us the real one.
        let expiry = "491231235959Z";
        let mut text = String::new();
        for (serial, state) in db.iter() {
            let (flag, revinfo) = match state {
                CertState::Valid => ("V", String::new()),
                CertState::Revoked { at_unix, reason } if reason.is_empty() => {
                    ("R", index_time(*at_unix))
                }
                CertState::Revoked { at_unix, reason } => {
                    ("R", format!("{},{reason}", index_time(*at_unix)))
                }
            };
            text.push_str(&format!(
                "{flag}\t{expiry}\t{revinfo}\t{serial}\tunknown\t/CN={serial}\n"
            ));
        }
        // Replace atomically: an OCSP request may be reading it right now.
        let tmp = self.files.index.with_extension("txt.tmp");
        write(&tmp, text);
        fs::rename(&tmp, &self.files.index).expect("replace index.txt");
    }

    /// `openssl ca -gencrl` → DER. Under the db lock: the CRL number file
    /// must not be raced, and the index must not change underneath.
    fn gencrl(&self, next_update_secs: u64) -> Vec<u8> {
        assert!(next_update_secs > 0, "nextUpdate must be in the future");
        let _db = lock(&self.db);
        let d = &self.files.dir;
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let out = d.join(format!("crl-{n}.pem"));
        openssl(
            &[
                "ca",
                "-batch",
                "-config",
                &self.files.ca_conf.display().to_string(),
                "-gencrl",
                "-crlsec",
                &next_update_secs.to_string(),
                "-out",
                &out.display().to_string(),
            ],
            d,
        );
        let pem = fs::read(&out).expect("read CRL");
        CertificateRevocationListDer::from_pem_slice(&pem)
            .expect("parse CRL PEM")
            .to_vec()
    }

    /// The wrong OCSP signer: a fresh RSA-2048 key and the intermediate's
    /// certificate re-signed with it (`x509 -key`), so subject, issuer and
    /// extensions are byte-for-byte the intermediate's, the key is not.
    fn ensure_wrong_key(&self) {
        let f = &self.files;
        if f.wrong_pem.exists() {
            return;
        }
        let p = |p: &Path| p.display().to_string();
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &p(&f.wrong_key),
            ],
            &f.dir,
        );
        openssl(
            &[
                "x509",
                "-in",
                &p(&f.issuer_pem),
                "-key",
                &p(&f.wrong_key),
                "-out",
                &p(&f.wrong_pem),
            ],
            &f.dir,
        );
    }

    /// One OCSP answer: `openssl ocsp` in responder mode on one request
    /// file. It reads `index.txt` afresh each time.
    fn ocsp_respond(&self, request_der: &[u8]) -> Vec<u8> {
        /// OCSPResponse { responseStatus malformedRequest (1) }.
        const MALFORMED: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x01];
        let f = &self.files;
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let req = f.dir.join(format!("ocsp-{n}.req"));
        let resp = f.dir.join(format!("ocsp-{n}.resp"));
        write(&req, request_der);
        let signer = *lock(&self.ocsp_signer);
        let (rsigner, rkey) = match signer {
            OcspSigner::Issuer => (&f.issuer_pem, &f.issuer_key),
            OcspSigner::WrongKey | OcspSigner::WrongKeyWithCert => (&f.wrong_pem, &f.wrong_key),
        };
        let mut cmd = Command::new("openssl");
        cmd.arg("ocsp")
            .arg("-index")
            .arg(&f.index)
            .arg("-CA")
            .arg(&f.issuer_pem)
            .arg("-rsigner")
            .arg(rsigner)
            .arg("-rkey")
            .arg(rkey)
            .arg("-reqin")
            .arg(&req)
            .arg("-respout")
            .arg(&resp);
        if signer == OcspSigner::WrongKey {
            cmd.arg("-resp_no_certs");
        }
        if let Some(mins) = *lock(&self.ocsp_next_update_mins) {
            cmd.arg("-nmin").arg(mins.to_string());
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run openssl ocsp");
        let answer = if out.status.success() {
            fs::read(&resp).expect("read OCSP response")
        } else {
            MALFORMED.to_vec()
        };
        let _ = fs::remove_file(&req);
        let _ = fs::remove_file(&resp);
        answer
    }
}

async fn serve_crl(State(shared): State<Arc<Shared>>) -> Response {
    shared.crl_fetches.fetch_add(1, Ordering::SeqCst);
    match lock(&shared.crl).clone() {
        Some(crl) => ([(header::CONTENT_TYPE, "application/pkix-crl")], crl).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn answer_ocsp(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    shared.ocsp_requests.fetch_add(1, Ordering::SeqCst);
    let request = match method {
        Method::POST => body.to_vec(),
        Method::GET => {
            let encoded = uri.path().rsplit('/').next().unwrap_or_default();
            match STANDARD.decode(percent_decode(encoded)) {
                Ok(der) => der,
                Err(_) => return StatusCode::BAD_REQUEST.into_response(),
            }
        }
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || shared.ocsp_respond(&request))
        .await
        .expect("OCSP responder task");
    (
        [(header::CONTENT_TYPE, "application/ocsp-response")],
        answer,
    )
        .into_response()
}

/// `%2B` → `+` etc. (RFC 3986 percent-decoding of one path segment).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// ARI
// ---------------------------------------------------------------------------

/// A suggested renewal window (RFC 9773 §4.2).
#[derive(Clone, Debug)]
struct Window {
    start_unix: i64,
    end_unix: i64,
    explanation_url: Option<String>,
}

#[derive(Default)]
struct AriBook {
    windows: HashMap<String, Window>,
    default_window: Option<Window>,
    retry_after_secs: u64,
    ari_requests: Vec<String>,
    new_orders: Vec<serde_json::Value>,
    reflect_replaces: bool,
    /// Order URL path → the certID its newOrder replaced.
    order_replaces: HashMap<String, String>,
    /// newOrder requests still to answer with `rateLimited`.
    rate_limit_left: usize,
    /// The `Retry-After` those answers carry.
    rate_limit_after: RetryAfter,
    /// Seconds ahead that `Retry-After` names.
    retry_after_secs_rl: u64,
    /// Every newOrder request: when it came and how it was answered.
    new_order_hits: Vec<NewOrderHit>,
}

/// How a rate-limited answer states its `Retry-After` (RFC 9110 §10.2.3
/// allows both forms).
#[derive(Clone, Copy, Debug, Default)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    #[default]
    Seconds,
    /// `Retry-After: <IMF-fixdate>`, that many seconds ahead (rounded up
    /// to the next whole second, the date's resolution).
    HttpDate,
}

/// One newOrder request seen by the proxy.
#[derive(Clone, Debug)]
pub struct NewOrderHit {
    /// Unix time it arrived, with sub-second precision.
    pub at: f64,
    /// Whether the proxy answered it with 429 `rateLimited`.
    pub rate_limited: bool,
    /// For a rate-limited one: the Unix time its `Retry-After` names.
    pub retry_after_until: Option<f64>,
}

struct AriState {
    /// `https://127.0.0.1:<pebble port>`.
    pebble_base: String,
    /// `127.0.0.1:<proxy port>`: the Host every forwarded request carries.
    host: String,
    client: reqwest::Client,
    book: Mutex<AriBook>,
}

/// An ACME server with ARI: a Pebble behind an HTTPS proxy that adds the
/// `renewalInfo` resource (RFC 9773) Pebble 2.4.0 lacks.
///
/// Point the ACME client at [`AriProxy::directory_url`]. Every ACME request
/// goes through the proxy, forwarded to Pebble with `Host` set to the
/// proxy's `127.0.0.1:<port>`, because Pebble
/// * checks the JWS `url` against `https://` + request Host + path,
/// * checks that the JWS `kid` starts with `https://` + request Host +
///   `/my-account/` (so an account made directly at Pebble cannot be used
///   through a proxy, and vice versa), and
/// * writes every URL it hands out (directory, Location, authorizations,
///   finalize, certificate, Link) with the request Host.
///
/// (All three seen by experiment: "JWS header parameter 'url' incorrect.
/// Expected \"https://<Host>/sign-me-up\"…", "Key ID (kid) in JWS header
/// missing expected URL prefix".) So Pebble itself names the proxy
/// everywhere and the client never talks to Pebble directly. Pebble's
/// newOrder path is `/order-plz`; that is where payloads are recorded.
///
/// Answers come back unchanged (status, headers, body), with one
/// exception: Pebble accepts a newOrder with `replaces` but ignores the
/// field and does not echo it, while RFC 9773 §5 says the server MUST
/// reflect it, and instant-acme 0.8.5 fails `new_order` with "replaces
/// field mismatch" when it is not there. So the proxy adds the requested
/// `replaces` to the newOrder answer and to later answers for that order
/// URL (turn off with [`AriProxy::set_reflect_replaces`]).
///
/// Uses the [`LocalTls`] server certificate; clients trust `tls.ca_pem`.
pub struct AriProxy {
    state: Arc<AriState>,
    port: u16,
    server: ServerTask,
}

impl AriProxy {
    /// Starts the proxy in front of `pebble` on a free loopback port with
    /// no windows set, `Retry-After: 21600` (6 h, as Let's Encrypt sends).
    pub async fn start(pebble: &Pebble, tls: &LocalTls) -> AriProxy {
        let listener = bind(0).await;
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(AriState {
            pebble_base: format!("https://127.0.0.1:{}", pebble.port()),
            host: format!("127.0.0.1:{port}"),
            client: pebble.client(),
            book: Mutex::new(AriBook {
                retry_after_secs: 21600,
                reflect_replaces: true,
                ..AriBook::default()
            }),
        });
        let app = Router::new()
            .route("/dir", get(proxy_directory))
            .route("/ari/{cert_id}", get(renewal_info))
            .fallback(forward)
            .with_state(state.clone());
        let server = serve(listener, Some(tls_acceptor(tls)), app);
        AriProxy {
            state,
            port,
            server,
        }
    }

    /// `https://127.0.0.1:<port>/dir`: Pebble's directory as seen through
    /// the proxy, plus `renewalInfo`.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.state.host)
    }

    /// `https://127.0.0.1:<port>/ari`; a window is at `…/ari/<certID>`.
    pub fn renewal_info_url(&self) -> String {
        format!("https://{}/ari", self.state.host)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The window served for `cert_id` (RFC 9773 §4.1 form, see
    /// [`ari_cert_id`]), times in Unix seconds.
    pub fn set_window(
        &self,
        cert_id: &str,
        start_unix: i64,
        end_unix: i64,
        explanation_url: Option<&str>,
    ) {
        lock(&self.state.book).windows.insert(
            cert_id.to_owned(),
            Window {
                start_unix,
                end_unix,
                explanation_url: explanation_url.map(str::to_owned),
            },
        );
    }

    /// The window for certIDs without their own; `None` (the start state)
    /// answers those with 404.
    pub fn set_default_window(&self, window: Option<(i64, i64)>, explanation_url: Option<&str>) {
        lock(&self.state.book).default_window = window.map(|(start_unix, end_unix)| Window {
            start_unix,
            end_unix,
            explanation_url: explanation_url.map(str::to_owned),
        });
    }

    /// The `Retry-After` (seconds) sent with every window.
    pub fn set_retry_after(&self, secs: u64) {
        lock(&self.state.book).retry_after_secs = secs;
    }

    /// Whether to add `replaces` to newOrder answers (default: yes; see
    /// the type's doc). Off shows what a CA that ignores it looks like.
    pub fn set_reflect_replaces(&self, reflect: bool) {
        lock(&self.state.book).reflect_replaces = reflect;
    }

    /// The certIDs asked for at `/ari/…`, in order (unknown ones too).
    pub fn ari_requests(&self) -> Vec<String> {
        lock(&self.state.book).ari_requests.clone()
    }

    /// The decoded JWS payload of every newOrder request, in order
    /// (rejected ones too), e.g. `{"identifiers":[…],"replaces":"…"}`.
    pub fn new_orders(&self) -> Vec<serde_json::Value> {
        lock(&self.state.book).new_orders.clone()
    }

    /// Answers the next `count` newOrder requests with HTTP 429, a
    /// `rateLimited` problem document, `Retry-After` `secs` seconds ahead
    /// (in `form`) and a fresh `Replay-Nonce` taken from Pebble (ACME
    /// clients need one on every answer); later ones pass through.
    pub fn rate_limit_new_orders(&self, count: usize, secs: u64, form: RetryAfter) {
        let mut book = lock(&self.state.book);
        book.rate_limit_left = count;
        book.retry_after_secs_rl = secs;
        book.rate_limit_after = form;
    }

    /// Every newOrder request so far, in order.
    pub fn new_order_hits(&self) -> Vec<NewOrderHit> {
        lock(&self.state.book).new_order_hits.clone()
    }
}

/// The 429 `rateLimited` answer of [`AriProxy::rate_limit_new_orders`].
async fn rate_limited(st: &AriState, secs: u64, form: RetryAfter, now: f64) -> (Response, f64) {
    let nonce = st
        .client
        .head(format!("{}/nonce-plz", st.pebble_base))
        .header(header::HOST, &st.host)
        .send()
        .await
        .ok()
        .and_then(|r| {
            r.headers()
                .get("replay-nonce")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let (value, until) = match form {
        RetryAfter::Seconds => (secs.to_string(), now + secs as f64),
        RetryAfter::HttpDate => {
            let until = (now + secs as f64).ceil() as i64;
            // RFC 2822 with "+0000" spelled "GMT" is RFC 9110's IMF-fixdate.
            let date = time::OffsetDateTime::from_unix_timestamp(until)
                .expect("time in range")
                .format(&time::format_description::well_known::Rfc2822)
                .expect("format date")
                .replace("+0000", "GMT");
            (date, until as f64)
        }
    };
    let body = serde_json::json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": format!("too many new orders recently (test proxy); retry after {value}"),
        "status": 429,
    });
    let rsp = (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::CONTENT_TYPE, "application/problem+json".to_owned()),
            (header::RETRY_AFTER, value),
            (HeaderName::from_static("replay-nonce"), nonce),
        ],
        body.to_string(),
    )
        .into_response();
    (rsp, until)
}

fn problem(status: StatusCode, detail: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({
            "type": "urn:ietf:params:acme:error:serverInternal",
            "detail": detail,
        })
        .to_string(),
    )
        .into_response()
}

/// `GET /dir`: Pebble's directory fetched with the proxy's Host (so every
/// URL in it names the proxy), plus `renewalInfo`.
async fn proxy_directory(State(st): State<Arc<AriState>>) -> Response {
    let url = format!("{}/dir", st.pebble_base);
    let resp = match st
        .client
        .get(&url)
        .header(header::HOST, &st.host)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, format!("GET {url}: {e}")),
    };
    let mut dir: serde_json::Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, format!("directory JSON: {e}")),
    };
    dir["renewalInfo"] = format!("https://{}/ari", st.host).into();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&dir).expect("serialize directory"),
    )
        .into_response()
}

/// `GET /ari/{certID}`: RFC 9773 §4.2 renewal info with `Retry-After`.
async fn renewal_info(
    State(st): State<Arc<AriState>>,
    UrlPath(cert_id): UrlPath<String>,
) -> Response {
    let (window, retry_after) = {
        let mut book = lock(&st.book);
        book.ari_requests.push(cert_id.clone());
        let window = book
            .windows
            .get(&cert_id)
            .or(book.default_window.as_ref())
            .cloned();
        (window, book.retry_after_secs)
    };
    let Some(window) = window else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::json!({
                "type": "urn:ietf:params:acme:error:malformed",
                "detail": format!("no renewal window for certID {cert_id}"),
            })
            .to_string(),
        )
            .into_response();
    };
    let rfc3339 = |unix: i64| {
        time::OffsetDateTime::from_unix_timestamp(unix)
            .expect("window time in range")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format RFC 3339")
    };
    let mut body = serde_json::json!({
        "suggestedWindow": {
            "start": rfc3339(window.start_unix),
            "end": rfc3339(window.end_unix),
        }
    });
    if let Some(url) = window.explanation_url {
        body["explanationURL"] = url.into();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::RETRY_AFTER, retry_after.to_string()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The JSON payload of a flattened JWS (RFC 7515 §7.2.2) body, `None` if
/// it is not one or the payload is empty (POST-as-GET).
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = URL_SAFE_NO_PAD.decode(jws.get("payload")?.as_str()?).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// Headers not to copy between the two hops (RFC 9110 §7.6.1, plus the
/// length the body is re-framed with).
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::HOST,
        header::UPGRADE,
        header::TE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Everything but `/dir` and `/ari/…`: forwarded to Pebble with the proxy's
/// Host, the answer returned unchanged (but for `replaces`, see
/// [`AriProxy`]). newOrder payloads are recorded.
async fn forward(State(st): State<Arc<AriState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("read body: {e}")),
    };
    let path = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path.clone(), |pq| pq.as_str().to_owned());
    let is_new_order = parts.method == Method::POST && path == "/order-plz";
    if is_new_order {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let limited = {
            let mut book = lock(&st.book);
            let limited = book.rate_limit_left > 0;
            if limited {
                book.rate_limit_left -= 1;
            }
            limited.then_some((book.retry_after_secs_rl, book.rate_limit_after))
        };
        if let Some((secs, form)) = limited {
            let (rsp, until) = rate_limited(&st, secs, form, now).await;
            lock(&st.book).new_order_hits.push(NewOrderHit {
                at: now,
                rate_limited: true,
                retry_after_until: Some(until),
            });
            return rsp;
        }
        lock(&st.book).new_order_hits.push(NewOrderHit {
            at: now,
            rate_limited: false,
            retry_after_until: None,
        });
    }
    let replaces = if is_new_order {
        let payload = jws_payload(&body).unwrap_or(serde_json::Value::Null);
        let replaces = payload["replaces"].as_str().map(str::to_owned);
        lock(&st.book).new_orders.push(payload);
        replaces
    } else {
        lock(&st.book).order_replaces.get(&path).cloned()
    };

    let url = format!("{}{path_and_query}", st.pebble_base);
    let mut out = st.client.request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let resp = match out.header(header::HOST, &st.host).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                format!("{} {url}: {e}", parts.method),
            );
        }
    };
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, format!("read {url}: {e}")),
    };

    let reflect = lock(&st.book).reflect_replaces;
    if let Some(cert_id) = replaces.filter(|_| reflect && status.is_success()) {
        if is_new_order
            && let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok())
            && let Ok(location) = url::Url::parse(location)
        {
            lock(&st.book)
                .order_replaces
                .insert(location.path().to_owned(), cert_id.clone());
        }
        if let Ok(serde_json::Value::Object(mut order)) = serde_json::from_slice(&body) {
            order
                .entry("replaces")
                .or_insert_with(|| cert_id.clone().into());
            body = Bytes::from(serde_json::to_vec_pretty(&order).expect("serialize order"));
        }
    }

    let mut response = (status, body).into_response();
    // The (status, body) response brings its own Content-Type; Pebble's wins.
    response.headers_mut().remove(header::CONTENT_TYPE);
    for (name, value) in headers.iter() {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response
}

// ---------------------------------------------------------------------------
// Self-checks: the artefacts verify with independent tools, and a real ACME
// client works through the ARI proxy.
// ---------------------------------------------------------------------------

mod self_check {
    use std::collections::HashMap;
    use std::path::Path;
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::get;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use instant_acme::{
        Account, BodyWrapper, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
        NewOrder, OrderStatus, RetryPolicy,
    };
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, Der};

    use super::*;
    use crate::harness::{Bind, LocalTls, Pebble, PebbleOptions, free_port};

    /// `openssl ocsp` as a client (POST to `url`), trusting the
    /// intermediate as the responder (`-VAfile`): (verified, status word
    /// such as `good`, whole output).
    async fn openssl_ocsp(issuer: &Path, cert: &Path, url: &str) -> (bool, String, String) {
        let mut cmd = Command::new("openssl");
        cmd.arg("ocsp")
            .arg("-issuer")
            .arg(issuer)
            .arg("-cert")
            .arg(cert)
            .arg("-url")
            .arg(url)
            .arg("-VAfile")
            .arg(issuer)
            .args(["-timeout", "5"]);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run openssl ocsp"))
            .await
            .expect("join");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{}: ", cert.display());
        let status = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or("<none>")
            .to_owned();
        (text.contains("Response verify OK"), status, text)
    }

    /// `openssl crl -CAfile issuer`: (signature verified, `-text` output).
    fn openssl_crl(dir: &Path, issuer: &Path, der: &[u8]) -> (bool, String) {
        let file = dir.join("fetched.crl");
        fs::write(&file, der).expect("write CRL");
        let out = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&file)
            .arg("-CAfile")
            .arg(issuer)
            .output()
            .expect("run openssl crl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && text.contains("verify OK"), text)
    }

    fn crl_number(der: &[u8]) -> u64 {
        let (_, crl) = x509_parser::parse_x509_crl(der).expect("parse CRL");
        crl.crl_number()
            .expect("CRL number")
            .to_string()
            .parse()
            .expect("small CRL number")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn crl_and_ocsp_are_signed_as_the_pebble_intermediate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = LocalTls::generate(dir.path());
        let ocsp_port = free_port();
        let ocsp_url = ocsp_url_for(ocsp_port);
        let pebble = Pebble::start(
            dir.path(),
            "rev",
            &tls,
            PebbleOptions {
                ocsp_responder_url: Some(ocsp_url.clone()),
                ..PebbleOptions::default()
            },
        )
        .await;
        let ra = RevocationAuthority::new(&pebble).await;
        ra.start_ocsp(ocsp_port).await;
        let issuer = ra.issuer_pem_path().to_owned();

        let leaf = ra.issue_leaf("a.example.test", Some(&ocsp_url));
        assert!(
            leaf.serial_hex.starts_with("00") && leaf.serial_hex.len() == 34,
            "top bit set → DER serial has a leading 00: {}",
            leaf.serial_hex
        );
        assert_eq!(
            openssl_serial(&leaf.serial_hex),
            leaf.serial_hex[2..].to_ascii_uppercase()
        );
        let stranger = ra.issue_leaf("b.example.test", None);

        // Unknown → valid → revoked, each visible on the very next request.
        let (ok, status, text) = openssl_ocsp(&issuer, &leaf.path, &ocsp_url).await;
        assert!(ok && status == "unknown", "{text}");
        ra.mark_valid(&leaf.serial_hex);
        let (ok, status, text) = openssl_ocsp(&issuer, &leaf.path, &ocsp_url).await;
        assert!(ok && status == "good", "{text}");
        ra.revoke(&leaf.serial_hex, "keyCompromise");
        let (ok, status, text) = openssl_ocsp(&issuer, &leaf.path, &ocsp_url).await;
        assert!(ok && status == "revoked", "{text}");
        assert!(text.contains("Reason: keyCompromise"), "{text}");
        assert!(text.contains("Next Update:"), "{text}");
        let (ok, status, text) = openssl_ocsp(&issuer, &stranger.path, &ocsp_url).await;
        assert!(ok && status == "unknown", "{text}");
        assert_eq!(ra.ocsp_requests(), 4);

        // GET form (RFC 6960 A.1) and a raw POST as twincert would send it.
        let req_file = dir.path().join("req.der");
        let out = Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-issuer"])
            .arg(&issuer)
            .arg("-cert")
            .arg(&leaf.path)
            .arg("-reqout")
            .arg(&req_file)
            .output()
            .expect("openssl ocsp -reqout");
        assert!(out.status.success());
        let req = fs::read(&req_file).expect("read request");
        let http = reqwest::Client::new();
        let post = http
            .post(&ocsp_url)
            .header("content-type", "application/ocsp-request")
            .body(req.clone())
            .send()
            .await
            .expect("POST OCSP");
        assert_eq!(post.status(), 200);
        assert_eq!(post.headers()["content-type"], "application/ocsp-response");
        let posted = post.bytes().await.expect("body");
        let encoded = STANDARD
            .encode(&req)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let got = http
            .get(format!("{ocsp_url}{encoded}"))
            .send()
            .await
            .expect("GET OCSP");
        assert_eq!(got.status(), 200);
        let got = got.bytes().await.expect("body");
        for (how, der) in [("POST", &posted), ("GET", &got)] {
            let resp = dir.path().join("resp.der");
            fs::write(&resp, der).expect("write response");
            let out = Command::new("openssl")
                .args(["ocsp", "-respin"])
                .arg(&resp)
                .arg("-issuer")
                .arg(&issuer)
                .arg("-cert")
                .arg(&leaf.path)
                .arg("-VAfile")
                .arg(&issuer)
                .output()
                .expect("openssl ocsp -respin");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(": revoked"), "{how}: {text}");
        }
        let garbage = http
            .post(&ocsp_url)
            .body("not DER")
            .send()
            .await
            .expect("POST garbage");
        assert_eq!(garbage.status(), 200);
        assert_eq!(
            &garbage.bytes().await.expect("body")[..],
            b"\x30\x03\x0a\x01\x01"
        );

        // CRL: served, signed by the intermediate, lists the serial.
        let initial = http.get(ra.crl_url()).send().await.expect("GET CRL");
        assert_eq!(crl_number(&initial.bytes().await.expect("body")), 1);
        let published = ra.publish_crl(120);
        let resp = http.get(ra.crl_url()).send().await.expect("GET CRL");
        assert_eq!(resp.headers()["content-type"], "application/pkix-crl");
        let served = resp.bytes().await.expect("body").to_vec();
        assert_eq!(served, published);
        assert_eq!(ra.crl_fetches(), 2);
        let (verified, text) = openssl_crl(dir.path(), &issuer, &served);
        assert!(verified, "{text}");
        assert!(
            text.contains(&format!(
                "Serial Number: {}",
                openssl_serial(&leaf.serial_hex)
            )),
            "{text}"
        );
        assert!(text.contains("Key Compromise"), "{text}");
        let (_, crl) = x509_parser::parse_x509_crl(&served).expect("parse CRL");
        let revoked: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(revoked.len(), 1);
        assert_eq!(hex(revoked[0].raw_serial()), leaf.serial_hex);
        assert_eq!(revoked[0].reason_code().expect("reason").1.0, 1);
        let next = crl.next_update().expect("nextUpdate").timestamp();
        assert_eq!(next - crl.last_update().timestamp(), 120);
        assert_eq!(crl_number(&served), 2);

        // More revocations, numbers go up; `mark_valid` takes one off again.
        ra.revoke(&stranger.serial_hex, "superseded");
        let crl3 = ra.publish_crl(60);
        assert_eq!(crl_number(&crl3), 3);
        let (_, crl) = x509_parser::parse_x509_crl(&crl3).expect("parse CRL");
        assert_eq!(crl.iter_revoked_certificates().count(), 2);
        ra.mark_valid(&stranger.serial_hex);
        let crl4 = ra.publish_crl(60);
        let (_, crl) = x509_parser::parse_x509_crl(&crl4).expect("parse CRL");
        assert_eq!(crl.iter_revoked_certificates().count(), 1);

        // A corrupt CRL parses and fails verification; a withdrawn one 503s.
        let corrupt = ra.publish_corrupt_crl(60);
        let served = http
            .get(ra.crl_url())
            .send()
            .await
            .expect("GET CRL")
            .bytes()
            .await
            .expect("body");
        assert_eq!(&served[..], &corrupt[..]);
        assert!(x509_parser::parse_x509_crl(&served).is_ok());
        let (verified, text) = openssl_crl(dir.path(), &issuer, &served);
        assert!(!verified, "{text}");
        ra.withdraw_crl();
        let resp = http.get(ra.crl_url()).send().await.expect("GET CRL");
        assert_eq!(resp.status(), 503);

        // Wrong signing key: openssl still reads the status, and refuses it.
        ra.start_ocsp_with_wrong_key(ocsp_port).await;
        let (ok, status, text) = openssl_ocsp(&issuer, &leaf.path, &ocsp_url).await;
        assert!(!ok && text.contains("Response Verify Failure"), "{text}");
        assert_eq!(status, "revoked", "{text}");
        ra.set_ocsp_signer(OcspSigner::WrongKeyWithCert);
        let (ok, _, text) = openssl_ocsp(&issuer, &leaf.path, &ocsp_url).await;
        assert!(!ok, "{text}");
        ra.start_ocsp(ocsp_port).await;
        let (ok, _, text) = openssl_ocsp(&issuer, &leaf.path, &ocsp_url).await;
        assert!(ok, "{text}");

        // Stopped: nobody answers.
        ra.stop_ocsp();
        assert!(ra.ocsp_url().is_none());
        assert!(http.post(&ocsp_url).body(req).send().await.is_err());
    }

    /// An instant-acme HTTP client trusting only the local CA (TCP_NODELAY,
    /// see TESTENV.md).
    fn acme_http(tls: &LocalTls) -> Box<dyn instant_acme::HttpClient> {
        install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(tls.ca_pem.as_bytes()).expect("local CA PEM"))
            .expect("add local CA");
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        Box::new(HyperClient::builder(TokioExecutor::new()).build::<_, BodyWrapper<Bytes>>(https))
    }

    type Tokens = Arc<Mutex<HashMap<String, String>>>;

    async fn http01_answer(
        State(tokens): State<Tokens>,
        UrlPath(token): UrlPath<String>,
    ) -> String {
        lock(&tokens).get(&token).cloned().unwrap_or_default()
    }

    /// One certificate for `name` over HTTP-01: (leaf DER, the order's
    /// `replaces` as the client saw it).
    async fn issue(
        account: &Account,
        tokens: &Tokens,
        name: &str,
        replaces: Option<CertificateIdentifier<'_>>,
    ) -> Result<(Vec<u8>, Option<String>), instant_acme::Error> {
        let ids = [Identifier::Dns(name.to_owned())];
        let mut new = NewOrder::new(&ids);
        if let Some(r) = replaces {
            new = new.replaces(r);
        }
        let mut order = account.new_order(&new).await?;
        let seen = order.state().replaces.as_ref().map(|r| r.to_string());
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            // Pebble may hand the renewal the authorization the first
            // order already validated: nothing to answer then.
            if authz.status == instant_acme::AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .expect("HTTP-01 offered");
            lock(tokens).insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            );
            challenge.set_ready().await?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(50))
            .backoff(1.5);
        assert_eq!(order.poll_ready(&retry).await?, OrderStatus::Ready);
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .serialize_request(&key)
            .expect("CSR");
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&retry).await?;
        let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .expect("a certificate")
            .expect("PEM")
            .to_vec();
        Ok((leaf, seen))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ari_proxy_serves_windows_and_carries_replaces_to_pebble() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = LocalTls::generate(dir.path());
        let dns = Bind::start(dir.path());
        let http01_port = free_port();
        let ocsp_port = free_port();
        let pebble = Pebble::start(
            dir.path(),
            "ari",
            &tls,
            PebbleOptions {
                http01_port,
                dns_port: Some(dns.port()),
                ocsp_responder_url: Some(ocsp_url_for(ocsp_port)),
                ..PebbleOptions::default()
            },
        )
        .await;
        let tokens: Tokens = Arc::default();
        let http01 = Router::new()
            .route("/.well-known/acme-challenge/{token}", get(http01_answer))
            .with_state(tokens.clone());
        let _http01_server = serve(bind(http01_port).await, None, http01);
        let proxy = AriProxy::start(&pebble, &tls).await;
        let https = tls.client();

        // The directory names the proxy everywhere and has renewalInfo.
        let dir_json: serde_json::Value = https
            .get(proxy.directory_url())
            .send()
            .await
            .expect("GET /dir")
            .json()
            .await
            .expect("directory JSON");
        assert_eq!(dir_json["renewalInfo"], proxy.renewal_info_url());
        let origin = format!("https://127.0.0.1:{}/", proxy.port());
        for key in [
            "newNonce",
            "newAccount",
            "newOrder",
            "revokeCert",
            "keyChange",
        ] {
            let url = dir_json[key].as_str().unwrap_or_default();
            assert!(url.starts_with(&origin), "{key}: {url}");
        }
        assert_eq!(dir_json["newOrder"], format!("{origin}order-plz"));

        let (account, _) = Account::builder_with_http(acme_http(&tls))
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                proxy.directory_url(),
                None,
            )
            .await
            .expect("account through the proxy");

        // A first certificate, all of it through the proxy.
        let (first, seen) = issue(&account, &tokens, "a.example.test", None)
            .await
            .unwrap_or_else(|e| panic!("issue: {e}\n{}", pebble.log()));
        assert_eq!(seen, None);
        let cert_id = ari_cert_id(&first);
        let pem_path = dir.path().join("first.pem");
        fs::write(
            &pem_path,
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                STANDARD.encode(&first)
            ),
        )
        .expect("write first.pem");
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-ocsp_uri", "-in"])
            .arg(&pem_path)
            .output()
            .expect("openssl x509");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            ocsp_url_for(ocsp_port),
            "Pebble writes ocspResponderURL into the AIA"
        );

        // ARI windows.
        let now = unix_now();
        proxy.set_window(
            &cert_id,
            now - 60,
            now + 3600,
            Some("https://example.test/why"),
        );
        proxy.set_retry_after(42);
        let resp = https
            .get(format!("{}/{cert_id}", proxy.renewal_info_url()))
            .send()
            .await
            .expect("GET ARI");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["retry-after"], "42");
        let info: serde_json::Value = resp.json().await.expect("ARI JSON");
        let rfc3339 = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert_eq!(info["suggestedWindow"]["start"], rfc3339(now - 60));
        assert_eq!(info["suggestedWindow"]["end"], rfc3339(now + 3600));
        assert_eq!(info["explanationURL"], "https://example.test/why");
        let unknown = format!("{}/AAAA.AAAA", proxy.renewal_info_url());
        assert_eq!(https.get(&unknown).send().await.expect("GET").status(), 404);
        proxy.set_default_window(Some((now, now + 60)), None);
        let info: serde_json::Value = https
            .get(&unknown)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        assert_eq!(info["suggestedWindow"]["end"], rfc3339(now + 60));
        assert!(info.get("explanationURL").is_none());
        assert_eq!(
            proxy.ari_requests(),
            vec![
                cert_id.clone(),
                "AAAA.AAAA".to_owned(),
                "AAAA.AAAA".to_owned()
            ]
        );

        // The renewal order carries `replaces`; Pebble accepts it.
        let (aki, serial) = aki_and_serial(&first);
        let replaces =
            || CertificateIdentifier::new(Der::from_slice(&aki), Der::from_slice(&serial));
        assert_eq!(replaces().to_string(), cert_id);
        let (_second, seen) = issue(&account, &tokens, "a.example.test", Some(replaces()))
            .await
            .unwrap_or_else(|e| panic!("renewal: {e}\n{}", pebble.log()));
        assert_eq!(seen.as_deref(), Some(cert_id.as_str()));
        let orders = proxy.new_orders();
        assert_eq!(orders.len(), 2);
        assert!(orders[0].get("replaces").is_none());
        assert_eq!(orders[1]["replaces"], cert_id);
        assert_eq!(orders[1]["identifiers"][0]["value"], "a.example.test");

        // Without the proxy's reflection: Pebble took the order (no
        // problem document) but did not echo `replaces`.
        proxy.set_reflect_replaces(false);
        let ids = [Identifier::Dns("a.example.test".to_owned())];
        let err = account
            .new_order(&NewOrder::new(&ids).replaces(replaces()))
            .await
            .err()
            .expect("instant-acme insists on the echo");
        assert!(err.to_string().contains("replaces field mismatch"), "{err}");

        // The real Pebble certificate through the revocation authority.
        let ra = RevocationAuthority::new(&pebble).await;
        ra.start_ocsp(ocsp_port).await;
        ra.revoke(&serial_hex(&first), "superseded");
        let (ok, status, text) =
            openssl_ocsp(ra.issuer_pem_path(), &pem_path, &ocsp_url_for(ocsp_port)).await;
        assert!(ok && status == "revoked", "{text}");
        let crl = ra.publish_crl(300);
        let (verified, text) = openssl_crl(dir.path(), ra.issuer_pem_path(), &crl);
        assert!(verified, "{text}");
        assert!(
            text.contains(&format!(
                "Serial Number: {}",
                openssl_serial(&serial_hex(&first))
            )),
            "{text}"
        );
    }
}
