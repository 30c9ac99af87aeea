//! Model-refresh jobs: Kubernetes Jobs (deterministic names, 409), GitHub workflow_dispatch,
//! GitLab triggers, webhooks and commands, each followed through its lifecycle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stoker_collector::actuate::spec::JobSpec;
use stoker_collector::actuate::webhook::verify;
use stoker_collector::actuate::{
    ActionState, ActuateError, IdempotencyKey, JobContext, JobState, build_job_runner,
};
use stoker_collector::clock::ManualClock;

use super::support::{Mock, Reply, eventually, test_env};

const JOBS: &str = "/apis/batch/v1/namespaces/ml/jobs";

fn ctx() -> JobContext {
    JobContext::new("resnet-serving", "confidence-drift")
        .with("reason", "psi 0.31 > 0.2")
        .with("model_name", "resnet")
}

fn k8s_job_spec() -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "actuator": "kubernetes-job",
        "kubernetes": {
            "namespace": "ml", "name_prefix": "retrain-resnet", "cluster": "test",
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "train", "image": "trainer:1", "args": ["--reason", "{{ reason }}"]}
            ]}}}
        }
    }))
    .expect("spec")
}

/// A Jobs API double: create (409 when the name exists), get with scripted status.
#[derive(Clone, Default)]
struct Jobs {
    jobs: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    status: Arc<Mutex<serde_json::Value>>,
}

impl Jobs {
    fn handle(&self, seen: &super::support::Seen) -> Reply {
        if seen.method == "POST" && seen.path == JOBS {
            let job = seen.json();
            let name =
                job.pointer("/metadata/name").and_then(|n| n.as_str()).expect("name").to_owned();
            let mut jobs = self.jobs.lock().expect("lock");
            if jobs.contains_key(&name) {
                return Reply::json(
                    409,
                    serde_json::json!({"kind": "Status", "reason": "AlreadyExists"}),
                );
            }
            jobs.insert(name, job.clone());
            return Reply::json(201, job);
        }
        if let Some(name) = seen.path.strip_prefix(&format!("{JOBS}/")) {
            let jobs = self.jobs.lock().expect("lock");
            return match jobs.get(name) {
                Some(job) if seen.method == "GET" => {
                    let mut j = job.clone();
                    j["status"] = self.status.lock().expect("lock").clone();
                    Reply::json(200, j)
                }
                Some(_) => Reply::json(200, serde_json::json!({})),
                None => Reply::json(404, serde_json::json!({"reason": "NotFound"})),
            };
        }
        Reply::text(404, "{}")
    }
}

#[tokio::test]
async fn kubernetes_job_lifecycle_with_deterministic_name() {
    let jobs = Jobs::default();
    let j = jobs.clone();
    let mock = Mock::start(move |seen| j.handle(seen)).await;
    let t = test_env(Some(&mock.url()));
    let runner = build_job_runner(&k8s_job_spec(), &t.env).expect("runner");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 42);
    let h = runner.start(&ctx(), &key, false).await.expect("start");
    let name = h.remote_id.clone().expect("name");
    assert!(name.starts_with("retrain-resnet-") && name.len() <= 63, "{name}");
    let created = mock.requests().into_iter().find(|s| s.method == "POST").expect("created").json();
    assert_eq!(created["spec"]["template"]["spec"]["containers"][0]["args"][1], "psi 0.31 > 0.2");
    assert_eq!(created["metadata"]["annotations"]["stoker.dev/idempotency-key"], key.as_str());

    // A running job blocks a second start of the same rule.
    *jobs.status.lock().expect("lock") = serde_json::json!({"active": 1});
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Running);
    let other = IdempotencyKey::new("resnet-serving", "confidence-drift", 43);
    assert!(matches!(runner.start(&ctx(), &other, false).await, Err(ActuateError::JobBusy { .. })));

    *jobs.status.lock().expect("lock") =
        serde_json::json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Succeeded);
    let rec = t.env.journal.get(key.as_str()).expect("journal").expect("rec");
    assert_eq!(rec.state, ActionState::Succeeded);
    assert_eq!(t.env.journal.recent(10).expect("recent")[0].key, key.as_str());

    // Now a new job may start.
    runner.start(&ctx(), &other, false).await.expect("second job after the first ended");
}

