//! A wall-clock jump on a running collector, on the real binary: libfaketime (Debian's
//! `faketime`, preloaded) moves the collector's `CLOCK_REALTIME` an hour back and then an hour
//! forward while it runs, as a bad NTP step or a VM resume would; the monotonic clock is left
//! alone, as the kernel leaves it. A policy with a `command` actuator has scaled once and is
//! cooling down (2 h); through both jumps, with the metrics still breaching, the collector must
//! keep answering, act no more (no scale storm, the cooldown holds) and keep what it stored.
//! The metrics are stamped with the same clock, as an agent on the collector's host would
//! (behind the jump they are refused as out of order, with the reason, and accepted after it),
//! or with the real clock, as agents elsewhere would (an hour ahead of the stepped-back
//! collector they are refused beyond `store.max_point_ahead`; an hour old, they are stored).
//!
//! Skips (and passes) when libfaketime is not installed, unless `STOKER_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use serde_json::Value;

use crate::common::{self, Collector};

/// The thread-safe variant of libfaketime: the collector's clock is read from many threads.
fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let p = e.path().join("faketime/libfaketimeMT.so.1");
        p.exists().then_some(p)
    });
    lib.or_else(|| {
        let p = PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1");
        p.exists().then_some(p)
    })
}

fn policy(actions_file: &Path) -> String {
    // Each run of the command appends a line: the file counts the actuator's side effects.
    common::command_policy(
        "jump",
        &format!("echo {{{{ desired }}}} >> {}", actions_file.display()),
        "2h",
    )
}

/// The offset libfaketime applies, re-read on every clock call (`FAKETIME_NO_CACHE=1`).
struct FakeClock {
    file: PathBuf,
    offset_secs: i64,
    /// Whether the points are stamped with the stepped clock (an agent on the collector's
    /// host) or with the real one (agents elsewhere, whose clocks did not step).
    agent_shares_clock: bool,
}

impl FakeClock {
    fn set(&mut self, offset_secs: i64) {
        std::fs::write(&self.file, format!("{offset_secs:+}\n")).expect("write the clock offset");
        self.offset_secs = offset_secs;
    }

    /// The collector's wall clock now, in Unix nanoseconds: what an agent on the same host
    /// would stamp its points with.
    fn now_nanos(&self) -> u64 {
        common::now_nanos().saturating_add_signed(self.offset_secs * 1_000_000_000)
    }

    /// What the agent stamps a point with.
    fn stamp_nanos(&self) -> u64 {
        if self.agent_shares_clock { self.now_nanos() } else { common::now_nanos() }
    }
}

fn spawn(lib: &Path, clock: &FakeClock, data: &Path, policies: &Path) -> Collector {
    let mut cmd = common::serve_command(data);
    cmd.arg("--policies")
        .arg(policies)
        .env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", &clock.file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("STOKER_READ_TOKEN")
        .env_remove("STOKER_WRITE_TOKEN");
    Collector::start(cmd)
}

