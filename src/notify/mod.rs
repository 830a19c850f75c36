//! Alert delivery: e-mail over SMTP ([`smtp`]), Slack-compatible incoming
//! webhooks and signed generic webhooks ([`webhook`]).
//!
//! Each channel takes a finished [`Message`] and delivers it, or says why
//! not with a [`NotifyError`] whose [`is_retryable`](NotifyError::is_retryable)
//! tells the caller whether to try again later. Nothing here decides *what*
//! to alert about or *when*; it reads neither the store nor the
//! configuration file (its settings, such as `config::SmtpConfig`, are
//! handed in).

pub mod smtp;
pub mod webhook;

/// One alert, independent of the channel that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line: the e-mail subject, the bold first line in chat.
    pub subject: String,
    /// Plain text, complete without `fields`.
    pub body: String,
    /// What happened, machine-readable (e.g. `expiry`, `deploy_failed`), for
    /// receivers that route on it.
    pub kind: String,
    /// Facts to show as a table where the channel can (name, slot, serial…).
    pub fields: Vec<(String, String)>,
}

impl Message {
    /// The body followed by one `name: value` line per field, for channels
    /// that have only text.
    pub fn plain_text(&self) -> String {
        let mut text = self.body.trim_end().to_string();
        if !self.fields.is_empty() {
            text.push_str("\n\n");
            for (name, value) in &self.fields {
                text.push_str(&format!("{name}: {value}\n"));
            }
        }
        text
    }
}

/// Why an alert was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// An e-mail address does not parse; final.
    #[error("invalid e-mail address '{address}': {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A message was to be sent to nobody; final.
    #[error("no recipient given")]
    NoRecipients,
    /// The channel's settings cannot work (an unreadable CA certificate, a
    /// user name without a password, a malformed URL); final until fixed.
    #[error("notification channel misconfigured: {0}")]
    Config(String),
    /// The message could not be put together; final.
    #[error("could not build the message: {0}")]
    Message(String),
    /// The SMTP server refused the message or the conversation failed.
    #[error("SMTP delivery failed: {message}")]
    Smtp {
        /// A 5xx answer: the same message will be refused again.
        permanent: bool,
        /// What the server or the connection said.
        message: String,
    },
    /// The receiver answered with a status that is not success.
    #[error("webhook answered HTTP {status} after {attempts} attempt(s)")]
    Status {
        /// The last status received.
        status: u16,
        /// Attempts made, this one included.
        attempts: u32,
    },
    /// The receiver could not be reached (connection, TLS, timeout).
    #[error("webhook unreachable after {attempts} attempt(s): {message}")]
    Unreachable {
        /// Attempts made, this one included.
        attempts: u32,
        /// The last error, with its causes.
        message: String,
    },
}

impl NotifyError {
    /// Whether the same delivery may succeed later without a change of
    /// configuration: a temporary SMTP failure, a 429 or 5xx answer, an
    /// unreachable receiver.
    pub fn is_retryable(&self) -> bool {
        match self {
            NotifyError::Smtp { permanent, .. } => !permanent,
            NotifyError::Status { status, .. } => retryable_status(*status),
            NotifyError::Unreachable { .. } => true,
            NotifyError::InvalidAddress { .. }
            | NotifyError::NoRecipients
            | NotifyError::Config(_)
            | NotifyError::Message(_) => false,
        }
    }
}

/// 429 (rate limited) and 5xx are worth repeating; any other 4xx will be
/// answered the same way again.
fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

use crate::error_chain as describe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_appends_fields() {
        let mut m = Message {
            subject: "s".into(),
            body: "Certificate expires soon.\n".into(),
            kind: "expiry".into(),
            fields: vec![],
        };
        assert_eq!(m.plain_text(), "Certificate expires soon.");
        m.fields = vec![
            ("name".into(), "example.com".into()),
            ("slot".into(), "primary".into()),
        ];
        assert_eq!(
            m.plain_text(),
            "Certificate expires soon.\n\nname: example.com\nslot: primary\n"
        );
    }

    #[test]
    fn retryable_kinds() {
        let cases = [
            (
                NotifyError::Status {
                    status: 500,
                    attempts: 1,
                },
                true,
            ),
            (
                NotifyError::Status {
                    status: 429,
                    attempts: 1,
                },
                true,
            ),
            (
                NotifyError::Status {
                    status: 400,
                    attempts: 1,
                },
                false,
            ),
            (
                NotifyError::Status {
                    status: 404,
                    attempts: 1,
                },
                false,
            ),
            (
                NotifyError::Smtp {
                    permanent: false,
                    message: String::new(),
                },
                true,
            ),
            (
                NotifyError::Smtp {
                    permanent: true,
                    message: String::new(),
                },
                false,
            ),
            (NotifyError::NoRecipients, false),
            (NotifyError::Config(String::new()), false),
        ];
        for (e, want) in cases {
            assert_eq!(e.is_retryable(), want, "{e}");
        }
    }
}
