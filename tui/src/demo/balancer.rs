//! The demo's load balancer: every 500 ms it asks each port of the local actuator's range for
//! `GET /v2/health/ready` and writes the replicas that answer 200 into the targets file the
//! load generator re-reads every second (written to a temporary name and renamed, so a reader
//! never sees half a list). A replica being started is left out until it has loaded a model;
//! one being stopped drops out within half a second.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

const PERIOD: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// The replica URLs among `ports` that answer ready.
pub async fn ready_replicas(
    client: &reqwest::Client,
    ports: impl Iterator<Item = u16>,
) -> Vec<String> {
    let mut ready = Vec::new();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}");
        let ok = client
            .get(format!("{url}/v2/health/ready"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            ready.push(url);
        }
    }
    ready
}

/// Starts the balancer on `tracker`; the returned channel holds the number of ready replicas.
pub fn spawn(
    client: reqwest::Client,
    port_from: u16,
    count: u16,
    targets_file: PathBuf,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> watch::Receiver<usize> {
    let (tx, rx) = watch::channel(0usize);
    let task = async move {
        let tmp = targets_file.with_extension("tmp");
        let mut last: Option<Vec<String>> = None;
        let mut ticker = tokio::time::interval(PERIOD);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let ready = ready_replicas(&client, port_from..port_from.saturating_add(count)).await;
            if last.as_ref() == Some(&ready) {
                continue;
            }
            let body: String = ready.iter().map(|u| format!("{u}\n")).collect();
            let written = tokio::fs::write(&tmp, body)
                .await
                .and(tokio::fs::rename(&tmp, &targets_file).await);
            if let Err(e) = written {
                tracing::warn!(error = %e, "Cannot write the targets file.");
                continue;
            }
            tracing::info!(replicas = ready.len(), "Load balancer targets updated.");
            tx.send_replace(ready.len());
            last = Some(ready);
        }
    };
    tracker.spawn(task.instrument(tracing::info_span!("demo_balancer")));
    rx
}
