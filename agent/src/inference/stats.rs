//! The inference room's own telemetry: counters the core shows on `/metrics` and that this
//! room also exports in its OTLP batches as `stoker.agent.inference.*`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the agent started. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct InferenceStats {
    /// Spans received by the OTLP receivers (accepted or not).
    pub spans_received: AtomicU64,
    /// Metric data points received by the OTLP receivers (accepted or not).
    pub points_received: AtomicU64,
    /// Spans refused: request over capacity, or series cap reached for their derived metrics.
    pub spans_shed: AtomicU64,
    /// Data points refused: request over capacity, or series cap reached.
    pub points_shed: AtomicU64,
    /// Whole requests refused with RESOURCE_EXHAUSTED / HTTP 429 because too many were in flight.
    pub requests_refused: AtomicU64,
    /// Requests rejected as malformed (undecodable body, wrong content type, too large).
    pub requests_malformed: AtomicU64,
    /// Scrapes that succeeded.
    pub scrapes: AtomicU64,
    /// Scrapes that failed (connection, timeout, HTTP status, unparsable body).
    pub scrape_failures: AtomicU64,
    /// Probe requests sent.
    pub probes: AtomicU64,
    /// Probe requests that failed (non-2xx, timeout, connection error).
    pub probe_failures: AtomicU64,
}

/// A plain copy of [`InferenceStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InferenceStatsSnapshot {
    /// See [`InferenceStats::spans_received`].
    pub spans_received: u64,
    /// See [`InferenceStats::points_received`].
    pub points_received: u64,
    /// See [`InferenceStats::spans_shed`].
    pub spans_shed: u64,
    /// See [`InferenceStats::points_shed`].
    pub points_shed: u64,
    /// See [`InferenceStats::requests_refused`].
    pub requests_refused: u64,
    /// See [`InferenceStats::requests_malformed`].
    pub requests_malformed: u64,
    /// See [`InferenceStats::scrapes`].
    pub scrapes: u64,
    /// See [`InferenceStats::scrape_failures`].
    pub scrape_failures: u64,
    /// See [`InferenceStats::probes`].
    pub probes: u64,
    /// See [`InferenceStats::probe_failures`].
    pub probe_failures: u64,
}

impl InferenceStats {
    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> InferenceStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        InferenceStatsSnapshot {
            spans_received: get(&self.spans_received),
            points_received: get(&self.points_received),
            spans_shed: get(&self.spans_shed),
            points_shed: get(&self.points_shed),
            requests_refused: get(&self.requests_refused),
            requests_malformed: get(&self.requests_malformed),
            scrapes: get(&self.scrapes),
            scrape_failures: get(&self.scrape_failures),
            probes: get(&self.probes),
            probe_failures: get(&self.probe_failures),
        }
    }

    /// Append the counters in Prometheus text format, for the core's `/metrics`.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, value) in self.snapshot().named() {
            let prom = name.replace('.', "_") + "_total";
            let _ = writeln!(out, "# HELP {prom} {help}\n# TYPE {prom} counter\n{prom} {value}");
        }
    }
}

impl InferenceStatsSnapshot {
    /// `(OTLP name, description, value)` for every counter.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 10] {
        [
            (
                "stoker.agent.inference.spans.received",
                "Spans received by the local OTLP receivers.",
                self.spans_received,
            ),
            (
                "stoker.agent.inference.points.received",
                "Metric data points received by the local OTLP receivers.",
                self.points_received,
            ),
            (
                "stoker.agent.inference.spans.shed",
                "Spans refused because the receiver was over capacity.",
                self.spans_shed,
            ),
            (
                "stoker.agent.inference.points.shed",
                "Data points refused because the receiver was over capacity.",
                self.points_shed,
            ),
            (
                "stoker.agent.inference.requests.refused",
                "OTLP requests refused as retryable (too many in flight).",
                self.requests_refused,
            ),
            (
                "stoker.agent.inference.requests.malformed",
                "OTLP requests rejected as malformed.",
                self.requests_malformed,
            ),
            (
                "stoker.agent.inference.scrapes",
                "Successful scrapes of model servers.",
                self.scrapes,
            ),
            (
                "stoker.agent.inference.scrape.failures",
                "Failed scrapes of model servers.",
                self.scrape_failures,
            ),
            ("stoker.agent.inference.probes", "Probe requests sent.", self.probes),
            (
                "stoker.agent.inference.probe.failures",
                "Probe requests that failed.",
                self.probe_failures,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_rendering_names_every_counter() {
        let stats = InferenceStats::default();
        InferenceStats::add(&stats.points_shed, 3);
        let mut out = String::new();
        stats.render_prometheus(&mut out);
        assert!(out.contains("\nstoker_agent_inference_points_shed_total 3\n"), "{out}");
        assert_eq!(out.matches("# TYPE").count(), 10);
    }
}
