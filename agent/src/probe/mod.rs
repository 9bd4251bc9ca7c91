//! The kernel side of meshdrift, seen from user space: find the cgroup v2 root,
//! load and attach the eBPF programs, read their ring buffer and sweep their
//! flow map, and turn both into typed events. Knows nothing of Kubernetes or Istio.

mod event;
mod loader;
mod losses;
mod sweep;

pub use event::{
    DecodeError, FlowCounters, FlowKind, FlowRecord, PayloadRecord, ProbeEvent, Role, decode,
};
pub use loader::{Probe, ProbeConfig, ProbeError, ebpf_object};
pub use losses::{KernelLosses, LossCounters};
pub use meshdrift_host::CgroupError;
pub use sweep::Sweeper;
