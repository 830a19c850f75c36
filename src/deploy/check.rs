//! The deployment check: does a TLS endpoint serve the certificate we
//! deployed, with the chain we stored?
//!
//! One [`check`] runs five steps in order and stops at the first that fails:
//! resolve the name, connect over TCP, complete a TLS handshake, compare the
//! served leaf with the expected one (key and serial), and compare the
//! served intermediates with the stored ones. The answer is a
//! [`CheckReport`] — a result to store and show, never an `Err`.
//!
//! The handshake accepts any certificate chain: we capture what is served
//! to compare it, we do not trust it (an expired or wrongly named
//! certificate is exactly what an operator wants reported, not a handshake
//! failure). The handshake signature is still verified with the crypto
//! provider's algorithms, so the server proved it holds the served key.
//!
//! This module reads nothing from the store and decides nothing; the caller
//! chooses which endpoints to check and what a mismatch leads to.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::X509Certificate;

use crate::certs::{ChainError, chain_ders};
use crate::keys::hex;
use crate::revocation::der::{SignatureError, verify_signature};

/// Where to check: what the clients of the service connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name (or IP address) clients use.
    pub host: String,
    /// The TCP port, usually 443.
    pub port: u16,
    /// The TLS server name to send, when it differs from `host`.
    pub sni: Option<String>,
    /// Connect here instead of resolving `host` (one node behind a load
    /// balancer, a host not yet in DNS).
    pub ip_override: Option<IpAddr>,
}

/// What the endpoint should serve: the certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// The intermediates as stored (DER, leaf's issuer first).
    pub chain_der: Vec<Vec<u8>>,
}

impl Expected {
    /// From a stored PEM chain, leaf first (as ACME returns it, RFC 8555
    /// §7.4.2).
    pub fn from_pem(chain_pem: &str) -> Result<Expected, ChainError> {
        let mut ders = chain_ders(chain_pem)?.into_iter();
        let leaf_der = ders.next().unwrap_or_default();
        Ok(Expected {
            leaf_der,
            chain_der: ders.collect(),
        })
    }
}

/// The steps of a check, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The host name resolved to addresses (or the override was taken).
    Resolved,
    /// A TCP connection was made to one of them.
    Connected,
    /// A TLS handshake completed and the server sent a certificate.
    Tls,
    /// The served leaf has the expected key and serial.
    CertificateMatched,
    /// The served intermediates are the stored ones and each certificate is
    /// signed by the next.
    ChainComplete,
}

impl StepKind {
    /// The name shown to operators.
    pub fn label(self) -> &'static str {
        match self {
            StepKind::Resolved => "Resolved",
            StepKind::Connected => "Connected",
            StepKind::Tls => "TLS",
            StepKind::CertificateMatched => "Certificate matched",
            StepKind::ChainComplete => "Chain complete",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which step.
    pub step: StepKind,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (addresses, serials) or why it failed.
    pub detail: String,
}

/// The verdict of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The expected certificate and chain are served.
    Matched,
    /// Another certificate is served.
    Mismatch,
    /// The right leaf with a wrong or missing chain: some clients fail.
    Incomplete,
    /// No TLS handshake: resolving, connecting or TLS failed.
    Unreachable,
}

impl Outcome {
    /// The name stored and shown (`matched`, `mismatch`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::Mismatch => "mismatch",
            Outcome::Incomplete => "incomplete",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// Everything a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The steps run, the last one failed unless the outcome is
    /// [`Outcome::Matched`].
    pub steps: Vec<Step>,
    /// The served leaf's serial (lower-case hex), when a leaf was read.
    pub served_serial: Option<String>,
    /// The verdict.
    pub outcome: Outcome,
}

