//! Reading series back from a Prometheus-compatible store: [`PromClient`] speaks the
//! Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`, `/api/v1/label/__name__/values`),
//! and [`PromSource`] answers the policy engine ([`SignalSource`]) and `/api/v1/query`
//! ([`PromSource::instant`], [`PromSource::range`]) with PromQL.
//!
//! ## Statistics as PromQL
//!
//! A selector's OTel metric name is resolved to the stored names ([`super::names`]): a
//! histogram if `<base>[_<unit>]_bucket` exists, a counter if `<base>[_<unit>]_total` does,
//! a gauge otherwise. With `G` the group (`by (host_name, …)`) and `[w]` the window:
//!
//! | stat | gauge / counter | histogram |
//! | --- | --- | --- |
//! | `pNN` | `quantile G (q, quantile_over_time(q, x[w]))` | `histogram_quantile(q, sum by (le, G) (increase(x_bucket[w])))` |
//! | `mean` | `sum G (sum_over_time(x[w])) / sum G (count_over_time(x[w]))` | `sum G (increase(x_sum[w])) / sum G (increase(x_count[w]))` |
//! | `rate`, `increase` | `sum G (rate(x[w]))`, `sum G (increase(x[w]))` | the same over `x_count` |
//! | `count`, `sum` | `sum G (count_over_time(..))`, `sum G (sum_over_time(..))` | `increase` of `x_count`, `x_sum` |
//! | `min`, `max` | `min G (min_over_time(..))`, `max G (max_over_time(..))` | `histogram_quantile(0 / 1, ..)`: a bucket bound |
//! | `last` | `sum G (last_over_time(x[w]))` (the engine sums series; the API's default is `avg`) | over `x_count` |
//!
//! Histogram quantiles come from the same merged buckets as in the embedded store, so they
//! agree within one bucket. `rate`/`increase` follow the backend's own semantics: Prometheus
//! extrapolates to the window's edges, VictoriaMetrics does not, so they differ from the
//! embedded store's exact increase by up to one sample interval over the window.
//!
//! ## One query per distinct signal and tick
//!
//! The engine reads each rule's signal at the tick's `now`. [`PromSource`] answers a read
//! with one query *grouped by the selector's attribute keys* (`sum by (host_name) (...)`) and
//! keeps every group's value for that `now`: 1,000 rules that differ only in `host.name` are
//! one HTTP request per tick, not 1,000.
//!
//! The engine's reads are synchronous; the HTTP calls run on a small runtime of their own
//! thread, so a read never blocks the caller's runtime on I/O it drives itself. A failure or a
//! timeout is a [`SignalError`]: the rule's `onMissingData` applies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;

use super::RemoteConfig;
use super::names::{self, Family, UNIT_SUFFIXES};
use crate::clock::SharedClock;
use crate::policy::signal::{
    Histogram, Selector, SignalError, SignalQuery, SignalSource, VersionSeen, chunked_range, nanos,
};
use crate::query::{self, Across, GroupRange, GroupValue, Matcher, QueryError};
use crate::store::Labels;

/// The attribute whose newest value [`SignalSource::latest_version`] reports.
const VERSION_ATTR: &str = "model.version";
/// How long the list of stored metric names is trusted before it is read again.
const CATALOG_TTL: Duration = Duration::from_secs(60);
/// How soon an unknown metric name makes the catalog be read again.
const CATALOG_MISS_RETRY: Duration = Duration::from_secs(5);
/// Most points one `query_range` may return per series (Prometheus refuses over 11,000).
const RANGE_POINTS: u64 = 10_000;
/// How far back a model version's first appearance is looked for.
const VERSION_LOOKBACK: &str = "2d";

/// One request to the I/O thread.
enum Call {
    Get { path: String, form: Vec<(String, String)> },
}

type Reply = std::sync::mpsc::SyncSender<Result<serde_json::Value, String>>;

/// A Prometheus HTTP API client whose calls block the caller, served by a runtime on its own
/// thread. Cheap to clone.
#[derive(Clone)]
pub struct PromClient {
    tx: tokio::sync::mpsc::UnboundedSender<(Call, Reply)>,
    base: Arc<str>,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PromClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromClient").field("base", &self.base).finish()
    }
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

