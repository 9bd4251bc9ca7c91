//! Per-packet accounting: payload bytes and write bursts per direction,
//! request turns, client TLS records, the first client bytes, and flows that
//! were open before the programs were attached.
//!
//! Nothing here waits for time to pass or wakes user space per packet: the
//! counters live in the flow map, which user space sweeps.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_TCP_ESTABLISHED,
    helpers::{
        bpf_get_socket_cookie, bpf_get_socket_uid, bpf_sk_fullsock, bpf_skb_cgroup_id,
        bpf_skb_load_bytes,
    },
    programs::SkBuffContext,
};
use meshdrift_ebpf::{
    FlowAddrs, FlowState, Loss, PAYLOAD_CAPTURE_LEN, PayloadEvent, RecordKind, Role, direction,
    flow_flags,
};

use crate::state::{
    EVENTS, FLOWS, atomic_add, atomic_set_flags, compare_and_swap, count_loss, emit_close,
    ephemeral_ports, now_ns, read_shared, submit_flags,
};
use crate::{records, tls};

const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
/// BPF_NOEXIST: another CPU may adopt the same flow at the same moment.
const INSERT_IF_ABSENT: u64 = 1;

/// What a TCP packet's headers say.
struct Segment {
    /// Offset of the TCP payload from the start of the IP header.
    payload_offset: u32,
    payload_len: u32,
    tcp_flags: u8,
    /// TCP sequence number of the first payload byte.
    seq: u32,
}

/// Source and destination of a packet, read only to adopt its flow.
struct Endpoints {
    family: u8,
    src_addr: [u32; 4],
    dst_addr: [u32; 4],
    src_port: u16,
    dst_port: u16,
}

#[inline(always)]
pub fn observe(ctx: &SkBuffContext, egress: bool) {
    let Some(segment) = parse(ctx) else {
        return;
    };
    // A pure ACK changes nothing: no bytes, no turn, no end of a flow. About
    // half of all packets stop here, before the socket's cookie and lookup.
    if segment.payload_len == 0 && segment.tcp_flags & (TCP_FIN | TCP_RST) == 0 {
        return;
    }
    // SAFETY: helper call on the context pointer the kernel gave us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast::<c_void>()) };
    let state = match FLOWS.get_ptr_mut(cookie) {
        Some(state) => state,
        None => match adopt(ctx, egress, cookie, &segment) {
            Some(state) => state,
            None => return,
        },
    };
    account(ctx, egress, cookie, state, &segment);
}

/// The packet path of [`observe`] for the flow `cookie`, which must already
/// be in the flow map: the self-tests drive it with synthetic frames.
#[inline(always)]
pub fn observe_known(ctx: &SkBuffContext, egress: bool, cookie: u64) {
    let Some(segment) = parse(ctx) else {
        return;
    };
    if let Some(state) = FLOWS.get_ptr_mut(cookie) {
        account(ctx, egress, cookie, state, &segment);
    }
}

#[inline(always)]
fn account(
    ctx: &SkBuffContext,
    egress: bool,
    cookie: u64,
    state: *mut FlowState,
    segment: &Segment,
) {
    // SAFETY: `state` points at a live map value for this program run; fields
    // other CPUs write are only touched through the atomic helpers.
    let (flags, client_socket) = unsafe {
        (
            read_shared(&raw const (*state).flags),
            (*state).addrs.role == Role::Client as u8,
        )
    };
    let from_client = client_socket == egress;
    if segment.payload_len > 0 {
        let dir = if from_client {
            direction::FROM_CLIENT
        } else {
            direction::FROM_SERVER
        };
        // SAFETY: as above; `dir` is 0 or 1.
        unsafe {
            atomic_add(&raw mut (*state).bytes[dir], u64::from(segment.payload_len));
            if segment.tcp_flags & TCP_PSH != 0 {
                atomic_add(&raw mut (*state).pushes[dir], 1);
            }
        }
        if from_client {
            client_data(ctx, cookie, state, segment, flags);
        }
    }
    if flags & flow_flags::ADOPTED != 0 && segment.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        end_of_adopted(cookie, state, segment.tcp_flags, from_client);
    }
}

