//! [`HttpSource`]: the dashboard's [`Source`] over the collector's HTTP API (`/api/v1`).
//!
//! Each [`Need`] maps onto the fewest calls that fill its screen, all issued at once:
//! grouped instant queries (one per column, grouped by node or by model and version) rather
//! than one query per node, and range queries only for the one node or the models shown. The
//! wire types are the collector's own (`stoker_collector::api::types`,
//! `stoker_collector::policy::api`); this module converts them into the view model and
//! counts the requests and bytes it asked for, so a benchmark can show what a screen costs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::try_join_all;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use stoker_collector::anomaly::{AnomaliesResponse, AnomalyItem};
use stoker_collector::api::types::{
    InstantGroup, NodesResponse, QueryParams, QueryResponse, QueryResult, RangeGroup,
};
use stoker_collector::policy::api::{
    ActionsResponse, DecisionsResponse, ForecastStatus, PoliciesResponse,
    RuleState as WireRuleState, RuleStatus,
};
use stoker_collector::policy::engine::{Action, Decision, OutcomeStatus, RuleKind as WireRuleKind};

use crate::client::{Need, Snapshot, Source, SourceError};
use crate::model::{
    ActuatorOutcome, Anomaly, ClusterStatus, ConfidenceHistogram, ConstraintStep, DecisionInput,
    DecisionOutcome, DecisionView, FleetRow, ForecastView, GpuStatus, GpuView, JobStatus,
    LatencyHistory, ModelVersionView, ModelView, NextAction, NodeDetail, NodeHealth, Percentiles,
    ProcessView, RuleInput, RuleKind, RuleProblem, RuleState, RuleView, Series, ServiceView, Unit,
    XidEvent,
};
use crate::outcome;

/// Per-request timeout: the fetch loop has its own overall timeout; this one keeps a single
/// stuck connection from holding a whole refresh.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Window of "current value" queries: long enough to hold a few agent intervals.
const NOW_WINDOW: &str = "1m";

/// Window in which an XID error counts as recent on the Fleet and Node screens.
const XID_WINDOW: &str = "10m";

/// Bounds of the confidence histogram on the Models screen (the last bucket is open above).
const CONFIDENCE_BOUNDS: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];

/// Quantiles asked for to place the confidence distribution onto [`CONFIDENCE_BOUNDS`]: the
/// query API answers quantiles, not bucket counts.
const CONFIDENCE_QUANTILES: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

impl From<&AnomalyItem> for Anomaly {
    fn from(a: &AnomalyItem) -> Anomaly {
        Anomaly {
            subject: a.subject.clone(),
            node: a.node.clone(),
            model: a.model.clone(),
            baseline: a.baseline.clone(),
            feature: a.feature.clone(),
            value: a.value,
            expected: a.expected,
            score: a.score,
            why: a.why.clone(),
            since: a.since,
        }
    }
}

/// Requests made and response bytes read since the source was built.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    /// `(requests, bytes)` so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// The dashboard's source over the collector's HTTP API.
#[derive(Debug, Clone)]
pub struct HttpSource {
    client: reqwest::Client,
    base: Url,
    token: Option<Arc<str>>,
    traffic: Arc<Traffic>,
}

