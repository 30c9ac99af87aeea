//! Host sampling and export: what reaches a real OTLP receiver, outage buffering with counted
//! drops and reconnection, partial success, and the flush at shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Agent, Receiver, config};

const NO_GPU: &[&str] = &["--nvml-lib", "/nonexistent/libnvidia-ml.so.1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_process_metrics_reach_the_receiver_and_shutdown_flushes() {
    let receiver = Receiver::start().await;
    // Regression guard: a plain `sleep` matched other `sleep` processes on a busy machine. The
    // serving process gets a name (and argument) no other process has.
    let dir = tempfile::tempdir().unwrap();
    let exe_name = format!("stk-sleep-{}", std::process::id() % 100_000);
    let exe = dir.path().join(&exe_name);
    std::fs::copy(which_sleep(), &exe).unwrap();
    let marker = format!("{}", 600 + std::process::id() % 1000);
    let mut sleeper = Command::new(&exe).arg(&marker).stdout(Stdio::null()).spawn().unwrap();
    let pid = sleeper.id();
    let pid_file = dir.path().join("server.pid");
    std::fs::write(&pid_file, format!("{pid}\n")).unwrap();
    let extra = format!(
        "[[processes]]\nname = \"by-pid\"\npid_file = \"{}\"\n[[processes]]\nname = \"by-name\"\nprocess_name = \"{exe_name}\"\n[[processes]]\nname = \"by-cmd\"\ncmdline_contains = \"{exe_name} {marker}\"\n",
        pid_file.display()
    );
    let cfg = config(&receiver.url(), "200ms", &extra);
    let agent = Agent::start(NO_GPU, &cfg, None);
    let points = receiver
        .wait_for(Duration::from_secs(10), |ps| {
            ["by-pid", "by-name", "by-cmd"].iter().all(|g| {
                ps.iter().any(|p| {
                    p.metric == "process.memory.usage" && p.attr("stoker.process.group") == *g
                })
            })
        })
        .await;
    let before_stop = receiver.request_count();
    let (status, log) = agent.stop().await;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(status.success(), "{log}");

    let cores = points
        .iter()
        .filter(|p| {
            p.metric == "system.cpu.utilization" && !p.attr("cpu.logical_number").is_empty()
        })
        .map(|p| p.attr("cpu.logical_number").to_owned())
        .collect::<std::collections::BTreeSet<_>>();
    assert!(!cores.is_empty(), "no per-core CPU points");
    let total: Vec<_> = points
        .iter()
        .filter(|p| p.metric == "system.cpu.utilization" && p.attrs.is_empty())
        .collect();
    assert!(!total.is_empty(), "no total CPU point");
    for p in points.iter().filter(|p| p.metric == "system.cpu.utilization") {
        assert!((0.0..=1.0).contains(&p.value), "{p:?}");
        assert_eq!((p.unit.as_str(), p.kind), ("1", "gauge"));
    }
    let used = points
        .iter()
        .find(|p| p.metric == "system.memory.usage" && p.attr("system.memory.state") == "used")
        .unwrap();
    assert!(used.value > 0.0 && used.unit == "By" && used.kind == "updown");
    for metric in [
        "system.memory.limit",
        "system.linux.memory.available",
        "system.cpu.load_average.1m",
        "system.cpu.load_average.5m",
        "system.cpu.load_average.15m",
    ] {
        assert!(points.iter().any(|p| p.metric == metric), "{metric} missing");
    }
    for group in ["by-pid", "by-name", "by-cmd"] {
        let mem = points
            .iter()
            .find(|p| p.metric == "process.memory.usage" && p.attr("stoker.process.group") == group)
            .unwrap();
        assert_eq!(mem.attr("process.pid"), pid.to_string(), "{group}");
        assert_eq!(mem.attr("process.executable.name"), exe_name);
        assert!(mem.value > 0.0 && mem.unit == "By");
        assert!(points.iter().any(|p| p.metric == "process.cpu.utilization"
            && p.attr("stoker.process.group") == group
            && p.unit == "1"));
    }
    let host = &points[0].resource;
    assert_eq!(host.get("service.name").map(String::as_str), Some("stoker-agent"));
    assert!(host.get("host.name").is_some_and(|h| !h.is_empty()));

    // SIGTERM flushed a last batch of the agent's own counters.
    assert!(receiver.request_count() > before_stop, "nothing flushed at shutdown\n{log}");
    assert!(log.contains("Outbox flushed."), "{log}");
    let sent = receiver
        .points()
        .into_iter()
        .filter(|p| p.metric == "stoker.agent.export.sent")
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert!(sent > 0.0, "stoker.agent.export.sent never counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_drops_oldest_counts_drops_and_reconnects() {
    // Reserve a port, then leave it closed while the agent starts.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let extra = "[export]\nqueue_batches = 4\nbackoff_initial = \"100ms\"\nbackoff_max = \"200ms\"\ntimeout = \"1s\"\n";
    let cfg = config(&format!("http://{addr}"), "100ms", extra);
    let mut agent = Agent::start(NO_GPU, &cfg, None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(agent.running(), "agent died during the outage\n{}", agent.log());
    let receiver = Receiver::start_on(addr).await;
    let points = receiver
        .wait_for(Duration::from_secs(10), |ps| {
            ps.iter().any(|p| p.metric == "stoker.agent.export.dropped" && p.value > 0.0)
                && ps.iter().any(|p| p.metric == "stoker.agent.export.connected" && p.value == 1.0)
        })
        .await;
    let (status, log) = agent.stop().await;
    assert!(status.success(), "{log}");
    let dropped = points
        .iter()
        .filter(|p| p.metric == "stoker.agent.export.dropped")
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert!(dropped > 0.0, "no drops counted\n{log}");
    let failures = points
        .iter()
        .filter(|p| p.metric == "stoker.agent.export.failures")
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert!(failures >= 2.0, "reconnects not counted: {failures}");
    assert!(log.contains("Collector reachable again"), "{log}");
    // The warning is logged once per outage, not per retry.
    assert_eq!(log.matches("Export failed; keeping data").count(), 1, "{log}");
    // Oldest first were dropped: what survived the outage is at most queue_batches old.
    let earliest = points.iter().map(|p| p.time).min().unwrap();
    let latest = points.iter().map(|p| p.time).max().unwrap();
    assert!(latest - earliest < 1_500_000_000, "old batches survived the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_rejections_are_counted() {
    let receiver = Receiver::start().await;
    receiver.reject_points(1);
    let cfg = config(&receiver.url(), "200ms", "");
    let agent = Agent::start(NO_GPU, &cfg, None);
    let points = receiver
        .wait_for(Duration::from_secs(10), |ps| {
            ps.iter().any(|p| p.metric == "stoker.agent.export.rejected" && p.value >= 2.0)
        })
        .await;
    let (status, log) = agent.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        points.iter().any(|p| p.metric == "stoker.agent.export.rejected" && p.value >= 2.0),
        "{log}"
    );
    assert!(log.contains("Collector accepted the export only in part."), "{log}");
}

/// An https:// collector trusted through `export.ca_file`, with the bearer token from
/// `export.token_file`. The peer is a local tonic OTLP/gRPC receiver serving TLS with a
/// self-signed certificate made here (rcgen), so the wire is real TLS and gRPC metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collector_with_a_configured_ca_gets_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let (ca, token) = (dir.path().join("ca.pem"), dir.path().join("token"));
    std::fs::write(&ca, &cert_pem).unwrap();
    std::fs::write(&token, "s3cret-write-token\n").unwrap();
    let receiver = Receiver::start_tls(&cert_pem, &ck.signing_key.serialize_pem()).await;
    let url = format!("https://127.0.0.1:{}", receiver.addr.port());
    let extra = format!(
        "[export]\ntoken_file = {:?}\nca_file = {:?}\n",
        token.display().to_string(),
        ca.display().to_string()
    );
    let agent = Agent::start(NO_GPU, &config(&url, "200ms", &extra), None);
    let points = receiver
        .wait_for(Duration::from_secs(10), |ps| {
            ps.iter().any(|p| p.metric == "system.cpu.utilization")
        })
        .await;
    let (status, log) = agent.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        points.iter().any(|p| p.metric == "system.cpu.utilization"),
        "nothing arrived over TLS: {log}"
    );
    let auths = receiver.authorizations();
    assert!(!auths.is_empty());
    assert!(auths.iter().all(|a| a == "Bearer s3cret-write-token"), "{auths:?}");
}

/// Without the CA the same collector's certificate is not trusted: nothing is delivered, the
/// agent says why and keeps running (the batches wait in the outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collector_with_an_untrusted_certificate_gets_nothing() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let receiver = Receiver::start_tls(&ck.cert.pem(), &ck.signing_key.serialize_pem()).await;
    let url = format!("https://127.0.0.1:{}", receiver.addr.port());
    let agent = Agent::start(NO_GPU, &config(&url, "200ms", ""), None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, log) = agent.stop().await;
    assert!(status.success(), "{log}");
    assert_eq!(receiver.request_count(), 0, "{log}");
    assert!(log.contains("cannot connect to the collector"), "{log}");
}

/// The `sleep` program, copied under a unique name by the test above.
fn which_sleep() -> std::path::PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("a sleep program")
}