impl CheckReport {
    /// One line for logs and alerts, e.g. `Resolved OK 127.0.0.1:8443 /
    /// Connected OK / TLS OK / Certificate matched NG (serial 0a1b served,
    /// 0c2d expected)`.
    pub fn summary(&self) -> String {
        self.steps
            .iter()
            .map(|s| match (s.ok, s.detail.is_empty()) {
                (true, true) => format!("{} OK", s.step),
                (true, false) => format!("{} OK {}", s.step, s.detail),
                (false, true) => format!("{} NG", s.step),
                (false, false) => format!("{} NG ({})", s.step, s.detail),
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// Collects steps; a failure ends the check with the outcome it implies.
#[derive(Default)]
struct Run {
    steps: Vec<Step>,
    served_serial: Option<String>,
}

impl Run {
    fn pass(&mut self, step: StepKind, detail: String) {
        self.steps.push(Step {
            step,
            ok: true,
            detail,
        });
    }

    fn report(self, outcome: Outcome) -> CheckReport {
        CheckReport {
            steps: self.steps,
            served_serial: self.served_serial,
            outcome,
        }
    }

    fn fail(mut self, step: StepKind, detail: String) -> CheckReport {
        self.steps.push(Step {
            step,
            ok: false,
            detail,
        });
        let outcome = match step {
            StepKind::Resolved | StepKind::Connected | StepKind::Tls => Outcome::Unreachable,
            StepKind::CertificateMatched => Outcome::Mismatch,
            StepKind::ChainComplete => Outcome::Incomplete,
        };
        self.report(outcome)
    }
}

/// Checks `ep` against `exp`; each network step (resolve, each connect
/// attempt, the handshake) may take up to `timeout`.
pub async fn check(ep: &Endpoint, exp: &Expected, timeout: Duration) -> CheckReport {
    let mut run = Run::default();
    let addrs = match resolve(ep, timeout).await {
        Ok(addrs) => addrs,
        Err(why) => return run.fail(StepKind::Resolved, why),
    };
    run.pass(StepKind::Resolved, join(&addrs, ", "));

    let (tcp, connected) = match connect(&addrs, timeout).await {
        Ok(ok) => ok,
        Err(why) => return run.fail(StepKind::Connected, why),
    };
    run.pass(StepKind::Connected, connected);

    let server_name = ep.sni.as_deref().unwrap_or(&ep.host);
    let served = match handshake(tcp, server_name, timeout).await {
        Ok(served) => served,
        Err(why) => return run.fail(StepKind::Tls, why),
    };
    run.pass(StepKind::Tls, String::new());

    let parsed = match served
        .iter()
        .enumerate()
        .map(|(i, c)| parse(c).map_err(|e| format!("served certificate {i} unreadable: {e}")))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(parsed) => parsed,
        Err(why) => return run.fail(StepKind::CertificateMatched, why),
    };
    // Not empty: the handshake refuses a server that sent no certificate.
    let leaf = &parsed[0];
    run.served_serial = Some(hex(leaf.raw_serial()));
    match match_leaf(leaf, &exp.leaf_der) {
        Ok(detail) => run.pass(StepKind::CertificateMatched, detail),
        Err(why) => return run.fail(StepKind::CertificateMatched, why),
    }

    match check_chain(&parsed, &served, &exp.chain_der) {
        Ok(detail) => run.pass(StepKind::ChainComplete, detail),
        Err(why) => return run.fail(StepKind::ChainComplete, why),
    }
    run.report(Outcome::Matched)
}

fn join(addrs: &[SocketAddr], sep: &str) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| e.to_string())
}

/// The override, or the addresses `host` resolves to.
async fn resolve(ep: &Endpoint, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Some(ip) = ep.ip_override {
        return Ok(vec![SocketAddr::new(ip, ep.port)]);
    }
    let found = tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| format!("{}: no answer within {timeout:?}", ep.host))?
    .map_err(|e| format!("{}: {e}", ep.host))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(format!("{}: no addresses", ep.host));
    }
    Ok(addrs)
}

/// Connects to the first address that answers. The detail names the
/// address only when an earlier one failed, with why.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<(TcpStream, String), String> {
    let mut failures = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let detail = if failures.is_empty() {
                    String::new()
                } else {
                    format!("{addr} after {}", failures.join("; "))
                };
                return Ok((tcp, detail));
            }
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: no answer within {timeout:?}")),
        }
    }
    Err(failures.join("; "))
}

