//! `cnn-load`: an open-loop load generator. Requests are sent at the scenario's rate whether
//! or not earlier ones have been answered (as real clients do), round-robin over the replica
//! list, with images drawn from the phase's distribution and, optionally, the true label.
//! It prints one line a second to stderr and returns a [`Summary`].

pub mod scenario;
pub mod targets;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::data::{CLASSES, IMAGE_PIXELS, SplitMix64, draw_digit};
use crate::serve::protocol::InferResponse;
use scenario::Phase;
use targets::Targets;

/// Load generator settings.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Scenario name for the summary.
    pub scenario: String,
    /// The phases to play in order.
    pub phases: Vec<Phase>,
    /// Model name in the request path.
    pub model_name: String,
    /// Pass the true label as the `label` request parameter (the server counts `inference.feedback`).
    pub send_labels: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests outstanding at once; more are not sent and counted as `dropped`.
    pub max_in_flight: usize,
    /// Seed of the images.
    pub seed: u64,
    /// Print the per-second line to stderr.
    pub print_progress: bool,
}

/// Figures over some span of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Requests sent.
    pub sent: u64,
    /// Answered 200.
    pub ok: u64,
    /// Answered 503 (queue full / not ready).
    pub rejected: u64,
    /// Any other failure: other status, timeout, connection error.
    pub errors: u64,
    /// Not sent: too many in flight or no target.
    pub dropped: u64,
    /// Latency percentiles of answered requests (200 and 503), milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Mean top-1 confidence of successful answers.
    pub mean_confidence: f64,
    /// Fraction of successful answers whose class was the true label.
    pub accuracy: f64,
}

/// The run's summary, printed as one JSON line at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario played.
    pub scenario: String,
    /// Seconds the run lasted.
    pub duration_s: f64,
    /// Over the whole run.
    pub total: Figures,
    /// Per phase, in order.
    pub phases: Vec<PhaseSummary>,
    /// Model versions seen in answers, ascending.
    pub model_versions_seen: Vec<String>,
    /// Most targets seen at once.
    pub max_targets: usize,
}

/// Figures for one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Phase name.
    pub name: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    rejected: u64,
    errors: u64,
    dropped: u64,
    latencies: Vec<f64>,
    confidence_sum: f64,
    labelled: u64,
    correct: u64,
}

impl Tally {
    fn figures(&mut self) -> Figures {
        self.latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 * q).ceil() as usize)
                .clamp(1, self.latencies.len())
                - 1;
            (self.latencies[i] * 1000.0 * 10.0).round() / 10.0
        };
        Figures {
            sent: self.sent,
            ok: self.ok,
            rejected: self.rejected,
            errors: self.errors,
            dropped: self.dropped,
            p50_ms: pct(0.5),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            mean_confidence: if self.ok > 0 {
                round3(self.confidence_sum / self.ok as f64)
            } else {
                0.0
            },
            accuracy: if self.labelled > 0 {
                round3(self.correct as f64 / self.labelled as f64)
            } else {
                0.0
            },
        }
    }

    fn add(&mut self, outcome: &RequestOutcome) {
        match outcome {
            RequestOutcome::Ok { latency, confidence, correct, .. } => {
                self.ok += 1;
                self.latencies.push(*latency);
                self.confidence_sum += f64::from(*confidence);
                if let Some(c) = correct {
                    self.labelled += 1;
                    self.correct += u64::from(*c);
                }
            }
            RequestOutcome::Rejected { latency } => {
                self.rejected += 1;
                self.latencies.push(*latency);
            }
            RequestOutcome::Error => self.errors += 1,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug)]
enum RequestOutcome {
    Ok { latency: f64, confidence: f32, correct: Option<bool>, version: String },
    Rejected { latency: f64 },
    Error,
}

#[derive(Debug, Default)]
struct Books {
    second: Tally,
    phase: Vec<Tally>,
    total: Tally,
    versions: BTreeSet<String>,
}

fn lock(books: &Mutex<Books>) -> std::sync::MutexGuard<'_, Books> {
    books.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds the JSON body of one infer request for `pixels` (784 values), with the label if given.
pub fn infer_body(pixels: &[f32], label: Option<usize>) -> serde_json::Value {
    // Three decimals are plenty for 8-bit-like images and keep the body small.
    let data: Vec<f64> = pixels.iter().map(|&p| (f64::from(p) * 1000.0).round() / 1000.0).collect();
    let mut body = json!({
        "inputs": [{"name": "input", "shape": [1, IMAGE_PIXELS], "datatype": "FP32", "data": data}],
    });
    if let Some(label) = label {
        body["parameters"] = json!({"label": label});
    }
    body
}

async fn send_one(
    client: reqwest::Client,
    url: String,
    body: serde_json::Value,
    label: usize,
    timeout: Duration,
) -> RequestOutcome {
    let started = Instant::now();
    let response = match client.post(&url).timeout(timeout).json(&body).send().await {
        Ok(r) => r,
        Err(_) => return RequestOutcome::Error,
    };
    let status = response.status();
    let text = response.text().await;
    let latency = started.elapsed().as_secs_f64();
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return RequestOutcome::Rejected { latency };
    }
    if !status.is_success() {
        return RequestOutcome::Error;
    }
    let Ok(parsed) = text
        .map_err(|_| ())
        .and_then(|t| serde_json::from_str::<InferResponse>(&t).map_err(|_| ()))
    else {
        return RequestOutcome::Error;
    };
    let first = |name: &str| {
        parsed.outputs.iter().find(|o| o.name == name).and_then(|o| o.data.first().cloned())
    };
    let confidence = first("confidence").and_then(|v| v.as_f64()).unwrap_or(0.0) as f32;
    let class = first("predicted_class").and_then(|v| v.as_u64());
    let correct = (body.get("parameters").is_some()).then(|| class == Some(label as u64));
    RequestOutcome::Ok { latency, confidence, correct, version: parsed.model_version }
}

