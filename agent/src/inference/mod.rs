//! Inference signals: what the agent learns from the services on its node (local OTLP
//! receiver, model-server scraping, active probes), normalised into the `inference.*`
//! vocabulary and pushed to the [`Outbox`](crate::export::Outbox).

use serde::{Deserialize, Serialize};

/// The `[inference]` section of the agent's configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {}

/// What the inference room needs from the daemon.
#[derive(Debug)]
pub struct InferenceContext {
    /// Where finished batches go.
    pub outbox: crate::export::Outbox,
    /// The node's resource attributes (host.name, host.id, labels, cloud.*), for enrichment.
    pub node_resource: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    /// The agent's sampling interval.
    pub interval: std::time::Duration,
    /// Fires when the agent shuts down.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Spawn long-lived tasks on this so the daemon waits for them at shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// Override of the local OTLP gRPC / HTTP receiver addresses from the CLI.
    pub otlp_grpc_listen: Option<std::net::SocketAddr>,
    /// Override of the local OTLP/HTTP receiver address from the CLI.
    pub otlp_http_listen: Option<std::net::SocketAddr>,
}

/// Why the inference room could not start.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// A receiver could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Start the inference receivers, scrapers and probes configured in `cfg`.
pub fn spawn(cfg: &InferenceConfig, ctx: InferenceContext) -> Result<(), InferenceError> {
    let _ = (cfg, ctx);
    Ok(())
}
