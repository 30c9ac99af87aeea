//! The KServe v2 endpoints: answers, 400s with messages, 404 for unknown models, readiness
//! before the first version, hot reload, and the full-queue 503 of the capacity model.

use std::time::Duration;

use serde_json::{Value, json};
use stoker_example_cnn::data::{DataParams, Dataset, IMAGE_PIXELS};
use stoker_example_cnn::versions::ModelDir;

use crate::support::{CLEAN, TestServer, client, no_metrics, publish};

async fn get(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_kserve_v2_requests_and_explains_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ModelDir::new(tmp.path());
    assert_eq!(publish(&dir, &CLEAN), 1);
    let server = TestServer::start(&dir, Duration::from_millis(1), 16, no_metrics()).await;
    let c = client();
    let b = &server.base;

    assert_eq!(get(&c, format!("{b}/v2/health/live")).await.0, 200);
    assert_eq!(get(&c, format!("{b}/v2/health/ready")).await.0, 200);
    assert_eq!(
        get(&c, format!("{b}/v2/models/cnn/ready")).await,
        (200, json!({"name": "cnn", "ready": true}))
    );
    let (status, meta) = get(&c, format!("{b}/v2/models/cnn")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 28, 28]));

    // Ten clean digits in one [10,1,28,28] request, with labels.
    let set = Dataset::generate(10, &DataParams::default(), 5);
    let body = json!({
        "id": "batch-1",
        "parameters": {"labels": set.labels},
        "inputs": [{"name": "input", "shape": [10, 1, 28, 28], "datatype": "FP32", "data": set.images}],
    });
    let (status, answer) = post(&c, format!("{b}/v2/models/cnn/infer"), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["model_name"].as_str(), answer["model_version"].as_str(), answer["id"].as_str()),
        (Some("cnn"), Some("1"), Some("batch-1"))
    );
    let outputs = answer["outputs"].as_array().unwrap();
    let probs = outputs.iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(probs["shape"], json!([10, 10]));
    let row_sum: f64 =
        probs["data"].as_array().unwrap()[..10].iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((row_sum - 1.0).abs() < 1e-3, "probabilities sum to {row_sum}");
    let classes = outputs.iter().find(|o| o["name"] == "predicted_class").unwrap();
    let correct = classes["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&set.labels)
        .filter(|(p, l)| p.as_u64() == Some(u64::from(**l)))
        .count();
    assert!(correct >= 8, "only {correct}/10 clean digits right");

    // A [1,784] request works too.
    let flat = json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": &set.images[..IMAGE_PIXELS]}]});
    assert_eq!(post(&c, format!("{b}/v2/models/cnn/infer"), flat).await.0, 200);

    // Shape errors are 400 with a message that says what is wrong.
    let wrong_shape = json!({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "FP32", "data": &set.images[..IMAGE_PIXELS]}]});
    let (status, e) = post(&c, format!("{b}/v2/models/cnn/infer"), wrong_shape).await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("shape must be [N,1,28,28] or [N,784]"), "{e}");
    let short = json!({"inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": &set.images[..IMAGE_PIXELS]}]});
    let (status, e) = post(&c, format!("{b}/v2/models/cnn/infer"), short).await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("needs 1568 values, got 784"), "{e}");
    let (status, e) = post(&c, format!("{b}/v2/models/cnn/infer"), json!({"inputs": "nope"})).await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().starts_with("invalid infer request"), "{e}");
    let (status, _) = post(&c, format!("{b}/v2/models/resnet/infer"), json!({"inputs": []})).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_without_a_model_then_hot_reloads_each_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ModelDir::new(tmp.path().join("models"));
    let server = TestServer::start(&dir, Duration::from_millis(1), 16, no_metrics()).await;
    let c = client();
    let b = &server.base;
    assert_eq!(get(&c, format!("{b}/v2/health/ready")).await.0, 503);
    let image = Dataset::generate(1, &DataParams::default(), 1).images;
    let body = json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": image}]});
    assert_eq!(post(&c, format!("{b}/v2/models/cnn/infer"), body.clone()).await.0, 503);

    for expected in ["1", "2"] {
        publish(&dir, &CLEAN);
        let mut seen = Value::Null;
        for _ in 0..50 {
            seen = get(&c, format!("{b}/v2/models/cnn")).await.1["versions"][0].clone();
            if seen == json!(expected) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, json!(expected), "metadata did not switch to version {expected}");
        let (status, answer) = post(&c, format!("{b}/v2/models/cnn/infer"), body.clone()).await;
        assert_eq!((status, answer["model_version"].as_str()), (200, Some(expected)));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_service_time_bounds_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ModelDir::new(tmp.path());
    publish(&dir, &CLEAN);
    // One slot in the queue, 200 ms per request: of 6 simultaneous requests one is served, one
    // waits, the rest are turned away at once.
    let server = TestServer::start(&dir, Duration::from_millis(200), 1, no_metrics()).await;
    let c = client();
    let url = format!("{}/v2/models/cnn/infer", server.base);
    let image = Dataset::generate(1, &DataParams::default(), 1).images;
    let body = json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": image}]});
    let started = tokio::time::Instant::now();
    let answers =
        futures_util::future::join_all((0..6).map(|_| post(&c, url.clone(), body.clone()))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let rejected: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!((1..=2).contains(&ok), "{answers:?}");
    assert_eq!(ok + rejected.len(), 6);
    assert!(rejected[0].1["error"].as_str().unwrap().contains("queue full"));
    // Served requests took at least the service time each, one after the other.
    assert!(started.elapsed() >= Duration::from_millis(200) * ok as u32);
    server.stop().await;
}
