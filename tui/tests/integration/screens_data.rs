//! Screens that must say what the collector's data says. Each test takes its data through
//! `HttpSource` — from a collector run in-process and fed over OTLP, or from a loopback server
//! answering with the collector's own JSON — and draws it into a `TestBackend` at 80×24 and
//! 160×48 (snapshots where the data has fixed times, assertions on the text where it is live).

use std::collections::BTreeMap;
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use stoker_collector::api::types::{
    InstantGroup, NodeHealth, NodeItem, NodesResponse, QueryResponse, QueryResult, RangeGroup,
    RangePoint,
};
use stoker_tui::app::App;
use stoker_tui::client::{Snapshot, Source, Update};
use stoker_tui::http::HttpSource;
use stoker_tui::model::NANOS_PER_SEC;
use stoker_tui::view::{buffer_text, fmt, render_buffer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::NOW;
use crate::live::collector;
use crate::otlp_fleet::{LATENCY_BOUNDS, counter, histogram, kv, node_batch, request};
use crate::render::{SIZES, check};

const S: u64 = NANOS_PER_SEC;

/// What a loopback API answers: `answer(path, query)` is the JSON body, `None` a 404.
pub type Answer = dyn Fn(&str, &BTreeMap<String, String>) -> Option<String> + Send + Sync;

/// Serves HTTP/1.1 on loopback, one request per connection: `answer(path, query)` is the JSON
/// body, `None` a 404. Returns the base URL.
pub async fn local_api(answer: Arc<Answer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let url = reqwest::Url::parse(&format!("http://local{target}")).unwrap();
                let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
                let (status, body) = match answer(url.path(), &query) {
                    Some(body) => (200, body),
                    None => (404, r#"{"error":"not found"}"#.to_owned()),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// A `/api/v1/query` answer at `NOW` with `groups` (range queries: the value at `NOW - 10s`
/// and `NOW`), as the collector serialises it.
fn query_answer(q: &BTreeMap<String, String>, groups: &[(&[(&str, &str)], f64)]) -> String {
    let labels = |g: &[(&str, &str)]| -> BTreeMap<String, String> {
        g.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let result = if q.contains_key("step") {
        QueryResult::Range(
            groups
                .iter()
                .map(|(g, v)| RangeGroup {
                    group: labels(g),
                    points: vec![
                        RangePoint { t: NOW - 10 * S, v: *v },
                        RangePoint { t: NOW, v: *v },
                    ],
                })
                .collect(),
        )
    } else {
        QueryResult::Instant(
            groups
                .iter()
                .map(|(g, v)| InstantGroup { group: labels(g), value: *v, series: 1 })
                .collect(),
        )
    };
    let r = QueryResponse {
        stat: q.get("stat").cloned().unwrap_or_default(),
        window_seconds: 60.0,
        time_unix_nano: NOW,
        result,
    };
    serde_json::to_string(&r).unwrap()
}

fn press(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

/// Fetch what the app's screen needs from `src` and apply it, as the fetch loop would.
async fn fetch(app: &mut App, src: &mut HttpSource, at: u64) -> Snapshot {
    let snapshot = src.fetch(&app.need()).await.unwrap();
    app.apply(Update::Data { at, snapshot: snapshot.clone() });
    snapshot
}

fn texts(app: &App, now: u64) -> Vec<String> {
    SIZES.iter().map(|&(w, h)| buffer_text(&render_buffer(app, now, w, h))).collect()
}

fn wall_clock() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
    )
    .unwrap()
}

/// One 10 s interval of an inference service on `host`: a latency histogram (mostly 10–25 ms)
/// and `inference.requests` counters, cumulative since `start`, `per_tick` requests of each
/// attribute set per interval.
#[allow(clippy::too_many_arguments)]
fn service(
    host: &str,
    name: &str,
    model: &[(&str, &str)],
    per_tick: &[(&[(&str, &str)], f64)],
    start: u64,
    prev: u64,
    ts: u64,
    tick: u32,
) -> ResourceMetrics {
    let attrs = || model.iter().map(|(k, v)| kv(k, v)).collect::<Vec<KeyValue>>();
    let requests = per_tick
        .iter()
        .map(|(extra, n)| {
            let mut a = attrs();
            a.extend(extra.iter().map(|(k, v)| kv(k, v)));
            (a, n * f64::from(tick))
        })
        .collect();
    let metrics = vec![
        histogram(
            "inference.request.duration",
            attrs(),
            &LATENCY_BOUNDS,
            &[0, 10, 60, 25, 4, 1, 0],
            3.0,
            prev,
            ts,
        ),
        counter("inference.requests", requests, start, ts),
    ];
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("host.name", host), kv("service.name", name)],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
        ..Default::default()
    }
}

/// Six 10 s intervals ending now of node 0 (one GPU) and `services` into a collector run
/// in-process; the source over its API and the time of the last interval.
async fn live(
    services: impl Fn(u64, u64, u64, u32) -> Vec<ResourceMetrics>,
    dir: &std::path::Path,
    cancel: &CancellationToken,
) -> (HttpSource, String, u64) {
    let srv = collector(dir, cancel).await;
    let mut grpc =
        MetricsServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc)).await.unwrap();
    let t_end = wall_clock();
    let step = 10 * S;
    let t0 = t_end - 6 * step;
    for tick in 1..=6u32 {
        let ts = t0 + u64::from(tick) * step;
        let mut batch = vec![node_batch(0, 1, ts)];
        batch.extend(services(t0, ts - step, ts, tick));
        grpc.export(request(batch)).await.unwrap();
    }
    let url = format!("http://{}", srv.bound.api);
    (HttpSource::new(&url, None).unwrap(), url, t_end)
}

