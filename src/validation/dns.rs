//! DNS-01 lookups: where a challenge record must go, and whether the
//! world can see it yet (RFC 8555 §8.4).
//!
//! * **CNAME delegation.** `_acme-challenge.<name>` may be a CNAME (or a
//!   chain) into a zone twincert controls; the TXT goes at the end of the
//!   chain. Following is loop-safe and bounded.
//! * **Zone finding.** The zone of a name is the closest enclosing name that
//!   has an SOA record.
//! * **Propagation.** Before the CA is told to look, every authoritative
//!   server of the zone (NS records, their addresses) is asked *directly*,
//!   never a recursive resolver, until all of them answer the value.
//!
//! The pure walking logic is written against [`DnsView`], so it is tested
//! without a network; [`DnsLookup`] is the real view over hickory-net.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{Message, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;

use crate::config::DnsConfig;

/// The longest CNAME chain followed before giving up.
pub const MAX_CNAME_CHAIN: usize = 8;

/// A boxed lookup future.
pub type LookupFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// What the walking logic needs to know about the DNS.
pub trait DnsView: Sync {
    /// The CNAME target of `name`, if `name` is a CNAME.
    fn cname<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Option<String>>;
    /// Whether `name` is a zone apex (has an SOA record).
    fn is_apex<'a>(&'a self, name: &'a str) -> LookupFuture<'a, bool>;
}

use crate::providers::dns::normal;

/// Follows CNAMEs from `name` to the name that holds the records.
pub async fn follow_cname(view: &dyn DnsView, name: &str) -> Result<String, String> {
    let mut current = normal(name);
    let mut seen = HashSet::new();
    seen.insert(current.clone());
    for _ in 0..MAX_CNAME_CHAIN {
        match view.cname(&current).await? {
            None => return Ok(current),
            Some(target) => {
                let target = normal(&target);
                if !seen.insert(target.clone()) {
                    return Err(format!(
                        "CNAME loop at {target} while following {}",
                        normal(name)
                    ));
                }
                current = target;
            }
        }
    }
    Err(format!(
        "CNAME chain from {} is longer than {MAX_CNAME_CHAIN}",
        normal(name)
    ))
}

/// The zone apex enclosing `name`: the name itself or its closest ancestor
/// with an SOA record.
pub async fn find_zone(view: &dyn DnsView, name: &str) -> Result<String, String> {
    let mut candidate = normal(name);
    loop {
        if view.is_apex(&candidate).await? {
            return Ok(candidate);
        }
        match candidate.split_once('.') {
            Some((_, parent)) if !parent.is_empty() => candidate = parent.to_string(),
            _ => return Err(format!("no zone (SOA) found above {}", normal(name))),
        }
    }
}

/// Lookups over the network: the configured resolver for SOA, NS, CNAME and
/// addresses; the authoritative servers themselves for the TXT check.
#[derive(Debug, Clone)]
pub struct DnsLookup {
    cfg: DnsConfig,
    /// Authoritative server addresses per zone, for a minute: every record
    /// of every order in one zone would otherwise re-resolve NS and A/AAAA.
    servers: ServerCache,
}

/// Zone → (when resolved, its authoritative server addresses).
type ServerCache =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (Instant, Vec<SocketAddr>)>>>;

/// How long a zone's authoritative server list is reused.
const SERVERS_TTL: Duration = Duration::from_secs(60);

fn fqdn(name: &str) -> Result<Name, String> {
    Name::from_ascii(format!("{}.", normal(name))).map_err(|e| format!("bad DNS name {name}: {e}"))
}

impl DnsLookup {
    /// Lookups as configured.
    pub fn new(cfg: DnsConfig) -> DnsLookup {
        DnsLookup {
            cfg,
            servers: Default::default(),
        }
    }

