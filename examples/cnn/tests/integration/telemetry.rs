//! The service's metrics as an OTLP/gRPC receiver sees them: names, units, attributes and
//! histogram buckets. The receiver is a real tonic `MetricsServiceServer` on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use serde_json::json;
use stoker_example_cnn::data::{DataParams, Dataset};
use stoker_example_cnn::serve::telemetry::{
    InferenceMetrics, LATENCY_BUCKETS, OtlpSettings, confidence_buckets, otlp_meter_provider,
};
use stoker_example_cnn::versions::ModelDir;
use tokio::sync::mpsc;

use crate::support::{CLEAN, TestServer, client, publish};

struct Receiver(mpsc::Sender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.0.try_send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_over_otlp_grpc_with_names_units_attributes_and_buckets() {
    let (tx, mut rx) = mpsc::channel(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let settings = OtlpSettings {
        endpoint,
        interval: Duration::from_millis(200),
        service_name: "cnn-test".into(),
        instance_id: "replica-a".into(),
    };
    let provider = otlp_meter_provider(&settings).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = ModelDir::new(tmp.path());
    publish(&dir, &CLEAN);
    let server =
        TestServer::start(&dir, Duration::from_millis(1), 16, InferenceMetrics::new(&provider))
            .await;
    let c = client();
    let set = Dataset::generate(3, &DataParams::default(), 11);
    for (i, label) in set.labels.iter().enumerate() {
        let body = json!({
            "parameters": {"label": label},
            "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": &set.images[i * 784..(i + 1) * 784]}],
        });
        let r = c
            .post(format!("{}/v2/models/cnn/infer", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let bad = json!({"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [0, 0, 0, 0, 0]}]});
    let r = c.post(format!("{}/v2/models/cnn/infer", server.base)).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Cumulative export: wait for one that has seen all four requests.
    let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
    let mut resource = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let export = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no complete export within 10 s")
            .unwrap();
        for rm in export.resource_metrics {
            resource = attrs(&rm.resource.map(|r| r.attributes).unwrap_or_default());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    metrics.insert(m.name.clone(), m);
                }
            }
        }
        let requests: u64 = match metrics.get("inference.requests").and_then(|m| m.data.as_ref()) {
            Some(metric::Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| match p.value {
                    Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v),
                    ) => v as u64,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        };
        if requests >= 4 && metrics.contains_key("inference.feedback") {
            break;
        }
    }
    assert_eq!(resource.get("service.name").map(String::as_str), Some("cnn-test"));
    assert_eq!(resource.get("service.instance.id").map(String::as_str), Some("replica-a"));

    let model = BTreeMap::from([
        ("model.name".to_string(), "cnn".to_string()),
        ("model.version".to_string(), "1".to_string()),
    ]);
    for (name, unit, bounds) in [
        ("inference.request.duration", "s", LATENCY_BUCKETS.to_vec()),
        ("inference.queue.duration", "s", LATENCY_BUCKETS.to_vec()),
        ("inference.compute.duration", "s", LATENCY_BUCKETS.to_vec()),
        ("inference.prediction.confidence", "1", confidence_buckets()),
    ] {
        let m =
            metrics.get(name).unwrap_or_else(|| panic!("{name} missing; got {:?}", metrics.keys()));
        assert_eq!(m.unit, unit, "{name} unit");
        let Some(metric::Data::Histogram(h)) = &m.data else { panic!("{name} is not a histogram") };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, bounds, "{name} buckets");
        assert_eq!(attrs(&p.attributes), model, "{name} attributes");
    }
    assert_eq!(confidence_buckets().first(), Some(&0.05));
    assert_eq!(confidence_buckets().len(), 20);
    let Some(metric::Data::Histogram(confidence)) =
        &metrics["inference.prediction.confidence"].data
    else {
        unreachable!()
    };
    assert_eq!(confidence.data_points[0].count, 3);
    let Some(metric::Data::Histogram(duration)) = &metrics["inference.request.duration"].data
    else {
        unreachable!()
    };
    assert_eq!(duration.data_points.iter().map(|p| p.count).sum::<u64>(), 4);

    let sum_points = |name: &str| match &metrics[name].data {
        Some(metric::Data::Sum(s)) => {
            s.data_points.iter().map(|p| attrs(&p.attributes)).collect::<Vec<_>>()
        }
        other => panic!("{name} is not a sum: {other:?}"),
    };
    let outcomes: Vec<String> =
        sum_points("inference.requests").iter().map(|a| a["outcome"].clone()).collect();
    assert!(
        outcomes.contains(&"ok".to_string()) && outcomes.contains(&"invalid".to_string()),
        "{outcomes:?}"
    );
    let classes = sum_points("inference.prediction.class");
    assert!(
        classes.iter().all(|a| a.contains_key("class") && a["model.version"] == "1"),
        "{classes:?}"
    );
    let feedback = sum_points("inference.feedback");
    assert!(
        feedback.iter().all(|a| a["correct"] == "true" || a["correct"] == "false"),
        "{feedback:?}"
    );

    server.stop().await;
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    receiver.abort();
}