/// The client configuration of every check (built once: thousands of
/// checks a pass share it).
fn capture_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            // Plain X25519 first (the others still offered): a check sends
            // nothing secret, so the post-quantum hybrid's extra key
            // generation and encapsulation — on both ends, per check —
            // buys it nothing. Every check is still a full handshake that
            // shows the served chain.
            provider
                .kx_groups
                .sort_by_key(|g| g.name() != rustls::NamedGroup::X25519);
            let provider = Arc::new(provider);
            let verifier = CaptureAnyChain {
                algorithms: provider.signature_verification_algorithms,
            };
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            // No session resumption, deliberately: a resumed handshake
            // carries no certificate, and rustls then reports the chain
            // remembered from the session's first handshake — a check
            // after a swap would see the *old* certificate of a server
            // that kept its ticket keys across the reload (nginx with
            // `ssl_session_ticket_key`, a fleet sharing them). A check
            // exists to see what is served now, so every handshake is a
            // full one; checks are made cheaper by running them
            // concurrently, not by skipping the certificate.
            config.resumption = rustls::client::Resumption::disabled();
            Ok(Arc::new(config))
        })
        .clone()
}

/// A TLS handshake as `server_name` (no SNI when it is an IP address);
/// returns the certificates the server sent, leaf first.
async fn handshake(
    tcp: TcpStream,
    server_name: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| format!("'{server_name}' is not a valid TLS server name"))?;
    let connector = TlsConnector::from(capture_config()?);
    let mut tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("no handshake within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let served: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    // A polite close_notify; the server's answer does not matter.
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    if served.is_empty() {
        return Err("the server sent no certificate".into());
    }
    Ok(served)
}

/// The served leaf against the expected one: same key and same serial.
fn match_leaf(served: &X509Certificate<'_>, expected_der: &[u8]) -> Result<String, String> {
    let expected =
        parse(expected_der).map_err(|e| format!("the expected certificate is unreadable: {e}"))?;
    let (got, want) = (hex(served.raw_serial()), hex(expected.raw_serial()));
    if got != want {
        return Err(format!("serial {got} served, {want} expected"));
    }
    if served.public_key().raw != expected.public_key().raw {
        return Err(format!(
            "serial {got} served with another key than expected"
        ));
    }
    Ok(format!("serial {got}"))
}

/// The served intermediates begin with the stored ones, in order, and each
/// served certificate is issued and signed by the next one. A signature in
/// an algorithm we do not verify is reported in the detail, not failed.
fn check_chain(
    parsed: &[X509Certificate<'_>],
    served: &[CertificateDer<'_>],
    stored: &[Vec<u8>],
) -> Result<String, String> {
    let served_intermediates = served.get(1..).unwrap_or_default();
    for (i, want) in stored.iter().enumerate() {
        let want_name = parse(want).map_or_else(|_| "?".to_string(), |c| c.subject().to_string());
        match served_intermediates.get(i) {
            None => {
                return Err(format!(
                    "{} intermediate(s) served, {} expected; missing {want_name}",
                    served_intermediates.len(),
                    stored.len()
                ));
            }
            Some(got) if got.as_ref() != want.as_slice() => {
                let got_name = parsed
                    .get(i + 1)
                    .map_or_else(|| "?".to_string(), |c| c.subject().to_string());
                return Err(format!(
                    "intermediate {} served is {got_name}, {want_name} expected",
                    i + 1
                ));
            }
            Some(_) => {}
        }
    }
    let mut unchecked = Vec::new();
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(format!(
                "certificate {i} ({}) is issued by {}, but the next one served is {}",
                child.subject(),
                child.issuer(),
                parent.subject()
            ));
        }
        match verify_signature(
            &child.signature_algorithm,
            parent.public_key(),
            child.tbs_certificate.as_ref(),
            &child.signature_value.data,
        ) {
            Ok(()) => {}
            Err(SignatureError::Unsupported(alg)) => unchecked.push(format!("{i} ({alg})")),
            Err(SignatureError::Invalid) => {
                return Err(format!(
                    "the signature on certificate {i} ({}) does not verify with the key of {}",
                    child.subject(),
                    parent.subject()
                ));
            }
        }
    }
    // A self-signed certificate at the end is the root some servers send.
    let with_root = parsed
        .get(1..)
        .and_then(<[_]>::last)
        .is_some_and(|c| c.issuer().as_raw() == c.subject().as_raw());
    let mut detail = match served_intermediates.len() - usize::from(with_root) {
        1 => "1 intermediate".to_string(),
        n => format!("{n} intermediates"),
    };
    if with_root {
        detail.push_str(" + root");
    }
    if !unchecked.is_empty() {
        detail.push_str(&format!(
            "; signature not checked on certificate {}",
            unchecked.join(", ")
        ));
    }
    Ok(detail)
}

