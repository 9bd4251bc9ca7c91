//! The engine's knobs (`--window`, `--grace`, `--alpha`, `--tolerance`,
//! `--min-samples`) and their validation: they come from the command line.

use std::time::Duration;

/// How the drift engine windows and judges traffic. See the module documentation
/// for why the defaults are what they are.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Sliding window the verdicts look at: the whole buckets that start within
    /// the last `window` before the snapshot.
    pub window: Duration,
    /// Width of one time bucket; the window moves by whole buckets.
    pub bucket: Duration,
    /// After a declared split changes, traffic in this period is not compared with
    /// the new weights (proxies take a moment to receive new configuration).
    pub grace: Duration,
    /// Significance level of the goodness-of-fit test.
    pub alpha: f64,
    /// Practical tolerance: absolute difference of a subset's share that matters.
    pub tolerance: f64,
    /// Fewest counted units (requests or connections) before the split is tested.
    /// Zero-weight and unexpected traffic is flagged without waiting for it.
    pub min_samples: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            bucket: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            alpha: 0.001,
            tolerance: 0.05,
            min_samples: 100,
        }
    }
}

/// A configuration the engine cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftConfigError {
    #[error("window must be longer than zero")]
    ZeroWindow,
    #[error(
        "bucket must be longer than zero and no longer than the window ({window:?}), got {bucket:?}"
    )]
    Bucket { bucket: Duration, window: Duration },
    #[error("alpha must be strictly between 0 and 1, got {0}")]
    Alpha(f64),
    #[error("tolerance must be at least 0 and below 1, got {0}")]
    Tolerance(f64),
    #[error("the sequential test cannot use these settings: {0}")]
    Sequential(String),
}

impl DriftConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), DriftConfigError> {
        if self.window.is_zero() {
            return Err(DriftConfigError::ZeroWindow);
        }
        if self.bucket.is_zero() || self.bucket > self.window {
            return Err(DriftConfigError::Bucket {
                bucket: self.bucket,
                window: self.window,
            });
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(DriftConfigError::Alpha(self.alpha));
        }
        if !(self.tolerance >= 0.0 && self.tolerance < 1.0) {
            return Err(DriftConfigError::Tolerance(self.tolerance));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(DriftConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_nonsense() {
        let base = DriftConfig::default();
        let cases = [
            DriftConfig {
                window: Duration::ZERO,
                ..base.clone()
            },
            DriftConfig {
                bucket: Duration::ZERO,
                ..base.clone()
            },
            DriftConfig {
                bucket: Duration::from_secs(601),
                ..base.clone()
            },
            DriftConfig {
                alpha: 0.0,
                ..base.clone()
            },
            DriftConfig {
                alpha: f64::NAN,
                ..base.clone()
            },
            DriftConfig {
                tolerance: -0.1,
                ..base.clone()
            },
            DriftConfig {
                tolerance: 1.0,
                ..base.clone()
            },
        ];
        for config in cases {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
