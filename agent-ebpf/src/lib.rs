//! Record types shared by meshdrift's kernel programs and its user space.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel keeps [`FlowState`]
//! in its flow map (which user space sweeps) and writes [`FlowEvent`],
//! [`PayloadEvent`] and [`ConnectFailedEvent`] records into the ring buffer;
//! user space reads them back byte for byte. The library builds for the BPF target and for the host alike.

#![no_std]
// The BPF target links aya-ebpf for the programs in the binary, not for these types.
#![cfg_attr(target_arch = "bpf", allow(unused_crate_dependencies))]

/// Bytes of the first client payload handed to user space once per flow. A TLS 1.3
/// ClientHello with SNI and ALPN is 250–600 bytes; 512 keeps the SNI and ALPN of
/// common clients while bounding the ring-buffer cost.
pub const PAYLOAD_CAPTURE_LEN: usize = 512;

/// Default interval between sweeps of the flow map: the longest a request
/// waits before it reaches the tallies.
pub const DEFAULT_UPDATE_INTERVAL_NS: u64 = 10_000_000_000;

/// Default ring-buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;

/// Open flows the kernel tracks at most. The map allocates entries as flows
/// appear, so this bounds memory without reserving it.
pub const MAX_FLOWS: u32 = 1 << 18;

/// Flow key used by the self-test programs. Socket cookies count up from 1 and
/// never reach it.
pub const SELFTEST_COOKIE: u64 = u64::MAX;

/// Names of the maps, globals and programs in the object, used by the loader.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const FLOWS: &str = "FLOWS";
    pub const LOSSES: &str = "LOSSES";
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    pub const EPHEMERAL_PORTS: &str = "EPHEMERAL_PORTS";
    pub const SOCK_OPS: &str = "meshdrift_sockops";
    pub const SKB_EGRESS: &str = "meshdrift_egress";
    pub const SKB_INGRESS: &str = "meshdrift_ingress";
    pub const SOCK_RELEASE: &str = "meshdrift_release";
    pub const SELFTEST_EGRESS: &str = "meshdrift_selftest_egress";
    pub const SELFTEST_INGRESS: &str = "meshdrift_selftest_ingress";
}

/// What a ring-buffer record is; always its first byte.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Final counters of a flow that has closed.
    Close = 2,
    /// The first client payload bytes of a flow.
    Payload = 3,
    /// A connect that never reached ESTABLISHED.
    ConnectFailed = 4,
}

impl RecordKind {
    /// The kind a record's first byte names, if it names one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            2 => Some(Self::Close),
            3 => Some(Self::Payload),
            4 => Some(Self::ConnectFailed),
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
    /// A close or connect-failed record could not be reserved in the ring
    /// buffer (it was full).
    RingbufFull = 0,
    /// A payload record could not be reserved in the ring buffer.
    PayloadRingbufFull = 1,
    /// An established flow could not be recorded: the flow map was full.
    FlowMapInsert = 2,
    /// A data packet of a flow opened before the programs were attached could
    /// not adopt it: the flow map was full. Counted per packet.
    AdoptMapFull = 3,
}

impl Loss {
    /// Every counter, in index order.
    pub const ALL: [Loss; 4] = [
        Loss::RingbufFull,
        Loss::PayloadRingbufFull,
        Loss::FlowMapInsert,
        Loss::AdoptMapFull,
    ];
    /// Number of loss counters: the size of the per-CPU array.
    pub const COUNT: u32 = Self::ALL.len() as u32;
}

/// Flags kept in [`FlowState::flags`]; set with atomic OR, never cleared.
pub mod flow_flags {
    /// The first client payload has been handed to user space.
    pub const PAYLOAD_CAPTURED: u64 = 1;
    /// The first client payload was a TLS record: TLS's own control records do
    /// not start exchanges, and client TLS records are counted.
    pub const TLS: u64 = 1 << 1;
    /// The flow was open before the programs were attached and was adopted on
    /// its first data packet: its role is inferred from the ports, and it
    /// closes on RST, on FIN from both ends, or when its socket is released.
    pub const ADOPTED: u64 = 1 << 2;
    /// An adopted flow's client sent FIN.
    pub const CLIENT_FIN: u64 = 1 << 3;
    /// An adopted flow's server sent FIN.
    pub const SERVER_FIN: u64 = 1 << 4;
    /// The client's record walker lost its place (a packet held more units
    /// than it walks): `client_records` stops growing and is not to be trusted.
    pub const RECORDS_LOST: u64 = 1 << 5;
    /// The first client bytes were the h2c connection preface: the walker
    /// counts the client's HTTP/2 HEADERS frames, one per request.
    pub const H2C: u64 = 1 << 6;
    /// The client's first data packet left for another address than the
    /// socket is connected to: a nat rule in the socket's own namespace
    /// rewrote it (a sidecar's outbound redirect, or kube-proxy's DNAT seen
    /// from the node). `FlowState::nat_addr`/`nat_port` hold where it went.
    pub const NATTED: u64 = 1 << 7;
}