/// Accepts whatever chain the server sends (we compare it afterwards, we do
/// not trust it) but verifies the handshake signatures, so the server has
/// shown it holds the served key.
#[derive(Debug)]
struct CaptureAnyChain {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CaptureAnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_are_the_serialized_ones() {
        for o in [
            Outcome::Matched,
            Outcome::Mismatch,
            Outcome::Incomplete,
            Outcome::Unreachable,
        ] {
            assert_eq!(serde_json::to_value(o).expect("json"), o.as_str());
        }
    }
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        SerialNumber,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    const TIMEOUT: Duration = Duration::from_secs(5);

    struct Pki {
        root: Vec<u8>,
        intermediate: Vec<u8>,
        /// Another CA's certificate, not the leaves' issuer.
        stranger: Vec<u8>,
        /// Same subject as the intermediate, another key: names chain, the
        /// signature does not.
        impostor: Vec<u8>,
        leaf: (Vec<u8>, Vec<u8>),
        other_leaf: (Vec<u8>, Vec<u8>),
    }

    fn named(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut params = named(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    }

    /// A root, an intermediate and two leaves (serials 0a1b and 0c2d), plus
    /// certificates that must not pass as the intermediate. Leaves as (DER
    /// certificate, PKCS#8 key).
    fn pki() -> Pki {
        let root_key = KeyPair::generate().expect("key");
        let root_params = ca_params("Test Root");
        let root_cert = root_params.self_signed(&root_key).expect("root");
        let root = Issuer::new(root_params, root_key);

        let inter_key = KeyPair::generate().expect("key");
        let inter_cert = ca_params("Test Intermediate")
            .signed_by(&inter_key, &root)
            .expect("intermediate");
        let inter = Issuer::new(ca_params("Test Intermediate"), inter_key);

        let impostor_key = KeyPair::generate().expect("key");
        let impostor = ca_params("Test Intermediate")
            .signed_by(&impostor_key, &root)
            .expect("impostor");

        let stranger_key = KeyPair::generate().expect("key");
        let stranger = ca_params("Other CA")
            .self_signed(&stranger_key)
            .expect("stranger");

        let leaf = |serial: &[u8]| {
            let key = KeyPair::generate().expect("key");
            let mut params =
                CertificateParams::new(vec!["leaf.example".to_string()]).expect("params");
            params.serial_number = Some(SerialNumber::from_slice(serial));
            let cert = params.signed_by(&key, &inter).expect("leaf");
            (cert.der().to_vec(), key.serialize_der())
        };
        Pki {
            root: root_cert.der().to_vec(),
            intermediate: inter_cert.der().to_vec(),
            stranger: stranger.der().to_vec(),
            impostor: impostor.der().to_vec(),
            leaf: leaf(&[0x0a, 0x1b]),
            other_leaf: leaf(&[0x0c, 0x2d]),
        }
    }

    /// A TLS server on 127.0.0.1 serving `chain` with `key`; each
    /// handshake's SNI is sent on the channel.
    async fn serve(
        chain: Vec<Vec<u8>>,
        key: Vec<u8>,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<Option<String>>) {
        let certs = chain.into_iter().map(CertificateDer::from).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(tls.get_ref().1.server_name().map(str::to_string));
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (addr, rx)
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            sni: Some("leaf.example".into()),
            ip_override: None,
        }
    }

    fn kinds(report: &CheckReport) -> Vec<(StepKind, bool)> {
        report.steps.iter().map(|s| (s.step, s.ok)).collect()
    }