/// The line of `text` that holds `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
}

// Regression: the Models screen dropped every group without `model.version`, so a model the
// Node screen listed with p50/p95 was "no model has reported inference metrics yet"; and it
// took its "now" values from the last 3 s range step where the Node screen reads 1 m.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_screen_lists_the_models_the_node_screen_lists_with_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let ok: &[(&str, &str)] = &[("outcome", "success")];
    let (mut src, url, t_end) = live(
        |start, prev, ts, tick| {
            vec![service(
                "gpu-node-000",
                "resnet-serving",
                &[("model.name", "resnet")],
                &[(ok, 100.0)],
                start,
                prev,
                ts,
                tick,
            )]
        },
        dir.path(),
        &cancel,
    )
    .await;
    let mut app = App::new(url);
    fetch(&mut app, &mut src, t_end).await;
    press(&mut app, KeyCode::Enter);
    let Snapshot::Node(node) = fetch(&mut app, &mut src, t_end).await else { panic!("not a node") };
    let svc = &node.services[0];
    assert_eq!((svc.model.as_str(), svc.version.as_str()), ("resnet", ""), "{svc:?}");
    let node_texts = texts(&app, t_end);
    press(&mut app, KeyCode::Char('3'));
    let Snapshot::Models(models) = fetch(&mut app, &mut src, t_end).await else {
        panic!("not models")
    };
    assert_eq!(models.len(), 1, "{models:?}");
    let v = &models[0].versions[0];
    assert_eq!((models[0].name.as_str(), v.version.as_str()), ("resnet", ""));
    assert_eq!(v.latency, svc.latency, "both screens read the same percentiles");
    assert_eq!(v.rate_rps, svc.rate_rps);
    let p50 = fmt::latency(svc.latency.p50);
    let p95 = fmt::latency(svc.latency.p95);
    for (node_text, models_text) in node_texts.iter().zip(texts(&app, t_end)) {
        assert!(!models_text.contains("no model has reported"), "{models_text}");
        let node_row = line_with(node_text, "resnet-serving");
        let model_row = line_with(&models_text, "resnet ");
        for p in [&p50, &p95] {
            assert!(node_row.contains(p.as_str()), "{p} not in {node_row:?}");
            assert!(model_row.contains(p.as_str()), "{p} not in {model_row:?}");
        }
    }
    cancel.cancel();
}

