//! Integration tests of stoker-collector, one binary with a module per area.

mod actuate;
mod anomaly;
mod api_auth;
mod closed_loop;
mod common;
mod crash_recovery;
mod durability;
mod ingest_bad_input;
mod ingest_gzip;
mod ingest_python;
mod ingest_rust_sdk;
mod policy;
mod tls;
