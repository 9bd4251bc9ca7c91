//! The drift engine: tallies attributed traffic in time buckets over a sliding
//! window, segmented by policy generation, and decides with an anytime-valid
//! sequential test plus a practical tolerance whether the observed split
//! differs from what the mesh declares; the window's goodness-of-fit test
//! describes the shares shown next to it.
//!
//! The module is pure: observations and declared splits in, a read-only
//! [`DriftSnapshot`] out. It imports nothing of `probe`, `inventory`, `policy`,
//! `http` or `export`, and never panics on its input.
//!
//! # The decision
//!
//! A verdict is evaluated every few seconds for weeks, so its guarantee must
//! be stated per unit of time, not per evaluation. Each key (and each client
//! pod of it, [`pods`]) has a [`SequentialDetector`] fed one batch per whole
//! bucket from the start of its policy generation ([`track`]); drift is its
//! alarm, which the bounds in `drift/sequential.rs` make rarer than once a
//! year on average per split under the declared weights (within the
//! tolerance), at any request rate. Its e-values are exact at any sample
//! size, so no minimum sample gates it. A subset with weight 0 or undeclared
//! receiving traffic, or traffic to an unexpected destination, is drift at
//! once, without statistics.
//!
//! # The window's test, and why it is set as it is
//!
//! * **Test.** Pearson's chi-square goodness-of-fit test of the counts of the
//!   subsets with a positive declared weight against those weights (`k − 1` degrees
//!   of freedom, p-value from `statrs`'s survival function so tiny p-values keep
//!   their precision). Pearson rather than G because its tail is the better
//!   approximation of the exact multinomial at the small counts a quiet client
//!   produces. Subsets with weight 0 are left out of the test (their expected
//!   count is 0, which would divide by zero) and judged on their own: any traffic
//!   to them is drift at once.
//! * **Both gates.** The window is called significant only when `p < alpha` **and** some tested
//!   subset's observed share differs from its declared weight by more than
//!   `tolerance` (absolute). The test alone flags harmless 1-point differences on
//!   busy services; the tolerance alone flags noise on quiet ones.
//! * **Intervals.** Wilson score intervals with `z = Φ⁻¹(1 − alpha/2)` (3.29 at the
//!   default alpha). For a two-subset split the chi-square statistic is the square
//!   of the score statistic, so the whiskers exclude the declared weight exactly
//!   when the test rejects the window (the sequential test decides drift).
//! * **Minimum sample.** The test runs only with at least `min_samples` (default
//!   100) counted units among tested subsets **and** an expected count of at least
//!   [`MIN_EXPECTED_COUNT`] in every tested subset (Cochran's rule). At 100 samples
//!   the 5-point tolerance is one standard error of a 50/50 share and a 10-point
//!   drift is found only 9 % of the time (31 % at 200, 57 % at 300), so a verdict
//!   on fewer would be noise; and the chi-square tail at `alpha = 0.001` is too
//!   rough to trust on fewer.
//! * **Size.** Computed exactly by enumeration for two-subset splits (tests in
//!   `stats`): the false-alarm rate per window is at most 1.5·`alpha` for splits
//!   from 50/50 to 80/20 (discreteness), 2·`alpha` at 90/10 and 3.2·`alpha` at
//!   95/5, the worst cases at 100–115 samples where the chi-square tail is lighter
//!   than the binomial's; from 500 samples on it is at most 1.2·`alpha`, and as
//!   samples grow the tolerance gate drives it towards
//!   zero, per window; not per day of overlapping windows (below).
//! * **Continuous evaluation.** `alpha` bounds the false alarms of one window,
//!   not of a verdict evaluated every 30 s for weeks: the windows overlap and
//!   each is another chance. That is why the window's test only describes
//!   (p-value, intervals, the words of the reason) and the sequential test
//!   decides. BENCHMARKS.md ("Drift alarms under continuous evaluation")
//!   measures both: alarm episodes per day on healthy traffic, and the delay
//!   before each finds a 10-point drift.
//! * **Power.** [`required_samples`] computes the exact power of this decision
//!   rule; a 10-point drift from 50/50 (60/40) is found with ≥ 95 % power from
//!   [`SAMPLES_FOR_10_POINT_DRIFT`] samples per window at the defaults.

mod config;
mod engine;
mod pods;
pub mod sequential;
mod split;
pub mod stats;
mod track;
mod transport;
mod window;

pub use config::{DriftConfig, DriftConfigError};
pub use engine::{DriftEngine, DriftSnapshot, Tally};
pub use sequential::{
    BatchOutcome, SequentialConfig, SequentialDetector, SequentialError, ln_e_value,
};
pub use split::undeclared_traffic;
pub use stats::{
    MIN_EXPECTED_COUNT, SAMPLES_FOR_10_POINT_DRIFT, chi_square_gof, detection_power,
    required_samples, wilson_interval, z_for_alpha,
};
pub use track::evidence_of;

#[cfg(test)]
mod tests;
