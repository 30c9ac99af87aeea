//! Several collectors, one leader, against a real etcd (Debian's `etcd-server` 3.4, one member
//! on loopback; `.ci/install-etcd.sh`): real `stoker-collector` processes elect one leader
//! through etcd, only the leader acts (a `command` actuator that appends each call with its
//! member and idempotency key to a file), and after `kill -9` or a `SIGSTOP` past the lease the
//! other takes over with the cooldown the first one left in the shared ledger, while the
//! deposed one makes no call at all.
//!
//! Both members get the same series over OTLP, as two members reading one remote store would
//! see them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use stoker_tests::KillOnDrop;

use crate::common::{self, Collector};

/// Lease TTL of the members: short, so the tests take seconds.
const TTL_S: u64 = 3;

/// A single-member etcd on free loopback ports, killed on drop; `None` when not installed.
struct Etcd {
    endpoint: String,
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn etcd() -> Option<Etcd> {
    let bin = stoker_tests::installed_bin("etcd");
    if !common::peer_available(bin.is_some(), "etcd", "install-etcd.sh") {
        return None;
    }
    let bin = bin.unwrap();
    let c = common::client();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = stoker_tests::etcd_command(&bin, &dir.path().join("data"), port, free_port())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if child.0.try_wait().unwrap().is_some() {
                break; // a port was taken meanwhile: try others
            }
            let health = c.get(format!("{endpoint}/health")).send().await;
            if let Ok(r) = health {
                if r.text().await.is_ok_and(|t| t.contains("\"health\":\"true\"")) {
                    return Some(Etcd { endpoint, _child: child, _dir: dir });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("etcd did not become healthy in three tries");
}

/// A member's files: its configuration, data and policy directories.
struct Member {
    name: &'static str,
    config: PathBuf,
    data: PathBuf,
    policies: PathBuf,
}

/// `name`'s files under `root`: `[cluster]` on `etcd`, and the policy `scale` whose command
/// appends `NAME KEY DESIRED` to `calls` (cooldown 1h: one scale-out, then none).
fn member(root: &Path, name: &'static str, etcd: &Etcd, calls: &Path) -> Member {
    let dir = root.join(name);
    let (config, data, policies) = (dir.join("c.toml"), dir.join("data"), dir.join("policies"));
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        &config,
        format!(
            "[cluster]\nbackend = \"etcd\"\netcd_endpoints = [\"{}\"]\nlease_ttl = \"{TTL_S}s\"\n\
             request_timeout = \"1s\"\nmember = \"{name}\"\n",
            etcd.endpoint
        ),
    )
    .unwrap();
    let shell = format!("echo {name} {{{{ key }}}} {{{{ desired }}}} >> {}", calls.display());
    std::fs::write(policies.join("scale.yaml"), common::command_policy("scale", &shell, "1h"))
        .unwrap();
    Member { name, config, data, policies }
}

fn start(m: &Member) -> Collector {
    let mut cmd = common::serve_command(&m.data);
    cmd.arg("--config").arg(&m.config).arg("--policies").arg(&m.policies);
    Collector::start(cmd)
}

async fn cluster_view(c: &reqwest::Client, at: &Collector) -> Option<Value> {
    let r = c.get(format!("http://{}/api/v1/cluster", at.api)).send().await.ok()?;
    r.json().await.ok()
}

/// Polls every 100 ms for at most `secs` until `f` answers.
async fn eventually<T>(secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    for _ in 0..secs * 10 {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Each line of the calls file: (member, idempotency key).
fn calls(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

/// Two replicas with a queue of 40 each (four times the policy's target), sent to `at`.
async fn breach(at: &Collector) {
    let c = common::client();
    for (metric, v) in [("svc.replicas", 2.0), ("svc.queue", 40.0)] {
        let req = common::gauge_request(
            "node-a",
            metric,
            common::now_nanos(),
            v,
            vec![common::kv("service.name", "svc")],
        );
        let body = prost::Message::encode_to_vec(&req);
        assert!(at.export(&c, body).await.status().is_success());
    }
}

/// Which of `members` leads, once every one of them agrees on one leader.
async fn agreed_leader(c: &reqwest::Client, members: &[&Collector]) -> Option<(String, u64)> {
    let mut views = Vec::new();
    for m in members {
        views.push(cluster_view(c, m).await?);
    }
    let leaders: Vec<&Value> = views.iter().filter(|v| v["role"] == "leader").collect();
    let [leader] = leaders.as_slice() else { return None };
    let name = leader["self"].as_str()?.to_owned();
    let term = leader["term"].as_u64()?;
    views.iter().all(|v| v["leader"] == name.as_str() && v["term"] == term).then_some((name, term))
}

/// Two members on one etcd: one leader, one follower that names it, role and term on
/// `/metrics`; only the leader acts; after `kill -9` of the leader the other leads within the
/// lease and a poll, keeps the cooldown the first one left (no second call), and every
/// idempotency key was called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_its_lease_and_nothing_is_done_twice() {
    let Some(etcd) = etcd().await else { return };
    let root = tempfile::tempdir().unwrap();
    let calls_file = root.path().join("calls");
    let (ma, mb) = (
        member(root.path(), "a", &etcd, &calls_file),
        member(root.path(), "b", &etcd, &calls_file),
    );
    let c = common::client();
    let mut running = [Some(start(&ma)), Some(start(&mb))];
    let both: Vec<&Collector> = running.iter().flatten().collect();
    let (leader, term) =
        eventually(20, async || agreed_leader(&c, &both).await).await.expect("one leader agreed");
    let metrics = |at: &Collector| format!("http://{}/metrics", at.api);
    let li = usize::from(leader == mb.name);
    let text = c.get(metrics(both[li])).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("stoker_cluster_leader{backend=\"etcd\"} 1"), "{text}");
    assert!(text.contains(&format!("stoker_cluster_term {term}")), "{text}");
    let text = c.get(metrics(both[1 - li])).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("stoker_cluster_leader{backend=\"etcd\"} 0"), "{text}");

    for m in &both {
        breach(m).await;
    }
    let first = eventually(20, async || Some(calls(&calls_file)).filter(|c| !c.is_empty()))
        .await
        .expect("the leader scaled out");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, leader, "only the leader acts: {first:?}");

    // kill -9 the leader; the follower leads within the lease and one poll.
    let killed = Instant::now();
    running[li] = None;
    let survivor = running[1 - li].as_ref().unwrap();
    let (next, next_term) = eventually(20, async || agreed_leader(&c, &[survivor]).await)
        .await
        .expect("the follower took over");
    let took = killed.elapsed();
    eprintln!("takeover after kill -9: {took:?} (lease {TTL_S}s)");
    assert_ne!(next, leader);
    assert!(next_term > term, "{next_term} > {term}");
    assert!(took < Duration::from_secs(TTL_S + 5), "{took:?}");

    // The new leader evaluates every second with the same breach: the cooldown the first
    // leader left in etcd holds it back, and the pending action was not sent again.
    breach(survivor).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(calls(&calls_file), first, "no second action after the takeover");
    let d: Value = c
        .get(format!("http://{}/api/v1/decisions?policy=scale", survivor.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decisions = d["decisions"].as_array().unwrap();
    let acted: Vec<&Value> = decisions.iter().filter(|d| d["action"]["type"] != "none").collect();
    assert_eq!(acted.len(), 1, "the first leader's decision is in the shared ledger: {d}");
    assert_eq!(acted[0]["key"], first[0].1.as_str(), "{d}");
    // The newest decisions are the new leader's, held back by the first one's cooldown.
    assert!(decisions[0]["reason"].as_str().unwrap().contains("cooldown"), "{d}");
}

fn signal(at: &Collector, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &at.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// A leader stopped (`SIGSTOP`) for twice its lease loses it; the other member takes over and
/// acts on a new breach; the old one, continued, steps down to follower and makes no
/// actuator call after it lost the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_steps_down_and_makes_no_call_when_it_wakes() {
    let Some(etcd) = etcd().await else { return };
    let root = tempfile::tempdir().unwrap();
    let calls_file = root.path().join("calls");
    let (ma, mb) = (
        member(root.path(), "a", &etcd, &calls_file),
        member(root.path(), "b", &etcd, &calls_file),
    );
    let c = common::client();
    let (a, b) = (start(&ma), start(&mb));
    let (leader, term) =
        eventually(20, async || agreed_leader(&c, &[&a, &b]).await).await.expect("one leader");
    let (old, other) = if leader == "a" { (&a, &b) } else { (&b, &a) };

    // The leader stops before any breach; the breach goes to the other member only (a request
    // to a stopped process would wait for it).
    signal(old, "STOP");
    breach(other).await;
    let (next, next_term) = eventually(20, async || agreed_leader(&c, &[other]).await)
        .await
        .expect("the other member took over");
    assert_ne!(next, leader);
    assert!(next_term > term);
    let acted = eventually(20, async || Some(calls(&calls_file)).filter(|c| !c.is_empty()))
        .await
        .expect("the new leader scaled out");
    tokio::time::sleep(Duration::from_secs(2 * TTL_S).saturating_sub(Duration::from_secs(1))).await;

    // Woken, the old leader sees the same breach in its own store and the state it had; it
    // must neither act nor keep claiming the lead.
    signal(old, "CONT");
    breach(old).await;
    let views = eventually(20, async || agreed_leader(&c, &[&a, &b]).await)
        .await
        .expect("both agree again");
    assert_eq!(views, (next.clone(), next_term), "the woken leader follows");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = calls(&calls_file);
    assert!(all.iter().all(|(m, _)| *m == next), "a call from the deposed leader: {all:?}");
    assert_eq!(all, acted, "one call, by the new leader");
}
