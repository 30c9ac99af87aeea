//! The command line: `stoker-tui [--collector URL] [--token-file FILE]` and the
//! `stoker-tui demo [--headless] [--scenario short|full]` slot.
//!
//! Malformed flags (`--collector not-a-url`, an unknown scenario) are usage errors: clap prints
//! the message and exits 2. A token file that cannot be read or is empty is bad configuration:
//! exit 64, naming the file.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

use crate::TuiError;
use crate::fake::FakeFleet;

/// Terminal dashboard over the Stoker collector, and the one-machine demo.
#[derive(Debug, Parser)]
#[command(name = "stoker-tui", version)]
pub struct Cli {
    /// Collector API base URL (http or https).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7700", value_parser = parse_collector_url)]
    pub collector: Url,

    /// File holding the collector API's read token (bearer).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Show a generated fleet of N nodes with M GPUs each instead of a collector, e.g. `500x8`.
    #[arg(long, value_name = "NxM", value_parser = parse_fake)]
    pub fake: Option<FakeFleet>,

    /// What to run; the dashboard when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the whole stack on this machine (agent, collector, a CNN service, load) and watch it.
    Demo(DemoOpts),
}

/// Options of `stoker-tui demo`, handed to `demo::run`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DemoOpts {
    /// No dashboard: run the scenario and print a JSON summary as the last line.
    #[arg(long)]
    pub headless: bool,
    /// Which scenario to play.
    #[arg(long, value_enum, default_value_t = Scenario::Short)]
    pub scenario: Scenario,
}

/// Demo scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A few minutes: one load spike, one scale-out and scale-in.
    Short,
    /// Everything: spikes, a GPU loss, confidence drift and a retrain.
    Full,
}

/// Parse and check a collector URL: absolute, http or https, with a host.
pub fn parse_collector_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s)
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:7700"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme must be http or https, not {}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host; expected e.g. http://127.0.0.1:7700".to_owned());
    }
    Ok(url)
}

/// Parse `NxM` into a fake fleet size.
pub fn parse_fake(s: &str) -> Result<FakeFleet, String> {
    let (n, m) =
        s.split_once(['x', 'X']).ok_or_else(|| format!("expected NxM such as 500x8, got {s}"))?;
    let nodes: u32 = n.trim().parse().map_err(|e| format!("node count {n}: {e}"))?;
    let gpus: u32 = m.trim().parse().map_err(|e| format!("GPU count {m}: {e}"))?;
    if nodes == 0 || nodes > 100_000 || gpus > 64 {
        return Err(format!("{s}: nodes must be 1..=100000 and GPUs 0..=64"));
    }
    Ok(FakeFleet::new(nodes, gpus))
}

/// Read a bearer token from `path`: trimmed, non-empty, one line.
pub fn read_token(path: &Path) -> Result<String, TuiError> {
    let err = |reason: String| TuiError::Config { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read the token file: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the token file is empty".to_owned()));
    }
    if token.contains(char::is_whitespace) {
        return Err(err("the token file must hold one token on one line".to_owned()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_url_must_be_absolute_http() {
        assert!(parse_collector_url("http://127.0.0.1:7700").is_ok());
        assert!(parse_collector_url("https://collector.example:443/").is_ok());
        let e = parse_collector_url("not-a-url").unwrap_err();
        assert!(e.contains("not a URL"), "{e}");
        let e = parse_collector_url("ftp://host").unwrap_err();
        assert!(e.contains("http or https"), "{e}");
    }

    #[test]
    fn demo_flags_parse_into_opts() {
        let cli = Cli::try_parse_from(["stoker-tui", "demo", "--headless", "--scenario", "full"])
            .unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Demo(DemoOpts { headless: true, scenario: Scenario::Full }))
        );
        let cli = Cli::try_parse_from(["stoker-tui", "demo"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Demo(DemoOpts { headless: false, scenario: Scenario::Short }))
        );
        assert!(Cli::try_parse_from(["stoker-tui", "demo", "--scenario", "long"]).is_err());
    }

    #[test]
    fn fake_size_parses() {
        let f = parse_fake("500x8").unwrap();
        assert_eq!((f.nodes, f.gpus), (500, 8));
        assert!(parse_fake("500").is_err());
        assert!(parse_fake("0x8").is_err());
    }

    #[test]
    fn token_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("stoker-tui-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = read_token(&empty).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("empty") && e.to_string().contains("empty: "), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\n").unwrap();
        assert_eq!(read_token(&good).unwrap(), "s3cret");
        let missing = dir.join("missing");
        assert!(read_token(&missing).unwrap_err().to_string().contains("missing: cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
