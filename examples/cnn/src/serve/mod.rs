//! `cnn-serve`: the model behind the Open Inference Protocol (KServe v2) over HTTP.
//!
//! Routes: `POST /v2/models/{name}/infer`, `GET /v2/health/live`, `GET /v2/health/ready`,
//! `GET /v2/models/{name}`, `GET /v2/models/{name}/ready`, `GET /v2`. Requests go through the
//! bounded queue of [`worker`]; the model is hot-reloaded by [`reload`]; metrics are recorded
//! through [`telemetry`].

pub mod protocol;
pub mod reload;
pub mod telemetry;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{CnnError, Result};
use crate::versions::ModelDir;
use protocol::{ErrorBody, InferRequest, InferResponse};
use reload::{LoadedModel, ModelSlot};
use telemetry::{InferenceMetrics, Outcome, model_attributes};
use worker::{Job, JobQueue};

/// Server settings (the binary's flags).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Versioned weights directory to serve from and watch.
    pub model_dir: ModelDir,
    /// The model's name in URLs and in `model.name`.
    pub model_name: String,
    /// Minimum time each request occupies the replica.
    pub service_time: Duration,
    /// Requests that may wait; more are answered 503.
    pub queue_capacity: usize,
    /// How often the weights directory is polled for a new version.
    pub reload_interval: Duration,
}

#[derive(Debug)]
struct AppState {
    model_name: String,
    model: ModelSlot,
    queue: JobQueue,
    metrics: InferenceMetrics,
}

/// Serves on `listener` until `shutdown` fires, then drains in-flight requests and returns.
/// The first version is loaded before this returns control to the listener if one exists;
/// without one the server runs unready until a version appears.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    metrics: InferenceMetrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let (slot_tx, slot_rx) = watch::channel::<Option<Arc<LoadedModel>>>(None);
    if let Some(n) = config.model_dir.latest()? {
        let dir = config.model_dir.clone();
        match tokio::task::spawn_blocking(move || reload::load_version(&dir, n)).await {
            Ok(Ok(loaded)) => {
                tracing::info!(
                    version = n,
                    accuracy = loaded.meta.accuracy,
                    "Model version loaded."
                );
                slot_tx.send_replace(Some(Arc::new(loaded)));
            }
            Ok(Err(e)) => {
                tracing::warn!(version = n, error = %e, "Could not load the newest version; waiting for another.")
            }
            Err(e) => tracing::warn!(error = %e, "Model loading task failed."),
        }
    } else {
        tracing::warn!(dir = %config.model_dir.root().display(), "No model version yet; not ready until one appears.");
    }
    let watcher = tokio::spawn(reload::watch_versions(
        config.model_dir.clone(),
        slot_tx,
        config.reload_interval,
        shutdown.child_token(),
    ));
    let (queue, worker) = worker::spawn_worker(
        config.queue_capacity,
        config.service_time,
        slot_rx.clone(),
        shutdown.child_token(),
    );
    let state =
        Arc::new(AppState { model_name: config.model_name, model: slot_rx, queue, metrics });
    let addr = listener.local_addr().map_err(CnnError::io("read listen address", "socket"))?;
    tracing::info!(%addr, "Serving.");
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .map_err(CnnError::io("serve HTTP", addr.to_string()));
    shutdown.cancel();
    let _ = watcher.await;
    let _ = worker.await;
    served
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { (StatusCode::OK, axum::Json(json!({"live": true}))) }),
        )
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody { error: message.into() })).into_response()
}

fn unknown_model(name: &str, served: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("unknown model {name:?}; this server serves {served:?}"))
}

async fn server_metadata(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "name": "cnn-serve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
        "models": [state.model_name],
    }))
    .into_response()
}

async fn server_ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.model.borrow().is_some();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({"ready": ready}))).into_response()
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if name != state.model_name {
        return unknown_model(&name, &state.model_name);
    }
    let ready = state.model.borrow().is_some();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({"name": name, "ready": ready}))).into_response()
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if name != state.model_name {
        return unknown_model(&name, &state.model_name);
    }
    let current = state.model.borrow().clone();
    let Some(loaded) = current else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no model version loaded yet");
    };
    let meta = &loaded.meta;
    axum::Json(json!({
        "name": name,
        "versions": [meta.version.to_string()],
        "platform": "candle",
        "inputs": [{"name": protocol::INPUT_NAME, "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "predicted_class", "datatype": "INT64", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        ],
        "parameters": {
            "version": meta.version,
            "accuracy": meta.accuracy,
            "mean_confidence": meta.mean_confidence,
            "trained_at": meta.trained_at,
            "data": meta.data,
        },
    }))
    .into_response()
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let version = state.model.borrow().as_ref().map(|m| m.meta.version);
    let attrs = model_attributes(&state.model_name, version);
    let finish = |outcome: Outcome, response: Response, attrs: &[opentelemetry::KeyValue; 2]| {
        state.metrics.request(attrs, outcome, arrived.elapsed());
        response
    };
    if name != state.model_name {
        return finish(Outcome::Invalid, unknown_model(&name, &state.model_name), &attrs);
    }
    let request: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return finish(
                Outcome::Invalid,
                error(StatusCode::BAD_REQUEST, format!("invalid infer request: {e}")),
                &attrs,
            );
        }
    };
    let input = match protocol::decode(&request) {
        Ok(input) => input,
        Err(message) => {
            return finish(Outcome::Invalid, error(StatusCode::BAD_REQUEST, message), &attrs);
        }
    };
    if version.is_none() {
        return finish(
            Outcome::Unavailable,
            error(StatusCode::SERVICE_UNAVAILABLE, "no model version loaded yet"),
            &attrs,
        );
    }
    let (reply, answer) = oneshot::channel();
    let job = Job { pixels: input.pixels, n: input.n, enqueued: arrived, reply };
    if state.queue.try_enqueue(job).is_err() {
        return finish(
            Outcome::Rejected,
            error(StatusCode::SERVICE_UNAVAILABLE, "queue full, try another replica"),
            &attrs,
        );
    }
    let Ok(result) = answer.await else {
        return finish(
            Outcome::Error,
            error(StatusCode::SERVICE_UNAVAILABLE, "server shutting down"),
            &attrs,
        );
    };
    // Attribute the work to the version that actually computed it (it may have just changed).
    let served_version = result.model.as_ref().map(|m| m.meta.version);
    let attrs = model_attributes(&state.model_name, served_version);
    let probabilities = match result.probabilities {
        Ok(p) => p,
        Err(message) => {
            return finish(
                Outcome::Error,
                error(StatusCode::INTERNAL_SERVER_ERROR, message),
                &attrs,
            );
        }
    };
    state.metrics.served(&attrs, result.queue, result.compute, input.n);
    for (i, row) in probabilities.iter().enumerate() {
        let (class, confidence) = crate::model::top1(row);
        let correct = input.labels.as_ref().and_then(|l| l.get(i)).map(|&l| l as usize == class);
        state.metrics.prediction(&attrs, class, confidence, correct);
    }
    let response = InferResponse {
        model_name: state.model_name.clone(),
        model_version: served_version.map_or_else(String::new, |v| v.to_string()),
        id: request.id,
        outputs: protocol::outputs(&probabilities),
    };
    finish(Outcome::Ok, axum::Json(response).into_response(), &attrs)
}
