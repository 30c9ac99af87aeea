//! The `stoker-tui` binary: parse flags, run the dashboard or the demo.

use std::process::ExitCode;

use clap::Parser;
use stoker_tui::client::{Clock, FetchConfig};
use stoker_tui::fake::FakeSource;
use stoker_tui::http::HttpSource;
use stoker_tui::{Cli, Command, TuiError, cli, run};

fn main() -> ExitCode {
    // The demo's child processes are hidden subcommands of this executable.
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = stoker_tui::demo::child::dispatch(&args) {
        return ExitCode::from(code);
    }
    // Usage errors (bad flag values, unknown flags) exit 2 here, with clap's message.
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stoker-tui: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_cli(cli: Cli) -> Result<(), TuiError> {
    if let Some(Command::Demo(opts)) = cli.command {
        init_demo_logs(opts.headless);
        return stoker_tui::demo::run(opts);
    }
    let token = cli.token_file.as_deref().map(cli::read_token).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .map_err(|e| TuiError::Terminal(format!("cannot start the runtime: {e}")))?;
    match cli.fake {
        Some(fleet) => runtime.block_on(async {
            let clock = Clock::system();
            let label = format!("fake {}x{}", fleet.nodes, fleet.gpus);
            run::dashboard(FakeSource::new(fleet, clock), label, clock, FetchConfig::default())
                .await
        }),
        None => runtime.block_on(async {
            let url = cli.collector.as_str();
            let source = HttpSource::new(url, token).map_err(|e| TuiError::Config {
                path: "--collector".to_owned(),
                reason: e.to_string(),
            })?;
            run::dashboard(source, url.to_owned(), Clock::system(), FetchConfig::default()).await
        }),
    }
}

/// Warnings and errors of the in-process agent and collector on stderr; the demo's story goes
/// to stdout. The interactive dashboard owns the terminal, so it logs nothing.
fn init_demo_logs(headless: bool) {
    if !headless {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
