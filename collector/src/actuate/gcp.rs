//! GCP managed instance groups, zonal and regional, through the Compute Engine REST API.
//!
//! Wire contract (`Authorization: Bearer <access token>`):
//! - zonal: `{endpoint}/compute/v1/projects/{p}/zones/{z}/instanceGroupManagers/{g}`,
//!   regional: `{endpoint}/compute/v1/projects/{p}/regions/{r}/regionInstanceGroupManagers/{g}`;
//! - `GET` that path reads `targetSize`;
//! - `POST {path}/resize?size=N&requestId=<uuid from the idempotency key>` answers an
//!   Operation; the `requestId` makes Compute Engine ignore a duplicate of the same resize;
//!   then `GET` reads `targetSize` back.
//!
//! The token comes from a secret named by `[actuators.gcp] token_secret`, else from the
//! metadata server: `GET {metadata}/computeMetadata/v1/instance/service-accounts/default/token`
//! with `Metadata-Flavor: Google`, cached until shortly before it expires.

use std::time::Duration;

use reqwest::Method;

use super::ActFuture;
use super::config::ActuateEnv;
use super::http::{HttpCall, send};
use super::journaled::{Applied, ResizeBackend};
use super::secrets::Secret;
use super::spec::GcpMig;
use super::types::{ActuateError, AttemptRecord, IdempotencyKey, PlannedRequest, ScaleState};

/// `actuator: gcp-mig`.
pub struct MigScaler {
    spec: GcpMig,
    path: String,
    env: ActuateEnv,
    metadata: String,
    token: tokio::sync::Mutex<Option<(Secret, tokio::time::Instant)>>,
}

impl MigScaler {
    /// From a policy's `gcp:` section.
    pub fn new(spec: &GcpMig, env: &ActuateEnv) -> Result<Self, ActuateError> {
        let endpoint =
            spec.endpoint.clone().unwrap_or_else(|| "https://compute.googleapis.com".into());
        let endpoint = endpoint.trim_end_matches('/');
        let path = match (&spec.zone, &spec.region) {
            (Some(z), None) => format!(
                "{endpoint}/compute/v1/projects/{}/zones/{z}/instanceGroupManagers/{}",
                spec.project, spec.group
            ),
            (None, Some(r)) => format!(
                "{endpoint}/compute/v1/projects/{}/regions/{r}/regionInstanceGroupManagers/{}",
                spec.project, spec.group
            ),
            _ => {
                return Err(ActuateError::Config(
                    "gcp: give exactly one of `zone` and `region`".into(),
                ));
            }
        };
        if let Some(name) = &env.config.gcp.token_secret {
            if !env.secrets.contains(name) {
                return Err(ActuateError::Config(format!(
                    "actuators.gcp.token_secret: `{name}` is not in [secrets]"
                )));
            }
        }
        let metadata = env
            .config
            .gcp
            .metadata_url
            .clone()
            .unwrap_or_else(|| "http://metadata.google.internal".into())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            spec: spec.clone(),
            path,
            env: env.clone(),
            metadata,
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn token(&self, attempts: &mut Vec<AttemptRecord>) -> Result<Secret, ActuateError> {
        if let Some(name) = &self.env.config.gcp.token_secret {
            return self.env.secrets.get(name);
        }
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref() {
            if tokio::time::Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let call = HttpCall::new(
            Method::GET,
            format!("{}/computeMetadata/v1/instance/service-accounts/default/token", self.metadata),
        )
        .header("metadata-flavor", "Google");
        let v = send(&self.env, &call, &[], attempts).await?.json("gcp metadata token")?;
        let token = v.get("access_token").and_then(|t| t.as_str()).ok_or_else(|| {
            ActuateError::Protocol {
                what: "gcp metadata token".into(),
                reason: "no access_token".into(),
            }
        })?;
        let ttl = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(300);
        let secret = Secret::new(token);
        // Refresh a minute early so a token never expires mid-request.
        let until = tokio::time::Instant::now() + Duration::from_secs(ttl.saturating_sub(60));
        *cached = Some((secret.clone(), until));
        Ok(secret)
    }

    fn with_auth(call: HttpCall, token: &Secret) -> HttpCall {
        call.header("accept", "application/json")
            .secret_header("authorization", Secret::new(format!("Bearer {}", token.expose())))
    }

    /// A UUID-shaped `requestId` derived from the key: the same decision, the same request id.
    pub fn request_id(key: &IdempotencyKey) -> String {
        let h = key.short_hash(32);
        format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }

    fn resize_call(&self, size: u32, key: &IdempotencyKey, token: &Secret) -> HttpCall {
        let url = format!("{}/resize?size={size}&requestId={}", self.path, Self::request_id(key));
        Self::with_auth(HttpCall::new(Method::POST, url), token)
    }

    async fn read_size(
        &self,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<ScaleState, ActuateError> {
        let token = self.token(attempts).await?;
        let call = Self::with_auth(HttpCall::new(Method::GET, self.path.clone()), &token);
        let v = send(&self.env, &call, &[], attempts).await?.json("gcp instance group manager")?;
        let size = v
            .get("targetSize")
            .and_then(|t| t.as_u64())
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| ActuateError::Protocol {
                what: "gcp instance group manager".into(),
                reason: "no targetSize".into(),
            })?;
        let running = v
            .pointer("/currentActions/none")
            .and_then(|t| t.as_u64())
            .and_then(|t| u32::try_from(t).ok());
        Ok(ScaleState { replicas: size, ready: running, ..Default::default() })
    }
}

impl ResizeBackend for MigScaler {
    fn actuator(&self) -> &'static str {
        "gcp-mig"
    }

    fn target(&self) -> String {
        let place =
            self.spec.zone.as_ref().or(self.spec.region.as_ref()).cloned().unwrap_or_default();
        format!("{}/{}/{}", self.spec.project, place, self.spec.group)
    }

    fn read<'a>(
        &'a self,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>> {
        Box::pin(async move { Ok(Some(self.read_size(attempts).await?)) })
    }

    fn plan(&self, size: u32, key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.resize_call(size, key, &Secret::new("")).planned()])
    }

    fn apply<'a>(
        &'a self,
        size: u32,
        _state: Option<&'a ScaleState>,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied> {
        Box::pin(async move {
            let token = self.token(attempts).await?;
            let op = send(&self.env, &self.resize_call(size, key, &token), &[], attempts)
                .await?
                .json("gcp resize")?;
            let remote_id = op.get("name").and_then(|n| n.as_str()).map(str::to_owned);
            let after = self.read_size(attempts).await?.replicas;
            let note =
                (after != size).then(|| format!("targetSize read back as {after}, not {size}"));
            Ok(Applied { after: Some(after), remote_id, note })
        })
    }
}
