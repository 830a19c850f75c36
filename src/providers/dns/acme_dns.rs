//! acme-dns (`kind = "acme-dns"`, joohoi/acme-dns): a small DNS server
//! that holds nothing but `_acme-challenge` TXT values, the most common
//! target of CNAME delegation. Its API: `POST /register` creates an
//! account (`username`, `password`, `fulldomain`, `subdomain`,
//! `allowfrom`); `POST /update` with the headers `X-Api-User` and
//! `X-Api-Key` and the body `{subdomain, txt}` sets a value.
//!
//! * **Registration.** The first time twincert is asked to present a value
//!   at `_acme-challenge.<domain>` (a zone this provider lists, and no
//!   CNAME there yet) it registers one account for the domain and stores
//!   it, its credentials sealed (`keys::seal`, as ACME account keys are),
//!   then fails the attempt with the exact record to create:
//!   `_acme-challenge.<domain>. CNAME <fulldomain>.` — and keeps failing
//!   with it until the CNAME exists. A restart reuses the stored account.
//! * **Zone routing.** Once the CNAME exists, DNS-01 follows it and asks
//!   for the value at the fulldomain, so `zones` must list the acme-dns
//!   server's own zone (where the CNAMEs point), and may list the
//!   customers' zones whose `_acme-challenge` names are delegated to it
//!   (so twincert registers and names the CNAME to create). A value at a
//!   fulldomain is traced to its stored account by the fulldomain.
//! * **Only two values.** acme-dns keeps the two most recent TXT values
//!   per account and has no delete: a third `/update` evicts the oldest.
//!   Two values is what the two CAs of one name need; apex + wildcard of
//!   one domain under two CAs would need four. So this provider lets at
//!   most two values per fulldomain be in use at once (in this process),
//!   from present until cleanup; a third present waits for a cleanup and,
//!   after [`SLOT_WAIT`], fails the attempt (retryable) rather than evict a
//!   value a CA may still be checking. Cleanup frees the place and sends
//!   nothing: acme-dns cannot delete, and the next value replaces the old.
//!   Several replicas do not share this count: with apex + wildcard names
//!   and several replicas, an evicted value fails the propagation check
//!   and the attempt is retried.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rest;
use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone, normal};

/// An acme-dns server's API (`kind = "acme-dns"`), as the
/// `[[dns_providers]]` configuration validated it.
#[derive(Debug, Clone)]
pub struct AcmeDnsSettings {
    /// The API's base URL, e.g. `https://auth.example.org`.
    pub api_url: url::Url,
    /// CIDRs sent as `allowfrom` at registration: the addresses allowed to
    /// update the account (empty: any).
    pub allow_from: Vec<String>,
}

/// One account at an acme-dns server, for one domain.
#[derive(Clone, PartialEq, Eq)]
pub struct AcmeDnsAccount {
    /// The domain whose `_acme-challenge` name is delegated to it.
    pub domain: String,
    /// Where `_acme-challenge.<domain>` must be a CNAME to.
    pub fulldomain: String,
    /// The `subdomain` of `/update`.
    pub subdomain: String,
    /// `X-Api-User`.
    pub username: String,
    /// `X-Api-Key` (never logged).
    pub password: String,
}

impl std::fmt::Debug for AcmeDnsAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeDnsAccount")
            .field("domain", &self.domain)
            .field("fulldomain", &self.fulldomain)
            .field("subdomain", &self.subdomain)
            .finish_non_exhaustive()
    }
}

/// The future of a registration lookup or save.
pub type AccountFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where registrations are kept (the store, sealed: [`SealedAccounts`]).
pub trait AcmeDnsAccounts: Send + Sync {
    /// The account registered for `domain` at provider `provider_id`.
    fn by_domain<'a>(
        &'a self,
        provider_id: &'a str,
        domain: &'a str,
    ) -> AccountFuture<'a, Option<AcmeDnsAccount>>;
    /// The account whose fulldomain is `fulldomain`.
    fn by_fulldomain<'a>(
        &'a self,
        provider_id: &'a str,
        fulldomain: &'a str,
    ) -> AccountFuture<'a, Option<AcmeDnsAccount>>;
    /// Keeps `account` unless one for its domain exists; returns the kept
    /// one (so concurrent registrations settle on one account).
    fn save<'a>(
        &'a self,
        provider_id: &'a str,
        account: AcmeDnsAccount,
    ) -> AccountFuture<'a, AcmeDnsAccount>;
}

