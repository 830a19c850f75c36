//! twincert: keeps every managed TLS name covered by two certificates — a
//! primary and a backup — from two different ACME CAs under two different
//! keys, so that a CA incident or a key compromise is a pointer flip instead
//! of a re-issuance under pressure.
//!
//! The crate is split by responsibility, in the spirit of Let's Encrypt's
//! Boulder (see `../shared/STYLE.md`):
//!
//! * [`api`] — REST front end: parses, authorizes, delegates; the only place
//!   an error becomes `application/problem+json`.
//! * [`policy`] — pure decisions (which CA pair, when to renew, is a pair
//!   diverse enough); no I/O.
//! * [`worker`] — the planner and the order processor; small idempotent steps
//!   that meet only through the store.
//! * [`validation`] — proves control of names (HTTP-01 responder).
//! * [`ca`] — the only module that talks ACME (instant-acme).
//! * [`revocation`] — CRL, OCSP and ARI answers, verified before believed.
//! * [`keys`] — key generation, CSRs, fingerprints, encryption at rest.
//! * [`store`] — the only module that knows SQL (sea-orm).
//! * [`config`], [`providers`] — what the operator configured and which CA
//!   profiles exist.
//! * [`cli`] — the command-line client of the API.

pub mod api;
pub mod ca;
pub mod certs;
pub mod cli;
pub mod clock;
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
pub mod worker;
