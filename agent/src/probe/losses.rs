//! Records lost on the way from a packet to a tally, by reason. The kernel
//! counts its own (ring buffer full, flow map full); user space adds what it
//! could not decode, keep or judge. Nothing is cleared: every counter only grows.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the kernel side lost, with the records user space could not decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelLosses {
    /// Close records the kernel could not queue: the ring buffer was full.
    pub ringbuf_full: u64,
    /// First-payload records the kernel could not queue.
    pub payload_ringbuf_full: u64,
    /// Established flows the kernel could not record: its flow map was full.
    pub flow_map_insert: u64,
    /// Data packets of flows opened before the agent that could not be
    /// adopted: the flow map was full.
    pub adopt_map_full: u64,
    /// Ring-buffer records or flow-map entries user space could not decode.
    pub malformed: u64,
}

/// Every loss, kernel and user space. Every counter is reported, zeros included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossCounters {
    #[serde(flatten)]
    pub kernel: KernelLosses,
    /// Open flows user space forgot because its table of open flows was full.
    pub flow_table_full: u64,
    /// Flows that left the kernel's map without a close record reaching user
    /// space (the record was lost): their last counters since the previous
    /// sweep are missing.
    pub close_unseen: u64,
    /// Observations that arrived older than the drift window and were not tallied.
    pub late: u64,
    /// Reads of the kernel's loss counters or sweeps of its flow map that
    /// failed; the previous values stand until one succeeds.
    pub kernel_read_failed: u64,
}

impl LossCounters {
    /// Every counter with its `reason` label.
    pub fn reasons(&self) -> [(&'static str, u64); 9] {
        [
            ("ringbuf_full", self.kernel.ringbuf_full),
            ("payload_ringbuf_full", self.kernel.payload_ringbuf_full),
            ("flow_map_insert", self.kernel.flow_map_insert),
            ("adopt_map_full", self.kernel.adopt_map_full),
            ("malformed", self.kernel.malformed),
            ("flow_table_full", self.flow_table_full),
            ("close_unseen", self.close_unseen),
            ("late", self.late),
            ("kernel_read_failed", self.kernel_read_failed),
        ]
    }

    /// The counters by reason, as the report shows them.
    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        self.reasons()
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.reasons().iter().map(|(_, count)| count).sum()
    }
}

impl std::fmt::Display for LossCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (reason, count)) in self.reasons().into_iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{} {count}", reason.replace('_', " "))?;
        }
        write!(f, " (total {})", self.total())
    }
}
