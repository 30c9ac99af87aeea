//! Anomaly signals: on a schedule, scores every node and every model on a node against its
//! peers and its own history with `stoker_learn::anomaly`, and publishes the result.
//!
//! **Features** (from the store, over the last `window`, by `host.name`):
//! - node level: `hw.power` (mean W) at the node's mean `hw.gpu.utilization` — a GPU whose
//!   power at the same utilisation drifted;
//! - model level (by `model.name`): `inference.request.duration` p95 at the node's GPU
//!   utilisation — a node whose latency at the same load is unlike the fleet's.
//!
//! **Peers**: for each feature the fleet's relation to utilisation is fitted (least squares,
//! `y = a + b·utilisation`; a constant when the fleet's utilisations barely differ), each
//! subject's ratio to that fit is compared across the fleet with [`PeerDetector`] (robust z
//! and DBSCAN). `expected` is the fleet's value at the subject's utilisation.
//! **History**: each subject's `[utilisation, feature]` vectors over `history` (at
//! `history_step`, refitted every `refit_every`, every 5 minutes while no subject has enough
//! history) are summarised by [`HistoryModel`] (k-means
//! normal states); the current vector is flagged when far from all of them.
//!
//! **Published** as (a) [`AnomaliesResponse`] behind `GET /api/v1/anomalies` ([`router`]) and
//! (b) the gauge `stoker.anomaly.score{anomaly.node, anomaly.model, anomaly.baseline,
//! anomaly.feature}` in the store (the score while flagged, one 0 when it clears), which the
//! policy condition `when: {anomaly: {...}}` reads, in the live engine and in replay alike.
//! (The attributes are not `host.name`, so these series do not count as the node reporting.)

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stoker_learn::anomaly::{
    Anomaly, Baseline, HistoryConfig, HistoryModel, PeerDetector, Subject,
};
use tokio_util::sync::CancellationToken;

use crate::policy::signal::nanos;
use crate::query::{Query, Selector, Stat};
use crate::store::{PointValue, Store};

pub use stoker_policy::anomaly::{
    ATTR_BASELINE, ATTR_FEATURE, ATTR_MODEL, ATTR_NODE, SCORE_METRIC,
};

/// While no subject has a history model (a new collector), refits are retried this often.
pub const RETRY_WITHOUT_MODELS: Duration = Duration::from_secs(300);

const UTIL: &str = "hw.gpu.utilization";
const POWER: &str = "hw.power";
const LATENCY: &str = "inference.request.duration";

/// Scheduling and windows of the scorer.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyConfig {
    /// Scoring interval.
    pub every: Duration,
    /// Window of the current features.
    pub window: Duration,
    /// History the per-subject models are fitted on.
    pub history: Duration,
    /// Grid step of history vectors.
    pub history_step: Duration,
    /// History models are refitted this often.
    pub refit_every: Duration,
}

impl Default for AnomalyConfig {
    /// Every 60 s over 5 minutes; history 24 h at 1 min, refitted hourly.
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            window: Duration::from_secs(300),
            history: Duration::from_secs(24 * 3600),
            history_step: Duration::from_secs(60),
            refit_every: Duration::from_secs(3600),
        }
    }
}

/// `GET /api/v1/anomalies`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnomaliesResponse {
    /// When the scorer last ran, Unix nanos; `null` before its first run.
    pub evaluated_at: Option<u64>,
    /// Subjects flagged by that run (empty when none).
    pub anomalies: Vec<AnomalyItem>,
}

/// One flagged subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyItem {
    /// `node` or `node/model`.
    pub subject: String,
    /// The node (`host.name`).
    pub node: String,
    /// The model (`model.name`); `null` for node-level anomalies.
    pub model: Option<String>,
    /// `peers` or `history`.
    pub baseline: String,
    /// The feature that deviates most.
    pub feature: String,
    /// Its value now.
    pub value: f64,
    /// What the baseline expected.
    pub expected: f64,
    /// Robust z (peers) or distance over threshold (history); larger is worse.
    pub score: f64,
    /// One sentence.
    pub why: String,
    /// First evaluation of the current uninterrupted run of this flag, Unix nanos.
    pub since: u64,
}

/// The latest result, shared between the scorer and the HTTP handler.
pub type AnomalyBoard = Arc<RwLock<AnomaliesResponse>>;