async fn get(c: &reqwest::Client, api: &str, path: &str) -> Value {
    let r = c.get(format!("http://{api}{path}")).send().await.expect("get");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

/// Two replicas with a queue of `queue` each, stamped as `clock` says. Returns the refusals
/// the collector answered (partial success, or 400 when nothing was usable), one per metric.
async fn breach(
    c: &reqwest::Client,
    col: &Collector,
    clock: &FakeClock,
    queue: f64,
) -> Vec<String> {
    let mut refused = Vec::new();
    for (metric, v) in [("svc.replicas", 2.0), ("svc.queue", queue)] {
        let body = common::gauge_request(
            "node-a",
            metric,
            clock.stamp_nanos(),
            v,
            vec![common::kv("service.name", "svc")],
        )
        .encode_to_vec();
        let r = col.export(c, body).await;
        let status = r.status();
        let body = r.bytes().await.expect("body");
        if status == 400 {
            // Every point of the request refused: the answer is a `google.rpc.Status` whose
            // message is readable text inside the protobuf.
            refused.push(String::from_utf8_lossy(&body).into_owned());
            continue;
        }
        assert_eq!(status, 200, "export {metric} at offset {}s", clock.offset_secs);
        let answer = ExportMetricsServiceResponse::decode(body).expect("an export response");
        if let Some(p) = answer.partial_success.filter(|p| p.rejected_data_points > 0) {
            refused.push(p.error_message);
        }
    }
    refused
}

fn actuator_runs(file: &Path) -> usize {
    std::fs::read_to_string(file).map(|s| s.lines().count()).unwrap_or(0)
}

/// The rule's state and cooldown end, and the number of recorded actions.
async fn rule(c: &reqwest::Client, api: &str) -> (String, Option<u64>, usize) {
    let status = get(c, api, "/api/v1/policies").await;
    let rule = &status["policies"][0]["rules"][0];
    let actions = get(c, api, "/api/v1/actions?policy=jump").await;
    (
        rule["state"].as_str().unwrap_or_default().to_owned(),
        rule["cooling_down_until"].as_u64(),
        actions["actions"].as_array().map_or(0, Vec::len),
    )
}

/// For `secs`, every 250 ms: breaching metrics in, `/healthz` answered within a second.
/// Returns every refusal the exports were answered with.
async fn keep_breaching(
    c: &reqwest::Client,
    col: &Collector,
    clock: &FakeClock,
    secs: u64,
) -> Vec<String> {
    let mut refused = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        refused.extend(breach(c, col, clock, 400.0).await);
        let asked = Instant::now();
        let health = tokio::time::timeout(
            Duration::from_secs(1),
            c.get(format!("http://{}/healthz", col.api)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("/healthz within 1 s at offset {}s", clock.offset_secs))
        .expect("healthz");
        assert_eq!(health.status(), 200, "healthz at offset {}s", clock.offset_secs);
        assert!(asked.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_back_and_forward_neither_storms_nor_loses_the_cooldown() {
    clock_jump(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_of_the_collector_alone_neither_storms_nor_loses_the_cooldown() {
    clock_jump(false).await;
}

/// Both tests: the policy fires once, the collector's clock steps an hour back, then an hour
/// forward of the real time, with the metrics still breaching.
async fn clock_jump(agent_shares_clock: bool) {
    let Some(lib) = libfaketime() else {
        common::peer_available(
            false,
            "libfaketime (Debian package faketime)",
            "install-faketime.sh",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, policies, actions_file) =
        (dir.path().join("data"), dir.path().join("policies"), dir.path().join("actions"));
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("jump.yaml"), policy(&actions_file)).expect("write policy");
    let mut clock =
        FakeClock { file: dir.path().join("clock"), offset_secs: 0, agent_shares_clock };
    clock.set(0);
    let col = spawn(&lib, &clock, &data, &policies);
    let c = common::client();

    // The policy fires once: a queue of 40 per replica is four times the target.
    let first_ts = clock.stamp_nanos();
    assert_eq!(breach(&c, &col, &clock, 40.0).await, Vec::<String>::new());
    let started = Instant::now();
    while actuator_runs(&actions_file) == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the policy did not act");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (state, until, actions) = loop {
        let r = rule(&c, &col.api).await;
        // The action is journaled a moment before the rule's state says cooling-down.
        if (r.0 == "cooling-down" && r.2 > 0) || started.elapsed() > Duration::from_secs(20) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((state.as_str(), actions), ("cooling-down", 1), "after the first action");
    let until = until.expect("a cooldown end");
    let decisions_before = get(&c, &col.api, "/api/v1/decisions?policy=jump").await;
    let applied = decisions_before["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| !d["action"].is_null())
        .cloned()
        .expect("the applied decision");

    for offset in [-3600, 3600] {
        clock.set(offset);
        let refused = keep_breaching(&c, &col, &clock, 4).await;
        // The collector's own clock moved: an instant query is answered at its `now`.
        let q = get(&c, &col.api, "/api/v1/query?selector=svc.queue&stat=last&window=10s").await;
        let served_at = q["time_unix_nano"].as_u64().expect("time_unix_nano") as i64;
        let skew = served_at - clock.now_nanos() as i64;
        assert!(skew.abs() < 5_000_000_000, "the collector's clock is {skew} ns off {offset:+}s");
        let now_value = q["result"]["groups"][0]["value"].as_f64();
        match (agent_shares_clock, offset < 0) {
            // An hour behind the newest stored points: refused as out of order, with the
            // reason in the answer (never a silent drop, never a rewrite of stored data), so
            // the policy sees no data in its window and holds.
            (true, true) => {
                assert!(!refused.is_empty(), "points behind the stored ones were accepted");
                assert!(refused.iter().all(|m| m.contains("out-of-order point")), "{refused:?}");
                assert_eq!(now_value, None, "{q}");
            }
            (true, false) => {
                assert_eq!(refused, Vec::<String>::new(), "points after the forward jump");
                assert_eq!(now_value, Some(400.0), "{q}");
            }
            // Real-time points are an hour ahead of the stepped-back collector: beyond
            // `store.max_point_ahead`, refused with the reason.
            (false, true) => {
                assert!(!refused.is_empty(), "points an hour ahead were accepted");
                assert!(refused.iter().all(|m| m.contains("max_point_ahead")), "{refused:?}");
                assert_eq!(now_value, None, "{q}");
            }
            // An hour old for the stepped-forward collector: within `store.max_point_age`,
            // stored, but outside every window that ends at its `now`.
            (false, false) => {
                assert_eq!(refused, Vec::<String>::new(), "points an hour old");
                assert_eq!(now_value, None, "{q}");
            }
        }
        let (state, until_now, actions) = rule(&c, &col.api).await;
        assert_eq!(actuator_runs(&actions_file), 1, "actuator runs after a jump to {offset:+}s");
        assert_eq!(actions, 1, "recorded actions after a jump to {offset:+}s");
        assert_eq!(state, "cooling-down", "rule state after a jump to {offset:+}s");
        assert_eq!(until_now, Some(until), "cooldown end after a jump to {offset:+}s");
    }

    // Stored data: the first points read back at their own time, and the applied decision is
    // still in the history.
    // The points were stamped just after `first_ts`; the points sent during the jumps are an
    // hour away on either side.
    let time = (first_ts + 2_000_000_000).to_string();
    let groups = common::query(
        &c,
        col.api.parse().expect("api address"),
        &[("selector", "svc.queue"), ("stat", "last"), ("window", "10s"), ("time", &time)],
    )
    .await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["value"].as_f64(), Some(40.0), "{groups:?}");
    let decisions = get(&c, &col.api, "/api/v1/decisions?policy=jump").await;
    assert!(
        decisions["decisions"]
            .as_array()
            .expect("decisions")
            .iter()
            .any(|d| d["key"] == applied["key"] && d["action"] == applied["action"]),
        "{decisions}"
    );
    let mut col = col;
    assert!(col.child.try_wait().expect("wait").is_none(), "the collector exited");
}
