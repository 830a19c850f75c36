//! ACME clients: the only module that imports instant-acme (pinned 0.8.5).
//!
//! One [`CaClient`] per configured CA. It knows how to create or restore its
//! account and how to move one order forward (RFC 8555 §7.4): answer the
//! HTTP-01 challenges, wait until ready, finalize with *our* CSR
//! (`finalize_csr`; never `Order::finalize`, which makes its own key), and
//! download the chain. It never touches the store: the worker decides what
//! is written when. Every failure becomes an [`AcmeError`] whose kind says
//! whether the attempt is final (a 4xx problem), rate limited, or
//! transient.

mod ari;
mod http;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeStatus,
    ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, Order, OrderStatus,
    Problem, RetryPolicy,
};

pub use ari::AriWindow;

use crate::config::CaConfig;

pub use http::{PersistChallenge, acme_request_metrics, with_retry_after};

/// How the worker should treat a failed ACME step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeErrorKind {
    /// The CA said no (4xx problem other than badNonce/rateLimited): this
    /// ACME order is over; a later attempt starts a fresh one.
    Final,
    /// `rateLimited`: wait at least the CA's Retry-After.
    RateLimited,
    /// Network, timeout, 5xx, badNonce: retry the same order later.
    Transient,
    /// `accountDoesNotExist` (RFC 8555 §6.7): the CA no longer knows our
    /// account (its database was lost or reset). The account is
    /// registered again and a fresh order started.
    AccountGone,
}

/// A failed ACME step, with the CA's problem text when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AcmeError {
    /// Retry or not.
    pub kind: AcmeErrorKind,
    /// What happened, in words; never contains key material.
    pub message: String,
}

impl AcmeError {
    fn transient(message: impl Into<String>) -> Self {
        AcmeError {
            kind: AcmeErrorKind::Transient,
            message: message.into(),
        }
    }

    fn final_(message: impl Into<String>) -> Self {
        AcmeError {
            kind: AcmeErrorKind::Final,
            message: message.into(),
        }
    }
}

fn describe_problem(p: &Problem) -> String {
    // A body without a problem type is not an RFC 8555 §6.7 problem at
    // all; say so rather than print an empty one (smallstep, in Caddy's
    // `acme_server`, answers a request signed by an account it no longer
    // knows with such a body, logging "not found").
    let kind = match (p.r#type.as_deref(), p.status) {
        (Some(t), _) => t
            .trim_start_matches("urn:ietf:params:acme:error:")
            .to_string(),
        (None, Some(status)) => format!("HTTP {status} error without an ACME problem type"),
        (None, None) => "error answer without an ACME problem type".to_string(),
    };
    let mut s = format!("{kind}: {}", p.detail.as_deref().unwrap_or("(no detail)"));
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            s.push_str("; ");
            s.push_str(d);
        }
    }
    s
}

fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref().is_some_and(|t| t.ends_with(":badNonce")))
}

/// Classifies an instant-acme error (RFC 8555 §6.7).
fn classify(e: instant_acme::Error) -> AcmeError {
    match &e {
        instant_acme::Error::Api(p) => {
            let t = p.r#type.as_deref().unwrap_or("");
            let kind = if t.ends_with(":rateLimited") {
                AcmeErrorKind::RateLimited
            } else if t.ends_with(":accountDoesNotExist") {
                AcmeErrorKind::AccountGone
            } else if t.ends_with(":badNonce") || t.ends_with(":serverInternal") {
                // serverInternal by its type too: smallstep (Caddy's
                // `acme_server`) sends problem documents without `status`,
                // which would otherwise read as an object's final error.
                AcmeErrorKind::Transient
            } else if p.status.is_some_and(|s| (400..500).contains(&s)) || p.status.is_none() {
                // A problem without a status came from an object's `error`
                // field (a failed order or challenge): final too.
                AcmeErrorKind::Final
            } else {
                AcmeErrorKind::Transient
            };
            AcmeError {
                kind,
                message: describe_problem(p),
            }
        }
        instant_acme::Error::Timeout(_) => {
            AcmeError::transient("timed out waiting for the CA to update the order")
        }
        _ => {
            // Keep the source chain: hyper says "client error (Connect)" and
            // only its source says "Connection refused".
            AcmeError::transient(crate::error_chain(&e))
        }
    }
}

