//! An anytime-valid change detector for a split: how surprising the counts
//! since each of several past moments are under the declared weights, summed
//! into one statistic whose false alarms are bounded per unit of time rather
//! than per evaluation.
//!
//! # The e-value of one start
//!
//! For the counts `x` (one per subset) routed since some start, against the
//! declared weights `p`, the evidence is the Dirichlet-multinomial mixture
//! Bayes factor of Lindon & Malek (2022, "Anytime-valid inference for
//! multinomial count data"):
//!
//! ```text
//! ln E = ln B(a + x) − ln B(a) − Σ xᵢ ln pᵢ,    aᵢ = c·pᵢ
//! ```
//!
//! with `B` the multivariate beta function: the probability of the observed
//! sequence under a Dirichlet(`a`) mixture of splits over its probability under
//! `p`. When every request is routed independently with the weights `p`, `E` is
//! a nonnegative martingale in the requests with mean 1, so by Ville's
//! inequality it exceeds `1/α` at any time at all with probability at most `α`.
//! It is exact at any sample size: there is no asymptotic tail to distrust at
//! small counts and so no minimum sample.
//!
//! The prior is centred on the declared weights with concentration `c`
//! ([`SequentialConfig::concentration`]); a Dirichlet with `c` puts a subset's
//! share a standard deviation `√(p(1 − p)/(c + 1))` from its weight, so `c`
//! says which drifts the evidence is tuned for (see its documentation for the
//! value and the simulation that chose it).
//!
//! With a practical tolerance ([`SequentialConfig::tolerance`] above 0) the
//! null becomes every split within that many points of the declared one, and
//! the denominator is the likelihood of the best such split, not of `p`: the
//! ratio is at most the martingale of whichever fixed split inside the band
//! really routes the traffic, so it keeps its guarantee for each of them.
//!
//! # The detector
//!
//! Time is cut into batches ([`SequentialConfig::batch`], one evaluation step).
//! At every batch boundary a new start begins; after each batch the statistic
//! is the Shiryaev–Roberts-type e-detector of Shin, Ramdas & Rinaldo
//! ("E-detectors", 2023)
//!
//! ```text
//! Mₙ = Σ over kept starts j of E(counts since j)
//! ```
//!
//! and an alarm is raised when `Mₙ ≥ A`. With every start kept, `Mₙ − n` is a
//! martingale under the null (each new start adds a term of mean 1), so the
//! expected number of batches before a false alarm is at least `A`: the mean
//! time between false alarms is at least `A ×` the batch duration whatever the
//! request rate, which may vary from batch to batch and be zero. The
//! threshold is derived from that target
//! ([`SequentialConfig::mean_time_between_false_alarms`]).
//!
//! The detector keeps a bounded set of starts (see [`SequentialDetector`]).
//! Dropping a term only lowers `Mₙ` at every time, so the thinned detector
//! alarms no earlier than the full one on the same traffic and the bound holds.
//!
//! # After an alarm
//!
//! An alarm clears every start and the detector begins afresh, and the
//! verdict ([`SequentialDetector::alarm`]) stays on for
//! [`SequentialConfig::hold`] after the latest alarm. Three choices were
//! weighed:
//!
//! * *Alarm while `Mₙ ≥ A`, without restarting:* the starts that saw the drift
//!   keep its evidence long after it ends. An hour of a 10-point drift at
//!   100 requests/s is worth thousands of nats, which healthy traffic dilutes
//!   only in proportion to its own length, so the alert would hold for days
//!   after a fix. And under the null, once `Mₙ` is near `A` it may cross it
//!   again and again: nothing bounds the number of false alarm episodes.
//! * *Latch until the declared split changes:* one transient incident, a proxy
//!   late by a few minutes, would alert until the next policy change.
//! * *Restart at the alarm and hold the verdict* (chosen): under the null the
//!   traffic after an alarm is independent of the traffic before it, so the
//!   times between false alarms are independent runs of a fresh detector, each
//!   at least `A` batches long on average, and the long-run rate of false alarms
//!   is at most one per `A` batches. A persisting drift keeps raising alarms
//!   from fresh starts (within one batch on busy services, within the detection
//!   delay on quiet ones), and the hold bridges the gaps between them; once it
//!   ends, the verdict clears at most `hold` after the last alarm.
//!
//! # The p-value
//!
//! `1 / max over time of the largest single-start E` is not a valid p-value:
//! for one fixed start `1 / max over time of E` is (Ville), but taking the
//! largest over many starts is a multiple comparison. The detector reports
//! instead
//! `min(1, 1 / max over time of Σⱼ wⱼ·Eⱼ)` with fixed weights
//! `wⱼ = 1/(j(j + 1))` for the start at batch `j` of the policy generation
//! (they sum to 1): a weighted average of martingales that are 1 before their
//! start is itself one with mean 1, so the p-value is anytime-valid for "the
//! traffic has followed the declared weights throughout this generation".
//! Starts the detector dropped only lower the sum, so it stays valid, if
//! conservative: a start at batch `j` pays `ln(j(j + 1))` nats, about 23 after a
//! month of 30-second batches. It falls at once with a gross drift but is for
//! display; the alarm is the decision.