/// Client data: the first bytes, request turns and TLS records.
#[inline(always)]
fn client_data(
    ctx: &SkBuffContext,
    cookie: u64,
    state: *mut FlowState,
    segment: &Segment,
    mut flags: u64,
) {
    if flags & flow_flags::PAYLOAD_CAPTURED == 0 {
        flags |= first_client_bytes(ctx, cookie, state, segment, flags);
    }
    let is_tls = flags & flow_flags::TLS != 0;
    let is_h2c = flags & flow_flags::H2C != 0;
    let control =
        is_tls && tls::starts_with_control(ctx, segment.payload_offset, segment.payload_len);
    if !control {
        count_turn(state);
    }
    if (is_tls || is_h2c)
        && flags & flow_flags::RECORDS_LOST == 0
        && let Some((offset, len)) = new_client_bytes(state, segment)
    {
        records::count_units(ctx, state, offset, len, is_h2c, !control);
    }
}

/// The part of a client segment the walker has not seen (offset and length),
/// by the TCP sequence number: a retransmission walks nothing twice. A gap
/// (bytes that never passed here) loses the walker its place.
#[inline(always)]
fn new_client_bytes(state: *mut FlowState, segment: &Segment) -> Option<(u32, u32)> {
    const KNOWN: u64 = 1 << 32;
    // SAFETY: live map value; the client direction's own field.
    let expected = unsafe { (*state).client_next_seq };
    let end = segment.seq.wrapping_add(segment.payload_len);
    let skip = if expected & KNOWN == 0 {
        0
    } else {
        // Distance from what the walker expects, in sequence space.
        let ahead = segment.seq.wrapping_sub(expected as u32) as i32;
        if ahead > 0 {
            // SAFETY: live map value.
            atomic_set_flags(unsafe { &raw mut (*state).flags }, flow_flags::RECORDS_LOST);
            return None;
        }
        ahead.unsigned_abs()
    };
    if skip >= segment.payload_len {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*state).client_next_seq = KNOWN | u64::from(end) };
    Some((segment.payload_offset + skip, segment.payload_len - skip))
}

/// A request turn begins when client data follows server data. One CPU wins
/// the compare-and-swap per turn, however many see it at once.
#[inline(always)]
fn count_turn(state: *mut FlowState) {
    // SAFETY: live map value; shared fields go through the atomic helpers.
    unsafe {
        let server_bytes = read_shared(&raw const (*state).bytes[direction::FROM_SERVER]);
        let mark = read_shared(&raw const (*state).turn_mark);
        if server_bytes != mark && compare_and_swap(&raw mut (*state).turn_mark, mark, server_bytes)
        {
            atomic_add(&raw mut (*state).requests, 1);
        }
    }
}

/// Claims the flow's first client bytes: the CPU that sets the flag records
/// the socket's cgroup and owner and hands the bytes to user space. Returns
/// the flags it set.
#[inline(always)]
fn first_client_bytes(
    ctx: &SkBuffContext,
    cookie: u64,
    state: *mut FlowState,
    segment: &Segment,
    flags: u64,
) -> u64 {
    // SAFETY: live map value.
    let old = atomic_set_flags(
        unsafe { &raw mut (*state).flags },
        flow_flags::PAYLOAD_CAPTURED,
    );
    if old & flow_flags::PAYLOAD_CAPTURED != 0 {
        return old;
    }
    let adopted = flags & flow_flags::ADOPTED != 0;
    let mut set = flow_flags::PAYLOAD_CAPTURED;
    if tls::is_record(ctx, segment.payload_offset, !adopted) {
        set |= flow_flags::TLS;
        // SAFETY: live map value.
        atomic_set_flags(unsafe { &raw mut (*state).flags }, flow_flags::TLS);
    } else if !adopted && tls::is_h2c_preface(ctx, segment.payload_offset) {
        set |= flow_flags::H2C;
        // SAFETY: live map value; the walker (this CPU, next) starts after the preface.
        unsafe { (*state).record_left = tls::H2_PREFACE_LEN };
        atomic_set_flags(unsafe { &raw mut (*state).flags }, flow_flags::H2C);
    }
    let skb = ctx.skb.skb;
    // SAFETY: live map value; read-only fields set when the flow was made.
    let client_socket = unsafe { (*state).addrs.role == Role::Client as u8 };
    if client_socket && !adopted {
        set |= note_nat(ctx, state);
    }
    // SAFETY: helper calls on our context; only the CPU that claimed the
    // capture writes these fields, once.
    unsafe {
        (*state).cgroup_id = bpf_skb_cgroup_id(skb);
        (*state).uid = bpf_get_socket_uid(skb);
        capture(
            ctx,
            cookie,
            (*state).addrs.role,
            adopted,
            segment.payload_offset,
            segment.payload_len,
        );
    }
    set
}

