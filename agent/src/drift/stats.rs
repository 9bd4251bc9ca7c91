//! The statistics behind a split verdict: Pearson's chi-square goodness-of-fit
//! test, Wilson score intervals, the decision rule that joins the test with the
//! practical tolerance, and the exact power of that rule.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};
use statrs::function::factorial::ln_binomial;

use super::DriftConfig;

/// Smallest expected count a tested subset needs before the chi-square
/// approximation is trusted (Cochran's rule).
pub const MIN_EXPECTED_COUNT: f64 = 5.0;

/// Samples per window (in the route's unit) at which the default configuration
/// finds a 10-point drift from a declared 50/50 split (traffic really 60/40) with
/// at least 95 % power: 700, about 1.2 requests per second over a 10-minute window.
///
/// Exact figures from [`detection_power`]: power first reaches 95 % at n = 599
/// (95.1 %), but counts are discrete and power is a sawtooth in `n`; it stays at
/// or above 95 % for every n from 610 on. The quoted 700 (power 97.9 %, at least
/// 97.7 % for every n in 700..1000) leaves margin for the simulation in
/// `agent/tests/drift_statistics.rs`, which confirms it through the engine itself
/// with seeded random traffic.
pub const SAMPLES_FOR_10_POINT_DRIFT: u64 = 700;

/// Result of a goodness-of-fit test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gof {
    pub statistic: f64,
    pub degrees_of_freedom: usize,
    pub p_value: f64,
}

/// Pearson's chi-square test of `counts` against `weights` (positive, any scale;
/// normalised here). `None` when there is nothing to test: fewer than two cells,
/// no counts, or a weight that is not positive and finite.
pub fn chi_square_gof(counts: &[u64], weights: &[f64]) -> Option<Gof> {
    if counts.len() != weights.len() || counts.len() < 2 {
        return None;
    }
    if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return None;
    }
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let total_weight: f64 = weights.iter().sum();
    let n = n as f64;
    let statistic: f64 = counts
        .iter()
        .zip(weights)
        .map(|(&observed, &weight)| {
            let expected = n * weight / total_weight;
            let diff = observed as f64 - expected;
            diff * diff / expected
        })
        .sum();
    let degrees_of_freedom = counts.len() - 1;
    let distribution = ChiSquared::new(degrees_of_freedom as f64).ok()?;
    // The survival function keeps its precision where 1 − cdf would round to 0.
    let p_value = distribution.sf(statistic).clamp(0.0, 1.0);
    Some(Gof {
        statistic,
        degrees_of_freedom,
        p_value,
    })
}

/// The two-sided normal quantile that matches `alpha`: `Φ⁻¹(1 − alpha/2)`.
pub fn z_for_alpha(alpha: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - alpha / 2.0)
}

