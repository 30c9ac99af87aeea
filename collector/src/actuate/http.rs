//! One description of an HTTP request, used both to send it and to show it: the dry-run log
//! and the outcome record print exactly what goes on the wire, with secret headers redacted.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

use super::config::ActuateEnv;
use super::secrets::Secret;
use super::types::{ActuateError, AttemptRecord, PlannedRequest};

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    /// `application/json`.
    Json(serde_json::Value),
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// Bytes with a content type (already signed bodies).
    Raw {
        /// `Content-Type`.
        content_type: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl Body {
    /// The body as bytes and its content type.
    pub fn encode(&self) -> (String, Vec<u8>) {
        match self {
            Body::Json(v) => ("application/json".into(), serde_json::to_vec(v).unwrap_or_default()),
            Body::Form(pairs) => (
                "application/x-www-form-urlencoded".into(),
                serde_urlencoded_pairs(pairs).into_bytes(),
            ),
            Body::Raw { content_type, bytes } => (content_type.clone(), bytes.clone()),
        }
    }
}

/// `k=v&k2=v2`, percent-encoded as forms are.
pub fn serde_urlencoded_pairs(pairs: &[(String, String)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// An HTTP request to make.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// Method.
    pub method: Method,
    /// Full URL.
    pub url: String,
    /// Ordinary headers.
    pub headers: Vec<(String, String)>,
    /// Headers carrying secrets: sent, never shown.
    pub secret_headers: Vec<(String, Secret)>,
    /// Body.
    pub body: Option<Body>,
}

impl HttpCall {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            secret_headers: Vec::new(),
            body: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Add a header whose value is secret.
    pub fn secret_header(mut self, name: &str, value: Secret) -> Self {
        self.secret_headers.push((name.to_owned(), value));
        self
    }

    /// Set a body.
    pub fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }

    /// `METHOD URL`.
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.url)
    }

    /// The request as it would be sent, secrets redacted.
    pub fn planned(&self) -> PlannedRequest {
        let mut headers = BTreeMap::new();
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        for (k, _) in &self.secret_headers {
            headers.insert(k.clone(), "<redacted>".into());
        }
        let body = self.body.as_ref().map(|b| {
            let (ct, bytes) = b.encode();
            headers.entry("content-type".into()).or_insert(ct);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        PlannedRequest { method: self.method.to_string(), url: self.url.clone(), headers, body }
    }
}

/// An HTTP answer that was accepted.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// Status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Response headers (lower-case names).
    pub headers: BTreeMap<String, String>,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json(&self, what: &str) -> Result<serde_json::Value, ActuateError> {
        serde_json::from_str(&self.body).map_err(|e| ActuateError::Protocol {
            what: what.to_owned(),
            reason: format!("body is not JSON: {e}"),
        })
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Send once. 2xx and the statuses in `accept` are answers; other statuses are
/// [`ActuateError::Http`]; no answer within `timeout` is [`ActuateError::Timeout`].
pub async fn send_once(
    client: &reqwest::Client,
    call: &HttpCall,
    accept: &[u16],
    timeout: Duration,
) -> Result<HttpAnswer, ActuateError> {
    let mut req = client.request(call.method.clone(), &call.url).timeout(timeout);
    for (k, v) in &call.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    for (k, v) in &call.secret_headers {
        req = req.header(k.as_str(), v.expose());
    }
    if let Some(body) = &call.body {
        let (ct, bytes) = body.encode();
        if !call.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", ct);
        }
        req = req.body(bytes);
    }
    let method = call.method.to_string();
    let fail = |e: reqwest::Error| {
        if e.is_timeout() {
            ActuateError::Timeout { what: call.label(), after: timeout }
        } else {
            ActuateError::Transport {
                method: method.clone(),
                url: call.url.clone(),
                reason: error_chain(&e),
            }
        }
    };
    let resp = req.send().await.map_err(fail)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect();
    let body = resp.text().await.map_err(fail)?;
    if (200..300).contains(&status) || accept.contains(&status) {
        Ok(HttpAnswer { status, body, headers })
    } else {
        Err(ActuateError::Http { method, url: call.url.clone(), status, body: truncate(body, 512) })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Send with the environment's retry policy, recording every try in `attempts` (with the
/// status of the accepted answer on the last record).
pub async fn send(
    env: &ActuateEnv,
    call: &HttpCall,
    accept: &[u16],
    attempts: &mut Vec<AttemptRecord>,
) -> Result<HttpAnswer, ActuateError> {
    let label = call.label();
    let answer = env
        .retry
        .run(&label, attempts, || send_once(&env.http, call, accept, env.request_timeout))
        .await?;
    if let Some(last) = attempts.last_mut() {
        last.status = Some(answer.status);
    }
    Ok(answer)
}

/// Log a request that dry-run does not send.
pub fn log_dry_run(actuator: &str, planned: &PlannedRequest) {
    tracing::info!(
        actuator,
        method = %planned.method,
        url = %planned.url,
        headers = ?planned.headers,
        body = planned.body.as_deref().unwrap_or(""),
        "Dry run: would send this request; sent nothing."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_request_redacts_secret_headers() {
        let call = HttpCall::new(Method::POST, "http://h/x")
            .header("accept", "application/json")
            .secret_header("authorization", Secret::new("Bearer s3cret"))
            .body(Body::Json(serde_json::json!({"a": 1})));
        let p = call.planned();
        assert_eq!(p.headers["authorization"], "<redacted>");
        assert_eq!(p.body.as_deref(), Some(r#"{"a":1}"#));
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
