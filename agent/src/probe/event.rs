//! Ring-buffer records decoded into typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
pub use meshdrift_ebpf::Role;
use meshdrift_ebpf::{
    ConnectFailedEvent, FlowAddrs, FlowEvent, FlowState, PayloadEvent, RecordKind, addr_bytes,
    direction, flow_flags,
};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// Cumulative counters of a flow that is still open, read by a sweep of
    /// the kernel's flow map.
    Update,
    /// Final counters of a closed flow.
    Close,
    /// A connect that never reached ESTABLISHED: refused (`timed_out`
    /// false: the SYN was answered by a RST, or its owner gave up before
    /// any retransmission), or timed out (the SYN was retransmitted). The
    /// record's counters are zero and it starts and ends at the failure.
    ConnectFailed { timed_out: bool },
}

/// A flow's counters, cumulative since it was established (or adopted), from
/// the connection's point of view: "client" is the end that connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub client_bytes: u64,
    pub server_bytes: u64,
    /// Request turns: client data that follows server data.
    pub requests: u64,
    /// Client and server data segments sent with PSH: each end's write bursts.
    pub client_pushes: u64,
    pub server_pushes: u64,
    /// TLS application-data records the client began, or on h2c its HTTP/2
    /// HEADERS frames (one per request); `None` for a flow that is neither, or
    /// whose walker lost its place.
    pub client_records: Option<u64>,
}

/// One socket's flow at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub kind: FlowKind,
    pub cookie: u64,
    /// cgroup and owner uid of the socket (0 until its first client payload).
    pub cgroup_id: u64,
    pub uid: u32,
    pub role: Role,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `CLOCK_MONOTONIC` nanoseconds at establishment (or adoption) and at this record.
    pub start_ns: u64,
    pub time_ns: u64,
    pub counters: FlowCounters,
    /// Open before the programs were attached: counted from its first packet
    /// after, its role inferred from the ports.
    pub adopted: bool,
    /// Where the client's packets really went, when a nat rule in the
    /// client socket's own namespace rewrote their destination (a sidecar's
    /// redirect to its proxy; kube-proxy's DNAT for a socket in the node's
    /// namespace). Known from the first client data packet.
    pub nat: Option<SocketAddr>,
}

impl FlowRecord {
    /// A record of `kind` from the kernel's state of flow `cookie` at `time_ns`.
    pub fn from_state(
        kind: FlowKind,
        cookie: u64,
        time_ns: u64,
        state: &FlowState,
    ) -> Result<Self, DecodeError> {
        let (local, remote) = socket_addrs(&state.addrs);
        let framed = state.flags & (flow_flags::TLS | flow_flags::H2C) != 0;
        let records_lost = state.flags & flow_flags::RECORDS_LOST != 0;
        Ok(FlowRecord {
            kind,
            cookie,
            cgroup_id: state.cgroup_id,
            uid: state.uid,
            role: decode_role(state.addrs.role)?,
            local,
            remote,
            start_ns: state.start_ns,
            time_ns,
            counters: FlowCounters {
                client_bytes: state.bytes[direction::FROM_CLIENT],
                server_bytes: state.bytes[direction::FROM_SERVER],
                requests: state.requests,
                client_pushes: state.pushes[direction::FROM_CLIENT],
                server_pushes: state.pushes[direction::FROM_SERVER],
                client_records: (framed && !records_lost).then_some(state.client_records),
            },
            adopted: state.flags & flow_flags::ADOPTED != 0,
            nat: (state.flags & flow_flags::NATTED != 0)
                .then(|| socket_addr(state.addrs.family, state.nat_addr, state.nat_port)),
        })
    }

    /// The client end of the connection, whichever end this socket is.
    pub fn client(&self) -> SocketAddr {
        match self.role {
            Role::Client => self.local,
            Role::Server => self.remote,
        }
    }

    /// The server end of the connection.
    pub fn server(&self) -> SocketAddr {
        match self.role {
            Role::Client => self.remote,
            Role::Server => self.local,
        }
    }

    /// TCP payload bytes this socket sent.
    pub fn bytes_sent(&self) -> u64 {
        match self.role {
            Role::Client => self.counters.client_bytes,
            Role::Server => self.counters.server_bytes,
        }
    }

    /// TCP payload bytes this socket received.
    pub fn bytes_received(&self) -> u64 {
        match self.role {
            Role::Client => self.counters.server_bytes,
            Role::Server => self.counters.client_bytes,
        }
    }

    pub fn duration_ms(&self) -> u64 {
        self.time_ns.saturating_sub(self.start_ns) / 1_000_000
    }
}