    #[tokio::test]
    async fn served_chains_against_the_expected_one() {
        use StepKind::*;
        let p = pki();
        let expected = Expected {
            leaf_der: p.leaf.0.clone(),
            chain_der: vec![p.intermediate.clone()],
        };
        struct Case {
            name: &'static str,
            served: Vec<Vec<u8>>,
            key: Vec<u8>,
            outcome: Outcome,
            last: (StepKind, bool),
            detail: &'static str,
        }
        let cases = [
            Case {
                name: "matching",
                served: vec![p.leaf.0.clone(), p.intermediate.clone()],
                key: p.leaf.1.clone(),
                outcome: Outcome::Matched,
                last: (ChainComplete, true),
                detail: "1 intermediate",
            },
            Case {
                name: "matching, root appended",
                served: vec![p.leaf.0.clone(), p.intermediate.clone(), p.root.clone()],
                key: p.leaf.1.clone(),
                outcome: Outcome::Matched,
                last: (ChainComplete, true),
                detail: "1 intermediate + root",
            },
            Case {
                name: "another leaf",
                served: vec![p.other_leaf.0.clone(), p.intermediate.clone()],
                key: p.other_leaf.1.clone(),
                outcome: Outcome::Mismatch,
                last: (CertificateMatched, false),
                detail: "serial 0c2d served, 0a1b expected",
            },
            Case {
                name: "leaf only",
                served: vec![p.leaf.0.clone()],
                key: p.leaf.1.clone(),
                outcome: Outcome::Incomplete,
                last: (ChainComplete, false),
                detail: "0 intermediate(s) served, 1 expected; missing CN=Test Intermediate",
            },
            Case {
                name: "wrong intermediate",
                served: vec![p.leaf.0.clone(), p.stranger.clone()],
                key: p.leaf.1.clone(),
                outcome: Outcome::Incomplete,
                last: (ChainComplete, false),
                detail: "intermediate 1 served is CN=Other CA, CN=Test Intermediate expected",
            },
        ];
        for case in cases {
            let (addr, mut sni) = serve(case.served, case.key).await;
            let report = check(&endpoint(addr), &expected, TIMEOUT).await;
            assert_eq!(
                report.outcome,
                case.outcome,
                "{}: {}",
                case.name,
                report.summary()
            );
            assert_eq!(
                report.steps.last().map(|s| (s.step, s.ok)),
                Some(case.last),
                "{}",
                case.name
            );
            assert_eq!(
                report.steps.last().map(|s| s.detail.as_str()),
                Some(case.detail),
                "{}",
                case.name
            );
            assert!(report.steps[..report.steps.len() - 1].iter().all(|s| s.ok));
            assert_eq!(sni.recv().await, Some(Some("leaf.example".to_string())));
        }
    }

    #[tokio::test]
    async fn matched_report_has_all_steps_serial_and_expiry() {
        let p = pki();
        let (addr, _sni) = serve(vec![p.leaf.0.clone(), p.intermediate.clone()], p.leaf.1).await;
        let expected = Expected::from_pem(&format!(
            "{}{}",
            pem("CERTIFICATE", &p.leaf.0),
            pem("CERTIFICATE", &p.intermediate)
        ))
        .expect("pem");
        let report = check(&endpoint(addr), &expected, TIMEOUT).await;
        use StepKind::*;
        assert_eq!(
            kinds(&report),
            vec![
                (Resolved, true),
                (Connected, true),
                (Tls, true),
                (CertificateMatched, true),
                (ChainComplete, true)
            ]
        );
        assert_eq!(report.outcome, Outcome::Matched);
        assert_eq!(report.served_serial.as_deref(), Some("0a1b"));
        assert_eq!(
            report.summary(),
            format!(
                "Resolved OK {addr} / Connected OK / TLS OK / Certificate matched OK serial 0a1b \
                 / Chain complete OK 1 intermediate"
            )
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["outcome"], "matched");
        assert_eq!(json["steps"][3]["step"], "certificate_matched");
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[tokio::test]
    async fn a_forged_intermediate_fails_the_chain() {
        let p = pki();
        let (addr, _sni) = serve(vec![p.leaf.0.clone(), p.impostor.clone()], p.leaf.1).await;
        // Stored with the impostor too, so only the signature tells.
        let expected = Expected {
            leaf_der: p.leaf.0,
            chain_der: vec![p.impostor],
        };
        let report = check(&endpoint(addr), &expected, TIMEOUT).await;
        assert_eq!(report.outcome, Outcome::Incomplete, "{}", report.summary());
        let last = report.steps.last().expect("steps");
        assert!(last.detail.contains("does not verify"), "{}", last.detail);
    }

    #[tokio::test]
    async fn closed_port_is_unreachable_at_connected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let p = pki();
        let exp = Expected {
            leaf_der: p.leaf.0,
            chain_der: vec![],
        };
        let report = check(&endpoint(addr), &exp, TIMEOUT).await;
        use StepKind::*;
        assert_eq!(kinds(&report), vec![(Resolved, true), (Connected, false)]);
        assert_eq!(report.outcome, Outcome::Unreachable);
        assert!(report.steps[1].detail.contains(&addr.to_string()));
        assert_eq!(report.served_serial, None);
    }

