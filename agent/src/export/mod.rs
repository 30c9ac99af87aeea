//! Export: everything the agent learns leaves through here, as OTLP, towards the collector.
//!
//! Producers (the samplers, the local receivers, the scrapers) push finished `ResourceMetrics`
//! into an [`Outbox`]; the exporter task drains it. The outbox is bounded and never blocks a
//! producer: when the collector is unreachable the oldest batches are dropped first and counted.

pub mod exporter;
mod outbox;

pub use exporter::{ExportCounters, ExporterSettings};
pub use outbox::{Outbox, OutboxStats, count_points};
