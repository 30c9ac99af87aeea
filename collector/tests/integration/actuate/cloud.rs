//! Cloud resizers: GCP managed instance groups against a Compute API and metadata-server
//! double, AWS Auto Scaling against moto's server mode (a real peer) plus the SigV4 request
//! shape, and the webhook resizer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use stoker_collector::actuate::aws::{AsgScaler, AwsCredentials};
use stoker_collector::actuate::gcp::MigScaler;
use stoker_collector::actuate::journaled::JournaledResizer;
use stoker_collector::actuate::spec::{AwsAsg, ResizeSpec};
use stoker_collector::actuate::{Bounds, IdempotencyKey, Resizer, Secret, build_resizer};

use super::support::{Mock, Reply, test_env};

const ZONAL: &str = "/compute/v1/projects/acme/zones/europe-west4-a/instanceGroupManagers/gpu-pool";
const REGIONAL: &str =
    "/compute/v1/projects/acme/regions/europe-west4/regionInstanceGroupManagers/gpu-pool";

fn gcp_double(
    path: &'static str,
    size: Arc<Mutex<u32>>,
) -> impl Fn(&super::support::Seen) -> Reply + Send + Sync {
    move |seen| {
        if seen.path == "/computeMetadata/v1/instance/service-accounts/default/token" {
            assert_eq!(seen.headers.get("metadata-flavor").map(String::as_str), Some("Google"));
            return Reply::json(
                200,
                serde_json::json!({"access_token": "meta-token", "expires_in": 3599, "token_type": "Bearer"}),
            );
        }
        if seen.headers.get("authorization").map(String::as_str) != Some("Bearer meta-token") {
            return Reply::json(401, serde_json::json!({"error": "unauthenticated"}));
        }
        match (seen.method.as_str(), seen.path.strip_prefix(path)) {
            ("GET", Some("")) => Reply::json(
                200,
                serde_json::json!({"name": "gpu-pool", "targetSize": *size.lock().expect("lock")}),
            ),
            ("POST", Some("/resize")) => {
                let q: std::collections::BTreeMap<String, String> =
                    url::form_urlencoded::parse(seen.query.as_bytes()).into_owned().collect();
                assert_eq!(q["requestId"].len(), 36, "a UUID-shaped requestId");
                *size.lock().expect("lock") = q["size"].parse().expect("size");
                Reply::json(
                    200,
                    serde_json::json!({"kind": "compute#operation", "name": "operation-123", "status": "RUNNING"}),
                )
            }
            _ => Reply::text(404, "{}"),
        }
    }
}

#[tokio::test]
async fn gcp_zonal_and_regional_resize_with_metadata_token() {
    for (path, place) in [
        (ZONAL, serde_json::json!({"zone": "europe-west4-a"})),
        (REGIONAL, serde_json::json!({"region": "europe-west4"})),
    ] {
        let size = Arc::new(Mutex::new(2));
        let mock = Mock::start(gcp_double(path, size.clone())).await;
        let mut t = test_env(None);
        t.env.config.gcp.metadata_url = Some(mock.url());
        let mut gcp =
            serde_json::json!({"project": "acme", "group": "gpu-pool", "endpoint": mock.url()});
        for (k, v) in place.as_object().expect("object") {
            gcp[k] = v.clone();
        }
        let spec: ResizeSpec =
            serde_json::from_value(serde_json::json!({"actuator": "gcp-mig", "gcp": gcp}))
                .expect("spec");
        let r = build_resizer(&spec, "gpu-pool", &t.env).expect("resizer");
        let out = r
            .resize(6, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 1), false)
            .await
            .expect("resize");
        assert_eq!(
            (out.before, out.after, out.remote_id.as_deref()),
            (Some(2), Some(6), Some("operation-123"))
        );
        assert_eq!(*size.lock().expect("lock"), 6);
        // One token fetch, cached for the following calls.
        assert_eq!(
            mock.count("GET", "/computeMetadata/v1/instance/service-accounts/default/token"),
            1
        );
    }
}

