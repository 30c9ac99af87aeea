//! The read side of the HTTP API under `/api/v1`: `series`, `query`, `nodes` and
//! `openapi.json`. [`router`] returns these routes; `crate::server` merges them with the other
//! rooms' routers (`policies`, `decisions`, `actions`) and applies auth.

pub mod types;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query as QueryParamsExtract, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::query::{Across, Query, QueryError, Selector, Stat};
use crate::store::Store;
use crate::telemetry::QueryStats;
use types::*;

/// What the API handlers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<Store>,
    /// Query latency counters.
    pub queries: Arc<QueryStats>,
    /// Age after which a node is stale.
    pub node_stale_after: Duration,
    /// Age after which a node is lost.
    pub node_lost_after: Duration,
    /// With the remote backend, where `/api/v1/query` reads.
    pub remote: Option<Arc<crate::remote::PromSource>>,
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ApiError { error: msg.into() })).into_response()
}

/// Parses `now`, `-5m` (relative to now) or Unix nanoseconds.
pub fn parse_time(s: &str, now: u64) -> Result<u64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('-') {
        return humantime::parse_duration(rel)
            .map(|d| now.saturating_sub(d.as_nanos() as u64))
            .map_err(|e| format!("bad relative time {s:?}: {e}"));
    }
    s.parse::<u64>().map_err(|_| format!("bad time {s:?}: use Unix nanoseconds, `now` or `-5m`"))
}

fn parse_dur(s: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad {what} {s:?}: {e} (write it like 30s, 5m)"))
}

async fn series(
    State(st): State<ApiState>,
    p: Result<QueryParamsExtract<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let QueryParamsExtract(p) = match p {
        Ok(p) => p,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = p.limit.unwrap_or(1000);
    let Some(sel) = p.selector else {
        let metrics = st
            .store
            .metrics()
            .into_iter()
            .map(|(name, kind, series)| MetricItem { name, kind: kind_name(kind).into(), series })
            .collect();
        return Json(SeriesResponse { metrics, ..Default::default() }).into_response();
    };
    let sel = match Selector::parse(&sel) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let all = st.store.select(&sel);
    let truncated = all.len() > limit;
    let series = all
        .into_iter()
        .take(limit)
        .map(|s| SeriesItem {
            metric: s.metric,
            kind: kind_name(s.kind).into(),
            labels: s.labels.to_map(),
            last_unix_nano: s.last_ts,
        })
        .collect();
    Json(SeriesResponse { series, metrics: Vec::new(), truncated }).into_response()
}

fn kind_name(k: crate::store::SeriesKind) -> &'static str {
    match k {
        crate::store::SeriesKind::Gauge => "gauge",
        crate::store::SeriesKind::Counter => "counter",
        crate::store::SeriesKind::Histogram => "histogram",
    }
}

/// Builds and runs a query from API parameters.
pub fn run_query(store: &Store, p: &QueryParams) -> Result<QueryResponse, (StatusCode, String)> {
    run_query_on(store, None, p)
}

