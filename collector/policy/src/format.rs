//! The policy file format exactly as written in YAML (`apiVersion: stoker/v1`, `kind: Policy`).
//!
//! These are the raw, serde-facing types; every struct refuses unknown keys so a typo is an
//! error with its position, not a silently ignored line. Meaning checks (min ≤ max, exactly one
//! threshold, a known statistic…) live in [`super::check`], which reports all problems at once.
//! `policies/README.md` is the user-facing reference for every key here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::spec::JobSpec;
pub use stoker_learn::spec::{ForecastMode, ForecastSpec};

/// One policy file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDoc {
    /// Must be `stoker/v1`.
    pub api_version: String,
    /// Must be `Policy`.
    pub kind: String,
    /// Name and labels.
    pub metadata: Metadata,
    /// What to resize and when.
    pub spec: PolicySpec,
}

/// Name and labels of a policy.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique across the policy set; decisions and state are keyed by it.
    pub name: String,
    /// Free-form labels, shown in the API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Whether a rule acts or only records what it would do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Decisions are carried out.
    #[default]
    Enforce,
    /// Decisions are recorded (and the actuator called with `dry_run`), nothing changes.
    DryRun,
}

/// The body of a policy.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// What is resized and how.
    pub target: TargetSpec,
    /// Default mode of every rule in this policy; a rule may override it.
    #[serde(default)]
    pub mode: Mode,
    /// Evaluation interval; default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    /// The service-level objective, used by replay for SLO-violation minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
    /// Target tracking, step rules and their constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleSpec>,
    /// Retraining rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retrain: Vec<RetrainRule>,
}

crate::spec::with_resize_sections! {
/// The resized target: name, bounds, where its size comes from, the capacity model replay
/// uses, and the actuator with its section: the keys of [`crate::spec::ResizeSpec`], written
/// inline.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the target (a service, a node pool); two policies resizing one name conflict.
    pub name: String,
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Where the current size is read from; default: the actuator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentSize>,
    /// Capacity model of one replica, for `policy replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacitySpec>,
}
}

/// Where the current size of a target comes from.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CurrentSize {
    /// `actuator` (ask the actuator, the default) or `signal`.
    pub from: CurrentFrom,
    /// With `from: signal`, the signal whose value is the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalSpec>,
}

/// Source of the current size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CurrentFrom {
    /// The actuator's own view (scale subresource, ASG desired capacity…).
    Actuator,
    /// A metric, such as a count of ready replicas reported by the service.
    Signal,
}

/// Per-replica capacity, turning replica counts into latency and utilisation in replay.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacitySpec {
    /// Requests per second one ready replica serves at full utilisation.
    pub per_replica_throughput: f64,
    /// Time to serve one request on an idle replica.
    pub service_time: HumanDuration,
    /// Delay between asking for a replica and it serving traffic.
    #[serde(default)]
    pub warmup: HumanDuration,
}

/// A service-level objective: the statistic of a signal must stay at or below `objective`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SloSpec {
    /// The signal, for example p95 of `inference.request.duration` over 30s.
    pub signal: SignalSpec,
    /// Highest acceptable value.
    pub objective: f64,
}

/// A signal: a metric, attribute matchers, a window and a statistic.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignalSpec {
    /// Metric name from the vocabulary, like `inference.request.duration`.
    pub metric: String,
    /// `mean`, `min`, `max`, `sum`, `count`, `last`, `rate`, `increase` or `pNN` (quantile).
    pub stat: String,
    /// Window ending at evaluation time; default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Attribute equality matchers.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
}

/// Scaling: target-tracking metrics, step rules and the constraints on their result.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleSpec {
    /// Target-tracking metrics; the recommendation is the maximum over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<TrackedMetric>,
    /// Step rules: when a condition holds for a while, change the size by a step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRule>,
    /// Ratio band around 1.0 inside which target tracking keeps the size; default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Panic mode: a short window that scales up fast and blocks scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic: Option<PanicSpec>,
    /// Stabilization windows and rate policies per direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
    /// Minimum time between scale actions per direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Cooldown>,
    /// At most this many scale actions per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// What to do when an input has no data; default `hold`.
    #[serde(default)]
    pub on_missing_data: MissingData,
    /// Mode of scaling; default: the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Predictive scaling: a load forecast at the warm-up horizon sets a floor under the
    /// size (or, `forecast-only`, is only recorded and scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastScale>,
    /// Capacity-aware sizing: a queueing model of the target learned from its telemetry
    /// sizes it once fitted, instead of the tracked metrics' ratios ([`super::model`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelScale>,
}

