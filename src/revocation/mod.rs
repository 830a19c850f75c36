//! Revocation and renewal intelligence: is a certificate still
//! good in its CA's eyes? CRLs (RFC 5280, the primary signal since Let's
//! Encrypt ended OCSP in 2025), OCSP (RFC 6960) for CAs that still run it,
//! both verified against the issuing certificate before they are believed;
//! and ARI (RFC 9773) renewal windows. Parsing and verification are pure
//! ([`crl`], [`ocsp`]); fetching and caching are in [`fetch`]; the worker
//! decides what to do with the answers.

pub mod crl;
/// DER reading and signature verification, shared with
/// [`crate::deploy::check`] (chain links).
pub(crate) mod der;
pub mod fetch;
pub mod ocsp;
