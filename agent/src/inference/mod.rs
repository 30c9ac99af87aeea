//! Inference signals: what the agent learns from the services on its node (local OTLP
//! receiver, model-server scraping, active probes), normalised into the `inference.*`
//! vocabulary and pushed to the [`Outbox`](crate::export::Outbox).

use serde::{Deserialize, Serialize};

/// The `[inference]` section of the agent's configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {}
