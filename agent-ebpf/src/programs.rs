//! Program entry points. Each returns "allow" whatever happens inside.

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_TCP_CLOSE, BPF_TCP_SYN_SENT, bpf_sock_ops,
    },
    helpers::{bpf_get_socket_cookie, bpf_sock_ops_cb_flags_set},
    macros::{cgroup_skb, cgroup_sock, sock_ops},
    programs::{SkBuffContext, SockContext, SockOpsContext},
};
use meshdrift_ebpf::{FlowAddrs, FlowState, Loss, Role, flow_flags};

use crate::{
    packet,
    state::{FLOWS, count_loss, emit_close, emit_connect_failed, now_ns, read_shared},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// Arms only the state callback: for flows it records, and for every active
/// open (so a connect that fails is seen); every other operation returns at once.
#[sock_ops]
pub fn meshdrift_sockops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: `ops` is the context the kernel handed us; fields are read one by one
    // with their declared width, as the verifier requires.
    let op = unsafe { read_volatile(&raw const (*ops).op) };
    match op {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(ops, Role::Client),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_established(ops, Role::Server),
        // Runs for every connect(): nothing but the flag, so the common case
        // (a connect that succeeds) pays one helper call here.
        BPF_SOCK_OPS_TCP_CONNECT_CB => arm_state_callback(ops),
        BPF_SOCK_OPS_STATE_CB => {
            // SAFETY: as above; args[1] is the new state for STATE_CB.
            let new_state = unsafe { read_volatile(&raw const (*ops).__bindgen_anon_1.args[1]) };
            if new_state == BPF_TCP_CLOSE {
                // SAFETY: as above; args[0] is the old state.
                let old_state =
                    unsafe { read_volatile(&raw const (*ops).__bindgen_anon_1.args[0]) };
                // A socket that never established has no flow to close,
                // unless it was adopted from data sent with its SYN; its
                // close, if any, goes first and keeps its classification.
                on_close(ops);
                if old_state == BPF_TCP_SYN_SENT {
                    on_connect_failed(ops);
                }
            }
        }
        _ => {}
    }
    1
}

/// Asks for state callbacks on this socket, keeping the flags already set.
#[inline(always)]
fn arm_state_callback(ops: *mut bpf_sock_ops) {
    // SAFETY: context field read at its declared width.
    let flags = unsafe { read_volatile(&raw const (*ops).bpf_sock_ops_cb_flags) };
    // SAFETY: helper call on the context pointer the kernel gave us. Failure
    // only means no state callback: no close record for a recorded flow (the
    // sweep then finds it gone and user space says so), no record of a
    // failed connect.
    let _ = unsafe { bpf_sock_ops_cb_flags_set(ops, (flags | BPF_SOCK_OPS_STATE_CB_FLAG) as i32) };
}

#[inline(always)]
fn on_established(ops: *mut bpf_sock_ops, flow_role: Role) {
    let Some(addrs) = read_addrs(ops, flow_role) else {
        return;
    };
    // SAFETY: helper call on the context pointer the kernel gave us.
    let cookie = unsafe { bpf_get_socket_cookie(ops.cast::<c_void>()) };
    if FLOWS
        .insert(cookie, FlowState::new(addrs, now_ns(), 0), 0)
        .is_err()
    {
        count_loss(Loss::FlowMapInsert);
        return;
    }
    arm_state_callback(ops);
}

/// The socket left SYN_SENT for CLOSE: refused (a RST answered the SYN),
/// timed out, or given up by its owner. It was never established, so it is
/// not in the flow map; the record carries its addresses.
#[inline(always)]
fn on_connect_failed(ops: *mut bpf_sock_ops) {
    let Some(addrs) = read_addrs(ops, Role::Client) else {
        return;
    };
    // SAFETY: context field read at its declared width. The kernel adds each
    // retransmission of the SYN here; a refused connect has none, one that
    // timed out at least one unless its owner gave up within the first RTO.
    let retransmitted = unsafe { read_volatile(&raw const (*ops).total_retrans) } > 0;
    // SAFETY: helper call on the context pointer the kernel gave us.
    let cookie = unsafe { bpf_get_socket_cookie(ops.cast::<c_void>()) };
    emit_connect_failed(cookie, &addrs, retransmitted, now_ns());
}

