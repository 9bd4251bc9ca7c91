//! Drift alarms under continuous evaluation: a windowed chi-square verdict
//! against the sequential e-detector (`meshdrift::drift::SequentialDetector`)
//! that decides the engine's verdicts, on simulated traffic.
//!
//! Each run is one split key: one day of healthy traffic routed with the
//! declared weights, then a 10-point drift that lasts until both methods have
//! found it (and two hours more, to see whether their verdicts hold). Requests
//! arrive as a Poisson process at 1, 10 or 100 per second; each 10-second
//! bucket's count and its split are exact draws (inversion of the Poisson and
//! binomial distribution functions) from a seeded Xoshiro256++.
//!
//! * The windowed chi-square is the engine's window test (`DriftEngine`,
//!   default configuration: 10-minute window of 10-second buckets, alpha
//!   0.001, tolerance 0.05, min_samples 100), snapshotted every 30 s, as a
//!   verdict of its own: significant and beyond the tolerance.
//! * The sequential detector sees the same traffic as the agent's engine
//!   feeds it (10-second batches, the 5-point band), and with its own
//!   defaults (30-second batches, no band) for comparison.
//!
//! Printed: a markdown table of false alarms per day on the healthy days, one
//! of the delay to the first alarm after the drift began, and a sweep of the
//! detector's settings (prior concentration, threshold, thinning of starts)
//! on the same seeds. `cargo bench -p meshdrift-agent --bench drift_alarms`
//! for the figures in BENCHMARKS.md; `-- --quick` (or `DRIFT_ALARMS_QUICK=1`)
//! for a smoke run of a few seconds.

// The benchmark links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use meshdrift::drift::{DriftConfig, DriftEngine, SequentialConfig, SequentialDetector};
use meshdrift_testkit::split_simulation::{declared, key, observation};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use statrs::function::factorial::ln_binomial;

/// Seeds are `SEED + 1 000 000 · scenario + 100 000 · rate + run`.
const SEED: u64 = 0x6d65_7368_6472_0000;
const BUCKET: f64 = 10.0;
/// Evaluation step of both methods.
const STEP: f64 = 30.0;
const HEALTHY: f64 = 86_400.0;
/// How long the verdicts are watched after their first alarm.
const AFTER: f64 = 7_200.0;
/// A drift not found this long after it began counts as not found.
const GIVE_UP: f64 = 12.0 * 3_600.0;
const RATES: [f64; 3] = [1.0, 10.0, 100.0];

struct Scenario {
    declared: &'static [f64],
    drifted: &'static [f64],
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        declared: &[0.9, 0.1],
        drifted: &[0.8, 0.2],
    },
    Scenario {
        declared: &[0.5, 0.5],
        drifted: &[0.6, 0.4],
    },
    // The first subset gains 10 points, taken from the others in proportion.
    Scenario {
        declared: &[0.5, 0.3, 0.2],
        drifted: &[0.6, 0.24, 0.16],
    },
];

fn split_label(weights: &[f64]) -> String {
    weights
        .iter()
        .map(|w| format!("{:.0}", w * 100.0))
        .collect::<Vec<_>>()
        .join("/")
}

struct Plan {
    quick: bool,
    runs: usize,
    sweep_runs: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var_os("DRIFT_ALARMS_QUICK").is_some_and(|v| v != "0");
        if quick {
            Plan {
                quick,
                runs: 4,
                sweep_runs: 8,
            }
        } else {
            Plan {
                quick,
                runs: 300,
                sweep_runs: 200,
            }
        }
    }
}

/// Exact Poisson and binomial draws by inverting their distribution functions,
/// each table built once.
struct Sampler {
    rng: Xoshiro256PlusPlus,
    /// By mean.
    poisson: Vec<(f64, Vec<f64>)>,
    /// By success probability, then by the number of trials. A run draws with
    /// a handful of probabilities only, so a list beats hashing every draw.
    binomial: Vec<(f64, Vec<Vec<f64>>)>,
}

