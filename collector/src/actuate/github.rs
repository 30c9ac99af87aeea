//! GitHub Actions `workflow_dispatch`, followed to completion.
//!
//! Wire contract (REST API version `2022-11-28`, `Authorization: Bearer <token>`):
//! - `POST {api}/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches` with
//!   `{"ref", "inputs", "return_run_details": true}`; the answer (200) carries
//!   `workflow_run_id`, `run_url` and `html_url`.
//! - `GET {api}/repos/{owner}/{repo}/actions/runs/{id}`: `status` (queued, in_progress,
//!   completed, ...) and `conclusion` (success, failure, cancelled, timed_out, ...).
//! - After a crash between dispatch and record: `GET .../workflows/{workflow}/runs?event=workflow_dispatch&branch={ref}&created=>=T`
//!   and adopt the run whose title carries the idempotency key (a workflow can put
//!   `{{ idempotency_key }}` in an input and use it in `run-name`), else the single run created
//!   since the dispatch; dispatching again only when there is none.
//! - Timeout: `POST .../actions/runs/{id}/cancel`.

use reqwest::Method;

use super::ActFuture;
use super::config::ActuateEnv;
use super::http::{Body, HttpCall, send};
use super::journaled::{JobBackend, Observed, Started};
use super::secrets::Secret;
use super::spec::GithubWorkflow;
use super::template::render_map;
use super::types::{
    ActuateError, AttemptRecord, IdempotencyKey, JobContext, JobHandle, JobState, PlannedRequest,
};

/// Looking back this far before the recorded dispatch time covers clock skew with GitHub.
const SKEW_NS: u64 = 60_000_000_000;

/// `actuator: github-workflow`.
pub struct GithubDispatcher {
    spec: GithubWorkflow,
    secret: String,
    api: String,
    env: ActuateEnv,
}

/// Unix nanoseconds as RFC 3339 (seconds).
pub fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl GithubDispatcher {
    /// From a rule's `job.github` section; the token secret must be configured.
    pub fn new(spec: GithubWorkflow, env: &ActuateEnv) -> Result<Self, ActuateError> {
        let secret = spec.secret.clone().unwrap_or_else(|| "github".into());
        if !env.secrets.contains(&secret) {
            return Err(ActuateError::Config(format!(
                "github.secret: `{secret}` is not in [secrets]"
            )));
        }
        let api = spec
            .api_url
            .clone()
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self { spec, secret, api, env: env.clone() })
    }

    fn call(&self, method: Method, path: &str, redact: bool) -> Result<HttpCall, ActuateError> {
        let token =
            if redact { Secret::new(String::new()) } else { self.env.secrets.get(&self.secret)? };
        Ok(HttpCall::new(method, format!("{}/repos/{}{}", self.api, self.spec.repo, path))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .secret_header("authorization", Secret::new(format!("Bearer {}", token.expose()))))
    }

    fn vars(ctx: &JobContext, key: &IdempotencyKey) -> std::collections::BTreeMap<String, String> {
        let mut vars = ctx.vars();
        vars.insert("idempotency_key".into(), key.as_str().to_owned());
        vars
    }

    fn dispatch(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
        redact: bool,
    ) -> Result<HttpCall, ActuateError> {
        let inputs = render_map(&self.spec.inputs, &Self::vars(ctx, key))?;
        Ok(self
            .call(
                Method::POST,
                &format!("/actions/workflows/{}/dispatches", self.spec.workflow),
                redact,
            )?
            .body(Body::Json(serde_json::json!({
                "ref": self.spec.git_ref,
                "inputs": inputs,
                "return_run_details": true,
            }))))
    }

    async fn find_run(
        &self,
        key: &IdempotencyKey,
        since_ns: u64,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Option<Started>, ActuateError> {
        let since = rfc3339(since_ns.saturating_sub(SKEW_NS));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("event", "workflow_dispatch")
            .append_pair("branch", &self.spec.git_ref)
            .append_pair("created", &format!(">={since}"))
            .finish();
        let call = self.call(
            Method::GET,
            &format!("/actions/workflows/{}/runs?{query}", self.spec.workflow),
            false,
        )?;
        let v = send(&self.env, &call, &[], attempts).await?.json("github workflow runs")?;
        let runs = v.get("workflow_runs").and_then(|r| r.as_array()).cloned().unwrap_or_default();
        let by_title = runs.iter().find(|r| {
            r.get("display_title")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.contains(key.as_str()))
        });
        let chosen = by_title.or(if runs.len() == 1 { runs.first() } else { None });
        if chosen.is_none() && runs.len() > 1 {
            return Err(ActuateError::Indeterminate {
                key: key.as_str().to_owned(),
                reason: format!(
                    "{} workflow runs since the dispatch and none carries the key in its title",
                    runs.len()
                ),
            });
        }
        Ok(chosen.map(|r| Started {
            remote_id: r.get("id").and_then(|i| i.as_u64()).map(|i| i.to_string()),
            url: r.get("html_url").and_then(|u| u.as_str()).map(str::to_owned),
            detail: Some("found after a restart".into()),
        }))
    }
}

