//! The fuzz targets on their committed inputs: every file under `fuzz/corpus/<target>/` and
//! `fuzz/crashes/<target>/` goes through the same function cargo-fuzz drives, so a known crash
//! input fails the suite; then a short mutation run from the corpus (byte flips, interesting
//! bytes, inserts, deletes, splices), `STOKER_FUZZ_SECS` per target (default 0.5). A panicking
//! input is saved under `fuzz/crashes/<target>/` and fails the test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stoker_collector::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    out.sort();
    out
}

#[test]
fn committed_corpus_and_crash_inputs_replay_cleanly() {
    for (name, target) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "no corpus for {name}");
        let crashes = inputs(&fuzz_dir().join("crashes").join(name));
        for (path, data) in corpus.iter().chain(&crashes) {
            let started = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| target(data)));
            assert!(r.is_ok(), "{name}: {} panics", path.display());
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{name}: {} is slow",
                path.display()
            );
        }
    }
}

const INTERESTING: &[u8] =
    &[0x00, 0x01, 0x7f, 0x80, 0xff, b'{', b'}', b'[', b'"', b'\n', b'-', b'9', b'='];

/// One mutant of `seed` (and sometimes `other`), at most 64 KiB.
pub fn mutate(rng: &mut fastrand::Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let len = d.len();
        match rng.u8(0..8) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                d[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                d[i] = INTERESTING[rng.usize(..INTERESTING.len())];
            }
            2 => {
                let i = rng.usize(..=len);
                let n = rng.usize(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                d.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.usize(..len);
                let n = rng.usize(1..=(len - i).min(64));
                d.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.usize(..len);
                let n = rng.usize(1..=(len - i).min(256));
                let chunk = d[i..i + n].to_vec();
                let at = rng.usize(..=d.len());
                d.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let i = rng.usize(..=len);
                let j = rng.usize(..other.len());
                let n = rng.usize(1..=(other.len() - j).min(512));
                d.splice(i..i, other[j..j + n].iter().copied());
            }
            6 if len > 0 => d.truncate(rng.usize(..len)),
            7 if len > 0 => {
                // A maximal varint: lengths and counts at their extremes.
                let i = rng.usize(..len);
                d.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
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
    let mut failed = Vec::new();
    let only = std::env::var("STOKER_FUZZ_TARGET").ok();
    for (name, target) in TARGETS {
        if only.as_deref().is_some_and(|t| t != *name) {
            continue;
        }
        let corpus: Vec<Vec<u8>> =
            inputs(&fuzz_dir().join("corpus").join(name)).into_iter().map(|(_, b)| b).collect();
        let started = Instant::now();
        let (mut runs, mut crashes, mut slowest) = (0u64, 0u64, Duration::ZERO);
        while started.elapsed().as_secs_f64() < secs {
            let a = &corpus[rng.usize(..corpus.len())];
            let b = &corpus[rng.usize(..corpus.len())];
            let input = mutate(&mut rng, a, b);
            let t = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| target(&input)));
            slowest = slowest.max(t.elapsed());
            runs += 1;
            if r.is_err() {
                crashes += 1;
                let dir = fuzz_dir().join("crashes").join(name);
                let _ = std::fs::create_dir_all(&dir);
                let hash = input.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                });
                let path = dir.join(format!("crash-{hash:016x}"));
                let _ = std::fs::write(&path, &input);
                failed.push(path.display().to_string());
            }
        }
        println!(
            "fuzz {name}: {runs} executions in {:.1} s, {crashes} crashes, slowest {:.1} ms (seed {seed})",
            started.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1e3
        );
        assert!(slowest < Duration::from_secs(2), "{name}: an input took {slowest:?}");
    }
    assert!(failed.is_empty(), "inputs that panic, saved: {failed:?}");
}
