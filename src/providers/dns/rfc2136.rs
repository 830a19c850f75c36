//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP, with
//! hickory-net. Works with BIND, Knot, PowerDNS and most self-hosted
//! authoritative servers.
//!
//! The provider's settings ([`Rfc2136Settings`]) are defined here and
//! filled by `config` from a `[[dns_providers]]` entry, so the provider
//! does not depend on the configuration file's shape.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::DnsMultiplexer;

use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone};

/// An RFC 2136 server and its TSIG key (`kind = "rfc2136"`), as the
/// `[[dns_providers]]` configuration validated them.
#[derive(Clone)]
pub struct Rfc2136Settings {
    /// The primary server accepting updates.
    pub server: SocketAddr,
    /// TSIG key name.
    pub tsig_key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub tsig_algorithm: String,
    /// The TSIG secret, base64 (never logged).
    pub tsig_secret_b64: String,
}

impl std::fmt::Debug for Rfc2136Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Settings")
            .field("server", &self.server)
            .field("tsig_key_name", &self.tsig_key_name)
            .field("tsig_algorithm", &self.tsig_algorithm)
            .finish_non_exhaustive()
    }
}

/// An RFC 2136 server and the key to sign updates with.
pub struct Rfc2136 {
    id: String,
    server: SocketAddr,
    zones: Vec<String>,
    key_name: String,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("id", &self.id)
            .field("server", &self.server)
            .field("zones", &self.zones)
            .finish_non_exhaustive()
    }
}

/// TXT records for ACME live one minute: resolvers must not keep stale
/// challenge values.
const TTL: u32 = 60;

impl Rfc2136 {
    /// A provider from its configuration.
    pub fn new(id: &str, zones: &[String], cfg: &Rfc2136Settings) -> Result<Rfc2136, DnsError> {
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(&cfg.tsig_secret_b64)
            .map_err(|_| DnsError(format!("DNS provider {id}: TSIG secret is not base64")))?;
        let algorithm = match cfg.tsig_algorithm.as_str() {
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            _ => TsigAlgorithm::HmacSha256,
        };
        let key_name = Name::from_ascii(&cfg.tsig_key_name).map_err(|e| {
            DnsError(format!(
                "DNS provider {id}: bad TSIG key name '{}': {e}",
                cfg.tsig_key_name
            ))
        })?;
        let signer = TSigner::new(secret, algorithm, key_name, 300)
            .map_err(|e| DnsError(format!("DNS provider {id}: TSIG: {e}")))?;
        Ok(Rfc2136 {
            id: id.to_string(),
            server: cfg.server,
            zones: zones.to_vec(),
            key_name: cfg.tsig_key_name.clone(),
            signer,
        })
    }

    async fn update(&self, fqdn: &str, value: &str, add: bool) -> Result<(), DnsError> {
        let verb = if add { "adding" } else { "removing" };
        let what = format!("{verb} TXT at {fqdn} via {} ({})", self.id, self.server);
        let zone = longest_zone(&self.zones, fqdn)
            .ok_or_else(|| DnsError(format!("{what}: no configured zone holds this name")))?;
        let origin = Name::from_ascii(format!("{zone}."))
            .map_err(|e| DnsError(format!("{what}: bad zone {zone}: {e}")))?;
        let name = Name::from_ascii(format!("{}.", fqdn.trim_end_matches('.')))
            .map_err(|e| DnsError(format!("{what}: bad name: {e}")))?;
        let mut record =
            Record::from_rdata(name, TTL, RData::TXT(TXT::new(vec![value.to_string()])));
        record.dns_class = DNSClass::IN;

        let (connect, sender) = TcpClientStream::new(
            self.server,
            None,
            Some(Duration::from_secs(10)),
            TokioRuntimeProvider::new(),
        );
        let stream = connect
            .await
            .map_err(|e| DnsError(format!("{what}: cannot connect: {e}")))?;
        // The multiplexer signs the update with the key (RFC 8945 §5.1)
        // and checks the TSIG of the answer (§5.4).
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(
            DnsMultiplexer::new(stream, sender)
                .with_timeout(Duration::from_secs(10))
                .with_signer(self.signer.clone()),
        );
        let bg = tokio::spawn(bg);
        let result = if add {
            client.append(record, origin, false).await
        } else {
            client.delete_by_rdata(record, origin).await
        };
        bg.abort();
        let response = result.map_err(|e| {
            let text = e.to_string();
            // A server that rejects the TSIG answers NOTAUTH/BADSIG without
            // a valid signature; hickory then reports only a vague protocol
            // error. Anything but a timeout on a signed update is that.
            let lower = text.to_ascii_lowercase();
            if !lower.contains("timed out") && !lower.contains("timeout") {
                DnsError(format!(
                    "{what}: the DNS update was refused for bad TSIG (key '{}'): check the secret and algorithm ({text})",
                    self.key_name
                ))
            } else {
                DnsError(format!("{what}: {text}"))
            }
        })?;
        match response.response_code {
            ResponseCode::NoError => Ok(()),
            ResponseCode::NotAuth => Err(DnsError(format!(
                "{what}: the DNS update was refused for bad TSIG (NOTAUTH; key '{}'): check the secret and algorithm",
                self.key_name
            ))),
            ResponseCode::Refused => Err(DnsError(format!(
                "{what}: the DNS update was REFUSED: key '{}' may not change this name",
                self.key_name
            ))),
            other => Err(DnsError(format!("{what}: the server answered {other}"))),
        }
    }
}

