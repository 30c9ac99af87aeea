//! The view model: what the dashboard shows, in the shape the screens draw it.
//!
//! These types are the contract between the screens and a [`crate::client::Source`]. They are
//! deliberately independent of the collector's API types: a source (the HTTP client over
//! `/api/v1`, or [`crate::fake::FakeSource`]) converts into them, and the screens never see the
//! wire format. Timestamps are Unix nanoseconds (`u64`), durations are [`Duration`], ratios are
//! `0.0..=1.0`, latencies are seconds, memory is bytes. `None` means "not reported", which the
//! screens show as `-` rather than as zero.

use std::time::Duration;

/// Unix time in nanoseconds, the unit of OTLP and of every timestamp crossing a module boundary.
pub type UnixNanos = u64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A time series of `(time, value)` points in ascending time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The points, oldest first.
    pub points: Vec<(UnixNanos, f64)>,
}

impl Series {
    /// The newest value, if any.
    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }
}

/// One row of the Fleet screen: a node summarised across its GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    /// `host.name` of the node.
    pub node: String,
    /// Number of GPUs the node reports (including lost ones).
    pub gpus: u32,
    /// Mean `hw.gpu.utilization` over the node's GPUs (0..=1).
    pub gpu_busy_mean: Option<f64>,
    /// Highest `hw.gpu.utilization` among the node's GPUs (0..=1).
    pub gpu_busy_max: Option<f64>,
    /// Sum of `hw.gpu.memory.usage` over the node's GPUs, bytes.
    pub gpu_mem_used: Option<u64>,
    /// Sum of `hw.gpu.memory.limit` over the node's GPUs, bytes.
    pub gpu_mem_total: Option<u64>,
    /// Sum of `hw.power` over the node's GPUs, watts.
    pub power_w: Option<f64>,
    /// Hottest GPU, `hw.temperature`, degrees Celsius.
    pub temp_max_c: Option<f64>,
    /// `system.cpu.utilization` (0..=1).
    pub cpu: Option<f64>,
    /// `system.memory.usage`, bytes.
    pub mem_used: Option<u64>,
    /// Total host memory, bytes.
    pub mem_total: Option<u64>,
    /// What is wrong with the node, if anything.
    pub health: NodeHealth,
}

/// The health facts about a node; staleness is judged at render time from `last_seen` and `now`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeHealth {
    /// When the collector last received data from this node.
    pub last_seen: UnixNanos,
    /// GPUs whose `hw.status` is failed or that stopped reporting.
    pub gpus_lost: u32,
    /// GPUs whose `hw.status` is degraded.
    pub gpus_degraded: u32,
    /// The most recent XID error seen on any GPU of the node (from `hw.errors` `xid_<n>`).
    pub last_xid: Option<XidEvent>,
    /// Anomalies the collector flags on the node or its models now (0 when the collector has
    /// no anomaly detection).
    pub anomalies: u32,
}

/// Behaviour of a node (or a model on it) unlike its peers' or its own history, as the
/// collector's `/api/v1/anomalies` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// `node` or `node/model`.
    pub subject: String,
    /// `host.name` of the node.
    pub node: String,
    /// `model.name`, when the anomaly is a model's.
    pub model: Option<String>,
    /// What it is compared with: `peers` or `history`.
    pub baseline: String,
    /// The feature that is off, e.g. `latency_at_gpu_load`.
    pub feature: String,
    /// Its value.
    pub value: f64,
    /// The value the baseline expects.
    pub expected: f64,
    /// How far off, in the detector's units (higher is worse).
    pub score: f64,
    /// Why, as a sentence.
    pub why: String,
    /// Flagged since.
    pub since: UnixNanos,
}

/// An NVIDIA XID error seen on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidEvent {
    /// The XID code.
    pub code: u32,
    /// When it was seen.
    pub at: UnixNanos,
}

/// `hw.status` of one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuStatus {
    /// Healthy.
    #[default]
    Ok,
    /// Degraded (ECC errors, throttling for power/thermal reasons).
    Degraded,
    /// Failed or fallen off the bus.
    Failed,
}

