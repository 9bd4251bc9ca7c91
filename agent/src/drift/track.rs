//! The sequential verdict of one split (a key, or one client pod of it): feeds
//! the window's whole buckets, each once and in order, to a
//! [`SequentialDetector`] as its batches, from the start of the policy
//! generation on.
//!
//! A bucket is fed once it is over (its end is at or before the time of the
//! call), so a verdict never depends on how often it is asked for, and the
//! false-alarm bound of the detector, stated per batch, becomes one per unit
//! of time: the batch is the engine's bucket.

use crate::observation::{DeclaredSplit, ESTIMATED_SHARE_ERROR, Unit};
use crate::report::SequentialEvidence;

use super::sequential::{SequentialConfig, SequentialDetector};
use super::split;
use super::window::{KeyWindow, Target};

/// What a report shows of where `detector` stands.
pub fn evidence_of(detector: &SequentialDetector) -> SequentialEvidence {
    SequentialEvidence {
        ln_statistic: detector.ln_statistic(),
        ln_threshold: detector.threshold().ln(),
        p_value: detector.p_value(),
        batches: detector.batches(),
        batch_seconds: detector.config().batch.as_secs(),
    }
}

/// Batches fed at most in one catch-up.
const MAX_CATCH_UP_BATCHES: i64 = 4096;

/// One split's detector and how far it has read the window.
#[derive(Debug, Clone)]
pub(crate) struct SequentialTrack {
    /// `None` while the split cannot be tested (one subset, weights unusable,
    /// chosen by request content).
    detector: Option<SequentialDetector>,
    /// The tested subsets (positive declared weight), in the detector's order.
    subsets: Vec<Option<String>>,
    unit: Unit,
    /// First bucket index not fed yet.
    next: i64,
    /// The tolerance was widened for estimated requests.
    widened: bool,
}

impl SequentialTrack {
    /// A fresh track of `declared`, reading buckets from `first_bucket` on.
    pub fn new(declared: &DeclaredSplit, config: &SequentialConfig, first_bucket: i64) -> Self {
        let tested = split::tested_weights(declared).unwrap_or_default();
        let weights: Vec<f64> = tested.iter().map(|(_, w)| *w).collect();
        let detector = (weights.len() >= 2)
            .then(|| SequentialDetector::new(&weights, config.clone()).ok())
            .flatten();
        Self {
            detector,
            subsets: tested.into_iter().map(|(name, _)| name).collect(),
            unit: declared.unit,
            next: first_bucket,
            widened: false,
        }
    }

    /// Feeds every whole bucket of `window` before `end` (exclusive) not fed
    /// yet. Buckets the window no longer holds count as quiet batches: time
    /// passed.
    pub fn catch_up(&mut self, window: &KeyWindow, end: i64) {
        let Some(detector) = self.detector.as_mut() else {
            self.next = self.next.max(end);
            return;
        };
        if self.next >= end {
            return;
        }
        if !self.widened
            && self.unit == Unit::Request
            && window
                .buckets_between(self.next, end)
                .any(|(_, cells)| cells.values().any(|c| c.estimated > 0))
        {
            // Requests estimated rather than counted (multiplexed HTTP/2 over
            // TLS) carry the estimator's share error: the band widens by it,
            // and the evidence gathered under the narrower one starts over.
            let mut config = detector.config().clone();
            config.tolerance = (config.tolerance + ESTIMATED_SHARE_ERROR).min(0.99);
            let weights = detector.weights().to_vec();
            if let Ok(wider) = SequentialDetector::new(&weights, config) {
                *detector = wider;
            }
            self.widened = true;
        }
        // After a long silence (no call for hours) only the latest batches are
        // fed: quiet batches add nothing but age, and leaving some out only
        // lowers the statistic.
        let first = self.next.max(end.saturating_sub(MAX_CATCH_UP_BATCHES));
        let mut counts = vec![0u64; self.subsets.len()];
        let mut buckets = window.buckets_between(first, end).peekable();
        for index in first..end {
            counts.iter_mut().for_each(|c| *c = 0);
            if let Some((_, cells)) = buckets.next_if(|(at, _)| *at == index) {
                for (cell, c) in cells {
                    if let Target::Subset(name) = &cell.target
                        && let Some(at) = self.subsets.iter().position(|s| s == name)
                    {
                        let amount = match self.unit {
                            Unit::Request => c.requests,
                            Unit::Connection => c.connections,
                        };
                        counts[at] = counts[at].saturating_add(amount);
                    }
                }
            }
            // Lengths always match: the counts are built from the subsets.
            let _ = detector.observe_batch(&counts);
        }
        self.next = end;
    }

    /// Whether the sequential test declares drift now.
    pub fn alarm(&self) -> bool {
        self.detector
            .as_ref()
            .is_some_and(SequentialDetector::alarm)
    }

    /// First bucket index not fed yet.
    pub fn next_bucket(&self) -> i64 {
        self.next
    }

    /// Where the test stands; `None` while untested or before its first batch.
    pub fn evidence(&self) -> Option<SequentialEvidence> {
        self.detector
            .as_ref()
            .filter(|d| d.batches() > 0)
            .map(evidence_of)
    }
}