/// Registrations in the store, the credentials sealed with the master key
/// under the purpose [`crate::keys::seal::acme_dns_purpose`].
pub struct SealedAccounts {
    store: crate::store::AcmeDnsRegistrations,
    sealer: Arc<crate::keys::seal::Sealer>,
    clock: Arc<dyn crate::clock::Clock>,
}

/// The sealed part of an account.
#[derive(Serialize, Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

impl SealedAccounts {
    /// Registrations in `store`, sealed by `sealer`.
    pub fn new(
        store: crate::store::AcmeDnsRegistrations,
        sealer: Arc<crate::keys::seal::Sealer>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> SealedAccounts {
        SealedAccounts {
            store,
            sealer,
            clock,
        }
    }

    fn open(
        &self,
        provider_id: &str,
        r: crate::store::AcmeDnsRegistration,
    ) -> Result<AcmeDnsAccount, String> {
        let purpose = crate::keys::seal::acme_dns_purpose(provider_id, &r.domain);
        let plain = self
            .sealer
            .open(&purpose, &r.sealed)
            .map_err(|e| format!("acme-dns credentials of {}: {e}", r.domain))?;
        let c: Credentials = serde_json::from_slice(&plain)
            .map_err(|_| format!("acme-dns credentials of {} are malformed", r.domain))?;
        Ok(AcmeDnsAccount {
            domain: r.domain,
            fulldomain: r.fulldomain,
            subdomain: r.subdomain,
            username: c.username,
            password: c.password,
        })
    }
}

impl AcmeDnsAccounts for SealedAccounts {
    fn by_domain<'a>(
        &'a self,
        provider_id: &'a str,
        domain: &'a str,
    ) -> AccountFuture<'a, Option<AcmeDnsAccount>> {
        Box::pin(async move {
            let row = self
                .store
                .by_domain(provider_id, domain)
                .await
                .map_err(|e| format!("store: {e}"))?;
            row.map(|r| self.open(provider_id, r)).transpose()
        })
    }

    fn by_fulldomain<'a>(
        &'a self,
        provider_id: &'a str,
        fulldomain: &'a str,
    ) -> AccountFuture<'a, Option<AcmeDnsAccount>> {
        Box::pin(async move {
            let row = self
                .store
                .by_fulldomain(provider_id, fulldomain)
                .await
                .map_err(|e| format!("store: {e}"))?;
            row.map(|r| self.open(provider_id, r)).transpose()
        })
    }

    fn save<'a>(
        &'a self,
        provider_id: &'a str,
        account: AcmeDnsAccount,
    ) -> AccountFuture<'a, AcmeDnsAccount> {
        Box::pin(async move {
            let purpose = crate::keys::seal::acme_dns_purpose(provider_id, &account.domain);
            let plain = serde_json::to_vec(&Credentials {
                username: account.username.clone(),
                password: account.password.clone(),
            })
            .map_err(|e| e.to_string())?;
            let sealed = self
                .sealer
                .seal(&purpose, &plain)
                .map_err(|e| format!("sealing acme-dns credentials: {e}"))?;
            let row = crate::store::AcmeDnsRegistration {
                domain: account.domain.clone(),
                fulldomain: account.fulldomain.clone(),
                subdomain: account.subdomain.clone(),
                sealed,
            };
            let kept = self
                .store
                .save(provider_id, &row, self.clock.now())
                .await
                .map_err(|e| format!("store: {e}"))?;
            self.open(provider_id, kept)
        })
    }
}

/// How many values acme-dns keeps per account.
pub const KEPT_VALUES: usize = 2;
/// How long a third concurrent value waits for a place before the attempt
/// fails (and is retried).
pub const SLOT_WAIT: Duration = Duration::from_secs(20);

/// An acme-dns server twincert registers accounts at and updates.
pub struct AcmeDns {
    id: String,
    zones: Vec<String>,
    settings: AcmeDnsSettings,
    http: reqwest::Client,
    accounts: Arc<dyn AcmeDnsAccounts>,
    /// Fulldomain → the values presented and not yet cleaned up.
    in_use: Mutex<HashMap<String, Vec<String>>>,
    /// Woken on every cleanup.
    freed: tokio::sync::Notify,
    /// [`SLOT_WAIT`] (shorter in tests).
    slot_wait: Duration,
    /// Held while looking up and registering an account, so the two slots
    /// of a name, asking at once, register it once.
    registering: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AcmeDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeDns")
            .field("id", &self.id)
            .field("zones", &self.zones)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The `/register` request body.
#[derive(Debug, Serialize)]
struct RegisterRequest<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowfrom: &'a [String],
}