/// Everything the Node detail screen shows for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDetail {
    /// `host.name`.
    pub node: String,
    /// When the collector last received data from this node.
    pub last_seen: UnixNanos,
    /// The history window the histories cover (the zoom the request asked for).
    pub window: Duration,
    /// Host CPU utilisation history (0..=1).
    pub cpu_history: Series,
    /// Host memory in use, bytes.
    pub mem_used: Option<u64>,
    /// Host memory total, bytes.
    pub mem_total: Option<u64>,
    /// One entry per GPU, by index.
    pub gpus: Vec<GpuView>,
    /// Processes using a GPU, largest GPU memory first.
    pub processes: Vec<ProcessView>,
    /// Inference services running on the node.
    pub services: Vec<ServiceView>,
    /// Anomalies flagged on the node or its models, highest score first.
    pub anomalies: Vec<Anomaly>,
}

/// One GPU on the Node detail screen.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuView {
    /// NVML index.
    pub index: u32,
    /// `hw.id`, the GPU UUID.
    pub uuid: String,
    /// `hw.model`.
    pub model: String,
    /// `hw.status`.
    pub status: GpuStatus,
    /// Current `hw.gpu.utilization` (0..=1).
    pub util: Option<f64>,
    /// `gpu.memory_controller.utilization` (0..=1).
    pub mem_ctrl_util: Option<f64>,
    /// `hw.gpu.memory.usage`, bytes.
    pub mem_used: Option<u64>,
    /// `hw.gpu.memory.limit`, bytes.
    pub mem_total: Option<u64>,
    /// `hw.power`, watts.
    pub power_w: Option<f64>,
    /// Power limit, watts, when known.
    pub power_limit_w: Option<f64>,
    /// `hw.temperature`, Celsius.
    pub temp_c: Option<f64>,
    /// `gpu.clock.sm`, MHz.
    pub sm_clock_mhz: Option<f64>,
    /// The most recent XID error on this GPU.
    pub last_xid: Option<XidEvent>,
    /// Utilisation history over the requested window (0..=1).
    pub util_history: Series,
    /// Memory-in-use history over the requested window, bytes.
    pub mem_history: Series,
    /// Power history over the requested window, watts.
    pub power_history: Series,
}

/// A process holding GPU memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessView {
    /// OS process id.
    pub pid: u32,
    /// Executable or command name.
    pub name: String,
    /// Index of the GPU it runs on.
    pub gpu_index: u32,
    /// `process.gpu.memory.usage`, bytes.
    pub gpu_mem: Option<u64>,
    /// `process.gpu.utilization` (0..=1).
    pub gpu_util: Option<f64>,
    /// `process.cpu.utilization` (0..=1 of one core).
    pub cpu: Option<f64>,
    /// `process.memory.usage`, bytes.
    pub mem: Option<u64>,
}

/// An inference service on a node, with its recent latency percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// `service.name`.
    pub name: String,
    /// `model.name`.
    pub model: String,
    /// `model.version`.
    pub version: String,
    /// Requests per second (`inference.requests`).
    pub rate_rps: Option<f64>,
    /// Failed requests per second (`inference.requests` counted as errors by
    /// [`crate::outcome::is_error`]).
    pub errors_rps: Option<f64>,
    /// `inference.request.duration` percentiles, seconds.
    pub latency: Percentiles,
}

/// Latency percentiles, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// One model on the Models screen, with all its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelView {
    /// `model.name`.
    pub name: String,
    /// The version currently serving most traffic.
    pub current_version: String,
    /// Every version seen, newest first.
    pub versions: Vec<ModelVersionView>,
}

/// One version of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersionView {
    /// `model.version`.
    pub version: String,
    /// When this version was first seen.
    pub first_seen: UnixNanos,
    /// Requests per second now.
    pub rate_rps: Option<f64>,
    /// Errors per second now.
    pub errors_rps: Option<f64>,
    /// Latency percentiles now.
    pub latency: Percentiles,
    /// Latency percentiles over time.
    pub latency_history: LatencyHistory,
    /// Request rate over time.
    pub rate_history: Series,
    /// `inference.prediction.confidence` distribution over the window.
    pub confidence: ConfidenceHistogram,
    /// Drift of the confidence distribution against the version's reference.
    pub drift: Option<DriftStats>,
    /// Accuracy from `inference.feedback`, when ground truth arrives.
    pub accuracy: Option<f64>,
}