impl Rfc2136 {
    /// A TSIG-signed SOA query for `zone` to the update server over TCP
    /// (RFC 8945 §5.1; hickory signs only updates and transfers, so the
    /// query is signed here): the server checks our signature (§5.2) and
    /// we check the answer's (§5.3), so a wrong secret, algorithm or key
    /// name comes back as NOTAUTH (BADSIG/BADKEY). Whether the key may
    /// *update* the zone (BIND's `update-policy`) cannot be known without
    /// an update.
    async fn probe(&self, zone: &str) -> ProviderCheck {
        use hickory_net::proto::op::{Message, Query};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let what = format!(
            "DNS provider '{}' (rfc2136, {}): signed SOA query for {zone}",
            self.id, self.server
        );
        let name = match Name::from_ascii(format!("{}.", zone.trim_end_matches('.'))) {
            Ok(n) => n,
            Err(e) => return ProviderCheck::Unreachable(format!("{what}: bad zone: {e}")),
        };
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now = since_epoch.as_secs();
        let mut query = Message::query();
        // One query on its own TCP connection: the id only has to differ
        // between checks, not be unguessable (nothing else reads this
        // connection).
        query.metadata.id = since_epoch.subsec_nanos() as u16;
        query.add_query(Query::query(name, RecordType::SOA));
        let signed = query
            .finalize(&self.signer, now)
            .map_err(|e| e.to_string())
            .and_then(|v| Ok((v, query.to_vec().map_err(|e| e.to_string())?)));
        let (verifier, bytes) = match signed {
            Ok(x) => x,
            Err(e) => return ProviderCheck::Unreachable(format!("{what}: signing: {e}")),
        };
        let exchange = async {
            let mut tcp = tokio::net::TcpStream::connect(self.server)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            // RFC 1035 §4.2.2: each message is preceded by its length.
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            tcp.write_all(&framed)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            let len = tcp
                .read_u16()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            let mut answer = vec![0; usize::from(len)];
            tcp.read_exact(&mut answer)
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok::<_, String>(answer)
        };
        let answer = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return ProviderCheck::Unreachable(format!("{what}: {e}")),
            Err(_) => return ProviderCheck::Unreachable(format!("{what}: no answer within 10 s")),
        };
        let message = match Message::from_vec(&answer) {
            Ok(m) => m,
            Err(e) => {
                return ProviderCheck::Unreachable(format!("{what}: not a DNS answer: {e}"));
            }
        };
        let bad_key = |why: String| ProviderCheck::Refused {
            detail: format!("{what}: the server refused the TSIG signature ({why})"),
            fix: format!(
                "check tsig_key_name '{}', tsig_algorithm and tsig_secret of DNS provider '{}' \
                 against the server's key",
                self.key_name, self.id
            ),
        };
        match message.metadata.response_code {
            ResponseCode::NoError if !message.answers.is_empty() => {
                // The answer must carry the server's signature under our key.
                match verifier.map(|mut v| v.verify(&answer)) {
                    Some(Ok(_)) => ProviderCheck::Verified(format!(
                        "{what}: answered with a valid signature by key '{}' (whether the key \
                         may update is not checked without a change)",
                        self.key_name
                    )),
                    Some(Err(e)) => bad_key(format!("the answer's signature: {e}")),
                    None => bad_key("the answer is not signed".into()),
                }
            }
            ResponseCode::NotAuth => bad_key(format!(
                "NOTAUTH{}",
                message
                    .signature()
                    .and_then(|s| s.data.error.as_ref())
                    .map(|e| format!(", TSIG error {e:?}"))
                    .unwrap_or_default()
            )),
            ResponseCode::NoError | ResponseCode::Refused | ResponseCode::NXDomain => {
                ProviderCheck::Refused {
                    detail: format!(
                        "{what}: the server does not serve the zone (answered {})",
                        message.metadata.response_code
                    ),
                    fix: format!(
                        "check server of DNS provider '{}': it must be the primary of {zone}",
                        self.id
                    ),
                }
            }
            other => ProviderCheck::Unreachable(format!("{what}: the server answered {other}")),
        }
    }
}

impl DnsProvider for Rfc2136 {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.update(fqdn, value, true))
    }

    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.update(fqdn, value, false))
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        Box::pin(self.probe(zone))
    }
}
