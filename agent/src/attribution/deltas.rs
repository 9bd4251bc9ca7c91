//! Cumulative kernel counters turned into increments: a long-lived flow reports
//! its totals every few seconds, and each report must count only what is new.

use std::collections::HashMap;

use crate::probe::{FlowKind, FlowRecord};

/// What a flow did since its previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDelta {
    pub exchanges: u64,
    pub bytes: u64,
    /// True on the flow's first report: the connection is counted once.
    pub first: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    exchanges: u32,
    bytes: u64,
}

pub struct FlowDeltas {
    open: HashMap<u64, Seen>,
    capacity: usize,
}

impl FlowDeltas {
    /// `capacity` bounds the open flows remembered (closes lost in the kernel
    /// would otherwise grow the table).
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn advance(&mut self, record: &FlowRecord) -> FlowDelta {
        let bytes = record.bytes_sent + record.bytes_received;
        let previous = match record.kind {
            FlowKind::Close => self.open.remove(&record.cookie),
            FlowKind::Update => {
                if self.open.len() >= self.capacity && !self.open.contains_key(&record.cookie) {
                    self.open.clear();
                }
                self.open.insert(
                    record.cookie,
                    Seen {
                        exchanges: record.exchanges,
                        bytes,
                    },
                )
            }
        };
        let seen = previous.unwrap_or_default();
        FlowDelta {
            exchanges: u64::from(record.exchanges.saturating_sub(seen.exchanges)),
            bytes: bytes.saturating_sub(seen.bytes),
            first: previous.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Role;

    fn record(kind: FlowKind, exchanges: u32, bytes: u64) -> FlowRecord {
        FlowRecord {
            kind,
            cookie: 42,
            cgroup_id: 1,
            role: Role::Client,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            start_ns: 0,
            time_ns: 0,
            bytes_sent: bytes,
            bytes_received: 0,
            exchanges,
        }
    }

    #[test]
    fn updates_and_close_add_up_to_the_final_totals_and_count_the_connection_once() {
        let mut deltas = FlowDeltas::new(8);
        let first = deltas.advance(&record(FlowKind::Update, 3, 300));
        let second = deltas.advance(&record(FlowKind::Update, 5, 500));
        let close = deltas.advance(&record(FlowKind::Close, 9, 900));
        assert_eq!((first.exchanges, first.bytes, first.first), (3, 300, true));
        assert_eq!(
            (second.exchanges, second.bytes, second.first),
            (2, 200, false)
        );
        assert_eq!((close.exchanges, close.bytes, close.first), (4, 400, false));
        assert!(deltas.is_empty());
    }

    #[test]
    fn a_short_flow_is_one_close_with_everything() {
        let mut deltas = FlowDeltas::new(8);
        let close = deltas.advance(&record(FlowKind::Close, 1, 80));
        assert_eq!((close.exchanges, close.bytes, close.first), (1, 80, true));
    }
}
