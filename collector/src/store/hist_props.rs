//! Property tests of histogram values: merging keeps every observation whatever the layouts
//! and offsets (and stays within [`MAX_EXP_BUCKETS`] per side), merge order does not matter,
//! cumulative→delta subtraction undoes a merge, and quantiles lie inside the bucket that
//! holds their rank and within the reported `[min, max]`.

use proptest::prelude::*;

use super::hist::{Buckets, ExpSide, Histogram, MAX_EXP_BUCKETS};

/// Bucket indices that hold float64 values at `scale` (as ingest admits them).
fn index_bounds(scale: i32) -> (i64, i64) {
    if scale >= 0 {
        (-1075i64 << scale, 1024i64 << scale)
    } else {
        (-1075 >> -scale, 1024 >> -scale)
    }
}

fn exp_side(scale: i32) -> impl Strategy<Value = ExpSide> {
    let (lo, hi) = index_bounds(scale);
    let widest = (hi - lo).min(MAX_EXP_BUCKETS as i64) as usize;
    prop::collection::vec(0u64..1000, 0..=widest).prop_flat_map(move |counts| {
        let last_offset = hi - counts.len() as i64;
        // Half the cases at the edges of the range, where overflow would show.
        let offset = prop_oneof![Just(lo), Just(last_offset), lo..=last_offset];
        (offset, Just(counts))
            .prop_map(|(offset, counts)| ExpSide { offset: offset as i32, counts })
    })
}

fn exp_hist() -> impl Strategy<Value = Histogram> {
    (-10i32..=20)
        .prop_flat_map(|scale| (Just(scale), exp_side(scale), exp_side(scale), 0u64..100))
        .prop_map(|(scale, positive, negative, zero_count)| {
            let count = zero_count
                + positive.counts.iter().sum::<u64>()
                + negative.counts.iter().sum::<u64>();
            Histogram {
                count,
                sum: 0.0,
                min: None,
                max: None,
                buckets: Buckets::Exponential { scale, zero_count, positive, negative },
            }
        })
}

fn explicit_hist() -> impl Strategy<Value = Histogram> {
    prop::collection::btree_set(-1000i32..1000, 0..20).prop_flat_map(|bounds| {
        let bounds: Vec<f64> = bounds.into_iter().map(f64::from).collect();
        let n = bounds.len() + 1;
        (Just(bounds), prop::collection::vec(0u64..1000, n))
            .prop_map(|(b, c)| Histogram::explicit(b, c, 0.0))
    })
}

fn bucket_total(h: &Histogram) -> u64 {
    h.ranges().iter().map(|r| r.2).sum()
}

fn side_widths(h: &Histogram) -> (usize, usize) {
    match &h.buckets {
        Buckets::Exponential { positive, negative, .. } => {
            (positive.counts.len(), negative.counts.len())
        }
        Buckets::Explicit { .. } => (0, 0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn exponential_merges_keep_every_count_within_the_bucket_limit(a in exp_hist(), b in exp_hist()) {
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        prop_assert_eq!(ab.count, a.count + b.count);
        prop_assert_eq!(bucket_total(&ab), bucket_total(&a) + bucket_total(&b));
        let (p, n) = side_widths(&ab);
        prop_assert!(p <= MAX_EXP_BUCKETS && n <= MAX_EXP_BUCKETS, "{} {}", p, n);
        // Order does not matter (an empty side's offset means nothing, so compare buckets).
        prop_assert_eq!(ab.ranges(), ba.ranges());
    }

    #[test]
    fn mixed_merges_equal_point_by_point_totals(a in explicit_hist(), b in exp_hist(), c in explicit_hist()) {
        // ((a + b) + c) and (a + (b + c)) hold the same observations, and the same as the sum
        // of the parts.
        let mut left = a.clone();
        left.merge(&b);
        left.merge(&c);
        let mut bc = b.clone();
        bc.merge(&c);
        let mut right = a.clone();
        right.merge(&bc);
        let parts = bucket_total(&a) + bucket_total(&b) + bucket_total(&c);
        prop_assert_eq!(bucket_total(&left), parts);
        prop_assert_eq!(bucket_total(&right), parts);
        prop_assert_eq!(left.count, right.count);
    }

    #[test]
    fn delta_since_undoes_a_merge(a in exp_hist(), b in exp_hist()) {
        // A cumulative histogram `a`, later `a + b`: the delta holds exactly b's observations.
        let mut later = a.clone();
        later.merge(&b);
        let d = later.delta_since(&a).expect("monotonic");
        prop_assert_eq!(d.count, b.count);
        prop_assert_eq!(bucket_total(&d), bucket_total(&b));
        let (p, n) = side_widths(&d);
        prop_assert!(p <= MAX_EXP_BUCKETS && n <= MAX_EXP_BUCKETS, "{} {}", p, n);
    }

    #[test]
    fn explicit_delta_round_trips(a in explicit_hist(), extra in prop::collection::vec(0u64..100, 21)) {
        let (bounds, counts) = a.as_explicit();
        let more: Vec<u64> = counts.iter().zip(&extra).map(|(c, e)| c + e).collect();
        let later = Histogram::explicit(bounds.clone(), more, 0.0);
        let d = later.delta_since(&a).expect("monotonic");
        let (_, dc) = d.as_explicit();
        prop_assert_eq!(dc, extra[..counts.len()].to_vec());
    }

    #[test]
    fn quantiles_lie_in_their_bucket_and_within_min_max(
        samples in prop::collection::vec(-1e6f64..1e6, 1..200),
        bounds in prop::collection::btree_set(-1000i32..1000, 1..12),
        q in 0.0f64..=1.0,
    ) {
        let bounds: Vec<f64> = bounds.into_iter().map(|b| f64::from(b) * 100.0).collect();
        let mut counts = vec![0u64; bounds.len() + 1];
        for s in &samples {
            counts[bounds.partition_point(|b| b < s)] += 1;
        }
        let mut h = Histogram::explicit(bounds, counts, samples.iter().sum());
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        h.min = Some(min);
        h.max = Some(max);
        let v = h.quantile(q).expect("quantile");
        let (lo, hi) = h.quantile_bucket(q).expect("bucket");
        prop_assert!(v >= lo.max(min) - 1e-9 && v <= hi.min(max) + 1e-9, "{} not in [{}, {}] ∩ [{}, {}]", v, lo, hi, min, max);
    }
}