use std::time::Duration;

use statrs::function::gamma::ln_gamma;

/// How the sequential detector batches, thresholds and keeps its starts.
#[derive(Debug, Clone, PartialEq)]
pub struct SequentialConfig {
    /// Traffic of one evaluation step; a new start begins at every boundary.
    pub batch: Duration,
    /// The guarantee: under the declared weights the expected time between
    /// false alarms of one split is at least this long. The threshold is this
    /// over [`batch`](Self::batch), counted in batches.
    ///
    /// A year per split (`A` = 1 051 200 at 30-second batches): a mesh with a
    /// few hundred weighted routes then sees a false alarm about once a day at
    /// worst, and in the simulation far fewer (the bound is loose: with `A`
    /// set for one day the detector raised 0.02–0.21 alarms per day). Each
    /// tenfold of `A` costs `ln 10` nats more evidence, in the simulation
    /// about 20 % more delay at 1 request/s.
    pub mean_time_between_false_alarms: Duration,
    /// Concentration `c` of the Dirichlet prior `c·p`.
    ///
    /// Chosen by the `drift_alarms` benchmark's sweep (BENCHMARKS.md, "Drift
    /// alarms under continuous evaluation"): a prior tuned for drifts of about
    /// 10 points. A small `c` spreads the prior over every split, so the
    /// evidence pays a larger Occam penalty (about `(k − 1)/2 · ln(n/c)`
    /// nats) before a modest drift counts; a large `c` hugs the declared split,
    /// so a gross drift needs about `c` requests before the data outweigh the
    /// prior. In the simulated 10-point drifts at 1 and 10 requests/s, `c =
    /// 20` gave the shortest median delay or one within 15 s of it in every
    /// case; the range 10–50 is nearly flat, 2 and 300 cost up to two minutes
    /// at 1 request/s.
    pub concentration: f64,
    /// Starts kept per doubling of age once starts are older than twice this:
    /// for every age up to the oldest kept start, a start within a relative
    /// `1/(2·starts_per_octave)` of it is kept, so the evidence a drift builds
    /// from its onset is lost to thinning by at most about that fraction. With
    /// 4 (and 40 starts) the simulated delays at 1 request/s are 5–13 %
    /// longer than with every start kept, which would cost a start per batch.
    pub starts_per_octave: u32,
    /// Hard cap on starts kept; the oldest go first.
    pub max_starts: usize,
    /// The verdict stays on for this long after the latest alarm. Half an
    /// hour bridges the detection delay of a fresh start after the restart
    /// (median 6–14 minutes at 1 request/s for a 10-point drift), so a drift
    /// that persists keeps its verdict on, and the verdict clears within half
    /// an hour of the last alarm once it ends.
    pub hold: Duration,
    /// Absolute share difference within which a split counts as following its
    /// declaration (0: the weights themselves are the only null).
    ///
    /// Without one, any lasting bias is found given enough traffic: a 2-point
    /// bias on a 50/50 split at 100 requests/s within minutes. With 0.05, as
    /// the windowed test's tolerance, such biases never alarm, but a 10-point
    /// drift must show 5 points beyond the band and takes three to five times
    /// as long to find at 1–10 requests/s.
    pub tolerance: f64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        Self {
            batch: Duration::from_secs(30),
            mean_time_between_false_alarms: Duration::from_secs(365 * 86_400),
            concentration: 20.0,
            starts_per_octave: 4,
            max_starts: 40,
            hold: Duration::from_secs(30 * 60),
            tolerance: 0.0,
        }
    }
}

/// A configuration or declaration the detector cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequentialError {
    #[error("batch must be longer than zero")]
    ZeroBatch,
    #[error(
        "the mean time between false alarms ({target:?}) must be longer than one batch ({batch:?})"
    )]
    Target { target: Duration, batch: Duration },
    #[error("concentration must be positive and finite, got {0}")]
    Concentration(f64),
    #[error("starts per octave must be at least 1")]
    StartsPerOctave,
    #[error("the cap on starts must be at least 1")]
    MaxStarts,
    #[error("tolerance must be at least 0 and below 1, got {0}")]
    Tolerance(f64),
    #[error("a split needs at least two subsets with positive finite weights, got {0:?}")]
    Weights(Vec<f64>),
    #[error("counts for {got} subsets against {expected} declared")]
    Counts { expected: usize, got: usize },
}

impl SequentialConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), SequentialError> {
        if self.batch.is_zero() {
            return Err(SequentialError::ZeroBatch);
        }
        if self.mean_time_between_false_alarms <= self.batch {
            return Err(SequentialError::Target {
                target: self.mean_time_between_false_alarms,
                batch: self.batch,
            });
        }
        if !(self.concentration.is_finite() && self.concentration > 0.0) {
            return Err(SequentialError::Concentration(self.concentration));
        }
        if self.starts_per_octave == 0 {
            return Err(SequentialError::StartsPerOctave);
        }
        if self.max_starts == 0 {
            return Err(SequentialError::MaxStarts);
        }
        if !(self.tolerance >= 0.0 && self.tolerance < 1.0) {
            return Err(SequentialError::Tolerance(self.tolerance));
        }
        Ok(())
    }

    /// The alarm threshold `A`: the target mean time between false alarms in
    /// batches.
    pub fn threshold(&self) -> f64 {
        self.mean_time_between_false_alarms.as_secs_f64() / self.batch.as_secs_f64()
    }

    /// Batches the verdict holds after an alarm, the alarm's own included.
    fn hold_batches(&self) -> u64 {
        (self.hold.as_secs_f64() / self.batch.as_secs_f64())
            .ceil()
            .max(1.0) as u64
    }
}