/// Repeats an ACME request while the CA answers badNonce. instant-acme
/// already retries 3 times; a CA rejecting many nonces (Pebble's
/// `PEBBLE_WFE_NONCEREJECT`) needs more, and a rejected request changed
/// nothing on the server, so repeating it is safe.
macro_rules! nonce_retry {
    ($e:expr) => {{
        let mut tries = 0u32;
        loop {
            match $e.await {
                Err(e) if is_bad_nonce(&e) && tries < BAD_NONCE_RETRIES => tries += 1,
                other => break other,
            }
        }
    }};
}

const BAD_NONCE_RETRIES: u32 = 12;

/// The challenge type of draft-ietf-acme-dns-persist.
const DNS_PERSIST_01: &str = "dns-persist-01";

/// Repeats a walk over an order's authorizations when a request in it hit
/// badNonce (the walk is idempotent: what it already did is remembered by
/// the caller or by the cached authorization state).
macro_rules! walk_retry {
    ($e:expr) => {{
        let mut tries = 0u32;
        loop {
            match $e.await {
                Err(Retry::BadNonce(_)) if tries < BAD_NONCE_RETRIES => tries += 1,
                Err(Retry::BadNonce(e)) => break Err(classify(e)),
                Err(Retry::Other(e)) => break Err(e),
                Ok(v) => break Ok(v),
            }
        }
    }};
}

/// Where an ACME order stands (RFC 8555 §7.1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Authorizations are pending: answer challenges.
    Pending,
    /// All authorizations valid: finalize.
    Ready,
    /// Finalized; the CA is issuing.
    Processing,
    /// The certificate can be downloaded.
    Valid,
    /// The order failed; the text says why.
    Invalid(String),
}

/// Publishes an HTTP-01 answer where the responder can find it (the store),
/// before the CA is told to look.
pub trait Http01Publisher {
    /// Make `key_authorization` the answer for `token`.
    fn publish(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// One configured CA and its (lazily restored or created) account.
pub struct CaClient {
    config: CaConfig,
    ari: ari::Ari,
    /// The account in use; replaced when the CA has forgotten it.
    account: std::sync::RwLock<Option<Account>>,
    poll: RetryPolicy,
    request_timeout: Duration,
    /// dns-persist-01 challenge fields seen by this CA's HTTP client.
    persist_seen: Arc<http::PersistSeen>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("id", &self.config.id)
            .field("directory_url", &self.config.directory_url)
            .finish()
    }
}

/// A new account: its URL and its credentials as JSON, to be sealed and
/// stored by the caller.
pub struct CreatedAccount {
    /// The account URL (`kid`).
    pub url: String,
    /// Serialized [`AccountCredentials`], secret.
    pub credentials_json: Vec<u8>,
}

impl CaClient {
    /// A client for `config`; `timeout` bounds each wait for the CA.
    pub fn new(config: CaConfig, timeout: Duration) -> CaClient {
        CaClient {
            ari: ari::Ari::new(
                &config.directory_url,
                config.trust_roots_pem.as_deref(),
                timeout.min(Duration::from_secs(30)),
            ),
            config,
            account: std::sync::RwLock::new(None),
            persist_seen: Arc::default(),
            request_timeout: timeout.min(Duration::from_secs(30)),
            // Local CAs answer in milliseconds; public ones send Retry-After,
            // which instant-acme honours over this schedule.
            poll: RetryPolicy::new()
                .initial_delay(Duration::from_millis(15))
                .backoff(1.6)
                .timeout(timeout),
        }
    }

    /// The CA's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// How many orders may be in flight at this CA at once.
    pub fn concurrency(&self) -> u32 {
        self.config.concurrency.max(1)
    }

