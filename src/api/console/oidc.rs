//! OpenID Connect sign-in for the console (OpenID Connect Core 1.0, the
//! authorization code flow, with PKCE S256 from RFC 7636): discovery, the
//! redirect to the IdP, the code exchange at the token endpoint
//! (`client_secret_basic`, RFC 6749 §2.3.1) and the ID token's verification
//! — its JWS signature (RS256 or ES256, RFC 7518 §3) against the IdP's JWKS,
//! then `iss`, `aud`/`azp`, `exp`, `iat` and `nonce` (Core §3.1.3.7) — and
//! the role from the configured claim.
//!
//! What it does not do: the `none` algorithm or HMAC-signed ID tokens
//! (refused), userinfo (the role claim must be in the ID token), refresh
//! tokens (a console session ends; the person signs in again).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::config::OidcConfig;
use crate::domain::Role;

/// How far the IdP's and our clocks may disagree (seconds).
const LEEWAY: i64 = 60;
/// How long the IdP's JWKS is used before it is fetched again.
const JWKS_MAX_AGE: i64 = 3600;

/// Why a sign-in failed, worded for the person (no token, no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OidcError(pub String);

fn err(s: impl Into<String>) -> OidcError {
    OidcError(s.into())
}

/// The IdP's discovery document (the fields used).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// One JSON Web Key (RFC 7517), RSA or EC P-256.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// What the ID token must say, besides its signature.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The issuer from discovery (equal to the configured one).
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// The nonce stored with the sign-in.
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// The person an ID token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub sub: String,
    /// `email`, when present.
    pub email: Option<String>,
    /// All claims, for the role mapping.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    /// The audit actor: the e-mail address when the IdP gives one, else
    /// `sub:<sub>` (never a bare sub, which could look like a token name).
    pub fn actor(&self) -> String {
        match &self.email {
            Some(e) if !e.is_empty() => e.clone(),
            _ => format!("sub:{}", self.sub),
        }
    }
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, OidcError> {
    B64.decode(part.trim_end_matches('='))
        .map_err(|_| err(format!("the ID token's {what} is not base64url")))
}

/// Verifies a compact-serialized ID token against `keys` and `expect`.
/// Pure: the caller fetched the keys.
pub fn verify_id_token(
    token: &str,
    keys: &[Jwk],
    expect: &Expect<'_>,
) -> Result<Identity, OidcError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err("the ID token is not a JWS in compact form"));
    };
    let header: serde_json::Value = serde_json::from_slice(&b64(h, "header")?)
        .map_err(|_| err("the ID token's header is not JSON"))?;
    let alg = header["alg"].as_str().unwrap_or_default();
    let kid = header["kid"].as_str();
    let (kty, verify_alg): (
        &str,
        &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    ) = match alg {
        "RS256" => ("RSA", &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256),
        "ES256" => ("EC", &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED),
        other => {
            return Err(err(format!(
                "the ID token is signed with '{other}'; only RS256 and ES256 are accepted"
            )));
        }
    };
    let sig = b64(s, "signature")?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| k.kty == kty)
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg))
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .collect();
    if candidates.is_empty() {
        return Err(err(format!(
            "no key of the IdP's JWKS matches the ID token (alg {alg}, kid {})",
            kid.unwrap_or("none")
        )));
    }
    let good = candidates
        .iter()
        .any(|k| verify_with(k, verify_alg, signed, &sig));
    if !good {
        return Err(err("the ID token's signature does not verify"));
    }
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&b64(p, "payload")?)
            .map_err(|_| err("the ID token's payload is not a JSON object"))?;
    check_claims(&claims, expect)?;
    Ok(Identity {
        sub: claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        email: claims
            .get("email")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        claims,
    })
}

