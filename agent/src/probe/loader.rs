//! Loads the embedded eBPF object, attaches it to the cgroup v2 root and reads
//! its ring buffer. Dropping the [`Probe`] detaches everything.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SockOps},
};
use meshdrift_ebpf::{DEFAULT_RING_BUFFER_BYTES, DEFAULT_UPDATE_INTERVAL_NS, Loss, names};
use serde::Serialize;
use tokio::io::unix::AsyncFd;

use super::{CgroupError, ProbeEvent, decode};

/// The kernel programs, built by `build.rs` from `agent-ebpf`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/meshdrift-probes"));

/// The embedded eBPF object (empty when built with `AYA_BUILD_SKIP`). The kernel
/// self-tests load it directly to drive the packet path with synthetic frames.
pub fn ebpf_object() -> &'static [u8] {
    EBPF_OBJECT
}

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// cgroup v2 directory to attach to; the hierarchy's root when `None`.
    pub cgroup: Option<PathBuf>,
    /// How often a long-lived flow reports its cumulative counters.
    pub update_interval: Duration,
    /// Ring-buffer size in bytes: a power of two and a multiple of the page size.
    pub ring_buffer_bytes: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            cgroup: None,
            update_interval: Duration::from_nanos(DEFAULT_UPDATE_INTERVAL_NS),
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this binary carries no eBPF object (it was built with AYA_BUILD_SKIP); \
         rebuild without it, with bpf-linker and the nightly rust-src installed (cargo xtask setup)"
    )]
    NoObject,
    #[error(
        "ring-buffer size {0} is invalid: it must be a power of two and a multiple of the page size (4096)"
    )]
    RingBufferSize(u32),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot open cgroup {path}: {source}")]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error(
        "loading the eBPF programs failed: {source}{hint}",
        hint = permission_hint(source)
    )]
    Load { source: aya::EbpfError },
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("program {name}: {source}{hint}", hint = program_hint(source))]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("waiting on the ring buffer: {0}")]
    Poll(io::Error),
}

/// The operating-system error at the root of `err`'s source chain, if any.
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(code) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        current = error.source();
    }
    None
}

fn permission_hint(err: &aya::EbpfError) -> &'static str {
    match os_error(err) {
        Some(libc::EPERM | libc::EACCES) => {
            " (loading eBPF needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        }
        _ => "",
    }
}

fn program_hint(err: &aya::programs::ProgramError) -> &'static str {
    match os_error(err) {
        Some(libc::EEXIST) => {
            " (another program is already attached to this cgroup in exclusive mode: is another meshdrift running?)"
        }
        Some(libc::EPERM | libc::EACCES) => " (attaching to a cgroup needs root or CAP_NET_ADMIN)",
        _ => "",
    }
}

/// Lost records, by reason. Every counter is reported, zeros included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossCounters {
    /// Flow updates/closes the kernel could not queue: the ring buffer was full.
    pub ringbuf_full: u64,
    /// First-payload records the kernel could not queue.
    pub payload_ringbuf_full: u64,
    /// Flows the kernel could not record in its flow map.
    pub flow_map_insert: u64,
    /// Flows whose state was evicted from the kernel flow map before they closed.
    pub flow_evicted: u64,
    /// Records user space could not decode.
    pub malformed: u64,
}

impl LossCounters {
    /// Every counter with its `reason` label, zeros included.
    pub fn reasons(&self) -> [(&'static str, u64); 5] {
        [
            ("ringbuf_full", self.ringbuf_full),
            ("payload_ringbuf_full", self.payload_ringbuf_full),
            ("flow_map_insert", self.flow_map_insert),
            ("flow_evicted", self.flow_evicted),
            ("malformed", self.malformed),
        ]
    }

    /// The counters by reason, as the report shows them.
    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        self.reasons()
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.reasons().iter().map(|(_, count)| count).sum()
    }
}

impl std::fmt::Display for LossCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (reason, count)) in self.reasons().into_iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{} {count}", reason.replace('_', " "))?;
        }
        write!(f, " (total {})", self.total())
    }
}

/// The attached kernel programs and their ring buffer.
pub struct Probe {
    // Keeps the programs loaded and their cgroup links alive; dropping it detaches them.
    _ebpf: Ebpf,
    events: AsyncFd<RingBuf<MapData>>,
    losses: PerCpuArray<MapData, u64>,
    malformed: u64,
    cgroup: PathBuf,
}