impl PromClient {
    /// A client for `config.query_url`; the I/O thread ends when the last clone is dropped.
    pub fn new(config: &RemoteConfig, bearer: Option<&str>) -> Result<Self, String> {
        let base = config
            .query_url
            .clone()
            .ok_or("store.remote.query_url is not set")?
            .trim_end_matches('/')
            .to_owned();
        let client = config.http_client()?;
        let headers = config.headers(bearer)?;
        let timeout = config.query_timeout.get();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Call, Reply)>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("PromQL client runtime: {e}"))?;
        let url_base = base.clone();
        std::thread::Builder::new()
            .name("stoker-promql".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some((call, reply)) = rx.recv().await {
                        let (client, headers, base) =
                            (client.clone(), headers.clone(), url_base.clone());
                        tokio::spawn(async move {
                            let Call::Get { path, form } = call;
                            let r =
                                fetch(&client, headers, &format!("{base}{path}"), form, timeout)
                                    .await;
                            let _ = reply.send(r);
                        });
                    }
                })
            })
            .map_err(|e| format!("PromQL client thread: {e}"))?;
        Ok(Self { tx, base: base.into(), requests: Arc::default() })
    }

    /// HTTP requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn call(&self, path: &str, form: Vec<(String, String)>) -> Result<serde_json::Value, String> {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .send((Call::Get { path: path.to_owned(), form }, reply))
            .map_err(|_| "PromQL client stopped".to_owned())?;
        rx.recv().map_err(|_| "PromQL client stopped".to_owned())?
    }

    /// An instant query at `at` (Unix nanos): each result's labels and value.
    pub fn query(&self, promql: &str, at: u64) -> Result<Vector, String> {
        let data = self.call(
            "/api/v1/query",
            // `nocache=1`: VictoriaMetrics would otherwise answer from its result cache, which
            // holds back the newest samples; Prometheus ignores the parameter.
            vec![
                ("query".into(), promql.into()),
                ("time".into(), seconds(at)),
                ("nocache".into(), "1".into()),
            ],
        )?;
        parse_vector(&data).map_err(|e| format!("{promql}: {e}"))
    }

    /// A range query at `start, start + step, …, end` (Unix nanos).
    pub fn query_range(
        &self,
        promql: &str,
        start: u64,
        end: u64,
        step: Duration,
    ) -> Result<Matrix, String> {
        let data = self.call(
            "/api/v1/query_range",
            vec![
                ("query".into(), promql.into()),
                ("start".into(), seconds(start)),
                ("end".into(), seconds(end)),
                ("step".into(), format!("{}ms", step.as_millis().max(1))),
                ("nocache".into(), "1".into()),
            ],
        )?;
        parse_matrix(&data).map_err(|e| format!("{promql}: {e}"))
    }

    /// Every metric name the store holds.
    pub fn metric_names(&self) -> Result<Vec<String>, String> {
        let data = self.call("/api/v1/label/__name__/values", Vec::new())?;
        serde_json::from_value(data).map_err(|e| format!("label values: {e}"))
    }
}

async fn fetch(
    client: &reqwest::Client,
    headers: reqwest::header::HeaderMap,
    url: &str,
    form: Vec<(String, String)>,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    // Queries go as a form body: a grouped PromQL expression can outgrow a URL.
    let req = if form.is_empty() {
        client.get(url)
    } else {
        let body: String =
            url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
        client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
    };
    let req = req.headers(headers).timeout(timeout);
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: reading the answer: {e}"))?;
    let parsed: ApiResponse = serde_json::from_str(&text).map_err(|e| {
        format!("{url}: {status}: not a Prometheus API answer ({e}): {}", snippet(&text))
    })?;
    if parsed.status != "success" {
        return Err(format!(
            "{url}: {status}: {}: {}",
            parsed.error_type.unwrap_or_default(),
            parsed.error.unwrap_or_default()
        ));
    }
    Ok(parsed.data)
}

fn snippet(t: &str) -> String {
    t.chars().take(200).collect()
}

/// Unix nanos as the API's decimal seconds.
fn seconds(t: u64) -> String {
    format!("{}.{:03}", t / 1_000_000_000, (t % 1_000_000_000) / 1_000_000)
}

