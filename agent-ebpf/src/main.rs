//! meshdrift's kernel programs: a `sock_ops` program that tracks every established
//! TCP connection, two `cgroup_skb` programs that count bytes, write bursts,
//! request turns and TLS records, capture the first client bytes and adopt
//! connections opened before they were attached, and a `cgroup/sock_release`
//! program that closes adopted connections. All are attached to the root of
//! the cgroup v2 hierarchy. None of them ever drops, delays or changes a packet.

// On the host this binary is an empty shell; the shared crate's `user` feature
// still links aya into it.
#![cfg_attr(not(target_arch = "bpf"), allow(unused_crate_dependencies))]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// 64-bit atomic add, OR and compare-and-swap on map values: the BPF target
// has no `AtomicU64` read-modify-write methods, but LLVM emits these.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod records;
#[cfg(target_arch = "bpf")]
mod state;
#[cfg(target_arch = "bpf")]
mod tls;

/// Host builds of the workspace compile this binary too; it only means something
/// for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic, so this is
    // never executed.
    unsafe { core::hint::unreachable_unchecked() }
}
