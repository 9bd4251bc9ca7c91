//! The kernel side of meshdrift, seen from user space: find the cgroup v2 root,
//! load and attach the eBPF programs, read their ring buffer and sweep their
//! flow map, and turn both into typed events. Knows nothing of Kubernetes or Istio.

pub mod capabilities;
mod event;
mod loader;
mod losses;
mod sweep;

pub use event::{
    DecodeError, FlowCounters, FlowKind, FlowRecord, PayloadRecord, ProbeEvent, Role, decode,
};
pub use loader::{Probe, ProbeConfig, ProbeError, check_capabilities, ebpf_object};
pub use losses::{KernelLosses, LossCounters};
pub use meshdrift_host::CgroupError;
pub use sweep::Sweeper;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel's timestamps.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}
