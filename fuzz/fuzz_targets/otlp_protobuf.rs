//! cargo-fuzz target: OTLP protobuf export bodies through the collector's ingest path (budget walk, decode, store write).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stoker_collector::fuzz::otlp_protobuf(data));
