//! The `stoker-collector` binary: parse flags, build the collector or run a policy tool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stoker_collector::config::CollectorConfig;
use stoker_collector::policy::cli as policy_cli;
use stoker_collector::serve::{self, CollectorSettings};
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
    /// Check, test and replay policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check policy files; errors as `file:line:col: message`. Exit 0 clean, 1 errors.
    Check {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the `*.test.yaml` tests beside policies. Exit 0 all pass, 1 any fail.
    Test {
        /// Test files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also write a JUnit XML report.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Backtest policies on recorded data against a simulated service.
    Replay {
        /// Directory of the policies to replay.
        #[arg(long)]
        policies: PathBuf,
        /// Trace: CSV or JSON (see policies/README.md).
        #[arg(long)]
        data: PathBuf,
        /// `hpa`, `kpa` or another policy directory to compare with.
        #[arg(long)]
        baseline: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Requests/s per replica, when the policy declares no `target.capacity`.
        #[arg(long)]
        throughput: Option<f64>,
        /// Seconds per request on an idle replica (with --throughput).
        #[arg(long)]
        service_time: Option<f64>,
        /// Seconds before a new replica serves (with --throughput).
        #[arg(long)]
        warmup: Option<f64>,
        /// Starting size; default the target's min.
        #[arg(long)]
        start_size: Option<u32>,
        /// The trace's first part (e.g. `2h`) is history: every contender runs through it, the
        /// forecaster fits on it, only the rest is scored.
        #[arg(long, value_parser = humantime::parse_duration)]
        history: Option<std::time::Duration>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Collector configuration (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store keeps its data.
    #[arg(long, default_value = "stoker-data")]
    data_dir: PathBuf,
    /// Policy directory: runs the policy engine and its actuators (overrides `[policy] dir`).
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
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Policy { command } => policy(command),
    }
}

fn policy(command: PolicyCommand) -> ExitCode {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let code = match command {
        PolicyCommand::Check { paths } => policy_cli::check(&paths, &mut out, &mut err),
        PolicyCommand::Test { paths, junit } => {
            policy_cli::test(&paths, junit.as_ref(), &mut out, &mut err)
        }
        PolicyCommand::Replay {
            policies,
            data,
            baseline,
            json,
            throughput,
            service_time,
            warmup,
            start_size,
            history,
        } => {
            let args = policy_cli::ReplayArgs {
                policies,
                data,
                baseline,
                json,
                throughput,
                service_time,
                warmup,
                start_size,
                history,
            };
            policy_cli::replay(&args, &mut out, &mut err)
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
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
    // Token files are read now so that a bad one exits 64 before anything starts.
    if let Err(e) = config.auth.tokens() {
        eprintln!("error: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, args.data_dir, args.policies)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<serve::ServeError>().is_some_and(serve::ServeError::is_config) {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(
    config: CollectorConfig,
    data_dir: PathBuf,
    policies: Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let running = serve::start(
        CollectorSettings { config, data_dir, policies },
        cancel.clone(),
        tracker.clone(),
    )
    .await
    .context("start the collector")?;
    let bound = running.bound;
    // Machine-readable line for scripts and tests that ask for port 0.
    println!(
        "listening api={} otlp_grpc={} otlp_http={}",
        bound.api, bound.otlp_grpc, bound.otlp_http
    );
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
    second.abort();
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
