//! The `[inference]` configuration section: local OTLP receivers, scrape targets and probes.
//!
//! Raw serde structs with `deny_unknown_fields`; [`InferenceConfig::validate`] returns every
//! problem at once, each naming its key, so the core can print them and exit 64.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The commented default `[inference]` section, printed by `stoker-agent --print-default-config`.
///
/// A unit test parses it and checks it equals [`InferenceConfig::default`], so the two never drift.
pub const DEFAULT_INFERENCE_CONFIG: &str = r#"# What the agent learns from the inference services on its node.
[inference]

# Local OTLP receiver: services instrumented with any OpenTelemetry SDK only need
# OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP).
[inference.receiver]
# OTLP/gRPC listen address (flag --otlp-grpc-listen overrides it).
grpc_listen = "127.0.0.1:4317"
# OTLP/HTTP listen address, protobuf or JSON on /v1/metrics and /v1/traces
# (flag --otlp-http-listen overrides it).
http_listen = "127.0.0.1:4318"
# Largest request body accepted (bytes, after decompression); larger requests are refused.
max_body_bytes = 4194304
# Decoded requests waiting for the aggregator; past that a request is refused at once with
# RESOURCE_EXHAUSTED / HTTP 429 (retryable) and counted, so a slow agent never blocks a service.
max_in_flight = 64
# Distinct series (resource, metric, attributes) kept per interval; points of further series
# are shed, counted and reported to the sender as OTLP partial success.
max_series = 10000
# Services whose SERVER spans become `inference.request.duration` and `inference.requests`.
# "*" means every service; [] turns span-derived metrics off.
services = ["*"]
# Rename `http.server.request.duration` (and the older `http.server.duration`, in ms) to
# `inference.request.duration`, in seconds.
map_http_server_duration = true
# Bucket boundaries (seconds) of the histograms derived from spans: millisecond CNN latencies.
span_buckets = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0]

# Model servers to scrape (Prometheus text format). None by default. Example:
# [[inference.scrape]]
# name = "triton"                      # becomes the resource's service.name
# url = "http://127.0.0.1:8002/metrics"
# kind = "triton"                      # triton | torchserve | vllm | prometheus
# interval = "10s"                     # default: the agent's interval
# timeout = "5s"
# histograms = ["my_latency_seconds"]  # further histograms passed on as they are
# summaries = ["my_summary_seconds"]   # further summaries passed on as they are

# Active probes: a request sent every interval, its latency and outcome recorded. None by
# default. Example (KServe v2 inference protocol):
# [[inference.probe]]
# name = "resnet-probe"
# url = "http://127.0.0.1:8000/v2/models/resnet/infer"
# method = "POST"
# headers = { "content-type" = "application/json" }
# body_file = "/etc/stoker/probe-resnet.json"
# interval = "10s"
# timeout = "2s"
# model.name = "resnet"
# model.version = "1"
"#;

/// The `[inference]` section of the agent's configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// The local OTLP receivers.
    pub receiver: ReceiverConfig,
    /// Model servers scraped for Prometheus metrics.
    pub scrape: Vec<ScrapeConfig>,
    /// Requests sent actively to measure a service from outside.
    pub probe: Vec<ProbeConfig>,
}

/// `[inference.receiver]`: the local OTLP endpoints.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address.
    pub http_listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Decoded requests waiting for the aggregator before new ones are refused as retryable.
    pub max_in_flight: usize,
    /// Distinct series kept per interval.
    pub max_series: usize,
    /// Services whose server spans become request-duration histograms (`"*"` = all).
    pub services: Vec<String>,
    /// Whether `http.server.request.duration` is renamed to `inference.request.duration`.
    pub map_http_server_duration: bool,
    /// Bucket boundaries, in seconds, of histograms derived from spans.
    pub span_buckets: Vec<f64>,
}

/// Default span-duration buckets (seconds): dense between 1 ms and 100 ms where CNNs live.
pub const DEFAULT_LATENCY_BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0,
];

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_body_bytes: 4 * 1024 * 1024,
            max_in_flight: 64,
            max_series: 10_000,
            services: vec!["*".to_owned()],
            map_http_server_duration: true,
            span_buckets: DEFAULT_LATENCY_BUCKETS.to_vec(),
        }
    }
}

impl ReceiverConfig {
    /// Whether server spans of `service` become request-duration histograms.
    pub fn derives_spans_of(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == "*" || s == service)
    }
}

/// The exposition a scrape target speaks, which decides how its metrics are mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrapeKind {
    /// NVIDIA Triton Inference Server (`nv_inference_*` cumulative counters).
    Triton,
    /// TorchServe (`ts_*_latency_microseconds` cumulative counters).
    Torchserve,
    /// vLLM (`vllm:*` histograms).
    Vllm,
    /// Any exposition: only the histograms and summaries named in the config are taken.
    Prometheus,
}

/// `[[inference.scrape]]`: one model server's Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Name of the target; becomes the resource's `service.name`.
    pub name: String,
    /// URL of the exposition (`http://host:port/metrics`).
    pub url: String,
    /// Which mapping to apply.
    pub kind: ScrapeKind,
    /// Time between scrapes; the agent's interval when absent.
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Time allowed for one scrape.
    #[serde(default = "default_scrape_timeout", with = "duration")]
    pub timeout: Duration,
    /// Further histograms (Prometheus names) passed on as they are.
    #[serde(default)]
    pub histograms: Vec<String>,
    /// Further summaries (Prometheus names) passed on as they are.
    #[serde(default)]
    pub summaries: Vec<String>,
}

