//! Time for logic: an injected clock so that retention, downsampling, health and windows run
//! the same code in tests (virtual time) and in production (the system clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Something that says what time it is, in Unix nanoseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, as Unix nanoseconds.
    fn now(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place that reads the wall clock (clippy's `disallowed-methods` bans it elsewhere).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told: for tests and replays.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now` (Unix nanoseconds).
    pub fn new(now: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now)))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// Elapsed time for figures (`/metrics` durations, log lines), never for logic: it reads the
/// monotonic clock, which tests do not drive.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// A stopwatch running from now.
    // The one place that reads the monotonic clock (banned elsewhere by `disallowed-methods`).
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }
}
