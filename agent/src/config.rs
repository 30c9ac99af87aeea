//! The agent's configuration: the TOML file, its commented default, and the flags that
//! override it.
//!
//! Parsing goes through `serde_path_to_error`, so a bad key is reported as
//! `agent.toml: export.queue_batches: invalid type ...`; validation then collects every problem
//! at once. Both kinds of error make the binary exit with 64.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::inference;

/// The commented default configuration that `--print-default-config` prints.
///
/// A unit test checks that it parses into [`AgentConfig::default`], and an integration test
/// diff-checks the binary's output against `agent/stoker-agent.example.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../stoker-agent.example.toml");

/// Shortest sampling interval the agent accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The whole agent configuration, as read from the file and overridden by flags.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// OTLP/gRPC endpoint of the collector (`http://` or `https://`).
    pub collector: String,
    /// How often the host and the GPUs are sampled.
    #[serde(with = "human_duration")]
    pub interval: Duration,
    /// Path or soname of the NVML library.
    pub nvml_lib: PathBuf,
    /// Address for `/metrics` and `/healthz`; none disables them.
    pub metrics_listen: Option<SocketAddr>,
    /// What identifies this node in every batch.
    pub node: NodeConfig,
    /// The bounded buffer and the connection to the collector.
    pub export: ExportConfig,
    /// Serving processes whose CPU and memory are reported.
    pub processes: Vec<ProcessMatch>,
    /// Local receivers, scraping and probes of inference services.
    #[serde(default)]
    pub inference: inference::InferenceConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            collector: "http://127.0.0.1:4417".into(),
            interval: Duration::from_secs(1),
            nvml_lib: PathBuf::from("libnvidia-ml.so.1"),
            metrics_listen: None,
            node: NodeConfig::default(),
            export: ExportConfig::default(),
            processes: Vec::new(),
            inference: inference::InferenceConfig::default(),
        }
    }
}

/// Node identity: resource attributes attached to everything the agent sends.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Overrides `host.name` (default: the kernel's host name).
    pub host_name: Option<String>,
    /// Overrides `host.id` (default: `/etc/machine-id`).
    pub host_id: Option<String>,
    /// Extra resource attributes, for example `pool = "a100-west"`.
    pub labels: BTreeMap<String, String>,
    /// `cloud.*` resource attributes; only the keys given are sent.
    pub cloud: CloudConfig,
}

/// The OpenTelemetry `cloud.*` resource attributes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// `cloud.provider`, for example `aws`, `gcp`, `azure`.
    pub provider: Option<String>,
    /// `cloud.platform`, for example `aws_ec2`.
    pub platform: Option<String>,
    /// `cloud.region`.
    pub region: Option<String>,
    /// `cloud.availability_zone`.
    pub availability_zone: Option<String>,
    /// `cloud.account.id`.
    pub account_id: Option<String>,
    /// `cloud.resource_id`.
    pub resource_id: Option<String>,
}

/// The outbox and the exporter's connection behaviour.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Batches kept while the collector is unreachable; the oldest are dropped first.
    pub queue_batches: usize,
    /// Batches sent in one export request at most.
    pub max_batches_per_request: usize,
    /// Deadline of one export request.
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    /// First reconnect delay; doubles after each failure.
    #[serde(with = "human_duration")]
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    #[serde(with = "human_duration")]
    pub backoff_max: Duration,
    /// How long shutdown waits to flush what is queued.
    #[serde(with = "human_duration")]
    pub shutdown_grace: Duration,
    /// Environment variable holding the bearer token sent to the collector (its write token).
    pub token_env: String,
    /// File holding that token; wins over the environment variable.
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA (or self-signed certificate) that signed an `https://` collector's
    /// certificate, trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            queue_batches: 900,
            max_batches_per_request: 64,
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            token_env: "STOKER_WRITE_TOKEN".into(),
            token_file: None,
            ca_file: None,
        }
    }
}

/// One serving process (or group of processes) to report, chosen by exactly one matcher.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessMatch {
    /// Name reported in the `stoker.process.group` attribute.
    pub name: String,
    /// Match processes whose executable name equals this.
    #[serde(default)]
    pub process_name: Option<String>,
    /// Read the pid from this file at each sample.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// Match processes whose command line (arguments joined by spaces) contains this.
    #[serde(default)]
    pub cmdline_contains: Option<String>,
}

/// Credentials for the collector, resolved from files and the environment at start.
#[derive(Clone, Default)]
pub struct ExportAuth {
    /// Bearer token sent as `authorization: Bearer <token>` on every export.
    pub token: Option<String>,
    /// Extra trusted CA certificates (PEM) for an `https://` collector.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ExportAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ExportAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{path}: {key}: {message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The dotted path of the offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Values parse but make no sense; every problem is listed.
    #[error("{}", problems.iter().map(|p| format!("{}: {p}", source_name.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file (or `command line`) the values came from.
        source_name: PathBuf,
        /// One line per problem, each starting with the key.
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// The exit code for a bad configuration (EX_USAGE).
    pub const EXIT_CODE: i32 = 64;
}

