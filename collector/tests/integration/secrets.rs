//! Secrets never leave the process: the real collector runs with its read and write tokens in
//! files, a `[secrets.X]` from the environment and one from a file (webhook HMAC keys) and a
//! kubeconfig bearer token; the real agent sends with the write token (and a second one with a
//! wrong token). Every path that logs is driven: refused tokens, bad queries, malformed ingest,
//! a webhook that answers 500, a Kubernetes API that answers 500, a dry-run request dump, a
//! policy reload, and `/metrics`. No secret value may appear in either daemon's stderr, in
//! `/metrics`, or in any API answer.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;

use crate::actuate::support::{Mock, Reply};
use crate::common;

const READ_TOKEN: &str = "rtok-7d1f9a2c-read-secret";
const WRITE_TOKEN: &str = "wtok-3b8e0c41-write-secret";
const HOOK_FILE: &str = "hookfile-91ac55e0-hmac-secret";
const HOOK_ENV: &str = "hookenv-c4d2e7b3-hmac-secret";
const KUBE_TOKEN: &str = "kubetok-5e6f1a90-bearer-secret";
/// A token a caller presents that is not the collector's; it must not be echoed either.
const WRONG_TOKEN: &str = "wrongtok-0a9b8c7d-presented";
const SECRETS: [&str; 6] = [READ_TOKEN, WRITE_TOKEN, HOOK_FILE, HOOK_ENV, KUBE_TOKEN, WRONG_TOKEN];

/// A child process whose stderr is collected; killed when dropped.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn spawn(mut cmd: Command) -> (Self, Option<std::process::ChildStdout>) {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take();
        (Self { child, stderr }, stdout)
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit within 20 s (the log is complete after it).
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..400 {
            if self.child.try_wait().unwrap().is_some() {
                // The reader thread drains the pipe's last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn policies(dir: &Path, hook_url: &str) {
    let current = |m: &str| {
        format!(
            "current: {{from: signal, signal: {{metric: {m}.replicas, stat: last, window: 60s}}}}"
        )
    };
    let scale = |m: &str| {
        format!(
            "  scale:\n    metrics:\n      - name: queue\n        signal: {{metric: {m}.queue, stat: mean, window: 60s}}\n        target: {{value: 10}}\n    cooldown: {{scaleUp: 1h, scaleDown: 1h}}\n"
        )
    };
    let doc = |name: &str, mode: &str, target: String| {
        format!(
            "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  mode: {mode}\n  interval: 1s\n  target: {target}\n{}",
            scale(name)
        )
    };
    let webhook = |name: &str, secret: &str| {
        format!(
            "{{name: {name}, min: 1, max: 10, actuator: webhook, webhook: {{url: \"{hook_url}/{name}\", secret: {secret}}}, {}}}",
            current(name)
        )
    };
    std::fs::write(dir.join("hook.yaml"), doc("hook", "enforce", webhook("hook", "hook-file")))
        .unwrap();
    std::fs::write(dir.join("dry.yaml"), doc("dry", "dry-run", webhook("dry", "hook-env")))
        .unwrap();
    let kube = "{name: kube, min: 1, max: 10, actuator: kubernetes, kubernetes: {namespace: infer, deployment: kube, cluster: t}}".to_owned();
    std::fs::write(dir.join("kube.yaml"), doc("kube", "enforce", kube)).unwrap();
}

/// Gauges for every policy's signals: queues at four times the target.
fn gauges() -> Vec<u8> {
    let mut req =
        common::gauge_request("secrets-node", "hook.queue", common::now_nanos(), 40.0, vec![]);
    for (m, v) in [
        ("hook.replicas", 2.0),
        ("dry.queue", 40.0),
        ("dry.replicas", 2.0),
        ("kube.queue", 40.0),
        ("kube.replicas", 2.0),
    ] {
        let more = common::gauge_request("secrets-node", m, common::now_nanos(), v, vec![]);
        req.resource_metrics.extend(more.resource_metrics);
    }
    req.encode_to_vec()
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} contains the secret {s:?}:\n{text}");
    }
}

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn agent(dir: &Path, name: &str, collector_grpc: &str, token_file: &Path) -> (Daemon, String) {
    let config = write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "[node]\nhost_name = \"{name}\"\n[export]\ntoken_file = \"{}\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
            token_file.display()
        ),
    );
    let metrics = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(agent_binary());
    cmd.arg("--config")
        .arg(&config)
        .args(["--collector", &format!("http://{collector_grpc}"), "--interval", "200ms"])
        .args(["--nvml-lib", "/nonexistent/libnvidia-ml.so.1"])
        .args(["--metrics-listen", &metrics, "--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", &http])
        .env("RUST_LOG", "debug")
        .env_remove("STOKER_WRITE_TOKEN");
    let (d, _) = Daemon::spawn(cmd);
    (d, format!("{metrics} {http}"))
}

