//! Exponential backoff with jitter. A failed try is retried only when the error is
//! [`ActuateError::retryable`] (5xx, 429, timeouts, connection errors), never on other 4xx.
//! Waiting uses `tokio::time::sleep`, so tests run it in paused time; jitter is injected so
//! tests can switch it off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{ActuateError, AttemptRecord};
use crate::duration::HumanDuration;

/// `[actuators.retry]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per request, the first included; default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// First backoff; default 200ms, doubling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_delay: Option<HumanDuration>,
    /// Longest backoff; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
}

/// Turns a nominal backoff into the one actually waited.
pub type Jitter = Arc<dyn Fn(Duration) -> Duration + Send + Sync>;

/// "Equal jitter": a uniformly random delay in `[d/2, d]`, so synchronised clients spread
/// out but no client retries immediately.
pub fn equal_jitter() -> Jitter {
    Arc::new(|d: Duration| {
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    })
}

/// No jitter (tests).
pub fn no_jitter() -> Jitter {
    Arc::new(|d| d)
}

/// How often and how long to retry.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Tries in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second try; doubles each time.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
    /// Jitter applied to each backoff.
    pub jitter: Jitter,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            jitter: equal_jitter(),
        }
    }
}

impl RetryPolicy {
    /// From `[actuators.retry]`, defaults for what is not given.
    pub fn from_config(c: &RetryConfig) -> Self {
        let d = Self::default();
        Self {
            max_attempts: c.max_attempts.unwrap_or(d.max_attempts).max(1),
            base_delay: c.base_delay.map(|x| x.get()).unwrap_or(d.base_delay),
            max_delay: c.max_delay.map(|x| x.get()).unwrap_or(d.max_delay),
            jitter: d.jitter,
        }
    }

    /// A policy without jitter (tests and reproducible replays).
    pub fn without_jitter(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        Self { max_attempts: max_attempts.max(1), base_delay, max_delay, jitter: no_jitter() }
    }

    /// Nominal backoff before try `attempt` (1-based; the first try waits nothing).
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let exp = (attempt - 2).min(31);
        self.base_delay.saturating_mul(1u32 << exp).min(self.max_delay)
    }

    /// Run `op` until it succeeds, fails for good, or tries run out. Every try is appended to
    /// `attempts` (labelled `label`, with the error's HTTP status). The error returned is the
    /// last one.
    pub async fn run<T, F, Fut>(
        &self,
        label: &str,
        attempts: &mut Vec<AttemptRecord>,
        mut op: F,
    ) -> Result<T, ActuateError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ActuateError>>,
    {
        let mut attempt = 1;
        loop {
            let delay = if attempt > 1 {
                (self.jitter)(self.nominal_delay(attempt))
            } else {
                Duration::ZERO
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            match op().await {
                Ok(v) => {
                    attempts.push(AttemptRecord {
                        request: label.to_owned(),
                        status: None,
                        error: None,
                        delay_ms,
                    });
                    return Ok(v);
                }
                Err(e) => {
                    attempts.push(AttemptRecord {
                        request: label.to_owned(),
                        status: e.status(),
                        error: Some(e.to_string()),
                        delay_ms,
                    });
                    if !e.retryable() || attempt >= self.max_attempts {
                        return Err(e);
                    }
                    tracing::warn!(request = label, attempt, error = %e, "Request failed; retrying.");
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn server_error() -> ActuateError {
        ActuateError::Http {
            method: "GET".into(),
            url: "u".into(),
            status: 503,
            body: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_exponentially_then_gives_up() {
        let policy =
            RetryPolicy::without_jitter(4, Duration::from_millis(100), Duration::from_millis(250));
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let mut attempts = Vec::new();
        let res: Result<(), _> = policy
            .run("GET u", &mut attempts, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(server_error()) }
            })
            .await;
        assert!(res.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // 0 + 100 + 200 + 250 (capped)
        assert_eq!(start.elapsed(), Duration::from_millis(550));
        let delays: Vec<_> = attempts.iter().map(|a| a.delay_ms).collect();
        assert_eq!(delays, vec![0, 100, 200, 250]);
        assert!(attempts.iter().all(|a| a.status == Some(503)));
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_client_errors() {
        let policy =
            RetryPolicy::without_jitter(5, Duration::from_millis(100), Duration::from_secs(1));
        let calls = AtomicU32::new(0);
        let mut attempts = Vec::new();
        let res: Result<(), _> = policy
            .run("PATCH u", &mut attempts, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(ActuateError::Http {
                        method: "PATCH".into(),
                        url: "u".into(),
                        status: 422,
                        body: String::new(),
                    })
                }
            })
            .await;
        assert_eq!(res.expect_err("fails").status(), Some(422));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures() {
        let policy =
            RetryPolicy::without_jitter(5, Duration::from_millis(10), Duration::from_secs(1));
        let calls = AtomicU32::new(0);
        let mut attempts = Vec::new();
        let res = policy
            .run("GET u", &mut attempts, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err(server_error()) } else { Ok(7) } }
            })
            .await;
        assert_eq!(res.expect("third try"), 7);
        assert_eq!(attempts.len(), 3);
        assert!(attempts[2].error.is_none());
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let j = equal_jitter();
        for _ in 0..100 {
            let d = j(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
        }
    }
}