    /// One query to `server`; NOERROR and NXDOMAIN are answers, any other
    /// response code (SERVFAIL, REFUSED, …) and a timeout are errors.
    pub(super) async fn query(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
    ) -> Result<Message, String> {
        let (connect, sender) = TcpClientStream::new(
            server,
            None,
            Some(Duration::from_secs(5)),
            TokioRuntimeProvider::new(),
        );
        let stream = connect
            .await
            .map_err(|e| format!("DNS server {server}: {e}"))?;
        let (mut client, bg) =
            Client::<TokioRuntimeProvider>::with_timeout(stream, sender, Duration::from_secs(5));
        let bg = tokio::spawn(bg);
        let r = client.query(fqdn(name)?, DNSClass::IN, rtype).await;
        bg.abort();
        let msg = r
            .map_err(|e| format!("DNS server {server}: {rtype} {name}: {e}"))?
            .into_message();
        match msg.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(msg),
            other => Err(format!("DNS server {server}: {rtype} {name}: {other}")),
        }
    }

    /// The addresses of a zone's authoritative servers (cached a minute).
    pub async fn authoritative_servers(&self, zone: &str) -> Result<Vec<SocketAddr>, String> {
        let key = normal(zone);
        if let Some((at, list)) = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < SERVERS_TTL
        {
            return Ok(list.clone());
        }
        let list = self.resolve_servers(zone).await?;
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), list.clone()));
        Ok(list)
    }

    async fn resolve_servers(&self, zone: &str) -> Result<Vec<SocketAddr>, String> {
        let msg = self.query(self.cfg.resolver, zone, RecordType::NS).await?;
        let mut out = Vec::new();
        for ns in msg.answers.iter().filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.to_ascii()),
            _ => None,
        }) {
            for rtype in [RecordType::A, RecordType::AAAA] {
                let addrs = self.query(self.cfg.resolver, &ns, rtype).await?;
                for r in &addrs.answers {
                    let ip: Option<IpAddr> = match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        let addr = SocketAddr::new(ip, self.cfg.authoritative_port);
                        if !out.contains(&addr) {
                            out.push(addr);
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(format!("zone {zone} has no reachable NS addresses"));
        }
        Ok(out)
    }

    /// The configuration these lookups follow.
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// Whether every authoritative server of `zone` answers `value` in the
    /// TXT records at `name` right now.
    pub async fn txt_visible(&self, zone: &str, name: &str, value: &str) -> Result<bool, String> {
        for server in self.authoritative_servers(zone).await? {
            let msg = self.query(server, name, RecordType::TXT).await?;
            let seen = msg.answers.iter().any(|r| match &r.data {
                // One string, or (a value over 255 bytes, RFC 1035
                // §3.3.14) the strings of one record joined.
                RData::TXT(txt) => {
                    txt.txt_data.iter().any(|d| d.as_ref() == value.as_bytes())
                        || txt.txt_data.concat() == value.as_bytes()
                }
                _ => false,
            });
            if !seen {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits until every authoritative server of `zone` answers `value` in
    /// the TXT records at `name`; returns how long that took.
    pub async fn wait_for_txt(
        &self,
        zone: &str,
        name: &str,
        value: &str,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let limit = Duration::from_secs(self.cfg.propagation_timeout_seconds);
        let servers = self.authoritative_servers(zone).await?;
        let mut waiting: Vec<SocketAddr> = servers.clone();
        loop {
            let mut still = Vec::new();
            for server in waiting {
                let seen = match self.query(server, name, RecordType::TXT).await {
                    Ok(msg) => msg.answers.iter().any(|r| match &r.data {
                        RData::TXT(txt) => {
                            txt.txt_data.iter().any(|d| d.as_ref() == value.as_bytes())
                        }
                        _ => false,
                    }),
                    Err(_) => false,
                };
                if !seen {
                    still.push(server);
                }
            }
            if still.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                let list: Vec<String> = still.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "TXT {value} at {name} not visible on {} after {} s (propagation timeout)",
                    list.join(", "),
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(self.cfg.propagation_interval_ms)).await;
            waiting = still;
        }
    }
}

impl DnsView for DnsLookup {
    fn cname<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Option<String>> {
        Box::pin(async move {
            let msg = self
                .query(self.cfg.resolver, name, RecordType::CNAME)
                .await?;
            let want = normal(name);
            Ok(msg.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if normal(&r.name.to_ascii()) == want => Some(c.0.to_ascii()),
                _ => None,
            }))
        })
    }

    fn is_apex<'a>(&'a self, name: &'a str) -> LookupFuture<'a, bool> {
        Box::pin(async move {
            let msg = self.query(self.cfg.resolver, name, RecordType::SOA).await?;
            let want = normal(name);
            Ok(msg
                .answers
                .iter()
                .any(|r| matches!(&r.data, RData::SOA(_)) && normal(&r.name.to_ascii()) == want))
        })
    }
}

/// Everything DNS-01 needs: the providers twincert may write through and
/// the lookups that decide where and whether a record is visible.
pub struct Dns01Solver {
    providers: Vec<std::sync::Arc<dyn crate::providers::dns::DnsProvider>>,
    lookup: DnsLookup,
}

impl std::fmt::Debug for Dns01Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.providers.iter().map(|p| p.id()).collect();
        f.debug_struct("Dns01Solver")
            .field("providers", &ids)
            .finish()
    }
}

/// Where one DNS-01 answer goes.
pub struct Placement {
    /// The provider that writes it.
    pub provider: std::sync::Arc<dyn crate::providers::dns::DnsProvider>,
    /// The owner name of the TXT record (after CNAME following).
    pub fqdn: String,
    /// The zone holding `fqdn`.
    pub zone: String,
}

impl Dns01Solver {
    /// A solver over `providers`.
    pub fn new(
        providers: Vec<std::sync::Arc<dyn crate::providers::dns::DnsProvider>>,
        lookup: DnsLookup,
    ) -> Dns01Solver {
        Dns01Solver { providers, lookup }
    }

    /// The provider with this id.
    pub fn provider(
        &self,
        id: &str,
    ) -> Option<std::sync::Arc<dyn crate::providers::dns::DnsProvider>> {
        self.providers.iter().find(|p| p.id() == id).cloned()
    }

