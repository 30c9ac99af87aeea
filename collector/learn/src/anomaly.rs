//! Anomaly detection: behaviour unlike a subject's own history or its peers.
//!
//! A subject is a node, a GPU or a model replica; its behaviour is a small feature vector the
//! collector computes from the store, chosen so that comparable things sit side by side, e.g.
//! `[gpu_utilization, power_w]` per sample (power *at* a utilisation) or
//! `[p95_latency_at_60pct_load]` per node. Two detectors:
//!
//! - [`PeerDetector`]: one vector per subject across the fleet. Features are scaled robustly
//!   (median, MAD) and clustered with linfa's DBSCAN; subjects outside the largest cluster are
//!   flagged, provided one feature is at least `min_deviation` MADs from the fleet median.
//! - [`HistoryModel`]: one subject's past vectors, summarised by linfa k-means; a new vector
//!   farther from every centroid than the history's own `quantile` distance (times `margin`)
//!   is flagged. The nearest centroid is "how this subject normally behaves in this state".
//!
//! Every [`Anomaly`] says why: the feature that deviates most, its value, what was expected,
//! and compared with what.

use linfa::prelude::*;
use linfa_clustering::{Dbscan, KMeans};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;

use crate::LearnError;

/// What an anomaly was compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// The fleet: other subjects of the same kind at the same time.
    Peers,
    /// The subject's own history.
    History,
}

/// One flagged subject, with the evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Anomaly {
    /// The subject (node name, GPU UUID, model replica).
    pub subject: String,
    /// Peers or own history.
    pub baseline: Baseline,
    /// Anomaly score: robust z (peers) or distance over threshold (history); larger is worse.
    pub score: f64,
    /// The feature that deviates most.
    pub feature: String,
    /// Its observed value.
    pub value: f64,
    /// What was expected: the fleet median, or the nearest normal state of the history.
    pub expected: f64,
    /// One sentence for the dashboard and the decision record.
    pub why: String,
}

/// A subject's feature vector, for [`PeerDetector`].
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    /// Subject identifier.
    pub id: String,
    /// Feature values, in the detector's `features` order.
    pub values: Vec<f64>,
}

/// Fleet comparison with DBSCAN over robustly scaled features.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerDetector {
    /// Feature names, in vector order (used in the "why").
    pub features: Vec<String>,
    /// DBSCAN neighbourhood radius in robust-z units (MADs scaled to σ).
    pub eps: f64,
    /// DBSCAN core-point minimum neighbours.
    pub min_points: usize,
    /// A subject is flagged only if some feature is at least this many robust σ from the
    /// median: DBSCAN finds the odd ones out, this keeps tiny differences in a tight fleet quiet.
    pub min_deviation: f64,
    /// Fewer subjects than this: no comparison (a fleet of 3 has no majority to speak of).
    pub min_subjects: usize,
}

impl PeerDetector {
    /// Defaults: eps 1.5, 4 neighbours, 3.5 σ minimum deviation, at least 8 subjects.
    pub fn new(features: Vec<String>) -> Self {
        Self { features, eps: 1.5, min_points: 4, min_deviation: 3.5, min_subjects: 8 }
    }

