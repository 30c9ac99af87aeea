//! GPU sampling against the fake NVML: every metric with the script's values, units and
//! attributes, and every injected fault (NotSupported fields, GPU lost, XID 79, no driver).

use std::time::Duration;

use crate::support::{Agent, Point, Receiver, config, fake_nvml};

pub(crate) const FULL: &str = r#"{
  "driver_version": "550.54.15",
  "devices": [{
    "uuid": "GPU-11111111-2222-3333-4444-555555555555",
    "name": "NVIDIA H100 80GB HBM3",
    "xid_events": [{"at_s": 0.3, "xid": 79}, {"at_s": 0.4, "xid": 79}, {"at_s": 0.5, "xid": 13}],
    "readings": [
      {"at_s": 0, "gpu_util": 40, "mem_util": 20, "enc_util": 5, "dec_util": 6,
       "memory_used": 1073741824, "memory_total": 85899345920,
       "power_mw": 250500, "power_limit_mw": 700000, "energy_mj": 123456,
       "temperature_c": 61, "sm_clock_mhz": 1755, "throttle_reasons": 4,
       "pcie_tx_kbps": 10, "pcie_rx_kbps": 20, "ecc_corrected": 3, "ecc_uncorrected": 1,
       "processes": [{"pid": 4242, "used_memory": 536870912, "sm_util": 33}]},
      {"at_s": 1.0, "gpu_util": 70, "mem_util": 20, "enc_util": 5, "dec_util": 6,
       "memory_used": 2147483648, "memory_total": 85899345920,
       "power_mw": 300000, "power_limit_mw": 700000, "energy_mj": 456789,
       "temperature_c": 64, "sm_clock_mhz": 1980, "throttle_reasons": 0,
       "pcie_tx_kbps": 10, "pcie_rx_kbps": 20, "ecc_corrected": 4, "ecc_uncorrected": 1,
       "processes": [{"pid": 4242, "used_memory": 536870912, "sm_util": 33}]}
    ]
  }]
}"#;

const UUID: &str = "GPU-11111111-2222-3333-4444-555555555555";

fn of<'a>(points: &'a [Point], metric: &str, pred: impl Fn(&Point) -> bool + 'a) -> Vec<&'a Point> {
    points.iter().filter(|p| p.metric == metric && pred(p)).collect()
}

fn last(points: &[Point], metric: &str, pred: impl Fn(&Point) -> bool) -> Option<Point> {
    points.iter().filter(|p| p.metric == metric && pred(p)).max_by_key(|p| p.time).cloned()
}

