//! Simulation of the drift statistics through the engine: seeded random traffic
//! (Xoshiro256++, fixed seeds) for the window's test — its false-alarm rate under
//! correct weights, its calibration, its power against a 10-point drift at the
//! sample size the README quotes — and for the engine's decision (the sequential
//! test): no drift decided on those healthy windows, and a canary step from 90/10
//! to 50/50 mid-run.

use std::collections::HashMap;

use meshdrift::drift::{DriftConfig, DriftEngine, SAMPLES_FOR_10_POINT_DRIFT, detection_power};
use meshdrift_testkit::split_simulation::{declared, key, observation};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use statrs::function::factorial::ln_binomial;

const WINDOWS: usize = 1_000;

/// Picks a subset for one request routed independently with `weights`.
fn route(rng: &mut Xoshiro256PlusPlus, weights: &[f64]) -> usize {
    let u: f64 = rng.random();
    let mut cumulative = 0.0;
    for (i, w) in weights.iter().enumerate() {
        cumulative += w;
        if u < cumulative {
            return i;
        }
    }
    weights.len() - 1
}

/// Exact binomial and multinomial draws by inverting the distribution function:
/// one uniform number per draw instead of one per request, with each
/// Binomial(n, p) table built once, so a thousand windows of thousands of requests
/// stay fast in a debug build.
struct Sampler {
    rng: Xoshiro256PlusPlus,
    tables: HashMap<(u64, u64), Vec<f64>>,
}

impl Sampler {
    fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            tables: HashMap::new(),
        }
    }

    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let cdf = self.tables.entry((n, p.to_bits())).or_insert_with(|| {
            let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
            let mut cumulative = 0.0;
            (0..=n)
                .map(|k| {
                    cumulative +=
                        (ln_binomial(n, k) + k as f64 * ln_p + (n - k) as f64 * ln_q).exp();
                    cumulative
                })
                .collect()
        });
        let u: f64 = self.rng.random();
        (cdf.partition_point(|&c| c <= u) as u64).min(n)
    }

    /// `n` requests over `weights`, as conditional binomials.
    fn multinomial(&mut self, n: u64, weights: &[f64]) -> Vec<u64> {
        let mut left = n;
        let mut mass = 1.0;
        let mut counts = Vec::with_capacity(weights.len());
        for (i, w) in weights.iter().enumerate() {
            let count = if i + 1 == weights.len() {
                left
            } else {
                self.binomial(left, (w / mass).clamp(0.0, 1.0))
            };
            counts.push(count);
            left -= count;
            mass -= w;
        }
        counts
    }
}

/// How many windows each verdict flags: the window's own test (significant
/// at alpha and beyond the tolerance), and the engine's decision (its
/// sequential test).
#[derive(Debug, Default)]
struct Flagged {
    window_test: usize,
    decision: usize,
}

/// Runs `windows` independent windows of `n` requests routed with `actual` against
/// a split declared `declared`, and returns how many the window's test flags.
fn flagged_windows(
    windows: usize,
    config: &DriftConfig,
    declared_weights: &[f64],
    actual: &[f64],
    n: u64,
    seed: u64,
) -> usize {
    flagged_both(windows, config, declared_weights, actual, n, seed).window_test
}

/// [`flagged_windows`], with the engine's decisions counted too.
fn flagged_both(
    windows: usize,
    config: &DriftConfig,
    declared_weights: &[f64],
    actual: &[f64],
    n: u64,
    seed: u64,
) -> Flagged {
    let mut sampler = Sampler::new(seed);
    let declaration = declared(declared_weights);
    let mut flagged = Flagged::default();
    for _ in 0..windows {
        let mut engine = DriftEngine::new(config.clone()).unwrap();
        engine.declare(&key(), &declaration, 0.0);
        // Spread each subset's requests over the window, a minute apart, as closed
        // flows would arrive.
        let buckets = 10u64;
        for (subset, count) in sampler.multinomial(n, actual).into_iter().enumerate() {
            for bucket in 0..buckets {
                let share = count / buckets + u64::from(bucket < count % buckets);
                if share > 0 {
                    engine.observe(&observation(subset, share, bucket as f64 * 60.0 + 1.0));
                }
            }
        }
        let snapshot = engine.snapshot(600.0);
        let verdict = &snapshot.splits[0];
        assert_eq!(verdict.samples, n);
        let beyond_tolerance = verdict
            .subsets
            .iter()
            .any(|s| (s.observed - s.declared).abs() > config.tolerance);
        if verdict.p_value.is_some_and(|p| p < config.alpha) && beyond_tolerance {
            flagged.window_test += 1;
        }
        if verdict.drift {
            flagged.decision += 1;
        }
    }
    flagged
}

