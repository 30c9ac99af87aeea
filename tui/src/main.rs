//! The `stoker-tui` binary: parse flags, run the dashboard or the demo.

use clap::Parser;

/// Terminal dashboard over the collector, and the one-machine demo.
#[derive(Debug, Parser)]
#[command(name = "stoker-tui", version)]
struct Cli {
    /// Collector API base URL.
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    collector: String,
}

fn main() {
    let _cli = Cli::parse();
}
