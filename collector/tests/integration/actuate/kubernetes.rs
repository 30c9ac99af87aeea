//! Kubernetes scale subresource against a local API server double: auth, merge-patch with
//! resourceVersion, conflicts, 5xx/4xx, timeouts, refused connections, dry-run, clamping and a
//! crash between send and record. The ready count from the workload's own status.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stoker_collector::actuate::spec::ResizeSpec;
use stoker_collector::actuate::{ActionState, ActuateError, Bounds, IdempotencyKey, build_resizer};

use super::support::{Mock, Reply, Seen, closed_port, test_env};

const SCALE: &str = "/apis/apps/v1/namespaces/infer/deployments/resnet/scale";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/infer/deployments/resnet";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/infer/statefulsets/resnet";

fn spec() -> ResizeSpec {
    serde_json::from_value(serde_json::json!({
        "actuator": "kubernetes",
        "kubernetes": {"namespace": "infer", "deployment": "resnet", "cluster": "test"}
    }))
    .expect("spec")
}

/// A scale subresource with optimistic concurrency, like the API server's.
#[derive(Clone)]
struct Scale {
    replicas: Arc<Mutex<(u32, u64)>>,
}

impl Scale {
    fn new(replicas: u32) -> Self {
        Self { replicas: Arc::new(Mutex::new((replicas, 1))) }
    }
    fn get(&self) -> Reply {
        let (n, rv) = *self.replicas.lock().expect("lock");
        Reply::json(
            200,
            serde_json::json!({
                "kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "resnet", "namespace": "infer", "resourceVersion": rv.to_string()},
                "spec": {"replicas": n}, "status": {"replicas": n}
            }),
        )
    }
    fn patch(&self, seen: &Seen) -> Reply {
        let body = seen.json();
        let mut g = self.replicas.lock().expect("lock");
        if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(|v| v.as_str()) {
            if rv != g.1.to_string() {
                return Reply::json(
                    409,
                    serde_json::json!({"kind": "Status", "reason": "Conflict"}),
                );
            }
        }
        g.0 = u32::try_from(
            body.pointer("/spec/replicas").and_then(|v| v.as_u64()).expect("replicas"),
        )
        .expect("u32");
        g.1 += 1;
        drop(g);
        self.get()
    }
    fn size(&self) -> u32 {
        self.replicas.lock().expect("lock").0
    }
    fn bump_elsewhere(&self) {
        self.replicas.lock().expect("lock").1 += 1;
    }
}

#[tokio::test]
async fn resizes_through_the_scale_subresource_once_per_key() {
    let scale = Scale::new(2);
    let s = scale.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) => s.get(),
        ("PATCH", SCALE) => s.patch(seen),
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    assert_eq!(r.current().await.expect("current").replicas, 2);

    let key = IdempotencyKey::new("resnet-serving", "scale", 1_000);
    let out = r.resize(5, Bounds { min: 1, max: 10 }, &key, false).await.expect("resize");
    assert_eq!((out.before, out.applied, out.after, out.changed), (Some(2), 5, Some(5), true));
    assert_eq!(scale.size(), 5);

    let patch = mock.requests().into_iter().find(|s| s.method == "PATCH").expect("patched");
    assert_eq!(patch.headers["content-type"], "application/merge-patch+json");
    assert_eq!(patch.headers["authorization"], "Bearer kube-token");
    assert_eq!(
        patch.json(),
        serde_json::json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 5}})
    );

    // The same key again (a retry, or after a restart): nothing is sent.
    let again = r.resize(5, Bounds { min: 1, max: 10 }, &key, false).await.expect("replay");
    assert!(again.replayed);
    assert_eq!(mock.count("PATCH", SCALE), 1);
    let rec = t.env.journal.get(key.as_str()).expect("journal").expect("recorded");
    assert_eq!(rec.state, ActionState::Applied);
}

/// A Deployment or StatefulSet object as the API server answers it: the status counts that
/// are zero are omitted (`omitempty`), so an object with none ready has no `readyReplicas`.
fn workload(kind: &str, replicas: u32, ready: u32) -> Reply {
    let mut status = serde_json::json!({"observedGeneration": 3, "replicas": replicas});
    if ready > 0 {
        status["readyReplicas"] = ready.into();
        status["availableReplicas"] = ready.into();
    }
    Reply::json(
        200,
        serde_json::json!({
            "kind": kind, "apiVersion": "apps/v1",
            "metadata": {"name": "resnet", "namespace": "infer", "resourceVersion": "7"},
            "spec": {"replicas": replicas}, "status": status
        }),
    )
}

