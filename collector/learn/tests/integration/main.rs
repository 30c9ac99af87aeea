//! Integration tests of stoker-learn: the models on generated traces with known structure,
//! asserting the figures the README reports stay in sensible bounds. Seeded; bounded runtime.

mod anomaly;
mod drift;
mod forecast;
mod scaling;

/// The seed the `evaluate` example uses, so test and README figures are the same runs.
pub const SEED: u64 = 42;
