//! End-to-end: `stoker-tui demo --headless --scenario short`, the whole closed loop on this
//! machine, with its JSON summary checked, the story's order (scale-out under load, the load
//! falls, then scale-in), a clean shutdown (no warning or error logged once it began) and no
//! child process left behind.
//!
//! Runs in debug in about 4 minutes on 2 cores (model v1 trains in ~15 s; the load falls 140 s
//! into the scenario, scale-in follows its 30 s stabilization, and the demo stops as soon as
//! the loop has closed).

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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Log lines with the time they arrived, so those after the shutdown began can be told apart.
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if etx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut stopping: Option<Instant> = None;
    let status = loop {
        while let Ok(l) = rx.try_recv() {
            if l.starts_with("demo: stopping") {
                // The first such line starts the shutdown; later ones (a retrain job) do not move it.
                stopping.get_or_insert_with(Instant::now);
            }
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
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    let logs: Vec<(Instant, String)> = erx.try_iter().collect();
    println!("demo took {:.0} s", took.as_secs_f64());
    let dir = lines
        .iter()
        .find_map(|l| l.strip_prefix("demo: state in "))
        .expect("the demo names its state directory")
        .to_owned();
    let last = lines.last().expect("some output");
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}"));
    let num = |k: &str| summary[k].as_f64().unwrap_or_else(|| panic!("{k} in {summary}"));
    assert!(num("scale_outs") >= 1.0, "{summary}");
    assert!(
        num("breach_to_scale_seconds") <= 2.0,
        "scale-out within 2 evaluation intervals: {summary}"
    );
    // The margin by design: the 1 s policy is evaluated at every 1 s tick of the collector's
    // runtime (a tick that wakes a little early still counts; when it did not, the mean gap
    // was 1.59 s, the max 2.02 s).
    assert!(num("evaluation_gap_mean_seconds") < 1.25, "evaluated every second: {summary}");
    assert_eq!(summary["latency_recovered"], true, "{summary}");
    assert!(num("retrain_jobs") >= 1.0, "{summary}");
    assert!(summary["model_versions_seen"].as_array().unwrap().len() >= 2, "{summary}");
    assert_eq!(summary["confidence_recovered"], true, "{summary}");
    assert!(num("scale_ins") >= 1.0, "{summary}");
    // The order of the story: scale-out under load, the load falls, scale-in after it; no
    // scale-in while the load was high.
    assert_eq!(num("scale_ins_under_load"), 0.0, "no scale-in under load: {summary}");
    let (out, fell, scale_in) = (
        num("first_scale_out_at_seconds"),
        num("load_fell_at_seconds"),
        num("first_scale_in_at_seconds"),
    );
    assert!(
        out < fell && fell < scale_in,
        "scale-out {out} s < load falls {fell} s < scale-in {scale_in} s: {summary}"
    );
    assert_eq!(num("errors"), 0.0, "{summary}");
    assert_eq!(summary["loop_closed"], true, "{summary}");
    assert!(status.success(), "exit {status:?}");
    // Shutdown in reverse start order, each stage bounded: nothing warned or failed.
    assert!(
        lines.iter().any(|l| l.starts_with("demo: stopped in ")),
        "the demo finished its shutdown"
    );
    let stopping = stopping.expect("the demo announces its shutdown");
    let bad: Vec<&String> = logs
        .iter()
        .filter(|(t, l)| {
            *t >= stopping && (l.contains("WARN") || l.to_lowercase().contains("error"))
        })
        .map(|(_, l)| l)
        .collect();
    assert!(bad.is_empty(), "warnings or errors at shutdown: {bad:#?}");
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