/// Plays `config.phases` against `targets` and returns the summary; stops early on `shutdown`.
pub async fn run(
    config: LoadConfig,
    targets: Targets,
    client: reqwest::Client,
    shutdown: CancellationToken,
) -> Summary {
    let books = Arc::new(Mutex::new(Books {
        phase: config.phases.iter().map(|_| Tally::default()).collect(),
        ..Books::default()
    }));
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut rng = SplitMix64::new(config.seed);
    let start = Instant::now();
    let mut max_targets = targets.len();
    let tick = Duration::from_millis(5);
    let mut pixels = vec![0.0f32; IMAGE_PIXELS];
    let mut tasks = tokio::task::JoinSet::new();
    'phases: for (index, phase) in config.phases.iter().enumerate() {
        let phase_start = Instant::now();
        let mut due = 0.0f64;
        let mut sent = 0u64;
        let mut next_report = Instant::now() + Duration::from_secs(1);
        let mut second_start = Instant::now();
        if config.print_progress {
            eprintln!(
                "cnn-load phase={} for={}s rate={}→{}/s brightness={} rotation={} noise={}",
                phase.name,
                phase.duration.as_secs_f64(),
                phase.rate_from,
                phase.rate_to,
                phase.data.brightness,
                phase.data.rotation,
                phase.data.noise
            );
        }
        let mut last = phase_start;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'phases,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(phase_start).min(phase.duration);
            // Integrate the rate over the last step (trapezoid), so ramps send the right count.
            let prev = last.saturating_duration_since(phase_start).min(phase.duration);
            due += (phase.rate_at(prev) + phase.rate_at(elapsed)) / 2.0
                * (elapsed - prev).as_secs_f64();
            last = now;
            while (sent as f64) < due.floor() {
                sent += 1;
                let label = rng.below(CLASSES);
                draw_digit(label, &phase.data, &mut rng, &mut pixels);
                let (Some(url), Ok(permit)) =
                    (targets.next(), in_flight.clone().try_acquire_owned())
                else {
                    let mut b = lock(&books);
                    b.second.dropped += 1;
                    b.phase[index].dropped += 1;
                    b.total.dropped += 1;
                    continue;
                };
                let url = format!("{url}/v2/models/{}/infer", config.model_name);
                let body = infer_body(&pixels, config.send_labels.then_some(label));
                let (client, books, timeout) = (client.clone(), books.clone(), config.timeout);
                {
                    let mut b = lock(&books);
                    b.second.sent += 1;
                    b.phase[index].sent += 1;
                    b.total.sent += 1;
                }
                tasks.spawn(async move {
                    let outcome = send_one(client, url, body, label, timeout).await;
                    drop(permit);
                    let mut b = lock(&books);
                    b.second.add(&outcome);
                    b.phase[index].add(&outcome);
                    b.total.add(&outcome);
                    if let RequestOutcome::Ok { version, .. } = &outcome {
                        if !b.versions.contains(version) {
                            b.versions.insert(version.clone());
                        }
                    }
                });
            }
            while tasks.try_join_next().is_some() {}
            if now >= next_report {
                max_targets = max_targets.max(targets.len());
                let figures = std::mem::take(&mut lock(&books).second).figures();
                if config.print_progress {
                    let secs = now.saturating_duration_since(second_start).as_secs_f64().max(1e-3);
                    eprintln!(
                        "cnn-load t={:.0}s phase={} rate={:.1}/s sent={} ok={} rejected={} errors={} dropped={} p50={}ms p95={}ms conf={:.3} acc={:.3} targets={}",
                        now.saturating_duration_since(start).as_secs_f64(),
                        phase.name,
                        figures.sent as f64 / secs,
                        figures.sent,
                        figures.ok,
                        figures.rejected,
                        figures.errors,
                        figures.dropped,
                        figures.p50_ms,
                        figures.p95_ms,
                        figures.mean_confidence,
                        figures.accuracy,
                        targets.len()
                    );
                }
                second_start = now;
                next_report += Duration::from_secs(1);
            }
            if elapsed >= phase.duration {
                break;
            }
        }
    }
    // Let the last requests finish (bounded by their timeout).
    let drain = tokio::time::timeout(config.timeout + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    });
    let _ = drain.await;
    let mut b = lock(&books);
    let phases = config
        .phases
        .iter()
        .zip(b.phase.iter_mut())
        .map(|(p, t)| PhaseSummary { name: p.name.clone(), figures: t.figures() })
        .collect();
    let mut versions: Vec<String> = b.versions.iter().cloned().collect();
    versions.sort_by_key(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    Summary {
        scenario: config.scenario,
        duration_s: round3(start.elapsed().as_secs_f64()),
        total: b.total.figures(),
        phases,
        model_versions_seen: versions,
        max_targets,
    }
}
