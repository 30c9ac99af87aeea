//! Webhooks: an HTTP POST of the decision as JSON. With a secret named, the body is signed
//! with HMAC-SHA256 and the signature sent as `X-Stoker-Signature: sha256=<hex>` (the GitHub
//! convention, so existing verifiers work). Every delivery carries `Idempotency-Key`; a
//! receiver that deduplicates on it makes retries after a crash safe.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use reqwest::Method;
use sha2::Sha256;

use super::ActFuture;
use super::config::ActuateEnv;
use super::http::{Body, HttpCall, send};
use super::journaled::{Applied, JobBackend, Observed, ResizeBackend, Started};
use super::secrets::Secret;
use super::spec::WebhookSpec;
use super::types::{
    ActuateError, AttemptRecord, IdempotencyKey, JobContext, JobHandle, JobState, PlannedRequest,
    ScaleState,
};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-stoker-signature";

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn sign(key: &Secret, body: &[u8]) -> Result<String, ActuateError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .map_err(|e| ActuateError::Config(format!("webhook HMAC key: {e}")))?;
    mac.update(body);
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// Whether `signature` is the HMAC of `body` under `key` (receivers, tests).
pub fn verify(key: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else { return false };
    let Ok(raw) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(body);
    mac.verify_slice(&raw).is_ok()
}

struct Hook {
    spec: WebhookSpec,
    env: ActuateEnv,
}

impl Hook {
    fn new(spec: WebhookSpec, env: &ActuateEnv) -> Result<Self, ActuateError> {
        if let Some(name) = &spec.secret {
            if !env.secrets.contains(name) {
                return Err(ActuateError::Config(format!(
                    "webhook.secret names `{name}`, which is not in [secrets]"
                )));
            }
        }
        Ok(Self { spec, env: env.clone() })
    }

    /// The call; `with_secret` false renders it for the dry-run log without reading the key.
    fn call(
        &self,
        payload: &serde_json::Value,
        key: &IdempotencyKey,
        with_secret: bool,
    ) -> Result<HttpCall, ActuateError> {
        let bytes = serde_json::to_vec(payload).map_err(|e| ActuateError::Config(e.to_string()))?;
        let mut call = HttpCall::new(Method::POST, &self.spec.url)
            .header("content-type", "application/json")
            .header("idempotency-key", key.as_str());
        for (k, v) in &self.spec.headers {
            call = call.header(k, v.clone());
        }
        if let Some(name) = &self.spec.secret {
            let sig = if with_secret {
                Secret::new(sign(&self.env.secrets.get(name)?, &bytes)?)
            } else {
                Secret::new(String::new())
            };
            call = call.secret_header(SIGNATURE_HEADER, sig);
        }
        Ok(call.body(Body::Raw { content_type: "application/json".into(), bytes }))
    }

    async fn deliver(
        &self,
        payload: &serde_json::Value,
        key: &IdempotencyKey,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<u16, ActuateError> {
        let env = match self.spec.timeout {
            Some(t) => self.env.clone().with_request_timeout(t.get()),
            None => self.env.clone(),
        };
        let call = self.call(payload, key, true)?;
        Ok(send(&env, &call, &[], attempts).await?.status)
    }
}

/// `actuator: webhook` for a target: POSTs `{"kind":"resize","target","desired","previous","key"}`.
pub struct WebhookScaler {
    hook: Hook,
    name: String,
}

impl WebhookScaler {
    /// A webhook resizer for target `name`.
    pub fn new(spec: WebhookSpec, name: &str, env: &ActuateEnv) -> Result<Self, ActuateError> {
        Ok(Self { hook: Hook::new(spec, env)?, name: name.to_owned() })
    }

    fn payload(&self, size: u32, previous: Option<u32>, key: &IdempotencyKey) -> serde_json::Value {
        serde_json::json!({
            "kind": "resize",
            "target": self.name,
            "desired": size,
            "previous": previous,
            "key": key.as_str(),
        })
    }
}

impl ResizeBackend for WebhookScaler {
    fn actuator(&self) -> &'static str {
        "webhook"
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn read<'a>(
        &'a self,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>> {
        Box::pin(async { Ok(None) })
    }

    fn plan(&self, size: u32, key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.hook.call(&self.payload(size, None, key), key, false)?.planned()])
    }

    fn apply<'a>(
        &'a self,
        size: u32,
        state: Option<&'a ScaleState>,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied> {
        Box::pin(async move {
            let payload = self.payload(size, state.map(|s| s.replicas), key);
            self.hook.deliver(&payload, key, attempts).await?;
            Ok(Applied::default())
        })
    }
}

/// `actuator: webhook` for a job: POSTs `{"kind":"job","policy","rule","key","context":{..}}`;
/// a 2xx answer means the receiver took the job over, recorded as succeeded.
pub struct WebhookJob {
    hook: Hook,
}

impl WebhookJob {
    /// A webhook job runner.
    pub fn new(spec: WebhookSpec, env: &ActuateEnv) -> Result<Self, ActuateError> {
        Ok(Self { hook: Hook::new(spec, env)? })
    }

    fn payload(ctx: &JobContext, key: &IdempotencyKey) -> serde_json::Value {
        let context: BTreeMap<_, _> = ctx.vars();
        serde_json::json!({
            "kind": "job",
            "policy": ctx.policy,
            "rule": ctx.rule,
            "key": key.as_str(),
            "context": context,
        })
    }
}

impl JobBackend for WebhookJob {
    fn actuator(&self) -> &'static str {
        "webhook"
    }

    fn describe(&self) -> String {
        self.hook.spec.url.clone()
    }

    fn plan(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.hook.call(&Self::payload(ctx, key), key, false)?.planned()])
    }

    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Started> {
        Box::pin(async move {
            let status = self.hook.deliver(&Self::payload(ctx, key), key, attempts).await?;
            Ok(Started {
                remote_id: None,
                url: None,
                detail: Some(format!("delivered: HTTP {status}")),
            })
        })
    }

    fn recover<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        _sent_ns: u64,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<Started>> {
        // Delivering again with the same Idempotency-Key is the webhook contract's recovery.
        Box::pin(async move {
            let status = self.hook.deliver(&Self::payload(ctx, key), key, attempts).await?;
            Ok(Some(Started {
                remote_id: None,
                url: None,
                detail: Some(format!("redelivered: HTTP {status}")),
            }))
        })
    }

    fn poll<'a>(
        &'a self,
        _handle: &'a JobHandle,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Observed> {
        Box::pin(async {
            Ok(Observed {
                state: JobState::Succeeded,
                detail: Some("accepted by the webhook".into()),
                output: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = sign(&Secret::new("Jefe"), b"what do ya want for nothing?").expect("sign");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"tampered", &sig));
    }
}