// Regression: ERRS counted every request whose `outcome` was not `success` (and every request
// of a counter without `outcome`), so a service answering `outcome="ok"` showed ERRS = RATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_the_requests_that_failed_by_the_opentelemetry_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (mut src, url, t_end) = live(
        |start, prev, ts, tick| {
            let host = "gpu-node-000";
            vec![
                // The demo CNN's outcomes: only the rejections (503s) are the service failing.
                service(
                    host,
                    "cnn-serving",
                    &[("model.name", "cnn"), ("model.version", "3")],
                    &[
                        (&[("outcome", "ok")], 90.0),
                        (&[("outcome", "rejected")], 6.0),
                        (&[("outcome", "invalid")], 4.0),
                    ],
                    start,
                    prev,
                    ts,
                    tick,
                ),
                // A TorchServe-style total without `outcome`: no errors known.
                service(
                    host,
                    "torch-serving",
                    &[("model.name", "vit"), ("model.version", "1")],
                    &[(&[], 50.0)],
                    start,
                    prev,
                    ts,
                    tick,
                ),
                // OpenTelemetry HTTP instrumentation: 5xx and `error.type` are errors, 4xx not.
                service(
                    host,
                    "bert-serving",
                    &[("model.name", "bert"), ("model.version", "2")],
                    &[
                        (&[("http.response.status_code", "200")], 30.0),
                        (&[("http.response.status_code", "404")], 6.0),
                        (&[("http.response.status_code", "503"), ("error.type", "503")], 4.0),
                    ],
                    start,
                    prev,
                    ts,
                    tick,
                ),
            ]
        },
        dir.path(),
        &cancel,
    )
    .await;
    let mut app = App::new(url);
    fetch(&mut app, &mut src, t_end).await;
    press(&mut app, KeyCode::Enter);
    let Snapshot::Node(node) = fetch(&mut app, &mut src, t_end).await else { panic!("not a node") };
    let by_name = |n: &str| node.services.iter().find(|s| s.name == n).unwrap().clone();
    // Per interval: cnn 100 requests, 6 failed; vit 50, none known to fail; bert 40, 4 failed.
    let want = [
        ("cnn-serving", "cnn", 0.06),
        ("torch-serving", "vit", 0.0),
        ("bert-serving", "bert", 0.1),
    ];
    let cells = |rate: Option<f64>, errors: Option<f64>| {
        format!("{:>7} {:>6}", fmt::rate(rate), fmt::rate(errors))
    };
    for (name, _, share) in want {
        let s = by_name(name);
        let (rate, errors) = (s.rate_rps.unwrap(), s.errors_rps.unwrap());
        assert!(rate > 0.0 && (errors / rate - share).abs() < 0.005, "{s:?}");
    }
    for text in texts(&app, t_end) {
        for (name, _, _) in want {
            let s = by_name(name);
            assert!(line_with(&text, name).contains(&cells(s.rate_rps, s.errors_rps)), "{text}");
        }
    }
    press(&mut app, KeyCode::Char('3'));
    let Snapshot::Models(models) = fetch(&mut app, &mut src, t_end).await else {
        panic!("not models")
    };
    for (name, model, _) in want {
        let m = models.iter().find(|m| m.name == model).unwrap();
        let v = &m.versions[0];
        let s = by_name(name);
        assert_eq!((v.rate_rps, v.errors_rps), (s.rate_rps, s.errors_rps), "{m:?}");
    }
    for text in texts(&app, t_end) {
        for (name, model, _) in want {
            let s = by_name(name);
            let row = line_with(&text, &format!("{model} "));
            assert!(row.contains(&cells(s.rate_rps, s.errors_rps)), "{text}");
        }
    }
    cancel.cancel();
}

