//! The whole loop in one process: `serve::start` with a policy directory, gauges pushed over
//! OTLP gRPC breach the policy's target, the `command` actuator writes the new size to a file,
//! and the decision, the action and the rule's cooldown show in the API; a restart on the same
//! data directory keeps the decision history and the cooldown (no second resize).

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use serde_json::Value;
use stoker_collector::config::{AuthConfig, CollectorConfig, ServerConfig};
use stoker_collector::serve::{self, CollectorSettings, RunningCollector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common;

fn policy(size_file: &Path) -> String {
    common::command_policy(
        "loop",
        &format!("echo {{{{ desired }}}} > {}", size_file.display()),
        "1h",
    )
}

async fn start(data: &Path, policies: &Path) -> (RunningCollector, CancellationToken, TaskTracker) {
    let config = CollectorConfig {
        server: ServerConfig {
            api_listen: common::loopback0(),
            otlp_grpc_listen: common::loopback0(),
            otlp_http_listen: common::loopback0(),
            ..ServerConfig::default()
        },
        // Variables no test sets: the loopback listeners run without tokens.
        auth: AuthConfig {
            read_token_env: "STOKER_CLOSED_LOOP_NO_READ".into(),
            write_token_env: "STOKER_CLOSED_LOOP_NO_WRITE".into(),
            ..AuthConfig::default()
        },
        ..CollectorConfig::default()
    };
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let settings = CollectorSettings {
        config,
        data_dir: data.to_path_buf(),
        policies: Some(policies.to_path_buf()),
        reload_on_hup: false,
    };
    let running = serve::start(settings, cancel.clone(), tracker.clone()).await.expect("start");
    (running, cancel, tracker)
}

async fn stop(cancel: CancellationToken, tracker: TaskTracker) {
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(15), tracker.wait())
        .await
        .expect("clean shutdown in time");
}

async fn get(c: &reqwest::Client, running: &RunningCollector, path: &str) -> Value {
    let r = c.get(format!("http://{}{path}", running.bound.api)).send().await.expect("get");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

/// Polls `f` every 200 ms for at most `secs`.
async fn eventually<T>(secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    for _ in 0..secs * 5 {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breach_scales_out_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, policies, size_file) =
        (dir.path().join("data"), dir.path().join("policies"), dir.path().join("size"));
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("loop.yaml"), policy(&size_file)).expect("write policy");
    let c = common::client();

    let (running, cancel, tracker) = start(&data, &policies).await;
    let loaded = get(&c, &running, "/api/v1/policies").await;
    assert_eq!(loaded["errors"], Value::Array(vec![]), "{loaded}");
    assert_eq!(loaded["policies"][0]["name"], "loop");

    // Two replicas with a queue of 40 each: four times the target of 10.
    let mut grpc = MetricsServiceClient::connect(format!("http://{}", running.bound.otlp_grpc))
        .await
        .expect("connect");
    for (metric, v) in [("svc.replicas", 2.0), ("svc.queue", 40.0)] {
        grpc.export(common::gauge_request(
            "node-a",
            metric,
            common::now_nanos(),
            v,
            vec![common::kv("service.name", "svc")],
        ))
        .await
        .expect("export");
    }

    let size: u32 =
        eventually(20, async || std::fs::read_to_string(&size_file).ok()?.trim().parse().ok())
            .await
            .expect("the command actuator ran");
    assert!(size > 2 && size <= 10, "scaled out within bounds: {size}");

    // The decision is committed once the actuator has answered, just after the file appears.
    let acted: Vec<Value> = eventually(10, async || {
        let d = get(&c, &running, "/api/v1/decisions?policy=loop").await;
        let acted: Vec<Value> =
            d["decisions"].as_array()?.iter().filter(|d| !d["action"].is_null()).cloned().collect();
        (!acted.is_empty()).then_some(acted)
    })
    .await
    .expect("a decision with an action");
    assert_eq!(acted.len(), 1, "{acted:?}");
    let decision = acted[0].clone();
    assert_eq!(decision["outcome"]["status"], "applied", "{decision}");

    let actions = eventually(10, async || {
        let a = get(&c, &running, "/api/v1/actions?policy=loop").await;
        (a["actions"].as_array().is_some_and(|v| !v.is_empty())).then_some(a)
    })
    .await
    .expect("an action");
    assert_eq!(actions["actions"][0]["key"], decision["key"], "{actions}");

    let status = get(&c, &running, "/api/v1/policies").await;
    let rule = &status["policies"][0]["rules"][0];
    assert_eq!(rule["rule"], "scale");
    assert_eq!(rule["state"], "cooling-down", "{status}");
    let until = rule["cooling_down_until"].as_u64().expect("cooldown end");
    let metrics = c
        .get(format!("http://{}/metrics", running.bound.api))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("stoker_policies_loaded 1"), "{metrics}");
    assert!(metrics.contains("stoker_policy_actions_total 1"), "{metrics}");
    drop((grpc, running));
    stop(cancel, tracker).await;

    // Restart on the same data directory: history and cooldown are still there, and the
    // still-breaching queue does not resize again.
    std::fs::write(&size_file, "untouched\n").expect("mark");
    let (running, cancel, tracker) = start(&data, &policies).await;
    let status = get(&c, &running, "/api/v1/policies").await;
    let rule = &status["policies"][0]["rules"][0];
    assert_eq!(rule["state"], "cooling-down", "{status}");
    assert_eq!(rule["cooling_down_until"].as_u64(), Some(until));
    let decisions = get(&c, &running, "/api/v1/decisions?policy=loop").await;
    assert!(
        decisions["decisions"]
            .as_array()
            .expect("decisions")
            .iter()
            .any(|d| d["key"] == decision["key"]),
        "{decisions}"
    );
    let mut grpc = MetricsServiceClient::connect(format!("http://{}", running.bound.otlp_grpc))
        .await
        .expect("connect");
    for (metric, v) in [("svc.replicas", f64::from(size)), ("svc.queue", 400.0)] {
        grpc.export(common::gauge_request(
            "node-a",
            metric,
            common::now_nanos(),
            v,
            vec![common::kv("service.name", "svc")],
        ))
        .await
        .expect("export");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        std::fs::read_to_string(&size_file).expect("size file"),
        "untouched\n",
        "cooldown kept across the restart"
    );
    drop(grpc);
    stop(cancel, tracker).await;
}