fn value_of(v: &serde_json::Value) -> Option<(u64, f64)> {
    let pair = v.as_array()?;
    let t = pair.first()?.as_f64()?;
    let s = pair.get(1)?.as_str()?;
    let v: f64 = match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().ok()?,
    };
    Some(((t * 1e3).round() as u64 * 1_000_000, v))
}

fn parse_vector(data: &serde_json::Value) -> Result<Vector, String> {
    let kind = data.get("resultType").and_then(|k| k.as_str()).unwrap_or("");
    let result = data.get("result").ok_or("answer without a result")?;
    match kind {
        "vector" => result
            .as_array()
            .ok_or("vector result is not a list")?
            .iter()
            .map(|r| {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(r.get("metric").cloned().unwrap_or_default())
                        .unwrap_or_default();
                let (_, v) = r.get("value").and_then(value_of).ok_or("bad sample in result")?;
                Ok((labels, v))
            })
            .collect(),
        "scalar" => {
            let (_, v) = value_of(result).ok_or("bad scalar")?;
            Ok(vec![(BTreeMap::new(), v)])
        }
        other => Err(format!("unexpected result type {other:?}")),
    }
}

/// A range answer: each series' labels and its `(Unix ms, value)` samples.
type Matrix = Vec<(BTreeMap<String, String>, Vec<(u64, f64)>)>;
/// An instant answer: each series' labels and its value.
type Vector = Vec<(BTreeMap<String, String>, f64)>;
/// Grouped answers by group-key values.
type Grouped = HashMap<Vec<String>, f64>;

fn parse_matrix(data: &serde_json::Value) -> Result<Matrix, String> {
    let result = data.get("result").and_then(|r| r.as_array()).ok_or("answer without a result")?;
    result
        .iter()
        .map(|r| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(r.get("metric").cloned().unwrap_or_default())
                    .unwrap_or_default();
            let points = r
                .get("values")
                .and_then(|v| v.as_array())
                .map(|vs| vs.iter().filter_map(value_of).collect())
                .unwrap_or_default();
            Ok((labels, points))
        })
        .collect()
}

/// A PromQL string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The window `(t - w, t]` as a PromQL range, to the millisecond (at least 1 ms). Prometheus 2.x
/// range selectors are closed at the left and samples are stamped to the millisecond, so one
/// millisecond comes off to leave out a sample exactly at `t - w`, as the embedded store does.
fn range(w: Duration) -> String {
    format!("[{}ms]", w.as_millis().saturating_sub(1).max(1))
}

/// The stored names of one OTel metric.
#[derive(Clone, Debug, PartialEq)]
struct Resolved {
    family: Family,
    /// The name (for histograms, without `_bucket`/`_sum`/`_count`).
    name: String,
}

/// Which stored metric names exist, read from the store now and then.
#[derive(Default)]
struct Catalog {
    names: HashSet<String>,
    /// When the names were read (the collector's clock, Unix nanos).
    read_at: Option<u64>,
}

/// A query in the engine's and the API's shared terms, before it becomes PromQL.
struct Plan<'a> {
    /// Label matchers (sanitised keys), PromQL text without braces.
    matchers: String,
    stat: query::Stat,
    window: Duration,
    /// Group-by attribute keys as given (OTel spelling).
    group: &'a [String],
    across: Option<Across>,
}

/// The policy engine's signal source and the API's query backend over PromQL.
pub struct PromSource {
    client: PromClient,
    clock: SharedClock,
    catalog: Mutex<Catalog>,
    /// Grouped answers for one `now`: query text → group-key values → value.
    tick: Mutex<(u64, HashMap<String, Arc<Grouped>>)>,
    /// First appearance of each model version, by selector (version removed) and version.
    first_seen: Mutex<HashMap<(Selector, String), u64>>,
}

impl std::fmt::Debug for PromSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromSource").field("client", &self.client).finish()
    }
}

impl PromSource {
    /// A source reading through `client`; `clock` is the collector's.
    pub fn new(client: PromClient, clock: SharedClock) -> Self {
        Self {
            client,
            clock,
            catalog: Mutex::default(),
            tick: Mutex::new((0, HashMap::new())),
            first_seen: Mutex::default(),
        }
    }

    /// The client (for its request count).
    pub fn client(&self) -> &PromClient {
        &self.client
    }