/// Regression guard: after a crash between creating the Job and recording it, starting again
/// under the same key adopts the existing Job (409) instead of creating a second one.
#[tokio::test]
async fn kubernetes_job_409_after_crash_is_adopted() {
    let jobs = Jobs::default();
    let j = jobs.clone();
    let posts = Arc::new(AtomicU32::new(0));
    let p = posts.clone();
    let mock = Mock::start(move |seen| {
        let reply = j.handle(seen);
        if seen.method == "POST" && p.fetch_add(1, Ordering::SeqCst) == 0 {
            return reply.after(Duration::from_secs(30));
        }
        reply
    })
    .await;
    let t = test_env(Some(&mock.url()));
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 77);
    {
        let runner = build_job_runner(&k8s_job_spec(), &t.env).expect("runner");
        let k = key.clone();
        let task = tokio::spawn(async move { runner.start(&ctx(), &k, false).await });
        eventually("the Job is created", || jobs.jobs.lock().expect("lock").len() == 1).await;
        task.abort();
        let _ = task.await;
    }
    let runner = build_job_runner(&k8s_job_spec(), &t.env).expect("runner");
    let h = runner.start(&ctx(), &key, false).await.expect("adopted");
    assert!(h.remote_id.is_some());
    assert_eq!(jobs.jobs.lock().expect("lock").len(), 1, "a second Job was created");

    // And a POST answered 409 directly counts as started too.
    let fresh = test_env(Some(&mock.url()));
    let r2 = build_job_runner(&k8s_job_spec(), &fresh.env).expect("runner");
    let h2 = r2.start(&ctx(), &key, false).await.expect("409 is success");
    assert_eq!(h2.remote_id, h.remote_id);
    let status =
        fresh.env.journal.get(key.as_str()).expect("journal").expect("rec").job.expect("status");
    assert!(status.detail.expect("detail").contains("409"));
}

fn github_spec(api: &str) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "actuator": "github-workflow",
        "github": {"repo": "acme/models", "workflow": "retrain.yml", "ref": "main", "api_url": api,
                   "inputs": {"model": "{{ model_name }}", "reason": "{{ reason }}"}}
    }))
    .expect("spec")
}

#[tokio::test]
async fn github_dispatch_with_run_details_then_poll_to_completion() {
    let run_status = Arc::new(Mutex::new(("queued", None::<&str>)));
    let rs = run_status.clone();
    let fail_first = Arc::new(AtomicU32::new(1));
    let ff = fail_first.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/repos/acme/models/actions/workflows/retrain.yml/dispatches") => {
            if ff.fetch_sub(1, Ordering::SeqCst) == 1 {
                return Reply::text(502, "bad gateway");
            }
            Reply::json(
                200,
                serde_json::json!({
                    "workflow_run_id": 9001,
                    "run_url": "https://api.github.com/repos/acme/models/actions/runs/9001",
                    "html_url": "https://github.com/acme/models/actions/runs/9001"
                }),
            )
        }
        ("GET", "/repos/acme/models/actions/runs/9001") => {
            let (s, c) = *rs.lock().expect("lock");
            Reply::json(200, serde_json::json!({"id": 9001, "status": s, "conclusion": c}))
        }
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(None);
    let runner = build_job_runner(&github_spec(&mock.url()), &t.env).expect("runner");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 5);
    let h = runner.start(&ctx(), &key, false).await.expect("dispatch");
    assert_eq!(h.remote_id.as_deref(), Some("9001"));
    assert_eq!(h.url.as_deref(), Some("https://github.com/acme/models/actions/runs/9001"));

    let posts: Vec<_> = mock.requests().into_iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 2, "one 502 then a retry");
    let d = &posts[1];
    assert_eq!(d.headers["authorization"], "Bearer gh-token");
    assert_eq!(d.headers["accept"], "application/vnd.github+json");
    assert_eq!(d.headers["x-github-api-version"], "2022-11-28");
    assert_eq!(
        d.json(),
        serde_json::json!({"ref": "main", "return_run_details": true,
                           "inputs": {"model": "resnet", "reason": "psi 0.31 > 0.2"}})
    );

    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Started);
    *run_status.lock().expect("lock") = ("in_progress", None);
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Running);
    *run_status.lock().expect("lock") = ("completed", Some("failure"));
    let st = runner.poll(&h).await.expect("poll");
    assert_eq!(st.state, JobState::Failed);
    assert_eq!(st.detail.as_deref(), Some("completed: failure"));
    // Terminal: later polls do not ask GitHub again.
    let gets = mock.count("GET", "/repos/acme/models/actions/runs/9001");
    runner.poll(&h).await.expect("poll");
    assert_eq!(mock.count("GET", "/repos/acme/models/actions/runs/9001"), gets);
}

