//! cargo-fuzz target: the agent's Prometheus text exposition parser (what it scrapes).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = stoker_agent::inference::prom_text::parse(text);
    }
});
