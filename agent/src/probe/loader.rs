//! Loads the embedded eBPF object, attaches it to the cgroup v2 root and reads
//! its ring buffer. Dropping the [`Probe`] detaches everything.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSkbAttachType},
};
use meshdrift_ebpf::{
    DEFAULT_RING_BUFFER_BYTES, DEFAULT_UPDATE_INTERVAL_NS, Loss, PortRange, names,
};
use tokio::io::unix::AsyncFd;

use super::{
    CgroupError, FlowKind, FlowRecord, ProbeEvent, decode, losses::KernelLosses, sweep::Sweeper,
};

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
    /// How often the flow map is swept for the counters of open flows.
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
    #[error("{0}")]
    Capabilities(super::capabilities::Missing),
    #[error("cannot read this process's capabilities: {0}")]
    ReadCapabilities(io::Error),
    #[error("waiting on the ring buffer: {0}")]
    Poll(io::Error),
    #[error("sweeping the flow map: {0}")]
    Sweep(io::Error),
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
        Some(libc::EEXIST) => " (a program is already attached to this cgroup in exclusive mode)",
        Some(libc::EPERM | libc::EACCES) => " (attaching to a cgroup needs root or CAP_NET_ADMIN)",
        _ => "",
    }
}

/// Fails, naming them, when this process lacks a capability loading or
/// attaching needs; called at start, before anything else is set up.
pub fn check_capabilities() -> Result<(), ProbeError> {
    let effective = super::capabilities::effective().map_err(ProbeError::ReadCapabilities)?;
    let missing = super::capabilities::missing_from(effective);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Capabilities(super::capabilities::Missing(
            missing,
        )))
    }
}

/// The attached kernel programs, their ring buffer and their flow map.
pub struct Probe {
    // Keeps the programs loaded and their cgroup links alive; dropping it detaches them.
    _ebpf: Ebpf,
    events: AsyncFd<RingBuf<MapData>>,
    flows: MapData,
    sweeper: Sweeper,
    losses: PerCpuArray<MapData, u64>,
    malformed: u64,
    cgroup: PathBuf,
    attached_at: std::time::SystemTime,
}

impl Probe {
    /// Loads the programs and attaches them to the cgroup. Needs a tokio runtime.
    pub fn attach(config: &ProbeConfig) -> Result<Self, ProbeError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        check_capabilities()?;
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(ProbeError::RingBufferSize(size));
        }
        let cgroup = match &config.cgroup {
            Some(path) => path.clone(),
            None => meshdrift_host::cgroup2_root()?,
        };
        // A quarter full wakes user space at once; below that, records wait
        // for its next poll.
        let wakeup_bytes = u64::from(size / 4);
        let ephemeral = ephemeral_port_range();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, size)
            .override_global(names::WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(names::EPHEMERAL_PORTS, &ephemeral, true)
            .load(EBPF_OBJECT)
            .map_err(|source| ProbeError::Load { source })?;

        let cgroup_file = File::open(&cgroup).map_err(|source| ProbeError::OpenCgroup {
            path: cgroup.clone(),
            source,
        })?;
        // Every program is verified before any is attached, so attaching
        // takes a moment. sock_ops first: every connection established from
        // then on is recorded at establishment; the packet programs adopt
        // the older ones on their first data packet.
        for name in PROGRAMS {
            load_program(&mut ebpf, name)?;
        }
        for name in PROGRAMS {
            attach_program(&mut ebpf, name, &cgroup_file)?;
        }
        let attached_at = std::time::SystemTime::now();

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
        let flows = match take_map(&mut ebpf, names::FLOWS)? {
            Map::HashMap(data) => data,
            _ => {
                return Err(ProbeError::Missing {
                    what: "hash map",
                    name: names::FLOWS,
                });
            }
        };
        let losses = take_map(&mut ebpf, names::LOSSES)?;
        let losses = PerCpuArray::try_from(losses).map_err(|source| ProbeError::Map {
            name: names::LOSSES,
            source,
        })?;
        tracing::info!(cgroup = %cgroup.display(), ring_buffer_bytes = size, "eBPF programs attached");
        Ok(Self {
            _ebpf: ebpf,
            events,
            flows,
            sweeper: Sweeper::default(),
            losses,
            malformed: 0,
            cgroup,
            attached_at,
        })
    }

    /// When the last program was attached: traffic from then on is counted
    /// (a flow opened before is counted from its first packet after).
    pub fn attached_at(&self) -> std::time::SystemTime {
        self.attached_at
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Waits until the kernel wakes user space: the ring buffer filled past
    /// its wakeup mark. Records below the mark are read by [`Probe::drain`]
    /// on the caller's own schedule.
    pub async fn wait_for_wakeup(&mut self) -> Result<(), ProbeError> {
        let mut guard = self.events.readable_mut().await.map_err(ProbeError::Poll)?;
        guard.clear_ready();
        Ok(())
    }

    /// Appends every record queued in the ring buffer to `out`.
    pub fn drain(&mut self, out: &mut Vec<ProbeEvent>) {
        let ring = self.events.get_mut();
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(event) => out.push(event),
                Err(err) => {
                    self.malformed += 1;
                    tracing::warn!(%err, "dropping a malformed ring-buffer record");
                }
            }
        }
    }

    /// Reads every open flow's counters from the kernel's flow map, as update
    /// records stamped with `time_ns` (`CLOCK_MONOTONIC`, the kernel's clock).
    pub fn sweep(&mut self, time_ns: u64, out: &mut Vec<FlowRecord>) -> Result<(), ProbeError> {
        let malformed = &mut self.malformed;
        self.sweeper
            .sweep(&self.flows, |cookie, state| {
                match FlowRecord::from_state(FlowKind::Update, cookie, time_ns, state) {
                    Ok(record) => out.push(record),
                    Err(err) => {
                        *malformed += 1;
                        tracing::warn!(%err, cookie, "dropping a malformed flow-map entry");
                    }
                }
            })
            .map_err(ProbeError::Sweep)
    }

    /// The kernel's loss counters, summed over CPUs, and the records user
    /// space could not decode.
    pub fn losses(&self) -> Result<KernelLosses, ProbeError> {
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
        Ok(KernelLosses {
            ringbuf_full: read(Loss::RingbufFull)?,
            payload_ringbuf_full: read(Loss::PayloadRingbufFull)?,
            flow_map_insert: read(Loss::FlowMapInsert)?,
            adopt_map_full: read(Loss::AdoptMapFull)?,
            malformed: self.malformed,
        })
    }
}