/// One subject's current features.
#[derive(Clone, Debug)]
struct Obs {
    node: String,
    model: Option<String>,
    util: f64,
    value: f64,
}

impl Obs {
    fn subject(&self) -> String {
        match &self.model {
            Some(m) => format!("{}/{m}", self.node),
            None => self.node.clone(),
        }
    }
}

/// Scores the store's fleet; keeps fitted history models and flag start times.
#[derive(Debug)]
pub struct AnomalyScorer {
    cfg: AnomalyConfig,
    /// (subject, feature) → model (None: not enough history at the last fit).
    history: HashMap<(String, String), Option<HistoryModel>>,
    fitted_at: Option<u64>,
    /// (subject, baseline, feature) → since.
    since: HashMap<(String, String, String), u64>,
    /// Score series written last run: cleared ones get a 0.
    written: HashMap<(String, String, String), (String, Option<String>)>,
    board: AnomalyBoard,
}

impl AnomalyScorer {
    /// A scorer with `cfg` and an empty board.
    pub fn new(cfg: AnomalyConfig) -> Self {
        Self {
            cfg,
            history: HashMap::new(),
            fitted_at: None,
            since: HashMap::new(),
            written: HashMap::new(),
            board: Arc::new(RwLock::new(AnomaliesResponse::default())),
        }
    }