fn default_scrape_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[[inference.probe]]`: a request sent every interval.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Name of the probe; becomes the resource's `service.name`.
    pub name: String,
    /// URL requested.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// File whose bytes are the request body (read once at start).
    #[serde(default)]
    pub body_file: Option<PathBuf>,
    /// Time between probes; the agent's interval when absent.
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Time allowed for one request before it counts as a timeout.
    #[serde(default = "default_probe_timeout", with = "duration")]
    pub timeout: Duration,
    /// The model behind the endpoint (`model.name`, `model.version`).
    #[serde(default)]
    pub model: ProbeModel,
}

/// The model a probe measures; becomes `model.name` / `model.version` attributes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeModel {
    /// `model.name`.
    pub name: Option<String>,
    /// `model.version`.
    pub version: Option<String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_probe_timeout() -> Duration {
    Duration::from_secs(2)
}

/// One problem found by [`InferenceConfig::validate`], naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, such as `inference.scrape[1].url`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl InferenceConfig {
    /// Every problem in the section, all at once (empty when valid).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: &str| {
            problems.push(ConfigProblem { key, message: message.to_owned() })
        };
        let r = &self.receiver;
        if r.max_body_bytes == 0 {
            problem("inference.receiver.max_body_bytes".into(), "must be greater than 0");
        }
        if r.max_in_flight == 0 {
            problem("inference.receiver.max_in_flight".into(), "must be greater than 0");
        }
        if r.max_series == 0 {
            problem("inference.receiver.max_series".into(), "must be greater than 0");
        }
        if !r.span_buckets.windows(2).all(|w| w[0] < w[1])
            || r.span_buckets.iter().any(|b| !b.is_finite())
        {
            problem(
                "inference.receiver.span_buckets".into(),
                "must be finite and strictly increasing",
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.scrape.iter().enumerate() {
            let key = |k: &str| format!("inference.scrape[{i}].{k}");
            if s.name.is_empty() {
                problem(key("name"), "must not be empty");
            } else if !names.insert(("scrape", s.name.clone())) {
                problem(key("name"), "is used by another scrape target");
            }
            if reqwest::Url::parse(&s.url).map(|u| !u.scheme().starts_with("http")).unwrap_or(true)
            {
                problem(key("url"), "must be an http:// or https:// URL");
            }
            if s.interval.is_some_and(|d| d.is_zero()) {
                problem(key("interval"), "must be greater than 0");
            }
            if s.timeout.is_zero() {
                problem(key("timeout"), "must be greater than 0");
            }
        }
        for (i, p) in self.probe.iter().enumerate() {
            let key = |k: &str| format!("inference.probe[{i}].{k}");
            if p.name.is_empty() {
                problem(key("name"), "must not be empty");
            } else if !names.insert(("probe", p.name.clone())) {
                problem(key("name"), "is used by another probe");
            }
            if reqwest::Url::parse(&p.url).map(|u| !u.scheme().starts_with("http")).unwrap_or(true)
            {
                problem(key("url"), "must be an http:// or https:// URL");
            }
            if reqwest::Method::from_bytes(p.method.as_bytes()).is_err() {
                problem(key("method"), "is not an HTTP method");
            }
            for (name, value) in &p.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(value).is_err()
                {
                    problem(key(&format!("headers.{name}")), "is not a valid HTTP header");
                }
            }
            if p.interval.is_some_and(|d| d.is_zero()) {
                problem(key("interval"), "must be greater than 0");
            }
            if p.timeout.is_zero() {
                problem(key("timeout"), "must be greater than 0");
            }
        }
        problems
    }
}

/// Durations written as humantime strings (`"10s"`, `"250ms"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional durations written as humantime strings.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Root {
        inference: InferenceConfig,
    }

    fn parse(text: &str) -> Result<InferenceConfig, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize::<_, Root>(de)
            .map(|r| r.inference)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn default_snippet_parses_to_default_config() {
        let parsed = parse(DEFAULT_INFERENCE_CONFIG).expect("default config parses");
        assert_eq!(parsed, InferenceConfig::default());
        assert!(parsed.validate().is_empty());
    }

    #[test]
    fn commented_examples_parse_and_validate() {
        // Uncomment the example lines (`# key = value` and `# [[table]]`), dropping their
        // trailing comments, and the result must be a valid configuration.
        let is_example = |l: &str| {
            l.starts_with("[[")
                || l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                })
        };
        let uncommented = DEFAULT_INFERENCE_CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if is_example(rest) => rest.split("  #").next().unwrap_or(rest),
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = parse(&uncommented).expect("uncommented examples parse");
        assert_eq!(parsed.scrape.len(), 1);
        assert_eq!(parsed.scrape[0].kind, ScrapeKind::Triton);
        assert_eq!(parsed.scrape[0].interval, Some(Duration::from_secs(10)));
        assert_eq!(parsed.probe.len(), 1);
        assert_eq!(parsed.probe[0].model.name.as_deref(), Some("resnet"));
        assert_eq!(parsed.probe[0].method, "POST");
        assert!(parsed.validate().is_empty(), "{:?}", parsed.validate());
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            parse("[inference.receiver]\ngrpc_lissen = \"127.0.0.1:1\"\n").expect_err("must fail");
        assert!(err.starts_with("inference.receiver"), "{err}");
        assert!(err.contains("grpc_lissen"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = r#"
[inference.receiver]
max_series = 0
span_buckets = [0.1, 0.05]
[[inference.scrape]]
name = "t"
url = "ftp://x"
kind = "triton"
[[inference.probe]]
name = "p"
url = "http://127.0.0.1:1/"
method = "GE T"
timeout = "0s"
"#;
        let cfg = parse(text).expect("parses");
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "inference.receiver.max_series",
                "inference.receiver.span_buckets",
                "inference.scrape[0].url",
                "inference.probe[0].method",
                "inference.probe[0].timeout",
            ]
        );
    }
}