/// Which way a data packet went, as an index into the per-direction counters.
pub mod direction {
    /// From the connection's client to its server.
    pub const FROM_CLIENT: usize = 0;
    /// From the server to the client.
    pub const FROM_SERVER: usize = 1;
}

/// Addresses and ports of a socket. Addresses are their network-order bytes
/// held as native-endian words, the way the kernel hands them to programs (so
/// the programs store whole words, never byte loops); IPv4 takes the first
/// word. Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAddrs {
    pub local_addr: [u32; 4],
    pub remote_addr: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    /// 4 or 6.
    pub family: u8,
    /// A [`Role`] as its byte.
    pub role: u8,
    pub _pad: [u8; 2],
}

/// The words of [`FlowAddrs`] for an address's network-order bytes.
pub const fn addr_words(bytes: [u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        words[i] = u32::from_ne_bytes([
            bytes[i * 4],
            bytes[i * 4 + 1],
            bytes[i * 4 + 2],
            bytes[i * 4 + 3],
        ]);
        i += 1;
    }
    words
}

/// The network-order bytes of an address held as [`FlowAddrs`] words.
pub const fn addr_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let word = words[i].to_ne_bytes();
        bytes[i * 4] = word[0];
        bytes[i * 4 + 1] = word[1];
        bytes[i * 4 + 2] = word[2];
        bytes[i * 4 + 3] = word[3];
        i += 1;
    }
    bytes
}

/// Per-flow state in the flow map, keyed by socket cookie.
///
/// Concurrency: the egress and ingress programs of one socket run on different
/// CPUs at once, and so, rarely, do two ingress runs. Every counter is
/// therefore changed only with atomic adds, `turn_mark` only with
/// compare-and-swap, and `flags` only with atomic OR, so no increment is lost
/// and each request turn is counted once however the runs interleave. The
/// record parser's position (`record_left`, `record_partial`) is a plain
/// field written from the client's direction only; a same-direction race can
/// at worst desynchronise `client_records`, never the other counters.
/// Fields are 64-bit: the BPF target has atomics of that width only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// TCP payload bytes, by [`direction`].
    pub bytes: [u64; 2],
    /// Data segments sent with PSH, by [`direction`]: the sender's write bursts.
    pub pushes: [u64; 2],
    /// Request turns: client data that follows server data (the first client
    /// data counts), TLS control records excluded.
    pub requests: u64,
    /// `bytes[FROM_SERVER]` when the last turn was counted; `u64::MAX` before the first.
    pub turn_mark: u64,
    /// TLS application-data records the client began (TLS flows), or its
    /// HEADERS frames (h2c flows).
    pub client_records: u64,
    /// Bytes of the client's current record or frame still to come in later packets.
    pub record_left: u64,
    /// A record header cut by a packet boundary: its first bytes (low 32
    /// bits) and how many there are (bits 32..40).
    pub record_partial: u64,
    /// The TCP sequence number the walker expects next from the client (low
    /// 32 bits; bit 32 set once known): retransmitted bytes are not walked twice.
    pub client_next_seq: u64,
    /// Bits of [`flow_flags`].
    pub flags: u64,
    /// `CLOCK_MONOTONIC` to the kernel's tick (`bpf_ktime_get_coarse_ns`) when
    /// the flow was established (or adopted).
    pub start_ns: u64,
    /// cgroup and owner uid of the socket, from its first client payload packet.
    pub cgroup_id: u64,
    pub uid: u32,
    pub _pad: u32,
    pub addrs: FlowAddrs,
    /// With [`flow_flags::NATTED`]: the destination of the client's first data
    /// packet after the socket's namespace's nat rules (address words as in
    /// [`FlowAddrs`]; port in host order).
    pub nat_addr: [u32; 4],
    pub nat_port: u16,
    pub _nat_pad: [u8; 6],
}

// The programs copy flow states a word at a time.
const _: () = assert!(size_of::<FlowState>().is_multiple_of(8) && align_of::<FlowState>() == 8);

