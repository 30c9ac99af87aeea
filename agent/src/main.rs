//! The `stoker-agent` binary: parse flags, build the agent, run until shutdown.

use clap::Parser;

/// Node agent: samples host and GPUs, receives inference telemetry, exports OTLP.
#[derive(Debug, Parser)]
#[command(name = "stoker-agent", version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// OTLP/gRPC endpoint of the collector.
    #[arg(long)]
    collector: Option<String>,
    /// Sampling interval, for example `1s` or `250ms`.
    #[arg(long)]
    interval: Option<String>,
    /// Path of the NVML library.
    #[arg(long)]
    nvml_lib: Option<std::path::PathBuf>,
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

fn main() {
    let _cli = Cli::parse();
}