/// The Dirichlet-multinomial mixture e-value of `counts` against `weights`
/// (positive, any scale) with prior concentration `concentration`, as its
/// natural logarithm. `None` when the input cannot be tested (fewer than two
/// subsets, lengths that differ, a weight or concentration that is not positive
/// and finite).
pub fn ln_e_value(counts: &[u64], weights: &[f64], concentration: f64) -> Option<f64> {
    let model = Model::new(weights, concentration, 0.0).ok()?;
    (counts.len() == model.weights.len()).then(|| model.ln_e(counts))
}

/// The declared split and the prior, with what every evaluation reuses.
#[derive(Debug, Clone)]
struct Model {
    /// Normalised declared weights.
    weights: Vec<f64>,
    ln_weights: Vec<f64>,
    /// Dirichlet prior `c·p`.
    prior: Vec<f64>,
    concentration: f64,
    /// `ln B(prior)`.
    ln_beta_prior: f64,
    /// Each subset's share bounds under the null.
    low: Vec<f64>,
    high: Vec<f64>,
    tolerance: f64,
}

impl Model {
    fn new(weights: &[f64], concentration: f64, tolerance: f64) -> Result<Self, SequentialError> {
        let total: f64 = weights.iter().sum();
        if weights.len() < 2
            || weights.iter().any(|w| !(w.is_finite() && *w > 0.0))
            || !total.is_finite()
        {
            return Err(SequentialError::Weights(weights.to_vec()));
        }
        if !(concentration.is_finite() && concentration > 0.0) {
            return Err(SequentialError::Concentration(concentration));
        }
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let prior: Vec<f64> = weights.iter().map(|w| concentration * w).collect();
        let ln_beta_prior =
            prior.iter().map(|&a| ln_gamma(a)).sum::<f64>() - ln_gamma(concentration);
        Ok(Self {
            ln_weights: weights.iter().map(|w| w.ln()).collect(),
            low: weights.iter().map(|w| (w - tolerance).max(0.0)).collect(),
            high: weights.iter().map(|w| (w + tolerance).min(1.0)).collect(),
            weights,
            prior,
            concentration,
            ln_beta_prior,
            tolerance,
        })
    }

    /// `ln E` of `counts` (as long as the weights).
    ///
    /// Written through `ln Γ(y) = (y − ½) ln y − y + g(y)` so that the terms of
    /// size `n ln n` cancel before they are added: with `yᵢ = aᵢ + xᵢ` and
    /// `Y = c + n`,
    /// `ln E = Σ xᵢ ln(yᵢ / (Y qᵢ)) + Σ aᵢ ln(yᵢ / Y) − ½ Σ ln yᵢ + ½ ln Y
    ///        + Σ g(yᵢ) − g(Y) − ln B(a)`,
    /// where `q` is the null split that fits best (`p` without a tolerance).
    /// Each term is then of the size of the evidence itself, so counts near
    /// 10¹² keep about four decimals of `ln E` where a difference of `ln Γ`
    /// values of size 10¹³ would keep two.
    fn ln_e(&self, counts: &[u64]) -> f64 {
        let n: f64 = counts.iter().map(|&x| x as f64).sum();
        if n == 0.0 {
            return 0.0;
        }
        let total = self.concentration + n;
        let ln_total = total.ln();
        let mut fitted = [0.0f64; INLINE_SUBSETS];
        let mut fitted_heap = Vec::new();
        let ln_null: &[f64] = if self.tolerance > 0.0 {
            let q = if counts.len() <= INLINE_SUBSETS {
                &mut fitted[..counts.len()]
            } else {
                fitted_heap.resize(counts.len(), 0.0);
                &mut fitted_heap[..]
            };
            self.best_null(counts, q);
            for share in q.iter_mut() {
                *share = share.ln();
            }
            q
        } else {
            &self.ln_weights
        };
        let mut ln_e = 0.5 * ln_total - stirling_remainder(total) - self.ln_beta_prior;
        for ((&x, &a), &ln_q) in counts.iter().zip(&self.prior).zip(ln_null) {
            let x = x as f64;
            let y = a + x;
            let ln_y = y.ln();
            if x > 0.0 {
                ln_e += x * (ln_y - ln_total - ln_q);
            }
            ln_e += a * (ln_y - ln_total) - 0.5 * ln_y + stirling_remainder(y);
        }
        ln_e
    }