#[tokio::test]
async fn reports_ready_replicas_from_the_workload_status() {
    let scale = Scale::new(5);
    let s = scale.clone();
    let ready = Arc::new(AtomicU32::new(3));
    let rd = ready.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) => s.get(),
        ("GET", DEPLOYMENT) => match rd.load(Ordering::SeqCst) {
            // A collector whose RBAC lacks `get` on deployments.
            u32::MAX => {
                Reply::json(403, serde_json::json!({"kind": "Status", "reason": "Forbidden"}))
            }
            n => workload("Deployment", s.size(), n),
        },
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let state = r.current().await.expect("current");
    assert_eq!((state.replicas, state.ready), (5, Some(3)));
    assert_eq!(mock.count("GET", DEPLOYMENT), 1);

    // None ready: the API server omits `readyReplicas`, which is zero, not unknown.
    ready.store(0, Ordering::SeqCst);
    assert_eq!(r.current().await.expect("current").ready, Some(0));

    // Forbidden: the ready count is unknown, the size still reads.
    ready.store(u32::MAX, Ordering::SeqCst);
    let state = r.current().await.expect("current despite 403");
    assert_eq!((state.replicas, state.ready), (5, None));

    // A StatefulSet reads its own object.
    let sts = Mock::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", p) if p == format!("{STATEFULSET}/scale") => Reply::json(
            200,
            serde_json::json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 4}}),
        ),
        ("GET", STATEFULSET) => workload("StatefulSet", 4, 2),
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&sts.url()));
    let spec: ResizeSpec = serde_json::from_value(serde_json::json!({
        "actuator": "kubernetes",
        "kubernetes": {"namespace": "infer", "statefulset": "resnet", "cluster": "test"}
    }))
    .expect("spec");
    let r = build_resizer(&spec, "resnet", &t.env).expect("resizer");
    let state = r.current().await.expect("current");
    assert_eq!((state.replicas, state.ready), (4, Some(2)));
}

#[tokio::test]
async fn conflict_rereads_and_retries() {
    let scale = Scale::new(3);
    let s = scale.clone();
    let first_patch = Arc::new(AtomicU32::new(0));
    let fp = first_patch.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) => s.get(),
        ("PATCH", SCALE) => {
            // Someone else changes the scale between our read and our first write.
            if fp.fetch_add(1, Ordering::SeqCst) == 0 {
                s.bump_elsewhere();
            }
            s.patch(seen)
        }
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let out = r
        .resize(6, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 2), false)
        .await
        .expect("resize");
    assert_eq!(scale.size(), 6);
    assert_eq!(mock.count("PATCH", SCALE), 2);
    assert_eq!(mock.count("GET", SCALE), 2);
    assert!(out.note.expect("note").contains("conflict"));
    assert_eq!(out.attempts.iter().filter(|a| a.status == Some(409)).count(), 1);
}

#[tokio::test]
async fn retries_5xx_and_clamps_to_max() {
    let scale = Scale::new(2);
    let s = scale.clone();
    let fails = Arc::new(AtomicU32::new(2));
    let f = fails.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) => s.get(),
        ("PATCH", SCALE) if f.load(Ordering::SeqCst) > 0 => {
            f.fetch_sub(1, Ordering::SeqCst);
            Reply::text(503, "overloaded")
        }
        ("PATCH", SCALE) => s.patch(seen),
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let out = r
        .resize(50, Bounds { min: 1, max: 8 }, &IdempotencyKey::new("p", "scale", 3), false)
        .await
        .expect("resize");
    assert_eq!(out.applied, 8);
    let clamp = out.clamp.expect("clamped");
    assert_eq!((clamp.requested, clamp.applied, clamp.reason.as_str()), (50, 8, "policy max"));
    assert_eq!(scale.size(), 8);
    let statuses: Vec<_> =
        out.attempts.iter().filter(|a| a.request.starts_with("PATCH")).map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(503), Some(503), Some(200)]);
}

