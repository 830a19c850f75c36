//! E-mail addresses: the one check applied to the configured alert
//! recipients and to an endpoint's admin contact (API) before anything is
//! sent. The parser is lettre's mailbox parser (RFC 5322 `mailbox`), the
//! one the mail sender uses, so an address that passes here is one the
//! sender can address.

use lettre::message::Mailbox;

/// An address that is not exactly one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid e-mail address '{address}': {reason}")]
pub struct MailAddressError {
    /// The address as given.
    pub address: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Whether `address` is one mailbox (`ops@example.com` or
/// `Ops <ops@example.com>`).
pub fn check_mail_address(address: &str) -> Result<(), MailAddressError> {
    address
        .parse::<Mailbox>()
        .map(|_| ())
        .map_err(|e| MailAddressError {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mailbox_per_address() {
        assert!(check_mail_address("ops@example.com").is_ok());
        assert!(check_mail_address("Ops <ops@example.com>").is_ok());
        for bad in [
            "",
            "ops",
            "ops@",
            "a@b.example, c@d.example",
            "a b@example.com",
        ] {
            assert!(check_mail_address(bad).is_err(), "{bad:?}");
        }
    }
}
