//! GitLab pipeline triggers.
//!
//! Wire contract:
//! - `POST {api}/api/v4/projects/{id}/trigger/pipeline`, form `token=<trigger token>`,
//!   `ref=...`, `variables[NAME]=value`, always including
//!   `variables[STOKER_IDEMPOTENCY_KEY]=<key>` as the dispatch marker. 201 with `{"id",
//!   "web_url", "status"}`.
//! - With a `read_secret` (`PRIVATE-TOKEN`): `GET .../pipelines/{id}` for `status`; after a
//!   crash `GET .../pipelines?ref=..&source=trigger&updated_after=T` and
//!   `GET .../pipelines/{id}/variables` to find the pipeline carrying the marker; on timeout
//!   `POST .../pipelines/{id}/cancel`.

use reqwest::Method;

use super::ActFuture;
use super::config::ActuateEnv;
use super::github::rfc3339;
use super::http::{Body, HttpCall, send};
use super::journaled::{JobBackend, Observed, Started};
use super::secrets::Secret;
use super::spec::GitlabPipeline;
use super::template::render_map;
use super::types::{
    ActuateError, AttemptRecord, IdempotencyKey, JobContext, JobHandle, JobState, PlannedRequest,
};

/// Pipeline variable carrying the idempotency key.
pub const MARKER_VARIABLE: &str = "STOKER_IDEMPOTENCY_KEY";

/// `actuator: gitlab-pipeline`.
pub struct GitlabTrigger {
    spec: GitlabPipeline,
    trigger_secret: String,
    api: String,
    project: String,
    env: ActuateEnv,
}

impl GitlabTrigger {
    /// From a rule's `job.gitlab` section; the named secrets must be configured.
    pub fn new(spec: GitlabPipeline, env: &ActuateEnv) -> Result<Self, ActuateError> {
        let trigger_secret = spec.secret.clone().unwrap_or_else(|| "gitlab".into());
        for name in std::iter::once(&trigger_secret).chain(spec.read_secret.as_ref()) {
            if !env.secrets.contains(name) {
                return Err(ActuateError::Config(format!(
                    "gitlab: secret `{name}` is not in [secrets]"
                )));
            }
        }
        let api = spec
            .api_url
            .clone()
            .unwrap_or_else(|| "https://gitlab.com".into())
            .trim_end_matches('/')
            .to_owned();
        // A path like `group/project` must be URL-encoded; a numeric id stays as it is.
        let project =
            url::form_urlencoded::byte_serialize(spec.project.as_bytes()).collect::<String>();
        Ok(Self { spec, trigger_secret, api, project, env: env.clone() })
    }

    fn base(&self) -> String {
        format!("{}/api/v4/projects/{}", self.api, self.project)
    }

    fn trigger(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
        redact: bool,
    ) -> Result<HttpCall, ActuateError> {
        let mut vars = ctx.vars();
        vars.insert("idempotency_key".into(), key.as_str().to_owned());
        let variables = render_map(&self.spec.variables, &vars)?;
        let token = if redact {
            "<redacted>".to_owned()
        } else {
            self.env.secrets.get(&self.trigger_secret)?.expose().to_owned()
        };
        let mut form =
            vec![("token".to_string(), token), ("ref".to_string(), self.spec.git_ref.clone())];
        for (k, v) in variables {
            form.push((format!("variables[{k}]"), v));
        }
        form.push((format!("variables[{MARKER_VARIABLE}]"), key.as_str().to_owned()));
        Ok(HttpCall::new(Method::POST, format!("{}/trigger/pipeline", self.base()))
            .body(Body::Form(form)))
    }

    fn read_call(&self, method: Method, path: &str) -> Result<Option<HttpCall>, ActuateError> {
        let Some(name) = &self.spec.read_secret else { return Ok(None) };
        let token: Secret = self.env.secrets.get(name)?;
        Ok(Some(
            HttpCall::new(method, format!("{}{}", self.base(), path))
                .secret_header("private-token", token),
        ))
    }

    fn started(v: &serde_json::Value, detail: Option<String>) -> Started {
        Started {
            remote_id: v.get("id").and_then(|i| i.as_u64()).map(|i| i.to_string()),
            url: v.get("web_url").and_then(|u| u.as_str()).map(str::to_owned),
            detail,
        }
    }
}