/// The agent binary of the same build, next to the collector's (`cargo test --workspace` and
/// `cargo build` put both there).
fn agent_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_stoker-collector")).with_file_name("stoker-agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_metrics_or_api_answers() {
    if !agent_binary().exists() {
        let msg =
            format!("{} is not built (cargo build -p stoker-agent)", agent_binary().display());
        assert!(std::env::var("STOKER_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let read_file = write(d, "read-token", &format!("{READ_TOKEN}\n"));
    let write_file = write(d, "write-token", &format!("{WRITE_TOKEN}\n"));
    let wrong_file = write(d, "wrong-token", &format!("{WRONG_TOKEN}\n"));
    let hook_file = write(d, "hook-secret", &format!("{HOOK_FILE}\n"));

    // One loopback peer plays the webhook receiver and the Kubernetes API: both answer 500.
    let mock = Mock::start(|_| Reply::text(500, "{\"message\": \"internal error\"}")).await;
    let kubeconfig = write(
        d,
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters:\n- name: c\n  cluster:\n    server: \"{}\"\nusers:\n- name: u\n  user:\n    token: {KUBE_TOKEN}\ncontexts:\n- name: t\n  context:\n    cluster: c\n    user: u\n",
            mock.url()
        ),
    );
    let config = write(
        d,
        "collector.toml",
        &format!(
            "[auth]\nread_token_file = \"{}\"\nwrite_token_file = \"{}\"\n\n[secrets.hook-file]\nfile = \"{}\"\n[secrets.hook-env]\nenv = \"STOKER_SECRETS_TEST_HOOK\"\n\n[actuators]\nrequest_timeout = \"2s\"\n[actuators.retry]\nmax_attempts = 2\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\n[actuators.kubernetes.clusters.t]\nkubeconfig = \"{}\"\n",
            read_file.display(),
            write_file.display(),
            hook_file.display(),
            kubeconfig.display()
        ),
    );
    let policy_dir = d.join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    policies(&policy_dir, &mock.url());

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stoker-collector"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(d.join("data"))
        .arg("--policies")
        .arg(&policy_dir)
        .args(["--api-listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .env("STOKER_SECRETS_TEST_HOOK", HOOK_ENV)
        .env_remove("STOKER_READ_TOKEN")
        .env_remove("STOKER_WRITE_TOKEN");
    let (mut collector, stdout) = Daemon::spawn(cmd);
    let mut line = String::new();
    BufReader::new(stdout.unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening "), "{line:?}\n{}", collector.log());
    let field =
        |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap().to_owned();
    let (api, grpc, http) = (field("api="), field("otlp_grpc="), field("otlp_http="));
    let c = common::client();
    let mut answers = Vec::new();

    // Ingest: no token, a wrong token, the right token with a malformed body, then the breach.
    let ingest = format!("http://{http}/v1/metrics");
    for (token, body, want) in [
        (None, gauges(), 401),
        (Some(WRONG_TOKEN), gauges(), 401),
        (Some(READ_TOKEN), gauges(), 401),
        (Some(WRITE_TOKEN), vec![0xff, 0xff, 0xff, 0x0f, 1, 2, 3], 400),
        (Some(WRITE_TOKEN), gauges(), 200),
    ] {
        let mut r = c.post(&ingest).header("content-type", "application/x-protobuf").body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
        assert_eq!(status, want, "ingest with {token:?}: {text}");
        answers.push(format!("POST /v1/metrics -> {status} {text}"));
    }

    // Two agents: one with the write token, one with a wrong one (refused, logs the failure).
    let (mut good, good_addrs) = agent(d, "secrets-agent", &grpc, &write_file);
    let (mut bad, _) = agent(d, "wrong-agent", &grpc, &wrong_file);
    let mut agent_addrs = good_addrs.split(' ');
    let (agent_metrics, agent_http) = (agent_addrs.next().unwrap(), agent_addrs.next().unwrap());

    // API errors: no token, a wrong token, the write token, bad queries with the read token.
    let base = format!("http://{api}");
    for (path, token, want) in [
        ("/api/v1/policies", None, 401),
        ("/api/v1/policies", Some(WRONG_TOKEN), 401),
        ("/api/v1/policies", Some(WRITE_TOKEN), 401),
        ("/metrics", Some(WRONG_TOKEN), 401),
        ("/api/v1/query?metric=%7Bbad&stat=mean", Some(READ_TOKEN), 400),
        ("/api/v1/query?metric=hook.queue&stat=nonsense", Some(READ_TOKEN), 400),
        ("/api/v1/series?match=%22", Some(READ_TOKEN), 400),
        ("/api/v1/decisions?limit=-1", Some(READ_TOKEN), 400),
    ] {
        let (status, text) = get(&c, &format!("{base}{path}"), token).await;
        assert_eq!(status, want, "{path} with {token:?}: {text}");
        answers.push(format!("GET {path} -> {status} {text}"));
    }

    // The actuators: the webhook's 500, the Kubernetes API's 500, the dry-run dump.
    let (mut decided, mut last) = (String::new(), String::new());
    for _ in 0..100 {
        let mut all = true;
        let mut texts = String::new();
        for p in ["hook", "dry"] {
            let url = format!("{base}/api/v1/decisions?policy={p}&limit=1000");
            let (_, text) = get(&c, &url, Some(READ_TOKEN)).await;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            all &= v["decisions"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["action"]["type"] != "none"));
            texts.push_str(&text);
        }
        last.clone_from(&texts);
        if all && collector.log().contains("<redacted>") {
            decided = texts;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!decided.is_empty(), "every policy decided and acted: {last}\n{}", collector.log());
    assert!(mock.requests().iter().any(|s| s.path == "/hook"), "the webhook was called");
    assert!(
        mock.requests()
            .iter()
            .any(|s| s.headers.get("authorization").is_some_and(|a| a.contains(KUBE_TOKEN))),
        "the Kubernetes API got the kubeconfig's token (so the failure path ran with it)"
    );
    assert!(!mock.requests().iter().any(|s| s.path == "/dry"), "dry-run sends nothing");
    answers.push(decided);

    // The agent's data arrived under the write token; the wrong agent's did not.
    let mut nodes = String::new();
    for _ in 0..100 {
        nodes = get(&c, &format!("{base}/api/v1/nodes"), Some(READ_TOKEN)).await.1;
        if nodes.contains("secrets-agent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(nodes.contains("secrets-agent"), "{nodes}\n{}", good.log());
    assert!(!nodes.contains("wrong-agent"), "{nodes}");
    answers.push(nodes);

    // The agent's local receiver refuses a malformed body; its /metrics.
    let r = c
        .post(format!("http://{agent_http}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    answers.push(format!("agent POST -> {} {}", r.status(), r.text().await.unwrap()));
    let (status, agent_m) = get(&c, &format!("http://{agent_metrics}/metrics"), None).await;
    assert_eq!(status, 200, "{agent_m}");
    assert_clean("the agent's /metrics", &agent_m);

    for path in ["/api/v1/actions", "/api/v1/policies", "/api/v1/decisions", "/api/v1/series"] {
        let (status, text) = get(&c, &format!("{base}{path}"), Some(READ_TOKEN)).await;
        assert_eq!(status, 200, "{path}: {text}");
        answers.push(text);
    }
    let (status, metrics) = get(&c, &format!("{base}/metrics"), Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("stoker_policies_loaded 3"), "{metrics}");
    assert_clean("the collector's /metrics", &metrics);

    // A reload logs the policy set again.
    let _ = Command::new("kill").args(["-HUP", &collector.child.id().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (i, a) in answers.iter().enumerate() {
        assert_clean(&format!("API answer {i}"), a);
    }
    good.stop();
    bad.stop();
    collector.stop();
    let (clog, glog, blog) = (collector.log(), good.log(), bad.log());
    for (what, log) in [("collector", &clog), ("agent", &glog), ("wrong agent", &blog)] {
        assert!(!log.is_empty(), "{what} logged nothing");
        assert_clean(&format!("the {what}'s stderr"), log);
    }
    // The paths ran: the actuators' failures and the dry-run dump are in the log.
    for line in [
        "Dry run: would send this request",
        "\"x-stoker-signature\": \"<redacted>\"",
        "Resize failed.",
        "Cannot read the current size. policy=\"kube\"",
        "SIGHUP: reloading policies.",
    ] {
        assert!(clog.contains(line), "the collector logged {line:?}:\n{clog}");
    }
    assert!(blog.contains("Collector refused the export"), "the refusal is logged:\n{blog}");
}