/// `scale.model`: what the queueing model reads and what it holds ([`super::model`]).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelScale {
    /// Requests/s arriving at the target, a total over its replicas.
    pub load: SignalSpec,
    /// The p95 request latency the model predicts, seconds (fits the service time, scores
    /// the model).
    pub latency: SignalSpec,
    /// Mean busy fraction of the ready replicas, 0–1 (fits the per-replica throughput).
    pub utilization: SignalSpec,
    /// The p95 to hold, seconds: the size is the fewest replicas predicted to meet it.
    pub p95: f64,
    /// Scale in only to a size predicted to meet `scaleInAt × p95` (a band that noise does
    /// not cross); default 0.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_at: Option<f64>,
    /// `per-replica` (requests spread over independent queues, the default) or `pooled`
    /// (one queue in front of all replicas: M/M/c, Erlang C).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueKind>,
    /// Headroom for the load's own noise: the demand is raised by this many robust standard
    /// deviations of the load over the last 10 minutes of samples; default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<f64>,
    /// A backlog found in the latency is sized to drain within this; default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<HumanDuration>,
    /// Refit interval; default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit_every: Option<HumanDuration>,
    /// Samples kept for fitting, newest; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HumanDuration>,
}

/// Queue discipline of [`ModelScale`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueKind {
    /// A queue per replica (random or round-robin routing): an M/M/1 waiting tail each.
    #[default]
    PerReplica,
    /// One queue for all replicas: M/M/c with the Erlang C waiting probability.
    Pooled,
}

/// `scale.forecast`: stoker-learn's [`ForecastSpec`] (`horizon`, `history`, `minHistory`,
/// `mode`, `period`) written inline, plus what to forecast and how a forecast becomes a size.
///
/// The keys are repeated here rather than flattened because serde cannot combine `flatten`
/// with `deny_unknown_fields`; [`ForecastScale::spec`] converts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForecastScale {
    /// How far ahead to forecast: the target's warm-up time plus the reaction delay.
    pub horizon: HumanDuration,
    /// History read from the signal source at each refit.
    pub history: HumanDuration,
    /// Below this much observed history there is no forecast (the policy stays reactive).
    pub min_history: HumanDuration,
    /// `floor` (the forecast is a floor under the desired size) or `forecast-only`.
    pub mode: ForecastMode,
    /// Seasonal period; default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<HumanDuration>,
    /// The load forecast, a total over the target (a request rate), read every `step`.
    pub signal: SignalSpec,
    /// Load one replica should carry: the forecast size is `ceil(forecast / perReplica)`.
    pub per_replica: f64,
    /// Grid step of the history read for fitting and forecasting; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<HumanDuration>,
    /// Refit interval; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit_every: Option<HumanDuration>,
}

impl ForecastScale {
    /// The learning crate's view of this section.
    pub fn spec(&self) -> ForecastSpec {
        ForecastSpec {
            horizon: self.horizon.get(),
            history: self.history.get(),
            min_history: self.min_history.get(),
            mode: self.mode,
            period: self.period.map(HumanDuration::get),
        }
    }
}

/// One target-tracking metric.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrackedMetric {
    /// Name shown in decisions.
    pub name: String,
    /// What is measured.
    pub signal: SignalSpec,
    /// The value to hold it at.
    pub target: TrackingTarget,
}

/// Target of a tracked metric: exactly one of `value` and `averageValue`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrackingTarget {
    /// The signal is per replica (a mean utilisation, a latency):
    /// desired = ceil(current × value / target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The signal is a total over the target (a request rate): desired = ceil(total / target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<f64>,
}

/// A step rule: `when` holds `for` a while → change the size.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepRule {
    /// Name shown in decisions.
    pub name: String,
    /// The condition.
    pub when: Condition,
    /// How long it must hold before the step fires; default 0s.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<HumanDuration>,
    /// The size change.
    pub change: StepChange,
}

/// A size change of a step rule: exactly one of `pods`, `percent` and `to`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepChange {
    /// Add (or, negative, remove) this many replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<i64>,
    /// Change by this percentage of the current size (rounded away from zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Set this exact size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
}

