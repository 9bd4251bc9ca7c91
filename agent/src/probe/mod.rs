//! The kernel side of meshdrift, seen from user space: find the cgroup v2 root,
//! load and attach the eBPF programs, and turn ring-buffer records into typed events.
//! Knows nothing of Kubernetes or Istio.

mod event;
mod loader;

pub use event::{DecodeError, FlowKind, FlowRecord, PayloadRecord, ProbeEvent, Role, decode};
pub use loader::{LossCounters, Probe, ProbeConfig, ProbeError, ebpf_object};
pub use meshdrift_host::CgroupError;