/// p50/p95/p99 latency series, seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistory {
    /// Median over time.
    pub p50: Series,
    /// 95th percentile over time.
    pub p95: Series,
    /// 99th percentile over time.
    pub p99: Series,
}

/// A histogram of top-1 confidence: `counts[i]` observations with value `<= bounds[i]`
/// (and above the previous bound); the last bucket is open above.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfidenceHistogram {
    /// Upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// Counts, one more than `bounds`.
    pub counts: Vec<u64>,
    /// Mean confidence, the accuracy proxy the retrain rules use.
    pub mean: Option<f64>,
}

/// Drift statistics of a version's confidence distribution against its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftStats {
    /// The test, e.g. `psi` or `ks`.
    pub test: String,
    /// The statistic's value now.
    pub value: f64,
    /// The threshold a policy compares against, when one does.
    pub threshold: Option<f64>,
    /// What it is compared to, e.g. `first-1h-of-version`.
    pub reference: String,
    /// The window of recent data compared.
    pub window: Duration,
    /// The statistic over time.
    pub history: Series,
}

/// One rule of one policy on the Policies screen.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleView {
    /// `metadata.name` of the policy.
    pub policy: String,
    /// The rule: a scale metric name or a retrain rule name.
    pub rule: String,
    /// Scaling or retraining.
    pub kind: RuleKind,
    /// Where the rule stands now.
    pub state: RuleState,
    /// Current against target, one line per input the rule compares.
    pub inputs: Vec<RuleInput>,
    /// Replica counts for scaling rules.
    pub replicas: Option<Replicas>,
    /// When the rule may act next, and what it would do.
    pub next_action: NextAction,
    /// The target's load forecast and its error (scaling rules of policies with
    /// `scale.forecast`).
    pub forecast: Option<ForecastView>,
    /// Why the rule cannot do what it decides: its actuator failed, or the target's size
    /// cannot be read. Such a rule is not ok whatever its state, and says why.
    pub problem: Option<RuleProblem>,
    /// Scaling rules: `(ready, provisioned)` as the target's resizer last reported them; the
    /// difference is replicas still warming.
    pub ready: Option<(u32, u32)>,
}

/// What keeps a rule from acting.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleProblem {
    /// What went wrong, as the collector or the actuator says it.
    pub what: String,
    /// When it was seen, when known.
    pub at: Option<UnixNanos>,
}

/// A target's load forecast and how good it has been.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastView {
    /// `floor` or `forecast-only`.
    pub mode: String,
    /// The latest forecast load (a request rate), when there is one.
    pub load: Option<f64>,
    /// The size the latest forecast asks for.
    pub replicas: Option<u32>,
    /// Mean absolute percentage error of scored forecasts (a fraction).
    pub mape: Option<f64>,
    /// The same for the naive last-value forecast.
    pub naive_mape: Option<f64>,
    /// (Decayed) number of scored forecasts.
    pub scored: f64,
    /// Why there is no forecast, when there is none.
    pub problem: Option<String>,
}

/// Scaling or retraining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// A `spec.scale` metric.
    Scale,
    /// A `spec.retrain` rule.
    Retrain,
}

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleState {
    /// Within target; nothing to do.
    Ok,
    /// The condition holds but has not held for the rule's `for:` duration yet.
    Pending {
        /// Since when the condition has held.
        since: UnixNanos,
    },
    /// The condition holds and the rule acts (or has just acted).
    Firing,
    /// The rule acted and may not act again until `until`.
    Cooling {
        /// End of the cooldown.
        until: UnixNanos,
    },
    /// The policy is in `mode: dry-run`: it decides but does not act.
    DryRun,
}

/// One input of a rule: its current value against its target.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInput {
    /// The input's name (`p95-latency`, `psi`).
    pub name: String,
    /// Current value, `None` when the data is missing.
    pub current: Option<f64>,
    /// Target or threshold.
    pub target: f64,
    /// How to print both.
    pub unit: Unit,
}

/// How a number is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A ratio printed as a percentage.
    Ratio,
    /// Seconds, printed as ms or s.
    Seconds,
    /// A plain number.
    Plain,
}

