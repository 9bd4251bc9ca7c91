//! Joins the kernel's per-flow records with the classification of each flow's
//! first client bytes, so every update and close carries its transport, and
//! turns the kernel's cumulative counters into increments.
//!
//! Records come two ways: close and payload records through the ring buffer
//! as they happen, and the counters of open flows from sweeps of the kernel's
//! flow map. [`FlowJoiner::sweep`] takes what one sweep read together with
//! the ring buffer's records drained after the read, and joins those first:
//! the kernel queues a flow's first bytes before its counters show them, so a
//! sweep that read a flow's first request also finds its payload record among
//! them, and a flow the sweep no longer finds either closed (its close record
//! was drained) or lost its close record, which is then counted.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::{
    probe::{FlowCounters, FlowKind, FlowRecord, ProbeEvent, Role},
    wire::{self, Classification},
};

/// What a flow did since its previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDelta {
    /// Each counter's growth since the previous report; `client_records` is
    /// `None` when the flow's record count is unknown.
    pub counters: FlowCounters,
    /// True on the flow's first report.
    pub first: bool,
}

impl FlowDelta {
    /// Payload bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.counters.client_bytes + self.counters.server_bytes
    }
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
    /// Counters of the last report, when there was one.
    reported: Option<FlowCounters>,
    /// The sweep during which the entry was made, and the last sweep that
    /// found the flow in the kernel's map.
    born: u64,
    seen: u64,
    /// A sweep read client bytes before the record of the first ones: its
    /// update waited one sweep for them (the kernel counts a packet's bytes
    /// a moment before it queues them).
    waited_for_first_bytes: bool,
}

/// Losses the joiner counts (see `probe::LossCounters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinerLosses {
    /// Flows not remembered because the table of open flows was full.
    pub flow_table_full: u64,
    /// Flows that left the kernel's map without a close record.
    pub close_unseen: u64,
}

/// Remembers each open flow's classification and last counters until it closes.
///
/// Keyed by socket cookie with a fast non-cryptographic hash: cookies come
/// from the kernel, not from anyone who could aim collisions at the table.
pub struct FlowJoiner {
    open: HashMap<u64, OpenFlow>,
    /// Flows closed since the current sweep began: a sweep that read the map
    /// a moment before the kernel removed such a flow must not revive it.
    closed_recently: HashSet<u64>,
    sweep: u64,
    unclassified: Arc<Classification>,
    capacity: usize,
    /// Whether server sockets' first bytes are classified in full (`observe`
    /// shows them); else only plaintext or not, which is what the agent
    /// judges server sockets by.
    classify_servers: bool,
    losses: JoinerLosses,
}