impl HttpSource {
    /// A source for the collector at `base_url` (e.g. `http://127.0.0.1:7700`), sending
    /// `token` as a bearer token when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<HttpSource, SourceError> {
        let base = Url::parse(base_url)
            .map_err(|e| SourceError::Unreachable(format!("bad collector URL {base_url}: {e}")))?;
        // Installing twice is an error we do not care about: someone already chose ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| SourceError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpSource { client, base, token: token.map(Arc::from), traffic: Arc::default() })
    }

    /// The request and byte counters, shared with clones of this source.
    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, SourceError> {
        let body = self.get_body(path, query).await?;
        serde_json::from_slice(&body).map_err(|e| SourceError::Decode(format!("{path}: {e}")))
    }

    /// The body of a successful answer to `GET path?query`.
    async fn get_body(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes, SourceError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| SourceError::Unreachable(format!("bad path {path}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self.client.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| unreachable(&e))?;
        self.traffic.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if status == StatusCode::NOT_FOUND {
            return Err(SourceError::NotFound(path.to_owned()));
        }
        if !status.is_success() {
            return Err(SourceError::Status { status: status.as_u16(), path: path.to_owned() });
        }
        Ok(body)
    }

    async fn query(&self, p: QueryParams) -> Result<QueryResponse, SourceError> {
        let mut q: Vec<(&str, String)> = vec![("selector", p.selector), ("stat", p.stat)];
        let opt = [
            ("window", p.window),
            ("group_by", p.group_by),
            ("across", p.across),
            ("time", p.time),
            ("start", p.start),
            ("end", p.end),
            ("step", p.step),
        ];
        q.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        self.get("/api/v1/query", &q).await
    }

    /// The anomalies flagged now; none when the collector has no anomaly detection (404).
    async fn anomalies(&self) -> Result<Vec<AnomalyItem>, SourceError> {
        match self.get::<AnomaliesResponse>("/api/v1/anomalies", &[]).await {
            Ok(r) => Ok(r.anomalies),
            Err(SourceError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn fleet(&self) -> Result<Snapshot, SourceError> {
        let by = "host.name";
        let util = "hw.gpu.utilization{hw.gpu.task=\"general\"}";
        let cols = [
            instant(util, "last", by, Some("mean")),
            instant(util, "last", by, Some("max")),
            instant("hw.gpu.memory.usage", "last", by, Some("sum")),
            instant("hw.gpu.memory.limit", "last", by, Some("sum")),
            instant("hw.power", "last", by, Some("sum")),
            instant("hw.temperature", "last", by, Some("max")),
            instant("system.cpu.utilization", "last", by, Some("mean")),
            instant("system.memory.usage", "last", by, Some("sum")),
            instant("system.memory.limit", "last", by, Some("sum")),
            // One series per GPU and state, valued 1 for the state the GPU is in.
            instant("hw.status{hw.state!=\"ok\"}", "last", "host.name,hw.state", Some("sum")),
            window(
                instant(XID_SELECTOR, "increase", "host.name,error.type", Some("sum")),
                XID_WINDOW,
            ),
        ];
        let nodes = self.get::<NodesResponse>("/api/v1/nodes", &[]);
        let queries = try_join_all(cols.into_iter().map(|p| self.query(p)));
        let (nodes, cols, anomalies) =
            futures_util::future::try_join3(nodes, queries, self.anomalies()).await?;
        let per_host: Vec<HashMap<&str, f64>> =
            cols.iter().take(9).map(|r| by_label(r, "host.name")).collect();
        let mut states: HashMap<&str, (u32, u32)> = HashMap::new();
        for g in instant_groups(&cols[9]) {
            let (Some(host), Some(state)) = (g.group.get("host.name"), g.group.get("hw.state"))
            else {
                continue;
            };
            let n = count(g.value);
            let e = states.entry(host.as_str()).or_default();
            match state.as_str() {
                "failed" => e.0 += n,
                "degraded" => e.1 += n,
                _ => {}
            }
        }
        let mut xids: HashMap<&str, u32> = HashMap::new();
        for g in instant_groups(&cols[10]) {
            if g.value <= 0.0 {
                continue;
            }
            let (Some(host), Some(code)) =
                (g.group.get("host.name"), g.group.get("error.type").and_then(|t| xid_code(t)))
            else {
                continue;
            };
            let e = xids.entry(host.as_str()).or_insert(code);
            *e = (*e).max(code);
        }
        let rows = nodes
            .nodes
            .iter()
            .map(|n| {
                let col = |i: usize| per_host[i].get(n.name.as_str()).copied();
                let (gpus_lost, gpus_degraded) =
                    states.get(n.name.as_str()).copied().unwrap_or_default();
                FleetRow {
                    node: n.name.clone(),
                    gpus: u32::try_from(n.gpu_count).unwrap_or(u32::MAX),
                    gpu_busy_mean: col(0),
                    gpu_busy_max: col(1),
                    gpu_mem_used: col(2).map(bytes),
                    gpu_mem_total: col(3).map(bytes),
                    power_w: col(4),
                    temp_max_c: col(5),
                    cpu: col(6),
                    mem_used: col(7).map(bytes),
                    mem_total: col(8).map(bytes),
                    health: NodeHealth {
                        last_seen: n.last_seen_unix_nano,
                        gpus_lost,
                        gpus_degraded,
                        // The query says an XID happened within XID_WINDOW, not when: the
                        // answer's time is the latest it can have been.
                        last_xid: xids
                            .get(n.name.as_str())
                            .map(|&code| XidEvent { code, at: cols[10].time_unix_nano }),
                        anomalies: u32::try_from(
                            anomalies.iter().filter(|a| a.node == n.name).count(),
                        )
                        .unwrap_or(u32::MAX),
                    },
                }
            })
            .collect();
        Ok(Snapshot::Fleet(rows))
    }

    async fn node(
        &self,
        node: &str,
        win: Duration,
        step: Duration,
    ) -> Result<Snapshot, SourceError> {
        let host = format!("host.name=\"{}\"", escape(node));
        let on = |metric: &str, more: &str| {
            if more.is_empty() {
                format!("{metric}{{{host}}}")
            } else {
                format!("{metric}{{{host},{more}}}")
            }
        };
        let gpu = "hw.id,hw.model,gpu.index";
        let range = |sel: String, by: &str| ranged(&sel, "mean", by, win, step);
        let general = "hw.gpu.task=\"general\"";
        let svc = "service.name,model.name,model.version";
        let qs = [
            range(on("hw.gpu.utilization", general), gpu),
            range(on("hw.gpu.memory.usage", ""), gpu),
            range(on("hw.power", ""), gpu),
            range(on("system.cpu.utilization", ""), "host.name"),
            instant(&on("hw.gpu.memory.limit", ""), "last", gpu, None),
            instant(&on("gpu.memory_controller.utilization", ""), "last", gpu, None),
            instant(&on("hw.temperature", ""), "last", gpu, None),
            instant(&on("gpu.clock.sm", ""), "last", gpu, None),
            instant(&on("gpu.power.limit", ""), "last", gpu, None),
            instant(&on("hw.status", ""), "last", "hw.id,hw.model,gpu.index,hw.state", None),
            window(
                instant(
                    &on("hw.errors", "error.type=~\"xid_.*\""),
                    "increase",
                    "hw.id,error.type",
                    None,
                ),
                XID_WINDOW,
            ),
            instant(&on("system.memory.usage", ""), "last", "host.name", Some("sum")),
            instant(&on("system.memory.limit", ""), "last", "host.name", Some("sum")),
            instant(&on("process.gpu.memory.usage", ""), "last", "process.pid,gpu.index", None),
            instant(&on("process.gpu.utilization", ""), "last", "process.pid,gpu.index", None),
            instant(
                &on("process.cpu.utilization", ""),
                "last",
                "process.pid,process.executable.name",
                None,
            ),
            instant(&on("process.memory.usage", ""), "last", "process.pid", None),
            instant(&on("inference.request.duration", ""), "p50", svc, None),
            instant(&on("inference.request.duration", ""), "p95", svc, None),
            instant(&on("inference.request.duration", ""), "p99", svc, None),
            instant(&on("inference.requests", ""), "rate", &with_error_keys(svc), None),
        ];
        let (r, anomalies) = futures_util::future::try_join(
            try_join_all(qs.into_iter().map(|p| self.query(p))),
            self.anomalies(),
        )
        .await?;
        // The collector lists them highest score first; the filter keeps that order.
        let anomalies: Vec<Anomaly> =
            anomalies.iter().filter(|a| a.node == node).map(Anomaly::from).collect();
        let status = instant_groups(&r[9]);
        let cpu = range_groups(&r[3]);
        if status.is_empty() && range_groups(&r[0]).is_empty() && cpu.is_empty() {
            return Err(SourceError::NotFound(format!("node {node}")));
        }
        let last_seen = [&r[0], &r[3]]
            .iter()
            .flat_map(|q| range_groups(q).iter())
            .filter_map(|g| g.points.last().map(|p| p.t))
            .max()
            .unwrap_or(0);
        // Every GPU the node reports, lost ones included (they send only hw.status).
        let mut gpus: BTreeMap<String, GpuView> = BTreeMap::new();
        for g in status.iter().chain(instant_groups(&r[4])) {
            let Some(id) = g.group.get("hw.id") else {
                continue;
            };
            let v = gpus.entry(id.clone()).or_insert_with(|| GpuView {
                index: g.group.get("gpu.index").and_then(|i| i.parse().ok()).unwrap_or(0),
                uuid: id.clone(),
                model: g.group.get("hw.model").cloned().unwrap_or_default(),
                status: GpuStatus::Ok,
                util: None,
                mem_ctrl_util: None,
                mem_used: None,
                mem_total: None,
                power_w: None,
                power_limit_w: None,
                temp_c: None,
                sm_clock_mhz: None,
                last_xid: None,
                util_history: Series::default(),
                mem_history: Series::default(),
                power_history: Series::default(),
            });
            if g.value >= 0.5 {
                match g.group.get("hw.state").map(String::as_str) {
                    Some("failed") => v.status = GpuStatus::Failed,
                    Some("degraded") => v.status = GpuStatus::Degraded,
                    _ => {}
                }
            }
        }
        for (i, q) in r.iter().enumerate().take(3) {
            for g in range_groups(q) {
                let Some(v) = g.group.get("hw.id").and_then(|id| gpus.get_mut(id)) else {
                    continue;
                };
                let s = series(g);
                match i {
                    0 => {
                        v.util = s.last();
                        v.util_history = s;
                    }
                    1 => {
                        v.mem_used = s.last().map(bytes);
                        v.mem_history = s;
                    }
                    _ => {
                        v.power_w = s.last();
                        v.power_history = s;
                    }
                }
            }
        }
        for (i, q) in r.iter().enumerate().take(9).skip(4) {
            for g in instant_groups(q) {
                let Some(v) = g.group.get("hw.id").and_then(|id| gpus.get_mut(id)) else {
                    continue;
                };
                let x = Some(g.value);
                match i {
                    4 => v.mem_total = x.map(bytes),
                    5 => v.mem_ctrl_util = x,
                    6 => v.temp_c = x,
                    7 => v.sm_clock_mhz = x,
                    _ => v.power_limit_w = x,
                }
            }
        }
        for g in instant_groups(&r[10]) {
            let code = g.group.get("error.type").and_then(|t| xid_code(t));
            let v = g.group.get("hw.id").and_then(|id| gpus.get_mut(id));
            if let (Some(code), Some(v), true) = (code, v, g.value > 0.0) {
                v.last_xid = Some(XidEvent { code, at: r[10].time_unix_nano });
            }
        }
        let mut gpus: Vec<GpuView> = gpus.into_values().collect();
        gpus.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.uuid.cmp(&b.uuid)));
        let first = |q: &QueryResponse| instant_groups(q).first().map(|g| g.value);
        let processes = processes(&r[13], &r[14], &r[15], &r[16]);
        let services = services(&r[17..20], &r[20]);
        Ok(Snapshot::Node(NodeDetail {
            node: node.to_owned(),
            last_seen,
            window: win,
            cpu_history: cpu.first().map(series).unwrap_or_default(),
            mem_used: first(&r[11]).map(bytes),
            mem_total: first(&r[12]).map(bytes),
            gpus,
            processes,
            services,
            anomalies,
        }))
    }

    async fn models(&self, win: Duration, step: Duration) -> Result<Snapshot, SourceError> {
        let by = "model.name,model.version";
        let lat = "inference.request.duration";
        let conf = "inference.prediction.confidence";
        let whole = format!("{}s", win.as_secs().max(1));
        // The values "now" come from the same instant queries, over the same window, as the
        // Node screen's service rows, so the two screens show the same numbers; the range
        // queries only draw the histories.
        let mut qs = vec![
            ranged(lat, "p50", by, win, step),
            ranged(lat, "p95", by, win, step),
            ranged(lat, "p99", by, win, step),
            ranged("inference.requests", "rate", by, win, step),
            instant(lat, "p50", by, None),
            instant(lat, "p95", by, None),
            instant(lat, "p99", by, None),
            instant("inference.requests", "rate", &with_error_keys(by), None),
            window(instant(conf, "mean", by, None), &whole),
            window(instant(conf, "count", by, None), &whole),
            window(
                instant("inference.feedback", "increase", "model.name,model.version,correct", None),
                &whole,
            ),
        ];
        qs.extend(
            CONFIDENCE_QUANTILES
                .iter()
                .map(|q| window(instant(conf, &format!("quantile({q})"), by, None), &whole)),
        );
        let r = try_join_all(qs.into_iter().map(|p| self.query(p))).await?;
        type Key = (String, String);
        // A model is known by its name; a version it does not report is "" (as on the Node
        // screen), not a reason to leave the model out.
        let key = |g: &BTreeMap<String, String>| -> Option<Key> {
            Some((
                g.get("model.name")?.clone(),
                g.get("model.version").cloned().unwrap_or_default(),
            ))
        };
        let mut versions: BTreeMap<Key, ModelVersionView> = BTreeMap::new();
        let blank = |k: &Key| ModelVersionView {
            version: k.1.clone(),
            first_seen: 0,
            rate_rps: None,
            errors_rps: None,
            latency: Percentiles::default(),
            latency_history: LatencyHistory::default(),
            rate_history: Series::default(),
            confidence: ConfidenceHistogram::default(),
            drift: None,
            accuracy: None,
        };
        for (i, q) in r.iter().enumerate().take(4) {
            for g in range_groups(q) {
                let Some(k) = key(&g.group) else { continue };
                let v = versions.entry(k.clone()).or_insert_with(|| blank(&k));
                let s = series(g);
                if let Some(&(t, _)) = s.points.first() {
                    v.first_seen = if v.first_seen == 0 { t } else { v.first_seen.min(t) };
                }
                match i {
                    0 => v.latency_history.p50 = s,
                    1 => v.latency_history.p95 = s,
                    2 => v.latency_history.p99 = s,
                    _ => v.rate_history = s,
                }
            }
        }
        for (i, q) in r.iter().enumerate().skip(4).take(3) {
            for g in instant_groups(q) {
                let Some(k) = key(&g.group) else { continue };
                let v = versions.entry(k.clone()).or_insert_with(|| blank(&k));
                if v.first_seen == 0 {
                    v.first_seen = q.time_unix_nano;
                }
                let x = Some(g.value);
                match i {
                    4 => v.latency.p50 = x,
                    5 => v.latency.p95 = x,
                    _ => v.latency.p99 = x,
                }
            }
        }
        for (k, (rate, errors)) in request_rates(&r[7], &["model.name", "model.version"]) {
            let [name, version] = <[String; 2]>::try_from(k).unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            let k = (name, version);
            let v = versions.entry(k.clone()).or_insert_with(|| blank(&k));
            if v.first_seen == 0 {
                v.first_seen = r[7].time_unix_nano;
            }
            v.rate_rps = Some(rate);
            v.errors_rps = Some(errors);
        }
        let at = |i: usize, k: &Key| {
            instant_groups(&r[i])
                .iter()
                .find(|g| key(&g.group).as_ref() == Some(k))
                .map(|g| g.value)
        };
        for (k, v) in &mut versions {
            let quantiles: Vec<(f64, f64)> = CONFIDENCE_QUANTILES
                .iter()
                .enumerate()
                .filter_map(|(i, &q)| at(11 + i, k).map(|x| (q, x)))
                .collect();
            v.confidence = confidence(at(9, k), at(8, k), &quantiles);
            let (mut right, mut total) = (0.0, 0.0);
            for g in instant_groups(&r[10]) {
                if key(&g.group).as_ref() == Some(k) {
                    total += g.value;
                    if g.group.get("correct").map(String::as_str) == Some("true") {
                        right += g.value;
                    }
                }
            }
            v.accuracy = (total > 0.0).then(|| right / total);
        }
        let mut models: BTreeMap<String, Vec<ModelVersionView>> = BTreeMap::new();
        for ((name, _), v) in versions {
            models.entry(name).or_default().push(v);
        }
        let views = models
            .into_iter()
            .map(|(name, mut versions)| {
                versions.sort_by(|a, b| {
                    b.first_seen.cmp(&a.first_seen).then(b.version.cmp(&a.version))
                });
                let current_version = versions
                    .iter()
                    .max_by(|a, b| a.rate_rps.unwrap_or(0.0).total_cmp(&b.rate_rps.unwrap_or(0.0)))
                    .map(|v| v.version.clone())
                    .unwrap_or_default();
                ModelView { name, current_version, versions }
            })
            .collect();
        Ok(Snapshot::Models(views))
    }

    async fn policies(&self) -> Result<Snapshot, SourceError> {
        let path = "/api/v1/policies";
        let body = self.get_body(path, &[]).await?;
        let p: PoliciesResponse = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Decode(format!("{path}: {e}")))?;
        let rules = p
            .policies
            .iter()
            .flat_map(|pol| {
                pol.rules.iter().map(move |r| {
                    let mut v = rule_view(&pol.name, r);
                    if v.kind == RuleKind::Scale {
                        v.forecast = pol.forecast.as_ref().map(forecast_view);
                    }
                    v
                })
            })
            .collect();
        Ok(Snapshot::Policies(rules))
    }

    async fn decisions(&self, limit: usize) -> Result<Snapshot, SourceError> {
        let q = [("limit", limit.to_string())];
        let (d, a) = futures_util::future::try_join(
            self.get::<DecisionsResponse>("/api/v1/decisions", &q),
            self.get::<ActionsResponse>("/api/v1/actions", &q),
        )
        .await?;
        let jobs: HashMap<&str, JobStatus> = a
            .actions
            .iter()
            .filter(|r| matches!(r.action, Action::StartJob { .. }))
            .map(|r| {
                let id = r
                    .outcome
                    .as_ref()
                    .and_then(|o| o.remote_ids.first().cloned())
                    .unwrap_or_else(|| r.key.clone());
                let state = kebab(&r.status);
                (r.key.as_str(), JobStatus { id, state, url: None })
            })
            .collect();
        let views = d.decisions.iter().map(|x| decision_view(x, &jobs)).collect();
        Ok(Snapshot::Decisions(views))
    }
}

impl Source for HttpSource {
    async fn fetch(&mut self, need: &Need) -> Result<Snapshot, SourceError> {
        match need {
            Need::Fleet => self.fleet().await,
            Need::Node { node, window, step } => self.node(node, *window, *step).await,
            Need::Models { window, step } => self.models(*window, *step).await,
            Need::Policies => self.policies().await,
            Need::Decisions { limit } => self.decisions(*limit).await,
        }
    }

    async fn cluster(&mut self) -> Result<Option<ClusterStatus>, SourceError> {
        // A collector from before clustering answers 404: it has nothing to say, which is no
        // error.
        match self.get::<ClusterStatus>("/api/v1/cluster", &[]).await {
            Ok(view) => Ok(Some(view)),
            Err(SourceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

const XID_SELECTOR: &str = "hw.errors{error.type=~\"xid_.*\"}";

fn instant_groups(r: &QueryResponse) -> &[InstantGroup] {
    match &r.result {
        QueryResult::Instant(g) => g,
        QueryResult::Range(_) => &[],
    }
}

fn range_groups(r: &QueryResponse) -> &[RangeGroup] {
    match &r.result {
        QueryResult::Range(g) => g,
        QueryResult::Instant(_) => &[],
    }
}

fn by_label<'a>(r: &'a QueryResponse, label: &str) -> HashMap<&'a str, f64> {
    instant_groups(r)
        .iter()
        .filter_map(|g| g.group.get(label).map(|k| (k.as_str(), g.value)))
        .collect()
}

fn series(g: &RangeGroup) -> Series {
    Series { points: g.points.iter().map(|p| (p.t, p.v)).collect() }
}

fn bytes(v: f64) -> u64 {
    // Float to integer `as` saturates and maps NaN to 0, which is what a gauge of bytes wants.
    v.max(0.0).round() as u64
}

fn count(v: f64) -> u32 {
    v.max(0.0).round() as u32
}

fn xid_code(t: &str) -> Option<u32> {
    t.strip_prefix("xid_")?.parse().ok()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn kebab<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

fn processes(
    gpu_mem: &QueryResponse,
    gpu_util: &QueryResponse,
    cpu: &QueryResponse,
    mem: &QueryResponse,
) -> Vec<ProcessView> {
    let pid_of = |g: &InstantGroup| g.group.get("process.pid").and_then(|p| p.parse::<u32>().ok());
    let names: HashMap<u32, (&str, f64)> = instant_groups(cpu)
        .iter()
        .filter_map(|g| {
            let name = g.group.get("process.executable.name").map_or("", String::as_str);
            Some((pid_of(g)?, (name, g.value)))
        })
        .collect();
    let mems: HashMap<u32, f64> =
        instant_groups(mem).iter().filter_map(|g| Some((pid_of(g)?, g.value))).collect();
    let mut out: BTreeMap<(u32, u32), ProcessView> = BTreeMap::new();
    for (util, q) in [(false, gpu_mem), (true, gpu_util)] {
        for g in instant_groups(q) {
            let Some(pid) = pid_of(g) else { continue };
            let gpu_index = g.group.get("gpu.index").and_then(|i| i.parse().ok()).unwrap_or(0);
            let p = out.entry((pid, gpu_index)).or_insert_with(|| ProcessView {
                pid,
                name: names
                    .get(&pid)
                    .map(|n| n.0)
                    .filter(|n| !n.is_empty())
                    .map_or_else(|| format!("pid {pid}"), str::to_owned),
                gpu_index,
                gpu_mem: None,
                gpu_util: None,
                cpu: names.get(&pid).map(|n| n.1),
                mem: mems.get(&pid).copied().map(bytes),
            });
            if util {
                p.gpu_util = Some(g.value);
            } else {
                p.gpu_mem = Some(bytes(g.value));
            }
        }
    }
    let mut v: Vec<ProcessView> = out.into_values().collect();
    v.sort_by(|a, b| b.gpu_mem.cmp(&a.gpu_mem).then(a.pid.cmp(&b.pid)));
    v
}

/// `group_by` with the attributes [`outcome::is_error`] reads, so that one rate query answers
/// both the request rate and the error rate.
fn with_error_keys(group_by: &str) -> String {
    format!("{group_by},{}", outcome::ERROR_KEYS.join(","))
}

/// A request rate query grouped by `keys` and [`outcome::ERROR_KEYS`], summed back onto the
/// values of `keys` (an absent attribute as ""): `(requests/s, failed requests/s)`.
fn request_rates(r: &QueryResponse, keys: &[&str]) -> BTreeMap<Vec<String>, (f64, f64)> {
    let mut out: BTreeMap<Vec<String>, (f64, f64)> = BTreeMap::new();
    for g in instant_groups(r) {
        let k = keys.iter().map(|k| g.group.get(*k).cloned().unwrap_or_default()).collect();
        let e = out.entry(k).or_default();
        e.0 += g.value;
        if outcome::is_error(&g.group) {
            e.1 += g.value;
        }
    }
    out
}

/// `latency` holds p50, p95 and p99 grouped by service, model and version; `requests` the
/// request rate grouped by those and [`outcome::ERROR_KEYS`].
fn services(latency: &[QueryResponse], requests: &QueryResponse) -> Vec<ServiceView> {
    type Key = (String, String, String);
    let blank = |k: Key| ServiceView {
        name: k.0,
        model: k.1,
        version: k.2,
        rate_rps: None,
        errors_rps: None,
        latency: Percentiles::default(),
    };
    let mut out: BTreeMap<Key, ServiceView> = BTreeMap::new();
    for (i, q) in latency.iter().enumerate() {
        for g in instant_groups(q) {
            let l = |k: &str| g.group.get(k).cloned().unwrap_or_default();
            let k = (l("service.name"), l("model.name"), l("model.version"));
            let s = out.entry(k.clone()).or_insert_with(|| blank(k));
            let x = Some(g.value);
            match i {
                0 => s.latency.p50 = x,
                1 => s.latency.p95 = x,
                _ => s.latency.p99 = x,
            }
        }
    }
    for (k, (rate, errors)) in request_rates(requests, &SERVICE_KEYS) {
        let [name, model, version] = <[String; 3]>::try_from(k).unwrap_or_default();
        let k = (name, model, version);
        let s = out.entry(k.clone()).or_insert_with(|| blank(k));
        s.rate_rps = Some(rate);
        s.errors_rps = Some(errors);
    }
    out.into_values().collect()
}

/// What a service row is keyed by.
const SERVICE_KEYS: [&str; 3] = ["service.name", "model.name", "model.version"];

/// Place a distribution known by its quantiles onto [`CONFIDENCE_BOUNDS`]: the fraction below
/// each bound is interpolated linearly between the neighbouring known quantiles (with 0 at
/// confidence 0 and 1 at confidence 1), then scaled by the observation count.
fn confidence(
    total: Option<f64>,
    mean: Option<f64>,
    quantiles: &[(f64, f64)],
) -> ConfidenceHistogram {
    let Some(total) = total.filter(|t| *t > 0.0) else {
        return ConfidenceHistogram {
            bounds: CONFIDENCE_BOUNDS.to_vec(),
            counts: vec![0; CONFIDENCE_BOUNDS.len() + 1],
            mean,
        };
    };
    // (value, cumulative fraction), ascending in both.
    let mut knots: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    for &(q, x) in quantiles {
        let x = x.clamp(0.0, 1.0);
        if let Some(&(px, pq)) = knots.last() {
            if x >= px && q >= pq {
                knots.push((x, q));
            }
        }
    }
    knots.push((1.0, 1.0));
    let cdf = |b: f64| -> f64 {
        for w in knots.windows(2) {
            let ((x0, q0), (x1, q1)) = (w[0], w[1]);
            if b <= x1 {
                if x1 <= x0 {
                    return q1;
                }
                return q0 + (q1 - q0) * (b - x0) / (x1 - x0);
            }
        }
        1.0
    };
    let mut counts = Vec::with_capacity(CONFIDENCE_BOUNDS.len() + 1);
    let mut below = 0.0;
    for b in CONFIDENCE_BOUNDS {
        let c = cdf(b);
        counts.push(((c - below).max(0.0) * total).round() as u64);
        below = c.max(below);
    }
    counts.push(((1.0 - below).max(0.0) * total).round() as u64);
    ConfidenceHistogram { bounds: CONFIDENCE_BOUNDS.to_vec(), counts, mean }
}

fn unit_of(query: &str) -> Unit {
    if query.contains("duration") || query.contains("latency") {
        Unit::Seconds
    } else if query.contains("utilization") || query.contains("confidence") {
        Unit::Ratio
    } else {
        Unit::Plain
    }
}

/// The last number in `against` (`target 0.05`, `> 0.2`), the threshold a rule compares with.
fn threshold(against: &str) -> Option<f64> {
    against
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .rev()
        .find_map(|w| w.trim_start_matches(['<', '>', '=']).parse::<f64>().ok())
}

fn forecast_view(f: &ForecastStatus) -> ForecastView {
    ForecastView {
        mode: kebab(&f.mode),
        load: f.last.as_ref().map(|p| p.value),
        replicas: f.last.as_ref().map(|p| p.replicas),
        mape: f.mape,
        naive_mape: f.naive_mape,
        scored: f.scored,
        problem: f.problem.clone(),
    }
}

/// Why a rule cannot act: what the collector says, else what its last decision shows (an
/// action its actuator failed, or a scaling decision made without the target's size).
fn rule_problem(r: &RuleStatus) -> Option<RuleProblem> {
    if let Some(what) = r.problem.as_deref().filter(|p| !p.trim().is_empty()) {
        return Some(RuleProblem { what: what.to_owned(), at: r.problem_since });
    }
    let d = r.last_decision.as_ref()?;
    if let Some(o) = d.outcome.as_ref().filter(|o| o.status == OutcomeStatus::Failed) {
        let what = if o.message.is_empty() {
            "the actuator failed".to_owned()
        } else {
            format!("the actuator failed: {}", o.message)
        };
        return Some(RuleProblem { what, at: Some(d.time) });
    }
    if d.kind == WireRuleKind::Scale && d.current.is_none() {
        return Some(RuleProblem {
            what: "the target's current size cannot be read".to_owned(),
            at: Some(d.time),
        });
    }
    None
}

fn rule_view(policy: &str, r: &RuleStatus) -> RuleView {
    let d = r.last_decision.as_ref();
    let inputs = d
        .map(|d| {
            d.inputs
                .iter()
                .filter_map(|i| {
                    Some(RuleInput {
                        name: i.name.clone(),
                        current: i.value,
                        target: threshold(&i.against)?,
                        unit: unit_of(&i.query),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let state = match r.state {
        WireRuleState::Ok => RuleState::Ok,
        WireRuleState::Pending => RuleState::Pending { since: r.pending_since.unwrap_or(0) },
        WireRuleState::Firing => RuleState::Firing,
        WireRuleState::CoolingDown => {
            RuleState::Cooling { until: r.cooling_down_until.unwrap_or(0) }
        }
        WireRuleState::DryRun => RuleState::DryRun,
    };
    let next_action = match (r.state, r.cooling_down_until) {
        (WireRuleState::DryRun, _) => NextAction::Blocked("dry-run".to_owned()),
        (_, Some(at)) => NextAction::At { at, reason: "cooldown".to_owned() },
        _ => NextAction::Now,
    };
    RuleView {
        policy: policy.to_owned(),
        rule: r.rule.clone(),
        kind: match r.kind {
            WireRuleKind::Scale => RuleKind::Scale,
            WireRuleKind::Retrain => RuleKind::Retrain,
        },
        state,
        inputs,
        // The policies API reports the sizes a decision saw but not the target's min/max,
        // so no replica gauge is drawn rather than one with invented bounds.
        replicas: None,
        next_action,
        forecast: None,
        problem: rule_problem(r),
        // A resizer that cannot tell ready replicas apart counts every one as ready.
        ready: r.provisioned.map(|p| (r.ready.unwrap_or(p), p)),
    }
}

fn decision_view(d: &Decision, jobs: &HashMap<&str, JobStatus>) -> DecisionView {
    let recommendation = match (d.kind, d.current, d.recommendation, d.condition) {
        (WireRuleKind::Scale, Some(c), Some(r), _) => format!("replicas {c} -> {r}"),
        (WireRuleKind::Scale, _, _, _) => "no recommendation (missing data)".to_owned(),
        (WireRuleKind::Retrain, _, _, Some(true)) => "condition holds".to_owned(),
        (WireRuleKind::Retrain, _, _, Some(false)) => "condition does not hold".to_owned(),
        (WireRuleKind::Retrain, _, _, None) => "condition unknown (missing data)".to_owned(),
    };
    let outcome = match &d.action {
        Action::None => DecisionOutcome::NoAction(d.reason.clone()),
        Action::Resize { from, to } => {
            DecisionOutcome::Action(format!("scale {} {from} -> {to}", d.policy))
        }
        Action::StartJob { .. } => {
            DecisionOutcome::Action(format!("start retrain job for {}", d.rule))
        }
    };
    let id = d.key.clone().unwrap_or_else(|| format!("{}/{}/{}", d.policy, d.rule, d.time));
    DecisionView {
        time: d.time,
        policy: d.policy.clone(),
        rule: d.rule.clone(),
        dry_run: d.mode == stoker_collector::policy::format::Mode::DryRun,
        inputs: d
            .inputs
            .iter()
            .map(|i| DecisionInput {
                name: i.name.clone(),
                value: i.value,
                unit: unit_of(&i.query),
            })
            .collect(),
        recommendation,
        constraints: d
            .constraints
            .iter()
            .map(|c| ConstraintStep {
                name: c.constraint.to_string(),
                effect: c.detail.clone(),
                changed: c.changed,
            })
            .collect(),
        outcome,
        actuator: d.outcome.as_ref().map(|o| ActuatorOutcome {
            // Decisions do not name their actuator; the kind of action stands in for it.
            actuator: match d.action {
                Action::StartJob { .. } => "job".to_owned(),
                _ => "scale".to_owned(),
            },
            attempts: o.attempts,
            failed: o.status == OutcomeStatus::Failed,
            status: if o.message.is_empty() {
                kebab(&o.status)
            } else {
                format!("{}: {}", kebab(&o.status), o.message)
            },
            remote_ids: o.remote_ids.clone(),
        }),
        job: d.key.as_deref().and_then(|k| jobs.get(k).cloned()),
        id,
    }
}

fn unreachable(e: &reqwest::Error) -> SourceError {
    if e.is_decode() {
        SourceError::Decode(e.to_string())
    } else {
        SourceError::Unreachable(e.to_string())
    }
}

fn instant(selector: &str, stat: &str, group_by: &str, across: Option<&str>) -> QueryParams {
    QueryParams {
        selector: selector.to_owned(),
        stat: stat.to_owned(),
        window: Some(NOW_WINDOW.to_owned()),
        group_by: Some(group_by.to_owned()),
        across: across.map(str::to_owned),
        ..QueryParams::default()
    }
}

fn window(mut p: QueryParams, window: &str) -> QueryParams {
    p.window = Some(window.to_owned());
    p
}

fn ranged(
    selector: &str,
    stat: &str,
    group_by: &str,
    win: Duration,
    step: Duration,
) -> QueryParams {
    let step_s = step.as_secs().max(1);
    QueryParams {
        selector: selector.to_owned(),
        stat: stat.to_owned(),
        // Each point summarises the step before it, so the chart neither gaps nor smears.
        window: Some(format!("{step_s}s")),
        group_by: Some(group_by.to_owned()),
        start: Some(format!("-{}s", win.as_secs().max(step_s))),
        step: Some(format!("{step_s}s")),
        ..QueryParams::default()
    }
}