/// The first client bytes of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRecord {
    pub cookie: u64,
    pub role: Role,
    /// Taken mid-stream from an adopted flow: the connection's start (TLS
    /// handshake, HTTP/2 preface) was never seen.
    pub mid_stream: bool,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    Flow(FlowRecord),
    Payload(PayloadRecord),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty ring-buffer record")]
    Empty,
    #[error("record of kind {kind} is {len} bytes, expected at least {expected}")]
    Short {
        kind: u8,
        len: usize,
        expected: usize,
    },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("unknown socket role {0}")]
    UnknownRole(u8),
}

/// Decodes one ring-buffer record: the one place where the kernel's record
/// bytes become typed events.
pub fn decode(record: &[u8]) -> Result<ProbeEvent, DecodeError> {
    let first = *record.first().ok_or(DecodeError::Empty)?;
    let record_kind = RecordKind::from_u8(first).ok_or(DecodeError::UnknownKind(first))?;
    match record_kind {
        RecordKind::Close => {
            let event: FlowEvent = read_record(record, first)?;
            FlowRecord::from_state(FlowKind::Close, event.cookie, event.time_ns, &event.state)
                .map(ProbeEvent::Flow)
        }
        RecordKind::ConnectFailed => {
            let event: ConnectFailedEvent = read_record(record, first)?;
            let (local, remote) = socket_addrs(&event.addrs);
            Ok(ProbeEvent::Flow(FlowRecord {
                kind: FlowKind::ConnectFailed {
                    timed_out: event.retransmitted != 0,
                },
                cookie: event.cookie,
                cgroup_id: 0,
                uid: 0,
                // Only an active open fails to connect.
                role: Role::Client,
                local,
                remote,
                start_ns: event.time_ns,
                time_ns: event.time_ns,
                counters: FlowCounters::default(),
                adopted: false,
                nat: None,
            }))
        }
        RecordKind::Payload => {
            let event: PayloadEvent = read_record(record, first)?;
            let len = usize::try_from(event.len)
                .unwrap_or(usize::MAX)
                .min(event.data.len());
            Ok(ProbeEvent::Payload(PayloadRecord {
                cookie: event.cookie,
                role: decode_role(event.role)?,
                mid_stream: event.mid_stream != 0,
                bytes: Bytes::copy_from_slice(&event.data[..len]),
            }))
        }
    }
}

fn read_record<T: aya::Pod>(record: &[u8], record_kind: u8) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    if record.len() < expected {
        return Err(DecodeError::Short {
            kind: record_kind,
            len: record.len(),
            expected,
        });
    }
    // SAFETY: the length was checked above and `T: Pod` accepts any bit pattern;
    // ring-buffer records carry no alignment guarantee, hence read_unaligned.
    Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

fn decode_role(value: u8) -> Result<Role, DecodeError> {
    Role::from_u8(value).ok_or(DecodeError::UnknownRole(value))
}

fn socket_addrs(addrs: &FlowAddrs) -> (SocketAddr, SocketAddr) {
    (
        socket_addr(addrs.family, addrs.local_addr, addrs.local_port),
        socket_addr(addrs.family, addrs.remote_addr, addrs.remote_port),
    )
}

