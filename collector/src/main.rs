//! The `stoker-collector` binary: parse flags, build the collector or run a policy tool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use stoker_collector::clock::SystemClock;
use stoker_collector::config::CollectorConfig;
use stoker_collector::server::{self, ServeOptions};
use stoker_collector::store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Collector: OTLP ingest, embedded store, policy engine, actuators, HTTP API.
#[derive(Debug, Parser)]
#[command(name = "stoker-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands. The policy tooling (`policy check|test|replay`) is added as its own variant.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Collector configuration (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store keeps its data.
    #[arg(long, default_value = "stoker-data")]
    data_dir: PathBuf,
    /// Policy directory (read by the policy engine).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// OTLP gRPC ingest address (default 0.0.0.0:4417; localhost only without a write token).
    #[arg(long)]
    otlp_grpc_listen: Option<SocketAddr>,
    /// OTLP/HTTP ingest address (default 0.0.0.0:4418; localhost only without a write token).
    #[arg(long)]
    otlp_http_listen: Option<SocketAddr>,
    /// HTTP API address (default 127.0.0.1:7700).
    #[arg(long)]
    api_listen: Option<SocketAddr>,
}

const EX_CONFIG: u8 = 64;

/// Ingest allocates and frees many small strings per data point; mimalloc handles that with
/// far less CPU than the system allocator (see the workspace Cargo.toml).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(p) => match CollectorConfig::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        None => CollectorConfig::default(),
    };
    if let Some(a) = args.api_listen {
        config.server.api_listen = a;
    }
    if let Some(a) = args.otlp_grpc_listen {
        config.server.otlp_grpc_listen = a;
    }
    if let Some(a) = args.otlp_http_listen {
        config.server.otlp_http_listen = a;
    }
    config.store.data_dir = Some(args.data_dir.clone());
    let tokens = match config.auth.tokens() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(p) = &args.policies {
        tracing::info!(policies = %p.display(), "Policy directory given.");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, tokens)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: CollectorConfig, tokens: stoker_collector::config::Tokens) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let store = Arc::new(tokio::task::block_in_place(|| Store::open(config.store.clone(), Arc::new(SystemClock))).context("open store")?);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let background = tokio::spawn(store.clone().run_background(cancel.clone()));
    let (bound, _handles) = server::start(ServeOptions { server: config.server.clone(), tokens, store: store.clone(), extra_api: Vec::new() }, cancel.clone(), tracker.clone())
        .await
        .context("start listeners")?;
    // Machine-readable line for scripts and tests that ask for port 0.
    println!("listening api={} otlp_grpc={} otlp_http={}", bound.api, bound.otlp_grpc, bound.otlp_http);
    shutdown_signal().await;
    tracing::info!("Shutting down: flushing the store.");
    cancel.cancel();
    tracker.close();
    let second = tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("Second signal: exiting now.");
        std::process::exit(130);
    });
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait()).await;
    let _ = background.await;
    second.abort();
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
