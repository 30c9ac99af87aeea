//! The demo's policy set: templates compiled into the binary (`tui/src/demo/policies/`),
//! rendered into the run's temp dir with this executable's path, the replica port range and the
//! agent's OTLP address substituted. Placeholders are `@NAME@` so they never collide with the
//! local actuator's own `{port}`/`{replica}` or the job templates' `{{ reason }}`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Template files: (file name, text).
pub const TEMPLATES: &[(&str, &str)] = &[("demo-cnn.yaml", include_str!("policies/demo-cnn.yaml"))];

/// The policy's name (decisions and actions carry it).
pub const POLICY: &str = "demo-cnn";
/// The retraining rule's name.
pub const RETRAIN_RULE: &str = "confidence-drift";
/// The latency objective of the demo policy, seconds (its `slo.objective`).
pub const SLO_SECONDS: f64 = 0.150;
/// The window of the policy's latency signal, as the query API writes it.
pub const LATENCY_WINDOW: &str = "10s";
/// The policy's evaluation period, seconds (its `interval`, the collector runtime's tick).
pub const EVAL_INTERVAL_SECONDS: f64 = 1.0;
/// Mean confidence below which the policy's accuracy estimate fires.
pub const CONFIDENCE_FLOOR: f64 = 0.85;
/// Most replicas (the policy's `max`): the size of the local actuator's port range.
pub const MAX_REPLICAS: u16 = 4;

/// What a rendering substitutes.
#[derive(Debug, Clone)]
pub struct RenderParams {
    /// The `stoker-tui` executable (`std::env::current_exe()`).
    pub exe: PathBuf,
    /// The versioned weights directory.
    pub model_dir: PathBuf,
    /// First replica port.
    pub port_from: u16,
    /// Last replica port (inclusive).
    pub port_to: u16,
    /// The agent's local OTLP/gRPC receiver.
    pub agent_otlp_grpc: SocketAddr,
}

/// A YAML double-quoted scalar for `s` (JSON strings are valid YAML flow scalars).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// One template rendered with `p`.
pub fn render(template: &str, p: &RenderParams) -> String {
    template
        .replace("@EXE@", &quoted(&p.exe.to_string_lossy()))
        .replace("@MODEL_DIR@", &quoted(&p.model_dir.to_string_lossy()))
        .replace("@PORT_FROM@", &p.port_from.to_string())
        .replace("@PORT_TO@", &p.port_to.to_string())
        .replace("@AGENT_OTLP@", &quoted(&format!("http://{}", p.agent_otlp_grpc)))
}

/// Writes every rendered template into `dir` (created if needed).
pub fn write_set(dir: &Path, p: &RenderParams) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in TEMPLATES {
        std::fs::write(dir.join(name), render(text, p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoker_collector::policy::check::check_paths;

    fn params(root: &Path) -> RenderParams {
        RenderParams {
            exe: PathBuf::from("/opt/stoker dir/stoker-tui"),
            model_dir: root.join("models"),
            port_from: 41000,
            port_to: 41003,
            agent_otlp_grpc: "127.0.0.1:41999".parse().unwrap(),
        }
    }

    #[test]
    fn rendered_set_is_policy_check_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        write_set(&dir, &params(tmp.path())).unwrap();
        let report = check_paths(std::slice::from_ref(&dir));
        let all: Vec<String> = report.diagnostics.iter().map(ToString::to_string).collect();
        assert!(all.is_empty(), "diagnostics: {all:#?}");
        assert_eq!(report.policies.len(), 1);
        let policy = &report.policies[0];
        assert_eq!(policy.name(), POLICY);
        assert_eq!(policy.doc.spec.retrain[0].name, RETRAIN_RULE);
    }

    #[test]
    fn placeholders_are_all_substituted_and_paths_quoted() {
        let tmp = tempfile::tempdir().unwrap();
        for (_, text) in TEMPLATES {
            let out = render(text, &params(tmp.path()));
            assert!(!out.contains('@'), "unsubstituted placeholder in {out}");
            assert!(out.contains("\"/opt/stoker dir/stoker-tui\""));
            assert!(out.contains("port_from: 41000"));
            assert!(out.contains("\"http://127.0.0.1:41999\""));
            // The actuator's own placeholder survives for it to fill in.
            assert!(out.contains("127.0.0.1:{port}"));
        }
    }
}