impl AgentConfig {
    /// Read and parse a configuration file (not yet validated).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parse TOML text; `path` names the source in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            key: "(file)".into(),
            message: e.message().to_owned(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            ConfigError::Parse { path: path.to_owned(), key, message }
        })
    }

    /// Resolve the collector credentials: the token from `export.token_file`, else from the
    /// `export.token_env` variable (unset or empty: no token); the CA file's contents.
    /// Unreadable or empty files, a token that cannot be an HTTP header value, and a CA file
    /// for a plain `http://` collector are refused, each naming the key.
    pub fn export_auth(&self, source_name: &Path) -> Result<ExportAuth, ConfigError> {
        let mut problems = Vec::new();
        let token = match &self.export.token_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() => {
                    problems.push(format!("export.token_file: {} is empty", path.display()));
                    None
                }
                Ok(text) => Some(text.trim().to_owned()),
                Err(e) => {
                    problems
                        .push(format!("export.token_file: cannot read {}: {e}", path.display()));
                    None
                }
            },
            None => std::env::var(&self.export.token_env)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        if let Some(t) = &token {
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push("export.token_file / token_env: the token must be printable ASCII without spaces".into());
            }
        }
        let ca_pem = match &self.export.ca_file {
            Some(path) if !self.collector.starts_with("https://") => {
                problems.push(format!(
                    "export.ca_file: {} is set but the collector {:?} is not an https:// URL",
                    path.display(),
                    self.collector
                ));
                None
            }
            Some(path) => match std::fs::read(path) {
                Ok(pem) if pem.windows(11).any(|w| w == b"-----BEGIN ") => Some(pem),
                Ok(_) => {
                    problems.push(format!(
                        "export.ca_file: {} holds no PEM certificate",
                        path.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("export.ca_file: cannot read {}: {e}", path.display()));
                    None
                }
            },
            None => None,
        };
        if problems.is_empty() {
            Ok(ExportAuth { token, ca_pem })
        } else {
            Err(ConfigError::Invalid { source_name: source_name.to_owned(), problems })
        }
    }

    /// Check the values, reporting every problem at once.
    pub fn validate(&self, source_name: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            problems
                .push(format!("collector: {:?} is not an http:// or https:// URL", self.collector));
        }
        if self.interval < MIN_INTERVAL {
            problems.push(format!(
                "interval: {} is shorter than the minimum of 100ms",
                humantime::format_duration(self.interval)
            ));
        }
        if self.export.queue_batches == 0 {
            problems.push("export.queue_batches: must be at least 1".into());
        }
        if self.export.max_batches_per_request == 0 {
            problems.push("export.max_batches_per_request: must be at least 1".into());
        }
        if self.export.backoff_initial.is_zero() {
            problems.push("export.backoff_initial: must be more than 0".into());
        }
        if self.export.backoff_max < self.export.backoff_initial {
            problems.push("export.backoff_max: must not be shorter than backoff_initial".into());
        }
        if self.export.timeout.is_zero() {
            problems.push("export.timeout: must be more than 0".into());
        }
        for (i, p) in self.processes.iter().enumerate() {
            let matchers =
                [p.process_name.is_some(), p.pid_file.is_some(), p.cmdline_contains.is_some()]
                    .iter()
                    .filter(|m| **m)
                    .count();
            if matchers != 1 {
                problems.push(format!(
                    "processes[{i}]: give exactly one of process_name, pid_file, cmdline_contains (found {matchers})"
                ));
            }
            if p.name.is_empty() {
                problems.push(format!("processes[{i}].name: must not be empty"));
            }
        }
        for key in self.node.labels.keys() {
            if key.is_empty() {
                problems.push("node.labels: a label key is empty".into());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { source_name: source_name.to_owned(), problems })
        }
    }
}

/// Parse a human duration such as `250ms` or `1s`, naming `key` in the error.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
        source_name: PathBuf::from("command line"),
        problems: vec![format!("{key}: {text:?} is not a duration: {e}")],
    })
}

/// Serde adapter for durations written as `"1s"`, `"250ms"`.
mod human_duration {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_text_parses_into_the_default() {
        let parsed = AgentConfig::from_toml(DEFAULT_CONFIG, Path::new("default")).unwrap();
        assert_eq!(parsed, AgentConfig::default());
        parsed.validate(Path::new("default")).unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let err = AgentConfig::from_toml("[export]\nqueue_batchez = 3\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.toml: export"), "{err}");
        assert!(err.contains("queue_batchez"), "{err}");
    }

    #[test]
    fn mistyped_value_names_the_key() {
        let err = AgentConfig::from_toml("interval = \"soon\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.toml: interval:"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = r#"
collector = "127.0.0.1:4417"
interval = "10ms"
[[processes]]
name = "triton"
process_name = "tritonserver"
pid_file = "/run/triton.pid"
"#;
        let cfg = AgentConfig::from_toml(text, Path::new("a.toml")).unwrap();
        let err = cfg.validate(Path::new("a.toml")).unwrap_err().to_string();
        assert!(err.contains("a.toml: collector:"), "{err}");
        assert!(err.contains("a.toml: interval:"), "{err}");
        assert!(err.contains("a.toml: processes[0]:"), "{err}");
    }
}
