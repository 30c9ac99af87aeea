//! `cnn-train`: the model-refresh job. Trains the digit CNN on generated images, reports
//! held-out accuracy, and publishes the next version under `--model-dir`. Exit 0 on a
//! published version, 1 on failure (including accuracy below `--min-accuracy`), 64 on bad flags.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use stoker_example_cnn::cli::{init_logs, parse_or_exit};
use stoker_example_cnn::data::DataParams;
use stoker_example_cnn::train::{TrainConfig, train};
use stoker_example_cnn::versions::{ModelDir, ModelMeta};
use stoker_example_cnn::{CnnError, train::Evaluation};

/// Train the demo digit CNN and publish the next weights version.
#[derive(Debug, Parser)]
#[command(name = "cnn-train", version)]
struct Cli {
    /// Versioned weights directory; the new version is written to `<DIR>/v<N>/`.
    #[arg(long, env = "CNN_MODEL_DIR")]
    model_dir: PathBuf,
    /// Brightness offset of the training images (drifted inputs: e.g. -0.6).
    #[arg(long, env = "CNN_TRAIN_BRIGHTNESS", default_value_t = DataParams::default().brightness, allow_negative_numbers = true)]
    brightness: f32,
    /// Mean rotation of the training images in degrees (drifted inputs: e.g. 40).
    #[arg(long, env = "CNN_TRAIN_ROTATION", default_value_t = DataParams::default().rotation, allow_negative_numbers = true)]
    rotation: f32,
    /// Standard deviation of the pixel noise (drifted inputs: e.g. 0.2).
    #[arg(long, env = "CNN_TRAIN_NOISE", default_value_t = DataParams::default().noise)]
    noise: f32,
    /// Training images.
    #[arg(long, default_value_t = TrainConfig::default().train_samples)]
    train_samples: usize,
    /// Held-out images.
    #[arg(long, default_value_t = TrainConfig::default().test_samples)]
    test_samples: usize,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    learning_rate: f64,
    /// Seed of the generated images (held-out set: seed + 1).
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Refuse to publish (exit 1) below this held-out accuracy.
    #[arg(long, default_value_t = 0.9)]
    min_accuracy: f64,
}

fn main() {
    let cli: Cli = parse_or_exit();
    init_logs();
    match run(cli) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Training failed.");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The command actuator passes its decision context as STOKER_* variables: log, never require.
    let mut context: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k.starts_with("STOKER_")).collect();
    context.sort();
    for (key, value) in &context {
        tracing::info!(key = key.as_str(), value = value.as_str(), "Decision context.");
    }
    let config = TrainConfig {
        data: DataParams { brightness: cli.brightness, rotation: cli.rotation, noise: cli.noise },
        train_samples: cli.train_samples,
        test_samples: cli.test_samples,
        epochs: cli.epochs,
        batch_size: cli.batch_size,
        learning_rate: cli.learning_rate,
        seed: cli.seed,
    };
    tracing::info!(
        brightness = config.data.brightness,
        rotation = config.data.rotation,
        noise = config.data.noise,
        train_samples = config.train_samples,
        epochs = config.epochs,
        "Training started."
    );
    let started = Instant::now();
    let trained = train(&config).context("train")?;
    let seconds = started.elapsed().as_secs_f64();
    let Evaluation { accuracy, mean_confidence } = trained.evaluation;
    tracing::info!(
        accuracy,
        mean_confidence,
        loss = trained.final_loss,
        seconds,
        "Training finished."
    );
    eprintln!("cnn-train: trained in {seconds:.1} s, held-out accuracy {:.1} %", accuracy * 100.0);
    if accuracy < cli.min_accuracy {
        return Err(CnnError::AccuracyTooLow { accuracy, required: cli.min_accuracy }.into());
    }
    let now = SystemTime::now();
    let nanos = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let meta = ModelMeta {
        version: 0,
        accuracy,
        mean_confidence,
        trained_at: humantime::format_rfc3339_seconds(now).to_string(),
        trained_at_unix_nanos: nanos,
        data: config.data,
        train_samples: config.train_samples,
        test_samples: config.test_samples,
        epochs: config.epochs,
        train_seconds: seconds,
        reason: std::env::var("STOKER_REASON").ok(),
    };
    let dir = ModelDir::new(&cli.model_dir);
    let (version, meta) = dir
        .publish(meta, |path| {
            trained.varmap.save(path).map_err(CnnError::tensor("save safetensors"))
        })
        .context("publish the new version")?;
    tracing::info!(version, path = %dir.version_path(version).display(), "Version published.");
    println!("{}", serde_json::to_string(&meta).context("encode summary")?);
    Ok(())
}
