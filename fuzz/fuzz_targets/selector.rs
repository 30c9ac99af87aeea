//! cargo-fuzz target: the query API's selector parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stoker_collector::fuzz::selector(data));
