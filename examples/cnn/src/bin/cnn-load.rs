//! `cnn-load`: drives one or more `cnn-serve` replicas with a scenario (steady, ramp, spike,
//! drift, ramp-down, or the composed demo story). One line a second on stderr; one JSON
//! summary line on stdout at the end. Exit 0 if any request succeeded, 1 if none did, 64 on
//! bad flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stoker_example_cnn::cli::{EXIT_CONFIG, init_logs, parse_duration, parse_or_exit};
use stoker_example_cnn::data::DataParams;
use stoker_example_cnn::load::scenario::{
    DEMO_FULL_PHASES, DEMO_SHORT_PHASES, ScenarioKind, ScenarioParams, phases,
};
use stoker_example_cnn::load::targets::{TargetSource, spawn_targets};
use stoker_example_cnn::load::{LoadConfig, run};
use tokio_util::sync::CancellationToken;

/// Send KServe v2 inference load to cnn-serve replicas.
#[derive(Debug, Parser)]
#[command(name = "cnn-load", version)]
struct Cli {
    /// Replica base URL (repeatable), e.g. http://127.0.0.1:8081.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// File listing replica URLs, one a line, re-read every second.
    #[arg(long)]
    targets_file: Option<PathBuf>,
    /// URL returning the replica list (JSON array or one a line), re-read every second.
    #[arg(long, conflicts_with = "targets_file")]
    targets_url: Option<String>,
    /// Model name in `/v2/models/{name}/infer`.
    #[arg(long, default_value = "cnn")]
    model_name: String,
    /// Scenario to play.
    #[arg(long, value_enum, default_value = "steady")]
    scenario: ScenarioKind,
    /// Normal rate, requests/s (one replica serves ≤ 25/s at the default 40 ms service time).
    #[arg(long, default_value_t = 15.0)]
    base_rate: f64,
    /// Peak rate, requests/s.
    #[arg(long, default_value_t = 60.0)]
    peak_rate: f64,
    /// Rate after the ramp down, requests/s.
    #[arg(long, default_value_t = 5.0)]
    low_rate: f64,
    /// Length of a single scenario (steady, ramp, spike, drift, ramp-down).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Demo: length of the steady phase (default 20s short, 60s full).
    #[arg(long, value_parser = parse_duration)]
    steady_for: Option<Duration>,
    /// Demo: length of the ramp up (default 20s short, 60s full).
    #[arg(long, value_parser = parse_duration)]
    ramp_for: Option<Duration>,
    /// Demo: length of the peak before drift (default 40s short, 120s full).
    #[arg(long, value_parser = parse_duration)]
    peak_for: Option<Duration>,
    /// Demo: length of the drifted peak (default 60s short, 180s full).
    #[arg(long, value_parser = parse_duration)]
    drift_for: Option<Duration>,
    /// Demo: length of the ramp down (default 20s short, 60s full).
    #[arg(long, value_parser = parse_duration)]
    ramp_down_for: Option<Duration>,
    /// Demo: length of the low tail (default 60s short, 180s full).
    #[arg(long, value_parser = parse_duration)]
    low_for: Option<Duration>,
    /// Brightness offset of drifted images.
    #[arg(long, default_value_t = DataParams::demo_drift().brightness, allow_negative_numbers = true)]
    drift_brightness: f32,
    /// Mean rotation of drifted images, degrees.
    #[arg(long, default_value_t = DataParams::demo_drift().rotation, allow_negative_numbers = true)]
    drift_rotation: f32,
    /// Pixel noise of drifted images.
    #[arg(long, default_value_t = DataParams::demo_drift().noise)]
    drift_noise: f32,
    /// Do not pass the true label (no `inference.feedback` on the server).
    #[arg(long)]
    no_labels: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Most requests outstanding; beyond, requests are not sent and counted as dropped.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Seed of the generated images.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// No per-second lines.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    let cli: Cli = parse_or_exit();
    init_logs();
    if cli.targets.is_empty() && cli.targets_file.is_none() && cli.targets_url.is_none() {
        eprintln!("cnn-load: give at least one --target, --targets-file or --targets-url");
        std::process::exit(EXIT_CONFIG);
    }
    let rates = [cli.base_rate, cli.peak_rate, cli.low_rate];
    if rates.iter().any(|r| !r.is_finite() || *r < 0.0) {
        eprintln!("cnn-load: --base-rate, --peak-rate and --low-rate must be non-negative numbers");
        std::process::exit(EXIT_CONFIG);
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cnn-load: cannot start the runtime: {e}");
                std::process::exit(1);
            }
        };
    let code = runtime.block_on(load(cli));
    std::process::exit(code);
}

async fn load(cli: Cli) -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().pool_max_idle_per_host(64).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cnn-load: cannot build the HTTP client: {e}");
            return 1;
        }
    };
    let defaults =
        if cli.scenario == ScenarioKind::DemoFull { DEMO_FULL_PHASES } else { DEMO_SHORT_PHASES };
    let overrides =
        [cli.steady_for, cli.ramp_for, cli.peak_for, cli.drift_for, cli.ramp_down_for, cli.low_for];
    let mut demo_phases = defaults.map(Duration::from_secs);
    for (phase, o) in demo_phases.iter_mut().zip(overrides) {
        if let Some(d) = o {
            *phase = d;
        }
    }
    let params = ScenarioParams {
        base_rate: cli.base_rate,
        peak_rate: cli.peak_rate,
        low_rate: cli.low_rate,
        duration: cli.duration,
        demo_phases,
        clean: DataParams::default(),
        drifted: DataParams {
            brightness: cli.drift_brightness,
            rotation: cli.drift_rotation,
            noise: cli.drift_noise,
        },
    };
    let scenario_name = serde_json::to_value(cli.scenario)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let shutdown = CancellationToken::new();
    let source =
        cli.targets_file.map(TargetSource::File).or(cli.targets_url.map(TargetSource::Url));
    let targets = spawn_targets(
        cli.targets,
        source,
        client.clone(),
        Duration::from_secs(1),
        shutdown.clone(),
    );
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Stopping early; printing the summary.");
        trigger.cancel();
    });
    let config = LoadConfig {
        scenario: scenario_name,
        phases: phases(cli.scenario, &params),
        model_name: cli.model_name,
        send_labels: !cli.no_labels,
        timeout: cli.timeout,
        max_in_flight: cli.max_in_flight,
        seed: cli.seed,
        print_progress: !cli.quiet,
    };
    let summary = run(config, targets, client, shutdown.clone()).await;
    shutdown.cancel();
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("cnn-load: cannot encode the summary: {e}"),
    }
    if summary.total.sent > 0 && summary.total.ok == 0 { 1 } else { 0 }
}
