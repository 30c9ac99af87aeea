//! Acknowledged means durable, with the real binary: a full disk (a small tmpfs) refuses
//! ingest and recovers by itself, `kill -9` during a disk-full episode or during checkpoints
//! loses nothing acknowledged beyond `store.commit_interval`, timestamps outside the accepted
//! window are refused, a panicking request leaves nothing behind for good requests, and empty
//! or damaged database files stop the start with a message saying what to do.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    exponential_histogram_data_point, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::common::{self, Collector};

/// The promise under test: a commit every 200 ms (the default `store.commit_interval`), plus
/// the time one commit (an fsync) takes on a loaded test machine.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
const COMMIT_SLACK: Duration = Duration::from_millis(500);

impl Collector {
    fn kill_9(mut self) -> Instant {
        self.child.kill().expect("kill -9");
        let at = Instant::now();
        let _ = self.child.wait();
        at
    }
}

fn command(data_dir: &Path, config: &str, extra: &[&str]) -> Command {
    let cfg = data_dir.with_extension("toml");
    std::fs::write(&cfg, config).expect("write config");
    let mut cmd = common::serve_command(data_dir);
    cmd.arg("--config").arg(&cfg).args(extra);
    cmd
}

fn spawn(data_dir: &Path, config: &str) -> Collector {
    Collector::start(command(data_dir, config, &[]))
}

/// Runs a collector that is expected to refuse to start; returns (exit code, stderr).
fn refused_start(data_dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = command(data_dir, "", extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(s) => (s.code(), err),
        None => panic!("the collector started on a damaged file instead of refusing:\n{err}"),
    }
}