impl FlowState {
    /// A flow seen for the first time at `start_ns`.
    pub const fn new(addrs: FlowAddrs, start_ns: u64, flags: u64) -> Self {
        FlowState {
            bytes: [0; 2],
            pushes: [0; 2],
            requests: 0,
            turn_mark: u64::MAX,
            client_records: 0,
            record_left: 0,
            record_partial: 0,
            client_next_seq: 0,
            flags,
            start_ns,
            cgroup_id: 0,
            uid: 0,
            _pad: 0,
            addrs,
            nat_addr: [0; 4],
            nat_port: 0,
            _nat_pad: [0; 6],
        }
    }
}

/// A close record: the flow's final state.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowEvent {
    /// [`RecordKind::Close`] as its byte.
    pub kind: u8,
    /// Never written by the programs, never read.
    pub _pad: [u8; 7],
    pub cookie: u64,
    /// `CLOCK_MONOTONIC` to the kernel's tick at the close.
    pub time_ns: u64,
    pub state: FlowState,
}

/// A connect that never reached ESTABLISHED: the socket went from SYN_SENT
/// straight to CLOSE (refused by a RST, timed out, or aborted by its owner).
/// Such a socket was never in the flow map, so the record carries its
/// addresses itself.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectFailedEvent {
    /// [`RecordKind::ConnectFailed`] as its byte.
    pub kind: u8,
    /// 1 when the SYN was retransmitted (timed out rather than refused)
    pub retransmitted: u8,
    /// Never written by the programs, never read.
    pub _pad: [u8; 6],
    pub cookie: u64,
    /// CLOCK_MONOTONIC coarse ns of the failure
    pub time_ns: u64,
    /// The client socket's addresses; its role is always [`Role::Client`].
    pub addrs: FlowAddrs,
}

// No implicit padding: user space reads the record byte for byte.
const _: () = assert!(size_of::<ConnectFailedEvent>() == 24 + size_of::<FlowAddrs>());

/// The first client payload bytes of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadEvent {
    /// [`RecordKind::Payload`] as its byte.
    pub kind: u8,
    /// A [`Role`] as its byte: which socket saw the bytes.
    pub role: u8,
    /// 1 when the bytes were taken mid-stream from an adopted flow, whose
    /// start (the TLS handshake, the HTTP/2 preface) was never seen.
    pub mid_stream: u8,
    pub _pad: u8,
    /// Bytes of `data` that are valid.
    pub len: u32,
    pub cookie: u64,
    pub data: [u8; PAYLOAD_CAPTURE_LEN],
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), from
/// which an adopted flow's role is inferred: the end whose port is in it is
/// the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// Linux's default.
    pub const DEFAULT: PortRange = PortRange {
        low: 32768,
        high: 60999,
    };

    pub const fn contains(&self, port: u16) -> bool {
        port >= self.low && port <= self.high
    }

    /// Whether the socket with `local` port talking to `remote` port is the
    /// connection's client: the end with an ephemeral port, else the end
    /// with the higher port (servers listen on low, well-known ports).
    pub const fn local_is_client(&self, local: u16, remote: u16) -> bool {
        match (self.contains(local), self.contains(remote)) {
            (true, false) => true,
            (false, true) => false,
            _ => local > remote,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding-sensitive invariants; any byte
    // pattern is a valid value.
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowAddrs {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::PayloadEvent {}
    unsafe impl aya::Pod for super::ConnectFailedEvent {}
    unsafe impl aya::Pod for super::PortRange {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ephemeral_end_is_the_client() {
        let range = PortRange::DEFAULT;
        assert!(range.local_is_client(40_000, 8443));
        assert!(!range.local_is_client(8443, 40_000));
        // Neither or both ephemeral: the higher port is the client's.
        assert!(range.local_is_client(20_000, 80));
        assert!(!range.local_is_client(80, 20_000));
        assert!(range.local_is_client(40_001, 40_000));
    }

    #[test]
    fn record_kinds_and_roles_round_trip_through_their_bytes() {
        for kind in [
            RecordKind::Close,
            RecordKind::Payload,
            RecordKind::ConnectFailed,
        ] {
            assert_eq!(RecordKind::from_u8(kind as u8), Some(kind));
        }
        for role in [Role::Client, Role::Server] {
            assert_eq!(Role::from_u8(role as u8), Some(role));
        }
        assert_eq!(RecordKind::from_u8(0), None);
        assert_eq!(Role::from_u8(9), None);
    }
}
