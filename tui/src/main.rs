//! The `stoker-tui` binary: parse flags, run the dashboard or the demo.

use std::process::ExitCode;

use clap::Parser;
use stoker_tui::client::{Clock, FetchConfig};
use stoker_tui::fake::FakeSource;
use stoker_tui::http::HttpSource;
use stoker_tui::{Cli, Command, TuiError, cli, run};

fn main() -> ExitCode {
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
    if let Some(Command::Demo(_opts)) = cli.command {
        return Err(TuiError::NotBuilt("demo is not built into this binary yet"));
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
            run::dashboard(
                FakeSource::new(fleet, clock),
                label,
                clock,
                FetchConfig::default(),
            )
            .await
        }),
        None => runtime.block_on(async {
            let url = cli.collector.as_str();
            let source = HttpSource::new(url, token).map_err(|e| TuiError::Config {
                path: "--collector".to_owned(),
                reason: e.to_string(),
            })?;
            run::dashboard(
                source,
                url.to_owned(),
                Clock::system(),
                FetchConfig::default(),
            )
            .await
        }),
    }
}