impl Sampler {
    fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            poisson: Vec::new(),
            binomial: Vec::new(),
        }
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        let index = match self.poisson.iter().position(|(m, _)| *m == mean) {
            Some(index) => index,
            None => {
                // Beyond 15 standard deviations the mass is below 1e-40.
                let last = (mean + 15.0 * mean.sqrt() + 30.0).ceil() as u64;
                let mut cumulative = 0.0;
                let mut ln_factorial = 0.0;
                let cdf = (0..=last)
                    .map(|k| {
                        if k > 0 {
                            ln_factorial += (k as f64).ln();
                        }
                        cumulative += (k as f64 * mean.ln() - mean - ln_factorial).exp();
                        cumulative
                    })
                    .collect();
                self.poisson.push((mean, cdf));
                self.poisson.len() - 1
            }
        };
        let u: f64 = self.rng.random();
        self.poisson[index].1.partition_point(|&c| c <= u) as u64
    }

    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if p <= 0.0 || n == 0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let index = match self.binomial.iter().position(|(q, _)| *q == p) {
            Some(index) => index,
            None => {
                self.binomial.push((p, Vec::new()));
                self.binomial.len() - 1
            }
        };
        let tables = &mut self.binomial[index].1;
        let n_index = n as usize;
        if tables.len() <= n_index {
            tables.resize(n_index + 1, Vec::new());
        }
        let cdf = &mut tables[n_index];
        if cdf.is_empty() {
            let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
            let mut cumulative = 0.0;
            cdf.extend((0..=n).map(|k| {
                cumulative += (ln_binomial(n, k) + k as f64 * ln_p + (n - k) as f64 * ln_q).exp();
                cumulative
            }));
        }
        let u: f64 = self.rng.random();
        (cdf.partition_point(|&c| c <= u) as u64).min(n)
    }

    /// `n` requests over `weights`, as conditional binomials.
    fn multinomial(&mut self, n: u64, weights: &[f64], out: &mut [u64]) {
        let mut left = n;
        let mut mass = 1.0;
        for (i, w) in weights.iter().enumerate() {
            let count = if i + 1 == weights.len() {
                left
            } else {
                self.binomial(left, (w / mass).clamp(0.0, 1.0))
            };
            out[i] = count;
            left -= count;
            mass -= w;
        }
    }
}

/// The traffic of one run, one 10-second bucket at a time.
struct Traffic {
    sampler: Sampler,
    rate: f64,
    declared: &'static [f64],
    drifted: &'static [f64],
    change: f64,
}

impl Traffic {
    fn new(seed: u64, rate: f64, scenario: &Scenario, healthy: f64) -> Self {
        let mut sampler = Sampler::new(seed);
        // The drift begins at a bucket boundary within a 30-second batch.
        let offset = (sampler.rng.random::<f64>() * 3.0).floor().min(2.0) * BUCKET;
        Self {
            sampler,
            rate,
            declared: scenario.declared,
            drifted: scenario.drifted,
            change: healthy + offset,
        }
    }

    fn bucket(&mut self, start: f64, counts: &mut [u64]) {
        let weights = if start >= self.change {
            self.drifted
        } else {
            self.declared
        };
        let n = self.sampler.poisson(self.rate * BUCKET);
        self.sampler.multinomial(n, weights, counts);
    }
}

/// One method's record over one run.
#[derive(Default, Clone)]
struct Track {
    shown: bool,
    /// Episodes (the verdict turning on) and raw alarms while all traffic
    /// seen was healthy.
    false_episodes: u64,
    false_alarms: u64,
    first_alarm: Option<f64>,
    /// Evaluations after the first alarm, within `AFTER`, and how many of
    /// them showed drift.
    after: u64,
    after_shown: u64,
}

impl Track {
    /// Records one evaluation at `now`: `alarm` is a new alarm raised now,
    /// `shown` whether the verdict shows drift.
    fn record(&mut self, now: f64, change: f64, alarm: bool, shown: bool) {
        let rising = shown && !self.shown;
        self.shown = shown;
        if now <= change {
            self.false_episodes += u64::from(rising);
            self.false_alarms += u64::from(alarm);
            return;
        }
        match self.first_alarm {
            None if alarm => self.first_alarm = Some(now),
            Some(first) if now - first <= AFTER => {
                self.after += 1;
                self.after_shown += u64::from(shown);
            }
            _ => {}
        }
    }

    fn delay(&self, change: f64) -> f64 {
        self.first_alarm.map_or(f64::INFINITY, |at| at - change)
    }

    fn settled(&self, now: f64) -> bool {
        self.first_alarm.is_some_and(|first| now - first >= AFTER)
    }
}

/// A sequential detector a run feeds, with its own batches.
struct Contender {
    detector: SequentialDetector,
    buckets_per_batch: u64,
    batch_counts: Vec<u64>,
    track: Track,
}