/// The lifecycle state of a workflow run's `status`/`conclusion`.
pub fn run_state(status: &str, conclusion: Option<&str>) -> JobState {
    match (status, conclusion) {
        ("completed", Some("success")) => JobState::Succeeded,
        ("completed", Some("timed_out")) => JobState::TimedOut,
        ("completed", _) => JobState::Failed,
        ("in_progress", _) => JobState::Running,
        _ => JobState::Started,
    }
}

impl JobBackend for GithubDispatcher {
    fn actuator(&self) -> &'static str {
        "github-workflow"
    }

    fn describe(&self) -> String {
        format!("{} {}@{}", self.spec.repo, self.spec.workflow, self.spec.git_ref)
    }

    fn plan(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.dispatch(ctx, key, true)?.planned()])
    }

    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Started> {
        Box::pin(async move {
            let sent = self.env.now_ns();
            let answer = send(&self.env, &self.dispatch(ctx, key, false)?, &[], attempts).await?;
            if answer.status == 204 || answer.body.trim().is_empty() {
                // A server without run details: find the run we just created.
                return Ok(self.find_run(key, sent, attempts).await?.unwrap_or(Started {
                    remote_id: None,
                    url: None,
                    detail: Some("dispatched; run id not yet known".into()),
                }));
            }
            let v = answer.json("github dispatch")?;
            let id = v.get("workflow_run_id").and_then(|i| i.as_u64()).ok_or_else(|| {
                ActuateError::Protocol {
                    what: "github dispatch".into(),
                    reason: "no workflow_run_id in the answer".into(),
                }
            })?;
            Ok(Started {
                remote_id: Some(id.to_string()),
                url: v.get("html_url").and_then(|u| u.as_str()).map(str::to_owned),
                detail: None,
            })
        })
    }

    fn recover<'a>(
        &'a self,
        _ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        sent_ns: u64,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<Started>> {
        Box::pin(self.find_run(key, sent_ns, attempts))
    }

    fn poll<'a>(
        &'a self,
        handle: &'a JobHandle,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Observed> {
        Box::pin(async move {
            let Some(id) = &handle.remote_id else {
                return Ok(Observed {
                    state: JobState::Started,
                    detail: Some("run id not yet known".into()),
                    output: None,
                });
            };
            let call = self.call(Method::GET, &format!("/actions/runs/{id}"), false)?;
            let v = send(&self.env, &call, &[], attempts).await?.json("github workflow run")?;
            let status = v.get("status").and_then(|s| s.as_str()).unwrap_or("queued");
            let conclusion = v.get("conclusion").and_then(|s| s.as_str());
            Ok(Observed {
                state: run_state(status, conclusion),
                detail: Some(match conclusion {
                    Some(c) => format!("{status}: {c}"),
                    None => status.to_owned(),
                }),
                output: None,
            })
        })
    }

    fn cancel<'a>(&'a self, handle: &'a JobHandle) -> ActFuture<'a, ()> {
        Box::pin(async move {
            if let Some(id) = &handle.remote_id {
                let call = self.call(Method::POST, &format!("/actions/runs/{id}/cancel"), false)?;
                send(&self.env, &call, &[409], &mut Vec::new()).await?;
            }
            Ok(())
        })
    }
}
