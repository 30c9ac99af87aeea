//! The binary as an operator meets it, run for real: what SIGHUP does (`--reload-signal`),
//! logs without colour codes when stderr is not a terminal, the one error style, and
//! `/metrics` as the real `promtool check metrics` (Debian's `prometheus` package, installed by
//! `.ci/install-prometheus.sh`) reads it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    api: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits (bounded) until stderr holds `text`.
    fn wait_for_log(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// The exit status within 20 s, or `None` while it still runs.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The collector binary on loopback ports with a policy directory; stdin is not a terminal,
/// as under systemd or Kubernetes.
fn spawn(data: &Path, policies: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stoker-collector"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .arg("--policies")
        .arg(policies)
        .args(["--api-listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    let mut pipe = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    BufReader::new(stdout).read_line(&mut line).expect("read listening line");
    assert!(line.starts_with("listening "), "{line:?}");
    let api = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .unwrap_or_else(|| panic!("no api= in {line:?}"))
        .to_owned();
    Running { child, stderr, api }
}

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/policies/anomaly-alert.yaml");
    // Loopback only: the hooks never fire here (no anomaly), but nothing may point elsewhere.
    let text = std::fs::read_to_string(src)
        .unwrap()
        .replace("https://alerts.example", "http://127.0.0.1:9");
    std::fs::write(dir.path().join("anomaly-alert.yaml"), text).unwrap();
    dir
}

/// Regression: SIGHUP always reloaded, so closing the terminal of a foreground collector left
/// it running; and the logs carried ANSI colour codes into journald and `kubectl logs`.
/// Not on a terminal (`auto`), SIGHUP reloads and the collector keeps serving.
#[test]
fn sighup_reloads_when_not_on_a_terminal_and_logs_have_no_colour_codes() {
    let (data, policies) = (tempfile::tempdir().unwrap(), policy_dir());
    let mut c = spawn(data.path(), policies.path(), &[]);
    assert!(c.wait_for_log("Policy engine started."), "{}", c.stderr.lock().unwrap());
    c.signal("HUP");
    assert!(c.wait_for_log("SIGHUP: reloading policies."), "{}", c.stderr.lock().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.child.try_wait().unwrap().is_none(), "SIGHUP must not stop the collector");
    c.signal("TERM");
    assert!(c.wait_exit().is_some_and(|s| s.success()), "SIGTERM stops it cleanly");
    let log = c.stderr.lock().unwrap().clone();
    assert!(!log.contains('\u{1b}'), "no ANSI escapes when stderr is a pipe:\n{log}");
}

/// With `--reload-signal none` (what `auto` picks on a terminal) SIGHUP is a graceful stop.
#[test]
fn sighup_stops_gracefully_with_reload_signal_none() {
    let (data, policies) = (tempfile::tempdir().unwrap(), policy_dir());
    let mut c = spawn(data.path(), policies.path(), &["--reload-signal", "none"]);
    assert!(c.wait_for_log("Policy engine started."), "{}", c.stderr.lock().unwrap());
    c.signal("HUP");
    let status = c.wait_exit();
    let log = c.stderr.lock().unwrap().clone();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert!(log.contains("Shutting down: flushing the store."), "{log}");
    assert!(!log.contains("SIGHUP: reloading policies."), "{log}");
}

/// Both daemons report errors as `<binary>: error: …`, and bad configuration exits 64.
#[test]
fn errors_have_one_style() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_stoker-collector"))
        .args(["serve", "--config"])
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.starts_with("stoker-collector: error: "), "{err}");
    assert!(err.contains("nope.toml"), "names the file: {err}");
}

/// Every family on `/metrics` (store, ingest, query and the policy runtime's) has HELP and
/// TYPE and passes `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_passes_promtool() {
    let ok = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !crate::common::peer_available(ok, "promtool", "install-prometheus.sh") {
        return;
    }
    let (data, policies) = (tempfile::tempdir().unwrap(), policy_dir());
    let c = spawn(data.path(), policies.path(), &[]);
    assert!(c.wait_for_log("Policy engine started."), "{}", c.stderr.lock().unwrap());
    let r = crate::common::client().get(format!("http://{}/metrics", c.api)).send().await;
    let text = r.expect("GET /metrics").text().await.expect("body");
    assert!(text.contains("stoker_policy_reloads_total"), "policy families present:\n{text}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool:\n{said}\n---\n{text}");
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(types, helps, "{text}");
}
