//! Render benchmark: a 500-node × 8-GPU fleet from `FakeSource`, every screen, at 80×24 and
//! 200×60, through ratatui's diffing `Terminal` into (a) a `TestBackend` and (b) a crossterm
//! backend writing real escape sequences into a sink. Each frame is one draw at a new `now`;
//! every fourth frame also applies a fresh snapshot (one data refresh per second at 4 fps).
//! Prints wall and CPU time per frame, the frame rate that allows, the share of one core at
//! 4 fps (target: < 5 %), and what each screen asked of the source (target: only what shows).
//!
//! `cargo run --release -p stoker-tui --example render-bench [-- FRAMES]`
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::{Backend, CrosstermBackend, TestBackend};
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use stoker_tui::app::App;
use stoker_tui::client::{Need, Snapshot, Update};
use stoker_tui::fake::FakeFleet;
use stoker_tui::model::NANOS_PER_SEC;
use stoker_tui::view;

const NOW: u64 = 1_700_000_000 * NANOS_PER_SEC;
const FRAME: u64 = 250_000_000;

/// CPU time of this thread in ns (Linux schedstat), the honest measure of "share of a core".
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn press(app: &mut App, c: KeyCode) {
    app.handle_key(KeyEvent::new(c, KeyModifiers::NONE));
}

struct Result {
    wall: Duration,
    cpu: Option<Duration>,
}

fn run<B: Backend>(
    term: &mut Terminal<B>,
    app: &mut App,
    snaps: &[Snapshot],
    frames: u64,
) -> Result {
    let t0 = Instant::now();
    let c0 = cpu_ns();
    for i in 0..frames {
        let now = NOW + i * FRAME;
        if i % 4 == 0 {
            let snapshot = snaps[(i / 4) as usize % snaps.len()].clone();
            app.apply(Update::Data { at: now, snapshot });
        }
        term.draw(|f| view::render(f, app, now)).map_err(|_| ()).unwrap();
    }
    let wall = t0.elapsed() / frames as u32;
    let cpu = c0.zip(cpu_ns()).map(|(a, b)| Duration::from_nanos((b - a) / frames));
    Result { wall, cpu }
}

fn points(s: &Snapshot) -> usize {
    match s {
        Snapshot::Fleet(r) => r.len(),
        Snapshot::Node(d) => {
            d.gpus
                .iter()
                .map(|g| {
                    g.util_history.points.len()
                        + g.mem_history.points.len()
                        + g.power_history.points.len()
                })
                .sum::<usize>()
                + d.cpu_history.points.len()
        }
        Snapshot::Models(m) => m
            .iter()
            .flat_map(|m| &m.versions)
            .map(|v| {
                v.latency_history.p50.points.len() * 3
                    + v.rate_history.points.len()
                    + v.drift.as_ref().map_or(0, |d| d.history.points.len())
            })
            .sum(),
        Snapshot::Policies(p) => p.len(),
        Snapshot::Decisions(d) => d.len(),
    }
}

fn main() {
    let frames: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let fleet = FakeFleet::new(500, 8);
    println!(
        "render-bench: {} nodes x {} GPUs, {frames} frames per case, data refresh every 4th frame",
        fleet.nodes, fleet.gpus
    );
    println!(
        "{:<10} {:>7} {:<9} {:>10} {:>10} {:>9} {:>11}  asked of the source",
        "screen", "size", "backend", "wall/frame", "cpu/frame", "max fps", "core@4fps"
    );
    let mut worst_share = 0.0f64;
    let mut worst_fps = f64::MAX;
    for (w, h) in [(80u16, 24u16), (200, 60)] {
        for (name, keys) in [
            ("fleet", vec![KeyCode::Char('s')]),
            ("node", vec![KeyCode::Enter, KeyCode::Char('-'), KeyCode::Char('-')]),
            ("models", vec![KeyCode::Char('3'), KeyCode::Char('-'), KeyCode::Char('-')]),
            ("policies", vec![KeyCode::Char('4')]),
            ("decisions", vec![KeyCode::Char('5')]),
        ] {
            for backend in ["test", "crossterm"] {
                let mut app = App::new("http://127.0.0.1:7700");
                app.apply(Update::Data {
                    at: NOW,
                    snapshot: fleet.answer(&Need::Fleet, NOW).unwrap(),
                });
                for k in keys.iter() {
                    press(&mut app, *k);
                }
                let need = app.need();
                let snaps: Vec<Snapshot> =
                    (0..4).map(|i| fleet.answer(&need, NOW + i * NANOS_PER_SEC).unwrap()).collect();
                let asked = match &need {
                    Need::Fleet => format!("Fleet: {} summary rows, no series", points(&snaps[0])),
                    Need::Node { node, window, .. } => format!(
                        "Node {node}, {}m: {} points",
                        window.as_secs() / 60,
                        points(&snaps[0])
                    ),
                    Need::Models { window, .. } => {
                        format!("Models, {}m: {} points", window.as_secs() / 60, points(&snaps[0]))
                    }
                    Need::Policies => format!("Policies: {} rules", points(&snaps[0])),
                    Need::Decisions { limit } => format!("Decisions: newest {limit}"),
                };
                let r = if backend == "test" {
                    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
                    run(&mut term, &mut app, &snaps, 20);
                    run(&mut term, &mut app, &snaps, frames)
                } else {
                    let options =
                        TerminalOptions { viewport: Viewport::Fixed(Rect::new(0, 0, w, h)) };
                    let Ok(mut term) =
                        Terminal::with_options(CrosstermBackend::new(std::io::sink()), options)
                    else {
                        continue;
                    };
                    run(&mut term, &mut app, &snaps, 20);
                    run(&mut term, &mut app, &snaps, frames)
                };
                let cpu = r.cpu.unwrap_or(r.wall);
                let fps = 1.0 / r.wall.as_secs_f64();
                let share = cpu.as_secs_f64() * 4.0 * 100.0;
                worst_share = worst_share.max(share);
                worst_fps = worst_fps.min(fps);
                println!(
                    "{name:<10} {:>7} {backend:<9} {:>8.0}µs {:>8.0}µs {:>9.0} {:>10.2}%  {asked}",
                    format!("{w}x{h}"),
                    r.wall.as_secs_f64() * 1e6,
                    cpu.as_secs_f64() * 1e6,
                    fps,
                    share,
                );
            }
        }
    }
    println!(
        "worst case: {worst_fps:.0} fps possible (target >= 4), {worst_share:.2}% of a core at 4 fps (target < 5%)"
    );
}
