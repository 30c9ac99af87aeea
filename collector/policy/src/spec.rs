//! The actuator sections of a policy file, exactly as written in YAML.
//!
//! A resize target names its actuator and carries the matching section:
//!
//! ```yaml
//! target:
//!   name: resnet
//!   actuator: kubernetes
//!   kubernetes: {namespace: infer, deployment: resnet}
//! ```
//!
//! and a retraining rule's `job` likewise (`actuator: github-workflow` with a `github:` section).
//! The policy format embeds these types; checking that the section matches the actuator is
//! [`ResizeSpec::validate`] / [`JobSpec::validate`], so both `policy check` and the engine say
//! the same thing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// Which actuator resizes a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeActuator {
    /// A Deployment or StatefulSet through the scale subresource.
    Kubernetes,
    /// An EC2 Auto Scaling group.
    AwsAsg,
    /// A GCP managed instance group, zonal or regional.
    GcpMig,
    /// N copies of a command on the collector's machine.
    Local,
    /// A command run with the desired size.
    Command,
    /// An HTTP POST with the desired size.
    Webhook,
}

/// Which actuator starts a model-refresh job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobActuator {
    /// GitHub Actions `workflow_dispatch`.
    GithubWorkflow,
    /// GitLab pipeline trigger.
    GitlabPipeline,
    /// A Kubernetes `batch/v1` Job.
    KubernetesJob,
    /// An HTTP POST with the decision, HMAC-signed.
    Webhook,
    /// A local command.
    Command,
}

/// Declares a struct with its own fields followed by the resize actuator and its sections,
/// and `resize_spec()` to take those out as a [`ResizeSpec`]. The sections are listed only
/// here: [`ResizeSpec`] and the policy format's `target` are both declared through it, so a
/// new resize actuator is added in one place (and its check in [`ResizeSpec::validate`]).
macro_rules! with_resize_sections {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Which actuator resizes the target.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub actuator: Option<$crate::spec::ResizeActuator>,
            /// Section for `actuator: kubernetes`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub kubernetes: Option<$crate::spec::KubernetesScale>,
            /// Section for `actuator: aws-asg`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub aws: Option<$crate::spec::AwsAsg>,
            /// Section for `actuator: gcp-mig`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub gcp: Option<$crate::spec::GcpMig>,
            /// Section for `actuator: local`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub local: Option<$crate::spec::LocalReplicas>,
            /// Section for `actuator: command`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub command: Option<$crate::spec::CommandSpec>,
            /// Section for `actuator: webhook`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub webhook: Option<$crate::spec::WebhookSpec>,
        }

        impl $name {
            /// The actuator and its section, as the actuators take them.
            pub fn resize_spec(&self) -> $crate::spec::ResizeSpec {
                $crate::spec::ResizeSpec {
                    actuator: self.actuator,
                    kubernetes: self.kubernetes.clone(),
                    aws: self.aws.clone(),
                    gcp: self.gcp.clone(),
                    local: self.local.clone(),
                    command: self.command.clone(),
                    webhook: self.webhook.clone(),
                }
            }
        }
    };
}
pub(crate) use with_resize_sections;

with_resize_sections! {
    /// How a target is resized: the actuator and its section. Exactly the section named by
    /// `actuator` must be present.
    #[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub struct ResizeSpec {}
}

/// A Deployment or StatefulSet; exactly one of `deployment` and `statefulset`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesScale {
    /// Namespace of the workload.
    pub namespace: String,
    /// Deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// StatefulSet name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
    /// Name of a cluster in the collector's `[actuators.kubernetes]` config; default: in-cluster
    /// service account, else the default kubeconfig context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// An EC2 Auto Scaling group.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAsg {
    /// AutoScalingGroupName.
    pub group: String,
    /// Region; default from the environment (`AWS_REGION`) or the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override (for example a local test server); default: the regional endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Credentials profile; default: environment variables, then the `default` profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A GCP managed instance group: exactly one of `zone` (zonal) and `region` (regional).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcpMig {
    /// Project id.
    pub project: String,
    /// Zone of a zonal group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Region of a regional group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Instance group manager name.
    pub group: String,
    /// API endpoint override; default `https://compute.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Copies of a command on this machine, each given its own port.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalReplicas {
    /// Program and arguments; `{port}` and `{replica}` are replaced per copy.
    pub argv: Vec<String>,
    /// First port of the range handed out to replicas.
    pub port_from: u16,
    /// Last port of the range (inclusive).
    pub port_to: u16,
    /// Extra environment; `{port}` and `{replica}` are replaced per copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Time a replica is given to stop after SIGTERM before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace: Option<HumanDuration>,
    /// Readiness probe: a replica counts as ready while it answers. Without one, a replica
    /// counts as ready while its process runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyProbe>,
}