fn verify_with(
    k: &Jwk,
    alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    signed: &[u8],
    sig: &[u8],
) -> bool {
    let dec = |v: &Option<String>| v.as_deref().and_then(|s| B64.decode(s).ok());
    match k.kty.as_str() {
        "RSA" => {
            let (Some(n), Some(e)) = (dec(&k.n), dec(&k.e)) else {
                return false;
            };
            let n = n
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>();
            let e = e
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>();
            aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(
                    &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                    signed,
                    sig,
                )
                .is_ok()
        }
        "EC" => {
            if k.crv.as_deref() != Some("P-256") {
                return false;
            }
            let (Some(x), Some(y)) = (dec(&k.x), dec(&k.y)) else {
                return false;
            };
            if x.len() != 32 || y.len() != 32 {
                return false;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            aws_lc_rs::signature::UnparsedPublicKey::new(alg, &point)
                .verify(signed, sig)
                .is_ok()
        }
        _ => false,
    }
}

fn check_claims(
    c: &serde_json::Map<String, serde_json::Value>,
    x: &Expect<'_>,
) -> Result<(), OidcError> {
    let iss = c.get("iss").and_then(|v| v.as_str()).unwrap_or_default();
    if iss != x.issuer {
        return Err(err(format!(
            "the ID token's issuer '{iss}' is not the configured issuer '{}'",
            x.issuer
        )));
    }
    let auds: Vec<&str> = match c.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    if !auds.contains(&x.client_id) {
        return Err(err(format!(
            "the ID token is for audience {auds:?}, not this client '{}'",
            x.client_id
        )));
    }
    if auds.len() > 1 {
        let azp = c.get("azp").and_then(|v| v.as_str());
        if azp != Some(x.client_id) {
            return Err(err(
                "the ID token has several audiences and its azp is not this client",
            ));
        }
    }
    let num = |k: &str| c.get(k).and_then(|v| v.as_i64());
    let Some(exp) = num("exp") else {
        return Err(err("the ID token has no exp"));
    };
    if exp + LEEWAY <= x.now {
        return Err(err("the ID token has expired"));
    }
    let Some(iat) = num("iat") else {
        return Err(err("the ID token has no iat"));
    };
    if iat > x.now + LEEWAY {
        return Err(err(
            "the ID token was issued in the future (check the clocks)",
        ));
    }
    let nonce = c.get("nonce").and_then(|v| v.as_str()).unwrap_or_default();
    let same =
        aws_lc_rs::constant_time::verify_slices_are_equal(nonce.as_bytes(), x.nonce.as_bytes());
    if same.is_err() {
        return Err(err("the ID token's nonce is not the one of this sign-in"));
    }
    if c.get("sub")
        .and_then(|v| v.as_str())
        .is_none_or(str::is_empty)
    {
        return Err(err("the ID token has no sub"));
    }
    Ok(())
}

/// The highest role the claim's values map to, or why there is none.
pub fn role_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    claim: &str,
    map: &BTreeMap<String, Role>,
) -> Result<Role, OidcError> {
    let values: Vec<&str> = match claims.get(claim) {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    values
        .iter()
        .filter_map(|v| map.get(*v).copied())
        .max()
        .ok_or_else(|| {
            err(format!(
                "no twincert role for you: the ID token's claim '{claim}' holds {values:?}, \
                 and console.oidc.role_map maps none of them"
            ))
        })
}

/// A random base64url string of `n` bytes.
pub fn random(n: usize) -> Result<String, OidcError> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| err("system RNG failed"))?;
    Ok(B64.encode(b))
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

struct Provider {
    discovery: Discovery,
    keys: Vec<Jwk>,
    keys_at: i64,
}

/// The console's OpenID Connect client: configuration, an HTTP client that
/// trusts the IdP, and the discovery document and JWKS once fetched.
pub struct OidcClient {
    cfg: OidcConfig,
    redirect_url: String,
    http: reqwest::Client,
    provider: RwLock<Option<Provider>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Builds the client; `public_url` is the default base of the redirect.
    pub fn new(cfg: OidcConfig, public_url: Option<&str>) -> Result<OidcClient, String> {
        let redirect_url = match (&cfg.redirect_url, public_url) {
            (Some(r), _) => r.clone(),
            (None, Some(p)) => format!("{p}/ui/oidc/callback"),
            (None, None) => return Err("console.oidc.redirect_url is not set".into()),
        };
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("twincert/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("console.oidc.ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("console.oidc.ca_file {}: {e}", path.display()))?;
            b = b.tls_certs_merge(certs);
        }
        let http = b
            .build()
            .map_err(|e| format!("console.oidc: HTTP client: {e}"))?;
        Ok(OidcClient {
            cfg,
            redirect_url,
            http,
            provider: RwLock::new(None),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, OidcError> {
        let rsp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| err(format!("the IdP's {what} at {url} is unreachable: {e}")))?;
        if !rsp.status().is_success() {
            return Err(err(format!(
                "the IdP's {what} at {url} answered HTTP {}",
                rsp.status()
            )));
        }
        rsp.json().await.map_err(|e| {
            err(format!(
                "the IdP's {what} at {url} is not the expected JSON: {e}"
            ))
        })
    }

    /// Discovery and JWKS, fetched when missing, older than an hour or
    /// (`refresh`) when a token names a key not yet seen.
    async fn provider(&self, now: i64, refresh: bool) -> Result<(Discovery, Vec<Jwk>), OidcError> {
        if let Some(p) = self.provider.read().await.as_ref()
            && !refresh
            && now - p.keys_at < JWKS_MAX_AGE
        {
            return Ok((p.discovery.clone(), p.keys.clone()));
        }
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer);
        let d: Discovery = self.get_json(&url, "discovery document").await?;
        if d.issuer.trim_end_matches('/') != self.cfg.issuer {
            return Err(err(format!(
                "the IdP's discovery document names issuer '{}', not the configured '{}'",
                d.issuer, self.cfg.issuer
            )));
        }
        let set: JwkSet = self.get_json(&d.jwks_uri, "JWKS").await?;
        *self.provider.write().await = Some(Provider {
            discovery: d.clone(),
            keys: set.keys.clone(),
            keys_at: now,
        });
        Ok((d, set.keys))
    }

