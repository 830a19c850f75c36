//! The single integration-test binary: end-to-end tests against real local
//! CAs (Pebble; Caddy's `acme_server` and acme2certifier for interop), DNS (BIND9) and PostgreSQL, started by [`harness`].

mod a2c_ca;
mod api_input;
mod ari_pebble26;
mod backup;
mod caddy_ca;
mod console_browser;
mod console_http;
mod deploy;
mod dns01;
mod dns_api_providers;
mod dns_persist;
mod dns_providers;
mod drills;
mod emergency;
mod harness;
mod harness_check;
mod interop_a2c;
mod interop_caddy;
mod issuance;
mod layers;
mod manual;
mod preflight;
mod rate_limit;
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