    /// The split within the tolerance band that makes `counts` most likely,
    /// written into `q`: maximises `Σ xᵢ ln qᵢ` over `lowᵢ ≤ qᵢ ≤ highᵢ`,
    /// `Σ qᵢ = 1`. The optimum is `qᵢ = clamp(xᵢ·t, lowᵢ, highᵢ)` for the `t`
    /// where the shares sum to 1 (the Lagrange condition); the sum is
    /// piecewise linear and nondecreasing in `t`, so `t` is found exactly
    /// between its breakpoints.
    fn best_null(&self, counts: &[u64], q: &mut [f64]) {
        let share_at = |t: f64, q: &mut [f64]| -> f64 {
            let mut sum = 0.0;
            for (i, (&x, share)) in counts.iter().zip(q.iter_mut()).enumerate() {
                *share = (x as f64 * t).clamp(self.low[i], self.high[i]);
                sum += *share;
            }
            sum
        };
        // Subsets with no traffic take no part in the likelihood: start them
        // at their lowest share and give them whatever the others leave.
        // The breakpoints live on the stack for the usual handful of subsets:
        // this runs for every start at every batch.
        let mut inline = [0.0f64; 2 * INLINE_SUBSETS];
        let mut heap = Vec::new();
        let breakpoints: &mut [f64] = if counts.len() <= INLINE_SUBSETS {
            &mut inline[..]
        } else {
            heap.resize(2 * counts.len(), 0.0);
            &mut heap[..]
        };
        let mut used = 0;
        for (i, &x) in counts.iter().enumerate() {
            if x > 0 {
                breakpoints[used] = self.low[i] / x as f64;
                breakpoints[used + 1] = self.high[i] / x as f64;
                used += 2;
            }
        }
        let breakpoints = &mut breakpoints[..used];
        breakpoints.sort_unstable_by(f64::total_cmp);
        let Some(&last) = breakpoints.last() else {
            q.copy_from_slice(&self.weights);
            return;
        };
        if share_at(last, q) <= 1.0 {
            // Every subset with traffic is at its highest share and it is not
            // enough: the rest goes to the subsets without traffic.
            let mut left = 1.0 - q.iter().sum::<f64>();
            for (i, (&x, share)) in counts.iter().zip(q.iter_mut()).enumerate() {
                if x == 0 && left > 0.0 {
                    let more = (self.high[i] - *share).min(left);
                    *share += more;
                    left -= more;
                }
            }
            return;
        }
        let mut below = 0.0;
        let mut below_sum = share_at(below, q);
        for &t in breakpoints.iter() {
            let sum = share_at(t, q);
            if sum >= 1.0 {
                // Linear between `below` and `t`.
                let at = if sum > below_sum {
                    below + (t - below) * (1.0 - below_sum) / (sum - below_sum)
                } else {
                    t
                };
                share_at(at, q);
                return;
            }
            below = t;
            below_sum = sum;
        }
    }
}

/// Subsets whose best-fitting null split is kept on the stack.
const INLINE_SUBSETS: usize = 8;

/// `g(y) = ln Γ(y) − ((y − ½) ln y − y)`: Stirling's series from 10 on (the
/// next term is below 10⁻¹¹ there), `ln Γ` itself below.
fn stirling_remainder(y: f64) -> f64 {
    const HALF_LN_TWO_PI: f64 = 0.918_938_533_204_672_8;
    if y >= 10.0 {
        let r = 1.0 / y;
        let r2 = r * r;
        HALF_LN_TWO_PI + r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 / 1680.0)))
    } else {
        ln_gamma(y) - ((y - 0.5) * y.ln() - y)
    }
}

/// Counts since one start.
#[derive(Debug, Clone)]
struct Start {
    /// Batch of the generation (from 1) at which the start began.
    batch: u64,
    counts: Vec<u64>,
    ln_e: f64,
}

/// What one batch did to the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOutcome {
    /// `ln Mₙ` after the batch, before any restart.
    pub ln_statistic: f64,
    /// The statistic reached the threshold: an alarm was raised and the
    /// starts cleared.
    pub alarm_raised: bool,
}

/// The e-detector of one split (see the module documentation).
///
/// # Starts kept
///
/// A start that has seen `s` batches is kept while `s < 2m` (`m` =
/// [`SequentialConfig::starts_per_octave`]); after that, only if its batch
/// number is a multiple of `2^ℓ`, `ℓ = ⌊log₂(s/m)⌋`. Each doubling of age
/// then holds about `m` starts evenly spaced, so whenever a drift began there
/// is a start within a relative `1/(2m)` of its onset, whose evidence is at
/// most that fraction short of the ideal start's; and a start once dropped is
/// never needed again (the rule only tightens with age). With the defaults
/// (`m = 4`, cap 40) the oldest start is about 2000 batches old, 17 hours of
/// 30-second batches: a drift needing more than that much traffic to show is
/// beyond this detector.
#[derive(Debug, Clone)]
pub struct SequentialDetector {
    config: SequentialConfig,
    model: Model,
    ln_threshold: f64,
    hold_batches: u64,
    starts: Vec<Start>,
    /// Batches observed since the generation began.
    batches: u64,
    ln_statistic: f64,
    /// `ln` of the running maximum of the weighted mixture behind the p-value.
    ln_mixture_max: f64,
    alarms: u64,
    last_alarm: Option<u64>,
}