/// Compares where the client's first data packet is going with where its
/// socket is connected: egress programs run after the namespace's nat rules,
/// so a difference is a redirect or DNAT the kernel applied to this flow.
/// Records it and returns the flag it set (0 when nothing was rewritten).
#[inline(always)]
fn note_nat(ctx: &SkBuffContext, state: *mut FlowState) -> u64 {
    let Some(packet) = endpoints(ctx) else {
        return 0;
    };
    // SAFETY: live map value; the addresses were written when the flow was made.
    let (remote_addr, remote_port) =
        unsafe { ((*state).addrs.remote_addr, (*state).addrs.remote_port) };
    if packet.dst_addr == remote_addr && packet.dst_port == remote_port {
        return 0;
    }
    // SAFETY: live map value; only the CPU that claimed the capture gets here.
    unsafe {
        (*state).nat_addr = packet.dst_addr;
        (*state).nat_port = packet.dst_port;
    }
    // SAFETY: live map value.
    atomic_set_flags(unsafe { &raw mut (*state).flags }, flow_flags::NATTED);
    flow_flags::NATTED
}

/// An adopted flow has no state callback: it ends on RST, or once both ends
/// have sent FIN.
#[inline(always)]
fn end_of_adopted(cookie: u64, state: *mut FlowState, tcp_flags: u8, from_client: bool) {
    let finished = if tcp_flags & TCP_RST != 0 {
        true
    } else {
        let fin = if from_client {
            flow_flags::CLIENT_FIN
        } else {
            flow_flags::SERVER_FIN
        };
        let both = flow_flags::CLIENT_FIN | flow_flags::SERVER_FIN;
        // SAFETY: live map value.
        let old = atomic_set_flags(unsafe { &raw mut (*state).flags }, fin);
        old & both != both && (old | fin) & both == both
    };
    if finished {
        // The value is copied before the entry is removed.
        emit_close(cookie, state, now_ns());
        let _ = FLOWS.remove(cookie);
    }
}

/// A data packet of an established TCP socket the map does not know: the
/// flow was open before the programs were attached. It is adopted with the
/// packet's addresses and a role inferred from the ports; what it carried
/// before is not invented.
#[inline(always)]
fn adopt(
    ctx: &SkBuffContext,
    egress: bool,
    cookie: u64,
    segment: &Segment,
) -> Option<*mut FlowState> {
    if segment.payload_len == 0 || cookie == 0 {
        return None;
    }
    // SAFETY: reading the context's socket pointer and asking the kernel for
    // the full socket behind it; both may be null, which is checked.
    let established = unsafe {
        let sk = (*ctx.skb.skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(sk);
        !full.is_null() && (*full).state == BPF_TCP_ESTABLISHED
    };
    if !established {
        return None;
    }
    let packet = endpoints(ctx)?;
    let (local_addr, remote_addr, local_port, remote_port) = if egress {
        (
            packet.src_addr,
            packet.dst_addr,
            packet.src_port,
            packet.dst_port,
        )
    } else {
        (
            packet.dst_addr,
            packet.src_addr,
            packet.dst_port,
            packet.src_port,
        )
    };
    let role = if ephemeral_ports().local_is_client(local_port, remote_port) {
        Role::Client
    } else {
        Role::Server
    };
    let addrs = FlowAddrs {
        local_addr,
        remote_addr,
        local_port,
        remote_port,
        family: packet.family,
        role: role as u8,
        _pad: [0; 2],
    };
    let state = FlowState::new(addrs, now_ns(), flow_flags::ADOPTED);
    if FLOWS.insert(cookie, state, INSERT_IF_ABSENT).is_err() && FLOWS.get_ptr(cookie).is_none() {
        count_loss(Loss::AdoptMapFull);
        return None;
    }
    FLOWS.get_ptr_mut(cookie)
}

/// Reads the IP and TCP headers with direct packet access: `skb->data`
/// starts at the IP header in cgroup_skb programs, and the headers are in the
/// linear part. Anything but TCP is `None`.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Segment> {
    let skb = ctx.skb.skb;
    // SAFETY: reads of the context fields the kernel provides.
    let (data, data_end, len) =
        unsafe { ((*skb).data as usize, (*skb).data_end as usize, (*skb).len) };
    if data + 40 > data_end {
        return None;
    }
    // SAFETY: every read below is of bytes the bounds checks put before `data_end`.
    let l4 = unsafe {
        let version_ihl = *(data as *const u8);
        match version_ihl >> 4 {
            4 if *((data + 9) as *const u8) == IPPROTO_TCP => usize::from(version_ihl & 0x0f) * 4,
            6 if *((data + 6) as *const u8) == IPPROTO_TCP => 40,
            _ => return None,
        }
    };
    let tcp = data + l4;
    if tcp + 14 > data_end {
        return None;
    }
    // SAFETY: within the bounds checked just above.
    let (seq, data_offset, tcp_flags) = unsafe {
        (
            u32::from_be_bytes(*((tcp + 4) as *const [u8; 4])),
            *((tcp + 12) as *const u8),
            *((tcp + 13) as *const u8),
        )
    };
    let payload_offset = (l4 + usize::from(data_offset >> 4) * 4) as u32;
    Some(Segment {
        payload_offset,
        payload_len: len.saturating_sub(payload_offset),
        tcp_flags,
        seq,
    })
}