async fn post(
    c: &reqwest::Client,
    http: &str,
    req: &ExportMetricsServiceRequest,
) -> (u16, Vec<u8>) {
    let r = c
        .post(format!("http://{http}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("body").to_vec())
}

async fn readyz(c: &reqwest::Client, api: &str) -> u16 {
    c.get(format!("http://{api}/readyz")).send().await.expect("readyz").status().as_u16()
}

async fn stat(c: &reqwest::Client, api: &str, selector: &str, stat: &str) -> f64 {
    let g = common::query(
        c,
        api.parse().expect("addr"),
        &[("selector", selector), ("stat", stat), ("window", "1h")],
    )
    .await;
    g.first().and_then(|g| g["value"].as_f64()).unwrap_or(0.0)
}

/// Sequence numbers written as `durable.seq`, with when each was acknowledged.
struct Ledger {
    t0: u64,
    next: u64,
    acked: Vec<(u64, Instant)>,
    refused: u64,
}

impl Ledger {
    fn new() -> Self {
        Ledger { t0: common::now_nanos() - 600_000_000_000, next: 0, acked: Vec::new(), refused: 0 }
    }

    /// Sends the next sequence number (a refused one is sent again next time, as an agent
    /// retries); returns the HTTP status.
    async fn send(&mut self, c: &reqwest::Client, http: &str) -> u16 {
        let seq = self.next + 1;
        let req = common::gauge_request(
            "durable-node",
            "durable.seq",
            self.t0 + seq * 1_000_000,
            seq as f64,
            vec![],
        );
        let (status, _) = post(c, http, &req).await;
        match status {
            200 => {
                self.next = seq;
                self.acked.push((seq, Instant::now()));
            }
            503 => self.refused += 1,
            other => panic!("ingest answered {other}"),
        }
        status
    }

    /// Sends until `until` says stop (checked after each request) or `limit` passes.
    async fn send_until(
        &mut self,
        c: &reqwest::Client,
        http: &str,
        limit: Duration,
        mut until: impl FnMut(u16) -> bool,
    ) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if until(self.send(c, http).await) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    }

    /// How long before `killed` the oldest acknowledged point missing after the restart was
    /// acknowledged (`None`: nothing acknowledged is missing).
    fn lost_window(&self, killed: Instant, newest_stored: u64) -> Option<Duration> {
        self.acked
            .iter()
            .find(|(s, _)| *s > newest_stored)
            .map(|(_, at)| killed.duration_since(*at))
    }

    /// The newest sequence number acknowledged more than the commit promise before `killed`.
    fn must_survive(&self, killed: Instant) -> u64 {
        self.acked
            .iter()
            .filter(|(_, at)| killed.duration_since(*at) > COMMIT_INTERVAL + COMMIT_SLACK)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0)
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem of `path` with a file until it has no room left.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xa5u8; 256 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_recovers_and_loses_nothing_acknowledged() {
    // Room for the default 16 MiB reserve and a few MiB of store.
    let Some(fs) = Tmpfs::mount("48m") else {
        eprintln!("skipping: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    let data = fs.path().join("data");
    let filler = fs.path().join("filler");
    let config = "[store]\ncheckpoint_interval = \"2s\"\n";
    let col = spawn(&data, config);
    let c = common::client();
    let mut ledger = Ledger::new();
    assert_eq!(readyz(&c, &col.api).await, 200);
    ledger.send_until(&c, &col.http, Duration::from_millis(800), |_| false).await;
    let before_full = ledger.acked.len();
    assert!(before_full > 20, "too few writes before the disk filled ({before_full})");

    // The disk fills: ingest must turn to 503 (agents keep their data) and /readyz not ready.
    fill(&filler);
    let full_at = Instant::now();
    let refused = ledger.send_until(&c, &col.http, Duration::from_secs(10), |s| s == 503).await;
    assert!(refused, "ingest kept answering 200 on a full disk");
    eprintln!("first 503 {} ms after the disk filled", full_at.elapsed().as_millis());
    assert_eq!(readyz(&c, &col.api).await, 503, "/readyz must say not ready on a full disk");
    let mut grpc =
        MetricsServiceClient::connect(format!("http://{}", col.grpc)).await.expect("grpc connect");
    let req = common::gauge_request("durable-node", "durable.grpc", ledger.t0, 1.0, vec![]);
    let status = grpc.export(req).await.expect_err("gRPC export accepted on a full disk");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let acked_before = ledger.acked.len();
    ledger.send_until(&c, &col.http, Duration::from_millis(600), |_| false).await;
    assert_eq!(ledger.acked.len(), acked_before, "a write was acknowledged on a full disk");

    // Space returns: the store recovers by itself, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let freed_at = Instant::now();
    let back = ledger.send_until(&c, &col.http, Duration::from_secs(10), |s| s == 200).await;
    assert!(back, "ingest did not recover once the disk had room again");
    eprintln!("accepting again {} ms after space returned", freed_at.elapsed().as_millis());
    assert_eq!(readyz(&c, &col.api).await, 200, "/readyz must be ready again");
    ledger.send_until(&c, &col.http, Duration::from_millis(500), |_| false).await;

    // Full again, and kill -9 in the middle of the episode.
    fill(&filler);
    let refused = ledger.send_until(&c, &col.http, Duration::from_secs(10), |s| s == 503).await;
    assert!(refused, "ingest kept answering 200 on a full disk (second episode)");
    ledger.send_until(&c, &col.http, Duration::from_millis(400), |_| false).await;
    let killed = col.kill_9();
    std::fs::remove_file(&filler).expect("remove filler");

    let col = spawn(&data, config);
    let stored = stat(&c, &col.api, "durable.seq", "count").await as u64;
    let max = stat(&c, &col.api, "durable.seq", "max").await as u64;
    let must = ledger.must_survive(killed);
    let newest_acked = ledger.acked.last().map(|a| a.0).unwrap_or(0);
    eprintln!(
        "acknowledged {} (newest {newest_acked}), refused {}, stored after restart {stored}, \
         newest {max}, required ≥ {must}, oldest lost ack {:?} before the kill",
        ledger.acked.len(),
        ledger.refused,
        ledger.lost_window(killed, max)
    );
    assert!(max >= must, "lost acknowledged data: newest stored {max} < {must}");
    assert_eq!(max, newest_acked, "every acknowledged point survived the disk-full kill -9");
    assert_eq!(stored, max, "no holes: every sequence number up to the newest is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_outside_the_accepted_window_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let col = spawn(&dir.path().join("data"), "");
    let c = common::client();
    let now = common::now_nanos();
    let point = |ts: u64, v: f64| NumberDataPoint {
        time_unix_nano: ts,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    // One second after the epoch (the checkpoint stall) and 2^64-2 ns (the series killer).
    let mut req = common::gauge_request("window-node", "window.value", now, 1.0, vec![]);
    if let Some(metric::Data::Gauge(g)) =
        &mut req.resource_metrics[0].scope_metrics[0].metrics[0].data
    {
        g.data_points.push(point(1_000_000_000, 2.0));
        g.data_points.push(point(u64::MAX - 1, 3.0));
    }
    let (status, body) = post(&c, &col.http, &req).await;
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).expect("response");
    let partial = resp.partial_success.expect("partial success for refused points");
    assert_eq!(partial.rejected_data_points, 2, "{partial:?}");
    assert!(
        partial.error_message.contains("window.value: timestamp older than store.max_point_age")
            && partial
                .error_message
                .contains("window.value: timestamp further ahead than store.max_point_ahead"),
        "{}",
        partial.error_message
    );
    // The series goes on taking real points.
    let next = common::gauge_request("window-node", "window.value", now + 1_000_000, 4.0, vec![]);
    let (status, body) = post(&c, &col.http, &next).await;
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).expect("response");
    assert_eq!(resp.partial_success, None, "a real point after the refused ones was refused");
    assert_eq!(stat(&c, &col.api, "window.value", "count").await, 2.0);
    assert_eq!(stat(&c, &col.api, "window.value", "last").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_checkpoints_loses_nothing_beyond_the_commit_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = "[store]\ncheckpoint_interval = \"1s\"\n";
    let col = spawn(&data, config);
    let c = common::client();
    let now = common::now_nanos();
    // Many series for checkpoints to work through, one of them stamped one second after the
    // epoch (before the window: every checkpoint then downsampled from 1970, stopping commits).
    let points: Vec<NumberDataPoint> = (0..400)
        .map(|i| NumberDataPoint {
            attributes: vec![common::kv("i", &i.to_string())],
            time_unix_nano: now - 300_000_000_000 + i * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        })
        .chain(std::iter::once(NumberDataPoint {
            attributes: vec![common::kv("i", "ancient")],
            time_unix_nano: 1_000_000_000,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        }))
        .collect();
    let mut req = common::gauge_request("ckpt-node", "ckpt.series", now, 0.0, vec![]);
    req.resource_metrics[0].scope_metrics[0].metrics[0].data =
        Some(metric::Data::Gauge(Gauge { data_points: points }));
    assert_eq!(post(&c, &col.http, &req).await.0, 200);

    let mut ledger = Ledger::new();
    // Several checkpoints (one a second) while writing; kill -9 at an arbitrary moment.
    ledger.send_until(&c, &col.http, Duration::from_millis(3700), |_| false).await;
    assert_eq!(ledger.refused, 0, "ingest refused writes on a healthy disk");
    let killed = col.kill_9();

    let col = spawn(&data, config);
    let stored = stat(&c, &col.api, "durable.seq", "count").await as u64;
    let max = stat(&c, &col.api, "durable.seq", "max").await as u64;
    let must = ledger.must_survive(killed);
    eprintln!(
        "acknowledged {}, stored {stored}, newest {max}, required ≥ {must}, oldest lost ack \
         {:?} before the kill",
        ledger.next,
        ledger.lost_window(killed, max)
    );
    assert!(must > 100, "the test ingested too little to mean anything ({must})");
    assert!(
        max >= must,
        "lost data acknowledged more than {:?} before the kill: newest stored {max} < {must}",
        COMMIT_INTERVAL + COMMIT_SLACK
    );
    assert_eq!(stored, max, "no holes: every sequence number up to the newest is stored");
}

fn exp_point(ts: u64, offset: i32, counts: Vec<u64>) -> ExponentialHistogramDataPoint {
    let n: u64 = counts.iter().sum();
    ExponentialHistogramDataPoint {
        attributes: vec![common::kv("route", "/bad")],
        start_time_unix_nano: ts - 60_000_000_000,
        time_unix_nano: ts,
        count: n,
        sum: Some(n as f64),
        scale: 0,
        positive: Some(exponential_histogram_data_point::Buckets { offset, bucket_counts: counts }),
        ..Default::default()
    }
}

fn histogram_request(host: &str, data: metric::Data) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![common::kv("host.name", host)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "inference.request.duration".into(),
                    data: Some(data),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn explicit(ts: u64, counts: Vec<u64>) -> metric::Data {
    metric::Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            time_unix_nano: ts,
            count: counts.iter().sum(),
            sum: Some(1.0),
            explicit_bounds: vec![0.01, 0.1, 1.0],
            bucket_counts: counts,
            ..Default::default()
        }],
        aggregation_temporality: AggregationTemporality::Delta as i32,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_changes_nothing_for_good_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let col = spawn(&dir.path().join("data"), "");
    let c = common::client();
    let now = common::now_nanos() - 60_000_000_000;
    let ms = 1_000_000;
    for (i, counts) in [vec![1, 2, 3, 4], vec![4, 3, 2, 1]].into_iter().enumerate() {
        let req = histogram_request("good", explicit(now + i as u64 * ms, counts));
        assert_eq!(post(&c, &col.http, &req).await.0, 200);
    }
    // A plain query over the metric reads every series, the bad one's too; the good host's
    // answer must not change.
    let query = |stat: &'static str| {
        let (c, api) = (c.clone(), col.api.clone());
        async move {
            let g = common::query(
                &c,
                api.parse().expect("addr"),
                &[
                    ("selector", "inference.request.duration"),
                    ("stat", stat),
                    ("window", "1h"),
                    ("group_by", "host.name"),
                ],
            )
            .await;
            g.iter().find(|g| g["group"]["host.name"] == "good").map(|g| g["value"].clone())
        }
    };
    let good_p95 = query("p95").await;
    let good_count = query("count").await;

    // Two cumulative exponential points of one series whose bucket ranges make the delta
    // arithmetic overflow: this request panicked while holding the series lock, which then
    // stayed poisoned for every later query and write.
    let bad = histogram_request(
        "bad",
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![
                exp_point(now, 0, vec![5]),
                exp_point(now + ms, i32::MAX - 1, vec![6, 1, 1]),
            ],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    );
    for _ in 0..3 {
        let _ = post(&c, &col.http, &bad).await;
    }
    assert_eq!(query("p95").await, good_p95, "a bad request changed a good query");
    assert_eq!(query("count").await, good_count, "a bad request changed a good query");

    // Good writes to both series still land.
    let req = histogram_request("good", explicit(now + 5 * ms, vec![0, 0, 2, 0]));
    let (status, body) = post(&c, &col.http, &req).await;
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).expect("response");
    assert_eq!(resp.partial_success, None, "a good point was refused after a bad request");
    let g = common::query(
        &c,
        col.api.parse().expect("addr"),
        &[
            ("selector", "inference.request.duration{host.name=\"good\"}"),
            ("stat", "count"),
            ("window", "1h"),
        ],
    )
    .await;
    let expect = good_count.and_then(|v| v.as_f64()).unwrap_or(0.0) + 2.0;
    assert_eq!(g.first().and_then(|g| g["value"].as_f64()), Some(expect));
    let mut later = exp_point(now + 10 * ms, 0, vec![1]);
    later.start_time_unix_nano = 0;
    let req = histogram_request(
        "bad",
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![later],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    );
    let (status, body) = post(&c, &col.http, &req).await;
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).expect("response");
    assert_eq!(resp.partial_success, None, "the series the bad request touched stays writable");
    // The process is still the same one, and healthy.
    assert_eq!(readyz(&c, &col.api).await, 200);
}

fn damage(path: &Path, how: &str) {
    match how {
        "empty" => std::fs::write(path, b"").expect("write"),
        _ => std::fs::write(path, vec![0x5au8; 256 << 10]).expect("write"),
    }
}

#[test]
fn empty_or_damaged_database_files_stop_the_start_with_advice() {
    let root = tempfile::tempdir().expect("tempdir");
    let policies = root.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    let policies_arg = policies.display().to_string();
    let cases: &[(&str, &str, &[&str])] = &[
        ("store.redb", "empty", &[]),
        ("store.redb", "garbage", &[]),
        ("actions.redb", "empty", &["--policies", &policies_arg]),
        ("actions.redb", "garbage", &["--policies", &policies_arg]),
        ("policy.redb", "empty", &["--policies", &policies_arg]),
        ("policy.redb", "garbage", &["--policies", &policies_arg]),
    ];
    for (file, how, extra) in cases {
        let data: PathBuf = root.path().join(format!("{file}-{how}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let path = data.join(file);
        damage(&path, how);
        let (code, err) = refused_start(&data, extra);
        let what = format!("{file} ({how}):\n{err}");
        assert!(code.is_some_and(|c| c != 0), "exit code {code:?} for {what}");
        assert!(!err.contains("panicked"), "a panic instead of an error for {what}");
        assert!(err.contains(&format!("{}:", path.display())), "the file is not named: {what}");
        assert!(err.contains(&format!("mv {}", path.display())), "no advice for {what}");
        let says_recovery = if *how == "empty" {
            err.contains("Nothing in it can be recovered")
        } else {
            err.contains("cannot be recovered by the collector")
        };
        assert!(says_recovery, "does not say whether recovery is possible: {what}");
        // The file is left as it was, for the user to inspect or restore.
        let len = std::fs::metadata(&path).expect("still there").len();
        assert_eq!(len, if *how == "empty" { 0 } else { 256 << 10 }, "{what}");
    }
}

#[test]
fn policy_check_refuses_a_second_document_and_out_of_range_numbers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_policies");
    for (file, expect) in [
        (
            "second_document.yaml",
            "second_document.yaml:12:1: a second YAML document: a policy file holds one \
             policy (put each in its own file)",
        ),
        (
            "huge_value.yaml",
            "huge_value.yaml:10:25: spec.scale.metrics[0].target.value: number 1e400 is out \
             of range (a finite number is required)",
        ),
        (
            "huge_pods.yaml",
            "huge_pods.yaml:10:24: spec.scale.steps[0].change.pods: -99999999999999 is out of \
             range: a replica change lies within ±4294967295",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stoker-collector"))
            .args(["policy", "check"])
            .arg(dir.join(file))
            .output()
            .expect("run policy check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .replace(&format!("{}/", dir.display()), "");
        assert_eq!(out.status.code(), Some(1), "{file}: {text}");
        assert!(text.contains(expect), "{file}: expected {expect:?}, got:\n{text}");
    }
}