/// Replica counts of a scaling target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// Replicas now.
    pub current: u32,
    /// What the rule wants after constraints.
    pub desired: u32,
    /// `spec.target.min`.
    pub min: u32,
    /// `spec.target.max`.
    pub max: u32,
}

/// When a rule may act next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextAction {
    /// It could act at the next evaluation.
    Now,
    /// Not before this time (cooldown, stabilization, rate limit), for this reason.
    At {
        /// Earliest time it may act.
        at: UnixNanos,
        /// Why not before (e.g. `cooldown`, `stabilization window`).
        reason: String,
    },
    /// It cannot act at all (budget spent, at max, dry-run), for this reason.
    Blocked(String),
}

/// One decision record in the Decisions log.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionView {
    /// Stable id of the record.
    pub id: String,
    /// When the evaluation ran.
    pub time: UnixNanos,
    /// Policy name.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// `true` when the policy was in dry-run mode.
    pub dry_run: bool,
    /// The input values seen.
    pub inputs: Vec<DecisionInput>,
    /// The raw recommendation before constraints, e.g. `replicas 4 -> 9`.
    pub recommendation: String,
    /// Each constraint applied, in order.
    pub constraints: Vec<ConstraintStep>,
    /// The final action, or why there was none.
    pub outcome: DecisionOutcome,
    /// What the actuator did, when it was asked to act.
    pub actuator: Option<ActuatorOutcome>,
    /// For retrain jobs, the job's status.
    pub job: Option<JobStatus>,
}

/// One input value a decision saw.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInput {
    /// Input name.
    pub name: String,
    /// Value seen, `None` when missing.
    pub value: Option<f64>,
    /// How to print it.
    pub unit: Unit,
}

/// One constraint applied to a recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintStep {
    /// `tolerance`, `panic`, `stabilization`, `rate limit`, `min/max`, `cooldown`, `budget`,
    /// `missing data`.
    pub name: String,
    /// What it did, e.g. `9 -> 8 (max 4 pods per 15s)` or `no change`.
    pub effect: String,
    /// Whether it changed the recommendation.
    pub changed: bool,
}

/// The final result of a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionOutcome {
    /// An action, e.g. `scale resnet 4 -> 8`.
    Action(String),
    /// No action, and why.
    NoAction(String),
}

/// What an actuator did with an action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorOutcome {
    /// Actuator name (`kubernetes`, `aws-asg`, `github-workflow`).
    pub actuator: String,
    /// Attempts made.
    pub attempts: u32,
    /// Final status: `applied`, `failed: ...`, `retrying`.
    pub status: String,
    /// Whether the action failed (the status then says why).
    pub failed: bool,
    /// Ids on the remote side (request ids, run ids).
    pub remote_ids: Vec<String>,
}

/// Status of a retrain job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// Job id on the remote side.
    pub id: String,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub state: String,
    /// Link to the job, when there is one.
    pub url: Option<String>,
}

/// The collector's place in its cluster, as `GET /api/v1/cluster` serves it; the header shows
/// it next to the collector's URL.
///
/// Unlike the other types here this one is read straight from the wire: the collector's own
/// type (`stoker_collector::cluster::ClusterView`) can only be written, and its shape is already
/// the one the header needs. Fields the header does not draw are kept for the detail a later
/// screen may show; fields a newer collector adds are ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ClusterStatus {
    /// This collector's member name.
    #[serde(rename = "self")]
    pub member: String,
    /// Whether it leads (evaluates policies and acts) or follows.
    pub role: ClusterRole,
    /// The leader's member name, when one is known.
    pub leader: Option<String>,
    /// Every member holding a lease now.
    #[serde(default)]
    pub members: Vec<String>,
    /// The leader's term; 0 while none is known (and always, for a collector alone).
    pub term: u64,
    /// The lease TTL, seconds.
    #[serde(default)]
    pub lease_ttl_s: u64,
    /// The coordination store: `none` for a collector alone, `etcd` for several.
    pub backend: String,
}

impl ClusterStatus {
    /// Whether the collector runs alone (`backend = "none"`): it always leads, at term 0, and
    /// the header has nothing to say about it.
    pub fn alone(&self) -> bool {
        self.backend == "none"
    }
}

/// A collector's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// It holds the leader key.
    Leader,
    /// It watches the key held by another (or by nobody, during an election).
    Follower,
}