    /// How many new ACME orders this CA may get per hour.
    pub fn orders_per_hour(&self) -> u32 {
        self.config.orders_per_hour.max(1)
    }

    /// The CA's directory URL.
    pub fn directory_url(&self) -> &str {
        &self.config.directory_url
    }

    /// Whether the CA offers dns-persist-01 (its configuration says so).
    pub fn offers_dns_persist(&self) -> bool {
        self.config.dns_persist_01
    }

    /// The CA's configured CAA issuer domain names.
    pub fn caa_identities(&self) -> &[String] {
        &self.config.caa_identities
    }

    /// `persistUntil` for this CA's dns-persist-01 records, if configured.
    pub fn dns_persist_until(&self) -> Option<i64> {
        self.config.dns_persist_until
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        let http = http::client(
            &self.config.id,
            self.config.trust_roots_pem.as_deref(),
            self.request_timeout,
            self.persist_seen.clone(),
        )
        .map_err(|e| AcmeError::final_(format!("CA {}: {e}", self.config.id)))?;
        Ok(Account::builder_with_http(http))
    }

    /// Whether an account is loaded.
    pub fn has_account(&self) -> bool {
        self.account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The URL of the account in use, if one is loaded.
    pub fn account_url(&self) -> Option<String> {
        self.account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|a| a.id().to_string())
    }

    /// Drops the account in use if it is still `url` (the CA said it does
    /// not exist); the next use loads or registers another.
    pub fn forget_account(&self, url: &str) {
        let mut account = self.account.write().unwrap_or_else(|p| p.into_inner());
        if account.as_ref().is_some_and(|a| a.id() == url) {
            *account = None;
        }
    }

    /// Restores the account from stored credentials.
    pub async fn restore_account(&self, credentials_json: &[u8]) -> Result<(), AcmeError> {
        let creds: AccountCredentials = serde_json::from_slice(credentials_json).map_err(|e| {
            AcmeError::final_(format!("stored account credentials unreadable: {e}"))
        })?;
        // Restoring only reads the directory (no JWS, so no nonce).
        let account = self
            .builder()?
            .from_credentials(creds)
            .await
            .map_err(classify)?;
        *self.account.write().unwrap_or_else(|p| p.into_inner()) = Some(account);
        Ok(())
    }

    /// Registers a new account (RFC 8555 §7.3), with EAB when configured.
    /// The caller stores it and then calls [`CaClient::restore_account`]
    /// with whichever credentials won the race between replicas.
    pub async fn create_account(&self) -> Result<CreatedAccount, AcmeError> {
        let contact: Vec<String> = self
            .config
            .contact
            .iter()
            .map(|c| {
                if c.starts_with("mailto:") {
                    c.clone()
                } else {
                    format!("mailto:{c}")
                }
            })
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &self.config.eab {
            Some((kid, hmac_b64)) => {
                use base64::Engine as _;
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(hmac_b64.trim_end_matches('='))
                    .map_err(|_| {
                        AcmeError::final_(format!(
                            "CA {}: EAB HMAC key is not base64url",
                            self.config.id
                        ))
                    })?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            None => None,
        };
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, creds) = nonce_retry!(self.builder()?.create(
            &new,
            self.config.directory_url.clone(),
            eab.as_ref()
        ))
        .map_err(classify)?;
        let credentials_json = serde_json::to_vec(&creds)
            .map_err(|e| AcmeError::final_(format!("cannot serialize account: {e}")))?;
        Ok(CreatedAccount {
            url: account.id().to_string(),
            credentials_json,
        })
    }

    fn account(&self) -> Result<Account, AcmeError> {
        self.account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| AcmeError::transient("account not loaded"))
    }