impl FlowJoiner {
    /// `capacity` bounds the flows remembered at once, so closes lost in the kernel
    /// cannot grow memory without limit.
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            closed_recently: HashSet::new(),
            sweep: 0,
            unclassified: Arc::new(wire::classify(&[])),
            capacity: capacity.max(1),
            classify_servers: true,
            losses: JoinerLosses::default(),
        }
    }

    /// Classifies server sockets' first bytes only as plaintext or not:
    /// parsing a ClientHello is most of a flow's cost in user space, and the
    /// client's socket (where it is on this node) says the rest.
    pub fn client_classification_only(mut self) -> Self {
        self.classify_servers = false;
        self
    }

    pub fn losses(&self) -> JoinerLosses {
        self.losses
    }

    /// Open flows remembered.
    pub fn tracked(&self) -> usize {
        self.open.len()
    }

    /// Whether `cookie`'s flow is remembered as open.
    pub fn is_open(&self, cookie: u64) -> bool {
        self.open.contains_key(&cookie)
    }

    /// The entry of `cookie`, made if there is room; `None` (and a loss) when
    /// the table is full.
    fn entry(&mut self, cookie: u64) -> Option<&mut OpenFlow> {
        if !self.open.contains_key(&cookie) && self.open.len() >= self.capacity {
            self.losses.flow_table_full += 1;
            return None;
        }
        let born = self.sweep;
        let unclassified = &self.unclassified;
        Some(self.open.entry(cookie).or_insert_with(|| OpenFlow {
            classification: Arc::clone(unclassified),
            reported: None,
            born,
            seen: born,
            waited_for_first_bytes: false,
        }))
    }

    /// Consumes one ring-buffer record; returns the observed flow for closes
    /// and failed connects.
    pub fn push(&mut self, event: ProbeEvent) -> Option<ObservedFlow> {
        match event {
            ProbeEvent::Payload(payload) => {
                let classification = Arc::new(if payload.mid_stream {
                    wire::classify_mid_stream(&payload.bytes)
                } else if payload.role == Role::Server && !self.classify_servers {
                    wire::classify_transport_only(&payload.bytes)
                } else {
                    wire::classify(&payload.bytes)
                });
                if let Some(flow) = self.entry(payload.cookie) {
                    flow.classification = classification;
                }
                None
            }
            ProbeEvent::Flow(record) => match record.kind {
                FlowKind::Close => Some(self.close(record)),
                FlowKind::Update => self.sweep_update(record),
                FlowKind::ConnectFailed { .. } => Some(self.connect_failed(record)),
            },
        }
    }

    /// A connect that never reached ESTABLISHED: no bytes to classify, no
    /// counters to difference. It passes through on its own and never opens
    /// an entry; an entry for its cookie (a payload record of a socket that
    /// sent data in its SYN) is gone with the socket.
    fn connect_failed(&mut self, record: FlowRecord) -> ObservedFlow {
        self.open.remove(&record.cookie);
        ObservedFlow {
            record,
            classification: Arc::clone(&self.unclassified),
            delta: FlowDelta {
                counters: FlowCounters::default(),
                first: true,
            },
        }
    }

    fn close(&mut self, record: FlowRecord) -> ObservedFlow {
        self.closed_recently.insert(record.cookie);
        let (classification, reported) = match self.open.remove(&record.cookie) {
            Some(flow) => (flow.classification, flow.reported),
            None => (Arc::clone(&self.unclassified), None),
        };
        let delta = delta(&record.counters, reported);
        ObservedFlow {
            record,
            classification,
            delta,
        }
    }

    /// Joins one sweep of the kernel's flow map: `found` is every open flow
    /// it read, `queued` the ring buffer's records drained after the read.
    /// `complete` is false when the read failed part way: flows it did not
    /// find are then not taken for closed.
    pub fn sweep(
        &mut self,
        found: impl IntoIterator<Item = FlowRecord>,
        queued: impl IntoIterator<Item = ProbeEvent>,
        complete: bool,
        out: &mut Vec<ObservedFlow>,
    ) {
        self.begin_sweep();
        out.extend(queued.into_iter().filter_map(|event| self.push(event)));
        out.extend(
            found
                .into_iter()
                .filter_map(|record| self.sweep_update(record)),
        );
        if complete {
            self.end_sweep();
        }
    }

    fn begin_sweep(&mut self) {
        self.sweep += 1;
    }

    /// One open flow as the current sweep found it; `None` when nothing is new.
    fn sweep_update(&mut self, record: FlowRecord) -> Option<ObservedFlow> {
        if self.closed_recently.contains(&record.cookie) {
            return None;
        }
        let sweep = self.sweep;
        let unclassified = Arc::as_ptr(&self.unclassified);
        let flow = self.entry(record.cookie)?;
        flow.seen = sweep;
        // Reported now, the connection would count with no transport. Its
        // record is queued by the next sweep, or lost (and counted as such).
        if std::ptr::eq(Arc::as_ptr(&flow.classification), unclassified)
            && record.counters.client_bytes > 0
            && !flow.waited_for_first_bytes
        {
            flow.waited_for_first_bytes = true;
            return None;
        }
        let previous = flow.reported.replace(record.counters);
        if previous == Some(record.counters) {
            return None;
        }
        let classification = Arc::clone(&flow.classification);
        let delta = delta(&record.counters, previous);
        Some(ObservedFlow {
            record,
            classification,
            delta,
        })
    }

    /// Flows known before the sweep that it did not find left without a
    /// close record.
    fn end_sweep(&mut self) {
        let sweep = self.sweep;
        let before = self.open.len();
        self.open
            .retain(|_, flow| flow.born >= sweep || flow.seen == sweep);
        self.losses.close_unseen += (before - self.open.len()) as u64;
        self.closed_recently.clear();
    }
}