fn gpu_points(points: &[Point]) -> Vec<&Point> {
    points.iter().filter(|p| p.scope == "stoker-agent/gpu").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gpu_metric_arrives_with_the_scripted_values_units_and_attributes() {
    let receiver = Receiver::start().await;
    let lib = fake_nvml();
    let cfg = config(
        &receiver.url(),
        "200ms",
        "[node]\nhost_name = \"gpu-node-1\"\nhost_id = \"hid-1\"\n[node.labels]\npool = \"h100\"\n[node.cloud]\nprovider = \"aws\"\nregion = \"eu-west-1\"\n",
    );
    let agent = Agent::start(&["--nvml-lib", lib.to_str().unwrap()], &cfg, Some(FULL));
    // Wait for the second reading (gpu_util 70 from t=1s) and all three XIDs.
    let points = receiver
        .wait_for(Duration::from_secs(15), |ps| {
            ps.iter().any(|p| p.metric == "hw.gpu.utilization" && p.value == 0.7)
                && ps.iter().any(|p| p.attr("error.type") == "xid_79" && p.value == 2.0)
                && ps.iter().any(|p| p.attr("error.type") == "xid_13")
        })
        .await;
    let (status, log) = agent.stop().await;
    assert!(status.success(), "agent exit {status:?}\n{log}");

    let gpu = gpu_points(&points);
    assert!(!gpu.is_empty(), "no GPU points\n{log}");
    for p in &gpu {
        assert_eq!(p.attr("hw.id"), UUID, "{p:?}");
        assert_eq!(p.attr("hw.model"), "NVIDIA H100 80GB HBM3", "{p:?}");
        assert_eq!(p.attr("gpu.index"), "0", "{p:?}");
        assert_eq!(p.attr("gpu.driver.version"), "550.54.15", "{p:?}");
        assert_eq!(p.resource.get("service.name").map(String::as_str), Some("stoker-agent"));
        assert_eq!(p.resource.get("host.name").map(String::as_str), Some("gpu-node-1"));
        assert_eq!(p.resource.get("host.id").map(String::as_str), Some("hid-1"));
        assert_eq!(p.resource.get("pool").map(String::as_str), Some("h100"));
        assert_eq!(p.resource.get("cloud.provider").map(String::as_str), Some("aws"));
        assert_eq!(p.resource.get("cloud.region").map(String::as_str), Some("eu-west-1"));
    }

    // (metric, extra attribute, unit, kind, first reading, second reading)
    type Expected<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str, &'a str, f64, f64);
    let expected: &[Expected] = &[
        ("hw.gpu.utilization", Some(("hw.gpu.task", "general")), "1", "gauge", 0.4, 0.7),
        ("hw.gpu.utilization", Some(("hw.gpu.task", "encoder")), "1", "gauge", 0.05, 0.05),
        ("hw.gpu.utilization", Some(("hw.gpu.task", "decoder")), "1", "gauge", 0.06, 0.06),
        ("gpu.memory_controller.utilization", None, "1", "gauge", 0.2, 0.2),
        ("hw.gpu.memory.usage", None, "By", "updown", 1073741824.0, 2147483648.0),
        ("hw.gpu.memory.limit", None, "By", "updown", 85899345920.0, 85899345920.0),
        ("hw.power", None, "W", "gauge", 250.5, 300.0),
        ("gpu.power.limit", None, "W", "gauge", 700.0, 700.0),
        ("hw.energy", None, "J", "counter", 123.456, 456.789),
        ("hw.temperature", None, "Cel", "gauge", 61.0, 64.0),
        ("gpu.clock.sm", None, "MHz", "gauge", 1755.0, 1980.0),
        ("gpu.throttle.reasons", None, "", "gauge", 4.0, 0.0),
        (
            "gpu.pcie.throughput",
            Some(("network.io.direction", "transmit")),
            "By/s",
            "gauge",
            10240.0,
            10240.0,
        ),
        (
            "gpu.pcie.throughput",
            Some(("network.io.direction", "receive")),
            "By/s",
            "gauge",
            20480.0,
            20480.0,
        ),
        ("hw.errors", Some(("error.type", "ecc_corrected")), "{error}", "counter", 3.0, 4.0),
        ("hw.errors", Some(("error.type", "ecc_uncorrected")), "{error}", "counter", 1.0, 1.0),
        (
            "process.gpu.memory.usage",
            Some(("process.pid", "4242")),
            "By",
            "gauge",
            536870912.0,
            536870912.0,
        ),
        ("process.gpu.utilization", Some(("process.pid", "4242")), "1", "gauge", 0.33, 0.33),
    ];
    for (metric, extra, unit, kind, first, second) in expected {
        let matching = of(&points, metric, |p| extra.is_none_or(|(k, v)| p.attr(k) == v));
        assert!(!matching.is_empty(), "{metric} {extra:?} missing\n{log}");
        for p in &matching {
            assert_eq!(&p.unit, unit, "{metric} unit");
            assert_eq!(p.kind, *kind, "{metric} kind");
        }
        let values: Vec<f64> = matching.iter().map(|p| p.value).collect();
        assert!(values.contains(first), "{metric} {extra:?}: {first} not in {values:?}");
        assert!(values.contains(second), "{metric} {extra:?}: {second} not in {values:?}");
    }

    // XIDs are counted per code, never a last value.
    let xid79 = last(&points, "hw.errors", |p| p.attr("error.type") == "xid_79").unwrap();
    assert_eq!((xid79.value, xid79.kind, xid79.unit.as_str()), (2.0, "counter", "{error}"));
    let xid13 = last(&points, "hw.errors", |p| p.attr("error.type") == "xid_13").unwrap();
    assert_eq!(xid13.value, 1.0);

    // A healthy device says so.
    let ok = last(&points, "hw.status", |p| p.attr("hw.state") == "ok").unwrap();
    assert_eq!((ok.value, ok.kind, ok.attr("hw.type")), (1.0, "updown", "gpu"));
    for state in ["degraded", "failed"] {
        let p = last(&points, "hw.status", |p| p.attr("hw.state") == state).unwrap();
        assert_eq!(p.value, 0.0, "{state}");
    }
}

const FAULTS: &str = r#"{
  "devices": [
    {"uuid": "GPU-partial", "name": "Tesla T4",
     "not_supported": ["ecc", "encoder_utilization", "decoder_utilization", "pcie_throughput", "events"],
     "readings": [{"gpu_util": 90, "memory_used": 100, "memory_total": 200, "power_mw": 70000}]},
    {"uuid": "GPU-doomed", "name": "NVIDIA A100-SXM4-40GB", "lost_after_s": 1.0,
     "xid_events": [{"at_s": 0.2, "xid": 79}],
     "readings": [{"gpu_util": 10, "memory_used": 1, "memory_total": 2}]}
  ]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_fields_degrade_a_gpu_and_a_lost_gpu_fails_without_stopping_the_agent() {
    let receiver = Receiver::start().await;
    let lib = fake_nvml();
    let cfg = config(&receiver.url(), "200ms", "");
    let mut agent = Agent::start(&["--nvml-lib", lib.to_str().unwrap()], &cfg, Some(FAULTS));
    let failed = |p: &Point| {
        p.metric == "hw.status"
            && p.attr("hw.id") == "GPU-doomed"
            && p.attr("hw.state") == "failed"
            && p.value == 1.0
    };
    let points = receiver
        .wait_for(Duration::from_secs(15), |ps| {
            ps.iter().filter(|p| failed(p)).count() >= 3
                && ps.iter().any(|p| p.attr("error.type") == "xid_79")
        })
        .await;
    assert!(agent.running(), "agent died\n{}", agent.log());
    let (status, log) = agent.stop().await;
    assert!(status.success(), "{log}");

    // The partial device: unsupported fields are absent, the rest present, status degraded.
    let partial = |p: &&Point| p.attr("hw.id") == "GPU-partial";
    let partial_points: Vec<&Point> = points.iter().filter(partial).collect();
    assert!(partial_points.iter().any(|p| p.metric == "hw.gpu.utilization" && p.value == 0.9));
    assert!(partial_points.iter().any(|p| p.metric == "hw.power" && p.value == 70.0));
    assert!(partial_points.iter().any(|p| p.metric == "hw.gpu.memory.usage" && p.value == 100.0));
    for p in &partial_points {
        assert_ne!(p.metric, "gpu.pcie.throughput", "{p:?}");
        assert!(!p.attr("error.type").starts_with("ecc"), "{p:?}");
        assert!(!["encoder", "decoder"].contains(&p.attr("hw.gpu.task")), "{p:?}");
    }
    let degraded = last(&points, "hw.status", |p| {
        p.attr("hw.id") == "GPU-partial" && p.attr("hw.state") == "degraded"
    })
    .unwrap();
    assert_eq!(degraded.value, 1.0);
    // Each unsupported field is logged once, not every sample.
    assert_eq!(log.matches("field=\"ecc\"").count(), 1, "{log}");
    assert_eq!(log.matches("field=\"pcie_throughput\"").count(), 1, "{log}");

    // The lost device: metrics before the loss, XID counted, then only hw.status=failed.
    let doomed: Vec<&Point> = points.iter().filter(|p| p.attr("hw.id") == "GPU-doomed").collect();
    assert!(doomed.iter().any(|p| p.metric == "hw.gpu.utilization" && p.value == 0.1));
    let first_failed = doomed.iter().filter(|p| failed(p)).map(|p| p.time).min().unwrap();
    for p in doomed.iter().filter(|p| p.time >= first_failed) {
        assert!(
            p.metric == "hw.status" || p.attr("error.type") == "xid_79",
            "a lost GPU reported {p:?}"
        );
    }
    assert_eq!(log.matches("GPU lost").count(), 1, "{log}");
    // The other GPU keeps reporting after the loss.
    assert!(points.iter().any(|p| p.attr("hw.id") == "GPU-partial"
        && p.metric == "hw.gpu.utilization"
        && p.time > first_failed));
}

async fn host_only(args: &[&str], script: Option<&str>) {
    let receiver = Receiver::start().await;
    let cfg = config(&receiver.url(), "200ms", "");
    let agent = Agent::start(args, &cfg, script);
    let points = receiver
        .wait_for(Duration::from_secs(10), |ps| {
            ps.iter().filter(|p| p.metric == "system.cpu.utilization").count() >= 9
        })
        .await;
    let (status, log) = agent.stop().await;
    assert!(status.success(), "{log}");
    assert!(points.iter().any(|p| p.metric == "system.memory.usage"), "{log}");
    assert!(gpu_points(&points).is_empty(), "GPU points without a driver");
    assert!(!points.iter().any(|p| p.metric.starts_with("hw.")));
    assert_eq!(
        log.matches("No usable NVIDIA driver; running with host metrics only.").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_not_loaded_means_host_metrics_only_said_once() {
    let lib = fake_nvml();
    host_only(
        &["--nvml-lib", lib.to_str().unwrap()],
        Some(r#"{"driver_loaded": false, "devices": []}"#),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_nvml_library_means_host_metrics_only_said_once() {
    host_only(&["--nvml-lib", "/nonexistent/libnvidia-ml.so.1"], None).await;
}