    /// Revokes a certificate (RFC 8555 §7.6) with an RFC 5280 reason code
    /// (1 keyCompromise, 4 superseded, 5 cessationOfOperation, else 0),
    /// signed by our account (which ordered it).
    pub async fn revoke(&self, cert_der: &[u8], reason_code: i64) -> Result<(), AcmeError> {
        use instant_acme::RevocationReason;
        let account = self.account()?;
        let der = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
        let reason = match reason_code {
            1 => RevocationReason::KeyCompromise,
            4 => RevocationReason::Superseded,
            5 => RevocationReason::CessationOfOperation,
            _ => RevocationReason::Unspecified,
        };
        let req = instant_acme::RevocationRequest {
            certificate: &der,
            reason: Some(reason),
        };
        match nonce_retry!(account.revoke(&req)) {
            Ok(()) => Ok(()),
            // Revoking twice (two replicas, or a retry after a lost answer)
            // is success.
            Err(instant_acme::Error::Api(p))
                if p.r#type
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":alreadyRevoked")) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// CRLs configured for this CA (besides those its certificates name).
    pub fn crl_urls(&self) -> &[String] {
        &self.config.crl_urls
    }

    /// The CA's ARI `renewalInfo` URL; `None` when it offers no ARI.
    pub async fn renewal_info_url(&self) -> Result<Option<String>, String> {
        self.ari.renewal_info_url().await
    }

    /// The CA's suggested renewal window for certificate `cert_id`
    /// (RFC 9773 §4.2), from its `renewalInfo` URL `base`.
    pub async fn renewal_window(&self, base: &str, cert_id: &str) -> Result<AriWindow, String> {
        self.ari.window(base, cert_id).await
    }

    /// The ACME profile configured for this CA (`[[cas]] acme_profile`).
    pub fn acme_profile(&self) -> Option<&str> {
        self.config.acme_profile.as_deref()
    }

    /// The profiles the CA's directory offers (`meta.profiles`, sorted;
    /// empty: none). A fresh read of the directory.
    pub async fn offered_profiles(&self) -> Result<Vec<String>, String> {
        self.ari.profiles().await
    }

    /// Opens a new ACME order for `domains` (RFC 8555 §7.4); `replaces` is
    /// the RFC 9773 id of the certificate it renews (same CA and account
    /// only — the caller checks; only sent to CAs that offer ARI);
    /// `profile` the ACME profile to ask for (draft-ietf-acme-profiles).
    /// The order's own `profile` field, as the CA answered, is
    /// [`AcmeOrder::profile`]; instant-acme does not compare them.
    pub async fn new_order(
        &self,
        domains: &[String],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<AcmeOrder, AcmeError> {
        let ids: Vec<Identifier> = domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let account = self.account()?;
        let mut new_order = NewOrder::new(&ids);
        if let Some(p) = profile {
            new_order = new_order.profile(p);
        }
        if let Some((aki, serial)) = replaces.and_then(|r| r.split_once('.')) {
            new_order = new_order.replaces(CertificateIdentifier {
                authority_key_identifier: aki.into(),
                serial: serial.into(),
            });
        }
        let order = match nonce_retry!(account.new_order(&new_order)) {
            Ok(o) => o,
            // RFC 9773 §5: a CA that accepts `replaces` must echo it in the
            // order; instant-acme refuses an order that does not. A CA that
            // serves renewalInfo but ignores `replaces` (acme2certifier
            // 0.46.3) then never gives a usable order with it: final for
            // this request, so the issuer orders again without it.
            Err(instant_acme::Error::Other(e))
                if replaces.is_some() && e.to_string().starts_with("replaces field mismatch") =>
            {
                return Err(AcmeError::final_(format!(
                    "the CA ignored the ARI 'replaces' field of the new order ({e})"
                )));
            }
            Err(e) => return Err(classify(e)),
        };
        Ok(AcmeOrder {
            order,
            poll: self.poll,
            persist_seen: self.persist_seen.clone(),
        })
    }

    /// Picks up an order created earlier (after a restart).
    pub async fn resume_order(&self, url: &str) -> Result<AcmeOrder, AcmeError> {
        let account = self.account()?;
        let order = nonce_retry!(account.order(url.to_string())).map_err(classify)?;
        Ok(AcmeOrder {
            order,
            poll: self.poll,
            persist_seen: self.persist_seen.clone(),
        })
    }
}

/// One DNS-01 answer to publish.
#[derive(Debug, Clone)]
pub struct Dns01Task {
    /// The domain validated (`_acme-challenge.<domain>` holds the answer).
    pub domain: String,
    /// The TXT value (base64url SHA-256 of the key authorization).
    pub value: String,
    /// The challenge URL.
    pub url: String,
}

/// One dns-persist-01 challenge to answer (draft-ietf-acme-dns-persist-02
/// §4): the record must stand before the CA is told.
#[derive(Debug, Clone)]
pub struct DnsPersistTask {
    /// The identifier as ordered (`*.` kept: a wildcard needs
    /// `policy=wildcard`).
    pub identifier: String,
    /// The challenge URL.
    pub url: String,
    /// The challenge object's `issuer-domain-names` and `accounturi`
    /// (instant-acme does not carry them; read from the CA's JSON).
    pub seen: PersistChallenge,
}

/// One ACME order in flight.
pub struct AcmeOrder {
    order: Order,
    poll: RetryPolicy,
    persist_seen: Arc<http::PersistSeen>,
}

impl AcmeOrder {
    /// The order URL, to be stored before polling.
    pub fn url(&self) -> String {
        self.order.url().to_string()
    }

