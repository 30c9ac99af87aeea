//! cargo-fuzz target: replay traces (CSV and JSON) through `policy replay`'s reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stoker_collector::fuzz::replay_trace(data));
