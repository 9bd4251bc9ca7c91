//! Joins the kernel's per-flow records with the classification of each flow's
//! first client bytes, so every update and close carries its transport.

use std::{collections::HashMap, sync::Arc};

use crate::{
    probe::{FlowKind, FlowRecord, ProbeEvent},
    wire::{self, Classification},
};

/// A flow record with what its first client bytes said.
#[derive(Debug, Clone)]
pub struct ObservedFlow {
    pub record: FlowRecord,
    pub classification: Arc<Classification>,
}

/// Remembers each open flow's classification until the flow closes.
pub struct FlowJoiner {
    classified: HashMap<u64, Arc<Classification>>,
    unclassified: Arc<Classification>,
    capacity: usize,
    evicted: u64,
}

impl FlowJoiner {
    /// `capacity` bounds the flows remembered at once, so closes lost in the kernel
    /// cannot grow memory without limit.
    pub fn new(capacity: usize) -> Self {
        Self {
            classified: HashMap::new(),
            unclassified: Arc::new(wire::classify(&[])),
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    /// Classifications dropped because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Open flows remembered.
    pub fn tracked(&self) -> usize {
        self.classified.len()
    }

    /// Consumes one probe event; returns the observed flow for updates and closes.
    pub fn push(&mut self, event: ProbeEvent) -> Option<ObservedFlow> {
        match event {
            ProbeEvent::Payload(payload) => {
                if self.classified.len() >= self.capacity
                    && !self.classified.contains_key(&payload.cookie)
                {
                    // Dropping everything is crude but bounded; it only happens when
                    // closes were lost on a large scale, which the loss counters show.
                    self.evicted += self.classified.len() as u64;
                    self.classified.clear();
                }
                self.classified
                    .insert(payload.cookie, Arc::new(wire::classify(&payload.bytes)));
                None
            }
            ProbeEvent::Flow(record) => {
                let classification = match record.kind {
                    FlowKind::Close => self.classified.remove(&record.cookie),
                    FlowKind::Update => self.classified.get(&record.cookie).cloned(),
                }
                .unwrap_or_else(|| Arc::clone(&self.unclassified));
                Some(ObservedFlow {
                    record,
                    classification,
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
}