/// `/api/v1/policies` as the collector serves it when its actuator cannot reach the cluster:
/// `resnet-serving`'s last resize failed (the engine's state is still `ok`); `resnet-retrain`
/// has a rule whose name is too long for 80 columns. `vit-serving` carries the `problem` and
/// `problem_since` fields a collector that reports a rule's unreadable target size adds.
fn policies_json() -> String {
    let t = |secs_ago: u64| (NOW - secs_ago * S).to_string();
    r#"{"policies": [
  {"name": "resnet-serving", "file": "policies/resnet-serving.yaml", "target": "resnet",
   "rules": [{"rule": "scale", "kind": "scale", "mode": "enforce", "state": "ok",
     "last_decision": {"time": T30, "policy": "resnet-serving", "rule": "scale", "kind": "scale",
       "mode": "enforce",
       "inputs": [{"name": "p95-latency", "query": "inference.request.duration p95 30s",
                   "value": 0.071, "against": "target 0.05", "recommends": 4}],
       "current": 2, "recommendation": 4, "constraints": [],
       "action": {"type": "resize", "from": 2, "to": 4},
       "reason": "p95-latency 71ms is above its target 50ms",
       "key": "resnet-serving/scale/1699999970",
       "outcome": {"status": "failed", "attempts": 3,
         "message": "kubernetes: no kubeconfig (KUBECONFIG unset, ~/.kube/config missing) and not in a cluster"}}}]},
  {"name": "resnet-retrain", "file": "policies/resnet-retrain.yaml", "target": "resnet",
   "rules": [{"rule": "confidence-drift", "kind": "retrain", "mode": "enforce", "state": "ok"}]},
  {"name": "vit-serving", "file": "policies/vit-serving.yaml", "target": "vit",
   "rules": [{"rule": "scale", "kind": "scale", "mode": "enforce", "state": "ok",
     "problem": "cannot read the current size: no kubeconfig", "problem_since": T5}]}
], "errors": [], "warnings": [], "last_reload": T600}"#
        .replace("T30", &t(30))
        .replace("T5", &t(5))
        .replace("T600", &t(600))
}

fn decisions_json() -> String {
    let p = policies_json();
    let v: serde_json::Value = serde_json::from_str(&p).unwrap();
    let d = v["policies"][0]["rules"][0]["last_decision"].clone();
    // An earlier evaluation that did not act, with the engine's reason.
    let mut held = d.clone();
    held["time"] = serde_json::json!(NOW - 60 * S);
    held["action"] = serde_json::json!({"type": "none"});
    held["reason"] = serde_json::json!("no action because of min/max: bounds 1..=2");
    held["key"] = serde_json::Value::Null;
    held["outcome"] = serde_json::Value::Null;
    serde_json::json!({ "decisions": [d, held] }).to_string()
}

// Regression: a rule whose actuator failed showed `ok`, with the failure nowhere on screen,
// and its Decisions row showed the resize green as if it had happened.
#[tokio::test]
async fn a_rule_whose_actuator_fails_says_failed_and_why() {
    let url = local_api(Arc::new(|path: &str, _q: &BTreeMap<String, String>| match path {
        "/api/v1/policies" => Some(policies_json()),
        "/api/v1/decisions" => Some(decisions_json()),
        "/api/v1/actions" => Some(r#"{"actions": []}"#.to_owned()),
        _ => None,
    }))
    .await;
    let mut src = HttpSource::new(&url, None).unwrap();
    let mut app = App::new("http://127.0.0.1:7700");
    press(&mut app, KeyCode::Char('4'));
    fetch(&mut app, &mut src, NOW).await;
    for ((w, h), text) in SIZES.iter().zip(texts(&app, NOW)) {
        check(&format!("policies_failing_{w}x{h}"), &text);
        let row = line_with(&text, "resnet-serving/s");
        assert!(row.contains("FAILED") && !row.contains(" ok "), "{row}");
        assert!(row.contains("the actuato"), "{row}");
        assert!(line_with(&text, "vit-serving/scale").contains("FAILED"), "{text}");
        // The selected rule's detail gives the whole reason, wrapped, at every width.
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("and not in a cluster (30s ago)"),
            "the whole reason is on screen:\n{text}"
        );
    }
    // Cut names say so.
    let narrow = &texts(&app, NOW)[0];
    assert!(narrow.contains("resnet-retrain/con… ok"), "{narrow}");
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    let text = &texts(&app, NOW)[1];
    assert!(
        text.contains("FAILED  cannot read the current size: no kubeconfig (5s ago)"),
        "{text}"
    );

    press(&mut app, KeyCode::Char('5'));
    fetch(&mut app, &mut src, NOW).await;
    for ((w, h), text) in SIZES.iter().zip(texts(&app, NOW)) {
        check(&format!("decisions_failing_{w}x{h}"), &text);
        assert!(
            line_with(&text, "resnet-serving / scale")
                .contains("FAILED scale resnet-serving 2 -> 4"),
            "{text}"
        );
        // Regression: the log read "no action: no action because …".
        assert!(!text.contains("no action: no action"), "{text}");
        assert!(text.contains("no action because of min/max"), "{text}");
    }
}