    /// The IdP URL to send the person to.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
        now: i64,
    ) -> Result<String, OidcError> {
        let (d, _) = self.provider(now, false).await?;
        let mut u = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| err(format!("the IdP's authorization_endpoint: {e}")))?;
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", &self.cfg.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce_challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(u.into())
    }

    /// Exchanges the code, verifies the ID token, maps the role.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<(Identity, Role), OidcError> {
        let (d, mut keys) = self.provider(now, false).await?;
        // RFC 6749 §2.3.1: id and secret form-urlencoded, then Basic.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("code_verifier", verifier)
            .finish();
        let rsp = self
            .http
            .post(&d.token_endpoint)
            .basic_auth(enc(&self.cfg.client_id), Some(enc(&self.cfg.client_secret)))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| err(format!("the IdP's token endpoint is unreachable: {e}")))?;
        let status = rsp.status();
        let body: serde_json::Value = rsp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            return Err(err(format!(
                "the IdP refused the code exchange (HTTP {status}): {} {}",
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            )));
        }
        let Some(id_token) = body["id_token"].as_str() else {
            return Err(err("the IdP's token answer has no id_token"));
        };
        let expect = Expect {
            issuer: &d.issuer,
            client_id: &self.cfg.client_id,
            nonce,
            now,
        };
        let identity = match verify_id_token(id_token, &keys, &expect) {
            Err(e) if e.0.starts_with("no key of the IdP's JWKS") => {
                // A key rotated in since the JWKS was read: fetch it once more.
                (_, keys) = self.provider(now, true).await?;
                verify_id_token(id_token, &keys, &expect)?
            }
            other => other?,
        };
        let role = role_of(&identity.claims, &self.cfg.role_claim, &self.cfg.role_map)?;
        Ok((identity, role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;

    struct Signer {
        ec: aws_lc_rs::signature::EcdsaKeyPair,
    }

    fn ec_signer() -> Signer {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("keygen");
        Signer {
            ec: aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
            )
            .expect("key"),
        }
    }

    fn ec_jwk(s: &Signer, kid: &str) -> Jwk {
        let p = s.ec.public_key().as_ref();
        Jwk {
            kty: "EC".into(),
            kid: Some(kid.into()),
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(B64.encode(&p[1..33])),
            y: Some(B64.encode(&p[33..65])),
        }
    }

    fn es256(s: &Signer, kid: &str, claims: &serde_json::Value) -> String {
        let h = B64.encode(serde_json::json!({"alg": "ES256", "kid": kid}).to_string());
        let p = B64.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = s.ec.sign(&rng, input.as_bytes()).expect("sign");
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    const NOW: i64 = 1_900_000_000;

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://idp.test", "aud": "twincert", "sub": "u1",
            "email": "ann@example.test", "exp": NOW + 300, "iat": NOW - 5,
            "nonce": "n-1", "groups": ["twincert-viewers", "twincert-operators"],
        })
    }

    fn expect() -> Expect<'static> {
        Expect {
            issuer: "https://idp.test",
            client_id: "twincert",
            nonce: "n-1",
            now: NOW,
        }
    }

    #[test]
    fn id_tokens_are_verified_claim_by_claim() {
        let key = ec_signer();
        let other = ec_signer();
        let keys = vec![ec_jwk(&key, "k1")];
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims();
            f(&mut c);
            es256(&key, "k1", &c)
        };
        let forged = {
            let good = es256(&key, "k1", &claims());
            let mut c = claims();
            c["groups"] = serde_json::json!(["twincert-admins"]);
            let (h, rest) = good.split_once('.').expect("dot");
            let sig = rest.rsplit_once('.').expect("dot").1;
            format!("{h}.{}.{sig}", B64.encode(c.to_string()))
        };
        let none_alg = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(claims().to_string())
        );
        let cases: Vec<(&str, String, Result<&str, &str>)> = vec![
            ("good", es256(&key, "k1", &claims()), Ok("ann@example.test")),
            (
                "signed by another key",
                es256(&other, "k1", &claims()),
                Err("signature does not verify"),
            ),
            (
                "claims changed after signing",
                forged,
                Err("signature does not verify"),
            ),
            (
                "unknown kid",
                es256(&key, "k9", &claims()),
                Err("no key of the IdP's JWKS"),
            ),
            ("alg none", none_alg, Err("only RS256 and ES256")),
            (
                "wrong aud",
                with(&|c| c["aud"] = "someone-else".into()),
                Err("not this client"),
            ),
            (
                "aud list without azp",
                with(&|c| c["aud"] = serde_json::json!(["twincert", "x"])),
                Err("azp"),
            ),
            (
                "wrong issuer",
                with(&|c| c["iss"] = "https://evil.test".into()),
                Err("not the configured issuer"),
            ),
            (
                "expired",
                with(&|c| c["exp"] = (NOW - 61).into()),
                Err("has expired"),
            ),
            (
                "expired within leeway",
                with(&|c| c["exp"] = (NOW - 30).into()),
                Ok("ann@example.test"),
            ),
            (
                "issued in the future",
                with(&|c| c["iat"] = (NOW + 600).into()),
                Err("in the future"),
            ),
            (
                "wrong nonce",
                with(&|c| c["nonce"] = "n-2".into()),
                Err("nonce"),
            ),
            (
                "no nonce",
                with(&|c| {
                    c.as_object_mut().map(|o| o.remove("nonce"));
                }),
                Err("nonce"),
            ),
            (
                "no email: sub is the actor",
                with(&|c| {
                    c.as_object_mut().map(|o| o.remove("email"));
                }),
                Ok("sub:u1"),
            ),
            ("not a JWS", "abc.def".into(), Err("compact form")),
        ];
        for (case, token, want) in cases {
            let got = verify_id_token(&token, &keys, &expect());
            match (want, got) {
                (Ok(actor), Ok(id)) => assert_eq!(id.actor(), actor, "{case}"),
                (Err(text), Err(e)) => assert!(e.0.contains(text), "{case}: {}", e.0),
                (w, g) => panic!("{case}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn rs256_id_tokens_verify_against_an_rsa_jwk() {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
        let pk = kp.public_key();
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: Some("r1".into()),
            alg: None,
            use_: None,
            n: Some(B64.encode(pk.modulus().big_endian_without_leading_zero())),
            e: Some(B64.encode(pk.exponent().big_endian_without_leading_zero())),
            crv: None,
            x: None,
            y: None,
        };
        let h = B64.encode(r#"{"alg":"RS256","kid":"r1"}"#);
        let input = format!("{h}.{}", B64.encode(claims().to_string()));
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            input.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        let token = format!("{input}.{}", B64.encode(&sig));
        let id = verify_id_token(&token, std::slice::from_ref(&jwk), &expect()).expect("valid");
        assert_eq!(id.sub, "u1");
        // The same signature over other claims fails.
        let bad = format!("{h}.{}.{}", B64.encode(r#"{"sub":"x"}"#), B64.encode(&sig));
        assert!(verify_id_token(&bad, &[jwk], &expect()).is_err());
    }

    #[test]
    fn the_role_is_the_highest_mapped_claim_value() {
        let map: BTreeMap<String, Role> = [
            ("twincert-viewers".to_string(), Role::Viewer),
            ("twincert-operators".to_string(), Role::Operator),
        ]
        .into();
        let c = |v: serde_json::Value| {
            serde_json::json!({ "groups": v })
                .as_object()
                .cloned()
                .expect("object")
        };
        let cases = [
            (
                serde_json::json!(["twincert-viewers", "twincert-operators"]),
                Ok(Role::Operator),
            ),
            (serde_json::json!("twincert-viewers"), Ok(Role::Viewer)),
            (serde_json::json!(["staff"]), Err(())),
            (serde_json::json!(null), Err(())),
        ];
        for (v, want) in cases {
            let got = role_of(&c(v.clone()), "groups", &map).map_err(|_| ());
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
