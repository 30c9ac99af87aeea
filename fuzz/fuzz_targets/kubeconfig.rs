//! cargo-fuzz target: kubeconfig files of the Kubernetes actuators.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stoker_collector::fuzz::kubeconfig(data));