/// The lifecycle state of a pipeline `status`.
pub fn pipeline_state(status: &str) -> JobState {
    match status {
        "success" => JobState::Succeeded,
        "failed" | "canceled" | "canceling" | "skipped" => JobState::Failed,
        "running" => JobState::Running,
        _ => JobState::Started,
    }
}

impl JobBackend for GitlabTrigger {
    fn actuator(&self) -> &'static str {
        "gitlab-pipeline"
    }

    fn describe(&self) -> String {
        format!("{}@{}", self.spec.project, self.spec.git_ref)
    }

    fn plan(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.trigger(ctx, key, true)?.planned()])
    }

    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Started> {
        Box::pin(async move {
            let v = send(&self.env, &self.trigger(ctx, key, false)?, &[], attempts)
                .await?
                .json("gitlab trigger")?;
            if v.get("id").and_then(|i| i.as_u64()).is_none() {
                return Err(ActuateError::Protocol {
                    what: "gitlab trigger".into(),
                    reason: "no pipeline id in the answer".into(),
                });
            }
            Ok(Self::started(&v, None))
        })
    }

    fn recover<'a>(
        &'a self,
        _ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        sent_ns: u64,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<Started>> {
        Box::pin(async move {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("ref", &self.spec.git_ref)
                .append_pair("source", "trigger")
                .append_pair("updated_after", &rfc3339(sent_ns.saturating_sub(60_000_000_000)))
                .finish();
            let Some(list) = self.read_call(Method::GET, &format!("/pipelines?{query}"))? else {
                return Err(ActuateError::Indeterminate {
                    key: key.as_str().to_owned(),
                    reason: "a trigger may have been sent, and without gitlab.read_secret it cannot be looked up".into(),
                });
            };
            let pipelines =
                send(&self.env, &list, &[], attempts).await?.json("gitlab pipelines")?;
            for p in pipelines.as_array().cloned().unwrap_or_default() {
                let Some(id) = p.get("id").and_then(|i| i.as_u64()) else { continue };
                let Some(call) =
                    self.read_call(Method::GET, &format!("/pipelines/{id}/variables"))?
                else {
                    continue;
                };
                let vars = send(&self.env, &call, &[], attempts)
                    .await?
                    .json("gitlab pipeline variables")?;
                let marked = vars.as_array().is_some_and(|vs| {
                    vs.iter().any(|v| {
                        v.get("key").and_then(|k| k.as_str()) == Some(MARKER_VARIABLE)
                            && v.get("value").and_then(|k| k.as_str()) == Some(key.as_str())
                    })
                });
                if marked {
                    return Ok(Some(Self::started(&p, Some("found after a restart".into()))));
                }
            }
            Ok(None)
        })
    }

    fn poll<'a>(
        &'a self,
        handle: &'a JobHandle,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Observed> {
        Box::pin(async move {
            let id = handle.remote_id.clone().unwrap_or_default();
            let Some(call) = self.read_call(Method::GET, &format!("/pipelines/{id}"))? else {
                return Ok(Observed {
                    state: JobState::Started,
                    detail: Some("triggered; no gitlab.read_secret to follow it".into()),
                    output: None,
                });
            };
            let v = send(&self.env, &call, &[], attempts).await?.json("gitlab pipeline")?;
            let status = v.get("status").and_then(|s| s.as_str()).unwrap_or("created");
            Ok(Observed {
                state: pipeline_state(status),
                detail: Some(status.to_owned()),
                output: None,
            })
        })
    }

    fn cancel<'a>(&'a self, handle: &'a JobHandle) -> ActFuture<'a, ()> {
        Box::pin(async move {
            if let Some(id) = &handle.remote_id {
                if let Some(call) =
                    self.read_call(Method::POST, &format!("/pipelines/{id}/cancel"))?
                {
                    send(&self.env, &call, &[], &mut Vec::new()).await?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_statuses() {
        assert_eq!(pipeline_state("success"), JobState::Succeeded);
        assert_eq!(pipeline_state("running"), JobState::Running);
        assert_eq!(pipeline_state("pending"), JobState::Started);
        assert_eq!(pipeline_state("canceled"), JobState::Failed);
    }
}