#[tokio::test]
async fn github_dry_run_sends_nothing_and_redacts_the_token() {
    let mock = Mock::start(|_| Reply::text(500, "must not be called")).await;
    let t = test_env(None);
    let runner = build_job_runner(&github_spec(&mock.url()), &t.env).expect("runner");
    let h = runner.start(&ctx(), &IdempotencyKey::new("p", "r", 1), true).await.expect("dry run");
    assert!(h.dry_run);
    assert!(mock.requests().is_empty());
    let rec = t.env.journal.get("p/r/1").expect("journal").expect("rec");
    assert_eq!(rec.state, ActionState::DryRun);
    let text = serde_json::to_string(&rec).expect("json");
    assert!(!text.contains("gh-token") && text.contains("<redacted>"), "{text}");
}

#[tokio::test]
async fn gitlab_trigger_and_follow() {
    let mock = Mock::start(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/api/v4/projects/acme%2Fmodels/trigger/pipeline") => Reply::json(
            201,
            serde_json::json!({"id": 77, "web_url": "https://gitlab.example/acme/models/-/pipelines/77", "status": "created"}),
        ),
        ("GET", "/api/v4/projects/acme%2Fmodels/pipelines/77") => {
            assert_eq!(seen.headers.get("private-token").map(String::as_str), Some("read-token"));
            Reply::json(200, serde_json::json!({"id": 77, "status": "success"}))
        }
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(None);
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "actuator": "gitlab-pipeline",
        "gitlab": {"project": "acme/models", "ref": "main", "api_url": mock.url(), "read_secret": "gitlab-read",
                   "variables": {"REASON": "{{ reason }}"}}
    }))
    .expect("spec");
    let runner = build_job_runner(&spec, &t.env).expect("runner");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 9);
    let h = runner.start(&ctx(), &key, false).await.expect("trigger");
    assert_eq!(h.remote_id.as_deref(), Some("77"));
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(
        mock.requests().into_iter().find(|s| s.method == "POST").expect("post").body.as_bytes(),
    )
    .into_owned()
    .collect();
    assert_eq!(form["token"], "trigger-token");
    assert_eq!(form["ref"], "main");
    assert_eq!(form["variables[REASON]"], "psi 0.31 > 0.2");
    assert_eq!(form["variables[STOKER_IDEMPOTENCY_KEY]"], key.as_str());
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Succeeded);
}

#[tokio::test]
async fn webhook_job_is_signed_and_carries_the_key() {
    let mock = Mock::start(|_| Reply::json(202, serde_json::json!({}))).await;
    let t = test_env(None);
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "actuator": "webhook", "webhook": {"url": format!("{}/hooks/retrain", mock.url()), "secret": "hook"}
    }))
    .expect("spec");
    let runner = build_job_runner(&spec, &t.env).expect("runner");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 11);
    let h = runner.start(&ctx(), &key, false).await.expect("deliver");
    let seen = mock.requests().pop().expect("delivered");
    assert!(verify(b"hook-key", seen.body.as_bytes(), &seen.headers["x-stoker-signature"]));
    assert_eq!(seen.headers["idempotency-key"], key.as_str());
    assert_eq!(seen.json()["context"]["reason"], "psi 0.31 > 0.2");
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Succeeded);
}

#[tokio::test]
async fn command_job_gets_context_in_env_and_output_recorded() {
    let t = test_env(None);
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "actuator": "command",
        "command": {"argv": ["sh", "-c", "echo \"retrain $STOKER_MODEL_NAME because $STOKER_REASON\"; exit 0"]}
    }))
    .expect("spec");
    let runner = build_job_runner(&spec, &t.env).expect("runner");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 12);
    let h = runner.start(&ctx(), &key, false).await.expect("start");
    let mut last = None;
    for _ in 0..100 {
        let st = runner.poll(&h).await.expect("poll");
        if st.state.is_terminal() {
            last = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = last.expect("finished");
    assert_eq!(st.state, JobState::Succeeded);
    assert_eq!(st.output.as_deref(), Some("retrain resnet because psi 0.31 > 0.2\n"));
    let rec = t.env.journal.get(key.as_str()).expect("journal").expect("rec");
    assert_eq!(rec.state, ActionState::Succeeded);
}

#[tokio::test]
async fn job_past_its_timeout_is_marked_timed_out() {
    let jobs = Jobs::default();
    let j = jobs.clone();
    let mock = Mock::start(move |seen| j.handle(seen)).await;
    let t = test_env(Some(&mock.url()));
    let clock = ManualClock::new(1_000_000_000);
    let env = t.env.clone().with_clock(Arc::new(clock.clone()));
    let mut spec = k8s_job_spec();
    spec.timeout = Some("1h".parse().expect("duration"));
    let runner = build_job_runner(&spec, &env).expect("runner");
    let h = runner.start(&ctx(), &IdempotencyKey::new("p", "r", 1), false).await.expect("start");
    *jobs.status.lock().expect("lock") = serde_json::json!({"active": 1});
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::Running);
    clock.advance(Duration::from_secs(3601));
    assert_eq!(runner.poll(&h).await.expect("poll").state, JobState::TimedOut);
    assert_eq!(
        mock.count("DELETE", &format!("{JOBS}/{}", h.remote_id.as_deref().expect("name"))),
        1
    );
}

