//! The `stoker-collector` binary: parse flags, build the collector or run a policy tool.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stoker_collector::policy::cli as policy_cli;

/// Collector: OTLP ingest, embedded store, policy engine, actuators, HTTP API.
#[derive(Debug, Parser)]
#[command(name = "stoker-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector.
    Serve,
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
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {}
        Command::Policy { command } => {
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let code = match command {
                PolicyCommand::Check { paths } => policy_cli::check(&paths, &mut out, &mut err),
                PolicyCommand::Test { paths, junit } => {
                    policy_cli::test(&paths, junit.as_ref(), &mut out, &mut err)
                }
                PolicyCommand::Replay { policies, data, baseline, json, throughput, service_time, warmup, start_size } => {
                    let args = policy_cli::ReplayArgs { policies, data, baseline, json, throughput, service_time, warmup, start_size };
                    policy_cli::replay(&args, &mut out, &mut err)
                }
            };
            std::process::exit(code);
        }
    }
}