    #[tokio::test]
    async fn unresolvable_host_is_unreachable_at_resolved() {
        let p = pki();
        let exp = Expected {
            leaf_der: p.leaf.0,
            chain_der: vec![],
        };
        let ep = Endpoint {
            host: "nonexistent.invalid".into(),
            port: 443,
            sni: None,
            ip_override: None,
        };
        let report = check(&ep, &exp, TIMEOUT).await;
        assert_eq!(kinds(&report), vec![(StepKind::Resolved, false)]);
        assert_eq!(report.outcome, Outcome::Unreachable);
        assert!(report.steps[0].detail.starts_with("nonexistent.invalid"));
    }

    #[tokio::test]
    async fn ip_override_is_used_and_sni_follows_the_host() {
        let p = pki();
        let expected = Expected {
            leaf_der: p.leaf.0.clone(),
            chain_der: vec![p.intermediate.clone()],
        };
        let (addr, mut sni) = serve(vec![p.leaf.0, p.intermediate], p.leaf.1).await;
        // (endpoint, SNI the server must see)
        let cases = [
            (
                Endpoint {
                    host: "nonexistent.invalid".into(),
                    port: addr.port(),
                    sni: None,
                    ip_override: Some(addr.ip()),
                },
                Some("nonexistent.invalid".to_string()),
            ),
            (
                Endpoint {
                    host: "127.0.0.1".into(),
                    port: addr.port(),
                    sni: None,
                    ip_override: None,
                },
                None,
            ),
        ];
        for (ep, want_sni) in cases {
            let report = check(&ep, &expected, TIMEOUT).await;
            assert_eq!(report.outcome, Outcome::Matched, "{}", report.summary());
            assert_eq!(report.steps[0].detail, addr.to_string());
            assert_eq!(sni.recv().await, Some(want_sni), "{ep:?}");
        }
    }

    #[test]
    fn summary_format() {
        let step = |step, ok, detail: &str| Step {
            step,
            ok,
            detail: detail.into(),
        };
        let report = CheckReport {
            steps: vec![
                step(StepKind::Resolved, true, "127.0.0.1:8443"),
                step(StepKind::Connected, true, ""),
                step(StepKind::Tls, true, ""),
                step(
                    StepKind::CertificateMatched,
                    false,
                    "serial 0a1b served, 0c2d expected",
                ),
            ],
            served_serial: Some("0a1b".into()),
            outcome: Outcome::Mismatch,
        };
        assert_eq!(
            report.summary(),
            "Resolved OK 127.0.0.1:8443 / Connected OK / TLS OK / Certificate matched NG \
             (serial 0a1b served, 0c2d expected)"
        );
    }

    #[test]
    fn every_check_is_a_full_handshake_offering_plain_x25519_first() {
        let config = capture_config().expect("config");
        // No session is ever resumed: a resumed handshake shows no chain.
        let resumption = format!("{:?}", config.resumption);
        assert!(
            resumption.contains("NoClientSessionStorage") && resumption.contains("Disabled"),
            "{resumption}"
        );
        let groups: Vec<rustls::NamedGroup> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(
            groups.first(),
            Some(&rustls::NamedGroup::X25519),
            "{groups:?}"
        );
        // The others are still offered, for servers that insist.
        assert!(
            groups.contains(&rustls::NamedGroup::secp256r1),
            "{groups:?}"
        );
        assert!(groups.len() >= 3, "{groups:?}");
    }
}
