//! Live benchmark: 500 nodes × 8 GPUs (and an inference service on every tenth node)
//! ingested over OTLP gRPC into an in-process collector, then the dashboard's loop against it
//! over HTTP at 4 fps: every frame draws (160×48, ratatui's diffing terminal over a
//! `TestBackend`), every fourth frame also fetches what the screen shows through
//! `HttpSource` and applies it (the dashboard's default one refresh per second).
//!
//! The dashboard side (fetch, decode, convert, apply, draw) runs on this thread on a
//! current-thread runtime; the collector runs on its own runtime threads. Its CPU is read from
//! this thread's schedstat, so the collector's query work is not counted. Prints, per screen:
//! fps achieved, CPU per frame, share of one core (target < 5 %), and requests and bytes per
//! refresh (target: only what the screen shows).
//!
//! `cargo run --release -p stoker-tui --example live-bench [-- SECONDS_PER_SCREEN]`
#![allow(clippy::unwrap_used)]

#[path = "../tests/integration/otlp_fleet.rs"]
mod otlp_fleet;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use stoker_collector::serve::{CollectorSettings, start};
use stoker_tui::app::App;
use stoker_tui::client::{Need, Source, Update};
use stoker_tui::http::HttpSource;
use stoker_tui::model::NANOS_PER_SEC;
use stoker_tui::view;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const NODES: u32 = 500;
const GPUS: u32 = 8;
const FRAME: Duration = Duration::from_millis(250);

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn now_unix() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
    )
    .unwrap()
}

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (api, points) = server_rt.block_on(async {
        let mut settings = CollectorSettings {
            data_dir: dir.path().to_path_buf(),
            ..CollectorSettings::default()
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        settings.config.server.api_listen = any;
        settings.config.server.otlp_grpc_listen = any;
        settings.config.server.otlp_http_listen = any;
        let srv = start(settings, cancel.clone(), TaskTracker::new()).await.unwrap();
        let mut grpc = MetricsServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        // Ten minutes of 10 s agent intervals, ending now, 25 nodes per export.
        let step = 10 * NANOS_PER_SEC;
        let ticks = 60u32;
        let t0 = now_unix() - u64::from(ticks) * step;
        let started = Instant::now();
        let mut points = 0usize;
        for tick in 1..=ticks {
            let ts = t0 + u64::from(tick) * step;
            for chunk in (0..NODES).collect::<Vec<_>>().chunks(25) {
                let mut batch: Vec<_> =
                    chunk.iter().map(|&n| otlp_fleet::node_batch(n, GPUS, ts)).collect();
                for &n in chunk.iter().filter(|n| *n % 10 == 0) {
                    batch.push(otlp_fleet::service_batch(
                        n,
                        if n % 20 == 0 { "v2" } else { "v1" },
                        t0,
                        ts - step,
                        ts,
                        tick,
                    ));
                }
                points += batch
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .map(|m| match &m.data {
                        Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) => {
                            g.data_points.len()
                        }
                        Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(g)) => {
                            g.data_points.len()
                        }
                        Some(_) => 1,
                        None => 0,
                    })
                    .sum::<usize>();
                grpc.export(otlp_fleet::request(batch)).await.unwrap();
            }
        }
        println!(
            "ingested {points} points ({NODES} nodes x {GPUS} GPUs, {ticks} intervals) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        (srv.bound.api, points)
    });
    let _ = points;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = format!("http://{api}");
    println!(
        "dashboard loop: 160x48, draw every {} ms, fetch+apply every 4th frame, {secs} s per screen",
        FRAME.as_millis()
    );
    println!(
        "{:<10} {:>6} {:>8} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "screen", "frames", "fps", "cpu/frame", "% core", "req/ref", "bytes/ref", "fetch ms"
    );
    let screens = [
        ("fleet", Need::Fleet),
        (
            "node",
            Need::Node {
                node: otlp_fleet::node_name(42),
                window: Duration::from_secs(300),
                step: Duration::from_secs(10),
            },
        ),
        (
            "models",
            Need::Models { window: Duration::from_secs(300), step: Duration::from_secs(10) },
        ),
    ];
    let (mut all_cpu, mut all_wall, mut all_frames) = (0u64, 0f64, 0u64);
    for (name, need) in screens {
        let (frames, wall, cpu, reqs, bytes, refreshes, fetch_ms) = rt.block_on(async {
            let mut src = HttpSource::new(&base, None).unwrap();
            let traffic = src.traffic();
            let mut app = App::new(base.clone());
            let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
            // Warm the connection pool before measuring.
            let snapshot = src.fetch(&need).await.unwrap();
            app.apply(Update::Data { at: now_unix(), snapshot });
            let (r0, b0) = traffic.totals();
            let mut tick = tokio::time::interval(FRAME);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (t_start, c_start) = (Instant::now(), cpu_ns());
            let (mut frames, mut refreshes, mut fetch_time) = (0u64, 0u64, Duration::ZERO);
            let end = t_start + Duration::from_secs(secs);
            while Instant::now() < end {
                tick.tick().await;
                if frames % 4 == 0 {
                    let f0 = Instant::now();
                    let snapshot = src.fetch(&need).await.unwrap();
                    fetch_time += f0.elapsed();
                    app.apply(Update::Data { at: now_unix(), snapshot });
                    refreshes += 1;
                }
                terminal.draw(|f| view::render(f, &app, now_unix())).unwrap();
                frames += 1;
            }
            let (r1, b1) = traffic.totals();
            (
                frames,
                t_start.elapsed().as_secs_f64(),
                cpu_ns() - c_start,
                r1 - r0,
                b1 - b0,
                refreshes,
                fetch_time.as_secs_f64() * 1e3 / refreshes as f64,
            )
        });
        all_cpu += cpu;
        all_wall += wall;
        all_frames += frames;
        println!(
            "{:<10} {:>6} {:>8.2} {:>10.2}ms {:>9.2}% {:>10} {:>12} {:>12.1}",
            name,
            frames,
            frames as f64 / wall,
            cpu as f64 / 1e6 / frames as f64,
            cpu as f64 / 1e9 / wall * 100.0,
            reqs / refreshes,
            bytes / refreshes,
            fetch_ms,
        );
    }
    println!(
        "all screens: {:.2} fps, {:.2} ms CPU per frame, {:.2} % of a core (target >= 4 fps, < 5 %)",
        all_frames as f64 / all_wall,
        all_cpu as f64 / 1e6 / all_frames as f64,
        all_cpu as f64 / 1e9 / all_wall * 100.0
    );
    cancel.cancel();
}