/// `/api/v1/nodes` for a fleet of one CPU-only node, and every query answered with no data.
fn cpu_only(path: &str, q: &BTreeMap<String, String>) -> Option<String> {
    match path {
        "/api/v1/nodes" => Some(
            serde_json::to_string(&NodesResponse {
                nodes: vec![NodeItem {
                    name: "cpu-node-01".into(),
                    host_id: "cpu-node-01".into(),
                    last_seen_unix_nano: NOW - S,
                    age_seconds: 1.0,
                    health: NodeHealth::Ok,
                    gpu_count: 0,
                    labels: BTreeMap::new(),
                }],
                now_unix_nano: NOW,
            })
            .unwrap(),
        ),
        "/api/v1/query" => {
            let sel = q.get("selector").map_or("", String::as_str);
            let groups: &[(&[(&str, &str)], f64)] = if sel.starts_with("system.cpu.utilization") {
                &[(&[("host.name", "cpu-node-01")], 0.42)]
            } else if sel.starts_with("system.memory.usage") {
                &[(&[("host.name", "cpu-node-01")], 8.0 * 1024.0 * 1024.0 * 1024.0)]
            } else if sel.starts_with("system.memory.limit") {
                &[(&[("host.name", "cpu-node-01")], 32.0 * 1024.0 * 1024.0 * 1024.0)]
            } else {
                &[]
            };
            Some(query_answer(q, groups))
        }
        _ => None,
    }
}

// Regression: a node without GPUs read "0 GPUs  busy -  -0W" on the Fleet screen (an empty
// f64 sum is -0) and "─ 0 ×" on its Node screen.
#[tokio::test]
async fn a_node_without_gpus_says_no_gpu() {
    let url = local_api(Arc::new(cpu_only)).await;
    let mut src = HttpSource::new(&url, None).unwrap();
    let mut app = App::new("http://127.0.0.1:7700");
    fetch(&mut app, &mut src, NOW).await;
    for ((w, h), text) in SIZES.iter().zip(texts(&app, NOW)) {
        check(&format!("fleet_no_gpu_{w}x{h}"), &text);
        assert!(text.contains(" 1 nodes (1 shown)  no GPU  lost 0"), "{text}");
        assert!(!text.contains("-0W") && !text.contains("0 GPUs"), "{text}");
        assert!(line_with(&text, "cpu-node-01").contains("no GPU"), "{text}");
    }
    press(&mut app, KeyCode::Enter);
    fetch(&mut app, &mut src, NOW).await;
    for ((w, h), text) in SIZES.iter().zip(texts(&app, NOW)) {
        check(&format!("node_no_gpu_{w}x{h}"), &text);
        assert!(text.contains("─ no GPU ─"), "{text}");
        assert!(!text.contains("0 ×"), "{text}");
        assert!(text.contains("CPU  42%"), "{text}");
    }
}

/// A fleet whose names are longer than the columns at 80 columns: nodes, services, models.
fn long_names(path: &str, q: &BTreeMap<String, String>) -> Option<String> {
    const NODE: &str = "inference-gpu-node-eu-west-1a-017";
    match path {
        "/api/v1/nodes" => Some(
            serde_json::to_string(&NodesResponse {
                nodes: vec![NodeItem {
                    name: NODE.into(),
                    host_id: NODE.into(),
                    last_seen_unix_nano: NOW - S,
                    age_seconds: 1.0,
                    health: NodeHealth::Ok,
                    gpu_count: 1,
                    labels: BTreeMap::new(),
                }],
                now_unix_nano: NOW,
            })
            .unwrap(),
        ),
        "/api/v1/query" => {
            let sel = q.get("selector").map_or("", String::as_str);
            let gpu: &[(&str, &str)] = &[
                ("host.name", NODE),
                ("hw.id", "GPU-1"),
                ("hw.model", "NVIDIA H100"),
                ("gpu.index", "0"),
            ];
            let svc: &[(&str, &str)] = &[
                ("service.name", "image-classification-serving-production"),
                ("model.name", "resnet50-imagenet-finetuned-retail-shelves"),
                ("model.version", "2026-11-30-rc1"),
            ];
            let groups: Vec<(&[(&str, &str)], f64)> = if sel.starts_with("hw.gpu.utilization") {
                vec![(gpu, 0.5)]
            } else if sel.starts_with("hw.gpu.memory.limit") {
                vec![(gpu, 80.0 * 1024.0 * 1024.0 * 1024.0)]
            } else if sel.starts_with("system.cpu.utilization") {
                vec![(&[("host.name", NODE)], 0.3)]
            } else if sel.starts_with("inference.request.duration") {
                vec![(svc, 0.02)]
            } else if sel.starts_with("inference.requests") {
                vec![(svc, 12.0)]
            } else if sel.starts_with("process.cpu.utilization") {
                let p: &[(&str, &str)] = &[
                    ("process.pid", "4242"),
                    ("process.executable.name", "python3 -m torchserve.model_server --models all"),
                ];
                vec![(p, 0.5)]
            } else if sel.starts_with("process.gpu.memory.usage") {
                vec![(&[("process.pid", "4242"), ("gpu.index", "0")], 1e9)]
            } else {
                vec![]
            };
            Some(query_answer(q, &groups))
        }
        _ => None,
    }
}

