//! Local replicas as real processes: start N with their own ports, restart one that dies,
//! scale in from the top, stop all on shutdown. And the command resizer.

use stoker_collector::actuate::spec::ResizeSpec;
use stoker_collector::actuate::{Bounds, IdempotencyKey, build_resizer};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::support::{Mock, Reply, eventually, test_env};

fn pid_of(dir: &std::path::Path, port: u16) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("{port}.pid"))).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn local_replicas_start_restart_scale_in_and_stop() {
    let t = test_env(None);
    let dir = t.dir.path().to_path_buf();
    let script = format!("echo $$ > {}/$STOKER_PORT.pid; exec sleep 60", dir.display());
    let spec: ResizeSpec = serde_json::from_value(serde_json::json!({
        "actuator": "local",
        "local": {"argv": ["sh", "-c", script, "replica-{replica}"], "port_from": 18100, "port_to": 18103, "stop_grace": "2s"}
    }))
    .expect("spec");
    let r = build_resizer(&spec, "cnn", &t.env).expect("resizer");
    let out = r
        .resize(3, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 1), false)
        .await
        .expect("resize");
    assert_eq!((out.before, out.applied, out.after), (Some(0), 3, Some(3)));
    eventually("three replicas running", || {
        (18100..18103).all(|p| pid_of(&dir, p).is_some_and(alive))
    })
    .await;
    let state = r.current().await.expect("current");
    assert_eq!((state.replicas, state.ready, state.remote_max), (3, Some(3), Some(4)));

    // Kill one: its supervisor starts it again (new pid, same port).
    let victim = pid_of(&dir, 18101).expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    eventually("replica 1 restarted", || {
        pid_of(&dir, 18101).is_some_and(|p| p != victim && alive(p))
    })
    .await;

    // Beyond the port range: clamped to the range's capacity.
    let out = r
        .resize(9, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 2), false)
        .await
        .expect("resize");
    assert_eq!(out.applied, 4);
    assert_eq!(out.clamp.expect("clamp").reason, "remote max");

    // Scale in from the top: ports 18101..18103 stop, 18100 stays.
    eventually("replica 3 running", || pid_of(&dir, 18103).is_some_and(alive)).await;
    let top = pid_of(&dir, 18103).expect("pid");
    let out = r
        .resize(1, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 3), false)
        .await
        .expect("resize");
    assert_eq!(out.after, Some(1));
    eventually("replica 3 stopped", || !alive(top)).await;
    let first = pid_of(&dir, 18100).expect("pid");
    assert!(alive(first));

    r.shutdown().await.expect("shutdown");
    eventually("all stopped", || !alive(first)).await;
    assert_eq!(r.current().await.expect("current").replicas, 0);
}

/// With a readiness probe a running replica counts as ready only while its URL answers 2xx:
/// here the probe endpoint stands in for the replicas' own `/healthz`.
#[tokio::test]
async fn local_replicas_count_as_ready_once_their_probe_answers() {
    let all_ready = Arc::new(AtomicBool::new(false));
    let flag = all_ready.clone();
    let probe = Mock::start(move |seen| match seen.path.as_str() {
        "/ready/0" => Reply::text(200, "ok"),
        "/ready/1" | "/ready/2" if flag.load(Ordering::SeqCst) => Reply::text(200, "ok"),
        _ => Reply::text(503, "warming"),
    })
    .await;
    let t = test_env(None);
    let dir = t.dir.path().to_path_buf();
    let script = format!("echo $$ > {}/$STOKER_PORT.pid; exec sleep 60", dir.display());
    let spec: ResizeSpec = serde_json::from_value(serde_json::json!({
        "actuator": "local",
        "local": {
            "argv": ["sh", "-c", script], "port_from": 18110, "port_to": 18113, "stop_grace": "2s",
            "ready": {"http": format!("{}/ready/{{replica}}", probe.url()), "timeout": "500ms"}
        }
    }))
    .expect("spec");
    let r = build_resizer(&spec, "cnn", &t.env).expect("resizer");
    r.resize(3, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 1), false)
        .await
        .expect("resize");
    eventually("three replicas running", || {
        (18110..18113).all(|p| pid_of(&dir, p).is_some_and(alive))
    })
    .await;
    let state = r.current().await.expect("current");
    assert_eq!((state.replicas, state.ready), (3, Some(1)));
    all_ready.store(true, Ordering::SeqCst);
    let state = r.current().await.expect("current");
    assert_eq!((state.replicas, state.ready), (3, Some(3)));
    r.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn command_resizer_runs_with_the_desired_size() {
    let t = test_env(None);
    let out_file = t.dir.path().join("size");
    let spec: ResizeSpec = serde_json::from_value(serde_json::json!({
        "actuator": "command",
        "command": {"argv": ["sh", "-c", format!("echo {{{{ desired }}}} > {}", out_file.display())], "timeout": "5s"}
    }))
    .expect("spec");
    let r = build_resizer(&spec, "batch", &t.env).expect("resizer");
    r.resize(7, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 1), false)
        .await
        .expect("resize");
    assert_eq!(std::fs::read_to_string(&out_file).expect("written").trim(), "7");
    assert_eq!(r.current().await.expect("remembered").replicas, 7);
}