/// Panic mode, after Knative's KPA.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PanicSpec {
    /// The short window each tracked metric is also read over; default 6s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Enter panic when the short-window recommendation is at least this multiple of the
    /// current size; default 2.0 (KPA's 200 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How long panic lasts after the threshold was last crossed; default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HumanDuration>,
}

/// Per-direction behaviour, as in the Kubernetes HPA's `behavior`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Behavior {
    /// Scale-up: default no stabilization, max(100 %, 4 pods) per 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<DirectionBehavior>,
    /// Scale-down: default 300s stabilization, 100 % per 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<DirectionBehavior>,
}

/// Stabilization and rate limit for one direction.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectionBehavior {
    /// Window of past recommendations considered (the most conservative wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window: Option<HumanDuration>,
    /// Rate policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<RatePolicy>>,
    /// How several policies combine; default `Max` (the most permissive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<SelectPolicy>,
}

/// One rate policy: at most `value` pods or percent per `period`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RatePolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: RateKind,
    /// Pods or percent.
    pub value: f64,
    /// The sliding period.
    pub period: HumanDuration,
}

/// Unit of a rate policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum RateKind {
    /// Absolute replicas.
    Pods,
    /// Percent of the size at the start of the period.
    Percent,
}

/// How several rate policies combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// Cooldowns after a scale action.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cooldown {
    /// No scale-up sooner than this after any scale action; default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<HumanDuration>,
    /// No scale-down sooner than this after any scale action; default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<HumanDuration>,
}

/// At most `maxRuns` actions within any `per` period.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    /// Most actions in the period.
    pub max_runs: u32,
    /// The sliding period.
    pub per: HumanDuration,
}

/// Handling of inputs without data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingData {
    /// Never scale down while an input is missing; scaling up on the inputs present is allowed.
    #[default]
    Hold,
    /// No action at all while an input is missing.
    Freeze,
    /// Decide on the inputs present, in either direction.
    Ignore,
}

/// A retraining rule.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetrainRule {
    /// Name shown in decisions and passed to the job as `{{ rule }}`.
    pub name: String,
    /// The condition.
    pub when: Condition,
    /// How long it must hold; default 0s.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<HumanDuration>,
    /// No new run sooner than this after one started; default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<HumanDuration>,
    /// At most this many runs per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The job to start.
    pub job: JobSpec,
    /// Overrides the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// A condition: exactly one of `all`, `any`, `signal`, `drift`, `classifierDrift`,
/// `accuracy`, `latencyRegression`, `anomaly`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// Holds when every sub-condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<Condition>>,
    /// Holds when at least one sub-condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<Condition>>,
    /// A signal compared with a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalCondition>,
    /// A drift statistic between a reference and the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftCondition>,
    /// Estimated or measured accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyCondition>,
    /// A latency statistic now relative to the first period of the current model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_regression: Option<LatencyRegression>,
    /// A domain classifier telling the current window from the reference (ROC-AUC band).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_drift: Option<ClassifierDriftCondition>,
    /// An anomaly flagged by the collector's anomaly scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyCondition>,
}

/// `classifierDrift: {metric, window, reference, where, minSamples, band, folds}`: a logistic
/// domain classifier (stoker-learn) between the reference and the current window of a
/// model-output histogram; holds when its cross-validated ROC-AUC is outside `band`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClassifierDriftCondition {
    /// Histogram metric; default `inference.prediction.confidence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Current window; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// As for `drift`; default `first-1h-of-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Attribute matchers.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
    /// Fewer observations than this in either window: not enough data; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// ROC-AUC inside `[low, high]` is no drift; default NannyML's `[0.45, 0.65]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<[f64; 2]>,
    /// Cross-validation folds; default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
}

/// `anomaly: {node, model, baseline, feature, window, gte}`: holds while the anomaly scorer
/// has flagged a matching subject within `window` (its `stoker.anomaly.score` series).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnomalyCondition {
    /// Only this node (`host.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only this model (`model.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `peers` or `history`; default either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Only this feature (e.g. `hw.power`, `inference.request.duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Window; default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Score at least this; default any flagged anomaly (score > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
}

