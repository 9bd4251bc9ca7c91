//! Reading the kernel's whole flow map at once, so every open flow's counters
//! reach user space once per update interval without the packet path ever
//! emitting anything: `BPF_MAP_LOOKUP_BATCH`, a few hundred flows per system
//! call. aya offers no batch operations, hence the raw call here.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd},
};

use aya::maps::MapData;
use meshdrift_ebpf::FlowState;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd` (linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call: hash-table buckets are never this full, so the
/// kernel never answers ENOSPC.
const BATCH: usize = 512;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Buffers reused from sweep to sweep.
#[derive(Default)]
pub struct Sweeper {
    keys: Vec<u64>,
    values: Vec<FlowState>,
}

impl Sweeper {
    /// Calls `each(cookie, state)` for every entry of the flow map. Entries
    /// come and go while the sweep runs: each present throughout is seen
    /// once, the others at most once.
    pub fn sweep(
        &mut self,
        map: &MapData,
        mut each: impl FnMut(u64, &FlowState),
    ) -> io::Result<()> {
        self.keys.resize(BATCH, 0);
        self.values.resize(BATCH, zeroed_state());
        let map_fd = u32::try_from(map.fd().as_fd().as_raw_fd())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // The kernel's cursor into the table, opaque to us (a bucket index).
        let mut cursor = [0u64; 1];
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
                out_batch: cursor.as_mut_ptr() as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` describes buffers of BATCH keys and BATCH values
            // of the map's key and value types, and an 8-byte cursor, all of
            // which outlive the call; the kernel writes at most `count` entries.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &raw mut attr,
                    size_of::<BatchAttr>(),
                )
            };
            let done = if ret < 0 {
                let err = io::Error::last_os_error();
                // ENOENT: no entry after this batch (this call's entries still count).
                if err.raw_os_error() != Some(libc::ENOENT) {
                    return Err(err);
                }
                true
            } else {
                false
            };
            let filled = (attr.count as usize).min(BATCH);
            for (cookie, state) in self.keys[..filled].iter().zip(&self.values[..filled]) {
                each(*cookie, state);
            }
            if done {
                return Ok(());
            }
            first = false;
        }
    }
}

fn zeroed_state() -> FlowState {
    // SAFETY: FlowState is plain data (`aya::Pod`): all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}
