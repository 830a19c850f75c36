//! twincert: keeps every managed TLS name covered by two certificates — a
//! primary and a backup — from two different ACME CAs under two different
//! keys, so that a CA incident or a key compromise is a pointer flip instead
//! of a re-issuance under pressure.
//!
//! The crate is split by responsibility, in the spirit of Let's Encrypt's
//! Boulder:
//!
//! * [`api`] — REST front end: parses, authorizes, delegates; the only place
//!   an error becomes `application/problem+json`.
//! * [`policy`] — pure decisions (which CA pair, when to renew, is a pair
//!   diverse enough); no I/O.
//! * [`worker`] — the controllers (issuer, re-provisioner, CA revoker,
//!   status checker, deployer, notifier) started by a supervisor; they meet
//!   only through the store.
//! * [`validation`] — proves control of names (HTTP-01 answers, DNS-01
//!   records).
//! * [`ca`] — the only module that talks ACME (instant-acme).
//! * [`revocation`] — CRL, OCSP and ARI answers, verified before believed.
//! * [`keys`] — key generation, CSRs, fingerprints, encryption at rest.
//! * [`deploy`] — writing certificates where servers read them and
//!   checking what endpoints serve; [`notify`] — mail and webhook alerts.
//! * [`command`] — running an operator's program (post-deploy commands,
//!   `exec` DNS providers); [`webhook_signature`] — the HMAC on every
//!   webhook twincert sends. Both sit below `config`, so `providers` may
//!   use them.
//! * [`store`] — the only module that knows SQL (sea-orm).
//! * [`config`] — what the operator configured, validated into the settings
//!   each role reads; [`providers`] — CA profiles and DNS providers.
//! * [`domain`] — the vocabulary every module shares (slots, names, CA ids,
//!   new names, networks, ACME request statistics); it imports nothing.
//! * [`cli`] — the command-line client of the API.
//!
//! Invariants, as absences: no two of these modules import each other,
//! directly or round about. `config` knows no role (it imports only
//! `domain` and `providers`); `providers` knows no configuration file; `api`
//! does not know the ACME client (`ca`) — what it shows of ACME requests is
//! handed to it in its state. `tests/e2e/layers.rs` checks these rules
//! and `docs/ARCHITECTURE.md` explains them.

pub mod api;
pub mod ca;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod deploy;
pub mod domain;
pub mod keys;
pub mod notify;
pub mod policy;
pub mod providers;
pub mod revocation;
pub mod server;
pub mod store;
pub mod validation;
pub mod webhook_signature;
pub mod worker;

/// `e` with its causes: HTTP, SMTP and ACME libraries put the useful part
/// ("Connection refused") in a source, not in their own message.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