impl SequentialDetector {
    /// A detector of counts against `weights` (at least two, positive, any
    /// scale), with `config` once it is checked.
    pub fn new(weights: &[f64], config: SequentialConfig) -> Result<Self, SequentialError> {
        config.validate()?;
        let model = Model::new(weights, config.concentration, config.tolerance)?;
        Ok(Self {
            ln_threshold: config.threshold().ln(),
            hold_batches: config.hold_batches(),
            model,
            config,
            starts: Vec::new(),
            batches: 0,
            ln_statistic: f64::NEG_INFINITY,
            ln_mixture_max: f64::NEG_INFINITY,
            alarms: 0,
            last_alarm: None,
        })
    }

    pub fn config(&self) -> &SequentialConfig {
        &self.config
    }

    /// The normalised declared weights.
    pub fn weights(&self) -> &[f64] {
        &self.model.weights
    }

    /// A declared change (new weights or a new policy generation): everything
    /// observed so far is forgotten, alarms and p-value included.
    pub fn restart(&mut self, weights: &[f64]) -> Result<(), SequentialError> {
        *self = Self::new(weights, self.config.clone())?;
        Ok(())
    }

    /// Adds one batch of counts, in the order of the weights. Batches with no
    /// traffic count too: they are time passing. Counts of the wrong length
    /// leave the detector as it was.
    pub fn observe_batch(&mut self, counts: &[u64]) -> Result<BatchOutcome, SequentialError> {
        let k = self.model.weights.len();
        if counts.len() != k {
            return Err(SequentialError::Counts {
                expected: k,
                got: counts.len(),
            });
        }
        self.batches = self.batches.saturating_add(1);
        self.starts.push(Start {
            batch: self.batches,
            counts: vec![0; k],
            ln_e: 0.0,
        });
        let traffic = counts.iter().any(|&x| x > 0);
        for start in &mut self.starts {
            if traffic {
                for (total, &x) in start.counts.iter_mut().zip(counts) {
                    *total = total.saturating_add(x);
                }
                start.ln_e = self.model.ln_e(&start.counts);
            }
        }
        self.thin();

        self.ln_statistic = log_sum_exp(self.starts.iter().map(|s| s.ln_e));
        let ln_mixture = log_sum_exp(
            self.starts
                .iter()
                .map(|s| s.ln_e - p_value_weight_ln(s.batch)),
        );
        self.ln_mixture_max = self.ln_mixture_max.max(ln_mixture);

        let alarm_raised = self.ln_statistic >= self.ln_threshold;
        if alarm_raised {
            self.alarms = self.alarms.saturating_add(1);
            self.last_alarm = Some(self.batches);
            self.starts.clear();
        }
        Ok(BatchOutcome {
            ln_statistic: self.ln_statistic,
            alarm_raised,
        })
    }

    /// Drops the starts the age grid no longer keeps, then the oldest beyond
    /// the cap. Either only lowers the statistic (see the module
    /// documentation), so the false-alarm bound holds.
    fn thin(&mut self) {
        let per_octave = u64::from(self.config.starts_per_octave);
        let now = self.batches;
        self.starts.retain(|start| {
            let seen = now - start.batch + 1;
            if seen < 2 * per_octave {
                return true;
            }
            let level = (seen / per_octave).ilog2();
            start.batch.trailing_zeros() >= level
        });
        let excess = self.starts.len().saturating_sub(self.config.max_starts);
        self.starts.drain(..excess);
    }

    /// `Mₙ` after the latest batch (before the restart if it alarmed); `+∞`
    /// once it no longer fits an `f64`, and 0 before any batch.
    pub fn statistic(&self) -> f64 {
        self.ln_statistic.exp()
    }

    /// `ln Mₙ`, finite where [`statistic`](Self::statistic) overflows.
    pub fn ln_statistic(&self) -> f64 {
        self.ln_statistic
    }

    /// The alarm threshold `A`.
    pub fn threshold(&self) -> f64 {
        self.config.threshold()
    }

    /// The verdict: drift, while within the hold after the latest alarm.
    pub fn alarm(&self) -> bool {
        self.last_alarm
            .is_some_and(|at| self.batches - at < self.hold_batches)
    }

    /// Alarms raised since the generation began.
    pub fn alarms(&self) -> u64 {
        self.alarms
    }

    /// Anytime-valid p-value for "the traffic has followed the declared
    /// weights throughout this generation" (see the module documentation).
    pub fn p_value(&self) -> f64 {
        (-self.ln_mixture_max).exp().min(1.0)
    }

    /// Batches observed since the generation began.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Starts kept now.
    pub fn starts(&self) -> usize {
        self.starts.len()
    }
}

/// `ln(1/wⱼ) = ln(j(j + 1))`, the p-value's weight of the start at batch `j`.
fn p_value_weight_ln(batch: u64) -> f64 {
    let j = batch.max(1) as f64;
    j.ln() + (j + 1.0).ln()
}