    /// The collector's clock reading, Unix nanos.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    fn resolve(&self, metric: &str) -> Result<Option<Resolved>, String> {
        let base = names::base(metric);
        let find = |names: &HashSet<String>| {
            let stems = std::iter::once(base.clone())
                .chain(UNIT_SUFFIXES.iter().map(|(_, s)| format!("{base}_{s}")));
            let stems: Vec<String> = stems.collect();
            for (family, suffix) in
                [(Family::Histogram, "_bucket"), (Family::Counter, "_total"), (Family::Gauge, "")]
            {
                for stem in &stems {
                    if names.contains(&format!("{stem}{suffix}")) {
                        let name = match family {
                            Family::Counter => format!("{stem}_total"),
                            _ => stem.clone(),
                        };
                        return Some(Resolved { family, name });
                    }
                }
            }
            None
        };
        let now = self.clock.now();
        let age = |cat: &Catalog| cat.read_at.map(|t| Duration::from_nanos(now.saturating_sub(t)));
        let mut cat = self.catalog.lock();
        if age(&cat).is_some_and(|a| a < CATALOG_TTL) {
            if let Some(r) = find(&cat.names) {
                return Ok(Some(r));
            }
            if age(&cat).is_some_and(|a| a < CATALOG_MISS_RETRY) {
                return Ok(None);
            }
        }
        let names = self.client.metric_names()?;
        cat.names = names.into_iter().collect();
        cat.read_at = Some(now);
        Ok(find(&cat.names))
    }

    /// The PromQL of `plan` over `r`, grouped by the plan's keys.
    fn promql(r: &Resolved, plan: &Plan<'_>) -> String {
        use query::Stat as S;
        let by = {
            let keys: Vec<String> = plan.group.iter().map(|k| names::label(k)).collect();
            format!("by ({})", keys.join(", "))
        };
        let w = range(plan.window);
        let m = &plan.matchers;
        let sel = |suffix: &str| format!("{}{suffix}{{{m}}}{w}", r.name);
        let hist = r.family == Family::Histogram;
        let le_by = {
            let mut keys: Vec<String> = vec!["le".into()];
            keys.extend(plan.group.iter().map(|k| names::label(k)));
            format!("by ({})", keys.join(", "))
        };
        // A value per series, for an explicit `across`.
        let per_series = |stat: S| -> String {
            match (hist, stat) {
                (true, S::Quantile(q)) => {
                    format!("histogram_quantile({q}, increase({}))", sel("_bucket"))
                }
                (true, S::Min) => format!("histogram_quantile(0, increase({}))", sel("_bucket")),
                (true, S::Max) => format!("histogram_quantile(1, increase({}))", sel("_bucket")),
                (true, S::Mean) => {
                    format!("increase({}) / increase({})", sel("_sum"), sel("_count"))
                }
                (true, S::Sum) => format!("increase({})", sel("_sum")),
                (true, S::Count | S::Increase) => format!("increase({})", sel("_count")),
                (true, S::Rate) => format!("rate({})", sel("_count")),
                (true, S::Last) => format!("last_over_time({})", sel("_count")),
                (false, S::Quantile(q)) => format!("quantile_over_time({q}, {})", sel("")),
                (false, S::Mean) => format!("avg_over_time({})", sel("")),
                (false, S::Min) => format!("min_over_time({})", sel("")),
                (false, S::Max) => format!("max_over_time({})", sel("")),
                (false, S::Sum) => format!("sum_over_time({})", sel("")),
                (false, S::Count) => format!("count_over_time({})", sel("")),
                (false, S::Last) => format!("last_over_time({})", sel("")),
                (false, S::Rate) => format!("rate({})", sel("")),
                (false, S::Increase) => format!("increase({})", sel("")),
            }
        };
        if let Some(across) = plan.across {
            let op = match across {
                Across::Mean => "avg",
                Across::Sum => "sum",
                Across::Min => "min",
                Across::Max => "max",
                Across::Count => "count",
            };
            return format!("{op} {by} ({})", per_series(plan.stat));
        }
        match (hist, plan.stat) {
            (true, S::Quantile(q)) => {
                format!("histogram_quantile({q}, sum {le_by} (increase({})))", sel("_bucket"))
            }
            (true, S::Min) => {
                format!("histogram_quantile(0, sum {le_by} (increase({})))", sel("_bucket"))
            }
            (true, S::Max) => {
                format!("histogram_quantile(1, sum {le_by} (increase({})))", sel("_bucket"))
            }
            (true, S::Mean) => format!(
                "sum {by} (increase({})) / sum {by} (increase({}))",
                sel("_sum"),
                sel("_count")
            ),
            (false, S::Mean) => format!(
                "sum {by} (sum_over_time({})) / sum {by} (count_over_time({}))",
                sel(""),
                sel("")
            ),
            (false, S::Quantile(q)) => format!("quantile {by} ({q}, {})", per_series(plan.stat)),
            (_, S::Min) => format!("min {by} ({})", per_series(plan.stat)),
            (_, S::Max) => format!("max {by} ({})", per_series(plan.stat)),
            (_, stat) => format!("sum {by} ({})", per_series(stat)),
        }
    }

    /// The stored metric `q` reads and its PromQL plan; `None` when the store has no such
    /// metric.
    fn plan<'q>(&self, q: &'q query::Query) -> Result<Option<(Resolved, Plan<'q>)>, QueryError> {
        let Some(r) = self.resolve(&q.selector.metric).map_err(QueryError::Remote)? else {
            return Ok(None);
        };
        let plan = Plan {
            matchers: matchers(&q.selector.matchers),
            stat: q.stat,
            window: q.window,
            group: &q.group_by,
            across: q.across,
        };
        Ok(Some((r, plan)))
    }

    /// `/api/v1/query` at one instant, over the remote.
    pub fn instant(&self, q: &query::Query, at: u64) -> Result<Vec<GroupValue>, QueryError> {
        let bad = QueryError::Remote;
        let Some((r, plan)) = self.plan(q)? else {
            return Ok(Vec::new());
        };
        let text = Self::promql(&r, &plan);
        let rows = self.client.query(&text, at).map_err(bad)?;
        // How many series each group has, as the embedded store reports it.
        let count_plan = Plan { across: Some(Across::Count), stat: series_stat(q.stat), ..plan };
        let counts: HashMap<Vec<String>, f64> = self
            .client
            .query(&Self::promql(&r, &count_plan), at)
            .map_err(bad)?
            .into_iter()
            .map(|(l, v)| (group_values(&l, &q.group_by), v))
            .collect();
        let mut out: Vec<GroupValue> = rows
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(labels, value)| {
                let key = group_values(&labels, &q.group_by);
                let series = counts.get(&key).copied().unwrap_or(0.0) as usize;
                GroupValue { group: group_labels(&q.group_by, &key), value, series }
            })
            .collect();
        out.sort_by_key(|a| a.group.to_map());
        Ok(out)
    }

    /// `/api/v1/query` over a range, over the remote.
    pub fn range(
        &self,
        q: &query::Query,
        start: u64,
        end: u64,
        step: Duration,
    ) -> Result<Vec<GroupRange>, QueryError> {
        let bad = QueryError::Remote;
        if step.is_zero() {
            return Err(QueryError::Bad("step must be positive".into()));
        }
        let steps = end.saturating_sub(start) / nanos(step).max(1) + 1;
        if steps > RANGE_POINTS {
            return Err(QueryError::Bad(format!(
                "{steps} steps; at most {RANGE_POINTS} per query (raise step)"
            )));
        }
        let Some((r, plan)) = self.plan(q)? else {
            return Ok(Vec::new());
        };
        let rows =
            self.client.query_range(&Self::promql(&r, &plan), start, end, step).map_err(bad)?;
        let mut out: Vec<GroupRange> = rows
            .into_iter()
            .map(|(labels, points)| GroupRange {
                group: group_labels(&q.group_by, &group_values(&labels, &q.group_by)),
                points: points.into_iter().filter(|(_, v)| v.is_finite()).collect(),
            })
            .collect();
        out.sort_by_key(|a| a.group.to_map());
        Ok(out)
    }

    /// The engine's read: the grouped answer for this signal's shape at `now`, from the tick's
    /// cache or one query.
    fn grouped(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let err = |m: String| SignalError::Source { what: q.to_string(), message: m };
        let Some(r) = self.resolve(&q.selector.metric).map_err(err)? else {
            return Ok(None);
        };
        let keys: Vec<String> = q.selector.matchers.keys().cloned().collect();
        let plan = Plan {
            matchers: String::new(),
            stat: q.stat,
            window: q.window,
            group: &keys,
            across: None,
        };
        let text = Self::promql(&r, &plan);
        let cached = {
            let t = self.tick.lock();
            if t.0 == now { t.1.get(&text).cloned() } else { None }
        };
        let groups = match cached {
            Some(g) => g,
            None => {
                let rows = self.client.query(&text, now).map_err(err)?;
                let g: HashMap<Vec<String>, f64> =
                    rows.into_iter().map(|(labels, v)| (group_values(&labels, &keys), v)).collect();
                let g = Arc::new(g);
                let mut t = self.tick.lock();
                if t.0 != now {
                    *t = (now, HashMap::new());
                }
                t.1.insert(text, g.clone());
                g
            }
        };
        let want: Vec<String> = q.selector.matchers.values().cloned().collect();
        Ok(groups.get(&want).copied().filter(|v| v.is_finite()))
    }

    fn instant_rows(&self, text: &str, at: u64, what: &str) -> Result<Vector, SignalError> {
        self.client
            .query(text, at)
            .map_err(|m| SignalError::Source { what: what.to_owned(), message: m })
    }
}

