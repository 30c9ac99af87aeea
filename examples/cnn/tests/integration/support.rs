//! Shared fixtures: one clean model trained once for the whole test binary, a published
//! weights directory, and a server started in-process on an OS-assigned port.

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use stoker_example_cnn::CnnError;
use stoker_example_cnn::data::DataParams;
use stoker_example_cnn::serve::telemetry::InferenceMetrics;
use stoker_example_cnn::serve::{ServeConfig, run};
use stoker_example_cnn::train::{TrainConfig, Trained, train};
use stoker_example_cnn::versions::{ModelDir, ModelMeta};
use tokio_util::sync::CancellationToken;

/// The bounded training run the tests use (a fraction of the binary's default).
pub fn small_config(data: DataParams) -> TrainConfig {
    TrainConfig {
        data,
        train_samples: 3000,
        test_samples: 600,
        epochs: 3,
        ..TrainConfig::default()
    }
}

/// A model trained on clean data, shared by every test.
pub static CLEAN: LazyLock<Trained> =
    LazyLock::new(|| train(&small_config(DataParams::default())).unwrap());

/// Publishes `trained` as the next version under `dir`; returns the version number.
pub fn publish(dir: &ModelDir, trained: &Trained) -> u32 {
    let meta = ModelMeta {
        version: 0,
        accuracy: trained.evaluation.accuracy,
        mean_confidence: trained.evaluation.mean_confidence,
        trained_at: "2025-01-01T00:00:00Z".into(),
        trained_at_unix_nanos: 1_735_689_600_000_000_000,
        data: DataParams::default(),
        train_samples: 3000,
        test_samples: 600,
        epochs: 3,
        train_seconds: 1.0,
        reason: None,
    };
    dir.publish(meta, |p: &Path| trained.varmap.save(p).map_err(CnnError::tensor("save")))
        .unwrap()
        .0
}

/// A server running in this process.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<stoker_example_cnn::Result<()>>,
}

impl TestServer {
    pub async fn start(
        dir: &ModelDir,
        service_time: Duration,
        queue_capacity: usize,
        metrics: InferenceMetrics,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = ServeConfig {
            model_dir: dir.clone(),
            model_name: "cnn".into(),
            service_time,
            queue_capacity,
            reload_interval: Duration::from_millis(100),
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(config, listener, metrics, shutdown.clone()));
        Self { base, shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.handle).await.unwrap().unwrap().unwrap();
    }
}

/// A metrics handle whose data goes nowhere (for tests that do not look at metrics).
pub fn no_metrics() -> InferenceMetrics {
    InferenceMetrics::new(&opentelemetry::metrics::noop::NoopMeterProvider::new())
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