/// How a local replica says it serves.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyProbe {
    /// A URL whose GET answers 2xx once the replica serves (`http://127.0.0.1:{port}/healthz`);
    /// `{port}` and `{replica}` are replaced per copy.
    pub http: String,
    /// How long one probe may take; default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// A command run once per action, with the decision in its environment.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Program and arguments; `{{ name }}` placeholders are filled from the decision context.
    pub argv: Vec<String>,
    /// Extra environment; values may use the same placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the command after this long; default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// An HTTP POST of the decision as JSON, signed with HMAC-SHA256 when a secret is named.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where to POST.
    pub url: String,
    /// Name of a secret in the collector's configuration used as the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Extra request headers (no credentials: those come from secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// How a model-refresh job starts: the actuator and its section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Which actuator starts the job.
    pub actuator: Option<JobActuator>,
    /// Section for `actuator: github-workflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubWorkflow>,
    /// Section for `actuator: gitlab-pipeline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitlabPipeline>,
    /// Section for `actuator: kubernetes-job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesJob>,
    /// Section for `actuator: webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Section for `actuator: command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// A job running longer than this is marked timed out; default 6h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// GitHub Actions `workflow_dispatch`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubWorkflow {
    /// `owner/name`.
    pub repo: String,
    /// Workflow file name or id.
    pub workflow: String,
    /// Git ref to run on.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Workflow inputs; values may use `{{ name }}` placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Name of the token secret in the collector's configuration; default `github`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// API base URL; default `https://api.github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// GitLab pipeline trigger.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabPipeline {
    /// Project id or URL-encoded path.
    pub project: String,
    /// Git ref to run on.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Pipeline variables; values may use `{{ name }}` placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Name of the trigger-token secret; default `gitlab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Name of a secret holding an API token (`read_api`) used to follow the pipeline and to
    /// find it again after a restart; without it the job's state after the trigger is unknown
    /// and the job ends at its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_secret: Option<String>,
    /// API base URL; default `https://gitlab.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// A Kubernetes `batch/v1` Job created from a template.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesJob {
    /// Namespace to create the Job in.
    pub namespace: String,
    /// Prefix of the Job's deterministic name (the idempotency key is appended).
    pub name_prefix: String,
    /// The Job's `spec` (as in a manifest); string values may use `{{ name }}` placeholders.
    pub spec: serde_json::Value,
    /// Cluster name in the collector's configuration; default in-cluster, else kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A problem with an actuator section, with the field path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// Path relative to the section's parent, like `kubernetes.deployment`.
    pub path: String,
    /// What is wrong, as a user reads it.
    pub message: String,
}

fn problem(path: &str, message: impl Into<String>) -> SpecProblem {
    SpecProblem { path: path.to_owned(), message: message.into() }
}

fn one_section(
    sections: &[(&str, bool)],
    wanted: &str,
    actuator_name: &str,
    out: &mut Vec<SpecProblem>,
) {
    for (name, present) in sections {
        if *name == wanted && !present {
            out.push(problem(name, format!("actuator `{actuator_name}` needs a `{name}` section")));
        }
        if *name != wanted && *present {
            out.push(problem(
                name,
                format!("section `{name}` does not belong to actuator `{actuator_name}`"),
            ));
        }
    }
}

fn require_non_empty(path: &str, value: &str, out: &mut Vec<SpecProblem>) {
    if value.trim().is_empty() {
        out.push(problem(path, "must not be empty"));
    }
}

impl ResizeSpec {
    /// Every problem with this section at once; empty when it is usable.
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let Some(actuator) = self.actuator else {
            out.push(problem(
                "actuator",
                "missing: one of kubernetes, aws-asg, gcp-mig, local, command, webhook",
            ));
            return out;
        };
        let (wanted, name) = match actuator {
            ResizeActuator::Kubernetes => ("kubernetes", "kubernetes"),
            ResizeActuator::AwsAsg => ("aws", "aws-asg"),
            ResizeActuator::GcpMig => ("gcp", "gcp-mig"),
            ResizeActuator::Local => ("local", "local"),
            ResizeActuator::Command => ("command", "command"),
            ResizeActuator::Webhook => ("webhook", "webhook"),
        };
        let sections = [
            ("kubernetes", self.kubernetes.is_some()),
            ("aws", self.aws.is_some()),
            ("gcp", self.gcp.is_some()),
            ("local", self.local.is_some()),
            ("command", self.command.is_some()),
            ("webhook", self.webhook.is_some()),
        ];
        one_section(&sections, wanted, name, &mut out);
        if let Some(k) = &self.kubernetes {
            require_non_empty("kubernetes.namespace", &k.namespace, &mut out);
            match (&k.deployment, &k.statefulset) {
                (Some(_), Some(_)) => out.push(problem(
                    "kubernetes",
                    "give either `deployment` or `statefulset`, not both",
                )),
                (None, None) => {
                    out.push(problem("kubernetes", "needs `deployment` or `statefulset`"))
                }
                _ => {}
            }
        }
        if let Some(a) = &self.aws {
            require_non_empty("aws.group", &a.group, &mut out);
        }
        if let Some(g) = &self.gcp {
            require_non_empty("gcp.project", &g.project, &mut out);
            require_non_empty("gcp.group", &g.group, &mut out);
            match (&g.zone, &g.region) {
                (Some(_), Some(_)) => {
                    out.push(problem("gcp", "give either `zone` or `region`, not both"))
                }
                (None, None) => {
                    out.push(problem("gcp", "needs `zone` (zonal) or `region` (regional)"))
                }
                _ => {}
            }
        }
        if let Some(l) = &self.local {
            if l.argv.is_empty() {
                out.push(problem("local.argv", "must name a program"));
            }
            if l.port_from > l.port_to {
                out.push(problem(
                    "local.port_from",
                    format!("port range {}-{} is empty", l.port_from, l.port_to),
                ));
            }
        }
        if let Some(c) = &self.command {
            if c.argv.is_empty() {
                out.push(problem("command.argv", "must name a program"));
            }
        }
        if let Some(w) = &self.webhook {
            validate_url("webhook.url", &w.url, &mut out);
        }
        out
    }
}

