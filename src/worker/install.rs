//! Install requests: the deployer's `manual` destination. Where twincert
//! cannot write to a server, it asks the server's administrator (the
//! endpoints' `admin_contact`) to install the certificate:
//!
//! 1. a fresh random password; the package (`deploy::package`: PKCS#12 and
//!    encrypted PEM bundle in a tar) built under it from the sealed key;
//! 2. the package sealed and stored with the SHA-256 of a random download
//!    token, superseding every earlier package of the deployment (their
//!    links answer 410), audited — all before any mail, so a crash leaves
//!    a package nobody was told of, never a link to nothing;
//! 3. a mail with the link (`server.public_url` + `/install/{token}`) and
//!    what to install where; with `password_delivery = "mail"` a second
//!    mail with the password (otherwise it stays sealed until an operator
//!    asks for it, once);
//! 4. the deployment is `requested`; the endpoint checks keep running and
//!    confirm it when the certificate is served (a mismatch meanwhile is
//!    neither a failure nor an alert: a person is at work);
//! 5. one reminder if it is still `requested` after `remind_after_hours`.
//!
//! Stored packages rather than rebuilt ones: a rebuild on download would
//! need the password at download time, so the password would have to be
//! kept for as long as the link lives; stored, the package is wiped once
//! fetched (one-time links) and a mailed password is never stored at all.
//!
//! The token, the password and the key never reach a log, an error, an
//! alert or the deployment's `detail`.
//!
//! *Observes*: due deployments of manual destinations (through the
//! deployer), the name's endpoints, due reminders (`store::Packages`).
//! *Writes*: packages, mails to admin contacts, audit events.

use serde_json::json;
use tracing::{info, warn};

use super::deployer::Deployer;
use crate::config::{ManualTarget, PasswordDelivery};
use crate::deploy::package;
use crate::keys::hex;
use crate::keys::seal::{install_package_purpose, install_password_purpose};
use crate::notify::Message;
use crate::store::{AuditDetails, AuditEvent, DueDeployment, EndpointView, NewPackage};

/// The audit actor of install requests and reminders.
const ACTOR: &str = "worker:deployer";
/// Reminders handled per pass.
const REMINDERS_PER_PASS: u64 = 100;

/// The file names inside a package for `name` (a wildcard's `*` cannot be
/// in a file name).
fn file_stem(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(rest) => format!("{}{rest}", crate::deploy::files::WILDCARD_PREFIX),
        None => name.to_string(),
    }
}

