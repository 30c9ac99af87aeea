//! The Prometheus text parser (what the agent scrapes) on its fuzz corpus: every file under
//! `fuzz/corpus/prom_text/` and `fuzz/crashes/prom_text/` replays cleanly, then a short
//! mutation run from the corpus, `STOKER_FUZZ_SECS` long (default 0.5). A panicking input is
//! saved under `fuzz/crashes/prom_text/` and fails the test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stoker_agent::inference::prom_text;

fn target(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = prom_text::parse(text);
    }
}

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join("prom_text")
}

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn corpus_and_crash_inputs_replay_cleanly() {
    let corpus = inputs(&dir("corpus"));
    assert!(!corpus.is_empty(), "no prom_text corpus");
    for data in corpus.iter().chain(&inputs(&dir("crashes"))) {
        assert!(catch_unwind(AssertUnwindSafe(|| target(data))).is_ok());
    }
}

/// One mutant of `seed`: line-level edits (the format is lines) and byte-level ones.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    const BYTES: &[u8] = b"{}\",=\\ \n#\t-+eE.9InfNaN\xff\x00";
    let mut d = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let len = d.len();
        match rng.u8(0..6) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                d[i] = BYTES[rng.usize(..BYTES.len())];
            }
            1 => {
                let i = rng.usize(..=len);
                d.insert(i, BYTES[rng.usize(..BYTES.len())]);
            }
            2 if len > 0 => {
                let i = rng.usize(..len);
                let n = rng.usize(1..=(len - i).min(32));
                d.drain(i..i + n);
            }
            3 if !other.is_empty() => {
                let i = rng.usize(..=len);
                let j = rng.usize(..other.len());
                let n = rng.usize(1..=(other.len() - j).min(256));
                d.splice(i..i, other[j..j + n].iter().copied());
            }
            4 if len > 0 => d.truncate(rng.usize(..len)),
            5 if len > 0 => {
                let i = rng.usize(..len);
                d[i] ^= 1 << rng.u8(0..8);
            }
            _ => {}
        }
    }
    d.truncate(64 << 10);
    d
}

#[test]
fn mutated_corpus_inputs_never_panic() {
    let secs: f64 =
        std::env::var("STOKER_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let seed: u64 =
        std::env::var("STOKER_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(18);
    let mut rng = fastrand::Rng::with_seed(seed);
    let corpus = inputs(&dir("corpus"));
    let started = Instant::now();
    let (mut runs, mut saved, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
    while started.elapsed().as_secs_f64() < secs {
        let a = &corpus[rng.usize(..corpus.len())];
        let b = &corpus[rng.usize(..corpus.len())];
        let input = mutate(&mut rng, a, b);
        let t = Instant::now();
        let ok = catch_unwind(AssertUnwindSafe(|| target(&input))).is_ok();
        slowest = slowest.max(t.elapsed());
        runs += 1;
        if !ok {
            let _ = std::fs::create_dir_all(dir("crashes"));
            let path = dir("crashes").join(format!("crash-{runs}-{seed}"));
            let _ = std::fs::write(&path, &input);
            saved.push(path);
        }
    }
    println!(
        "fuzz prom_text: {runs} executions in {:.1} s, {} crashes, slowest {:.1} ms (seed {seed})",
        started.elapsed().as_secs_f64(),
        saved.len(),
        slowest.as_secs_f64() * 1e3
    );
    assert!(saved.is_empty(), "inputs that panic, saved: {saved:?}");
    assert!(slowest < Duration::from_secs(2), "an input took {slowest:?}");
}