/// A statistic every series with data in the window answers (for counting series).
fn series_stat(s: query::Stat) -> query::Stat {
    match s {
        query::Stat::Quantile(_)
        | query::Stat::Mean
        | query::Stat::Rate
        | query::Stat::Increase => query::Stat::Count,
        other => other,
    }
}

/// API matchers as PromQL label matchers (without braces).
fn matchers(ms: &[Matcher]) -> String {
    let mut out = String::new();
    for m in ms {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let strip = |r: &regex::Regex| {
            let s = r.as_str();
            s.strip_prefix('^').and_then(|s| s.strip_suffix('$')).unwrap_or(s).to_owned()
        };
        let _ = match m {
            Matcher::Eq { key, value } => write!(out, "{}={}", names::label(key), quote(value)),
            Matcher::Ne { key, value } => write!(out, "{}!={}", names::label(key), quote(value)),
            Matcher::Re { key, regex } => {
                write!(out, "{}=~{}", names::label(key), quote(&strip(regex)))
            }
            Matcher::NotRe { key, regex } => {
                write!(out, "{}!~{}", names::label(key), quote(&strip(regex)))
            }
        };
    }
    out
}

/// Engine equality matchers as PromQL label matchers.
fn eq_matchers(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{}={}", names::label(k), quote(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A result's values for the group keys (OTel spelling), `""` where absent.
fn group_values(labels: &BTreeMap<String, String>, keys: &[String]) -> Vec<String> {
    keys.iter().map(|k| labels.get(&names::label(k)).cloned().unwrap_or_default()).collect()
}

fn group_labels(keys: &[String], values: &[String]) -> Labels {
    Labels::from_pairs(
        keys.iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

impl SignalSource for PromSource {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        self.grouped(q, now)
    }

    fn histogram(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError> {
        let what = format!("histogram({selector})");
        let err = |m: String| SignalError::Source { what: what.clone(), message: m };
        let Some(r) = self.resolve(&selector.metric).map_err(err)? else { return Ok(None) };
        if r.family != Family::Histogram {
            return Ok(None);
        }
        let w =
            Duration::from_nanos(to.saturating_sub(from)).saturating_sub(Duration::from_millis(1));
        let text = format!(
            "sum by (le) (increase({}_bucket{{{}}}{}))",
            r.name,
            eq_matchers(&selector.matchers),
            range(w)
        );
        let mut rows: Vec<(f64, f64)> = self
            .instant_rows(&text, to, &what)?
            .into_iter()
            .filter_map(|(l, v)| {
                let le = match l.get("le")?.as_str() {
                    "+Inf" => f64::INFINITY,
                    s => s.parse().ok()?,
                };
                Some((le, v.max(0.0)))
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        if rows.last().is_none_or(|(le, _)| le.is_finite()) {
            return Ok(None);
        }
        let mut bounds = Vec::new();
        let mut counts = Vec::new();
        let mut below = 0.0;
        for (le, cum) in rows {
            // Cumulative buckets may dip where series of the group started at different times.
            let cum = f64::max(cum, below);
            counts.push(cum - below);
            below = cum;
            if le.is_finite() {
                bounds.push(le);
            }
        }
        let h = Histogram { bounds, counts };
        Ok((h.total() > 0.0).then_some(h))
    }

    fn counts_by(
        &self,
        selector: &Selector,
        by: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError> {
        let what = format!("increase({selector}) by {by}");
        let err = |m: String| SignalError::Source { what: what.clone(), message: m };
        let Some(r) = self.resolve(&selector.metric).map_err(err)? else {
            return Ok(BTreeMap::new());
        };
        let name = match r.family {
            Family::Histogram => format!("{}_count", r.name),
            _ => r.name.clone(),
        };
        let w =
            Duration::from_nanos(to.saturating_sub(from)).saturating_sub(Duration::from_millis(1));
        let by_label = names::label(by);
        let text = format!(
            "sum by ({by_label}) (increase({name}{{{}}}{}))",
            eq_matchers(&selector.matchers),
            range(w)
        );
        Ok(self
            .instant_rows(&text, to, &what)?
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .filter_map(|(l, v)| Some((l.get(&by_label)?.clone(), v)))
            .collect())
    }

    fn latest_version(
        &self,
        selector: &Selector,
        now: u64,
    ) -> Result<Option<VersionSeen>, SignalError> {
        let what = format!("latest_version({selector})");
        let err = |m: String| SignalError::Source { what: what.clone(), message: m };
        let Some(r) = self.resolve(&selector.metric).map_err(err)? else { return Ok(None) };
        let name = match r.family {
            Family::Histogram => format!("{}_count", r.name),
            _ => r.name.clone(),
        };
        let mut sel = selector.clone();
        sel.matchers.remove(VERSION_ATTR);
        let vlabel = names::label(VERSION_ATTR);
        let m = eq_matchers(&sel.matchers);
        let present = self.instant_rows(
            &format!("count by ({vlabel}) (last_over_time({name}{{{m}}}[{VERSION_LOOKBACK}]))"),
            now,
            &what,
        )?;
        let mut best: Option<VersionSeen> = None;
        for (labels, _) in present {
            let Some(version) = labels.get(&vlabel).cloned() else { continue };
            let key = (sel.clone(), version.clone());
            let known = self.first_seen.lock().get(&key).copied();
            let first = match known {
                Some(t) => t,
                None => {
                    let vm = if m.is_empty() {
                        format!("{vlabel}={}", quote(&version))
                    } else {
                        format!("{m}, {vlabel}={}", quote(&version))
                    };
                    let text = format!(
                        "min(min_over_time(timestamp({name}{{{vm}}})[{VERSION_LOOKBACK}:1m]))"
                    );
                    let rows = self.instant_rows(&text, now, &what)?;
                    let Some(t) = rows.first().map(|(_, v)| *v).filter(|v| v.is_finite()) else {
                        continue;
                    };
                    let t = (t * 1e9) as u64;
                    self.first_seen.lock().insert(key, t);
                    t
                }
            };
            if first <= now && best.as_ref().is_none_or(|b| first > b.first_seen) {
                best = Some(VersionSeen { version, first_seen: first });
            }
        }
        Ok(best)
    }

    fn range(
        &self,
        q: &SignalQuery,
        from: u64,
        to: u64,
        step: Duration,
    ) -> Result<Vec<(u64, f64)>, SignalError> {
        let err = |m: String| SignalError::Source { what: q.to_string(), message: m };
        let Some(r) = self.resolve(&q.selector.metric).map_err(err)? else {
            return Ok(Vec::new());
        };
        let plan = Plan {
            matchers: eq_matchers(&q.selector.matchers),
            stat: q.stat,
            window: q.window,
            group: &[],
            across: None,
        };
        let text = Self::promql(&r, &plan);
        let fetch = |start, end| {
            let rows = self.client.query_range(&text, start, end, step).map_err(err)?;
            Ok(rows.into_iter().next().map(|(_, p)| p.into_iter().collect()).unwrap_or_default())
        };
        // Samples are stamped to the millisecond.
        chunked_range(from, to, step, RANGE_POINTS, fetch, |t, points| {
            points.get(&(t / 1_000_000 * 1_000_000)).copied()
        })
    }
}

#[cfg(test)]
mod tests;
