//! The collector's configuration file (TOML). Unknown keys are refused; errors name the file
//! and the key. Sections owned by other parts of the collector (`[policy]`, `[actuators]`,
//! `[secrets]`) are added to [`CollectorConfig`] by those parts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::store::StoreConfig;

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key is malformed or unknown.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file (or `flags`).
        path: String,
        /// The key, dotted (`server.api_listen`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole collector configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Listeners and HTTP limits.
    pub server: ServerConfig,
    /// Bearer tokens.
    pub auth: AuthConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// The policy engine (`[policy]`).
    pub policy: PolicyConfig,
    /// Actuators (`[actuators]`): clusters, retries, timeouts.
    #[serde(skip_serializing_if = "is_default")]
    pub actuators: crate::actuate::ActuatorsConfig,
    /// Several collectors, one leader (`[cluster]`); absent = this collector alone leads.
    #[serde(skip_serializing_if = "is_default")]
    pub cluster: crate::cluster::ClusterConfig,
    /// Named secrets (`[secrets.<name>] env = ".." | file = ".."`) that actuator sections refer
    /// to; values are never written in this file.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: crate::actuate::SecretsConfig,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The policy engine (`[policy]`). The engine runs when a directory is given here or with
/// `serve --policies` (which wins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy directory; absent = ingest, store and API only.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changed files (SIGHUP reloads at once).
    pub reload_poll: HumanDuration,
    /// How often running model-refresh jobs are polled.
    pub job_poll: HumanDuration,
    /// OTLP/gRPC endpoint (`http://host:4317`) that receives every decision as a log record;
    /// absent = decisions are only stored.
    pub otlp_logs_endpoint: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            reload_poll: HumanDuration::from_secs(2),
            job_poll: HumanDuration::from_secs(30),
            otlp_logs_endpoint: None,
        }
    }
}

/// Listeners and HTTP limits (`[server]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP API, `/metrics`, `/healthz`, `/readyz`.
    pub api_listen: SocketAddr,
    /// OTLP gRPC ingest.
    pub otlp_grpc_listen: SocketAddr,
    /// OTLP/HTTP ingest.
    pub otlp_http_listen: SocketAddr,
    /// Largest accepted ingest request body (bytes); larger gets 413 / RESOURCE_EXHAUSTED.
    pub max_body_bytes: usize,
    /// A node whose newest point is older than this is `stale`.
    pub node_stale_after: HumanDuration,
    /// A node whose newest point is older than this is `lost`.
    pub node_lost_after: HumanDuration,
    /// TLS for all listeners (rustls); absent = plain TCP.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            otlp_grpc_listen: SocketAddr::from(([0, 0, 0, 0], 4417)),
            otlp_http_listen: SocketAddr::from(([0, 0, 0, 0], 4418)),
            max_body_bytes: 16 << 20,
            node_stale_after: HumanDuration::from_secs(30),
            node_lost_after: HumanDuration::from_secs(300),
            tls: None,
        }
    }
}

/// PEM certificate chain and key (`[server.tls]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
}

/// Where bearer tokens come from (`[auth]`): a file wins over the environment variable.
/// Tokens are never written in the config file itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Environment variable holding the read (API) token.
    pub read_token_env: String,
    /// File holding the read token.
    pub read_token_file: Option<PathBuf>,
    /// Environment variable holding the write (ingest) token.
    pub write_token_env: String,
    /// File holding the write token.
    pub write_token_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            read_token_env: "STOKER_READ_TOKEN".into(),
            read_token_file: None,
            write_token_env: "STOKER_WRITE_TOKEN".into(),
            write_token_file: None,
        }
    }
}