/// The `/register` answer.
#[derive(Deserialize)]
struct Registered {
    username: String,
    password: String,
    fulldomain: String,
    subdomain: String,
}

/// The `/update` request body.
#[derive(Debug, Serialize, PartialEq)]
struct UpdateRequest<'a> {
    subdomain: &'a str,
    txt: &'a str,
}

/// acme-dns's error document (`{"error": "forbidden"}`).
#[derive(Deserialize)]
struct ApiError {
    error: String,
}

fn refusal(what: &str, answer: &rest::Answer) -> DnsError {
    let detail = serde_json::from_slice::<ApiError>(&answer.body)
        .map(|e| format!("'{}'", e.error))
        .unwrap_or_else(|_| answer.quote());
    let hint = match answer.status.as_u16() {
        401 | 403 => {
            "; the stored account was refused (removed from the server, or allow_from does not \
             admit twincert's address)"
        }
        s if s >= 500 => "; will retry",
        _ => "",
    };
    DnsError(format!(
        "{what}: acme-dns answered HTTP {}: {detail}{hint}",
        answer.status
    ))
}

/// What the operator must create for `account`.
pub fn cname_to_create(account: &AcmeDnsAccount) -> String {
    format!(
        "_acme-challenge.{}. CNAME {}.",
        account.domain,
        normal(&account.fulldomain)
    )
}

impl AcmeDns {
    /// A provider from its configuration, keeping registrations in
    /// `accounts`.
    pub fn new(
        id: &str,
        zones: &[String],
        settings: &AcmeDnsSettings,
        accounts: Arc<dyn AcmeDnsAccounts>,
    ) -> Result<AcmeDns, DnsError> {
        Ok(AcmeDns {
            id: id.to_string(),
            zones: zones.to_vec(),
            settings: settings.clone(),
            http: rest::client(id)?,
            accounts,
            in_use: Mutex::new(HashMap::new()),
            freed: tokio::sync::Notify::new(),
            slot_wait: SLOT_WAIT,
            registering: tokio::sync::Mutex::new(()),
        })
    }