    /// Flags the subjects unlike the fleet. Subjects with a non-finite value are skipped.
    pub fn detect(&self, subjects: &[Subject]) -> Result<Vec<Anomaly>, LearnError> {
        let width = self.features.len();
        if width == 0 {
            return Err(LearnError::InvalidConfig {
                key: "features",
                reason: "no features named".to_owned(),
            });
        }
        if let Some(s) = subjects.iter().find(|s| s.values.len() != width) {
            return Err(LearnError::InvalidInput(format!(
                "subject {} has {} values for {width} features",
                s.id,
                s.values.len()
            )));
        }
        let usable: Vec<&Subject> =
            subjects.iter().filter(|s| s.values.iter().all(|v| v.is_finite())).collect();
        if usable.len() < self.min_subjects.max(3) {
            return Ok(Vec::new());
        }
        let (median, sigma): (Vec<f64>, Vec<f64>) =
            (0..width).map(|j| robust_centre(usable.iter().map(|s| s.values[j]))).unzip();
        let z: Vec<f64> = usable
            .iter()
            .flat_map(|s| s.values.iter().zip(&median).zip(&sigma).map(|((v, m), sd)| (v - m) / sd))
            .collect();
        let records = Array2::from_shape_vec((usable.len(), width), z)
            .map_err(|e| LearnError::InvalidInput(format!("peer matrix: {e}")))?;
        let clusters = Dbscan::params(self.min_points)
            .tolerance(self.eps)
            .check()
            .map_err(|e| LearnError::fit("peer DBSCAN", e))?
            .transform(&records);
        let mut sizes = std::collections::BTreeMap::<usize, usize>::new();
        for c in clusters.iter().flatten() {
            *sizes.entry(*c).or_default() += 1;
        }
        let majority = sizes.iter().max_by_key(|(_, n)| **n).map(|(c, _)| *c);
        let mut out = Vec::new();
        for (i, s) in usable.iter().enumerate() {
            if majority.is_some() && clusters[i] == majority {
                continue;
            }
            let row = records.row(i);
            let (j, zj) = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(j, z)| (j, *z))
                .unwrap_or((0, 0.0));
            if zj.abs() < self.min_deviation {
                continue;
            }
            let feature = &self.features[j];
            out.push(Anomaly {
                subject: s.id.clone(),
                baseline: Baseline::Peers,
                score: zj.abs(),
                feature: feature.clone(),
                value: s.values[j],
                expected: median[j],
                why: format!(
                    "{feature} {} is {:.1}σ {} the fleet median {} ({} peers){}",
                    fmt_value(s.values[j]),
                    zj.abs(),
                    if zj > 0.0 { "above" } else { "below" },
                    fmt_value(median[j]),
                    usable.len() - 1,
                    match clusters[i] {
                        None => "; outside every peer cluster".to_owned(),
                        Some(_) => "; in a minority cluster".to_owned(),
                    }
                ),
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(out)
    }
}

/// How [`HistoryModel::fit`] summarises a subject's history.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryConfig {
    /// Feature names, in vector order.
    pub features: Vec<String>,
    /// k-means clusters ("normal states", e.g. idle, half load, full load).
    pub clusters: usize,
    /// Quantile of the history's own distances that counts as normal.
    pub quantile: f64,
    /// Threshold = quantile distance × margin.
    pub margin: f64,
    /// At least this many history vectors for a model.
    pub min_history: usize,
    /// Seed of k-means initialisation, so a replay flags exactly what the live run flagged.
    pub seed: u64,
}

impl HistoryConfig {
    /// Defaults: 12 clusters, 99th percentile, margin 1.5, 100 vectors minimum.
    pub fn new(features: Vec<String>) -> Self {
        Self { features, clusters: 12, quantile: 0.99, margin: 1.5, min_history: 100, seed: 0x5EED }
    }
}

/// A subject's normal behaviour: k-means centroids over standardised history vectors.
#[derive(Clone, Debug)]
pub struct HistoryModel {
    features: Vec<String>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    centroids: Vec<Vec<f64>>,
    threshold: f64,
}

impl HistoryModel {
    /// Fits the subject's normal states on `history` (rows of equal width, finite).
    pub fn fit<R: AsRef<[f64]>>(history: &[R], cfg: &HistoryConfig) -> Result<Self, LearnError> {
        let width = cfg.features.len();
        if width == 0 || cfg.clusters == 0 || !(0.0..=1.0).contains(&cfg.quantile) {
            return Err(LearnError::InvalidConfig {
                key: "history",
                reason: "features must be named, clusters >= 1, quantile in 0..=1".to_owned(),
            });
        }
        let rows: Vec<&[f64]> = history
            .iter()
            .map(AsRef::as_ref)
            .filter(|r| r.len() == width && r.iter().all(|v| v.is_finite()))
            .collect();
        if rows.len() < cfg.min_history.max(cfg.clusters * 2) {
            return Err(LearnError::InvalidInput(format!(
                "{} usable history vectors, at least {} needed",
                rows.len(),
                cfg.min_history.max(cfg.clusters * 2)
            )));
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> =
            (0..width).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let scale: Vec<f64> = (0..width)
            .map(|j| {
                let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                if v > 1e-24 { v.sqrt() } else { 1.0 }
            })
            .collect();
        let z: Vec<f64> =
            rows.iter().flat_map(|r| (0..width).map(|j| (r[j] - mean[j]) / scale[j])).collect();
        let records = Array2::from_shape_vec((rows.len(), width), z)
            .map_err(|e| LearnError::InvalidInput(format!("history matrix: {e}")))?;
        let model = KMeans::params_with_rng(cfg.clusters, SmallRng::seed_from_u64(cfg.seed))
            .n_runs(3)
            .max_n_iterations(100)
            .tolerance(1e-4)
            .fit(&DatasetBase::from(records.clone()))
            .map_err(|e| LearnError::fit("history k-means", e))?;
        let centroids: Vec<Vec<f64>> =
            model.centroids().rows().into_iter().map(|c| c.to_vec()).collect();
        let mut dists: Vec<f64> = records
            .rows()
            .into_iter()
            .map(|r| nearest(&centroids, r.as_slice().unwrap_or(&[])).1)
            .collect();
        dists.sort_by(f64::total_cmp);
        let q = quantile_sorted(&dists, cfg.quantile);
        Ok(Self {
            features: cfg.features.clone(),
            mean,
            scale,
            centroids,
            // A floor keeps a perfectly regular history (all distances 0) from flagging noise.
            threshold: (q * cfg.margin).max(1e-6),
        })
    }

    /// Distance (standardised units) beyond which a vector is anomalous.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Distance of `values` to the nearest normal state, in standardised units.
    pub fn distance(&self, values: &[f64]) -> Option<f64> {
        let z = self.standardise(values)?;
        Some(nearest(&self.centroids, &z).1)
    }

    /// An anomaly for `subject` if `values` is unlike its history, else `None`.
    pub fn check(&self, subject: &str, values: &[f64]) -> Option<Anomaly> {
        let z = self.standardise(values)?;
        let (c, d) = nearest(&self.centroids, &z);
        if d <= self.threshold {
            return None;
        }
        let centroid = &self.centroids[c];
        let (j, dz) = z
            .iter()
            .zip(centroid)
            .map(|(a, b)| a - b)
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
        let expected = centroid[j] * self.scale[j] + self.mean[j];
        let context: Vec<String> = (0..self.features.len())
            .filter(|k| *k != j)
            .map(|k| format!("{} {}", self.features[k], fmt_value(values[k])))
            .collect();
        let feature = &self.features[j];
        Some(Anomaly {
            subject: subject.to_owned(),
            baseline: Baseline::History,
            score: d / self.threshold,
            feature: feature.clone(),
            value: values[j],
            expected,
            why: format!(
                "{feature} {} is {:.1}σ {} its usual {}{}; {:.1}× the normal distance",
                fmt_value(values[j]),
                dz.abs(),
                if dz > 0.0 { "above" } else { "below" },
                fmt_value(expected),
                if context.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", context.join(", "))
                },
                d / self.threshold
            ),
        })
    }

