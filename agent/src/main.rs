//! The `stoker-agent` binary: parse flags, build the configuration, run the daemon until
//! SIGTERM or SIGINT. A second signal forces the exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use stoker_agent::config::{self, AgentConfig, ConfigError};
use stoker_agent::daemon::{self, RunOptions};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Node agent: samples host and GPUs, receives inference telemetry, exports OTLP.
#[derive(Debug, Parser)]
#[command(name = "stoker-agent", version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// OTLP/gRPC endpoint of the collector.
    #[arg(long)]
    collector: Option<String>,
    /// Sampling interval, for example `1s` or `250ms`.
    #[arg(long)]
    interval: Option<String>,
    /// Path of the NVML library.
    #[arg(long)]
    nvml_lib: Option<PathBuf>,
    /// Address for `/metrics` and `/healthz`.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Local OTLP/gRPC receiver address.
    #[arg(long)]
    otlp_grpc_listen: Option<String>,
    /// Local OTLP/HTTP receiver address.
    #[arg(long)]
    otlp_http_listen: Option<String>,
    /// Print the commented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    init_logs();
    let (cfg, opts) = match build_config(&cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stoker-agent: error: bad configuration: {e}");
            return ExitCode::from(ConfigError::EXIT_CODE as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stoker-agent: error: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signals(shutdown.clone()));
        daemon::run(cfg, opts, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "Agent failed.");
            ExitCode::FAILURE
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("STOKER_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only on a terminal, and never with NO_COLOR set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The file (or defaults), then the flags on top, then validation.
fn build_config(cli: &Cli) -> Result<(AgentConfig, RunOptions), ConfigError> {
    let (mut cfg, source) = match &cli.config {
        Some(path) => (AgentConfig::from_file(path)?, path.clone()),
        None => (AgentConfig::default(), PathBuf::from("defaults")),
    };
    if let Some(url) = &cli.collector {
        cfg.collector = url.clone();
    }
    if let Some(text) = &cli.interval {
        cfg.interval = config::parse_duration("--interval", text)?;
    }
    if let Some(path) = &cli.nvml_lib {
        cfg.nvml_lib = path.clone();
    }
    if let Some(text) = &cli.metrics_listen {
        cfg.metrics_listen = Some(parse_addr("--metrics-listen", text)?);
    }
    cfg.validate(Path::new(&source))?;
    let opts = RunOptions {
        otlp_grpc_listen: cli
            .otlp_grpc_listen
            .as_deref()
            .map(|t| parse_addr("--otlp-grpc-listen", t))
            .transpose()?,
        otlp_http_listen: cli
            .otlp_http_listen
            .as_deref()
            .map(|t| parse_addr("--otlp-http-listen", t))
            .transpose()?,
        export_auth: cfg.export_auth(Path::new(&source))?,
    };
    Ok((cfg, opts))
}

fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|e| ConfigError::Invalid {
        source_name: PathBuf::from("command line"),
        problems: vec![format!("{flag}: {text:?} is not an address like 127.0.0.1:9464: {e}")],
    })
}

/// Cancel `shutdown` on the first SIGTERM/SIGINT; exit at once on the second.
async fn wait_for_signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "Cannot listen for SIGTERM.");
            return;
        }
    };
    for n in 0..2 {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "Signal received."),
            r = tokio::signal::ctrl_c() => {
                if r.is_err() { return; }
                info!(signal = "SIGINT", "Signal received.");
            }
        }
        if n == 0 {
            shutdown.cancel();
        } else {
            warn!("Second signal; exiting without flushing.");
            std::process::exit(130);
        }
    }
}