/// `signal: {metric, stat, window, where, gt|gte|lt|lte}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignalCondition {
    /// Metric name.
    pub metric: String,
    /// Statistic, as in [`SignalSpec::stat`].
    pub stat: String,
    /// Window; default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Attribute matchers.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
    /// Greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

/// `drift: {metric, test, window, reference, where, minSamples, gt|…, pValue}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DriftCondition {
    /// A histogram metric (`inference.prediction.confidence`) for psi/ks/js, a counter with a
    /// class attribute (`inference.prediction.class`) for chi2.
    pub metric: String,
    /// `psi`, `ks`, `js` or `chi2`.
    pub test: DriftTest,
    /// Current window; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// `first-<duration>-of-version` (default `first-1h-of-version`), `previous-<duration>`,
    /// or `pinned <rfc3339>..<rfc3339>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For chi2: the attribute holding the class; default `class`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Attribute matchers.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
    /// Fewer observations than this in either window: not enough data; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Statistic greater than (psi, js, ks D, chi2 statistic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Statistic greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// For ks and chi2: also require p below this; default 0.05.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
}

/// `drift.test`: the statistic that compares the current window with the reference.
///
/// Read from any string rather than refused by serde, so that `policy check` reports an
/// unknown test beside every other problem of the file (with the allowed names) instead of
/// stopping at the first; a policy with an [`DriftTest::Unknown`] test never passes the check,
/// so the engine never evaluates one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum DriftTest {
    /// Population stability index over histogram buckets (`psi`).
    Psi,
    /// Kolmogorov–Smirnov on bucketed histograms (`ks`).
    Ks,
    /// Jensen–Shannon distance over histogram buckets (`js`).
    Js,
    /// Chi-square on counts by a class attribute (`chi2`).
    Chi2,
    /// Any other spelling, as written.
    Unknown(String),
}

impl DriftTest {
    /// The name as written in a policy.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Psi => "psi",
            Self::Ks => "ks",
            Self::Js => "js",
            Self::Chi2 => "chi2",
            Self::Unknown(s) => s,
        }
    }
}

impl From<String> for DriftTest {
    fn from(s: String) -> Self {
        match s.as_str() {
            "psi" => Self::Psi,
            "ks" => Self::Ks,
            "js" => Self::Js,
            "chi2" => Self::Chi2,
            _ => Self::Unknown(s),
        }
    }
}

impl From<DriftTest> for String {
    fn from(t: DriftTest) -> Self {
        t.as_str().to_owned()
    }
}

impl fmt::Display for DriftTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `accuracy.estimate`: where the accuracy comes from. Read from any string, as
/// [`DriftTest`] is, so `policy check` reports an unknown one with the file's other problems.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum AccuracyEstimate {
    /// The mean of `inference.prediction.confidence` (`mean-confidence`).
    MeanConfidence,
    /// The share of `inference.feedback{correct="true"}` (`feedback`).
    Feedback,
    /// Any other spelling, as written.
    Unknown(String),
}

impl AccuracyEstimate {
    /// The name as written in a policy.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MeanConfidence => "mean-confidence",
            Self::Feedback => "feedback",
            Self::Unknown(s) => s,
        }
    }
}

impl From<String> for AccuracyEstimate {
    fn from(s: String) -> Self {
        match s.as_str() {
            "mean-confidence" => Self::MeanConfidence,
            "feedback" => Self::Feedback,
            _ => Self::Unknown(s),
        }
    }
}

impl From<AccuracyEstimate> for String {
    fn from(e: AccuracyEstimate) -> Self {
        e.as_str().to_owned()
    }
}

impl fmt::Display for AccuracyEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `accuracy: {estimate, window, where, lt|lte}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccuracyCondition {
    /// `mean-confidence` (from `inference.prediction.confidence`) or `feedback`
    /// (from `inference.feedback{correct}`).
    pub estimate: AccuracyEstimate,
    /// Window; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Attribute matchers.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
    /// Fewer observations than this: not enough data; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

/// `latencyRegression: {metric, stat, window, reference, where, gt|gte}`: current statistic
/// divided by the statistic over the reference window.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencyRegression {
    /// Latency metric; default `inference.request.duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Statistic; default `p95`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<String>,
    /// Current window; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Reference, as for drift; default `first-1h-of-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Attribute matchers.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
    /// Ratio greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Ratio greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
}