    fn url(&self, endpoint: &str) -> Result<url::Url, DnsError> {
        let mut url = self.settings.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| {
                DnsError(format!(
                    "DNS provider {}: api_url cannot be a base",
                    self.id
                ))
            })?
            .pop_if_empty()
            .push(endpoint);
        Ok(url)
    }

    /// Registers an account for `domain` and keeps it.
    async fn register(&self, what: &str, domain: &str) -> Result<AcmeDnsAccount, DnsError> {
        let answer = rest::send(
            what,
            self.http
                .post(self.url("register")?)
                .json(&RegisterRequest {
                    allowfrom: &self.settings.allow_from,
                }),
        )
        .await?;
        if !answer.status.is_success() {
            return Err(refusal(&format!("{what}: registering"), &answer));
        }
        let r: Registered = answer.json(&format!("{what}: registering"))?;
        let account = AcmeDnsAccount {
            domain: domain.to_string(),
            fulldomain: normal(&r.fulldomain),
            subdomain: r.subdomain,
            username: r.username,
            password: r.password,
        };
        self.accounts
            .save(&self.id, account)
            .await
            .map_err(|e| DnsError(format!("{what}: keeping the new registration: {e}")))
    }

    /// Takes one of the [`KEPT_VALUES`] places at `fulldomain` for `value`,
    /// waiting up to [`SLOT_WAIT`] for a cleanup.
    async fn take_place(&self, what: &str, fulldomain: &str, value: &str) -> Result<(), DnsError> {
        let deadline = tokio::time::Instant::now() + self.slot_wait;
        loop {
            let freed = self.freed.notified();
            {
                let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
                let values = in_use.entry(fulldomain.to_string()).or_default();
                if values.iter().any(|v| v == value) || values.len() < KEPT_VALUES {
                    if !values.iter().any(|v| v == value) {
                        values.push(value.to_string());
                    }
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(DnsError(format!(
                    "{what}: acme-dns keeps only {KEPT_VALUES} values at {fulldomain} and \
                     {KEPT_VALUES} other orders' values are still being validated; will retry"
                )));
            }
        }
    }

    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let fqdn = normal(fqdn);
        let what = format!("DNS provider {} (acme-dns): adding TXT at {fqdn}", self.id);
        let found = self
            .accounts
            .by_fulldomain(&self.id, &fqdn)
            .await
            .map_err(|e| DnsError(format!("{what}: {e}")))?;
        let account = match found {
            Some(a) => a,
            None => {
                let Some(domain) = fqdn.strip_prefix("_acme-challenge.") else {
                    return Err(DnsError(format!(
                        "{what}: no acme-dns account twincert registered has this fulldomain; \
                         point _acme-challenge.<domain> at the fulldomain twincert names for \
                         it (it registers one the first time it is asked for a domain in this \
                         provider's zones)"
                    )));
                };
                let _one_at_a_time = self.registering.lock().await;
                let account = match self
                    .accounts
                    .by_domain(&self.id, domain)
                    .await
                    .map_err(|e| DnsError(format!("{what}: {e}")))?
                {
                    Some(a) => a,
                    None => self.register(&what, domain).await?,
                };
                // DNS-01 followed no CNAME to get here: it is not there yet.
                return Err(DnsError(format!(
                    "{what}: create the CNAME `{}` (acme-dns account registered for {domain}); \
                     DNS-01 for {domain} goes through it from then on",
                    cname_to_create(&account)
                )));
            }
        };
        self.take_place(&what, &fqdn, value).await?;
        let result = self.update(&what, &account, value).await;
        if result.is_err() {
            self.release(&fqdn, value);
        }
        result
    }

    async fn update(
        &self,
        what: &str,
        account: &AcmeDnsAccount,
        value: &str,
    ) -> Result<(), DnsError> {
        let answer = rest::send(
            what,
            self.http
                .post(self.url("update")?)
                .header("X-Api-User", &account.username)
                .header("X-Api-Key", &account.password)
                .json(&UpdateRequest {
                    subdomain: &account.subdomain,
                    txt: value,
                }),
        )
        .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(refusal(what, &answer))
        }
    }

    fn release(&self, fulldomain: &str, value: &str) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(values) = in_use.get_mut(fulldomain) {
            values.retain(|v| v != value);
            if values.is_empty() {
                in_use.remove(fulldomain);
            }
        }
        drop(in_use);
        self.freed.notify_waiters();
    }
}

impl AcmeDns {
    /// `GET /health`, acme-dns's documented liveness endpoint: the server
    /// answers. Each domain's credentials (its registration) are only
    /// accepted or refused by `/update`, which is a change, so they are
    /// not checked here.
    async fn probe(&self, zone: &str) -> ProviderCheck {
        let what = format!(
            "DNS provider '{}' (acme-dns): GET /health for {zone}",
            self.id
        );
        let url = match self.url("health") {
            Ok(u) => u,
            Err(e) => return ProviderCheck::Unreachable(e.0),
        };
        match rest::send(&what, self.http.get(url)).await {
            Ok(a) if a.status.is_success() => ProviderCheck::Verified(format!(
                "{what}: HTTP {}: the server answers (registrations are checked only by an \
                 update)",
                a.status
            )),
            Ok(a) => ProviderCheck::Unreachable(refusal(&what, &a).0),
            Err(e) => ProviderCheck::Unreachable(e.0),
        }
    }
}