#[tokio::test]
async fn never_retries_4xx_and_records_the_failure() {
    let scale = Scale::new(2);
    let s = scale.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) => s.get(),
        ("PATCH", SCALE) => Reply::text(403, r#"{"reason":"Forbidden"}"#),
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let key = IdempotencyKey::new("p", "scale", 4);
    let err = r.resize(4, Bounds { min: 1, max: 8 }, &key, false).await.expect_err("forbidden");
    assert_eq!(err.status(), Some(403));
    match &err {
        ActuateError::Failed { attempts, .. } => {
            assert_eq!(attempts.iter().filter(|a| a.status == Some(403)).count(), 1)
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(mock.count("PATCH", SCALE), 1);
    let rec = t.env.journal.get(key.as_str()).expect("journal").expect("recorded");
    assert_eq!(rec.state, ActionState::Failed);
    assert!(rec.error.expect("error").contains("403"));
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let scale = Scale::new(2);
    let s = scale.clone();
    let slow = Arc::new(AtomicU32::new(1));
    let sl = slow.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) if sl.fetch_sub(1, Ordering::SeqCst) == 1 => {
            s.get().after(Duration::from_secs(3))
        }
        ("GET", SCALE) => s.get(),
        ("PATCH", SCALE) => s.patch(seen),
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let env = t.env.clone().with_request_timeout(Duration::from_millis(200));
    let r = build_resizer(&spec(), "resnet", &env).expect("resizer");
    let out = r
        .resize(3, Bounds { min: 1, max: 8 }, &IdempotencyKey::new("p", "scale", 5), false)
        .await
        .expect("resize");
    assert_eq!(scale.size(), 3);
    let first = &out.attempts[0];
    assert!(first.error.as_deref().expect("timed out").contains("timed out"), "{first:?}");
    assert_eq!(mock.count("GET", SCALE), 2);
}

#[tokio::test]
async fn refused_connections_are_retried_then_reported() {
    let port = closed_port().await;
    let t = test_env(Some(&format!("http://127.0.0.1:{port}")));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let err = r
        .resize(3, Bounds { min: 1, max: 8 }, &IdempotencyKey::new("p", "scale", 6), false)
        .await
        .expect_err("refused");
    match err {
        ActuateError::Failed { attempts, source } => {
            assert_eq!(attempts.len(), 4, "max_attempts tries");
            assert!(matches!(*source, ActuateError::Transport { .. }), "{source}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn dry_run_sends_nothing() {
    let mock = Mock::start(|_| Reply::text(500, "must not be called")).await;
    let t = test_env(Some(&mock.url()));
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let out = r
        .resize(7, Bounds { min: 1, max: 5 }, &IdempotencyKey::new("p", "scale", 7), true)
        .await
        .expect("dry run");
    assert!(out.dry_run && !out.changed);
    assert_eq!(out.applied, 5);
    let planned = &out.planned[0];
    assert_eq!(planned.method, "PATCH");
    assert!(planned.url.ends_with(SCALE));
    assert_eq!(planned.headers["authorization"], "<redacted>");
    assert!(planned.body.as_deref().expect("body").contains("\"replicas\":5"));
    assert!(mock.requests().is_empty(), "dry-run sent {:?}", mock.requests());
}

/// Regression guard: a crash after the PATCH reached the server but before the outcome was
/// recorded must not make the restarted collector apply the change a second time.
#[tokio::test]
async fn crash_between_send_and_record_does_not_apply_twice() {
    let scale = Scale::new(2);
    let s = scale.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SCALE) => s.get(),
        // Applies, then never answers in time: the collector "dies" waiting.
        ("PATCH", SCALE) => s.patch(seen).after(Duration::from_secs(30)),
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let key = IdempotencyKey::new("p", "scale", 8);
    {
        let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
        let k = key.clone();
        let task =
            tokio::spawn(async move { r.resize(4, Bounds { min: 1, max: 8 }, &k, false).await });
        super::support::eventually("the PATCH arrives", || mock.count("PATCH", SCALE) == 1).await;
        task.abort();
        let _ = task.await;
    }
    assert_eq!(
        t.env.journal.get(key.as_str()).expect("journal").expect("pending").state,
        ActionState::Pending
    );
    assert_eq!(scale.size(), 4);

    // The restarted collector: a new actuator over the same journal.
    let r = build_resizer(&spec(), "resnet", &t.env).expect("resizer");
    let out = r.resize(4, Bounds { min: 1, max: 8 }, &key, false).await.expect("recovered");
    assert!(out.recovered);
    assert!(!out.changed);
    assert_eq!(mock.count("PATCH", SCALE), 1, "applied twice");
    assert_eq!(
        t.env.journal.get(key.as_str()).expect("journal").expect("rec").state,
        ActionState::Unchanged
    );
}
