//! Secrets for actuators (API tokens, HMAC keys), named in the collector's configuration:
//!
//! ```toml
//! [secrets.github]
//! env = "GITHUB_TOKEN"
//! [secrets.webhook-hmac]
//! file = "/run/secrets/stoker-hmac"
//! ```
//!
//! Policies only name a secret; its value never lives in a policy file. Values are read when
//! used (so rotated files are picked up), trimmed of surrounding whitespace, and never shown by
//! `Debug` or `Display`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::types::ActuateError;

/// Where one secret comes from: exactly one of `env` and `file`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// The `[secrets]` table of the collector configuration: name → source.
pub type SecretsConfig = BTreeMap<String, SecretSource>;

/// A secret value. Its `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value (tests, tokens fetched from a metadata server).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for putting on the wire. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The configured secrets.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    sources: SecretsConfig,
}

impl Secrets {
    /// Secrets from the `[secrets]` table. Every problem (both or neither of `env`/`file`) is
    /// returned at once, as `secrets.<name>: message`.
    pub fn from_config(config: SecretsConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        for (name, src) in &config {
            match (&src.env, &src.file) {
                (Some(_), Some(_)) => {
                    problems.push(format!("secrets.{name}: give `env` or `file`, not both"))
                }
                (None, None) => problems.push(format!("secrets.{name}: needs `env` or `file`")),
                _ => {}
            }
        }
        if problems.is_empty() { Ok(Self { sources: config }) } else { Err(problems) }
    }

    /// Whether a secret of this name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// Read the secret `name` now.
    pub fn get(&self, name: &str) -> Result<Secret, ActuateError> {
        let err = |reason: String| ActuateError::Secret { name: name.to_owned(), reason };
        let src = self
            .sources
            .get(name)
            .ok_or_else(|| err("not configured in the collector's [secrets]".into()))?;
        let raw = if let Some(var) = &src.env {
            std::env::var(var).map_err(|_| err(format!("environment variable {var} is not set")))?
        } else if let Some(path) = &src.file {
            std::fs::read_to_string(path)
                .map_err(|e| err(format!("read {}: {e}", path.display())))?
        } else {
            return Err(err("needs `env` or `file`".into()));
        };
        let value = raw.trim().to_owned();
        if value.is_empty() {
            return Err(err("is empty".into()));
        }
        Ok(Secret(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_show_in_debug() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn reads_files_and_reports_bad_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tok");
        std::fs::write(&path, "abc\n").expect("write");
        let mut cfg = SecretsConfig::new();
        cfg.insert("t".into(), SecretSource { env: None, file: Some(path) });
        let secrets = Secrets::from_config(cfg).expect("valid");
        assert_eq!(secrets.get("t").expect("read").expose(), "abc");
        assert!(secrets.get("nope").is_err());

        let mut bad = SecretsConfig::new();
        bad.insert("x".into(), SecretSource::default());
        bad.insert("y".into(), SecretSource { env: Some("A".into()), file: Some("/b".into()) });
        assert_eq!(Secrets::from_config(bad).expect_err("bad").len(), 2);
    }
}
