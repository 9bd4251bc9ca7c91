//! Record types shared by meshdrift's kernel programs and its user space.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes these records into
//! the ring buffer and user space reads them back byte for byte. The library builds
//! for the BPF target and for the host alike.

#![no_std]
// The BPF target links aya-ebpf for the programs in the binary, not for these types.
#![cfg_attr(target_arch = "bpf", allow(unused_crate_dependencies))]

/// Bytes of the first client payload handed to user space once per flow. A TLS 1.3
/// ClientHello with SNI and ALPN is 250–600 bytes; 512 keeps the SNI and ALPN of
/// common clients while bounding the ring-buffer cost.
pub const PAYLOAD_CAPTURE_LEN: usize = 512;

/// Default interval between cumulative updates of a long-lived flow.
pub const DEFAULT_UPDATE_INTERVAL_NS: u64 = 10_000_000_000;

/// Default ring-buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;

/// Flow key used by the self-test programs. Socket cookies count up from 1 and
/// never reach it.
pub const SELFTEST_COOKIE: u64 = u64::MAX;

/// Names of the maps and programs in the object, used by the loader.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const FLOWS: &str = "FLOWS";
    pub const LOSSES: &str = "LOSSES";
    pub const UPDATE_INTERVAL_NS: &str = "UPDATE_INTERVAL_NS";
    pub const SOCK_OPS: &str = "meshdrift_sockops";
    pub const SKB_EGRESS: &str = "meshdrift_egress";
    pub const SKB_INGRESS: &str = "meshdrift_ingress";
    pub const SELFTEST_EGRESS: &str = "meshdrift_selftest_egress";
    pub const SELFTEST_INGRESS: &str = "meshdrift_selftest_ingress";
}

/// What a ring-buffer record is; always its first byte.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Cumulative counters of a flow that is still open.
    Update = 1,
    /// Final counters of a flow that has closed.
    Close = 2,
    /// The first client payload bytes of a flow.
    Payload = 3,
}

impl RecordKind {
    /// The kind a record's first byte names, if it names one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Update),
            2 => Some(Self::Close),
            3 => Some(Self::Payload),
            _ => None,
        }
    }
}

/// Which end of the connection the observed socket is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The socket called `connect()` (active open).
    Client = 1,
    /// The socket came from `accept()` (passive open).
    Server = 2,
}

impl Role {
    /// The role a record's role byte names, if it names one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Client),
            2 => Some(Self::Server),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// Indices into the per-CPU loss counters. Every place the kernel side gives up
/// on a record counts here, so no loss is silent.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// A flow event could not be reserved in the ring buffer (it was full).
    RingbufFull = 0,
    /// A payload record could not be reserved in the ring buffer.
    PayloadRingbufFull = 1,
    /// A flow could not be inserted in the flow map.
    FlowMapInsert = 2,
    /// A flow closed whose state had already been evicted from the LRU flow map.
    FlowEvicted = 3,
}

impl Loss {
    /// Every counter, in index order.
    pub const ALL: [Loss; 4] = [
        Loss::RingbufFull,
        Loss::PayloadRingbufFull,
        Loss::FlowMapInsert,
        Loss::FlowEvicted,
    ];
    /// Number of loss counters: the size of the per-CPU array.
    pub const COUNT: u32 = Self::ALL.len() as u32;
}

/// Flags kept in [`FlowState::flags`].
pub mod flow_flags {
    /// The first client payload has been handed to user space.
    pub const PAYLOAD_CAPTURED: u8 = 1;
    /// The first client payload was a TLS record: handshake records do not start exchanges.
    pub const TLS: u8 = 2;
}

/// Direction of the last data packet of a flow, in [`FlowState::last_data`].
pub mod data_dir {
    pub const NONE: u8 = 0;
    pub const FROM_CLIENT: u8 = 1;
    pub const FROM_SERVER: u8 = 2;
}

/// Addresses and ports of a socket. IPv4 addresses take the first four bytes of
/// the address arrays; ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAddrs {
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// 4 or 6.
    pub family: u8,
    /// A [`Role`] as its byte.
    pub role: u8,
    pub _pad: [u8; 2],
}

/// Per-flow state kept by the kernel side in the LRU flow map, keyed by socket cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowState {
    pub addrs: FlowAddrs,
    pub start_ns: u64,
    pub last_report_ns: u64,
    pub cgroup_id: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub exchanges: u32,
    /// One of [`data_dir`].
    pub last_data: u8,
    /// Bits of [`flow_flags`].
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// An update or close record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowEvent {
    /// [`RecordKind::Update`] or [`RecordKind::Close`] as its byte.
    pub kind: u8,
    pub _pad: [u8; 7],
    pub cookie: u64,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns` at establishment and at this record.
    pub start_ns: u64,
    pub time_ns: u64,
    /// TCP payload bytes this socket sent and received.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Request/response turns: client data that follows server data.
    pub exchanges: u32,
    pub _pad2: u32,
    pub addrs: FlowAddrs,
}

/// The first client payload bytes of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadEvent {
    /// [`RecordKind::Payload`] as its byte.
    pub kind: u8,
    /// A [`Role`] as its byte: which socket saw the bytes.
    pub role: u8,
    pub _pad: [u8; 2],
    /// Bytes of `data` that are valid.
    pub len: u32,
    pub cookie: u64,
    pub data: [u8; PAYLOAD_CAPTURE_LEN],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding-sensitive invariants; any byte
    // pattern is a valid value.
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowAddrs {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::PayloadEvent {}
}
