//! What talking to AWS needs, without the AWS SDK: Signature Version 4
//! ([`sign`], AWS "Create a signed AWS API request": canonical request →
//! string to sign → HMAC-SHA256 chain of date, region, service) and the
//! credential sources a Kubernetes pod uses, in the SDKs' order
//! ([`CredentialChain`]): static keys from the configuration, the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN` → STS `AssumeRoleWithWebIdentity`, as EKS's IRSA sets
//! up), then the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`).
//!
//! Secrets never reach `Debug` or an error; errors name the source.

use aws_lc_rs::{digest, hmac};

use crate::keys::hex;

/// Keys to sign with.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    /// `AKIA…` / `ASIA…` (not secret, shown in errors).
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: String,
    /// For temporary credentials.
    pub session_token: Option<String>,
    /// Unix time they expire at (temporary credentials).
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// One request to sign.
pub struct Request<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The `Host` header: the endpoint's host, with `:port` when it is not
    /// the scheme's default.
    pub host: &'a str,
    /// The absolute path, already URI-encoded.
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign besides `host`, `x-amz-date` and
    /// `x-amz-security-token` (e.g. `content-type`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub payload: &'a [u8],
}

/// `20150830T123600Z` and `20150830` for a Unix time.
pub fn amz_date(unix: i64) -> (String, String) {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let day = format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
    (
        format!("{day}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second()),
        day,
    )
}

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// as SigV4 requires for query keys and values and path segments.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query string in canonical order (also the one to send).
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// The canonical request and the signed-headers list (SigV4 task 1).
fn canonical_request(req: &Request<'_>, amz_date: &str, token: Option<&str>) -> (String, String) {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.push(("host".into(), req.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.to_string()));
    if let Some(token) = token {
        headers.push(("x-amz-security-token".into(), token.to_string()));
    }
    headers.sort();
    let signed = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    (
        format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
            req.method,
            req.path,
            canonical_query(req.query),
            sha256_hex(req.payload)
        ),
        signed,
    )
}

/// The headers that sign `req` at Unix time `now` for `region` and
/// `service`: `x-amz-date`, `authorization` and, with temporary
/// credentials, `x-amz-security-token`.
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    req: &Request<'_>,
    now: i64,
) -> Vec<(&'static str, String)> {
    let (amz_date, day) = amz_date(now);
    let token = creds.session_token.as_deref();
    let (canonical, signed) = canonical_request(req, &amz_date, token);
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        day.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    let mut out = vec![
        ("x-amz-date", amz_date),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                creds.access_key_id
            ),
        ),
    ];
    if let Some(token) = token {
        out.push(("x-amz-security-token", token.to_string()));
    }
    out
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// Where credentials come from, chosen once at start in the SDKs' order.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `access_key_id` + `secret_access_key` in the configuration.
    Static(Credentials),
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`
    /// (read at start).
    Environment(Credentials),
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: the token file is
    /// read again at each refresh (the kubelet rotates it).
    WebIdentity {
        /// The projected service-account token.
        token_file: std::path::PathBuf,
        /// The role to assume.
        role_arn: String,
        /// `AWS_ROLE_SESSION_NAME` or `twincert`.
        session_name: String,
    },
    /// The shared credentials file, read at each use (it may be rotated).
    SharedFile {
        /// `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`.
        path: std::path::PathBuf,
        /// `AWS_PROFILE` or `default`.
        profile: String,
    },
}

impl Source {
    /// The first source available: `configured`, else from `env` (a
    /// lookup of environment variables, injected for tests).
    pub fn choose(configured: Option<Credentials>, env: impl Fn(&str) -> Option<String>) -> Source {
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(c) = configured {
            return Source::Static(c);
        }
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Source::Environment(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: var("AWS_SESSION_TOKEN"),
                expires: None,
            });
        }
        if let (Some(file), Some(role)) = (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
        {
            return Source::WebIdentity {
                token_file: file.into(),
                role_arn: role,
                session_name: var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "twincert".into()),
            };
        }
        let path = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(var("HOME").unwrap_or_default()).join(".aws/credentials")
            });
        Source::SharedFile {
            path,
            profile: var("AWS_PROFILE").unwrap_or_else(|| "default".into()),
        }
    }

    /// The source in an error message.
    pub fn describe(&self) -> String {
        match self {
            Source::Static(c) => format!("static key {} from the configuration", c.access_key_id),
            Source::Environment(c) => {
                format!("key {} from AWS_ACCESS_KEY_ID", c.access_key_id)
            }
            Source::WebIdentity { role_arn, .. } => {
                format!("web identity for role {role_arn}")
            }
            Source::SharedFile { path, profile } => {
                format!("profile '{profile}' of {}", path.display())
            }
        }
    }
}

/// Credentials from a shared credentials file's `profile` section
/// (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`).
pub fn parse_shared_file(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
        expires: None,
    })
}

