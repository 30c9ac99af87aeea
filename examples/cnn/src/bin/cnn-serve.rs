//! `cnn-serve`: one replica of the demo CNN service (KServe v2 over HTTP, OTel metrics over
//! OTLP/gRPC, hot reload of the newest weights version). Ctrl-C or SIGTERM drains and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stoker_example_cnn::cli::{EXIT_CONFIG, init_logs, parse_duration, parse_or_exit};
use stoker_example_cnn::serve::telemetry::{InferenceMetrics, OtlpSettings, otlp_meter_provider};
use stoker_example_cnn::serve::{ServeConfig, run};
use stoker_example_cnn::versions::ModelDir;
use tokio_util::sync::CancellationToken;

/// Serve the demo digit CNN over the Open Inference Protocol.
#[derive(Debug, Parser)]
#[command(name = "cnn-serve", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Versioned weights directory (`<DIR>/v<N>/model.safetensors`); the newest version is
    /// served and newer ones are picked up while running.
    #[arg(long, env = "CNN_MODEL_DIR")]
    model_dir: PathBuf,
    /// The model's name in `/v2/models/{name}` and in the `model.name` attribute.
    #[arg(long, default_value = "cnn")]
    model_name: String,
    /// Minimum time each request occupies this replica (compute, then padding): caps one
    /// replica at 1/service-time requests per second.
    #[arg(long, default_value = "40ms", value_parser = parse_duration)]
    service_time: Duration,
    /// Requests that may wait for the worker; beyond this, 503 (outcome=rejected).
    #[arg(long, default_value_t = 16)]
    queue_capacity: usize,
    /// How often the weights directory is checked for a newer version.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    reload_interval: Duration,
}

fn main() {
    let cli: Cli = parse_or_exit();
    init_logs();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cnn-serve: cannot start the runtime: {e}");
                std::process::exit(1);
            }
        };
    if let Err(e) = runtime.block_on(serve(cli)) {
        tracing::error!(error = format!("{e:#}"), "cnn-serve failed.");
        std::process::exit(1);
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let settings = match OtlpSettings::from_env("cnn-serve", &cli.listen.to_string()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cnn-serve: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    tracing::info!(endpoint = settings.endpoint.as_str(), interval = ?settings.interval, "Exporting metrics over OTLP/gRPC.");
    let provider = otlp_meter_provider(&settings)?;
    let metrics = InferenceMetrics::new(&provider);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listen on {}", cli.listen))?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down.");
        trigger.cancel();
        // A second signal forces the exit.
        wait_for_signal().await;
        std::process::exit(130);
    });
    let config = ServeConfig {
        model_dir: ModelDir::new(cli.model_dir),
        model_name: cli.model_name,
        service_time: cli.service_time,
        queue_capacity: cli.queue_capacity,
        reload_interval: cli.reload_interval,
    };
    let served = run(config, listener, metrics, shutdown).await;
    // Flush telemetry last; shutdown blocks on the export, so off the async threads.
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    served.context("serve")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