/// [`run_query`] over the remote store when one is given (the store still gives `now`).
pub fn run_query_on(
    store: &Store,
    remote: Option<&crate::remote::PromSource>,
    p: &QueryParams,
) -> Result<QueryResponse, (StatusCode, String)> {
    let badreq = |m: String| (StatusCode::BAD_REQUEST, m);
    let now = store.now();
    let selector = Selector::parse(&p.selector).map_err(|e| badreq(e.to_string()))?;
    let stat: Stat = p.stat.parse().map_err(badreq)?;
    let window = match &p.window {
        Some(w) => parse_dur(w, "window").map_err(badreq)?,
        None => Duration::from_secs(60),
    };
    let mut q = Query::new(selector, stat, window);
    if let Some(g) = &p.group_by {
        q.group_by = g.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    }
    if let Some(a) = &p.across {
        q.across = Some(a.parse::<Across>().map_err(|e| badreq(e.to_string()))?);
    }
    let qerr = |e: QueryError| match e {
        QueryError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        QueryError::Remote(_) => (StatusCode::BAD_GATEWAY, e.to_string()),
        _ => (StatusCode::BAD_REQUEST, e.to_string()),
    };
    let to_map = |l: &crate::store::Labels| l.to_map();
    match (&p.start, &p.end, &p.step) {
        (None, None, None) => {
            let at = match &p.time {
                Some(t) => parse_time(t, now).map_err(badreq)?,
                None => now,
            };
            let groups = match remote {
                Some(r) => r.instant(&q, at),
                None => store.instant(&q, at),
            }
            .map_err(qerr)?;
            Ok(QueryResponse {
                stat: stat.to_string(),
                window_seconds: window.as_secs_f64(),
                time_unix_nano: at,
                result: QueryResult::Instant(
                    groups
                        .iter()
                        .map(|g| InstantGroup {
                            group: to_map(&g.group),
                            value: g.value,
                            series: g.series,
                        })
                        .collect(),
                ),
            })
        }
        (Some(s), e, Some(step)) => {
            let start = parse_time(s, now).map_err(badreq)?;
            let end = match e {
                Some(e) => parse_time(e, now).map_err(badreq)?,
                None => now,
            };
            let step = parse_dur(step, "step").map_err(badreq)?;
            let groups = match remote {
                Some(r) => r.range(&q, start, end, step),
                None => store.range(&q, start, end, step),
            }
            .map_err(qerr)?;
            Ok(QueryResponse {
                stat: stat.to_string(),
                window_seconds: window.as_secs_f64(),
                time_unix_nano: end,
                result: QueryResult::Range(
                    groups
                        .iter()
                        .map(|g| RangeGroup {
                            group: to_map(&g.group),
                            points: g
                                .points
                                .iter()
                                .map(|(t, v)| RangePoint { t: *t, v: *v })
                                .collect(),
                        })
                        .collect(),
                ),
            })
        }
        _ => Err(badreq("a range query needs start and step (end defaults to now)".into())),
    }
}

async fn query(
    State(st): State<ApiState>,
    p: Result<QueryParamsExtract<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let QueryParamsExtract(p) = match p {
        Ok(p) => p,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let store = st.store.clone();
    let started = tokio::time::Instant::now();
    let remote = st.remote.clone();
    let r = tokio::task::spawn_blocking(move || run_query_on(&store, remote.as_deref(), &p)).await;
    let r = match r {
        Ok(r) => r,
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}"))),
    };
    st.queries.observe(started.elapsed(), r.is_ok());
    match r {
        Ok(resp) => Json(resp).into_response(),
        Err((code, msg)) => bad(code, msg),
    }
}