    /// The board `GET /api/v1/anomalies` serves.
    pub fn board(&self) -> AnomalyBoard {
        self.board.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    /// One scoring run at `now`: reads the features, flags, writes [`SCORE_METRIC`], updates
    /// and returns the board.
    pub fn score(&mut self, store: &Store, now: u64) -> AnomaliesResponse {
        let w = self.cfg.window;
        let util = by_group(
            store,
            &Query::new(Selector::new(UTIL), Stat::Mean, w).group_by(["host.name"]),
            now,
        );
        let power = by_group(
            store,
            &Query::new(Selector::new(POWER), Stat::Mean, w).group_by(["host.name"]),
            now,
        );
        let latency = by_group(
            store,
            &Query::new(Selector::new(LATENCY), Stat::Quantile(0.95), w)
                .group_by(["host.name", "model.name"]),
            now,
        );
        let mut node_obs = Vec::new();
        for (k, p) in &power {
            if let (Some(node), Some(u)) = (k.first().cloned().flatten(), util.get(&k[..1])) {
                node_obs.push(Obs { node, model: None, util: *u, value: *p });
            }
        }
        let mut by_model: BTreeMap<String, Vec<Obs>> = BTreeMap::new();
        for (k, l) in &latency {
            let (Some(Some(node)), Some(Some(model))) = (k.first(), k.get(1)) else { continue };
            let Some(u) = util.get(&k[..1]) else { continue };
            by_model.entry(model.clone()).or_default().push(Obs {
                node: node.clone(),
                model: Some(model.clone()),
                util: *u,
                value: *l,
            });
        }

        let mut found: Vec<(Obs, Anomaly)> = Vec::new();
        found.extend(peers_at_load(POWER, "W", &node_obs));
        for obs in by_model.values() {
            found.extend(peers_at_load(LATENCY, "s", obs));
        }

        // Own history: refit all subjects at once when due.
        let since_fit = self.fitted_at.map(|t| now.saturating_sub(t));
        let none_fitted = self.history.values().all(Option::is_none);
        if since_fit.is_none_or(|d| {
            d >= nanos(self.cfg.refit_every) || (none_fitted && d >= nanos(RETRY_WITHOUT_MODELS))
        }) {
            self.refit(store, now);
        }
        let all = node_obs
            .iter()
            .map(|o| (o, POWER))
            .chain(by_model.values().flatten().map(|o| (o, LATENCY)));
        for (o, feature) in all {
            if let Some(Some(m)) = self.history.get(&(o.subject(), feature.to_owned())) {
                if let Some(a) = m.check(&o.subject(), &[o.util, o.value]) {
                    found.push((o.clone(), a));
                }
            }
        }

        let mut items = Vec::new();
        let mut since = HashMap::new();
        let mut written = HashMap::new();
        let mut writer = store.writer();
        for (o, a) in found {
            let baseline = match a.baseline {
                Baseline::Peers => "peers",
                Baseline::History => "history",
            };
            let key = (o.subject(), baseline.to_owned(), a.feature.clone());
            let start = self.since.get(&key).copied().unwrap_or(now);
            since.insert(key.clone(), start);
            write_score(
                &mut writer,
                &o.node,
                o.model.as_deref(),
                baseline,
                &a.feature,
                now,
                a.score,
            );
            written.insert(key, (o.node.clone(), o.model.clone()));
            items.push(AnomalyItem {
                subject: o.subject(),
                node: o.node.clone(),
                model: o.model.clone(),
                baseline: baseline.to_owned(),
                feature: a.feature.clone(),
                value: a.value,
                expected: a.expected,
                score: a.score,
                why: a.why.clone(),
                since: start,
            });
        }
        for (key, (node, model)) in &self.written {
            if !written.contains_key(key) {
                write_score(&mut writer, node, model.as_deref(), &key.1, &key.2, now, 0.0);
            }
        }
        if !writer.finish() {
            tracing::warn!("anomaly scores: the store's log is backlogged");
        }
        self.since = since;
        self.written = written;
        items.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.subject.cmp(&b.subject)));
        let resp = AnomaliesResponse { evaluated_at: Some(now), anomalies: items };
        if let Ok(mut b) = self.board.write() {
            *b = resp.clone();
        }
        resp
    }

    fn refit(&mut self, store: &Store, now: u64) {
        self.fitted_at = Some(now);
        self.history.clear();
        // History ends where the current window starts, so a current anomaly is not normal.
        let to = now.saturating_sub(nanos(self.cfg.window));
        let from = now.saturating_sub(nanos(self.cfg.history));
        let step = self.cfg.history_step;
        let util: BTreeMap<GroupKey, BTreeMap<u64, f64>> = range_by_group(
            store,
            &Query::new(Selector::new(UTIL), Stat::Mean, step).group_by(["host.name"]),
            from,
            to,
            step,
        )
        .into_iter()
        .map(|(k, pts)| (k, pts.into_iter().collect()))
        .collect();
        let power = range_by_group(
            store,
            &Query::new(Selector::new(POWER), Stat::Mean, step).group_by(["host.name"]),
            from,
            to,
            step,
        );
        let latency = range_by_group(
            store,
            &Query::new(Selector::new(LATENCY), Stat::Quantile(0.95), step)
                .group_by(["host.name", "model.name"]),
            from,
            to,
            step,
        );
        let mut fit_one =
            |subject: String, feature: &str, u: &BTreeMap<u64, f64>, y: &[(u64, f64)]| {
                let rows: Vec<[f64; 2]> =
                    y.iter().filter_map(|(t, v)| u.get(t).map(|u| [*u, *v])).collect();
                let cfg = HistoryConfig::new(vec![UTIL.to_owned(), feature.to_owned()]);
                self.history
                    .insert((subject, feature.to_owned()), HistoryModel::fit(&rows, &cfg).ok());
            };
        for (k, pts) in &power {
            let Some(Some(node)) = k.first() else { continue };
            if let Some(u) = util.get(&k[..1]) {
                fit_one(node.clone(), POWER, u, pts);
            }
        }
        for (k, pts) in &latency {
            let (Some(Some(node)), Some(Some(model))) = (k.first(), k.get(1)) else { continue };
            if let Some(u) = util.get(&k[..1]) {
                fit_one(format!("{node}/{model}"), LATENCY, u, pts);
            }
        }
    }
}

type GroupKey = Vec<Option<String>>;

fn key_of(labels: &crate::store::Labels, keys: &[String]) -> GroupKey {
    keys.iter().map(|k| labels.get(k).map(str::to_owned)).collect()
}

fn by_group(store: &Store, q: &Query, at: u64) -> BTreeMap<GroupKey, f64> {
    match store.instant(q, at) {
        Ok(groups) => groups
            .into_iter()
            .filter(|g| g.value.is_finite())
            .map(|g| (key_of(&g.group, &q.group_by), g.value))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "anomaly features: query failed");
            BTreeMap::new()
        }
    }
}

