//! The single integration-test binary: end-to-end tests against real local
//! CAs (Pebble), DNS (BIND9) and PostgreSQL, started by [`harness`].

mod api_input;
mod ari_pebble26;
mod backup;
mod deploy;
mod dns01;
mod drills;
mod emergency;
mod harness;
mod harness_check;
mod issuance;
mod layers;
mod manual;
mod readiness;
mod redundancy;
mod revocation;
mod revocation_harness;
mod roles;
mod runbooks;
mod scale;
mod server;
mod store_backends;
mod wire;
