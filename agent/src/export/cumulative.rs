//! Counters whose absolute value comes from elsewhere (the kernel's per-CPU loss
//! counters, the pipeline's exclusion tallies). `prometheus_client::Counter` can only
//! be incremented; this collector instead encodes the last cumulative value it was
//! given, so no delta bookkeeping can drift from the source of truth.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

#[derive(Debug)]
pub(super) struct CumulativeCounters {
    /// Family name without the `_total` suffix: the OpenMetrics encoder appends it.
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Mutex<BTreeMap<String, u64>>,
}

impl CumulativeCounters {
    pub fn new(name: &'static str, help: &'static str, label: &'static str) -> Self {
        CumulativeCounters {
            name,
            help,
            label,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sets the cumulative values. A label that disappears from `values` keeps its
    /// last value: the count already happened, and a counter must not vanish.
    pub fn set(&self, values: &BTreeMap<String, u64>) {
        let mut current = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        for (label, value) in values {
            current.insert(label.clone(), *value);
        }
    }
}

impl Collector for CumulativeCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let values = self
            .values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let probe = ConstCounter::new(0u64);
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, probe.metric_type())?;
        for (value_label, value) in &values {
            let labels = [(self.label, value_label.as_str())];
            let sample = family.encode_family(&labels)?;
            ConstCounter::new(*value).encode(sample)?;
        }
        Ok(())
    }
}
