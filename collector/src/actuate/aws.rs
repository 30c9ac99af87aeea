//! EC2 Auto Scaling groups through the Auto Scaling query API (`Version=2011-01-01`),
//! SigV4-signed with the `aws-sigv4` crate (service `autoscaling`).
//!
//! Wire contract: `POST {endpoint}/` with a form body,
//! - `Action=DescribeAutoScalingGroups&AutoScalingGroupNames.member.1={group}`: XML with
//!   `DesiredCapacity`, `MinSize`, `MaxSize` (the group's own limits also bound a resize);
//! - `Action=SetDesiredCapacity&AutoScalingGroupName={group}&DesiredCapacity=N&HonorCooldown=false`,
//!   then Describe again to read back.
//!
//! Credentials: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the
//! profile (`profile:` in the policy, `AWS_PROFILE`, `default`) in `AWS_SHARED_CREDENTIALS_FILE`
//! or `~/.aws/credentials`. Region: the policy's `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`.
//! Each try is signed afresh (its own `x-amz-date`).

use std::path::PathBuf;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use quick_xml::events::Event;
use reqwest::Method;

use super::ActFuture;
use super::config::ActuateEnv;
use super::http::{Body, HttpCall, send_once, serde_urlencoded_pairs};
use super::journaled::{Applied, ResizeBackend};
use super::secrets::Secret;
use super::spec::AwsAsg;
use super::types::{ActuateError, AttemptRecord, IdempotencyKey, PlannedRequest, ScaleState};

const API_VERSION: &str = "2011-01-01";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// AWS credentials; Debug never shows the secret parts.
#[derive(Clone, Debug)]
pub struct AwsCredentials {
    /// Access key id (not secret).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token.
    pub session_token: Option<Secret>,
}

impl AwsCredentials {
    /// From the environment, else the profile file.
    pub fn load(profile: Option<&str>) -> Result<Self, ActuateError> {
        if let (Ok(id), Ok(secret)) =
            (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY"))
        {
            if !id.is_empty() && !secret.is_empty() {
                return Ok(Self {
                    access_key_id: id,
                    secret_access_key: Secret::new(secret),
                    session_token: std::env::var("AWS_SESSION_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                        .map(Secret::new),
                });
            }
        }
        let profile = profile
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".into());
        let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
            .ok_or_else(|| {
                ActuateError::Config("aws: no credentials in the environment and no HOME".into())
            })?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ActuateError::Config(format!(
                "aws: no credentials in the environment, and {}: {e}",
                path.display()
            ))
        })?;
        Self::from_profile_file(&text, &profile).ok_or_else(|| {
            ActuateError::Config(format!(
                "aws: profile `{profile}` in {} has no keys",
                path.display()
            ))
        })
    }

    /// The keys of `[profile]` in an INI credentials file.
    pub fn from_profile_file(text: &str, profile: &str) -> Option<Self> {
        let mut in_profile = false;
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') && line.ends_with(']') {
                let name = line[1..line.len() - 1].trim();
                in_profile = name == profile
                    || name.strip_prefix("profile ").map(str::trim) == Some(profile);
                continue;
            }
            if !in_profile || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().to_owned();
                match k.trim() {
                    "aws_access_key_id" => id = Some(v),
                    "aws_secret_access_key" => secret = Some(v),
                    "aws_session_token" => token = Some(v),
                    _ => {}
                }
            }
        }
        Some(Self {
            access_key_id: id?,
            secret_access_key: Secret::new(secret?),
            session_token: token.map(Secret::new),
        })
    }
}

