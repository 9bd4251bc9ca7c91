//! A gauge family whose series set is replaced wholesale on every report, so a
//! split, subset or finding that leaves the report also leaves `/metrics` instead
//! of lingering with its last value.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

pub(super) type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub(super) struct ReplacedGauges<L: Clone + Eq + Hash> {
    family: Family<L, FloatGauge>,
    /// The label sets written by the last replace; guarded so that two concurrent
    /// replaces cannot interleave their removals.
    current: Mutex<HashSet<L>>,
}

impl<L> ReplacedGauges<L>
where
    L: Clone + Eq + Hash + std::fmt::Debug + EncodeLabelSet + Send + Sync + 'static,
{
    pub fn new() -> Self {
        ReplacedGauges {
            family: Family::default(),
            current: Mutex::new(HashSet::new()),
        }
    }

    /// What to register: the family shares its storage with `self`.
    pub fn family(&self) -> Family<L, FloatGauge> {
        self.family.clone()
    }

    /// Makes `values` the complete set of series. Values are set before stale series
    /// are removed, so a concurrent scrape never sees a series missing that both the
    /// old and the new set contain.
    pub fn replace(&self, values: impl IntoIterator<Item = (L, f64)>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashSet::new();
        for (labels, value) in values {
            self.family.get_or_create(&labels).set(value);
            next.insert(labels);
        }
        for stale in current.difference(&next) {
            self.family.remove(stale);
        }
        *current = next;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct L {
        k: String,
    }

    fn l(k: &str) -> L {
        L { k: k.to_owned() }
    }

    #[test]
    fn replace_removes_series_absent_from_the_new_set() {
        let gauges = ReplacedGauges::new();
        gauges.replace([(l("a"), 1.0), (l("b"), 2.0)]);
        assert_eq!(gauges.len(), 2);
        gauges.replace([(l("b"), 3.0)]);
        assert_eq!(gauges.len(), 1);
        assert!(gauges.family().get(&l("a")).is_none());
        assert_eq!(gauges.family().get(&l("b")).map(|g| g.get()), Some(3.0));
        gauges.replace([]);
        assert_eq!(gauges.len(), 0);
        assert!(gauges.family().get(&l("b")).is_none());
    }
}
