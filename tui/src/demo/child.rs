//! The demo's child processes, as hidden subcommands of `stoker-tui` itself, so the demo needs
//! no other binary on a fresh machine: the local actuator starts `stoker-tui __cnn-serve …`
//! (one CNN replica) and the command actuator runs `stoker-tui __cnn-train …` (the
//! model-refresh job). Both call the example crate's library entry points, as its own
//! `cnn-serve` and `cnn-train` binaries do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use stoker_example_cnn::CnnError;
use stoker_example_cnn::data::DataParams;
use stoker_example_cnn::serve::telemetry::{InferenceMetrics, OtlpSettings, otlp_meter_provider};
use stoker_example_cnn::serve::{ServeConfig, run as serve_run};
use stoker_example_cnn::train::{TrainConfig, train};
use stoker_example_cnn::versions::{ModelDir, ModelMeta};
use tokio_util::sync::CancellationToken;

/// The hidden subcommand that serves one replica.
pub const SERVE: &str = "__cnn-serve";
/// The hidden subcommand that trains and publishes a version.
pub const TRAIN: &str = "__cnn-train";

/// `__cnn-serve`: one replica of the demo CNN service.
#[derive(Debug, Parser)]
#[command(name = "stoker-tui __cnn-serve")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Versioned weights directory.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Model name.
    #[arg(long, default_value = "cnn")]
    pub model_name: String,
    /// Minimum time one request occupies the replica, milliseconds (caps it at 1/that req/s).
    #[arg(long, default_value_t = 40)]
    pub service_time_ms: u64,
    /// Requests that may wait for the worker.
    #[arg(long, default_value_t = 16)]
    pub queue_capacity: usize,
}

/// `__cnn-train`: train on generated images and publish the next version.
#[derive(Debug, Clone, Parser)]
#[command(name = "stoker-tui __cnn-train")]
pub struct TrainArgs {
    /// Versioned weights directory.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Brightness offset of the training images.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub brightness: f32,
    /// Mean rotation, degrees.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub rotation: f32,
    /// Pixel noise.
    #[arg(long, default_value_t = 0.1)]
    pub noise: f32,
    /// Training images.
    #[arg(long, default_value_t = 3000)]
    pub train_samples: usize,
    /// Held-out images.
    #[arg(long, default_value_t = 500)]
    pub test_samples: usize,
    /// Passes over the training set.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Refuse to publish below this held-out accuracy.
    #[arg(long, default_value_t = 0.8)]
    pub min_accuracy: f64,
}

/// What a training run published.
#[derive(Debug, Clone)]
pub struct Published {
    /// The version number.
    pub version: u32,
    /// Its metadata.
    pub meta: ModelMeta,
}

/// If `args[1]` names a hidden subcommand, run it and return its exit code.
pub fn dispatch(args: &[String]) -> Option<u8> {
    let name = args.get(1)?.as_str();
    let rest = args[1..].iter().cloned();
    match name {
        SERVE => Some(match ServeArgs::try_parse_from(rest) {
            Ok(a) => serve_main(a),
            Err(e) => {
                eprintln!("{e}");
                64
            }
        }),
        TRAIN => Some(match TrainArgs::try_parse_from(rest) {
            Ok(a) => match train_and_publish(&a) {
                Ok(p) => {
                    match serde_json::to_string(&p.meta) {
                        Ok(line) => println!("{line}"),
                        Err(e) => eprintln!("stoker-tui {TRAIN}: encode the summary: {e}"),
                    }
                    0
                }
                Err(e) => {
                    eprintln!("stoker-tui {TRAIN}: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("{e}");
                64
            }
        }),
        _ => None,
    }
}

/// Trains with `args` and publishes the next version under `args.model_dir`. Blocking (CPU).
pub fn train_and_publish(args: &TrainArgs) -> Result<Published, CnnError> {
    let config = TrainConfig {
        data: DataParams {
            brightness: args.brightness,
            rotation: args.rotation,
            noise: args.noise,
        },
        train_samples: args.train_samples,
        test_samples: args.test_samples,
        epochs: args.epochs,
        ..TrainConfig::default()
    };
    // Wall time of a blocking job, reported to the user only; no logic depends on it.
    let started = SystemTime::now();
    let trained = train(&config)?;
    let seconds = started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let accuracy = trained.evaluation.accuracy;
    if accuracy < args.min_accuracy {
        return Err(CnnError::AccuracyTooLow { accuracy, required: args.min_accuracy });
    }
    let now = SystemTime::now();
    let meta = ModelMeta {
        version: 0,
        accuracy,
        mean_confidence: trained.evaluation.mean_confidence,
        trained_at: humantime::format_rfc3339_seconds(now).to_string(),
        trained_at_unix_nanos: now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        data: config.data,
        train_samples: config.train_samples,
        test_samples: config.test_samples,
        epochs: config.epochs,
        train_seconds: seconds,
        reason: std::env::var("STOKER_REASON").ok(),
    };
    let dir = ModelDir::new(&args.model_dir);
    let (version, meta) = dir.publish(meta, |path| {
        trained.varmap.save(path).map_err(CnnError::tensor("save safetensors"))
    })?;
    Ok(Published { version, meta })
}

fn serve_main(args: ServeArgs) -> u8 {
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("stoker-tui {SERVE}: cannot start the runtime: {e}");
                return 1;
            }
        };
    match runtime.block_on(serve(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stoker-tui {SERVE}: {e}");
            1
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let settings =
        OtlpSettings::from_env("cnn-serve", &args.listen.to_string()).map_err(|e| e.to_string())?;
    let provider = otlp_meter_provider(&settings).map_err(|e| e.to_string())?;
    let metrics = InferenceMetrics::new(&provider);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        trigger.cancel();
        // A second signal forces the exit.
        wait_for_signal().await;
        std::process::exit(130);
    });
    let config = ServeConfig {
        model_dir: ModelDir::new(args.model_dir),
        model_name: args.model_name,
        service_time: Duration::from_millis(args.service_time_ms),
        queue_capacity: args.queue_capacity,
        reload_interval: Duration::from_millis(500),
    };
    let served = serve_run(config, listener, metrics, shutdown).await;
    // Flush telemetry last; shutdown blocks on the export, so off the async threads.
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    served.map_err(|e| e.to_string())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