fn range_by_group(
    store: &Store,
    q: &Query,
    from: u64,
    to: u64,
    step: Duration,
) -> BTreeMap<GroupKey, Vec<(u64, f64)>> {
    if to <= from {
        return BTreeMap::new();
    }
    match store.range(q, from, to, step) {
        Ok(groups) => groups
            .into_iter()
            .map(|g| {
                (
                    key_of(&g.group, &q.group_by),
                    g.points.into_iter().filter(|(_, v)| v.is_finite()).collect(),
                )
            })
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "anomaly history: query failed");
            BTreeMap::new()
        }
    }
}

fn write_score(
    w: &mut crate::store::Writer<'_>,
    node: &str,
    model: Option<&str>,
    baseline: &str,
    feature: &str,
    now: u64,
    score: f64,
) {
    let mut pairs: Vec<(&str, &str)> =
        vec![(ATTR_BASELINE, baseline), (ATTR_FEATURE, feature), (ATTR_NODE, node)];
    if let Some(m) = model {
        pairs.push((ATTR_MODEL, m));
    }
    crate::store::sort_pairs(&mut pairs);
    // A refusal (duplicate timestamp, cardinality limit) is counted by the store.
    let _ = w.append(SCORE_METRIC, &pairs, now, PointValue::Gauge(score));
}

/// Peer comparison at the same GPU load: fits the fleet's `y ~ utilisation`, flags subjects
/// whose ratio to the fit is unlike the fleet's; returns (subject, anomaly).
fn peers_at_load(feature: &str, unit: &str, obs: &[Obs]) -> Vec<(Obs, Anomaly)> {
    let usable: Vec<&Obs> =
        obs.iter().filter(|o| o.util.is_finite() && o.value.is_finite()).collect();
    let n = usable.len() as f64;
    if usable.len() < 3 {
        return Vec::new();
    }
    let mx = usable.iter().map(|o| o.util).sum::<f64>() / n;
    let my = usable.iter().map(|o| o.value).sum::<f64>() / n;
    let sxx: f64 = usable.iter().map(|o| (o.util - mx).powi(2)).sum();
    let sxy: f64 = usable.iter().map(|o| (o.util - mx) * (o.value - my)).sum();
    // Utilisations within ±2 points of each other say nothing about the slope.
    let b = if (sxx / n).sqrt() > 0.02 { sxy / sxx } else { 0.0 };
    let fit = |u: f64| my + b * (u - mx);
    let mut ratios = Vec::new();
    let mut subjects = Vec::new();
    for o in &usable {
        let e = fit(o.util);
        if e > 0.0 {
            ratios.push(o.value / e);
            subjects.push(Subject { id: o.subject(), values: vec![o.value / e] });
        }
    }
    ratios.sort_by(f64::total_cmp);
    let median_ratio = if ratios.is_empty() { 1.0 } else { ratios[ratios.len() / 2] };
    let detector =
        PeerDetector::new(vec![format!("{feature} relative to the fleet at the same load")]);
    let Ok(flags) = detector.detect(&subjects) else { return Vec::new() };
    flags
        .into_iter()
        .filter_map(|a| {
            let o = usable.iter().find(|o| o.subject() == a.subject)?;
            let expected = fit(o.util) * median_ratio;
            let why = format!(
                "{feature} {} {unit} at GPU utilisation {:.0} %, where the fleet shows {} {unit} at that load ({:.1} robust σ off, {} peers)",
                fmt(o.value),
                o.util * 100.0,
                fmt(expected),
                a.score,
                subjects.len()
            );
            let a = Anomaly { feature: feature.to_owned(), value: o.value, expected, why, ..a };
            Some(((*o).clone(), a))
        })
        .collect()
}

fn fmt(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.4}")
    } else if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// `GET /api/v1/anomalies`.
pub fn router(board: AnomalyBoard) -> Router {
    Router::new().route("/api/v1/anomalies", get(anomalies)).with_state(board)
}

async fn anomalies(State(board): State<AnomalyBoard>) -> impl IntoResponse {
    let r = board.read().map(|b| b.clone()).unwrap_or_default();
    Json(r)
}

/// Runs the scorer every `config.every` until `cancel`.
pub async fn run(store: Arc<Store>, mut scorer: AnomalyScorer, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(scorer.config().every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let st = store.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = st.now();
            scorer.score(&st, now);
            scorer
        })
        .await;
        match done {
            Ok(s) => scorer = s,
            Err(e) => {
                tracing::error!(error = %e, "anomaly scoring task failed; scoring stops");
                return;
            }
        }
    }
}
