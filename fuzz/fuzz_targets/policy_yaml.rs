//! cargo-fuzz target: policy files through `policy check`'s parser and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stoker_collector::fuzz::policy_yaml(data));