impl DnsProvider for AcmeDns {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(AcmeDns::present(self, fqdn, value))
    }

    /// acme-dns has no delete: the value stays until two newer ones
    /// replace it. Only the place it held is freed.
    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        self.release(&normal(fqdn), value);
        Box::pin(async { Ok(()) })
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        Box::pin(self.probe(zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accounts in memory.
    #[derive(Default)]
    struct Memory(Mutex<Vec<AcmeDnsAccount>>);

    impl AcmeDnsAccounts for Memory {
        fn by_domain<'a>(
            &'a self,
            _: &'a str,
            domain: &'a str,
        ) -> AccountFuture<'a, Option<AcmeDnsAccount>> {
            let r = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|a| a.domain == domain)
                .cloned();
            Box::pin(async move { Ok(r) })
        }
        fn by_fulldomain<'a>(
            &'a self,
            _: &'a str,
            f: &'a str,
        ) -> AccountFuture<'a, Option<AcmeDnsAccount>> {
            let r = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|a| a.fulldomain == f)
                .cloned();
            Box::pin(async move { Ok(r) })
        }
        fn save<'a>(&'a self, _: &'a str, a: AcmeDnsAccount) -> AccountFuture<'a, AcmeDnsAccount> {
            self.0.lock().unwrap().push(a.clone());
            Box::pin(async move { Ok(a) })
        }
    }

    fn provider() -> AcmeDns {
        AcmeDns::new(
            "adns",
            &["auth.example.org".into(), "example.com".into()],
            &AcmeDnsSettings {
                api_url: "https://auth.example.org/".parse().unwrap(),
                allow_from: vec![],
            },
            Arc::new(Memory::default()),
        )
        .unwrap()
    }

    #[test]
    fn requests_are_the_documented_shapes() {
        assert_eq!(
            serde_json::to_value(UpdateRequest {
                subdomain: "8e57",
                txt: "v"
            })
            .unwrap(),
            serde_json::json!({"subdomain": "8e57", "txt": "v"})
        );
        assert_eq!(
            serde_json::to_value(RegisterRequest { allowfrom: &[] }).unwrap(),
            serde_json::json!({})
        );
        let cidrs = vec!["192.0.2.0/24".to_string()];
        assert_eq!(
            serde_json::to_value(RegisterRequest { allowfrom: &cidrs }).unwrap(),
            serde_json::json!({"allowfrom": ["192.0.2.0/24"]})
        );
        // The answer of /register, as acme-dns's README shows it.
        let r: Registered = serde_json::from_str(
            r#"{"allowfrom": [], "fulldomain": "8e5700ea-a4bf-41c7-8a77-e990661dcc6a.auth.acme-dns.io",
                "password": "htB9mR9DYgcu9bX_afHF62erXaH2TS7bg9KW3F7Z",
                "subdomain": "8e5700ea-a4bf-41c7-8a77-e990661dcc6a",
                "username": "c36f50e8-4632-44f0-83fe-e070fef28a10"}"#,
        )
        .unwrap();
        assert_eq!(r.subdomain, "8e5700ea-a4bf-41c7-8a77-e990661dcc6a");
        let p = provider();
        assert_eq!(
            p.url("update").unwrap().as_str(),
            "https://auth.example.org/update"
        );
        let a = AcmeDnsAccount {
            domain: "shop.example.com".into(),
            fulldomain: r.fulldomain.clone(),
            subdomain: r.subdomain,
            username: r.username,
            password: r.password,
        };
        assert_eq!(
            cname_to_create(&a),
            "_acme-challenge.shop.example.com. CNAME 8e5700ea-a4bf-41c7-8a77-e990661dcc6a.auth.acme-dns.io."
        );
        assert!(!format!("{a:?}").contains("htB9"));
        let e = refusal(
            "DNS provider adns (acme-dns): adding TXT at x",
            &rest::Answer {
                status: reqwest::StatusCode::UNAUTHORIZED,
                body: br#"{"error": "forbidden"}"#.to_vec(),
            },
        )
        .0;
        assert!(
            e.contains("adns") && e.contains("401") && e.contains("'forbidden'"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn at_most_two_values_per_fulldomain_are_in_use_and_cleanup_frees_a_place() {
        let mut p = provider();
        p.slot_wait = Duration::from_millis(100);
        let p = Arc::new(p);
        p.take_place("w", "f.auth", "a").await.unwrap();
        p.take_place("w", "f.auth", "b").await.unwrap();
        // The same value again is no new place.
        p.take_place("w", "f.auth", "a").await.unwrap();
        // Another fulldomain has its own two.
        p.take_place("w", "g.auth", "c").await.unwrap();
        let waiting = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.take_place("w", "f.auth", "c").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        DnsProvider::cleanup(&*p, "f.auth.", "a").await.unwrap();
        waiting.await.unwrap().unwrap();
        // A fourth value times out into a retryable error.
        let err = p.take_place("w", "f.auth", "d").await.unwrap_err().0;
        assert!(
            err.contains("only 2 values") && err.contains("will retry"),
            "{err}"
        );
    }
}