/// Upper limit of false alarms in `WINDOWS` windows at `rate`: the expectation
/// plus four Poisson standard deviations, and one for discreteness.
fn slack(rate: f64) -> usize {
    let expected = rate * WINDOWS as f64;
    (expected + 4.0 * expected.sqrt() + 1.0).ceil() as usize
}

#[test]
fn false_alarm_rate_under_correct_weights_stays_within_alpha() {
    let config = DriftConfig::default();
    let cases: [(&[f64], u64, u64); 5] = [
        (&[0.5, 0.5], config.min_samples, 1),
        (&[0.5, 0.5], SAMPLES_FOR_10_POINT_DRIFT, 2),
        (&[0.9, 0.1], 200, 3),
        (&[0.5, 0.3, 0.2], 300, 4),
        (&[0.25, 0.25, 0.25, 0.25], 1_000, 5),
    ];
    for (weights, n, seed) in cases {
        let Flagged {
            window_test: flagged,
            decision,
        } = flagged_both(WINDOWS, &config, weights, weights, n, seed);
        let limit = slack(config.alpha);
        eprintln!(
            "correct weights {weights:?}, n = {n}: {flagged} false alarms of the window's test and {decision} decisions of drift in {WINDOWS} windows"
        );
        assert!(
            flagged <= limit,
            "{weights:?} n={n}: {flagged} false alarms in {WINDOWS} windows (limit {limit})"
        );
        // The decision's bound is a year between false alarms of a split: a
        // thousand windows of ten buckets are 28 hours of them.
        assert_eq!(
            decision, 0,
            "{weights:?} n={n}: the sequential test decided drift in {decision} windows"
        );
    }
}

#[test]
fn p_values_are_calibrated_at_a_looser_alpha() {
    // At alpha 0.001 a miscalibrated test hides in the noise; at 0.05 with no
    // tolerance the rate must sit near 5 %, neither far above nor far below.
    let config = DriftConfig {
        alpha: 0.05,
        tolerance: 0.0,
        ..DriftConfig::default()
    };
    for (weights, n, seed) in [
        (&[0.5, 0.5][..], 400u64, 11u64),
        (&[0.8, 0.2][..], 400, 12),
        (&[0.5, 0.3, 0.2][..], 400, 13),
    ] {
        let flagged = flagged_windows(WINDOWS, &config, weights, weights, n, seed);
        let expected = config.alpha * WINDOWS as f64;
        let sd = (expected * (1.0 - config.alpha)).sqrt();
        eprintln!("alpha 0.05, {weights:?}, n = {n}: {flagged} flagged in {WINDOWS} windows");
        assert!(
            (flagged as f64 - expected).abs() <= 4.0 * sd,
            "{weights:?} n={n}: {flagged} flagged, expected {expected} ± {:.0}",
            4.0 * sd
        );
    }
}

#[test]
fn ten_point_drift_is_caught_with_95_percent_power_at_the_stated_sample_size() {
    let config = DriftConfig::default();
    let n = SAMPLES_FOR_10_POINT_DRIFT;
    for (actual, seed) in [([0.6, 0.4], 21u64), ([0.4, 0.6], 22)] {
        let flagged = flagged_windows(WINDOWS, &config, &[0.5, 0.5], &actual, n, seed);
        eprintln!("declared 50/50, actual {actual:?}, n = {n}: caught {flagged} of {WINDOWS}");
        assert!(
            flagged * 100 >= 95 * WINDOWS,
            "{actual:?}: caught {flagged} of {WINDOWS} windows at n = {n}"
        );
        // The simulation agrees with the exact power (97.9 %) within sampling error.
        let exact = detection_power(0.5, actual[0], n, &config);
        let sd = (exact * (1.0 - exact) / WINDOWS as f64).sqrt();
        let simulated = flagged as f64 / WINDOWS as f64;
        assert!(
            (simulated - exact).abs() <= 4.0 * sd,
            "simulated {simulated} vs exact {exact}"
        );
    }
}

