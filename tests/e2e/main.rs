//! The single integration-test binary: end-to-end tests against real local
//! CAs (Pebble), DNS (BIND9) and PostgreSQL, started by [`harness`].

mod harness;
mod harness_check;