impl Probe {
    /// Loads the programs and attaches them to the cgroup. Needs a tokio runtime.
    pub fn attach(config: &ProbeConfig) -> Result<Self, ProbeError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(ProbeError::RingBufferSize(size));
        }
        let cgroup = match &config.cgroup {
            Some(path) => path.clone(),
            None => meshdrift_host::cgroup2_root()?,
        };
        let interval_ns = u64::try_from(config.update_interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, size)
            .override_global(names::UPDATE_INTERVAL_NS, &interval_ns, true)
            .load(EBPF_OBJECT)
            .map_err(|source| ProbeError::Load { source })?;

        let cgroup_file = File::open(&cgroup).map_err(|source| ProbeError::OpenCgroup {
            path: cgroup.clone(),
            source,
        })?;
        attach_sock_ops(&mut ebpf, &cgroup_file)?;
        attach_skb(
            &mut ebpf,
            &cgroup_file,
            names::SKB_EGRESS,
            CgroupSkbAttachType::Egress,
        )?;
        attach_skb(
            &mut ebpf,
            &cgroup_file,
            names::SKB_INGRESS,
            CgroupSkbAttachType::Ingress,
        )?;

        let events = take_map(&mut ebpf, names::EVENTS)?;
        let events = RingBuf::try_from(events).map_err(|source| ProbeError::Map {
            name: names::EVENTS,
            source,
        })?;
        // SAFETY: the ring buffer owns its map file descriptor and keeps it open, unchanged,
        // for as long as the AsyncFd that owns the ring buffer lives.
        let events =
            unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
                .map_err(|err| ProbeError::Poll(err.into_parts().1))?;
        let losses = take_map(&mut ebpf, names::LOSSES)?;
        let losses = PerCpuArray::try_from(losses).map_err(|source| ProbeError::Map {
            name: names::LOSSES,
            source,
        })?;
        tracing::info!(cgroup = %cgroup.display(), ring_buffer_bytes = size, "eBPF programs attached");
        Ok(Self {
            _ebpf: ebpf,
            events,
            losses,
            malformed: 0,
            cgroup,
        })
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Waits for records and appends every one available to `out`.
    pub async fn read_events(&mut self, out: &mut Vec<ProbeEvent>) -> Result<(), ProbeError> {
        let mut guard = self.events.readable_mut().await.map_err(ProbeError::Poll)?;
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(event) => out.push(event),
                Err(err) => {
                    self.malformed += 1;
                    tracing::warn!(%err, "dropping a malformed ring-buffer record");
                }
            }
        }
        guard.clear_ready();
        Ok(())
    }

    /// Reads the per-CPU loss counters, summed over CPUs.
    pub fn losses(&self) -> Result<LossCounters, ProbeError> {
        let read = |loss: Loss| -> Result<u64, ProbeError> {
            let values = self
                .losses
                .get(&(loss as u32), 0)
                .map_err(|source| ProbeError::Map {
                    name: names::LOSSES,
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(LossCounters {
            ringbuf_full: read(Loss::RingbufFull)?,
            payload_ringbuf_full: read(Loss::PayloadRingbufFull)?,
            flow_map_insert: read(Loss::FlowMapInsert)?,
            flow_evicted: read(Loss::FlowEvicted)?,
            malformed: self.malformed,
        })
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name)
        .ok_or(ProbeError::Missing { what: "map", name })
}

fn attach_sock_ops(ebpf: &mut Ebpf, cgroup: &File) -> Result<(), ProbeError> {
    let name = names::SOCK_OPS;
    let program: &mut SockOps = ebpf
        .program_mut(name)
        .ok_or(ProbeError::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })?;
    program
        .load()
        .map_err(|source| ProbeError::Program { name, source })?;
    program
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|source| ProbeError::Program { name, source })?;
    Ok(())
}

fn attach_skb(
    ebpf: &mut Ebpf,
    cgroup: &File,
    name: &'static str,
    attach_type: CgroupSkbAttachType,
) -> Result<(), ProbeError> {
    let program: &mut CgroupSkb = ebpf
        .program_mut(name)
        .ok_or(ProbeError::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })?;
    program
        .load()
        .map_err(|source| ProbeError::Program { name, source })?;
    program
        .attach(cgroup, attach_type, CgroupAttachMode::Single)
        .map_err(|source| ProbeError::Program { name, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::{programs::ProgramError, sys::SyscallError};

    use super::program_hint;

    fn attach_failure(errno: i32) -> ProgramError {
        ProgramError::SyscallError(SyscallError {
            call: "bpf_prog_attach",
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn hints_follow_the_errno_not_the_message() {
        assert!(program_hint(&attach_failure(libc::EEXIST)).contains("another meshdrift"));
        assert!(program_hint(&attach_failure(libc::EPERM)).contains("CAP_NET_ADMIN"));
        assert!(program_hint(&attach_failure(libc::EACCES)).contains("CAP_NET_ADMIN"));
        assert_eq!(program_hint(&attach_failure(libc::EINVAL)), "");
    }
}