    fn standardise(&self, values: &[f64]) -> Option<Vec<f64>> {
        (values.len() == self.mean.len() && values.iter().all(|v| v.is_finite())).then(|| {
            values.iter().zip(&self.mean).zip(&self.scale).map(|((v, m), s)| (v - m) / s).collect()
        })
    }
}

fn nearest(centroids: &[Vec<f64>], z: &[f64]) -> (usize, f64) {
    centroids
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let d2: f64 = c.iter().zip(z).map(|(a, b)| (a - b).powi(2)).sum();
            (i, d2.sqrt())
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::INFINITY))
}

/// Linear-interpolated quantile of sorted values.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median and MAD scaled to σ (×1.4826) of `values`. The scale has a floor of 1 % of the
/// median's magnitude (or 1e-9) so a fleet of identical values does not flag rounding noise.
fn robust_centre(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let median = quantile_sorted(&v, 0.5);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = quantile_sorted(&dev, 0.5) * 1.4826;
    (median, mad.max(median.abs() * 0.01).max(1e-9))
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.4}")
    } else if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Gauss;

    #[test]
    fn quantile_and_robust_centre_match_hand_values() {
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 1.0), 5.0);
        // median 3, |dev| = 2 1 0 1 97 -> MAD 1 -> σ 1.4826
        let (m, s) = robust_centre([1.0, 2.0, 3.0, 4.0, 100.0].into_iter());
        assert_eq!(m, 3.0);
        assert!((s - 1.4826).abs() < 1e-12);
    }

    fn fleet(n: usize, g: &mut Gauss) -> Vec<Subject> {
        (0..n)
            .map(|i| Subject {
                id: format!("node-{i}"),
                values: vec![0.050 + 0.003 * g.normal(), 250.0 + 10.0 * g.normal()],
            })
            .collect()
    }

    #[test]
    fn a_slow_node_stands_out_from_its_peers_and_says_why() {
        let mut g = Gauss::new(4);
        let mut subjects = fleet(30, &mut g);
        subjects[7].values[0] = 0.085;
        let det = PeerDetector::new(vec!["p95_latency_at_60pct_gpu".into(), "power_w".into()]);
        let found = det.detect(&subjects).expect("detect");
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        assert_eq!(
            (a.subject.as_str(), a.feature.as_str()),
            ("node-7", "p95_latency_at_60pct_gpu")
        );
        assert!(a.why.contains("above the fleet median"), "{}", a.why);
        assert!(a.why.contains("29 peers"), "{}", a.why);
        // A fleet too small to have a majority: nothing.
        assert!(det.detect(&subjects[..5]).expect("small").is_empty());
        // Ragged input is an error, not a panic.
        subjects[2].values.pop();
        assert!(det.detect(&subjects).is_err());
    }

    #[test]
    fn a_healthy_fleet_has_no_peer_anomalies() {
        let mut g = Gauss::new(5);
        let det = PeerDetector::new(vec!["latency".into(), "power".into()]);
        for _ in 0..10 {
            let found = det.detect(&fleet(40, &mut g)).expect("detect");
            assert!(found.is_empty(), "{found:?}");
        }
    }

    #[test]
    fn power_drift_at_the_same_utilisation_is_flagged_against_history() {
        let mut g = Gauss::new(6);
        let sample = |extra: f64, g: &mut Gauss| {
            let u = g.uniform();
            vec![u, 80.0 + 220.0 * u + 6.0 * g.normal() + extra]
        };
        let history: Vec<Vec<f64>> = (0..2000).map(|_| sample(0.0, &mut g)).collect();
        let cfg = HistoryConfig::new(vec!["gpu_utilization".into(), "power_w".into()]);
        let model = HistoryModel::fit(&history, &cfg).expect("fit");
        let normal_flags =
            (0..500).filter(|_| model.check("gpu-0", &sample(0.0, &mut g)).is_some()).count();
        assert!(normal_flags <= 5, "{normal_flags} false flags in 500");
        let mut hot = sample(60.0, &mut g);
        hot[0] = 0.5;
        hot[1] = 80.0 + 110.0 + 60.0;
        let a = model.check("gpu-0", &hot).expect("flagged");
        assert_eq!(a.feature, "power_w");
        assert!(a.why.starts_with("power_w 250 is"), "{}", a.why);
        assert!(a.why.contains("at gpu_utilization 0.50"), "{}", a.why);
        assert!(model.check("gpu-0", &[0.5]).is_none(), "wrong width is not an anomaly");
    }
}
