//! The `stoker-collector` binary: parse flags, build the collector or run a policy tool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stoker_collector::config::CollectorConfig;
use stoker_collector::ingest::Freed;
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
    /// Check policy files; errors as `file:line:col: message`. Exit 0 clean, 1 errors (and
    /// when the paths hold no policy file).
    Check {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `text` (default) or `json` (one document on stdout, for CI annotations).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Run the `*.test.yaml` tests beside policies. Exit 0 all pass, 1 any fail.
    Test {
        /// Test files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also write a JUnit XML report.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// `text` (default) or `json` (one document on stdout, for CI annotations).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
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
        /// Also write every step of every contender (replicas, ready, p95) to this CSV file.
        #[arg(long)]
        timeline: Option<PathBuf>,
    },
}

/// `--format` of `policy check` and `policy test`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

impl From<OutputFormat> for policy_cli::Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Text => policy_cli::Format::Text,
            OutputFormat::Json => policy_cli::Format::Json,
        }
    }
}

/// What SIGHUP means to a running collector (`--reload-signal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReloadSignal {
    /// `hup` when standard input is not a terminal (systemd, Kubernetes, `nohup`), else `none`:
    /// closing the terminal that started a foreground collector stops it, as it stops any
    /// foreground program.
    Auto,
    /// SIGHUP reloads the policy directory (`kill -HUP`).
    Hup,
    /// SIGHUP shuts down gracefully, like SIGTERM.
    None,
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
    /// What SIGHUP does: `hup` reloads policies, `none` shuts down gracefully, `auto` (default)
    /// reloads unless standard input is a terminal.
    #[arg(long, value_enum, default_value_t = ReloadSignal::Auto)]
    reload_signal: ReloadSignal,
}

const EX_CONFIG: u8 = 64;

/// Ingest allocates and frees many small strings per data point; mimalloc handles that with
/// far less CPU than the system allocator (see the workspace Cargo.toml).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `purge_delay` unless `MIMALLOC_PURGE_DELAY` is set: freed pages go back to the OS at once.
/// With mimalloc 3's default (1 s) the buffers of refused requests stayed resident after the
/// traffic ended (README, Reliability).
const PURGE_DELAY_MS: std::ffi::c_long = 0;

/// Index of `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (`mimalloc.h`); the sys crate
/// declares no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's options before anything allocates much, and has ingest give a thread's
/// freed pages back after a large or refused request ([`stoker_collector::ingest::after_request`]).
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores an integer in mimalloc's option table (an atomic
        // store); any value is valid for this option, and it is read on each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    stoker_collector::ingest::after_request(|freed| match freed {
        // Megabytes just freed: give them back now.
        Freed::Large => collect_thread_heap(),
        // A flood of small refused requests must not make the allocator work per request.
        Freed::Refused => collect_at_most_every(REFUSED_COLLECT_EVERY),
    });
}

/// Gives the calling thread's free pages back to the OS.
#[allow(unsafe_code)]
fn collect_thread_heap() {
    // SAFETY: `mi_collect` frees empty pages of the calling thread's heap and purges the
    // arenas; it takes no pointer and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// How often at most a runtime worker collects its heap when it goes idle.
const IDLE_COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often at most a thread collects its heap after refused requests.
const REFUSED_COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Run by each runtime worker as it parks (has nothing to do). Request bodies are read on the
/// workers, and mimalloc keeps a thread's freed pages for that thread until it collects; a
/// worker busy with ingest parks rarely, and collects at most once a second whatever it does.
fn collect_when_idle() {
    collect_at_most_every(IDLE_COLLECT_EVERY);
}

/// Collects the calling thread's heap unless it did less than `every` ago. Allocator
/// housekeeping, not logic, so a stopwatch on the monotonic clock times it.
fn collect_at_most_every(every: std::time::Duration) {
    use std::cell::Cell;
    use stoker_collector::clock::Stopwatch;
    thread_local! {
        static LAST: Cell<Option<Stopwatch>> = const { Cell::new(None) };
    }
    if LAST.get().is_none_or(|t| t.elapsed() >= every) {
        LAST.set(Some(Stopwatch::start()));
        collect_thread_heap();
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();

    init_logs();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Policy { command } => policy(command),
    }
}

/// Logs on stderr: colour only on a terminal and without `NO_COLOR`, JSON lines with
/// `STOKER_LOG_FORMAT=json`, as the agent does.
fn init_logs() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    if std::env::var("STOKER_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Prints `stoker-collector: error: …`, the one error style of both daemons.
fn report(message: impl std::fmt::Display) {
    eprintln!("stoker-collector: error: {message}");
}

fn policy(command: PolicyCommand) -> ExitCode {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let code = match command {
        PolicyCommand::Check { paths, format } => {
            policy_cli::check(&paths, format.into(), &mut out, &mut err)
        }
        PolicyCommand::Test { paths, junit, format } => {
            policy_cli::test(&paths, junit.as_ref(), format.into(), &mut out, &mut err)
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
            timeline,
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
                timeline,
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
                report(e);
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
        report(e);
        return ExitCode::from(EX_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report(format_args!("start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let reload_on_hup = match args.reload_signal {
        ReloadSignal::Hup => true,
        ReloadSignal::None => false,
        ReloadSignal::Auto => {
            use std::io::IsTerminal as _;
            !std::io::stdin().is_terminal()
        }
    };
    let settings = CollectorSettings {
        config,
        data_dir: args.data_dir,
        policies: args.policies,
        reload_on_hup,
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(format_args!("{e:#}"));
            if e.downcast_ref::<serve::ServeError>().is_some_and(serve::ServeError::is_config) {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(settings: CollectorSettings) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hup_stops = !settings.reload_on_hup;
    // Listening before the start: a signal that comes while the store opens is answered, not
    // fatal (the default action of SIGHUP and SIGTERM ends the process at once).
    let mut signals = Signals::listen();
    let running = serve::start(settings, cancel.clone(), tracker.clone())
        .await
        .context("start the collector")?;
    let bound = running.bound;
    // Machine-readable line for scripts and tests that ask for port 0.
    println!(
        "listening api={} otlp_grpc={} otlp_http={}",
        bound.api, bound.otlp_grpc, bound.otlp_http
    );
    signals.shutdown(hup_stops).await;
    tracing::info!("Shutting down: flushing the store.");
    cancel.cancel();
    tracker.close();
    let second = tokio::spawn(async move {
        signals.shutdown(hup_stops).await;
        eprintln!("Second signal: exiting now.");
        std::process::exit(130);
    });
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait()).await;
    second.abort();
    Ok(())
}

/// The shutdown signals, listened to from the start of `run`.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let unix = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => None,
            };
            Self { unix }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// SIGINT or SIGTERM; SIGHUP too when it does not reload policies (`hup_stops`).
    async fn shutdown(&mut self, hup_stops: bool) {
        #[cfg(unix)]
        {
            let Some((term, hup)) = self.unix.as_mut() else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => {
                        if hup_stops {
                            tracing::info!("SIGHUP: the terminal closed or --reload-signal none.");
                            return;
                        }
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = hup_stops;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