fn delta(now: &FlowCounters, previous: Option<FlowCounters>) -> FlowDelta {
    let before = previous.unwrap_or_default();
    let records = match (now.client_records, before.client_records) {
        (Some(now), Some(before)) => Some(now.saturating_sub(before)),
        (Some(now), None) => Some(now),
        (None, _) => None,
    };
    FlowDelta {
        counters: FlowCounters {
            client_bytes: now.client_bytes.saturating_sub(before.client_bytes),
            server_bytes: now.server_bytes.saturating_sub(before.server_bytes),
            requests: now.requests.saturating_sub(before.requests),
            client_pushes: now.client_pushes.saturating_sub(before.client_pushes),
            server_pushes: now.server_pushes.saturating_sub(before.server_pushes),
            client_records: records,
        },
        first: previous.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{probe::PayloadRecord, wire::Transport};

    fn record(kind: FlowKind, cookie: u64, requests: u64, bytes: u64) -> FlowRecord {
        FlowRecord {
            kind,
            cookie,
            cgroup_id: 1,
            uid: 0,
            role: Role::Client,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            start_ns: 0,
            time_ns: 0,
            counters: FlowCounters {
                client_bytes: bytes,
                requests,
                ..FlowCounters::default()
            },
            adopted: false,
            nat: None,
        }
    }

    fn flow(kind: FlowKind, cookie: u64) -> ProbeEvent {
        ProbeEvent::Flow(record(kind, cookie, 1, 0))
    }

    fn payload(cookie: u64, bytes: &'static [u8]) -> ProbeEvent {
        ProbeEvent::Payload(PayloadRecord {
            cookie,
            role: Role::Client,
            mid_stream: false,
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
        let updates = sweep(&mut joiner, vec![record(FlowKind::Update, 1, 1, 0)], vec![]);
        let [update] = updates.as_slice() else {
            panic!("one update: {updates:?}");
        };
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

    fn connect_failed(cookie: u64, timed_out: bool) -> ProbeEvent {
        let mut failed = record(FlowKind::ConnectFailed { timed_out }, cookie, 0, 0);
        failed.counters = FlowCounters::default();
        ProbeEvent::Flow(failed)
    }

    #[test]
    fn a_failed_connect_passes_through_unclassified_and_keeps_no_entry() {
        let mut joiner = FlowJoiner::new(16);
        let failed = joiner.push(connect_failed(3, true)).unwrap();
        assert_eq!(
            failed.record.kind,
            FlowKind::ConnectFailed { timed_out: true }
        );
        assert_eq!(failed.classification.transport, Transport::None);
        assert_eq!(
            failed.delta,
            FlowDelta {
                counters: FlowCounters::default(),
                first: true,
            }
        );
        assert_eq!(joiner.tracked(), 0, "a failed connect never opens an entry");

        // An entry its cookie already had (a payload sent with the SYN) is dropped.
        joiner.push(payload(4, b"GET / HTTP/1.1\r\n\r\n"));
        assert_eq!(joiner.tracked(), 1);
        let failed = joiner.push(connect_failed(4, false)).unwrap();
        assert_eq!(failed.classification.transport, Transport::None);
        assert!(failed.delta.first);
        assert_eq!(joiner.tracked(), 0);
        assert_eq!(joiner.losses(), JoinerLosses::default());
    }

    #[test]
    fn a_full_table_refuses_new_flows_and_counts_them() {
        let mut joiner = FlowJoiner::new(2);
        for cookie in 0..5 {
            joiner.push(payload(cookie, b"x"));
        }
        assert_eq!(joiner.tracked(), 2);
        assert_eq!(joiner.losses().flow_table_full, 3);
    }

    /// One sweep through the public entry point: what it read, and what the
    /// ring buffer held after the read.
    fn sweep(
        joiner: &mut FlowJoiner,
        found: Vec<FlowRecord>,
        queued: Vec<ProbeEvent>,
    ) -> Vec<ObservedFlow> {
        let mut out = Vec::new();
        joiner.sweep(found, queued, true, &mut out);
        out
    }

    #[test]
    fn sweeps_and_close_add_up_to_the_final_totals_and_count_the_connection_once() {
        let mut joiner = FlowJoiner::new(8);
        joiner.push(payload(42, b"GET / HTTP/1.1\r\n\r\n"));
        let first = sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 42, 3, 300)],
            vec![],
        );
        assert!(
            sweep(
                &mut joiner,
                vec![record(FlowKind::Update, 42, 3, 300)],
                vec![]
            )
            .is_empty(),
            "an unchanged flow reports nothing"
        );
        let second = sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 42, 5, 500)],
            vec![],
        );
        let close = joiner
            .push(ProbeEvent::Flow(record(FlowKind::Close, 42, 9, 900)))
            .unwrap()
            .delta;
        let [first] = first.as_slice() else {
            panic!("one update from the first sweep: {first:?}");
        };
        let [second] = second.as_slice() else {
            panic!("one update from the third sweep: {second:?}");
        };
        assert_eq!(
            (
                first.delta.counters.requests,
                first.delta.bytes(),
                first.delta.first
            ),
            (3, 300, true)
        );
        assert_eq!(
            (
                second.delta.counters.requests,
                second.delta.bytes(),
                second.delta.first
            ),
            (2, 200, false)
        );
        assert_eq!(
            (close.counters.requests, close.bytes(), close.first),
            (4, 400, false)
        );
        assert_eq!(joiner.tracked(), 0);
        assert_eq!(joiner.losses(), JoinerLosses::default());
    }

    /// The kernel queued the flow's first bytes, then counted its request;
    /// the sweep read the count before user space drained the queue.
    #[test]
    fn a_sweep_joins_the_first_bytes_queued_before_its_read() {
        let mut joiner = FlowJoiner::new(8);
        let updates = sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 11, 1, 80)],
            vec![payload(11, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
        );
        let [update] = updates.as_slice() else {
            panic!("one update: {updates:?}");
        };
        assert_eq!(update.classification.transport, Transport::Http);
        assert!(update.delta.first);
        assert_eq!(update.delta.counters.requests, 1);
    }

    /// The sweep read the flow's bytes in the moment between the kernel
    /// counting them and queueing them: the update waits for the record.
    #[test]
    fn client_bytes_read_before_their_record_wait_one_sweep_for_it() {
        let mut joiner = FlowJoiner::new(8);
        assert!(
            sweep(
                &mut joiner,
                vec![record(FlowKind::Update, 12, 0, 80)],
                vec![]
            )
            .is_empty()
        );
        let updates = sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 12, 1, 80)],
            vec![payload(12, b"GET / HTTP/1.1\r\n\r\n")],
        );
        let [update] = updates.as_slice() else {
            panic!("one update: {updates:?}");
        };
        assert_eq!(update.classification.transport, Transport::Http);
        assert_eq!(
            (update.delta.counters.requests, update.delta.first),
            (1, true)
        );
        assert_eq!(joiner.losses(), JoinerLosses::default());
    }

    /// A payload record the kernel could not queue (counted there) holds
    /// the flow's counters back one sweep only.
    #[test]
    fn a_flow_whose_first_bytes_were_lost_is_reported_at_the_next_sweep() {
        let mut joiner = FlowJoiner::new(8);
        let found = || vec![record(FlowKind::Update, 13, 2, 160)];
        assert!(sweep(&mut joiner, found(), vec![]).is_empty());
        let updates = sweep(&mut joiner, found(), vec![]);
        let [update] = updates.as_slice() else {
            panic!("one update: {updates:?}");
        };
        assert_eq!(update.classification.transport, Transport::None);
        assert_eq!(
            (update.delta.counters.requests, update.delta.first),
            (2, true)
        );
    }

    #[test]
    fn a_flow_without_client_bytes_is_reported_unclassified_at_once() {
        let mut joiner = FlowJoiner::new(8);
        let updates = sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 14, 0, 0)],
            vec![],
        );
        let [update] = updates.as_slice() else {
            panic!("one update: {updates:?}");
        };
        assert!(update.delta.first);
        assert_eq!(update.delta.bytes(), 0);
    }

    #[test]
    fn a_short_flow_is_one_close_with_everything() {
        let mut joiner = FlowJoiner::new(8);
        let close = joiner
            .push(ProbeEvent::Flow(record(FlowKind::Close, 7, 1, 80)))
            .unwrap()
            .delta;
        assert_eq!(
            (close.counters.requests, close.bytes(), close.first),
            (1, 80, true)
        );
    }

    #[test]
    fn a_sweep_that_read_a_flow_just_before_its_removal_does_not_revive_it() {
        let mut joiner = FlowJoiner::new(8);
        let updates = sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 5, 2, 200)],
            vec![
                payload(5, b"GET / HTTP/1.1\r\n\r\n"),
                ProbeEvent::Flow(record(FlowKind::Close, 5, 2, 200)),
            ],
        );
        let [close] = updates.as_slice() else {
            panic!("the close alone: {updates:?}");
        };
        assert_eq!(close.record.kind, FlowKind::Close);
        assert_eq!(close.classification.transport, Transport::Http);
        assert_eq!(joiner.tracked(), 0);
    }

    #[test]
    fn a_flow_gone_from_the_map_without_a_close_is_a_counted_loss() {
        let mut joiner = FlowJoiner::new(8);
        sweep(
            &mut joiner,
            vec![record(FlowKind::Update, 9, 1, 10)],
            vec![payload(9, b"x")],
        );
        // Born during the next sweep: not judged by it.
        sweep(&mut joiner, vec![], vec![payload(10, b"x")]);
        assert_eq!(joiner.losses().close_unseen, 1);
        assert_eq!(joiner.tracked(), 1);
    }
}
