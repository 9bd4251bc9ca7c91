//! Ring-buffer records decoded into typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
pub use meshdrift_ebpf::Role;
use meshdrift_ebpf::{FlowAddrs, FlowEvent, PayloadEvent, RecordKind};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// Cumulative counters of a flow that is still open.
    Update,
    /// Final counters of a closed flow.
    Close,
}

/// Counters of one socket, cumulative since it was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub kind: FlowKind,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub role: Role,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub start_ns: u64,
    pub time_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub exchanges: u32,
}

impl FlowRecord {
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

    pub fn duration_ms(&self) -> u64 {
        self.time_ns.saturating_sub(self.start_ns) / 1_000_000
    }
}

/// The first client bytes of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRecord {
    pub cookie: u64,
    pub role: Role,
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
        RecordKind::Update | RecordKind::Close => {
            let event: FlowEvent = read_record(record, first)?;
            let (local, remote) = socket_addrs(&event.addrs);
            Ok(ProbeEvent::Flow(FlowRecord {
                kind: if record_kind == RecordKind::Close {
                    FlowKind::Close
                } else {
                    FlowKind::Update
                },
                cookie: event.cookie,
                cgroup_id: event.cgroup_id,
                role: decode_role(event.addrs.role)?,
                local,
                remote,
                start_ns: event.start_ns,
                time_ns: event.time_ns,
                bytes_sent: event.bytes_sent,
                bytes_received: event.bytes_received,
                exchanges: event.exchanges,
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
    let ip = |bytes: &[u8; 16]| -> IpAddr {
        if addrs.family == 6 {
            IpAddr::V6(Ipv6Addr::from(*bytes))
        } else {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        }
    };
    (
        SocketAddr::new(ip(&addrs.local_addr), addrs.local_port),
        SocketAddr::new(ip(&addrs.remote_addr), addrs.remote_port),
    )
}

#[cfg(test)]
mod tests {
    use meshdrift_ebpf::PAYLOAD_CAPTURE_LEN;

    use super::*;

    fn as_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: T is plain data.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn addrs(family: u8) -> FlowAddrs {
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
            local_addr: local,
            remote_addr: remote,
            local_port: 40000,
            remote_port: 8443,
            family,
            role: Role::Client as u8,
            _pad: [0; 2],
        }
    }

    fn flow_event(kind: u8, family: u8) -> FlowEvent {
        FlowEvent {
            kind,
            _pad: [0; 7],
            cookie: 7,
            cgroup_id: 9,
            start_ns: 1_000_000,
            time_ns: 31_000_000,
            bytes_sent: 100,
            bytes_received: 200,
            exchanges: 3,
            _pad2: 0,
            addrs: addrs(family),
        }
    }

    #[test]
    fn decodes_an_ipv4_close_record() {
        let event = decode(&as_bytes(&flow_event(RecordKind::Close as u8, 4))).unwrap();
        let ProbeEvent::Flow(flow) = event else {
            panic!("expected a flow record");
        };
        assert_eq!(flow.kind, FlowKind::Close);
        assert_eq!(flow.local, "10.213.0.10:40000".parse().unwrap());
        assert_eq!(flow.remote, "10.213.0.11:8443".parse().unwrap());
        assert_eq!(flow.client(), flow.local);
        assert_eq!(flow.server(), flow.remote);
        assert_eq!(flow.duration_ms(), 30);
        assert_eq!(flow.exchanges, 3);
    }

    #[test]
    fn decodes_an_ipv6_update_record() {
        let ProbeEvent::Flow(flow) =
            decode(&as_bytes(&flow_event(RecordKind::Update as u8, 6))).unwrap()
        else {
            panic!("expected a flow record");
        };
        assert_eq!(flow.kind, FlowKind::Update);
        assert_eq!(flow.remote, "[fd00::b]:8443".parse().unwrap());
    }

    #[test]
    fn payload_length_is_clamped_to_the_buffer() {
        let event = PayloadEvent {
            kind: RecordKind::Payload as u8,
            role: Role::Server as u8,
            _pad: [0; 2],
            len: u32::MAX,
            cookie: 5,
            data: [b'x'; PAYLOAD_CAPTURE_LEN],
        };
        let ProbeEvent::Payload(payload) = decode(&as_bytes(&event)).unwrap() else {
            panic!("expected a payload record");
        };
        assert_eq!(payload.bytes.len(), PAYLOAD_CAPTURE_LEN);
        assert_eq!(payload.role, Role::Server);
    }

    #[test]
    fn short_and_unknown_records_are_errors_not_panics() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            decode(&[RecordKind::Close as u8, 0, 0]),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(decode(&[99]), Err(DecodeError::UnknownKind(99)));
        let mut bad_role = flow_event(RecordKind::Close as u8, 4);
        bad_role.addrs.role = 7;
        assert_eq!(
            decode(&as_bytes(&bad_role)),
            Err(DecodeError::UnknownRole(7))
        );
    }
}