/// `ln Σ exp(xᵢ)` without overflow; `−∞` for no terms.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    /// The definition, term by term, for comparison.
    fn ln_e_direct(counts: &[u64], weights: &[f64], c: f64) -> f64 {
        let total: f64 = weights.iter().sum();
        let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let n: f64 = counts.iter().map(|&x| x as f64).sum();
        let ln_beta = |a: &[f64]| {
            a.iter().map(|&v| ln_gamma(v)).sum::<f64>() - ln_gamma(a.iter().sum::<f64>())
        };
        let prior: Vec<f64> = p.iter().map(|w| c * w).collect();
        let posterior: Vec<f64> = prior
            .iter()
            .zip(counts)
            .map(|(a, &x)| a + x as f64)
            .collect();
        let _ = n;
        ln_beta(&posterior)
            - ln_beta(&prior)
            - counts
                .iter()
                .zip(&p)
                .map(|(&x, w)| x as f64 * w.ln())
                .sum::<f64>()
    }

    fn config() -> SequentialConfig {
        SequentialConfig::default()
    }

    #[test]
    fn e_value_matches_hand_computed_cases() {
        // k = 2, p = ½, c = 2: a uniform prior. Three of four to the first
        // subset: B(4, 2)/B(1, 1) = 1/20 against (½)⁴ = 1/16, so E = 16/20.
        let ln_e = ln_e_value(&[3, 1], &[1.0, 1.0], 2.0).unwrap();
        assert!(close(ln_e, (0.8f64).ln(), 1e-12), "{ln_e}");
        // k = 3, p = ⅓ each, c = 3: two requests, both to the first subset.
        // Under the mixture 1/3 · 2/4 = 1/6; under the weights 1/9: E = 1.5.
        let ln_e = ln_e_value(&[2, 0, 0], &[1.0, 1.0, 1.0], 3.0).unwrap();
        assert!(close(ln_e, (1.5f64).ln(), 1e-12), "{ln_e}");
        // k = 3, p = (½, ¼, ¼), c = 4 (a = 2, 1, 1), counts (0, 1, 1):
        // B(2, 2, 2)/B(2, 1, 1) = (1/120)/(1/6) = 1/20 against (¼)² = 1/16.
        let ln_e = ln_e_value(&[0, 1, 1], &[2.0, 1.0, 1.0], 4.0).unwrap();
        assert!(close(ln_e, (0.8f64).ln(), 1e-12), "{ln_e}");
        // Nothing observed, nothing learnt.
        assert_eq!(ln_e_value(&[0, 0], &[0.9, 0.1], 20.0), Some(0.0));
    }

    #[test]
    fn e_value_agrees_with_the_definition_across_sizes() {
        for (counts, weights) in [
            (vec![7u64, 3], vec![0.5, 0.5]),
            (vec![900, 100], vec![0.9, 0.1]),
            (vec![48_000, 52_000], vec![0.5, 0.5]),
            (vec![5, 0, 2], vec![0.5, 0.3, 0.2]),
            (vec![1_234, 901, 560], vec![0.5, 0.3, 0.2]),
        ] {
            for c in [0.5, 3.0, 20.0, 300.0] {
                let fast = ln_e_value(&counts, &weights, c).unwrap();
                let direct = ln_e_direct(&counts, &weights, c);
                assert!(
                    close(fast, direct, 1e-8 * direct.abs().max(1.0)),
                    "{counts:?} {weights:?} c={c}: {fast} vs {direct}"
                );
            }
        }
    }

    #[test]
    fn e_value_refuses_what_it_cannot_test() {
        assert_eq!(ln_e_value(&[1], &[1.0], 1.0), None);
        assert_eq!(ln_e_value(&[1, 2], &[1.0, 0.0], 1.0), None);
        assert_eq!(ln_e_value(&[1, 2], &[1.0, f64::NAN], 1.0), None);
        assert_eq!(ln_e_value(&[1, 2, 3], &[1.0, 1.0], 1.0), None);
        assert_eq!(ln_e_value(&[1, 2], &[1.0, 1.0], 0.0), None);
    }

    #[test]
    fn stirling_remainder_is_continuous_where_it_changes_method() {
        let below = ln_gamma(10.0) - (9.5 * 10f64.ln() - 10.0);
        assert!(close(stirling_remainder(10.0), below, 1e-12));
    }

    #[test]
    fn e_value_stays_finite_and_sensible_at_extreme_counts() {
        // 10¹² requests split exactly as declared: strong evidence for the
        // weights, never a number that is not finite.
        let ln_e = ln_e_value(&[500_000_000_000, 500_000_000_000], &[1.0, 1.0], 20.0).unwrap();
        assert!(ln_e.is_finite() && ln_e < -10.0, "{ln_e}");
        let ln_e = ln_e_value(&[1_000_000_000_000, 0], &[1.0, 1.0], 20.0).unwrap();
        assert!(ln_e.is_finite() && ln_e > 1e11, "{ln_e}");
        let ln_e = ln_e_value(&[u64::MAX, u64::MAX, 0], &[1.0, 1.0, 1.0], 20.0).unwrap();
        assert!(ln_e.is_finite(), "{ln_e}");
    }

    #[test]
    fn tolerance_band_fits_the_closest_split_within_it() {
        let model = Model::new(&[0.5, 0.3, 0.2], 20.0, 0.05).unwrap();
        let mut q = [0.0; 3];
        // Inside the band: the observed shares themselves.
        model.best_null(&[52, 29, 19], &mut q);
        assert!(
            close(q[0], 0.52, 1e-12) && close(q[1], 0.29, 1e-12),
            "{q:?}"
        );
        // Beyond it: the first subset held at its bound, the rest in proportion.
        model.best_null(&[80, 12, 8], &mut q);
        assert!(close(q[0], 0.55, 1e-12), "{q:?}");
        assert!(
            close(q[1], 0.27, 1e-12) && close(q[2], 0.18, 1e-12),
            "{q:?}"
        );
        assert!(close(q.iter().sum(), 1.0, 1e-12));
        // A subset without traffic at its lowest, which leaves the others
        // room: equal counts share it equally up to a bound.
        model.best_null(&[10, 10, 0], &mut q);
        assert!(close(q[0], 0.5, 1e-12), "{q:?}");
        assert!(
            close(q[1], 0.35, 1e-12) && close(q[2], 0.15, 1e-12),
            "{q:?}"
        );
        // Traffic only where even the highest share is not enough: what is
        // left goes to the subsets without traffic.
        model.best_null(&[0, 0, 10], &mut q);
        assert!(close(q[2], 0.25, 1e-12), "{q:?}");
        assert!(close(q[0], 0.5, 1e-12) && close(q[1], 0.25, 1e-12), "{q:?}");
        // A 2-point bias is no evidence against a 5-point band, however busy.
        let banded = Model::new(&[0.5, 0.5], 20.0, 0.05).unwrap();
        assert!(banded.ln_e(&[5_200_000, 4_800_000]) < 0.0);
        let exact = Model::new(&[0.5, 0.5], 20.0, 0.0).unwrap();
        assert!(exact.ln_e(&[5_200_000, 4_800_000]) > 1_000.0);
    }

    #[test]
    fn restart_clears_everything() {
        let mut detector = SequentialDetector::new(&[0.5, 0.5], config()).unwrap();
        for _ in 0..10 {
            detector.observe_batch(&[1_000, 0]).unwrap();
        }
        assert!(detector.alarm() && detector.alarms() > 0);
        assert!(detector.p_value() < 1e-100);
        detector.restart(&[0.9, 0.1]).unwrap();
        assert!(!detector.alarm());
        assert_eq!(
            (detector.alarms(), detector.starts(), detector.batches()),
            (0, 0, 0)
        );
        assert_eq!(detector.p_value(), 1.0);
        assert_eq!(detector.statistic(), 0.0);
        assert!(close(detector.weights()[0], 0.9, 1e-12));
        assert!(detector.restart(&[1.0]).is_err());
    }

    #[test]
    fn gross_drift_alarms_within_a_few_batches() {
        // Declared 50/50, really 80/20 at 3 requests per batch: the evidence
        // needs about ln A / KL ≈ 14 / 0.19 ≈ 75 requests.
        let mut detector = SequentialDetector::new(&[0.5, 0.5], config()).unwrap();
        let mut first = None;
        for batch in 1..=100u64 {
            // 80/20 exactly, spread over the batches.
            let to_first = if batch % 5 < 2 { 3 } else { 2 };
            let outcome = detector.observe_batch(&[to_first, 3 - to_first]).unwrap();
            if outcome.alarm_raised {
                first = Some(batch);
                break;
            }
        }
        let first = first.unwrap();
        assert!((20..=60).contains(&first), "alarm at batch {first}");
        assert!(detector.alarm());
        // The restart: the statistic is recomputed from fresh starts.
        detector.observe_batch(&[3, 0]).unwrap();
        assert!(detector.ln_statistic() < detector.threshold().ln());
        assert!(detector.alarm(), "the verdict holds after the alarm");
    }

    #[test]
    fn verdict_holds_then_clears() {
        let config = SequentialConfig {
            hold: Duration::from_secs(90),
            ..config()
        };
        let mut detector = SequentialDetector::new(&[0.5, 0.5], config).unwrap();
        assert!(detector.observe_batch(&[100_000, 0]).unwrap().alarm_raised);
        for _ in 0..3 {
            assert!(detector.alarm());
            detector.observe_batch(&[500, 500]).unwrap();
        }
        assert!(!detector.alarm());
        assert_eq!(detector.alarms(), 1);
    }

    #[test]
    fn exact_null_counts_never_alarm() {
        for (weights, per_batch) in [
            (vec![0.5, 0.5], vec![15u64, 15]),
            (vec![0.9, 0.1], vec![2_700, 300]),
            (vec![0.5, 0.3, 0.2], vec![5, 3, 2]),
        ] {
            let mut detector = SequentialDetector::new(&weights, config()).unwrap();
            for _ in 0..5_000 {
                let outcome = detector.observe_batch(&per_batch).unwrap();
                assert!(!outcome.alarm_raised, "{weights:?}");
            }
            assert!(!detector.alarm());
            assert!(detector.statistic() < 100.0, "{}", detector.statistic());
            assert!(detector.p_value() > 0.01, "{}", detector.p_value());
        }
    }

    #[test]
    fn false_alarms_stay_within_the_bound_on_random_null_traffic() {
        use rand::rngs::Xoshiro256PlusPlus;
        use rand::{RngExt, SeedableRng};
        // A small threshold, so that the bound is tested rather than assumed:
        // A = 50 batches allows up to one alarm per 50 batches on average.
        let config = SequentialConfig {
            mean_time_between_false_alarms: Duration::from_secs(50 * 30),
            ..config()
        };
        let weights = [0.5, 0.3, 0.2];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut detector = SequentialDetector::new(&weights, config).unwrap();
        let batches = 20_000u64;
        for _ in 0..batches {
            // Between 0 and 19 requests, each routed with the weights.
            let mut counts = [0u64; 3];
            for _ in 0..rng.random_range(0..20u32) {
                let u: f64 = rng.random();
                counts[usize::from(u >= 0.5) + usize::from(u >= 0.8)] += 1;
            }
            detector.observe_batch(&counts).unwrap();
        }
        let alarms = detector.alarms();
        eprintln!(
            "A = 50: {alarms} alarms in {batches} batches (bound {})",
            batches / 50
        );
        assert!(
            alarms * 50 <= batches,
            "{alarms} alarms in {batches} batches"
        );
        // The test has teeth: at this threshold alarms do happen.
        assert!(alarms > 0, "no alarm at all at A = 50");
    }

    #[test]
    fn starts_stay_bounded_and_cover_every_age() {
        let config = config();
        let m = u64::from(config.starts_per_octave);
        let mut detector = SequentialDetector::new(&[0.5, 0.5], config.clone()).unwrap();
        for batch in 1..=20_000u64 {
            detector.observe_batch(&[1, 1]).unwrap();
            assert!(detector.starts() <= config.max_starts);
            if batch % 997 == 0 {
                // Every age up to the oldest kept has a start within 1/(2m)
                // of it, relatively.
                let ages: Vec<u64> = detector
                    .starts
                    .iter()
                    .map(|s| batch - s.batch + 1)
                    .collect();
                let oldest = ages.iter().copied().max().unwrap();
                for age in 1..=oldest {
                    let nearest = ages.iter().map(|&a| a.abs_diff(age)).min().unwrap();
                    assert!(
                        nearest as f64 <= age as f64 / (2 * m) as f64 + 0.5,
                        "batch {batch}: age {age} is {nearest} from a start"
                    );
                }
            }
        }
        assert_eq!(detector.starts(), config.max_starts);
        let oldest = detector.batches() - detector.starts[0].batch + 1;
        assert!((1_500..4_100).contains(&oldest), "{oldest}");
    }

    #[test]
    fn quiet_and_empty_batches_are_harmless() {
        let mut detector = SequentialDetector::new(&[0.5, 0.3, 0.2], config()).unwrap();
        for _ in 0..1_000 {
            let outcome = detector.observe_batch(&[0, 0, 0]).unwrap();
            assert!(!outcome.alarm_raised);
        }
        // Every start is at E = 1: the statistic is the number of starts,
        // far below the threshold however long nothing happens.
        assert!(close(detector.statistic(), detector.starts() as f64, 1e-9));
        assert_eq!(detector.p_value(), 1.0);
        assert!(detector.observe_batch(&[1, 2]).is_err());
        assert_eq!(detector.batches(), 1_000);
    }

    #[test]
    fn extreme_counts_do_not_panic() {
        for tolerance in [0.0, 0.05] {
            let config = SequentialConfig {
                tolerance,
                ..config()
            };
            let mut detector = SequentialDetector::new(&[0.5, 0.3, 0.2], config).unwrap();
            detector
                .observe_batch(&[500_000_000_000, 300_000_000_000, 200_000_000_000])
                .unwrap();
            assert!(!detector.alarm());
            detector.observe_batch(&[u64::MAX, 0, u64::MAX]).unwrap();
            assert!(detector.alarm());
            assert!(detector.ln_statistic().is_finite());
            for _ in 0..10 {
                detector.observe_batch(&[u64::MAX, u64::MAX, 1]).unwrap();
            }
            assert!(detector.p_value() >= 0.0);
        }
    }

    #[test]
    fn threshold_follows_the_target() {
        let config = config();
        assert!(close(config.threshold(), 365.0 * 2_880.0, 1e-6));
        assert_eq!(config.hold_batches(), 60);
        assert_eq!(config.validate(), Ok(()));
        for bad in [
            SequentialConfig {
                batch: Duration::ZERO,
                ..config.clone()
            },
            SequentialConfig {
                mean_time_between_false_alarms: Duration::from_secs(30),
                ..config.clone()
            },
            SequentialConfig {
                concentration: f64::NAN,
                ..config.clone()
            },
            SequentialConfig {
                starts_per_octave: 0,
                ..config.clone()
            },
            SequentialConfig {
                max_starts: 0,
                ..config.clone()
            },
            SequentialConfig {
                tolerance: 1.0,
                ..config.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
            assert!(SequentialDetector::new(&[1.0, 1.0], bad).is_err());
        }
    }
}
