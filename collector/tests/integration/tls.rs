//! TLS end to end: with `server.tls` set (a self-signed certificate generated here), OTLP/HTTP
//! ingest and the query API answer over HTTPS to a client that trusts that certificate, and
//! refuse plain HTTP.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use stoker_collector::clock::SystemClock;
use stoker_collector::config::{TlsConfig, Tokens};

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_query_over_tls_with_a_self_signed_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let cert_pem = ck.cert.pem();
    std::fs::write(&cert_file, &cert_pem).expect("write cert");
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).expect("write key");
    let srv = common::start_with(
        Tokens::default(),
        |s| s.tls = Some(TlsConfig { cert_file, key_file }),
        Arc::new(SystemClock),
    )
    .await;

    let c = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("certificate"),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let t0 = common::now_nanos() - 5_000_000_000;
    let req = common::gauge_request("tls-node", "tls.m", t0, 0.5, vec![]);
    let r = c
        .post(format!("https://127.0.0.1:{}/v1/metrics", srv.bound.otlp_http.port()))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("OTLP/HTTP over TLS");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        ExportMetricsServiceResponse::decode(r.bytes().await.expect("body").as_ref())
            .expect("response")
            .partial_success
            .is_none()
    );

    let r = c
        .get(format!("https://127.0.0.1:{}/api/v1/query", srv.bound.api.port()))
        .query(&[("selector", "tls.m{host.name=\"tls-node\"}"), ("stat", "last"), ("window", "1m")])
        .send()
        .await
        .expect("query over TLS");
    assert!(r.status().is_success(), "{}", r.status());
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["result"]["groups"][0]["value"], 0.5, "{body}");

    // Plain HTTP to a TLS listener gets no answer, and a client that does not trust the
    // certificate is refused in the handshake.
    assert!(
        common::client()
            .get(format!("http://127.0.0.1:{}/healthz", srv.bound.api.port()))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );
    assert!(
        common::client()
            .get(format!("https://127.0.0.1:{}/healthz", srv.bound.api.port()))
            .send()
            .await
            .is_err()
    );
}
