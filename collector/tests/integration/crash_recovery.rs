//! Crash recovery with the real binary: ingest continuously, `kill -9`, restart, and compare
//! with what was acknowledged. At most the last second of acknowledged data may be lost.

use std::time::{Duration, Instant};

use prost::Message;

use crate::common::{self, Collector};

fn spawn(data_dir: &std::path::Path) -> Collector {
    Collector::start(common::serve_command(data_dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_the_last_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut col = spawn(dir.path());
    let c = common::client();
    let url = format!("http://{}/v1/metrics", col.http);
    let t0 = common::now_nanos() - 3_600_000_000_000;
    // Acknowledged points: (sequence, wall-clock instant of the ack).
    let mut acked: Vec<(u64, Instant)> = Vec::new();
    let started = Instant::now();
    let mut seq = 0u64;
    // Ingest for ~3.5 s (past at least one 200 ms commit cycle many times over).
    while started.elapsed() < Duration::from_millis(3500) {
        seq += 1;
        let body = common::gauge_request(
            "crash-node",
            "crash.seq",
            t0 + seq * 1_000_000,
            seq as f64,
            vec![],
        )
        .encode_to_vec();
        let r = c
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
        acked.push((seq, Instant::now()));
    }
    col.child.kill().expect("kill -9");
    let killed_at = Instant::now();
    let _ = col.child.wait();
    drop(col);

    let col = spawn(dir.path());
    let g = common::query(
        &c,
        col.api.parse().expect("addr"),
        &[("selector", "crash.seq"), ("stat", "count"), ("window", "2h")],
    )
    .await;
    let stored = g.first().and_then(|g| g["value"].as_f64()).unwrap_or(0.0) as u64;
    let g = common::query(
        &c,
        col.api.parse().expect("addr"),
        &[("selector", "crash.seq"), ("stat", "max"), ("window", "2h")],
    )
    .await;
    let max = g.first().and_then(|g| g["value"].as_f64()).unwrap_or(0.0) as u64;
    let must_have = acked
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > Duration::from_secs(1))
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(0);
    eprintln!(
        "acknowledged {}, stored after restart {stored}, newest {max}, required ≥ {must_have}",
        acked.len()
    );
    assert!(must_have > 100, "the test ingested too little to mean anything ({must_have})");
    assert!(
        max >= must_have,
        "lost acknowledged data older than 1 s: newest stored {max} < {must_have}"
    );
    assert_eq!(stored, max, "no holes: every sequence number up to the newest is stored");
    // The restarted collector keeps taking data after the recovered points.
    let body =
        common::gauge_request("crash-node", "crash.seq", t0 + (seq + 1) * 1_000_000, 0.0, vec![])
            .encode_to_vec();
    let r = col.export(&c, body).await;
    assert_eq!(r.status().as_u16(), 200);
}
