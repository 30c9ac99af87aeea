//! The agent's `/metrics` as Prometheus sees it: the real binary with the fake NVML library
//! (GPU families present), scraped over HTTP and checked by the real `promtool check metrics`
//! (Debian's `prometheus` package, installed by `.ci/install-prometheus.sh`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::gpu::FULL;
use crate::support::{Agent, Receiver, config, fake_nvml};

fn promtool() -> Option<std::path::PathBuf> {
    let ok = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if ok {
        return Some("promtool".into());
    }
    if std::env::var("STOKER_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("promtool is required (STOKER_REQUIRE_PEERS=1): run .ci/install-prometheus.sh");
    }
    eprintln!("skipping: promtool not installed (run .ci/install-prometheus.sh)");
    None
}

/// `promtool check metrics` on `text`: its exit status and what it said.
pub(crate) fn promtool_check(promtool: &std::path::Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// Regression: none of the 13 families had `# HELP`, so promtool exited 3, and the agent's own
/// `stoker.agent.inference.*` counters went out over OTLP but never reached `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_passes_promtool_with_help_for_every_family() {
    let Some(promtool) = promtool() else { return };
    let receiver = Receiver::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let lib = fake_nvml();
    let cfg = config(&receiver.url(), "200ms", "");
    let args = ["--nvml-lib", lib.to_str().unwrap(), "--metrics-listen", &listen];
    let agent = Agent::start(&args, &cfg, Some(FULL));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut text = String::new();
    for _ in 0..150 {
        if let Ok(r) = client.get(format!("http://{listen}/metrics")).send().await {
            text = r.text().await.unwrap_or_default();
            if text.contains("hw_power_watts") && text.contains("system_cpu_utilization") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, log) = agent.stop().await;
    assert!(text.contains("hw_power_watts"), "no GPU families on /metrics:\n{text}\n{log}");
    assert!(
        text.contains("# TYPE stoker_agent_inference_points_received_total counter"),
        "the inference room's counters are on /metrics:\n{text}"
    );
    let (ok, said) = promtool_check(&promtool, &text);
    assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}\n--- /metrics:\n{text}");
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert_eq!(helps.len(), families, "one HELP per family:\n{text}");
    let generic: Vec<&&str> =
        helps.iter().filter(|h| h.contains("OpenTelemetry metric ")).collect();
    assert!(
        generic.is_empty(),
        "every family the agent emits has its own description: {generic:?}"
    );
}
