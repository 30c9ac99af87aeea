//! Collector integration tests: one binary, a module per area.

mod common;
mod ingest_bad_input;
mod ingest_python;
mod ingest_rust_sdk;
mod api_auth;
mod crash_recovery;