// Regression: names wider than their column were cut silently (`resnet-retrain/conf`).
#[tokio::test]
async fn names_cut_to_their_column_end_with_an_ellipsis() {
    let url = local_api(Arc::new(long_names)).await;
    let mut src = HttpSource::new(&url, None).unwrap();
    let mut app = App::new("http://127.0.0.1:7700");
    fetch(&mut app, &mut src, NOW).await;
    let narrow = |app: &App| buffer_text(&render_buffer(app, NOW, 80, 24));
    assert!(narrow(&app).contains("inference-gpu-n…"), "{}", narrow(&app));
    assert!(
        texts(&app, NOW)[1].contains("inference-gpu-node-eu-west-…"),
        "{}",
        texts(&app, NOW)[1]
    );
    press(&mut app, KeyCode::Enter);
    fetch(&mut app, &mut src, NOW).await;
    for ((w, h), text) in SIZES.iter().zip(texts(&app, NOW)) {
        check(&format!("node_long_names_{w}x{h}"), &text);
        assert!(text.contains("─ 1 × NVIDIA H100"), "{text}");
        // The cell from where the name starts to the next column (names with spaces end at
        // two spaces).
        for (start, end) in
            [("image-classif", " "), ("resnet50-imagenet", " "), ("python3 -m", "  ")]
        {
            let line = line_with(&text, start);
            let cell = line[line.find(start).unwrap()..].split(end).next().unwrap();
            assert!(cell.ends_with('…'), "{start} cut silently: {line:?}");
        }
    }
    press(&mut app, KeyCode::Char('3'));
    fetch(&mut app, &mut src, NOW).await;
    for ((w, h), text) in SIZES.iter().zip(texts(&app, NOW)) {
        check(&format!("models_long_names_{w}x{h}"), &text);
        assert!(line_with(&text, "resnet50-imagenet").contains("2026-1…*"), "{text}");
    }
}

/// The Policies screen shows a scaling rule's `ready/provisioned` replicas, as the collector's
/// resizer last reported them: replicas still warming are the difference.
#[tokio::test]
async fn scaling_rules_show_ready_out_of_provisioned_replicas() {
    let url = local_api(Arc::new(|path: &str, _q: &BTreeMap<String, String>| match path {
        "/api/v1/policies" => Some(
            r#"{"policies": [
  {"name": "resnet-serving", "file": "policies/resnet-serving.yaml", "target": "resnet",
   "rules": [{"rule": "scale", "kind": "scale", "mode": "enforce", "state": "ok",
              "provisioned": 5, "ready": 3}]}
], "errors": [], "warnings": [], "last_reload": 0}"#
                .to_owned(),
        ),
        "/api/v1/decisions" => Some(r#"{"decisions": []}"#.to_owned()),
        "/api/v1/actions" => Some(r#"{"actions": []}"#.to_owned()),
        _ => None,
    }))
    .await;
    let mut src = HttpSource::new(&url, None).unwrap();
    let mut app = App::new("http://127.0.0.1:7700");
    press(&mut app, KeyCode::Char('4'));
    fetch(&mut app, &mut src, NOW).await;
    for text in texts(&app, NOW) {
        assert!(line_with(&text, "resnet-serving/s").contains("3/5"), "{text}");
        assert!(text.contains("ready 3/5"), "the selected rule's detail: {text}");
    }
}
