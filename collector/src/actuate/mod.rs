//! Actuators: how a decision reaches the world. Resizers change the size of a target
//! (Kubernetes scale subresource, AWS Auto Scaling group, GCP managed instance group, local
//! replicas, a command or a webhook); job runners start model-refresh jobs (GitHub Actions,
//! GitLab pipelines, Kubernetes Jobs, webhooks, commands).
//!
//! [`spec`] holds the policy-facing configuration of each actuator: the sections a policy's
//! `target` and `job` carry. Secrets are never part of it; a spec names a secret that the
//! collector's configuration provides from the environment or a file.

pub mod spec;
