//! The `stoker-collector` binary: parse flags, build the collector or run a policy tool.

use clap::{Parser, Subcommand};

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
}

fn main() {
    let _cli = Cli::parse();
}