/// The packet's addresses and ports, for the rare packet whose flow is adopted.
#[inline(always)]
fn endpoints(ctx: &SkBuffContext) -> Option<Endpoints> {
    let skb = ctx.skb.skb;
    // SAFETY: reads of the context fields the kernel provides.
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + 40 > data_end {
        return None;
    }
    // SAFETY: every read below is of bytes the bounds checks put before `data_end`.
    unsafe {
        let version_ihl = *(data as *const u8);
        let word = |offset: usize| core::ptr::read_unaligned((data + offset) as *const u32);
        let (family, src_addr, dst_addr, l4) = if version_ihl >> 4 == 4 {
            let l4 = usize::from(version_ihl & 0x0f) * 4;
            (4, [word(12), 0, 0, 0], [word(16), 0, 0, 0], l4)
        } else {
            (
                6,
                [word(8), word(12), word(16), word(20)],
                [word(24), word(28), word(32), word(36)],
                40,
            )
        };
        let tcp = data + l4;
        if tcp + 4 > data_end {
            return None;
        }
        let ports = *(tcp as *const [u8; 4]);
        Some(Endpoints {
            family,
            src_addr,
            dst_addr,
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        })
    }
}

/// Copies up to `PAYLOAD_CAPTURE_LEN` payload bytes into a ring-buffer record with
/// fixed-size loads (the verifier refuses variable-length ones).
#[inline(always)]
#[allow(
    clippy::int_plus_one,
    reason = "one bounds check written alike for every load size keeps the verifier's bound explicit"
)]
fn capture(
    ctx: &SkBuffContext,
    cookie: u64,
    flow_role: u8,
    mid_stream: bool,
    offset: u32,
    payload_len: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<PayloadEvent>(0) else {
        count_loss(Loss::PayloadRingbufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    let skb = ctx.skb.skb.cast::<c_void>();
    let wanted = if payload_len < PAYLOAD_CAPTURE_LEN as u32 {
        payload_len
    } else {
        PAYLOAD_CAPTURE_LEN as u32
    };
    let mut copied: u32 = 0;
    // SAFETY: `event` points at reserved ring-buffer memory of size_of::<PayloadEvent>();
    // every write below stays inside `data` by the explicit bounds checks.
    unsafe {
        (*event).kind = RecordKind::Payload as u8;
        (*event).role = flow_role;
        (*event).mid_stream = u8::from(mid_stream);
        (*event)._pad = 0;
        (*event).cookie = cookie;
        let data = (&raw mut (*event).data).cast::<u8>();
        macro_rules! load_chunk {
            ($size:literal) => {
                if wanted - copied >= $size && (copied as usize) <= PAYLOAD_CAPTURE_LEN - $size {
                    if bpf_skb_load_bytes(
                        skb,
                        offset + copied,
                        data.add(copied as usize).cast::<c_void>(),
                        $size,
                    ) == 0
                    {
                        copied += $size;
                    }
                }
            };
        }
        for _ in 0..PAYLOAD_CAPTURE_LEN / 64 {
            load_chunk!(64);
        }
        load_chunk!(32);
        load_chunk!(16);
        load_chunk!(8);
        load_chunk!(4);
        load_chunk!(2);
        load_chunk!(1);
        (*event).len = copied;
    }
    entry.submit(submit_flags());
}