    /// Decides where the answer for `domain` goes: `_acme-challenge.<domain>`
    /// or, if that is a CNAME (chain), its target; and which provider
    /// controls that name (the longest configured zone wins).
    pub async fn place(&self, domain: &str, pinned: Option<&str>) -> Result<Placement, String> {
        self.place_owner(&format!("_acme-challenge.{}", normal(domain)), pinned)
            .await
    }

    /// Where a TXT record at `owner` goes: [`Self::place`] for any owner
    /// name (dns-persist-01's `_validation-persist.<domain>`).
    pub async fn place_owner(
        &self,
        owner: &str,
        pinned: Option<&str>,
    ) -> Result<Placement, String> {
        let owner = normal(owner);
        let fqdn = follow_cname(&self.lookup, &owner).await?;
        let best = self
            .providers
            .iter()
            .filter(|p| pinned.is_none_or(|id| p.id() == id))
            .filter_map(|p| p.zone_for(&fqdn).map(|z| (z, p.clone())))
            .max_by_key(|(z, _)| z.len());
        match best {
            Some((zone, provider)) => Ok(Placement {
                provider,
                fqdn,
                zone,
            }),
            None if pinned.is_some() => Err(format!(
                "DNS provider '{}' does not control {fqdn}",
                pinned.unwrap_or_default()
            )),
            None if fqdn == owner => Err(format!(
                "no DNS provider controls {owner}; add its zone to a [[dns_providers]] entry, or \
                 delegate it with a CNAME into a zone twincert controls"
            )),
            None => Err(format!(
                "{owner} is a CNAME to {fqdn}, which no configured DNS provider controls"
            )),
        }
    }

    /// The lookups (for manual DNS-01).
    pub fn lookup(&self) -> &DnsLookup {
        &self.lookup
    }

    /// Whether any DNS provider is configured (automatic DNS-01).
    pub fn has_providers(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Waits until every authoritative server of `zone` shows `value`.
    pub async fn wait_visible(
        &self,
        zone: &str,
        fqdn: &str,
        value: &str,
    ) -> Result<Duration, String> {
        self.lookup.wait_for_txt(zone, fqdn, value).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct MapView {
        cnames: HashMap<&'static str, &'static str>,
        apexes: Vec<&'static str>,
    }

    impl DnsView for MapView {
        fn cname<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Option<String>> {
            let r = self.cnames.get(name).map(|s| s.to_string());
            Box::pin(async move { Ok(r) })
        }
        fn is_apex<'a>(&'a self, name: &'a str) -> LookupFuture<'a, bool> {
            let r = self.apexes.contains(&name);
            Box::pin(async move { Ok(r) })
        }
    }

    fn view() -> MapView {
        MapView {
            cnames: HashMap::from([
                ("_acme-challenge.direct.other.test", "x.acme.example.test."),
                ("_acme-challenge.chain.other.test", "hop1.other.test"),
                ("hop1.other.test", "hop2.other.test"),
                ("hop2.other.test", "final.acme.example.test"),
                ("_acme-challenge.loop.other.test", "l1.other.test"),
                ("l1.other.test", "l2.other.test"),
                ("l2.other.test", "l1.other.test"),
                (
                    "_acme-challenge.self.other.test",
                    "_acme-challenge.self.other.test",
                ),
                ("_acme-challenge.long.other.test", "c1.t"),
                ("c1.t", "c2.t"),
                ("c2.t", "c3.t"),
                ("c3.t", "c4.t"),
                ("c4.t", "c5.t"),
                ("c5.t", "c6.t"),
                ("c6.t", "c7.t"),
                ("c7.t", "c8.t"),
                ("c8.t", "c9.t"),
            ]),
            apexes: vec!["example.test", "acme.example.test", "other.test"],
        }
    }

    #[tokio::test]
    async fn cname_following() {
        let v = view();
        let cases: [(&str, Result<&str, &str>); 7] = [
            (
                "_acme-challenge.plain.example.test",
                Ok("_acme-challenge.plain.example.test"),
            ),
            (
                "_acme-challenge.direct.other.test",
                Ok("x.acme.example.test"),
            ),
            (
                "_ACME-challenge.Direct.other.test.",
                Ok("x.acme.example.test"),
            ),
            (
                "_acme-challenge.chain.other.test",
                Ok("final.acme.example.test"),
            ),
            (
                "_acme-challenge.loop.other.test",
                Err("CNAME loop at l1.other.test"),
            ),
            ("_acme-challenge.self.other.test", Err("CNAME loop")),
            ("_acme-challenge.long.other.test", Err("longer than 8")),
        ];
        for (name, want) in cases {
            let got = follow_cname(&v, name).await;
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{name}: {g}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[tokio::test]
    async fn zone_finding() {
        let v = view();
        let cases: [(&str, Result<&str, &str>); 5] = [
            ("example.test", Ok("example.test")),
            ("_acme-challenge.a.example.test", Ok("example.test")),
            ("x.acme.example.test", Ok("acme.example.test")),
            ("deep.er.other.test.", Ok("other.test")),
            (
                "nowhere.invalid",
                Err("no zone (SOA) found above nowhere.invalid"),
            ),
        ];
        for (name, want) in cases {
            let got = find_zone(&v, name).await;
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{name}: {g}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }
}