fn socket_addr(family: u8, words: [u32; 4], port: u16) -> SocketAddr {
    let bytes = addr_bytes(words);
    let ip = if family == 6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use meshdrift_ebpf::{PAYLOAD_CAPTURE_LEN, addr_words};

    use super::*;

    fn as_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: T is plain data.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn addrs(family: u8, role: Role) -> FlowAddrs {
        let mut local = [0u8; 16];
        let mut remote = [0u8; 16];
        if family == 4 {
            local[..4].copy_from_slice(&[10, 213, 0, 10]);
            remote[..4].copy_from_slice(&[10, 213, 0, 11]);
        } else {
            local = "fd00::a".parse::<Ipv6Addr>().unwrap().octets();
            remote = "fd00::b".parse::<Ipv6Addr>().unwrap().octets();
        }
        FlowAddrs {
            local_addr: addr_words(local),
            remote_addr: addr_words(remote),
            local_port: 40000,
            remote_port: 8443,
            family,
            role: role as u8,
            _pad: [0; 2],
        }
    }

    fn state(family: u8, role: Role) -> FlowState {
        let mut state = FlowState::new(addrs(family, role), 1_000_000, flow_flags::TLS);
        state.bytes = [100, 200];
        state.pushes = [2, 3];
        state.requests = 3;
        state.client_records = 4;
        state
    }

    fn close_event(family: u8, role: Role) -> FlowEvent {
        FlowEvent {
            kind: RecordKind::Close as u8,
            _pad: [0; 7],
            cookie: 7,
            time_ns: 31_000_000,
            state: state(family, role),
        }
    }

    #[test]
    fn decodes_an_ipv4_close_record() {
        let event = decode(&as_bytes(&close_event(4, Role::Client))).unwrap();
        let ProbeEvent::Flow(flow) = event else {
            panic!("expected a flow record");
        };
        assert_eq!(flow.kind, FlowKind::Close);
        assert_eq!(flow.local, "10.213.0.10:40000".parse().unwrap());
        assert_eq!(flow.remote, "10.213.0.11:8443".parse().unwrap());
        assert_eq!(flow.client(), flow.local);
        assert_eq!(flow.server(), flow.remote);
        assert_eq!(flow.duration_ms(), 30);
        assert_eq!(flow.counters.requests, 3);
        assert_eq!(flow.counters.client_records, Some(4));
        assert_eq!((flow.bytes_sent(), flow.bytes_received()), (100, 200));
        assert!(!flow.adopted);
    }

    #[test]
    fn a_server_socket_sends_the_server_bytes() {
        let ProbeEvent::Flow(flow) = decode(&as_bytes(&close_event(6, Role::Server))).unwrap()
        else {
            panic!("expected a flow record");
        };
        assert_eq!(flow.remote, "[fd00::b]:8443".parse().unwrap());
        assert_eq!(flow.client(), flow.remote);
        assert_eq!((flow.bytes_sent(), flow.bytes_received()), (200, 100));
    }

    #[test]
    fn records_are_unknown_when_the_parser_lost_its_place_or_the_flow_is_not_tls() {
        let mut lost = state(4, Role::Client);
        lost.flags |= flow_flags::RECORDS_LOST;
        let flow = FlowRecord::from_state(FlowKind::Update, 1, 2, &lost).unwrap();
        assert_eq!(flow.counters.client_records, None);
        let mut plain = state(4, Role::Client);
        plain.flags = flow_flags::ADOPTED;
        let flow = FlowRecord::from_state(FlowKind::Update, 1, 2, &plain).unwrap();
        assert_eq!(flow.counters.client_records, None);
        assert!(flow.adopted);
    }

    fn connect_failed_event(family: u8, retransmitted: u8) -> ConnectFailedEvent {
        ConnectFailedEvent {
            kind: RecordKind::ConnectFailed as u8,
            retransmitted,
            _pad: [0; 6],
            cookie: 11,
            time_ns: 5_000_000,
            addrs: addrs(family, Role::Client),
        }
    }

    #[test]
    fn decodes_a_refused_and_a_timed_out_connect() {
        let ProbeEvent::Flow(refused) = decode(&as_bytes(&connect_failed_event(4, 0))).unwrap()
        else {
            panic!("expected a flow record");
        };
        assert_eq!(refused.kind, FlowKind::ConnectFailed { timed_out: false });
        assert_eq!(refused.role, Role::Client);
        assert_eq!(refused.local, "10.213.0.10:40000".parse().unwrap());
        assert_eq!(refused.remote, "10.213.0.11:8443".parse().unwrap());
        assert_eq!((refused.start_ns, refused.time_ns), (5_000_000, 5_000_000));
        assert_eq!(refused.counters, FlowCounters::default());
        assert_eq!(refused.cookie, 11);
        assert!(!refused.adopted && refused.nat.is_none());

        let ProbeEvent::Flow(timed_out) = decode(&as_bytes(&connect_failed_event(6, 1))).unwrap()
        else {
            panic!("expected a flow record");
        };
        assert_eq!(timed_out.kind, FlowKind::ConnectFailed { timed_out: true });
        assert_eq!(timed_out.remote, "[fd00::b]:8443".parse().unwrap());
    }

    #[test]
    fn payload_length_is_clamped_to_the_buffer() {
        let event = PayloadEvent {
            kind: RecordKind::Payload as u8,
            role: Role::Server as u8,
            mid_stream: 1,
            _pad: 0,
            len: u32::MAX,
            cookie: 5,
            data: [b'x'; PAYLOAD_CAPTURE_LEN],
        };
        let ProbeEvent::Payload(payload) = decode(&as_bytes(&event)).unwrap() else {
            panic!("expected a payload record");
        };
        assert_eq!(payload.bytes.len(), PAYLOAD_CAPTURE_LEN);
        assert_eq!(payload.role, Role::Server);
        assert!(payload.mid_stream);
    }

    #[test]
    fn short_and_unknown_records_are_errors_not_panics() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            decode(&[RecordKind::Close as u8, 0, 0]),
            Err(DecodeError::Short { .. })
        ));
        let failed = as_bytes(&connect_failed_event(4, 1));
        for len in 1..failed.len() {
            assert!(
                matches!(decode(&failed[..len]), Err(DecodeError::Short { .. })),
                "a connect-failed record cut to {len} bytes"
            );
        }
        assert_eq!(decode(&[99]), Err(DecodeError::UnknownKind(99)));
        let mut bad_role = close_event(4, Role::Client);
        bad_role.state.addrs.role = 7;
        assert_eq!(
            decode(&as_bytes(&bad_role)),
            Err(DecodeError::UnknownRole(7))
        );
    }
}
