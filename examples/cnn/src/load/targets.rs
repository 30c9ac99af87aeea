//! The replica URLs the load goes to: fixed ones from flags plus a list re-read every second
//! from a file or an HTTP endpoint, so replicas started by a scale-out get traffic and
//! stopped ones stop getting it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the dynamic part of the list comes from.
#[derive(Debug, Clone)]
pub enum TargetSource {
    /// One URL a line; blank lines and `#` comments skipped.
    File(PathBuf),
    /// GET returning a JSON array of URLs or one URL a line.
    Url(String),
}

/// Normalises `127.0.0.1:8081` or `http://127.0.0.1:8081/` to `http://127.0.0.1:8081`.
pub fn normalise(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() || url.starts_with('#') {
        return None;
    }
    Some(if url.contains("://") { url.to_string() } else { format!("http://{url}") })
}

/// Parses a list body: a JSON array of strings, or one URL a line.
pub fn parse_list(body: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(body) {
        return list.iter().filter_map(|u| normalise(u)).collect();
    }
    body.lines().filter_map(normalise).collect()
}

/// The current list and a round-robin cursor over it.
#[derive(Debug, Clone)]
pub struct Targets {
    list: watch::Receiver<Vec<String>>,
    cursor: Arc<AtomicUsize>,
}

impl Targets {
    /// The next URL in round-robin order, if any.
    pub fn next(&self) -> Option<String> {
        let list = self.list.borrow();
        if list.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        list.get(i % list.len()).cloned()
    }

    /// How many targets there are now.
    pub fn len(&self) -> usize {
        self.list.borrow().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Starts the list: `fixed` plus `source` re-read every `every` until `shutdown`. A source
/// that cannot be read keeps the last list it gave.
pub fn spawn_targets(
    fixed: Vec<String>,
    source: Option<TargetSource>,
    client: reqwest::Client,
    every: Duration,
    shutdown: CancellationToken,
) -> Targets {
    let fixed: Vec<String> = fixed.iter().filter_map(|u| normalise(u)).collect();
    let (tx, rx) = watch::channel(fixed.clone());
    if let Some(source) = source {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            let mut last_error: Option<String> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let read = match &source {
                    TargetSource::File(path) => tokio::fs::read_to_string(path)
                        .await
                        .map_err(|e| format!("read {}: {e}", path.display())),
                    TargetSource::Url(url) => match client.get(url).timeout(every).send().await {
                        Ok(r) => r.text().await.map_err(|e| format!("GET {url}: {e}")),
                        Err(e) => Err(format!("GET {url}: {e}")),
                    },
                };
                match read {
                    Ok(body) => {
                        last_error = None;
                        let mut list = fixed.clone();
                        for url in parse_list(&body) {
                            if !list.contains(&url) {
                                list.push(url);
                            }
                        }
                        tx.send_if_modified(|current| {
                            if *current == list {
                                return false;
                            }
                            tracing::info!(targets = ?list, "Target list changed.");
                            *current = list;
                            true
                        });
                    }
                    Err(e) => {
                        if last_error.as_ref() != Some(&e) {
                            tracing::warn!(
                                error = e.as_str(),
                                "Cannot read the target list; keeping the last one."
                            );
                            last_error = Some(e);
                        }
                    }
                }
            }
        });
    }
    Targets { list: rx, cursor: Arc::new(AtomicUsize::new(0)) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_json() {
        assert_eq!(
            parse_list("# replicas\n127.0.0.1:8081\n\nhttp://127.0.0.1:8082/\n"),
            vec!["http://127.0.0.1:8081", "http://127.0.0.1:8082"]
        );
        assert_eq!(parse_list(r#"["127.0.0.1:9"]"#), vec!["http://127.0.0.1:9"]);
    }
}
