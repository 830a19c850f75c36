//! Alert e-mail over SMTP (RFC 5321), with STARTTLS (RFC 3207) or implicit
//! TLS (RFC 8314), through lettre on rustls.
//!
//! The transport is built once from an [`SmtpConfig`] ([`SmtpSender::new`]),
//! so a configuration that cannot work (bad sender address, unreadable CA
//! certificate) fails at start-up rather than at the first alert. Each
//! [`SmtpSender::send`] opens its own connection: alerts are rare, and a
//! pooled connection would be dead by the next one.
//!
//! Server certificates are verified against the system's roots plus
//! [`SmtpConfig::extra_root_pem`] (a private CA); there is no switch to
//! accept any certificate. The password never appears in `Debug` output.

use std::fmt;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Message, NotifyError, describe};
use crate::config::{SmtpConfig, SmtpSecurity};

/// Sends alert e-mail through one configured server.
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The transport holds the credentials; show only where mail goes.
        f.debug_struct("SmtpSender")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn mailbox(address: &str) -> Result<Mailbox, NotifyError> {
    address
        .parse::<Mailbox>()
        .map_err(|e| NotifyError::InvalidAddress {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

impl SmtpSender {
    /// Checks `cfg` and builds the transport; no connection is made yet.
    pub fn new(cfg: SmtpConfig) -> Result<SmtpSender, NotifyError> {
        let from = mailbox(&cfg.from)?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
                .port(cfg.port)
                .timeout(Some(cfg.timeout));
        if cfg.security != SmtpSecurity::None {
            let params = tls_parameters(&cfg.host, cfg.extra_root_pem.as_deref())?;
            builder = builder.tls(match cfg.security {
                SmtpSecurity::StartTls => Tls::Required(params),
                _ => Tls::Wrapper(params),
            });
        } else if cfg.extra_root_pem.is_some() {
            return Err(NotifyError::Config(
                "a CA certificate is given for SMTP without TLS".into(),
            ));
        }
        match (cfg.username, cfg.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user, password));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(NotifyError::Config(
                    "an SMTP user name is given without a password".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(NotifyError::Config(
                    "an SMTP password is given without a user name".into(),
                ));
            }
        }
        Ok(SmtpSender {
            transport: builder.build(),
            from,
            server: format!("{}:{}", cfg.host, cfg.port),
        })
    }

    /// Sends `msg` to every address in `to` as one plain-text e-mail. Every
    /// address is checked before anything is sent.
    pub async fn send(&self, to: &[String], msg: &Message) -> Result<(), NotifyError> {
        if to.is_empty() {
            return Err(NotifyError::NoRecipients);
        }
        let mut email = lettre::Message::builder()
            .from(self.from.clone())
            // A line break would end the header early.
            .subject(msg.subject.replace(['\r', '\n'], " "));
        for address in to {
            email = email.to(mailbox(address)?);
        }
        let email = email
            .header(ContentType::TEXT_PLAIN)
            .body(msg.plain_text())
            .map_err(|e| NotifyError::Message(describe(&e)))?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| NotifyError::Smtp {
                permanent: e.is_permanent(),
                message: format!("{}: {}", self.server, describe(&e)),
            })
    }
}

/// TLS parameters for `host`: system roots plus `extra_root_pem`.
fn tls_parameters(host: &str, extra_root_pem: Option<&str>) -> Result<TlsParameters, NotifyError> {
    let mut params = TlsParameters::builder(host.to_string());
    if let Some(pem) = extra_root_pem {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(NotifyError::Config(
                "the SMTP CA certificate holds no PEM CERTIFICATE block".into(),
            ));
        }
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| {
            NotifyError::Config(format!(
                "the SMTP CA certificate is unreadable: {}",
                describe(&e)
            ))
        })?;
        params = params.add_root_certificate(cert);
    }
    params
        .build()
        .map_err(|e| NotifyError::Config(format!("SMTP TLS for {host}: {}", describe(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Stdio;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn config() -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 2525,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "twincert <alerts@example.com>".into(),
            timeout: Duration::from_secs(10),
            extra_root_pem: None,
        }
    }

    fn message() -> Message {
        Message {
            subject: "Certificate for example.com expires in 7 days".into(),
            body: "The primary certificate of example.com was not renewed.".into(),
            kind: "expiry".into(),
            fields: vec![("slot".into(), "primary".into())],
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut cfg = config();
        cfg.username = Some("alerts".into());
        cfg.password = Some("hunter2-very-secret".into());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let sender = SmtpSender::new(cfg).expect("sender");
        let shown = format!("{sender:?}");
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.self_signed(&rcgen::KeyPair::generate()?))
            .expect("ca");
        type Edit = fn(&mut SmtpConfig);
        let cases: [(&str, Edit, bool); 7] = [
            ("plain", |_| {}, true),
            (
                "starttls with a private CA",
                |c| {
                    c.security = SmtpSecurity::StartTls;
                    c.extra_root_pem = Some(String::new());
                },
                true,
            ),
            ("tls", |c| c.security = SmtpSecurity::Tls, true),
            ("bad sender", |c| c.from = "not an address".into(), false),
            (
                "user without password",
                |c| c.username = Some("u".into()),
                false,
            ),
            (
                "password without user",
                |c| c.password = Some("p".into()),
                false,
            ),
            (
                "garbage CA",
                |c| {
                    c.security = SmtpSecurity::Tls;
                    c.extra_root_pem = Some("garbage".into());
                },
                false,
            ),
        ];
        for (name, edit, ok) in cases {
            let mut cfg = config();
            edit(&mut cfg);
            if cfg.extra_root_pem.as_deref() == Some("") {
                cfg.extra_root_pem = Some(ca.pem());
            }
            let result = SmtpSender::new(cfg);
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
        }
    }

    #[tokio::test]
    async fn recipients_are_checked_before_sending() {
        // Nothing listens on the port: an address error must come first.
        let sender = SmtpSender::new(config()).expect("sender");
        let err = sender
            .send(
                &["ops@example.com".into(), "ops at example".into()],
                &message(),
            )
            .await
            .expect_err("bad address");
        assert!(
            matches!(&err, NotifyError::InvalidAddress { address, .. } if address == "ops at example"),
            "{err}"
        );
        let err = sender.send(&[], &message()).await.expect_err("nobody");
        assert!(matches!(err, NotifyError::NoRecipients));
    }

    /// The tests' SMTP server (aiosmtpd), shared with the end-to-end tests.
    const SINK: &str = include_str!("../../tests/smtp_sink.py");

    /// A Python that has aiosmtpd (Debian's `python3-aiosmtpd` goes to
    /// /usr/bin/python3, which may not be the first python3 on PATH).
    async fn python_with_aiosmtpd() -> Option<&'static str> {
        for python in ["python3", "/usr/bin/python3"] {
            let found = tokio::process::Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if found {
                return Some(python);
            }
        }
        None
    }

    async fn wait_for(path: &Path, needle: &str) -> String {
        for _ in 0..100 {
            if let Ok(text) = tokio::fs::read_to_string(path).await
                && text.contains(needle)
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{needle:?} never arrived in {}", path.display());
    }

    #[tokio::test]
    async fn plain_smtp_delivers_subject_and_body() {
        let Some(python) = python_with_aiosmtpd().await else {
            eprintln!(
                "skipping plain_smtp_delivers_subject_and_body: no python3 with aiosmtpd \
                 (apt-get install python3-aiosmtpd)"
            );
            // CI installs it (.ci/run): there the test must run.
            assert!(std::env::var("CI").is_err(), "CI must run the SMTP test");
            return;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("mail.txt");
        let mut sink = tokio::process::Command::new(python)
            .arg("-c")
            .arg(SINK)
            .arg(port.to_string())
            .arg(&spool)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("aiosmtpd sink");
        let stdout = sink.stdout.take().expect("stdout");
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        assert!(
            matches!(&ready, Ok(Ok(Some(line))) if line == "ready"),
            "sink did not start: {ready:?}"
        );

        let mut cfg = config();
        cfg.port = port;
        let sender = SmtpSender::new(cfg).expect("sender");
        let to = vec![
            "ops@example.com".to_string(),
            "Oncall <oncall@example.net>".to_string(),
        ];
        sender.send(&to, &message()).await.expect("delivered");

        let text = wait_for(&spool, "\n.\n").await;
        assert!(text.contains("MAIL FROM: alerts@example.com\n"), "{text}");
        assert!(
            text.contains("RCPT TO: ops@example.com,oncall@example.net\n"),
            "{text}"
        );
        assert!(
            text.contains("Subject: Certificate for example.com expires in 7 days"),
            "{text}"
        );
        assert!(
            text.contains("The primary certificate of example.com was not renewed."),
            "{text}"
        );
        assert!(text.contains("slot: primary"), "{text}");
        let _ = sink.kill().await;
    }
}