/// Values of an XML document by element path (`A/B/C`), in document order.
pub fn xml_values(xml: &str) -> Result<Vec<(String, String)>, ActuateError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) => {
                let text = t.decode().map_err(|e| ActuateError::Protocol {
                    what: "aws xml".into(),
                    reason: e.to_string(),
                })?;
                if !text.trim().is_empty() {
                    out.push((path.join("/"), text.trim().to_owned()));
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(ActuateError::Protocol {
                    what: "aws xml".into(),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn first<'a>(values: &'a [(String, String)], suffix: &str) -> Option<&'a str> {
    values.iter().find(|(p, _)| p.ends_with(suffix)).map(|(_, v)| v.as_str())
}

/// `actuator: aws-asg`.
pub struct AsgScaler {
    spec: AwsAsg,
    region: String,
    endpoint: String,
    env: ActuateEnv,
    credentials: Option<AwsCredentials>,
}

impl AsgScaler {
    /// Use these credentials instead of the environment or profile (tests, callers that
    /// obtain credentials themselves).
    pub fn with_credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// From a policy's `aws:` section. Credentials are read per request (they rotate).
    pub fn new(spec: &AwsAsg, env: &ActuateEnv) -> Result<Self, ActuateError> {
        let region = spec
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .ok_or_else(|| ActuateError::Config("aws: no `region` and no AWS_REGION".into()))?;
        let endpoint = spec
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://autoscaling.{region}.amazonaws.com"));
        let endpoint = format!("{}/", endpoint.trim_end_matches('/'));
        Ok(Self { spec: spec.clone(), region, endpoint, env: env.clone(), credentials: None })
    }

    fn form(&self, action: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut form = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), API_VERSION.to_string()),
        ];
        form.extend(extra.iter().map(|(k, v)| ((*k).to_string(), v.clone())));
        form
    }

    /// The signed request for `form`; with `creds` `None`, the unsigned shape (dry-run).
    pub fn signed_call(
        &self,
        form: &[(String, String)],
        creds: Option<&AwsCredentials>,
        at: SystemTime,
    ) -> Result<HttpCall, ActuateError> {
        let body = serde_urlencoded_pairs(form).into_bytes();
        let mut call = HttpCall::new(Method::POST, self.endpoint.clone())
            .header("content-type", CONTENT_TYPE)
            .body(Body::Raw { content_type: CONTENT_TYPE.into(), bytes: body.clone() });
        let Some(creds) = creds else {
            return Ok(call.secret_header("authorization", Secret::new("")));
        };
        let sign_err = |e: String| ActuateError::Config(format!("aws signing: {e}"));
        let identity = Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose().to_owned(),
            creds.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "stoker",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("autoscaling")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| sign_err(e.to_string()))?
            .into();
        let headers = [("content-type", CONTENT_TYPE)];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| sign_err(e.to_string()))?;
        let (instructions, _) =
            sign(signable, &params).map_err(|e| sign_err(e.to_string()))?.into_parts();
        for (name, value) in instructions.headers() {
            if name.eq_ignore_ascii_case("authorization")
                || name.eq_ignore_ascii_case("x-amz-security-token")
            {
                call = call.secret_header(name, Secret::new(value));
            } else {
                call = call.header(name, value);
            }
        }
        Ok(call)
    }

    async fn query(
        &self,
        form: Vec<(String, String)>,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Vec<(String, String)>, ActuateError> {
        let creds = match &self.credentials {
            Some(c) => c.clone(),
            None => AwsCredentials::load(self.spec.profile.as_deref())?,
        };
        let action = form.first().map(|(_, a)| a.clone()).unwrap_or_default();
        let label = format!("POST {} {action}", self.endpoint);
        let answer = self
            .env
            .retry
            .run(&label, attempts, || {
                let call = self.signed_call(&form, Some(&creds), self.env.wall_time());
                async move { send_once(&self.env.http, &call?, &[], self.env.request_timeout).await }
            })
            .await?;
        if let Some(last) = attempts.last_mut() {
            last.status = Some(answer.status);
        }
        xml_values(&answer.body)
    }

    async fn describe(
        &self,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<ScaleState, ActuateError> {
        let form = self.form(
            "DescribeAutoScalingGroups",
            &[("AutoScalingGroupNames.member.1", self.spec.group.clone())],
        );
        let values = self.query(form, attempts).await?;
        let num = |suffix: &str| first(&values, suffix).and_then(|v| v.parse::<u32>().ok());
        let desired = num("AutoScalingGroups/member/DesiredCapacity").ok_or_else(|| {
            ActuateError::Protocol {
                what: "DescribeAutoScalingGroups".into(),
                reason: format!("group `{}` not found", self.spec.group),
            }
        })?;
        let in_service = values
            .iter()
            .filter(|(p, v)| p.ends_with("Instances/member/LifecycleState") && v == "InService")
            .count();
        Ok(ScaleState {
            replicas: desired,
            ready: u32::try_from(in_service).ok(),
            remote_min: num("AutoScalingGroups/member/MinSize"),
            remote_max: num("AutoScalingGroups/member/MaxSize"),
            version: None,
        })
    }
}

impl ResizeBackend for AsgScaler {
    fn actuator(&self) -> &'static str {
        "aws-asg"
    }

    fn target(&self) -> String {
        format!("{}/{}", self.region, self.spec.group)
    }

    fn read<'a>(
        &'a self,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>> {
        Box::pin(async move { Ok(Some(self.describe(attempts).await?)) })
    }

    fn plan(&self, size: u32, _key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError> {
        let form = self.form(
            "SetDesiredCapacity",
            &[
                ("AutoScalingGroupName", self.spec.group.clone()),
                ("DesiredCapacity", size.to_string()),
                ("HonorCooldown", "false".into()),
            ],
        );
        Ok(vec![self.signed_call(&form, None, self.env.wall_time())?.planned()])
    }

    fn apply<'a>(
        &'a self,
        size: u32,
        _state: Option<&'a ScaleState>,
        _key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied> {
        Box::pin(async move {
            let form = self.form(
                "SetDesiredCapacity",
                &[
                    ("AutoScalingGroupName", self.spec.group.clone()),
                    ("DesiredCapacity", size.to_string()),
                    ("HonorCooldown", "false".into()),
                ],
            );
            let values = self.query(form, attempts).await?;
            let remote_id = first(&values, "ResponseMetadata/RequestId").map(str::to_owned);
            let after = self.describe(attempts).await?.replicas;
            let note = (after != size)
                .then(|| format!("DesiredCapacity read back as {after}, not {size}"));
            Ok(Applied { after: Some(after), remote_id, note })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_profiles_and_xml() {
        let ini = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n[profile other]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=E\n";
        let d = AwsCredentials::from_profile_file(ini, "default").expect("default");
        assert_eq!(d.access_key_id, "A");
        let o = AwsCredentials::from_profile_file(ini, "other").expect("other");
        assert_eq!(o.session_token.as_ref().map(|t| t.expose()), Some("E"));
        assert_eq!(format!("{:?}", o.secret_access_key), "Secret(<redacted>)");

        let xml = r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
          <DescribeAutoScalingGroupsResult><AutoScalingGroups><member>
            <AutoScalingGroupName>g</AutoScalingGroupName><MinSize>1</MinSize><MaxSize>8</MaxSize>
            <DesiredCapacity>3</DesiredCapacity>
          </member></AutoScalingGroups></DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>"#;
        let v = xml_values(xml).expect("xml");
        assert_eq!(first(&v, "AutoScalingGroups/member/DesiredCapacity"), Some("3"));
        assert_eq!(first(&v, "AutoScalingGroups/member/MaxSize"), Some("8"));
    }
}
