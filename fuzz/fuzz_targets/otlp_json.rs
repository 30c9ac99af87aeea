//! cargo-fuzz target: OTLP JSON export bodies through the collector's ingest path.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stoker_collector::fuzz::otlp_json(data));