#[tokio::test]
async fn gcp_dry_run_sends_nothing() {
    let mock = Mock::start(|_| Reply::text(500, "must not be called")).await;
    let mut t = test_env(None);
    t.env.config.gcp.metadata_url = Some(mock.url());
    let spec: ResizeSpec = serde_json::from_value(serde_json::json!({
        "actuator": "gcp-mig", "gcp": {"project": "acme", "zone": "z", "group": "g", "endpoint": mock.url()}
    }))
    .expect("spec");
    let r = build_resizer(&spec, "g", &t.env).expect("resizer");
    let out = r
        .resize(3, Bounds { min: 1, max: 10 }, &IdempotencyKey::new("p", "scale", 2), true)
        .await
        .expect("dry");
    assert!(out.planned[0].url.contains("/resize?size=3&requestId="));
    assert_eq!(MigScaler::request_id(&IdempotencyKey::new("p", "scale", 2)).len(), 36);
    assert!(mock.requests().is_empty());
}

fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: Some(Secret::new("session-token")),
    }
}

#[tokio::test]
async fn sigv4_request_shape() {
    let t = test_env(None);
    let spec = AwsAsg {
        group: "g".into(),
        region: Some("eu-west-1".into()),
        endpoint: Some("http://127.0.0.1:9".into()),
        profile: None,
    };
    let asg = AsgScaler::new(&spec, &t.env).expect("asg");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
    let form = vec![
        ("Action".to_string(), "DescribeAutoScalingGroups".to_string()),
        ("Version".to_string(), "2011-01-01".to_string()),
    ];
    let call = asg.signed_call(&form, Some(&creds()), at).expect("signed");
    let header = |n: &str| {
        call.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone())
    };
    let secret = |n: &str| {
        call.secret_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.expose().to_owned())
    };
    assert_eq!(header("x-amz-date").as_deref(), Some("20231114T221320Z"));
    assert_eq!(secret("x-amz-security-token").as_deref(), Some("session-token"));
    let auth = secret("authorization").expect("authorization");
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").expect("algorithm");
    let parts: std::collections::BTreeMap<_, _> =
        rest.split(", ").map(|p| p.split_once('=').expect("k=v")).collect();
    assert_eq!(parts["Credential"], "AKIDEXAMPLE/20231114/eu-west-1/autoscaling/aws4_request");
    let signed: Vec<_> = parts["SignedHeaders"].split(';').collect();
    for h in ["content-type", "host", "x-amz-date", "x-amz-security-token"] {
        assert!(signed.contains(&h), "{h} not signed: {signed:?}");
    }
    assert_eq!(parts["Signature"].len(), 64);
    assert!(parts["Signature"].chars().all(|c| c.is_ascii_hexdigit()));
    // Deterministic: the same request at the same time signs the same.
    let again = asg.signed_call(&form, Some(&creds()), at).expect("signed");
    assert_eq!(
        again
            .secret_headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.expose().to_owned()),
        Some(auth)
    );
    // The dry-run rendering never shows it.
    assert_eq!(call.planned().headers["authorization"], "<redacted>");
}

