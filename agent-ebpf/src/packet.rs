//! Per-packet accounting for known flows: payload bytes, exchanges, the first
//! client bytes, and periodic updates of long-lived flows.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    programs::SkBuffContext,
};
use meshdrift_ebpf::{
    Loss, PAYLOAD_CAPTURE_LEN, PayloadEvent, RecordKind, Role, data_dir, flow_flags,
};

use crate::state::{EVENTS, FLOWS, count_loss, emit_flow, update_interval_ns};

const IPPROTO_TCP: u8 = 6;
const TLS_CHANGE_CIPHER_SPEC: u8 = 0x14;
const TLS_ALERT: u8 = 0x15;
const TLS_HANDSHAKE: u8 = 0x16;
const TLS_APPLICATION_DATA: u8 = 0x17;
/// A TLS 1.3 alert (close_notify) travels as an application-data record of
/// 2 alert bytes + 1 content-type byte + a 16-byte AEAD tag.
const TLS13_ALERT_RECORD_LEN: u16 = 19;
const TLS_RECORD_HEADER_LEN: u32 = 5;

#[inline(always)]
pub fn observe(ctx: &SkBuffContext, egress: bool) {
    // SAFETY: helper call on the context pointer the kernel gave us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast::<c_void>()) };
    observe_flow(ctx, egress, cookie);
}

/// Accounts one packet to the flow `cookie`, if that flow is known.
#[inline(always)]
pub fn observe_flow(ctx: &SkBuffContext, egress: bool, cookie: u64) {
    let skb = ctx.skb.skb;
    let Some(state) = FLOWS.get_ptr_mut(cookie) else {
        return;
    };
    // SAFETY: the map value stays valid for this program run.
    let state = unsafe { &mut *state };
    let Some((payload_offset, payload_len)) = tcp_payload(ctx) else {
        return;
    };
    if state.cgroup_id == 0 {
        // SAFETY: helper call on our context.
        state.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    }
    if payload_len == 0 {
        return;
    }
    if egress {
        state.bytes_sent += u64::from(payload_len);
    } else {
        state.bytes_received += u64::from(payload_len);
    }
    let from_client = (state.addrs.role == Role::Client as u8) == egress;
    if from_client {
        let first_byte: u8 = ctx.load(payload_offset as usize).unwrap_or(0);
        if state.flags & flow_flags::PAYLOAD_CAPTURED == 0 {
            state.flags |= flow_flags::PAYLOAD_CAPTURED;
            if first_byte == TLS_HANDSHAKE {
                state.flags |= flow_flags::TLS;
            }
            capture(ctx, cookie, state.addrs.role, payload_offset, payload_len);
        }
        let not_a_request =
            state.flags & flow_flags::TLS != 0 && tls_control(ctx, payload_offset, payload_len);
        if state.last_data != data_dir::FROM_CLIENT && !not_a_request {
            state.exchanges += 1;
            state.last_data = data_dir::FROM_CLIENT;
        }
    } else {
        state.last_data = data_dir::FROM_SERVER;
    }
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(state.last_report_ns) >= update_interval_ns() {
        state.last_report_ns = now;
        emit_flow(RecordKind::Update, cookie, state, now);
    }
}

/// Whether a TLS flow's packet carries only TLS's own control records, which are
/// not requests: handshake, change-cipher-spec and alert records, and the
/// encrypted close_notify a TLS 1.3 client sends when it closes an idle connection.
#[inline(always)]
fn tls_control(ctx: &SkBuffContext, offset: u32, payload_len: u32) -> bool {
    let Ok(header) = ctx.load::<[u8; 5]>(offset as usize) else {
        return false;
    };
    let record_len = u16::from_be_bytes([header[3], header[4]]);
    match header[0] {
        TLS_HANDSHAKE | TLS_CHANGE_CIPHER_SPEC | TLS_ALERT => true,
        TLS_APPLICATION_DATA => {
            record_len == TLS13_ALERT_RECORD_LEN
                && payload_len == TLS_RECORD_HEADER_LEN + u32::from(TLS13_ALERT_RECORD_LEN)
        }
        _ => false,
    }
}

/// Offset and length of the TCP payload; `skb->data` starts at the IP header in
/// cgroup_skb programs.
#[inline(always)]
fn tcp_payload(ctx: &SkBuffContext) -> Option<(u32, u32)> {
    let version_ihl: u8 = ctx.load(0).ok()?;
    let (l4_offset, protocol) = match version_ihl >> 4 {
        4 => {
            let protocol: u8 = ctx.load(9).ok()?;
            (u32::from(version_ihl & 0x0f) * 4, protocol)
        }
        6 => {
            let next_header: u8 = ctx.load(6).ok()?;
            (40, next_header)
        }
        _ => return None,
    };
    if protocol != IPPROTO_TCP {
        return None;
    }
    let data_offset: u8 = ctx.load(l4_offset as usize + 12).ok()?;
    let payload_offset = l4_offset + u32::from(data_offset >> 4) * 4;
    Some((payload_offset, ctx.len().saturating_sub(payload_offset)))
}

/// Copies up to `PAYLOAD_CAPTURE_LEN` payload bytes into a ring-buffer record with
/// fixed-size loads (the verifier refuses variable-length ones).
#[inline(always)]
#[allow(
    clippy::int_plus_one,
    reason = "one bounds check written alike for every load size keeps the verifier's bound explicit"
)]
fn capture(ctx: &SkBuffContext, cookie: u64, flow_role: u8, offset: u32, payload_len: u32) {
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
        (*event)._pad = [0; 2];
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
    entry.submit(0);
}