    /// The `profile` the order object carries, as the CA sent it (`None`:
    /// the field is absent).
    pub fn profile(&mut self) -> Option<String> {
        self.order.state().profile.clone()
    }

    /// The last known status.
    pub fn progress(&mut self) -> Progress {
        let state = self.order.state();
        match state.status {
            OrderStatus::Pending => Progress::Pending,
            OrderStatus::Ready => Progress::Ready,
            OrderStatus::Processing => Progress::Processing,
            OrderStatus::Valid => Progress::Valid,
            OrderStatus::Invalid => Progress::Invalid(
                state
                    .error
                    .as_ref()
                    .map(describe_problem)
                    .unwrap_or_else(|| "order is invalid".into()),
            ),
        }
    }

    /// Answers every pending authorization with HTTP-01 (RFC 8555 §8.3):
    /// publishes the key authorization, then tells the CA to look.
    pub async fn answer_http01<P: Http01Publisher>(
        &mut self,
        publisher: &P,
    ) -> Result<(), AcmeError> {
        let mut told: HashSet<String> = HashSet::new();
        walk_retry!(self.answer_http01_once(publisher, &mut told))
    }

    async fn answer_http01_once<P: Http01Publisher>(
        &mut self,
        publisher: &P,
        told: &mut HashSet<String>,
    ) -> Result<(), Retry> {
        let mut authzs = self.order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(Retry::from)?;
            let identifier = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    let why = authz
                        .challenges
                        .iter()
                        .find_map(|c| c.error.as_ref())
                        .map(describe_problem)
                        .unwrap_or_else(|| format!("{other:?}"));
                    return Err(Retry::Other(AcmeError::final_(format!(
                        "authorization for {identifier} failed: {why}"
                    ))));
                }
            }
            let Some(mut challenge) = authz.challenge(ChallengeType::Http01) else {
                return Err(Retry::Other(AcmeError::final_(format!(
                    "the CA offers no http-01 challenge for {identifier}"
                ))));
            };
            if told.contains(&challenge.url) || challenge.status != ChallengeStatus::Pending {
                continue;
            }
            let key_authorization = challenge.key_authorization();
            publisher
                .publish(&challenge.token, key_authorization.as_str())
                .await
                .map_err(|e| {
                    Retry::Other(AcmeError::transient(format!(
                        "cannot publish the http-01 answer for {identifier}: {e}"
                    )))
                })?;
            challenge
                .set_ready()
                .await
                .map_err(|e| challenge_failed("http-01", &identifier, e))?;
            told.insert(challenge.url.clone());
        }
        Ok(())
    }

    /// The DNS-01 answers the pending authorizations need (RFC 8555 §8.4):
    /// for each, the base domain (no `*.`; a wildcard is validated at its
    /// base name), the TXT value, and the challenge URL to tell the CA.
    pub async fn dns01_tasks(&mut self) -> Result<Vec<Dns01Task>, AcmeError> {
        walk_retry!(self.dns01_tasks_once())
    }

    async fn dns01_tasks_once(&mut self) -> Result<Vec<Dns01Task>, Retry> {
        let mut out = Vec::new();
        let mut authzs = self.order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(Retry::from)?;
            let identifier = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(Retry::Other(AcmeError::final_(format!(
                        "authorization for {identifier} is {other:?}"
                    ))));
                }
            }
            let Some(challenge) = authz.challenge(ChallengeType::Dns01) else {
                return Err(Retry::Other(AcmeError::final_(format!(
                    "the CA offers no dns-01 challenge for {identifier}"
                ))));
            };
            if challenge.status != ChallengeStatus::Pending {
                continue;
            }
            out.push(Dns01Task {
                domain: identifier.trim_start_matches("*.").to_string(),
                value: challenge.key_authorization().dns_value(),
                url: challenge.url.clone(),
            });
        }
        Ok(out)
    }

    /// The dns-persist-01 challenges of the pending authorizations.
    pub async fn dns_persist_tasks(&mut self) -> Result<Vec<DnsPersistTask>, AcmeError> {
        walk_retry!(self.dns_persist_tasks_once())
    }

    async fn dns_persist_tasks_once(&mut self) -> Result<Vec<DnsPersistTask>, Retry> {
        let kind = ChallengeType::Unknown(DNS_PERSIST_01.into());
        let mut out = Vec::new();
        let mut authzs = self.order.authorizations();
        while let Some(authz) = authzs.next().await {
            let authz = authz.map_err(Retry::from)?;
            let identifier = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(Retry::Other(AcmeError::final_(format!(
                        "authorization for {identifier} is {other:?}"
                    ))));
                }
            }
            let Some(challenge) = authz.challenges.iter().find(|c| c.r#type == kind) else {
                return Err(Retry::Other(AcmeError::final_(format!(
                    "the CA offers no dns-persist-01 challenge for {identifier}"
                ))));
            };
            if challenge.status != ChallengeStatus::Pending {
                continue;
            }
            out.push(DnsPersistTask {
                identifier,
                url: challenge.url.clone(),
                seen: self.persist_seen.get(&challenge.url).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Tells the CA to validate the challenges at `urls` (after their
    /// answers are visible).
    pub async fn set_ready(&mut self, urls: &[String]) -> Result<(), AcmeError> {
        let mut told: HashSet<String> = HashSet::new();
        walk_retry!(self.set_ready_once(urls, &mut told))
    }

    async fn set_ready_once(
        &mut self,
        urls: &[String],
        told: &mut HashSet<String>,
    ) -> Result<(), Retry> {
        let mut authzs = self.order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(Retry::from)?;
            let Some(kind) = authz
                .challenges
                .iter()
                .find(|c| urls.contains(&c.url) && !told.contains(&c.url))
                .map(|c| c.r#type.clone())
            else {
                continue;
            };
            let identifier = authz.identifier().to_string();
            if let Some(mut challenge) = authz.challenge(kind.clone()) {
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| challenge_failed(&challenge_name(&kind), &identifier, e))?;
                told.insert(challenge.url.clone());
            }
        }
        Ok(())
    }

    /// Waits until every authorization is valid (order `ready`).
    pub async fn wait_ready(&mut self) -> Result<(), AcmeError> {
        let status = nonce_retry!(self.order.poll_ready(&self.poll)).map_err(classify)?;
        match status {
            OrderStatus::Ready => Ok(()),
            _ => Err(AcmeError::final_(self.invalid_reason().await)),
        }
    }

    /// Why an order went invalid: the first failed challenge's problem.
    async fn invalid_reason(&mut self) -> String {
        if let Progress::Invalid(why) = self.progress()
            && why != "order is invalid"
        {
            return why;
        }
        let mut authzs = self.order.authorizations();
        while let Some(Ok(mut authz)) = authzs.next().await {
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let id = authz.identifier().to_string();
            if authz.refresh().await.is_ok()
                && let Some(p) = authz.challenges.iter().find_map(|c| c.error.as_ref())
            {
                return format!("validation of {id} failed: {}", describe_problem(p));
            }
        }
        "order became invalid".into()
    }

    /// Finalizes with our CSR (RFC 8555 §7.4) unless that already happened,
    /// then downloads the PEM chain (§7.4.2).
    pub async fn finalize_and_download(&mut self, csr_der: &[u8]) -> Result<String, AcmeError> {
        if self.progress() == Progress::Ready {
            nonce_retry!(self.order.finalize_csr(csr_der)).map_err(classify)?;
        }
        match self.progress() {
            Progress::Invalid(why) => Err(AcmeError::final_(why)),
            Progress::Pending | Progress::Ready => Err(AcmeError::transient(
                "the CA did not accept the finalize request yet",
            )),
            Progress::Processing | Progress::Valid => {
                nonce_retry!(self.order.poll_certificate(&self.poll)).map_err(classify)
            }
        }
    }
}

enum Retry {
    BadNonce(instant_acme::Error),
    Other(AcmeError),
}

/// A failed "challenge ready" POST (RFC 8555 §7.5.1). Some servers
/// validate inside that request and answer with the challenge still
/// `pending` but carrying an `error` (smallstep, in Caddy's `acme_server`:
/// "connection: The server could not connect to validation target"); the
/// problem then has no HTTP status and names no identifier. It is final for
/// this order, and the message says which name and which method failed.
fn challenge_failed(kind: &str, identifier: &str, e: instant_acme::Error) -> Retry {
    if is_bad_nonce(&e) {
        return Retry::BadNonce(e);
    }
    let from_object = matches!(&e, instant_acme::Error::Api(p) if p.status.is_none());
    let mut err = classify(e);
    if from_object && err.kind == AcmeErrorKind::Final {
        err.message = format!("{kind} validation of {identifier} failed: {}", err.message);
    }
    Retry::Other(err)
}

/// The challenge type as RFC 8555 §9.7.8 names it.
fn challenge_name(kind: &ChallengeType) -> String {
    match kind {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::Unknown(name) => name.clone(),
        _ => "challenge".into(),
    }
}

impl From<instant_acme::Error> for Retry {
    fn from(e: instant_acme::Error) -> Self {
        if is_bad_nonce(&e) {
            Retry::BadNonce(e)
        } else {
            Retry::Other(classify(e))
        }
    }
}

/// Seconds to wait until a time the CA asked us to wait until, if it lies
/// in the future, counted so that the whole-second clock the orders are
/// scheduled by (`now` truncated, plus these seconds) never lands before
/// it: from the current whole second to the CA's time rounded up.
/// (Truncating the difference instead retried up to 2 s early.)
pub fn retry_after_secs(after: Option<SystemTime>) -> Option<u64> {
    retry_after_secs_at(after?, SystemTime::now())
}

fn retry_after_secs_at(after: SystemTime, now: SystemTime) -> Option<u64> {
    let d = after.duration_since(now).ok()?;
    let now_frac = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let total = d + Duration::from_nanos(u64::from(now_frac));
    let secs = total.as_secs() + u64::from(total.subsec_nanos() > 0);
    Some(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_never_schedules_before_the_cas_time() {
        let at = |secs: u64, nanos: u32| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        // (after, now) → seconds from the truncated now
        let table = [
            // "Retry-After: 4" received at 100.3: not before 104.3 → 105
            (at(104, 300_000_000), at(100, 300_000_000), Some(5)),
            // an HTTP date (whole second) 4 s ahead of 100.3 → 104
            (at(104, 0), at(100, 300_000_000), Some(4)),
            // exactly on a second
            (at(104, 0), at(100, 0), Some(4)),
            // in the past: no wait of its own
            (at(99, 0), at(100, 0), None),
            // a sliver ahead: at least one second
            (at(100, 1), at(100, 0), Some(1)),
        ];
        for (after, now, want) in table {
            let got = retry_after_secs_at(after, now);
            assert_eq!(got, want, "{after:?} at {now:?}");
            if let Some(secs) = got {
                let now_whole = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let due = SystemTime::UNIX_EPOCH + Duration::from_secs(now_whole + secs);
                assert!(due >= after, "{after:?} at {now:?}: due {due:?}");
            }
        }
    }

    fn problem(t: &str, status: Option<u16>) -> instant_acme::Error {
        instant_acme::Error::Api(
            serde_json::from_value::<Problem>(serde_json::json!({
                "type": format!("urn:ietf:params:acme:error:{t}"),
                "detail": "because",
                "status": status,
            }))
            .expect("problem json"),
        )
    }

    /// A challenge answered with an `error` (no HTTP status: the object's
    /// own field, as smallstep sends it) is final and names the identifier;
    /// a real HTTP problem keeps its usual classification.
    #[test]
    fn a_failed_challenge_names_its_identifier_and_method() {
        let cases = [
            (
                problem("connection", None),
                AcmeErrorKind::Final,
                "http-01 validation of dead.example.test failed: connection: because",
            ),
            (
                problem("serverInternal", Some(500)),
                AcmeErrorKind::Transient,
                "serverInternal: because",
            ),
            (
                problem("serverInternal", None),
                AcmeErrorKind::Transient,
                "serverInternal: because",
            ),
        ];
        for (e, kind, message) in cases {
            match challenge_failed("http-01", "dead.example.test", e) {
                Retry::Other(got) => {
                    assert_eq!(got.kind, kind, "{message}");
                    assert_eq!(got.message, message);
                }
                Retry::BadNonce(_) => panic!("not a badNonce: {message}"),
            }
        }
        assert_eq!(challenge_name(&ChallengeType::Dns01), "dns-01");
    }

    #[test]
    fn classification_follows_rfc8555_problem_types() {
        let cases = [
            ("badNonce", Some(400), AcmeErrorKind::Transient),
            ("rateLimited", Some(429), AcmeErrorKind::RateLimited),
            ("accountDoesNotExist", Some(400), AcmeErrorKind::AccountGone),
            ("rejectedIdentifier", Some(400), AcmeErrorKind::Final),
            ("unauthorized", Some(403), AcmeErrorKind::Final),
            ("serverInternal", Some(500), AcmeErrorKind::Transient),
            ("serverInternal", None, AcmeErrorKind::Transient),
            ("connection", None, AcmeErrorKind::Final),
        ];
        for (t, status, want) in cases {
            let e = classify(problem(t, status));
            assert_eq!(e.kind, want, "{t}");
            assert!(e.message.starts_with(t), "{}", e.message);
            assert!(e.message.contains("because"));
        }
        assert_eq!(
            classify(instant_acme::Error::Timeout(None)).kind,
            AcmeErrorKind::Transient
        );
    }

    /// An error answer without a problem type (smallstep's, for an account
    /// it lost) says so, with the status when the body gives one.
    #[test]
    fn a_problem_without_a_type_names_its_http_status() {
        let untyped = |status: Option<u16>| {
            serde_json::from_value::<Problem>(serde_json::json!({ "status": status }))
                .expect("problem json")
        };
        assert_eq!(
            describe_problem(&untyped(Some(404))),
            "HTTP 404 error without an ACME problem type: (no detail)"
        );
        assert_eq!(
            describe_problem(&untyped(None)),
            "error answer without an ACME problem type: (no detail)"
        );
        let e = classify(instant_acme::Error::Api(untyped(Some(404))));
        assert_eq!(e.kind, AcmeErrorKind::Final);
    }
}