/// The kernel's ephemeral port range, from which adopted flows' roles are
/// inferred; Linux's default when it cannot be read.
fn ephemeral_port_range() -> PortRange {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let parsed = std::fs::read_to_string(path).ok().and_then(|text| {
        let mut ports = text.split_whitespace().map(str::parse::<u16>);
        match (ports.next(), ports.next()) {
            (Some(Ok(low)), Some(Ok(high))) if low <= high => Some(PortRange { low, high }),
            _ => None,
        }
    });
    parsed.unwrap_or_else(|| {
        tracing::warn!(
            path,
            "cannot read the ephemeral port range; assuming Linux's default"
        );
        PortRange::DEFAULT
    })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name)
        .ok_or(ProbeError::Missing { what: "map", name })
}

/// The programs in attach order.
const PROGRAMS: [&str; 4] = [
    names::SOCK_OPS,
    names::SKB_EGRESS,
    names::SKB_INGRESS,
    names::SOCK_RELEASE,
];

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), ProbeError> {
    let program = ebpf.program_mut(name).ok_or(ProbeError::Missing {
        what: "program",
        name,
    })?;
    let loaded = match program {
        aya::programs::Program::SockOps(program) => program.load(),
        aya::programs::Program::CgroupSkb(program) => program.load(),
        aya::programs::Program::CgroupSock(program) => program.load(),
        _ => {
            return Err(ProbeError::Missing {
                what: "cgroup program",
                name,
            });
        }
    };
    loaded.map_err(|source| ProbeError::Program { name, source })
}

fn attach_program(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<(), ProbeError> {
    let program = ebpf.program_mut(name).ok_or(ProbeError::Missing {
        what: "program",
        name,
    })?;
    // The programs attach through BPF links (the ring buffer they need came
    // after links), and the kernel runs a cgroup's links alongside every other
    // program there, CNI agents' included. A link takes no mode flag: the
    // kernel refuses `AllowMultiple` on one (EINVAL), so the default is asked for.
    let mode = CgroupAttachMode::Single;
    let attached = match program {
        aya::programs::Program::SockOps(program) => program.attach(cgroup, mode).map(drop),
        aya::programs::Program::CgroupSkb(program) => {
            let direction = if name == names::SKB_EGRESS {
                CgroupSkbAttachType::Egress
            } else {
                CgroupSkbAttachType::Ingress
            };
            program.attach(cgroup, direction, mode).map(drop)
        }
        aya::programs::Program::CgroupSock(program) => program.attach(cgroup, mode).map(drop),
        _ => {
            return Err(ProbeError::Missing {
                what: "cgroup program",
                name,
            });
        }
    };
    attached.map_err(|source| ProbeError::Program { name, source })
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
        assert!(program_hint(&attach_failure(libc::EEXIST)).contains("exclusive mode"));
        assert!(program_hint(&attach_failure(libc::EPERM)).contains("CAP_NET_ADMIN"));
        assert!(program_hint(&attach_failure(libc::EACCES)).contains("CAP_NET_ADMIN"));
        assert_eq!(program_hint(&attach_failure(libc::EINVAL)), "");
    }
}
