//! Joins the kernel's per-flow records with the classification of each flow's
//! first client bytes, so every update and close carries its transport, and
//! turns the kernel's cumulative counters into increments.

use std::{collections::HashMap, sync::Arc};

use crate::{
    probe::{FlowKind, FlowRecord, ProbeEvent},
    wire::{self, Classification},
};

/// What a flow did since its previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDelta {
    pub exchanges: u64,
    pub bytes: u64,
    /// True on the flow's first report: the connection is counted once.
    pub first: bool,
}

/// A flow record with what its first client bytes said and what is new in it.
#[derive(Debug, Clone)]
pub struct ObservedFlow {
    pub record: FlowRecord,
    pub classification: Arc<Classification>,
    pub delta: FlowDelta,
}

/// What is remembered of an open flow until it closes.
#[derive(Debug, Clone)]
struct OpenFlow {
    classification: Arc<Classification>,
    /// Counters of the last update, when there was one.
    reported: Option<(u32, u64)>,
}

/// Remembers each open flow's classification and last counters until it closes.
pub struct FlowJoiner {
    open: HashMap<u64, OpenFlow>,
    unclassified: Arc<Classification>,
    capacity: usize,
    evicted: u64,
}

impl FlowJoiner {
    /// `capacity` bounds the flows remembered at once, so closes lost in the kernel
    /// cannot grow memory without limit.
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            unclassified: Arc::new(wire::classify(&[])),
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    /// Flows dropped because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Open flows remembered.
    pub fn tracked(&self) -> usize {
        self.open.len()
    }

    /// Makes room for `cookie` when the table is full. Dropping everything is crude
    /// but bounded; it only happens when closes were lost on a large scale, which
    /// the loss counters show.
    fn make_room(&mut self, cookie: u64) {
        if self.open.len() >= self.capacity && !self.open.contains_key(&cookie) {
            self.evicted += self.open.len() as u64;
            self.open.clear();
        }
    }

    /// Consumes one probe event; returns the observed flow for updates and closes.
    pub fn push(&mut self, event: ProbeEvent) -> Option<ObservedFlow> {
        match event {
            ProbeEvent::Payload(payload) => {
                self.make_room(payload.cookie);
                let classification = Arc::new(wire::classify(&payload.bytes));
                self.open
                    .entry(payload.cookie)
                    .and_modify(|flow| flow.classification = Arc::clone(&classification))
                    .or_insert(OpenFlow {
                        classification,
                        reported: None,
                    });
                None
            }
            ProbeEvent::Flow(record) => {
                let bytes = record.bytes_sent + record.bytes_received;
                let (classification, reported) = match record.kind {
                    FlowKind::Close => match self.open.remove(&record.cookie) {
                        Some(flow) => (flow.classification, flow.reported),
                        None => (Arc::clone(&self.unclassified), None),
                    },
                    FlowKind::Update => {
                        self.make_room(record.cookie);
                        let flow = self.open.entry(record.cookie).or_insert_with(|| OpenFlow {
                            classification: Arc::clone(&self.unclassified),
                            reported: None,
                        });
                        let previous = flow.reported.replace((record.exchanges, bytes));
                        (Arc::clone(&flow.classification), previous)
                    }
                };
                let (seen_exchanges, seen_bytes) = reported.unwrap_or_default();
                let delta = FlowDelta {
                    exchanges: u64::from(record.exchanges.saturating_sub(seen_exchanges)),
                    bytes: bytes.saturating_sub(seen_bytes),
                    first: reported.is_none(),
                };
                Some(ObservedFlow {
                    record,
                    classification,
                    delta,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        probe::{PayloadRecord, Role},
        wire::Transport,
    };

    fn flow(kind: FlowKind, cookie: u64) -> ProbeEvent {
        ProbeEvent::Flow(FlowRecord {
            kind,
            cookie,
            cgroup_id: 1,
            role: Role::Client,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            start_ns: 0,
            time_ns: 0,
            bytes_sent: 0,
            bytes_received: 0,
            exchanges: 1,
        })
    }

    fn payload(cookie: u64, bytes: &'static [u8]) -> ProbeEvent {
        ProbeEvent::Payload(PayloadRecord {
            cookie,
            role: Role::Client,
            bytes: Bytes::from_static(bytes),
        })
    }

    #[test]
    fn a_close_carries_the_classification_of_its_payload_and_forgets_it() {
        let mut joiner = FlowJoiner::new(16);
        assert!(
            joiner
                .push(payload(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
                .is_none()
        );
        let update = joiner.push(flow(FlowKind::Update, 1)).unwrap();
        assert_eq!(update.classification.transport, Transport::Http);
        let close = joiner.push(flow(FlowKind::Close, 1)).unwrap();
        assert_eq!(close.classification.transport, Transport::Http);
        assert_eq!(joiner.tracked(), 0);
    }

    #[test]
    fn a_flow_without_payload_is_none() {
        let mut joiner = FlowJoiner::new(16);
        let close = joiner.push(flow(FlowKind::Close, 2)).unwrap();
        assert_eq!(close.classification.transport, Transport::None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut joiner = FlowJoiner::new(2);
        for cookie in 0..5 {
            joiner.push(payload(cookie, b"x"));
        }
        assert!(joiner.tracked() <= 2);
        assert!(joiner.evicted() > 0);
    }

    fn counted(kind: FlowKind, exchanges: u32, bytes: u64) -> ProbeEvent {
        let ProbeEvent::Flow(mut record) = flow(kind, 42) else {
            unreachable!("flow() builds a flow record")
        };
        record.exchanges = exchanges;
        record.bytes_sent = bytes;
        ProbeEvent::Flow(record)
    }

    #[test]
    fn updates_and_close_add_up_to_the_final_totals_and_count_the_connection_once() {
        let mut joiner = FlowJoiner::new(8);
        let first = joiner
            .push(counted(FlowKind::Update, 3, 300))
            .unwrap()
            .delta;
        let second = joiner
            .push(counted(FlowKind::Update, 5, 500))
            .unwrap()
            .delta;
        let close = joiner.push(counted(FlowKind::Close, 9, 900)).unwrap().delta;
        assert_eq!((first.exchanges, first.bytes, first.first), (3, 300, true));
        assert_eq!(
            (second.exchanges, second.bytes, second.first),
            (2, 200, false)
        );
        assert_eq!((close.exchanges, close.bytes, close.first), (4, 400, false));
        assert_eq!(joiner.tracked(), 0);
    }

    #[test]
    fn a_short_flow_is_one_close_with_everything() {
        let mut joiner = FlowJoiner::new(8);
        let close = joiner.push(counted(FlowKind::Close, 1, 80)).unwrap().delta;
        assert_eq!((close.exchanges, close.bytes, close.first), (1, 80, true));
    }
}