impl Contender {
    fn new(weights: &[f64], config: SequentialConfig) -> Self {
        let buckets_per_batch = (config.batch.as_secs_f64() / BUCKET).round().max(1.0) as u64;
        Self {
            detector: SequentialDetector::new(weights, config).unwrap(),
            buckets_per_batch,
            batch_counts: vec![0; weights.len()],
            track: Track::default(),
        }
    }
}

struct RunResult {
    change: f64,
    chi_square: Track,
    contenders: Vec<Track>,
}

/// The window's own verdict, as the engine decided before its sequential
/// test: the chi-square significant at alpha and a share beyond the tolerance.
fn windowed_drift(split: &meshdrift::report::SplitVerdict) -> bool {
    let config = DriftConfig::default();
    split.p_value.is_some_and(|p| p < config.alpha)
        && split
            .subsets
            .iter()
            .any(|s| (s.observed - s.declared).abs() > config.tolerance)
}

/// One run: healthy traffic for `healthy` seconds, then the drift. With
/// `with_engine` the windowed chi-square is evaluated too, and the run goes on
/// until it and the first detector have been watched for `AFTER` after their
/// first alarms; without, until every detector has alarmed. Either way it
/// stops at `GIVE_UP`.
fn run(
    seed: u64,
    rate: f64,
    scenario: &Scenario,
    healthy: f64,
    with_engine: bool,
    configs: &[SequentialConfig],
) -> RunResult {
    let mut traffic = Traffic::new(seed, rate, scenario, healthy);
    let change = traffic.change;
    let k = scenario.declared.len();
    let mut engine = DriftEngine::new(DriftConfig::default()).unwrap();
    let declaration = declared(scenario.declared);
    engine.declare(&key(), &declaration, 0.0);
    let mut contenders: Vec<Contender> = configs
        .iter()
        .map(|c| Contender::new(scenario.declared, c.clone()))
        .collect();
    let mut chi_square = Track::default();
    let mut bucket_counts = vec![0u64; k];
    let buckets_per_step = (STEP / BUCKET).round() as u64;
    let mut bucket = 0u64;
    loop {
        let start = bucket as f64 * BUCKET;
        traffic.bucket(start, &mut bucket_counts);
        bucket += 1;
        let now = bucket as f64 * BUCKET;
        for contender in &mut contenders {
            for (total, &count) in contender.batch_counts.iter_mut().zip(&bucket_counts) {
                *total += count;
            }
            if bucket.is_multiple_of(contender.buckets_per_batch) {
                let outcome = contender
                    .detector
                    .observe_batch(&contender.batch_counts)
                    .unwrap();
                let shown = contender.detector.alarm();
                contender
                    .track
                    .record(now, change, outcome.alarm_raised, shown);
                contender.batch_counts.fill(0);
            }
        }
        if with_engine {
            for (subset, &count) in bucket_counts.iter().enumerate() {
                if count > 0 {
                    engine.observe(&observation(subset, count, start + BUCKET / 2.0));
                }
            }
            if bucket.is_multiple_of(buckets_per_step) {
                // As the agent does with every observation: the declaration
                // stays fresh, so the key is kept however quiet it is.
                engine.declare(&key(), &declaration, now);
                engine.expire(now);
                let drift = windowed_drift(&engine.snapshot(now).splits[0]);
                // The windowed verdict's alarm is its showing drift: the first
                // evaluation after the onset that does is its detection.
                chi_square.record(now, change, drift, drift);
            }
        }
        if now > change && bucket.is_multiple_of(buckets_per_step) {
            let done = if with_engine {
                chi_square.settled(now)
                    && contenders.first().is_none_or(|c| c.track.settled(now))
                    && contenders.iter().all(|c| c.track.first_alarm.is_some())
            } else {
                contenders.iter().all(|c| c.track.first_alarm.is_some())
            };
            if done || now - change >= GIVE_UP {
                break;
            }
        }
    }
    RunResult {
        change,
        chi_square,
        contenders: contenders.into_iter().map(|c| c.track).collect(),
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The nearest-rank quantile: an actual run's delay.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn human(seconds: f64) -> String {
    if !seconds.is_finite() {
        format!("> {:.0} h", GIVE_UP / 3_600.0)
    } else if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7_200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3_600.0)
    }
}

fn delays(tracks: &[(&Track, f64)]) -> (f64, f64) {
    let mut values: Vec<f64> = tracks.iter().map(|(t, change)| t.delay(*change)).collect();
    values.sort_by(f64::total_cmp);
    (quantile(&values, 0.5), quantile(&values, 0.9))
}