#[inline(always)]
fn on_close(ops: *mut bpf_sock_ops) {
    // SAFETY: helper call on the context pointer the kernel gave us.
    let cookie = unsafe { bpf_get_socket_cookie(ops.cast::<c_void>()) };
    // State callbacks are armed only for flows that were recorded, so a
    // missing entry can only be a flow whose insert failed (already counted).
    if let Some(state) = FLOWS.get_ptr(cookie) {
        // The map value stays valid until removed below; it is copied first.
        emit_close(cookie, state, now_ns());
        let _ = FLOWS.remove(cookie);
    }
}

/// Addresses of the socket, IPv4-mapped IPv6 folded to IPv4 so both ends of a
/// dual-stack connection look alike.
#[inline(always)]
fn read_addrs(ops: *mut bpf_sock_ops, flow_role: Role) -> Option<FlowAddrs> {
    // SAFETY: context field reads, each at its declared width.
    unsafe {
        let family = read_volatile(&raw const (*ops).family);
        // local_port is host order; remote_port holds the network-order port in its upper 16 bits.
        let local_port = read_volatile(&raw const (*ops).local_port) as u16;
        let remote_port = u16::from_be((read_volatile(&raw const (*ops).remote_port) >> 16) as u16);
        let (local_addr, remote_addr, family) = match family {
            AF_INET => (
                [read_volatile(&raw const (*ops).local_ip4), 0, 0, 0],
                [read_volatile(&raw const (*ops).remote_ip4), 0, 0, 0],
                4,
            ),
            AF_INET6 => {
                let local = [
                    read_volatile(&raw const (*ops).local_ip6[0]),
                    read_volatile(&raw const (*ops).local_ip6[1]),
                    read_volatile(&raw const (*ops).local_ip6[2]),
                    read_volatile(&raw const (*ops).local_ip6[3]),
                ];
                let remote = [
                    read_volatile(&raw const (*ops).remote_ip6[0]),
                    read_volatile(&raw const (*ops).remote_ip6[1]),
                    read_volatile(&raw const (*ops).remote_ip6[2]),
                    read_volatile(&raw const (*ops).remote_ip6[3]),
                ];
                if is_v4_mapped(&local) && is_v4_mapped(&remote) {
                    ([local[3], 0, 0, 0], [remote[3], 0, 0, 0], 4)
                } else {
                    (local, remote, 6)
                }
            }
            _ => return None,
        };
        Some(FlowAddrs {
            local_addr,
            remote_addr,
            local_port,
            remote_port,
            family,
            role: flow_role as u8,
            _pad: [0; 2],
        })
    }
}

#[inline(always)]
fn is_v4_mapped(words: &[u32; 4]) -> bool {
    words[0] == 0 && words[1] == 0 && words[2].to_ne_bytes() == [0, 0, 0xff, 0xff]
}

#[cgroup_skb(egress)]
pub fn meshdrift_egress(ctx: SkBuffContext) -> i32 {
    packet::observe(&ctx, true);
    1
}

#[cgroup_skb(ingress)]
pub fn meshdrift_ingress(ctx: SkBuffContext) -> i32 {
    packet::observe(&ctx, false);
    1
}

/// A socket's last reference is gone. Flows with a state callback close
/// there; an adopted flow whose end no packet showed (a connection timed out
/// and then closed by its owner) closes here.
#[cgroup_sock(sock_release)]
pub fn meshdrift_release(ctx: SockContext) -> i32 {
    // SAFETY: helper calls on the context pointer the kernel gave us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast::<c_void>()) };
    if let Some(state) = FLOWS.get_ptr(cookie) {
        // SAFETY: the map value stays valid until removed below; it is copied first.
        let adopted = read_shared(unsafe { &raw const (*state).flags }) & flow_flags::ADOPTED != 0;
        if adopted {
            emit_close(cookie, state, now_ns());
            let _ = FLOWS.remove(cookie);
        }
    }
    1
}

/// Self-test entry points: the packet path of [`meshdrift_egress`] and
/// [`meshdrift_ingress`] on the flow `SELFTEST_COOKIE`, so user space can drive it
/// with `BPF_PROG_TEST_RUN` and synthetic frames. Never attached.
#[cgroup_skb]
pub fn meshdrift_selftest_egress(ctx: SkBuffContext) -> i32 {
    packet::observe_known(&ctx, true, meshdrift_ebpf::SELFTEST_COOKIE);
    1
}

#[cgroup_skb]
pub fn meshdrift_selftest_ingress(ctx: SkBuffContext) -> i32 {
    packet::observe_known(&ctx, false, meshdrift_ebpf::SELFTEST_COOKIE);
    1
}