/// A random download token: 256 bits, base64url.
fn new_token() -> Result<String, String> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "system RNG failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Hex SHA-256 of a download token: the only form the store keeps.
pub fn token_sha256(token: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// One line per endpoint: `host:port (SNI …, via address)`.
fn endpoint_lines(endpoints: &[EndpointView]) -> String {
    let mut s = String::new();
    for e in endpoints {
        let spec = &e.spec;
        s.push_str(&format!("  - {}:{}", spec.host, spec.port));
        let mut extra = Vec::new();
        if let Some(sni) = &spec.sni {
            extra.push(format!("SNI {sni}"));
        }
        if let Some(ip) = &spec.ip {
            extra.push(format!("at {ip}"));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        s.push('\n');
    }
    s
}

impl Deployer {
    /// Builds, stores and mails an install request for `job`; the
    /// deployment's detail (no secret in it) or why it failed (retried).
    pub(super) async fn request_install(
        &self,
        target: &ManualTarget,
        job: &DueDeployment,
    ) -> Result<serde_json::Value, String> {
        let d = &self.delivery;
        let smtp = d
            .smtp
            .as_ref()
            .ok_or("install requests are mailed: configure [alerts.smtp]")?;
        let base = d
            .public_url
            .as_deref()
            .ok_or("install requests need server.public_url for their download links")?;
        let (_, endpoints) = self
            .deployments
            .deploy_targets(&job.name_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut contacts: Vec<String> = endpoints
            .iter()
            .filter_map(|e| e.spec.admin_contact.clone())
            .collect();
        contacts.sort();
        contacts.dedup();
        if contacts.is_empty() {
            return Err(format!(
                "a manual destination needs someone to ask: give the endpoints of {} an \
                 admin_contact (PUT /v1/names/{}/deploy)",
                job.name_id, job.name_id
            ));
        }

        let key = self.unsealed_key(&job.private_key_id).await?;
        let password = package::new_password().map_err(|e| e.to_string())?;
        let built = package::build(&job.name_id, &key.pkcs8_der(), &job.chain_pem, &password)
            .map_err(|e| e.to_string())?;
        drop(key);
        let stem = file_stem(&job.name_id);
        let (p12_file, pem_file) = (format!("{stem}.p12"), format!("{stem}.pem"));
        let now = self.clock.now();
        let expires_at = now + target.link_ttl_seconds;
        let readme = readme(job, &endpoints, &p12_file, &pem_file);
        let tar = package::tar(
            &[
                (p12_file.as_str(), &built.p12),
                (pem_file.as_str(), built.pem.as_bytes()),
                ("README.txt", readme.as_bytes()),
            ],
            now,
        );

        let id = crate::store::new_id();
        let token = new_token()?;
        let sealed = self
            .sealer
            .seal(&install_package_purpose(&id), &tar)
            .map_err(|e| e.to_string())?;
        let sealed_password = match target.password_delivery {
            PasswordDelivery::Api => Some(
                self.sealer
                    .seal(&install_password_purpose(&id), password.as_bytes())
                    .map_err(|e| e.to_string())?,
            ),
            PasswordDelivery::Mail => None,
        };
        let new = NewPackage {
            id: id.clone(),
            name_id: job.name_id.clone(),
            destination: job.destination.clone(),
            cert_id: job.cert_id.clone(),
            serial: job.serial.clone(),
            token_sha256: token_sha256(&token),
            one_time: target.one_time_link,
            password_delivery: target.password_delivery.as_str().into(),
            contacts: contacts.clone(),
            package: sealed,
            password: sealed_password,
            created_at: now,
            expires_at,
            remind_at: now + target.remind_after_seconds,
        };
        let superseded = self
            .packages
            .create_package(&new, |superseded| {
                AuditEvent::ok(
                    now,
                    ACTOR,
                    "install.request",
                    job.name_id.clone(),
                    None,
                    Some(AuditDetails::InstallRequested {
                        destination: job.destination.clone(),
                        package: id.clone(),
                        serial: job.serial.clone(),
                        contacts: contacts.clone(),
                        superseded: superseded.to_vec(),
                    }),
                )
            })
            .await
            .map_err(|e| e.to_string())?;

        let link = format!("{base}/install/{token}");
        let mail = request_mail(
            job,
            target,
            &endpoints,
            &link,
            expires_at,
            &p12_file,
            &pem_file,
            !superseded.is_empty(),
        );
        smtp.send(&contacts, &mail)
            .await
            .map_err(|e| format!("mailing the install request: {e}"))?;
        if target.password_delivery == PasswordDelivery::Mail {
            let mail = Message {
                subject: format!("Password for the install package of {}", job.name_id),
                body: format!(
                    "The password of the install package for {} (certificate serial {}) \
                     is:\n\n    {password}\n\nIt opens both {p12_file} and the private key in \
                     {pem_file}. The download link came in a separate message.\n",
                    job.name_id, job.serial
                ),
                kind: "install_password".into(),
                fields: vec![
                    ("name".into(), job.name_id.clone()),
                    ("package".into(), id.clone()),
                ],
            };
            smtp.send(&contacts, &mail)
                .await
                .map_err(|e| format!("mailing the package password: {e}"))?;
        }
        info!(name = %job.name_id, destination = %job.destination, package = %id, serial = %job.serial, "install requested");
        Ok(json!({
            "package": id,
            "contacts": contacts,
            "link_expires_at": expires_at,
            "one_time_link": target.one_time_link,
            "password_delivery": target.password_delivery.as_str(),
            "files": [p12_file, pem_file, "README.txt"],
            "superseded": superseded,
        }))
    }

    /// Mails one reminder for each package whose deployment is still
    /// `requested` after `remind_after_hours`.
    pub(super) async fn remind_pass(&self) -> Result<(), crate::store::StoreError> {
        let Some(smtp) = self.delivery.smtp.as_ref() else {
            return Ok(());
        };
        let due = self
            .packages
            .due_reminders(self.clock.now(), REMINDERS_PER_PASS)
            .await?;
        for r in due {
            let link_state = if r.state == "downloaded" || r.downloads > 0 {
                "The package was downloaded; it only remains to install it.".to_string()
            } else if r.expires_at <= self.clock.now() {
                "The download link has expired: ask the twincert operators for a new install request (they redeploy it)."
                    .to_string()
            } else {
                format!(
                    "The link in that message still works until {}.",
                    crate::clock::rfc3339(r.expires_at)
                )
            };
            let mail = Message {
                subject: format!("Reminder: install the new certificate for {}", r.name_id),
                body: format!(
                    "On {} twincert asked you to install a new certificate for {} (serial {}). \
                     The endpoint checks do not see it served yet.\n\n{link_state}\n\nOnce the \
                     server serves it, twincert confirms the deployment by itself.\n",
                    crate::clock::rfc3339(r.created_at),
                    r.name_id,
                    r.serial
                ),
                kind: "install_reminder".into(),
                fields: vec![
                    ("name".into(), r.name_id.clone()),
                    ("destination".into(), r.destination.clone()),
                    ("package".into(), r.id.clone()),
                ],
            };
            match smtp.send(&r.contacts, &mail).await {
                Ok(()) => {
                    info!(name = %r.name_id, package = %r.id, "install reminder sent");
                    self.packages
                        .record_reminded(&r.id, self.clock.now())
                        .await?;
                }
                // Retried at the next pass.
                Err(e) => {
                    warn!(name = %r.name_id, package = %r.id, error = %e, "install reminder not sent")
                }
            }
        }
        Ok(())
    }
}

/// What to install where: the package's README.txt.
fn readme(job: &DueDeployment, endpoints: &[EndpointView], p12: &str, pem: &str) -> String {
    format!(
        "Certificate for {name} (serial {serial}, from {ca})\n\n\
         Install it on:\n{eps}\n\
         Files (both encrypted with the package password, which is not in this archive):\n\
         \x20 {p12}  PKCS#12: private key + full chain (Windows, Java, appliances)\n\
         \x20 {pem}  encrypted private key (PKCS#8), then the full chain, leaf first\n\
         \x20        (nginx ssl_certificate + ssl_certificate_key with ssl_password_file,\n\
         \x20        Apache SSLCertificateFile + SSLCertificateKeyFile, HAProxy, Postfix)\n\n\
         Check: openssl pkcs12 -info -in {p12} -noout\n\n\
         twincert checks the endpoints above and confirms the deployment once they serve\n\
         this certificate.\n",
        name = job.name_id,
        serial = job.serial,
        ca = job.ca_id,
        eps = endpoint_lines(endpoints),
    )
}

/// The install-request mail: the link, what is in the package, where it
/// goes, and where the password comes from. No secret but the link.
#[allow(clippy::too_many_arguments)]
fn request_mail(
    job: &DueDeployment,
    target: &ManualTarget,
    endpoints: &[EndpointView],
    link: &str,
    expires_at: i64,
    p12: &str,
    pem: &str,
    replaces: bool,
) -> Message {
    let uses = if target.one_time_link {
        "works once"
    } else {
        "works any number of times"
    };
    let password = match target.password_delivery {
        PasswordDelivery::Mail => "The password follows in a separate message.",
        PasswordDelivery::Api => {
            "Ask the twincert operators for the password; they can retrieve it once."
        }
    };
    let replaced = if replaces {
        "This request replaces an earlier one for this name: its link no longer works.\n\n"
    } else {
        ""
    };
    Message {
        subject: format!("Install request: new certificate for {}", job.name_id),
        body: format!(
            "twincert cannot install certificates on the servers below itself and asks you to \
             install a new certificate for {name} (serial {serial}).\n\n{replaced}\
             Download (no account needed; the link {uses} and expires {expires}):\n\n    {link}\n\n\
             The download is a tar archive with:\n\
             \x20 {p12}  PKCS#12: private key + full chain\n\
             \x20 {pem}  encrypted private key (PKCS#8), then the full chain\n\
             \x20 README.txt  these instructions\n\
             Both files are encrypted with a password that is not in this message. {password}\n\n\
             Install it on:\n{eps}\n\
             twincert checks these endpoints and confirms the installation by itself once they \
             serve the new certificate.\n",
            name = job.name_id,
            serial = job.serial,
            expires = crate::clock::rfc3339(expires_at),
            eps = endpoint_lines(endpoints),
        ),
        kind: "install_request".into(),
        fields: vec![
            ("name".into(), job.name_id.clone()),
            ("destination".into(), job.destination.clone()),
            ("serial".into(), job.serial.clone()),
        ],
    }
}
