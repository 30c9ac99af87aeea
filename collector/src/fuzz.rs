//! Entry points of the fuzz targets (`fuzz/`, run by cargo-fuzz) and of the corpus replay
//! test: each takes arbitrary bytes and drives one parser that reads outside input, the way
//! the collector reads it. None may panic, hang or allocate without bound, whatever the bytes;
//! errors are the expected answer to most inputs and are discarded here.

use std::path::Path;
use std::sync::Arc;

use crate::clock::ManualClock;
use crate::ingest::{self, Wire};
use crate::store::{Store, StoreConfig};

thread_local! {
    /// One store per thread, kept across inputs as a running collector keeps it: points of
    /// earlier inputs meet later ones (cumulative histograms, kind conflicts, series limits).
    static STORE: Store = Store::in_memory(
        StoreConfig { max_series: 10_000, ..StoreConfig::default() },
        Arc::new(ManualClock::new(1_700_000_000_000_000_000)),
    );
}

/// OTLP/HTTP or gRPC protobuf body: the budget walk, decoding, and the write into a store.
pub fn otlp_protobuf(data: &[u8]) {
    STORE.with(|s| {
        let _ = ingest::ingest_bytes(s, Wire::Protobuf, data);
    });
}

/// OTLP/HTTP JSON body: decoding and the write into a store.
pub fn otlp_json(data: &[u8]) {
    STORE.with(|s| {
        let _ = ingest::ingest_bytes(s, Wire::Json, data);
    });
}

/// The query API's selector (`metric{k="v",k=~"re"}`).
pub fn selector(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::query::Selector::parse(text);
    }
}

/// A policy file, as `policy check` and the policy API read it.
pub fn policy_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::policy::check::check_text(Path::new("fuzz.yaml"), text);
    }
}

/// A replay trace (`policy replay --trace`): JSON when it starts with `{`, else CSV. The
/// reader takes a path, so the bytes go through a file of this process and thread.
pub fn replay_trace(data: &[u8]) {
    let ext = if data.first() == Some(&b'{') { "json" } else { "csv" };
    let path = std::env::temp_dir().join(format!(
        "stoker-fuzz-{}-{:?}.{ext}",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&path, data).is_ok() {
        let _ = crate::policy::replay::load_trace(&path);
        let _ = std::fs::remove_file(&path);
    }
}

/// The actuator environment the kubeconfig target builds clients in: one per process, its
/// journal in memory.
fn actuate_env() -> Option<&'static crate::actuate::ActuateEnv> {
    use crate::actuate::{ActuateEnv, ActuatorsConfig, Journal, Secrets, SecretsConfig};
    static ENV: std::sync::OnceLock<Option<ActuateEnv>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let secrets = Secrets::from_config(SecretsConfig::new()).ok()?;
        ActuateEnv::new(ActuatorsConfig::default(), secrets, Arc::new(Journal::in_memory())).ok()
    })
    .as_ref()
}

/// A kubeconfig (`[actuators.kubernetes.clusters.X] kubeconfig`): parsing, context, cluster
/// and user resolution, base64 CA and client-certificate data, and the client they build.
/// Files it names resolve under a directory that does not exist.
pub fn kubeconfig(data: &[u8]) {
    let (Ok(text), Some(env)) = (std::str::from_utf8(data), actuate_env()) else {
        return;
    };
    let base = Path::new("/nonexistent/stoker-fuzz");
    let _ =
        crate::actuate::kubernetes::KubeClient::from_kubeconfig_text(text, None, Some(base), env);
}

/// A fuzz target: arbitrary bytes in, nothing out (it must not panic).
pub type Target = fn(&[u8]);

/// Every target by name (the name of its corpus directory under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("selector", selector),
    ("policy_yaml", policy_yaml),
    ("replay_trace", replay_trace),
    ("kubeconfig", kubeconfig),
];

#[cfg(test)]
mod tests {
    use crate::actuate::ActuateError;
    use crate::actuate::kubernetes::KubeClient;

    fn corpus(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/kubeconfig")
            .join(name);
        std::fs::read_to_string(path).expect("corpus file")
    }

    /// The kubeconfig target reaches the whole path: its seeds build clients (a token user, a
    /// client certificate with a CA) or are refused for what they are.
    #[test]
    fn kubeconfig_seeds_build_clients_or_are_refused_with_the_reason() {
        let env = super::actuate_env().expect("env");
        let base = std::path::Path::new("/nonexistent/stoker-fuzz");
        for ok in ["token.yaml", "client-cert.yaml"] {
            let r = KubeClient::from_kubeconfig_text(&corpus(ok), None, Some(base), env);
            assert!(r.is_ok(), "{ok}: {r:?}");
        }
        for (bad, why) in [
            ("exec-plugin.yaml", "exec credential plugin"),
            ("no-context.yaml", "no cluster `missing`"),
            ("token-file-relative.yaml", "/nonexistent/stoker-fuzz/ca.crt"),
        ] {
            match KubeClient::from_kubeconfig_text(&corpus(bad), None, Some(base), env) {
                Err(ActuateError::Config(m)) => assert!(m.contains(why), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