fn shown_share(tracks: &[&Track]) -> String {
    let after: u64 = tracks.iter().map(|t| t.after).sum();
    let shown: u64 = tracks.iter().map(|t| t.after_shown).sum();
    if after == 0 {
        "—".to_owned()
    } else {
        format!("{:.1} %", 100.0 * shown as f64 / after as f64)
    }
}

fn per_day(count: u64, days: f64) -> String {
    format!("{:.3} ({count})", count as f64 / days)
}

fn seed_of(scenario: usize, rate: usize, run: usize) -> u64 {
    SEED + 1_000_000 * scenario as u64 + 100_000 * rate as u64 + run as u64
}

fn main() {
    let plan = Plan::from_env();
    let began = Instant::now();
    let day = Duration::from_secs(86_400);
    // The detector as the agent runs it: its engine's settings (one batch per
    // 10-second bucket, the 5-point tolerance band).
    let main_config = match DriftEngine::new(DriftConfig::default()) {
        Ok(engine) => engine.sequential_config().clone(),
        Err(e) => panic!("the engine's default configuration is refused: {e}"),
    };
    let day_config = SequentialConfig {
        mean_time_between_false_alarms: day,
        ..main_config.clone()
    };
    let unbanded_config = SequentialConfig::default();
    // Without the band the null is the weights themselves, where the bound
    // is tight enough to be seen at a day's threshold.
    let unbanded_day_config = SequentialConfig {
        mean_time_between_false_alarms: day,
        ..SequentialConfig::default()
    };
    let configs = [
        main_config.clone(),
        day_config,
        unbanded_config.clone(),
        unbanded_day_config,
    ];
    println!(
        "Drift alarms under continuous evaluation: {} runs per cell, seeds {SEED:#x} + 1000000·scenario + 100000·rate + run{}",
        plan.runs,
        if plan.quick { " (quick)" } else { "" }
    );
    println!(
        "Sequential detector as the agent runs it: batch {} s, tolerance {}, concentration {}, threshold A = {:.0} (mean time between false alarms ≥ {} days), {} starts per octave, at most {}, hold {} min\n",
        main_config.batch.as_secs(),
        main_config.tolerance,
        main_config.concentration,
        main_config.threshold(),
        main_config.mean_time_between_false_alarms.as_secs() / 86_400,
        main_config.starts_per_octave,
        main_config.max_starts,
        main_config.hold.as_secs() / 60
    );

    let mut false_rows = Vec::new();
    let mut delay_rows = Vec::new();
    for (s, scenario) in SCENARIOS.iter().enumerate() {
        for (r, &rate) in RATES.iter().enumerate() {
            let results: Vec<RunResult> = (0..plan.runs)
                .map(|i| run(seed_of(s, r, i), rate, scenario, HEALTHY, true, &configs))
                .collect();
            let days: f64 = results.iter().map(|x| x.change / 86_400.0).sum();
            let sum = |f: &dyn Fn(&RunResult) -> u64| results.iter().map(f).sum::<u64>();
            false_rows.push(format!(
                "| {} | {rate:.0} | {days:.0} | {} | {} | {} | {} |",
                split_label(scenario.declared),
                per_day(sum(&|x| x.chi_square.false_episodes), days),
                per_day(sum(&|x| x.contenders[0].false_alarms), days),
                per_day(sum(&|x| x.contenders[1].false_alarms), days),
                per_day(sum(&|x| x.contenders[3].false_alarms), days),
            ));
            let chi: Vec<(&Track, f64)> =
                results.iter().map(|x| (&x.chi_square, x.change)).collect();
            let seq: Vec<(&Track, f64)> = results
                .iter()
                .map(|x| (&x.contenders[0], x.change))
                .collect();
            let unbanded: Vec<(&Track, f64)> = results
                .iter()
                .map(|x| (&x.contenders[2], x.change))
                .collect();
            let (chi_median, chi_p90) = delays(&chi);
            let (seq_median, seq_p90) = delays(&seq);
            let (unbanded_median, unbanded_p90) = delays(&unbanded);
            delay_rows.push(format!(
                "| {} → {} | {rate:.0} | {} / {} | {} | {} / {} | {} | {} / {} |",
                split_label(scenario.declared),
                split_label(scenario.drifted),
                human(chi_median),
                human(chi_p90),
                shown_share(&chi.iter().map(|(t, _)| *t).collect::<Vec<_>>()),
                human(seq_median),
                human(seq_p90),
                shown_share(&seq.iter().map(|(t, _)| *t).collect::<Vec<_>>()),
                human(unbanded_median),
                human(unbanded_p90),
            ));
            eprintln!(
                "[drift_alarms] {} at {rate} requests/s done after {:.0} s",
                split_label(scenario.declared),
                began.elapsed().as_secs_f64()
            );
        }
    }

    println!("False alarms per day on healthy traffic (count in brackets):\n");
    println!(
        "| split | requests/s | days | windowed χ², alarm episodes | sequential as the agent runs it (A for 365 days), alarms | the same with A for 1 day, alarms (bound: 1 per day) | without the band, 30 s batches, A for 1 day (bound: 1 per day) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &false_rows {
        println!("{row}");
    }
    println!(
        "\nDelay from the drift's onset to the first alarm, median / 90th percentile over {} runs, and the share of the evaluations in the {} h after that first alarm whose verdict shows drift:\n",
        plan.runs,
        AFTER / 3_600.0
    );
    println!(
        "| drift | requests/s | windowed χ² | χ² shown after | sequential as the agent runs it | sequential shown after | sequential without the band, 30 s batches |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &delay_rows {
        println!("{row}");
    }

    sweep(&plan, &unbanded_config);
    eprintln!(
        "[drift_alarms] finished in {:.0} s",
        began.elapsed().as_secs_f64()
    );
}