/// Renew temporary credentials this long before they expire.
const REFRESH_MARGIN: i64 = 5 * 60;

/// Credentials from a [`Source`], web-identity ones cached until shortly
/// before they expire.
pub struct CredentialChain {
    source: Source,
    sts_endpoint: url::Url,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl std::fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialChain")
            .field("source", &self.source.describe())
            .finish_non_exhaustive()
    }
}

impl CredentialChain {
    /// A chain over `source`; STS (for web identity) at `sts_endpoint`.
    pub fn new(source: Source, sts_endpoint: url::Url, http: reqwest::Client) -> CredentialChain {
        CredentialChain {
            source,
            sts_endpoint,
            http,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Where the credentials come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Credentials valid now (`now`: Unix seconds).
    pub async fn get(&self, now: i64) -> Result<Credentials, String> {
        match &self.source {
            Source::Static(c) | Source::Environment(c) => Ok(c.clone()),
            Source::SharedFile { path, profile } => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    format!(
                        "no AWS credentials: none in the configuration or the environment \
                         (AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE), and the shared \
                         credentials file {} cannot be read: {e}",
                        path.display()
                    )
                })?;
                parse_shared_file(&text, profile).ok_or_else(|| {
                    format!(
                        "no aws_access_key_id and aws_secret_access_key in profile '{profile}' of {}",
                        path.display()
                    )
                })
            }
            Source::WebIdentity {
                token_file,
                role_arn,
                session_name,
            } => {
                let mut cached = self.cached.lock().await;
                if let Some(c) = cached.as_ref()
                    && c.expires.is_some_and(|e| e - REFRESH_MARGIN > now)
                {
                    return Ok(c.clone());
                }
                let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    format!(
                        "web identity: cannot read AWS_WEB_IDENTITY_TOKEN_FILE {}: {e}",
                        token_file.display()
                    )
                })?;
                let fresh = self
                    .assume_role_with_web_identity(token.trim(), role_arn, session_name)
                    .await?;
                *cached = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// STS `AssumeRoleWithWebIdentity` (unsigned: the token is the proof).
    async fn assume_role_with_web_identity(
        &self,
        token: &str,
        role_arn: &str,
        session_name: &str,
    ) -> Result<Credentials, String> {
        let what = format!("STS AssumeRoleWithWebIdentity for {role_arn}");
        let form = canonical_query(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token),
        ]);
        let response = self
            .http
            .post(self.sts_endpoint.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| format!("{what}: {}", crate::error_chain(&e.without_url())))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{what}: reading the answer: {e}"))?;
        if !status.is_success() {
            let code = xml::tag(&text, "Code").unwrap_or("no error code");
            return Err(format!("{what}: HTTP {} ({code})", status.as_u16()));
        }
        let creds = xml::tag(&text, "Credentials")
            .ok_or_else(|| format!("{what}: the answer has no <Credentials>"))?;
        let field = |t: &str| {
            xml::tag(creds, t)
                .map(xml::unescape)
                .ok_or_else(|| format!("{what}: the answer has no <{t}>"))
        };
        let expires = time::OffsetDateTime::parse(
            &field("Expiration")?,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| format!("{what}: bad <Expiration>: {e}"))?
        .unix_timestamp();
        Ok(Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
            expires: Some(expires),
        })
    }
}