impl JobSpec {
    /// Every problem with this section at once; empty when it is usable.
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let Some(actuator) = self.actuator else {
            out.push(problem(
                "actuator",
                "missing: one of github-workflow, gitlab-pipeline, kubernetes-job, webhook, command",
            ));
            return out;
        };
        let (wanted, name) = match actuator {
            JobActuator::GithubWorkflow => ("github", "github-workflow"),
            JobActuator::GitlabPipeline => ("gitlab", "gitlab-pipeline"),
            JobActuator::KubernetesJob => ("kubernetes", "kubernetes-job"),
            JobActuator::Webhook => ("webhook", "webhook"),
            JobActuator::Command => ("command", "command"),
        };
        let sections = [
            ("github", self.github.is_some()),
            ("gitlab", self.gitlab.is_some()),
            ("kubernetes", self.kubernetes.is_some()),
            ("webhook", self.webhook.is_some()),
            ("command", self.command.is_some()),
        ];
        one_section(&sections, wanted, name, &mut out);
        if let Some(g) = &self.github {
            if g.repo.split('/').filter(|p| !p.is_empty()).count() != 2 {
                out.push(problem("github.repo", format!("{:?} is not `owner/name`", g.repo)));
            }
            require_non_empty("github.workflow", &g.workflow, &mut out);
            require_non_empty("github.ref", &g.git_ref, &mut out);
        }
        if let Some(g) = &self.gitlab {
            require_non_empty("gitlab.project", &g.project, &mut out);
            require_non_empty("gitlab.ref", &g.git_ref, &mut out);
        }
        if let Some(k) = &self.kubernetes {
            require_non_empty("kubernetes.namespace", &k.namespace, &mut out);
            require_non_empty("kubernetes.name_prefix", &k.name_prefix, &mut out);
            if !k.spec.is_object() {
                out.push(problem("kubernetes.spec", "must be a Job spec (a mapping)"));
            }
        }
        if let Some(w) = &self.webhook {
            validate_url("webhook.url", &w.url, &mut out);
        }
        if let Some(c) = &self.command {
            if c.argv.is_empty() {
                out.push(problem("command.argv", "must name a program"));
            }
        }
        out
    }
}

fn validate_url(path: &str, url: &str, out: &mut Vec<SpecProblem>) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        out.push(problem(path, format!("{url:?} is not an http:// or https:// URL")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(json: serde_json::Value) -> ResizeSpec {
        serde_json::from_value(json).expect("parses")
    }

    #[test]
    fn kubernetes_section_must_match_the_actuator() {
        let ok = resize(serde_json::json!({
            "actuator": "kubernetes",
            "kubernetes": {"namespace": "infer", "deployment": "resnet"}
        }));
        assert_eq!(ok.validate(), vec![]);

        let wrong = resize(serde_json::json!({
            "actuator": "aws-asg",
            "kubernetes": {"namespace": "infer", "deployment": "resnet"}
        }));
        let paths: Vec<_> = wrong.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, vec!["kubernetes", "aws"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<ResizeSpec>(serde_json::json!({
            "actuator": "kubernetes",
            "kubernetes": {"namespace": "infer", "deploymnet": "resnet"}
        }))
        .expect_err("typo");
        assert!(err.to_string().contains("deploymnet"), "{err}");
    }

    #[test]
    fn github_job_checks_repo_shape() {
        let job: JobSpec = serde_json::from_value(serde_json::json!({
            "actuator": "github-workflow",
            "github": {"repo": "acme", "workflow": "retrain.yml", "ref": "main"}
        }))
        .expect("parses");
        let problems = job.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "github.repo");
    }
}