/// Wilson score interval of a proportion `count / n` with normal quantile `z`.
/// With no observations the share is unknown: `(0, 1)`.
pub fn wilson_interval(count: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = (count as f64 / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// What the decision rule concluded for the tested subsets of one split.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
    /// Counted units among the tested subsets.
    pub n: u64,
    /// Why the test did not run, when it did not.
    pub untested: Option<Untested>,
    pub gof: Option<Gof>,
    /// Index of the subset with the largest absolute share difference, and it.
    pub largest: Option<(usize, f64)>,
    pub significant: bool,
    pub beyond_tolerance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Untested {
    /// Fewer than two subsets with a positive weight.
    SingleSubset,
    /// Fewer counted units than `min_samples`.
    TooFew { n: u64, min: u64 },
    /// The smallest tested subset expects fewer than [`MIN_EXPECTED_COUNT`].
    SmallExpected { expected: f64 },
}

impl Judgement {
    pub fn drift(&self) -> bool {
        self.significant && self.beyond_tolerance
    }
}

/// The decision rule for the subsets with positive declared `weights` (already
/// normalised to sum 1) and their `counts`.
pub(crate) fn judge(counts: &[u64], weights: &[f64], config: &DriftConfig) -> Judgement {
    let n: u64 = counts.iter().sum();
    let largest = largest_difference(counts, weights, n);
    let mut judgement = Judgement {
        n,
        untested: None,
        gof: None,
        largest,
        significant: false,
        beyond_tolerance: largest.is_some_and(|(_, diff)| diff > config.tolerance),
    };
    if counts.len() < 2 {
        judgement.untested = Some(Untested::SingleSubset);
        return judgement;
    }
    if n < config.min_samples || n == 0 {
        judgement.untested = Some(Untested::TooFew {
            n,
            min: config.min_samples,
        });
        return judgement;
    }
    let smallest_expected = weights
        .iter()
        .map(|w| w * n as f64)
        .fold(f64::INFINITY, f64::min);
    if smallest_expected < MIN_EXPECTED_COUNT {
        judgement.untested = Some(Untested::SmallExpected {
            expected: smallest_expected,
        });
        return judgement;
    }
    judgement.gof = chi_square_gof(counts, weights);
    judgement.significant = judgement.gof.is_some_and(|gof| gof.p_value < config.alpha);
    judgement
}

fn largest_difference(counts: &[u64], weights: &[f64], n: u64) -> Option<(usize, f64)> {
    if n == 0 {
        return None;
    }
    counts
        .iter()
        .zip(weights)
        .map(|(&count, &weight)| (count as f64 / n as f64 - weight).abs())
        .enumerate()
        .fold(
            None,
            |best: Option<(usize, f64)>, (index, diff)| match best {
                Some((_, best_diff)) if best_diff >= diff => best,
                _ => Some((index, diff)),
            },
        )
}

/// Exact probability that the decision rule flags drift on a two-subset split
/// declared `declared`/(1 − `declared`) when the first subset really receives
/// `actual` of `n` samples (each sample routed independently). Under
/// `actual == declared` this is the false-alarm rate (the rule's size).
pub fn detection_power(declared: f64, actual: f64, n: u64, config: &DriftConfig) -> f64 {
    if !(declared > 0.0 && declared < 1.0 && (0.0..=1.0).contains(&actual)) {
        return 0.0;
    }
    let weights = [declared, 1.0 - declared];
    // Outcomes beyond 10 standard deviations carry less than 1e-20 of the mass.
    let mean = n as f64 * actual;
    let spread = 10.0 * (n as f64 * actual * (1.0 - actual)).sqrt() + 1.0;
    let low = (mean - spread).floor().max(0.0) as u64;
    let high = ((mean + spread).ceil() as u64).min(n);
    (low..=high)
        .filter(|&x| judge(&[x, n - x], &weights, config).drift())
        .map(|x| binomial_pmf(n, x, actual))
        .sum()
}

/// Smallest sample size, up to `max_n`, at which [`detection_power`] reaches
/// `power`. Counts are discrete, so power is a sawtooth in `n`: quote a figure with
/// some margin above this minimum.
pub fn required_samples(
    declared: f64,
    actual: f64,
    power: f64,
    config: &DriftConfig,
    max_n: u64,
) -> Option<u64> {
    (config.min_samples.max(1)..=max_n)
        .find(|&n| detection_power(declared, actual, n, config) >= power)
}

fn binomial_pmf(n: u64, k: u64, p: f64) -> f64 {
    if p <= 0.0 {
        return if k == 0 { 1.0 } else { 0.0 };
    }
    if p >= 1.0 {
        return if k == n { 1.0 } else { 0.0 };
    }
    (ln_binomial(n, k) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    #[test]
    fn chi_square_matches_textbook_values() {
        // 60 vs 40 against 50/50: statistic 4, p = 0.0455 (df 1).
        let gof = chi_square_gof(&[60, 40], &[0.5, 0.5]).unwrap();
        assert!(close(gof.statistic, 4.0, 1e-12));
        assert_eq!(gof.degrees_of_freedom, 1);
        assert!(close(gof.p_value, 0.045_500_263_896, 1e-9), "{gof:?}");
        // A perfect fit has p = 1.
        let gof = chi_square_gof(&[30, 30, 40], &[0.3, 0.3, 0.4]).unwrap();
        assert!(close(gof.p_value, 1.0, 1e-12));
        assert_eq!(gof.degrees_of_freedom, 2);
    }

    #[test]
    fn chi_square_keeps_precision_for_tiny_p_values() {
        let gof = chi_square_gof(&[900, 100], &[0.5, 0.5]).unwrap();
        assert!(gof.p_value > 0.0 && gof.p_value < 1e-100, "{gof:?}");
    }

    #[test]
    fn chi_square_refuses_what_it_cannot_test() {
        assert_eq!(chi_square_gof(&[10], &[1.0]), None);
        assert_eq!(chi_square_gof(&[0, 0], &[0.5, 0.5]), None);
        assert_eq!(chi_square_gof(&[5, 5], &[0.0, 1.0]), None);
        assert_eq!(chi_square_gof(&[5, 5], &[f64::NAN, 1.0]), None);
        assert_eq!(chi_square_gof(&[5, 5, 5], &[0.5, 0.5]), None);
    }

    #[test]
    fn z_matches_alpha() {
        assert!(close(z_for_alpha(0.05), 1.959_964, 1e-5));
        assert!(close(z_for_alpha(0.001), 3.290_527, 1e-5));
    }

    #[test]
    fn wilson_bounds_match_reference_and_stay_in_unit_interval() {
        // Wilson 95 % for 8 of 10: [0.4902, 0.9433].
        let (low, high) = wilson_interval(8, 10, 1.959_964);
        assert!(
            close(low, 0.4902, 1e-4) && close(high, 0.9433, 1e-4),
            "{low} {high}"
        );
        // Never outside [0, 1], even at the edges, and not degenerate at 0 or n.
        let (low, high) = wilson_interval(0, 20, 3.29);
        assert_eq!(low, 0.0);
        assert!(high > 0.0 && high < 1.0);
        let (low, high) = wilson_interval(20, 20, 3.29);
        assert!(low > 0.0 && low < 1.0);
        assert!(close(high, 1.0, 1e-12));
        assert_eq!(wilson_interval(0, 0, 3.29), (0.0, 1.0));
    }

    #[test]
    fn wilson_interval_excludes_declared_weight_exactly_when_the_test_rejects() {
        let config = DriftConfig::default();
        let z = z_for_alpha(config.alpha);
        for n in [100u64, 250, 600] {
            for x in 0..=n {
                let (low, high) = wilson_interval(x, n, z);
                let outside = !(low..=high).contains(&0.5);
                let gof = chi_square_gof(&[x, n - x], &[0.5, 0.5]).unwrap();
                let rejects = gof.p_value < config.alpha;
                // Allow disagreement only on the boundary itself (rounding).
                if outside != rejects {
                    assert!(
                        close(gof.p_value, config.alpha, 1e-6),
                        "n={n} x={x} {gof:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn judge_requires_both_the_test_and_the_tolerance() {
        let config = DriftConfig::default();
        // Test only: 52/48 on a busy service is significant but within tolerance.
        let j = judge(&[52_000, 48_000], &[0.5, 0.5], &config);
        assert!(j.significant && !j.beyond_tolerance && !j.drift());
        // Tolerance only: 58/42 on 100 samples is beyond tolerance but not significant.
        let j = judge(&[58, 42], &[0.5, 0.5], &config);
        assert!(!j.significant && j.beyond_tolerance && !j.drift());
        // Both.
        let j = judge(&[400, 200], &[0.5, 0.5], &config);
        assert!(j.significant && j.beyond_tolerance && j.drift());
    }

    #[test]
    fn judge_does_not_test_below_min_samples_or_small_expected_counts() {
        let config = DriftConfig::default();
        let j = judge(&[99, 0], &[0.5, 0.5], &config);
        assert_eq!(j.untested, Some(Untested::TooFew { n: 99, min: 100 }));
        assert!(j.gof.is_none() && !j.drift());
        let j = judge(&[198, 2], &[0.99, 0.01], &config);
        assert!(
            matches!(j.untested, Some(Untested::SmallExpected { .. })),
            "{j:?}"
        );
        assert!(!j.drift());
        let j = judge(&[100], &[1.0], &config);
        assert_eq!(j.untested, Some(Untested::SingleSubset));
    }

    #[test]
    fn exact_size_of_the_rule_stays_near_alpha() {
        // The false-alarm rate per window, computed exactly, for the splits people
        // declare. Skewed splits at small n are where the chi-square tail is
        // optimistic; the bounds are the ones the module documentation states.
        let config = DriftConfig::default();
        for declared in [0.5, 0.6, 0.7, 0.8, 0.9, 0.95] {
            let mut worst = (0.0f64, 0);
            for n in (100..=1_000).chain([2_000, 5_000]) {
                let size = detection_power(declared, declared, n, &config);
                if size > worst.0 {
                    worst = (size, n);
                }
                if n >= 500 {
                    assert!(size <= 1.3 * config.alpha, "{declared} n={n}: size {size}");
                }
            }
            let bound = match declared {
                d if d <= 0.8 => 1.5,
                d if d <= 0.9 => 2.1,
                _ => 3.3,
            };
            assert!(
                worst.0 <= bound * config.alpha,
                "{declared}: size {} at n = {}",
                worst.0,
                worst.1
            );
        }
    }

    #[test]
    fn stated_sample_size_finds_a_10_point_drift_with_95_percent_power() {
        let config = DriftConfig::default();
        let minimum = required_samples(0.5, 0.6, 0.95, &config, 2_000).unwrap();
        assert_eq!(minimum, 599);
        assert!(detection_power(0.5, 0.6, minimum - 1, &config) < 0.95);
        // The sawtooth: one more sample can cost power.
        assert!(detection_power(0.5, 0.6, 600, &config) < 0.95);
        // From 610 on power stays at or above 95 %.
        for n in 610..SAMPLES_FOR_10_POINT_DRIFT + 300 {
            let power = detection_power(0.5, 0.6, n, &config);
            assert!(power >= 0.95, "n={n}: power {power}");
        }
        assert!(detection_power(0.5, 0.6, SAMPLES_FOR_10_POINT_DRIFT, &config) >= 0.975);
        // Same in the other direction (40/60).
        assert!(detection_power(0.5, 0.4, SAMPLES_FOR_10_POINT_DRIFT, &config) >= 0.95);
    }
}