#[test]
fn a_drift_smaller_than_the_tolerance_is_not_an_alarm_however_busy() {
    // 52/48 against 50/50 is significant at this volume but not worth paging for.
    let config = DriftConfig::default();
    let flagged = flagged_both(200, &config, &[0.5, 0.5], &[0.52, 0.48], 10_000, 31);
    assert_eq!(
        (flagged.window_test, flagged.decision),
        (0, 0),
        "{flagged:?}"
    );
}

/// Traffic for `seconds` at `rate` requests per second from `start`, routed with
/// the weights `weights_at(t)` returns, one observation per request.
fn run_traffic(
    engine: &mut DriftEngine,
    rng: &mut Xoshiro256PlusPlus,
    start: f64,
    seconds: f64,
    rate: f64,
    weights_at: impl Fn(f64) -> [f64; 2],
    mut after_each_second: impl FnMut(&mut DriftEngine, f64),
) {
    let mut t = start;
    let mut next_second = start.floor() + 1.0;
    while t < start + seconds {
        let weights = weights_at(t);
        engine.observe(&observation(route(rng, &weights), 1, t));
        t += 1.0 / rate;
        while t >= next_second {
            after_each_second(engine, next_second);
            next_second += 1.0;
        }
    }
}

#[test]
fn canary_step_followed_by_traffic_raises_no_false_alarm() {
    let config = DriftConfig::default();
    for seed in 0..10u64 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(100 + seed);
        let mut engine = DriftEngine::new(config.clone()).unwrap();
        let step = 600.0;
        // Proxies pick up the new weights some seconds after the change (< grace).
        let lag = 2.0 + rng.random::<f64>() * 20.0;
        engine.declare(&key(), &declared(&[0.9, 0.1]), 0.0);
        let mut alarms = Vec::new();
        let mut stepped = false;
        run_traffic(
            &mut engine,
            &mut rng,
            0.0,
            1_500.0,
            10.0,
            |t| {
                if t < step + lag {
                    [0.9, 0.1]
                } else {
                    [0.5, 0.5]
                }
            },
            |engine, now| {
                if !stepped && now >= step {
                    engine.declare(&key(), &declared(&[0.5, 0.5]), now);
                    stepped = true;
                }
                if (now as u64).is_multiple_of(15) {
                    engine.expire(now);
                    let snapshot = engine.snapshot(now);
                    if snapshot.splits[0].drift {
                        alarms.push((now, snapshot.splits[0].reason.clone()));
                    }
                }
            },
        );
        assert!(alarms.is_empty(), "seed {seed}: false alarms {alarms:?}");
        // And the window does cover the new generation by the end.
        let verdict = &engine.snapshot(1_500.0).splits[0];
        assert!(verdict.samples > 5_000, "{verdict:?}");
        assert!(verdict.p_value.is_some());
    }
}

#[test]
fn canary_step_not_followed_by_traffic_is_flagged_after_the_grace_period() {
    // The same step with proxies stuck on the old weights: the check has teeth.
    let config = DriftConfig::default();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(200);
    let mut engine = DriftEngine::new(config.clone()).unwrap();
    engine.declare(&key(), &declared(&[0.9, 0.1]), 0.0);
    let mut first_alarm = None;
    let mut stepped = false;
    run_traffic(
        &mut engine,
        &mut rng,
        0.0,
        900.0,
        10.0,
        |_| [0.9, 0.1],
        |engine, now| {
            if !stepped && now >= 600.0 {
                engine.declare(&key(), &declared(&[0.5, 0.5]), now);
                stepped = true;
            }
            if first_alarm.is_none() && engine.snapshot(now).splits[0].drift {
                first_alarm = Some(now);
            }
        },
    );
    let first_alarm = first_alarm.expect("stale 90/10 after a 50/50 step is drift");
    assert!(
        first_alarm > 630.0,
        "flagged at {first_alarm}, before the grace period ended"
    );
    assert!(first_alarm < 700.0, "flagged only at {first_alarm}");
}
