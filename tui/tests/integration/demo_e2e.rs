//! End-to-end: `stoker-tui demo --headless --scenario short`, the whole closed loop on this
//! machine, with its JSON summary checked and no child process left behind.
//!
//! Runs in debug in about 3 minutes on 2 cores (model v1 trains in ~15 s; the loop closes
//! about 105 s into the load, and the demo stops as soon as it has).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The scenario is about 4 minutes; training v1 and the retrain add up to a minute or two.
const LIMIT: Duration = Duration::from_secs(540);

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&c).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

#[test]
fn demo_headless_short_closes_the_loop() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stoker-tui"))
        .args(["demo", "--headless", "--scenario", "short"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("the demo ran past {LIMIT:?}; output:\n{}", lines.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    let dir = lines
        .iter()
        .find_map(|l| l.strip_prefix("demo: state in "))
        .expect("the demo names its state directory")
        .to_owned();
    let last = lines.last().expect("some output");
    let summary: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}"));
    let num = |k: &str| summary[k].as_f64().unwrap_or_else(|| panic!("{k} in {summary}"));
    assert!(num("scale_outs") >= 1.0, "{summary}");
    assert!(num("breach_to_scale_seconds") <= 2.0, "scale-out within 2 evaluation intervals: {summary}");
    assert_eq!(summary["latency_recovered"], true, "{summary}");
    assert!(num("retrain_jobs") >= 1.0, "{summary}");
    assert!(summary["model_versions_seen"].as_array().unwrap().len() >= 2, "{summary}");
    assert_eq!(summary["confidence_recovered"], true, "{summary}");
    assert!(num("scale_ins") >= 1.0, "{summary}");
    assert_eq!(num("errors"), 0.0, "{summary}");
    assert_eq!(summary["loop_closed"], true, "{summary}");
    assert!(status.success(), "exit {status:?}");
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