/// moto's server mode as the AWS peer: create a group through its API, resize, read back.
#[tokio::test]
async fn aws_asg_against_moto() {
    let Some(moto) = Moto::start().await else { return };
    let endpoint = moto.url.clone();
    let http = stoker_collector::actuate::config::default_http_client().expect("client");
    let call = |pairs: Vec<(&str, &str)>| {
        let http = http.clone();
        let endpoint = endpoint.clone();
        let body: String =
            url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        async move {
            let resp = http
                .post(format!("{endpoint}/"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=00")
                .body(body)
                .send()
                .await
                .expect("moto answers");
            let status = resp.status();
            let text = resp.text().await.expect("body");
            assert!(status.is_success(), "{status}: {text}");
        }
    };
    call(vec![
        ("Action", "CreateLaunchConfiguration"),
        ("Version", "2011-01-01"),
        ("LaunchConfigurationName", "lc"),
        ("ImageId", "ami-12c6146b"),
        ("InstanceType", "t2.micro"),
    ])
    .await;
    call(vec![
        ("Action", "CreateAutoScalingGroup"),
        ("Version", "2011-01-01"),
        ("AutoScalingGroupName", "gpu-pool"),
        ("LaunchConfigurationName", "lc"),
        ("MinSize", "1"),
        ("MaxSize", "6"),
        ("DesiredCapacity", "2"),
        ("AvailabilityZones.member.1", "us-east-1a"),
    ])
    .await;

    let t = test_env(None);
    let spec = AwsAsg {
        group: "gpu-pool".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.url.clone()),
        profile: None,
    };
    let asg = AsgScaler::new(&spec, &t.env).expect("asg").with_credentials(creds());
    let r = JournaledResizer::new(asg, "gpu-pool", &t.env);
    assert_eq!(r.current().await.expect("describe").replicas, 2);

    let out = r
        .resize(4, Bounds { min: 1, max: 20 }, &IdempotencyKey::new("p", "scale", 1), false)
        .await
        .expect("resize");
    assert_eq!((out.before, out.after), (Some(2), Some(4)));
    assert!(out.remote_id.is_some(), "moto's RequestId");
    assert_eq!(r.current().await.expect("describe").replicas, 4);

    // The group's own MaxSize (6) bounds a resize even when the policy allows 20.
    let out = r
        .resize(15, Bounds { min: 1, max: 20 }, &IdempotencyKey::new("p", "scale", 2), false)
        .await
        .expect("resize");
    assert_eq!(out.applied, 6);
    assert_eq!(out.clamp.expect("clamped").reason, "remote max");
    assert_eq!(r.current().await.expect("describe").replicas, 6);
}

struct Moto {
    url: String,
    child: tokio::process::Child,
}

impl Moto {
    async fn start() -> Option<Self> {
        let require = std::env::var("STOKER_REQUIRE_PEERS").as_deref() == Ok("1");
        let port = super::support::closed_port().await;
        let spawned = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if require {
                    panic!(
                        "moto_server is required (STOKER_REQUIRE_PEERS=1) but could not start: {e}; run .ci/install-python-peers.sh"
                    );
                }
                eprintln!("skipping: moto not installed (run .ci/install-python-peers.sh)");
                return None;
            }
        };
        let url = format!("http://127.0.0.1:{port}");
        let http = stoker_collector::actuate::config::default_http_client().expect("client");
        for _ in 0..150 {
            if http.get(format!("{url}/moto-api/")).send().await.is_ok() {
                return Some(Self { url, child });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not come up on {url} within 15 s");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn webhook_resize_is_signed_and_remembers_the_size() {
    let mock = Mock::start(|_| Reply::json(200, serde_json::json!({"ok": true}))).await;
    let t = test_env(None);
    let spec: ResizeSpec = serde_json::from_value(serde_json::json!({
        "actuator": "webhook", "webhook": {"url": format!("{}/scale", mock.url()), "secret": "hook"}
    }))
    .expect("spec");
    let r = build_resizer(&spec, "edge", &t.env).expect("resizer");
    assert!(r.current().await.is_err(), "unknown before the first resize");
    r.resize(3, Bounds { min: 1, max: 5 }, &IdempotencyKey::new("p", "scale", 1), false)
        .await
        .expect("resize");
    let seen = mock.requests().pop().expect("sent");
    assert!(stoker_collector::actuate::webhook::verify(
        b"hook-key",
        seen.body.as_bytes(),
        &seen.headers["x-stoker-signature"]
    ));
    assert_eq!(seen.json()["desired"], 3);
    assert_eq!(r.current().await.expect("remembered").replicas, 3);
}
