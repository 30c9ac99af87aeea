//! Helpers shared by the three binaries: argument parsing with Stoker's exit codes, and logs.

use clap::Parser;

/// Exit code for bad configuration or arguments (sysexits `EX_USAGE`), as everywhere in Stoker.
pub const EXIT_CONFIG: i32 = 64;

/// Parses the command line; help and version exit 0, any other error exits 64 with clap's message.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Parses a duration flag such as `40ms`, `1.5s` or `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (e.g. 40ms, 2s, 1m): {e}"))
}