/// Lists nodes with health as of `now`.
pub fn list_nodes(
    store: &Store,
    now: u64,
    stale_after: Duration,
    lost_after: Duration,
) -> NodesResponse {
    let mut nodes: Vec<NodeItem> = store
        .nodes()
        .iter()
        .map(|n| {
            let last = n.last_seen.load(std::sync::atomic::Ordering::Relaxed);
            let age = now.saturating_sub(last);
            let health = if age > lost_after.as_nanos() as u64 {
                NodeHealth::Lost
            } else if age > stale_after.as_nanos() as u64 {
                NodeHealth::Stale
            } else {
                NodeHealth::Ok
            };
            NodeItem {
                name: n.name.clone(),
                host_id: n.host_id.clone(),
                last_seen_unix_nano: last,
                age_seconds: age as f64 / 1e9,
                health,
                gpu_count: n.gpus.len(),
                labels: n.labels.to_map(),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name).then(a.host_id.cmp(&b.host_id)));
    NodesResponse { nodes, now_unix_nano: now }
}

async fn nodes(State(st): State<ApiState>) -> Response {
    Json(list_nodes(&st.store, st.store.now(), st.node_stale_after, st.node_lost_after))
        .into_response()
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// The OpenAPI 3 description of the store endpoints.
pub fn openapi_document() -> serde_json::Value {
    let param = |name: &str, desc: &str, required: bool| serde_json::json!({"name": name, "in": "query", "required": required, "description": desc, "schema": {"type": "string"}});
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Stoker collector API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/series": {"get": {
                "summary": "List metric names, or the series matching a selector.",
                "parameters": [param("selector", "metric{key=\"v\",key!=\"v\",key=~\"re\",key!~\"re\"}", false), param("limit", "most series returned (default 1000)", false)],
                "responses": {"200": {"description": "SeriesResponse: {series: [{metric, kind, labels, last_unix_nano}], metrics: [{name, kind, series}], truncated}"}, "400": {"description": "ApiError"}}
            }},
            "/api/v1/query": {"get": {
                "summary": "Instant (time) or range (start, end, step) query of a statistic over a window, grouped by attributes.",
                "parameters": [
                    param("selector", "series selector", true),
                    param("stat", "mean|min|max|sum|count|last|rate|increase|median|pNN|quantile(q)", true),
                    param("window", "window of the statistic, e.g. 30s (default 1m)", false),
                    param("group_by", "comma-separated attribute names", false),
                    param("across", "mean|sum|min|max|count: combine per-series values", false),
                    param("time", "instant: Unix nanos, now or -5m", false),
                    param("start", "range start", false), param("end", "range end (default now)", false), param("step", "range step, e.g. 15s", false)
                ],
                "responses": {"200": {"description": "QueryResponse: {stat, window_seconds, time_unix_nano, result: {type: instant|range, groups: [...]}}"}, "400": {"description": "ApiError"}}
            }},
            "/api/v1/nodes": {"get": {
                "summary": "Nodes (agents) with last-seen time, health (ok|stale|lost), GPU count and labels.",
                "responses": {"200": {"description": "NodesResponse: {nodes: [{name, host_id, last_seen_unix_nano, age_seconds, health, gpu_count, labels}], now_unix_nano}"}}
            }},
            "/api/v1/openapi.json": {"get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI 3 JSON"}}}},
            "/api/v1/anomalies": {"get": {
                "summary": "Nodes and models on nodes flagged by the anomaly scorer (every minute) against their peers or their own history, highest score first.",
                "responses": {"200": {"description": "AnomaliesResponse: {evaluatedAt: u64 unix nanos | null, anomalies: [{subject, node, model (null for node-level), baseline: peers|history, feature, value, expected, score, why, since}]}"}}
            }},
            "/api/v1/policies": {"get": {
                "summary": "Policies in force with each rule's state (ok|pending|firing|cooling-down|dry-run), last decision and forecast; errors of a refused reload. Present when the policy engine runs (serve --policies).",
                "responses": {"200": {"description": "PoliciesResponse: {policies: [{name, file, target, rules: [{rule, kind, mode, state, pending_since, cooling_down_until, last_decision, problem, problem_since, provisioned, ready, model: {fit, samples, mape}}], forecast}], errors, warnings, last_reload}"}}
            }},
            "/api/v1/decisions": {"get": {
                "summary": "Decision records, newest first. Present when the policy engine runs.",
                "parameters": [
                    {"name": "policy", "in": "query", "schema": {"type": "string"}},
                    {"name": "rule", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}}
                ],
                "responses": {"200": {"description": "DecisionsResponse: {decisions: [{time, policy, rule, kind, mode, inputs, ..., key, outcome}]}"}}
            }},
            "/api/v1/actions": {"get": {
                "summary": "Actions sent to actuators (resizes and jobs) with their status and outcome, newest first. Present when the policy engine runs.",
                "parameters": [
                    {"name": "policy", "in": "query", "schema": {"type": "string"}},
                    {"name": "rule", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}}
                ],
                "responses": {"200": {"description": "ActionsResponse: {actions: [ActionRecord]}"}}
            }},
            "/v1/metrics": {"post": {"summary": "OTLP/HTTP metrics ingest (on --otlp-http-listen; application/x-protobuf or application/json, optionally Content-Encoding: gzip; write token).", "responses": {"200": {"description": "ExportMetricsServiceResponse, with partial_success when points were refused"}, "400": {"description": "undecodable body or corrupt gzip"}, "401": {"description": "missing or wrong token"}, "413": {"description": "body over server.max_body_bytes (for gzip: once inflated)"}, "415": {"description": "unsupported content type or content encoding"}, "503": {"description": "store catching up; retry"}}}}
        }
    })
}

/// The store endpoints under `/api/v1`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/series", get(series))
        .route("/api/v1/query", get(query))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(state)
}
