//! Integration tests of stoker-collector, one binary with a module per area.

// Test code: a failed unwrap is a failed test, in helpers as in `#[test]` functions.
#![allow(clippy::unwrap_used)]
// Tests drive the real binary against the real clocks; the code under test reads them only
// through `clock`.
#![allow(clippy::disallowed_methods)]

mod actuate;
mod anomaly;
mod api_auth;
mod cli;
mod clock_jump;
mod closed_loop;
mod cluster;
mod common;
mod crash_recovery;
mod durability;
mod fuzz_corpus;
mod ingest_bad_input;
mod ingest_gzip;
mod ingest_hostile;
mod ingest_python;
mod ingest_rust_sdk;
mod policy;
mod remote;
mod secrets;
mod tls;