/// Resolved tokens.
#[derive(Clone, Default, PartialEq)]
pub struct Tokens {
    /// Token for the API (read).
    pub read: Option<String>,
    /// Token for ingest (write).
    pub write: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("read", &self.read.as_ref().map(|_| "<set>"))
            .field("write", &self.write.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AuthConfig {
    /// Reads the tokens from their files or environment variables.
    pub fn tokens(&self) -> Result<Tokens, ConfigError> {
        let one =
            |file: &Option<PathBuf>, env: &str, key: &str| -> Result<Option<String>, ConfigError> {
                if let Some(f) = file {
                    let t = std::fs::read_to_string(f).map_err(|e| ConfigError::Invalid {
                        path: f.display().to_string(),
                        key: format!("auth.{key}"),
                        message: format!("cannot read token file: {e}"),
                    })?;
                    let t = t.trim().to_string();
                    if t.is_empty() {
                        return Err(ConfigError::Invalid {
                            path: f.display().to_string(),
                            key: format!("auth.{key}"),
                            message: "token file is empty".into(),
                        });
                    }
                    return Ok(Some(t));
                }
                Ok(std::env::var(env).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
            };
        Ok(Tokens {
            read: one(&self.read_token_file, &self.read_token_env, "read_token_file")?,
            write: one(&self.write_token_file, &self.write_token_env, "write_token_file")?,
        })
    }
}

impl CollectorConfig {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
            path: origin.into(),
            key: "(syntax)".into(),
            message: e.to_string(),
        })?;
        let cfg: CollectorConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
                path: origin.into(),
                key: e.path().to_string(),
                message: e.inner().message().to_string(),
            })?;
        let problems = cfg.store.validate().into_iter().chain(cfg.cluster.validate());
        if let Some((key, message)) = problems.into_iter().next() {
            return Err(ConfigError::Invalid { path: origin.into(), key, message });
        }
        if let Err(problems) = crate::actuate::Secrets::from_config(cfg.secrets.clone()) {
            // Each problem reads `secrets.<name>: message`.
            let all = problems.join("; ");
            let (key, message) = all
                .split_once(": ")
                .map(|(k, m)| (k.to_string(), m.to_string()))
                .unwrap_or(("secrets".into(), all.clone()));
            return Err(ConfigError::Invalid { path: origin.into(), key, message });
        }
        if cfg.policy.reload_poll.get().is_zero() {
            return Err(ConfigError::Invalid {
                path: origin.into(),
                key: "policy.reload_poll".into(),
                message: "must be positive".into(),
            });
        }
        if cfg.policy.job_poll.get().is_zero() {
            return Err(ConfigError::Invalid {
                path: origin.into(),
                key: "policy.job_poll".into(),
                message: "must be positive".into(),
            });
        }
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let err = CollectorConfig::parse("[server]\napi_listen = \"nonsense\"\n", "c.toml")
            .expect_err("bad addr");
        assert!(err.to_string().starts_with("c.toml: server.api_listen:"), "{err}");
        let err = CollectorConfig::parse("[store]\nmax_seriess = 3\n", "c.toml")
            .expect_err("unknown key");
        assert!(err.to_string().contains("store"), "{err}");
        assert!(err.to_string().contains("max_seriess"), "{err}");
        let err = CollectorConfig::parse("[store]\ncommit_interval = \"5s\"\n", "c.toml")
            .expect_err("too long");
        assert!(err.to_string().contains("store.commit_interval"), "{err}");
        let ok = CollectorConfig::parse(
            "[store]\nmax_series = 10\n[[store.tiers]]\nresolution = \"10s\"\nretention = \"1d\"\n",
            "c.toml",
        )
        .expect("valid");
        assert_eq!(ok.store.max_series, 10);
        assert_eq!(ok.store.tiers.len(), 1);
    }

    #[test]
    fn policy_actuator_and_secret_sections() {
        let ok = CollectorConfig::parse(
            "[policy]\ndir = \"policies\"\nreload_poll = \"5s\"\notlp_logs_endpoint = \"http://127.0.0.1:4317\"\n\
             [actuators.retry]\nmax_attempts = 3\n[secrets.gh]\nenv = \"GH_TOKEN\"\n",
            "c.toml",
        )
        .expect("valid");
        assert_eq!(ok.policy.dir, Some(PathBuf::from("policies")));
        assert_eq!(ok.policy.reload_poll.get(), std::time::Duration::from_secs(5));
        assert_eq!(ok.policy.job_poll.get(), std::time::Duration::from_secs(30));
        assert_eq!(ok.actuators.retry.max_attempts, Some(3));
        assert!(ok.secrets.contains_key("gh"));
        let err = CollectorConfig::parse("[policy]\ndirectory = \"p\"\n", "c.toml")
            .expect_err("unknown key");
        assert!(err.to_string().starts_with("c.toml: policy"), "{err}");
        assert!(err.to_string().contains("directory"), "{err}");
        let err = CollectorConfig::parse("[secrets.gh]\nenv = \"A\"\nfile = \"/x\"\n", "c.toml")
            .expect_err("both");
        assert!(err.to_string().starts_with("c.toml: secrets.gh: "), "{err}");
        let err = CollectorConfig::parse("[actuators.retry]\nmax_attemps = 3\n", "c.toml")
            .expect_err("typo");
        assert!(err.to_string().contains("actuators.retry"), "{err}");
        let err =
            CollectorConfig::parse("[policy]\njob_poll = \"0s\"\n", "c.toml").expect_err("zero");
        assert!(err.to_string().contains("policy.job_poll"), "{err}");
    }
}