/// Median delays of the sequential detector alone under other settings, on
/// the same seeds, after one hour of healthy traffic.
fn sweep(plan: &Plan, base: &SequentialConfig) {
    let year = 365 * 86_400;
    let variants: Vec<(String, SequentialConfig)> = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0]
        .into_iter()
        .map(|c| {
            (
                format!("c = {c}"),
                SequentialConfig {
                    concentration: c,
                    ..base.clone()
                },
            )
        })
        .chain([
            (
                "A for 1 day".to_owned(),
                SequentialConfig {
                    mean_time_between_false_alarms: Duration::from_secs(86_400),
                    ..base.clone()
                },
            ),
            (
                "A for 30 days".to_owned(),
                SequentialConfig {
                    mean_time_between_false_alarms: Duration::from_secs(30 * 86_400),
                    ..base.clone()
                },
            ),
            (
                "A for 10 years".to_owned(),
                SequentialConfig {
                    mean_time_between_false_alarms: Duration::from_secs(10 * year),
                    ..base.clone()
                },
            ),
            (
                "8 starts per octave, at most 80".to_owned(),
                SequentialConfig {
                    starts_per_octave: 8,
                    max_starts: 80,
                    ..base.clone()
                },
            ),
            (
                "2 starts per octave, at most 24".to_owned(),
                SequentialConfig {
                    starts_per_octave: 2,
                    max_starts: 24,
                    ..base.clone()
                },
            ),
            (
                "every start kept (up to 10 000)".to_owned(),
                SequentialConfig {
                    starts_per_octave: 1_000_000,
                    max_starts: 10_000,
                    ..base.clone()
                },
            ),
            (
                "batch 10 s".to_owned(),
                SequentialConfig {
                    batch: Duration::from_secs(10),
                    ..base.clone()
                },
            ),
        ])
        .collect();
    let rates = [1.0, 10.0];
    let mut header = "| setting |".to_owned();
    let mut rule = "|---|".to_owned();
    for scenario in &SCENARIOS {
        for rate in rates {
            header.push_str(&format!(
                " {} → {} at {rate:.0}/s |",
                split_label(scenario.declared),
                split_label(scenario.drifted)
            ));
            rule.push_str("---|");
        }
    }
    println!(
        "\nSequential detector settings, each row one change from the defaults, median delay over {} runs (same seeds for every setting; one hour of healthy traffic first):\n",
        plan.sweep_runs
    );
    println!("{header}\n{rule}");
    for (name, config) in &variants {
        let mut row = format!("| {name} |");
        for (s, scenario) in SCENARIOS.iter().enumerate() {
            for (r, &rate) in rates.iter().enumerate() {
                let mut values: Vec<f64> = (0..plan.sweep_runs)
                    .map(|i| {
                        let result = run(
                            seed_of(s, r, i) ^ 0x5757,
                            rate,
                            scenario,
                            3_600.0,
                            false,
                            std::slice::from_ref(config),
                        );
                        result.contenders[0].delay(result.change)
                    })
                    .collect();
                values.sort_by(f64::total_cmp);
                row.push_str(&format!(" {} |", human(quantile(&values, 0.5))));
            }
        }
        println!("{row}");
    }
}
