//! Request and response types of the collector's HTTP API (`/api/v1`), shared with the
//! dashboard (`stoker-tui`). All times are Unix nanoseconds; durations are humantime strings
//! in requests (`30s`) and seconds in responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /api/v1/series` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// `metric{key="v",...}`; omit to list metric names only.
    pub selector: Option<String>,
    /// At most this many series (default 1000).
    pub limit: Option<usize>,
}

/// One series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesItem {
    /// Metric name.
    pub metric: String,
    /// `gauge`, `counter` or `histogram`.
    pub kind: String,
    /// Attributes.
    pub labels: BTreeMap<String, String>,
    /// Newest point (Unix nanos).
    pub last_unix_nano: u64,
}

/// One metric name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricItem {
    /// Metric name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Number of series.
    pub series: usize,
}

/// `GET /api/v1/series` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesResponse {
    /// Matching series (with a selector).
    pub series: Vec<SeriesItem>,
    /// Metric names (without a selector).
    pub metrics: Vec<MetricItem>,
    /// Whether `limit` cut the list.
    pub truncated: bool,
}

/// `GET /api/v1/query` parameters. With `start`/`end`/`step` it is a range query, otherwise
/// an instant query at `time` (default now). Times are Unix nanoseconds, or relative to now
/// as `now`, `-5m`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// `metric{key="v", key!="v", key=~"re", key!~"re"}`.
    pub selector: String,
    /// `mean|min|max|sum|count|last|rate|increase|median|p95|quantile(0.9)`.
    pub stat: String,
    /// Window of the statistic, e.g. `30s` (default `1m`).
    pub window: Option<String>,
    /// Comma-separated attributes to group by.
    pub group_by: Option<String>,
    /// `mean|sum|min|max|count`: combine per-series values this way.
    pub across: Option<String>,
    /// Instant query time.
    pub time: Option<String>,
    /// Range start.
    pub start: Option<String>,
    /// Range end.
    pub end: Option<String>,
    /// Range step, e.g. `15s`.
    pub step: Option<String>,
}

/// One group's instant value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstantGroup {
    /// Group-by attributes.
    pub group: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
    /// Series that contributed.
    pub series: usize,
}

/// One point of a range result.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangePoint {
    /// Unix nanos.
    pub t: u64,
    /// Value.
    pub v: f64,
}

/// One group's range values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeGroup {
    /// Group-by attributes.
    pub group: BTreeMap<String, String>,
    /// Points where the group had data.
    pub points: Vec<RangePoint>,
}

/// Instant or range results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "groups", rename_all = "snake_case")]
pub enum QueryResult {
    /// One value per group.
    Instant(Vec<InstantGroup>),
    /// A series of values per group.
    Range(Vec<RangeGroup>),
}

/// `GET /api/v1/query` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// The statistic, normalised (`quantile(0.95)`).
    pub stat: String,
    /// Window in seconds.
    pub window_seconds: f64,
    /// Evaluation time (instant) or range end.
    pub time_unix_nano: u64,
    /// Results.
    pub result: QueryResult,
}

/// Health of a node, from the age of its newest point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    /// Reporting.
    Ok,
    /// Newest point older than `node_stale_after`.
    Stale,
    /// Newest point older than `node_lost_after`.
    Lost,
}

/// One node (agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeItem {
    /// `host.name`.
    pub name: String,
    /// `host.id` (or the name when the node sends no id).
    pub host_id: String,
    /// Newest point (Unix nanos).
    pub last_seen_unix_nano: u64,
    /// Seconds since then.
    pub age_seconds: f64,
    /// Health.
    pub health: NodeHealth,
    /// Distinct GPUs (`hw.id`) seen.
    pub gpu_count: usize,
    /// Resource labels other than host/hw/service attributes (configured labels, `cloud.*`).
    pub labels: BTreeMap<String, String>,
}

/// `GET /api/v1/nodes` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodesResponse {
    /// Nodes, by name.
    pub nodes: Vec<NodeItem>,
    /// Server time (Unix nanos).
    pub now_unix_nano: u64,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}