/// The few XML reads AWS's answers need: the text of the first element of
/// a name, all elements of a name, entity unescaping. Not a general XML
/// parser: no attributes on the elements read, no nesting of an element in
/// one of the same name (AWS's answers have neither).
pub mod xml {
    /// The content of the first `<tag>…</tag>` (attributes allowed on the
    /// opening tag).
    pub fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
        all(xml, tag).into_iter().next()
    }

    /// The content of every `<tag>…</tag>`, in order.
    pub fn all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let close = format!("</{tag}>");
        let mut rest = xml;
        while let Some(start) = find_open(rest, tag) {
            let after = &rest[start..];
            let Some(gt) = after.find('>') else { break };
            let body = &after[gt + 1..];
            let Some(end) = body.find(&close) else { break };
            out.push(&body[..end]);
            rest = &body[end + close.len()..];
        }
        out
    }

    /// The offset of `<tag>` or `<tag …>` in `xml`.
    fn find_open(xml: &str, tag: &str) -> Option<usize> {
        let open = format!("<{tag}");
        let mut from = 0;
        while let Some(i) = xml[from..].find(&open) {
            let at = from + i;
            match xml[at + open.len()..].chars().next() {
                Some('>') | Some(' ') | Some('\n') | Some('\t') | Some('\r') => return Some(at),
                _ => from = at + open.len(),
            }
        }
        None
    }

    /// Replaces XML's entities and character references.
    pub fn unescape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let Some(semi) = tail.find(';') else {
                out.push_str(tail);
                return out;
            };
            let entity = &tail[1..semi];
            let decoded = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                    .ok()
                    .and_then(char::from_u32),
                e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            match decoded {
                Some(c) => {
                    out.push(c);
                    rest = &tail[semi + 1..];
                }
                None => {
                    out.push('&');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Escapes text for an element's content.
    pub fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example credentials of AWS's SigV4 test suite.
    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the suite's request time.
    const SUITE_TIME: i64 = 1_440_938_160;

    /// AWS's Signature Version 4 test suite
    /// (<https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html>,
    /// files `get-vanilla/get-vanilla.{creq,sts,authz}` and
    /// `post-x-www-form-urlencoded/post-x-www-form-urlencoded.{creq,sts,authz}`):
    /// host `example.amazonaws.com`, region `us-east-1`, service `service`.
    #[test]
    fn sigv4_reproduces_aws_test_suite_vectors() {
        struct Vector {
            name: &'static str,
            method: &'static str,
            headers: &'static [(&'static str, &'static str)],
            payload: &'static [u8],
            /// SHA-256 of the canonical request (the `.sts` file's last line).
            creq_sha256: &'static str,
            authz: &'static str,
        }
        let vectors = [
            Vector {
                name: "get-vanilla",
                method: "GET",
                headers: &[],
                payload: b"",
                creq_sha256: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
                authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                        SignedHeaders=host;x-amz-date, \
                        Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            },
            Vector {
                name: "post-x-www-form-urlencoded",
                method: "POST",
                headers: &[("Content-Type", "application/x-www-form-urlencoded")],
                payload: b"Param1=value1",
                creq_sha256: "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
                authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                        SignedHeaders=content-type;host;x-amz-date, \
                        Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            },
        ];
        for v in vectors {
            let req = Request {
                method: v.method,
                host: "example.amazonaws.com",
                path: "/",
                query: &[],
                headers: v.headers,
                payload: v.payload,
            };
            let (creq, _) = canonical_request(&req, "20150830T123600Z", None);
            assert_eq!(
                sha256_hex(creq.as_bytes()),
                v.creq_sha256,
                "{}: {creq}",
                v.name
            );
            let headers = sign(&example(), "us-east-1", "service", &req, SUITE_TIME);
            assert_eq!(
                headers[0],
                ("x-amz-date", "20150830T123600Z".into()),
                "{}",
                v.name
            );
            assert_eq!(headers[1].1, v.authz, "{}", v.name);
        }
        // get-vanilla's canonical request, spelled out (get-vanilla.creq).
        let req = Request {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: &[],
            headers: &[],
            payload: b"",
        };
        assert_eq!(
            canonical_request(&req, "20150830T123600Z", None).0,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn session_tokens_are_signed_and_queries_sorted_and_encoded() {
        let mut creds = example();
        creds.session_token = Some("tok/en".into());
        let req = Request {
            method: "GET",
            host: "127.0.0.1:5000",
            path: "/2013-04-01/hostedzone/Z1/rrset",
            query: &[("type", "TXT"), ("name", "_acme-challenge.a.example.test.")],
            headers: &[],
            payload: b"",
        };
        let headers = sign(&creds, "us-east-1", "route53", &req, SUITE_TIME);
        assert!(
            headers[1]
                .1
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,")
        );
        assert_eq!(headers[2], ("x-amz-security-token", "tok/en".into()));
        assert_eq!(
            canonical_query(req.query),
            "name=_acme-challenge.a.example.test.&type=TXT"
        );
        assert_eq!(uri_encode("a b/+*é"), "a%20b%2F%2B%2A%C3%A9");
        assert_eq!(amz_date(0), ("19700101T000000Z".into(), "19700101".into()));
        assert!(
            !format!("{creds:?}").contains("EXAMPLEKEY")
                && !format!("{creds:?}").contains("tok/en")
        );
    }

    #[test]
    fn the_credential_source_is_the_first_available_in_the_sdk_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let all: &[(&str, &str)] = &[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "t"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_PROFILE", "dns"),
            ("HOME", "/home/tc"),
        ];
        assert!(matches!(
            Source::choose(Some(example()), env(all)),
            Source::Static(_)
        ));
        match Source::choose(None, env(all)) {
            Source::Environment(c) => {
                assert_eq!(c.access_key_id, "AKIAENV");
                assert_eq!(c.session_token.as_deref(), Some("t"));
            }
            other => panic!("{other:?}"),
        }
        match Source::choose(None, env(&all[3..])) {
            Source::WebIdentity {
                role_arn,
                session_name,
                ..
            } => {
                assert_eq!(role_arn, "arn:aws:iam::1:role/r");
                assert_eq!(session_name, "twincert");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Source::choose(None, env(&all[5..])),
            Source::SharedFile {
                path: "/home/tc/.aws/credentials".into(),
                profile: "dns".into()
            }
        );
        // A half-set pair does not count.
        assert!(matches!(
            Source::choose(None, env(&all[1..2])),
            Source::SharedFile { .. }
        ));
        let file = "# comment\n[default]\naws_access_key_id = AKIADEF\naws_secret_access_key=d\n\n\
                    [dns]\naws_access_key_id=AKIADNS\naws_secret_access_key = x\naws_session_token = y\n";
        let dns = parse_shared_file(file, "dns").expect("dns profile");
        assert_eq!(
            (dns.access_key_id.as_str(), dns.session_token.as_deref()),
            ("AKIADNS", Some("y"))
        );
        assert_eq!(
            parse_shared_file(file, "default").map(|c| c.access_key_id),
            Some("AKIADEF".into())
        );
        assert!(parse_shared_file(file, "other").is_none());
    }

    #[test]
    fn xml_reads_what_aws_answers() {
        let answer = r#"<?xml version="1.0"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
<ResourceRecordSets><ResourceRecordSet><Name>a.example.test.</Name><Type>TXT</Type><TTL>60</TTL>
<ResourceRecords><ResourceRecord><Value>&quot;v1&quot;</Value></ResourceRecord>
<ResourceRecord><Value>"v2 &amp; &#x41;&#66;"</Value></ResourceRecord></ResourceRecords>
</ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated></ListResourceRecordSetsResponse>"#;
        let values: Vec<String> = xml::all(answer, "Value")
            .into_iter()
            .map(xml::unescape)
            .collect();
        assert_eq!(values, ["\"v1\"", "\"v2 & AB\""]);
        assert_eq!(xml::tag(answer, "TTL"), Some("60"));
        assert_eq!(
            xml::tag(answer, "ResourceRecordSets").map(|s| s.len() > 10),
            Some(true)
        );
        assert_eq!(xml::tag(answer, "Missing"), None);
        assert_eq!(
            xml::tag("<Type>x</Type><TypeX>y</TypeX>", "TypeX"),
            Some("y")
        );
        assert_eq!(xml::unescape("a &bogus; b &"), "a &bogus; b &");
        assert_eq!(xml::escape("\"<a&b>\""), "\"&lt;a&amp;b&gt;\"");
    }

    #[tokio::test]
    async fn web_identity_credentials_are_cached_and_renewed_before_they_expire() {
        use axum::extract::State;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Clone)]
        struct Sts {
            calls: Arc<AtomicUsize>,
            forms: Arc<std::sync::Mutex<Vec<String>>>,
            refuse: bool,
        }
        async fn sts(State(s): State<Sts>, body: String) -> (axum::http::StatusCode, String) {
            let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
            s.forms.lock().expect("lock").push(body);
            if s.refuse {
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    "<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>".into(),
                );
            }
            // Expires 1 h after the suite's time.
            (
                axum::http::StatusCode::OK,
                format!(
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
                     <AccessKeyId>ASIA{n}</AccessKeyId><SecretAccessKey>secret{n}</SecretAccessKey>\
                     <SessionToken>token{n}</SessionToken><Expiration>2015-08-30T13:36:00Z</Expiration>\
                     </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                ),
            )
        }
        let dir = tempfile::tempdir().expect("dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "jwt-1\n").expect("token");
        for refuse in [false, true] {
            let state = Sts {
                calls: Arc::default(),
                forms: Arc::default(),
                refuse,
            };
            let app = axum::Router::new()
                .route("/", axum::routing::post(sts))
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(listener, app).await });
            let chain = CredentialChain::new(
                Source::WebIdentity {
                    token_file: token_file.clone(),
                    role_arn: "arn:aws:iam::1:role/dns".into(),
                    session_name: "twincert".into(),
                },
                format!("http://{addr}/").parse().expect("url"),
                reqwest::Client::new(),
            );
            if refuse {
                let err = chain.get(SUITE_TIME).await.expect_err("refused");
                assert!(
                    err.contains("STS AssumeRoleWithWebIdentity for arn:aws:iam::1:role/dns")
                        && err.contains("HTTP 403 (InvalidIdentityToken)")
                        && !err.contains("jwt-"),
                    "{err}"
                );
                continue;
            }
            let first = chain.get(SUITE_TIME).await.expect("credentials");
            assert_eq!(first.access_key_id, "ASIA1");
            assert_eq!(first.session_token.as_deref(), Some("token1"));
            assert_eq!(first.expires, Some(SUITE_TIME + 3600));
            // 50 minutes later: still 10 minutes left, more than the margin.
            let cached = chain.get(SUITE_TIME + 50 * 60).await.expect("cached");
            assert_eq!(cached.access_key_id, "ASIA1");
            // 56 minutes later: within 5 minutes of expiry, renewed with
            // the token file as it is now (the kubelet rotates it).
            std::fs::write(&token_file, "jwt-2").expect("rotate");
            let renewed = chain.get(SUITE_TIME + 56 * 60).await.expect("renewed");
            assert_eq!(renewed.access_key_id, "ASIA2");
            assert_eq!(state.calls.load(Ordering::SeqCst), 2);
            let forms = state.forms.lock().expect("lock").clone();
            assert!(
                forms[0].contains("Action=AssumeRoleWithWebIdentity")
                    && forms[0].contains("WebIdentityToken=jwt-1")
            );
            assert!(
                forms[0].contains("RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fdns"),
                "{}",
                forms[0]
            );
            assert!(forms[1].contains("WebIdentityToken=jwt-2"), "{}", forms[1]);
        }
    }

    #[tokio::test]
    async fn the_shared_credentials_file_is_read_at_each_use() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("credentials");
        let chain = CredentialChain::new(
            Source::SharedFile {
                path: path.clone(),
                profile: "dns".into(),
            },
            "http://127.0.0.1:1/".parse().expect("url"),
            reqwest::Client::new(),
        );
        let err = chain.get(SUITE_TIME).await.expect_err("no file");
        assert!(
            err.contains("no AWS credentials") && err.contains("credentials cannot be read"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[dns]\naws_access_key_id = AKIA1\naws_secret_access_key = k1\n",
        )
        .expect("write");
        assert_eq!(
            chain.get(SUITE_TIME).await.expect("read").access_key_id,
            "AKIA1"
        );
        std::fs::write(
            &path,
            "[dns]\naws_access_key_id = AKIA2\naws_secret_access_key = k2\n",
        )
        .expect("rotate");
        assert_eq!(
            chain.get(SUITE_TIME).await.expect("reread").access_key_id,
            "AKIA2"
        );
        std::fs::write(&path, "[default]\naws_access_key_id = AKIA3\n").expect("other profile");
        let err = chain.get(SUITE_TIME).await.expect_err("no profile");
        assert!(err.contains("profile 'dns'"), "{err}");
    }
}