/// Regression guard: a command whose start was interrupted by a crash may have run; the
/// restarted collector refuses to run it again under the same key, every time.
#[tokio::test]
async fn interrupted_command_start_is_never_repeated() {
    let t = test_env(None);
    let marker = t.dir.path().join("ran");
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "actuator": "command", "command": {"argv": ["touch", marker.display().to_string()]}
    }))
    .expect("spec");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 13);
    t.env
        .journal
        .put(&stoker_collector::actuate::Actuation {
            key: key.as_str().into(),
            kind: stoker_collector::actuate::ActionKind::Job,
            actuator: "command".into(),
            target: "touch".into(),
            policy: Some("resnet-serving".into()),
            rule: Some("confidence-drift".into()),
            state: ActionState::Pending,
            desired: None,
            created_ns: 1,
            updated_ns: 1,
            resize: None,
            handle: None,
            job: None,
            attempts: vec![],
            error: None,
            indeterminate: false,
        })
        .expect("pending record");
    let runner = build_job_runner(&spec, &t.env).expect("runner");
    for _ in 0..2 {
        let err = runner.start(&ctx(), &key, false).await.expect_err("indeterminate");
        assert!(err.to_string().contains("unknown after a restart"), "{err}");
    }
    assert!(!marker.exists(), "the command ran again");
    // It does not block the rule forever: a new decision may start a job.
    runner
        .start(&ctx(), &IdempotencyKey::new("resnet-serving", "confidence-drift", 14), false)
        .await
        .expect("new key");
}

/// Regression guard: a crash after GitHub accepted the dispatch but before the run id was
/// recorded; the restarted collector finds the run by the key in its title, and does not
/// dispatch again.
#[tokio::test]
async fn github_crash_after_dispatch_adopts_the_run() {
    let dispatched = Arc::new(Mutex::new(None::<String>));
    let d = dispatched.clone();
    let mock = Mock::start(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/repos/acme/models/actions/workflows/retrain.yml/dispatches") => {
            let key = seen.json()["inputs"]["key"].as_str().expect("key input").to_owned();
            *d.lock().expect("lock") = Some(key);
            Reply::json(200, serde_json::json!({"workflow_run_id": 555})).after(Duration::from_secs(30))
        }
        ("GET", "/repos/acme/models/actions/workflows/retrain.yml/runs") => {
            assert!(seen.query.contains("event=workflow_dispatch") && seen.query.contains("created=%3E%3D"), "{}", seen.query);
            let title = format!("retrain {}", d.lock().expect("lock").clone().unwrap_or_default());
            Reply::json(200, serde_json::json!({"total_count": 2, "workflow_runs": [
                {"id": 554, "display_title": "retrain someone-else", "html_url": "https://github.com/x/554"},
                {"id": 555, "display_title": title, "html_url": "https://github.com/x/555"}
            ]}))
        }
        _ => Reply::text(404, "{}"),
    })
    .await;
    let t = test_env(None);
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "actuator": "github-workflow",
        "github": {"repo": "acme/models", "workflow": "retrain.yml", "ref": "main", "api_url": mock.url(),
                   "inputs": {"key": "{{ idempotency_key }}"}}
    }))
    .expect("spec");
    let key = IdempotencyKey::new("resnet-serving", "confidence-drift", 21);
    {
        let runner = build_job_runner(&spec, &t.env).expect("runner");
        let k = key.clone();
        let task = tokio::spawn(async move { runner.start(&ctx(), &k, false).await });
        eventually("the dispatch arrives", || dispatched.lock().expect("lock").is_some()).await;
        task.abort();
        let _ = task.await;
    }
    let runner = build_job_runner(&spec, &t.env).expect("runner");
    let h = runner.start(&ctx(), &key, false).await.expect("adopted");
    assert_eq!(h.remote_id.as_deref(), Some("555"));
    assert_eq!(
        mock.count("POST", "/repos/acme/models/actions/workflows/retrain.yml/dispatches"),
        1,
        "dispatched twice"
    );
}
