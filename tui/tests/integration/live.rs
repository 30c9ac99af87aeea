//! `HttpSource` against a real collector started in-process (`serve::start`, port 0, a temp
//! data dir), fed over OTLP gRPC with three nodes of two GPUs and an inference service; each
//! screen's `Need` is fetched and checked, and the Fleet answer is drawn into a `TestBackend`.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use stoker_collector::serve::{CollectorSettings, RunningCollector, start};
use stoker_tui::app::App;
use stoker_tui::client::{Need, Snapshot, Source, SourceError, Update};
use stoker_tui::http::HttpSource;
use stoker_tui::model::{ClusterRole, GpuStatus, NANOS_PER_SEC};
use stoker_tui::view::{buffer_text, render_buffer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::otlp_fleet::{node_batch, request, service_batch, util};

/// Start a collector on loopback with OS-chosen ports in `dir`.
pub async fn collector(dir: &std::path::Path, cancel: &CancellationToken) -> RunningCollector {
    let mut settings =
        CollectorSettings { data_dir: dir.to_path_buf(), ..CollectorSettings::default() };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    settings.config.server.api_listen = any;
    settings.config.server.otlp_grpc_listen = any;
    settings.config.server.otlp_http_listen = any;
    start(settings, cancel.clone(), TaskTracker::new()).await.unwrap()
}

fn now() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_source_fills_every_screen_from_a_live_collector() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let srv = collector(dir.path(), &cancel).await;
    let mut grpc =
        MetricsServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc)).await.unwrap();
    // Six agent intervals of 10 s ending now.
    let t_end = now();
    let step = 10 * NANOS_PER_SEC;
    let t0 = t_end - 6 * step;
    for tick in 1..=6u32 {
        let ts = t0 + u64::from(tick) * step;
        let mut batch: Vec<_> = (0..3).map(|n| node_batch(n, 2, ts)).collect();
        batch.push(service_batch(0, "v1", t0, ts - step, ts, tick));
        grpc.export(request(batch)).await.unwrap();
    }

    let mut src = HttpSource::new(&format!("http://{}", srv.bound.api), None).unwrap();
    let traffic = src.traffic();

    // Fleet: every node, GPU means and maxima per node, the failed GPU counted.
    let fleet = src.fetch(&Need::Fleet).await.unwrap();
    let Snapshot::Fleet(rows) = &fleet else { panic!("{fleet:?}") };
    let names: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(names, ["gpu-node-000", "gpu-node-001", "gpu-node-002"]);
    let r2 = &rows[2];
    assert_eq!(r2.gpus, 2);
    let (a, b) = (util(2, 0), util(2, 1));
    assert!((r2.gpu_busy_mean.unwrap() - (a + b) / 2.0).abs() < 1e-9, "{r2:?}");
    assert!((r2.gpu_busy_max.unwrap() - a.max(b)).abs() < 1e-9, "{r2:?}");
    assert_eq!(r2.gpu_mem_total, Some(160 * 1024 * 1024 * 1024));
    assert_eq!(r2.mem_total, Some(256 * 1024 * 1024 * 1024));
    assert_eq!(r2.power_w, Some(601.0));
    assert_eq!(r2.temp_max_c, Some(51.0));
    assert_eq!(r2.cpu, Some(0.25));
    assert_eq!(r2.health.gpus_lost, 0);
    assert_eq!(rows[1].health.gpus_lost, 1, "{:?}", rows[1]);
    assert_eq!(rows[1].gpus, 2);
    assert!(rows[0].health.last_seen >= t_end - NANOS_PER_SEC);
    let (fleet_requests, _) = traffic.totals();
    assert_eq!(fleet_requests, 13, "nodes + one query per column + anomalies");
    // This collector has no anomaly detection (404): no anomalies, and no error.
    assert!(rows.iter().all(|r| r.health.anomalies == 0), "{rows:?}");

    // The Fleet screen drawn from that answer shows every node.
    let mut app = App::new(format!("http://{}", srv.bound.api));
    app.apply(Update::Data { at: t_end, snapshot: fleet.clone() });
    let text = buffer_text(&render_buffer(&app, t_end, 160, 48));
    for n in &names {
        assert!(text.contains(n), "{n} missing from\n{text}");
    }

    // Node: that node only, histories at the asked step, the lost GPU marked failed.
    let need = Need::Node {
        node: "gpu-node-001".into(),
        window: Duration::from_secs(60),
        step: Duration::from_secs(10),
    };
    let Snapshot::Node(d) = src.fetch(&need).await.unwrap() else { panic!() };
    assert_eq!(d.node, "gpu-node-001");
    assert_eq!(d.gpus.len(), 2);
    assert_eq!(d.gpus[0].index, 0);
    assert_eq!(d.gpus[0].status, GpuStatus::Ok);
    assert_eq!(d.gpus[1].status, GpuStatus::Failed);
    assert_eq!(d.gpus[0].util, Some(util(1, 0)));
    assert!(d.gpus[0].util_history.points.len() >= 5, "{:?}", d.gpus[0].util_history);
    assert!(d.gpus[1].util_history.points.is_empty());
    assert_eq!(d.gpus[0].temp_c, Some(50.0));
    assert_eq!(d.gpus[0].power_limit_w, Some(700.0));
    assert_eq!(d.mem_total, Some(256 * 1024 * 1024 * 1024));
    assert!(!d.cpu_history.points.is_empty());
    assert!(d.services.is_empty(), "no service runs on node 1");

    let need0 = Need::Node {
        node: "gpu-node-000".into(),
        window: Duration::from_secs(60),
        step: Duration::from_secs(10),
    };
    let Snapshot::Node(d0) = src.fetch(&need0).await.unwrap() else { panic!() };
    assert_eq!(d0.services.len(), 1, "{:?}", d0.services);
    let s = &d0.services[0];
    assert_eq!(
        (s.name.as_str(), s.model.as_str(), s.version.as_str()),
        ("resnet-serving", "resnet", "v1")
    );
    let rate = s.rate_rps.unwrap();
    assert!((5.0..=20.0).contains(&rate), "{rate}");
    assert!(s.errors_rps.unwrap() < rate * 0.05);
    let p95 = s.latency.p95.unwrap();
    assert!((0.025..=0.1).contains(&p95), "{p95}");

    let gone = Need::Node {
        node: "gpu-node-999".into(),
        window: Duration::from_secs(60),
        step: Duration::from_secs(10),
    };
    match src.fetch(&gone).await {
        Err(SourceError::NotFound(what)) => assert_eq!(what, "node gpu-node-999"),
        other => panic!("{other:?}"),
    }

    // Models: one model, one version, its latency, rate and confidence.
    let models = Need::Models { window: Duration::from_secs(60), step: Duration::from_secs(10) };
    let Snapshot::Models(m) = src.fetch(&models).await.unwrap() else { panic!() };
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].name.as_str(), m[0].current_version.as_str()), ("resnet", "v1"));
    let v = &m[0].versions[0];
    assert!(v.latency.p95.is_some() && !v.latency_history.p95.points.is_empty());
    assert!(!v.rate_history.points.is_empty());
    let total: u64 = v.confidence.counts.iter().sum();
    assert!(total >= 400, "{:?}", v.confidence);
    let high: u64 = v.confidence.counts[4..].iter().sum();
    assert!(high * 10 >= total * 6, "most confidence above 0.8: {:?}", v.confidence);
    assert!((v.confidence.mean.unwrap() - 0.85).abs() < 1e-6);

    // serve::start runs ingest, store and API only: the policy routes answer 404 there, which
    // the source reports as "not found" (an answer), not as an outage.
    assert!(matches!(src.fetch(&Need::Policies).await, Err(SourceError::NotFound(_))));
    assert!(matches!(
        src.fetch(&Need::Decisions { limit: 50 }).await,
        Err(SourceError::NotFound(_))
    ));

    // A collector alone serves its cluster view: it leads, at term 0, with no store to share.
    let alone = src.cluster().await.unwrap().expect("/api/v1/cluster is served");
    assert_eq!((alone.role, alone.term, alone.backend.as_str()), (ClusterRole::Leader, 0, "none"));
    assert_eq!(alone.leader.as_deref(), Some(alone.member.as_str()));
    assert!(alone.alone());

    // A collector that is gone is unreachable.
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut dead = HttpSource::new(&format!("http://{}", srv.bound.api), None).unwrap();
    match dead.fetch(&Need::Policies).await {
        Err(SourceError::Unreachable(_)) => {}
        other => panic!("{other:?}"),
    }
}
